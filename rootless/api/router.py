"""Routes: (method, path pattern) → handler; versioned (/v1.xx/…) and unversioned paths alike.

Every request ends in exactly one answer: the handler's, or Docker's JSON error body
({"message": …}) with 404/409/400 for the engine's typed errors and 501 naming an endpoint
that is not served. Nothing reaches the client as a traceback, and nothing hangs: a failure
after a streamed response has begun closes the connection.
"""

from __future__ import annotations

import os
import re
import socket
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

from rootless.api import build, containers, execs, images, networks, snapshots, system, volumes
from rootless.api.http import (
    API_VERSION,
    MIN_API_VERSION,
    ApiError,
    ClientGone,
    Connection,
    Request,
)
from rootless.errors import NotFoundError, RootlessError

if TYPE_CHECKING:
    from rootless.context import Context

Handler = Callable[["Context", Request], None]

_ID = r"(?P<id>[^/]+)"
_NAME = r"(?P<name>.+?)"  # image names hold slashes

ROUTES: list[tuple[str, str, Handler]] = [
    ("GET", r"/_ping", system.ping),
    ("HEAD", r"/_ping", system.ping),
    ("GET", r"/version", system.version),
    ("GET", r"/info", system.info),
    ("POST", r"/auth", system.auth),
    ("GET", r"/events", system.events),
    ("POST", r"/build", build.build),
    ("GET", r"/system/df", snapshots.disk_usage),
    ("POST", r"/commit", snapshots.commit),
    # containers
    ("GET", r"/containers/json", containers.list_),
    ("POST", r"/containers/create", containers.create),
    ("POST", r"/containers/prune", containers.prune),
    ("GET", rf"/containers/{_ID}/json", containers.inspect),
    ("POST", rf"/containers/{_ID}/start", containers.start),
    ("POST", rf"/containers/{_ID}/stop", containers.stop),
    ("POST", rf"/containers/{_ID}/restart", containers.restart),
    ("POST", rf"/containers/{_ID}/kill", containers.kill),
    ("POST", rf"/containers/{_ID}/wait", containers.wait),
    ("DELETE", rf"/containers/{_ID}", containers.remove),
    ("POST", rf"/containers/{_ID}/rename", containers.rename),
    ("GET", rf"/containers/{_ID}/logs", containers.logs),
    ("GET", rf"/containers/{_ID}/top", containers.top),
    ("GET", rf"/containers/{_ID}/stats", containers.stats),
    ("POST", rf"/containers/{_ID}/attach", containers.attach),
    ("POST", rf"/containers/{_ID}/resize", containers.resize),
    ("GET", rf"/containers/{_ID}/archive", containers.archive_get),
    ("HEAD", rf"/containers/{_ID}/archive", containers.archive_head),
    ("PUT", rf"/containers/{_ID}/archive", containers.archive_put),
    ("GET", rf"/containers/{_ID}/export", snapshots.export),
    ("GET", rf"/containers/{_ID}/changes", snapshots.changes),
    ("POST", rf"/containers/{_ID}/pause", snapshots.pause),
    ("POST", rf"/containers/{_ID}/unpause", snapshots.unpause),
    # exec
    ("POST", rf"/containers/{_ID}/exec", execs.create),
    ("POST", rf"/exec/{_ID}/start", execs.start),
    ("POST", rf"/exec/{_ID}/resize", execs.resize),
    ("GET", rf"/exec/{_ID}/json", execs.inspect),
    # images
    ("GET", r"/images/json", images.list_),
    ("POST", r"/images/create", images.create),
    ("POST", r"/images/prune", images.prune),
    ("POST", r"/images/load", images.load),
    ("GET", r"/images/search", images.search),
    ("GET", r"/images/get", images.get),
    ("GET", rf"/images/{_NAME}/get", images.get),
    ("POST", rf"/images/{_NAME}/push", images.push),
    ("GET", rf"/images/{_NAME}/json", images.inspect),
    ("GET", rf"/images/{_NAME}/history", images.history),
    ("POST", rf"/images/{_NAME}/tag", images.tag),
    ("DELETE", rf"/images/{_NAME}", images.remove),
    # networks
    ("GET", r"/networks", networks.list_),
    ("POST", r"/networks/create", networks.create),
    ("POST", r"/networks/prune", networks.prune),
    ("GET", rf"/networks/{_ID}", networks.inspect),
    ("DELETE", rf"/networks/{_ID}", networks.remove),
    ("POST", rf"/networks/{_ID}/connect", networks.connect),
    ("POST", rf"/networks/{_ID}/disconnect", networks.disconnect),
    # volumes
    ("GET", r"/volumes", volumes.list_),
    ("POST", r"/volumes/create", volumes.create),
    ("POST", r"/volumes/prune", volumes.prune),
    ("GET", rf"/volumes/{_NAME}", volumes.inspect),
    ("DELETE", rf"/volumes/{_NAME}", volumes.remove),
]

