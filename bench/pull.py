"""Cold-pull benchmark: `rootless pull` beside `podman pull` and beside the floor.

    bench/pull.py [--runs N] [--images debian,sixlayer] [--no-podman] [--no-floor]
                  [--podman-mount-program PATH] [--delete-between] [--keep] [--json FILE]

Run it as the unprivileged test user; as root it re-executes itself as that user (like
scripts/test):

    runuser -u rltest -- env HOME=/home/rltest XDG_RUNTIME_DIR=/run/user/1001 \\
        /opt/rl/venv/bin/python bench/pull.py

What it does, all on 127.0.0.1 with a real docker-registry started for the run:
 * pushes library/debian:bookworm (one gzip layer: the mmdebstrap minbase rootfs) and
   test/sixlayer (the same files cut into six layers), built by the test harness;
 * times, per image, N rounds of: `rootless pull` into an empty --root, `podman pull`
   into an empty --root, and the floor: `skopeo copy` of the blobs to a directory plus
   GNU tar unpacking them inside the same user namespace (full subordinate ID map) —
   interleaved, since the machine's state moves single pulls here by a factor of two or
   three: other processes' load, writeback (a sync precedes each run) and, above all,
   the cost of creating inodes on this journal-less ext4, which is high for a minute
   after many files were deleted nearby (see common.create_cost). So the stores are
   removed at the end, not between runs, and that cost is measured at each round;
 * prints medians, min–max, per-round ratios, the other load during each measure, and
   the goals (≤ 0.7× Podman's median, ≤ 0.85× the floor's: ISA-L's inflate).

It exits 0 whatever the figures (benchmarks report, tests assert); non-zero only when it
could not measure.
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
from typing import TYPE_CHECKING

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common as c  # noqa: E402

if TYPE_CHECKING:
    from tests.integration.harness import Registry

GOAL_VS_PODMAN = 0.7
GOAL_VS_FLOOR = 0.85  # issue 12: ISA-L inflate (was 1.2 with zlib)

# The floor's unpack: GNU tar inside the store's user namespace, timed from inside so the
# namespace setup is not counted (rootless pays it too, once per pull: the floor is strict).
FLOOR_UNPACK = r'''
set -e
dest=$1; shift
start=$(date +%s%N)
i=0
for layer in "$@"; do
  i=$((i + 1))
  mkdir "$dest/$i"
  tar -xzf "$layer" -C "$dest/$i" --numeric-owner
done
end=$(date +%s%N)
echo $((end - start))
'''


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Cold pull: rootless vs podman vs the floor (skopeo + tar).")
    p.add_argument("--runs", type=int, default=5, help="rounds per image (default 5)")
    p.add_argument("--images", default="debian,sixlayer", help="comma-separated: debian, sixlayer")
    p.add_argument("--no-podman", action="store_true", help="skip podman even when it is installed")
    p.add_argument("--no-floor", action="store_true", help="skip the skopeo + tar floor")
    p.add_argument("--podman-mount-program", metavar="PATH",
                   help="podman's overlay mount_program (e.g. /usr/bin/fuse-overlayfs; default: none, "
                        "the kernel's overlay)")
    p.add_argument("--keep", action="store_true", help="keep the work directory (registry, configs)")
    p.add_argument("--delete-between", action="store_true",
                   help="remove each store right after its run instead of at the end (less disk, but "
                        "slower runs after the first on a journal-less ext4)")
    p.add_argument("--json", metavar="FILE", help="also write the raw times as JSON")
    args = p.parse_args(argv)
    if args.runs < 1:
        p.error("--runs must be at least 1")
    known = {"debian", "sixlayer"}
    args.images = [x.strip() for x in args.images.split(",") if x.strip()]
    bad = [x for x in args.images if x not in known]
    if bad or not args.images:
        p.error(f"--images: choose from {', '.join(sorted(known))}")
    return args


class PullBench:
    def __init__(self, work: Path, registry: Registry, rootless: c.Rootless, podman: c.Podman | None,
                 floor: bool, delete_between: bool) -> None:
        self.work = work
        # Stores are removed at the end, not between runs: on this VM's journal-less ext4,
        # creating files within a minute of deleting thousands nearby costs up to ten
        # times more (see common.create_cost), so a removal would slow the next run down.
        self.delete_between = delete_between
        self.trash: list[Path] = []
        self.registry = registry
        self.rootless = rootless
        self.podman = podman
        self.floor_dir = work / "floor"
        self.floor_dir.mkdir()
        self.floor = floor
        self.create_costs: dict[str, list[float]] = {}  # image label → µs per new inode, each round
        self._n = 0

    # ---- one cold pull each
    def rootless_pull(self, image: c.BenchImage) -> float:
        root, runroot = self.rootless.fresh_store()
        argv = self.rootless.argv("pull", "-q", image.short, root=root, runroot=runroot)
        try:
            t0 = time.perf_counter()
            cp = c.run_checked(argv, self.rootless.env)
            took = time.perf_counter() - t0
        finally:
            self.discard(root, runroot)
        got = cp.stdout.strip().splitlines()[-1] if cp.stdout.strip() else ""
        want = image.pushed.id
        if not (got and (want.startswith(got) or got.startswith(want) or got.endswith(want))):
            raise RuntimeError(f"rootless pull {image.short} printed {got!r}, expected image ID {want}")
        return took

    def podman_pull(self, image: c.BenchImage) -> float:
        assert self.podman is not None
        root, runroot = self.podman.fresh_store()
        argv = self.podman.argv("pull", "-q", image.direct(self.registry), root=root, runroot=runroot)
        try:
            return c.timed(argv, self.podman.env)
        finally:
            self.discard(root, runroot)

    def floor_run(self, image: c.BenchImage) -> dict[str, float]:
        """Fetch the blobs (skopeo, no unpack) + GNU tar -xzf each layer in the user namespace."""
        self._n += 1
        d = self.floor_dir / f"f{self._n}"
        blobs, tree = d / "blobs", d / "tree"
        tree.mkdir(parents=True)
        env = self.podman.env if self.podman is not None else self.rootless.env
        try:
            fetch = c.timed(["skopeo", "copy", "--quiet", "--src-tls-verify=false",
                             f"docker://{image.direct(self.registry)}", f"dir:{blobs}"], env)
            manifest = json.loads((blobs / "manifest.json").read_text())
            layers = [str(blobs / layer["digest"].partition(":")[2]) for layer in manifest["layers"]]
            cp = c.run_checked(self.rootless.unshare("sh", "-c", FLOOR_UNPACK, "floor", str(tree), *layers),
                               self.rootless.env, timeout=600)
            unpack = int(cp.stdout.strip().splitlines()[-1]) / 1e9
        finally:
            self.discard(d)
        return {"total": fetch + unpack, "fetch": fetch, "unpack": unpack}

    # ---- what the runs leave behind
    def discard(self, *paths: Path) -> None:
        if self.delete_between:
            self.rootless.remove(*paths)
        else:
            self.trash.extend(paths)

    def cleanup(self) -> None:
        """Remove every store the runs left, Podman's too: `rootless unshare` maps IDs the
        way `podman unshare` does (0 → the user, 1… → the subordinate range)."""
        paths, self.trash = self.trash, []
        for i in range(0, len(paths), 50):
            self.rootless.remove(*paths[i:i + 50])

    def measure(self, image: c.BenchImage, runs: int) -> dict[str, c.Series]:
        measures: dict[str, c.Measure] = {"rootless": lambda: self.rootless_pull(image)}
        if self.podman is not None:
            measures["podman"] = lambda: self.podman_pull(image)
        if self.floor:
            measures["floor"] = lambda: self.floor_run(image)
        background = [self.registry.proc.pid] if self.registry.proc is not None else []
        costs: list[float] = []
        self.create_costs[image.label] = costs
        return c.interleave(measures, runs, label=f"{image.label}: ", background=background,
                            probe=lambda: c.create_cost(self.work, trash=self.trash), probes=costs)


def report_image(image: c.BenchImage, s: dict[str, c.Series], costs: list[float]) -> list[str]:
    lines = [f"{image.label}: {image.layers} layer{'s' if image.layers != 1 else ''}, "
             f"{c.human_bytes(image.compressed)} gzip, {c.human_bytes(image.uncompressed)} unpacked"]
    if costs:
        lines.append("  cost of creating one file, at the start of each round: "
                     + ", ".join(f"{x:.0f}" for x in costs) + " µs")
    rows = []
    for name, series in s.items():
        extra = ""
        if series.parts:
            extra = "  = " + " + ".join(f"{p} {series.part_median(p):.2f}" for p in series.parts)
        rows.append([name, f"{series.median:.2f} s", f"{series.spread()} s", f"±{series.spread_pct() / 2:.0f}%",
                     f"{series.other_cores():.2f}", str(len(series.times)) + extra])
    lines += ["  " + x for x in c.table(["tool", "median", "min–max", "spread", "other load", "runs"],
                                        rows).splitlines()]
    r = s["rootless"].median
    for other, label, goal in (("podman", "podman", GOAL_VS_PODMAN), ("floor", "floor ", GOAL_VS_FLOOR)):
        if other not in s:
            continue
        v = c.ratio(r, s[other].median)
        lines.append(f"  rootless / {label} = {v:.2f}×  (goal ≤ {goal}: {c.verdict(v, goal)}){paired(s, other)}")
    return lines


def paired(s: dict[str, c.Series], other: str) -> str:
    """The ratio within each round (the two ran seconds apart, under the same load), which
    drifts in the machine's state do not skew the way they can skew a ratio of medians."""
    pairs = [a / b for a, b in zip(s["rootless"].times, s[other].times, strict=False) if b]
    if len(pairs) < 2:
        return ""
    return f"; per round {min(pairs):.2f}–{max(pairs):.2f}, median {statistics.median(pairs):.2f}×"


