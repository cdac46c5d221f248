"""How `ps`, `stats` and `port` show containers: Podman's columns, JSON keys and template fields.

The engine returns containers (rootless.lifecycle.Container) and cgroup samples; this module turns
them into the strings and rows those commands print. What the REST API shares with them (a status
line such as "Up 5 minutes", the ports as published) stays in rootless.lifecycle.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from rootless.lifecycle import ago, duration, iso, net_io, published, status_name, status_text, user_mounts

if TYPE_CHECKING:
    from rootless.lifecycle import Container
    from rootless.runtime.cgroups import Sample

# `ps --format` template fields whose header is not the field's name
PS_HEADERS = {"ID": "CONTAINER ID", "CreatedHuman": "CREATED", "Created": "CREATED"}


def ports(c: Container) -> list[str]:
    """Podman's `port` lines: 80/tcp -> 0.0.0.0:8080."""
    from rootless.runtime.network import host_side

    return [f"{p.container_port}/{p.protocol} -> {host_side(p)}" for p in published(c)]


def ports_column(c: Container) -> str:
    from rootless.runtime.network import host_side

    return ", ".join(f"{host_side(p)}->{p.container_port}/{p.protocol}" for p in published(c))


def ps_command(c: Container, no_trunc: bool) -> str:
    command = " ".join(c.config.spec.process.args)
    if not no_trunc and len(command) > 20:
        command = command[:17] + "..."
    return command


def ps_table(rows: list[Container], now: float, no_trunc: bool) -> list[tuple[str, ...]]:
    """`ps`'s table, its header first."""
    grid = [("CONTAINER ID", "IMAGE", "COMMAND", "CREATED", "STATUS", "PORTS", "NAMES")]
    for c in rows:
        grid.append((c.id if no_trunc else c.id[:12], c.config.image, ps_command(c, no_trunc),
                     f"{ago(now - c.config.created)} ago", status_text(c, now), ports_column(c), c.config.name))
    return grid


def ps_json(c: Container) -> dict[str, Any]:
    spec = c.config.spec
    return {
        "Id": c.id, "Names": [c.config.name], "Image": c.config.image, "ImageID": c.config.image_id,
        "Command": list(spec.process.args), "Created": int(c.config.created), "CreatedAt": iso(c.config.created),
        "State": status_name(c.state), "Status": status_text(c, time.time()), "ExitCode": c.state.exit_code,
        "Exited": c.state.status == "exited", "Pid": c.state.pid if c.state.running else 0,
        "StartedAt": int(c.state.started_at), "ExitedAt": int(c.state.finished_at),
        "Labels": dict(c.config.labels) or None, "AutoRemove": c.config.rm,
        "Ports": [{"host_ip": p.host_ip, "container_port": p.container_port, "host_port": p.host_port,
                   "range": 1, "protocol": p.protocol} for p in published(c)],
    }


def go_time(t: float) -> str:
    """Go's time.Time.String() in UTC: 2026-12-02 08:49:59.296446217 +0000 UTC."""
    if not t:
        return "0001-01-01 00:00:00 +0000 UTC"
    from datetime import UTC, datetime

    d = datetime.fromtimestamp(t, UTC)
    frac = f"{d.microsecond:06d}".rstrip("0")
    return d.strftime("%Y-%m-%d %H:%M:%S") + (f".{frac}" if frac else "") + " +0000 UTC"


def ps_row(c: Container, now: float, no_trunc: bool) -> dict[str, Any]:
    """What `ps --format` templates see: Podman's psReporter field names and shapes."""
    st = c.state
    created = f"{ago(now - c.config.created)} ago"
    status = status_text(c, now)
    return {
        "ID": c.id if no_trunc else c.id[:12], "Image": c.config.image,
        "ImageID": c.config.image_id if no_trunc else c.config.image_id[:12],
        "Command": ps_command(c, no_trunc), "CreatedAt": go_time(c.config.created),
        "Created": go_time(c.config.created), "CreatedHuman": created, "RunningFor": created,
        "Status": status, "State": status, "Names": c.config.name, "Ports": ports_column(c),
        "Labels": dict(c.config.labels), "Pid": st.pid if st.running else 0, "ExitCode": st.exit_code,
        "Exited": st.status == "exited", "ExitedAt": int(st.finished_at), "StartedAt": int(st.started_at),
        "AutoRemove": c.config.rm, "Mounts": [m.destination for m in user_mounts(c.config.spec)],
        "Networks": c.config.spec.network.mode, "Pod": "", "PodName": "", "IsInfra": False,
        "Health": st.health,
    }


