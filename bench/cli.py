"""Everyday commands beside rootless Podman, on stores of the same size (10 images, 50 containers).

    bench/cli.py [--runs N] [--images N] [--containers N] [--no-podman] [--dev-venv] [--keep]

Times, as a user types them: `images`, `ps -a`, `inspect NAME`, `logs NAME`, `port NAME`, `rm` of a
stopped container, `--help`, and `run --rm --network none busybox true`. Goals: each at most 1.0×
Podman's median, `run` at most 0.3×. Medians of interleaved rounds (the order rotates each round).
--keep leaves the work directory with both stores as measured (the running container stopped), to
profile a command afterwards (`python -X importtime`, cProfile) on the same store.

Run it as the unprivileged test user; as root (`python bench/cli.py`) it re-executes itself as that
user (ROOTLESS_TEST_USER, default rltest), with the venv scripts/setup-host builds ($RL_CI/venv,
default /opt/rootless-ci/venv) when the running Python is not a venv that user may run. `rootless` is
installed as `pip install .` would install it (--dev-venv: the running venv's). Podman runs with runc,
cgroupfs and fuse-overlayfs (/work/shared/PEERS.md). It exits 0 whatever the figures; non-zero only
when it could not measure.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common as c  # noqa: E402
from bench.run import FUSE_OVERLAYFS, install_tree, make_podman, prepare_podman, push_busybox  # noqa: E402

IMAGE = "busybox"
GOALS = {"run": 0.3}
GOAL = 1.0
NAME = "web"


def push_more(registry: object, n: int) -> list[str]:
    """``n`` more images sharing busybox's layer, each with a config (and so an ID) of its own."""
    from tests import imagebuild as ib
    from tests import testimages as ti

    names = []
    with registry.pusher() as p:  # type: ignore[attr-defined]
        for i in range(n):
            image = ib.make_image([ti.busybox_layer()], cmd=["sh"], labels={"bench": str(i)})
            ti.push_image(p, f"bench/img{i}", "latest", image)
            names.append(f"bench/img{i}")
    return names


def timed(argv: list[str], env: dict[str, str], check: Callable[[str], bool] | None = None) -> float:
    t0 = time.perf_counter()
    cp = c.run_checked(argv, env)
    took = time.perf_counter() - t0
    if check is not None and not check(cp.stdout):
        raise RuntimeError(f"{' '.join(argv)}: unexpected output {cp.stdout[:300]!r}")
    return took


