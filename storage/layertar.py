"""Directory → OCI layer tar stream: the one writer for commit, build, push, save and diff.

The source is a stored layer's ``diff/`` or a container's upper directory. Run it as
namespace-root in the store's user namespace (through a NamespaceRunner, like
storage.layers:unpack): there lstat(2) shows owners as the image knows them (0 is the
image's root, not the user's own uid) and every file is readable. An ID the namespace
does not map shows as the overflow ID 65534 and is written as such.

API (small on purpose; everything below is deterministic):

    walk(root)                       → Entry per path, in tar order (for ``diff``: A/C/D)
    walk_union(dirs)                 → the same for the merged view of layer directories
                                       (lowest first; a container's upper dir last), as
                                       overlayfs shows it: what ``export`` writes
    write(root, out)                 → the uncompressed tar into a binary file object;
                                       returns Written(diff_id, size, entries)
    write_layer(src, dest, ...)      → JSON-able entry point for NamespaceRunner.call:
                                       the (optionally compressed) layer into file ``dest``,
                                       returns diff_id, size, digest, compressed_size
    export_union(dirs, dest)         → JSON-able entry point: walk_union's tar into ``dest``

What is written (the image-spec's layer.md "Representing Changes" and what Docker and
containers-storage write, so a layer made here unpacks the same everywhere):
 * depth first, each directory's entries in bytewise name order, parents before
   children; no "./" root entry; directories named "path/";
 * PAX format where needed (long names, xattrs), plain ustar otherwise; integer mtimes
   (sub-second parts dropped, as moby's archive package does), no atime/ctime, empty
   uname/gname, modes with set-ID and sticky bits, numeric owners;
 * xattrs as SCHILY.xattr. records, sorted; the overlay drivers' own xattrs
   (user.overlay.*, trusted.overlay.*, user.fuseoverlayfs.*) are never written;
 * a regular file seen again through another hard link (same device and inode, within
   this tree) becomes a hard-link entry to the first name written; symlinks, FIFOs and
   device nodes as themselves; sockets are skipped (tar cannot hold them);
 * overlay whiteouts become the spec's whiteout files: a 0:0 character device NAME →
   ``.wh.NAME`` (an empty regular file, mode 0600, the device's owner and mtime), a
   directory marked opaque (user.overlay.opaque, trusted.overlay.opaque or
   user.fuseoverlayfs.opaque = "y") → its entry followed by ``DIR/.wh..wh..opq``. A
   store in the "aufs" format (where the unpacker could not mknod) already holds
   ``.wh.`` files; they are written as they are.
Same tree → same bytes → same diff ID. The end is two zero blocks, as Go's archive/tar
writes it (no padding to a 10 KiB record).
"""

from __future__ import annotations

import hashlib
import os
import stat
import tarfile
from collections.abc import Callable, Iterator
from typing import IO, Any, NamedTuple

from rootless.errors import StorageError, errno_hint

_READ = 1 << 20
_BLOCK = tarfile.BLOCKSIZE
_WH = ".wh."
_OPAQUE = ".wh..wh..opq"
_OPAQUE_XATTRS = ("user.overlay.opaque", "trusted.overlay.opaque", "user.fuseoverlayfs.opaque")
# Must match storage.layers._RESERVED_XATTRS: the overlay drivers' metadata, derived
# from whiteout entries on unpack, never carried in a layer.
_RESERVED_XATTRS = ("user.overlay.", "trusted.overlay.", "user.fuseoverlayfs.")
# aufs keeps its own bookkeeping under these names; they are not content.
_AUFS_META = (".wh..wh..plnk", ".wh..wh..orph", ".wh..wh.aufs")


class Entry(NamedTuple):
    """One path of the tree as the layer holds it.

    ``path`` is relative, without a trailing slash. ``kind`` is one of dir, file,
    hardlink, symlink, fifo, char, block, whiteout (``path`` was deleted; header
    ``.wh.NAME``), opaque (the directory ``path`` hides what lower layers hold; header
    ``path/.wh..wh..opq``). ``info`` is the tar header written for it; ``source`` is the
    absolute path of the file whose bytes follow the header (regular files only).
    """

    path: str
    kind: str
    info: tarfile.TarInfo
    source: str | None


class Written(NamedTuple):
    diff_id: str  # sha256 of the uncompressed stream
    size: int  # bytes of the uncompressed stream
    entries: int


def _key(name: str) -> bytes:
    return os.fsencode(name)


