"""A container's file tree as an image (POST /commit), a tar (GET /containers/{id}/export) and a
list of changes (GET /containers/{id}/changes), and its processes frozen (pause, unpause):
the engine calls behind `rootless commit`, `export`, `diff`, `pause` and `unpause`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rootless.api.http import BadRequest, NotFound, Request
from rootless.errors import RootlessError
from rootless.runtime.state import NoSuchContainer

if TYPE_CHECKING:
    from rootless.context import Context

# Docker's change kinds (pkg/archive ChangeType)
_KINDS = {"C": 0, "A": 1, "D": 2}


def _resolve(ctx: Context, ref: str) -> str:
    from rootless import lifecycle

    try:
        return lifecycle.resolve(ctx, ref.lstrip("/"))
    except NoSuchContainer:
        raise NotFound(f"No such container: {ref}") from None


def _id(ctx: Context, req: Request) -> str:
    return _resolve(ctx, req.params["id"])  # type: ignore[attr-defined]


def commit(ctx: Context, req: Request) -> None:
    """POST /commit?container=&repo=&tag=&comment=&author=&changes=…: rootless commit."""
    from rootless.build.commit import commit as do_commit
    from rootless.image.reference import parse_reference

    ref = req.q("container") or ""
    if not ref:
        raise BadRequest("commit: container is required")
    cid = _resolve(ctx, ref)
    body = req.json()
    if body not in ({}, None) and any(v not in (None, "", [], {}, False, 0) for v in body.values()):
        raise BadRequest("commit: a container config in the body is not supported by rootless (give the changes "
                         "as Dockerfile instructions: changes=…)")
    name = None
    repo = req.q("repo") or ""
    if repo:
        text = repo + (f":{req.q('tag')}" if req.q("tag") else "")
        try:
            name = parse_reference(text).tagged_name  # named as Docker names it, as POST /images/{name}/tag does
        except RootlessError as e:
            raise BadRequest(f"commit: invalid reference {text!r}: {e.message}") from None
    changes = [c for v in req.query.get("changes", []) for c in v.split("\n") if c.strip()]
    try:
        image_id = do_commit(ctx, cid, name, changes=changes, message=req.q("comment") or "",
                             author=req.q("author") or "", fmt="docker", quiet=True)
    except RootlessError as e:
        if "--change" in e.message:
            raise BadRequest(e.message.replace("--change", "changes")) from None
        raise
    req.conn.respond_json(201, {"Id": f"sha256:{image_id}"})


def export(ctx: Context, req: Request) -> None:
    """GET /containers/{id}/export: the container's merged file tree as a tar (rootless export)."""
    from rootless.image import archive

    cid = _id(ctx, req)
    ctx.layout.ensure_store()
    req.conn.respond_made_tar(str(ctx.layout.tmp), "export-", lambda path: archive.export(ctx, cid, path))


def changes(ctx: Context, req: Request) -> None:
    """GET /containers/{id}/changes: [{"Path", "Kind"}] (0 changed, 1 added, 2 deleted; rootless diff)."""
    from rootless import lifecycle

    found = lifecycle.diff(ctx, _id(ctx, req))
    req.conn.respond_json(200, [{"Path": p, "Kind": _KINDS[k]} for k, p in found] or None)


def pause(ctx: Context, req: Request) -> None:
    from rootless import lifecycle

    lifecycle.pause(ctx, _id(ctx, req), True)
    req.conn.respond(204)


def unpause(ctx: Context, req: Request) -> None:
    from rootless import lifecycle

    lifecycle.pause(ctx, _id(ctx, req), False)
    req.conn.respond(204)


def disk_usage(ctx: Context, req: Request) -> None:
    """GET /system/df: images, containers and volumes with their sizes, as `docker system df` reads them."""
    from rootless import engine, lifecycle
    from rootless.api import images
    from rootless.volumes import store

    d = engine.disk_usage(ctx)
    per_image: dict[str, int] = {}
    for c in d["containers"]:
        per_image[c.config.image_id] = per_image.get(c.config.image_id, 0) + 1
    imgs = [{**images.summary(ctx, rec), "Containers": per_image.get(rec.id, 0), "SharedSize": 0}
            for rec in d["images"]]
    ctrs: list[dict[str, Any]] = []
    for c in d["containers"]:
        ctrs.append({"Id": c.id, "Names": [f"/{c.config.name}"], "Image": c.config.image,
                     "ImageID": f"sha256:{c.config.image_id}", "Command": " ".join(c.config.spec.process.args),
                     "Created": int(c.config.created), "State": lifecycle.status_name(c.state),
                     "Status": lifecycle.status_name(c.state), "Labels": dict(c.config.labels),
                     "SizeRw": d["sizes"][c.id], "SizeRootFs": d["sizes"][c.id], "Mounts": []})
    vols = [{"Name": v.name, "Driver": "local", "Mountpoint": str(store(ctx).data(v.name)), "Labels": dict(v.labels),
             "Scope": "local", "Options": {}, "UsageData": {"Size": d["vsizes"][v.name], "RefCount": users}}
            for v, users in d["volumes"]]
    req.conn.respond_json(200, {"LayersSize": sum(r.size for r in d["images"]), "Images": imgs,
                                "Containers": ctrs, "Volumes": vols, "BuildCache": []})
