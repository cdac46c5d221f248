"""Containers that exist, by ID: records, start, stop, kill, rm, logs, inspect, exec, cp, stats.

The glue between rootless.runtime (state, monitor, nsexec) and storage (the container layer),
behind rootless.engine (which front ends call, by name or ID); it prints nothing.
"""

from __future__ import annotations

import json
import os
import re
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO, TYPE_CHECKING, Any

from rootless.errors import RootlessError
from rootless.record import dataclass, replace
from rootless.runtime import state
from rootless.runtime.state import Config, NoSuchContainer, State

if TYPE_CHECKING:
    from pathlib import Path

    from rootless.context import Context
    from rootless.runtime.cgroups import Sample
    from rootless.runtime.process import Started
    from rootless.spec import PortMapping, Spec


# --------------------------------------------------------------------------- creating


@contextmanager
def claim(ctx: Context, wanted: str | None) -> Iterator[str]:
    """The container's name, held unique until the record that names it is saved."""
    with state.names_locked(ctx.layout):
        taken = state.names(ctx.layout)
        if wanted is not None:
            state.check_name(wanted)
            if wanted in taken:
                raise RootlessError(
                    f"the container name {wanted!r} is already in use by {taken[wanted][:12]}",
                    hint=f"remove that container (`rootless rm -f {wanted}`) or choose another name")
            yield wanted
        else:
            yield state.new_name(taken)


def save(ctx: Context, spec: Spec, image: str, image_id: str, stop_signal: str | None, rm: bool,
         **extra: Any) -> Config:
    """The container's record; *extra*: record_options's fields (labels, restart, health, ...)."""
    cfg = Config(id=spec.id, name=spec.name, image=image, image_id=image_id, created=time.time(), spec=spec,
                 stop_signal=stop_signal or "SIGTERM", rm=rm, **extra)
    state.save_config(ctx.layout, cfg)
    state.write_state(ctx.layout, spec.id, State())
    event(ctx, cfg, "create")
    return cfg


def event(ctx: Context, cfg: Config, status: str, attributes: dict[str, str] | None = None, **kw: Any) -> None:
    """A container event in the events log (rootless.events), with the container's labels."""
    from rootless import events

    events.emit(ctx, "container", status, id_=cfg.id, name=cfg.name, image=cfg.image,
                attributes={**cfg.labels, **(attributes or {})} or None, **kw)


def joined(ctx: Context, spec: Spec) -> Spec:
    """*spec* with the namespaces it shares (Spec.shared) resolved to the running PID 1 of the
    containers that have them: a container that is gone or not running is an error."""
    out = []
    for ns, cid in spec.shared:
        what = f"join the {ns} namespace of container {cid[:12]}"
        try:
            c = load(ctx, cid)
        except NoSuchContainer:
            raise RootlessError(f"{what}: the container no longer exists",
                                f"remove this container and create it again: `rootless rm {spec.name}`") from None
        if not c.state.running or c.state.pid <= 0:
            raise RootlessError(f"{what.replace(cid[:12], c.config.name)}: container {c.config.name} is not running",
                                f"start it first: `rootless start {c.config.name}`")
        out.append((ns, c.state.pid))
    return replace(spec, join=tuple(out))


def network_mode(spec: Spec) -> str:
    """HostConfig.NetworkMode as Podman shows it: ``container:ID`` for another container's namespace."""
    if spec.network.mode == "container":
        return f"container:{dict(spec.shared)['network']}"
    return spec.network.mode


def run_foreground(ctx: Context, spec: Spec) -> int:
    """`run` without -d: the CLI is the container's monitor, the record says so."""
    from rootless.runtime.run import run as run_container

    me = os.getpid()
    with state.locked(ctx.layout, spec.id):
        state.write_state(ctx.layout, spec.id, State(
            status="running", pid=me, pid_start=state.proc_start(me), monitor_pid=me,
            monitor_start=state.proc_start(me), started_at=time.time(), boot_id=state.boot_id()))
    (ctx.layout.containers / spec.id / "started").touch()
    code = 125
    oom = False
    cfg = state.load_config(ctx.layout, spec.id)
    event(ctx, cfg, "start")
    event(ctx, cfg, "attach")  # the CLI holds the container's streams, as Podman's foreground run records

    def started(s: Started) -> None:
        # the container's own PID 1 (exec and cp enter its namespaces), and its cgroup for stats
        with state.locked(ctx.layout, spec.id):
            st = state.read_state_raw(ctx.layout, spec.id) or State()
            st = replace(st, pid=s.pid, pid_start=state.proc_start(s.pid))
            if s.cgroup is not None:
                st = replace(st, cgroup=s.cgroup.path, cgroup_manager=s.cgroup.manager,
                                         cgroup_unit=s.cgroup.unit)
            state.write_state(ctx.layout, spec.id, st)

    def exited(killed: bool) -> None:
        nonlocal oom
        oom = killed

    try:
        code = run_container(ctx, spec, on_start=started, on_exit=exited)
        return code
    finally:
        try:
            with state.locked(ctx.layout, spec.id):
                st = state.read_state_raw(ctx.layout, spec.id) or State()
                state.write_state(ctx.layout, spec.id, replace(
                    st, status="exited", exit_code=code, finished_at=time.time(), oom_killed=oom))
        except RootlessError:
            pass
        event(ctx, cfg, "died", exit_code=code)


