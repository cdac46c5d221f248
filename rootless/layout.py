"""Every path the tool uses. Nothing else computes paths.

The store (persistent: blobs, layers, images, containers' writable layers) lives
under the user's data dir; the run root (volatile: container state, sockets,
credentials) lives under XDG_RUNTIME_DIR, as Podman's graphroot and runroot do.
"""

from __future__ import annotations

import os
from pathlib import Path

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


def default_runroot() -> tuple[Path, bool]:
    """The run root and whether it is a fallback (XDG_RUNTIME_DIR unset or unusable)."""
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg and os.path.isdir(xdg) and os.access(xdg, os.W_OK | os.X_OK):
        return Path(xdg) / "rootless", False
    return Path(f"/tmp/rootless-run-{os.getuid()}"), True


@dataclass(frozen=True)
class Layout:
    root: Path  # the store
    runroot: Path  # volatile state
    runroot_fallback: bool = False
    auth_path: Path | None = None  # --authfile (or REGISTRY_AUTH_FILE): credentials kept elsewhere

    @classmethod
    def default(cls, root: str | os.PathLike[str] | None = None,
                runroot: str | os.PathLike[str] | None = None) -> Layout:
        if runroot is not None:
            rr, fallback = Path(runroot), False
        else:
            rr, fallback = default_runroot()
        return cls(root=Path(root) if root is not None else _data_home() / "storage",
                   runroot=rr, runroot_fallback=fallback)

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

    def ensure_runroot(self) -> None:
        self.runroot.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.runroot, 0o700)
