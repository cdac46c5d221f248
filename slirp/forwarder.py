"""Published TCP ports (and IPv6 UDP ports) without slirp4netns's TCP/IP stack in the data path.

slirp4netns's ``add_hostfwd`` carries each byte through libslirp's emulated TCP twice (host
socket → guest packets → tap0). Instead, as Podman's rootlessport does, one small process
holds the listening sockets, made in the host's network namespace before it moved, and
lives in the container's user and network namespaces: each accepted connection is
dialled to 127.0.0.1:PORT there and relayed with splice(2), kernel to kernel, through a
pipe. UDP on IPv4 host addresses stays with slirp4netns; its ``add_hostfwd`` takes IPv4
addresses only, so a UDP port on an IPv6 host address is relayed here too: each client
(source address) gets a socket of its own connected to 127.0.0.1:PORT in the container,
datagrams go both ways, and a client silent for UDP_IDLE seconds is forgotten.

The process ends when the exit pipe it shares with slirp4netns reaches EOF (its write end
closes, whatever way its holder ends), or by SIGKILL from PR_SET_PDEATHSIG.
"""

from __future__ import annotations

import os
import signal
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass

_PIPE_SIZE = 1 << 20  # F_SETPIPE_SZ: fewer, larger splices
_CHUNK = 1 << 20
UDP_IDLE = 60.0  # seconds a UDP client's flow is kept without traffic (conntrack's udp_timeout_stream is 120)
_DATAGRAM = 65535


@dataclass(frozen=True)
class Listener:
    sock: socket.socket
    container_port: int
    protocol: str = "tcp"


def listen(host_ip: str, host_port: int) -> socket.socket:
    """A listening TCP socket on the host (port 0: the kernel chooses), IPv6 for an address with
    colons; OSError as bind(2) fails."""
    family = socket.AF_INET6 if ":" in host_ip else socket.AF_INET
    s = socket.socket(family, socket.SOCK_STREAM)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            # [::] means IPv6 only, as Podman binds it: the IPv4 side is -p without an address
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        s.bind((host_ip or "0.0.0.0", host_port))
        s.listen(128)
    except BaseException:
        s.close()
        raise
    return s


def bind_udp(host_ip: str, host_port: int) -> socket.socket:
    """A bound UDP socket on the host (port 0: the kernel chooses), IPv6 for an address with
    colons and IPv6 only; OSError as bind(2) fails."""
    family = socket.AF_INET6 if ":" in host_ip else socket.AF_INET
    s = socket.socket(family, socket.SOCK_DGRAM)
    try:
        if family == socket.AF_INET6:
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        s.bind((host_ip or "0.0.0.0", host_port))
    except BaseException:
        s.close()
        raise
    return s


class _UdpFlows:
    """UDP clients of the host sockets, each with its own socket connected to the container's
    port (made in the container's network namespace, where this process lives), so replies
    find their way back to the client that sent the request."""

    def __init__(self) -> None:
        self.by_client: dict[tuple[int, object], socket.socket] = {}
        self.by_fd: dict[int, tuple[Listener, object, socket.socket]] = {}
        self.used: dict[int, float] = {}

    def from_client(self, lst: Listener, now: float) -> None:
        try:
            data, client = lst.sock.recvfrom(_DATAGRAM)
        except OSError:
            return
        up = self.by_client.get((lst.sock.fileno(), client))
        if up is None:
            up = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                up.connect(("127.0.0.1", lst.container_port))
            except OSError:
                up.close()
                return
            self.by_client[(lst.sock.fileno(), client)] = up
            self.by_fd[up.fileno()] = (lst, client, up)
        self.used[up.fileno()] = now
        try:
            up.send(data)
        except OSError:
            pass  # ECONNREFUSED: nothing listens yet (an earlier datagram's ICMP); the client retries

    def from_container(self, fd: int, now: float) -> None:
        lst, client, up = self.by_fd[fd]
        try:
            data = up.recv(_DATAGRAM)
        except OSError:
            return
        self.used[fd] = now
        try:
            lst.sock.sendto(data, client)
        except OSError:
            pass

    def expire(self, now: float) -> None:
        for fd, t in list(self.used.items()):
            if now - t >= UDP_IDLE:
                lst, client, up = self.by_fd.pop(fd)
                del self.by_client[(lst.sock.fileno(), client)]
                del self.used[fd]
                up.close()


