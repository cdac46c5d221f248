"""Content-addressed blobs: each file's name is the digest of its bytes (OCI image-layout style).

A blob is hashed while it is written and renamed into the store only when its digest
matches, so a blob file in the store is always complete and correct. Downloads are
written to ``tmp/<hex>.partial`` under a per-digest lock: a second pull of the same blob
waits for the first and then finds it done, and a partial left by a killed pull is
resumed rather than restarted.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from types import TracebackType
from typing import Any

from rootless.errors import DigestMismatchError, NotFoundError, StorageError, errno_hint
from rootless.layout import Layout
from storage.atomic import fsync_dir
from storage.locks import FileLock

# OCI image-spec "descriptor.md#digests": algorithm ":" encoded; the registered algorithms
# use lowercase hex of a fixed length.
_DIGEST_RE = re.compile(r"^(sha256:[0-9a-f]{64}|sha512:[0-9a-f]{128})$")
_CHUNK = 1 << 20


def check_digest(digest: str) -> str:
    """Return ``digest`` if it is a well-formed sha256/sha512 digest, else raise StorageError."""
    if not isinstance(digest, str) or not _DIGEST_RE.match(digest):
        raise StorageError(f"invalid digest {digest!r}: expected sha256:<64 hex digits>")
    return digest


def _hasher(digest: str) -> Any:
    return hashlib.new(digest.partition(":")[0])


def digest_bytes(data: bytes, algorithm: str = "sha256") -> str:
    return f"{algorithm}:{hashlib.new(algorithm, data).hexdigest()}"


class BlobWriter:
    """Writes one blob; use via ``with store.open_writer(digest, size) as w:``.

    ``done`` is True when the blob was already in the store (skip the download).
    ``offset`` is the number of bytes already on disk: resume the download from there
    (an HTTP Range request) or call ``reset()`` to start over. On a clean exit the
    digest (and size, if given) is verified and the blob renamed into place; a mismatch
    deletes the partial and raises DigestMismatchError; an exception keeps the partial.
    """

    def __init__(self, store: BlobStore, digest: str, size: int | None) -> None:
        self.digest = check_digest(digest)
        self.size = size
        self._store = store
        self._lock = FileLock(store.layout.locks / f"blob-{digest.partition(':')[2]}.lock")
        self._partial = store.partial_path(digest)
        self._file: Any = None
        self._hash: Any = None
        self.offset = 0
        self.done = False

    @property
    def partial_path(self) -> Path:
        return self._partial

    def __enter__(self) -> BlobWriter:
        self._lock.acquire()
        try:
            if self._store.has(self.digest):
                self.done = True
                return self
            self._open_partial()
        except BaseException:
            self._close()
            raise
        return self

    def _open_partial(self) -> None:
        self._partial.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            fd = os.open(self._partial, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        except OSError as e:
            raise StorageError(f"open {self._partial}: {e.strerror}", hint=errno_hint(e)) from e
        self._file = os.fdopen(fd, "r+b", buffering=_CHUNK)
        self._hash = _hasher(self.digest)
        # The hash state of an interrupted download is not saved, so it is rebuilt by
        # re-reading what is on disk; that is far cheaper than downloading it again.
        while chunk := self._file.read(_CHUNK):
            self._hash.update(chunk)
        self.offset = self._file.tell()
        if self.size is not None and self.offset > self.size:
            self.reset()

    def reset(self) -> None:
        """Discard the bytes already written (the server ignored our Range request)."""
        if self.done:
            return
        self._file.seek(0)
        self._file.truncate()
        self._hash = _hasher(self.digest)
        self.offset = 0

    def write(self, data: bytes | bytearray | memoryview) -> int:
        if self.done:
            raise StorageError(f"blob {self.digest} is already in the store")
        if self._file is None:
            raise StorageError(f"blob {self.digest}: writer is not open")
        try:
            self._file.write(data)
        except OSError as e:
            raise StorageError(f"write blob {self.digest} to {self._partial}: {e.strerror}",
                               hint=errno_hint(e)) from e
        self._hash.update(data)
        n = len(data)
        self.offset += n
        return n

    def _commit(self) -> None:
        f = self._file
        try:
            f.flush()
        except OSError as e:
            raise StorageError(f"write blob {self.digest} to {self._partial}: {e.strerror}",
                               hint=errno_hint(e)) from e
        got = f"{self.digest.partition(':')[0]}:{self._hash.hexdigest()}"
        if got != self.digest or (self.size is not None and self.offset != self.size):
            self._discard()
            if got != self.digest:
                raise DigestMismatchError(
                    f"blob {self.digest}: content has digest {got} ({self.offset} bytes)",
                    hint="the registry or a proxy served corrupt data; retry the pull")
            raise DigestMismatchError(
                f"blob {self.digest}: expected {self.size} bytes, got {self.offset}",
                hint="the registry's manifest and blob disagree; retry the pull")
        try:
            os.fsync(f.fileno())
            final = self._store.path(self.digest)
            final.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            os.rename(self._partial, final)
            fsync_dir(final.parent)
        except OSError as e:
            raise StorageError(f"store blob {self.digest}: {e.strerror}", hint=errno_hint(e)) from e

    def _discard(self) -> None:
        try:
            os.unlink(self._partial)
        except FileNotFoundError:
            pass

    def _close(self, failing: bool = False) -> None:
        f, self._file = self._file, None
        try:
            if f is not None:
                try:
                    f.close()
                except OSError as e:
                    if not failing:  # an error already on its way says more than the close's
                        raise StorageError(f"write blob {self.digest} to {self._partial}: {e.strerror}",
                                           hint=errno_hint(e)) from e
        finally:
            self._lock.release()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        try:
            if exc_type is None and not self.done:
                self._commit()
                self.done = True
        except BaseException:
            self._close(failing=True)
            raise
        else:
            self._close(failing=exc_type is not None)


class BlobStore:
    def __init__(self, layout: Layout) -> None:
        self.layout = layout

    def path(self, digest: str) -> Path:
        return self.layout.blob(check_digest(digest))

    def partial_path(self, digest: str) -> Path:
        return self.layout.tmp / f"{check_digest(digest).partition(':')[2]}.partial"

    def has(self, digest: str) -> bool:
        return self.path(digest).is_file()

    def size(self, digest: str) -> int:
        try:
            return self.path(digest).stat().st_size
        except FileNotFoundError:
            raise NotFoundError(f"blob {digest} is not in the store") from None

    def open_writer(self, digest: str, size: int | None = None) -> BlobWriter:
        return BlobWriter(self, digest, size)

    def put_bytes(self, data: bytes, digest: str | None = None) -> str:
        """Store ``data``; with ``digest`` given, verify it (DigestMismatchError otherwise)."""
        if digest is None:
            digest = digest_bytes(data)
        with self.open_writer(digest, len(data)) as w:
            if not w.done:
                w.reset()
                w.write(data)
        return digest

    def read_bytes(self, digest: str, verify: bool = True) -> bytes:
        """The blob's content (for manifests and configs; layers are read by path)."""
        try:
            data = self.path(digest).read_bytes()
        except FileNotFoundError:
            raise NotFoundError(f"blob {digest} is not in the store") from None
        except OSError as e:
            raise StorageError(f"read blob {digest}: {e.strerror}", hint=errno_hint(e)) from e
        if verify:
            got = digest_bytes(data, digest.partition(":")[0])
            if got != digest:
                raise DigestMismatchError(f"blob {digest} in the store is corrupt (content is {got})",
                                          hint="remove the image and pull it again")
        return data

    def remove(self, digest: str) -> bool:
        """Delete a blob; False if it was not there."""
        with FileLock(self.layout.locks / f"blob-{check_digest(digest).partition(':')[2]}.lock"):
            try:
                os.unlink(self.path(digest))
            except FileNotFoundError:
                return False
            except OSError as e:
                raise StorageError(f"remove blob {digest}: {e.strerror}", hint=errno_hint(e)) from e
        return True

    def remove_partials(self) -> list[str]:
        """Delete the partial downloads no pull is writing (a pull that failed, for a full disk
        say, keeps its partial to resume from); the digests whose partial went."""
        removed: list[str] = []
        try:
            names = sorted(os.listdir(self.layout.tmp))
        except FileNotFoundError:
            return removed
        for name in names:
            hexpart = name.removesuffix(".partial")
            if hexpart == name or not _DIGEST_RE.match(f"sha256:{hexpart}"):
                continue
            lock = FileLock(self.layout.locks / f"blob-{hexpart}.lock")
            if not lock.acquire(blocking=False):
                continue  # a pull is writing it
            try:
                os.unlink(self.layout.tmp / name)
                removed.append(f"sha256:{hexpart}")
            except FileNotFoundError:
                pass
            except OSError as e:
                raise StorageError(f"remove {self.layout.tmp / name}: {e.strerror}", hint=errno_hint(e)) from e
            finally:
                lock.release()
        return removed

    def list(self) -> list[str]:
        out: list[str] = []
        base = self.layout.root / "blobs"
        try:
            algos = sorted(os.listdir(base))
        except FileNotFoundError:
            return out
        for algo in algos:
            try:
                names = sorted(os.listdir(base / algo))
            except NotADirectoryError:
                continue
            for name in names:
                d = f"{algo}:{name}"
                if _DIGEST_RE.match(d):
                    out.append(d)
        return out
