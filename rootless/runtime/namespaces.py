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


# /proc/PID/ns/ file names (namespaces(7))
_PROC_NAMES = {"network": "net", "pid": "pid", "ipc": "ipc", "uts": "uts"}


class Shared:
    """Another container's namespaces, opened by the CLI before it forks (Spec.join): setns(2)
    joins by descriptor, so a PID reused meanwhile cannot swap them. ``userns`` is theirs, which
    owns them: joining it first gives the capabilities setns needs for the others."""

    def __init__(self, join: Iterable[tuple[str, int]]) -> None:
        self.userns = -1
        self.fds: list[tuple[int, int]] = []  # (descriptor, CLONE_NEW*)
        try:
            for ns, pid in join:
                self._open(ns, pid)
        except BaseException:
            self.close()
            raise

    def _open(self, ns: str, pid: int) -> None:
        if ns not in _PROC_NAMES:
            raise NamespaceError(f"the {ns} namespace cannot be shared with another container",
                                 f"shared: {', '.join(_PROC_NAMES)}")
        try:
            user = os.open(f"/proc/{pid}/ns/user", os.O_RDONLY | os.O_CLOEXEC)
            if self.userns < 0:
                self.userns = user
            else:
                a, b = os.fstat(user), os.fstat(self.userns)
                os.close(user)
                if (a.st_dev, a.st_ino) != (b.st_dev, b.st_ino):
                    raise NamespaceError("the containers whose namespaces are shared have different user "
                                         "namespaces, and a process can be in only one",
                                         "share the namespaces of one container")
            self.fds.append((os.open(f"/proc/{pid}/ns/{_PROC_NAMES[ns]}", os.O_RDONLY | os.O_CLOEXEC), FLAGS[ns]))
        except OSError as e:
            raise NamespaceError(f"open the {ns} namespace of process {pid}: {e.strerror}",
                                 "the container it belongs to has exited: start it again") from None

    def enter(self) -> int:
        """In the container's first process, once in ``userns``: join the namespaces but the PID
        one (which applies to the children forked after it, setns(2)); their CLONE_NEW* flags."""
        joined = 0
        for fd, kind in self.fds:
            if kind != sc.CLONE_NEWPID:
                sc.setns(fd, kind, f"join the shared {sc.ns_names(kind)} namespace")
            joined |= kind
        return joined

    def enter_pid(self) -> bool:
        for fd, kind in self.fds:
            if kind == sc.CLONE_NEWPID:
                sc.setns(fd, kind, "join the shared pid namespace")
                return True
        return False

    def close(self) -> None:
        for fd in (self.userns, *(fd for fd, _ in self.fds)):
            if fd >= 0:
                os.close(fd)
        self.userns = -1
        self.fds = []
