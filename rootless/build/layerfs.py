"""Namespace-root side of a build step: writing COPY/ADD/WORKDIR straight into a new layer.

Called through a NamespaceRunner ("rootless.build.layerfs:copy"), as root of the store's
user namespace, so owners are written exactly (``--chown``, default 0:0) without a
container. Imports only the stdlib, rootless.errors and storage's stdlib-only modules.

The new layer sits above the image's layers; a path is looked up through them as overlayfs
merges them (overlayfs(5): a 0:0 character device or ``.wh.NAME`` hides NAME below, an
opaque directory hides everything below it), so a destination under a symlink of the
image (``/bin`` → ``usr/bin`` on merged-/usr systems) lands where the link points, and a
parent directory the layer must hold keeps the owner and mode the image gives it. Nothing
is resolved through a symlink on the host: every destination stays inside the layer.
"""

from __future__ import annotations

import errno
import os
import posixpath
import stat
from collections.abc import Sequence
from typing import Any

from rootless.errors import RootlessError, StorageError, errno_hint

_WH = ".wh."
_OPAQUE = ".wh..wh..opq"
_OPAQUE_XATTRS = ("user.overlay.opaque", "trusted.overlay.opaque", "user.fuseoverlayfs.opaque")
_AUFS_META = (".wh..wh..plnk", ".wh..wh..orph", ".wh..wh.aufs")  # aufs's bookkeeping, not content
_MAX_LINKS = 40


def _is_whiteout(st: os.stat_result) -> bool:
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def _opaque(path: str) -> bool:
    if os.path.lexists(os.path.join(path, _OPAQUE)):
        return True
    for name in _OPAQUE_XATTRS:
        try:
            if os.getxattr(path, name, follow_symlinks=False) == b"y":
                return True
        except OSError:
            continue
    return False


class View:
    """The union of ``layers`` (top-most first) as overlayfs would show it, read-only."""

    def __init__(self, layers: Sequence[str]) -> None:
        self.layers = list(layers)

    def lookup(self, rel: str) -> tuple[str, os.stat_result] | None:
        """(host path, lstat) of the image path ``rel`` (no leading "/"), None if absent."""
        comps = [c for c in rel.split("/") if c]
        if not self.layers:
            return None
        if not comps:
            return self.layers[0], os.lstat(self.layers[0])
        for layer in self.layers:
            p = os.path.join(layer, *comps)
            try:
                st = os.lstat(p)
            except (FileNotFoundError, NotADirectoryError):
                st = None
            if st is not None:
                return (None if _is_whiteout(st) else (p, st))  # type: ignore[return-value]
            if self._hides(layer, comps):
                return None
        return None

    @staticmethod
    def _hides(layer: str, comps: list[str]) -> bool:
        parent = layer
        for k, name in enumerate(comps):
            if os.path.lexists(os.path.join(parent, _WH + name)):
                return True
            p = os.path.join(parent, name)
            try:
                st = os.lstat(p)
            except (FileNotFoundError, NotADirectoryError):
                return False
            if _is_whiteout(st) or not stat.S_ISDIR(st.st_mode):
                return True
            if k < len(comps) - 1 and _opaque(p):
                return True
            parent = p
        return False

    def resolve(self, path: str) -> str:
        """``path`` with every symlink of the image followed, as if the union were "/"."""
        todo = [c for c in path.split("/") if c not in ("", ".")]
        todo.reverse()
        done: list[str] = []
        links = 0
        while todo:
            c = todo.pop()
            if c == "..":
                if done:
                    done.pop()
                continue
            found = self.lookup("/".join(done + [c]))
            if found is not None and stat.S_ISLNK(found[1].st_mode):
                links += 1
                if links > _MAX_LINKS:
                    raise StorageError(f"too many levels of symbolic links in {path}")
                target = os.readlink(found[0])
                if target.startswith("/"):
                    done = []
                todo.extend(reversed([t for t in target.split("/") if t not in ("", ".")]))
                continue
            done.append(c)
        return "/".join(done)


def _copy_attrs(st: os.stat_result, dst: str, *, uid: int | None = None, gid: int | None = None,
                mode: int | None = None) -> None:
    os.chown(dst, st.st_uid if uid is None else uid, st.st_gid if gid is None else gid, follow_symlinks=False)
    if not stat.S_ISLNK(st.st_mode):
        os.chmod(dst, stat.S_IMODE(st.st_mode) if mode is None else mode)
    os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)


