"""Shared machinery for the benchmarks in bench/: the unprivileged user, a real local
registry holding the images, `rootless` and rootless Podman side by side in private
HOME/XDG directories, interleaved timing and the report.

Benchmarks report, tests assert: a benchmark prints its figures and the goals and exits 0
whatever the figures are; it exits non-zero only when it could not measure.

The registry and the images come from the integration-test harness
(tests/integration/harness.py, tests/testimages.py, tests/imagebuild.py), so the
benchmarks pull exactly what the tests pull. How Podman is configured here (runc,
cgroupfs, file events, overlay storage, an insecure local registry) is explained in
/work/shared/PEERS.md: crun refuses containers on this host and Debian ships no storage.conf.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # the `tests` package is not installed, only importable from the tree

if TYPE_CHECKING:
    from tests.integration.harness import Registry, RootlessEnv
    from tests.testimages import Pushed

TEST_USER_ENV = "ROOTLESS_TEST_USER"
DEFAULT_TEST_USER = "rltest"
SAFE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


# --------------------------------------------------------------------------- who runs it


def test_user() -> str:
    return os.environ.get(TEST_USER_ENV, DEFAULT_TEST_USER)


def run_as_test_user(script: Path, argv: Sequence[str]) -> None:
    """As root: prepare what only root can (XDG_RUNTIME_DIR, the bookworm rootfs) and
    re-exec ``script`` as the unprivileged test user with a clean environment, as
    scripts/test does. As any other user: return and let the benchmark run."""
    if os.geteuid() != 0:
        return
    name = test_user()
    try:
        pw = pwd.getpwnam(name)
    except KeyError:
        sys.exit(f"{script.name}: run it as an unprivileged user with a /etc/subuid range, or create "
                 f"{name} first (sudo bash scripts/setup-host)")
    ensure_bookworm_tarball()
    # Nothing creates /run/user/UID on this host (no systemd-logind): Podman wants it.
    rundir = Path(f"/run/user/{pw.pw_uid}")
    if not rundir.is_dir():
        rundir.mkdir(mode=0o700, parents=True)
        os.chown(rundir, pw.pw_uid, pw.pw_gid)
    env = [f"PATH={SAFE_PATH}", f"HOME={pw.pw_dir}", f"USER={name}", f"LOGNAME={name}", "SHELL=/bin/bash",
           "LANG=C.UTF-8", f"XDG_RUNTIME_DIR={rundir}"]
    for keep in ("TERM", "ROOTLESS_TEST_CACHE", "ROOTLESS_TEST_BOOKWORM", "COLUMNS"):
        if keep in os.environ:
            env.append(f"{keep}={os.environ[keep]}")
    python = interpreter_for(name)
    print(f"{script.name}: running as {name} (uid {pw.pw_uid}) with {python}", file=sys.stderr, flush=True)
    os.chdir(REPO)
    args = ["runuser", "-u", name, "--", "env", "-i", *env, python, str(script), *argv]
    os.execvp(args[0], args)


def interpreter_for(user: str) -> str:
    """The Python to re-run a benchmark with as *user*: the running one when it is a venv that
    user may execute (the CI venv's, as bench/run.py shows), else the venv scripts/setup-host
    builds ($RL_CI/venv, default /opt/rootless-ci/venv): a plain `python bench/X.py` as root may
    start root's own interpreter (pyenv under /root), which the user cannot run and which lacks
    the benchmarks' dependencies."""
    if sys.prefix != sys.base_prefix:
        ok = subprocess.run(["runuser", "-u", user, "--", "test", "-x", sys.executable], check=False)
        if ok.returncode == 0:
            return sys.executable
    ci = Path(os.environ.get("RL_CI", "/opt/rootless-ci")) / "venv" / "bin" / "python"
    if ci.exists():
        return str(ci)
    sys.exit(f"no Python {user} can run with the benchmarks' dependencies: run `sudo bash scripts/setup-host` "
             "(it builds /opt/rootless-ci/venv), or run the benchmark with that venv's python")


def ensure_bookworm_tarball() -> Path:
    """The mmdebstrap rootfs the debian images are made from; built when root and missing."""
    from tests.testimages import BOOKWORM_TAR

    if BOOKWORM_TAR.exists():
        return BOOKWORM_TAR
    if os.geteuid() != 0:
        sys.exit(f"{BOOKWORM_TAR} is missing: build it as root with `sudo bash scripts/setup-host` or "
                 f"`sudo mmdebstrap --variant=minbase bookworm {BOOKWORM_TAR}`")
    if not shutil.which("mmdebstrap"):
        sys.exit(f"{BOOKWORM_TAR} is missing and mmdebstrap is not installed (apt-get install mmdebstrap)")
    BOOKWORM_TAR.parent.mkdir(parents=True, exist_ok=True)
    tmp = BOOKWORM_TAR.with_name(f".{BOOKWORM_TAR.name}.{os.getpid()}")
    print(f"building {BOOKWORM_TAR} with mmdebstrap (once)", file=sys.stderr, flush=True)
    try:
        subprocess.run(["mmdebstrap", "--variant=minbase", "--quiet", "bookworm", str(tmp)], check=True)
        os.chmod(tmp, 0o644)
        os.replace(tmp, BOOKWORM_TAR)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    return BOOKWORM_TAR


def image_cache_dir() -> Path:
    """Where the built layer blobs are cached: the same place the integration tests use."""
    d = os.environ.get("ROOTLESS_TEST_CACHE")
    if d:
        return Path(d)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "rootless-tests"


def make_workspace(prefix: str) -> Path:
    """A directory of the benchmark's own on the disk the stores normally live on
    (/tmp here is the root file system, not a tmpfs: check with `df /tmp`)."""
    return Path(tempfile.mkdtemp(prefix=f"{prefix}-", dir=os.environ.get("ROOTLESS_BENCH_DIR", "/tmp")))


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- registry and images


@dataclass(frozen=True)
class BenchImage:
    """An image in the bench registry, and the names each tool pulls it by."""

    label: str
    pushed: Pushed
    layers: int
    compressed: int  # bytes of the layer blobs
    uncompressed: int  # bytes of the layer tars

    @property
    def short(self) -> str:
        """The name as a user types it (``debian:bookworm``): `rootless` qualifies it to
        docker.io and pulls it through the configured mirror, the bench registry."""
        name = self.pushed.name
        return name[len("library/"):] if name.startswith("library/") else name

    def direct(self, registry: Registry) -> str:
        return f"{registry.host}/{self.pushed.name}"


def start_bench_registry(work: Path) -> Registry:
    from tests.integration.harness import start_registry

    return start_registry("bench", work / "registry")


def _layer_sizes(pushed: Pushed) -> tuple[int, int, int]:
    image = pushed.image
    assert image is not None
    layers = image.layers
    uncompressed = 0
    for layer in layers:
        uncompressed += _tar_size(layer)
    return len(layers), sum(layer.size for layer in layers), uncompressed


def _tar_size(layer: Any) -> int:
    """The uncompressed size of a gzip layer: ISIZE, the trailer's last 4 bytes (RFC 1952
    section 2.3.1; modulo 2^32, plenty for these layers)."""
    if getattr(layer, "compression", "gzip") != "gzip":
        return 0
    if layer.path is not None:
        with open(layer.path, "rb") as f:
            f.seek(-4, os.SEEK_END)
            tail = f.read(4)
    else:
        tail = layer.data[-4:]
    return int.from_bytes(tail, "little")


def push_debian(registry: Registry) -> BenchImage:
    """library/debian:bookworm: one gzip layer made from the mmdebstrap rootfs."""
    from tests import imagebuild as ib
    from tests import testimages as ti

    deb = ti.debian_layer(image_cache_dir())
    with registry.pusher() as p:
        pushed = ti.push_image(p, "library/debian", "bookworm", ib.make_image([deb], cmd=["bash"]))
    return BenchImage("debian:bookworm", pushed, *_layer_sizes(pushed))


def push_sixlayer(registry: Registry) -> BenchImage:
    """test/sixlayer:latest: the same rootfs cut into six layers of similar size."""
    from tests import imagebuild as ib
    from tests import testimages as ti

    six = ti.sixlayer_layers(image_cache_dir())
    with registry.pusher() as p:
        pushed = ti.push_image(p, "test/sixlayer", "latest", ib.make_image(six, cmd=["bash"]))
    return BenchImage("sixlayer (6 layers)", pushed, *_layer_sizes(pushed))


# --------------------------------------------------------------------------- the two tools


def run_checked(argv: Sequence[str], env: dict[str, str], cwd: Path | None = None,
                timeout: float = 300) -> subprocess.CompletedProcess[str]:
    cp = subprocess.run(list(argv), env=env, cwd=cwd, text=True, capture_output=True, timeout=timeout,
                        stdin=subprocess.DEVNULL)
    if cp.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {cp.returncode}\n--- stdout\n{cp.stdout[-3000:]}"
                           f"\n--- stderr\n{cp.stderr[-3000:]}")
    return cp


