"""The build context: which files COPY and ADD may read, and the digest that keys their cache.

Runs as the user, on the host side. A source is resolved inside the context directory as
if it were "/": ``..`` cannot climb out, and a symlink named as a source is followed only
while it stays inside (one leading out is an error, as with Docker). Files the ignore file
excludes do not exist for COPY. Inside a copied directory symlinks are copied as symlinks.
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
import posixpath
import stat
import time
from collections.abc import Iterator, Sequence
from typing import Any

from rootless.build.ignore import Matcher
from rootless.errors import RootlessError
from rootless.record import dataclass

_MAX_LINKS = 40  # path_resolution(7)
_GLOB = frozenset("*?[")


class ContextError(RootlessError):
    """A source that is missing, outside the context or excluded."""


@dataclass(frozen=True)
class Source:
    rel: str  # resolved, relative to the context root ("" is the root itself)
    path: str  # absolute host path
    is_dir: bool
    name: str  # the base name as written (after glob expansion), for the destination


class Context:
    def __init__(self, root: str, matcher: Matcher) -> None:
        self.root = os.path.realpath(root)
        self.matcher = matcher

    def resolve(self, rel: str, what: str) -> str:
        """``rel`` resolved inside the context (symlinks followed, never out); relative result."""
        parts = [p for p in rel.split("/") if p not in ("", ".")]
        parts.reverse()
        done: list[str] = []
        links = 0
        while parts:
            p = parts.pop()
            if p == "..":
                if not done:
                    raise ContextError(f"{what}: the source {rel} is outside the build context",
                                       "copy only files inside the context directory")
                done.pop()
                continue
            full = os.path.join(self.root, *done, p)
            try:
                st = os.lstat(full)
            except FileNotFoundError:
                done.append(p)
                parts.reverse()
                done.extend(parts)
                return "/".join(done)
            if stat.S_ISLNK(st.st_mode):
                links += 1
                if links > _MAX_LINKS:
                    raise ContextError(f"{what}: too many levels of symbolic links in {rel}")
                target = os.readlink(full)
                if target.startswith("/"):
                    raise ContextError(f"{what}: the source {rel} is a symlink leading out of the build "
                                       f"context (to {target})", "copy the file the link points to instead")
                new = posixpath.normpath(posixpath.join(*done, target)) if done else posixpath.normpath(target)
                if new == ".." or new.startswith("../"):
                    raise ContextError(f"{what}: the source {rel} is a symlink leading out of the build "
                                       f"context (to {target})", "copy the file the link points to instead")
                parts.extend(reversed([q for q in new.split("/") if q not in ("", ".")]))
                done = []
                continue
            done.append(p)
        return "/".join(done)

    def sources(self, patterns: Sequence[str], what: str) -> list[Source]:
        """Each pattern's files, globs expanded (Go's filepath.Match per component)."""
        out: list[Source] = []
        for pat in patterns:
            clean = posixpath.normpath("/" + pat).lstrip("/")
            if pat.startswith("..") or "/../" in f"/{pat}/" and posixpath.normpath(pat).startswith(".."):
                raise ContextError(f"{what}: the source {pat} is outside the build context",
                                   "copy only files inside the context directory")
            names = self._glob(clean) if _GLOB & set(clean) else [clean]
            found = False
            for name in names:
                rel = self.resolve(name, what)
                if rel and self.matcher.excluded(rel):
                    continue
                full = os.path.join(self.root, rel)
                try:
                    st = os.stat(full)
                except FileNotFoundError:
                    continue
                out.append(Source(rel=rel, path=full, is_dir=stat.S_ISDIR(st.st_mode),
                                  name=posixpath.basename(name) or "."))
                found = True
            if not found:
                raise ContextError(f"{what}: no source files were specified by {pat!r}: "
                                   "it does not exist in the build context"
                                   + (" (or the ignore file excludes it)" if self.matcher.patterns else ""),
                                   "check the path, relative to the context directory")
        return out

    def _glob(self, pattern: str) -> list[str]:
        comps = pattern.split("/")
        paths = [""]
        for comp in comps:
            nxt = []
            for base in paths:
                if not _GLOB & set(comp):
                    nxt.append(posixpath.join(base, comp) if base else comp)
                    continue
                try:
                    names = sorted(os.listdir(os.path.join(self.root, base)))
                except (NotADirectoryError, FileNotFoundError):
                    continue
                nxt += [posixpath.join(base, n) if base else n for n in names if fnmatch.fnmatchcase(n, comp)]
            paths = nxt
        return paths

    def walk(self, src: Source) -> Iterator[tuple[str, os.stat_result]]:
        """Every path under a source (itself included), relative to the source, ignored ones left out."""
        if not src.is_dir:
            yield "", os.stat(src.path)
            return
        yield "", os.stat(src.path)
        yield from self._walk(src.path, src.rel, "")

    def _walk(self, top: str, rel: str, sub: str) -> Iterator[tuple[str, os.stat_result]]:
        with os.scandir(top) as it:
            entries = sorted(it, key=lambda e: e.name)
        for e in entries:
            crel = f"{rel}/{e.name}" if rel else e.name
            csub = f"{sub}/{e.name}" if sub else e.name
            st = e.stat(follow_symlinks=False)
            is_dir = stat.S_ISDIR(st.st_mode)
            if self.matcher.excluded(crel):
                if is_dir and self.matcher.may_descend(crel):
                    yield from self._walk(e.path, crel, csub)
                continue
            yield csub, st
            if is_dir:
                yield from self._walk(e.path, crel, csub)

    def excluded_under(self, src: Source) -> list[str]:
        """Paths under a directory source the ignore file excludes (the copier skips them)."""
        if not src.is_dir or not self.matcher.patterns:
            return []
        out = []
        for dirpath, dirnames, filenames in os.walk(src.path):
            for n in filenames + dirnames:
                full = os.path.join(dirpath, n)
                crel = os.path.relpath(full, self.root)
                if self.matcher.excluded(crel) and not (n in dirnames and self.matcher.may_descend(crel)):
                    out.append(os.path.relpath(full, src.path))
            # an excluded directory is not walked, unless an exception may bring back something in it
            dirnames[:] = [n for n in dirnames if os.path.relpath(os.path.join(dirpath, n), src.path) not in out]
        return out


def digest_sources(ctx: Context, sources: Sequence[Source], memo: dict[str, list[Any]] | None = None,
                   files: dict[str, str] | None = None) -> str:
    """sha256 over the sources' relative paths, types, modes, link targets and contents
    (times and owners excluded: COPY sets owners itself, and a touch must not miss the cache).

    ``memo`` (path → [size, mtime_ns, ctime_ns, inode, digest]) spares reading a file whose
    stat is unchanged since the last build, as git's index does; a file changed in the
    last two seconds is always read (its times may not have moved yet on a later change).
    ``files`` receives each regular file's content digest by host path (what lets a COPY
    take an unchanged file from its previous layer: rootless.build.layerfs.copy)."""
    h = hashlib.sha256()
    now = time.time_ns()
    for src in sources:
        h.update(f"source {src.name}\0{int(src.is_dir)}\0".encode())
        for sub, st in ctx.walk(src):
            full = os.path.join(src.path, sub) if sub else src.path
            kind = stat.S_IFMT(st.st_mode)
            h.update(f"{sub}\0{kind:o}\0{stat.S_IMODE(st.st_mode):o}\0".encode())
            if stat.S_ISLNK(st.st_mode):
                h.update(os.readlink(full).encode() + b"\0")
            elif stat.S_ISREG(st.st_mode):
                digest = _file_digest(full, st, memo, now)
                if files is not None:
                    files[full] = digest
                h.update(f"{st.st_size}\0{digest}\0".encode())
    return h.hexdigest()


def _file_digest(path: str, st: os.stat_result, memo: dict[str, list[Any]] | None, now: int) -> str:
    key = [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]
    if memo is not None:
        known = memo.get(path)
        if known is not None and known[:4] == key:
            return str(known[4])
    fh = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            fh.update(chunk)
    digest = fh.hexdigest()
    if memo is not None and now - max(st.st_mtime_ns, st.st_ctime_ns) > 2_000_000_000:
        memo[path] = [*key, digest]
    return digest
