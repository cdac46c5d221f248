"""A cgroup v2 of its own for each container, in a subtree delegated to the user, with its limits.

Without root a process may only create cgroups where the hierarchy has been delegated to it
(cgroups(7) "Delegation"): the user owns the directory, ``cgroup.procs`` and
``cgroup.subtree_control``. Two managers find such a place, Podman's two:

- ``systemd``: the user's own systemd (user@UID.service, ``Delegate=yes`` for the controllers
  the system's unit lists) creates a transient scope ``rootless-<ID>.scope`` in its
  ``user.slice`` over D-Bus (StartTransientUnit with ``Delegate=yes``, rootless.runtime.dbus). The
  scope holds two children that we manage: ``container`` (the container's processes, with the
  limits) and ``supervisor`` (one tiny process of ours that keeps the scope, and so the
  container's memory.events, alive until its exit has been read: systemd removes an empty
  scope at once). A process outside the user's subtree (a login session's scope) may not
  move itself in (the common-ancestor rule), so systemd moves it: the first time through
  StartTransientUnit's PIDs, for ``exec`` through AttachProcessesToUnit.
- ``cgroupfs``: no systemd, but the parent of our own cgroup is delegated to us (a CI runner's
  or an administrator's subtree): ``PARENT/rootless-<ID>`` is created and removed directly.

Limits go into the container cgroup's own files (memory.max, cpu.max, pids.max, ...), written
by us for both managers: inside a delegated subtree systemd never touches them.
"""

from __future__ import annotations

import errno
import os
import signal
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from rootless.errors import RootlessError
from rootless.record import dataclass
from rootless.runtime.reap import oom_kills, remove_cgroup

if TYPE_CHECKING:
    from rootless.context import Log
    from rootless.spec import Resources

ROOT = "/sys/fs/cgroup"
MANAGERS = ("systemd", "cgroupfs")
_DELEGATE_DROPIN = "/etc/systemd/system/user@.service.d/delegate.conf"
DELEGATE_FIX = (f"as root: mkdir -p {os.path.dirname(_DELEGATE_DROPIN)} && printf '[Service]\\nDelegate=cpu "
                f"cpuset io memory pids\\n' > {_DELEGATE_DROPIN} && systemctl daemon-reload, then log out and in")
_PLACE_TIMEOUT = 10.0  # systemd moves the process when its job runs: seconds on a slow VM


class CgroupError(RootlessError):
    """A limit was asked for that this host cannot give, or placing the container failed."""


def needed(res: Resources | None) -> list[str]:
    """The controllers *res* needs, in the order they are reported."""
    if res is None:
        return []
    need = []
    if res.memory is not None or res.memory_swap is not None or res.memory_reservation is not None:
        need.append("memory")
    if res.cpu_quota is not None or res.cpu_period is not None or res.cpu_shares is not None:
        need.append("cpu")
    if res.cpuset_cpus is not None:
        need.append("cpuset")
    if res.pids_limit is not None:
        need.append("pids")
    return need


def cpu_weight(shares: int) -> int:
    """cgroup v1 cpu.shares (2..262144, default 1024) → v2 cpu.weight (1..10000), as crun maps it."""
    return 1 + ((shares - 2) * 9999) // 262142


def limit_files(res: Resources) -> list[tuple[str, str]]:
    """(file, value) for the container's cgroup, in a safe order (memory.max before swap)."""
    out: list[tuple[str, str]] = []
    if res.memory is not None:
        out.append(("memory.max", str(res.memory)))
        # --memory-swap is memory + swap (Docker's meaning); unset: as much swap as memory
        if res.memory_swap == -1:
            out.append(("memory.swap.max", "max"))
        elif res.memory_swap is not None:
            out.append(("memory.swap.max", str(res.memory_swap - res.memory)))
        else:
            out.append(("memory.swap.max", str(res.memory)))
    elif res.memory_swap == -1:
        out.append(("memory.swap.max", "max"))
    if res.memory_reservation is not None:
        out.append(("memory.low", str(res.memory_reservation)))
    if res.cpu_quota is not None or res.cpu_period is not None:
        quota = str(res.cpu_quota) if res.cpu_quota is not None else "max"
        out.append(("cpu.max", f"{quota} {res.cpu_period or 100000}"))
    if res.cpu_shares is not None:
        out.append(("cpu.weight", str(cpu_weight(res.cpu_shares))))
    if res.cpuset_cpus is not None:
        out.append(("cpuset.cpus", res.cpuset_cpus))
    if res.pids_limit is not None:
        out.append(("pids.max", str(res.pids_limit)))
    return out


