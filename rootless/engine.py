"""The container engine as a library: the one place where a container gets made.

The CLI (rootless.commands), the Dockerfile builder and the REST API call these functions alike.
They take typed options and return typed results; they print nothing and never exit the process
(errors are RootlessError, rendered once by the front end).

`run` is DESIGN.md's chain, top to bottom:

    reference → image record (store, else pull) → container layer (storage.rootfs)
              → Spec (specgen) → record (lifecycle) → process (runtime) → exit status

Containers that exist are named by a reference (a name, an ID or a unique ID prefix) and handled
through rootless.lifecycle (records, monitor, signals, logs) and rootless.runtime; images through
rootless.image.present and storage. Front ends import this module, not those.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from rootless.errors import NotFoundError, RootlessError
from rootless.record import dataclass

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

    from rootless.context import Context
    from rootless.image.specgen import RunOptions
    from rootless.lifecycle import Container, LogLine
    from rootless.spec import IdMap, PortMapping, RootfsPlan, Spec
    from storage.images import ImageRecord

PULL_POLICIES = ("missing", "always", "never")


@dataclass(frozen=True)
class Created:
    """A container made by ``create``: its ID and spec; ``recorded`` when ps/logs/exec see it."""

    id: str
    spec: Spec
    recorded: bool
    volumes: bool = False  # it mounts volumes (anonymous ones go with it under --rm)


class Runtime:
    """What the engine needs the kernel's namespaces for, in one seam: the container layer, the
    process in the foreground, and the monitor. The engine's unit tests give it a fake; callers
    pass nothing and get this one."""

    def store_maps(self) -> tuple[tuple[IdMap, ...], tuple[IdMap, ...]]:
        """The store's uid and gid maps (the user's own ID, then the subordinate ranges)."""
        from rootless.runtime import idmap
        from rootless.spec import IdMap

        maps = idmap.current_store_maps()
        return (tuple(IdMap(m.container_id, m.host_id, m.size) for m in maps.uid_map),
                tuple(IdMap(m.container_id, m.host_id, m.size) for m in maps.gid_map))

    def prepare(self, ctx: Context, image: ImageRecord, cid: str, driver: str | None, durable: bool) -> RootfsPlan:
        """The container layer over the image's layers (storage.rootfs)."""
        from rootless.runtime.run import LazyStoreNamespace, mount_probe
        from storage import rootfs

        with LazyStoreNamespace(ctx) as runner:
            return rootfs.prepare(ctx, runner, image, cid, driver, mount_probe=mount_probe, durable=durable)

    def discard(self, ctx: Context, cid: str) -> None:
        """The container layer goes."""
        from rootless.runtime.lazyns import LazyStoreNamespace
        from storage import rootfs

        with LazyStoreNamespace(ctx) as runner:
            rootfs.remove(ctx, runner, cid)

    def run(self, ctx: Context, spec: Spec, recorded: bool) -> int:
        """The container's process with our standard streams, to its exit status."""
        if spec.shared:
            from rootless import lifecycle

            spec = lifecycle.joined(ctx, spec)
        if recorded:
            from rootless import lifecycle

            return lifecycle.run_foreground(ctx, spec)
        from rootless.runtime.run import run as run_process

        # a foreground `run --rm` without a record: Podman's events all the same (remove: `run`'s end)
        unrecorded_event(ctx, spec, "create")
        unrecorded_event(ctx, spec, "start")
        unrecorded_event(ctx, spec, "attach")
        code = 125
        try:
            code = run_process(ctx, spec)
            return code
        finally:
            unrecorded_event(ctx, spec, "died", exit_code=code)

    def start(self, ctx: Context, cid: str, stdin: int | None = None, terminal: int | None = None,
              winsize: bytes | None = None) -> int:
        """The recorded container under a new monitor; its PID (0: it was running). ``stdin``:
        what a container made with -i reads (`start -a`), else /dev/null; ``terminal``, a
        stream socket the monitor relays a -t container's terminal over, sized ``winsize``."""
        from rootless import lifecycle

        return lifecycle.start(ctx, cid, stdin=stdin, terminal=terminal, winsize=winsize)


RUNTIME = Runtime()


def _removed_event(ctx: Context, cid: str) -> None:
    """The remove event of a foreground `run --rm` container (its record and labels still there)."""
    from rootless import lifecycle

    try:
        lifecycle.event(ctx, lifecycle.load(ctx, cid).config, "remove")
    except RootlessError:
        pass


