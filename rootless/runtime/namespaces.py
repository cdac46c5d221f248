"""Namespace flags for a Spec, and the set-up a fresh namespace needs before use."""

from __future__ import annotations

import os
from collections.abc import Iterable

from rootless.errors import NamespaceError
from rootless.runtime import syscalls as sc

FLAGS = {
    "user": sc.CLONE_NEWUSER, "mount": sc.CLONE_NEWNS, "pid": sc.CLONE_NEWPID, "uts": sc.CLONE_NEWUTS,
    "ipc": sc.CLONE_NEWIPC, "cgroup": sc.CLONE_NEWCGROUP, "network": sc.CLONE_NEWNET,
}
# socket(2): AF_INET, SOCK_DGRAM (<bits/socket.h>; SOCK_CLOEXEC is O_CLOEXEC)
_AF_INET = 2
_SOCK_DGRAM = 2


def flags(names: Iterable[str]) -> int:
    out = 0
    for n in names:
        if n not in FLAGS:
            raise NamespaceError(f"unknown namespace {n!r}", f"known: {', '.join(FLAGS)}")
        out |= FLAGS[n]
    return out


def loopback_up() -> None:
    """A new network namespace has only ``lo``, and it is down (network_namespaces(7));
    Podman's --network none brings it up so local services still work."""
    import fcntl
    import struct

    fd = sc.socket(_AF_INET, _SOCK_DGRAM | os.O_CLOEXEC, "open a socket to bring lo up")
    try:
        req = struct.pack("16sH14x", b"lo", 0)
        cur = struct.unpack("16sH14x", fcntl.ioctl(fd, sc.SIOCGIFFLAGS, req))[1]
        fcntl.ioctl(fd, sc.SIOCSIFFLAGS, struct.pack("16sH14x", b"lo", cur | sc.IFF_UP))
    finally:
        os.close(fd)


def private_root() -> None:
    """Stop our mounts from propagating anywhere (a fresh namespace copies the parent's
    propagation; owned by a new user namespace it is already a slave, mount_namespaces(7))."""
    sc.mount(None, "/", None, sc.MS_REC | sc.MS_PRIVATE)


def set_hostname(name: str) -> None:
    if name and name != os.uname().nodename:
        sc.sethostname(name)