_COMPILED = [(m, re.compile(p + r"/?\Z"), h) for m, p, h in ROUTES]
_VERSIONED = re.compile(r"\A/v(\d+)\.(\d+)(/.*)\Z")


def _version_tuple(v: str) -> tuple[int, int]:
    a, _, b = v.partition(".")
    return int(a), int(b)


def route(req: Request) -> tuple[Handler, dict[str, str]]:
    m = _VERSIONED.match(req.raw_path)
    if m:
        req.api_version = f"{m.group(1)}.{m.group(2)}"
        req.path = m.group(3)
        wanted = (int(m.group(1)), int(m.group(2)))
        if wanted > _version_tuple(API_VERSION):
            raise ApiError(f"client version {req.api_version} is too new. Maximum supported API version "
                           f"is {API_VERSION}", 400)
        if wanted < _version_tuple(MIN_API_VERSION):
            raise ApiError(f"client version {req.api_version} is too old. Minimum supported API version "
                           f"is {MIN_API_VERSION}, please upgrade your client to a newer version", 400)
    known_path = False
    for method, pattern, handler in _COMPILED:
        pm = pattern.match(req.path)
        if pm is None:
            continue
        known_path = True
        if method == req.method:
            return handler, pm.groupdict()
    if known_path:
        raise ApiError(f"{req.method} {req.path}: method not allowed here", 405)
    raise ApiError(f"{req.method} {req.path}: this endpoint is not served by rootless (not implemented)", 501)


def status_of(e: RootlessError) -> int:
    from rootless.runtime.state import ContainerRunning

    if isinstance(e, NotFoundError):
        return 404
    if isinstance(e, ContainerRunning) or "already in use" in e.message:
        return 409
    return 500


def error_text(e: RootlessError) -> str:
    return f"{e.message} ({e.hint})" if e.hint else e.message


def serve_connection(ctx: Context, sock: socket.socket, keepalive: float) -> None:
    conn = Connection(sock, keepalive)
    try:
        while True:
            try:
                req = conn.next_request()
            except ApiError as e:  # not HTTP: one answer, then the connection closes
                conn.respond_raw_error(e.status, e.message)
                return
            if req is None:
                return
            _dispatch(ctx, conn, req)
            if conn.must_close:
                return
    except ClientGone:
        return
    finally:
        try:
            sock.close()
        except OSError:
            pass


def _dispatch(ctx: Context, conn: Connection, req: Request) -> None:
    debug = ctx.log.level <= 10
    logged = ctx.log.level <= 20  # --log-level info: one line per request, and its time
    if logged:
        import time

        t0 = time.monotonic()
        print(f"INFO api: [{os.getpid()}] {req.method} {req.raw_path}", file=sys.stderr, flush=True)
    try:
        try:
            handler, params = route(req)
            req.params = params  # type: ignore[attr-defined]
            handler(ctx, req)
        except RootlessError as e:
            raise ApiError(error_text(e), status_of(e)) from None
        except OSError as e:
            what = f"{e.filename}: " if e.filename else ""
            raise ApiError(f"{what}{e.strerror or e}", 500) from None
    except ClientGone:
        raise
    except ApiError as e:
        _answer_error(conn, req, e.status, e.message)
    except Exception as e:  # a bug: one line to the client, the traceback only when debugging
        if debug:
            import traceback

            traceback.print_exc()
        _answer_error(conn, req, 500, f"internal error: {type(e).__name__}: {e}")
    if logged:
        print(f"INFO api: [{os.getpid()}] {req.method} {req.raw_path} done in {(time.monotonic() - t0) * 1000:.1f} ms",
              file=sys.stderr, flush=True)
    if not conn.responded:
        _answer_error(conn, req, 500, f"{req.method} {req.path}: the handler gave no answer")
    elif not conn.must_close:
        try:
            req.drain()
        except ApiError:
            raise ClientGone() from None


def _answer_error(conn: Connection, req: Request, status: int, message: str) -> None:
    if conn.responded:
        raise ClientGone()  # mid-stream: all that is left is to close
    try:
        req.drain()
    except (ApiError, ClientGone):
        pass
    if req.method == "HEAD":
        conn.respond(status, b"")
        return
    conn.respond_error(status, message)