# --------------------------------------------------------------------------- stats

STATS_COLUMNS = (("ID", "id"), ("NAME", "name"), ("CPU %", "cpu_percent"), ("MEM USAGE / LIMIT", "mem_usage"),
                 ("MEM %", "mem_percent"), ("NET IO", "net_io"), ("BLOCK IO", "block_io"), ("PIDS", "pids"),
                 ("CPU TIME", "cpu_time"), ("AVG CPU %", "avg_cpu"))
STATS_HEADERS = {"CPUPerc": "CPU %", "MemUsage": "MEM USAGE / LIMIT", "MemPerc": "MEM %", "NetIO": "NET IO",
                 "BlockIO": "BLOCK IO", "PIDS": "PIDS", "PIDs": "PIDS", "CPUTime": "CPU TIME", "AVGCPU": "AVG CPU %"}


def stat_size(n: float) -> str:
    from rootless.units import decimal_size

    return decimal_size(n, ".4g", "")  # stats prints 67.11MB


def host_memory() -> int:
    """MemTotal of proc(5) /proc/meminfo in bytes (0 when unreadable): the limit of a container
    that has none of its own."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def stats_row(c: Container, now: Sample | None, before: Sample | None, at: float | None = None
              ) -> dict[str, str]:
    """One row of `stats` with Podman's JSON keys. CPU % is over the interval since *before*,
    or since the container started for the first sample; AVG CPU % over its whole life (up to
    *at*, default now)."""
    row = {"id": c.id[:12], "name": c.config.name, "cpu_time": "--", "cpu_percent": "--", "avg_cpu": "--",
           "mem_usage": "-- / --", "mem_percent": "--", "net_io": "-- / --", "block_io": "-- / --", "pids": "--"}
    if now is None:
        return row
    life = max((time.time() if at is None else at) - c.state.started_at, 1e-6)
    avg = now.cpu_usec / 1e6 / life * 100
    if before is not None and now.at > before.at:
        cpu = (now.cpu_usec - before.cpu_usec) / 1e6 / (now.at - before.at) * 100
    else:
        cpu = avg
    limit = now.memory_limit if now.memory_limit is not None else host_memory()
    row.update(cpu_time=duration(now.cpu_usec / 1e6), cpu_percent=f"{cpu:.2f}%", avg_cpu=f"{avg:.2f}%",
               mem_usage=f"{stat_size(now.memory)} / {stat_size(limit)}",
               mem_percent=f"{now.memory / limit * 100:.2f}%" if limit else "--",
               block_io=f"{stat_size(now.io_read)} / {stat_size(now.io_write)}", pids=str(now.pids))
    net = net_io(c.state.pid)
    if net is not None:
        row["net_io"] = f"{stat_size(net[0])} / {stat_size(net[1])}"
    return row


def stats_table(rows: list[dict[str, str]]) -> str:
    """`stats`'s table: a header and one line per row, columns as wide as their longest cell."""
    grid = [[h for h, _ in STATS_COLUMNS]] + [[r[k] for _, k in STATS_COLUMNS] for r in rows]
    widths = [max(len(line[i]) for line in grid) for i in range(len(STATS_COLUMNS))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip()
                     for line in grid)


def stats_view(row: dict[str, str]) -> dict[str, str]:
    """A stats row with Podman's template field names (`{{.CPUPerc}}`, `{{.MemUsage}}`)."""
    return {"ID": row["id"], "ContainerID": row["id"], "Name": row["name"], "CPUPerc": row["cpu_percent"],
            "MemUsage": row["mem_usage"], "MemPerc": row["mem_percent"], "NetIO": row["net_io"],
            "BlockIO": row["block_io"], "PIDS": row["pids"], "PIDs": row["pids"], "CPUTime": row["cpu_time"],
            "AVGCPU": row["avg_cpu"]}
