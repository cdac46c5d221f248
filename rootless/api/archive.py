"""/containers/{id}/archive: `docker cp` both ways (GET: a tar of a path, PUT: a tar
extracted into a directory, HEAD: the path's stat), running or stopped containers alike.

The stat travels base64-encoded as JSON in the X-Docker-Container-Path-Stat header.
"""

from __future__ import annotations

import base64
import json
import os
from typing import TYPE_CHECKING

from rootless.api.http import BadRequest, NotFound, Request
from rootless.errors import RootlessError
from rootless.runtime import nsexec

if TYPE_CHECKING:
    from rootless.context import Context
    from rootless.lifecycle import Container

_MAX_PUT = 4 << 30


def _pid(c: Container) -> int | None:
    if c.state.running and c.state.pid != c.state.monitor_pid:
        return c.state.pid
    if c.state.running:
        raise BadRequest(f"container {c.config.name} is still starting: cannot copy yet")
    return None


def _path(req: Request) -> str:
    p = req.q("path") or ""
    if not p:
        raise BadRequest("archive: path is required")
    return p if p.startswith("/") else "/" + p


def _stat(c: Container, path: str) -> tuple[dict[str, object], str]:
    try:
        s = nsexec.path_stat(c.config.spec, _pid(c), path)
    except RootlessError as e:
        if "No such file" in e.message or "no such file" in e.message:
            raise NotFound(f"Could not find the file {path} in container {c.config.name}") from None
        raise
    s.pop("is_dir", None)
    from datetime import UTC, datetime

    # Go's time.Time in JSON: RFC 3339
    s["mtime"] = datetime.fromtimestamp(float(s["mtime"]), UTC).isoformat().replace("+00:00", "Z")  # type: ignore[arg-type]
    return s, base64.b64encode(json.dumps(s).encode()).decode()


def head(ctx: Context, req: Request, c: Container) -> None:
    path = _path(req)
    _, header = _stat(c, path)
    req.conn.respond(200, b"", "application/json", headers=[("X-Docker-Container-Path-Stat", header)])


def get(ctx: Context, req: Request, c: Container) -> None:
    path = _path(req)
    _, header = _stat(c, path)
    fd = nsexec.archive_out(c.config.spec, _pid(c), path)
    try:
        size = os.fstat(fd).st_size
        req.conn.respond_stream_fd(200, fd, size, "application/x-tar",
                                   headers=[("X-Docker-Container-Path-Stat", header)])
    finally:
        os.close(fd)


def put(ctx: Context, req: Request, c: Container) -> None:
    path = _path(req)
    buf = os.memfd_create("rootless-put")
    try:
        total = 0
        for chunk in req.body_chunks():
            total += len(chunk)
            if total > _MAX_PUT:
                raise BadRequest(f"archive larger than {_MAX_PUT} bytes")
            os.write(buf, chunk)
        os.lseek(buf, 0, os.SEEK_SET)
        pid = _pid(c)
        try:
            s = nsexec.path_stat(c.config.spec, pid, path)
        except RootlessError:
            raise NotFound(f"Could not find the file {path} in container {c.config.name}") from None
        if not s.get("is_dir"):
            raise BadRequest(f"extraction point is not a directory: {path}")
        nsexec.archive_in(c.config.spec, pid, path, buf, root_owned=not req.qbool("copyUIDGID"))
    finally:
        os.close(buf)
    req.conn.respond(200, b"")