def ensure_dir(layer: str, view: View, rel: str, *, uid: int = 0, gid: int = 0, mode: int = 0o755) -> str:
    """Make the image directory ``rel`` (resolved, no symlinks) exist in the new layer.

    Directories the image already has are made with its attributes, so the layer changes
    nothing about them; missing ones get ``uid``/``gid``/``mode``. Returns the host path.
    """
    comps = [c for c in rel.split("/") if c]
    cur = layer
    for k, c in enumerate(comps):
        nxt = os.path.join(cur, c)
        try:
            st = os.lstat(nxt)
        except FileNotFoundError:
            st = None
        if st is not None and stat.S_ISDIR(st.st_mode):
            cur = nxt
            continue
        if st is not None:
            os.unlink(nxt)  # a file or whiteout of this layer's own making
        below = view.lookup("/".join(comps[:k + 1]))
        os.mkdir(nxt, 0o700)
        if below is not None and stat.S_ISDIR(below[1].st_mode):
            _copy_attrs(below[1], nxt)
        elif below is not None:
            raise StorageError(f"/{'/'.join(comps[:k + 1])} is not a directory in the image",
                               hint="choose a destination whose parents are directories")
        else:
            os.chown(nxt, uid, gid)
            os.chmod(nxt, mode)
        cur = nxt
    return cur


def _place(dst: str) -> None:
    """Clear ``dst`` for a new entry (an earlier entry of this layer, not a directory)."""
    try:
        st = os.lstat(dst)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        raise StorageError(f"cannot overwrite the directory {dst} with a file")
    os.unlink(dst)


def _copy_file(src: str, st: os.stat_result, dst: str, attrs: tuple[int, int, int] | None = None) -> None:
    """A file, symlink or FIFO ``src`` recreated at ``dst``; with ``attrs`` (uid, gid, mode) a
    regular file also gets those and ``st``'s times through its descriptor, as _copy_attrs
    would set them by path (owner first: chown(2) clears set-ID bits)."""
    if stat.S_ISREG(st.st_mode) and attrs is not None:
        try:
            _copy_regular(src, st, dst, attrs)
        except FileExistsError:  # an earlier source of this COPY wrote that name
            _place(dst)
            _copy_regular(src, st, dst, attrs)
        return
    _place(dst)
    if stat.S_ISLNK(st.st_mode):
        os.symlink(os.readlink(src), dst)
        return
    if stat.S_ISFIFO(st.st_mode):
        os.mkfifo(dst, 0o600)
        return
    if not stat.S_ISREG(st.st_mode):
        return  # sockets and devices are not content
    _copy_regular(src, st, dst, None)


