"""/images/…: list, pull (create), inspect, history, tag, remove, prune, over rootless.image.

Names are shown as Docker shows them: docker.io/library/alpine:latest is "alpine:latest".
"""

from __future__ import annotations

import fnmatch
from typing import TYPE_CHECKING, Any

from rootless.api.http import BadRequest, Conflict, NotFound, NotImplementedHere, Request
from rootless.errors import NotFoundError, RootlessError
from rootless.image import present

if TYPE_CHECKING:
    from rootless.context import Context
    from storage.images import ImageRecord


def familiar(name: str) -> str:
    """docker.io/library/alpine:latest → alpine:latest; docker.io/org/x → org/x."""
    for prefix in ("docker.io/library/", "docker.io/"):
        if name.startswith(prefix):
            return name[len(prefix):]
    return name


def _name(req: Request) -> str:
    return req.params["name"]  # type: ignore[attr-defined,no-any-return]


def _find(ctx: Context, name: str) -> ImageRecord:
    try:
        return present.find(ctx, name)
    except NotFoundError:
        raise NotFound(f"No such image: {name}") from None


def _filters(req: Request) -> dict[str, list[str]]:
    raw = req.qjson("filters") or {}
    if not isinstance(raw, dict):
        raise BadRequest("filters: expected a JSON object")
    return {k: [x for x, on in v.items() if on] if isinstance(v, dict) else [str(x) for x in v]
            for k, v in raw.items()}


def _matches(ctx: Context, rec: ImageRecord, filters: dict[str, list[str]]) -> bool:
    for key, values in filters.items():
        if key == "dangling":
            if any((v.lower() in ("true", "1")) != rec.dangling for v in values):
                return False
        elif key == "reference":
            names = [familiar(n) for n in rec.names] + list(rec.names)
            pats = [v if ":" in v.rsplit("/", 1)[-1] else v + ":*" for v in values]
            if not any(fnmatch.fnmatchcase(n, p) for n in names for p in pats):
                return False
        elif key == "label":
            labels = (present.image_config(ctx, rec).get("config") or {}).get("Labels") or {}
            for v in values:
                k, eq, val = v.partition("=")
                if k not in labels or (eq and labels[k] != val):
                    return False
        else:
            raise BadRequest(f"image filter {key!r} is not supported by rootless (dangling, reference, label are)")
    return True


def list_(ctx: Context, req: Request) -> None:
    from storage.images import ImageStore

    filters = _filters(req)
    out: list[dict[str, Any]] = []
    for rec in ImageStore(ctx.layout).list():
        if not _matches(ctx, rec, filters):
            continue
        cfg = present.image_config(ctx, rec)
        ts = present.timestamp(rec.created)
        out.append({"Id": f"sha256:{rec.id}", "ParentId": "", "RepoTags": [familiar(n) for n in rec.names],
                    "RepoDigests": [familiar(d) for d in rec.digests], "Created": int(ts) if ts else 0,
                    "Size": rec.size, "SharedSize": -1, "VirtualSize": rec.size,
                    "Labels": (cfg.get("config") or {}).get("Labels") or {}, "Containers": -1})
    out.sort(key=lambda r: r["Created"], reverse=True)
    req.conn.respond_json(200, out)


def _pull_name(req: Request) -> str:
    image = req.q("fromImage") or ""
    if not image:
        if req.q("fromSrc"):
            raise NotImplementedHere("POST /images/create?fromSrc= (import) is not served by rootless")
        raise BadRequest("images/create: fromImage is required")
    tag = req.q("tag") or ""
    if tag:
        image += ("@" if tag.startswith("sha256:") else ":") + tag
    return image


