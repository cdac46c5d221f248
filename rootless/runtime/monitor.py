"""The monitor: one small process per detached container, the daemon's job without a daemon.

rootless.runtime.launcher starts the container and then execve(2)s a bare interpreter
(``python -S -E -s`` on this file, with the path of ``monitor.args`` in the container's run
directory) that imports only the standard library and this package's reap module, and keeps:

  - the container's stdout and stderr pipes (or its pty master), copied into ctr.log as
    k8s-file lines: ``<RFC 3339 time> <stdout|stderr> <F|P> <text>`` (P: a partial line);
  - for `start -a` of a -t container, a stream socket to the attached CLI: the pty's output
    goes out on it as it is (and into the log), what comes in goes to the pty (the user's
    keys); it closes once the container has exited, and is dropped if the CLI goes first;
  - the container's PID 1, through a pidfd (pidfd_open(2)), reaped when it exits; the exit
    status (128+N for signal N) and time go into state.json under the container's lock;
  - whatever else the container left re-parented to it (the fuse-overlayfs daemon, a
    network helper such as slirp4netns started by the runtime): SIGTERM, then SIGKILL.

``monitor.args`` holds one ``key value`` line each: pid, log, config, state (paths), stream
(``NAME FD``: stdout, stderr, pty, or attach: the socket above),
keep (an FD held until the end: slirp4netns's exit fd, the
cgroup supervisor's pipe), cgroup (the container's cgroup directory, or empty), then (the words
of a command exec'd last, for --rm and --restart), record (the state to write once the container has
exited, as JSON; read only then, because json costs the loop resident memory while it runs), log_max
(rotate the log at this size; 0: never), and event_log and died (the events log and the `died` event
to append to it, completed with the exit code and time).
"""

from __future__ import annotations

import fcntl
import os
import select
import signal
import sys
import time

_CHUNK = 65536
_PARTIAL_MAX = 16384  # a line longer than this is logged in parts (P), as conmon does


def _stamp() -> bytes:
    ns = time.time_ns()
    return (time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ns // 1_000_000_000))
            + f".{ns % 1_000_000_000:09d}Z").encode()


class LogWriter:
    """ctr.log in k8s-file lines; with ``max_size`` (--log-opt max-size), rotated as conmon
    rotates it: a write that would pass the size starts a fresh file (renamed over the old one, so
    a reader sees one or the other), and the log never holds more than ``max_size`` bytes."""

    def __init__(self, path: str, max_size: int = 0) -> None:
        self.path, self.max_size = path, max_size
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        self.size = os.fstat(self.fd).st_size
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
            if self.max_size and self.size + len(data) > self.max_size and self.path != os.devnull:
                self._rotate()
                data = data[-self.max_size:]
            os.write(self.fd, data)
            self.size += len(data)
        except OSError:
            pass  # a full disk must not stop the reaping

    def _rotate(self) -> None:
        tmp = f"{self.path}.{os.getpid()}.new"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND | os.O_CLOEXEC, 0o600)
        os.replace(tmp, self.path)
        os.close(self.fd)
        self.fd, self.size = fd, 0


def _read(fd: int) -> bytes | None:
    """Data, b"" at end of file, None when nothing is ready."""
    try:
        return os.read(fd, _CHUNK)
    except BlockingIOError:
        return None
    except OSError:
        return b""  # EIO from a pty master whose every slave is closed


class Args:
    """The contents of ``monitor.args``."""

    def __init__(self, path: str) -> None:
        self.pid = self.log_max = 0
        self.log = self.config = self.state = self.cgroup = self.record = self.event_log = self.died = ""
        self.streams: dict[int, str] = {}
        self.pty = self.attach = -1
        self.keep: list[int] = []
        self.then: list[str] = []
        with open(path) as f:
            for line in f:
                key, _, value = line.rstrip("\n").partition(" ")
                if key == "pid":
                    self.pid = int(value)
                elif key in ("log", "config", "state", "cgroup", "record", "event_log", "died"):
                    setattr(self, key, value)
                elif key == "log_max":
                    self.log_max = int(value)
                elif key == "stream":
                    name, _, fd = value.partition(" ")
                    if name == "attach":
                        self.attach = int(fd)
                        continue
                    if name == "pty":
                        self.pty = int(fd)
                    self.streams[int(fd)] = "stdout" if name == "pty" else name
                elif key == "keep":
                    self.keep.append(int(value))
                elif key == "then":
                    self.then.append(value)


