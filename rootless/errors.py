"""Typed errors: inner code raises, ``cli.main`` prints once and picks the exit code.

Exit codes follow Podman and the Docker CLI: 125 for the tool's own errors,
126 when the container command cannot be executed, 127 when it is not found.
"""

from __future__ import annotations

EXIT_TOOL = 125
EXIT_NOT_EXECUTABLE = 126
EXIT_NOT_FOUND = 127


class RootlessError(Exception):
    """An error with one line naming the problem and an optional hint naming the fix."""

    exit_code = EXIT_TOOL

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


class ConfigError(RootlessError):
    """The config file is unreadable, malformed, or holds an unknown key or bad value."""


class ReferenceError_(RootlessError):
    """An image reference that cannot be parsed."""


class RegistryError(RootlessError):
    """A registry refused, failed, or could not be reached."""


class AuthError(RegistryError):
    """The registry refused the credentials (or asked for some we do not have)."""


class NotFoundError(RootlessError):
    """An image, tag, blob or container that does not exist."""


class DigestMismatchError(RootlessError):
    """Content whose sha256 differs from the digest that named it."""


class StorageError(RootlessError):
    """The store cannot be read or written (full disk, bad permissions, corruption)."""


class NamespaceError(RootlessError):
    """A user namespace could not be created or mapped."""


class NotExecutableError(RootlessError):
    exit_code = EXIT_NOT_EXECUTABLE


class CommandNotFoundError(RootlessError):
    exit_code = EXIT_NOT_FOUND


def decode_utf8(data: bytes, what: str) -> str:
    """*data* as text without a leading byte-order mark; bytes that are not UTF-8 are one
    error naming *what* (the file) and the line, as Docker's env-file reader does."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise RootlessError(f"{what} contains invalid UTF-8 at line {line} (byte {data[e.start]:#04x})",
                            hint="save it as UTF-8") from None
    return text[1:] if text.startswith("\ufeff") else text


def errno_hint(err: OSError) -> str | None:
    """Turn an errno into a remedy where one is known."""
    import errno

    if err.errno == errno.ENOSPC:
        return "the disk holding the store is full: free space or move the store with --root"
    if err.errno == errno.EDQUOT:
        return "your disk quota is exhausted: free space or move the store with --root"
    if err.errno in (errno.EACCES, errno.EPERM):
        return "check the ownership and mode of the path named above"
    if err.errno == errno.EROFS:
        return "the store is on a read-only file system: choose another with --root"
    return None