def create(ctx: Context, req: Request) -> None:
    """Pull, streaming Docker's progress messages (one JSON object a line). Failures after
    the first line are reported in the stream, as Docker does ({"error": …})."""
    from rootless.image.pull import pull

    image = _pull_name(req)
    req.drain()
    out = req.conn.stream(200)
    repo, _, tag = image.rpartition(":") if ":" in image.rsplit("/", 1)[-1] else (image, "", "latest")
    out.json({"status": f"Pulling from {familiar(repo)}", "id": tag or "latest"})
    try:
        rec = pull(ctx, image, platform=req.q("platform") or None, quiet=True, show_progress=False)
    except RootlessError as e:
        msg = e.message
        out.json({"errorDetail": {"message": msg}, "error": msg})
        out.close()
        return
    if rec.manifest_digest:
        out.json({"status": f"Digest: {rec.manifest_digest}"})
    shown = familiar(rec.names[0]) if rec.names else image
    out.json({"status": f"Status: Downloaded newer image for {shown}"})
    out.close()


def inspect(ctx: Context, req: Request) -> None:
    rec = _find(ctx, _name(req))
    data, _ = present.inspect(ctx, [rec.id])
    d = data[0]
    cfg = present.image_config(ctx, rec)
    d["Id"] = f"sha256:{rec.id}"
    d["RepoTags"] = [familiar(n) for n in rec.names]
    d["RepoDigests"] = [familiar(n) for n in rec.digests]
    d["Config"] = cfg.get("config") or {}
    d["ContainerConfig"] = cfg.get("container_config") or {}
    d["Container"] = cfg.get("container", "")
    d["DockerVersion"] = d.pop("Version", "")
    d["GraphDriver"] = {"Name": ctx.config.storage_driver or "overlay", "Data": {}}
    d["Metadata"] = {"LastTagTime": "0001-01-01T00:00:00Z"}
    for k in ("Digest", "History", "NamesHistory", "ManifestType", "Labels", "User"):
        d.pop(k, None)
    req.conn.respond_json(200, d)


def history(ctx: Context, req: Request) -> None:
    rec = _find(ctx, _name(req))
    cfg = present.image_config(ctx, rec)
    layers = list(rec.layers)
    rows: list[dict[str, Any]] = []
    for h in cfg.get("history") or []:
        size = 0
        if not h.get("empty_layer") and layers:
            size = layers.pop(0).size
        ts = present.timestamp(h.get("created", ""))
        rows.append({"Id": "<missing>", "Created": int(ts) if ts else 0, "CreatedBy": h.get("created_by", ""),
                     "Tags": None, "Size": size, "Comment": h.get("comment", "")})
    rows.reverse()
    if rows:
        rows[0]["Id"] = f"sha256:{rec.id}"
        rows[0]["Tags"] = [familiar(n) for n in rec.names]
    req.conn.respond_json(200, rows)


def tag(ctx: Context, req: Request) -> None:
    repo = req.q("repo") or ""
    if not repo:
        raise BadRequest("tag: repo is required")
    target = repo + (":" + (req.q("tag") or "latest") if ":" not in repo.rsplit("/", 1)[-1] else "")
    try:
        present.tag(ctx, _name(req), [target])
    except NotFoundError:
        raise NotFound(f"No such image: {_name(req)}") from None
    req.conn.respond(201, b"")


def remove(ctx: Context, req: Request) -> None:
    name = _name(req)
    report, status = present.rmi(ctx, [name], force=req.qbool("force"), all_=False)
    if status == present.EXIT_IMAGE_UNKNOWN:
        raise NotFound(f"No such image: {name}")
    if status:
        raise Conflict("; ".join(line for err, line in report if err) or f"unable to remove image {name}")
    items = []
    for _, line in report:
        k, _, v = line.partition(": ")
        if k == "Untagged":
            items.append({"Untagged": familiar(v)})
        elif k == "Deleted":
            items.append({"Deleted": f"sha256:{v}"})
    req.conn.respond_json(200, items)


def prune(ctx: Context, req: Request) -> None:
    filters = _filters(req)
    dangling = filters.get("dangling", ["true"])
    all_ = any(v.lower() in ("false", "0") for v in dangling)
    removed = present.prune(ctx, all_=all_)
    req.conn.respond_json(200, {"ImagesDeleted": [{"Deleted": f"sha256:{i}"} for i in removed] or None,
                                "SpaceReclaimed": 0})
