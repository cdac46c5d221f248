"""Containers that exist, by ID: records, start, stop, kill, rm, logs, inspect, exec, cp, stats.

The glue between rootless.runtime (state, monitor, nsexec) and storage (the container layer),
behind rootless.engine (which front ends call, by name or ID); it prints nothing.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from rootless.errors import RootlessError
from rootless.record import dataclass, replace
from rootless.runtime import state
from rootless.runtime.state import Config, NoSuchContainer, State

if TYPE_CHECKING:
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


def save(ctx: Context, spec: Spec, image: str, image_id: str, stop_signal: str | None, rm: bool) -> Config:
    cfg = Config(id=spec.id, name=spec.name, image=image, image_id=image_id, created=time.time(), spec=spec,
                 stop_signal=stop_signal or "SIGTERM", rm=rm)
    state.save_config(ctx.layout, cfg)
    state.write_state(ctx.layout, spec.id, State())
    return cfg


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

    def started(s: Started) -> None:
        if s.cgroup is not None:  # for stats while it runs
            with state.locked(ctx.layout, spec.id):
                st = state.read_state_raw(ctx.layout, spec.id) or State()
                state.write_state(ctx.layout, spec.id, replace(
                    st, cgroup=s.cgroup.path, cgroup_manager=s.cgroup.manager, cgroup_unit=s.cgroup.unit))

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


def start(ctx: Context, cid: str) -> int:
    """Start a created or exited container under a monitor; its PID (0 when already running)."""
    from rootless.runtime import launcher

    cfg = state.load_config(ctx.layout, cid)
    with state.locked(ctx.layout, cid):
        st = state.read_state(ctx.layout, cid)
        if st.running:
            return 0
        # A fresh record, so a concurrent start sees this one as under way.
        state.write_state(ctx.layout, cid, State(status="created"))
    ctx.layout.ensure_runroot()
    rm_argv = None
    if cfg.rm:  # --rm: the monitor becomes `rootless rm -f` once the container has exited
        import sys

        rm_argv = [sys.executable, "-m", "rootless", "--root", str(ctx.layout.root),
                   "--runroot", str(ctx.layout.runroot), "rm", "-f", "-v", cid]
    return launcher.launch(ctx.layout, ctx.log, cfg.spec, rm_argv)


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


def stop(ctx: Context, cid: str, timeout: float | None) -> None:
    """The image's StopSignal (SIGTERM by default), SIGKILL after *timeout* seconds (Podman: 10)."""
    cfg = state.load_config(ctx.layout, cid)
    wait = 10.0 if timeout is None else timeout
    try:
        first = parse_signal(cfg.stop_signal)
    except RootlessError:
        ctx.log.warn_once("stop-signal", f"the image's stop signal {cfg.stop_signal!r} is not known here: "
                          "sending SIGTERM")
        first = signal.SIGTERM
    if _signal(ctx, cid, first) and wait_stopped(ctx, cid, wait) is not None:
        return
    _signal(ctx, cid, signal.SIGKILL)
    if wait_stopped(ctx, cid, 10) is None:
        raise RootlessError(f"container {cid[:12]} did not stop after SIGKILL")


# --------------------------------------------------------------------------- removing


def remove(ctx: Context, cid: str, force: bool) -> None:
    """Everything of the container: process (with -f), monitor, run directory, layer, record."""
    from rootless.runtime.run import LazyStoreNamespace
    from storage import rootfs

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
        try:
            rundir = state.load_config(ctx.layout, cid).spec.rundir
        except NoSuchContainer:
            raise
        except RootlessError:
            rundir = ""  # an unreadable record: what it names cannot be trusted, the rest goes
        _remove_rundir(ctx, cid, rundir)
        with LazyStoreNamespace(ctx) as runner:
            rootfs.remove(ctx, runner, cid)


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


def _iso(t: float) -> str:
    if not t:
        return "0001-01-01T00:00:00Z"
    from datetime import UTC, datetime

    return datetime.fromtimestamp(t, UTC).isoformat().replace("+00:00", "Z")


def published(c: Container) -> tuple[PortMapping, ...]:
    """The ports as forwarded while running (host ports chosen then), else as asked for."""
    from rootless.spec import PortMapping

    if c.state.running and c.state.ports:
        return tuple(PortMapping(**p) for p in c.state.ports)
    return c.config.spec.network.ports