def main(argv: list[str]) -> int:
    c.run_as_test_user(Path(__file__).resolve(), argv)
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=10)
    p.add_argument("--images", type=int, default=10)
    p.add_argument("--containers", type=int, default=50)
    p.add_argument("--no-podman", action="store_true")
    p.add_argument("--dev-venv", action="store_true", help="time the running venv's rootless")
    p.add_argument("--keep", action="store_true")
    args = p.parse_args(argv)

    work = c.make_workspace("rlbc")
    removers: list[Callable[[], None]] = []
    with c.cleanup_on_exit(work, args.keep, removers):
        c.log(f"work directory {work}; load average {c.loadavg()}")
        registry = c.start_bench_registry(work)
        removers.append(registry.stop)
        pushed = push_busybox(registry)
        extra = push_more(registry, args.images - 1)
        rl = c.Rootless(work, registry)
        if not args.dev_venv:
            rl.rl.command = [str(install_tree(work))]
        tools: dict[str, tuple[Callable[..., list[str]], dict[str, str]]] = {"rootless": (rl.argv, rl.env)}
        leftovers: list[Path] = []
        if not args.keep:
            removers.append(lambda: rl.remove(*[q for q in work.iterdir() if q.name != "registry"], *leftovers))
        c.run_checked(rl.argv("pull", "-q", IMAGE), rl.env)
        for name in extra:
            c.run_checked(rl.argv("pull", "-q", name), rl.env)
        podman_note = "podman: not run"
        if not args.no_podman and c.Podman.installed():
            setup = make_podman(work, "podman", registry, FUSE_OVERLAYFS)
            leftovers.append(setup.podman.runtime_dir)
            removers.append(setup.podman.stop)
            prepare_podman(setup, registry, pushed)
            pm = setup.podman
            for name in extra:
                c.run_checked(pm.argv("pull", "-q", f"{registry.host}/{name}"), pm.env)
            tools["podman"] = (pm.argv, pm.env)
            podman_note = f"Podman: runc, fuse-overlayfs ({c.podman_base_note()})"

        def rm_all(tool: str) -> None:
            a, e = tools[tool]
            force = ("rm", "-f", "-t", "0") if tool == "podman" else ("rm", "-f")
            c.run_checked(a(*force, "-a"), e, timeout=600)

        def stop_web(tool: str) -> None:
            a, e = tools[tool]
            c.run_checked(a("stop", "-t", "0", NAME), e, timeout=600)

        # the stores: N images (checked), N containers: one running with output and a published port
        ports = {"rootless": 18431, "podman": 18432}
        for tool, (a, e) in tools.items():
            rm_all(tool)
            # --keep: the stores stay as measured, the running container stopped (its port freed)
            removers.append(lambda t=tool: stop_web(t) if args.keep else rm_all(t))  # type: ignore[misc]
            shown = c.run_checked(a("images", "-q"), e).stdout.split()
            if len(shown) != args.images:
                raise RuntimeError(f"{tool} images lists {len(shown)} images, not {args.images}")
            c.run_checked(a("run", "-d", "--name", NAME, "-p", f"127.0.0.1:{ports[tool]}:80", IMAGE, "sh", "-c",
                            "for i in 1 2 3 4 5 6 7 8 9 10; do echo line $i; done; exec sleep 100000"), e)
            for _ in range(args.containers - 1):
                c.run_checked(a("create", "--network", "none", IMAGE, "true"), e)
        time.sleep(0.5)  # the detached container has written its lines

        def cmd(tool: str, words: tuple[str, ...], check: Callable[[str], bool] | None = None
                ) -> Callable[[], float]:
            a, e = tools[tool]
            line = a(*words)
            return lambda: timed(line, e, check)

        def rm_stopped(tool: str) -> Callable[[], float]:
            a, e = tools[tool]

            def m() -> float:
                cid = c.run_checked(a("create", "--network", "none", IMAGE, "true"), e).stdout.strip().splitlines()[-1]
                return timed(a("rm", cid), e)
            return m

        n = args.containers
        cases: dict[str, Callable[[str], Callable[[], float]]] = {
            # Podman shows busybox twice: as pulled from the registry and as tagged docker.io/library/busybox
            "images": lambda t: cmd(t, ("images",), lambda out: len(out.splitlines()) >= args.images + 1),
            "ps -a": lambda t: cmd(t, ("ps", "-a"), lambda out: len(out.splitlines()) == n + 1),
            "inspect NAME": lambda t: cmd(t, ("inspect", NAME), lambda out: NAME in out),
            "logs NAME": lambda t: cmd(t, ("logs", NAME), lambda out: out.count("line") == 10),
            "port NAME": lambda t: cmd(t, ("port", NAME), lambda out: str(ports[t]) in out),
            "rm (stopped)": rm_stopped,
            "--help": lambda t: cmd(t, ("--help",), lambda out: "run" in out),
            "run --rm true": lambda t: cmd(t, ("run", "--rm", "--network", "none", IMAGE, "true"),
                                           lambda out: out == ""),
        }
        measures: dict[str, c.Measure] = {f"{t}|{case}": make(t) for case, make in cases.items() for t in tools}
        c.log(f"{args.runs} interleaved rounds of {len(measures)} commands")
        series = c.interleave(measures, args.runs, before=lambda: None,
                              background=[registry.proc.pid] if registry.proc is not None else [])

        rows = []
        for case in cases:
            r = series[f"rootless|{case}"]
            row = [case, f"{r.median * 1000:.1f} ms"]
            if "podman" in tools:
                pm_s = series[f"podman|{case}"]
                ratio = c.ratio(r.median, pm_s.median)
                goal = GOALS.get(case.split()[0], GOAL)
                row += [f"{pm_s.median * 1000:.1f} ms", f"{ratio:.2f}×", f"≤ {goal}×", c.verdict(ratio, goal)]
            rows.append(row)
        header = ["command", "rootless"] + (["podman", "ratio", "goal", ""] if "podman" in tools else [])
        print(c.table(header, rows))
        print(f"\n{args.images} images, {n} containers in each store; medians of {args.runs} interleaved rounds; "
              f"load average {c.loadavg()}\n{podman_note}; rootless: "
              f"{'the running venv' if args.dev_venv else 'installed as pip install . would'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
