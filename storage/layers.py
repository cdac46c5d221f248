"""Layer unpacking and the store of unpacked layers.

``unpack`` and ``remove_tree`` run inside the store's user namespace as namespace-root
(through a NamespaceRunner), so that files keep the owners the image gives them, mapped
into the user's subordinate ID range, and whiteouts can be made as the 0:0 character
devices overlayfs reads natively. This module imports only the stdlib, zstandard, isal,
rootless.errors/layout and storage's stdlib-only helpers, so a worker loads it quickly.

Safety policy (what Podman's containers-storage does too: a malicious layer fails the
pull, it is not "repaired"): a member whose name holds a ``..`` component, whose
parent is a symlink or a non-directory, or a hardlink whose target is unsafe, missing or
a directory raises StorageError naming the member. A leading ``/`` (``tar -P``) is read
relative to the layer's root, as Docker and GNU tar read it, for names and hardlink
targets alike. Nothing is ever
resolved through a symlink: every directory is opened relative to its parent's file
descriptor with O_NOFOLLOW, so a symlink planted earlier in the layer cannot redirect a
write outside the layer. Symlink *targets* are only data and may point anywhere.
Device nodes other than the 0:0 whiteout are skipped and counted; members of types we
do not know are skipped and listed in ``rejected``.

What is kept: owners (an ID the namespace's map cannot hold, which with a single-ID map or
a short subordinate range is any ID but 0, becomes the mapped root, 0:0, counted as
``overflow_ids``, and such a file loses its set-ID bits: they would now grant root), modes
with set-ID and sticky bits (set after chown(2), which clears them),
mtimes, xattrs from PAX SCHILY.xattr./LIBARCHIVE.xattr. records (failures counted),
hardlinks, FIFOs. Directories get their owner, mode and mtime last, deepest first. A
member listed again replaces the earlier one (a directory over a directory merges).
Whiteouts: ``.wh.NAME`` becomes a 0:0 character device NAME and ``.wh..wh..opq`` the
xattr user.overlay.opaque=y ("overlay" format); where mknod(2) or user xattrs are
refused, both are kept as the files they are ("aufs" format, reported).
"""

from __future__ import annotations

import base64
import builtins
import contextlib
import errno
import hashlib
import json
import os
import queue
import shutil
import stat
import tarfile
import threading
import time
import urllib.parse
from collections import OrderedDict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from rootless.errors import DigestMismatchError, NotFoundError, StorageError, errno_hint
from rootless.layout import Layout
from storage import compress
from storage.atomic import fsync_dir, write_atomic
from storage.blobs import check_digest
from storage.locks import FileLock
from storage.nsrunner import NamespaceRunner

_READ = 1 << 20  # decompressed bytes asked for per read: few syscalls, bounded memory
_BLOCK = tarfile.BLOCKSIZE
_DIR_FDS = 64  # directory fds kept open; tar streams list a directory's entries together
_NOFOLLOW_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_WH = ".wh."
_OPAQUE = ".wh..wh..opq"
# overlayfs with the "userxattr" mount option (the only form an unprivileged mount may
# use) reads its xattrs from the user.overlay. namespace; fuse-overlayfs reads it too.
_OPAQUE_XATTR = "user.overlay.opaque"
# A layer must not smuggle in the overlay drivers' own metadata (redirects, opaque
# marks, metacopy): those are derived from whiteout entries only.
_RESERVED_XATTRS = ("user.overlay.", "trusted.overlay.", "user.fuseoverlayfs.")
_MAX_REJECTED = 100


# --------------------------------------------------------------------------- stream


