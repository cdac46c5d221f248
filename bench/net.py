"""Network benchmark: what slirp4netns costs a run, and published-port throughput, beside Podman.

    bench/net.py [--runs N] [--seconds S] [--no-podman] [--keep] [--json FILE]

Run it as the unprivileged test user; as root it re-executes itself as that user:

    runuser -u rltest -- env HOME=/home/rltest XDG_RUNTIME_DIR=/run/user/1001 \\
        /opt/rl/venv/bin/python bench/net.py

What it does, all on 127.0.0.1 with a real docker-registry started for the run:
 * builds an iperf3 image: busybox plus Debian's iperf3 and libiperf0 packages
   (`apt-get download`, `dpkg -x`) and the shared libraries `ldd` names, taken from the
   host (when the archive cannot be reached, the installed iperf3's own files);
 * start-up: N interleaved rounds of `run --rm busybox true` with `--network none` and with
   the default network (slirp4netns), for rootless and for rootless Podman (runc,
   slirp4netns); the cost of the network is the difference of the medians;
 * throughput, S seconds of iperf3 each, median of 3:
     host → container: `iperf3 -s -1` in a container published with
       `-p 127.0.0.1:PORT:5201`, the client on the host (Podman: its default port
       forwarder, rootlessport);
     container → host: the client in a container with
       `--network slirp4netns:allow_host_loopback=true`, the server on the host's
       127.0.0.1 reached at 10.0.2.2;
 * user networks (`network create --subnet 10.99.0.0/24 rlbench`, Podman on netavark and
   aardvark-dns when installed): start-up of `run --rm --network rlbench busybox true`, first
   on the network and beside a running member; container → container iperf3 (server at a
   fixed --ip); the latency of looking up a peer's name;
 * prints medians and the ratios against the goals: network adds at most 30 ms to a run;
   published-port throughput at least Podman's; user-network start-up at most 0.5x Podman's,
   container-to-container throughput at least Podman's.

It exits 0 whatever the figures (benchmarks report, tests assert); non-zero only when it
could not measure.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common as c  # noqa: E402

GOAL_ADDED_MS = 30.0
GOAL_THROUGHPUT = 1.0
IPERF_PACKAGES = ("iperf3", "libiperf0")
LIBDIR = "usr/lib/x86_64-linux-gnu"


# --------------------------------------------------------------------------- the iperf3 image


def _debian_iperf3(work: Path) -> Path | None:
    """Debian's iperf3 and libiperf0 unpacked into a directory, or None without the archive."""
    debs = work / "debs"
    root = work / "iperf3-root"
    debs.mkdir(parents=True, exist_ok=True)
    cp = subprocess.run(["apt-get", "download", *IPERF_PACKAGES], cwd=debs, capture_output=True, text=True,
                        timeout=120)
    files = sorted(debs.glob("*.deb"))
    if cp.returncode != 0 or len(files) < len(IPERF_PACKAGES):
        c.log(f"apt-get download {' '.join(IPERF_PACKAGES)} failed ({cp.stderr.strip()[-200:]}): "
              "using the installed iperf3's files")
        return None
    for deb in files:
        subprocess.run(["dpkg", "-x", str(deb), str(root)], check=True, capture_output=True)
    return root


def _installed_iperf3(work: Path) -> Path:
    """The files of the installed iperf3 and libiperf0 (dpkg -L), copied into a directory."""
    root = work / "iperf3-root"
    for pkg in IPERF_PACKAGES:
        cp = subprocess.run(["dpkg", "-L", pkg], capture_output=True, text=True)
        if cp.returncode != 0:
            raise SystemExit(f"{pkg} is neither downloadable nor installed (apt-get install iperf3)")
        for line in cp.stdout.splitlines():
            src = Path(line)
            if src.is_file() and not src.is_symlink() and "/share/" not in line:
                dst = root / line.lstrip("/")
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, dst)
            elif src.is_symlink():
                dst = root / line.lstrip("/")
                dst.parent.mkdir(parents=True, exist_ok=True)
                if not dst.exists():
                    dst.symlink_to(os.readlink(src))
    return root


