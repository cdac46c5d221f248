"""Sharing benchmark: `rootless push`/`save`/`load` beside Podman's, interleaved.

    bench/push.py [--runs N] [--no-podman] [--keep] [--json FILE]

Run it as the unprivileged test user; as root it re-executes itself as that user (like
scripts/test), e.g. `ROOTLESS_TEST_USER=rltest python3 bench/push.py`.

All on 127.0.0.1, against a real docker-registry started for the run. Measures, each
round interleaved (the order rotates), every push into a fresh repository:
 * first push: debian:bookworm's rootfs (170 MB, 8,729 files) made locally with
   `import` in a fresh store (untimed), then pushed: the layer must be compressed
   (goal ≤ 0.5× Podman);
 * re-push: the same imported image pushed again into another new repository: its
   layer is already compressed and already in the registry (goal ≤ 0.2×);
 * six layers: the 6-layer image, pulled from the registry, pushed into a new
   repository: unchanged layers the registry holds (goal ≤ 0.2×);
 * save and load of debian:bookworm (docker-archive to a file; load into a fresh
   store), each tool its own archive (goal ≤ 0.6× each).
Prints medians, spreads, per-round ratios and the goals; exits 0 whatever the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common as c  # noqa: E402

GOALS = {"first push": 0.5, "re-push": 0.2, "six layers": 0.2, "save": 0.6, "load": 0.6}
BOOKWORM = Path("/var/cache/rootless-ci/bookworm.tar")


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="push, save and load: rootless vs podman, interleaved.")
    p.add_argument("--runs", type=int, default=5, help="rounds (default 5)")
    p.add_argument("--no-podman", action="store_true", help="skip podman even when it is installed")
    p.add_argument("--keep", action="store_true", help="keep the work directory")
    p.add_argument("--json", metavar="FILE", help="also write the raw times as JSON")
    args = p.parse_args(argv)
    if args.runs < 1:
        p.error("--runs must be at least 1")
    return args


class Tool:
    """One tool's commands; ``cmd(*args, root=...)`` builds its argv with a store."""

    def __init__(self, name: str, argv: Callable[..., list[str]], env: dict[str, str],
                 fresh: Callable[[], tuple[Path, Path]], remove: Callable[..., None],
                 caches: tuple[Path, ...] = ()) -> None:
        self.name, self.argv, self.env, self.fresh, self.remove = name, argv, env, fresh, remove
        # what a tool remembers outside its store about blobs it pushed (Podman's blob-info
        # cache maps a layer's diff ID to a compressed blob already in the registry): a
        # first push must not find it
        self.caches = caches
        self.trash: list[Path] = []
        self._n = 0

    def run(self, *args: str, store: tuple[Path, Path]) -> float:
        return c.timed(self.argv(*args, root=store[0], runroot=store[1]), self.env, timeout=900)

    def new_name(self, what: str) -> str:
        self._n += 1
        return f"bench/{self.name}-{what}-{self._n}-{os.getpid()}"

    def cleanup(self) -> None:
        paths, self.trash = self.trash, []
        for i in range(0, len(paths), 50):
            self.remove(*paths[i:i + 50])


class PushBench:
    def __init__(self, work: Path, registry: c.Registry, tools: list[Tool], six: c.BenchImage,
                 debian: c.BenchImage) -> None:
        self.work, self.registry, self.tools = work, registry, tools
        self.six, self.debian = six, debian
        self.stores: dict[str, tuple[Path, Path]] = {}
        self.imported: dict[str, str] = {}
        self.archives: dict[str, Path] = {}

    def prepare(self) -> None:
        """Each tool's long-lived store: the two images pulled, bookworm imported and pushed once."""
        for t in self.tools:
            store = t.fresh()
            self.stores[t.name] = store
            t.trash.extend(store)
            for img in (self.six, self.debian):
                t.run("pull", "-q", img.direct(self.registry), store=store)
            self.imported[t.name] = f"local/{t.name}-debian:1"
            t.run("import", str(BOOKWORM), self.imported[t.name], store=store)
            t.run("push", "-q", self.imported[t.name], f"{self.registry.host}/{t.new_name('seed')}", store=store)

    def first_push(self, t: Tool) -> float:
        store = t.fresh()
        t.trash.extend(store)
        name = f"local/{t.name}-first:1"
        t.run("import", str(BOOKWORM), name, store=store)
        for cache in t.caches:
            cache.unlink(missing_ok=True)
        c.settle()
        return t.run("push", "-q", name, f"{self.registry.host}/{t.new_name('first')}", store=store)

    def repush(self, t: Tool) -> float:
        return t.run("push", "-q", self.imported[t.name], f"{self.registry.host}/{t.new_name('again')}",
                     store=self.stores[t.name])

    def six_layers(self, t: Tool) -> float:
        return t.run("push", "-q", self.six.direct(self.registry), f"{self.registry.host}/{t.new_name('six')}",
                     store=self.stores[t.name])

    def save(self, t: Tool) -> float:
        out = self.work / f"{t.name}-save-{time.monotonic_ns()}.tar"
        took = t.run("save", "-o", str(out), self.debian.direct(self.registry), store=self.stores[t.name])
        old = self.archives.get(t.name)
        self.archives[t.name] = out
        if old is not None:
            t.trash.append(old)
        return took

    def load(self, t: Tool) -> float:
        store = t.fresh()
        t.trash.extend(store)
        return t.run("load", "-q", "-i", str(self.archives[t.name]), store=store)


