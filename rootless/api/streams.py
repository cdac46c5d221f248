"""Docker's stream formats: the 8-byte multiplexed frame header, and copying between a
hijacked socket and a process's pipes or pty.

Without a TTY, stdout and stderr share one connection as frames: byte 0 the stream (0 stdin,
1 stdout, 2 stderr), bytes 1-3 zero, bytes 4-7 the payload's length, big-endian (Docker
Engine API, "Attach to a container", Stream format). With a TTY the stream is raw.
"""

from __future__ import annotations

import os
import select
import socket
import struct

_CHUNK = 65536


def frame(stream: int, data: bytes) -> bytes:
    return struct.pack(">BxxxL", stream, len(data)) + data


def client_gone(sock: socket.socket) -> bool:
    """Whether the client has closed its end (a read would return end of file) while we wait
    with nothing to send: a waiting handler then stops instead of outliving its client."""
    try:
        ready, _, _ = select.select([sock.fileno()], [], [], 0)
        if not ready:
            return False
        return sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


def send(sock: socket.socket, data: bytes) -> bool:
    try:
        sock.sendall(data)
        return True
    except OSError:
        return False


def relay(sock: socket.socket, extra: bytes, *, stdin: int | None, outputs: dict[int, int], tty: bool,
          pidfd: int | None = None, stdin_done: bool = False) -> None:
    """Copy the client's bytes (after *extra*, already read) to *stdin*, and each fd of
    *outputs* (fd → stream number) to the client, framed unless *tty*, until every output
    reaches end of file (or, with *pidfd*, the process has exited and its pipes are drained).
    The client's half-close (end of its stdin; *stdin_done*: it came already) closes *stdin*."""
    outs = dict(outputs)
    for fd in outs:
        os.set_blocking(fd, False)
    if stdin is not None and extra:
        try:
            os.write(stdin, extra)
        except OSError:
            pass
    client_open = stdin is not None and not stdin_done
    if stdin_done and stdin is not None and stdin not in outs:
        os.close(stdin)
        stdin = None
    exited = False
    while outs:
        watch = list(outs)
        if client_open:
            watch.append(sock.fileno())
        if pidfd is not None and not exited:
            watch.append(pidfd)
        try:
            ready, _, _ = select.select(watch, [], [], 0.2 if exited else None)
        except InterruptedError:
            continue
        if exited and not ready:
            break  # the process is gone and its pipes stay quiet: something it left holds them
        for fd in ready:
            if fd == pidfd:
                exited = True
                continue
            if fd == sock.fileno():
                try:
                    data = sock.recv(_CHUNK)
                except OSError:
                    data = b""
                if not data:
                    client_open = False
                    if stdin is not None and stdin not in outs:
                        os.close(stdin)  # the process sees end of file on its stdin
                        stdin = None
                    continue
                if stdin is not None:
                    try:
                        os.write(stdin, data)
                    except OSError:
                        pass
                continue
            try:
                data = os.read(fd, _CHUNK)
            except BlockingIOError:
                continue
            except OSError:
                data = b""  # EIO: the pty's last slave closed
            if not data:
                del outs[fd]
                continue
            if not send(sock, data if tty else frame(outs[fd], data)):
                return
    if stdin is not None and stdin not in outputs:
        os.close(stdin)
