"""The fuse-overlayfs driver: the overlay union done by the fuse-overlayfs program.

The runtime's child starts it as namespace-root in the container's user and mount
namespaces (``fuse-overlayfs -o lowerdir=…,upperdir=…,workdir=… TARGET``); the plan
is the same as the kernel driver's. Checked against fuse-overlayfs 1.10: it reads
whiteouts as 0:0 character devices and as aufs ``.wh.NAME`` files, and an opaque
directory by the ``user.overlay.opaque``, ``user.fuseoverlayfs.opaque`` or
``trusted.overlay.opaque`` xattr or a ``.wh..wh..opq`` file, so it reads both formats
storage/layers.py writes. Unlike the kernel it keeps hard links together on copy-up.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from typing import TYPE_CHECKING

from rootless.spec import Driver, RootfsPlan
from storage.drivers.base import ContainerDirs, LayerDir, mount_option_problem
from storage.drivers.overlay import union_plan

if TYPE_CHECKING:
    from storage.nsrunner import NamespaceRunner

PROGRAM = "fuse-overlayfs"
FUSE_DEVICE = "/dev/fuse"
_DIRS = ("/usr/bin", "/usr/local/bin", "/bin", "/usr/sbin", "/sbin")


def find_program() -> str | None:
    """The fuse-overlayfs binary: $PATH first, then the usual directories (PATH may be minimal)."""
    found = shutil.which(PROGRAM)
    if found:
        return found
    for d in _DIRS:
        p = os.path.join(d, PROGRAM)
        if os.access(p, os.X_OK):
            return p
    return None


def fuse_problem(device: str = FUSE_DEVICE) -> str | None:
    """Why /dev/fuse cannot be used, or None. Opening it read-write is what the mount needs."""
    try:
        fd = os.open(device, os.O_RDWR | os.O_CLOEXEC)
    except OSError as e:
        return f"open {device}: {e.strerror}"
    os.close(fd)
    return None


class FuseOverlayfs:
    name: Driver = "fuse-overlayfs"

    def unavailable(self) -> str | None:
        if find_program() is None:
            return f"{PROGRAM} is not installed"
        return fuse_problem()

    def refuses(self, layers: Sequence[LayerDir]) -> str | None:
        return mount_option_problem([layer.path for layer in layers])

    def create(self, runner: NamespaceRunner, layers: Sequence[LayerDir], dirs: ContainerDirs) -> RootfsPlan:
        return union_plan(self.name, runner, layers, dirs)