def iperf3_layer(work: Path) -> Any:
    from tests import imagebuild as ib

    root = _debian_iperf3(work) or _installed_iperf3(work)
    binary = root / "usr/bin/iperf3"
    libs = [str(p) for p in root.rglob("libiperf.so*")]
    env = dict(os.environ, LD_LIBRARY_PATH=":".join(sorted({str(Path(p).parent) for p in libs})))
    ldd = subprocess.run(["ldd", str(binary)], capture_output=True, text=True, env=env, check=True).stdout
    entries: dict[str, Any] = {}

    def add(path: str, src: Path) -> None:
        data = src.read_bytes()
        entries[path] = ib.file(path, data, mode=0o755)

    add("usr/bin/iperf3", binary)
    for lib in libs:
        if not Path(lib).is_symlink():
            add(f"{LIBDIR}/{Path(lib).name}", Path(lib))
    for line in ldd.splitlines():
        parts = line.split()
        if "=>" in parts and len(parts) >= 3 and parts[2].startswith("/"):
            src = Path(parts[2])
            if "libiperf" not in src.name:
                add(f"{LIBDIR}/{src.name}", src.resolve())
        elif parts and parts[0].startswith("/") and "ld-linux" in parts[0]:
            add("lib64/" + Path(parts[0]).name, Path(parts[0]).resolve())
    # the soname links the loader looks up
    so = {p.name for p in Path(libs[0]).parent.glob("libiperf.so*")} if libs else set()
    for name in so:
        target = Path(libs[0]).parent / name
        if target.is_symlink():
            entries[f"{LIBDIR}/{name}"] = ib.symlink(f"{LIBDIR}/{name}", os.readlink(target))
    return ib.build_layer(ib.with_parents(entries.values()))


def push_images(registry: Any, work: Path) -> None:
    from tests import imagebuild as ib
    from tests import testimages as ti

    base = ti.busybox_layer()
    with registry.pusher() as p:
        ti.push_image(p, "library/busybox", "latest", ib.make_image([base], cmd=["sh"]))
        ti.push_image(p, "library/iperf3", "latest", ib.make_image(
            [base, iperf3_layer(work)], cmd=["iperf3", "-s"], exposed_ports=["5201/tcp"],
            env=["PATH=/usr/bin:/bin", f"LD_LIBRARY_PATH=/{LIBDIR}"]))


# --------------------------------------------------------------------------- measurements


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _bits_per_second(report: str) -> float:
    """The receiver's rate from `iperf3 -J`; 0 when the test did not run (an "error" key)."""
    try:
        data = json.loads(report)
    except ValueError:
        return 0.0
    if data.get("error"):
        return 0.0
    end = data.get("end", {})
    got = end.get("sum_received") or end.get("sum") or {}
    return float(got.get("bits_per_second", 0.0))


def host_to_container(run: Callable[..., list[str]], env: dict[str, str], seconds: int) -> float:
    """iperf3 server in the container behind a published port, client on the host."""
    port = free_port()
    server = subprocess.Popen(run("-p", f"127.0.0.1:{port}:5201", "iperf3", "iperf3", "-s", "-1"), env=env,
                              stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              text=True)
    try:
        deadline = time.monotonic() + 30
        while True:
            cp = subprocess.run(["iperf3", "-c", "127.0.0.1", "-p", str(port), "-t", str(seconds), "-J"],
                                capture_output=True, text=True, timeout=seconds + 60)
            # a forwarder accepts before the server in the container listens: then the test fails
            bps = _bits_per_second(cp.stdout) if cp.returncode == 0 else 0.0
            if bps > 0:
                return bps
            if time.monotonic() > deadline or server.poll() is not None:
                err = server.stderr.read() if server.stderr and server.poll() is not None else ""
                raise RuntimeError(f"iperf3 client to a container failed: {cp.stdout[-300:]} {err[-500:]}")
            time.sleep(0.1)
    finally:
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            # SIGTERM first: a SIGKILLed `podman run` leaves its slirp4netns behind
            server.terminate()
            try:
                server.wait(timeout=15)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()


