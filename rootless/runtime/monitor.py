"""The monitor: one small process per detached container, the daemon's job without a daemon.

``launch`` (in the CLI) double-forks a child that calls setsid(2), so the monitor belongs to
no terminal or session of the user's, and starts the container with process.start: as a
child subreaper its parent, it can reap it. It then execve(2)s a bare interpreter
(``python -S -E`` on this file) that imports only the standard library and keeps:

  - the container's stdout and stderr pipes (or its pty master), copied into ctr.log as
    k8s-file lines: ``<RFC 3339 time> <stdout|stderr> <F|P> <text>`` (P: a partial line);
  - the container's PID 1, through a pidfd (pidfd_open(2)), reaped when it exits; the exit
    status (128+N for signal N) and time go into state.json under the container's lock;
  - whatever else the container left re-parented to it (the fuse-overlayfs daemon, a
    network helper such as slirp4netns started by the runtime): SIGTERM, then SIGKILL.

execve(2) keeps the process, its children, the child-subreaper attribute (prctl(2)) and the
file descriptors not marked close-on-exec, and sheds the CLI's modules: the monitor stays
at the resident size of a bare interpreter. The container's mounts live in its own mount
namespace and vanish with its last process.

This file runs as a script under -S: the top level imports the standard library only.
"""

from __future__ import annotations

import fcntl
import os
import select
import signal
import sys
import time

# typing and json cost the loop ~2 MB of resident memory: neither is imported at the top.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    from rootless.context import Log
    from rootless.layout import Layout
    from rootless.spec import Spec

_CHUNK = 65536
_NO_CODE = -987654321  # placeholder for the exit code and time in the serialised exit record
_PARTIAL_MAX = 16384  # a line longer than this is logged in parts (P), as conmon does


# --------------------------------------------------------------------------- in the CLI


def launch(layout: Layout, log: Log, spec: Spec, rm_argv: list[str] | None = None) -> int:
    """Start *spec* under a new monitor; the container's PID once its command is exec'd.

    Raises the error that stopped it (CommandNotFoundError → 127, NotExecutableError → 126,
    RootlessError → 125), as `run` would.
    """
    import json

    from rootless import errors
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
            _monitor(layout, log, spec, ready_w, rm_argv)
        except BaseException as e:
            try:
                os.write(ready_w, json.dumps({"error": f"monitor: {type(e).__name__}: {e}"}).encode())
            except OSError:
                pass
        os._exit(125)
    os.close(ready_w)
    os.waitpid(pid, 0)
    data = b""
    while chunk := os.read(ready_r, 65536):
        data += chunk
    os.close(ready_r)
    try:
        msg: dict[str, Any] = json.loads(data) if data else {}
    except ValueError:
        msg = {}
    if "pid" in msg:
        return int(msg["pid"])
    cls = getattr(errors, str(msg.get("type")), None)
    if not (isinstance(cls, type) and issubclass(cls, errors.RootlessError)):
        cls = errors.RootlessError
    raise cls(str(msg.get("error") or f"the monitor of container {spec.id[:12]} exited before starting it"),
              hint=msg.get("hint"))


def _monitor(layout: Layout, log: Log, spec: Spec, ready: int, rm_argv: list[str] | None) -> None:
    """In the monitor (session leader's child): start the container, report, become the loop."""
    import dataclasses
    import json

    from rootless.errors import RootlessError
    from rootless.runtime import process, state
    from rootless.runtime.run import cgroup_placer, write_files

    os.chdir("/")
    for s in (signal.SIGHUP, signal.SIGINT, signal.SIGQUIT, signal.SIGPIPE):
        signal.signal(s, signal.SIG_IGN)
    null = os.open("/dev/null", os.O_RDWR)
    os.dup2(null, 0)
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
            started = process.start(spec, log, place=place)
    except RootlessError as e:
        os.write(ready, json.dumps({"error": e.message, "hint": e.hint, "type": type(e).__name__}).encode())
        os._exit(1)
    # Our copies of the pipes' write ends go: the container holds the only ones now.
    os.dup2(null, 1)
    os.dup2(null, 2)
    os.close(null)
    if started.master is not None:
        fds["pty"] = started.master
        os.set_inheritable(started.master, True)
    keep: list[int] = []
    ports: list[dict[str, Any]] = []
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
    os.write(ready, json.dumps({"pid": started.pid}).encode())
    os.close(ready)
    # The exit record, serialised now: the loop fills in the two placeholders (no json there).
    done = json.dumps(dataclasses.asdict(dataclasses.replace(
        st, status="exited", exit_code=_NO_CODE, finished_at=float(_NO_CODE))))
    argv = [sys.executable, "-S", "-E", "-s", os.path.abspath(__file__), str(started.pid),
            str(state.log_path(layout, spec.id)), str(state.config_path(layout, spec.id)),
            str(state.state_path(layout, spec.id)), done, ",".join(f"{k}:{v}" for k, v in fds.items()),
            ",".join(str(fd) for fd in keep), cg.dir if cg else "", *(rm_argv or [])]
    os.execv(sys.executable, argv)


# --------------------------------------------------------------------------- the loop (bare interpreter)


def _stamp() -> bytes:
    ns = time.time_ns()
    return (time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ns // 1_000_000_000))
            + f".{ns % 1_000_000_000:09d}Z").encode()


