"""An engine call whose printed output is the response (build, push): run in a child process
whose stdout and stderr are a pipe the handler reads and turns into Docker's JSON messages.

The engine prints its progress (the builder's steps, a RUN's own output, push's per-blob
lines) to fds 1 and 2, as the CLI shows them; the child points both at a pipe, so nothing
the engine does needs to know it is serving an API. The handler process relays what
arrives, line by line, until the child has exited (a pidfd says when: a helper the engine
left behind may still hold the pipe), then reads the call's result, or its error, from a
second pipe. A client that leaves mid-call interrupts the child with SIGINT, the signal
Ctrl-C sends the CLI, so the call cleans up as it does there (then SIGTERM and SIGKILL if it
does not end: ESCALATION).
"""

from __future__ import annotations

import codecs
import contextlib
import json
import os
import select
import signal
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from rootless.api.http import ClientGone
from rootless.api.streams import client_gone
from rootless.errors import RootlessError

if TYPE_CHECKING:
    from rootless.api.http import Request


class CallFailed(Exception):
    """The call raised: its one-line message (with the hint) and, for a RUN that failed, the
    command's exit status (Docker's errorDetail code)."""

    def __init__(self, message: str, code: int | None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


def _interrupted(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # SIGTERM too: the call cleans up as after Ctrl-C


def _child(fn: Callable[[], Any], out_w: int, res_w: int) -> None:
    payload: dict[str, Any]
    try:
        os.dup2(out_w, 1)
        os.dup2(out_w, 2)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.close(null)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, _interrupted)
        payload = {"result": fn()}
    except RootlessError as e:
        code = getattr(e, "exit_code", None)
        payload = {"error": f"{e.message} ({e.hint})" if e.hint else e.message,
                   "code": code if isinstance(code, int) else None}
    except KeyboardInterrupt:
        payload = {"error": "interrupted: the client left", "code": None}
    except BaseException as e:  # a bug: one line for the client
        payload = {"error": f"internal error: {type(e).__name__}: {e}", "code": None}
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    with contextlib.suppress(OSError):
        os.write(res_w, json.dumps(payload).encode())
    os._exit(0)


def run(req: Request, fn: Callable[[], Any], on_line: Callable[[str], None]) -> Any:
    """Call ``fn()`` in a child, pass each line it prints to ``on_line`` (the last one may lack
    its newline), and return what it returned (JSON-able). Raises CallFailed with its error,
    ClientGone when the client left (the child is interrupted and reaped first)."""
    out_r, out_w = os.pipe2(os.O_CLOEXEC)
    res_r, res_w = os.pipe2(os.O_CLOEXEC)
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    pid = os.fork()
    if pid == 0:
        try:
            os.setpgid(0, 0)  # its own group, interrupted as a whole (_interrupt)
            os.close(out_r)
            os.close(res_r)
            req.conn.sock.close()  # only the handler speaks to the client
        finally:
            _child(fn, out_w, res_w)
    with contextlib.suppress(OSError):
        os.setpgid(pid, pid)  # as the child does: whichever runs first, the group exists
    os.close(out_w)
    os.close(res_w)
    try:
        return _relay(req, pid, out_r, res_r, on_line)
    finally:
        os.close(out_r)
        os.close(res_r)


# After the client left: SIGINT at once (Ctrl-C), then SIGTERM, then SIGKILL, each after the
# seconds given if the call is still running. A RUN step's container gets the signals its
# runtime forwards to the command; a shell waiting for a foreground command defers SIGINT
# until that command ends (its own Ctrl-C would have reached the command's process group
# too), but not SIGTERM.
ESCALATION = ((signal.SIGINT, 0.0), (signal.SIGTERM, 3.0), (signal.SIGKILL, 20.0))


def _interrupt(pid: int, sig: int = signal.SIGINT) -> None:
    """Signal the call's process group."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def _relay(req: Request, pid: int, out_r: int, res_r: int, on_line: Callable[[str], None]) -> Any:
    pidfd = os.pidfd_open(pid)
    os.set_blocking(out_r, False)
    decode = codecs.getincrementaldecoder("utf-8")(errors="replace")
    pending = ""
    sock = req.conn.sock.fileno()
    exited = eof = gone = False
    watch_sock = True
    gone_at = 0.0
    steps = list(ESCALATION)
    try:
        while not (eof and exited):
            watch = [fd for fd, on in ((out_r, not eof), (pidfd, not exited), (sock, watch_sock and not exited))
                     if on]
            timeout: float | None = None
            if exited:
                timeout = 0  # once the child is gone, only what its pipe already holds is read
            elif gone and steps:
                timeout = max(0.0, gone_at + steps[0][1] - time.monotonic())
            try:
                ready, _, _ = select.select(watch, [], [], timeout)
            except InterruptedError:
                continue
            if gone and not exited and steps and time.monotonic() >= gone_at + steps[0][1]:
                _interrupt(pid, steps.pop(0)[0])
            if not ready:
                if exited:
                    break  # exited, output drained; a helper it left may still hold the pipe
                continue
            if pidfd in ready:
                exited = True
            if sock in ready:
                watch_sock = False  # the client spoke or left: either way, no need to watch it again
                if client_gone(req.conn.sock):
                    gone, gone_at = True, time.monotonic()
            if out_r in ready:
                try:
                    data = os.read(out_r, 65536)
                except BlockingIOError:
                    continue
                if not data:
                    eof = True
                    continue
                pending += decode.decode(data)
                *lines, pending = pending.split("\n")
                try:
                    for line in lines if not gone else ():
                        on_line(line + "\n")
                except ClientGone:
                    gone, gone_at = True, time.monotonic()
    finally:
        if not exited and not gone:
            _interrupt(pid)  # the handler failed: the call must not outlive it
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)
        os.close(pidfd)
    pending += decode.decode(b"", final=True)
    if pending and not gone:
        on_line(pending)
    if gone:
        raise ClientGone()
    raw = b""
    os.set_blocking(res_r, False)
    with contextlib.suppress(BlockingIOError):
        while chunk := os.read(res_r, 65536):
            raw += chunk
    try:
        payload = json.loads(raw)
    except ValueError:
        raise CallFailed("the call ended without a result (killed?)", None) from None
    if "error" in payload:
        raise CallFailed(str(payload["error"]), payload.get("code"))
    return payload.get("result")