def container_to_host(run: Callable[..., list[str]], env: dict[str, str], seconds: int) -> float:
    """iperf3 server on the host's 127.0.0.1, client in a container (allow_host_loopback)."""
    port = free_port()
    server = subprocess.Popen(["iperf3", "-s", "-1", "-B", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(0.3)
        cp = subprocess.run(run("--network", "slirp4netns:allow_host_loopback=true", "iperf3", "iperf3", "-c",
                                "10.0.2.2", "-p", str(port), "-t", str(seconds), "-J"),
                            env=env, capture_output=True, text=True, timeout=seconds + 120)
        if cp.returncode != 0:
            raise RuntimeError(f"iperf3 client in a container failed: {cp.stdout[-300:]} {cp.stderr[-500:]}")
        return _bits_per_second(cp.stdout)
    finally:
        try:
            server.wait(timeout=5)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def _timer(argv: list[str], env: dict[str, str]) -> Callable[[], float]:
    return lambda: c.timed(argv, env)


# --------------------------------------------------------------------------- user networks

NET = "rlbench"
SUBNET, SERVER_IP = "10.99.0.0/24", "10.99.0.10"


def container_to_container(cli: Callable[..., list[str]], env: dict[str, str], seconds: int) -> float:
    """iperf3 server in a container on the user network (a fixed --ip), the client in another."""
    name = f"iperf-srv-{os.getpid()}"
    c.run_checked(cli("run", "-d", "--rm", "--name", name, "--network", NET, "--ip", SERVER_IP, "iperf3",
                      "iperf3", "-s", "-1"), env)
    try:
        deadline = time.monotonic() + 30
        while True:
            cp = subprocess.run(cli("run", "--rm", "--network", NET, "iperf3", "iperf3", "-c", SERVER_IP, "-t",
                                    str(seconds), "-J"), env=env, capture_output=True, text=True,
                                timeout=seconds + 120)
            bps = _bits_per_second(cp.stdout) if cp.returncode == 0 else 0.0
            if bps > 0:
                return bps
            if time.monotonic() > deadline:
                raise RuntimeError(f"iperf3 between containers failed: {cp.stdout[-300:]} {cp.stderr[-300:]}")
            time.sleep(0.2)
    finally:
        subprocess.run(cli("rm", "-f", name), env=env, capture_output=True)


def dns_latency(cli: Callable[..., list[str]], env: dict[str, str], rounds: int = 200) -> float | None:
    """Seconds per lookup of a peer's name (busybox nslookup, a process each), less the same
    loop looking up nothing; None when the peer's name does not resolve (no name server)."""
    peer = f"peer-{os.getpid()}"
    c.run_checked(cli("run", "-d", "--name", peer, "--network", NET, "busybox", "sleep", "600"), env)
    try:
        loop = f"i=0; while [ $i -lt {rounds} ]; do {{cmd}}; i=$((i+1)); done"
        # busybox date has no %N: /proc/uptime's centiseconds
        script = ("t() { read u _ </proc/uptime; echo ${u%.*}${u#*.}; }; "
                  f"nslookup {peer} >/dev/null || exit 3; "
                  f"a=$(t); {loop.format(cmd='nslookup ' + peer + ' >/dev/null')}; b=$(t); "
                  f"{loop.format(cmd='busybox true >/dev/null')}; d=$(t); echo $((b-a)) $((d-b))")
        cp = subprocess.run(cli("run", "--rm", "--network", NET, "busybox", "sh", "-c", script), env=env,
                            capture_output=True, text=True, timeout=300)
        if cp.returncode == 3:
            return None
        if cp.returncode != 0:
            raise RuntimeError(f"nslookup loop failed: {cp.stdout[-200:]} {cp.stderr[-300:]}")
        looked, empty = (int(x) for x in cp.stdout.split())
        return max(looked - empty, 0) / rounds / 100
    finally:
        subprocess.run(cli("rm", "-f", peer), env=env, capture_output=True)


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=15)
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--no-podman", action="store_true")
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    c.run_as_test_user(Path(__file__), argv)
    if not shutil.which("iperf3"):
        sys.exit("iperf3 is not installed on the host (apt-get install iperf3)")
    work = Path(tempfile.mkdtemp(prefix="rootless-bench-net-", dir="/tmp"))
    removers: list[Callable[[], None]] = []
    results: dict[str, Any] = {}
    with c.cleanup_on_exit(work, args.keep, removers):
        registry = c.start_bench_registry(work)
        removers.append(registry.stop)
        c.log("building and pushing busybox and iperf3 images ...")
        push_images(registry, work)
        rl = c.Rootless(work, registry)
        for img in ("busybox", "iperf3"):
            c.run_checked(rl.argv("pull", "-q", img), rl.env)

        def rl_run(*a: str) -> list[str]:
            return rl.argv("run", "--rm", *a)

        def rl_cli(*a: str) -> list[str]:
            return rl.argv(*a)

        tools: dict[str, tuple[Callable[..., list[str]], dict[str, str]]] = {"rootless": (rl_run, rl.env)}
        clis: dict[str, Callable[..., list[str]]] = {"rootless": rl_cli}
        if not args.no_podman and c.Podman.installed():
            pm = c.Podman(work, [registry.host])
            removers.append(pm.stop)
            pm.start()
            root, runroot = pm.fresh_store()
            removers.append(lambda: pm.remove(root, runroot))
            for img in ("busybox", "iperf3"):
                c.run_checked(pm.argv("pull", "-q", f"{registry.host}/library/{img}", root=root, runroot=runroot),
                              pm.env)
                c.run_checked(pm.argv("tag", f"{registry.host}/library/{img}", img, root=root, runroot=runroot),
                              pm.env)

            def pm_run(*a: str) -> list[str]:
                return pm.argv("run", "--rm", *a, root=root, runroot=runroot)

            def pm_cli(*a: str) -> list[str]:
                return pm.argv(*a, root=root, runroot=runroot)

            tools["podman"] = (pm_run, pm.env)
            clis["podman"] = pm_cli
            c.log(pm.describe())
            info = subprocess.run(pm_cli("info", "--format", "{{.Host.NetworkBackend}}"), env=pm.env,
                                  capture_output=True, text=True)
            results["podman_network_backend"] = info.stdout.strip()
            c.log(f"podman network backend: {info.stdout.strip()}")
        for name, cli in clis.items():
            env = tools[name][1]
            subprocess.run(cli("network", "rm", "-f", NET), env=env, capture_output=True)
            c.run_checked(cli("network", "create", "--subnet", SUBNET, NET), env)

        # 1. start-up with and without the network
        measures: dict[str, c.Measure] = {}
        for name, (run, env) in tools.items():
            for net in ("none", "slirp4netns", NET):
                argv_ = run("--network", net, "busybox", "true")
                measures[f"{name}/{net}"] = _timer(argv_, env)
        for m in measures.values():  # warm-up
            m()
        series = c.interleave(measures, args.runs, label="start-up ")
        med = {k: s.median * 1000 for k, s in series.items()}
        # with another container on the network already (its shared namespace and helpers up)
        for name, cli in clis.items():
            c.run_checked(cli("run", "-d", "--name", "resident", "--network", NET, "busybox", "sleep", "3600"),
                          tools[name][1])
        try:
            warm = {f"{name}/{NET}+resident": _timer(run("--network", NET, "busybox", "true"), env)
                    for name, (run, env) in tools.items()}
            for m in warm.values():
                m()
            series = c.interleave(warm, args.runs, label="start-up (resident) ")
            med.update({k: s.median * 1000 for k, s in series.items()})
        finally:
            for name, cli in clis.items():
                subprocess.run(cli("rm", "-f", "resident"), env=tools[name][1], capture_output=True)
        results["startup_ms"] = med

        # 2. throughput
        tput: dict[str, dict[str, float]] = {}
        for name, (run, env) in tools.items():
            tput[name] = {}
            for label, fn in (("host->container", host_to_container), ("container->host", container_to_host)):
                vals = []
                for i in range(3):
                    v = fn(run, env, args.seconds)
                    c.log(f"  {name} {label} #{i + 1}: {v / 1e9:.2f} Gbit/s")
                    vals.append(v)
                tput[name][label] = statistics.median(vals)
        for name, cli in clis.items():
            vals = []
            for _ in range(3):
                v = container_to_container(cli, tools[name][1], args.seconds)
                c.log(f"  {name} container->container: {v / 1e9:.2f} Gbit/s")
                vals.append(v)
            tput[name]["container->container"] = statistics.median(vals)
        results["throughput_bps"] = tput

        # 3. a peer's name
        dns: dict[str, float | None] = {}
        for name, cli in clis.items():
            dns[name] = dns_latency(cli, tools[name][1])
            c.log(f"  {name} peer lookup: {dns[name]}")
        results["dns_lookup_s"] = dns
        for name, cli in clis.items():
            subprocess.run(cli("network", "rm", "-f", NET), env=tools[name][1], capture_output=True)

    # report
    print("\nrun --rm busybox true, median of", args.runs, "(ms)")
    rows = []
    for name in tools:
        none, slirp = med[f"{name}/none"], med[f"{name}/slirp4netns"]
        rows.append([name, f"{none:.0f}", f"{slirp:.0f}", f"{slirp - none:+.0f}"])
    print(c.table(["tool", "--network none", "slirp4netns", "network adds"], rows))
    added = med["rootless/slirp4netns"] - med["rootless/none"]
    print(f"goal: the network adds <= {GOAL_ADDED_MS:.0f} ms: {added:.0f} ms, "
          f"{'met' if added <= GOAL_ADDED_MS else 'NOT met'}")
    print(f"\nrun --rm --network {NET} busybox true, median of", args.runs, "(ms)")
    rows = []
    for name in tools:
        rows.append([name, f"{med[f'{name}/{NET}']:.0f}", f"{med[f'{name}/{NET}+resident']:.0f}"])
    if "podman" in tools:
        rows.append(["rootless/podman"] + [f"{c.ratio(med[f'rootless/{k}'], med[f'podman/{k}']):.2f}x"
                                           for k in (NET, f"{NET}+resident")])
    print(c.table(["tool", "first on the network", "beside a running member"], rows))
    if "podman" in tools:
        print(f"podman network backend: {results.get('podman_network_backend')}; goal: start-up <= 0.5x Podman's")
    print("\npeer name lookup (busybox nslookup, a process each, the bare loop subtracted), ms")
    print(c.table(["tool", "per lookup"], [[n, "no name server" if v is None else f"{v * 1000:.2f}"]
                                           for n, v in dns.items()]))
    print(f"\niperf3 throughput, median of 3 x {args.seconds} s (Gbit/s)")
    rows = []
    for label in ("host->container", "container->host", "container->container"):
        row = [label] + [f"{tput[n][label] / 1e9:.2f}" for n in tools]
        if "podman" in tools:
            r = c.ratio(tput["rootless"][label], tput["podman"][label])
            row.append(f"{r:.2f}x ({'met' if r >= GOAL_THROUGHPUT else 'NOT met'})")
        rows.append(row)
    print(c.table(["direction", *tools, *(["rootless/podman (goal >= 1)"] if "podman" in tools else [])], rows))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
