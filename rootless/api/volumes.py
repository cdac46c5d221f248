"""/volumes/…: create, list, inspect, remove, prune over rootless.volumes (what `rootless
volume` runs), so a volume made by `docker volume create` is in `rootless volume ls`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rootless import volumes
from rootless.api.http import BadRequest, Conflict, NotFound, Request
from storage.volumes import NoSuchVolume, VolumeInUse

if TYPE_CHECKING:
    from rootless.context import Context
    from storage.volumes import Volume


def _docker(ctx: Context, vol: Volume, users: int | None = None) -> dict[str, Any]:
    d = volumes.inspect(ctx, vol, users or 0)
    out = {k: d[k] for k in ("Name", "Driver", "Mountpoint", "CreatedAt", "Labels", "Scope", "Options")}
    if users is not None:
        out["UsageData"] = {"RefCount": users, "Size": -1}
    return out


def _filters(req: Request) -> list[str]:
    raw = req.qjson("filters") or {}
    if not isinstance(raw, dict):
        raise BadRequest("filters: expected a JSON object")
    out = []
    for k, v in raw.items():
        for item in ([x for x, on in v.items() if on] if isinstance(v, dict) else v):
            out.append(f"{k}={item}")
    return out


def list_(ctx: Context, req: Request) -> None:
    rows = volumes.listing(ctx, _filters(req))
    req.conn.respond_json(200, {"Volumes": [_docker(ctx, v) for v, _ in rows], "Warnings": []})


def create(ctx: Context, req: Request) -> None:
    body = req.json()
    name = body.get("Name") or None
    driver = body.get("Driver") or "local"
    if driver != "local":
        raise BadRequest(f"volume driver {driver!r} is not supported by rootless (local is)")
    if name is not None:
        try:  # Docker answers an existing name with that volume
            req.conn.respond_json(201, _docker(ctx, volumes.find(ctx, name)))
            return
        except NoSuchVolume:
            pass
    vol = volumes.create(ctx, name, driver=driver, opts=[f"{k}={v}" for k, v in (body.get("DriverOpts") or {}).items()],
                         labels=[f"{k}={v}" for k, v in (body.get("Labels") or {}).items()])
    req.conn.respond_json(201, _docker(ctx, vol))


def _name(req: Request) -> str:
    return req.params["name"]  # type: ignore[attr-defined,no-any-return]


def inspect(ctx: Context, req: Request) -> None:
    try:
        vol = volumes.find(ctx, _name(req))
    except NoSuchVolume:
        raise NotFound(f"get {_name(req)}: no such volume") from None
    req.conn.respond_json(200, _docker(ctx, vol))


def remove(ctx: Context, req: Request) -> None:
    try:
        volumes.remove(ctx, _name(req), force=req.qbool("force"))
    except NoSuchVolume:
        raise NotFound(f"get {_name(req)}: no such volume") from None
    except VolumeInUse as e:
        raise Conflict(f"remove {_name(req)}: volume is in use - {e.message}") from None
    req.conn.respond(204)


def prune(ctx: Context, req: Request) -> None:
    gone = volumes.prune(ctx, _filters(req))
    req.conn.respond_json(200, {"VolumesDeleted": gone or None, "SpaceReclaimed": 0})