def _num(v: float) -> str:
    return "-" if v != v else f"{v:.2f}"  # NaN: not measured


def _goal(v: float, goal: float) -> str:
    return "-" if v != v else f"{v:.2f}× {c.verdict(v, goal)}"


def summary(results: list[tuple[c.BenchImage, dict[str, c.Series]]]) -> str:
    rows = []
    for image, s in results:
        r = s["rootless"].median
        p = s["podman"].median if "podman" in s else float("nan")
        f = s["floor"].median if "floor" in s else float("nan")
        vp, vf = c.ratio(r, p), c.ratio(r, f)
        rows.append([image.label, f"{r:.2f}", _num(p), _num(f), _goal(vp, GOAL_VS_PODMAN), _goal(vf, GOAL_VS_FLOOR)])
    return c.table(["image", "rootless s", "podman s", "floor s",
                    f"r/podman (≤{GOAL_VS_PODMAN})", f"r/floor (≤{GOAL_VS_FLOOR})"], rows)


def main(argv: list[str]) -> int:
    c.run_as_test_user(Path(__file__).resolve(), argv)
    args = parse_args(argv)
    c.ensure_bookworm_tarball()
    started = time.monotonic()
    work = c.make_workspace("rootless-bench-pull")
    removers: list[Callable[[], None]] = []
    with c.cleanup_on_exit(work, args.keep, removers):
        c.log(f"work directory {work}; load average {c.loadavg()}")
        registry = c.start_bench_registry(work)
        removers.append(registry.stop)
        c.log(f"registry on {registry.host}; building and pushing the images (cached after the first time)")
        t0 = time.monotonic()
        pushers = {"debian": c.push_debian, "sixlayer": c.push_sixlayer}
        images = [pushers[name](registry) for name in args.images]
        c.log(f"images ready in {time.monotonic() - t0:.1f}s")
        rootless = c.Rootless(work, registry)
        podman: c.Podman | None = None
        podman_desc = "podman: not run (--no-podman)" if args.no_podman else "podman: not installed"
        if not args.no_podman and c.Podman.installed():
            podman = c.Podman(work, [registry.host], mount_program=args.podman_mount_program)
            removers.append(podman.stop)
            podman.start()
            podman_desc = podman.describe()
        per_round = sum(i.compressed + i.uncompressed for i in images) * (2 + (podman is not None))
        delete_between = args.delete_between
        if not delete_between and not c.enough_space(work, int(per_round * args.runs * 1.3)):
            c.log("not enough free space to keep every store until the end: removing each after its run")
            delete_between = True
        bench = PullBench(work, registry, rootless, podman, floor=not args.no_floor,
                          delete_between=delete_between)
        removers.append(bench.cleanup)  # before podman.stop (removers run in reverse)
        busy_before = c.busy_processes()
        results = []
        for image in images:
            c.log(f"{image.label}: {args.runs} interleaved rounds")
            results.append((image, bench.measure(image, args.runs)))
        busy_after = c.busy_processes()

        out = ["", "== cold pull (empty store each run; runs interleaved; sync before each; stores removed "
               + ("after each run" if delete_between else "at the end") + ") =="]
        out.append(f"rootless: {rootless.version()} (python {sys.version.split()[0]}); {podman_desc}")
        out.append("floor: skopeo copy to dir: + GNU tar -xzf per layer inside `rootless unshare` "
                   "(time inside the namespace)")
        out.append(f"machine: {os.cpu_count()} CPUs, load average now {c.loadavg()}; "
                   f"busy processes at start: {', '.join(busy_before) or 'none'}; "
                   f"at end: {', '.join(busy_after) or 'none'}")
        out.append("other load: mean cores busy with work not this benchmark's during the runs "
                   "(other test runs; kernel writeback threads count too): high values mean noisy figures")
        out.append("cost of creating one file: an unpack is mostly inode creation, whose kernel cost on this "
                   "VM's journal-less ext4 swings ~10–250 µs (high soon after mass deletions, anyone's); "
                   "rounds with higher costs are slower for every tool")
        for image, s in results:
            out.append("")
            out += report_image(image, s, bench.create_costs.get(image.label, []))
        out += ["", summary(results),
                f"goals: rootless ≤ {GOAL_VS_PODMAN}× podman's median, ≤ {GOAL_VS_FLOOR}× the floor; "
                f"benchmark took {time.monotonic() - started:.0f}s"]
        print("\n".join(out), flush=True)
        if args.json:
            Path(args.json).write_text(json.dumps({
                image.label: {"create_cost_us": bench.create_costs.get(image.label, []),
                              **{name: {"times": se.times, "parts": se.parts, "other_cpu": se.other_cpu}
                                 for name, se in s.items()}}
                for image, s in results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
