"""Lifecycle benchmark: `run -d`, `ps` with 50 containers, `exec true`, the monitor's memory,
each beside rootless Podman (conmon's memory for the last).

    bench/lifecycle.py [--runs N] [--containers N] [--no-podman] [--keep]

Run it as the unprivileged test user; as root it re-executes itself as that user:

    runuser -u rltest -- env HOME=/home/rltest XDG_RUNTIME_DIR=/run/user/1001 \\
        /opt/rl/venv/bin/python bench/lifecycle.py

Podman runs with fuse-overlayfs, its configuration here by default (see /work/shared/PEERS.md).
It exits 0 whatever the figures; non-zero only when it could not measure.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common as c  # noqa: E402
from bench.run import FUSE_OVERLAYFS, make_podman, prepare_podman, push_busybox  # noqa: E402

IMAGE = "busybox"
DETACHED = ("run", "-d", "--network", "none", IMAGE, "sleep", "100000")


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def pss_kib(pid: int) -> int:
    """Proportional set size: shared pages (the interpreter's, libc) divided among their users."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def timed(argv: list[str], env: dict[str, str]) -> tuple[float, str]:
    t0 = time.perf_counter()
    cp = c.run_checked(argv, env)
    return time.perf_counter() - t0, cp.stdout


def main(argv: list[str]) -> int:
    c.run_as_test_user(Path(__file__).resolve(), argv)
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=10)
    p.add_argument("--containers", type=int, default=50, help="containers listed by the ps timing")
    p.add_argument("--no-podman", action="store_true")
    p.add_argument("--keep", action="store_true")
    args = p.parse_args(argv)

    work = c.make_workspace("rlbl")
    removers: list[Callable[[], None]] = []
    with c.cleanup_on_exit(work, args.keep, removers):
        registry = c.start_bench_registry(work)
        removers.append(registry.stop)
        pushed = push_busybox(registry)
        rl = c.Rootless(work, registry)
        env = rl.env
        tools: dict[str, tuple[Callable[..., list[str]], dict[str, str]]] = {"rootless": (rl.argv, env)}
        if not args.keep:
            removers.append(lambda: rl.remove(*[q for q in work.iterdir() if q.name != "registry"]))
        c.run_checked(rl.argv("pull", "-q", IMAGE), env)
        if not args.no_podman and c.Podman.installed():
            setup = make_podman(work, "podman", registry, FUSE_OVERLAYFS)
            short_rundir = setup.podman.runtime_dir  # outside the work directory
            removers.append(lambda: rl.remove(short_rundir))
            removers.append(setup.podman.stop)
            prepare_podman(setup, registry, pushed)
            pm = setup.podman
            tools["podman"] = (pm.argv, pm.env)

        def rm_now(tool: str) -> tuple[str, ...]:
            # `podman rm -f` stops with the 10 s timeout first (sleep as PID 1 ignores SIGTERM)
            return ("rm", "-f", "-t", "0") if tool == "podman" else ("rm", "-f")

        def rm_all(tool: str) -> None:
            a, e = tools[tool]
            c.run_checked(a(*rm_now(tool), "-a"), e, timeout=600)

        for tool in tools:
            rm_all(tool)
        removers.extend(lambda t=t: rm_all(t) for t in tools)  # type: ignore[misc]

        # 1. run -d latency (each container removed, untimed)
        def run_d(tool: str) -> Callable[[], float]:
            def m() -> float:
                a, e = tools[tool]
                took, out = timed(a(*DETACHED), e)
                c.run_checked(a(*rm_now(tool), out.strip()), e)
                return took
            return m

        series = c.interleave({t: run_d(t) for t in tools}, args.runs, label="run -d ")

        # 2. a long-lived container for exec and the monitor's memory
        rows = []
        for t in tools:
            rows.append([f"run -d ({t})", f"{series[t].median * 1000:.0f} ms",
                         f"{series[t].lo * 1000:.0f}-{series[t].hi * 1000:.0f}"])
        keep: dict[str, str] = {}
        for t, (a, e) in tools.items():
            keep[t] = c.run_checked(a(*DETACHED), e).stdout.strip()

        def exec_true(tool: str) -> Callable[[], float]:
            def m() -> float:
                a, e = tools[tool]
                return timed(a("exec", keep[tool], "true"), e)[0]
            return m

        ex = c.interleave({t: exec_true(t) for t in tools}, args.runs, label="exec ")
        for t in tools:
            rows.append([f"exec true ({t})", f"{ex[t].median * 1000:.0f} ms",
                         f"{ex[t].lo * 1000:.0f}-{ex[t].hi * 1000:.0f}"])

        mem = []
        state = json.loads((rl.rl.runroot / "containers" / keep["rootless"] / "state.json").read_text())
        mpid = state["monitor_pid"]
        mem.append(["rootless monitor", f"{rss_kib(mpid) / 1024:.1f} MiB", f"{pss_kib(mpid) / 1024:.1f} MiB"])
        if "podman" in tools:
            a, e = tools["podman"]
            cpid = int(c.run_checked(a("inspect", "--format", "{{.State.ConmonPid}}", keep["podman"]), e)
                       .stdout.strip())
            mem.append(["podman conmon", f"{rss_kib(cpid) / 1024:.1f} MiB", f"{pss_kib(cpid) / 1024:.1f} MiB"])

        # 3. ps with N containers
        for a, e in tools.values():
            for _ in range(args.containers - 1):
                c.run_checked(a(*DETACHED), e)

        def ps(tool: str) -> Callable[[], float]:
            def m() -> float:
                a, e = tools[tool]
                took, out = timed(a("ps"), e)
                if len(out.splitlines()) != args.containers + 1:
                    raise RuntimeError(f"{tool} ps listed {len(out.splitlines()) - 1} containers")
                return took
            return m

        pss = c.interleave({t: ps(t) for t in tools}, args.runs, label="ps ")
        for t in tools:
            rows.append([f"ps, {args.containers} running ({t})", f"{pss[t].median * 1000:.0f} ms",
                         f"{pss[t].lo * 1000:.0f}-{pss[t].hi * 1000:.0f}"])

        print(c.table(["what", "median", "p10-p90"], rows))
        print()
        print(c.table(["process", "RSS", "PSS"], mem))
        if "podman" in tools:
            print()
            for name, s in (("run -d", series), ("exec true", ex), (f"ps ({args.containers})", pss)):
                print(f"{name}: rootless/podman = {c.ratio(s['rootless'].median, s['podman'].median):.2f}")
        print(f"\nload average {c.loadavg()}; medians of {args.runs} interleaved rounds; "
              f"Podman: runc, fuse-overlayfs ({c.podman_base_note()})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
