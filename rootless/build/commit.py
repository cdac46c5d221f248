"""`rootless commit`: a container's changes become a new image, with the build's layer code.

The container's upper directory (overlay drivers) is copied into a new layer as it is, or,
with vfs, what differs from its image by metadata; the layer is sealed and stored as a
build step's is, and the image's config gets the ``--change`` instructions and a history
entry for the container's command.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from rootless.errors import RootlessError

if TYPE_CHECKING:
    from rootless.context import Context

_CHANGES = ("CMD", "ENTRYPOINT", "ENV", "EXPOSE", "LABEL", "ONBUILD", "STOPSIGNAL", "USER", "VOLUME", "WORKDIR")


def commit(ctx: Context, container: str, image: str | None, *, changes: Sequence[str], message: str,
           author: str, fmt: str, quiet: bool, pause: bool = False) -> str:
    """Commit the container; with ``pause`` a running one is frozen for the copy (the cgroup v2
    freezer, as `rootless pause`) and thawed after, or, where there is no freezer, committed
    running with one warning."""
    from rootless import lifecycle

    if not pause:
        return _commit(ctx, container, image, changes=changes, message=message, author=author, fmt=fmt)
    cid = lifecycle.resolve(ctx, container)
    c = lifecycle.load(ctx, cid)
    frozen = False
    if c.state.running and c.state.status != "paused":
        try:
            lifecycle.pause(ctx, cid, True)
            frozen = True
        except RootlessError as e:
            ctx.log.warn(f"--pause: {e.message}: committing the container while it runs")
    try:
        return _commit(ctx, cid, image, changes=changes, message=message, author=author, fmt=fmt)
    finally:
        if frozen:
            lifecycle.pause(ctx, cid, False)


def _commit(ctx: Context, container: str, image: str | None, *, changes: Sequence[str], message: str,
            author: str, fmt: str) -> str:
    from rootless import lifecycle
    from rootless.build.builder import Builder, BuildOptions, State, now_rfc3339, record_image, tag_name
    from rootless.build.dockerfile import Dockerfile, parse
    from rootless.runtime.run import LazyStoreNamespace
    from storage.blobs import BlobStore
    from storage.images import ImageStore
    from storage.layers import LayerStore
    from storage.locks import FileLock

    if fmt not in ("oci", "docker"):
        raise RootlessError(f"--format {fmt}: must be oci or docker")
    instructions = []
    for text in changes:
        parsed = parse(f"{text}\n", "--change").instructions
        if len(parsed) != 1 or parsed[0].cmd not in _CHANGES:
            raise RootlessError(f"--change {text!r}: not an instruction commit can apply",
                                f"use one of {', '.join(_CHANGES)}")
        instructions.append(parsed[0])
    cid = lifecycle.resolve(ctx, container)
    c = lifecycle.load(ctx, cid)
    spec = c.config.spec
    rec = ImageStore(ctx.layout).get(c.config.image_id)
    cfg = json.loads(BlobStore(ctx.layout).read_bytes(rec.config_digest))
    names = (tag_name(image),) if image else ()
    gc_lock = FileLock(ctx.layout.locks / "gc.lock", shared=True)
    gc_lock.acquire()
    try:
        with LazyStoreNamespace(ctx) as runner:
            store = LayerStore(ctx.layout, runner)
            lowers = [str(ctx.layout.layer(d) / "diff") for d in reversed(rec.diff_ids)]
            with store.new_entry() as tmp:
                if spec.rootfs.upper:
                    runner.call("rootless.build.layerfs:copy_upper", src=spec.rootfs.upper, dest=str(tmp / "diff"))
                else:
                    (tmp / "diff").mkdir(mode=0o755)
                    runner.call("rootless.build.layerfs:vfs_diff", rootfs=spec.rootfs.target, lowers=lowers,
                                dest=str(tmp / "diff"), move=False)
                sealed = runner.call("rootless.build.layerfs:seal", path=str(tmp / "diff"))
                import time

                store.register(tmp, sealed["diff_id"], {
                    "diff_id": sealed["diff_id"], "blob": None, "media_type": "application/vnd.oci.image.layer.v1.tar",
                    "origin": "commit", "created": time.time(), "size": sealed["size"],
                    "whiteout_format": sealed["whiteout_format"]})
            b = Builder.__new__(Builder)
            b.ctx, b.runner, b.cache, b.out = ctx, runner, False, sys.stderr
            b.opts = BuildOptions(context="/", quiet=True, no_cache=True)
            b.df = Dockerfile(path="--change", instructions=())
            b.used_args = set()
            state = State(list(rec.diff_ids), cfg, "", rec.names[0] if rec.names else rec.id)
            for ins in instructions:
                if ins.cmd == "WORKDIR":
                    state.c["WorkingDir"] = b.expand(state, ins, ins.args)
                else:
                    b.step(state, ins)
            now = now_rfc3339()
            history = [h for h in cfg.get("history", []) if isinstance(h, dict)]
            state.config["history"] = [*history, {"created": now, "created_by": " ".join(spec.process.args),
                                        **({"comment": message} if message else {}),
                                        **({"author": author} if author else {})}]
            state.config["created"] = now
            if author:
                state.config["author"] = author
            state.layers.append(sealed["diff_id"])
            image_id = record_image(ctx, runner, state.config, state.layers, names, docker=fmt == "docker")
    finally:
        gc_lock.release()
    return image_id