def start(ctx: Context, cid: str, keep_count: bool = False, stdin: int | None = None,
          terminal: int | None = None, winsize: bytes | None = None) -> int:
    """Start a created or exited container under a monitor; its PID (0 when already running).
    *keep_count*: a restart by the restart policy (the count of restarts goes on). *stdin*: what a
    container made with -i reads (`start -a`), else /dev/null. *terminal*: a stream socket the
    monitor relays a -t container's pty over (`start -a`), sized *winsize* first."""
    from rootless.runtime import launcher

    cfg = state.load_config(ctx.layout, cid)
    with state.locked(ctx.layout, cid):
        st = state.read_state(ctx.layout, cid)
        if st.running:
            return 0
        spec = joined(ctx, cfg.spec) if cfg.spec.shared else cfg.spec
        # A fresh record, so a concurrent start sees this one as under way.
        state.write_state(ctx.layout, cid, State(status="created"))
    stopped_marker(ctx, cid).unlink(missing_ok=True)
    if not keep_count:
        restarts_file(ctx, cid).unlink(missing_ok=True)
    ctx.layout.ensure_runroot()
    # --rm, --restart: the monitor becomes the exited hook once the container has ended
    rm_argv = hook_argv(ctx, cfg)
    died = None
    if ctx.config.events_logger != "none":
        from rootless import events

        # the monitor appends it when the container ends, with the exit code and the time
        ev = events.record("container", "died", id_=cfg.id, name=cfg.name, image=cfg.image,
                           attributes=dict(cfg.labels) or None, exit_code=0)
        events.log_path(ctx.layout).parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        died = (str(events.log_path(ctx.layout)), json.dumps(ev, separators=(",", ":")))
    pid = launcher.launch(ctx.layout, ctx.log, spec, rm_argv, died=died,
                          log_file=os.devnull if cfg.log_driver == "none" else None, log_max_size=cfg.log_max_size,
                          stdin=stdin if cfg.spec.process.interactive and not cfg.spec.process.terminal else None,
                          terminal=terminal if cfg.spec.process.terminal else None, winsize=winsize)
    event(ctx, cfg, "start")
    spawn_health_loop(ctx, cfg)
    return pid


# --------------------------------------------------------------------------- signals


def parse_signal(text: str) -> int:
    t = text.strip().upper()
    if t.isdigit():
        n = int(t)
        if 0 < n < signal.NSIG:
            return n
    else:
        name = t if t.startswith("SIG") else "SIG" + t
        if hasattr(signal.Signals, name):
            return int(signal.Signals[name])
    raise RootlessError(f"invalid signal {text!r}", hint="give a name (TERM, SIGKILL) or a number")


def _signal(ctx: Context, cid: str, sig: int) -> bool:
    """Send *sig* to the container's PID 1; False if it is not running."""
    st = state.read_state(ctx.layout, cid)
    if not st.running or not state.alive(st.pid, st.pid_start):
        return False
    try:
        os.kill(st.pid, sig)
    except ProcessLookupError:
        return False
    return True


def kill(ctx: Context, cid: str, sig: int) -> None:
    if not _signal(ctx, cid, sig):
        status = state.read_state(ctx.layout, cid).status
        raise RootlessError(f"can only kill running containers: {cid[:12]} is {status}",
                            hint="`rootless start` it first")
    event(ctx, state.load_config(ctx.layout, cid), "kill", attributes={"signal": str(sig)})


def wait_stopped(ctx: Context, cid: str, timeout: float | None = None) -> State | None:
    """The state once the container is no longer running (the monitor has recorded its exit),
    None on timeout."""
    deadline = None if timeout is None else time.monotonic() + timeout
    delay = 0.005
    while True:
        st = state.read_state(ctx.layout, cid)
        if not st.running:
            return st
        if deadline is not None and time.monotonic() >= deadline:
            return None
        time.sleep(delay)
        delay = min(delay * 2, 0.05)


WAIT_CONDITIONS = frozenset({"stopped", "exited", "running", "created", "paused", "healthy", "unhealthy",
                             "configured", "initialized", "stopping"})


def reached(c: Container, conds: set[str]) -> bool:
    """Whether the container is in one of `wait --condition`'s states."""
    st = c.state
    now = {status_name(st), st.health} | ({"stopped"} if not st.running else set()) | \
        ({"configured"} if st.status == "created" else set())
    return bool(now & conds)


def stop(ctx: Context, cid: str, timeout: float | None) -> None:
    """The image's StopSignal (SIGTERM by default), SIGKILL after *timeout* seconds (Podman: 10)."""

    cfg = state.load_config(ctx.layout, cid)
    wait = float(cfg.stop_timeout) if timeout is None else timeout
    marker = stopped_marker(ctx, cid)
    if marker.parent.is_dir():
        marker.touch()  # no restart by the restart policy after an explicit stop
    try:
        first = parse_signal(cfg.stop_signal)
    except RootlessError:
        ctx.log.warn_once("stop-signal", f"the image's stop signal {cfg.stop_signal!r} is not known here: "
                          "sending SIGTERM")
        first = signal.SIGTERM
    if not (_signal(ctx, cid, first) and wait_stopped(ctx, cid, wait) is not None):
        _signal(ctx, cid, signal.SIGKILL)
        if wait_stopped(ctx, cid, 10) is None:
            raise RootlessError(f"container {cid[:12]} did not stop after SIGKILL")
    event(ctx, cfg, "stop")


# --------------------------------------------------------------------------- removing


