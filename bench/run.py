"""Start-up benchmark: `rootless run --rm` of a stored image beside `podman run --rm`.

    bench/run.py [--runs N] [--warmup N] [--no-podman] [--no-native] [--importtime-runs N]
                 [--dev-venv] [--sync] [--keep] [--json FILE]

Run it as the unprivileged test user; as root it re-executes itself as that user (like
bench/pull.py and scripts/test):

    runuser -u rltest -- env HOME=/home/rltest XDG_RUNTIME_DIR=/run/user/1001 \\
        /opt/rl/venv/bin/python bench/run.py

What it does, all on 127.0.0.1 with a real docker-registry started for the run:
 * installs this tree into a venv in its work directory the way `pip install .` (README's
   first command) lays a package out: the packages in site-packages, compiled, and pip's
   console script. The venv running the benchmark is usually an editable install
   (scripts/setup-host uses `pip install -e`), whose import-hook finder no user has and
   every start would pay for; and rltest cannot write __pycache__ in a root-owned tree.
   --dev-venv times that venv's own `rootless` instead;
 * pushes library/busybox:latest (the test harness's busybox image) and pulls it once
   into a private `rootless` store and into each Podman store (untimed);
 * times N interleaved rounds (after a warm-up) of
     rootless run --rm --network none busybox true
     rootless run --rm --network none busybox /bin/sh -c 'echo hi'
   and the same two with `podman run`, once with fuse-overlayfs as Podman's overlay
   mount program (the configuration /work/shared/PEERS.md measured) and once with the
   kernel's overlay (`mount_program = ""`, what Podman 4.3 picks here by default);
 * times `rootless run --security-opt seccomp=unconfined … true` too, and, since that
   difference drowns in the noise of a busy machine, seccomp's own steps (import, cached
   filter, prctl) inside fresh interpreters: what the default filter adds to a run (goal ≤ 2 ms);
 * times the floors: `unshare -Urmpf true` and the venv interpreter's `python -c pass`;
 * runs the same `rootless run` under `python -X importtime` and prints the ten largest
   cumulative imports, and OK/FAIL for "neither httpx nor rich was imported";
 * prints medians, p10–p90 and min–max, and rootless/podman against the goal (≤ 0.4×).

It exits 0 whatever the figures (benchmarks report, tests assert); non-zero only when it
could not measure.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common as c  # noqa: E402

if TYPE_CHECKING:
    from tests.integration.harness import Registry
    from tests.testimages import Pushed

GOAL_VS_PODMAN = 0.4
IMAGE = "busybox"  # the short name, as a user types it: both tools resolve it to docker.io/library/busybox
FUSE_OVERLAYFS = "/usr/bin/fuse-overlayfs"
COMMANDS: dict[str, tuple[str, ...]] = {"true": ("true",), "echo": ("/bin/sh", "-c", "echo hi")}
EXPECTED_STDOUT = {"true": "", "echo": "hi\n"}
RUN_FLAGS = ("run", "--rm", "--network", "none")
FORBIDDEN = ("httpx", "rich")  # DESIGN.md principle 7: never on a run of a stored image
NOTABLE = ("typer", "click", "pydantic", "httpcore", "h11", "anyio", "zstandard", "cryptography")


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="`rootless run --rm` vs `podman run --rm` vs the floors.")
    p.add_argument("--runs", type=int, default=30, help="interleaved rounds (default 30)")
    p.add_argument("--warmup", type=int, default=3, help="untimed runs of each command first (default 3)")
    p.add_argument("--no-podman", action="store_true", help="skip podman even when it is installed")
    p.add_argument("--no-native", action="store_true",
                   help="skip Podman with the kernel's overlay (mount_program = \"\")")
    p.add_argument("--no-fuse", action="store_true", help="skip Podman with fuse-overlayfs")
    p.add_argument("--importtime-runs", type=int, default=5,
                   help="`python -X importtime` runs, medians per module (default 5)")
    p.add_argument("--dev-venv", action="store_true",
                   help="time the `rootless` of the venv running this (an editable install, usually) "
                        "instead of a pip-style install of this tree in the work directory")
    p.add_argument("--sync", action="store_true",
                   help="sync(2) before every timed run (off: a run writes next to nothing, and syncing "
                        "would make each run wait for other processes' writeback)")
    p.add_argument("--keep", action="store_true", help="keep the work directory (registry, stores, configs)")
    p.add_argument("--json", metavar="FILE", help="also write the raw times as JSON")
    args = p.parse_args(argv)
    if args.runs < 1 or args.warmup < 0 or args.importtime_runs < 1:
        p.error("--runs and --importtime-runs must be at least 1, --warmup at least 0")
    return args


# --------------------------------------------------------------------------- setup


def push_busybox(registry: Registry) -> Pushed:
    """library/busybox:latest exactly as the integration tests push it (conftest.py)."""
    from tests import imagebuild as ib
    from tests import testimages as ti

    if not ti.BUSYBOX.exists():
        sys.exit(f"{ti.BUSYBOX} is missing (apt-get install busybox-static)")
    with registry.pusher() as p:
        return ti.push_image(p, "library/busybox", "latest", ib.make_image([ti.busybox_layer()], cmd=["sh"]))


def root_mount(cp: subprocess.CompletedProcess[str]) -> str:
    """The file system type and source of the container's / from its /proc/self/mountinfo line
    (proc(5): the fields after " - " are fstype, source, super options)."""
    for line in cp.stdout.splitlines():
        fields = line.split()
        if len(fields) > 4 and fields[4] == "/" and " - " in line:
            fstype, source = line.split(" - ", 1)[1].split()[:2]
            return fstype if fstype == source else f"{fstype} ({source})"
    return "?"


@dataclass
class PodmanSetup:
    """One rootless Podman configuration, using its default store (Podman 4.3 ignores the
    storage.conf overlay options, mount_program included, when --root is given)."""

    label: str
    podman: c.Podman
    root_fs: str = "?"


def make_podman(work: Path, label: str, registry: Registry, mount_program: str) -> PodmanSetup:
    base = work / label
    base.mkdir()
    pm = c.Podman(base, [registry.host], mount_program=mount_program or None)
    # A short XDG_RUNTIME_DIR. Under c.Podman's deeper one (/tmp/rlbr-XXXXXXXX/LABEL/podman/run)
    # every `podman run` here printed its output and then sat out conmon's 20 s exit timeout
    # ("Exceeded conmon timeout waiting for container to exit"); with /tmp/rlr-XXXXXXXX it does
    # not. Likely cause: conmon's sockets below it outgrow sun_path's 108 bytes (unix(7)).
    short = Path(tempfile.mkdtemp(prefix="rlr-", dir="/tmp"))
    pm.runtime_dir = short
    pm.env["XDG_RUNTIME_DIR"] = str(short)
    # containers-storage.conf(5): an empty mount_program means the kernel's overlay;
    # written out so the choice does not depend on what Podman would pick by itself.
    (pm.config / "containers" / "storage.conf").write_text(
        f'[storage]\ndriver = "overlay"\n\n[storage.options.overlay]\nmount_program = "{mount_program}"\n')
    return PodmanSetup(label, pm)


def prepare_podman(setup: PodmanSetup, registry: Registry, pushed: Pushed) -> None:
    pm = setup.podman
    pm.start()
    direct = f"{registry.host}/{pushed.name}"
    c.run_checked(pm.argv("pull", "-q", direct), pm.env)
    # the short name resolves through the docker.io alias (shortnames.conf) to this tag
    c.run_checked(pm.argv("tag", direct, f"docker.io/{pushed.name}"), pm.env)
    cp = c.run_checked(pm.argv(*RUN_FLAGS, IMAGE, "cat", "/proc/self/mountinfo"), pm.env)
    setup.root_fs = root_mount(cp)


def install_tree(work: Path) -> Path:
    """This tree laid out as `pip install .` lays it out, in a new venv under ``work``; its
    `rootless` console script. The dependencies (needed by `pull`, never imported by a run
    of a stored image) come from the running venv through a path entry; .pth files there,
    such as an editable install's finder, are not processed (site(3): only a site dir's are)."""
    import shutil
    import sysconfig

    venv = work / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               check=True, capture_output=True, text=True).stdout.strip())
    for pkg in ("rootless", "storage", "slirp"):  # pyproject.toml's [tool.setuptools.packages.find]
        shutil.copytree(c.REPO / pkg, site / pkg, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    deps = sysconfig.get_paths()["purelib"]
    (site / "bench-dependencies.pth").write_text(f"{deps}\n")
    subprocess.run([str(python), "-m", "compileall", "-q", str(site / "rootless"), str(site / "storage"),
                    str(site / "slirp")], check=True)
    script = venv / "bin" / "rootless"
    # the console script pip writes (SCRIPT_TEMPLATE in pip/_vendor/distlib/scripts.py), `import re` included
    script.write_text(f"#!{python}\n# -*- coding: utf-8 -*-\nimport re\nimport sys\n"
                      "from rootless.cli import main\nif __name__ == '__main__':\n"
                      "    sys.argv[0] = re.sub(r'(-script\\.pyw|\\.exe)?$', '', sys.argv[0])\n"
                      "    sys.exit(main())\n")
    script.chmod(0o755)
    return script


def interpreter(command: list[str]) -> str:
    """The Python the `rootless` console script runs under (its #! line)."""
    head = Path(command[0]).read_bytes()[:256]
    if head.startswith(b"#!"):
        return head[2:].split(b"\n", 1)[0].decode().strip().split()[0]
    return command[0]


# --------------------------------------------------------------------------- timing


def timed_run(argv: list[str], env: dict[str, str], want: str) -> float:
    t0 = time.perf_counter()
    cp = c.run_checked(argv, env)
    took = time.perf_counter() - t0
    if cp.stdout != want:
        raise RuntimeError(f"{' '.join(argv)} printed {cp.stdout!r}, expected {want!r}")
    return took


def percentile_span(times: list[float]) -> tuple[float, float]:
    if len(times) < 2:
        return times[0], times[0]
    q = statistics.quantiles(times, n=10, method="inclusive")
    return q[0], q[-1]


# --------------------------------------------------------------------------- seccomp's own work

SECCOMP_PROBE = """
import os, sys, time
import rootless.engine, rootless.image.specgen, rootless.runtime.run, rootless.runtime.process, json  # a run loads these anyway
t0 = time.perf_counter()
from rootless.runtime import seccomp, syscalls
t1 = time.perf_counter()
f = seccomp.program(None, sys.argv[1], rootless.image.specgen.DEFAULT_CAPS)
t2 = time.perf_counter()
r, w = os.pipe()
pid = os.fork()
if pid == 0:
    syscalls.set_no_new_privs()
    a = time.perf_counter()
    syscalls.seccomp_load(f.program, f.flags)
    os.write(w, repr(time.perf_counter() - a).encode())
    os._exit(0)
os.close(w)
load = float(os.read(r, 64))
os.waitpid(pid, 0)
print(t1 - t0, t2 - t1, load, len(f.program) // 8)
"""


@dataclass(frozen=True)
class SeccompCost:
    runs: int
    import_ms: tuple[float, float]  # (min, median) of importing rootless.runtime.seccomp
    lookup_ms: tuple[float, float]  # reading the cached filter (profile digest, libseccomp's version)
    load_ms: tuple[float, float]  # the prctl(2) that installs it
    instructions: int


def seccomp_cost(python: str, env: dict[str, str], cache: Path, runs: int) -> SeccompCost:
    """What the default filter adds to a run, timed inside fresh interpreters of the installed
    tree: a wall-clock difference of whole runs drowns it in the noise of a busy machine."""
    rows = []
    for _ in range(runs):
        cp = c.run_checked([python, "-c", SECCOMP_PROBE, str(cache)], env)
        rows.append([float(x) for x in cp.stdout.split()])

    def span(i: int) -> tuple[float, float]:
        xs = [r[i] * 1000 for r in rows]
        return min(xs), statistics.median(xs)

    return SeccompCost(runs, span(0), span(1), span(2), int(rows[-1][3]))


# --------------------------------------------------------------------------- import time


@dataclass(frozen=True)
class ImportRow:
    name: str
    depth: int
    self_us: float
    cumulative_us: float


def parse_importtime(stderr: str) -> list[ImportRow]:
    """The lines `-X importtime` writes: "import time: self [us] | cumulative | imported package",
    the package name indented two spaces per nesting level."""
    rows = []
    for line in stderr.splitlines():
        if not line.startswith("import time:") or "imported package" in line:
            continue
        parts = line[len("import time:"):].split("|")
        if len(parts) != 3:
            continue
        name = parts[2].rstrip()
        stripped = name.lstrip(" ")
        rows.append(ImportRow(stripped.strip(), (len(name) - len(stripped) - 1) // 2,
                              float(parts[0]), float(parts[1])))
    return rows


@dataclass(frozen=True)
class ImportSummary:
    runs: int
    total_ms: float  # sum of the top-level cumulative times, median over the runs
    run_path_ms: float  # the same for the imports after `site` (the interpreter's own start-up)
    site_ms: float
    modules: int
    top_cumulative: list[tuple[str, int, float, float]]  # name, depth, cumulative ms, self ms
    top_self: list[tuple[str, float]]
    forbidden: list[str]
    notable: list[str]
    third_party: list[str]


def import_summary(argv: list[str], env: dict[str, str], runs: int) -> ImportSummary:
    per_run: list[dict[str, ImportRow]] = []
    for _ in range(runs):
        cp = subprocess.run(argv, env=env, text=True, capture_output=True, stdin=subprocess.DEVNULL, timeout=120)
        if cp.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} exited {cp.returncode}\n{cp.stderr[-3000:]}")
        rows: dict[str, ImportRow] = {}
        for row in parse_importtime(cp.stderr):
            rows.setdefault(row.name, row)  # a forked child's later imports are not the run path's start-up
        per_run.append(rows)
    names = list(per_run[-1])
    seen = set().union(*(set(r) for r in per_run))

    def med(name: str, attr: str) -> float:
        return statistics.median(getattr(r[name], attr) for r in per_run if name in r) / 1000

    total = statistics.median(sum(row.cumulative_us for row in r.values() if row.depth == 0) for r in per_run)
    cum = sorted(names, key=lambda n: med(n, "cumulative_us"), reverse=True)[:10]
    top_self = sorted(names, key=lambda n: med(n, "self_us"), reverse=True)[:10]

    def hit(prefixes: tuple[str, ...]) -> list[str]:
        return sorted(n for n in seen if n.split(".")[0] in prefixes)

    # Not packages: "org" is copy.py probing for Jython's org.python.core, apport_python_hook
    # Debian's sitecustomize, __editable__… the finder of the venv's editable install.
    not_third = {"rootless", "storage", "slirp", "sitecustomize", "usercustomize", "org", "apport_python_hook"}
    third = sorted(t for t in {n.split(".")[0] for n in seen} - set(sys.stdlib_module_names) - not_third
                   if not t.startswith("_"))

    def after_site(r: dict[str, ImportRow]) -> float:
        """Top-level imports after `site`: what the run path adds to the interpreter's start-up."""
        rows = list(r.values())
        start = next((i for i, row in enumerate(rows) if row.name == "site" and row.depth == 0), -1)
        return sum(row.cumulative_us for row in rows[start + 1:] if row.depth == 0)

    return ImportSummary(
        runs=runs, total_ms=total / 1000, run_path_ms=statistics.median(after_site(r) for r in per_run) / 1000,
        site_ms=statistics.median(r["site"].cumulative_us for r in per_run if "site" in r) / 1000,
        modules=len(names),
        top_cumulative=[(n, per_run[-1][n].depth, med(n, "cumulative_us"), med(n, "self_us")) for n in cum],
        top_self=[(n, med(n, "self_us")) for n in top_self],
        forbidden=hit(FORBIDDEN), notable=hit(NOTABLE), third_party=third)