def report(results: dict[str, dict[str, c.Series]], names: list[str]) -> list[str]:
    rows = []
    for what, s in results.items():
        r = s["rootless"].median
        row = [what, f"{r:.2f}"]
        if "podman" in s:
            p = s["podman"].median
            pairs = [a / b for a, b in zip(s["rootless"].times, s["podman"].times, strict=False) if b]
            v = c.ratio(r, p)
            row += [f"{p:.2f}", f"{v:.2f}× {c.verdict(v, GOALS[what])}",
                    f"{min(pairs):.2f}–{max(pairs):.2f}" if pairs else "-"]
        else:
            row += ["-", "-", "-"]
        row += [f"≤ {GOALS[what]}", f"{s['rootless'].spread()}"]
        rows.append(row)
    return c.table(["measure", "rootless s", "podman s", "rootless/podman", "per round", "goal",
                    "rootless min–max"], rows).splitlines()


def _bind(fn: Callable[[Tool], float], t: Tool) -> c.Measure:
    return lambda: fn(t)


def main(argv: list[str]) -> int:
    c.run_as_test_user(Path(__file__).resolve(), argv)
    args = parse_args(argv)
    c.ensure_bookworm_tarball()
    started = time.monotonic()
    work = c.make_workspace("rootless-bench-push")
    removers: list[Callable[[], None]] = []
    with c.cleanup_on_exit(work, args.keep, removers):
        c.log(f"work directory {work}; load average {c.loadavg()}")
        registry = c.start_bench_registry(work)
        removers.append(registry.stop)
        debian, six = c.push_debian(registry), c.push_sixlayer(registry)
        rootless = c.Rootless(work, registry)
        tools = [Tool("rootless", rootless.argv, rootless.env, rootless.fresh_store, rootless.remove)]
        podman_desc = "podman: not run"
        if not args.no_podman and c.Podman.installed():
            podman = c.Podman(work, [registry.host])
            removers.append(podman.stop)
            podman.start()
            podman_desc = podman.describe()
            tools.append(Tool("podman", podman.argv, podman.env, podman.fresh_store, podman.remove,
                              caches=(podman.data / "containers" / "cache" / "blob-info-cache-v1.boltdb",)))
        for t in tools:
            removers.append(t.cleanup)
        bench = PushBench(work, registry, tools, six, debian)
        c.log("preparing the stores (pulls, an import and a first push each, untimed)")
        bench.prepare()
        results: dict[str, dict[str, c.Series]] = {}
        background = [registry.proc.pid] if registry.proc is not None else []
        for what, fn in (("first push", bench.first_push), ("re-push", bench.repush),
                         ("six layers", bench.six_layers), ("save", bench.save), ("load", bench.load)):
            c.log(f"{what}: {args.runs} interleaved rounds")
            measures: dict[str, c.Measure] = {t.name: _bind(fn, t) for t in tools}
            results[what] = c.interleave(measures, args.runs, label=f"{what}: ", background=background)
        out = ["", "== push, save, load (registry on 127.0.0.1; runs interleaved; sync before each) ==",
               f"rootless: {rootless.version()} (python {sys.version.split()[0]}); {podman_desc}",
               f"images: {debian.label} ({c.human_bytes(debian.uncompressed)} tar, imported for the pushes); "
               f"{six.label} ({c.human_bytes(six.compressed)} gzip)",
               f"machine: {os.cpu_count()} CPUs, load average now {c.loadavg()}", ""]
        out += report(results, [t.name for t in tools])
        out.append(f"benchmark took {time.monotonic() - started:.0f}s")
        print("\n".join(out), flush=True)
        if args.json:
            Path(args.json).write_text(json.dumps({
                what: {name: {"times": se.times, "median": statistics.median(se.times)} for name, se in s.items()}
                for what, s in results.items()}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
