"""The events log: what happened to containers and images, for `rootless events`.

Podman's "file" events backend without a daemon: every command that changes a container or an
image appends one JSON line to ``<runroot>/events/events.log`` (the monitor appends the
``died`` line when a container's process ends). A line is written with one write(2) on an
O_APPEND descriptor, so concurrent writers never interleave within a line (regular files:
the offset update and the write are one atomic step). When the log grows past
``MAX_SIZE``, the writer that notices renames it to ``events.log.1`` under a lock (the one
before is dropped), as containers.conf's events_logfile_max_size rotates Podman's.

Lines have Podman's JSON event shape: ``{"ID", "Image", "Name", "Status", "Time", "Type",
"Attributes", "ContainerExitCode"}``, plus ``timeNano`` for the filters. Nothing here prints.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from rootless.errors import RootlessError

if TYPE_CHECKING:
    from pathlib import Path

    from rootless.context import Context
    from rootless.layout import Layout

MAX_SIZE = 1024 * 1024  # bytes, containers.conf's events_logfile_max_size default
CONTAINER_EVENTS = ("attach", "cleanup", "create", "died", "exec", "health_status", "init", "kill", "pause",
                    "prune", "remove", "rename", "restart", "start", "stop", "unpause")
IMAGE_EVENTS = ("build", "load", "prune", "pull", "push", "remove", "save", "tag", "untag")


def log_path(layout: Layout) -> Path:
    return layout.runroot / "events" / "events.log"


def stamp(ns: int) -> str:
    """RFC 3339 with nanoseconds, as Podman's JSON events carry it."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ns // 1_000_000_000)) + f".{ns % 1_000_000_000:09d}Z"


def record(type_: str, status: str, *, id_: str = "", name: str = "", image: str = "",
           attributes: dict[str, str] | None = None, exit_code: int | None = None,
           ns: int | None = None) -> dict[str, Any]:
    ns = time.time_ns() if ns is None else ns
    ev: dict[str, Any] = {}
    if id_:
        ev["ID"] = id_
    if image:
        ev["Image"] = image
    if name:
        ev["Name"] = name
    ev.update(Status=status, Time=stamp(ns), Type=type_, Attributes=attributes or None)
    if exit_code is not None:
        ev["ContainerExitCode"] = exit_code
    ev["timeNano"] = ns
    return ev


def emit(ctx: Context, type_: str, status: str, **kw: Any) -> None:
    """Append one event (nothing with ``--events-backend none``). A log that cannot be written
    loses the event, never the command."""
    if ctx.config.events_logger == "none":
        return
    try:
        append(ctx.layout, record(type_, status, **kw))
    except OSError as e:
        ctx.log.warn_once("events", f"events log {log_path(ctx.layout)}: {e.strerror or e}: events are lost")


def append(layout: Layout, ev: dict[str, Any]) -> None:
    path = log_path(layout)
    line = (json.dumps(ev, separators=(",", ":")) + "\n").encode()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, line)
        size = os.fstat(fd).st_size
    finally:
        os.close(fd)
    if size > MAX_SIZE:
        _rotate(path)