def remove(ctx: Context, cid: str, force: bool) -> None:
    """Everything of the container: process (with -f), monitor, run directory, layer, record."""
    from rootless.runtime.lazyns import LazyStoreNamespace
    from storage import rootfs

    deps = dependents(ctx, cid)
    if deps:  # Podman's wording, -f or not
        raise RootlessError(f"container {cid} has dependent containers which must be removed before it: "
                            f"{', '.join(deps)}: container already exists",
                            hint="they share its namespaces (container:NAME): remove them first")
    with state.locked(ctx.layout, cid):
        st = state.read_state(ctx.layout, cid)
        if st.running:
            if not force:
                raise state.ContainerRunning(
                    f"container {cid[:12]} is running: cannot remove it",
                    hint="stop it first, or remove it with -f (SIGKILL)")
            if state.alive(st.pid, st.pid_start):
                os.kill(st.pid, signal.SIGKILL)
    # Without the lock: the monitor takes it to record the exit.
    if st.running:
        wait_stopped(ctx, cid, 10)
    deadline = time.monotonic() + 5
    while st.monitor_pid and st.monitor_pid != os.getpid() and state.alive(st.monitor_pid, st.monitor_start):
        if time.monotonic() > deadline:
            os.kill(st.monitor_pid, signal.SIGKILL)
        time.sleep(0.01)
    with state.locked(ctx.layout, cid):
        cfg: Config | None = None
        try:
            cfg = state.load_config(ctx.layout, cid)
            rundir = cfg.spec.rundir
        except NoSuchContainer:
            raise
        except RootlessError:
            rundir = ""  # an unreadable record: what it names cannot be trusted, the rest goes
        _remove_rundir(ctx, cid, rundir)
        with LazyStoreNamespace(ctx) as runner:
            rootfs.remove(ctx, runner, cid)
    if cfg is not None:
        event(ctx, cfg, "remove")


def dependents(ctx: Context, cid: str) -> list[str]:
    """The containers that share a namespace of *cid* (--network/--pid/--ipc/--uts container:...):
    a record that names it is parsed, the others are only read."""
    out = []
    key = cid.encode()
    for other in state.all_ids(ctx.layout):
        if other == cid:
            continue
        try:
            raw = state.config_path(ctx.layout, other).read_bytes()
        except OSError:
            continue
        if key in raw and b'"shared"' in raw:
            try:
                if any(x == cid for _, x in state.load_config(ctx.layout, other).spec.shared):
                    out.append(other)
            except RootlessError:
                continue
    return out


def _remove_rundir(ctx: Context, cid: str, rundir: str) -> None:
    import shutil

    for d in {str(state.state_dir(ctx.layout, cid)), rundir}:
        if d:
            shutil.rmtree(d, ignore_errors=True)


def forget(ctx: Context, cid: str) -> None:
    """After `run --rm` in the foreground: the run directory (the layer goes with storage)."""
    import shutil

    shutil.rmtree(state.state_dir(ctx.layout, cid), ignore_errors=True)


# --------------------------------------------------------------------------- views


@dataclass(frozen=True)
class Container:
    config: Config
    state: State

    @property
    def id(self) -> str:
        return self.config.id


def load(ctx: Context, cid: str) -> Container:
    return Container(state.load_config(ctx.layout, cid), state.read_state(ctx.layout, cid))


def all_containers(ctx: Context) -> list[Container]:
    out = []
    for cid in state.all_ids(ctx.layout):
        try:
            out.append(load(ctx, cid))
        except RootlessError:
            continue
    return sorted(out, key=lambda c: c.config.created, reverse=True)


def iso(t: float) -> str:
    """*t* in RFC 3339 as datetime.fromtimestamp(t, UTC).isoformat() gives it, with Z (microseconds
    rounded half to even; none shown when 0), without importing datetime (inspect's start-up)."""
    if not t:
        return "0001-01-01T00:00:00Z"
    import math

    frac, whole = math.modf(t)
    us = round(frac * 1e6)
    if us >= 1_000_000:
        whole, us = whole + 1, us - 1_000_000
    elif us < 0:
        whole, us = whole - 1, us + 1_000_000
    text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole))
    return f"{text}.{us:06d}Z" if us else f"{text}Z"


def published(c: Container) -> tuple[PortMapping, ...]:
    """The ports as forwarded while running (host ports chosen then), else as asked for."""
    from rootless.spec import PortMapping

    if c.state.running and c.state.ports:
        return tuple(PortMapping(**p) for p in c.state.ports)
    return c.config.spec.network.ports


def ago(seconds: float) -> str:
    s = int(max(0, seconds))
    for unit, n in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if s >= n:
            k = s // n
            return f"{k} {unit}{'s' if k > 1 else ''}"
    return f"{s} second{'s' if s != 1 else ''}"


def status_text(c: Container, now: float) -> str:
    st = c.state
    if st.status == "paused":
        return "Paused"
    if st.running:
        up = f"Up {ago(now - st.started_at)}"
        return f"{up} ({st.health})" if st.health else up
    if st.status == "exited":
        return f"Exited ({st.exit_code}) {ago(now - (st.finished_at or now))} ago"
    return "Created"


# what status_name gives, plus Podman's names of states this engine never reaches
STATES = ("created", "running", "stopping", "exited", "paused", "removing", "unknown")


def status_name(st: State) -> str:
    return st.status if st.status == "paused" else "running" if st.running else st.status


