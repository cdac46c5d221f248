"""Start a container's process and collect its exit status.

The fork chain (we are the CLI; every step is one fork of this same Python process, no
extra interpreter):

  CLI ──fork──▶ C1: unshare(user+mount+pid+uts+ipc+cgroup[+net]) → "R"
   │               (CLI writes uid_map/gid_map with newuidmap/newgidmap) ← "G"
   │               root in the namespace; hostname, lo up, mount the rootfs
   │               ──fork──▶ C2 (PID 1 of the new PID namespace) → "P<pid of C2>", exit
   │  (CLI is a child subreaper, so C2 becomes our child when C1 exits)  ← "go"
   └─ C2: parent-death signal, the mount list, pty, pivot_root, user and capabilities, execve
          (with --init C2 stays as a reaping PID 1 that forwards signals, and C3 execs)

With --network/--pid/--ipc/--uts container:NAME (Spec.join) C1 joins that container's user
namespace and those namespaces with setns(2) instead of making them (the maps are already
written), and C2 is forked into its PID namespace: not PID 1 there, still the CLI's child.

Every child reports failures on a close-on-exec pipe (crun's convention): EOF with no
message means execve succeeded. The CLI forwards SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1
and SIGUSR2 to PID 1 and returns its status, 128+N when signal N killed it.
"""

from __future__ import annotations

import errno
import os
import resource  # imported before any child enters a container's mount namespace (exec)
import signal
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, NoReturn

from rootless.errors import CommandNotFoundError, NamespaceError, NotExecutableError, RootlessError
from rootless.record import dataclass
from rootless.runtime import childerr, idmap, mounts, namespaces, network, syscalls, users
from rootless.runtime.execpath import find_executable
from rootless.runtime.nsworker import become_root
from rootless.spec import CAPABILITIES, CHOWN_OPTION, Process, Spec

if TYPE_CHECKING:
    from rootless.context import Log
    from rootless.runtime.cgroups import Cgroup
    from rootless.runtime.seccomp import Filter
    from rootless.runtime.usernet import UserNet
    from slirp.supervisor import Slirp

FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2)
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_EXIT_SETUP = 125


@dataclass(frozen=True)
class Started:
    pid: int  # the container's PID 1 as we see it; our child once C1 has exited
    master: int | None  # the pty master (-t), opened in the container's devpts
    network: Slirp | UserNet | None = None  # its network's helpers: network.detach() once it has exited
    cgroup: Cgroup | None = None  # its own cgroup: read, then release() once it has exited
    # C1's mount namespace (st_dev, st_ino of /proc/PID/ns/mnt): the one the processes that serve
    # the rootfs (the fuse-overlayfs daemon) stay in, re-parented to us once C1 has exited
    mount_ns: tuple[int, int] | None = None


@dataclass(frozen=True)
class _Fds:
    report: int  # write end, close-on-exec
    go: int  # read end: "G" once the maps are written
    go2: int  # read end: C2 may go on once C1 has been reaped
    sock: int  # our end of the socketpair carrying the pty master (-1 without -t)
    userns: int = -1  # a user namespace to join instead of making one (user networks)
    nest: bool = False  # and then make one inside it all the same (user networks with --userns keep-id)
    seccomp: Filter | None = None  # compiled by the CLI before forking, loaded last before execve
    shared: namespaces.Shared | None = None  # another container's namespaces to join (Spec.join)


# --------------------------------------------------------------------------- child side


def fail(fd: int, kind: str, err: BaseException) -> NoReturn:
    """In a child: report ``err`` to the parent (rootless.runtime.childerr) and exit."""
    childerr.report(fd, kind, err)
    os._exit(_EXIT_SETUP)


def _read_byte(fd: int) -> bytes:
    while True:
        try:
            return os.read(fd, 1)
        except InterruptedError:
            continue


def _set_oom_score_adj(value: int) -> None:
    try:
        with open("/proc/self/oom_score_adj", "w") as f:
            f.write(str(value))
    except PermissionError:
        now = (_read_text("/proc/self/oom_score_adj") or "0").strip()
        raise RootlessError(f"--oom-score-adj {value}: lowering the OOM score adjustment below {now} needs "
                            "CAP_SYS_RESOURCE on the host, which an unprivileged user does not have",
                            f"give a value of at least {now}") from None