# --------------------------------------------------------------------------- the host


def version(root: str = ROOT) -> str:
    """``v2`` (unified), ``hybrid`` (v1 controllers, an empty v2 tree) or ``v1``."""
    if os.path.exists(os.path.join(root, "cgroup.controllers")):
        return "v2"
    if os.path.exists(os.path.join(root, "unified", "cgroup.controllers")):
        return "hybrid"
    return "v1"


def own_path(pid: int | str = "self") -> str | None:
    """The process's cgroup in the v2 hierarchy (``/user.slice/...``), None without one."""
    try:
        with open(f"/proc/{pid}/cgroup") as f:
            for line in f:
                if line.startswith("0::"):
                    return line[3:].strip()
    except OSError:
        pass
    return None


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None


def _write(path: str, value: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, value.encode())
    finally:
        os.close(fd)


def delegated(path: str) -> bool:
    """cgroups(7) "Delegation": we own the directory and may write its cgroup.procs and
    cgroup.subtree_control, so we may create children and move our processes there."""
    try:
        if os.stat(path).st_uid != os.geteuid():
            return False
    except OSError:
        return False
    return all(os.access(os.path.join(path, n), os.W_OK) for n in ("", "cgroup.procs", "cgroup.subtree_control"))


def user_bus() -> str | None:
    """The user's D-Bus session bus (where the user's systemd listens), None when there is none."""
    addr = os.environ.get("DBUS_SESSION_BUS_ADDRESS", "")
    for part in addr.split(";"):
        if part.startswith("unix:path="):
            path = part[len("unix:path="):].split(",")[0]
            if os.path.exists(path):
                return part
    rt = os.environ.get("XDG_RUNTIME_DIR")
    if rt and os.path.exists(os.path.join(rt, "bus")):
        return f"unix:path={os.path.join(rt, 'bus')}"
    return None


@dataclass(frozen=True)
class Host:
    """Where containers' cgroups can go: ``manager`` None when nowhere (``reason`` says why)."""

    version: str
    path: str | None  # our own cgroup
    manager: str | None
    parent: str | None  # relative path under which containers' cgroups are made
    controllers: tuple[str, ...]  # those a container's cgroup can have
    reason: str = ""
    fix: str = ""


def _user_manager_path() -> str | None:
    uid = os.getuid()
    conventional = f"/user.slice/user-{uid}.slice/user@{uid}.service"
    if os.path.isdir(ROOT + conventional):
        return conventional
    return None


def probe(preference: str = "", root: str = ROOT) -> Host:
    """Look at the host: cgroup version, our own cgroup, and the manager to use (*preference*:
    ``systemd``, ``cgroupfs`` or empty for the first that works, in that order)."""
    v = version(root)
    if v != "v2":
        what = "cgroup v1 only" if v == "v1" else "hybrid cgroups (controllers on v1, an empty v2 tree)"
        return Host(v, own_path() if v == "hybrid" else None, None, None, (), f"this host has {what}",
                    "boot with systemd.unified_cgroup_hierarchy=1 on the kernel command line (cgroup v2), then "
                    + DELEGATE_FIX)
    own = own_path()
    reasons: list[tuple[str, str]] = []
    for manager in ([preference] if preference else list(MANAGERS)):
        if manager == "systemd":
            if user_bus() is None:
                reasons.append(("no systemd user session (no D-Bus session bus in $DBUS_SESSION_BUS_ADDRESS "
                                "or $XDG_RUNTIME_DIR/bus)", "log in through a session that starts "
                                "systemd --user (loginctl enable-linger $USER), or use --cgroup-manager cgroupfs"))
                continue
            um = _user_manager_path()
            ctl = tuple((_read(f"{root}{um}/cgroup.controllers") or "").split()) if um else ()
            if um and not delegated(root + um):
                reasons.append((f"{um} is not delegated to you", DELEGATE_FIX))
                continue
            return Host(v, own, "systemd", "user.slice", ctl, fix=DELEGATE_FIX)
        if manager == "cgroupfs":
            if own is None:
                reasons.append(("this process is in no cgroup v2", ""))
                continue
            parent = os.path.dirname(own.rstrip("/")) or "/"
            if not delegated(root + parent):
                reasons.append((f"the cgroup {parent} (the parent of ours) is not delegated to you",
                                DELEGATE_FIX))
                continue
            ctl = tuple((_read(f"{root}{parent}/cgroup.controllers") or "").split())
            return Host(v, own, "cgroupfs", parent, ctl, fix=DELEGATE_FIX)
        reasons.append((f"unknown cgroup manager {manager!r}", "use systemd or cgroupfs"))
    reason, fix = reasons[0] if reasons else ("no cgroup manager", "")
    return Host(v, own, None, None, (), reason, fix)


