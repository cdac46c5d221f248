"""REST API benchmark: `docker run --rm alpine true`, `docker ps` and `docker exec CTR true`
through `rootless system service`, beside the same through `podman system service`, and the
service's idle memory. `docker ps` is also timed against a server that answers at once (the
docker client's own floor).

    bench/api.py [--runs N] [--no-podman] [--keep]

Both services listen on unix sockets of their own (`--time 0`) and the same docker client
(Debian's docker.io 20.10, /usr/bin/docker) talks to each in turn, interleaved. Run it as
the unprivileged test user; as root it re-executes itself as that user. Podman is configured
as /work/shared/PEERS.md says (runc, cgroupfs, file events, fuse-overlayfs). It exits 0
whatever the figures; non-zero only when it could not measure.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common as c  # noqa: E402
from bench.lifecycle import pss_kib, rss_kib  # noqa: E402
from bench.run import FUSE_OVERLAYFS, make_podman  # noqa: E402

DOCKER = "/usr/bin/docker"


def push_alpine(registry: object) -> None:
    """library/alpine:latest as the integration tests push it (conftest.py)."""
    from tests import imagebuild as ib
    from tests import testimages as ti

    with registry.pusher() as p:  # type: ignore[attr-defined]
        ti.push_image(p, "library/alpine", "latest",
                      ib.make_image([ti.busybox_layer(), ti.alpine_layer("3.21.0")], cmd=["/bin/sh"]))


_INSTANT = r"""
import socket, sys
body = sys.stdin.buffer.read()
srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
srv.bind(sys.argv[1])
srv.listen(16)
while True:
    conn, _ = srv.accept()
    buf = b""
    while data := conn.recv(65536):
        buf += data
        while b"\r\n\r\n" in buf:
            head, buf = buf.split(b"\r\n\r\n", 1)
            line = head.split(b"\r\n", 1)[0]
            out = b"OK" if b"/_ping" in line else body
            conn.sendall(b"HTTP/1.1 200 OK\r\nApi-Version: 1.44\r\nContent-Type: application/json\r\n"
                         b"Content-Length: %d\r\n\r\n%s" % (len(out), b"" if line.startswith(b"HEAD") else out))
    conn.close()