def timed(argv: Sequence[str], env: dict[str, str], cwd: Path | None = None, timeout: float = 300) -> float:
    """Wall-clock seconds of one command, which must succeed."""
    t0 = time.perf_counter()
    run_checked(argv, env, cwd, timeout)
    return time.perf_counter() - t0


class Rootless:
    """`rootless` with its own HOME/XDG dirs and a config whose docker.io mirror is the
    bench registry (the harness's RootlessEnv, so the tests' setup is the bench's)."""

    def __init__(self, work: Path, registry: Registry) -> None:
        from tests.integration.harness import RootlessEnv, rootless_config

        self.rl: RootlessEnv = RootlessEnv(work / "rootless", rootless_config(registry.host, []))
        self.env = self.rl.env
        self.stores = work / "rootless-stores"
        self.stores.mkdir()
        self._n = 0

    def fresh_store(self) -> tuple[Path, Path]:
        """A new, empty ``--root``/``--runroot`` pair."""
        self._n += 1
        return self.stores / f"root{self._n}", self.stores / f"run{self._n}"

    def argv(self, *args: str, root: Path | None = None, runroot: Path | None = None) -> list[str]:
        glob: list[str] = []
        if root is not None:
            glob += ["--root", str(root)]
        if runroot is not None:
            glob += ["--runroot", str(runroot)]
        return [*self.rl.command, *glob, *args]

    def unshare(self, *argv: str) -> list[str]:
        return self.argv("unshare", *argv)

    def remove(self, *paths: Path) -> None:
        """Remove trees holding files owned by subordinate IDs (only the namespace can)."""
        existing = [str(p) for p in paths if os.path.lexists(p)]
        if existing:
            run_checked(self.unshare("rm", "-rf", *existing), self.env, timeout=600)

    def version(self) -> str:
        return run_checked(self.argv("--version"), self.env).stdout.strip()