def _xattrs(path: str) -> dict[str, bytes]:
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:
        return {}  # ENOTSUP on this file system, or a symlink where user.* is refused
    out = {}
    for name in sorted(names, key=_key):
        try:
            out[name] = os.getxattr(path, name, follow_symlinks=False)
        except OSError:
            continue
    return out


def _header(name: str, st: os.stat_result, tartype: bytes, xattrs: dict[str, bytes]) -> tarfile.TarInfo:
    ti = tarfile.TarInfo(name)
    ti.type = tartype
    ti.mode = stat.S_IMODE(st.st_mode)
    ti.uid, ti.gid = st.st_uid, st.st_gid
    ti.uname = ti.gname = ""
    ti.mtime = int(st.st_mtime)
    ti.size = st.st_size if tartype == tarfile.REGTYPE else 0
    # tarfile writes a value holding surrogates as raw bytes (hdrcharset=BINARY).
    ti.pax_headers = {"SCHILY.xattr." + k: v.decode("utf-8", "surrogateescape")
                      for k, v in xattrs.items() if not k.startswith(_RESERVED_XATTRS)}
    return ti


def walk(root: str | os.PathLike[str]) -> Iterator[Entry]:
    """Every path under ``root`` in the order ``write`` writes it (see the module docstring)."""
    root = os.fspath(root)
    links: dict[tuple[int, int], str] = {}
    yield from _walk_dir(root, "", links)


def _walk_dir(top: str, rel: str, links: dict[tuple[int, int], str]) -> Iterator[Entry]:
    here = os.path.join(top, rel) if rel else top
    with os.scandir(here) as it:
        names = sorted((e.name for e in it), key=_key)
    for name in names:
        path = f"{rel}/{name}" if rel else name
        full = os.path.join(top, path)
        try:
            st = os.lstat(full)
        except FileNotFoundError:
            continue  # removed while we walk (a running container's upper dir)
        mode = st.st_mode
        if stat.S_ISDIR(mode):
            xattrs = _xattrs(full)
            info = _header(path, st, tarfile.DIRTYPE, xattrs)
            yield Entry(path, "dir", info, None)
            if any(xattrs.get(k) == b"y" for k in _OPAQUE_XATTRS):
                wo = tarfile.TarInfo(f"{path}/{_OPAQUE}")
                wo.mode = stat.S_IMODE(mode) & 0o777
                wo.uid, wo.gid, wo.mtime = st.st_uid, st.st_gid, 0
                yield Entry(path, "opaque", wo, None)
            yield from _walk_dir(top, path, links)
        elif stat.S_ISREG(mode) and name.startswith(_WH):
            if name in _AUFS_META:
                continue
            info = _header(path, st, tarfile.REGTYPE, {})
            info.size = 0
            if name == _OPAQUE:
                yield Entry(rel, "opaque", info, None)
            else:
                parent = f"{rel}/" if rel else ""
                yield Entry(parent + name[len(_WH):], "whiteout", info, None)
        elif stat.S_ISCHR(mode) and st.st_rdev == 0:
            # overlayfs(5) "whiteouts and opaque directories": a 0:0 char device hides NAME.
            info = _header(f"{rel}/{_WH}{name}" if rel else _WH + name, st, tarfile.REGTYPE, {})
            info.mode, info.size = 0o600, 0
            yield Entry(path, "whiteout", info, None)
        else:
            entry = _entry(path, full, st, links)
            if entry is not None:
                yield entry


def _entry(path: str, full: str, st: os.stat_result, links: dict[tuple[int, int], str]) -> Entry | None:
    """A regular file (or a hard link to one written before), symlink, device or FIFO;
    None for a socket or anything else tar has no type for."""
    mode = st.st_mode
    if stat.S_ISREG(mode):
        if st.st_nlink > 1:
            first = links.setdefault((st.st_dev, st.st_ino), path)
            if first != path:
                info = _header(path, st, tarfile.LNKTYPE, _xattrs(full))
                info.linkname = first
                return Entry(path, "hardlink", info, None)
        return Entry(path, "file", _header(path, st, tarfile.REGTYPE, _xattrs(full)), full)
    if stat.S_ISLNK(mode):
        info = _header(path, st, tarfile.SYMTYPE, _xattrs(full))
        info.linkname = os.readlink(full)
        return Entry(path, "symlink", info, None)
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        chr_ = stat.S_ISCHR(mode)
        info = _header(path, st, tarfile.CHRTYPE if chr_ else tarfile.BLKTYPE, _xattrs(full))
        info.devmajor, info.devminor = os.major(st.st_rdev), os.minor(st.st_rdev)
        return Entry(path, "char" if chr_ else "block", info, None)
    if stat.S_ISFIFO(mode):
        return Entry(path, "fifo", _header(path, st, tarfile.FIFOTYPE, _xattrs(full)), None)
    return None


