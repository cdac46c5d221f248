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


def summary(ctx: Context, rec: ImageRecord) -> dict[str, Any]:
    """Docker's ImageSummary (GET /images/json, GET /system/df)."""
    cfg = present.image_config(ctx, rec)
    ts = present.timestamp(rec.created)
    return {"Id": f"sha256:{rec.id}", "ParentId": "", "RepoTags": [familiar(n) for n in rec.names],
            "RepoDigests": [familiar(d) for d in rec.digests], "Created": int(ts) if ts else 0,
            "Size": rec.size, "SharedSize": -1, "VirtualSize": rec.size,
            "Labels": (cfg.get("config") or {}).get("Labels") or {}, "Containers": -1}


def list_(ctx: Context, req: Request) -> None:
    from storage.images import ImageStore

    filters = _filters(req)
    out: list[dict[str, Any]] = []
    for rec in ImageStore(ctx.layout).list():
        if _matches(ctx, rec, filters):
            out.append(summary(ctx, rec))
    out.sort(key=lambda r: r["Created"], reverse=True)
    req.conn.respond_json(200, out)


def _pull_name(req: Request) -> str:
    image = req.q("fromImage") or ""
    if not image:
        raise BadRequest("images/create: fromImage (or fromSrc) is required")
    tag = req.q("tag") or ""
    if tag:
        image += ("@" if tag.startswith("sha256:") else ":") + tag
    return image


def create(ctx: Context, req: Request) -> None:
    """Pull, streaming Docker's progress messages (one JSON object a line). Failures after
    the first line are reported in the stream, as Docker does ({"error": …})."""
    from rootless.image.pull import pull

    if req.q("fromSrc") and not req.q("fromImage"):
        import_(ctx, req)
        return
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


def import_(ctx: Context, req: Request) -> None:
    """POST /images/create?fromSrc=-: `docker import`, the tarball in the body (rootless import)."""
    import os

    from rootless.image import archive

    if req.q("fromSrc") != "-":
        raise NotImplementedHere(f"POST /images/create?fromSrc={req.q('fromSrc')}: importing from a URL is not "
                                 "served by rootless (send the tarball in the body: fromSrc=-)")
    repo, tag = req.q("repo") or "", req.q("tag") or ""
    name = (repo + (f":{tag}" if tag else "")) if repo else None
    ctx.layout.ensure_store()
    path = req.spool(ctx.layout.tmp, "a tarball")
    try:
        image_id = archive.import_tarball(ctx, path, name, list(req.query.get("changes", [])),
                                          req.q("message") or None)
    except RootlessError as e:
        raise BadRequest(f"import: {e.message}" + (f" ({e.hint})" if e.hint else "")) from None
    finally:
        os.unlink(path)
    out = req.conn.stream(200)
    out.json({"status": f"sha256:{image_id}"})
    out.close()


def search(ctx: Context, req: Request) -> None:
    raise NotImplementedHere("GET /images/search (docker search) is not served by rootless: search the registry's "
                             "own catalog or web page")


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


# --------------------------------------------------------------------------- push, save, load

_PUSHED = {"done": "Pushed", "skipped: already exists": "Layer already exists"}


def registry_auth(req: Request) -> str | None:
    """X-Registry-Auth (base64url JSON, Docker's AuthConfig) → push's ``USER:PASSWORD``; None
    when absent or empty (the credentials `rootless login`/`docker login` stored are used)."""
    import base64
    import json

    raw = req.headers.get("x-registry-auth", "").strip()
    if not raw:
        return None
    try:
        data = json.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
    except ValueError:
        raise BadRequest("X-Registry-Auth: not base64-encoded JSON") from None
    if not isinstance(data, dict):
        raise BadRequest("X-Registry-Auth: not a JSON object")
    if data.get("identitytoken") or data.get("registrytoken"):
        raise BadRequest("X-Registry-Auth: identity tokens are not supported by rootless (give a password)")
    user, password = data.get("username") or "", data.get("password") or ""
    return f"{user}:{password}" if user else None


