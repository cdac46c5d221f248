"""Container records: the persistent config in the store, the volatile state in the run root.

  store    layout.containers/<id>/config.json   the Spec serialised, name, image, created;
                                                written once, and flock(2)ed as the
                                                container's lock (see ``locked``)
           layout.containers/<id>/started       present once the container has been started
  runroot  layout.state/<id>/state.json         status, pids with their start times, exit code
           layout.state/<id>/ctr.log            the monitor's log (k8s-file lines)

A PID alone is not a process: it is recorded with the start time from /proc/PID/stat, so a
monitor that died (or a reboot, which empties the run root or changes the boot ID) is seen
as a container that exited. Every read-modify-write of a record holds the container's lock;
records are replaced by rename(2), so a reader never sees half a record.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rootless.errors import NotFoundError, RootlessError
from rootless.record import dataclass, field, replace
from rootless.spec import (
    File,
    IdMap,
    Mount,
    Network,
    PortMapping,
    Process,
    Resources,
    Rlimit,
    RootfsPlan,
    Seccomp,
    Spec,
)

if TYPE_CHECKING:
    from rootless.layout import Layout

EXIT_NO_SUCH = 1  # podman rm of an unknown container
EXIT_RUNNING = 2  # podman rm of a running container without -f


class NoSuchContainer(NotFoundError):
    """No container has this ID, ID prefix or name."""


class ContainerRunning(RootlessError):
    exit_code = EXIT_RUNNING


# --------------------------------------------------------------------------- Spec <-> JSON


def spec_to_dict(spec: Spec) -> dict[str, Any]:
    import dataclasses  # only to write a record: reading one (ps, logs, inspect) stays without it

    d = dataclasses.asdict(spec)
    d["namespaces"] = sorted(spec.namespaces)
    return d


def _tuple(items: Any) -> tuple[Any, ...]:
    return tuple(tuple(i) if isinstance(i, list) else i for i in items)


def spec_from_dict(d: dict[str, Any]) -> Spec:
    p = dict(d["process"])
    for k in ("args", "env", "additional_gids", "capabilities", "ambient_capabilities"):
        p[k] = tuple(p.get(k) or ())
    p["rlimits"] = tuple(Rlimit(**r) for r in p.get("rlimits") or ())
    net = d.get("network") or {}
    return Spec(
        id=d["id"], name=d["name"], process=Process(**p), rootfs=RootfsPlan(**{
            **d["rootfs"], "lower": tuple(d["rootfs"]["lower"]),
            "uid_shift": tuple(IdMap(**m) for m in d["rootfs"].get("uid_shift", ())),
            "gid_shift": tuple(IdMap(**m) for m in d["rootfs"].get("gid_shift", ()))}),
        mounts=tuple(Mount(**{**m, "options": tuple(m["options"])}) for m in d.get("mounts", ())),
        uid_map=tuple(IdMap(**m) for m in d.get("uid_map", ())),
        gid_map=tuple(IdMap(**m) for m in d.get("gid_map", ())),
        namespaces=frozenset(d["namespaces"]), hostname=d.get("hostname", ""),
        network=Network(mode=net.get("mode", "none"), options=_tuple(net.get("options", ())),
                        ports=tuple(PortMapping(**p) for p in net.get("ports", ()))),
        masked_paths=tuple(d.get("masked_paths", ())), readonly_paths=tuple(d.get("readonly_paths", ())),
        resources=Resources(**d["resources"]) if d.get("resources") else None,
        cgroups=d.get("cgroups", "enabled"),
        annotations=_tuple(d.get("annotations", ())), rundir=d.get("rundir", ""),
        files=tuple(File(**f) for f in d.get("files", ())),
        sysctls=_tuple(d.get("sysctls", ())),
        seccomp=Seccomp(**d["seccomp"]) if d.get("seccomp") else None,
        shared=_tuple(d.get("shared", ())), join=_tuple(d.get("join", ())))


# --------------------------------------------------------------------------- records


@dataclass(frozen=True)
class Config:
    id: str
    name: str
    image: str
    image_id: str
    created: float
    spec: Spec
    stop_signal: str = "SIGTERM"
    rm: bool = False
    # the image's labels overlaid with --label (Podman's container labels)
    labels: dict[str, str] = field(default_factory=dict)
    stop_timeout: int = 10  # seconds `stop` waits before SIGKILL (--stop-timeout)
    # --restart: "no", "on-failure", "always" or "unless-stopped", and on-failure's :N (0: no limit)
    restart: str = "no"
    restart_max: int = 0
    # --health-*: test (["CMD-SHELL", line] or ["CMD", argv...]), interval, timeout, start_period
    # (seconds), retries, on_failure; empty: no health check
    health: dict[str, Any] = field(default_factory=dict)
    log_driver: str = "k8s-file"  # k8s-file, none, passthrough
    log_max_size: int = 0  # bytes; 0: never rotated
    rmi: bool = False  # --rm --rmi: the image goes with the container


@dataclass(frozen=True)
class State:
    status: str = "created"  # created, running, stopping, exited
    pid: int = 0
    pid_start: str = ""
    monitor_pid: int = 0
    monitor_start: str = ""
    started_at: float = 0.0
    finished_at: float = 0.0
    exit_code: int = 0
    boot_id: str = ""
    # the ports slirp4netns forwards (PortMapping fields), host ports chosen when -p left them out
    ports: tuple[dict[str, Any], ...] = ()
    # the container's cgroup (relative to /sys/fs/cgroup), how it was made, and whether the
    # kernel's OOM killer struck in it (memory.events oom_kill) before it exited
    cgroup: str = ""
    cgroup_manager: str = ""
    cgroup_unit: str = ""
    oom_killed: bool = False
    # the health status under --health-cmd ("starting", "healthy", "unhealthy"; "" without one)
    health: str = ""

    @property
    def running(self) -> bool:
        return self.status in ("running", "stopping", "paused")


def config_path(layout: Layout, cid: str) -> Path:
    return layout.containers / cid / "config.json"


def state_dir(layout: Layout, cid: str) -> Path:
    return layout.state / cid


def state_path(layout: Layout, cid: str) -> Path:
    return layout.state / cid / "state.json"


def log_path(layout: Layout, cid: str) -> Path:
    return layout.state / cid / "ctr.log"


def write_json(path: Path, data: dict[str, Any]) -> None:
    """rename(2) over the old record: readers see the old or the new one, never a mix."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w") as f:
        json.dump(data, f)
    os.replace(tmp, path)