class _Source:
    """The decompressed tar as a forward-only stream with the read/seek/tell that
    tarfile.TarFile needs.

    tarfile's own "r|" stream (_Stream) re-joins its whole buffer on every read, which
    is quadratic in the buffer size; this keeps the decompressor's chunks and hands
    file data out as memoryviews of them.
    """

    def __init__(self, pull: Callable[[], bytes]) -> None:
        self._pull = pull
        self._buf = b""
        self._pos = 0
        self._base = 0  # stream offset of _buf[0]
        self.eof = False
        self.last_header = b""

    def _fill(self) -> bool:
        if self.eof:
            return False
        chunk = self._pull()
        if not chunk:
            self.eof = True
            return False
        self._base += len(self._buf)
        self._buf = chunk
        self._pos = 0
        return True

    def tell(self) -> int:
        return self._base + self._pos

    def read(self, n: int = -1) -> bytes:
        if n < 0:
            parts = [self._buf[self._pos:]]
            self._pos = len(self._buf)
            while self._fill():
                parts.append(self._buf)
                self._pos = len(self._buf)
            return b"".join(parts)
        end = self._pos + n
        if end <= len(self._buf):
            out = self._buf[self._pos:end]
            self._pos = end
        else:
            parts = [self._buf[self._pos:]]
            got = len(parts[0])
            self._pos = len(self._buf)
            while got < n and self._fill():
                take = min(n - got, len(self._buf))
                parts.append(self._buf[:take])
                self._pos = take
                got += take
            out = b"".join(parts)
        if n == _BLOCK:
            self.last_header = out
        return out

    def chunks(self, n: int) -> Iterator[memoryview]:
        """The next ``n`` bytes as views into the decompressor's chunks (no copies)."""
        while n > 0:
            avail = len(self._buf) - self._pos
            if avail <= 0:
                if not self._fill():
                    raise EOFError
                continue
            take = min(n, avail)
            yield memoryview(self._buf)[self._pos:self._pos + take]
            self._pos += take
            n -= take

    def seek(self, offset: int, whence: int = 0) -> int:
        if whence == 1:
            offset += self.tell()
        elif whence != 0:
            raise OSError(errno.ESPIPE, "layer stream seeks only forward")
        skip = offset - self.tell()
        if skip < 0:
            raise OSError(errno.ESPIPE, "layer stream seeks only forward")
        try:
            for _ in self.chunks(skip):
                pass
        except EOFError:
            pass  # like lseek(2) past the end; the next read comes back short
        return self.tell()

    def drain(self) -> None:
        """Consume what follows the end-of-archive blocks: the diff_id covers the whole stream."""
        self._pos = len(self._buf)
        while self._fill():
            self._pos = len(self._buf)


def _compression(blob: str, media_type: str) -> str:
    """gzip, zstd or none: the magic bytes decide; the media type must not contradict them."""
    with open(blob, "rb") as f:
        found = compress.sniff(f.read(6))
    if found not in ("gzip", "zstd"):
        found = "none"
    mt = media_type.lower()
    if mt.endswith("gzip"):  # OCI "+gzip", Docker ".tar.gzip"
        declared: str | None = "gzip"
    elif mt.endswith("zstd"):
        declared = "zstd"
    elif mt.endswith("tar"):
        declared = "none"
    else:
        declared = None
    if found == "none" and declared in ("gzip", "zstd"):
        raise StorageError(f"layer blob {os.path.basename(blob)[:12]} has media type {media_type} "
                           f"but is not {declared}-compressed")
    # Registries mislabel compressed layers as plain tar (and vice versa) often enough
    # that the content's own magic is trusted over the label.
    return found


class _Decompressor:
    """Decompresses and hashes the blob in a thread, a few chunks ahead of the unpacker.

    isal/zlib, zstandard, hashlib and read(2) all release the GIL, so decompression and
    the diff_id run on the other core while the main thread creates files. gzip goes
    through ISA-L's inflate when python-isal is installed (storage.compress: 0.30 s
    against zlib's 0.51 s for debian:bookworm's 60 MB layer).
    """

    def __init__(self, blob: str, kind: str, label: str) -> None:
        self.kind = kind
        self.label = label
        self.hash = hashlib.sha256()
        self._file: IO[bytes] = open(blob, "rb")  # noqa: SIM115 - closed in close()
        self._queue: queue.Queue[bytes | BaseException] = queue.Queue(maxsize=8)
        self._stop = threading.Event()
        self._done = False
        pull = compress.reader(self._file, kind)
        self._thread = threading.Thread(target=self._produce, args=(pull,), name="layer-decompress",
                                        daemon=True)
        self._thread.start()

    def _produce(self, pull: Callable[[], bytes]) -> None:
        try:
            while not self._stop.is_set():
                chunk = pull()
                if chunk:
                    self.hash.update(chunk)
                self._put(chunk)
                if not chunk:
                    return
        except BaseException as e:  # noqa: BLE001 - handed to the consumer
            self._put(e)

    def _put(self, item: bytes | BaseException) -> None:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.2)
                return
            except queue.Full:
                continue

    def get(self) -> bytes:
        """The next decompressed chunk; b"" at the end (the hash is then complete)."""
        if self._done:
            return b""
        item = self._queue.get()
        if isinstance(item, BaseException):
            self._done = True
            raise StorageError(f"unpack layer {self.label}: decompress: {item}",
                               hint="the layer blob is corrupt; remove the image and pull again") from item
        if not item:
            self._done = True
        return item

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self._file.close()


# --------------------------------------------------------------------------- unpacking


def _id_ranges(path: str) -> list[tuple[int, int]] | None:
    """The inside ranges of /proc/self/{uid,gid}_map (user_namespaces(7))."""
    try:
        with open(path) as f:
            out = []
            for line in f:
                inside, _outside, count = (int(x) for x in line.split())
                out.append((inside, inside + count))
            return out
    except (OSError, ValueError):
        return None


def _has_default_acl(fd: int) -> bool:
    try:
        return "system.posix_acl_default" in os.listxattr(fd)
    except OSError:
        return False


def _umask() -> int:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return 0o022