class _HashingOut:
    """The destination plus the diff ID and size, updated with every byte written."""

    def __init__(self, write: Callable[[Any], Any]) -> None:
        self._write = write
        self.hash = hashlib.sha256()
        self.size = 0

    def __call__(self, data: bytes | memoryview) -> None:
        self.hash.update(data)
        self.size += len(data)
        self._write(data)


def write(root: str | os.PathLike[str], out: IO[bytes] | Callable[[Any], Any]) -> Written:
    """Write the layer tar of ``root`` to ``out`` (a binary file object, or a function
    taking bytes); returns its diff ID and size, computed while streaming."""
    return write_entries(walk(root), out)


def write_entries(entries_: Iterator[Entry], out: IO[bytes] | Callable[[Any], Any]) -> Written:
    """The tar of these entries (from ``walk`` or ``walk_union``)."""
    sink = _HashingOut(out if callable(out) else out.write)
    entries = 0
    for e in entries_:
        entries += 1
        head = header_bytes(e.info)
        size = e.info.size
        if e.source is None or not size:
            sink(head)
        elif size <= _SMALL:
            sink(head + _small_data(e.source, size))  # one write and one hash update per small file
        else:
            sink(head)
            _copy_data(e.source, size, sink)
    sink(b"\0" * (2 * _BLOCK))
    return Written(f"sha256:{sink.hash.hexdigest()}", sink.size, entries)


_NUL = b"\0"


def header_bytes(info: tarfile.TarInfo) -> bytes:
    """``info.tobuf(PAX_FORMAT, "utf-8", "surrogateescape")``, byte for byte, built directly
    for the common entry a plain ustar header holds (ASCII names that fit, no PAX records,
    numbers in range): tarfile's general path costs more than reading a small file."""
    name = info.name + "/" if info.type == tarfile.DIRTYPE and not info.name.endswith("/") else info.name
    link = info.linkname
    if (info.pax_headers or info.uname or info.gname or not name.isascii() or not link.isascii()
            or len(name) > 100 or len(link) > 100 or not isinstance(info.mtime, int)
            or not (0 <= info.uid < 0o7777777 and 0 <= info.gid < 0o7777777 and 0 <= info.size < 0o77777777777
                    and 0 <= info.mtime < 0o77777777777)):
        return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")
    if info.type in (tarfile.CHRTYPE, tarfile.BLKTYPE):
        dev = b"%07o\0%07o\0" % (info.devmajor, info.devminor)
    else:
        dev = _NUL * 16
    head = b"".join((name.encode().ljust(100, _NUL), b"%07o\0" % (info.mode & 0o7777), b"%07o\0" % info.uid,
                     b"%07o\0" % info.gid, b"%011o\0" % info.size, b"%011o\0" % info.mtime, b"        ", info.type,
                     link.encode().ljust(100, _NUL), tarfile.POSIX_MAGIC, _NUL * 64, dev, _NUL * 167))
    # the checksum: the sum of the header's bytes with its own field as spaces (POSIX ustar)
    return head[:148] + b"%06o\0" % sum(head) + head[155:]


_SMALL = 64 << 10


