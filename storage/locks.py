"""Advisory file locks for every write to the store.

flock(2) locks belong to the open file description, so two threads of one process
that each open the lock file exclude each other just as two processes do, and the
kernel drops the lock when its holder dies: a killed pull never leaves a stale lock.
"""

from __future__ import annotations

import errno
import fcntl
import os
from pathlib import Path
from types import TracebackType

from rootless.errors import StorageError, errno_hint


class FileLock:
    """``with FileLock(path):`` — blocking exclusive (or shared) flock on ``path``, created 0600."""

    def __init__(self, path: str | os.PathLike[str], shared: bool = False) -> None:
        self.path = Path(path)
        self.shared = shared
        self._fd: int | None = None

    @property
    def locked(self) -> bool:
        return self._fd is not None

    def _open(self) -> int:
        flags = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW
        try:
            return os.open(self.path, flags, 0o600)
        except FileNotFoundError:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            return os.open(self.path, flags, 0o600)
        except OSError as e:
            raise StorageError(f"open lock file {self.path}: {e.strerror}", hint=errno_hint(e)) from e

    def acquire(self, blocking: bool = True) -> bool:
        """Take the lock; with ``blocking=False`` return False instead of waiting."""
        if self._fd is not None:
            raise StorageError(f"lock {self.path} is already held by this object")
        fd = self._open()
        op = fcntl.LOCK_SH if self.shared else fcntl.LOCK_EX
        if not blocking:
            op |= fcntl.LOCK_NB
        while True:
            try:
                fcntl.flock(fd, op)
                break
            except InterruptedError:
                continue
            except OSError as e:
                os.close(fd)
                if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                    return False
                raise StorageError(f"lock {self.path}: {e.strerror}", hint=errno_hint(e)) from e
        self._fd = fd
        return True

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            # Closing the only descriptor of the open file description drops the flock.
            os.close(fd)

    def __enter__(self) -> FileLock:
        self.acquire()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()

    def __del__(self) -> None:
        self.release()
