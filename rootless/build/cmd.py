"""The build, history and commit commands' logic behind rootless.commands (flags → engine calls → output)."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from rootless.errors import RootlessError

if TYPE_CHECKING:
    from rootless.context import Context

_PULL = {"always": "always", "true": "always", "missing": "missing", "false": "missing", "never": "never",
         "newer": "missing", "ifmissing": "missing", "ifnewer": "missing"}


def _pairs(items: Sequence[str], flag: str) -> tuple[str, ...]:
    for item in items:
        if "=" not in item:
            raise RootlessError(f"{flag} {item!r}: expected KEY=VALUE", f"write it as {flag} KEY=VALUE")
    return tuple(items)


def _secrets(items: Sequence[str]) -> dict[str, str]:
    out = {}
    for item in items:
        kv = dict(p.partition("=")[::2] for p in item.split(","))
        sid, src = kv.get("id"), kv.get("src") or kv.get("source")
        if not sid or not src:
            raise RootlessError(f"--secret {item!r}: expected id=ID,src=PATH", "write it as --secret id=ID,src=PATH")
        import os

        if not os.path.isfile(src):
            raise RootlessError(f"--secret {item!r}: {src} is not a file", "name an existing file with src=")
        out[sid] = src
    return out


def build(ctx: Context, *, context: str, tags: Sequence[str], file: str | None, build_arg: Sequence[str],
          target: str | None, no_cache: bool, pull: str, network: str | None, label: Sequence[str],
          annotation: Sequence[str], iidfile: str | None, quiet: bool, layers: bool, squash: bool, fmt: str,
          secret: Sequence[str], ignorefile: str | None, platform: str | None) -> int:
    import os
    import tempfile

    from rootless.build.builder import BuildOptions
    from rootless.build.builder import build as do_build
    from rootless.build.plan import build_args_from

    if pull.lower() not in _PULL:
        raise RootlessError(f"--pull {pull!r}: must be always, missing or never")
    if network not in (None, "slirp4netns", "none", "host", "default") and not (network or "").startswith(
            "slirp4netns:"):
        raise RootlessError(f"--network {network!r}: RUN steps support slirp4netns, none or host")
    text = None
    if file == "-":
        text = sys.stdin.read()
        file = None
    tmpdir = None
    try:
        if context == "-":
            if text is not None:
                raise RootlessError("the context and the Dockerfile cannot both come from stdin",
                                    "give one of them as a path")
            tmpdir = tempfile.mkdtemp(prefix="rootless-context-")
            _unpack_context(ctx, tmpdir)
            context = tmpdir
        elif context.startswith(("http://", "https://", "git@")):
            raise RootlessError(f"the build context {context}: remote contexts are not supported",
                                "clone or download it, then give the directory")
        opts = BuildOptions(
            context=os.path.abspath(context), dockerfile=file, dockerfile_text=text, tags=tuple(tags),
            build_args=build_args_from(build_arg), target=target, no_cache=no_cache or not layers,
            pull=_PULL[pull.lower()], network=None if network == "default" else network,
            labels=_pairs(label, "--label"), annotations=_pairs(annotation, "--annotation"), iidfile=iidfile,
            quiet=quiet, layers=layers, squash=squash, format=fmt, secrets=_secrets(secret), ignorefile=ignorefile,
            platform=platform)
        image_id = do_build(ctx, opts)
    finally:
        if tmpdir is not None:
            import shutil

            shutil.rmtree(tmpdir, ignore_errors=True)
    print(image_id, flush=True)
    return 0


def _unpack_context(ctx: Context, dest: str) -> None:
    """`build -`: the context as a tar (plain or compressed) on stdin, unpacked with the store's
    safe unpacker (no member may land outside ``dest``), as the user: owners are not needed."""
    import os
    import shutil
    import tempfile

    from storage.layers import unpack

    fd, path = tempfile.mkstemp(prefix="rootless-context-", suffix=".tar")
    try:
        with os.fdopen(fd, "wb") as f:
            shutil.copyfileobj(sys.stdin.buffer, f, 1 << 20)
        unpack(path, "", os.path.join(dest, "."))
    finally:
        os.unlink(path)


# --------------------------------------------------------------------------- history

def _ago(created: str) -> str:
    from rootless.image.present import ago

    return ago(created)


def _history_view(ident: str, r: dict[str, Any], *, no_trunc: bool, human: bool) -> dict[str, Any]:
    """What `history --format` templates see: Podman's history reporter fields (recorded with
    Podman 4.3): Created "N minutes ago" (RFC 3339 with -H=false), CreatedAt as Go prints a
    time (whole seconds), CreatedBy cut at 45 characters, Size always for humans."""
    from rootless.units import decimal_size

    by = str(r["created_by"])
    if not no_trunc and len(by) > 45:
        by = by[:42] + "..."
    created = str(r["created"])
    at = "0001-01-01 00:00:00 +0000 UTC"
    whole = created
    try:
        from datetime import UTC, datetime

        d = datetime.fromisoformat(created.replace("Z", "+00:00")[:19] + "+00:00") if created else None
        if d is not None:
            at = d.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S +0000 UTC")
            whole = d.strftime("%Y-%m-%dT%H:%M:%SZ")
    except ValueError:
        pass
    return {"ID": ident if no_trunc or ident == "<missing>" else ident[:12],
            "Created": _ago(created) if human else whole, "CreatedAt": at, "CreatedBy": by,
            "Size": decimal_size(int(r["size"])), "Comment": str(r["comment"]), "Tags": []}


def history(ctx: Context, image: str, *, no_trunc: bool, quiet: bool, human: bool, fmt: str) -> None:
    from rootless.image import present
    from rootless.units import decimal_size
    from storage.blobs import BlobStore

    rec = present.find(ctx, image)
    try:
        cfg = json.loads(BlobStore(ctx.layout).read_bytes(rec.config_digest))
    except (OSError, ValueError) as e:
        raise RootlessError(f"read the config of {image}: {e}", "pull the image again") from None
    hist = list(cfg.get("history") or [])
    sizes = [e.size for e in rec.layers]
    rows: list[dict[str, Any]] = []
    layer = 0
    for entry in hist:
        empty = bool(entry.get("empty_layer"))
        size = 0
        if not empty:
            size = sizes[layer] if layer < len(sizes) else 0
            layer += 1
        rows.append({"created": entry.get("created", ""), "created_by": entry.get("created_by", ""),
                     "size": size, "comment": entry.get("comment", ""), "empty": empty})
    rows.reverse()
    ids = [rec.id if i == 0 else "<missing>" for i in range(len(rows))]
    if quiet:
        for ident in ids:
            print(ident if no_trunc or ident == "<missing>" else ident[:12])
        return
    if fmt == "json":
        out = [{"id": ids[n], "created": r["created"], "createdBy": r["created_by"], "size": r["size"],
                "comment": r["comment"]} for n, r in enumerate(rows)]
        print(json.dumps(out, indent=4))
        return
    if fmt not in ("table", ""):
        from rootless import gotemplate

        views = [_history_view(ids[n], r, no_trunc=no_trunc, human=human) for n, r in enumerate(rows)]
        sys.stdout.write(gotemplate.render("history", fmt, views))
        return
    table: list[tuple[str, ...]] = [("ID", "CREATED", "CREATED BY", "SIZE", "COMMENT")]
    for n, r in enumerate(rows):
        by = str(r["created_by"])
        if not no_trunc and len(by) > 45:
            by = by[:42] + "..."
        ident = ids[n] if no_trunc or ids[n] == "<missing>" else ids[n][:12]
        created = _ago(str(r["created"])) if human else str(r["created"])
        shown = decimal_size(int(r["size"])) if human else str(r["size"])
        table.append((ident, created, by, shown, str(r["comment"])))
    widths = [max(len(row[i]) for row in table) for i in range(5)]
    for row in table:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