"""


def instant_server(path: Path, body: bytes) -> subprocess.Popen[bytes]:
    """The docker client's own floor: a server (one process, one connection at a time, as the
    client makes them) that answers /_ping and then every request at once with *body* (what
    the rootless service answered to GET /containers/json), over keep-alive."""
    proc = subprocess.Popen([sys.executable, "-c", _INSTANT, str(path)], stdin=subprocess.PIPE)
    assert proc.stdin is not None
    proc.stdin.write(body)
    proc.stdin.close()
    wait_socket(path, proc, "the instant server")
    return proc


def get_body(path: Path, target: str) -> bytes:
    import http.client
    import socket

    conn = http.client.HTTPConnection("localhost")
    conn.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    conn.sock.connect(str(path))
    conn.request("GET", target)
    return conn.getresponse().read()


def idle_memory(pid: int) -> tuple[int, int, int, int]:
    """(processes, RSS of the service's main process, RSS summed over it and its children, PSS
    summed likewise) in KiB: rootless keeps spare children waiting for connections, whose pages
    are mostly the parent's (copy-on-write), so the sum of RSS counts those pages again; PSS
    divides each shared page among its users."""
    procs = [pid]
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                stat = (d / "stat").read_text()
            except OSError:
                continue
            if int(stat.rpartition(")")[2].split()[1]) == pid:
                procs.append(int(d.name))
    return (len(procs), rss_kib(pid), sum(rss_kib(p) for p in procs), sum(pss_kib(p) for p in procs))


def wait_socket(path: Path, proc: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited {proc.returncode}")
        if path.exists():
            return
        time.sleep(0.02)
    raise RuntimeError(f"{what} did not listen on {path}")


def main(argv: list[str]) -> int:
    c.run_as_test_user(Path(__file__).resolve(), argv)
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=10)
    p.add_argument("--no-podman", action="store_true")
    p.add_argument("--keep", action="store_true")
    args = p.parse_args(argv)
    if not os.path.exists(DOCKER):
        sys.exit(f"{DOCKER} is missing (apt-get install docker.io)")

    work = c.make_workspace("rlba")
    removers: list[Callable[[], None]] = []
    services: list[subprocess.Popen[bytes]] = []

    def stop_services() -> None:
        for s in services:
            if s.poll() is None:
                s.terminate()
                s.wait(10)

    with c.cleanup_on_exit(work, args.keep, removers):
        registry = c.start_bench_registry(work)
        removers.append(registry.stop)
        push_alpine(registry)
        rl = c.Rootless(work, registry)
        if not args.keep:
            removers.append(lambda: rl.remove(*[q for q in work.iterdir() if q.name != "registry"]))
        removers.append(stop_services)
        c.run_checked(rl.argv("pull", "-q", "alpine"), rl.env)
        rl_sock = work / "rl.sock"
        svc = subprocess.Popen(rl.argv("system", "service", "--time", "0", f"unix://{rl_sock}"), env=rl.env)
        services.append(svc)
        wait_socket(rl_sock, svc, "rootless system service")
        socks = {"rootless": rl_sock}
        pids = {"rootless": svc.pid}
        if not args.no_podman and c.Podman.installed():
            setup = make_podman(work, "podman", registry, FUSE_OVERLAYFS)
            pm = setup.podman
            removers.append(lambda: rl.remove(pm.runtime_dir))
            removers.append(pm.stop)
            pm.start()
            direct = f"{registry.host}/library/alpine:latest"
            c.run_checked(pm.argv("pull", "-q", direct), pm.env)
            c.run_checked(pm.argv("tag", direct, "docker.io/library/alpine:latest"), pm.env)
            pm_sock = Path(pm.runtime_dir) / "pm.sock"
            psvc = subprocess.Popen(pm.argv("system", "service", "--time=0", f"unix://{pm_sock}"), env=pm.env)
            services.append(psvc)
            wait_socket(pm_sock, psvc, "podman system service")
            socks["podman"] = pm_sock
            pids["podman"] = psvc.pid
        (work / "docker-config").mkdir()

        def denv(tool: str) -> dict[str, str]:
            return {**rl.env, "DOCKER_HOST": f"unix://{socks[tool]}", "DOCKER_CONFIG": str(work / "docker-config")}

        def docker(tool: str, *a: str) -> tuple[float, str]:
            t0 = time.perf_counter()
            cp = c.run_checked([DOCKER, *a], denv(tool))
            return time.perf_counter() - t0, cp.stdout

        for tool in socks:  # warm: the first request of each loads what later ones reuse
            docker(tool, "run", "--rm", "alpine", "true")
        time.sleep(1)
        idle = {t: idle_memory(pid) for t, pid in pids.items()}

        def measure(*a: str) -> Callable[[str], Callable[[], float]]:
            def for_tool(tool: str) -> Callable[[], float]:
                return lambda: docker(tool, *a)[0]
            return for_tool

        rows = []
        results = {}
        keep = {t: docker(t, "run", "-d", "alpine", "sleep", "100000")[1].strip() for t in socks}
        floor_sock = work / "instant.sock"
        services.append(instant_server(floor_sock, get_body(rl_sock, "/v1.41/containers/json")))
        socks["client alone"] = floor_sock
        for name, make in (("docker run --rm alpine true", measure("run", "--rm", "alpine", "true")),
                           ("docker ps (1 running)", measure("ps"))):
            tools = [t for t in socks if t != "client alone" or name.startswith("docker ps")]
            s = c.interleave({t: make(t) for t in tools}, args.runs, label=f"{name.split()[1]} ")
            results[name] = s
        del socks["client alone"]

        def exec_true(tool: str) -> Callable[[], float]:
            return lambda: docker(tool, "exec", keep[tool], "true")[0]

        results["docker exec CTR true"] = c.interleave({t: exec_true(t) for t in socks}, args.runs, label="exec ")
        for t in socks:
            docker(t, "rm", "-f", keep[t])
        for name, s in results.items():
            for t in s:
                rows.append([f"{name} ({t})", f"{s[t].median * 1000:.0f} ms",
                             f"{s[t].lo * 1000:.0f}-{s[t].hi * 1000:.0f}"])
        print(c.table(["what", "median", "p10-p90"], rows))
        print()
        print(c.table(["idle service", "processes", "RSS (main)", "RSS (all)", "PSS (all)"],
                      [[t, str(n), f"{r / 1024:.1f} MiB", f"{ra / 1024:.1f} MiB", f"{q / 1024:.1f} MiB"]
                       for t, (n, r, ra, q) in idle.items()]))
        print(f"\ngoal: idle RSS <= 40 MiB: main process {c.verdict(idle['rootless'][1] / 1024, 40)}; "
              f"all its processes, shared pages counted once (PSS) {c.verdict(idle['rootless'][3] / 1024, 40)}")
        if "podman" in socks:
            print()
            for name, s in results.items():
                r = c.ratio(s["rootless"].median, s["podman"].median)
                print(f"{name}: rootless/podman = {r:.2f} (goal <= 0.5: {c.verdict(r, 0.5)})")
                if "client alone" in s:
                    f = c.ratio(s["client alone"].median, s["podman"].median)
                    print(f"  the docker client alone (a server answering at once) = {f:.2f} of Podman's: "
                          "no server can go below that")
        print(f"\nload average {c.loadavg()}; medians of {args.runs} interleaved rounds; docker client "
              f"{DOCKER} (20.10); Podman: runc, fuse-overlayfs ({c.podman_base_note()})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