def _c1(spec: Spec, fds: _Fds, winsize: bytes | None, cap_last: int) -> NoReturn:
    stage = "namespaces"
    try:
        syscalls.set_pdeathsig(signal.SIGKILL)
        # CLONE_NEWPID waits until the rootfs is mounted: the first child forked after it
        # becomes PID 1, and fuse-overlayfs (forked to mount the rootfs) must not be that.
        if spec.process.oom_score_adj is not None:
            stage = "oom_score_adj"
            _set_oom_score_adj(spec.process.oom_score_adj)
        flags = namespaces.flags(spec.namespaces)
        if fds.userns >= 0:
            # user networks: the namespace that owns the shared network namespace, already
            # mapped as ours would be (rootless.runtime.usernet)
            syscalls.setns(fds.userns, syscalls.CLONE_NEWUSER, "join the user networks' user namespace")
            os.close(fds.userns)
            if not fds.nest:
                flags &= ~syscalls.CLONE_NEWUSER
            if fds.shared is not None:
                flags &= ~fds.shared.enter()
        # CLONE_NEWCGROUP waits too: the CLI first moves us into the container's own cgroup,
        # which must become the root of the namespace's view.
        syscalls.unshare(flags & ~(syscalls.CLONE_NEWPID | syscalls.CLONE_NEWCGROUP))
        os.write(fds.report, b"R\n")
        if _read_byte(fds.go) != b"G":
            os._exit(_EXIT_SETUP)
        os.close(fds.go)
        stage = "setup"
        become_root()
        if flags & syscalls.CLONE_NEWCGROUP:
            syscalls.unshare(syscalls.CLONE_NEWCGROUP)
        namespaces.private_root()
        if "uts" in spec.namespaces:
            namespaces.set_hostname(spec.hostname)
        if spec.sysctls:
            stage = "sysctl"
            write_sysctls(spec.sysctls)
            stage = "setup"
        if "network" in spec.namespaces:
            namespaces.loopback_up()
            if spec.network.mode in ("slirp4netns", "bridge"):
                # Becoming a root mapped to another host uid (--userns keep-id) made us
                # non-dumpable, which hides /proc/PID/ns from slirp4netns, joining by PID, and
                # from the user networks' daemon (ptrace(2) "access mode checking"); C2
                # inherits this, execve(2) resets it.
                syscalls.prctl(syscalls.PR_SET_DUMPABLE, 1, what="make the container's first process dumpable")
        stage = "rootfs"
        mounts.mount_rootfs(spec.rootfs)
        if flags & syscalls.CLONE_NEWPID:
            syscalls.unshare(syscalls.CLONE_NEWPID)
        elif fds.shared is not None:
            fds.shared.enter_pid()  # the next child is in the other container's PID namespace
        pid = os.fork()
        if pid == 0:
            _c2(spec, fds, winsize, cap_last)
        os.write(fds.report, b"P%d\n" % pid)
    except BaseException as e:
        fail(fds.report, stage, e)
    os._exit(0)