def _flag(res: Resources, controller: str) -> str:
    """The first flag given that needs *controller*, for messages."""
    fields = {"memory": (("memory", "--memory"), ("memory_swap", "--memory-swap"),
                         ("memory_reservation", "--memory-reservation")),
              "cpu": (("cpu_quota", "--cpus"), ("cpu_period", "--cpu-period"), ("cpu_shares", "--cpu-shares")),
              "cpuset": (("cpuset_cpus", "--cpuset-cpus"),), "pids": (("pids_limit", "--pids-limit"),)}
    return next((flag for name, flag in fields.get(controller, ()) if getattr(res, name) is not None),
                controller)


def check(host: Host, res: Resources | None) -> None:
    """Raise CgroupError (exit 125) when *res* asks for a controller *host* cannot give."""
    need = needed(res)
    if not need or res is None:
        return
    names = {c: _flag(res, c) for c in need}
    first = names[need[0]]
    if host.manager is None:
        raise CgroupError(f"{first} needs a cgroup v2 delegated to you, and {host.reason}",
                          host.fix or "run without resource limits")
    missing = [c for c in need if c not in host.controllers]
    if missing:
        have = " ".join(host.controllers) or "none"
        raise CgroupError(f"{names.get(missing[0], missing[0])} needs the {missing[0]} controller, which is not "
                          f"delegated to you (delegated: {have})", host.fix)


# --------------------------------------------------------------------------- one container


@dataclass
class Cgroup:
    """A container's cgroup once its first process is in it."""

    path: str  # relative to the v2 root, e.g. /user.slice/.../rootless-ID.scope/container
    manager: str
    unit: str = ""  # the systemd scope
    holder: int = 0  # pid of the supervisor process keeping the scope alive (systemd)
    holder_fd: int = -1  # write end of its pipe: closing it ends the supervisor

    @property
    def dir(self) -> str:
        return ROOT + self.path

    def oom_killed(self) -> bool:
        """memory.events counted an OOM kill in the container's cgroup."""
        return oom_kills(self.dir) > 0

    def release(self) -> None:
        """Remove the cgroup once the container has ended: what is left in it (the fuse-overlayfs
        daemon of its rootfs, a process that outlived PID 1 outside its PID namespace) is killed
        first. The systemd scope goes when its supervisor does."""
        if self.path:
            remove_cgroup(self.dir)
        if self.holder_fd >= 0:
            os.close(self.holder_fd)
            self.holder_fd = -1
        if self.holder > 0:
            try:
                os.waitpid(self.holder, 0)
            except ChildProcessError:
                pass
            self.holder = 0


def _holder() -> tuple[int, int]:
    """Fork the supervisor: it blocks until the pipe's write end (returned, close-on-exec) closes."""
    r, w = os.pipe2(os.O_CLOEXEC)
    pid = os.fork()
    if pid == 0:
        try:
            from rootless.runtime import syscalls

            syscalls.set_pdeathsig(signal.SIGKILL)
            os.setsid()
            null = os.open("/dev/null", os.O_RDWR)
            for fd in (0, 1, 2):
                os.dup2(null, fd)
            os.closerange(3, r)
            os.closerange(r + 1, 65536)
            signal.pthread_sigmask(signal.SIG_SETMASK, ())
            for s in (signal.SIGINT, signal.SIGQUIT, signal.SIGHUP, signal.SIGTERM):
                signal.signal(s, signal.SIG_DFL)
            while os.read(r, 1):
                pass
        finally:
            os._exit(0)
    os.close(r)
    return pid, w