# --------------------------------------------------------------------------- report


def ms(x: float) -> str:
    return f"{x * 1000:.1f}"


def series_rows(series: dict[str, c.Series], labels: dict[str, str]) -> list[list[str]]:
    rows = []
    for key, s in series.items():
        p10, p90 = percentile_span(s.times)
        rows.append([labels[key], ms(s.median), f"{ms(p10)}–{ms(p90)}", f"{ms(s.lo)}–{ms(s.hi)}",
                     f"{s.other_cores():.2f}", str(len(s.times))])
    return rows


def main(argv: list[str]) -> int:
    c.run_as_test_user(Path(__file__).resolve(), argv)
    args = parse_args(argv)
    started = time.monotonic()
    work = c.make_workspace("rlbr")
    removers: list[Callable[[], None]] = []
    with c.cleanup_on_exit(work, args.keep, removers):
        c.log(f"work directory {work}; load average {c.loadavg()}")
        registry = c.start_bench_registry(work)
        removers.append(registry.stop)
        pushed = push_busybox(registry)
        c.log(f"registry on {registry.host} holds {pushed.name}")

        rootless = c.Rootless(work, registry)
        if args.dev_venv:
            install_note = f"the running venv's {rootless.rl.command[-1]}"
        else:
            rootless.rl.command = [str(install_tree(work))]
            install_note = f"installed as `pip install .` would, in {work / 'venv'}"
        # files owned by subordinate IDs: only a user namespace with the same mapping can remove them
        leftovers: list[Path] = []  # Podman's runtime dirs, outside the work directory
        if not args.keep:
            removers.append(lambda: rootless.remove(
                *[p for p in work.iterdir() if p.name != "registry"], *leftovers))
        c.run_checked(rootless.argv("pull", "-q", IMAGE), rootless.env)
        probe = c.run_checked(rootless.argv(*RUN_FLAGS, IMAGE, "cat", "/proc/self/mountinfo"), rootless.env)
        rootless_fs = root_mount(probe)
        python = interpreter(rootless.rl.command)

        podmans: list[PodmanSetup] = []
        podman_note = ""
        if args.no_podman:
            podman_note = "podman: not run (--no-podman)"
        elif not c.Podman.installed():
            podman_note = "podman: not installed"
        else:
            wanted = []
            if not args.no_fuse:
                wanted.append(("podman-fuse", FUSE_OVERLAYFS))
            if not args.no_native:
                wanted.append(("podman-native", ""))
            for label, program in wanted:
                setup = make_podman(work, label, registry, program)
                leftovers.append(setup.podman.runtime_dir)
                removers.append(setup.podman.stop)
                try:
                    prepare_podman(setup, registry, pushed)
                except RuntimeError as e:
                    if program:
                        raise
                    c.log(f"{label}: does not work here, left out:\n{e}")
                    podman_note += f"{label}: failed to run, left out (see stderr). "
                    continue
                podmans.append(setup)
            if podmans:
                # describe() queries a --root store, where Podman ignores mount_program: cut that part
                podman_note += podmans[0].podman.describe().rsplit(", mount program", 1)[0]

        measures: dict[str, c.Measure] = {}
        labels: dict[str, str] = {}

        def add(key: str, label: str, argv: list[str], env: dict[str, str], want: str) -> None:
            measures[key] = lambda: timed_run(argv, env, want)
            labels[key] = label

        for cmd, words in COMMANDS.items():
            shown = " ".join(words) if cmd == "true" else "/bin/sh -c 'echo hi'"
            add(f"rootless/{cmd}", f"rootless run … {shown}", rootless.argv(*RUN_FLAGS, IMAGE, *words),
                rootless.env, EXPECTED_STDOUT[cmd])
            for setup in podmans:
                add(f"{setup.label}/{cmd}", f"{setup.label} run … {shown}",
                    setup.podman.argv(*RUN_FLAGS, IMAGE, *words), setup.podman.env, EXPECTED_STDOUT[cmd])
        # the seccomp filter's share of a run: the same `true` without it
        add("rootless/unconfined", "rootless run --security-opt seccomp=unconfined … true",
            rootless.argv(*RUN_FLAGS, "--security-opt", "seccomp=unconfined", IMAGE, "true"), rootless.env, "")
        add("floor/unshare", "floor: unshare -Urmpf true", ["unshare", "-Urmpf", "true"], rootless.env, "")
        add("floor/python", f"floor: {python} -c pass", [python, "-c", "pass"], rootless.env, "")

        if args.warmup:
            c.log(f"warm-up: {args.warmup} untimed run(s) of each")
            for _ in range(args.warmup):
                for m in measures.values():
                    m()
        busy_before = c.busy_processes()
        c.log(f"{args.runs} interleaved rounds of {len(measures)} commands")
        series = c.interleave(measures, args.runs, before=c.settle if args.sync else lambda: None,
                              background=[registry.proc.pid] if registry.proc is not None else [])
        busy_after = c.busy_processes()

        c.log(f"python -X importtime of the run path, {args.importtime_runs} run(s)")
        script = rootless.rl.command[-1] if len(rootless.rl.command) == 1 else None
        it_argv = ([python, "-X", "importtime", script] if script else
                   [python, "-X", "importtime", "-m", "rootless"]) + [*RUN_FLAGS, IMAGE, "true"]
        imports = import_summary(it_argv, rootless.env, args.importtime_runs)
        c.log("seccomp's own share of a run, timed in fresh interpreters")
        sc = seccomp_cost(python, rootless.env, rootless.rl.store / "seccomp", max(10, args.importtime_runs * 4))

        out = ["", "== rootless run --rm of a stored image vs podman run --rm (busybox, --network none) =="]
        out.append(f"rootless: {rootless.version()} (python {sys.version.split()[0]}), container / is "
                   f"{rootless_fs}; {install_note}")
        for setup in podmans:
            out.append(f"{setup.label}: container / is {setup.root_fs}")
        if podman_note:
            out.append(podman_note.strip() + f" ({c.podman_base_note()})")
        out.append(f"machine: {os.cpu_count()} CPUs, load average now {c.loadavg()}; "
                   f"busy processes at start: {', '.join(busy_before) or 'none'}; "
                   f"at end: {', '.join(busy_after) or 'none'}")
        out.append(f"{args.runs} interleaved rounds after {args.warmup} warm-up run(s) each; "
                   f"sync before each: {'yes' if args.sync else 'no'}; times in ms; other load = mean cores "
                   "busy with work not this benchmark's (high means noisy figures)")
        out.append("")
        out += c.table(["command", "median", "p10–p90", "min–max", "other load", "runs"],
                       series_rows(series, labels)).splitlines()

        out += ["", f"rootless / podman (medians; goal ≤ {GOAL_VS_PODMAN}×):"]
        rows = []
        for cmd in COMMANDS:
            r = series[f"rootless/{cmd}"].median
            for setup in podmans:
                p = series[f"{setup.label}/{cmd}"].median
                v = c.ratio(r, p)
                rows.append([cmd, setup.label, ms(r), ms(p), f"{v:.2f}×", c.verdict(v, GOAL_VS_PODMAN)])
        if rows:
            out += ["  " + x for x in c.table(["command", "vs", "rootless ms", "podman ms", "ratio", "goal"],
                                              rows).splitlines()]
        else:
            out.append("  (no podman measured)")
        py, us = series["floor/python"].median, series["floor/unshare"].median
        r_true = series["rootless/true"].median
        unconfined = series["rootless/unconfined"].median
        out.append(f"seccomp: rootless run … true is {ms(r_true - unconfined)} ms slower with the default filter "
                   f"than with seccomp=unconfined ({ms(r_true)} vs {ms(unconfined)} ms, whole runs)")
        total_min = sc.import_ms[0] + sc.lookup_ms[0] + sc.load_ms[0]
        total_med = sc.import_ms[1] + sc.lookup_ms[1] + sc.load_ms[1]
        out.append(f"seccomp's own work in a run (min / median of {sc.runs} fresh interpreters): import "
                   f"{sc.import_ms[0]:.2f} / {sc.import_ms[1]:.2f} ms, cached filter {sc.lookup_ms[0]:.2f} / "
                   f"{sc.lookup_ms[1]:.2f} ms, load ({sc.instructions} BPF instructions) {sc.load_ms[0]:.2f} / "
                   f"{sc.load_ms[1]:.2f} ms: {total_min:.2f} / {total_med:.2f} ms added to `run` "
                   f"(goal ≤ 2 ms: {'met' if total_med <= 2 else 'NOT met'})")
        out.append(f"rootless run … true = {ms(r_true)} ms: {r_true / py:.1f}× the bare interpreter "
                   f"({ms(py)} ms), {ms(r_true - py)} ms above it; unshare floor {ms(us)} ms")

        out += ["", f"python -X importtime of `rootless run --rm --network none busybox true` "
                    f"(median of {imports.runs} runs; {imports.modules} modules, "
                    f"{imports.total_ms:.1f} ms importing in all: {imports.site_ms:.1f} ms in `site` at "
                    f"interpreter start-up, {imports.run_path_ms:.1f} ms after it):"]
        out += ["  " + x for x in c.table(
            ["cumulative ms", "self ms", "module"],
            [[f"{cm:.1f}", f"{sf:.1f}", "  " * depth + name] for name, depth, cm, sf in imports.top_cumulative]
        ).splitlines()]
        out.append("  largest self times: " + ", ".join(f"{n} {v:.1f}" for n, v in imports.top_self))
        out.append(f"  third-party packages imported: {', '.join(imports.third_party) or 'none'}")
        if imports.notable:
            out.append(f"  heavy modules imported: {', '.join(imports.notable)}")
        if imports.forbidden:
            out.append(f"  FAIL: the run path imported {', '.join(imports.forbidden)}")
        else:
            out.append("  OK: neither httpx nor rich was imported")
        out.append(f"benchmark took {time.monotonic() - started:.0f}s")
        print("\n".join(out), flush=True)
        if args.json:
            Path(args.json).write_text(json.dumps({
                "series": {k: {"times": s.times, "other_cpu": s.other_cpu} for k, s in series.items()},
                "imports": {"total_ms": imports.total_ms, "top": imports.top_cumulative,
                            "forbidden": imports.forbidden}}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
