"""Every path the tool uses. Nothing else computes paths.

The store (persistent: blobs, layers, images, containers' writable layers) lives
under the user's data dir; the run root (volatile: container state, sockets,
credentials) lives under XDG_RUNTIME_DIR, as Podman's graphroot and runroot do.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from pathlib import Path

from rootless.errors import RootlessError
from rootless.record import dataclass


def _xdg(var: str, default: str) -> Path:
    """The XDG Base Directory rule (what platformdirs computes on Linux, without its ~5 ms import
    on the `run` path): the variable when it holds an absolute path, else the default under HOME."""
    value = os.environ.get(var, "")
    if value and os.path.isabs(value):
        return Path(value)
    return Path(os.path.expanduser(default))


def _data_home() -> Path:
    return _xdg("XDG_DATA_HOME", "~/.local/share") / "rootless"


def config_dir() -> Path:
    return _xdg("XDG_CONFIG_HOME", "~/.config") / "rootless"


def config_file() -> Path:
    override = os.environ.get("ROOTLESS_CONFIG")
    if override:
        return Path(override)
    return config_dir() / "config.toml"


def fallback_runroot() -> Path:
    return Path(f"/tmp/rootless-run-{os.getuid()}")


def dir_problem(path: Path) -> str | None:
    """Why the directory *path* may not hold our volatile state (None: it may): it must be a
    directory we own and may write, as Podman requires of XDG_RUNTIME_DIR. Another user's
    writable directory would let that user replace our records and sockets."""
    try:
        st = os.stat(path)
    except OSError as e:
        return f"{path}: {e.strerror}"
    if not stat.S_ISDIR(st.st_mode):
        return f"{path} is not a directory"
    if st.st_uid != os.getuid():
        return f"{path} is owned by uid {st.st_uid}, not you (uid {os.getuid()})"
    if not os.access(path, os.W_OK | os.X_OK):
        return f"{path} is not writable"
    return None


def runroot_problem(runroot: Path) -> str | None:
    """Why *runroot* cannot be used now (None: it can): when it exists it must be ours; when
    not, its parent must be ours (XDG_RUNTIME_DIR) or a sticky directory such as /tmp."""
    if os.path.lexists(runroot):
        if os.path.islink(runroot):
            return f"{runroot} is a symbolic link"
        return dir_problem(runroot)
    parent = runroot.parent
    try:
        st = os.stat(parent)
    except OSError as e:
        hint = " (systemd removes /run/user/UID at logout unless lingering is enabled)" \
            if str(parent).startswith("/run/user/") else ""
        return f"{parent}: {e.strerror}{hint}"
    if not stat.S_ISDIR(st.st_mode) or not os.access(parent, os.W_OK | os.X_OK):
        return f"{parent} is not a writable directory"
    if st.st_uid != os.getuid() and not st.st_mode & stat.S_ISVTX:
        return f"{parent} is owned by uid {st.st_uid}, not you (uid {os.getuid()})"
    return None


def default_runroot() -> tuple[Path, bool]:
    """The run root and whether it is a fallback (XDG_RUNTIME_DIR unset, or not a directory
    we own and may write)."""
    return _default_runroot()[:2]  # type: ignore[return-value]


def _default_runroot() -> tuple[Path, bool, str]:
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if not xdg or not os.path.isabs(xdg):
        return fallback_runroot(), True, "XDG_RUNTIME_DIR is not set"
    problem = dir_problem(Path(xdg))
    if problem is None:
        return Path(xdg) / "rootless", False, ""
    return fallback_runroot(), True, f"XDG_RUNTIME_DIR {problem}"


def _read_only_fs(path: Path) -> bool:
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except OSError:
        return False


class RunRootMismatch(RootlessError):
    """The store was used with another run root, which this command cannot use."""


@dataclass(frozen=True)
class Layout:
    root: Path  # the store
    runroot: Path  # volatile state
    runroot_fallback: bool = False
    auth_path: Path | None = None  # --authfile (or REGISTRY_AUTH_FILE): credentials kept elsewhere
    fallback_reason: str = ""  # why XDG_RUNTIME_DIR was not used, when runroot_fallback

    @classmethod
    def default(cls, root: str | os.PathLike[str] | None = None,
                runroot: str | os.PathLike[str] | None = None) -> Layout:
        """The paths this environment gives, without looking at the store's record."""
        if runroot is not None:
            rr, fallback, why = Path(runroot), False, ""
        else:
            rr, fallback, why = _default_runroot()
        return cls(root=Path(root) if root is not None else _data_home() / "storage",
                   runroot=rr, runroot_fallback=fallback, fallback_reason=why)

    @classmethod
    def for_store(cls, root: str | os.PathLike[str] | None = None,
                  runroot: str | os.PathLike[str] | None = None) -> Layout:
        """The paths of a command: the store's recorded run root wins over the environment's.

        A store has ONE run root: container state read from another directory would show
        running containers as exited and let `start` launch a second copy on the same layer
        (Podman refuses a run root that differs from its database's for the same reason).
        So when the environment gives another run root (su -, sudo -iu, cron or ssh without
        pam_systemd leave XDG_RUNTIME_DIR unset), the recorded one is used while it is ours
        and usable; an explicit --runroot that differs, or an unusable record, is refused.
        """
        lay = cls.default(root, runroot)
        for flag, given, path in (("--root", root, lay.root), ("--runroot", runroot, lay.runroot)):
            if os.path.exists(path) and not os.path.isdir(path):
                raise RootlessError(f"{flag if given is not None else 'the ' + flag[2:]} {path} is not a directory",
                                    hint=f"name a directory with {flag}")
        recorded = lay.recorded_runroot()
        if recorded is None or recorded == lay.runroot:
            return lay
        if runroot is None:
            problem = runroot_problem(recorded)
            if problem is None:
                return cls(root=lay.root, runroot=recorded)
            why = f" ({lay.fallback_reason})" if lay.fallback_reason else ""
            raise RunRootMismatch(
                f"this store's run root is {recorded}, which cannot be used ({problem}), and this "
                f"environment gives {lay.runroot}{why}",
                hint=f"run it where {recorded.parent} exists (your login session; `loginctl enable-linger "
                     f"$USER` as root keeps it), or move the store to {lay.runroot} with "
                     f"`rootless system migrate` once none of its containers runs")
        raise RunRootMismatch(
            f"--runroot {lay.runroot} does not match this store's run root {recorded} "
            f"(recorded in {lay.store_meta})",
            hint=f"leave out --runroot, or move the store to {lay.runroot} with "
                 f"`rootless --runroot {lay.runroot} system migrate` once none of its containers runs")

    def recorded_runroot(self) -> Path | None:
        rr = self.read_meta().get("runroot")
        return Path(rr) if isinstance(rr, str) and os.path.isabs(rr) else None

    def read_meta(self) -> dict[str, object]:
        """The store's own record (store.json): its run root, the warnings already given."""
        import json

        try:
            with open(self.store_meta, "rb") as f:
                data = json.loads(f.read())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def write_meta(self, **changes: object) -> bool:
        """Merge *changes* into store.json; False when the store cannot be written (a read-only
        store still runs; the record waits for a writable one)."""
        return self._update_meta(lambda data: {**data, **changes})

    def note_warning(self, key: str) -> bool:
        """Record that the warning *key* was given for this store; False when it already was."""
        fresh = []

        def add(data: dict[str, object]) -> dict[str, object] | None:
            said = data.get("warned")
            said = said if isinstance(said, list) else []
            if key in said:
                return None
            fresh.append(key)
            return {**data, "warned": [*said, key]}

        self._update_meta(add)
        return bool(fresh) or not self.root.is_dir()

    def _update_meta(self, change: Callable[[dict[str, object]], dict[str, object] | None]) -> bool:
        """Read-modify-write of store.json under flock(2) on the store directory, replaced by
        rename(2): concurrent commands neither lose each other's changes nor see half a file."""
        import fcntl
        import json

        try:
            dfd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError:
            return False
        tmp = self.store_meta.with_name(f".store.json.{os.getpid()}.tmp")
        try:
            fcntl.flock(dfd, fcntl.LOCK_EX)
            data = change(self.read_meta())
            if data is None:
                return True
            with open(tmp, "w") as f:
                json.dump(data, f)
            os.replace(tmp, self.store_meta)
        except OSError:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            return False
        finally:
            os.close(dfd)
        return True

    def record_runroot(self) -> None:
        """Pin the run root to the store the first time the store is used."""
        if self.root.is_dir() and self.recorded_runroot() is None:
            self.write_meta(runroot=str(self.runroot))

    # --- the store ---------------------------------------------------------
    @property
    def blobs(self) -> Path:
        return self.root / "blobs" / "sha256"

    def blob(self, digest: str) -> Path:
        algo, _, hexpart = digest.partition(":")
        return self.root / "blobs" / algo / hexpart

    @property
    def layers(self) -> Path:
        return self.root / "layers"

    def layer(self, diff_id: str) -> Path:
        return self.layers / diff_id.partition(":")[2]

    @property
    def images(self) -> Path:
        return self.root / "images"

    @property
    def image_index(self) -> Path:
        return self.root / "images.json"

    @property
    def containers(self) -> Path:
        return self.root / "containers"

    @property
    def build_cache(self) -> Path:
        """What each build step's cache key made (rootless.build.builder)."""
        return self.root / "build-cache"

    @property
    def build_mounts(self) -> Path:
        """RUN --mount=type=cache directories, kept between builds."""
        return self.root / "build-mounts"

    @property
    def tmp(self) -> Path:
        return self.root / "tmp"

    @property
    def volumes(self) -> Path:
        return self.root / "volumes"

    @property
    def networks(self) -> Path:
        """User networks' records (slirp.usernet)."""
        return self.root / "networks"

    @property
    def locks(self) -> Path:
        return self.root / "locks"

    @property
    def seccomp(self) -> Path:
        """Compiled seccomp filters, one file per (profile, capabilities, kernel, libseccomp)."""
        return self.root / "seccomp"

    @property
    def layer_blobs(self) -> Path:
        """Compressed blob digest ↔ diff ID ↔ where seen (storage.layerblobs)."""
        return self.root / "layer-blobs.json"

    @property
    def store_meta(self) -> Path:
        return self.root / "store.json"

    # --- volatile ----------------------------------------------------------
    @property
    def auth_file(self) -> Path:
        if self.auth_path is not None:
            return self.auth_path
        return self.runroot / "auth.json"

    @property
    def state(self) -> Path:
        return self.runroot / "containers"

    @property
    def config_cache(self) -> Path:
        """The checked config file as JSON (rootless.config.load)."""
        return self.runroot / "config-cache.json"

    def ensure_store(self) -> None:
        for d in (self.root, self.blobs, self.layers, self.images, self.tmp, self.locks):
            d.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.check_writable(self.root, self.blobs, self.layers, self.images, self.tmp, self.locks)
        self.record_runroot()

    def check_writable(self, *dirs: Path) -> None:
        """Before a change to the store: a directory it cannot write fails the command here,
        before anything is written, instead of half-way (a record without its index)."""
        from rootless.errors import StorageError

        for d in dirs or (self.root, self.images):
            if d.is_dir() and not os.access(d, os.W_OK | os.X_OK):
                ro = " (a read-only file system)" if _read_only_fs(d) else ""
                raise StorageError(f"the store is read-only: {d} is not writable{ro}",
                                   hint=f"make {d} writable for you, or choose another store with --root")

    def ensure_runroot(self) -> None:
        self.runroot.mkdir(parents=True, exist_ok=True, mode=0o700)
        problem = dir_problem(self.runroot)
        if problem is not None:  # e.g. /tmp/rootless-run-UID made by someone else first
            raise RootlessError(f"run root {problem}", hint="remove it, or choose another with --runroot")
        os.chmod(self.runroot, 0o700)
        self.record_runroot()
