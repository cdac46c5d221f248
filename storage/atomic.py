"""Crash-safe small-file writes: readers see the old content or the new, never a torn file."""

from __future__ import annotations

import os
from pathlib import Path

from rootless.errors import StorageError, errno_hint


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """Make a rename or an unlink in ``path`` durable (rename(2) alone is not, see fsync(2))."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: str | os.PathLike[str], data: bytes, mode: int = 0o600, *, durable: bool = True) -> None:
    """Write ``data`` to a temp file in the same directory, fsync it, rename it over ``path``.

    ``durable=False`` skips both fsyncs, for files that need not outlive a crash of the
    machine: readers still never see a torn file, and the write costs no journal commit.
    """
    target = Path(path)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW, mode)
    except OSError as e:
        raise StorageError(f"write {target}: {e.strerror}", hint=errno_hint(e)) from e
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fchmod(fd, mode)  # the umask may have narrowed the create mode
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, target)
        if durable:
            fsync_dir(target.parent)
    except OSError as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise StorageError(f"write {target}: {e.strerror}", hint=errno_hint(e)) from e