def inspect(ctx: Context, c: Container) -> dict[str, Any]:
    spec, st = c.config.spec, c.state
    p = spec.process
    return {
        "Id": c.id,
        "Created": iso(c.config.created),
        "Path": p.args[0] if p.args else "",
        "Args": list(p.args[1:]),
        "State": {"Status": status_name(st), "Running": st.running, "Paused": st.status == "paused",
                  "Restarting": False,
                  "Restarts": _restarts(ctx, c.id), "Health": _inspect_health(ctx, c),
                  "OOMKilled": st.oom_killed, "Dead": False, "Pid": st.pid if st.running else 0,
                  "ExitCode": st.exit_code, "StartedAt": iso(st.started_at), "FinishedAt": iso(st.finished_at),
                  "CgroupPath": st.cgroup},
        "Image": c.config.image_id,
        "ImageName": c.config.image,
        "Name": c.config.name,
        "Driver": spec.rootfs.driver,
        "Rootfs": spec.rootfs.target,
        "LogPath": str(state.log_path(ctx.layout, c.id)),
        "Mounts": [{"Type": m.type, "Source": m.source, "Destination": m.destination,
                    "RW": "ro" not in m.options, "Options": list(m.options)} for m in user_mounts(spec)],
        "Config": {"Hostname": spec.hostname, "User": p.user or f"{p.uid}:{p.gid}", "Env": list(p.env),
                   "Cmd": list(p.args), "Image": c.config.image, "WorkingDir": p.cwd, "Tty": p.terminal,
                   "OpenStdin": p.interactive, "StopSignal": c.config.stop_signal,
                   "Labels": dict(c.config.labels), "Annotations": dict(spec.annotations)},
        "NetworkSettings": {"Ports": _inspect_ports(c)},
        "HostConfig": {"NetworkMode": network_mode(spec), "AutoRemove": c.config.rm,
                       "CapAdd": [], "Privileged": False, "CgroupManager": st.cgroup_manager,
                       **_inspect_resources(spec)},
    }


def _restarts(ctx: Context, cid: str) -> int:

    return restarts(ctx, cid)


def health_log_path(ctx: Context, cid: str) -> Any:
    return state.state_dir(ctx.layout, cid) / "health.json"


def _inspect_health(ctx: Context, c: Container) -> dict[str, Any]:
    """State.Health as Podman shows it: Status, FailingStreak, Log (the last checks)."""
    if not c.state.health:
        return {"Status": "", "FailingStreak": 0, "Log": None}
    log: list[dict[str, Any]] = []
    try:
        log = json.loads(health_log_path(ctx, c.id).read_text())
    except (OSError, ValueError):
        pass
    streak = 0
    for entry in reversed(log):
        if entry.get("ExitCode") == 0:
            break
        streak += 1
    return {"Status": c.state.health, "FailingStreak": streak, "Log": log or None}


def user_mounts(spec: Spec) -> list[Any]:
    """The bind mounts the user asked for (not the run directory's files: hosts, resolv.conf)."""
    return [m for m in spec.mounts if m.type == "bind" and not m.source.startswith(spec.rundir or "\0")]


def _inspect_resources(spec: Spec) -> dict[str, Any]:
    """HostConfig's limit fields with Docker's names and meanings (0: none)."""
    r = spec.resources
    cpus = 0
    if r is not None and r.cpu_quota is not None and r.cpu_period:
        cpus = round(r.cpu_quota * 1_000_000_000 / r.cpu_period)
    return {
        "Memory": (r.memory or 0) if r else 0,
        "MemorySwap": (r.memory_swap or 0) if r else 0,
        "MemoryReservation": (r.memory_reservation or 0) if r else 0,
        "NanoCpus": cpus,
        "CpuShares": (r.cpu_shares or 0) if r else 0,
        "CpuQuota": (r.cpu_quota or 0) if r else 0,
        "CpuPeriod": (r.cpu_period or 0) if r else 0,
        "CpusetCpus": (r.cpuset_cpus or "") if r else "",
        "PidsLimit": (r.pids_limit or 0) if r else 0,
        "OomScoreAdj": spec.process.oom_score_adj or 0,
        "Cgroups": "disabled" if spec.cgroups == "disabled" else "enabled",
    }


def _inspect_ports(c: Container) -> dict[str, list[dict[str, str]]]:
    out: dict[str, list[dict[str, str]]] = {}
    for p in published(c):
        out.setdefault(f"{p.container_port}/{p.protocol}", []).append(
            {"HostIp": p.host_ip, "HostPort": str(p.host_port)})
    return out


# --------------------------------------------------------------------------- logs


@dataclass(frozen=True)
class LogLine:
    time: str  # RFC 3339, nanoseconds
    stream: str
    partial: bool
    text: bytes

    @property
    def epoch(self) -> float:
        from datetime import datetime

        base, _, frac = self.time.rstrip("Z").partition(".")
        return datetime.fromisoformat(base + "+00:00").timestamp() + float("0." + (frac or "0"))


def parse_log_line(raw: bytes) -> LogLine | None:
    parts = raw.rstrip(b"\n").split(b" ", 3)
    if len(parts) < 3:
        return None
    return LogLine(parts[0].decode(), parts[1].decode(), parts[2] == b"P", parts[3] if len(parts) > 3 else b"")


DURATION = re.compile(r"(\d+(\.\d+)?(h|m|s|ms|us|µs|ns))+")


def parse_duration(text: str, what: str) -> float:
    """A Go duration (250ms, 1s, 1m30s) or a number of seconds."""
    t = text.strip()
    try:
        return float(t)
    except ValueError:
        pass
    if DURATION.fullmatch(t):
        return sum(float(n) * {"h": 3600, "m": 60, "s": 1, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}[u]
                   for n, _, u in re.findall(r"(\d+(\.\d+)?)(ms|us|µs|ns|h|m|s)", t))
    raise RootlessError(f"{what} {text!r}: not a duration", hint="for example 250ms, 1s, 1m30s")