def _systemd_call(method: str, signature: str, *args: Any, log: Log | None = None, wait_exists: float = 0.0
                  ) -> None:
    """A method of the user's systemd manager (org.freedesktop.systemd1.Manager(5)). With
    *wait_exists*, a unit of the same name that still exists (the scope of this container's
    previous run, being collected) is waited for that many seconds."""
    from rootless.runtime import dbus

    bus = user_bus()
    if log is not None:
        log.debug(f"cgroup: systemd --user {method}{args!r}")
    deadline = time.monotonic() + wait_exists
    try:
        if bus is None:
            raise dbus.DBusError("rootless.NoBus", "no session bus")
        while True:
            try:
                dbus.call(bus, "org.freedesktop.systemd1", "/org/freedesktop/systemd1",
                          "org.freedesktop.systemd1.Manager", method, signature, args)
                return
            except dbus.DBusError as e:
                if e.name != "org.freedesktop.systemd1.UnitExists" or time.monotonic() > deadline:
                    raise
            time.sleep(0.05)
    except dbus.DBusError as e:
        raise CgroupError(f"systemd --user {method}: {e}",
                          "check `systemctl --user status`, or use --cgroup-manager cgroupfs or --cgroups disabled") \
            from None


def _wait_in(pids: Sequence[int], suffix: str) -> str:
    deadline = time.monotonic() + _PLACE_TIMEOUT
    while True:
        paths = [own_path(p) or "" for p in pids]
        if all(p.endswith(suffix) for p in paths):
            return paths[0]
        if time.monotonic() > deadline:
            raise CgroupError(f"systemd did not move the container into {suffix.lstrip('/')} within "
                              f"{_PLACE_TIMEOUT:.0f} s (it is in {paths[0] or 'no cgroup'})",
                              "check `systemctl --user status`, or use --cgroups disabled")
        time.sleep(0.002)


def _enable(directory: str, wanted: Sequence[str]) -> None:
    have = (_read(os.path.join(directory, "cgroup.controllers")) or "").split()
    on = set((_read(os.path.join(directory, "cgroup.subtree_control")) or "").split())
    add = [c for c in wanted if c in have and c not in on]
    if add:
        try:
            _write(os.path.join(directory, "cgroup.subtree_control"), " ".join("+" + c for c in add))
        except OSError:
            # one at a time: a controller the kernel refuses must not cost the others
            for c in add:
                try:
                    _write(os.path.join(directory, "cgroup.subtree_control"), "+" + c)
                except OSError:
                    pass


def apply_limits(directory: str, res: Resources | None) -> None:
    """Write *res* into the cgroup at *directory*; CgroupError names the flag and file that failed."""
    if res is None:
        return
    for name, value in limit_files(res):
        path = os.path.join(directory, name)
        try:
            _write(path, value)
        except OSError as e:
            if name == "memory.swap.max" and e.errno == errno.ENOENT:
                continue  # no swap accounting (or no swap): nothing to limit
            raise CgroupError(f"cannot set {name} to {value} in {directory}: {e.strerror}",
                              "check the value against the host (`rootless info`)") from None


_WANTED = ("cpu", "cpuset", "io", "memory", "pids")


def place(host: Host, cid: str, pid: int, res: Resources | None, log: Log | None = None) -> Cgroup:
    """Create the container's cgroup, move *pid* (its first process, still waiting for us) into
    it and apply *res*. On failure nothing is left behind and CgroupError is raised."""
    if host.manager == "systemd":
        return _place_systemd(host, cid, pid, res, log)
    if host.manager == "cgroupfs" and host.parent is not None:
        return _place_cgroupfs(host, cid, pid, res)
    raise CgroupError(f"no cgroup for the container: {host.reason}", host.fix)


def _place_cgroupfs(host: Host, cid: str, pid: int, res: Resources | None) -> Cgroup:
    assert host.parent is not None
    parent = ROOT + host.parent
    rel = f"{host.parent.rstrip('/')}/rootless-{cid}"
    directory = ROOT + rel
    _enable(parent, _WANTED)
    try:
        os.mkdir(directory)
    except OSError as e:
        raise CgroupError(f"cannot create the cgroup {rel}: {e.strerror}", host.fix) from None
    try:
        try:
            _write(os.path.join(directory, "cgroup.procs"), str(pid))
        except OSError as e:
            raise CgroupError(f"cannot move the container into {rel}: {e.strerror}", host.fix) from None
        apply_limits(directory, res)
    except BaseException:
        remove_cgroup(directory)  # the first process may be in it already: rmdir alone would wait on it
        raise
    return Cgroup(rel, "cgroupfs")


