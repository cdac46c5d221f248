"""Start slirp4netns for a container's network namespace, wait until it is up, stop it.

slirp4netns(1) joins the namespaces of a process (``PID`` mode; the path mode expects to be
started inside the user namespace already), creates tap0 there and, with ``--configure``,
gives it the guest address and the default route. Its life is tied to ours twice over: it
exits when the write end of ``--exit-fd`` closes, which the kernel does whenever we die, and
it gets SIGKILL through PR_SET_PDEATHSIG (set by the caller's *before_exec*). Its output goes
to an unnamed memfd, read back only when it fails, so nothing is left on disk.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from typing import Any

from rootless.errors import RootlessError
from slirp.config import DEFAULT_CIDR, SlirpOptions

READY_TIMEOUT = 10.0
SOCKET_NAME = "slirp4netns.sock"
PACKAGE_HINT = ("install the slirp4netns package (apt-get install slirp4netns, dnf install slirp4netns), "
                "or run without a network of the container's own: --network none or --network host")
# fds the child gets, in this order, from 3 up
_READY_FD, _EXIT_FD = 3, 4


def failure_hint(output: str) -> str:
    """The fix for a slirp4netns that failed with *output*: it opens /dev/net/tun for the
    container's tap device, which minimal hosts ship missing or mode 0600."""
    other = "run with --network none or host to go on without it"
    if "/dev/net/tun" in output:
        return f"as root: `chmod 0666 /dev/net/tun` (or `modprobe tun` when it is missing); or {other}"
    return other


def find_binary(path: str | None = None) -> str:
    """slirp4netns on $PATH, else one error naming the package."""
    dirs = (path if path is not None else os.environ.get("PATH", "")).split(":")
    for d in dirs:
        if not d:
            continue
        candidate = os.path.join(d, "slirp4netns")
        if os.access(candidate, os.X_OK) and os.path.isfile(candidate):
            return candidate
    raise RootlessError("slirp4netns is not installed: the default network (--network slirp4netns) needs it",
                        PACKAGE_HINT)


def argv(binary: str, pid: int, opts: SlirpOptions) -> list[str]:
    out = [binary, "--configure", f"--mtu={opts.mtu}"]
    if not opts.allow_host_loopback:
        out.append("--disable-host-loopback")
    if opts.cidr != DEFAULT_CIDR:
        out.append(f"--cidr={opts.cidr}")
    if opts.enable_ipv6:
        out.append("--enable-ipv6")
    if opts.outbound_addr:
        out.append(f"--outbound-addr={opts.outbound_addr}")
    out += ["--enable-sandbox", "--enable-seccomp", "--api-socket", SOCKET_NAME,
            f"--ready-fd={_READY_FD}", f"--exit-fd={_EXIT_FD}", str(pid), "tap0"]
    return out


