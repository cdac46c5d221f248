"""`run -t`: the user's terminal in raw mode, bytes relayed to and from the container's pty.

The container's pty comes from its own devpts (process.open_pty); here we hold the master.
Raw mode hands every key (Ctrl-C included) to the container's line discipline, which turns
it into signals for the container's foreground job, as on a local terminal. The terminal is
restored on every way out of ``raw_mode`` (normal exit, errors, forwarded signals).
"""

from __future__ import annotations

import errno
import os
import select
import signal
import termios
from collections.abc import Iterator
from contextlib import contextmanager

from rootless.runtime.process import FORWARDED, Started, exit_status
from rootless.runtime.syscalls import TIOCGWINSZ, TIOCSWINSZ

_WINSIZE_BYTES = 8  # struct winsize: four unsigned shorts


def get_winsize(fd: int) -> bytes | None:
    import fcntl

    try:
        return fcntl.ioctl(fd, TIOCGWINSZ, b"\0" * _WINSIZE_BYTES)
    except OSError:
        return None


def set_winsize(fd: int, ws: bytes) -> None:
    import fcntl

    try:
        fcntl.ioctl(fd, TIOCSWINSZ, ws)
    except OSError:
        pass


def terminal_size_source() -> int | None:
    for fd in (0, 1, 2):
        if os.isatty(fd):
            return fd
    return None


@contextmanager
def raw_mode(fd: int) -> Iterator[None]:
    """cfmakeraw(3) on *fd* for the duration; the saved attributes come back whatever happens."""
    try:
        saved = termios.tcgetattr(fd)
    except termios.error:
        yield
        return
    mode = termios.tcgetattr(fd)
    mode[0] &= ~(termios.IGNBRK | termios.BRKINT | termios.PARMRK | termios.ISTRIP | termios.INLCR
                 | termios.IGNCR | termios.ICRNL | termios.IXON)
    mode[1] &= ~termios.OPOST
    mode[2] &= ~(termios.CSIZE | termios.PARENB)
    mode[2] |= termios.CS8
    mode[3] &= ~(termios.ECHO | termios.ECHONL | termios.ICANON | termios.ISIG | termios.IEXTEN)
    mode[6][termios.VMIN] = 1
    mode[6][termios.VTIME] = 0
    termios.tcsetattr(fd, termios.TCSAFLUSH, mode)
    try:
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            n = os.write(fd, view)
        except InterruptedError:
            continue
        except BlockingIOError:
            select.select([], [fd], [])
            continue
        view = view[n:]


def relay(started: Started, *, interactive: bool) -> int:
    """Copy stdin → pty and pty → stdout until the container exits; forward signals and window
    size changes. Called with FORWARDED and SIGCHLD blocked (process.start's contract); they
    are handled here through a wakeup pipe instead."""
    assert started.master is not None
    master, pid = started.master, started.pid
    wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    watched = (*FORWARDED, signal.SIGCHLD, signal.SIGWINCH)
    old_handlers = {s: signal.signal(s, lambda *_: None) for s in watched}
    old_wakeup = signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
    size_fd = terminal_size_source()
    status: int | None = None
    stdin_open = interactive
    master_open = True
    try:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, watched)
        while status is None or master_open:
            if status is not None:
                # The container is gone: take what is left in the pty without waiting for more.
                os.set_blocking(master, False)
            fds = [wake_r] + ([master] if master_open else []) + ([0] if stdin_open else [])
            try:
                ready, _, _ = select.select(fds, [], [], 0 if status is not None else None)
            except InterruptedError:
                continue
            if status is not None and not ready:
                break
            if wake_r in ready:
                try:
                    sigs = os.read(wake_r, 256)
                except BlockingIOError:
                    sigs = b""
                for s in sigs:
                    if s == signal.SIGCHLD:
                        done, st = os.waitpid(pid, os.WNOHANG)
                        if done:
                            status = exit_status(st)
                    elif s == signal.SIGWINCH:
                        if size_fd is not None:
                            ws = get_winsize(size_fd)
                            if ws:
                                set_winsize(master, ws)
                    else:
                        try:
                            os.kill(pid, s)
                        except ProcessLookupError:
                            pass
            if master_open and master in ready:
                try:
                    data = os.read(master, 65536)
                except BlockingIOError:
                    data = None
                    if status is not None:
                        master_open = False
                except OSError as e:
                    if e.errno != errno.EIO:
                        raise
                    data = b""  # every slave fd is closed: the container is finishing
                if data:
                    _write_all(1, data)
                elif data is not None:
                    master_open = False
            if stdin_open and 0 in ready:
                data = os.read(0, 65536)
                if data:
                    _write_all(master, data)
                else:
                    stdin_open = False
                    # end of input: an EOF character (VEOF) for a program reading lines
                    try:
                        _write_all(master, b"\x04")
                    except OSError:
                        pass
            if status is None and not master_open:
                _, st = os.waitpid(pid, 0)
                status = exit_status(st)
    finally:
        signal.pthread_sigmask(signal.SIG_BLOCK, watched)
        signal.set_wakeup_fd(old_wakeup)
        for s, h in old_handlers.items():
            signal.signal(s, h)
        os.close(wake_r)
        os.close(wake_w)
        os.close(master)
    return status


def relay_attached(sock: int, *, interactive: bool) -> None:
    """`start -a` of a -t container: its monitor relays the pty over the stream socket *sock*
    (rootless.runtime.monitor); copy socket → stdout and, *interactive*, stdin → socket, until
    the monitor closes it once the container has exited. End of our input is sent as an EOF
    character (VEOF), as ``relay`` does. Ctrl-C reaches the container as a key in raw mode.
    The launcher sends a copy of the pty master first: our terminal's new sizes go to it."""
    import socket

    with socket.socket(fileno=os.dup(sock)) as s:
        _, fds, _, _ = socket.recv_fds(s, 1, 1)
    master = fds[0] if fds else None
    size_fd = terminal_size_source()
    old = None
    if master is not None and size_fd is not None:
        def resized(_sig: int, _frame: object) -> None:
            ws = get_winsize(size_fd)
            if ws:
                set_winsize(master, ws)

        old = signal.signal(signal.SIGWINCH, resized)
    try:
        _copy_attached(sock, interactive)
    finally:
        if old is not None:
            signal.signal(signal.SIGWINCH, old)
        if master is not None:
            os.close(master)


def _copy_attached(sock: int, interactive: bool) -> None:
    stdin_open = interactive
    while True:
        fds = [sock, 0] if stdin_open else [sock]
        try:
            ready, _, _ = select.select(fds, [], [])
        except InterruptedError:
            continue
        if sock in ready:
            try:
                data = os.read(sock, 65536)
            except ConnectionResetError:
                data = b""
            if not data:
                return
            _write_all(1, data)
        if stdin_open and 0 in ready:
            data = os.read(0, 65536)
            try:
                _write_all(sock, data or b"\x04")
            except BrokenPipeError:
                return
            stdin_open = bool(data)