def _record_exit(a: Args, code: int, oom: bool) -> None:
    """state.json ← the exit record with the status, the time and the OOM kill, under the
    container's lock (nothing else writes the record while the container runs, so the one
    written at start is the one to complete)."""
    import json

    try:
        fd = os.open(a.config, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return  # removed meanwhile (rm -f)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        record = json.loads(a.record)
        record.update(exit_code=code, finished_at=time.time(), oom_killed=oom)
        tmp = f"{a.state}.{os.getpid()}.tmp"
        try:
            with open(tmp, "w") as f:
                f.write(json.dumps(record))
            os.replace(tmp, a.state)
        except OSError:
            pass
    finally:
        os.close(fd)


def _event(a: Args, code: int) -> None:
    """Append the container's `died` event to the events log: one write(2) on an O_APPEND
    descriptor, as rootless.events writes, so concurrent writers never mix their lines."""
    import json

    ns = time.time_ns()
    ev = json.loads(a.died)
    ev.update(ContainerExitCode=code, Time=_stamp().decode(), timeNano=ns)
    try:
        fd = os.open(a.event_log, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError:
        return
    try:
        os.write(fd, (json.dumps(ev, separators=(",", ":")) + "\n").encode())
    except OSError:
        pass
    finally:
        os.close(fd)


class Attach:
    """The attached CLI's socket (-1: none) and the pty it types into: keys are written to the
    pty as it takes them (non-blocking, kept meanwhile), so a container that reads nothing
    never stops the loop; output the CLI cannot take at once waits for it (a terminal's pace)."""

    def __init__(self, sock: int, pty: int) -> None:
        self.sock, self.pty = (sock, pty) if sock >= 0 and pty >= 0 else (-1, -1)
        self.keys = b""
        if self.pty >= 0:
            os.set_blocking(self.pty, False)

    def readers(self) -> list[int]:
        return [self.sock] if self.sock >= 0 and not self.keys else []

    def writers(self) -> list[int]:
        return [self.pty] if self.sock >= 0 and self.keys else []

    def pump(self, ready: list[int], writable: list[int]) -> None:
        if self.sock >= 0 and self.sock in ready:
            data = _read(self.sock)
            if data:
                self.keys += data
            elif data == b"":
                self.close()  # the CLI went: the container runs on, detached
                return
        if self.keys and self.pty in writable:
            try:
                n = os.write(self.pty, self.keys)
            except BlockingIOError:
                n = 0
            except OSError:
                n = len(self.keys)  # the container's side of the pty is gone
            self.keys = self.keys[n:]

    def send(self, data: bytes) -> None:
        if self.sock < 0:
            return
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(self.sock, view):]
        except OSError:
            self.close()

    def close(self) -> None:
        if self.sock >= 0:
            os.close(self.sock)
        self.sock, self.keys = -1, b""


def main(args_path: str) -> int:
    from rootless.runtime.reap import oom_kills, remove_cgroup, stop_children

    a = Args(args_path)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_SETMASK, ())
    log = LogWriter(a.log, a.log_max)
    streams = dict(a.streams)
    pidfd = os.pidfd_open(a.pid)
    attach = Attach(a.attach, a.pty)
    while True:
        ready, writable, _ = select.select([*streams, pidfd, *attach.readers()], attach.writers(), [])
        attach.pump(ready, writable)
        for fd in ready:
            if fd == pidfd or fd not in streams:
                continue
            data = _read(fd)
            if data:
                log.feed(streams[fd], data)
                if fd == a.pty:
                    attach.send(data)
            elif data == b"":
                del streams[fd]
                os.close(fd)
        if pidfd in ready:
            break
    _, status = os.waitpid(a.pid, 0)
    code = os.waitstatus_to_exitcode(status)
    code = 128 - code if code < 0 else code
    # What the container wrote just before it ended; a process it left may still hold the
    # write end, so no waiting for end of file.
    for fd, name in list(streams.items()):
        os.set_blocking(fd, False)
        while data := _read(fd):
            log.feed(name, data)
            if fd == a.pty:
                attach.send(data)
    log.flush()
    _record_exit(a, code, bool(a.cgroup) and oom_kills(a.cgroup) > 0)
    attach.close()  # the attached CLI reads the end of the output, then the exit just recorded
    if a.event_log:
        _event(a, code)
    if a.cgroup:
        remove_cgroup(a.cgroup)
    for fd in a.keep:
        os.close(fd)
    stop_children()
    if a.then:
        os.execv(a.then[0], a.then)
    return 0


if __name__ == "__main__":
    # -S: no site-packages; the package this file belongs to is found from its own path
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    sys.exit(main(sys.argv[1]))