def parse_since(text: str, now: float) -> float:
    """--since: a Unix time, an RFC 3339 time, or a duration before now (10s, 5m, 1h30m)."""
    t = text.strip()
    if DURATION.fullmatch(t):  # a Go duration: that long before now
        return now - parse_duration(t, "--since")
    if t.replace(".", "", 1).isdigit():
        return float(t)
    from datetime import UTC, datetime

    try:
        d = datetime.fromisoformat(t.replace("Z", "+00:00"))
    except ValueError:
        raise RootlessError(f"invalid --since value {text!r}",
                            hint="a duration (10m), an RFC 3339 time or a Unix time") from None
    if d.tzinfo is None:
        d = d.replace(tzinfo=UTC)
    return d.timestamp()


def open_log(ctx: Context, cid: str) -> IO[bytes] | None:
    """The container's log, open (None before its first start): a reader that opens it before it
    answers keeps every line even if the container is removed meanwhile (``read_logs(log=...)``)."""
    try:
        return open(state.log_path(ctx.layout, cid), "rb")  # noqa: SIM115 - the reader closes it
    except FileNotFoundError:
        return None


def read_logs(ctx: Context, cid: str, *, follow: bool, tail: int | None, since: float | None,
              log: IO[bytes] | None = None) -> Iterator[LogLine]:
    path = state.log_path(ctx.layout, cid)
    f = log if log is not None else open_log(ctx, cid)
    if f is None and not follow:
        return
    try:
        lines: list[bytes] = f.readlines() if f is not None else []
        if tail is not None and tail >= 0:
            lines = lines[len(lines) - tail:] if tail else []
        for raw in lines:
            ln = parse_log_line(raw)
            if ln is not None and (since is None or ln.epoch >= since):
                yield ln
        if not follow:
            return
        buf = b""
        while True:
            if f is None:
                try:
                    f = open(path, "rb")  # noqa: SIM115
                except FileNotFoundError:
                    f = None
            chunk = f.read() if f is not None else b""
            if chunk:
                buf += chunk
                *complete, buf = buf.split(b"\n")
                for raw in complete:
                    ln = parse_log_line(raw)
                    if ln is not None and (since is None or ln.epoch >= since):
                        yield ln
                continue
            try:
                running = state.read_state(ctx.layout, cid).running
            except RootlessError:
                running = False  # its record is gone (removed): what the open log still holds is all
            if not running:
                # the monitor writes the last lines before it records the exit
                rest = f.read() if f is not None else b""
                for raw in (buf + rest).split(b"\n"):
                    ln = parse_log_line(raw) if raw else None
                    if ln is not None and (since is None or ln.epoch >= since):
                        yield ln
                return
            time.sleep(0.05)
    finally:
        if f is not None:
            f.close()


# --------------------------------------------------------------------------- lookups


def resolve(ctx: Context, ref: str) -> str:
    return state.resolve(ctx.layout, ref)


def prune(ctx: Context) -> list[str]:
    out = []
    for c in all_containers(ctx):
        if c.state.running:
            continue
        try:
            remove(ctx, c.id, force=False)
        except (NoSuchContainer, state.ContainerRunning):
            continue
        out.append(c.id)
    return out


def dump(obj: Any) -> str:
    return json.dumps(obj, indent=4)


# --------------------------------------------------------------------------- exec, cp


def _running(ctx: Context, cid: str, what: str) -> Container:
    c = load(ctx, cid)
    if not c.state.running:
        raise RootlessError(f"can only {what} running containers: {c.config.name} is {status_name(c.state)}",
                            hint=f"`rootless start {c.config.name}` first")
    if c.state.pid == c.state.monitor_pid:  # a foreground run that has not reached its process yet
        raise RootlessError(f"container {c.config.name} is still starting: cannot {what} it yet",
                            hint="try again in a moment")
    return c


def exec_(ctx: Context, cid: str, argv: list[str], *, interactive: bool, tty: bool, env: list[str],
          workdir: str | None, user: str | None) -> int:
    from rootless.runtime import nsexec

    if workdir is not None and not workdir.startswith("/"):
        raise RootlessError(f"exec -w {workdir!r}: the working directory must be an absolute path")
    c = _running(ctx, cid, "exec into")
    base = c.config.spec.process
    merged = dict(e.partition("=")[::2] for e in base.env)
    for item in env:
        k, eq, v = item.partition("=")
        if not k:
            raise RootlessError(f"-e {item!r}: the variable has no name")
        if eq:
            merged[k] = v
        elif k in os.environ:
            merged[k] = os.environ[k]
    proc = replace(
        base, args=tuple(argv), env=tuple(f"{k}={v}" for k, v in merged.items()), cwd=workdir or base.cwd,
        terminal=tty, interactive=interactive, init=False, user=user if user is not None else base.user,
        make_cwd=workdir is None)
    cg = (c.state.cgroup, c.state.cgroup_manager, c.state.cgroup_unit) if c.state.cgroup else None
    # Podman's pair: exec, then exec_died with the exit code when it is not 0
    event(ctx, c.config, "exec")
    code = 125
    try:
        code = nsexec.exec_in(c.config.spec, c.state.pid, proc, ctx.log, cg)
        return code
    finally:
        event(ctx, c.config, "exec_died", exit_code=code or None)


def split_cp(arg: str) -> tuple[str | None, str]:
    """"NAME:PATH" → (NAME, PATH); a host path (no colon, or a path before it) → (None, arg)."""
    name, colon, path = arg.partition(":")
    if not colon or "/" in name or not name:
        return None, arg
    return name, path


