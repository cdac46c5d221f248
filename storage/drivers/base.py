"""Storage drivers: how an image's stored layers become one container's root file system.

Every driver reads the same unpacked layers (storage/layers.py): a tree per layer, with
deletions recorded as overlay whiteouts (0:0 character devices, ``user.overlay.opaque``)
or, where the kernel refused those, as aufs ``.wh.`` files (the layer's meta.json says
which). A driver only adds the container's own layer and says, as a RootfsPlan, how the
runtime's child assembles the root; it never mounts anything itself.

  overlay         kernel overlayfs mounted in the container's user namespace (``userxattr``)
  fuse-overlayfs  the same union done by a FUSE process, for kernels or file systems where
                  the kernel refuses
  vfs             a full copy of the image per container: works everywhere, costs a copy

Which one a store uses is decided once by storage.drivers.probe and recorded.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from rootless.errors import StorageError
from rootless.layout import Layout
from rootless.record import dataclass
from rootless.spec import Driver, RootfsPlan

if TYPE_CHECKING:
    from storage.nsrunner import NamespaceRunner

DRIVERS: tuple[Driver, ...] = ("overlay", "fuse-overlayfs", "vfs")

# A container ID becomes a directory name; nothing else may reach the file system.
_ID_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-")


@dataclass(frozen=True)
class LayerDir:
    """One stored layer as a driver sees it."""

    diff_id: str
    path: str  # the layer's tree
    whiteout_format: str  # "overlay" (0:0 devices, opaque xattr) or "aufs" (.wh. files)


@dataclass(frozen=True)
class ContainerDirs:
    """The container layer's directories under layout.containers/<id>/."""

    root: Path

    @classmethod
    def of(cls, layout: Layout, container_id: str) -> ContainerDirs:
        return cls(layout.containers / check_container_id(container_id))

    @property
    def upper(self) -> Path:
        return self.root / "upper"

    @property
    def work(self) -> Path:
        return self.root / "work"

    @property
    def merged(self) -> Path:
        return self.root / "merged"

    @property
    def rootfs(self) -> Path:
        return self.root / "rootfs"

    @property
    def empty(self) -> Path:
        """The lower layer of an image without layers (overlayfs needs at least one)."""
        return self.root / "empty"

    @property
    def record(self) -> Path:
        return self.root / "rootfs.json"


class StorageDriver(Protocol):
    name: Driver

    def unavailable(self) -> str | None:
        """What this host lacks for the driver, found without mounting; None if nothing."""
        ...

    def refuses(self, layers: Sequence[LayerDir]) -> str | None:
        """Why these layers cannot be assembled by this driver; None if they can."""
        ...

    def create(self, runner: NamespaceRunner, layers: Sequence[LayerDir], dirs: ContainerDirs) -> RootfsPlan:
        """Make the container layer in ``dirs.root`` (which exists, empty) and return the plan.

        ``layers`` are in image order, base first.
        """
        ...


def check_container_id(container_id: str) -> str:
    # a letter or digit, then up to 127 of those or "_.-" (no "/", "..", NUL or newline)
    if not (0 < len(container_id) <= 128 and container_id[0] not in "_.-" and _ID_CHARS.issuperset(container_id)):
        raise StorageError(f"invalid container ID {container_id!r}: letters, digits, '_', '.' and '-' only")
    return container_id


def mount_option_problem(paths: Sequence[str]) -> str | None:
    """overlayfs(5) splits its options at ',' and lowerdir at ':'; a path holding either
    (or the '\\' that escapes them) is not passed through reliably by every mounter."""
    for p in paths:
        for ch in (",", ":", "\\"):
            if ch in p:
                return f"the path {p} contains {ch!r}, which overlay mount options cannot hold"
    return None


def root_attrs(layers: Sequence[LayerDir]) -> tuple[int, int, int]:
    """Mode, uid and gid of the top-most layer's root: what the container's / shows.

    overlayfs takes a merged directory's attributes from its upper-most copy, and for the
    root that is the upper dir itself, so the container layer's root must carry them.
    """
    if not layers:
        return 0o755, os.getuid(), os.getgid()
    st = os.stat(layers[-1].path)
    return st.st_mode & 0o7777, st.st_uid, st.st_gid


def remove_entry(dfd: int, name: str) -> None:
    """Remove ``name`` from ``dfd`` whatever it is (nothing if it is not there)."""
    try:
        st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
    except FileNotFoundError:
        return
    if not stat.S_ISDIR(st.st_mode):
        os.unlink(name, dir_fd=dfd)
        return
    if st.st_mode & 0o700 != 0o700 and st.st_uid == os.geteuid():
        # overlayfs leaves work/work with mode 0, and an image may make a directory
        # read-only; its owner may open it up again.
        os.chmod(name, stat.S_IMODE(st.st_mode) | 0o700, dir_fd=dfd)
    fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dfd)
    try:
        with os.scandir(fd) as it:
            children = [e.name for e in it]
        for child in children:
            remove_entry(fd, child)
    finally:
        os.close(fd)
    os.rmdir(name, dir_fd=dfd)