def open_pty(root: str) -> tuple[int, int, str]:
    """A pty pair from the container's own devpts instance (as Podman's runtimes do), so the
    terminal is /dev/pts/N inside and ttyname(3) works there."""
    import fcntl
    import struct

    ptmx = os.path.join(root, "dev/pts/ptmx")
    master = os.open(ptmx, os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
    fcntl.ioctl(master, syscalls.TIOCSPTLCK, struct.pack("i", 0))
    n = struct.unpack("I", fcntl.ioctl(master, syscalls.TIOCGPTN, struct.pack("I", 0)))[0]
    slave = os.open(os.path.join(root, f"dev/pts/{n}"), os.O_RDWR | os.O_NOCTTY)
    return master, slave, f"/dev/pts/{n}"


def _c2(spec: Spec, fds: _Fds, winsize: bytes | None, cap_last: int) -> NoReturn:
    stage = "mounts"
    slave = -1
    try:
        # Our parent C1 exits as soon as it has told the CLI our pid; the death signal must
        # be armed only once the CLI (a subreaper) is our parent, or C1's exit would fire it.
        if _read_byte(fds.go2) != b"G":
            os._exit(_EXIT_SETUP)
        os.close(fds.go2)
        syscalls.set_pdeathsig(signal.SIGKILL)
        # A session of our own: a Ctrl-C at the user's terminal reaches the CLI, which forwards it once.
        os.setsid()
        root = spec.rootfs.target
        if spec.rootfs.driver == "fuse-overlayfs":
            # pivot_root(2) moves the root of every process in the mount namespace that had
            # the old one, and the FUSE daemon serving the rootfs from the host's paths is in
            # ours: a namespace of the container's own leaves the daemon where it was.
            syscalls.unshare(syscalls.CLONE_NEWNS)
        mounts.setup(root, spec.mounts, spec.masked_paths, spec.readonly_paths, spec.rootfs.readonly)
        if spec.process.terminal:
            stage = "terminal"
            import socket

            master, slave, name = open_pty(root)
            console = mounts.secure_join(root, "/dev/console")
            if not os.path.exists(console):
                os.close(os.open(console, os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC, 0o600))
            syscalls.mount(os.path.join(root, name.lstrip("/")), console, None, syscalls.MS_BIND)
            with socket.socket(fileno=fds.sock) as s:
                socket.send_fds(s, [b"M"], [master])
            os.close(master)
        stage = "user"
        who = resolve_user(spec, root)
        stage = "chown"
        for m in spec.mounts:
            if CHOWN_OPTION in m.options:
                mounts.chown_tree(mounts.secure_join(root, m.destination), who.uid, who.gid)
        stage = "mounts"
        mounts.pivot(root)
        if spec.process.init:
            _init(spec, who, fds.report, slave, winsize, cap_last, fds.seccomp)
        exec_process(spec.process, who, fds.report, slave, winsize, cap_last, single_gid_map=len(spec.gid_map) <= 1,
                     seccomp=fds.seccomp)
    except BaseException as e:
        fail(fds.report, stage, e)


def _init(spec: Spec, who: Who, report: int, slave: int, winsize: bytes | None, cap_last: int,
          seccomp: Filter | None) -> NoReturn:
    """--init: stay PID 1, reap every orphan, forward signals to the command, exit with its status.

    As PID 1 the command would ignore every signal it has no handler for
    (pid_namespaces(7)); as PID 2 it gets the default actions back. PID 1 itself is confined
    as the command is (its user, capabilities, rlimits and seccomp filter, as Podman's
    catatonit runs under the container's process settings): nothing in the container keeps
    the namespace root's full set.
    """
    single = len(spec.gid_map) <= 1
    pid = os.fork()
    if pid == 0:
        os.setsid()
        exec_process(spec.process, who, report, slave, winsize, cap_last, single_gid_map=single, seccomp=seccomp)
    if slave >= 0:
        os.close(slave)
    try:
        with open("/proc/self/comm", "w") as f:
            f.write("rootless-init")
    except OSError:
        pass
    parent = os.getppid()
    # a failure here is reported on the pipe the CLI still reads; PID 1's exit ends the namespace
    _confine(spec.process, who, report, cap_last, single, seccomp)
    # A change of effective user clears the parent-death signal (prctl(2) PR_SET_PDEATHSIG):
    # armed again, so the container still ends with the process that runs it.
    syscalls.set_pdeathsig(signal.SIGKILL)
    if os.getppid() != parent:
        os._exit(_EXIT_SETUP)
    # It also made us non-dumpable, and a PID 1 that never execs keeps the memory of the host's
    # user namespace: exec, top and slirp4netns could no longer open /proc/1/ns (ptrace(2)
    # "access mode checking"). The command's execve(2) makes it dumpable; so is this init.
    syscalls.prctl(syscalls.PR_SET_DUMPABLE, 1, what="make the container's init dumpable")
    # Nothing else the forks left us (close-on-exec copies, which a PID 1 that never execs
    # would hold: a detached run's output to its caller, the log pipes' read ends).
    os.closerange(3, os.sysconf("SC_OPEN_MAX") if os.sysconf("SC_OPEN_MAX") > 0 else 65536)
    waited = {*FORWARDED, signal.SIGCHLD}
    signal.pthread_sigmask(signal.SIG_BLOCK, waited)
    while True:
        while True:
            try:
                done, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                os._exit(0)
            if done == 0:
                break
            if done == pid:
                os._exit(exit_status(status))
        info = signal.sigwaitinfo(waited)
        if info.si_signo != signal.SIGCHLD:
            try:
                os.kill(pid, info.si_signo)
            except ProcessLookupError:
                pass


def _read_text(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError:
        return None


def fd_channel(wanted: bool) -> tuple[int, int]:
    """A close-on-exec Unix socket pair to pass the container's pty master back over, or
    (-1, -1) when no terminal is wanted."""
    if not wanted:
        return -1, -1
    import socket

    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    sock_parent, sock_child = a.detach(), b.detach()
    os.set_inheritable(sock_parent, False)
    os.set_inheritable(sock_child, False)
    return sock_parent, sock_child


def receive_fd(sock: int) -> int | None:
    """The one descriptor (a pty master) the container's side sends over the Unix socket
    ``sock`` with SCM_RIGHTS (unix(7)); the socket is closed. None when it sent none."""
    import socket

    with socket.socket(fileno=sock) as s:
        _, fds, _, _ = socket.recv_fds(s, 1, 1)
    return fds[0] if fds else None


def cap_numbers(names: Sequence[str]) -> list[int]:
    return [CAPABILITIES.index(n) for n in names]


def _credentials(p: Process, uid: int, gid: int, groups: Sequence[int], cap_last: int,
                 single_gid_map: bool) -> None:
    """Switch to the container user with the Spec's capabilities (capabilities(7)).

    The bounding set is cut first (it needs CAP_SETPCAP); root then keeps exactly the set,
    which execve(2) recomputes from the bounding set; any other user keeps only the ambient
    capabilities, which need to be permitted and inheritable when raised.
    """
    keep = cap_numbers(p.capabilities)
    if p.no_new_privileges:
        syscalls.set_no_new_privs()
    for c in range(cap_last + 1):
        if c not in keep:
            syscalls.capbset_drop(c)
    if not single_gid_map:
        os.setgroups(list(groups))
    ambient = cap_numbers(p.ambient_capabilities) if uid != 0 else []
    if ambient:
        syscalls.prctl(syscalls.PR_SET_KEEPCAPS, 1, what="keep capabilities across setuid")
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)
    if uid == 0:
        mask = sum(1 << c for c in keep)
        syscalls.capset(mask, mask, 0)
        syscalls.ambient_clear()
    elif ambient:
        mask = sum(1 << c for c in ambient)
        syscalls.capset(mask, mask, mask)
        for c in ambient:
            syscalls.ambient_raise(c)


@dataclass(frozen=True)
class Who:
    uid: int
    gid: int
    groups: tuple[int, ...]
    home: str | None  # for HOME when the environment has none


def resolve_user(spec: Spec, root: str) -> Who:
    """The Process's user, looked up in the container's own /etc/passwd and /etc/group.

    A numeric uid (or gid) the image does not list gets an entry, as Podman adds one, so
    whoami(1) and shells work: a copy of the image's file with the line added, in the run
    directory, bound over /etc/passwd (or /etc/group).
    """
    p = spec.process
    if p.user is None:
        return Who(p.uid, p.gid, tuple(p.additional_gids), None)
    passwd_path = mounts.secure_join(root, "/etc/passwd")
    group_path = mounts.secure_join(root, "/etc/group")
    passwd, group = _read_text(passwd_path), _read_text(group_path)
    eu = users.resolve(p.user, passwd, group)
    # Podman lists an explicitly named user's primary group among its groups too.
    primary = (eu.gid,) if p.user else ()
    groups = tuple(dict.fromkeys((*primary, *eu.additional_gids, *p.additional_gids)))
    if spec.rundir:
        # Podman's entries: "container user" for a bare uid, an empty comment for keep-id's own user
        name, comment = (p.user_name, "") if p.user_name else (str(eu.uid), "container user")
        if eu.name is None and passwd is not None:
            _add_line(spec.rundir, "passwd", passwd_path, passwd,
                      f"{name}:*:{eu.uid}:{eu.gid}:{comment}:{eu.home}:/bin/sh")
        if group is not None and eu.gid not in {g.gid for g in users.parse_group(group)}:
            _add_line(spec.rundir, "group", group_path, group,
                      f"{p.user_name or eu.gid}:x:{eu.gid}:{eu.name or p.user_name or eu.uid}")
    return Who(eu.uid, eu.gid, groups, eu.home)


def _add_line(rundir: str, name: str, target: str, text: str, line: str) -> None:
    copy = os.path.join(rundir, name)
    with open(copy, "w") as f:
        f.write(text + ("" if text.endswith("\n") or not text else "\n") + line + "\n")
    os.chmod(copy, 0o644)
    syscalls.mount(copy, target, None, syscalls.MS_BIND)


def write_sysctls(sysctls: Sequence[tuple[str, str]]) -> None:
    """Write each sysctl under /proc/sys: the namespaced ones (net.*, the IPC ones) reach the
    namespaces this process has just made, whose owner (our user namespace) may set them."""
    for key, value in sysctls:
        path = "/proc/sys/" + key.replace(".", "/")
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
        except OSError as e:
            raise OSError(e.errno, e.strerror, f"sysctl {key}") from None
        try:
            os.write(fd, value.encode())
        except OSError as e:
            raise OSError(e.errno, e.strerror, f"sysctl {key}={value}") from None
        finally:
            os.close(fd)


def _rlimits(p: Process) -> None:
    for r in p.rlimits:
        try:
            resource.setrlimit(getattr(resource, r.type), (r.soft, r.hard))
        except (OSError, ValueError) as e:
            raise RootlessError(f"set {r.type} to {r.soft}:{r.hard}: {e}",
                                "raising a hard limit needs root on the host: see `ulimit -H -a`") from None


def exec_process(p: Process, who: Who, report: int, slave: int, winsize: bytes | None, cap_last: int, *,
                 single_gid_map: bool, seccomp: Filter | None = None) -> NoReturn:
    stage = "user"
    try:
        uid = who.uid
        env = list(p.env)
        if who.home is not None and not any(e.startswith("HOME=") for e in env):
            env.append(f"HOME={who.home}")
        stage = "stdio"
        if slave >= 0:
            import fcntl

            if winsize:
                fcntl.ioctl(slave, syscalls.TIOCSWINSZ, winsize)
            os.fchown(slave, uid, -1)
            fcntl.ioctl(slave, syscalls.TIOCSCTTY, 0)
            for fd in (0, 1, 2):
                os.dup2(slave, fd)
            if slave > 2:
                os.close(slave)
        elif not p.interactive:
            null = os.open("/dev/null", os.O_RDONLY)
            os.dup2(null, 0)
            os.close(null)
        stage = "cwd"
        try:
            os.chdir(p.cwd)
        except FileNotFoundError:
            if not p.make_cwd:
                raise
            os.makedirs(p.cwd, 0o755, exist_ok=True)
            os.chdir(p.cwd)
        stage = "exec"
        path = next((e[5:] for e in env if e.startswith("PATH=")), DEFAULT_PATH)
        exe = find_executable(p.args[0], path)
        stage = "rlimits"
        _rlimits(p)
        os.umask(p.umask)
        # Python ignores SIGPIPE and SIGXFSZ; an exec'd program must start from the defaults.
        for sig in (signal.SIGPIPE, signal.SIGXFSZ):
            signal.signal(sig, signal.SIG_DFL)
        envp = dict(_env_pairs(env))
        argv = list(p.args)
    except BaseException as e:
        fail(report, stage, e)
    _confine(p, who, report, cap_last, single_gid_map, seccomp)
    try:
        signal.pthread_sigmask(signal.SIG_SETMASK, ())
        stage = "exec"
        os.execve(exe, argv, envp)
    except BaseException as e:
        fail(report, stage, e)


def _confine(p: Process, who: Who, report: int, cap_last: int, single_gid_map: bool,
             seccomp: Filter | None) -> None:
    """The last steps before execve(2), in every process of the container: the user, the
    capabilities and the seccomp filter. Loading a filter needs no_new_privs or CAP_SYS_ADMIN
    in our user namespace (seccomp(2)): without no_new_privs it is loaded while we are still
    namespace root, before the capabilities go, and the calls left (capset, setresuid,
    execve) must be allowed by it, as with runc and crun."""
    stage = "seccomp"
    try:
        if seccomp is not None and not p.no_new_privileges:
            _load_seccomp(seccomp)
        stage = "credentials"
        _credentials(p, who.uid, who.gid, who.groups, cap_last, single_gid_map)
        if seccomp is not None and p.no_new_privileges:
            stage = "seccomp"
            _load_seccomp(seccomp)
    except BaseException as e:
        fail(report, stage, e)


def _load_seccomp(f: Filter) -> None:
    syscalls.seccomp_load(f.program, f.flags)


def seccomp_filter(spec: Spec, log: Log) -> Filter | None:
    """*spec*'s seccomp filter, compiled (or read from the store's cache) before any fork so
    a bad profile is reported once, by the CLI."""
    if spec.seccomp is None:
        return None
    from rootless.runtime import seccomp

    try:
        return seccomp.program(spec.seccomp.profile, spec.seccomp.cache, spec.process.capabilities, warn=log.warn)
    except seccomp.NoLibseccomp as e:
        if spec.seccomp.profile is not None:
            raise
        log.warn_once("seccomp", f"{e.message}: the container runs without a seccomp filter ({e.hint})")
        return None


def _env_pairs(env: Sequence[str]) -> list[tuple[str, str]]:
    out = []
    for e in env:
        k, _, v = e.partition("=")
        out.append((k, v))
    return out


# --------------------------------------------------------------------------- parent side


class Lines:
    """Line reader over the report pipe (messages are short single lines)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.buf = b""

    def line(self) -> bytes:
        while b"\n" not in self.buf:
            try:
                chunk = os.read(self.fd, 4096)
            except InterruptedError:
                continue
            if not chunk:
                out, self.buf = self.buf, b""
                return out
            self.buf += chunk
        out, _, self.buf = self.buf.partition(b"\n")
        return out


def child_error(name: str, raw: bytes) -> RootlessError:
    f = childerr.decode(raw)
    if f is None or not f.stage:
        return NamespaceError(f"the container process failed: {raw[:200]!r}")
    kind, code, text, hint = f.stage, f.errno, f.message, f.hint
    if kind == "namespaces":
        from rootless.runtime.userns import userns_error

        return userns_error(OSError(code, os.strerror(code), text.rsplit(":", 1)[0]))
    if kind == "exec":
        # The wording of Podman's runtime (Go's os/exec), which scripts match on.
        if code == errno.ENOENT:
            if "/" in name:
                return CommandNotFoundError(f'exec: "{name}": stat {name}: no such file or directory')
            return CommandNotFoundError(f'exec: "{name}": executable file not found in $PATH')
        if code in (errno.EACCES, errno.EPERM, errno.EISDIR):
            return NotExecutableError(f'exec: "{name}": permission denied')
        if code == errno.ENOEXEC:
            return NotExecutableError(f'exec: "{name}": exec format error')
        return NotExecutableError(f'exec: "{name}": {os.strerror(code).lower()}')
    if kind == "credentials" and code == errno.EINVAL:
        hint = hint or "the user or group is outside the container's id mapping (see /etc/subuid, /etc/subgid)"
    if kind == "rootfs" and code == errno.EPERM:
        hint = hint or "try another storage driver: --storage-driver fuse-overlayfs or vfs"
    return RootlessError(f"{_STAGES.get(str(kind), 'start the container')}: {text}", hint)


_STAGES = {"setup": "set up the container namespaces", "sysctl": "set the container's sysctls",
           "rlimits": "set the container's resource limits", "seccomp": "load the container's seccomp filter",
           "rootfs": "mount the container's rootfs",
           "mounts": "mount the container's file systems", "terminal": "open the container's terminal",
           "user": "resolve the container user", "stdio": "set up the container's stdio",
           "cwd": "change to the working directory", "credentials": "switch to the container user",
           "chown": "give a volume to the container user (:U)"}


def _maps(spec: Spec) -> idmap.IdMaps:
    um = tuple(idmap.IdMapping(m.container_id, m.host_id, m.size) for m in spec.uid_map)
    gm = tuple(idmap.IdMapping(m.container_id, m.host_id, m.size) for m in spec.gid_map)
    if not um:
        um = (idmap.IdMapping(0, os.getuid(), 1),)
    if not gm:
        gm = (idmap.IdMapping(0, os.getgid(), 1),)
    return idmap.IdMaps(um, gm, single=len(um) == 1 or len(gm) == 1)


def _apply_maps_fast(pid: int, maps: idmap.IdMaps) -> bool:
    """newuidmap and newgidmap at the same time (each is an exec of a setuid program, the
    largest part of starting a container). False if either failed or is unusable, leaving
    the maps unwritten when that was the first write: the caller then diagnoses with
    idmap.apply."""
    if maps.single:
        return False
    uhelper, ghelper = idmap.find_helper("newuidmap"), idmap.find_helper("newgidmap")
    if uhelper is None or ghelper is None:
        return False
    null = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
    err_r, err_w = os.pipe2(os.O_CLOEXEC)
    try:
        actions = [(os.POSIX_SPAWN_DUP2, null, 0), (os.POSIX_SPAWN_DUP2, null, 1),
                   (os.POSIX_SPAWN_DUP2, err_w, 2)]
        pids = [os.posix_spawn(h, idmap.helper_argv(h, pid, m), {}, file_actions=actions)
                for h, m in ((uhelper, maps.uid_map), (ghelper, maps.gid_map))]
    finally:
        os.close(null)
        os.close(err_w)
    failed = []
    for p, name in zip(pids, ("newuidmap", "newgidmap"), strict=True):
        _, status = os.waitpid(p, 0)
        if os.waitstatus_to_exitcode(status) != 0:
            failed.append(name)
    err = b""
    while chunk := os.read(err_r, 4096):
        err += chunk
    os.close(err_r)
    if failed:
        text = " ".join(err.decode(errors="replace").split())
        raise NamespaceError(f"{' and '.join(failed)} for process {pid} failed: {text}",
                             "`rootless doctor` names the cause (subordinate ranges in /etc/subuid and "
                             "/etc/subgid, setuid helpers) and its fix")
    return True


def cap_last_cap() -> int:
    try:
        with open("/proc/sys/kernel/cap_last_cap") as f:
            return min(int(f.read()), len(CAPABILITIES) - 1)
    except (OSError, ValueError):
        return len(CAPABILITIES) - 1


def namespace_id(pid: int, kind: str) -> tuple[int, int] | None:
    """The identity of *pid*'s namespace of *kind* ("mnt", "user"...): the device and inode of
    /proc/PID/ns/KIND (namespaces(7)); None once the process is gone."""
    try:
        st = os.stat(f"/proc/{pid}/ns/{kind}")
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass


def start(spec: Spec, log: Log, *, winsize: bytes | None = None,
          place: Callable[[int], Cgroup | None] | None = None) -> Started:
    """Fork the chain above; return once the container's command has been exec'd.

    The caller must have blocked FORWARDED and SIGCHLD (see ``blocked``) so that no signal is
    lost between the fork and the wait. Raises CommandNotFoundError / NotExecutableError for
    exec failures and RootlessError for everything else, after reaping what was started.
    *place* puts the first process (not yet in its PID, cgroup or mount namespace) into the
    container's own cgroup (rootless.runtime.cgroups) and returns it, or None.
    """
    maps = _maps(spec)
    slirp_binary = network.prepare(spec)
    if spec.join:
        shared = namespaces.Shared(spec.join)
        try:
            return _start(spec, log, maps, slirp_binary, None, winsize, place, shared)
        finally:
            shared.close()
    # the run root holds the containers' run directories (rootless.layout)
    joined = network.join(spec, os.path.dirname(os.path.dirname(spec.rundir)) if spec.rundir else None)
    try:
        return _start(spec, log, maps, slirp_binary, joined, winsize, place)
    finally:
        if joined is not None:
            joined.close()


def _start(spec: Spec, log: Log, maps: idmap.IdMaps, slirp_binary: str | None, joined: network.Joined | None,
           winsize: bytes | None, place: Callable[[int], Cgroup | None] | None,
           shared: namespaces.Shared | None = None) -> Started:
    filt = seccomp_filter(spec, log)
    cap_last = cap_last_cap()
    syscalls.set_child_subreaper()
    report_r, report_w = os.pipe2(os.O_CLOEXEC)
    go_r, go_w = os.pipe2(os.O_CLOEXEC)
    go2_r, go2_w = os.pipe2(os.O_CLOEXEC)
    sock_parent, sock_child = fd_channel(spec.process.terminal)
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    pid1 = os.fork()
    if pid1 == 0:
        os.close(report_r)
        os.close(go_w)
        os.close(go2_w)
        if sock_parent >= 0:
            os.close(sock_parent)
        userns = joined.userns_fd if joined else shared.userns if shared else -1
        _c1(spec, _Fds(report_w, go_r, go2_r, sock_child, userns, joined is not None and joined.nested, filt, shared),
            winsize, cap_last)
    os.close(report_w)
    os.close(go_r)
    os.close(go2_r)
    if sock_child >= 0:
        os.close(sock_child)
    lines = Lines(report_r)
    container = -1
    helper: Slirp | UserNet | None = None
    cgroup = None
    try:
        first = lines.line()
        if first != b"R":
            _reap(pid1)
            raise child_error(spec.process.args[0], first) if first.startswith(b"E") else \
                NamespaceError(f"the container's first process exited before its namespaces existed ({first!r})")
        mount_ns = namespace_id(pid1, "mnt")
        try:
            if joined is not None and joined.nested:
                joined.map_nested(pid1, maps)
            elif joined is None and shared is None and not _apply_maps_fast(pid1, maps):
                # diagnose: the same writes one at a time, with idmap's explanations
                idmap.apply(pid1, maps)
            if place is not None:
                cgroup = place(pid1)
        except BaseException:
            os.kill(pid1, signal.SIGKILL)
            _reap(pid1)
            raise
        os.write(go_w, b"G")
        second = lines.line()
        _reap(pid1)
        if not second.startswith(b"P"):
            raise child_error(spec.process.args[0], second) if second.startswith(b"E") else \
                NamespaceError("the container's first process exited without starting it")
        container = int(second[1:])
        if slirp_binary is not None:
            helper = network.attach(spec, slirp_binary, container, log)
        elif joined is not None:
            helper = network.attach_user_networks(spec, joined, container, log)
        os.write(go2_w, b"G")
        master = None
        if sock_parent >= 0:
            sock, sock_parent = sock_parent, -1
            master = receive_fd(sock)
            if master is not None:
                os.set_inheritable(master, False)
        rest = lines.line()
        if rest.startswith(b"E"):
            _reap(container)
            if master is not None:
                os.close(master)
            raise child_error(spec.process.args[0], rest)
        log.debug(f"container {spec.id[:12]} started: pid {container}")
        return Started(container, master, helper, cgroup, mount_ns)
    except BaseException:
        network.detach(helper)
        if container > 0:
            try:
                os.kill(container, signal.SIGKILL)
            except ProcessLookupError:
                pass
            _reap(container)
        if cgroup is not None:
            cgroup.release()
        raise
    finally:
        for fd in (report_r, go_w, go2_w, sock_parent):
            if fd >= 0:
                try:
                    os.close(fd)
                except OSError:
                    pass


def exit_status(status: int) -> int:
    code = os.waitstatus_to_exitcode(status)
    return 128 - code if code < 0 else code


class blocked:
    """Block *signals* for the duration (so sigwaitinfo or a child's handler sees them).

    A signal ignored since we started (a shell starts background jobs with SIGINT and
    SIGQUIT ignored) would be discarded even while blocked; it gets the default action for
    the duration so it is queued and forwarded, as Podman (Go's signal.Notify) does.
    """

    def __init__(self, signals: Sequence[int]) -> None:
        self.signals = set(signals)
        self.old: set[int] | None = None
        self.ignored: list[int] = []

    def __enter__(self) -> blocked:
        self.old = signal.pthread_sigmask(signal.SIG_BLOCK, self.signals)
        for s in self.signals:
            if signal.getsignal(s) == signal.SIG_IGN:
                signal.signal(s, signal.SIG_DFL)
                self.ignored.append(s)
        return self

    def __exit__(self, *exc: object) -> None:
        for s in self.ignored:
            signal.signal(s, signal.SIG_IGN)
        if self.old is not None:
            signal.pthread_sigmask(signal.SIG_SETMASK, self.old)


def wait(started: Started, on_signal: Callable[[int], None] | None = None) -> int:
    """Wait for the container, forwarding FORWARDED signals; its exit status (128+N on signal N).

    Must be called with FORWARDED and SIGCHLD blocked.
    """
    waited = {*FORWARDED, signal.SIGCHLD}
    pid = started.pid
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return exit_status(status)
        info = signal.sigwaitinfo(waited)
        if info.si_signo != signal.SIGCHLD:
            if on_signal is not None:
                on_signal(info.si_signo)
            try:
                os.kill(pid, info.si_signo)
            except ProcessLookupError:
                pass
