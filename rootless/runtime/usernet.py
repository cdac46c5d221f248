"""The runtime's side of user networks: find or start the user's network daemon (slirp.netd),
attach a container to its networks, and the handle a started container keeps.

The daemon is found through ``<runroot>/netns/``: ``netd.sock`` (its socket) and ``netd.pid``
(its PID and start time). A daemon is reused only when that PID is alive with the same start
time AND answers a ping on the socket; anything else is stale (a killed daemon, a reboot, a
half-started one): what is left is removed and a new one started, under ``netns/lock``.

Starting one (``_spawn``), in a double-forked child that never returns here:

  1. unshare(CLONE_NEWUSER); the CLI writes the store's fixed ID mapping (newuidmap), so the
     daemon's user namespace U maps IDs as every container's does;
  2. fork S, which stays in the host's network namespace (its sockets must be there);
  3. unshare(CLONE_NEWNET): the shared namespace N;
  4. S execs slirp4netns for N (``--netns-type=path``: S is root in U, which owns N), which
     makes tap0 the way out; S dies with the daemon (PR_SET_PDEATHSIG and --exit-fd);
  5. exec ``python -S slirp/netd.py`` (no site; dnslib, imported there only, found on the
     path this process passes).

A container on a user network joins U (setns) instead of making a user namespace of its own:
its network namespace is then owned by U, so the daemon, root in U, may move a veth into it
(rtnetlink checks CAP_NET_ADMIN over both namespaces' owners).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import time
from typing import TYPE_CHECKING, Any

from rootless.errors import RootlessError

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from rootless.runtime.idmap import IdMaps

SPAWN_TIMEOUT = 20.0


class NetdError(RootlessError):
    pass


def _dir(runroot: str) -> str:
    return os.path.join(runroot, "netns")


class Client:
    """One connection to the daemon: ``call(op, **args)``; holding it keeps the daemon alive."""

    def __init__(self, sock: socket.socket, pid: int) -> None:
        self.sock = sock
        self.pid = pid
        self._buf = b""

    def call(self, op: str, **args: Any) -> dict[str, Any]:
        try:
            self.sock.sendall(json.dumps({"op": op, **args}).encode() + b"\n")
            while b"\n" not in self._buf:
                data = self.sock.recv(65536)
                if not data:
                    raise NetdError("the user-network daemon closed the connection",
                                    "run the command again (a stale daemon is replaced)")
                self._buf += data
        except OSError as e:
            raise NetdError(f"the user-network daemon: {e.strerror or e}") from e
        line, _, self._buf = self._buf.partition(b"\n")
        reply: dict[str, Any] = json.loads(line)
        if "error" in reply:
            raise NetdError(str(reply["error"]))
        return reply

    def close(self) -> None:
        self.sock.close()


def _proc_start(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


def _connect(d: str) -> Client | None:
    """The live daemon's connection, or None (and nothing of a stale one is left)."""
    pidfile = os.path.join(d, "netd.pid")
    sock_path = os.path.join(d, "netd.sock")
    try:
        with open(pidfile) as f:
            pid_text, start = f.read().split()
        pid = int(pid_text)
    except (OSError, ValueError):
        pid, start = 0, ""
    if pid and _proc_start(pid) == start:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            s.settimeout(10)
            s.connect(_short(sock_path))
            c = Client(s, pid)
            if c.call("ping").get("pid") == pid:
                s.settimeout(60)
                return c
        except (OSError, RootlessError, ValueError):
            pass
        s.close()
        # alive but not answering: ours (same start time), so ended before a new one starts
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    for name in ("netd.sock", "netd.pid"):
        try:
            os.unlink(os.path.join(d, name))
        except FileNotFoundError:
            pass
    return None


def running(runroot: str) -> Client | None:
    """A connection to the user's network daemon when one runs (none is started)."""
    d = _dir(runroot)
    if not os.path.exists(os.path.join(d, "netd.pid")):
        return None
    return _connect(d)