def unrecorded_event(ctx: Context, spec: Spec, status: str, exit_code: int | None = None) -> None:
    """An event of a container that has no record (a foreground `run --rm`), as Podman logs one
    for every container: its name and image from the Spec (rootless.events, not the heavier lifecycle)."""
    from rootless import events

    image = dict(spec.annotations).get("io.rootless.image", "")
    events.emit(ctx, "container", status, id_=spec.id, name=spec.name, image=image, exit_code=exit_code)


def resolve_image(ctx: Context, ref: str, *, pull: str = "missing", platform: str | None = None) -> ImageRecord:
    """The image ``ref`` names: from the store, pulled when it is not there (``pull``: missing,
    always or never). Only "not found" leads to a pull: any other store error is raised."""
    from rootless.image import present

    if pull not in PULL_POLICIES:
        raise RootlessError(f"--pull {pull!r}: must be missing, always or never")
    if pull != "always":
        try:
            found = present.find(ctx, ref)
        except NotFoundError:
            if pull == "never":
                raise
        else:
            # --platform P: never another platform's stored image; P's is pulled (an invalid P
            # fails here as it does for pull)
            other = present.other_platform(found, platform) if platform else None
            if other is None:
                return found
            if pull == "never":
                raise RootlessError(f"image {ref} is stored for {other}, not {platform}",
                                    hint=f"pull it with `rootless pull --platform {platform}`, or leave out "
                                         "--pull never")
    from rootless.image.pull import pull as do_pull

    return do_pull(ctx, ref, platform=platform)


def _user_networks(ctx: Context, opts: RunOptions, start_soon: bool) -> RunOptions:
    """``opts`` with its user networks resolved (mode "bridge" and their records), or as they were
    for a network mode; with ``start_soon`` the user-network daemon starts now, while the rest of
    `run` proceeds (rootless.runtime.usernet)."""
    from rootless.image.specgen import NETWORK_MODES, OTHER_MODES

    nets = opts.networks
    if nets and (len(nets) > 1 or opts.network_alias or opts.ip
                 or nets[0].partition(":")[0] not in NETWORK_MODES + OTHER_MODES):
        from rootless import networks
        from rootless.record import replace

        mode, attached = networks.for_run(ctx, nets, opts.network_alias, opts.ip)
        if start_soon:
            networks.prestart(ctx, attached)
        return replace(opts, network=mode, user_networks=attached,
                       host_loopback=ctx.config.network_host_loopback, outbound=ctx.config.network_outbound)
    if opts.network_alias or opts.ip:
        raise RootlessError("--network-alias and --ip need a user network", "add --network NAME")
    return opts


def create(ctx: Context, opts: RunOptions, *, pull: str = "missing", platform: str | None = None,
           storage_driver: str | None = None, record: bool | None = True, runtime: Runtime = RUNTIME,
           detach: bool = False, start_soon: bool = False) -> Created:
    """Make a container from ``opts``: the image, its layer, its volumes, its spec and (with ``record``)
    the record that ps, logs, exec and start read. ``record=None``: recorded unless it is an anonymous
    ``--rm`` container without volumes (a volume's users must be known to `volume rm`), which spares
    a foreground `run --rm` the record. Nothing is left behind on failure. ``start_soon``: it is about
    to start, so a user-network daemon it needs starts now."""
    from rootless.record import replace

    if not opts.network:
        opts = replace(opts, network=ctx.config.network)
    if not opts.cgroup_manager and ctx.config.cgroup_manager:
        opts = replace(opts, cgroup_manager=ctx.config.cgroup_manager)
    if opts.rmi and not opts.rm:
        opts = replace(opts, rm=True)  # --rmi implies --rm, as in Podman
    if opts.attach:
        _check_attach(opts.attach, detach)
    if opts.cidfile and os.path.exists(opts.cidfile):
        raise RootlessError(f"container ID file {opts.cidfile} exists",
                            hint="another container may be using it: remove the file first")
    opts = _user_networks(ctx, opts, start_soon)
    try:
        return _create(ctx, opts, pull=pull, platform=platform, storage_driver=storage_driver, record=record,
                       runtime=runtime, detach=detach)
    except BaseException:
        if opts.user_networks:
            from rootless import networks

            networks.abandon()  # a daemon started for this run and never used
        raise