def _copy_regular(src: str, st: os.stat_result, dst: str, attrs: tuple[int, int, int] | None) -> None:
    fin = os.open(src, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        fout = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            left = st.st_size
            while left > 0:
                try:
                    n = os.copy_file_range(fin, fout, min(left, 1 << 30))
                except OSError as e:
                    if e.errno not in (errno.EXDEV, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL):
                        raise
                    n = 0
                if n == 0:
                    while chunk := os.read(fin, 1 << 20):
                        view = memoryview(chunk)
                        while view:
                            view = view[os.write(fout, view):]
                    break
                left -= n
            if attrs is not None:
                os.fchown(fout, attrs[0], attrs[1])
                os.fchmod(fout, attrs[2])
                os.utime(fout, ns=(st.st_atime_ns, st.st_mtime_ns))
        finally:
            os.close(fout)
    finally:
        os.close(fin)


class _Reuse:
    """A COPY's unchanged files taken from the same step's previous layer by a hard link.

    Stored layers are never written again (overlayfs(5) keeps lower layers read-only; the
    vfs driver copies them), so a file of the previous layer may be shared with the new one
    when it is what the copy would write: the same content (the source's digest now), size,
    mtime, mode and owner as the previous copy recorded for that path. Anything else is
    copied. ``index`` records the new layer's files for the next build: path in the layer →
    "digest:size:mtime_ns:mode:uid:gid"."""

    def __init__(self, layer: str, prev: str | None, known: dict[str, str] | None,
                 digests: dict[str, str] | None) -> None:
        self.layer = layer
        self.prev = prev
        self.known = known or {}
        self.digests = digests or {}
        self.index: dict[str, str] = {}
        self.linked = 0
        self._cut = len(os.path.join(layer, ""))

    def place(self, src: str, st: os.stat_result, target: str, owner: tuple[int, int] | None,
              mode: int | None) -> None:
        digest = self.digests.get(src) if stat.S_ISREG(st.st_mode) else None
        if digest is not None:
            rel = target[self._cut:]  # every target is a path under the layer, made by joining
            uid, gid = owner if owner is not None else (st.st_uid, st.st_gid)
            # what the layer's file will be: content, size, mtime, mode, owner
            sig = f"{digest}:{st.st_size}:{st.st_mtime_ns}:{stat.S_IMODE(st.st_mode) if mode is None else mode}" \
                  f":{uid}:{gid}"
            self.index[rel] = sig
            if self.prev is not None and self.known.get(rel) == sig and self._link(rel, target):
                return
        if stat.S_ISREG(st.st_mode):
            uid, gid = owner if owner is not None else (st.st_uid, st.st_gid)
            _copy_file(src, st, target, (uid, gid, stat.S_IMODE(st.st_mode) if mode is None else mode))
            return
        _copy_file(src, st, target)
        _finish(target, st, owner, mode)

    def _link(self, rel: str, target: str) -> bool:
        if self.prev is None or rel.startswith("/") or "/../" in f"/{rel}/":
            return False
        old = os.path.join(self.prev, rel)
        try:
            try:
                os.link(old, target, follow_symlinks=False)
            except FileExistsError:  # an earlier source of this COPY wrote that name
                _place(target)
                os.link(old, target, follow_symlinks=False)
        except OSError as e:
            if e.errno in (errno.EMLINK, errno.EXDEV, errno.EPERM, errno.EACCES, errno.ENOENT):
                return False  # too many links, a store the kernel will not link in, gone: copy
            raise
        self.linked += 1
        return True


def _copy_tree(src: str, dst: str, skip: set[str], sub: str, owner: tuple[int, int] | None,
               mode: int | None, dirs: list[tuple[str, os.stat_result]], reuse: _Reuse) -> int:
    count = 0
    with os.scandir(src) as it:
        entries = sorted(it, key=lambda e: e.name)
    for e in entries:
        csub = f"{sub}/{e.name}" if sub else e.name
        if csub in skip:
            continue
        st = e.stat(follow_symlinks=False)
        target = os.path.join(dst, e.name)
        if stat.S_ISDIR(st.st_mode):
            try:
                if not stat.S_ISDIR(os.lstat(target).st_mode):
                    os.unlink(target)
                    os.mkdir(target, 0o700)
            except FileNotFoundError:
                os.mkdir(target, 0o700)
            count += _copy_tree(e.path, target, skip, csub, owner, mode, dirs, reuse)
            dirs.append((target, st))
        else:
            reuse.place(e.path, st, target, owner, mode)
        count += 1
    return count


def _finish(dst: str, st: os.stat_result, owner: tuple[int, int] | None, mode: int | None) -> None:
    """Owner (``--chown``, else the source's as the namespace sees it: the user's own files are
    0:0 there, as Docker's COPY makes them), mode (``--chmod`` or the source's) and times."""
    uid, gid = owner if owner is not None else (st.st_uid, st.st_gid)
    _copy_attrs(st, dst, uid=uid, gid=gid, mode=mode)


def copy(layer: str, lowers: list[str], items: list[dict[str, Any]], chown: list[int] | None = None,
         chmod: int | None = None, digests: dict[str, str] | None = None, prev: str | None = None,
         known: dict[str, str] | None = None) -> dict[str, Any]:
    """Copy ``items`` into the new layer ``layer`` (lowers: the image's layers, top first).

    Each item: ``src`` (host path), ``dest`` (absolute image path of the file or directory
    to write), ``contents`` (a directory source: copy what it holds into ``dest``), ``skip``
    (paths under it the ignore file excludes), ``data`` (instead of ``src``: the text of a
    heredoc). ``digests`` (host path → content digest of the sources' files), ``prev`` (the
    same step's previous layer directory) and ``known`` (its index) let unchanged files be
    linked rather than copied (_Reuse). Returns counts and the new layer's index.
    """
    reuse = _Reuse(layer, prev, known, digests)
    view = View([layer, *lowers])
    owner = (chown[0], chown[1]) if chown else None
    uid, gid = owner if owner is not None else (0, 0)
    count = 0
    current = ""
    try:
        for item in items:
            current = item.get("src") or item["dest"]
            dest = view.resolve(item["dest"])
            parent, name = posixpath.split(dest)
            # missing parents take the --chown owner, as Buildah makes them
            pdir = ensure_dir(layer, view, parent, uid=uid, gid=gid)
            if not name:
                raise StorageError(f"cannot copy to {item['dest']}: it is the root directory")
            target = os.path.join(pdir, name)
            if "data" in item:
                _place(target)
                fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
                try:
                    os.write(fd, item["data"].encode())
                finally:
                    os.close(fd)
                os.chown(target, uid, gid)
                os.chmod(target, 0o644 if chmod is None else chmod)
                count += 1
                continue
            if "union" in item:
                count += _copy_union(layer, view, item, owner, chmod)
                continue
            st = os.lstat(item["src"])
            if item.get("contents"):
                existed = View(lowers).lookup(dest) is not None
                ensure_dir(layer, view, dest, uid=uid, gid=gid, mode=stat.S_IMODE(st.st_mode))
                dirs: list[tuple[str, os.stat_result]] = []
                count += _copy_tree(item["src"], target, set(item.get("skip") or ()), "", owner, chmod, dirs,
                                    reuse)
                for d, dst_st in dirs:  # deepest first: writing into a directory changes its mtime
                    _finish(d, dst_st, owner, chmod)
                if not existed:
                    # the destination made for the contents keeps the source directory's mode:
                    # --chmod is for what is copied, as with Buildah
                    _finish(target, st, owner, None)
            else:
                reuse.place(item["src"], st, target, owner, chmod)
                count += 1
    except RootlessError:
        raise
    except OSError as e:
        raise StorageError(f"copy {e.filename or current} into the new layer: {e.strerror or e}",
                           hint=errno_hint(e)) from e
    return {"files": count, "linked": reuse.linked, "index": reuse.index}


def mkdirs(layer: str, lowers: list[str], path: str, chown: list[int] | None = None) -> bool:
    """WORKDIR: make ``path`` in the new layer when the image lacks it; False if it was there."""
    view = View([layer, *lowers])
    dest = view.resolve(path)
    found = view.lookup(dest)
    if found is not None and stat.S_ISDIR(found[1].st_mode):
        return False
    uid, gid = (chown[0], chown[1]) if chown else (0, 0)
    try:
        ensure_dir(layer, view, dest, uid=uid, gid=gid)
    except OSError as e:
        raise StorageError(f"create the working directory {path}: {e.strerror}", hint=errno_hint(e)) from e
    return True


def lookup_ids(lowers: list[str], user: str, group: str | None) -> list[int]:
    """``--chown`` names → numeric IDs through the image's /etc/passwd and /etc/group."""
    view = View(lowers)

    def table(path: str, name: str, what: str) -> int:
        if name.isdigit():
            return int(name)
        found = view.lookup(view.resolve(path))
        if found is not None and stat.S_ISREG(found[1].st_mode):
            with open(found[0], encoding="utf-8", errors="replace") as f:
                for line in f:
                    fields = line.rstrip("\n").split(":")
                    if len(fields) > 3 and fields[0] == name:
                        return int(fields[2])
        raise StorageError(f"--chown: no {what} named {name!r} in the image's /{path}",
                           hint=f"use a numeric ID or add the {what} first")

    uid = table("etc/passwd", user, "user")
    if group is None:
        if user.isdigit():
            gid = uid
        else:
            found = view.lookup(view.resolve("etc/passwd"))
            gid = uid
            if found is not None:
                with open(found[0], encoding="utf-8", errors="replace") as f:
                    for line in f:
                        fields = line.rstrip("\n").split(":")
                        if len(fields) > 3 and fields[0] == user:
                            gid = int(fields[3])
    else:
        gid = table("etc/group", group, "group")
    return [uid, gid]


def exists(lowers: list[str], paths: list[str]) -> list[bool]:
    """Whether each image path exists (used to clean up mount points a RUN left behind)."""
    view = View(lowers)
    return [view.lookup(view.resolve(p)) is not None for p in paths]


def remove_created(upper: str, paths: list[str]) -> None:
    """Remove the empty mount points the runtime made in ``upper`` for a RUN (they were not
    in the image and are not the command's doing)."""
    for p in paths:
        full = os.path.join(upper, p.lstrip("/"))
        try:
            st = os.lstat(full)
        except (FileNotFoundError, NotADirectoryError):
            continue
        try:
            if stat.S_ISDIR(st.st_mode):
                os.rmdir(full)
            elif stat.S_ISREG(st.st_mode) and st.st_size == 0:
                os.unlink(full)
        except OSError:
            continue


def _union_names(view: View, rel: str) -> list[str]:
    """The names the union shows in its directory ``rel``."""
    comps = [c for c in rel.split("/") if c]
    seen: set[str] = set()
    hidden: set[str] = set()
    for layer in view.layers:
        p = os.path.join(layer, *comps)
        try:
            st = os.lstat(p)
        except (FileNotFoundError, NotADirectoryError):
            if View._hides(layer, comps):
                break
            continue
        if not stat.S_ISDIR(st.st_mode):
            break
        with os.scandir(p) as it:
            for e in it:
                if e.name == _OPAQUE:
                    continue
                if e.name.startswith(_WH):
                    hidden.add(e.name[len(_WH):])
                    continue
                if e.name in seen or e.name in hidden:
                    continue
                if e.is_file(follow_symlinks=False) is False and _is_whiteout(e.stat(follow_symlinks=False)):
                    hidden.add(e.name)
                    continue
                seen.add(e.name)
        if _opaque(p):
            break
    return sorted(seen)


def _copy_union(layer: str, view: View, item: dict[str, Any], owner: tuple[int, int] | None,
                mode: int | None) -> int:
    """COPY --from: a path of another stage or image (the union of its layers) into the layer."""
    src_view = View(item["union"])
    rel = src_view.resolve(item["path"])
    found = src_view.lookup(rel)
    if found is None:
        raise StorageError(f"COPY --from: {item['path']} does not exist in the source stage or image",
                           hint="check the path inside that stage")
    dest = view.resolve(item["dest"])
    st = found[1]
    if not stat.S_ISDIR(st.st_mode):
        if item.get("dest_dir"):
            dest = posixpath.join(dest, posixpath.basename(rel))
        parent, name = posixpath.split(dest)
        target = os.path.join(ensure_dir(layer, view, parent), name)
        _copy_file(found[0], st, target)
        _finish(target, st, owner, mode)
        return 1
    existed = view.lookup(dest) is not None
    target = ensure_dir(layer, view, dest, mode=stat.S_IMODE(st.st_mode))
    dirs: list[tuple[str, os.stat_result]] = []
    count = _copy_union_dir(src_view, rel, target, owner, mode, dirs)
    for d, dst_st in dirs:
        _finish(d, dst_st, owner, mode)
    if not existed:
        _finish(target, st, owner, mode)
    return count


def _copy_union_dir(src_view: View, rel: str, dst: str, owner: tuple[int, int] | None, mode: int | None,
                    dirs: list[tuple[str, os.stat_result]]) -> int:
    count = 0
    for name in _union_names(src_view, rel):
        crel = f"{rel}/{name}" if rel else name
        found = src_view.lookup(crel)
        if found is None:
            continue
        path, st = found
        target = os.path.join(dst, name)
        if stat.S_ISDIR(st.st_mode):
            if not os.path.isdir(target) or os.path.islink(target):
                _place(target)
                os.mkdir(target, 0o700)
            count += _copy_union_dir(src_view, crel, target, owner, mode, dirs)
            dirs.append((target, st))
        else:
            _copy_file(path, st, target)
            _finish(target, st, owner, mode)
        count += 1
    return count


def materialize(union: list[str], path: str, dest: str) -> str:
    """RUN --mount=type=bind,from=: the file or directory ``path`` of a stage or image (the
    union of its layers, top first) copied, owners and modes kept, into the fresh directory
    ``dest``; returns the host path to bind."""
    src_view = View(union)
    if src_view.lookup(src_view.resolve(path)) is None:
        raise StorageError(f"{path} does not exist in that stage or image", hint="check the source= path")
    try:
        _copy_union(dest, View([dest]), {"union": union, "path": path, "dest": "/mount", "dest_dir": False},
                    None, None)
    except OSError as e:
        raise StorageError(f"copy {path}: {e.strerror or e}", hint=errno_hint(e)) from e
    return os.path.join(dest, "mount")


def extract(layer: str, lowers: list[str], archive: str, dest: str) -> dict[str, Any]:
    """ADD of a local tar (plain, gzip, bzip2, xz or zstd): unpacked into ``dest`` with the
    store's own unpacker (storage.layers: nothing lands outside ``dest``)."""
    import bz2
    import lzma
    import shutil
    import tempfile

    from storage.layers import unpack

    view = View([layer, *lowers])
    target = ensure_dir(layer, view, view.resolve(dest))
    with open(archive, "rb") as f:
        head = f.read(6)
    opener = bz2.open if head[:3] == b"BZh" else lzma.open if head == b"\xfd7zXZ\x00" else None
    tmp = None
    try:
        blob = archive
        if opener is not None:
            fd, tmp = tempfile.mkstemp(dir=os.path.dirname(layer), prefix="add-")
            with os.fdopen(fd, "wb") as out, opener(archive, "rb") as inp:  # type: ignore[operator]
                shutil.copyfileobj(inp, out, 1 << 20)
            blob = tmp
        return unpack(blob, "", target)
    finally:
        if tmp is not None:
            os.unlink(tmp)


def seal(path: str, own: bool = False) -> dict[str, Any]:
    """A finished layer directory (a container's upper dir, or one written above) made into
    the store's format, and its diff ID.

    The overlay drivers' bookkeeping goes: fuse-overlayfs's and the trusted.* opaque marks
    become ``user.overlay.opaque`` (what kernel overlayfs reads with ``userxattr``), other
    private xattrs (origin, impure, redirect) are dropped, and ``.wh.`` files a driver wrote
    where mknod(2) failed become 0:0 character devices where it succeeds. Walks only this
    layer. ``own``: a layer COPY wrote, which holds no driver's bookkeeping: only its tar is
    made.
    """
    from storage import layertar

    fmt = "overlay"
    for dirpath, dirnames, filenames in os.walk(path) if not own else ():
        for name in [None, *filenames, *dirnames]:
            p = dirpath if name is None else os.path.join(dirpath, name)
            try:
                attrs = os.listxattr(p, follow_symlinks=False)
            except OSError:
                attrs = []
            for a in attrs:
                if not a.startswith(("user.overlay.", "trusted.overlay.", "user.fuseoverlayfs.")):
                    continue
                if a in _OPAQUE_XATTRS and a != "user.overlay.opaque":
                    try:
                        if os.getxattr(p, a, follow_symlinks=False) == b"y":
                            os.setxattr(p, "user.overlay.opaque", b"y", follow_symlinks=False)
                    except OSError:
                        pass
                if a != "user.overlay.opaque":
                    try:
                        os.removexattr(p, a, follow_symlinks=False)
                    except OSError:
                        pass
            if name is not None and name.startswith(_WH) and name != _OPAQUE and name in filenames:
                hidden = os.path.join(dirpath, name[len(_WH):])
                try:
                    os.mknod(hidden, stat.S_IFCHR | 0o600, 0)
                    os.unlink(p)
                except OSError:
                    fmt = "aufs"
    written = layertar.write(path, lambda _data: None)
    return {"diff_id": written.diff_id, "size": written.size, "whiteout_format": fmt}


def vfs_diff(rootfs: str, lowers: list[str], dest: str, move: bool = True) -> None:
    """The vfs driver's RUN layer: what differs between the container's full copy ``rootfs`` and
    the image's layers, by metadata (type, mode, owner, size, mtime, link target), moved
    into ``dest``; what the command deleted becomes a whiteout. The container is discarded
    afterwards, so changed files are moved, not copied (``move=False``: copied, for commit
    of a container that lives on)."""
    view = View(lowers)
    dirs: list[tuple[str, os.stat_result]] = []
    _diff_dir(view, rootfs, dest, "", dirs, _move if move else _copy)
    for d, st in reversed(dirs):
        _copy_attrs(st, d)


def _same(st: os.stat_result, path: str, below: tuple[str, os.stat_result]) -> bool:
    b = below[1]
    if (stat.S_IFMT(st.st_mode), st.st_mode, st.st_uid, st.st_gid) != \
            (stat.S_IFMT(b.st_mode), b.st_mode, b.st_uid, b.st_gid):
        return False
    if stat.S_ISDIR(st.st_mode):
        return True
    if st.st_size != b.st_size or st.st_mtime_ns != b.st_mtime_ns:
        return False
    return not stat.S_ISLNK(st.st_mode) or os.readlink(path) == os.readlink(below[0])


def _move(src: str, dst: str) -> None:
    os.rename(src, dst)


def _copy(src: str, dst: str) -> None:
    st = os.lstat(src)
    _copy_file(src, st, dst)
    _copy_attrs(st, dst)


def _diff_dir(view: View, root: str, dest: str, rel: str, dirs: list[tuple[str, os.stat_result]],
              take: Any) -> None:
    here = os.path.join(root, rel) if rel else root
    names = sorted(os.listdir(here))
    present = set(names)

    def out_dir() -> str:
        d = os.path.join(dest, rel) if rel else dest
        if not os.path.isdir(d):
            parent = os.path.dirname(rel)
            if rel:
                out_dir_for(parent)
            os.mkdir(d, 0o700)
            dirs.append((d, os.lstat(here)))
        return d

    def out_dir_for(r: str) -> None:
        d = os.path.join(dest, r) if r else dest
        if os.path.isdir(d):
            return
        if r:
            out_dir_for(os.path.dirname(r))
        os.mkdir(d, 0o700)
        dirs.append((d, os.lstat(os.path.join(root, r) if r else root)))

    for gone in _union_names(view, rel) if (not rel or view.lookup(rel) is not None) else []:
        if gone not in present:
            os.mknod(os.path.join(out_dir(), gone), stat.S_IFCHR | 0o600, 0)
    for name in names:
        crel = f"{rel}/{name}" if rel else name
        p = os.path.join(here, name)
        st = os.lstat(p)
        below = view.lookup(crel)
        if stat.S_ISDIR(st.st_mode):
            if below is not None and not stat.S_ISDIR(below[1].st_mode):
                below = None
            if below is None or not _same(st, p, below):
                out_dir_for(crel)
            if below is not None:
                _diff_dir(view, root, dest, crel, dirs, take)
            else:
                _diff_new(root, dest, crel, dirs, take)
            continue
        if below is not None and _same(st, p, below):
            continue
        take(p, os.path.join(out_dir(), name))


def _diff_new(root: str, dest: str, rel: str, dirs: list[tuple[str, os.stat_result]], take: Any) -> None:
    """A directory the image did not have: all of it is new."""
    d = os.path.join(dest, rel)
    if not os.path.isdir(d):
        os.mkdir(d, 0o700)
        dirs.append((d, os.lstat(os.path.join(root, rel))))
    for name in sorted(os.listdir(os.path.join(root, rel))):
        p = os.path.join(root, rel, name)
        if stat.S_ISDIR(os.lstat(p).st_mode):
            _diff_new(root, dest, f"{rel}/{name}", dirs, take)
        else:
            take(p, os.path.join(d, name))


def copy_upper(src: str, dest: str) -> None:
    """commit: a running or stopped container's upper directory copied as it is (whiteouts,
    opaque marks, owners, modes, times and xattrs kept) into the new layer ``dest``."""
    import subprocess

    os.mkdir(dest, 0o755)
    r = subprocess.run(["cp", "-a", "--", f"{src}/.", dest], capture_output=True, text=True)
    if r.returncode != 0:
        raise StorageError(f"copy the container layer {src}: {r.stderr.strip().splitlines()[-1:] or r.returncode}")


def squash(layers: list[str], lowers: list[str], dest: str) -> dict[str, int]:
    """`build --squash`: the new layers ``layers`` (directories, lowest first) merged into the one
    layer ``dest`` that shows the same tree above the base image's ``lowers`` (top first).

    Each layer is applied over what the ones below it made, as overlayfs(5) stacks them: a
    whiteout removes the name (and stays a whiteout only where the base has that name), an
    opaque directory replaces what is below it, anything else replaces the entry of that name.
    A directory that takes the place of a name the base has but an earlier new layer deleted
    becomes opaque, so the base's entries stay hidden. Regular files are hard links to the
    layers' own (stored layers are never written again); times and modes of directories are
    the top-most layer's."""
    base = View(lowers)
    dirs: dict[str, os.stat_result] = {}
    counts = {"entries": 0}
    try:
        for layer in layers:
            _squash_dir(layer, "", dest, base, dirs, counts)
        for d in sorted(dirs, key=lambda p: -p.count("/")):
            target = os.path.join(dest, d) if d else dest
            if os.path.isdir(target) and not os.path.islink(target):  # not deleted by a later layer
                _copy_attrs(dirs[d], target)
    except OSError as e:
        raise StorageError(f"squash the build's layers: {e.strerror or e}" + (f": {e.filename}" if e.filename else ""),
                           hint=errno_hint(e)) from e
    return counts


def _remove(path: str) -> None:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        import shutil

        shutil.rmtree(path)
    else:
        os.unlink(path)


def _whiteout(dest: str, name: str) -> None:
    """An overlay whiteout (a 0:0 character device); a ``.wh.`` file where mknod is refused."""
    try:
        os.mknod(os.path.join(dest, name), stat.S_IFCHR | 0o600, 0)
    except OSError:
        with open(os.path.join(dest, _WH + name), "wb"):
            pass


def _mark_opaque(path: str) -> None:
    try:
        os.setxattr(path, "user.overlay.opaque", b"y", follow_symlinks=False)
    except OSError:
        with open(os.path.join(path, _OPAQUE), "wb"):
            pass


def _deleted(dest: str, name: str) -> bool:
    """Whether ``dest`` holds a whiteout for ``name``."""
    if os.path.lexists(os.path.join(dest, _WH + name)):
        return True
    try:
        return _is_whiteout(os.lstat(os.path.join(dest, name)))
    except FileNotFoundError:
        return False


def _squash_dir(layer: str, rel: str, dest: str, base: View, dirs: dict[str, os.stat_result],
                counts: dict[str, int]) -> None:
    src = os.path.join(layer, rel) if rel else layer
    out = os.path.join(dest, rel) if rel else dest
    with os.scandir(src) as it:
        entries = sorted(it, key=lambda e: e.name)
    for e in entries:
        name = e.name
        if name == _OPAQUE or name in _AUFS_META:
            continue
        st = e.stat(follow_symlinks=False)
        counts["entries"] += 1
        if name.startswith(_WH) or _is_whiteout(st):
            gone = name[len(_WH):] if name.startswith(_WH) else name
            _remove(os.path.join(out, gone))
            _remove(os.path.join(out, _WH + gone))
            crel = f"{rel}/{gone}" if rel else gone
            if base.lookup(crel) is not None:
                _whiteout(out, gone)
            continue
        crel = f"{rel}/{name}" if rel else name
        target = os.path.join(out, name)
        if stat.S_ISDIR(st.st_mode):
            replaced = _deleted(out, name)
            opaque = _opaque(e.path)
            try:
                tst: os.stat_result | None = os.lstat(target)
            except FileNotFoundError:
                tst = None
            if tst is not None and (not stat.S_ISDIR(tst.st_mode) or opaque):
                _remove(target)
                tst = None
            if replaced:
                _remove(os.path.join(out, _WH + name))
            if tst is None:
                os.mkdir(target, 0o700)
                if opaque or replaced:
                    below = base.lookup(crel)
                    if below is not None and stat.S_ISDIR(below[1].st_mode):
                        _mark_opaque(target)
            _copy_xattrs(e.path, target)
            dirs[crel] = st
            _squash_dir(layer, crel, dest, base, dirs, counts)
            continue
        _remove(target)
        _remove(os.path.join(out, _WH + name))
        if stat.S_ISREG(st.st_mode):
            try:
                os.link(e.path, target, follow_symlinks=False)
                continue
            except OSError as err:
                if err.errno not in (errno.EMLINK, errno.EXDEV, errno.EPERM, errno.EACCES):
                    raise
            _copy_file(e.path, st, target)
        elif stat.S_ISLNK(st.st_mode) or stat.S_ISFIFO(st.st_mode):
            _copy_file(e.path, st, target)
        else:
            continue  # devices and sockets are not layer content
        _copy_xattrs(e.path, target)
        _copy_attrs(st, target)


def _copy_xattrs(src: str, dst: str) -> None:
    """The content xattrs (not the overlay drivers' bookkeeping) of ``src`` onto ``dst``."""
    try:
        names = os.listxattr(src, follow_symlinks=False)
    except OSError:
        return
    for a in names:
        if a.startswith(("user.overlay.", "trusted.overlay.", "user.fuseoverlayfs.")):
            continue
        try:
            os.setxattr(dst, a, os.getxattr(src, a, follow_symlinks=False), follow_symlinks=False)
        except OSError:
            continue