class _Unpacker:
    def __init__(self, dest: str, label: str) -> None:
        self.label = label
        try:
            os.mkdir(dest, 0o700)
        except FileExistsError:
            pass
        self.root = os.open(dest, _NOFOLLOW_DIR)
        if os.fstat(self.root).st_mode & stat.S_ISGID:
            # Inherited from a set-group-ID parent: entries would take its group instead
            # of ours, and we skip chown(2) when the tar's owner equals ours.
            os.fchmod(self.root, 0o700)
        self.fds: OrderedDict[str, int] = OrderedDict()
        self.dirs: dict[str, tarfile.TarInfo] = {}
        self.euid = os.geteuid()
        self.egid = os.getegid()
        self.chown = self.euid == 0
        self.uids = _id_ranges("/proc/self/uid_map") or [(0, 1 << 32)]
        self.gids = _id_ranges("/proc/self/gid_map") or [(0, 1 << 32)]
        # A default ACL on the directory replaces the umask (acl(5)): then always chmod.
        self.umask = 0o777 if _has_default_acl(self.root) else _umask()
        self.whiteout_format: str | None = None
        self.remapped = False  # the last member's owner was not in the map: it became root
        self.stats = {"files": 0, "devices_skipped": 0, "overflow_ids": 0, "xattr_failures": 0,
                      "xattrs_skipped": 0, "whiteouts": 0, "opaque_dirs": 0}
        self.rejected: list[str] = []
        self.current = ""  # the member being unpacked, for messages

    # ---- errors
    def fail(self, member: str, reason: str) -> StorageError:
        return StorageError(f"unpack layer {self.label}: {reason}: {member}",
                            hint="the layer is malformed or malicious; it was not stored")

    def oserr(self, member: str, e: OSError) -> StorageError:
        return StorageError(f"unpack layer {self.label}: {member}: {e.strerror or e}", hint=errno_hint(e))

    # ---- names
    def clean(self, name: str, what: str = "path") -> str:
        # A leading "/" (as `tar -P` writes) names a path from the layer's root, as Docker and
        # GNU tar read it: dropping it cannot reach outside, so it is no reason to refuse.
        parts = [p for p in name.split("/") if p and p != "."]
        if ".." in parts:
            raise self.fail(name, f"{what} has a '..' component")
        return "/".join(parts)

    # ---- directory fds, never through a symlink
    def dir_fd(self, rel: str, create: bool = True) -> int:
        if not rel:
            return self.root
        fd = self.fds.get(rel)
        if fd is not None:
            self.fds.move_to_end(rel)
            return fd
        parts = rel.split("/")
        i = len(parts) - 1
        start = self.root
        while i > 0:
            cached = self.fds.get("/".join(parts[:i]))
            if cached is not None:
                self.fds.move_to_end("/".join(parts[:i]))
                start = cached
                break
            i -= 1
        fd = start
        opened: list[int] = []
        try:
            for j in range(i, len(parts)):
                fd = self._open_child_dir(fd, parts[j], "/".join(parts[:j + 1]), create)
                opened.append(fd)
        except BaseException:
            for o in opened:
                os.close(o)
            raise
        for o in opened[:-1]:
            os.close(o)
        self.fds[rel] = fd
        while len(self.fds) > _DIR_FDS:
            os.close(self.fds.popitem(last=False)[1])
        return fd

    def _open_child_dir(self, parent: int, name: str, rel: str, create: bool) -> int:
        try:
            return os.open(name, _NOFOLLOW_DIR, dir_fd=parent)
        except FileNotFoundError:
            if not create:
                raise
        except OSError as e:
            if e.errno in (errno.ELOOP, errno.ENOTDIR):
                if stat.S_ISLNK(os.stat(name, dir_fd=parent, follow_symlinks=False).st_mode):
                    raise self.fail(self.current, f"parent {rel} is a symlink") from None
                raise self.fail(self.current, f"parent {rel} is not a directory") from None
            raise
        # Like tar(1), create a missing parent; it is root's 0755 unless the layer says otherwise.
        os.mkdir(name, 0o700, dir_fd=parent)
        fd = os.open(name, _NOFOLLOW_DIR, dir_fd=parent)
        os.fchmod(fd, 0o755)
        return fd

    def forget(self, rel: str) -> None:
        """``rel`` was removed: drop what we hold for it and everything beneath it."""
        prefix = rel + "/"
        for key in [k for k in self.fds if k == rel or k.startswith(prefix)]:
            os.close(self.fds.pop(key))
        for key in [k for k in self.dirs if k == rel or k.startswith(prefix)]:
            del self.dirs[key]

    def remove(self, parent: int, name: str, rel: str) -> None:
        """A later member replaces an earlier one of the same name."""
        st = os.stat(name, dir_fd=parent, follow_symlinks=False)
        if stat.S_ISDIR(st.st_mode):
            self.forget(rel)
            shutil.rmtree(name, dir_fd=parent)
        else:
            os.unlink(name, dir_fd=parent)

    # ---- metadata
    def ids(self, m: tarfile.TarInfo) -> tuple[int, int] | None:
        """The owner to give *m*: its own, or the mapped root for an ID the map cannot hold.

        chown(2) fails with EINVAL for an ID without a mapping (user_namespaces(7)). The
        overflow ID 65534 is no way out: a single-ID map or a range under 65535 IDs does
        not hold it either, while 0 is in every map (the user's own ID).
        """
        self.remapped = False
        if not self.chown:
            return None
        uid, gid = m.uid, m.gid
        if not any(lo <= uid < hi for lo, hi in self.uids):
            uid, self.remapped = 0, True
        if not any(lo <= gid < hi for lo, hi in self.gids):
            gid, self.remapped = 0, True
        if self.remapped:
            self.stats["overflow_ids"] += 1
        return uid, gid

    def chown_fd(self, fd: int, m: tarfile.TarInfo, always: bool = False) -> None:
        ids = self.ids(m)
        if ids is None or (ids == (self.euid, self.egid) and not always):
            return
        try:
            os.fchown(fd, *ids)
        except OSError as e:
            if e.errno != errno.EINVAL:
                raise
            self.unmappable()
            os.fchown(fd, 0, 0)

    def chown_at(self, parent: int, name: str, m: tarfile.TarInfo) -> None:
        ids = self.ids(m)
        if ids is None or ids == (self.euid, self.egid):
            return
        try:
            os.chown(name, *ids, dir_fd=parent, follow_symlinks=False)
        except OSError as e:
            if e.errno != errno.EINVAL:
                raise
            self.unmappable()
            os.chown(name, 0, 0, dir_fd=parent, follow_symlinks=False)

    def unmappable(self) -> None:
        """The kernel refused an ID our reading of the map allowed: the mapped root it is."""
        if not self.remapped:
            self.stats["overflow_ids"] += 1
        self.remapped = True

    def mode(self, m: tarfile.TarInfo) -> int:
        """The member's mode once its owner is set: set-ID bits go with an owner that became root."""
        return m.mode & (0o1777 if self.remapped else 0o7777)

    @staticmethod
    def times(m: tarfile.TarInfo) -> tuple[int, int]:
        mtime = _ns(m.mtime)
        atime = m.pax_headers.get("atime")
        try:
            return (_ns(float(atime)) if atime else mtime), mtime
        except ValueError:
            return mtime, mtime

    def xattrs(self, target: int | str, m: tarfile.TarInfo, follow: bool = True) -> None:
        for key, value in m.pax_headers.items():
            if key.startswith("SCHILY.xattr."):
                name = key[13:]
                data = value.encode("utf-8", "surrogateescape")
            elif key.startswith("LIBARCHIVE.xattr."):
                name = urllib.parse.unquote(key[17:])
                try:
                    data = base64.b64decode(value + "=" * (-len(value) % 4))
                except ValueError:
                    self.stats["xattr_failures"] += 1
                    continue
            else:
                continue
            if name.startswith(_RESERVED_XATTRS):
                self.stats["xattrs_skipped"] += 1
                continue
            try:
                os.setxattr(target, name, data, follow_symlinks=follow)
            except OSError:
                # trusted.* needs CAP_SYS_ADMIN in the initial namespace, user.* is refused
                # on symlinks, security.selinux needs a policy: count it, keep the file.
                self.stats["xattr_failures"] += 1

    # ---- whiteouts
    def whiteouts(self) -> str:
        """overlay (0:0 char devices + user.overlay.opaque) if this kernel and file system
        let us make them, else aufs (.wh. files kept as they are)."""
        if self.whiteout_format is None:
            probe = f".rootless-probe-{os.getpid()}"
            fmt = "overlay"
            try:
                os.mknod(probe, stat.S_IFCHR | 0o600, os.makedev(0, 0), dir_fd=self.root)
                os.unlink(probe, dir_fd=self.root)
                os.setxattr(self.root, "user.rootless.probe", b"y")
                os.removexattr(self.root, "user.rootless.probe")
            except OSError:
                fmt = "aufs"
            self.whiteout_format = fmt
        return self.whiteout_format

    # ---- members
    def member(self, tf: tarfile.TarFile, src: _Source, m: tarfile.TarInfo) -> None:
        self.current = m.name
        rel = self.clean(m.name)
        parent, _, base = rel.rpartition("/")
        if not rel:
            if m.isdir():
                self.dirs[""] = m
            return
        if base.startswith(_WH):
            overlay = self.whiteouts() == "overlay"
            if base == _OPAQUE:
                self.stats["opaque_dirs"] += 1
                if overlay:
                    os.setxattr(self.dir_fd(parent), _OPAQUE_XATTR, b"y")
                    return
            else:
                target = base[len(_WH):]
                if not target or target in (".", ".."):
                    raise self.fail(m.name, "whiteout names no file")
                if overlay:
                    self.mknod_whiteout(parent, target, parent + "/" + target if parent else target, m)
                    return
                self.stats["whiteouts"] += 1
            # aufs format: the .wh. entry itself is kept, as the member it is.
        if m.isdir():
            self.mkdir(parent, base, rel, m)
        elif m.isreg():
            self.regular(tf, src, parent, base, rel, m)
        elif m.issym():
            self.create(parent, base, rel, lambda pfd: os.symlink(m.linkname, base, dir_fd=pfd))
            pfd = self.dir_fd(parent)
            self.chown_at(pfd, base, m)
            if m.pax_headers:
                self.xattrs(f"/proc/self/fd/{pfd}/{base}", m, follow=False)
            os.utime(base, ns=self.times(m), dir_fd=pfd, follow_symlinks=False)
        elif m.islnk():
            self.hardlink(parent, base, rel, m)
        elif m.isfifo():
            self.create(parent, base, rel, lambda pfd: os.mkfifo(base, 0o600, dir_fd=pfd))
            self.special_meta(parent, base, m)
        elif m.ischr() and m.devmajor == 0 and m.devminor == 0:
            # Already an overlay whiteout (a layer exported from an overlay upper dir).
            if self.whiteouts() == "overlay":
                self.mknod_whiteout(parent, base, rel, m)
            else:
                wh = parent + "/" + _WH + base if parent else _WH + base
                self.create(parent, _WH + base, wh, lambda pfd: os.close(
                    os.open(_WH + base, _NEW_FILE, 0o600, dir_fd=pfd)))
                self.stats["whiteouts"] += 1
        elif m.ischr() or m.isblk():
            # A user namespace may not create real devices (mknod(2): CAP_MKNOD in the
            # initial namespace); containers get theirs bind-mounted from the host.
            self.stats["devices_skipped"] += 1
        else:
            if len(self.rejected) < _MAX_REJECTED:
                self.rejected.append(m.name)

    def create(self, parent: str, name: str, rel: str, make: Callable[[int], Any]) -> None:
        pfd = self.dir_fd(parent)
        try:
            make(pfd)
        except FileExistsError:
            self.remove(pfd, name, rel)
            pfd = self.dir_fd(parent)
            make(pfd)
        self.stats["files"] += 1

    def mknod_whiteout(self, parent: str, name: str, rel: str, m: tarfile.TarInfo) -> None:
        self.create(parent, name, rel,
                    lambda pfd: os.mknod(name, stat.S_IFCHR, os.makedev(0, 0), dir_fd=pfd))
        # The whiteout entry's owner and mtime stay with the device, so a layer written
        # back from this tree (storage.layertar) is the same bytes each time.
        pfd = self.dir_fd(parent)
        self.chown_at(pfd, name, m)
        os.utime(name, ns=self.times(m), dir_fd=pfd, follow_symlinks=False)
        self.stats["whiteouts"] += 1

    def special_meta(self, parent: str, name: str, m: tarfile.TarInfo) -> None:
        pfd = self.dir_fd(parent)
        self.chown_at(pfd, name, m)
        # The entry was just made by us and is not a symlink, so chmod's following is moot.
        os.chmod(name, self.mode(m), dir_fd=pfd)
        os.utime(name, ns=self.times(m), dir_fd=pfd, follow_symlinks=False)

    def mkdir(self, parent: str, name: str, rel: str, m: tarfile.TarInfo) -> None:
        pfd = self.dir_fd(parent)
        try:
            # 0700 until the end: the image may make the directory read-only, yet its
            # entries still have to be created.
            os.mkdir(name, 0o700, dir_fd=pfd)
            self.stats["files"] += 1
        except FileExistsError:
            if not stat.S_ISDIR(os.stat(name, dir_fd=pfd, follow_symlinks=False).st_mode):
                self.remove(pfd, name, rel)
                pfd = self.dir_fd(parent)
                os.mkdir(name, 0o700, dir_fd=pfd)
        self.dirs[rel] = m
        if any(k.startswith(("SCHILY.xattr.", "LIBARCHIVE.xattr.")) for k in m.pax_headers):
            self.xattrs(self.dir_fd(rel), m)

    def regular(self, tf: tarfile.TarFile, src: _Source, parent: str, name: str, rel: str,
                m: tarfile.TarInfo) -> None:
        mode = m.mode & 0o7777
        # Create with the final permissions when the umask cannot narrow them and there
        # are no set-ID bits (chown(2) clears those, so they are set after it).
        direct = not (mode & 0o7000) and not (mode & self.umask)
        create_mode = mode if direct else 0o600
        pfd = self.dir_fd(parent)
        try:
            fd = os.open(name, _NEW_FILE, create_mode, dir_fd=pfd)
        except FileExistsError:
            self.remove(pfd, name, rel)
            pfd = self.dir_fd(parent)
            fd = os.open(name, _NEW_FILE, create_mode, dir_fd=pfd)
        try:
            if m.size:
                if m.issparse():
                    data = tf.extractfile(m)
                    assert data is not None
                    while chunk := data.read(_READ):
                        _write_all(fd, chunk)
                else:
                    try:
                        for view in src.chunks(m.size):
                            _write_all(fd, view)
                    except EOFError:
                        raise self.fail(m.name, "layer ends inside this file") from None
            self.chown_fd(fd, m)  # before the xattrs: chown(2) drops security.capability
            if m.pax_headers:
                self.xattrs(fd, m)
            if not direct:
                os.fchmod(fd, self.mode(m))
            os.utime(fd, ns=self.times(m))
        finally:
            os.close(fd)
        self.stats["files"] += 1

    def hardlink(self, parent: str, name: str, rel: str, m: tarfile.TarInfo) -> None:
        target = self.clean(m.linkname, "hardlink target")
        if target == rel:
            return
        tparent, _, tname = target.rpartition("/")

        def link(pfd: int) -> None:
            try:
                tfd = self.dir_fd(tparent, create=False)
                st = os.stat(tname, dir_fd=tfd, follow_symlinks=False)
            except FileNotFoundError:
                raise self.fail(m.name, f"hardlink target {m.linkname} is not in this layer") from None
            if stat.S_ISDIR(st.st_mode):
                raise self.fail(m.name, f"hardlink target {m.linkname} is a directory")
            pfd = self.dir_fd(parent)  # re-fetch: looking up the target may have evicted it
            # linkat(2) without AT_SYMLINK_FOLLOW links a symlink itself, never its target.
            os.link(tname, name, src_dir_fd=tfd, dst_dir_fd=pfd, follow_symlinks=False)

        self.create(parent, name, rel, link)

    def finish(self) -> None:
        """Directory owners, modes and times last, deepest first: the image may make a
        directory read-only, and creating entries changes its mtime."""
        if "" not in self.dirs:
            os.fchmod(self.root, 0o755)  # a layer without a "./" entry still needs a usable root
        for rel in sorted(self.dirs, key=lambda r: r.count("/") + (1 if r else 0), reverse=True):
            m = self.dirs[rel]
            fd = self.dir_fd(rel, create=False)
            self.chown_fd(fd, m, always=not rel)  # dest's group may be its parent's
            os.fchmod(fd, self.mode(m))
            os.utime(fd, ns=self.times(m))
            if rel in self.fds:
                os.close(self.fds.pop(rel))

    def close(self) -> None:
        for fd in self.fds.values():
            os.close(fd)
        self.fds.clear()
        os.close(self.root)

    def result(self) -> dict[str, Any]:
        return {**self.stats, "whiteout_format": self.whiteout_format or "overlay",
                "rejected": self.rejected}


