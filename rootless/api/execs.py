"""/containers/{id}/exec and /exec/{id}/…: exec instances, started over a hijacked connection.

An exec instance is a small record in the run root (<runroot>/api/exec/<id>.json), because
its create, start, resize and inspect may arrive on different connections, which are
different processes here. ``start`` forks: the child takes pipes (or a pty) as its standard
streams and runs the engine's exec, exactly what `rootless exec` runs; the connection's
process copies between them and the client, then records the exit code for inspect.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import struct
import sys
import termios
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rootless import lifecycle
from rootless.api.http import BadRequest, Conflict, NotFound, Request
from rootless.api.streams import relay
from rootless.errors import RootlessError
from rootless.runtime.state import NoSuchContainer

if TYPE_CHECKING:
    from rootless.context import Context


def _dir(ctx: Context) -> Path:
    return ctx.layout.runroot / "api" / "exec"


def _path(ctx: Context, eid: str) -> Path:
    if not eid.isalnum():
        raise NotFound(f"No such exec instance: {eid}")
    return _dir(ctx) / f"{eid}.json"


def _save(ctx: Context, eid: str, rec: dict[str, Any]) -> None:
    d = _dir(ctx)
    d.mkdir(parents=True, exist_ok=True, mode=0o700)
    p = _path(ctx, eid)
    tmp = p.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(rec))
    os.replace(tmp, p)


def _load(ctx: Context, eid: str) -> dict[str, Any]:
    try:
        data = json.loads(_path(ctx, eid).read_text())
    except (OSError, ValueError):
        raise NotFound(f"No such exec instance: {eid}") from None
    return data  # type: ignore[no-any-return]


def create(ctx: Context, req: Request) -> None:
    ref = req.params["id"]  # type: ignore[attr-defined]
    try:
        cid = lifecycle.resolve(ctx, ref)
        c = lifecycle.load(ctx, cid)
    except NoSuchContainer:
        raise NotFound(f"No such container: {ref}") from None
    body = req.json()
    cmd = body.get("Cmd")
    if not cmd or not isinstance(cmd, list):
        raise BadRequest("exec: Cmd must be a non-empty list")
    if not c.state.running:
        raise Conflict(f"Container {cid} is not running")
    if body.get("Privileged"):
        raise BadRequest("exec: Privileged is not supported by rootless")
    eid = os.urandom(32).hex()
    _save(ctx, eid, {
        "ID": eid, "ContainerID": cid, "Running": False, "ExitCode": None, "Pid": 0,
        "OpenStdin": bool(body.get("AttachStdin")), "OpenStdout": bool(body.get("AttachStdout", True)),
        "OpenStderr": bool(body.get("AttachStderr", True)), "Tty": bool(body.get("Tty")),
        "Cmd": [str(a) for a in cmd], "Env": [str(e) for e in body.get("Env") or []],
        "WorkingDir": body.get("WorkingDir") or None, "User": body.get("User") or None, "TtyPath": "",
    })
    req.conn.respond_json(201, {"Id": eid})


def inspect(ctx: Context, req: Request) -> None:
    rec = _load(ctx, req.params["id"])  # type: ignore[attr-defined]
    req.conn.respond_json(200, {
        "ID": rec["ID"], "Running": rec["Running"], "ExitCode": rec["ExitCode"], "Pid": rec["Pid"],
        "ContainerID": rec["ContainerID"], "OpenStdin": rec["OpenStdin"], "OpenStdout": rec["OpenStdout"],
        "OpenStderr": rec["OpenStderr"], "CanRemove": False, "DetachKeys": "",
        "ProcessConfig": {"tty": rec["Tty"], "entrypoint": rec["Cmd"][0], "arguments": rec["Cmd"][1:],
                          "privileged": False, "user": rec["User"] or ""},
    })


def set_winsize(tty_path: str, h: int, w: int, session: int = 0) -> None:
    """TIOCSWINSZ (ioctl_tty(2)) through any descriptor of the terminal: the kernel sends
    SIGWINCH to its foreground process group, which passes the size on. *session*: the
    process group of the session we started on it (TIOCGPGRP needs the terminal to be the
    caller's controlling terminal, so it cannot be asked)."""
    if not tty_path or h <= 0 or w <= 0:
        return
    try:
        fd = os.open(tty_path, os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError:
        return
    try:
        fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", h, w, 0, 0))
    except OSError:
        return
    finally:
        os.close(fd)
    if session > 0:
        _rewinch(session)


def _rewinch(pgrp: int) -> None:
    """SIGWINCH again, a little later: the client's first resize comes right after the start,
    often before the process on the terminal (`rootless exec`, a foreground run) has set up
    the handler that passes the size on, and SIGWINCH's default action is to be ignored."""
    if os.fork() != 0:
        return
    try:
        for pause in (0.2, 0.5, 1.0):
            time.sleep(pause)
            os.killpg(pgrp, signal.SIGWINCH)
    except OSError:
        pass
    os._exit(0)


def resize(ctx: Context, req: Request) -> None:
    rec = _load(ctx, req.params["id"])  # type: ignore[attr-defined]
    set_winsize(rec.get("TtyPath") or "", req.qint("h", 0) or 0, req.qint("w", 0) or 0, int(rec.get("Pid") or 0))
    req.conn.respond(200, b"", "text/plain")


def run_child(ctx: Context, run: Any, stdio: tuple[int, int, int], tty: bool) -> None:
    """In a forked child: *stdio* become fds 0, 1, 2 (a pty slave also the controlling
    terminal, in a session of its own), then *run*() as the CLI would; exits with its status."""
    code = 125
    # the service's own messages (warnings, debug) stay on the service's stderr
    ctx.log.stream = os.fdopen(os.dup(2), "w")
    try:
        if tty:
            os.setsid()
            fcntl.ioctl(stdio[0], termios.TIOCSCTTY, 0)
        for target, fd in enumerate(stdio):
            os.dup2(fd, target)
        for fd in set(stdio):
            if fd > 2:
                os.close(fd)
        sys.stdin = open(0, closefd=False)  # noqa: SIM115 - the process ends with them
        sys.stdout = open(1, "w", closefd=False)  # noqa: SIM115
        sys.stderr = open(2, "w", closefd=False)  # noqa: SIM115
        code = int(run())
    except RootlessError as e:
        try:
            os.write(2, f"Error: {e.message}\n".encode())
        except OSError:
            pass
        code = e.exit_code
    except BaseException as e:  # one line, as cli.py would print it
        try:
            os.write(2, f"Error: internal error: {type(e).__name__}: {e}\n".encode())
        except OSError:
            pass
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        except (OSError, ValueError):
            pass
        os._exit(code)


def spawn(ctx: Context, run: Any, *, stdin: bool, tty: bool, close: tuple[int, ...] = ()) \
        -> tuple[int, int | None, dict[int, int], str]:
    """Fork *run* with pipes or a pty: (pid, the fd to write its stdin to or None,
    output fd → stream number, the pty's path or "")."""
    if tty:
        master, slave = os.openpty()
        path = os.ttyname(slave)
        # a terminal's usual size until the client's resize arrives (0x0 breaks full-screen programs)
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
        pid = os.fork()
        if pid == 0:
            os.close(master)
            for fd in close:
                os.close(fd)
            run_child(ctx, run, (slave, slave, slave), True)
        os.close(slave)
        return pid, master if stdin else None, {master: 1}, path
    null = os.open(os.devnull, os.O_RDWR)
    in_r, in_w = os.pipe() if stdin else (null, -1)
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        for fd in (out_r, err_r, *close, *((in_w,) if in_w >= 0 else ())):
            os.close(fd)
        run_child(ctx, run, (in_r, out_w, err_w), False)
    for fd in (out_w, err_w, in_r if stdin else null):
        os.close(fd)
    if stdin:
        os.close(null)
    return pid, (in_w if stdin else None), {out_r: 1, err_r: 2}, ""


def start(ctx: Context, req: Request) -> None:
    eid = req.params["id"]  # type: ignore[attr-defined]
    rec = _load(ctx, eid)
    body = req.json()
    if rec["Running"] or rec["ExitCode"] is not None:
        raise Conflict(f"exec instance {eid} has already been started")
    tty = bool(body.get("Tty", rec["Tty"]))
    cid = rec["ContainerID"]

    def run() -> int:
        return lifecycle.exec_(ctx, cid, rec["Cmd"], interactive=rec["OpenStdin"], tty=tty, env=rec["Env"],
                               workdir=rec["WorkingDir"], user=rec["User"])

    try:
        c = lifecycle.load(ctx, cid)
    except NoSuchContainer:
        raise NotFound(f"No such container: {cid}") from None
    if not c.state.running:
        raise Conflict(f"Container {cid} is not running")
    if body.get("Detach"):
        pid, _, outs, path = spawn(ctx, run, stdin=False, tty=False)
        for fd in outs:
            os.close(fd)
        _save(ctx, eid, {**rec, "Running": True, "Pid": pid})
        req.conn.respond(200, b"{}\n")
        _finish(ctx, eid, pid)
        return
    # The command starts only once the 101 is sent: output written beside the response's head
    # can land in the client's HTTP read-ahead buffer, which clients such as docker-py drop when
    # they switch to the raw socket. The PID is recorded before the 101: the client's first
    # resize follows it at once.
    gate_r, gate_w = os.pipe2(os.O_CLOEXEC)

    def gated() -> int:
        os.close(gate_w)
        return run() if os.read(gate_r, 1) == b"G" else 125

    try:
        pid, stdin_fd, outs, path = spawn(ctx, gated, stdin=rec["OpenStdin"], tty=tty,
                                          close=(req.conn.sock.fileno(),))
        os.close(gate_r)
        _save(ctx, eid, {**rec, "Running": True, "Pid": pid, "TtyPath": path})
        sock, extra = req.conn.hijack(req, "application/vnd.docker.raw-stream" if tty
                                      else "application/vnd.docker.multiplexed-stream")
        os.write(gate_w, b"G")
    finally:
        os.close(gate_w)
    pidfd = os.pidfd_open(pid)
    relay(sock, extra, stdin=stdin_fd, outputs=outs, tty=tty, pidfd=pidfd)
    for fd in outs:
        try:
            os.close(fd)
        except OSError:
            pass
    _finish(ctx, eid, pid)
    try:
        sock.shutdown(2)
    except OSError:
        pass


def _finish(ctx: Context, eid: str, pid: int) -> None:
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    rec = _load(ctx, eid)
    _save(ctx, eid, {**rec, "Running": False, "ExitCode": 128 - code if code < 0 else code, "Pid": 0})