def save_config(layout: Layout, cfg: Config) -> None:
    import dataclasses

    d = dataclasses.asdict(cfg)
    d["spec"] = spec_to_dict(cfg.spec)
    write_json(config_path(layout, cfg.id), d)


def load_config(layout: Layout, cid: str) -> Config:
    try:
        d = json.loads(config_path(layout, cid).read_bytes())
    except FileNotFoundError:
        raise NoSuchContainer(f"no container with name or ID \"{cid}\" found: no such container") from None
    except (OSError, ValueError) as e:
        raise RootlessError(f"read the record of container {cid[:12]}: {e}",
                            hint=f"`rootless rm -f {cid[:12]}` removes it") from e
    d["spec"] = spec_from_dict(d["spec"])
    return Config(**d)


def write_state(layout: Layout, cid: str, st: State) -> None:
    d = state_dir(layout, cid)
    d.mkdir(parents=True, exist_ok=True, mode=0o700)
    import dataclasses

    write_json(d / "state.json", dataclasses.asdict(st))


def read_state_raw(layout: Layout, cid: str) -> State | None:
    try:
        d = json.loads(state_path(layout, cid).read_bytes())
        d["ports"] = tuple(d.get("ports") or ())
        return State(**d)
    except (OSError, ValueError, TypeError):
        return None