def _ns(seconds: float) -> int:
    """Nanoseconds for utimensat(2), clamped so a hostile timestamp cannot overflow it."""
    try:
        return int(min(max(float(seconds), -(2.0 ** 33)), 2.0 ** 33) * 1e9)
    except (TypeError, ValueError, OverflowError):
        return 0


def _write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _label(blob: str, expected_diff_id: str | None) -> str:
    name = os.path.basename(blob)
    if len(name) >= 12 and all(c in "0123456789abcdef" for c in name[:12]):
        return f"sha256:{name[:12]}"
    return expected_diff_id[:19] if expected_diff_id else name


def unpack(blob: str, media_type: str, dest: str, expected_diff_id: str | None = None) -> dict[str, Any]:
    """Unpack the layer ``blob`` into the new directory ``dest``, verifying its diff_id.

    Runs as namespace-root inside the store's user namespace. On any error ``dest`` is
    left half-written for the caller to discard. Returns the diff_id, the uncompressed
    size and counts (see the module docstring for what is refused, skipped and counted).
    """
    label = _label(blob, expected_diff_id)
    try:
        dec = _Decompressor(blob, _compression(blob, media_type), label)
    except OSError as e:
        raise StorageError(f"unpack layer {label}: open {blob}: {e.strerror}", hint=errno_hint(e)) from e
    src = _Source(dec.get)
    try:
        try:
            u = _Unpacker(dest, label)
        except OSError as e:
            raise StorageError(f"unpack layer {label}: create {dest}: {e.strerror}",
                               hint=errno_hint(e)) from e
        try:
            _run(u, src, label)
            u.finish()
        except OSError as e:
            raise StorageError(f"unpack layer {label}: {e.strerror or e}", hint=errno_hint(e)) from e
        finally:
            u.close()
        src.drain()
    finally:
        dec.close()
    diff_id = f"sha256:{dec.hash.hexdigest()}"
    if expected_diff_id is not None and diff_id != expected_diff_id:
        raise DigestMismatchError(f"unpack layer {label}: uncompressed content is {diff_id}, "
                                  f"the image config says {expected_diff_id}",
                                  hint="the registry served a different layer than the image names")
    return {"diff_id": diff_id, "size": src.tell(), **u.result()}