class Podman:
    """Rootless Podman with a private HOME/XDG tree: runc, cgroupfs, file events, overlay
    storage and the bench registry as an insecure registry.

    With only ``driver = "overlay"`` in storage.conf, Podman 4.3 here uses the kernel's
    overlay (mounted with ``userxattr``): `podman info` shows no mount program and a
    container's / is ``overlay``. ``mount_program`` (e.g. /usr/bin/fuse-overlayfs) makes
    it use a FUSE implementation instead."""

    def __init__(self, work: Path, registries: Sequence[str], mount_program: str | None = None) -> None:
        self.base = work / "podman"
        self.home = self.base / "home"
        self.config = self.home / ".config"
        self.data = self.home / ".local" / "share"
        self.runtime_dir = self.base / "run"
        for d in (self.home, self.config / "containers", self.data, self.home / ".cache", self.runtime_dir):
            d.mkdir(parents=True, exist_ok=True)
        os.chmod(self.runtime_dir, 0o700)
        self.mount_program = mount_program
        c = self.config / "containers"
        conf = '[engine]\nruntime = "runc"\ncgroup_manager = "cgroupfs"\nevents_logger = "file"\n'
        if os.path.exists("/usr/lib/podman/netavark"):
            # Podman 4's own backend for user networks (with aardvark-dns), not the CNI fallback
            conf += '\n[network]\nnetwork_backend = "netavark"\n'
        (c / "containers.conf").write_text(conf)
        storage = '[storage]\ndriver = "overlay"\n'
        if mount_program:
            storage += f'\n[storage.options.overlay]\nmount_program = "{mount_program}"\n'
        (c / "storage.conf").write_text(storage)
        (c / "registries.conf").write_text(
            "".join(f'[[registry]]\nlocation = "{h}"\ninsecure = true\n\n' for h in registries))
        self.env = {
            "PATH": os.environ.get("PATH", SAFE_PATH),
            "HOME": str(self.home),
            "USER": os.environ.get("USER", test_user()),
            "LOGNAME": os.environ.get("LOGNAME", test_user()),
            "LANG": "C.UTF-8",
            "XDG_CONFIG_HOME": str(self.config),
            "XDG_DATA_HOME": str(self.data),
            "XDG_CACHE_HOME": str(self.home / ".cache"),
            "XDG_RUNTIME_DIR": str(self.runtime_dir),
        }
        self.stores = work / "podman-stores"
        self.stores.mkdir()
        # Podman refuses a --runroot longer than 50 characters.
        self.runroots = Path(tempfile.mkdtemp(prefix="rlb-", dir="/tmp"))
        self._n = 0

    @staticmethod
    def installed() -> bool:
        return shutil.which("podman") is not None

    def fresh_store(self) -> tuple[Path, Path]:
        self._n += 1
        return self.stores / f"root{self._n}", self.runroots / f"r{self._n}"

    def argv(self, *args: str, root: Path | None = None, runroot: Path | None = None) -> list[str]:
        glob: list[str] = []
        if root is not None:
            glob += ["--root", str(root)]
        if runroot is not None:
            glob += ["--runroot", str(runroot)]
        return ["podman", *glob, *args]

    def start(self) -> None:
        """Start Podman's pause process (the user namespace every later command joins)
        outside the timings, as it is on any machine where Podman has run once."""
        run_checked(self.argv("unshare", "true"), self.env)

    def remove(self, *paths: Path) -> None:
        existing = [str(p) for p in paths if os.path.lexists(p)]
        if existing:
            run_checked(self.argv("unshare", "rm", "-rf", *existing), self.env, timeout=600)

    def describe(self) -> str:
        """Version, storage driver and mount program, as `podman info` reports them."""
        root, runroot = self.fresh_store()
        try:
            cp = run_checked(self.argv("info", "--format", "json", root=root, runroot=runroot), self.env)
            info = json.loads(cp.stdout)
        finally:
            self.remove(root, runroot)
        store = info.get("store", {})
        opts = store.get("graphOptions") or {}
        prog = opts.get("overlay.mount_program", {}).get("Executable") if isinstance(
            opts.get("overlay.mount_program"), dict) else opts.get("overlay.mount_program")
        version = info.get("version", {}).get("Version", "?")
        runtime = info.get("host", {}).get("ociRuntime", {}).get("name", "?")
        return (f"podman {version}, runtime {runtime}, driver {store.get('graphDriverName', '?')}, "
                f"mount program {prog or 'none (native overlay)'}")

    def stop(self) -> None:
        """Stop the pause process this instance's XDG_RUNTIME_DIR started (by its pid file).
        Its mount namespace holds Podman's bind mount of the default store on itself, so
        the work directory can be removed only after it is gone."""
        pidfile = self.runtime_dir / "libpod" / "tmp" / "pause.pid"
        with contextlib.suppress(OSError, ValueError):
            os.kill(int(pidfile.read_text().strip()), 9)
        shutil.rmtree(self.runroots, ignore_errors=True)