def proc_start(pid: int) -> str:
    """Field 22 of /proc/PID/stat (start time in clock ticks since boot), "" if no such process."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return ""
    fields = data.rsplit(b")", 1)[1].split()
    if fields[0] == b"Z":
        return ""  # a zombie has finished
    return fields[19].decode()


def alive(pid: int, start: str) -> bool:
    return pid > 0 and bool(start) and proc_start(pid) == start


def boot_id() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip()
    except OSError:
        return ""


def read_state(layout: Layout, cid: str) -> State:
    """The state as it is now: a running record whose monitor or process is gone is exited."""
    st = read_state_raw(layout, cid)
    if st is None:
        started = (layout.containers / cid / "started").exists()
        return State(status="exited" if started else "created", exit_code=-1 if started else 0)
    if st.running:
        # While its monitor lives, the monitor's word stands: a container that has just
        # exited is still running until the monitor has reaped it and logged its last output.
        watcher = (st.monitor_pid, st.monitor_start) if st.monitor_pid else (st.pid, st.pid_start)
        stale = (st.boot_id and st.boot_id != boot_id()) or not alive(*watcher)
        if stale:
            # The monitor records the exit; without it the status is lost (the container got
            # SIGKILL from its parent-death signal when the monitor died).
            return replace(st, status="exited", exit_code=137 if st.exit_code == 0 else st.exit_code,
                                       finished_at=st.finished_at or time.time())
    return st


@contextmanager
def locked(layout: Layout, cid: str) -> Iterator[None]:
    """The container's lock: flock(2) on its config.json. Raises NoSuchContainer when the
    container is gone, including when it was removed while we waited."""
    path = config_path(layout, cid)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise NoSuchContainer(f"no container with name or ID \"{cid}\" found: no such container") from None
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                break
            except InterruptedError:
                continue
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if not same:
            raise NoSuchContainer(f"no container with name or ID \"{cid}\" found: no such container",
                                  hint="it was removed by another command meanwhile")
        yield
    finally:
        os.close(fd)


@contextmanager
def names_locked(layout: Layout) -> Iterator[None]:
    """Held while a name is chosen and the config written, so two creates never share a name."""
    layout.locks.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(layout.locks / "containers.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


# --------------------------------------------------------------------------- lookup


def all_ids(layout: Layout) -> list[str]:
    base = str(layout.containers)  # strings, not Paths: ps and every lookup by name stat each record
    try:
        names = os.listdir(base)
    except FileNotFoundError:
        return []
    return [n for n in names if len(n) == 64 and os.path.exists(f"{base}/{n}/config.json")]


def record_name(path: str, cid: str) -> str:
    """The name in the container record at *path*, read from the record's first bytes when it
    starts as save_config writes it (json.dump of Config: ``{"id": ID, "name": NAME, ...}``;
    names need no JSON escapes, see check_name), else from the whole record. A lookup by name
    reads every record: this keeps it from parsing each spec."""
    with open(path, "rb") as f:
        head = f.read(256)
        prefix = b'{"id": "' + cid.encode() + b'", "name": "'
        if head.startswith(prefix):
            end = head.find(b'"', len(prefix))
            if end > 0 and b"\\" not in head[len(prefix):end]:
                return head[len(prefix):end].decode()
        f.seek(0)
        return str(json.loads(f.read())["name"])


def names(layout: Layout, ids: list[str] | None = None) -> dict[str, str]:
    """name → ID of every container (of *ids*, from all_ids when None)."""
    base = str(layout.containers)
    out = {}
    for cid in all_ids(layout) if ids is None else ids:
        try:
            out[record_name(f"{base}/{cid}/config.json", cid)] = cid
        except (OSError, ValueError, KeyError):
            continue
    return out


def resolve(layout: Layout, ref: str) -> str:
    """The ID of the container called *ref*: a full ID, a name, or a unique ID prefix."""
    ids = all_ids(layout)
    if ref in ids:
        return ref
    by_name = names(layout, ids)
    if ref in by_name:
        return by_name[ref]
    matches = [i for i in ids if i.startswith(ref.lower())] if ref and all(
        c in "0123456789abcdefABCDEF" for c in ref) else []
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        raise RootlessError(f"more than one container matches ID prefix {ref!r}",
                            hint="give more digits of the ID, or the name")
    raise NoSuchContainer(f"no container with name or ID \"{ref}\" found: no such container",
                          hint="`rootless ps -a` lists the containers")


def new_name(taken: set[str] | dict[str, str]) -> str:
    """An adjective_noun name not in *taken*, as Podman generates them."""
    from rootless.names import random_name

    for _ in range(200):
        name = random_name()
        if name not in taken:
            return name
    return f"{random_name()}_{os.urandom(3).hex()}"


def check_name(name: str) -> None:
    import re

    if not re.fullmatch(r"[a-zA-Z0-9][a-zA-Z0-9_.-]*", name):
        raise RootlessError(f"container name {name!r} is invalid",
                            hint="names match [a-zA-Z0-9][a-zA-Z0-9_.-]*")