def ports(c: Container) -> list[str]:
    """Podman's `port` lines: 80/tcp -> 0.0.0.0:8080."""
    return [f"{p.container_port}/{p.protocol} -> {p.host_ip or '0.0.0.0'}:{p.host_port}"
            for p in published(c)]


def ports_column(c: Container) -> str:
    return ", ".join(f"{p.host_ip or '0.0.0.0'}:{p.host_port}->{p.container_port}/{p.protocol}"
                     for p in published(c))


def ago(seconds: float) -> str:
    s = int(max(0, seconds))
    for unit, n in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if s >= n:
            k = s // n
            return f"{k} {unit}{'s' if k > 1 else ''}"
    return f"{s} second{'s' if s != 1 else ''}"


def status_text(c: Container, now: float) -> str:
    st = c.state
    if st.running:
        return f"Up {ago(now - st.started_at)}"
    if st.status == "exited":
        return f"Exited ({st.exit_code}) {ago(now - (st.finished_at or now))} ago"
    return "Created"


def status_name(st: State) -> str:
    return "running" if st.running else st.status


def ps_json(c: Container) -> dict[str, Any]:
    spec = c.config.spec
    return {
        "Id": c.id, "Names": [c.config.name], "Image": c.config.image, "ImageID": c.config.image_id,
        "Command": list(spec.process.args), "Created": int(c.config.created), "CreatedAt": _iso(c.config.created),
        "State": status_name(c.state), "Status": status_text(c, time.time()), "ExitCode": c.state.exit_code,
        "Exited": c.state.status == "exited", "Pid": c.state.pid if c.state.running else 0,
        "StartedAt": int(c.state.started_at), "ExitedAt": int(c.state.finished_at),
        "Ports": [{"host_ip": p.host_ip, "container_port": p.container_port, "host_port": p.host_port,
                   "range": 1, "protocol": p.protocol} for p in published(c)],
    }


def inspect(ctx: Context, c: Container) -> dict[str, Any]:
    spec, st = c.config.spec, c.state
    p = spec.process
    return {
        "Id": c.id,
        "Created": _iso(c.config.created),
        "Path": p.args[0] if p.args else "",
        "Args": list(p.args[1:]),
        "State": {"Status": status_name(st), "Running": st.running, "Paused": False, "Restarting": False,
                  "OOMKilled": st.oom_killed, "Dead": False, "Pid": st.pid if st.running else 0,
                  "ExitCode": st.exit_code, "StartedAt": _iso(st.started_at), "FinishedAt": _iso(st.finished_at),
                  "CgroupPath": st.cgroup},
        "Image": c.config.image_id,
        "ImageName": c.config.image,
        "Name": c.config.name,
        "Driver": spec.rootfs.driver,
        "Rootfs": spec.rootfs.target,
        "LogPath": str(state.log_path(ctx.layout, c.id)),
        "Mounts": [{"Type": m.type, "Source": m.source, "Destination": m.destination,
                    "RW": "ro" not in m.options, "Options": list(m.options)}
                   for m in spec.mounts if m.type == "bind" and not m.source.startswith(spec.rundir or "\0")],
        "Config": {"Hostname": spec.hostname, "User": p.user or f"{p.uid}:{p.gid}", "Env": list(p.env),
                   "Cmd": list(p.args), "Image": c.config.image, "WorkingDir": p.cwd, "Tty": p.terminal,
                   "OpenStdin": p.interactive, "StopSignal": c.config.stop_signal,
                   "Annotations": dict(spec.annotations)},
        "NetworkSettings": {"Ports": _inspect_ports(c)},
        "HostConfig": {"NetworkMode": spec.network.mode, "AutoRemove": c.config.rm,
                       "CapAdd": [], "Privileged": False, "CgroupManager": st.cgroup_manager,
                       **_inspect_resources(spec)},
    }


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


def parse_since(text: str, now: float) -> float:
    """--since: a Unix time, an RFC 3339 time, or a duration before now (10s, 5m, 1h30m)."""
    import re

    t = text.strip()
    try:
        return float(t)
    except ValueError:
        pass
    m = re.fullmatch(r"((\d+(\.\d+)?)(h|m|s|ms))+", t)
    if m:
        total = 0.0
        for num, _, unit in re.findall(r"(\d+(\.\d+)?)(ms|h|m|s)", t):
            total += float(num) * {"h": 3600, "m": 60, "s": 1, "ms": 0.001}[unit]
        return now - total
    from datetime import UTC, datetime

    try:
        d = datetime.fromisoformat(t.replace("Z", "+00:00"))
    except ValueError:
        raise RootlessError(f"invalid --since value {text!r}",
                            hint="a duration (10m), an RFC 3339 time or a Unix time") from None
    if d.tzinfo is None:
        d = d.replace(tzinfo=UTC)
    return d.timestamp()


