"""Functions the store-namespace tests run inside a worker (by name: "tests.integration.nsfuncs:...")."""

from __future__ import annotations

import os
import signal
import time

from rootless.errors import StorageError


def chown(path: str, uid: int, gid: int) -> list[int]:
    os.chown(path, uid, gid)
    st = os.stat(path)
    return [st.st_uid, st.st_gid]


def nap(seconds: float) -> int:
    time.sleep(seconds)
    return os.getpid()


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def fail_storage(message: str, hint: str) -> None:
    raise StorageError(message, hint)


def fail_plain() -> None:
    raise ValueError("not a rootless error")


def noisy() -> str:
    print("this goes to stderr, not into the protocol")
    os.write(1, b"raw write to fd 1\n")
    return "fine"


def layertar_walk(root: str) -> list[list[str]]:
    from storage import layertar

    return [[e.path, e.kind] for e in layertar.walk(root)]


def make_upper(path: str) -> None:
    """An overlay upper directory as the kernel leaves it: a whiteout device and an opaque directory."""
    import stat

    os.makedirs(f"{path}/etc")
    os.mknod(f"{path}/etc/passwd", stat.S_IFCHR | 0o000, os.makedev(0, 0))
    os.mkdir(f"{path}/var")
    os.setxattr(f"{path}/var", "user.overlay.opaque", b"y")
    with open(f"{path}/var/new", "wb") as f:
        f.write(b"new")
    os.chown(f"{path}/var/new", 1000, 1000)