def copy(ctx: Context, src: str, dest: str) -> None:
    from rootless.runtime import nsexec

    sname, spath = split_cp(src)
    dname, dpath = split_cp(dest)
    if sname is not None and dname is not None:
        _copy_between(ctx, src, dest)
        return
    if src == "-" or dest == "-":
        _copy_stream(ctx, sname if dest == "-" else dname, spath if dest == "-" else dpath, to_stdout=dest == "-")
        return
    if (sname is None) == (dname is None):
        raise RootlessError("copy between a container and the host: exactly one of SRC and DEST is CONTAINER:PATH",
                            hint="rootless cp ./file web:/tmp/  or  rootless cp web:/etc/hostname .")
    # A running container is entered (its namespaces see its mounts and volumes); a stopped
    # one has its rootfs mounted for the copy.
    ref, what = (sname, "copy from") if sname is not None else (dname, "copy into")
    assert ref is not None
    c = load(ctx, resolve(ctx, ref))
    if not c.state.running:
        # Held for the copy, so a `start` (which takes it first) waits: the container never
        # runs on a rootfs half-written, nor is it removed under the copy.
        with state.locked(ctx.layout, c.id):
            if not state.read_state(ctx.layout, c.id).running:
                if sname is not None:
                    nsexec.copy_out_stopped(c.config.spec, spath, dpath)
                else:
                    nsexec.copy_in_stopped(c.config.spec, spath, dpath)
                return
    c = _running(ctx, c.id, what)
    if sname is not None:
        nsexec.copy_out(c.config.spec, c.state.pid, spath, dpath)
    else:
        nsexec.copy_in(c.config.spec, c.state.pid, spath, dpath, owner=_user_ids(c))


def _user_ids(c: Container) -> tuple[int, int]:
    """The running container's user (its --user or the image's USER) as (uid, gid) inside it."""
    from rootless.runtime import users

    p = c.config.spec.process
    if p.user is None:
        return p.uid, p.gid

    def read(rel: str) -> str | None:
        try:
            with open(f"/proc/{c.state.pid}/root/{rel}") as f:
                return f.read()
        except OSError:
            return None

    who = users.resolve(p.user, read("etc/passwd"), read("etc/group"))
    return who.uid, who.gid


