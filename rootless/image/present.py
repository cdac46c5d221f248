"""The image commands' logic (list, rmi, tag, inspect, prune, login, logout) behind rootless.commands.

It prints nothing: it returns records, Podman's `image inspect` fields and `rmi` reports, which
rootless/commands/images.py renders.
"""

from __future__ import annotations

import json
import re
import time
from typing import TYPE_CHECKING, Any

from rootless.errors import NotFoundError, RootlessError
from rootless.image.reference import candidates, parse_reference
from rootless.units import decimal_size

if TYPE_CHECKING:
    from rootless.context import Context
    from storage.images import ImageRecord, ImageStore

_HEXPREFIX = re.compile(r"^(sha256:)?[0-9a-f]{3,64}$")
EXIT_IMAGE_UNKNOWN = 1  # podman rmi: 1 when an image is not known
EXIT_IMAGE_IN_USE = 2  # podman rmi: 2 when a container uses the image


def _store(ctx: Context) -> ImageStore:
    from storage.images import ImageStore

    return ImageStore(ctx.layout)


def find(ctx: Context, text: str, store: ImageStore | None = None) -> ImageRecord:
    """An image by ID, ID prefix, full name, or short name (through unqualified-search)."""
    store = store or _store(ctx)
    if _HEXPREFIX.match(text):
        found = store.lookup(text.removeprefix("sha256:"))
        if found is not None:
            return found
    ref = parse_reference(text)
    cands = candidates(ref, ctx.config.unqualified_search)
    names = [c.tagged_name if not c.digest else str(c) for c in cands]
    if ref.digest:
        names += [f"{c.name}@{c.digest}" for c in cands]
    first = text.split("/", 1)[0]
    if "/" not in text or not ("." in first or ":" in first or first == "localhost"):
        # images built or committed here are named localhost/NAME, as Podman names them
        names.append(f"localhost/{text}" if _has_tag(text) else f"localhost/{text}:latest")
    rec = store.lookup_candidates(names)
    if rec is None:
        raise NotFoundError(f"{text}: image not known", "list images with `rootless images`, "
                            "or pull it with `rootless pull`")
    return rec


def _has_tag(text: str) -> bool:
    last = text.rsplit("/", 1)[-1]
    return ":" in last or "@" in last


def split_name(name: str) -> tuple[str, str]:
    repo, _, tag = name.rpartition(":")
    if "/" in tag or not repo:
        return name, "<none>"
    return repo, tag