class _Log:
    def __init__(self, path: str) -> None:
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        self.partial: dict[str, bytes] = {}

    def feed(self, stream: str, data: bytes) -> None:
        buf = self.partial.get(stream, b"") + data
        lines = buf.split(b"\n")
        rest = lines.pop()
        out = [b"%s %s F %s\n" % (_stamp(), stream.encode(), ln.rstrip(b"\r")) for ln in lines]
        while len(rest) > _PARTIAL_MAX:
            out.append(b"%s %s P %s\n" % (_stamp(), stream.encode(), rest[:_PARTIAL_MAX]))
            rest = rest[_PARTIAL_MAX:]
        self.partial[stream] = rest
        if out:
            self._write(b"".join(out))

    def flush(self) -> None:
        for stream, rest in self.partial.items():
            if rest:
                self._write(b"%s %s P %s\n" % (_stamp(), stream.encode(), rest))
        self.partial.clear()

    def _write(self, data: bytes) -> None:
        try:
            os.write(self.fd, data)
        except OSError:
            pass  # a full disk must not stop the reaping


def _read(fd: int) -> bytes | None:
    """Data, b"" at end of file, None when nothing is ready."""
    try:
        return os.read(fd, _CHUNK)
    except BlockingIOError:
        return None
    except OSError:
        return b""  # EIO from a pty master whose every slave is closed


def children() -> list[int]:
    """Our child processes, as /proc/self/task/*/children lists them (proc(5))."""
    out: list[int] = []
    try:
        tasks = os.listdir("/proc/self/task")
    except OSError:
        return out
    for tid in tasks:
        try:
            with open(f"/proc/self/task/{tid}/children") as f:
                out += [int(p) for p in f.read().split()]
        except OSError:
            continue
    return out


def stop_children(grace: float = 2.0, on_kill: Callable[[int], None] | None = None,
                  reap_all: bool = True) -> None:
    """SIGTERM every child, SIGKILL those still there after ``grace`` seconds (``on_kill`` is
    told which), and reap them. Used by the monitor and by a foreground run, both child
    subreapers, for what a container leaves behind (fuse-overlayfs, slirp4netns)."""
    pids = children()
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + grace
    for pid in pids:
        while True:
            try:
                done, _ = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                break
            if done:
                break
            if time.monotonic() > deadline:
                if on_kill is not None:
                    on_kill(pid)
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                break
            time.sleep(0.01)
    while reap_all:  # anything else finished meanwhile
        try:
            if os.waitpid(-1, os.WNOHANG)[0] == 0:
                break
        except ChildProcessError:
            break


def oom_kills(cgroup: str) -> int:
    """How many processes the OOM killer ended in the cgroup at *cgroup* (memory.events
    ``oom_kill``); rootless.runtime.cgroups uses this one too."""
    try:
        with open(os.path.join(cgroup, "memory.events")) as f:
            for line in f:
                key, _, value = line.partition(" ")
                if key == "oom_kill":
                    return int(value)
    except (OSError, ValueError):
        pass
    return 0


def remove_cgroup(cgroup: str, wait: float = 2.0) -> None:
    """Kill what is left in the cgroup (cgroup.kill, Linux 5.14) and remove it, waiting up to
    *wait* seconds while its last processes exit (EBUSY)."""
    try:
        with open(os.path.join(cgroup, "cgroup.kill"), "w") as f:
            f.write("1")
    except OSError:
        pass
    deadline = time.monotonic() + wait
    while True:
        try:
            os.rmdir(cgroup)
            return
        except FileNotFoundError:
            return
        except OSError as e:
            if e.errno != 16 or time.monotonic() > deadline:  # EBUSY
                return
        time.sleep(0.01)


def _record_exit(config: str, state_file: str, record: str, code: int, oom: bool = False) -> None:
    """state.json ← the exit record, under the container's lock (nothing else writes the record
    while the container runs, so the record serialised at start is the one to complete)."""
    try:
        fd = os.open(config, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return  # removed meanwhile (rm -f)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        text = record.replace(f'"exit_code": {_NO_CODE}', f'"exit_code": {code}').replace(
            f'"finished_at": {float(_NO_CODE)}', f'"finished_at": {time.time()}')
        if oom:
            text = text.replace('"oom_killed": false', '"oom_killed": true')
        tmp = f"{state_file}.{os.getpid()}.tmp"
        try:
            with open(tmp, "w") as f:
                f.write(text)
            os.replace(tmp, state_file)
        except OSError:
            pass
    finally:
        os.close(fd)


def main(argv: list[str]) -> int:
    """argv: PID, log, config.json, state.json, exit record, NAME:FD,... (stdout, stderr, pty),
    FD,... to hold until the end (slirp4netns's exit fd, the cgroup supervisor's pipe), the
    container's cgroup directory (or ""), then the command to exec last (--rm)."""
    pid = int(argv[0])
    log_file, config, state_file, record = argv[1:5]
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_SETMASK, ())
    log = _Log(log_file)
    streams: dict[int, str] = {}
    for item in filter(None, argv[5].split(",")):
        name, _, num = item.partition(":")
        streams[int(num)] = "stdout" if name == "pty" else name
    keep = [int(num) for num in argv[6].split(",") if num]
    cgroup = argv[7]
    then = argv[8:]
    pidfd = os.pidfd_open(pid)
    while True:
        ready, _, _ = select.select([*streams, pidfd], [], [])
        for fd in ready:
            if fd == pidfd:
                continue
            data = _read(fd)
            if data:
                log.feed(streams[fd], data)
            elif data == b"":
                del streams[fd]
                os.close(fd)
        if pidfd in ready:
            break
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    code = 128 - code if code < 0 else code
    # What the container wrote just before it ended; a process it left may still hold the
    # write end, so no waiting for end of file.
    for fd, name in list(streams.items()):
        os.set_blocking(fd, False)
        while data := _read(fd):
            log.feed(name, data)
    log.flush()
    _record_exit(config, state_file, record, code, bool(cgroup) and oom_kills(cgroup) > 0)
    if cgroup:
        remove_cgroup(cgroup)
    for fd in keep:
        os.close(fd)
    stop_children()
    if then:
        os.execv(then[0], then)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