def _place_systemd(host: Host, cid: str, pid: int, res: Resources | None, log: Log | None) -> Cgroup:
    unit = f"rootless-{cid}.scope"
    holder, holder_fd = _holder()
    cg = Cgroup("", "systemd", unit, holder, holder_fd)
    try:
        _systemd_call("StartTransientUnit", "ssa(sv)a(sa(sv))", unit, "fail", [
            ("Description", ("s", f"rootless container {cid[:12]}")),
            ("PIDs", ("au", [holder, pid])),
            ("Delegate", ("b", True)),
            ("Slice", ("s", host.parent or "user.slice")),
            ("CollectMode", ("s", "inactive-or-failed")),
            # an OOM kill inside the container must not stop the scope (and kill the rest of
            # the container), as it does not stop a Podman container
            ("OOMPolicy", ("s", "continue")),
        ], [], log=log, wait_exists=_PLACE_TIMEOUT)
        scope = _wait_in((holder, pid), "/" + unit)
        sdir = ROOT + scope
        os.mkdir(sdir + "/supervisor")
        os.mkdir(sdir + "/container")
        cg.path = scope + "/container"
        _write(sdir + "/supervisor/cgroup.procs", str(holder))
        _write(sdir + "/container/cgroup.procs", str(pid))
        # Only now is the scope itself empty, as enabling controllers for children requires.
        _enable(sdir, _WANTED)
        apply_limits(sdir + "/container", res)
    except OSError as e:
        cg.release()
        raise CgroupError(f"cannot set up the cgroup of the container in {unit}: {e.strerror}",
                          DELEGATE_FIX) from None
    except BaseException:
        cg.release()
        raise
    return cg


def join(path: str, manager: str, unit: str, pid: int, log: Log | None = None) -> None:
    """Move *pid* (an `exec` about to enter the container) into the container's cgroup."""
    try:
        _write(ROOT + path + "/cgroup.procs", str(pid))
        return
    except OSError as e:
        if manager != "systemd" or e.errno not in (errno.EACCES, errno.EPERM):
            raise CgroupError(f"cannot move the process into the container's cgroup {path}: {e.strerror}") \
                from None
    # From outside the user's delegated subtree only systemd may move it (the common-ancestor
    # rule of cgroups(7)); the user manager asks the system manager on our behalf.
    sub = path.rsplit("/" + unit, 1)[-1] if unit and ("/" + unit) in path else ""
    _systemd_call("AttachProcessesToUnit", "ssau", unit, sub, [pid], log=log)


# --------------------------------------------------------------------------- stats


@dataclass(frozen=True)
class Sample:
    cpu_usec: int  # cpu.stat usage_usec
    memory: int  # memory.current
    memory_limit: int | None  # memory.max, None for "max"
    pids: int
    pids_limit: int | None
    io_read: int
    io_write: int
    at: float  # time.monotonic() of the sample
    oom_kills: int = 0
    throttled: int = 0  # cpu.stat nr_throttled


def _kv(text: str | None) -> dict[str, int]:
    out = {}
    for line in (text or "").splitlines():
        k, _, v = line.partition(" ")
        try:
            out[k] = int(v)
        except ValueError:
            pass
    return out


def _int_or_max(text: str | None) -> int | None:
    t = (text or "").strip()
    if not t or t == "max":
        return None
    try:
        return int(t)
    except ValueError:
        return None


def sample(path: str) -> Sample:
    """The container's usage, read from its cgroup (*path* relative to the v2 root)."""
    d = ROOT + path
    cpu = _kv(_read(d + "/cpu.stat"))
    if not os.path.isdir(d):
        raise CgroupError(f"the container's cgroup {path} is gone")
    rd = wr = 0
    for line in (_read(d + "/io.stat") or "").splitlines():
        for field in line.split()[1:]:
            k, _, v = field.partition("=")
            if k == "rbytes":
                rd += int(v)
            elif k == "wbytes":
                wr += int(v)
    return Sample(cpu_usec=cpu.get("usage_usec", 0), memory=_int_or_max(_read(d + "/memory.current")) or 0,
                  memory_limit=_int_or_max(_read(d + "/memory.max")),
                  pids=_int_or_max(_read(d + "/pids.current")) or 0,
                  pids_limit=_int_or_max(_read(d + "/pids.max")), io_read=rd, io_write=wr, at=time.monotonic(),
                  oom_kills=oom_kills(d), throttled=cpu.get("nr_throttled", 0))