def ago(created: str) -> str:
    ts = timestamp(created)
    if ts is None:
        return "unknown"
    d = max(0.0, time.time() - ts)
    for unit, secs in (("year", 365 * 86400), ("month", 30 * 86400), ("week", 7 * 86400), ("day", 86400),
                       ("hour", 3600), ("minute", 60)):
        if d >= secs:
            n = int(d // secs)
            return f"{n} {unit}{'s' if n > 1 else ''} ago"
    return "Less than a minute ago" if d >= 1 else "Now"


def timestamp(created: str) -> float | None:
    if not created:
        return None
    from datetime import datetime

    s = re.sub(r"(\.\d{6})\d+", r"\1", created.replace("Z", "+00:00"))
    try:
        return datetime.fromisoformat(s).timestamp()
    except ValueError:
        return None


def _config(ctx: Context, rec: ImageRecord) -> dict[str, Any]:
    from storage.blobs import BlobStore

    try:
        return json.loads(BlobStore(ctx.layout).read_bytes(rec.config_digest))  # type: ignore[no-any-return]
    except (OSError, ValueError):
        return {}


def list_images(ctx: Context) -> list[ImageRecord]:
    """The stored images, newest first."""
    return sorted(_store(ctx).list(), key=lambda r: timestamp(r.created) or 0, reverse=True)


def image_config(ctx: Context, rec: ImageRecord) -> dict[str, Any]:
    """The image's config blob ({} when unreadable)."""
    return _config(ctx, rec)


IMAGES_HEADERS = {"ID": "IMAGE ID", "ReadOnly": "R/O", "CreatedSince": "CREATED", "Created": "CREATED"}


def containers_per_image(ctx: Context) -> dict[str, int]:
    """Image ID → how many containers were made from it (their records in the store)."""
    out: dict[str, int] = {}
    try:
        records = [p / "config.json" for p in ctx.layout.containers.iterdir()]
    except FileNotFoundError:
        records = []
    for path in records:
        try:
            iid = json.loads(path.read_bytes())["image_id"]
        except (OSError, ValueError, KeyError):
            continue
        out[iid] = out.get(iid, 0) + 1
    return out


def image_row(ctx: Context, r: ImageRecord, name: str, no_trunc: bool, containers: int) -> dict[str, Any]:
    """What `images --format` templates see: Podman's imageReporter field names and shapes."""
    repo, t = split_name(name) if name else ("<none>", "<none>")
    ts = timestamp(r.created) or 0
    created = time.strftime("%Y-%m-%d %H:%M:%S +0000 UTC", time.gmtime(ts))
    labels = (_config(ctx, r).get("config") or {}).get("Labels") or {}
    return {
        "ID": r.id if no_trunc else r.id[:12], "Id": r.id, "Repository": repo, "Tag": t,
        "Digest": r.manifest_digest, "CreatedSince": ago(r.created), "Created": ago(r.created),
        "CreatedAt": created, "Size": decimal_size(r.size), "VirtualSize": r.size, "SharedSize": 0,
        "ReadOnly": False, "IsReadOnly": False, "Dangling": not r.names, "Containers": containers,
        "Labels": labels, "Names": list(r.names), "RepoTags": list(r.names), "RepoDigests": list(r.digests),
        "History": ", ".join(r.names),
    }


def tag(ctx: Context, source: str, targets: list[str]) -> None:
    store = _store(ctx)
    with store.locked():
        rec = find(ctx, source, store)
        for t in targets:
            ref = parse_reference(t)
            if ref.digest:
                raise RootlessError(f"{t}: cannot tag with a digest", "give a name with an optional :tag")
            store.tag(rec.id, ref.tagged_name)
            image_event(ctx, "tag", rec.id, ref.tagged_name)


def image_event(ctx: Context, status: str, iid: str, name: str) -> None:
    from rootless import events

    events.emit(ctx, "image", status, id_=iid, name=name)


def _gc(ctx: Context, store: ImageStore) -> None:
    """Remove layers and blobs that no image references any more (under the store-wide gc lock,
    which every pull holds shared, so nothing a pull is still writing can go)."""
    from rootless.runtime.userns import StoreNamespace
    from storage import rootfs
    from storage.blobs import BlobStore
    from storage.layers import LayerStore
    from storage.locks import FileLock

    with FileLock(ctx.layout.locks / "gc.lock"):
        layers_used = store.layers_in_use()
        blobs_used = store.blobs_in_use()
        for meta in rootfs.in_use(ctx).values():  # containers keep their image's layers
            layers_used.update(str(d) for d in meta.get("layers", []) if isinstance(d, str))
        blobs = BlobStore(ctx.layout)
        for d in blobs.list():
            if d not in blobs_used:
                blobs.remove(d)
        blobs.remove_partials()
        with StoreNamespace(ctx.layout, ctx.log) as runner:
            ls = LayerStore(ctx.layout, runner)
            for diff_id in ls.list():
                if diff_id not in layers_used:
                    ls.remove(diff_id)
            ls.cleanup_tmp()


def other_platform(rec: ImageRecord, platform: str) -> str | None:
    """The stored image's platform when it is not *platform* (which must parse, as for pull),
    else None: `run --platform P` must not take another platform's image for it."""
    from rootless.image import manifest as mf

    want = mf.parse_platform(platform).normalized()
    have = mf.Platform(rec.os, rec.arch).normalized()
    if (have.os, have.architecture) == (want.os, want.architecture):
        return None
    return f"{have.os}/{have.architecture}"


def rmi(ctx: Context, names: list[str], *, force: bool, all_: bool) -> tuple[list[tuple[bool, str]], int]:
    """Remove images: what was done, in order, as (is an error, line) — "Untagged: NAME", "Deleted: ID"
    or an error message — and the exit status (Podman's: 1 not known, 2 in use)."""
    store = _store(ctx)
    status = 0
    report: list[tuple[bool, str]] = []
    with store.locked():
        if all_:
            targets = [(r.id, r) for r in store.list()]
        else:
            targets = []
            for n in names:
                try:
                    targets.append((n, find(ctx, n, store)))
                except NotFoundError as e:
                    if force:
                        continue
                    report.append((True, e.message))
                    status = EXIT_IMAGE_UNKNOWN
        removed = False
        from storage import rootfs

        users: dict[str, int] = {}
        for meta in rootfs.in_use(ctx).values():
            users[str(meta.get("image", ""))] = users.get(str(meta.get("image", "")), 0) + 1
        for text, rec in targets:
            rec = store.get(rec.id) or rec
            by_id = all_ or bool(_HEXPREFIX.match(text)) and not any(
                n.split("/")[-1].split(":")[0] == text for n in rec.names)
            if not by_id and len(rec.names) > 1:
                # one of several names: only the name goes, so containers using the image do
                # not stand in the way (Podman untags too)
                name = _matching_name(ctx, text, rec)
                store.untag(name)
                report.append((False, f"Untagged: {name}"))
                image_event(ctx, "untag", rec.id, name)
                continue
            if users.get(rec.id) and not force:
                report.append((True, f"image {rec.id[:12]} is in use by {users[rec.id]} container(s): "
                               "remove them first, or use --force"))
                status = status or EXIT_IMAGE_IN_USE
                continue
            if by_id and len(rec.names) > 1 and not force:
                report.append((True, f"unable to delete image {rec.id[:12]} by ID with more than one tag "
                               f"({', '.join(rec.names)}): please force removal"))
                status = status or 125
                continue
            store.remove(rec.id)  # first: nothing is reported done before it is
            for n in rec.names:
                report.append((False, f"Untagged: {n}"))
                image_event(ctx, "untag", rec.id, n)
            report.append((False, f"Deleted: {rec.id}"))
            image_event(ctx, "remove", rec.id, rec.names[0] if rec.names else rec.id)
            removed = True
        if removed:
            _gc(ctx, store)
    return report, status


def remove_unused(ctx: Context, name: str) -> None:
    """--rmi: the image goes (the name given, when it has others) unless a container still uses
    it (then it stays, silently)."""
    rmi(ctx, [name], force=False, all_=False)


def _matching_name(ctx: Context, text: str, rec: ImageRecord) -> str:
    ref = parse_reference(text)
    for c in candidates(ref, ctx.config.unqualified_search):
        if c.tagged_name in rec.names:
            return c.tagged_name
    return rec.names[0]


def inspect(ctx: Context, names: list[str]) -> tuple[list[dict[str, Any]], list[str]]:
    store = _store(ctx)
    out, missing = [], []
    for n in names:
        try:
            rec = find(ctx, n, store)
        except NotFoundError as e:
            missing.append(e.message)
            continue
        cfg = _config(ctx, rec)
        from storage.blobs import BlobStore

        try:
            mtype = json.loads(BlobStore(ctx.layout).read_bytes(rec.manifest_digest)).get("mediaType", "")
        except (OSError, ValueError):
            mtype = ""
        c = cfg.get("config") or {}
        out.append({
            "Id": rec.id,
            "Digest": rec.manifest_digest,
            "RepoTags": list(rec.names),
            "RepoDigests": list(rec.digests),
            "Parent": "",
            "Comment": cfg.get("comment", ""),
            "Created": rec.created,
            "Config": {k: c.get(k) for k in ("User", "ExposedPorts", "Env", "Entrypoint", "Cmd", "Volumes",
                                             "WorkingDir", "Labels", "StopSignal") if c.get(k) is not None},
            "Version": cfg.get("docker_version", ""),
            "Author": cfg.get("author", ""),
            "Architecture": cfg.get("architecture", rec.arch),
            "Os": cfg.get("os", rec.os),
            **({"Variant": cfg["variant"]} if cfg.get("variant") else {}),
            "Size": rec.size,
            "VirtualSize": rec.size,
            "Labels": c.get("Labels"),
            "RootFS": {"Type": "layers", "Layers": list((cfg.get("rootfs") or {}).get("diff_ids", []))},
            "History": cfg.get("history", []),
            "NamesHistory": list(rec.names),
            "ManifestType": mtype,
            "User": c.get("User", ""),
        })
    return out, missing


def prune(ctx: Context, *, all_: bool) -> list[str]:
    store = _store(ctx)
    removed = []
    with store.locked():
        for rec in store.list():
            if all_ or not rec.names:
                store.remove(rec.id)
                removed.append(rec.id)
        _gc(ctx, store)
    return removed


def login(ctx: Context, registry: str, username: str, password: str) -> None:
    from rootless.image import credentials
    from rootless.image.registry import RegistryClient

    host = _registry_host(registry)
    with RegistryClient(ctx, host) as client:
        client.login_check(username, password)
    credentials.save(ctx.layout, host, username, password)


def logout(ctx: Context, registry: str | None, *, all_: bool) -> str:
    from rootless.image import credentials

    if all_:
        credentials.remove_all(ctx.layout)
        return "Removed login credentials for all registries"
    assert registry
    host = _registry_host(registry)
    if not credentials.remove(ctx.layout, host):
        raise NotFoundError(f"not logged into {host}", "nothing to do; `rootless login` stores credentials")
    return f"Removed login credentials for {host}"


def get_login(ctx: Context, registry: str) -> str:
    from rootless.image import credentials

    host = _registry_host(registry)
    got = credentials.get(ctx.layout, host)
    if not got:
        raise NotFoundError(f"not logged into {host}", f"rootless login {host}")
    return got[0]


def _registry_host(text: str) -> str:
    host = re.sub(r"^https?://", "", text).split("/", 1)[0]
    if host in ("index.docker.io", "registry-1.docker.io", "registry.hub.docker.com"):
        host = "docker.io"
    if not host or not re.match(r"^[A-Za-z0-9.-]+(:[0-9]+)?$|^\[[0-9a-fA-F:]+\](:[0-9]+)?$", host):
        raise RootlessError(f"invalid registry {text!r}", "give a host name with an optional :port")
    return host


