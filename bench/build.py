"""`rootless build` beside `podman build`: a cold build, a rebuild with nothing changed, and a
rebuild after one context file changed; interleaved rounds, both with layers.

The Dockerfile: FROM debian:bookworm, a COPY of a context of 30,000 small files plus one
100 MB file, and three RUN steps that create and delete files. Each round gives each tool a
fresh store with the base image already pulled (the pull is bench/pull.py's business), then
times (a) the cold build, (b) the same build again, (c) the build after one small file
changed. The floor for (a) is `cp -a` of the context into an unpacked debian root plus the
three RUN commands run there under `unshare -r` + chroot.

Goals (issue 11): (a) ≤ 0.5× Podman, (b) ≤ 0.2×, (c) ≤ 0.4×.

Run as root (it re-executes itself as the test user) or as a user with subordinate IDs:
    sudo python3 bench/build.py [--runs 3] [--files 30000] [--big-mb 100] [--no-podman] [--keep]
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

GOALS = {"a": 0.5, "b": 0.2, "c": 0.4}
RUNS = (
    "mkdir /r1 && i=0 && while [ $i -lt 3000 ]; do echo $i > /r1/f$i; i=$((i+1)); done && rm -rf /usr/share/doc",
    "rm -rf /r1/f1* /usr/share/locale && mkdir /r2 && seq 1 200000 > /r2/numbers",
    "rm -rf /ctx/d0 && cp -a /ctx/d1 /r3 && echo done > /done",
)


def dockerfile(base: str) -> str:
    return f"FROM {base}\nCOPY . /ctx\n" + "".join(f"RUN {r}\n" for r in RUNS)


def make_context(where: Path, files: int, big_mb: int) -> Path:
    ctx = where / "context"
    per_dir = 100
    for i in range(files):
        d = ctx / f"d{i // per_dir}"
        if i % per_dir == 0:
            d.mkdir(parents=True)
        (d / f"f{i}.txt").write_text(f"file {i}\n" * (1 + i % 7))
    with open(ctx / "big.bin", "wb") as f:
        block = os.urandom(1 << 20)
        for i in range(big_mb):
            f.write(block[:-8] + i.to_bytes(8, "little"))
    return ctx


class BuildBench:
    def __init__(self, work: Path, registry: c.Registry, image: c.BenchImage, rootless: c.Rootless,
                 podman: c.Podman | None, ctx: Path) -> None:
        self.work = work
        self.registry = registry
        self.image = image
        self.rootless = rootless
        self.podman = podman
        self.ctx = ctx
        self.trash: list[Callable[[], None]] = []
        (ctx / "Containerfile").write_text(dockerfile(image.short))
        self.pm_ctx = work / "pm-context"
        # the same files for Podman (its FROM names the registry directly: its short names go to docker.io)
        subprocess.run(["cp", "-a", "--reflink=auto", str(ctx), str(self.pm_ctx)], check=True)
        (self.pm_ctx / "Containerfile").write_text(dockerfile(image.direct(registry)))

    def _three(self, build: Callable[[], float], ctx: Path) -> dict[str, float]:
        a = build()
        b = build()
        target = ctx / "d5" / "f500.txt"
        target.write_text(target.read_text() + "changed\n")
        try:
            cc = build()
        finally:
            target.write_text(target.read_text().removesuffix("changed\n"))
        return {"total": a, "b": b, "c": cc}

    def rootless_round(self) -> dict[str, float]:
        root, runroot = self.rootless.fresh_store()
        env = self.rootless.env
        c.run_checked(self.rootless.argv("pull", "-q", self.image.short, root=root, runroot=runroot), env,
                      timeout=900)

        def build() -> float:
            return c.timed(self.rootless.argv("build", "-q", "-t", "bench", str(self.ctx), root=root,
                                              runroot=runroot), env, timeout=1800)

        try:
            return self._three(build, self.ctx)
        finally:
            self.trash.append(lambda: self.rootless.remove(root, runroot))

    def podman_round(self) -> dict[str, float]:
        assert self.podman is not None
        pm = self.podman
        root, runroot = pm.fresh_store()
        c.run_checked(pm.argv("pull", "-q", self.image.direct(self.registry), root=root, runroot=runroot), pm.env,
                      timeout=900)

        def build() -> float:
            return c.timed(pm.argv("build", "-q", "--layers", "-t", "bench", str(self.pm_ctx), root=root,
                                   runroot=runroot), pm.env, timeout=1800)

        try:
            return self._three(build, self.pm_ctx)
        finally:
            self.trash.append(lambda: pm.remove(root, runroot))

    def floor_round(self) -> dict[str, float]:
        """cp -a of the context into an unpacked debian root, then the RUN commands in it."""
        base = self.work / "floor-base"
        if not base.exists():
            base.mkdir()
            c.run_checked(["unshare", "-r", "tar", "-xf", str(c.ensure_bookworm_tarball()), "-C", str(base),
                           "--no-same-owner", "--exclude=./dev/*"], os.environ.copy(), timeout=900)
        root = self.work / f"floor-{time.monotonic_ns()}"
        c.run_checked(["unshare", "-r", "cp", "-a", "--reflink=never", str(base), str(root)], os.environ.copy(),
                      timeout=900)
        env = {"PATH": c.SAFE_PATH}
        try:
            t0 = time.perf_counter()
            c.run_checked(["cp", "-a", str(self.ctx), str(root / "ctx")], env, timeout=900)
            t1 = time.perf_counter()
            for r in RUNS:
                c.run_checked(["unshare", "-r", "chroot", str(root), "/bin/sh", "-c", r], env, timeout=900)
            t2 = time.perf_counter()
            return {"total": t2 - t0, "copy": t1 - t0, "runs": t2 - t1}
        finally:
            self.trash.append(lambda: c.run_checked(["unshare", "-r", "rm", "-rf", str(root)], os.environ.copy(),
                                                    timeout=900))

    def cleanup(self) -> None:
        for t in self.trash:
            t()
        self.trash.clear()


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--files", type=int, default=30000)
    p.add_argument("--big-mb", type=int, default=100)
    p.add_argument("--no-podman", action="store_true")
    p.add_argument("--no-floor", action="store_true")
    p.add_argument("--keep", action="store_true")
    return p.parse_args(argv)


def main(argv: list[str]) -> int:
    c.run_as_test_user(Path(__file__).resolve(), argv)
    args = parse_args(argv)
    started = time.monotonic()
    work = c.make_workspace("rootless-bench-build")
    removers: list[Callable[[], None]] = []
    with c.cleanup_on_exit(work, args.keep, removers):
        c.log(f"work directory {work}; load average {c.loadavg()}")
        registry = c.start_bench_registry(work)
        removers.append(registry.stop)
        image = c.push_debian(registry)
        rootless = c.Rootless(work, registry)
        podman = None
        desc = "podman: not run"
        if not args.no_podman and c.Podman.installed():
            podman = c.Podman(work, [registry.host])
            removers.append(podman.stop)
            podman.start()
            desc = podman.describe()
        c.log(f"making the context: {args.files} small files and {args.big_mb} MB")
        ctx = make_context(work, args.files, args.big_mb)
        bench = BuildBench(work, registry, image, rootless, podman, ctx)
        removers.append(bench.cleanup)
        measures: dict[str, c.Measure] = {"rootless": bench.rootless_round}
        if podman is not None:
            measures["podman"] = bench.podman_round
        if not args.no_floor:
            measures["floor"] = bench.floor_round
        s = c.interleave(measures, args.runs, label="build ")
        rows = []
        parts = {"a": ("(a) cold build", lambda x: x.median), "b": ("(b) rebuild, nothing changed",
                                                                   lambda x: x.part_median("b")),
                 "c": ("(c) rebuild, one file changed", lambda x: x.part_median("c"))}
        for key, (label, med) in parts.items():
            r = med(s["rootless"])
            p = med(s["podman"]) if "podman" in s else float("nan")
            ratio = c.ratio(r, p)
            row = [label, f"{r:.2f} s", f"{p:.2f} s", f"{ratio:.2f}×", f"≤ {GOALS[key]}×", c.verdict(ratio, GOALS[key])]
            if key == "a" and "floor" in s:
                f = s["floor"].median
                row += [f"{f:.2f} s", f"{c.ratio(r, f):.2f}×"]
            else:
                row += ["", ""]
            rows.append(row)
        out = ["", f"== build: FROM debian:bookworm, COPY of {args.files} files + {args.big_mb} MB, 3 RUN steps; "
               f"{args.runs} interleaved rounds, medians ==",
               f"rootless: {rootless.version()}; {desc}", f"load average now {c.loadavg()}",
               c.table(["measure", "rootless", "podman", "ratio", "goal", "verdict", "floor", "vs floor"], rows)]
        if "floor" in s:
            out.append(f"floor parts: cp -a {s['floor'].part_median('copy'):.2f} s, "
                       f"RUN commands {s['floor'].part_median('runs'):.2f} s")
        for name, se in s.items():
            out.append(f"{name}: cold runs {', '.join(f'{t:.2f}' for t in se.times)}; other CPU "
                       f"{se.other_cores():.2f} cores")
        out.append(f"benchmark took {time.monotonic() - started:.0f} s")
        print("\n".join(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