def _create(ctx: Context, opts: RunOptions, *, pull: str, platform: str | None, storage_driver: str | None,
            record: bool | None, runtime: Runtime, detach: bool) -> Created:
    from rootless.image import specgen
    from rootless.record import replace

    if ctx.config.default_ulimits and not opts.default_ulimits:
        opts = replace(opts, default_ulimits=ctx.config.default_ulimits)
    shared = _shared(ctx, opts)
    host = specgen.HostInfo.read(opts.network)

    # 1. the image: from the store, else pulled
    image = resolve_image(ctx, opts.image, pull=pull, platform=platform)
    config = specgen.container_config(ctx.layout, image.config_digest)
    image_name = image.names[0] if image.names else image.id
    from rootless.runflags import record_options

    extra = record_options(opts, config, detach)
    if opts.replace and opts.name is not None:
        from rootless import lifecycle
        from rootless.runtime.state import NoSuchContainer

        try:
            lifecycle.remove(ctx, lifecycle.resolve(ctx, opts.name), force=True)
        except NoSuchContainer:
            pass

    # 2. the container layer and volumes, 3. the spec, 4. the record
    vol_refs = specgen.volume_refs(opts, config, host.cwd) if (opts.volumes or opts.mounts or
                                                                config.get("Volumes")) else []
    if record is None:
        record = not opts.rm or opts.name is not None or bool(vol_refs) or bool(extra["health"])
    cid = os.urandom(32).hex()
    uid_map, gid_map = runtime.store_maps()
    from contextlib import AbstractContextManager, nullcontext

    if record:
        claim: AbstractContextManager[str | None] = nullcontext(opts.name)
    else:  # a name for /etc/hosts and .containerenv as Podman gives every container; no record to hold it
        from rootless.names import random_name

        claim = nullcontext(random_name())
    if record:
        from rootless import lifecycle

        claim = lifecycle.claim(ctx, opts.name)
    with claim as name:
        if name != opts.name:
            opts = replace(opts, name=name)
        plan = runtime.prepare(ctx, image, cid, storage_driver, record)
        made_volumes: list[str] = []
        try:
            vol_mounts: list[Any] = []
            if vol_refs:
                from rootless import volumes

                vol_mounts, made_volumes = volumes.mounts_for_run(ctx, vol_refs, copy_up=opts.userns != "keep-id")
            ctx.layout.ensure_runroot()
            spec = specgen.build(config, opts, plan, container_id=cid, rundir=str(ctx.layout.state / cid),
                                 uid_map=uid_map, gid_map=gid_map, image_name=image_name, image_id=image.id,
                                 host=host, volume_mounts=vol_mounts, seccomp_cache=str(ctx.layout.seccomp),
                                 shared=shared)
            if spec.resources is not None:
                from rootless.runtime.run import check_cgroups

                check_cgroups(spec)
            if spec.seccomp is not None and spec.seccomp.profile is not None:
                # a profile of the user's own is checked (and compiled) before anything is recorded
                from rootless.runtime.process import seccomp_filter

                seccomp_filter(spec, ctx.log)
            if record:
                lifecycle.save(ctx, spec, image_name, image.id, extra.pop("stop_signal"), opts.rm, **extra)
        except BaseException:
            _discard(ctx, cid, record, runtime)
            if made_volumes:
                volumes.discard(ctx, made_volumes)
            raise
    if opts.cidfile:
        _write_cidfile(opts.cidfile, cid)
    return Created(id=cid, spec=spec, recorded=record, volumes=bool(vol_refs))


def _shared(ctx: Context, opts: RunOptions) -> dict[str, Spec]:
    """The Spec of each container whose namespace ``--network/--pid/--ipc/--uts container:NAME``
    shares (it must exist now, and run when this one starts), by namespace."""
    from rootless.image.specgen import shared_refs

    refs = shared_refs(opts)
    if not refs:
        return {}
    from rootless import lifecycle
    from rootless.runtime.state import NoSuchContainer

    out = {}
    for ns, ref in refs.items():
        try:
            out[ns] = lifecycle.load(ctx, lifecycle.resolve(ctx, ref)).config.spec
        except NoSuchContainer as e:  # Podman's wording
            raise NoSuchContainer(f"looking up container to share {'net' if ns == 'network' else ns} namespace "
                                  f"with: {e.message}", e.hint) from None
    return out


def _check_attach(streams: Sequence[str], detach: bool) -> None:
    if detach:
        raise RootlessError("conflicting options: --attach and --detach", hint="drop one of them")
    for s in streams:
        if s.lower() not in ("stdin", "stdout", "stderr"):
            raise RootlessError(f"-a {s!r}: not a stream", hint="STDIN, STDOUT or STDERR")