class Slirp:
    """A running slirp4netns: ``wait_ready()``, ``api_path``, ``close_api()``, ``stop()``."""

    def __init__(self, pid: int, ready_r: int, exit_w: int, log_fd: int, dir_fd: int, target: int,
                 exit_r: int = -1) -> None:
        self.pid = pid
        self.exit_r = exit_r  # the read end, for other helpers that must end with slirp4netns
        self.helpers: list[int] = []  # their pids, ended by stop()
        self.target = target
        self._ready_r = ready_r
        self._exit_w = exit_w
        self._log_fd = log_fd
        self._dir_fd = dir_fd
        self.published: list[Any] = []  # the forwarded ports, host ports chosen (rootless.spec.PortMapping)

    @property
    def exit_fd(self) -> int:
        """The write end of slirp4netns's --exit-fd: whoever holds it keeps the network alive
        (a monitor that outlives us keeps it across execve(2) and closes it when the container
        has exited)."""
        return self._exit_w

    @property
    def api_path(self) -> str:
        # The run directory's path may pass sun_path's 108 bytes (unix(7)); this one never does.
        return f"/proc/self/fd/{self._dir_fd}/{SOCKET_NAME}"

    def log_tail(self, lines: int = 4) -> str:
        """slirp4netns's own last words, minus its start-up banner, on one line."""
        try:
            size = os.fstat(self._log_fd).st_size
            text = os.pread(self._log_fd, 8192, max(0, size - 8192)).decode(errors="replace")
        except OSError:
            return ""
        keep = [ln.strip() for ln in text.splitlines()
                if ln.strip() and not ln.startswith("* ") and "seccomp is experimental" not in ln
                and ln.strip() not in ("Starting slirp",)]
        return " | ".join(keep[-lines:])

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> None:
        """Block until slirp4netns has configured tap0 (it writes "1" to the ready fd)."""
        import select
        import time

        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                tail = self.log_tail()
                self.stop()
                raise RootlessError(f"slirp4netns did not set up the network of process {self.target} "
                                    f"in {timeout:.0f}s: {tail or 'no output'}",
                                    failure_hint(tail))
            try:
                r, _, _ = select.select([self._ready_r], [], [], left)
            except InterruptedError:
                continue
            if not r:
                continue
            try:
                data = os.read(self._ready_r, 16)
            except InterruptedError:
                continue
            if data.startswith(b"1"):
                os.close(self._ready_r)
                self._ready_r = -1
                return
            time.sleep(0.01)  # its exit status, if it is exiting
            status = self._reap(block=False)
            tail = self.log_tail()
            self.stop()
            why = f"exited with status {status}" if status is not None else "closed its ready fd"
            raise RootlessError(f"slirp4netns {why} before the network of process {self.target} was up: "
                                f"{tail or 'no output'}",
                                failure_hint(tail))

    def close_api(self) -> None:
        """Remove the API socket's name (the ports are set): nothing of ours stays in the run
        directory if we are killed later."""
        try:
            os.unlink(self.api_path)
        except OSError:
            pass

    def _reap(self, block: bool) -> int | None:
        if self.pid <= 0:
            return None
        try:
            done, status = os.waitpid(self.pid, 0 if block else os.WNOHANG)
        except ChildProcessError:
            self.pid = -1
            return None
        if done:
            self.pid = -1
            return os.waitstatus_to_exitcode(status)
        return None

    def stop(self, wait: bool = True) -> None:
        """End slirp4netns (and the helpers) now. Once the container is gone its namespace is
        gone too; slirp4netns has nothing left to do, so no grace period is given.

        Its exit takes 10 to 40 ms (closing tap0 unregisters the device, which waits for RCU
        grace periods): with ``wait=False`` a thread reaps it while the caller goes on, and a
        caller that exits first leaves the reaping to init."""
        for fd in (self._exit_w, self._ready_r, self._log_fd, self._dir_fd, self.exit_r):
            if fd >= 0:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self._exit_w = self._ready_r = self._log_fd = self._dir_fd = self.exit_r = -1
        pids = list(self.helpers)
        self.helpers = []
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if self.pid > 0:
            try:
                os.killpg(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                try:
                    os.kill(self.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            pids.append(self.pid)
            self.pid = -1
        if wait:
            for pid in pids:
                _waitpid(pid)
        elif pids:
            import _thread  # the C module: `threading` costs an import on the run path

            _thread.start_new_thread(_waitpids, (pids,))


def _waitpid(pid: int) -> None:
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass


def _waitpids(pids: list[int]) -> None:
    for pid in pids:
        _waitpid(pid)


def start(binary: str, target_pid: int, opts: SlirpOptions, rundir: str, *,
          before_exec: Callable[[], None] | None = None) -> Slirp:
    """Fork and exec slirp4netns for the namespaces of *target_pid*; its API socket is made in
    *rundir*. Returns at once: call ``wait_ready()`` before using the network."""
    os.makedirs(rundir, mode=0o700, exist_ok=True)
    try:
        os.unlink(os.path.join(rundir, SOCKET_NAME))
    except FileNotFoundError:
        pass
    dir_fd = os.open(rundir, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    log_fd = os.memfd_create("slirp4netns-log", os.MFD_CLOEXEC)
    ready_r, ready_w = os.pipe2(os.O_CLOEXEC)
    exit_r, exit_w = os.pipe2(os.O_CLOEXEC)
    args = argv(binary, target_pid, opts)
    parent = os.getpid()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - replaced by exec
        try:
            import fcntl

            os.fchdir(dir_fd)
            # above every target first, so no dup2 below overwrites a source still to be copied
            null, log, ready, ex = (fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10) for fd in (
                os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC), log_fd, ready_w, exit_r))
            for src, dst in ((null, 0), (log, 1), (log, 2), (ready, _READY_FD), (ex, _EXIT_FD)):
                os.dup2(src, dst)
            os.closerange(_EXIT_FD + 1, 1 << 16)
            # a group of its own: stop() ends slirp4netns's own children with it
            os.setpgid(0, 0)
            if before_exec is not None:
                before_exec()
            if os.getppid() != parent:  # we died before the death signal was armed
                os._exit(1)
            # Signals start as the exec'd program expects them: nothing blocked or ignored.
            for sig in (signal.SIGPIPE, signal.SIGXFSZ, signal.SIGINT, signal.SIGQUIT):
                signal.signal(sig, signal.SIG_DFL)
            signal.pthread_sigmask(signal.SIG_SETMASK, ())
            os.execv(binary, args)
        except BaseException as e:
            try:
                os.write(2, f"exec {binary}: {e}\n".encode())
            finally:
                os._exit(127)
    try:
        os.setpgid(pid, pid)  # also here: stop() may come before the child got that far
    except OSError:
        pass  # it has exec'd already, and so has its group
    os.close(ready_w)
    return Slirp(pid, ready_r, exit_w, log_fd, dir_fd, target_pid, exit_r)
