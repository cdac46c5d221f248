"""The vfs driver: every container gets its own full copy of the image.

The copy is built by applying the layers in order, base first, with the rules overlayfs
uses to merge them (overlayfs(5), "Whiteouts and opaque directories"), so that every
driver shows the same tree:

* a whiteout (a 0:0 character device, or an aufs ``.wh.NAME`` file) removes NAME from
  what the layers below gave, and is not itself copied;
* an opaque directory (xattr ``user.overlay.opaque`` = ``y``, or an aufs ``.wh..wh..opq``
  file inside it) hides everything the layers below put in it;
* otherwise a directory merges with the one below and takes this layer's owner, mode,
  times and xattrs; anything else replaces what was there.

``build`` runs as namespace-root in the store's user namespace, so owners (the user's
subordinate IDs) and set-ID bits carry over as ``cp -a`` would keep them. Files that are
hard links of each other within one layer stay hard links; nothing is ever followed
through a symlink: every directory is opened relative to its parent with O_NOFOLLOW.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from rootless.errors import StorageError, errno_hint
from rootless.spec import Driver, RootfsPlan
from storage.drivers.base import ContainerDirs, LayerDir, remove_entry

if TYPE_CHECKING:
    from storage.nsrunner import NamespaceRunner

_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_WH = ".wh."
_AUFS_OPAQUE = ".wh..wh..opq"
_OPAQUE_XATTRS = ("user.overlay.opaque", "trusted.overlay.opaque", "user.fuseoverlayfs.opaque")
# The overlay drivers' own bookkeeping: meaningless (and misleading) in a plain copy.
_SKIP_XATTRS = ("user.overlay.", "trusted.overlay.", "user.fuseoverlayfs.")
_FICLONE = 0x40049409  # ioctl_ficlone(2): share the extents where the file system can (btrfs, xfs)
_CHUNK = 1 << 30


class Vfs:
    name: Driver = "vfs"

    def unavailable(self) -> str | None:
        return None

    def refuses(self, layers: Sequence[LayerDir]) -> str | None:
        return None

    def create(self, runner: NamespaceRunner, layers: Sequence[LayerDir], dirs: ContainerDirs) -> RootfsPlan:
        runner.call("storage.drivers.vfs:build", layers=[layer.path for layer in layers],
                    dest=str(dirs.rootfs))
        return RootfsPlan(driver="vfs", target=str(dirs.rootfs))


# --------------------------------------------------------------------------- namespace side


def build(layers: list[str], dest: str) -> dict[str, int]:
    """Namespace-root: create ``dest`` and apply ``layers`` (base first) onto it.

    Returns counts: files, dirs, links (hard links kept), whiteouts, opaque, bytes.
    On error ``dest`` is left for the caller to remove.
    """
    try:
        os.mkdir(dest, 0o700)
    except OSError as e:
        raise StorageError(f"create {dest}: {e.strerror}", hint=errno_hint(e)) from e
    applier = _Applier()
    droot = os.open(dest, _DIR)
    try:
        for layer in layers:
            try:
                sroot = os.open(layer, _DIR)
            except OSError as e:
                raise StorageError(f"read layer {layer}: {e.strerror}", hint=errno_hint(e)) from e
            try:
                applier.layer(sroot, droot, layer, dest)
            finally:
                os.close(sroot)
    finally:
        os.close(droot)
    return applier.stats


class _Applier:
    def __init__(self) -> None:
        self.stats = {"files": 0, "dirs": 0, "links": 0, "whiteouts": 0, "opaque": 0, "bytes": 0}
        self.chown = os.geteuid() == 0
        # source inode → where its first name was copied (relative to the root), per layer:
        # a layer's tree is linked only within itself.
        self.links: dict[int, str] = {}
        self.droot = -1
        self.source = ""
        self.rel = ""

    def layer(self, sroot: int, droot: int, source: str, dest: str) -> None:
        self.source = source
        self.droot = droot
        self.links.clear()
        try:
            self.directory(sroot, droot, "", os.fstat(sroot))
        except OSError as e:
            where = f"{source}/{self.rel}" if self.rel else source
            raise StorageError(f"copy layer {where} to {dest}: {e.strerror or e}", hint=errno_hint(e)) from e
        finally:
            self.links.clear()

    # ---- whiteouts
    @staticmethod
    def opaque(sfd: int, names: set[str]) -> bool:
        if _AUFS_OPAQUE in names:
            return True
        for name in _OPAQUE_XATTRS:
            try:
                if os.getxattr(sfd, name) == b"y":
                    return True
            except OSError:
                continue
        return False

    # ---- the tree
    def directory(self, sfd: int, dfd: int, rel: str, st: os.stat_result) -> None:
        """Merge the layer directory ``sfd`` into ``dfd`` (both open), then copy its attributes."""
        with os.scandir(sfd) as it:
            entries = sorted(it, key=lambda e: e.name)
        names = {e.name for e in entries}
        if self.opaque(sfd, names):
            self.stats["opaque"] += 1
            with os.scandir(dfd) as it:
                below = [e.name for e in it]
            for name in below:
                remove_entry(dfd, name)
        for entry in entries:
            name = entry.name
            self.rel = f"{rel}/{name}" if rel else name
            if name == _AUFS_OPAQUE:
                continue
            if name.startswith(_WH):
                hidden = name[len(_WH):]
                if hidden not in ("", ".", ".."):  # the unpacker refuses these; never trust it blindly
                    remove_entry(dfd, hidden)
                    self.stats["whiteouts"] += 1
                continue
            est = os.stat(name, dir_fd=sfd, follow_symlinks=False)
            if stat.S_ISCHR(est.st_mode) and est.st_rdev == 0:
                remove_entry(dfd, name)
                self.stats["whiteouts"] += 1
                continue
            self.entry(sfd, dfd, name, self.rel, est)
        self.rel = rel
        self.attributes(sfd, dfd, None, st)

    def entry(self, sfd: int, dfd: int, name: str, rel: str, st: os.stat_result) -> None:
        mode = st.st_mode
        try:
            dst = os.stat(name, dir_fd=dfd, follow_symlinks=False)
        except FileNotFoundError:
            dst = None
        if stat.S_ISDIR(mode):
            if dst is not None and not stat.S_ISDIR(dst.st_mode):
                os.unlink(name, dir_fd=dfd)
                dst = None
            if dst is None:
                os.mkdir(name, 0o700, dir_fd=dfd)
                self.stats["dirs"] += 1
            child_s = os.open(name, _DIR, dir_fd=sfd)
            try:
                child_d = os.open(name, _DIR, dir_fd=dfd)
                try:
                    self.directory(child_s, child_d, rel, st)
                finally:
                    os.close(child_d)
            finally:
                os.close(child_s)
            return
        if dst is not None:
            remove_entry(dfd, name)
        if stat.S_ISREG(mode):
            self.regular(sfd, dfd, name, rel, st)
        elif stat.S_ISLNK(mode):
            os.symlink(os.readlink(name, dir_fd=sfd), name, dir_fd=dfd)
            self.attributes(sfd, dfd, name, st)
            self.stats["files"] += 1
        elif stat.S_ISFIFO(mode):
            os.mkfifo(name, 0o600, dir_fd=dfd)
            self.attributes(sfd, dfd, name, st)
            self.stats["files"] += 1
        elif stat.S_ISSOCK(mode) or stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
            # Layers hold no devices but whiteouts (a user namespace may not make them), and a
            # socket is only meaningful while its server runs.
            return
        else:
            raise StorageError(f"copy layer {self.source}: unknown file type {stat.S_IFMT(mode):o}: {rel}")

    def regular(self, sfd: int, dfd: int, name: str, rel: str, st: os.stat_result) -> None:
        if st.st_nlink > 1:
            first = self.links.get(st.st_ino)
            if first is not None:
                # The directories on ``first`` are this layer's own, made or merged just now,
                # so the walk down them meets no symlink; linkat(2) without
                # AT_SYMLINK_FOLLOW links the name itself, never a symlink's target.
                os.link(first, name, src_dir_fd=self.droot, dst_dir_fd=dfd, follow_symlinks=False)
                self.stats["links"] += 1
                return
        src = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=sfd)
        try:
            dst = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                          0o600, dir_fd=dfd)
            try:
                self.stats["bytes"] += _copy_data(src, dst, st.st_size)
                self.attributes(src, dst, None, st)
            finally:
                os.close(dst)
        finally:
            os.close(src)
        self.stats["files"] += 1
        if st.st_nlink > 1:
            self.links[st.st_ino] = rel

    def attributes(self, sfd: int, dfd: int, name: str | None, st: os.stat_result) -> None:
        """Owner, xattrs, mode and times of ``st`` onto the destination: ``dfd`` itself when
        ``name`` is None, else the entry ``name`` in ``dfd`` (which may be a symlink).

        chown(2) clears set-ID bits and security.capability, so it comes first and the
        mode after the xattrs.
        """
        is_link = stat.S_ISLNK(st.st_mode)
        if self.chown:
            if name is None:
                os.fchown(dfd, st.st_uid, st.st_gid)
            else:
                os.chown(name, st.st_uid, st.st_gid, dir_fd=dfd, follow_symlinks=False)
        if not is_link:  # the user.* namespace is refused on symlinks (xattr(7))
            src: int | str = sfd if name is None else f"/proc/self/fd/{sfd}/{name}"
            dst: int | str = dfd if name is None else f"/proc/self/fd/{dfd}/{name}"
            _copy_xattrs(src, dst, stale=stat.S_ISDIR(st.st_mode))
            if name is None:
                os.fchmod(dfd, st.st_mode & 0o7777)
            else:
                os.chmod(name, st.st_mode & 0o7777, dir_fd=dfd)
        times = (st.st_atime_ns, st.st_mtime_ns)
        if name is None:
            os.utime(dfd, ns=times)
        else:
            os.utime(name, ns=times, dir_fd=dfd, follow_symlinks=False)


def _copy_xattrs(src: int | str, dst: int | str, stale: bool = False) -> None:
    """Copy the xattrs; with ``stale`` (a directory merged with a lower one) also drop the
    user.* ones only the lower had: overlayfs shows the upper-most directory's alone."""
    try:
        names = os.listxattr(src)
    except OSError as e:
        if e.errno in (errno.ENOTSUP, errno.EPERM):
            return
        raise
    if stale:
        for name in set(os.listxattr(dst)) - set(names):
            if name.startswith("user."):
                os.removexattr(dst, name)
    for name in names:
        if name.startswith(_SKIP_XATTRS):
            continue
        try:
            os.setxattr(dst, name, os.getxattr(src, name))
        except OSError as e:
            # What the unpacker could set, the same file system takes again; a trusted.*
            # or security.* name it could not is simply not there to copy.
            if e.errno not in (errno.ENOTSUP, errno.EPERM, errno.EACCES):
                raise


def _copy_data(src: int, dst: int, size: int) -> int:
    if size == 0:
        return 0
    try:
        fcntl.ioctl(dst, _FICLONE, src)
        return size
    except OSError:
        pass
    copied = 0
    try:
        while True:
            n = os.copy_file_range(src, dst, _CHUNK)
            if n == 0:
                return copied
            copied += n
    except OSError as e:
        if e.errno not in (errno.EXDEV, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL) or copied:
            raise
    while chunk := os.read(src, 1 << 20):
        view = memoryview(chunk)
        while view:
            view = view[os.write(dst, view):]
        copied += len(chunk)
    return copied


def describe(stats: dict[str, Any]) -> str:
    return (f"{stats.get('files', 0)} files, {stats.get('dirs', 0)} directories, "
            f"{stats.get('links', 0)} hard links, {stats.get('bytes', 0)} bytes")
