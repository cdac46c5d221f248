"""The overlay driver: kernel overlayfs, mounted by the container's child in its own user
namespace with ``userxattr``.

An unprivileged overlay mount (Linux 5.11+) reads its metadata from the ``user.overlay.``
xattr namespace (overlayfs(5), "User xattr") and whiteouts as 0:0 character devices, the
format storage/layers.py unpacks into. It does not understand aufs ``.wh.`` files, so
layers unpacked where mknod(2) of a whiteout was refused cannot be used with it.

Hard links: overlayfs shows a lower file's links as one inode, but without the ``index``
feature (unavailable to an unprivileged mount) copy-up breaks the link: writing through
one name gives that name a new inode, as with Podman's overlay driver.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

from rootless.errors import StorageError, errno_hint
from rootless.spec import Driver, RootfsPlan
from storage.drivers.base import ContainerDirs, LayerDir, mount_option_problem, root_attrs

if TYPE_CHECKING:
    from storage.nsrunner import NamespaceRunner


class Overlay:
    name: Driver = "overlay"

    def unavailable(self) -> str | None:
        # Only a mount can tell; storage.drivers.probe does that once per store.
        return None

    def refuses(self, layers: Sequence[LayerDir]) -> str | None:
        for layer in layers:
            if layer.whiteout_format != "overlay":
                return (f"layer {layer.diff_id[:19]} records deletions as aufs .wh. files, "
                        "which kernel overlayfs does not read")
        return mount_option_problem([layer.path for layer in layers])

    def create(self, runner: NamespaceRunner, layers: Sequence[LayerDir], dirs: ContainerDirs) -> RootfsPlan:
        return union_plan(self.name, runner, layers, dirs)


def union_plan(driver: Driver, runner: NamespaceRunner, layers: Sequence[LayerDir],
               dirs: ContainerDirs) -> RootfsPlan:
    """upper/, work/ and merged/ for an overlay-style union, and the plan that mounts them."""
    problem = mount_option_problem([str(dirs.root)])
    if problem:
        raise StorageError(f"cannot use the {driver} driver: {problem}",
                           hint="move the store with --root to a path without ',' ':' or '\\'")
    mode, uid, gid = root_attrs(layers)
    try:
        for d in (dirs.upper, dirs.work, dirs.merged):
            os.mkdir(d, 0o700)
        os.chmod(dirs.upper, mode)  # mkdir(2) applies the umask; the image's mode must win
        if not layers:
            os.mkdir(dirs.empty, 0o755)
    except OSError as e:
        raise StorageError(f"create the container layer in {dirs.root}: {e.strerror}",
                           hint=errno_hint(e)) from e
    if (uid, gid) != (os.getuid(), os.getgid()):
        # The image's root belongs to another of the user's IDs: only namespace-root may chown.
        runner.call("storage.drivers.overlay:set_root_attrs", path=str(dirs.upper),
                    source=layers[-1].path)
    lower = tuple(layer.path for layer in reversed(layers)) or (str(dirs.empty),)
    return RootfsPlan(driver=driver, target=str(dirs.merged), lower=lower, upper=str(dirs.upper),
                      work=str(dirs.work))


def set_root_attrs(path: str, source: str) -> None:
    """Namespace-root: give ``path`` the owner and mode of ``source``.

    chown(2) clears set-ID bits, so the mode is set after it.
    """
    st = os.stat(source)
    os.chown(path, st.st_uid, st.st_gid)
    os.chmod(path, st.st_mode & 0o7777)
