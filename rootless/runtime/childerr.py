"""One format for a child process to tell its parent why it failed.

Every forked or spawned helper of the runtime reports a failure the same way: the container's
first process and its children (process), a mapped child (userns.fork_mapped), the processes that
enter a container (nsexec), the monitor while it starts a container (launcher) and the store's
namespace worker (nsworker, inside its JSON-lines protocol). The record is one line on a pipe:

    b"E" + JSON object + b"\\n"

    {"stage": "rootfs",          what the child was doing (the parent words its message from it)
     "type": "OSError",          the exception's class name (a rootless.errors name keeps its type)
     "message": "mount overlay on /x: Operation not permitted",
     "errno": 1, "filename": "/x", "filename2": null, "strerror": "Operation not permitted",
     "hint": null, "traceback": null}

A child that succeeded writes something else, or nothing (its pipe is close-on-exec, so an exec
closes it), and the parent reads ``decode(...) is None``. This module imports only the standard
library (json only when a record is written or read): the nsworker and the monitor's loop import it
under ``python -S``.
"""

from __future__ import annotations

import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from rootless.errors import RootlessError

PREFIX = b"E"


class ChildFailure:
    """A decoded failure record."""

    __slots__ = ("stage", "errno", "message", "type", "hint", "filename", "filename2", "strerror", "traceback")

    def __init__(self, stage: str, errno: int, message: str, type: str = "",  # noqa: A002
                 hint: str | None = None, filename: str | None = None, filename2: str | None = None,
                 strerror: str | None = None, traceback: str | None = None) -> None:
        self.stage = stage
        self.errno = errno
        self.message = message
        self.type = type
        self.hint = hint
        self.filename = filename
        self.filename2 = filename2
        self.strerror = strerror
        self.traceback = traceback

    def __repr__(self) -> str:
        return f"ChildFailure({self.stage!r}, {self.errno}, {self.message!r}, type={self.type!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ChildFailure) and all(
            getattr(self, k) == getattr(other, k) for k in self.__slots__)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ChildFailure:
        def opt(key: str) -> str | None:
            v = d.get(key)
            return None if v is None else str(v)

        return cls(str(d.get("stage") or ""), int(d.get("errno") or 0), str(d.get("message") or ""),
                   str(d.get("type") or ""), opt("hint"), opt("filename"), opt("filename2"), opt("strerror"),
                   opt("traceback"))

    def oserror(self) -> OSError:
        """The OSError the child caught, rebuilt (errno, text, file names)."""
        text = self.strerror or os.strerror(self.errno)
        if self.filename2 is not None:
            return OSError(self.errno, text, self.filename, None, self.filename2)
        if self.filename is not None:
            return OSError(self.errno, text, self.filename)
        return OSError(self.errno, text)

    def error(self, prefix: str = "") -> RootlessError:
        """The error to raise in the parent: of the child's rootless.errors type when it had one."""
        from rootless import errors

        cls = getattr(errors, self.type, None)
        if not (isinstance(cls, type) and issubclass(cls, errors.RootlessError)):
            cls = errors.RootlessError
        return cls(f"{prefix}{self.message}", self.hint)


def describe(stage: str, err: BaseException, with_traceback: bool = False) -> dict[str, Any]:
    """The record's fields for ``err``, caught while doing ``stage``."""
    out: dict[str, Any] = {"stage": stage, "type": type(err).__name__, "message": str(err), "errno": 0,
                           "hint": None}
    if isinstance(err, OSError):
        from rootless.runtime.syscalls import describe as explain

        out.update(errno=err.errno or 0, message=explain(err), strerror=err.strerror,
                   filename=None if err.filename is None else os.fsdecode(err.filename),
                   filename2=None if err.filename2 is None else os.fsdecode(err.filename2))
    message = getattr(err, "message", None)
    if isinstance(message, str):
        out["message"] = message
    hint = getattr(err, "hint", None)
    if isinstance(hint, str):
        out["hint"] = hint
    if not isinstance(err, OSError) and not hasattr(err, "message"):
        out["message"] = f"{type(err).__name__}: {err}" if str(err) else type(err).__name__
    if with_traceback:
        import traceback

        out["traceback"] = "".join(traceback.format_exception(err))
    return out


def encode(stage: str, err: BaseException) -> bytes:
    import json

    return PREFIX + json.dumps(describe(stage, err)).encode() + b"\n"


def report(fd: int, stage: str, err: BaseException) -> None:
    """Write the record for ``err`` to ``fd`` (a closed or full pipe is not the child's problem)."""
    try:
        os.write(fd, encode(stage, err))
    except OSError:
        pass


def decode(raw: bytes) -> ChildFailure | None:
    """The failure in what a child wrote (its last record), None when it reported none."""
    for line in reversed(raw.splitlines()):
        if line.startswith(PREFIX):
            import json

            try:
                d = json.loads(line[len(PREFIX):])
            except ValueError:
                break
            if isinstance(d, dict):
                return ChildFailure.from_dict(d)
            break
    if raw.strip() and raw.lstrip().startswith(PREFIX):
        return ChildFailure("", 0, raw.decode(errors="replace").strip()[:200])
    return None


def read_all(fd: int) -> bytes:
    """Everything until end of file (the child exec'd or exited)."""
    chunks: list[bytes] = []
    while True:
        try:
            chunk = os.read(fd, 65536)
        except InterruptedError:
            continue
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