def _rotate(path: Path) -> None:
    import fcntl

    lock = os.open(path.with_name("events.lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if os.stat(path).st_size > MAX_SIZE:  # not rotated by another writer meanwhile
                os.replace(path, path.with_name("events.log.1"))
        except FileNotFoundError:
            pass
    finally:
        os.close(lock)


# --------------------------------------------------------------------------- reading


def _lines(path: Path) -> Iterator[dict[str, Any]]:
    try:
        f = open(path, "rb")  # noqa: SIM115
    except FileNotFoundError:
        return
    with f:
        for raw in f:
            ev = _parse(raw)
            if ev is not None:
                yield ev


def _parse(raw: bytes) -> dict[str, Any] | None:
    try:
        ev = json.loads(raw)
    except ValueError:
        return None  # a line cut short by a crash
    return ev if isinstance(ev, dict) else None


class Filter:
    """`--filter` KEY=VALUE: entries with the same key are alternatives, different keys must all match."""

    KEYS = ("type", "event", "status", "container", "image", "label", "volume", "network", "pod", "since",
            "until")

    def __init__(self, specs: list[str]) -> None:
        self.want: dict[str, list[str]] = {}
        for s in specs:
            k, eq, v = s.partition("=")
            if not eq or k not in self.KEYS:
                raise RootlessError(f"invalid filter {s!r}", hint="filters: type=, event=, container=, image=, "
                                    "label=KEY[=VALUE]")
            self.want.setdefault("event" if k == "status" else k, []).append(v)

    def __call__(self, ev: dict[str, Any]) -> bool:
        for k, vals in self.want.items():
            if k == "type" and ev.get("Type") not in vals:
                return False
            if k == "event" and ev.get("Status") not in vals:
                return False
            if k == "container" and (ev.get("Type") != "container" or not any(_names(ev, v) for v in vals)):
                return False
            if k == "image" and not any(_image(ev, v) for v in vals):
                return False
            if k == "label":
                attrs = ev.get("Attributes") or {}
                for v in vals:
                    lk, leq, lv = v.partition("=")
                    if lk not in attrs or (leq and attrs[lk] != lv):
                        return False
            if k in ("volume", "network", "pod"):
                return False  # no such events are written
        return True


def _names(ev: dict[str, Any], v: str) -> bool:
    return v == ev.get("Name") or (len(v) >= 3 and str(ev.get("ID", "")).startswith(v))


def _image(ev: dict[str, Any], v: str) -> bool:
    if ev.get("Type") == "image":
        return _names(ev, v) or str(ev.get("Name", "")).split("/")[-1].split(":")[0] == v
    img = str(ev.get("Image", ""))
    return v == img or img.split("/")[-1].split(":")[0] == v or img.split("/")[-1] == v


def read(layout: Layout, *, since: float | None, until: float | None, keep: Filter) -> Iterator[dict[str, Any]]:
    """The logged events from *since* to *until* (epoch seconds), oldest first."""
    path = log_path(layout)
    for ev in (*_lines(path.with_name("events.log.1")), *_lines(path)):
        t = ev.get("timeNano", 0) / 1e9
        if since is not None and t < since:
            continue
        if until is not None and t > until:
            continue
        if keep(ev):
            yield ev


def follow(layout: Layout, *, since: float | None, until: float | None, keep: Filter,
           poll: float = 0.1) -> Iterator[dict[str, Any]]:
    """The logged events from *since* (all of them when None), then those appended while we
    watch, until *until*; across rotations, with no gap between the two."""
    path = log_path(layout)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)

    def wanted(ev: dict[str, Any] | None) -> bool:
        return ev is not None and (since is None or ev.get("timeNano", 0) / 1e9 >= since) and keep(ev)

    for old in _lines(path.with_name("events.log.1")):
        if wanted(old):
            yield old
    f = None
    ino = -1
    buf = b""

    def reopen(at_end: bool) -> None:
        nonlocal f, ino, buf
        if f is not None:
            f.close()
        try:
            f = open(path, "rb")  # noqa: SIM115
        except FileNotFoundError:
            f, ino = None, -1
            return
        ino = os.fstat(f.fileno()).st_ino
        buf = b""
        if at_end:
            f.seek(0, os.SEEK_END)

    reopen(at_end=False)
    try:
        while until is None or time.time() <= until:
            chunk = f.read() if f is not None else b""
            if chunk:
                buf += chunk
                *complete, buf = buf.split(b"\n")
                for raw in complete:
                    new = _parse(raw)
                    if new is not None and wanted(new):
                        yield new
                continue
            try:
                moved = os.stat(path).st_ino != ino
            except FileNotFoundError:
                moved = False
            if moved:
                # rotated: what the old file got after our last read, then the new one from its start
                rest = f.read() if f is not None else b""
                for raw in (buf + rest).split(b"\n"):
                    last = _parse(raw) if raw else None
                    if last is not None and wanted(last):
                        yield last
                reopen(at_end=False)
                continue
            time.sleep(poll)
    finally:
        if f is not None:
            f.close()


# --------------------------------------------------------------------------- rendering


def go_time(ev: dict[str, Any]) -> str:
    """Go's time.Time.String() in UTC: 2026-12-02 08:49:59.348989047 +0000 UTC."""
    ns = int(ev.get("timeNano", 0))
    frac = f"{ns % 1_000_000_000:09d}".rstrip("0")
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ns // 1_000_000_000)) + \
        (f".{frac}" if frac else "") + " +0000 UTC"


def human(ev: dict[str, Any]) -> str:
    """Podman's text line for an event."""
    head = f"{go_time(ev)} {ev.get('Type', '')} {ev.get('Status', '')}"
    if ev.get("Type") == "container":
        extra = [f"image={ev.get('Image', '')}", f"name={ev.get('Name', '')}"]
        if ev.get("HealthStatus"):
            extra.append(f"health_status={ev['HealthStatus']}")
        extra += [f"{k}={v}" for k, v in sorted((ev.get("Attributes") or {}).items())]
        return f"{head} {ev.get('ID', '')} ({', '.join(extra)})"
    if ev.get("Type") == "image":
        return f"{head} {ev.get('ID', '')} {ev.get('Name', '')}"
    return head + (f" {ev['ID']}" if ev.get("ID") else "")


def template_view(ev: dict[str, Any]) -> dict[str, Any]:
    """What `events --format` templates see (Podman's Event fields; Time as Go prints it)."""
    view = {k: v for k, v in ev.items() if k != "timeNano"}
    view.setdefault("ID", "")
    view.setdefault("Name", "")
    view.setdefault("Image", "")
    view["Time"] = go_time(ev)
    view["TimeNano"] = ev.get("timeNano", 0)
    view["Attributes"] = ev.get("Attributes") or {}
    view.setdefault("ContainerExitCode", 0)
    return view


def json_line(ev: dict[str, Any]) -> str:
    return json.dumps({k: v for k, v in ev.items() if k != "timeNano"}, separators=(",", ":"))