def read_logs(ctx: Context, cid: str, *, follow: bool, tail: int | None, since: float | None) -> Iterator[LogLine]:
    path = state.log_path(ctx.layout, cid)
    try:
        f = open(path, "rb")  # noqa: SIM115 - kept open while following
    except FileNotFoundError:
        if not follow:
            return
        f = None
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
                st = state.read_state(ctx.layout, cid)
            except RootlessError:
                return
            if not st.running:
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
    if c.state.pid == c.state.monitor_pid:
        raise RootlessError(f"container {c.config.name} runs in the foreground of `rootless run`: "
                            f"cannot {what} it", hint="start it with `rootless run -d`")
    return c


def exec_(ctx: Context, cid: str, argv: list[str], *, interactive: bool, tty: bool, env: list[str],
          workdir: str | None, user: str | None) -> int:
    from rootless.runtime import nsexec

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
        terminal=tty, interactive=interactive, init=False, user=user if user is not None else base.user)
    cg = (c.state.cgroup, c.state.cgroup_manager, c.state.cgroup_unit) if c.state.cgroup else None
    return nsexec.exec_in(c.config.spec, c.state.pid, proc, ctx.log, cg)


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
    if (sname is None) == (dname is None):
        raise RootlessError("copy between a container and the host: exactly one of SRC and DEST is CONTAINER:PATH",
                            hint="rootless cp ./file web:/tmp/  or  rootless cp web:/etc/hostname .")
    # A running container is entered (its namespaces see its mounts and volumes); a stopped
    # one has its rootfs mounted for the copy.
    ref, what = (sname, "copy from") if sname is not None else (dname, "copy into")
    assert ref is not None
    c = load(ctx, resolve(ctx, ref))
    if c.state.running:
        c = _running(ctx, c.id, what)
        if sname is not None:
            nsexec.copy_out(c.config.spec, c.state.pid, spath, dpath)
        else:
            nsexec.copy_in(c.config.spec, c.state.pid, spath, dpath)
    elif sname is not None:
        nsexec.copy_out_stopped(c.config.spec, spath, dpath)
    else:
        nsexec.copy_in_stopped(c.config.spec, spath, dpath)


# --------------------------------------------------------------------------- stats


def _stat_size(n: float) -> str:
    from rootless.units import decimal_size

    return decimal_size(n, ".4g", "")  # stats prints 67.11MB


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


def stats_row(c: Container, now: Sample | None, before: Sample | None) -> dict[str, str]:
    """One row of `stats` with Podman's JSON keys. CPU % is over the interval since *before*,
    or since the container started for the first sample; AVG CPU % over its whole life."""
    row = {"id": c.id[:12], "name": c.config.name, "cpu_time": "--", "cpu_percent": "--", "avg_cpu": "--",
           "mem_usage": "-- / --", "mem_percent": "--", "net_io": "-- / --", "block_io": "-- / --", "pids": "--"}
    if now is None:
        return row
    life = max(time.time() - c.state.started_at, 1e-6)
    avg = now.cpu_usec / 1e6 / life * 100
    if before is not None and now.at > before.at:
        cpu = (now.cpu_usec - before.cpu_usec) / 1e6 / (now.at - before.at) * 100
    else:
        cpu = avg
    limit = now.memory_limit if now.memory_limit is not None else _host_memory()
    row.update(cpu_time=duration(now.cpu_usec / 1e6), cpu_percent=f"{cpu:.2f}%", avg_cpu=f"{avg:.2f}%",
               mem_usage=f"{_stat_size(now.memory)} / {_stat_size(limit)}",
               mem_percent=f"{now.memory / limit * 100:.2f}%" if limit else "--",
               block_io=f"{_stat_size(now.io_read)} / {_stat_size(now.io_write)}", pids=str(now.pids))
    net = net_io(c.state.pid)
    if net is not None:
        row["net_io"] = f"{_stat_size(net[0])} / {_stat_size(net[1])}"
    return row


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


def _host_memory() -> int:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0