def _short(path: str) -> str:
    # sun_path holds 108 bytes (unix(7)); a long run root is reached through /proc/self/fd
    if len(path) < 100:
        return path
    fd = os.open(os.path.dirname(path), os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    _keep.append(fd)
    return f"/proc/self/fd/{fd}/{os.path.basename(path)}"


_keep: list[int] = []


class _Pending:
    """A daemon this process started and has not heard from yet; the lock stays held."""

    def __init__(self, d: str, lock: int, pid: int, report: int) -> None:
        self.d, self.lock, self.pid, self.report = d, lock, pid, report

    def close(self) -> None:
        for fd in (self.report, self.lock):
            try:
                os.close(fd)
            except OSError:
                pass


_pending: _Pending | None = None


def _locked(d: str) -> int:
    import fcntl

    os.makedirs(d, mode=0o700, exist_ok=True)
    lock = os.open(os.path.join(d, "lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    fcntl.flock(lock, fcntl.LOCK_EX)
    return lock


def prestart(runroot: str, maps: IdMaps, host_loopback: bool = False, outbound: str = "slirp4netns",
             nets: Sequence[Mapping[str, Any]] = ()) -> None:
    """Start the daemon now when none runs, without waiting for it: its start (an interpreter,
    slirp4netns) overlaps the rest of `run` (image, layer, spec), and so does the making of the
    bridges of *nets* (network records); ``connect`` then waits for it."""
    global _pending
    d = _dir(runroot)
    if _pending is not None:
        return
    lock = _locked(d)
    try:
        c = _connect(d)
        if c is not None:
            c.close()
            os.close(lock)
            return
        pid, report = _spawn_start(d, maps, host_loopback, outbound, nets)
    except BaseException:
        os.close(lock)
        raise
    _pending = _Pending(d, lock, pid, report)


def abandon() -> None:
    """The run that prestarted a daemon failed before using it: end the daemon."""
    global _pending
    p, _pending = _pending, None
    if p is not None:
        import select

        try:
            pidfd = os.pidfd_open(p.pid)
        except OSError:
            pidfd = -1  # gone already
        if pidfd >= 0:
            try:
                signal.pidfd_send_signal(pidfd, signal.SIGKILL)
                select.select([pidfd], [], [], 5.0)  # readable once it has ended (pidfd_open(2))
            except OSError:
                pass
            finally:
                os.close(pidfd)
        try:
            os.unlink(os.path.join(p.d, "netd.sock"))  # its socket (it has no PID file yet); under the lock
        except FileNotFoundError:
            pass
        p.close()


def release() -> None:
    """This process is done with a daemon it prestarted (a monitor it forked took it over)."""
    global _pending
    p, _pending = _pending, None
    if p is not None:
        p.close()


def connect(runroot: str, maps: IdMaps, host_loopback: bool = False, outbound: str = "slirp4netns") -> Client:
    """A connection to the user's network daemon, started when none runs (*host_loopback*: its
    slirp4netns lets containers reach the host's 127.0.0.1 at 10.0.2.2; it applies to a daemon
    started now, as with ``[network] host-loopback`` in the config; *outbound*: its way out,
    slirp4netns or pasta, as ``[network] outbound``)."""
    global _pending
    d = _dir(runroot)
    p, _pending = _pending, None
    if p is not None and p.d != d:
        p.close()
        p = None
    if p is None:
        lock = _locked(d)
        try:
            c = _connect(d)
            if c is not None:
                return c
            pid, report = _spawn_start(d, maps, host_loopback, outbound)
        except BaseException:
            os.close(lock)
            raise
        p = _Pending(d, lock, pid, report)
    try:
        _finish(p)
        c = _connect(d)
        if c is None:
            raise NetdError("the user-network daemon started but does not answer")
        return c
    finally:
        p.close()


def _spawn_start(d: str, maps: IdMaps, host_loopback: bool, outbound: str,
                 nets: Sequence[Mapping[str, Any]] = ()) -> tuple[int, int]:
    """Fork the daemon and map its user namespace; (its PID, the pipe its verdict comes on)."""
    from rootless.runtime import idmap, syscalls
    from rootless.runtime.nsworker import become_root
    from slirp.supervisor import find_binary

    if outbound == "pasta":
        slirp = idmap.find_helper("pasta") or ""
        if not slirp:
            raise NetdError("pasta is not installed: [network] outbound = \"pasta\" needs it",
                            "as root: apt-get install passt; or set [network] outbound = \"slirp4netns\"")
    else:
        slirp = find_binary()
    sock_path = os.path.join(d, "netd.sock")
    rep_r, rep_w = os.pipe2(os.O_CLOEXEC)  # R<pid>, then the daemon's JSON verdict
    go_r, go_w = os.pipe2(os.O_CLOEXEC)
    owner = os.getpid()  # until its first client comes, the daemon ends if this process does
    first = os.fork()
    if first == 0:  # pragma: no cover - exits or execs
        try:
            os.close(rep_r)
            os.close(go_w)
            os.setsid()
            if os.fork():
                os._exit(0)  # the daemon is re-parented: it outlives this command
            syscalls.unshare(syscalls.CLONE_NEWUSER)
            os.write(rep_w, b"R%d\n" % os.getpid())
            if os.read(go_r, 1) != b"G":
                os._exit(1)
            become_root()
            os.chdir("/")
            _daemon(sock_path, slirp, rep_w, host_loopback, owner, outbound == "pasta", json.dumps(list(nets)))
        except BaseException as e:
            try:
                os.write(rep_w, json.dumps({"error": f"start the user-network daemon: {e}"}).encode())
            finally:
                os._exit(1)
    os.close(rep_w)
    os.close(go_r)
    try:
        os.waitpid(first, 0)
        line = b""
        while not line.endswith(b"\n"):
            chunk = os.read(rep_r, 64)
            if not chunk:
                raise NetdError("the user-network daemon failed before its user namespace existed")
            line += chunk
        pid = int(line[1:])
        try:
            idmap.apply(pid, maps)
        except BaseException:
            os.kill(pid, signal.SIGKILL)
            raise
        os.write(go_w, b"G")
    except BaseException:
        os.close(rep_r)
        raise
    finally:
        os.close(go_w)
    return pid, rep_r


def _finish(p: _Pending) -> None:
    """Wait for the daemon's verdict; record its PID and start time."""
    verdict = _read_verdict(p.report)
    if "error" in verdict:
        raise NetdError(str(verdict["error"]),
                        "`rootless doctor` checks what user networks need (slirp4netns, iptables)")
    tmp = os.path.join(p.d, "netd.pid.tmp")
    with open(tmp, "w") as f:
        f.write(f"{p.pid} {_proc_start(p.pid)}\n")
    os.replace(tmp, os.path.join(p.d, "netd.pid"))


def _read_verdict(fd: int) -> dict[str, Any]:
    import select

    deadline = time.monotonic() + SPAWN_TIMEOUT
    data = b""
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise NetdError(f"the user-network daemon did not start in {SPAWN_TIMEOUT:.0f} s")
        r, _, _ = select.select([fd], [], [], left)
        if not r:
            continue
        chunk = os.read(fd, 4096)
        if not chunk:
            break
        data += chunk
        try:
            return json.loads(data)  # type: ignore[no-any-return]
        except ValueError:
            continue
    if not data:
        raise NetdError("the user-network daemon exited while starting")
    try:
        return json.loads(data)  # type: ignore[no-any-return]
    except ValueError:
        raise NetdError(f"the user-network daemon: {data.decode(errors='replace').strip()}") from None


def _daemon(sock_path: str, slirp: str, report: int, host_loopback: bool, owner: int, pasta: bool,
            nets: str) -> None:  # pragma: no cover - execs
    """In U, still in the host's network namespace: fork slirp4netns's (or pasta's) process,
    make N, exec the daemon."""
    from rootless.runtime import syscalls

    me = os.getpid()
    s_go_r, s_go_w = os.pipe2(os.O_CLOEXEC)
    ready_r, ready_w = os.pipe2(os.O_CLOEXEC)
    exit_r, exit_w = os.pipe2(os.O_CLOEXEC)
    helper = os.fork()
    if helper == 0:
        try:
            syscalls.set_pdeathsig(signal.SIGKILL)
            if os.getppid() != me or os.read(s_go_r, 1) != b"G":
                os._exit(1)
            null = os.open(os.devnull, os.O_RDWR)
            for src, dst in ((null, 0), (null, 1), (null, 2), (ready_w, 3), (exit_r, 4)):
                os.dup2(src, dst)
            if pasta:
                _exec_pasta(slirp, me, host_loopback)
            os.closerange(5, 1 << 16)
            os.setpgid(0, 0)
            # slirp4netns(1) --disable-host-loopback: 10.0.2.2 does not reach the host's 127.0.0.1
            loopback = [] if host_loopback else ["--disable-host-loopback"]
            os.execv(slirp, [slirp, "--configure", "--mtu=65520", *loopback,
                             "--enable-sandbox", "--enable-seccomp", "--ready-fd=3", "--exit-fd=4",
                             "--netns-type=path", f"/proc/{me}/ns/net", "tap0"])
        finally:
            os._exit(127)
    os.close(s_go_r)
    os.close(ready_w)
    os.close(exit_r)
    syscalls.unshare(syscalls.CLONE_NEWNET)
    os.write(s_go_w, b"G")
    os.close(s_go_w)
    for fd in (report, ready_r, exit_w):
        os.set_inheritable(fd, True)
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    # python -S: no site (its .pth files cost more than the daemon's own imports); the daemon
    # finds its tree from its file (slirp/ beside rootless/) and dnslib on the path given
    netd = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "slirp",
                        "netd.py")
    os.execv(sys.executable, [sys.executable, "-S", "-E", "-s", netd,
                              os.pathsep.join(p for p in sys.path if p), sock_path, str(report), str(ready_r),
                              str(exit_w), str(owner), nets])


def _exec_pasta(pasta: str, pid: int, host_loopback: bool) -> None:  # pragma: no cover - execs
    """pasta(1) as the shared namespace's way out, configured as slirp4netns would be (tap0,
    10.0.2.100/24 via 10.0.2.2, DNS forwarded from 10.0.2.3, MTU 65520), in the foreground (it
    dies with the daemon: PR_SET_PDEATHSIG). Its PID file is fd 3, the daemon's ready pipe: pasta
    writes it once tap0 is configured. The namespace goes to it as an open fd (fd 5): pasta drops
    its capabilities before it opens the namespace, and opening /proc/PID/ns/net of a process
    holding more capabilities than it does is refused (ptrace(2), "access mode checking"); its
    own fd is not. Running as root in U, it would switch to nobody without --runas."""
    ns = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY)
    if ns != 5:
        os.dup2(ns, 5)
        os.close(ns)
    os.closerange(6, 1 << 16)
    os.setpgid(0, 0)
    # Python ignores SIGPIPE and SIGXFSZ, and an ignored signal stays ignored across execve(2):
    # pasta refuses to start so ("Couldn't install signal handlers"); subprocess resets them too
    for sig in (signal.SIGPIPE, signal.SIGXFSZ):
        signal.signal(sig, signal.SIG_DFL)
    loopback = [] if host_loopback else ["--no-map-gw"]  # mapped: 10.0.2.2 reaches the host's loopback
    os.execv(pasta, [pasta, "--runas", "0:0", "--config-net", "--foreground", "--quiet", "--ipv4-only",
                     "--ns-ifname", "tap0", "--address", "10.0.2.100", "--netmask", "24", "--gateway", "10.0.2.2",
                     "--dns-forward", "10.0.2.3", "--mtu", "65520", *loopback,
                     "--tcp-ports", "none", "--udp-ports", "none", "--tcp-ns", "none", "--udp-ns", "none",
                     "--pid", "/proc/self/fd/3", "--netns", "/proc/self/fd/5", "--netns-only"])


# --------------------------------------------------------------------------- a container's side


class UserNet:
    """What a started container on user networks keeps: like slirp.supervisor.Slirp, an
    ``exit_fd`` whose holder keeps its helpers (the port forwarder) alive, ``published``, and
    ``stop()``. The daemon notices the container's end by itself (a pidfd)."""

    def __init__(self) -> None:
        self.pid = -1
        r, w = os.pipe2(os.O_CLOEXEC)
        self.exit_r = r
        self._exit_w = w
        self.helpers: list[int] = []
        self.published: list[Any] = []
        self.addresses: dict[str, str] = {}  # network → the container's address

    @property
    def exit_fd(self) -> int:
        return self._exit_w

    def stop(self, wait: bool = True) -> None:
        for fd in (self._exit_w, self.exit_r):
            if fd >= 0:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self._exit_w = self.exit_r = -1
        pids, self.helpers = self.helpers, []
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            if wait:
                try:
                    os.waitpid(pid, 0)
                except ChildProcessError:
                    pass