def _small_data(path: str, size: int) -> bytes:
    """_copy_data's bytes for a small file, as one string."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as e:
        raise StorageError(f"write layer: open {path}: {e.strerror}", hint=errno_hint(e)) from e
    try:
        data = os.read(fd, size)
        while len(data) < size:
            more = os.read(fd, size - len(data))
            if not more:
                break
            data += more
    finally:
        os.close(fd)
    return data + _NUL * (size - len(data) + (-size % _BLOCK))


def _copy_data(path: str, size: int, sink: _HashingOut) -> None:
    """Exactly ``size`` bytes of ``path`` plus padding: the header is already out, so a file
    that shrank meanwhile is padded with zeros and one that grew is cut."""
    left = size
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as e:
        raise StorageError(f"write layer: open {path}: {e.strerror}", hint=errno_hint(e)) from e
    try:
        while left:
            chunk = os.read(fd, min(left, _READ))
            if not chunk:
                break
            sink(chunk)
            left -= len(chunk)
    finally:
        os.close(fd)
    pad = left + (-size % _BLOCK)
    if pad:
        sink(b"\0" * pad)


def write_layer(src: str, dest: str, compression: str = "none", level: int | None = None) -> dict[str, Any]:
    """Write the layer of directory ``src`` to the new file ``dest`` (NamespaceRunner entry point).

    ``compression`` is none, gzip or zstd (storage.compress). Returns ``diff_id`` and
    ``size`` (uncompressed), ``digest`` and ``compressed_size`` (of the file written).
    ``dest`` is created exclusively; on failure it is removed.
    """
    from storage import compress

    try:
        fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except OSError as e:
        raise StorageError(f"write layer {dest}: {e.strerror}", hint=errno_hint(e)) from e
    try:
        with os.fdopen(fd, "wb", buffering=0) as raw:
            hashed = compress.HashingFile(raw)
            with compress.writer(hashed, compression, level) as w:
                written = write(src, w)
    except BaseException as e:
        try:
            os.unlink(dest)
        except OSError:
            pass
        if isinstance(e, OSError):
            raise StorageError(f"write layer of {src}: {e.strerror or e}", hint=errno_hint(e)) from e
        raise
    return {"diff_id": written.diff_id, "size": written.size, "entries": written.entries,
            "digest": hashed.digest(), "compressed_size": hashed.size, "compression": compression}


# --------------------------------------------------------------------------- the merged view


def _is_whiteout(st: os.stat_result, name: str) -> bool:
    return (stat.S_ISCHR(st.st_mode) and st.st_rdev == 0) or (name.startswith(_WH) and stat.S_ISREG(st.st_mode))


def _opaque(path: str) -> bool:
    if os.path.lexists(os.path.join(path, _OPAQUE)):
        return True
    for k in _OPAQUE_XATTRS:
        try:
            if os.getxattr(path, k, follow_symlinks=False) == b"y":
                return True
        except OSError:
            continue
    return False


def walk_union(dirs: list[str]) -> Iterator[Entry]:
    """The merged tree of layer directories ``dirs`` (lowest first), in ``walk``'s order and
    with its headers, but flattened: no whiteouts (overlayfs(5): a whiteout hides the name
    in every lower layer; an opaque directory hides the lower layers' entries beneath it)."""
    links: dict[tuple[int, int], str] = {}
    yield from _union_dir(list(reversed(dirs)), "", links)


def _union_dir(layers: list[str], rel: str, links: dict[tuple[int, int], str]) -> Iterator[Entry]:
    """``layers`` top first, from the one whose directory ``rel`` is shown downwards."""
    found: dict[str, tuple[int, os.stat_result]] = {}
    hidden: set[str] = set()
    for i, top in enumerate(layers):
        here = os.path.join(top, rel) if rel else top
        try:
            st = os.lstat(here)
        except FileNotFoundError:
            continue
        if not stat.S_ISDIR(st.st_mode):
            break  # replaced by a non-directory in this layer: nothing lower shows
        with os.scandir(here) as it:
            names = [e.name for e in it]
        for name in names:
            if name.startswith(_WH):
                if name not in _AUFS_META and name != _OPAQUE:
                    hidden.add(name[len(_WH):])
                continue
            if name in found or name in hidden:
                continue
            est = os.lstat(os.path.join(here, name))
            if _is_whiteout(est, name):
                hidden.add(name)
                continue
            found[name] = (i, est)
        if _opaque(here):
            break
    for name in sorted(found, key=_key):
        i, st = found[name]
        path = f"{rel}/{name}" if rel else name
        full = os.path.join(layers[i], path)
        if stat.S_ISDIR(st.st_mode):
            yield Entry(path, "dir", _header(path, st, tarfile.DIRTYPE, _xattrs(full)), None)
            yield from _union_dir(layers[i:], path, links)
            continue
        entry = _entry(path, full, st, links)
        if entry is not None:
            yield entry


def export_union(dirs: list[str], dest: str) -> dict[str, Any]:
    """``walk_union(dirs)`` as a plain tar into the new file ``dest`` (NamespaceRunner entry point)."""
    try:
        fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except OSError as e:
        raise StorageError(f"export to {dest}: {e.strerror}", hint=errno_hint(e)) from e
    try:
        with os.fdopen(fd, "wb") as f:
            written = write_entries(walk_union(dirs), f)
    except BaseException as e:
        try:
            os.unlink(dest)
        except OSError:
            pass
        if isinstance(e, OSError):
            raise StorageError(f"export: {e.strerror or e}", hint=errno_hint(e)) from e
        raise
    return {"diff_id": written.diff_id, "size": written.size, "entries": written.entries}