def _attach_streams(streams: Sequence[str]) -> None:
    """-a: the container gets /dev/null for the streams not attached (it inherits ours); our
    own messages keep a copy of standard error."""
    import sys

    want = {s.lower() for s in streams}
    null = os.open(os.devnull, os.O_RDWR)
    for fd, name in ((0, "stdin"), (1, "stdout"), (2, "stderr")):
        if name not in want:
            if fd == 2:
                sys.stderr = os.fdopen(os.dup(2), "w")
            os.dup2(null, fd)
    os.close(null)


def _write_cidfile(path: str, cid: str) -> None:
    """--cidfile: created exclusively (two containers never share one), written whole."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
    except FileExistsError:
        raise RootlessError(f"container ID file {path} exists",
                            hint="another container may be using it: remove the file first") from None
    with os.fdopen(fd, "w") as f:
        f.write(cid)


def _discard(ctx: Context, cid: str, recorded: bool, runtime: Runtime) -> None:
    runtime.discard(ctx, cid)
    if recorded:
        from rootless import lifecycle

        lifecycle.forget(ctx, cid)


def _discard_anonymous_volumes(ctx: Context, made: Created) -> None:
    """Podman's --rm: the container's anonymous volumes go with it (named ones stay)."""
    if made.volumes:
        from rootless import volumes

        volumes.discard(ctx, volumes.anonymous_in(ctx, made.spec))


def start(ctx: Context, ref: str, *, stdin: int | None = None, terminal: int | None = None,
          winsize: bytes | None = None, runtime: Runtime = RUNTIME) -> int:
    """Start a created or exited container under its monitor; the container's PID (0: already running).
    ``stdin``: a descriptor a container made with -i reads (`start -a`), as under Podman.
    ``terminal``: for a container made with -t, a connected stream socket over which its monitor
    relays the terminal (its output; the keys sent, with -i), the pty sized ``winsize`` first."""
    from rootless import lifecycle

    cid = lifecycle.resolve(ctx, ref)
    return runtime.start(ctx, cid, stdin, terminal, winsize)


def run_detached(ctx: Context, opts: RunOptions, *, pull: str = "missing", platform: str | None = None,
                 storage_driver: str | None = None, runtime: Runtime = RUNTIME, stdin: int | None = None) -> str:
    """`run -d`: create, then start under a monitor; the container's ID. ``stdin``: what a container
    made with -i reads (`run --sig-proxy=false -i`), else /dev/null."""
    made = create(ctx, opts, pull=pull, platform=platform, storage_driver=storage_driver, runtime=runtime,
                  detach=True, start_soon=True)
    try:
        runtime.start(ctx, made.id, stdin)
        if made.spec.network.mode == "bridge":
            from rootless import networks

            networks.release()  # the monitor took the daemon started for it over
    except RootlessError:
        if opts.rm:
            from rootless import lifecycle

            lifecycle.remove(ctx, made.id, force=True)
            _discard_anonymous_volumes(ctx, made)
        raise
    return made.id


def run(ctx: Context, opts: RunOptions, *, pull: str = "missing", platform: str | None = None,
        storage_driver: str | None = None, runtime: Runtime = RUNTIME) -> int:
    """`run` in the foreground, with the caller's standard streams: the container's exit status.
    An anonymous ``--rm`` container without volumes is not recorded (ps never sees it), which keeps
    the start-up budget; any other is, with a name held unique."""
    made = create(ctx, opts, pull=pull, platform=platform, storage_driver=storage_driver, record=None,
                  runtime=runtime, start_soon=True)
    if opts.attach:
        _attach_streams(opts.attach)
    try:
        return runtime.run(ctx, made.spec, made.recorded)
    finally:
        # 5. --rm: nothing of the container stays in the store, nor its anonymous volumes
        if opts.rm or opts.rmi:
            if made.recorded:
                _removed_event(ctx, made.id)
            _discard(ctx, made.id, made.recorded, runtime)
            if not made.recorded:
                unrecorded_event(ctx, made.spec, "remove")
            _discard_anonymous_volumes(ctx, made)
            if opts.rmi:
                from rootless.image import present

                present.remove_unused(ctx, opts.image)


# --------------------------------------------------------------------------- containers that exist

def resolve(ctx: Context, ref: str) -> str:
    """The ID of the container ``ref`` names; NoSuchContainer (a NotFoundError) when none does."""
    from rootless import lifecycle

    return lifecycle.resolve(ctx, ref)


def container(ctx: Context, ref: str) -> Container:
    """A container's record and state."""
    from rootless import lifecycle

    return lifecycle.load(ctx, lifecycle.resolve(ctx, ref))