def _run(u: _Unpacker, src: _Source, label: str) -> None:
    try:
        tf = tarfile.TarFile(fileobj=src, mode="r")  # type: ignore[arg-type]
    except tarfile.TarError as e:
        raise StorageError(f"unpack layer {label}: not a tar archive: {e}") from e
    while True:
        try:
            m = tf.next()
        except tarfile.TarError as e:
            raise StorageError(f"unpack layer {label}: corrupt tar: {e}") from e
        if m is None:
            break
        tf.members.clear()  # type: ignore[attr-defined]  # TarFile keeps every member it has read; we never look back
        try:
            u.member(tf, src, m)
        except OSError as e:
            raise u.oserr(m.name, e) from e
    # TarFile.next() also returns None on a garbage header after the first; only zeros
    # (or the end of the data) may end the archive.
    if src.last_header.strip(b"\0"):
        raise StorageError(f"unpack layer {label}: corrupt tar: invalid header at offset "
                           f"{tf.offset}")


# --------------------------------------------------------------------------- removal


def remove_tree(path: str) -> None:
    """``rm -rf path`` that also gets through directories the image made read-only."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISDIR(st.st_mode):
        os.unlink(path)
        return
    parent, name = os.path.split(os.path.abspath(path))
    pfd = os.open(parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        _remove_dir(pfd, name)
    except OSError as e:
        raise StorageError(f"remove {path}: {e.strerror}", hint=errno_hint(e)) from e
    finally:
        os.close(pfd)


def _remove_dir(pfd: int, name: str) -> None:
    try:
        fd = os.open(name, _NOFOLLOW_DIR, dir_fd=pfd)
    except PermissionError:
        os.chmod(name, 0o700, dir_fd=pfd)
        fd = os.open(name, _NOFOLLOW_DIR, dir_fd=pfd)
    try:
        st = os.fstat(fd)
        if st.st_mode & 0o700 != 0o700:
            try:
                os.fchmod(fd, stat.S_IMODE(st.st_mode) | 0o700)
            except PermissionError:
                pass  # not ours; unlinking may still work (e.g. as namespace-root)
        with os.scandir(fd) as it:
            entries = [(e.name, e.is_dir(follow_symlinks=False)) for e in it]
        for child, is_dir in entries:
            if is_dir:
                _remove_dir(fd, child)
            else:
                os.unlink(child, dir_fd=fd)
    finally:
        os.close(fd)
    os.rmdir(name, dir_fd=pfd)




# --------------------------------------------------------------------------- the store


class LayerStore:
    """Unpacked layers at ``layout.layer(diff_id)``: ``diff/`` (the tree) and ``meta.json``.

    A layer appears by renaming a finished directory from ``tmp/`` into place, so a layer
    directory with a meta.json is complete; a killed pull leaves only a tmp entry, which
    ``cleanup_tmp`` removes once no live process holds its lock.
    """

    def __init__(self, layout: Layout, runner: NamespaceRunner) -> None:
        self.layout = layout
        self.runner = runner

    def path(self, diff_id: str) -> Path:
        return self.layout.layer(check_digest(diff_id)) / "diff"

    def _meta_path(self, diff_id: str) -> Path:
        return self.layout.layer(check_digest(diff_id)) / "meta.json"

    def has(self, diff_id: str) -> bool:
        return self._meta_path(diff_id).is_file()

    def meta(self, diff_id: str) -> dict[str, Any]:
        try:
            data: dict[str, Any] = json.loads(self._meta_path(diff_id).read_bytes())
            return data
        except FileNotFoundError:
            raise NotFoundError(f"layer {diff_id} is not in the store") from None
        except (OSError, ValueError) as e:
            raise StorageError(f"read metadata of layer {diff_id}: {e}",
                               hint="remove the images using it and pull them again") from e

    def _lock(self, diff_id: str) -> FileLock:
        return FileLock(self.layout.locks / f"layer-{check_digest(diff_id).partition(':')[2]}.lock")

    @contextlib.contextmanager
    def _tmp_entry(self, kind: str) -> Iterator[Path]:
        """A fresh directory in tmp/, locked for as long as this process uses it."""
        name = f"{kind}-{os.urandom(8).hex()}"
        lock = FileLock(self.layout.locks / f"tmp-{name}.lock")
        lock.acquire()  # before the directory exists, so cleanup_tmp never sees it unlocked
        path = self.layout.tmp / name
        try:
            self.layout.tmp.mkdir(parents=True, exist_ok=True, mode=0o700)
            path.mkdir(mode=0o700)
            try:
                yield path
            finally:
                if os.path.lexists(path):
                    self._remove_quietly(path)
                if not os.path.lexists(path):
                    _unlink_quietly(lock.path)  # else cleanup_tmp needs it
        finally:
            lock.release()

    def _remove_quietly(self, path: Path) -> None:
        try:
            self.runner.call("storage.layers:remove_tree", path=str(path))
        except Exception:  # noqa: BLE001 - cleanup_tmp retries; the first error is what matters
            pass

    def ensure(self, diff_id: str, blob_digest: str, media_type: str) -> dict[str, Any]:
        """Unpack the layer unless it is already stored; returns its metadata."""
        check_digest(diff_id)
        blob = self.layout.blob(check_digest(blob_digest))
        with self._lock(diff_id):
            if self.has(diff_id):
                return self.meta(diff_id)
            if not blob.is_file():
                raise NotFoundError(f"unpack layer {diff_id}: blob {blob_digest} is not in the store")
            final = self.layout.layer(diff_id)
            with self._tmp_entry("layer") as tmp:
                if os.path.lexists(final):
                    # Left without meta.json by something other than us: not trusted.
                    os.rename(final, tmp)
                    self.runner.call("storage.layers:remove_tree", path=str(tmp))
                    tmp.mkdir(mode=0o700)
                result = self.runner.call("storage.layers:unpack", blob=str(blob), media_type=media_type,
                                          dest=str(tmp / "diff"), expected_diff_id=diff_id)
                meta = {"diff_id": diff_id, "blob": blob_digest, "media_type": media_type,
                        "created": time.time(), **{k: v for k, v in result.items() if k != "diff_id"}}
                write_atomic(tmp / "meta.json", json.dumps(meta, indent=1).encode())
                try:
                    self.layout.layers.mkdir(parents=True, exist_ok=True, mode=0o700)
                    os.rename(tmp, final)
                    fsync_dir(self.layout.layers)
                except OSError as e:
                    raise StorageError(f"store layer {diff_id}: {e.strerror}", hint=errno_hint(e)) from e
            return meta

    @contextlib.contextmanager
    def new_entry(self) -> Iterator[Path]:
        """A fresh tmp/ directory for a layer made here (build, commit): fill its ``diff/``,
        then ``register`` it; whatever is not registered is removed on the way out."""
        with self._tmp_entry("layer") as tmp:
            yield tmp

    def register(self, tmp: Path, diff_id: str, meta: dict[str, Any]) -> dict[str, Any]:
        """Store the finished directory ``tmp`` (from ``new_entry``, holding ``diff/``) as the
        layer ``diff_id``: a rename, no re-extraction. If the store has that layer already,
        it is kept and ``tmp`` is left to ``new_entry`` to remove."""
        check_digest(diff_id)
        with self._lock(diff_id):
            if self.has(diff_id):
                return self.meta(diff_id)
            final = self.layout.layer(diff_id)
            write_atomic(tmp / "meta.json", json.dumps(meta, indent=1).encode())
            try:
                if os.path.lexists(final):
                    # left without meta.json by something other than us: not trusted
                    with self._tmp_entry("rm") as doomed:
                        os.rename(final, doomed / "old")
                        self.runner.call("storage.layers:remove_tree", path=str(doomed / "old"))
                self.layout.layers.mkdir(parents=True, exist_ok=True, mode=0o700)
                os.rename(tmp, final)
                fsync_dir(self.layout.layers)
            except OSError as e:
                raise StorageError(f"store layer {diff_id}: {e.strerror}", hint=errno_hint(e)) from e
            return meta

    def remove(self, diff_id: str) -> None:
        with self._lock(diff_id):
            final = self.layout.layer(diff_id)
            if not os.path.lexists(final):
                raise NotFoundError(f"layer {diff_id} is not in the store")
            with self._tmp_entry("rm") as tmp:
                try:
                    # Gone from the store at once; the slow removal happens out of sight.
                    os.rename(final, tmp)
                except OSError as e:
                    raise StorageError(f"remove layer {diff_id}: {e.strerror}", hint=errno_hint(e)) from e
                self.runner.call("storage.layers:remove_tree", path=str(tmp))

    def list(self) -> list[str]:
        try:
            names = sorted(os.listdir(self.layout.layers))
        except FileNotFoundError:
            return []
        return [f"sha256:{n}" for n in names
                if len(n) == 64 and (self.layout.layers / n / "meta.json").is_file()]

    def cleanup_tmp(self) -> builtins.list[str]:
        """Remove tmp entries left by killed processes; returns their names."""
        removed: builtins.list[str] = []
        try:
            names = sorted(os.listdir(self.layout.tmp))
        except FileNotFoundError:
            return removed
        for name in names:
            if not name.startswith(("layer-", "rm-")):
                continue  # blob partials are resumed, not removed
            lock = FileLock(self.layout.locks / f"tmp-{name}.lock")
            if not lock.acquire(blocking=False):
                continue  # a live process is using it
            try:
                self.runner.call("storage.layers:remove_tree", path=str(self.layout.tmp / name))
                _unlink_quietly(lock.path)
                removed.append(name)
            finally:
                lock.release()
        return removed


def _unlink_quietly(path: Path) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass
