"""POST /containers/{id}/attach: a container's output (and input) over a hijacked connection.

Output only (no stdin asked for, or the container was not created with OpenStdin): the
client gets what the container's monitor writes to its log from the moment of the attach
(and the log so far with ``logs=1``), framed per stream without a TTY, until the container
exits. This is what `docker run` without -i and `docker start -a` use.

With stdin, before the container starts (`docker run -i`, `docker run -it`, `docker start
-ai`): the monitor keeps no stdin, so this connection's process runs the container in the
foreground as `rootless run` does (lifecycle.run_foreground), its standard streams a pty or
pipes copied to and from the client. The attach leaves a FIFO at <runroot>/api/attach/<id>;
POST /start (another connection, another process) writes to it instead of starting a
monitor, and answers once the container runs. Such a container's output goes to the client,
not to the log; it lives as long as the attach connection's process.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import select
import struct
import termios
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from rootless import lifecycle
from rootless.api import execs
from rootless.api.http import Conflict, Request
from rootless.api.streams import frame, relay, send
from rootless.errors import RootlessError
from rootless.runtime import state

if TYPE_CHECKING:
    from rootless.context import Context
    from rootless.lifecycle import Container


def _dir(ctx: Context) -> Path:
    return ctx.layout.runroot / "api" / "attach"


def _content_type(c: Container) -> str:
    return "application/vnd.docker.raw-stream" if c.config.spec.process.terminal \
        else "application/vnd.docker.multiplexed-stream"


def attach(ctx: Context, req: Request, c: Container) -> None:
    want_stdin = req.qbool("stdin")
    if want_stdin and c.config.spec.process.interactive and not c.state.running:
        _attach_interactive(ctx, req, c)
        return
    if not req.qbool("stream", False) and not req.qbool("logs", False):
        raise Conflict("attach: neither stream nor logs asked for")
    want = {s for s in ("stdout", "stderr") if req.qbool(s)}
    log_path = state.log_path(ctx.layout, c.id)
    try:
        offset = 0 if req.qbool("logs") else log_path.stat().st_size
    except FileNotFoundError:
        offset = 0
    since = time.time()
    sock, _ = req.conn.hijack(req, _content_type(c))
    tty = c.config.spec.process.terminal
    # no watch for a gone client here: the docker CLI half-closes an attach it sends no input on
    # (indistinguishable from leaving), and a send to a client that has left fails anyway
    for stream, data in follow(ctx, c.id, offset, since, req.qbool("stream", False), lambda: False):
        if stream in want and not send(sock, data if tty else frame(2 if stream == "stderr" else 1, data)):
            break
    with contextlib.suppress(OSError):
        sock.shutdown(2)


def follow(ctx: Context, cid: str, offset: int, since: float, stream: bool,
           gone: Callable[[], bool]) -> Iterator[tuple[str, bytes]]:
    """(stream, bytes) the monitor logs from *offset* on; with *stream*, until the run that is
    under way, or the next one to start after *since*, has ended, or the client has gone."""
    path = state.log_path(ctx.layout, cid)
    buf = b""
    f = None
    started = False
    delay = 0.005
    try:
        while True:
            if f is None:
                try:
                    f = open(path, "rb")  # noqa: SIM115 - kept open while following
                    f.seek(offset)
                except FileNotFoundError:
                    f = None
            chunk = f.read() if f is not None else b""
            if chunk:
                buf += chunk
                *lines, buf = buf.split(b"\n")
                for raw in lines:
                    ln = lifecycle.parse_log_line(raw)
                    if ln is not None:
                        yield ln.stream, ln.text if ln.partial else ln.text + b"\n"
                delay = 0.005
                continue
            if not stream or not state.config_path(ctx.layout, cid).exists():
                return
            try:
                st = state.read_state(ctx.layout, cid)
            except RootlessError:
                st = None
            if st is not None:
                if st.running:
                    started = True
                elif st.status == "exited" and (started or st.finished_at >= since):
                    # the monitor writes its last lines before it records the exit
                    rest = (f.read() if f is not None else b"") + buf
                    for raw in rest.split(b"\n"):
                        ln = lifecycle.parse_log_line(raw) if raw else None
                        if ln is not None:
                            yield ln.stream, ln.text if ln.partial else ln.text + b"\n"
                    return
            if gone():
                return
            time.sleep(delay)
            delay = min(delay * 2, 0.05)
    finally:
        if f is not None:
            f.close()


# --------------------------------------------------------------------------- stdin attached


def exit_file(ctx: Context, cid: str) -> Path:
    return _dir(ctx) / f"{cid}.exit"


def _fifo(ctx: Context, cid: str) -> Path:
    return _dir(ctx) / cid


def _attach_interactive(ctx: Context, req: Request, c: Container) -> None:
    d = _dir(ctx)
    d.mkdir(parents=True, exist_ok=True, mode=0o700)
    fifo = _fifo(ctx, c.id)
    fifo.unlink(missing_ok=True)
    os.mkfifo(fifo, 0o600)
    rd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    # our own writer keeps the FIFO from reporting end of file between writers
    keep = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    sock, extra = req.conn.hijack(req, _content_type(c))
    stdin_done = False  # the client half-closed: all of its input is in *extra*
    try:
        while True:
            ready, _, _ = select.select([rd] + ([] if stdin_done else [sock.fileno()]), [], [])
            if sock.fileno() in ready:
                try:
                    got = sock.recv(65536)
                except OSError:
                    return  # the client went away before the start
                if not got:
                    stdin_done = True
                extra += got
            if rd in ready and os.read(rd, 64):
                break
    finally:
        fifo.unlink(missing_ok=True)
        os.close(keep)
    spec = state.load_config(ctx.layout, c.id).spec
    tty = spec.process.terminal
    report = _dir(ctx) / f"{c.id}.result"

    def run() -> int:
        code = 125
        try:
            code = lifecycle.run_foreground(ctx, spec)
            return code
        except RootlessError as e:
            report.write_text(e.message)
            code = e.exit_code
            raise
        finally:
            if state.load_config(ctx.layout, c.id).rm:
                # the status outlives the record for POST /wait?condition=removed
                exit_file(ctx, c.id).write_text(str(code))
                with contextlib.suppress(RootlessError):
                    lifecycle.remove(ctx, c.id, force=True)

    pid, stdin_fd, outs, path = execs.spawn(ctx, run, stdin=True, tty=tty, close=(sock.fileno(), rd))
    os.close(rd)
    if path:
        (_dir(ctx) / f"{c.id}.tty").write_text(f"{path} {pid}")
    pidfd = os.pidfd_open(pid)
    try:
        relay(sock, extra, stdin=stdin_fd, outputs=outs, tty=tty, pidfd=pidfd, stdin_done=stdin_done)
    finally:
        for fd in outs:
            with contextlib.suppress(OSError):
                os.close(fd)
        os.waitpid(pid, 0)
        (_dir(ctx) / f"{c.id}.tty").unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            sock.shutdown(2)


def start_attached(ctx: Context, c: Container) -> bool:
    """POST /start for a container an interactive attach is waiting on: tell it, and return
    once the container runs (or has already ended). False when no attach waits."""
    fifo = _fifo(ctx, c.id)
    if not fifo.exists():
        return False
    report = _dir(ctx) / f"{c.id}.result"
    report.unlink(missing_ok=True)
    since = time.time()
    try:
        fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as e:
        if e.errno in (errno.ENXIO, errno.ENOENT):  # its reader is gone
            fifo.unlink(missing_ok=True)
            return False
        raise
    try:
        os.write(fd, b"s")
    finally:
        os.close(fd)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if report.exists():
            msg = report.read_text()
            report.unlink(missing_ok=True)
            raise RootlessError(msg)
        if not state.config_path(ctx.layout, c.id).exists():
            return True  # ran and was removed already
        st = state.read_state(ctx.layout, c.id)
        if st.running or (st.status == "exited" and st.finished_at >= since):
            return True
        time.sleep(0.01)
    raise RootlessError(f"container {c.config.name} did not start within 30 s of the attached client's start")


def resize_container(ctx: Context, c: Container, h: int, w: int) -> None:
    """The terminal an attached client sees: the pty of an interactive attach, else the one
    the monitor holds, reached through the container process's own stdin (/proc/PID/fd/0)."""
    if not c.config.spec.process.terminal or h <= 0 or w <= 0:
        return
    path = _dir(ctx) / f"{c.id}.tty"
    if path.exists():
        tty_path, _, session = path.read_text().partition(" ")
        execs.set_winsize(tty_path, h, w, int(session or 0))
        return
    if not c.state.running:
        return
    try:
        fd = os.open(f"/proc/{c.state.pid}/fd/0", os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError:
        return
    try:
        if os.isatty(fd):
            fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", h, w, 0, 0))
    finally:
        os.close(fd)