FILTERS = ("status", "name", "id", "label", "ancestor", "exited")


def containers(ctx: Context, *, all_: bool = True, filters: Sequence[str] = ()) -> list[Container]:
    """Containers, newest first: running ones only unless ``all_`` or a status filter; ``filters``
    are Podman's KEY=VALUE (status=STATUS, name=REGEX, id=PREFIX; a key given twice matches either)."""
    import re

    from rootless import lifecycle

    want: dict[str, list[str]] = {}
    for f in filters:
        k, eq, v = f.partition("=")
        if not eq or k not in FILTERS:
            raise RootlessError(f"invalid filter {f!r}", hint="filters: status=STATUS, name=REGEX, id=PREFIX, "
                                "label=KEY[=VALUE], ancestor=IMAGE, exited=CODE")
        if k == "status" and v not in lifecycle.STATES:
            raise RootlessError(f"invalid filter {f!r}: {v!r} is not a container state",
                                hint=f"states: {', '.join(lifecycle.STATES)}")
        want.setdefault(k, []).append(v)
    rows = lifecycle.all_containers(ctx)
    if not all_ and "status" not in want and "exited" not in want:
        rows = [c for c in rows if c.state.running]
    if "status" in want:
        rows = [c for c in rows if lifecycle.status_name(c.state) in want["status"]]
    if "name" in want:
        rows = [c for c in rows if any(re.search(v, c.config.name) for v in want["name"])]
    if "id" in want:
        rows = [c for c in rows if any(c.id.startswith(v) for v in want["id"])]
    if "label" in want:
        rows = [c for c in rows if all(lifecycle.label_matches(c.config.labels, v) for v in want["label"])]
    if "ancestor" in want:
        rows = [c for c in rows if any(v in (c.config.image, c.config.image_id) or c.config.image_id.startswith(v)
                                       or c.config.image.split(":")[0].endswith(v) for v in want["ancestor"])]
    if "exited" in want:
        rows = [c for c in rows if c.state.status == "exited" and str(c.state.exit_code) in want["exited"]]
    return rows


def inspect(ctx: Context, ref: str) -> dict[str, Any]:
    """Podman's `inspect` fields of a container, its network addresses included
    (rootless.networks.settings)."""
    from rootless import lifecycle, networks

    c = container(ctx, ref)
    data = lifecycle.inspect(ctx, c)
    ns = networks.settings(ctx, c)
    nets = ns.pop("Networks", None)
    data["NetworkSettings"] = {**ns, "Ports": data["NetworkSettings"]["Ports"], **({"Networks": nets} if nets else {})}
    return data


def ports(ctx: Context, ref: str) -> tuple[PortMapping, ...]:
    """The ports a container publishes (as forwarded while it runs, else as asked for)."""
    from rootless import lifecycle

    return lifecycle.published(container(ctx, ref))


def stop(ctx: Context, ref: str, timeout: float | None = None) -> str:
    """The stop signal, then SIGKILL after ``timeout`` seconds (10); the container's ID."""
    from rootless import lifecycle

    cid = lifecycle.resolve(ctx, ref)
    lifecycle.stop(ctx, cid, timeout)
    return cid


def kill(ctx: Context, ref: str, sig: int | str = "KILL") -> str:
    """Send a signal (a number or a name such as TERM or SIGHUP) to a running container's PID 1."""
    from rootless import lifecycle

    n = sig if isinstance(sig, int) else lifecycle.parse_signal(sig)
    cid = lifecycle.resolve(ctx, ref)
    lifecycle.kill(ctx, cid, n)
    return cid


def restart(ctx: Context, ref: str, timeout: float | None = None, *, runtime: Runtime = RUNTIME) -> str:
    cid = stop(ctx, ref, timeout)
    runtime.start(ctx, cid)
    return cid


def remove(ctx: Context, ref: str, *, force: bool = False) -> str:
    """Everything of a container (with ``force``, SIGKILL first if it runs); its ID."""
    from rootless import lifecycle

    cid = lifecycle.resolve(ctx, ref)
    lifecycle.remove(ctx, cid, force)
    return cid