def _push_sources(ctx: Context, name: str, tag: str | None) -> list[str]:
    """``name`` with ``tag``; without a tag (`docker push --all-tags`), every name of that repository."""
    from rootless.image.reference import parse_reference

    if tag:
        text = f"{name}@{tag}" if tag.startswith("sha256:") else f"{name}:{tag}"
        _find(ctx, text)
        return [text]
    try:
        repo = parse_reference(name).name
    except RootlessError as e:
        raise BadRequest(f"invalid reference {name!r}: {e.message}") from None
    names = sorted(n for rec in present.list_images(ctx) for n in rec.names if n.rpartition(":")[0] == repo)
    if not names:
        raise NotFound(f"An image does not exist locally with the tag: {name}")
    return names


def push(ctx: Context, req: Request) -> None:
    """POST /images/{name}/push: rootless push, its per-blob lines as Docker's progress messages."""
    import re

    from rootless.api import child
    from rootless.image.push import PushOptions
    from rootless.image.push import push as do_push

    name, tag = _name(req), req.q("tag") or None
    creds = registry_auth(req)
    try:
        sources = _push_sources(ctx, name, tag)
    except NotFound:
        raise NotFound(f"An image does not exist locally with the tag: {name}") from None
    req.drain()
    opts = PushOptions(creds=creds, show_progress=False)
    out = req.conn.stream(200)
    out.json({"status": f"The push refers to repository [{familiar(name.partition('@')[0])}]"})
    blob_line = re.compile(r"Copying (?:blob|config) ([0-9a-f]{12}) (.*)")

    def line(text: str) -> None:
        m = blob_line.match(text.strip())
        if m:
            outcome = m.group(2)
            status = _PUSHED.get(outcome) or (f"Mounted from {outcome.removeprefix('skipped: mounted from ')}"
                                              if outcome.startswith("skipped: mounted from ") else outcome)
            out.json({"status": status, "progressDetail": {}, "id": m.group(1)})
        elif text.startswith(("Warning", "Hint")):
            out.json({"status": text.rstrip("\n")})

    for source in sources:
        try:
            digest = child.run(req, lambda source=source: do_push(ctx, source, None, opts), line)
        except child.CallFailed as e:
            out.json({"errorDetail": {"message": e.message}, "error": e.message})
            out.close()
            return
        shown_tag = source.rpartition(":")[2] if "@" not in source else source.rpartition("@")[2]
        size = _blob_size(ctx, digest)
        out.json({"status": f"{shown_tag}: digest: {digest} size: {size}"})
        out.json({"progressDetail": {}, "aux": {"Tag": shown_tag, "Digest": digest, "Size": size}})
    out.close()


def _blob_size(ctx: Context, digest: str) -> int:
    try:
        return ctx.layout.blob(digest).stat().st_size
    except OSError:
        return 0


def get(ctx: Context, req: Request) -> None:
    """GET /images/{name}/get and GET /images/get?names=…: a docker-archive of the images (rootless save)."""
    from rootless.image import archive

    params = getattr(req, "params", {})
    names = [params["name"]] if "name" in params else [n for v in req.query.get("names", []) for n in v.split(",")
                                                       if n]
    if not names:
        raise BadRequest("images/get: names is required")
    for n in names:
        _find(ctx, n)
    ctx.layout.ensure_store()
    req.conn.respond_made_tar(str(ctx.layout.tmp), "save-",
                              lambda path: archive.save(ctx, names, path, "docker-archive"))


def load(ctx: Context, req: Request) -> None:
    """POST /images/load: a docker-archive or OCI archive in the body (rootless load)."""
    import os

    from rootless.image import archive

    ctx.layout.ensure_store()
    path = req.spool(ctx.layout.tmp, "an image archive")
    try:
        loaded = archive.load(ctx, path, True)
    except RootlessError as e:
        raise BadRequest(f"load: {e.message}" + (f" ({e.hint})" if e.hint else "")) from None
    finally:
        os.unlink(path)
    lines = []
    for what in loaded:
        if what.startswith("sha256:"):
            lines.append(f"Loaded image ID: {what}\n")
        else:
            lines += [f"Loaded image: {familiar(n)}\n" for n in what.split(", ")]
    out = req.conn.stream(200)
    for text in lines:
        out.json({"stream": text})
    out.close()
