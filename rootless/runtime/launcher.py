"""Starting a detached container under its monitor (the CLI side of rootless.runtime.monitor).

``launch`` double-forks a child that calls setsid(2), so the monitor belongs to no terminal or
session of the user's, and starts the container with process.start: as a child subreaper its
parent, it can reap it. It writes the monitor's arguments to ``monitor.args`` in the container's
run directory, then execve(2)s a bare interpreter on rootless/runtime/monitor.py, which reads them.

execve(2) keeps the process, its children, the child-subreaper attribute (prctl(2)) and the file
descriptors not marked close-on-exec, and sheds the CLI's modules: the monitor stays at the
resident size of a bare interpreter. The container's mounts live in its own mount namespace and
vanish with its last process.

The child tells the CLI the container's PID (``P<pid>``) or why it could not start it, in
rootless.runtime.childerr's format.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from typing import TYPE_CHECKING

from rootless.runtime import childerr

if TYPE_CHECKING:
    from rootless.context import Log
    from rootless.layout import Layout
    from rootless.spec import Spec

ARGS_FILE = "monitor.args"


def launch(layout: Layout, log: Log, spec: Spec, rm_argv: list[str] | None = None, *,
           died: tuple[str, str] | None = None, log_file: str | None = None, log_max_size: int = 0,
           stdin: int | None = None, terminal: int | None = None, winsize: bytes | None = None) -> int:
    """Start ``spec`` under a new monitor; the container's PID once its command is exec'd.
    ``stdin``: a descriptor the container reads as its standard input (`start -a` of a container
    made with -i), instead of /dev/null. ``terminal``: a connected stream socket over which the
    monitor relays a -t container's pty (`start -a`): the output (logged too) goes out on it,
    what comes in goes to the pty; ``winsize``: the pty's size to begin with.

    Raises the error that stopped it (CommandNotFoundError → 127, NotExecutableError → 126,
    RootlessError → 125), as `run` would. ``rm_argv`` is exec'd by the monitor at the end (--rm,
    --restart). ``died``: the events log and the `died` event (JSON) the monitor appends to it,
    with the exit code and time, when the container ends; ``log_file``: where the output goes
    instead of ctr.log (/dev/null: --log-driver none); ``log_max_size``: rotate it there.
    """
    extra = [*((("event_log", died[0]), ("died", died[1])) if died else ()),
             *((("log", log_file),) if log_file else ()), ("log_max", str(log_max_size))]
    from rootless.errors import RootlessError
    from rootless.runtime import state

    state.state_dir(layout, spec.id).mkdir(parents=True, exist_ok=True, mode=0o700)
    ready_r, ready_w = os.pipe2(os.O_CLOEXEC)
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(ready_r)
            os.setsid()
            if os.fork() != 0:
                os._exit(0)
            _start(layout, log, spec, ready_w, rm_argv, extra, stdin, terminal, winsize)
        except BaseException as e:
            childerr.report(ready_w, "monitor", e)
        os._exit(125)
    os.close(ready_w)
    os.waitpid(pid, 0)
    data = childerr.read_all(ready_r)
    os.close(ready_r)
    if data.startswith(b"P"):
        return int(data[1:].split(b"\n", 1)[0])
    failure = childerr.decode(data)
    if failure is None:
        raise RootlessError(f"the monitor of container {spec.id[:12]} exited before starting it")
    return _raise(failure)


def _raise(failure: childerr.ChildFailure) -> int:
    from rootless import errors

    cls = getattr(errors, failure.type, None)
    typed = isinstance(cls, type) and issubclass(cls, errors.RootlessError)
    raise failure.error("" if typed else "monitor: ")


def write_args(path: str, lines: list[tuple[str, str]]) -> None:
    """The monitor's arguments: one ``key value`` line each (a value holds no newline)."""
    tmp = f"{path}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "w") as f:
        for key, value in lines:
            if "\n" in value:
                raise ValueError(f"monitor argument {key}: {value!r} holds a newline")
            f.write(f"{key} {value}\n")
    os.replace(tmp, path)


def _keep_log_stream(log: Log) -> None:
    """Our messages (`--log-level debug`) keep going where they went: standard output and error
    become the container's pipes to its log below, and our lines are not the container's output.
    A copy of the descriptor (close-on-exec: it goes with the execve(2) of the loop) keeps them
    on the user's terminal while the container starts."""
    try:
        fd = log.stream.fileno()
    except (AttributeError, OSError, ValueError):
        return  # not a file descriptor (a buffer): the dup2(2)s below do not touch it
    if fd in (0, 1, 2):
        log.stream.flush()
        log.stream = os.fdopen(os.dup(fd), "w", buffering=1)