def _copy_between(ctx: Context, src: str, dest: str) -> None:
    """Container to container: out to a private directory of ours, then in."""
    import shutil
    import tempfile

    tmp = tempfile.mkdtemp(prefix="rootless-cp-")
    try:
        name = os.path.basename(os.path.normpath(split_cp(src)[1])) or "root"
        copy(ctx, src, os.path.join(tmp, name))
        copy(ctx, os.path.join(tmp, name), dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _copy_stream(ctx: Context, ref: str | None, path: str, *, to_stdout: bool) -> None:
    """`cp - CTR:DIR` (a tar archive on standard input) and `cp CTR:PATH -` (one on standard output)."""
    import sys

    from rootless.runtime import nsexec

    if ref is None:
        raise RootlessError("cp with - copies a tar archive to or from a container: the other side must be "
                            "CONTAINER:PATH", hint="tar -c dir | rootless cp - web:/tmp")
    c = _running(ctx, resolve(ctx, ref), "copy an archive with")
    if to_stdout:
        sys.stdout.flush()
        nsexec.copy_out_stream(c.config.spec, c.state.pid, path, sys.stdout.fileno())
    else:
        nsexec.copy_in_stream(c.config.spec, c.state.pid, sys.stdin.fileno(), path)


def label_matches(labels: dict[str, str], want: str) -> bool:
    """A label filter: KEY (present) or KEY=VALUE."""
    k, eq, v = want.partition("=")
    return k in labels and (not eq or labels[k] == v)


# --------------------------------------------------------------------------- stats


def duration(seconds: float) -> str:
    """A Go-style duration, as Podman prints CPU time (14.53ms, 2.5s, 1m3.2s)."""
    if seconds < 1e-3:
        return f"{seconds * 1e6:.4g}µs"
    if seconds < 1:
        return f"{seconds * 1e3:.4g}ms"
    if seconds < 60:
        return f"{seconds:.4g}s"
    m, sec = divmod(seconds, 60)
    if m < 60:
        return f"{int(m)}m{sec:.4g}s"
    h, m = divmod(m, 60)
    return f"{int(h)}h{int(m)}m{sec:.4g}s"


def stats_targets(ctx: Context, refs: list[str], all_: bool, strict: bool = True) -> list[Container]:
    """The containers `stats` reports: those named (each must be running; without *strict*,
    those that are gone or stopped are left out), else every running one (every one with --all)."""
    if refs:
        out = []
        for r in refs:
            try:
                c = load(ctx, resolve(ctx, r))
            except RootlessError:
                if strict:
                    raise
                continue
            if not c.state.running:
                if not strict:
                    continue
                raise RootlessError(f"container {c.config.name} is not running: it has no statistics",
                                    hint=f"`rootless start {c.config.name}` first")
            out.append(c)
        return out
    return [c for c in all_containers(ctx) if all_ or c.state.running]


def stats_sample(c: Container) -> Sample | None:
    """The container's cgroup usage now; None when it is not running. Raises RootlessError when it
    runs without a cgroup of its own."""
    from rootless.runtime import cgroups

    if not c.state.running:
        return None
    if not c.state.cgroup:
        why = "it was started with --cgroups disabled" if c.config.spec.cgroups == "disabled" else \
            cgroups.probe().reason or "it runs without a cgroup of its own"
        raise RootlessError(f"stats of container {c.config.name}: no cgroup to read ({why})",
                            hint="stats needs cgroup v2 delegated to you: see `rootless doctor`")
    try:
        return cgroups.sample(c.state.cgroup)
    except cgroups.CgroupError:
        return None  # it exited meanwhile


def net_io(pid: int) -> tuple[int, int] | None:
    """Bytes received and sent by the network interfaces of *pid*'s network namespace but
    loopback (proc(5) /proc/PID/net/dev); None when the process is gone."""
    try:
        with open(f"/proc/{pid}/net/dev") as f:
            lines = f.readlines()[2:]
    except OSError:
        return None
    rx = tx = 0
    for line in lines:
        name, _, counters = line.partition(":")
        fields = counters.split()
        if name.strip() != "lo" and len(fields) >= 9:
            rx += int(fields[0])
            tx += int(fields[8])
    return rx, tx


# --------------------------------------------------------------------------- rename, pause, top


def rename(ctx: Context, cid: str, new: str) -> None:
    """Give the container another name (held unique like a new one)."""
    state.check_name(new)
    with state.names_locked(ctx.layout):
        taken = state.names(ctx.layout)
        if new in taken and taken[new] != cid:
            raise RootlessError(f"the container name {new!r} is already in use by {taken[new][:12]}",
                                hint="choose another name, or remove that container")
        with state.locked(ctx.layout, cid):
            cfg = state.load_config(ctx.layout, cid)
            cfg = replace(cfg, name=new, spec=replace(cfg.spec, name=new))
            state.save_config(ctx.layout, cfg)
    event(ctx, cfg, "rename")


def pause(ctx: Context, cid: str, frozen: bool) -> None:
    """Freeze (or thaw) every process of the container through the cgroup v2 freezer
    (cgroup.freeze, Documentation/admin-guide/cgroup-v2.rst); the record says "paused"."""
    from rootless.runtime import cgroups

    what = "pause" if frozen else "unpause"
    c = load(ctx, cid)
    if not c.state.running or (c.state.status == "paused") != (not frozen):
        raise RootlessError(f"container {c.config.name} is {status_name(c.state)}: cannot {what} it",
                            hint="pause a running container; unpause a paused one")
    if not c.state.cgroup:
        why = "it was started with --cgroups disabled" if c.config.spec.cgroups == "disabled" else \
            cgroups.probe(ctx.config.cgroup_manager).reason or "it runs without a cgroup of its own"
        raise RootlessError(f"{what} container {c.config.name}: no cgroup v2 freezer ({why})",
                            hint="pause needs cgroup v2 delegated to you: see `rootless doctor`")
    base = f"{cgroups.ROOT}/{c.state.cgroup.strip('/')}"
    with open(f"{base}/cgroup.freeze", "w") as f:
        f.write("1" if frozen else "0")
    # the write starts the freeze; cgroup.events says "frozen 1" once every task has stopped
    deadline = time.monotonic() + 10
    while frozen and time.monotonic() < deadline:
        with open(f"{base}/cgroup.events") as f:
            if "frozen 1" in f.read():
                break
        time.sleep(0.01)
    with state.locked(ctx.layout, cid):
        st = state.read_state_raw(ctx.layout, cid) or State()
        if st.running:
            state.write_state(ctx.layout, cid, replace(st, status="paused" if frozen else "running"))
    event(ctx, c.config, what)


# `top` descriptors (ps(1)'s AIX format specifiers, as podman top takes them) → header
TOP_DESCRIPTORS = {"user": "USER", "pid": "PID", "ppid": "PPID", "pcpu": "%CPU", "etime": "ELAPSED",
                   "tty": "TTY", "time": "TIME", "args": "COMMAND", "comm": "COMMAND", "group": "GROUP",
                   "huser": "HUSER", "hpid": "HPID", "nice": "NI", "pgid": "PGID", "state": "STATE",
                   "vsz": "VSZ", "rss": "RSS", "uid": "UID", "gid": "GID"}
TOP_DEFAULT = ("user", "pid", "ppid", "pcpu", "etime", "tty", "time", "args")


def top_descriptors(args: list[str]) -> list[str] | None:
    """The descriptors asked for (`top CTR pid user args`, or `-eo pid,args`-free lists), None
    when *args* are ps(1) options that only the container's own ps can run."""
    if not args:
        return list(TOP_DEFAULT)
    names = [d for a in args for d in a.split(",") if d]
    return names if all(d in TOP_DESCRIPTORS for d in names) else None


def top(ctx: Context, cid: str, descriptors: list[str]) -> list[list[str]]:
    """The container's processes as rows of *descriptors*, read from the host's /proc: the
    processes in the container's PID namespace (readable by us: we own its user namespace)."""
    c = _running(ctx, cid, "list the processes of")
    pid1 = c.state.pid
    try:
        ns = os.readlink(f"/proc/{pid1}/ns/pid")
    except OSError as e:
        raise RootlessError(f"read the PID namespace of container {c.config.name}: {e.strerror}") from e
    passwd = _names_in(c, "etc/passwd")
    groups = _names_in(c, "etc/group")
    ticks = os.sysconf("SC_CLK_TCK")
    with open("/proc/uptime") as f:
        uptime = float(f.read().split()[0])
    rows = [[TOP_DESCRIPTORS[d] for d in descriptors]]
    for entry in sorted((e for e in os.listdir("/proc") if e.isdigit()), key=int):
        try:
            if os.readlink(f"/proc/{entry}/ns/pid") != ns:
                continue
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
            with open(f"/proc/{entry}/status") as f:
                status = dict(line.split(":", 1) for line in f.read().splitlines() if ":" in line)
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read().rstrip(b"\0").replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue  # gone meanwhile, or not ours to read
        comm = stat[stat.index(b"(") + 1:stat.rindex(b")")].decode(errors="replace")
        fields = stat[stat.rindex(b")") + 2:].split()
        nspid = status.get("NSpid", entry).split()
        uid = int(status.get("Uid", "0").split()[0])
        gid = int(status.get("Gid", "0").split()[0])
        in_uid = _to_container(uid, c.config.spec.uid_map)
        in_gid = _to_container(gid, c.config.spec.gid_map)
        cpu = (int(fields[11]) + int(fields[12])) / ticks
        elapsed = max(uptime - int(fields[19]) / ticks, 0.0)
        ppid_host = int(fields[1])
        ppid = _ns_pid(ppid_host, ns)
        tty_nr = int(fields[4])
        values = {
            "user": passwd.get(in_uid, str(in_uid)), "pid": nspid[-1], "ppid": str(ppid),
            "pcpu": f"{cpu / elapsed * 100 if elapsed else 0:.3f}", "etime": duration(elapsed),
            "tty": f"pts/{tty_nr & 0xff | (tty_nr >> 12) & 0xfff00}" if tty_nr >> 8 == 136 else "?",
            "time": duration(cpu) if cpu >= 1e-3 else "0s", "args": cmdline or f"[{comm}]", "comm": comm,
            "group": groups.get(in_gid, str(in_gid)), "huser": str(uid), "hpid": entry,
            "nice": fields[16].decode(), "pgid": str(_ns_pid(int(fields[2]), ns)), "state": fields[0].decode(),
            "vsz": str(int(fields[20]) // 1024), "rss": str(int(fields[21]) * os.sysconf("SC_PAGE_SIZE") // 1024),
            "uid": str(in_uid), "gid": str(in_gid)}
        rows.append([values[d] for d in descriptors])
    return rows


def _ns_pid(host_pid: int, ns: str) -> int:
    """A process's PID in the PID namespace *ns*; 0 when it is not in it (the container's
    PID 1's parent, outside)."""
    try:
        if not host_pid or os.readlink(f"/proc/{host_pid}/ns/pid") != ns:
            return 0
        with open(f"/proc/{host_pid}/status") as f:
            for line in f:
                if line.startswith("NSpid:"):
                    return int(line.split()[-1])
    except OSError:
        pass
    return 0


def _to_container(host_id: int, maps: Any) -> int:
    for m in maps:
        if m.host_id <= host_id < m.host_id + m.size:
            return int(m.container_id + host_id - m.host_id)
    return 65534  # the overflow ID: not mapped into the container


def _names_in(c: Container, rel: str) -> dict[int, str]:
    """ID → name from the container's /etc/passwd or /etc/group, read through its root."""
    out: dict[int, str] = {}
    try:
        with open(f"/proc/{c.state.pid}/root/{rel}") as f:
            for line in f:
                parts = line.split(":")
                if len(parts) > 2 and parts[2].isdigit():
                    out.setdefault(int(parts[2]), parts[0])
    except OSError:
        pass
    return out


def diff(ctx: Context, cid: str) -> list[tuple[str, str]]:
    """The container's changes to its image: (A|C|D, path), sorted by path."""
    from rootless.runtime.run import LazyStoreNamespace

    c = load(ctx, cid)
    plan = c.config.spec.rootfs
    if not plan.upper:
        raise RootlessError(f"diff of container {c.config.name}: its {plan.driver} storage keeps no separate "
                            "layer of changes", hint="diff works with the overlay and fuse-overlayfs drivers")
    with LazyStoreNamespace(ctx) as runner:
        found = runner.call("storage.changes:changes", upper=plan.upper, lowers=list(plan.lower))
    return sorted(((k, p) for k, p in found), key=lambda kp: kp[1])


# --------------------------------------------------------------------------- restart and health (rootless.supervise)


def cli_argv(ctx: Context) -> list[str]:
    import sys

    return [sys.executable, "-m", "rootless", "--root", str(ctx.layout.root), "--runroot", str(ctx.layout.runroot)]


def _self(ctx: Context, what: str, cid: str) -> list[str]:
    """This module run as a program for one container (not a command of the CLI's)."""
    import sys

    return [sys.executable, "-m", "rootless.supervise", what, str(ctx.layout.root), str(ctx.layout.runroot), cid]


def hook_argv(ctx: Context, cfg: Config) -> list[str] | None:
    """What the monitor execs when the container ends: `rm -f -v` for --rm, the exited hook
    for --rm --rmi or a restart policy."""
    if cfg.rm and not cfg.rmi:
        return [*cli_argv(ctx), "rm", "-f", "-v", cfg.id]
    if cfg.restart == "no" and not cfg.rm:
        return None
    return _self(ctx, "exited", cfg.id)


def stopped_marker(ctx: Context, cid: str) -> Path:
    return state.state_dir(ctx.layout, cid) / "stopped"


def restarts_file(ctx: Context, cid: str) -> Path:
    return state.state_dir(ctx.layout, cid) / "restarts"


def restarts(ctx: Context, cid: str) -> int:
    try:
        return int(restarts_file(ctx, cid).read_text())
    except (OSError, ValueError):
        return 0


def spawn_health_loop(ctx: Context, cfg: Config) -> None:
    """A detached `health-loop` for a container with a timed health check."""
    if not cfg.health or not cfg.health.get("interval"):
        return
    import subprocess

    subprocess.Popen(_self(ctx, "health", cfg.id), stdin=subprocess.DEVNULL,
                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True, close_fds=True)