def _pump(src: socket.socket, dst: socket.socket) -> None:
    import fcntl

    r, w = os.pipe2(os.O_CLOEXEC)
    try:
        try:
            fcntl.fcntl(w, 1031, _PIPE_SIZE)  # F_SETPIPE_SZ
        except OSError:
            pass
        sfd, dfd = src.fileno(), dst.fileno()
        while True:
            n = os.splice(sfd, w, _CHUNK)
            if n == 0:
                break
            while n:
                n -= os.splice(r, dfd, n)
    except OSError:
        pass
    finally:
        os.close(r)
        os.close(w)
        for s, how in ((dst, socket.SHUT_WR), (src, socket.SHUT_RD)):
            try:
                s.shutdown(how)
            except OSError:
                pass


def _relay(client: socket.socket, port: int) -> None:
    import threading

    try:
        upstream = socket.create_connection(("127.0.0.1", port))
    except OSError:
        client.close()
        return
    for s in (client, upstream):
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    back = threading.Thread(target=_pump, args=(upstream, client), daemon=True)
    back.start()
    _pump(client, upstream)
    back.join()
    client.close()
    upstream.close()


def serve(listeners: Sequence[Listener], exit_fd: int) -> None:
    """Accept on every TCP listener until *exit_fd* reads EOF, each connection in its own
    threads; relay the datagrams of the UDP ones (_UdpFlows) in this loop."""
    import select
    import threading
    import time

    by_fd = {lst.sock.fileno(): lst for lst in listeners}
    udp = _UdpFlows()
    while True:
        try:
            ready, _, _ = select.select([exit_fd, *by_fd, *udp.by_fd], [], [], UDP_IDLE / 4 if udp.by_fd else None)
        except InterruptedError:
            continue
        if exit_fd in ready:
            os._exit(0)
        now = time.monotonic()
        for fd in ready:
            if fd in udp.by_fd:
                udp.from_container(fd, now)
                continue
            lst = by_fd[fd]
            if lst.protocol == "udp":
                udp.from_client(lst, now)
                continue
            try:
                client, _ = lst.sock.accept()
            except OSError:
                continue
            threading.Thread(target=_relay, args=(client, lst.container_port), daemon=True).start()
        udp.expire(now)


def start(listeners: Sequence[Listener], exit_fd: int, enter: Callable[[], None]) -> int:
    """Fork the forwarder: *enter* (in the child) arms the death signal and joins the
    container's namespaces; the pid."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child never returns
        try:
            os.setsid()  # no terminal's signals: it ends with the exit pipe or the death signal
            null = os.open(os.devnull, os.O_RDWR)
            for fd in (0, 1, 2):  # holding the caller's stdout would keep its reader waiting
                os.dup2(null, fd)
            os.close(null)
            enter()
            keep = {exit_fd, *(lst.sock.fileno() for lst in listeners)}
            for fd in _open_fds():
                if fd > 2 and fd not in keep:
                    try:
                        os.close(fd)
                    except OSError:
                        pass
            signal.pthread_sigmask(signal.SIG_SETMASK, ())
            for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                signal.signal(sig, signal.SIG_DFL)
            try:
                with open("/proc/self/comm", "w") as f:
                    f.write("rootless-ports")
            except OSError:
                pass
            serve(listeners, exit_fd)
        except BaseException as e:
            try:
                os.write(2, f"rootless port forwarder: {e}\n".encode())
            finally:
                os._exit(1)
        os._exit(0)
    return pid


def _open_fds() -> list[int]:
    try:
        return [int(n) for n in os.listdir("/proc/self/fd")]
    except OSError:
        return []