def prune(ctx: Context) -> list[str]:
    """Remove every container that is not running; their IDs."""
    from rootless import lifecycle

    return lifecycle.prune(ctx)


def wait(ctx: Context, ref: str, timeout: float | None = None) -> int | None:
    """Wait until a container is not running; its exit status (None: the timeout passed)."""
    from rootless import lifecycle

    st = lifecycle.wait_stopped(ctx, lifecycle.resolve(ctx, ref), timeout)
    return None if st is None else st.exit_code


def attached(ctx: Context, cid: str) -> None:
    """Log that a client follows the container's streams (`attach`, `start -a`): Podman's attach event."""
    from rootless import lifecycle
    from rootless.runtime.state import NoSuchContainer

    try:
        lifecycle.event(ctx, lifecycle.load(ctx, cid).config, "attach")
    except NoSuchContainer:
        pass  # a --rm container already ended and removed


def exit_code(ctx: Context, cid: str) -> int | None:
    """Wait until the container *cid* has exited; its exit status. A --rm container may be gone by
    then (its monitor removes it): its status is then the one its `died` event recorded."""
    from rootless import events, lifecycle
    from rootless.runtime.state import NoSuchContainer

    try:
        st = lifecycle.wait_stopped(ctx, cid)
        lifecycle.load(ctx, cid)  # still recorded after that read: its exit status stands
        if st is not None:
            return st.exit_code
    except NoSuchContainer:
        pass
    died = [ev for ev in events.read(ctx.layout, since=None, until=None,
                                     keep=events.Filter([f"container={cid}", "event=died"]))]
    return int(died[-1].get("ContainerExitCode", 0)) if died else None


def exec_(ctx: Context, ref: str, argv: Sequence[str], *, interactive: bool = False, tty: bool = False,
          env: Sequence[str] = (), workdir: str | None = None, user: str | None = None) -> int:
    """Run ``argv`` in a running container with the caller's streams; its exit status."""
    from rootless import lifecycle

    return lifecycle.exec_(ctx, lifecycle.resolve(ctx, ref), list(argv), interactive=interactive, tty=tty,
                           env=list(env), workdir=workdir, user=user)


def logs(ctx: Context, ref: str, *, follow: bool = False, tail: int | None = None,
         since: float | None = None) -> Iterator[LogLine]:
    """A container's output lines (``follow``: until it has exited)."""
    from rootless import lifecycle

    return lifecycle.read_logs(ctx, lifecycle.resolve(ctx, ref), follow=follow, tail=tail, since=since)


def copy(ctx: Context, src: str, dest: str) -> None:
    """`cp`: exactly one of ``src`` and ``dest`` is CONTAINER:PATH."""
    from rootless import lifecycle

    lifecycle.copy(ctx, src, dest)


# --------------------------------------------------------------------------- images

def images(ctx: Context) -> list[ImageRecord]:
    """The stored images, newest first."""
    from rootless.image import present

    return present.list_images(ctx)


def image(ctx: Context, ref: str) -> ImageRecord:
    """A stored image by ID, ID prefix, name or short name (NotFoundError: not stored)."""
    from rootless.image import present

    return present.find(ctx, ref)


# --------------------------------------------------------------------------- space


def _du(path: str) -> int:
    """Bytes of the files under ``path`` we may read (the rest, owned by subordinate IDs in
    directories closed to us, is not counted)."""
    total = 0
    for top, _dirs, files in os.walk(path, onerror=lambda e: None):
        for f in files:
            try:
                total += os.lstat(os.path.join(top, f)).st_size
            except OSError:
                pass
    return total


def disk_usage(ctx: Context) -> dict[str, Any]:
    """What `system df` and the API's GET /system/df report: ``images`` and ``containers``
    (records), ``used`` (IDs of the images containers were made from), ``sizes`` (container ID
    → bytes of its own files), ``volumes`` ((volume, users) pairs), ``vsizes`` (volume name →
    bytes)."""
    from rootless import volumes

    ctrs = containers(ctx)
    vols = volumes.listing(ctx)
    return {"images": images(ctx), "containers": ctrs, "used": {c.config.image_id for c in ctrs},
            "sizes": {c.id: _du(str(ctx.layout.containers / c.id)) for c in ctrs}, "volumes": vols,
            "vsizes": {v.name: _du(str(volumes.store(ctx).data(v.name))) for v, _ in vols}}
