"""The container engine as a library: the one place where a container gets made.

The CLI (rootless.commands), the Dockerfile builder and the REST API call these functions alike.
They take typed options and return typed results; they print nothing and never exit the process
(errors are RootlessError, rendered once by the front end).

`run` is DESIGN.md's chain, top to bottom:

    reference → image record (store, else pull) → container layer (storage.rootfs)
              → Spec (specgen) → record (lifecycle) → process (runtime) → exit status
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from rootless.errors import NotFoundError, RootlessError
from rootless.record import dataclass

if TYPE_CHECKING:
    from rootless.context import Context
    from rootless.image.specgen import RunOptions
    from rootless.spec import Spec
    from storage.images import ImageRecord

PULL_POLICIES = ("missing", "always", "never")


@dataclass(frozen=True)
class Created:
    """A container made by ``create``: its ID and spec; ``recorded`` when ps/logs/exec see it."""

    id: str
    spec: Spec
    recorded: bool


def resolve_image(ctx: Context, ref: str, *, pull: str = "missing", platform: str | None = None) -> ImageRecord:
    """The image ``ref`` names: from the store, pulled when it is not there (``pull``: missing,
    always or never). Only "not found" leads to a pull: any other store error is raised."""
    from rootless.image import present

    if pull not in PULL_POLICIES:
        raise RootlessError(f"--pull {pull!r}: must be missing, always or never")
    if pull != "always":
        try:
            return present.find(ctx, ref)
        except NotFoundError:
            if pull == "never":
                raise
    from rootless.image.pull import pull as do_pull

    return do_pull(ctx, ref, platform=platform)


def create(ctx: Context, opts: RunOptions, *, pull: str = "missing", platform: str | None = None,
           storage_driver: str | None = None, record: bool = True) -> Created:
    """Make a container from ``opts``: the image, its layer, its spec and (with ``record``) the
    record that ps, logs, exec and start read. Nothing is left behind on failure."""
    from rootless.image import specgen
    from rootless.runtime import idmap
    from rootless.runtime.run import LazyStoreNamespace, mount_probe
    from rootless.spec import IdMap
    from storage import rootfs

    if not opts.network:
        from rootless.record import replace

        opts = replace(opts, network=ctx.config.network)
    if not opts.cgroup_manager and ctx.config.cgroup_manager:
        from rootless.record import replace

        opts = replace(opts, cgroup_manager=ctx.config.cgroup_manager)
    host = specgen.HostInfo.read(opts.network)

    # 1. the image: from the store, else pulled
    image = resolve_image(ctx, opts.image, pull=pull, platform=platform)
    config = specgen.container_config(ctx.layout, image.config_digest)
    image_name = image.names[0] if image.names else image.id

    # 2. the container layer, 3. the spec, 4. the record
    cid = os.urandom(32).hex()
    maps = idmap.current_store_maps()
    from contextlib import AbstractContextManager, nullcontext

    claim: AbstractContextManager[str | None] = nullcontext(opts.name)
    if record:
        from rootless import lifecycle

        claim = lifecycle.claim(ctx, opts.name)
    with claim as name:
        if name != opts.name:
            from rootless.record import replace

            opts = replace(opts, name=name)
        with LazyStoreNamespace(ctx) as runner:
            plan = rootfs.prepare(ctx, runner, image, cid, storage_driver, mount_probe=mount_probe,
                                  durable=record)
        try:
            ctx.layout.ensure_runroot()
            spec = specgen.build(
                config, opts, plan, container_id=cid, rundir=str(ctx.layout.state / cid),
                uid_map=tuple(IdMap(m.container_id, m.host_id, m.size) for m in maps.uid_map),
                gid_map=tuple(IdMap(m.container_id, m.host_id, m.size) for m in maps.gid_map),
                image_name=image_name, image_id=image.id, host=host)
            if spec.resources is not None:
                from rootless.runtime.run import check_cgroups

                check_cgroups(spec)
            if record:
                lifecycle.save(ctx, spec, image_name, image.id, config.get("StopSignal"), opts.rm)
        except BaseException:
            _discard(ctx, cid, record)
            raise
    return Created(id=cid, spec=spec, recorded=record)


def _discard(ctx: Context, cid: str, recorded: bool) -> None:
    from rootless.runtime.run import LazyStoreNamespace
    from storage import rootfs

    with LazyStoreNamespace(ctx) as runner:
        rootfs.remove(ctx, runner, cid)
    if recorded:
        from rootless import lifecycle

        lifecycle.forget(ctx, cid)


def start(ctx: Context, cid: str) -> int:
    """Start a created or exited container under its monitor; the container's PID (0: already running)."""
    from rootless import lifecycle

    return lifecycle.start(ctx, cid)


def run_detached(ctx: Context, opts: RunOptions, *, pull: str = "missing", platform: str | None = None,
                 storage_driver: str | None = None) -> str:
    """`run -d`: create, then start under a monitor; the container's ID."""
    made = create(ctx, opts, pull=pull, platform=platform, storage_driver=storage_driver)
    try:
        start(ctx, made.id)
    except RootlessError:
        if opts.rm:
            from rootless import lifecycle

            lifecycle.remove(ctx, made.id, force=True)
        raise
    return made.id


def run(ctx: Context, opts: RunOptions, *, pull: str = "missing", platform: str | None = None,
        storage_driver: str | None = None) -> int:
    """`run` in the foreground, with the caller's standard streams: the container's exit status.
    An anonymous ``--rm`` container is not recorded (ps never sees it), which keeps the start-up
    budget; any other is, with a name held unique."""
    from rootless.runtime.run import run as run_process

    recorded = not opts.rm or opts.name is not None
    made = create(ctx, opts, pull=pull, platform=platform, storage_driver=storage_driver, record=recorded)
    try:
        if recorded:
            from rootless import lifecycle

            return lifecycle.run_foreground(ctx, made.spec)
        return run_process(ctx, made.spec)
    finally:
        # 5. --rm: nothing of the container stays in the store
        if opts.rm:
            _discard(ctx, made.id, recorded)