def podman_base_note() -> str:
    return "see /work/shared/PEERS.md for why Podman is configured this way"


# --------------------------------------------------------------------------- timing


def settle() -> None:
    """Flush dirty pages before a timed run, so a run does not pay for the writeback of
    the one before it."""
    os.sync()


def enough_space(where: Path, need: int, margin: int = 2 << 30) -> bool:
    """Whether ``need`` bytes fit under ``where`` with ``margin`` to spare."""
    return shutil.disk_usage(where).free >= need + margin


def _system_busy() -> float:
    """CPU-seconds all CPUs have spent busy since boot (proc(5), /proc/stat "cpu" line;
    idle and iowait are not busy)."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def _pid_cpu(pid: int) -> float:
    try:
        stat_ = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat_[stat_.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _own_cpu(background: Sequence[int]) -> float:
    """CPU-seconds of this process, of its reaped descendants and of the long-running
    helpers it started (the registry)."""
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime + sum(_pid_cpu(p) for p in background)


@dataclass
class Series:
    """The times of one measurement, in seconds."""

    name: str
    times: list[float] = field(default_factory=list)
    parts: dict[str, list[float]] = field(default_factory=dict)  # named components of each run
    # CPU-seconds that something other than this benchmark used during each run (other
    # helpers' test runs on this 2-core machine; the kernel's writeback threads count too)
    other_cpu: list[float] = field(default_factory=list)
    windows: list[float] = field(default_factory=list)  # wall seconds over which other_cpu was taken

    @property
    def median(self) -> float:
        return statistics.median(self.times) if self.times else float("nan")

    @property
    def lo(self) -> float:
        return min(self.times) if self.times else float("nan")

    @property
    def hi(self) -> float:
        return max(self.times) if self.times else float("nan")

    def part_median(self, name: str) -> float:
        vals = self.parts.get(name) or []
        return statistics.median(vals) if vals else float("nan")

    def other_cores(self) -> float:
        """Mean number of cores other work kept busy while this measure ran."""
        wall = sum(self.windows)
        return sum(self.other_cpu) / wall if wall else float("nan")

    def spread(self) -> str:
        return f"{self.lo:.2f}–{self.hi:.2f}"

    def spread_pct(self) -> float:
        m = self.median
        return (self.hi - self.lo) / m * 100 if m else float("nan")


Measure = Callable[[], "float | dict[str, float]"]


def create_cost(where: Path, n: int = 2000, trash: list[Path] | None = None) -> float:
    """Microseconds to create one empty file in a new directory under ``where``.

    Unpacking an image is mostly creating inodes (8,700 for debian), and on this VM that
    cost is not a constant: it swings between ~10 and ~250 µs of kernel CPU per inode.
    The root file system is ext4 without a journal, and in that mode the inode allocator
    skips every free inode deleted in the last 60 s (360 s while its inode-table block is
    dirty: fs/ext4/ialloc.c, recently_deleted()), rescanning them for each new inode; so
    files created soon after many were deleted nearby (by anyone) are slow to create.
    The benchmark records this cost each round to show how much of a change between runs
    is the machine's. With ``trash`` the directory is left for the caller to remove later
    (removing it now would slow the next round down)."""
    d = Path(tempfile.mkdtemp(prefix="create-cost-", dir=where))
    try:
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
        t0 = time.perf_counter()
        for i in range(n):
            os.close(os.open(d / f"f{i}", flags, 0o644))
        return (time.perf_counter() - t0) / n * 1e6
    finally:
        if trash is None:
            shutil.rmtree(d, ignore_errors=True)
        else:
            trash.append(d)


def interleave(measures: dict[str, Measure], runs: int, *, before: Callable[[], None] = settle,
               label: str = "", background: Sequence[int] = (),
               probe: Callable[[], float] | None = None, probes: list[float] | None = None) -> dict[str, Series]:
    """``runs`` rounds of every measure, one after the other; the order rotates each round
    so that no tool always follows the same neighbour. A measure returns seconds, or a
    dict of named parts whose "total" is the time. ``background``: pids of helpers the
    benchmark started (their CPU is not "other"). ``probe`` runs at the start of each
    round; its results are appended to ``probes``."""
    series = {name: Series(name) for name in measures}
    names = list(measures)
    for r in range(runs):
        k = r % len(names)
        order = names[k:] + names[:k]
        if probe is not None:
            before()
            got_probe = probe()
            if probes is not None:
                probes.append(got_probe)
            log(f"  {label}round {r + 1}/{runs}: probe     {got_probe:.0f}")
        for name in order:
            before()
            busy0, own0, t0 = _system_busy(), _own_cpu(background), time.perf_counter()
            got = measures[name]()
            s = series[name]
            # the window includes the untimed clean-up the measure does after its run
            s.windows.append(time.perf_counter() - t0)
            s.other_cpu.append(max(0.0, (_system_busy() - busy0) - (_own_cpu(background) - own0)))
            if isinstance(got, dict):
                s.times.append(got["total"])
                for part, v in got.items():
                    if part != "total":
                        s.parts.setdefault(part, []).append(v)
                shown = f"{got['total']:.2f}s (" + ", ".join(
                    f"{p} {v:.2f}" for p, v in got.items() if p != "total") + ")"
            else:
                s.times.append(got)
                shown = f"{got:.2f}s"
            log(f"  {label}round {r + 1}/{runs}: {name:<9} {shown}  [other CPU {s.other_cpu[-1]:.2f} s]")
    return series


def loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def busy_processes(threshold: float = 20.0, sample: float = 0.5) -> list[str]:
    """Other processes using a noticeable share of a CPU right now (other helpers' test
    runs on a 2-core machine make the figures noisy: the report says so)."""
    def snap() -> dict[int, tuple[int, str]]:
        out: dict[int, tuple[int, str]] = {}
        for p in Path("/proc").iterdir():
            if not p.name.isdigit():
                continue
            with contextlib.suppress(OSError, IndexError, ValueError):
                stat_ = (p / "stat").read_text()
                comm = stat_[stat_.index("(") + 1:stat_.rindex(")")]
                fields = stat_[stat_.rindex(")") + 2:].split()
                out[int(p.name)] = (int(fields[11]) + int(fields[12]), comm)
        return out

    a = snap()
    time.sleep(sample)
    b = snap()
    hz = os.sysconf("SC_CLK_TCK")
    busy = []
    for pid, (ticks, comm) in b.items():
        if pid in a and pid != os.getpid():
            pct = (ticks - a[pid][0]) / hz / sample * 100
            if pct >= threshold:
                busy.append(f"{comm}({pid}) {pct:.0f}%")
    return busy


# --------------------------------------------------------------------------- report


def ratio(a: float, b: float) -> float:
    return a / b if b else float("nan")


def verdict(value: float, goal: float) -> str:
    if value != value:  # NaN
        return "n/a"
    return "met" if value <= goal else "NOT met"


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=False)]
    lines = ["  ".join(str(h).ljust(w) for h, w in zip(header, widths, strict=False)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    for row in rows:
        lines.append("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=False)).rstrip())
    return "\n".join(lines)


def human_bytes(n: float) -> str:
    from rootless.units import decimal_size

    return decimal_size(n, ".1f")


@contextlib.contextmanager
def cleanup_on_exit(work: Path, keep: bool, removers: list[Callable[[], None]]) -> Iterator[None]:
    """Run the removers (in reverse) and delete ``work`` when the benchmark ends, whatever happens."""
    try:
        yield
    finally:
        for remove in reversed(removers):
            with contextlib.suppress(Exception):
                remove()
        if keep:
            log(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