def _start(layout: Layout, log: Log, spec: Spec, ready: int, rm_argv: list[str] | None,
           extra: list[tuple[str, str]], stdin: int | None = None, terminal: int | None = None,
           winsize: bytes | None = None) -> None:
    """In the monitor (the session leader's child): start the container, report, become the loop."""
    import dataclasses
    import json

    from rootless.errors import RootlessError
    from rootless.runtime import monitor, process, state
    from rootless.runtime.run import cgroup_placer, write_files

    os.chdir("/")
    for s in (signal.SIGHUP, signal.SIGINT, signal.SIGQUIT, signal.SIGPIPE):
        signal.signal(s, signal.SIG_IGN)
    _keep_log_stream(log)
    null = os.open("/dev/null", os.O_RDWR)
    os.dup2(null if stdin is None else stdin, 0)
    fds: dict[str, int] = {}
    if spec.process.terminal:
        os.dup2(null, 1)
        os.dup2(null, 2)
    else:
        for fd, name in ((1, "stdout"), (2, "stderr")):
            r, w = os.pipe()
            os.dup2(w, fd)
            os.close(w)
            fds[name] = r
            os.set_inheritable(r, True)
    try:
        place = cgroup_placer(spec, log)
        write_files(spec)
        with process.blocked((*process.FORWARDED, signal.SIGCHLD)):
            started = process.start(spec, log, place=place, winsize=winsize)
    except RootlessError as e:
        childerr.report(ready, "start", e)
        os._exit(1)
    # Our copies of the pipes' write ends (and of the caller's stdin) go: the container holds them now.
    os.dup2(null, 0)
    os.dup2(null, 1)
    os.dup2(null, 2)
    os.close(null)
    if started.master is not None:
        fds["pty"] = started.master
        os.set_inheritable(started.master, True)
        if terminal is not None:
            # close-on-exec until now: the container's processes never held it
            os.set_inheritable(terminal, True)
            fds["attach"] = terminal
            # first on the socket, before the loop relays anything: a copy of the master, with
            # which the attached CLI passes its terminal's size changes on (TIOCSWINSZ)
            import socket

            with socket.socket(fileno=os.dup(terminal)) as s:
                socket.send_fds(s, [b"M"], [started.master])
    keep: list[int] = []
    ports: list[dict[str, object]] = []
    if started.network is not None:
        # slirp4netns ends when the write end of its --exit-fd closes: the loop holds it
        # across execve(2) and drops it when the container has exited (or when it dies).
        exit_fd = started.network.exit_fd
        os.set_inheritable(exit_fd, True)
        keep.append(exit_fd)
        ports = [dataclasses.asdict(p) for p in started.network.published]
    cg = started.cgroup
    if cg is not None and cg.holder_fd >= 0:
        # the scope's supervisor lives until the loop has read the exit (and closes this)
        os.set_inheritable(cg.holder_fd, True)
        keep.append(cg.holder_fd)
    me = os.getpid()
    st = state.State(status="running", pid=started.pid, pid_start=state.proc_start(started.pid),
                     monitor_pid=me, monitor_start=state.proc_start(me), started_at=time.time(),
                     boot_id=state.boot_id(), ports=tuple(ports), cgroup=cg.path if cg else "",
                     cgroup_manager=cg.manager if cg else "", cgroup_unit=cg.unit if cg else "")
    with state.locked(layout, spec.id):
        state.write_state(layout, spec.id, st)
    marker = layout.containers / spec.id / "started"
    if not marker.exists():
        marker.touch()
    # What the loop needs; the exit record is this state as "exited", which the loop completes with
    # the exit status, the time and the OOM kill once it knows them.
    args = [("pid", str(started.pid)), ("log", str(state.log_path(layout, spec.id))),
            ("config", str(state.config_path(layout, spec.id))), ("state", str(state.state_path(layout, spec.id))),
            *(("stream", f"{name} {fd}") for name, fd in fds.items()), *(("keep", str(fd)) for fd in keep),
            ("cgroup", cg.dir if cg else ""), *(("then", a) for a in rm_argv or []),
            ("record", json.dumps(dataclasses.asdict(dataclasses.replace(st, status="exited")))), *extra]
    args_path = str(state.state_dir(layout, spec.id) / ARGS_FILE)
    write_args(args_path, args)
    # The log exists before the start is reported: a follower that opens it once the start has
    # returned (docker-py's run(): logs, wait, remove) reads every line even when the container is
    # removed before it reads; created by the loop instead, it would appear only after the
    # interpreter's start-up, and a follower that found nothing could miss the container's whole life.
    try:
        os.close(os.open(dict(args)["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600))
    except OSError:
        pass  # the loop reports it
    os.write(ready, b"P%d\n" % started.pid)
    os.close(ready)
    os.execv(sys.executable, [sys.executable, "-S", "-E", "-s", os.path.abspath(monitor.__file__), args_path])
