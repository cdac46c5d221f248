"""Volumes as the engine uses them: create on first use, who uses which, removal and prune,
the views `volume ls/inspect` render, export and import.

storage.volumes keeps the records and data; this module knows containers (their Specs name
the volumes they mount), which storage may not. It prints nothing.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from rootless.errors import RootlessError
from storage.volumes import NoSuchVolume, Volume, VolumeInUse, VolumeStore

if TYPE_CHECKING:
    from rootless.context import Context
    from rootless.image.specgen import VolumeRef
    from rootless.lifecycle import Container
    from rootless.spec import Mount, Spec


def store(ctx: Context) -> VolumeStore:
    return VolumeStore(ctx.layout)


def parse_pairs(items: Iterable[str], what: str) -> dict[str, str]:
    """``--label K=V`` / ``--opt K=V`` (also ``--opt o=a=1,b``: the first "=" splits)."""
    out: dict[str, str] = {}
    for item in items:
        k, _, v = item.partition("=")
        if not k:
            raise RootlessError(f"{what} {item!r}: expected KEY=VALUE")
        out[k] = v
    return out


# --------------------------------------------------------------------------- run


def mounts_for_run(ctx: Context, refs: Sequence[VolumeRef], *, copy_up: bool = True
                   ) -> tuple[list[Mount], list[str]]:
    """The Spec mounts of a run's volumes, making those that do not exist yet (named ones on
    first use, a fresh anonymous one per ref without a name); also the names made now, which
    the caller removes if the run fails before it is recorded."""
    from rootless.spec import COPY_UP_OPTION, Mount

    vs = store(ctx)
    made: list[str] = []
    out: list[Mount] = []
    try:
        for ref in refs:
            vol, new = vs.create(ref.name, anonymous=ref.name is None, exist_ok=True)
            if new:
                made.append(vol.name)
            opts = tuple(o for o in ref.options if o != "nocopy")
            kind = vol.kind
            if kind == "tmpfs":
                extra = tuple(o for o in vol.options.get("o", "").split(",") if o)
                out.append(Mount(ref.destination, "tmpfs", vol.options.get("device") or "tmpfs",
                                 ("rw", "nosuid", "nodev", *extra, *opts)))
            elif kind == "bind":
                extra = tuple(o for o in vol.options.get("o", "").split(",") if o and o not in ("bind", "rbind"))
                out.append(Mount(ref.destination, "bind", vol.options["device"], ("rbind", *extra, *opts)))
            else:
                copy = copy_up and "nocopy" not in ref.options and vs.needs_copy_up(vol.name)
                out.append(Mount(ref.destination, "bind", vs.data(vol.name),
                                 ("rbind", *opts, *((COPY_UP_OPTION,) if copy else ()))))
    except BaseException:
        discard(ctx, made)
        raise
    return out, made


def discard(ctx: Context, names: Iterable[str]) -> None:
    """Remove volumes made for a run that did not happen, or anonymous ones at its end."""
    from rootless.runtime.lazyns import LazyStoreNamespace

    vs = store(ctx)
    with LazyStoreNamespace(ctx) as runner:
        for n in names:
            try:
                vs.remove(runner, n)
            except NoSuchVolume:
                pass


def names_in(ctx: Context, spec: Spec) -> list[str]:
    """The volumes a container's Spec mounts (by their data directory in the store)."""
    root = str(ctx.layout.volumes) + "/"
    out = []
    for m in spec.mounts:
        if m.source.startswith(root):
            name = m.source[len(root):].split("/", 1)[0]
            if name not in out:
                out.append(name)
    return out


def anonymous_in(ctx: Context, spec: Spec) -> list[str]:
    vs = store(ctx)
    out = []
    for n in names_in(ctx, spec):
        try:
            if vs.get(n).anonymous:
                out.append(n)
        except RootlessError:
            continue
    return out


def users(ctx: Context) -> dict[str, list[Container]]:
    """volume name → the containers whose Spec mounts it (any state)."""
    from rootless import lifecycle

    out: dict[str, list[Container]] = {}
    for c in lifecycle.all_containers(ctx):
        for n in names_in(ctx, c.config.spec):
            out.setdefault(n, []).append(c)
    return out


# --------------------------------------------------------------------------- commands


def create(ctx: Context, name: str | None, *, driver: str = "local", opts: Iterable[str] = (),
           labels: Iterable[str] = ()) -> Volume:
    vol, _ = store(ctx).create(name, driver=driver, options=parse_pairs(opts, "--opt"),
                               labels=parse_pairs(labels, "--label"))
    return vol


def inspect(ctx: Context, vol: Volume, mount_count: int = 0) -> dict[str, Any]:
    """A volume as `podman volume inspect` shows it."""
    vs = store(ctx)
    return {
        "Name": vol.name, "Driver": vol.driver, "Mountpoint": vs.data(vol.name),
        "CreatedAt": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(vol.created))
        + time.strftime("%z", time.localtime(vol.created)),
        "Labels": dict(vol.labels), "Scope": "local", "Options": dict(vol.options),
        "MountCount": mount_count, "NeedsCopyUp": vol.kind == "data" and vs.needs_copy_up(vol.name),
        "NeedsChown": False, "Anonymous": vol.anonymous,
    }


def _filters(filters: Iterable[str]) -> list[tuple[str, str]]:
    out = []
    for f in filters:
        k, sep, v = f.partition("=")
        if not sep or k not in ("name", "label", "dangling", "driver"):
            raise RootlessError(f"invalid volume filter {f!r}",
                                "supported: name=NAME, label=KEY[=VALUE], dangling=true|false, driver=local")
        if k == "dangling" and v.lower() not in ("true", "false", "1", "0"):
            raise RootlessError(f"invalid volume filter {f!r}: dangling takes true or false")
        out.append((k, v))
    return out


def listing(ctx: Context, filters: Iterable[str] = ()) -> list[tuple[Volume, int]]:
    """The volumes (with their count of users) that pass every filter; filters on one key
    match if any of them does (Podman's rule)."""
    import re

    want = _filters(filters)
    used = users(ctx)
    out = []
    for vol in store(ctx).list():
        by_key: dict[str, bool] = {}
        for k, v in want:
            if k == "name":
                ok = re.search(v, vol.name) is not None if v else True
            elif k == "label":
                lk, eq, lv = v.partition("=")
                ok = lk in vol.labels and (not eq or vol.labels[lk] == lv)
            elif k == "driver":
                ok = vol.driver == v
            else:
                ok = (vol.name not in used) == (v.lower() in ("true", "1"))
            by_key[k] = by_key.get(k, False) or ok
        if all(by_key.values()):
            out.append((vol, len(used.get(vol.name, ()))))
    return out


def find(ctx: Context, name: str) -> Volume:
    return store(ctx).get(name)


def remove(ctx: Context, name: str, force: bool) -> None:
    """`volume rm`: refused while a container uses it; with -f, its stopped users go first."""
    from rootless import lifecycle
    from rootless.runtime.lazyns import LazyStoreNamespace

    vs = store(ctx)
    vs.get(name)
    users_ = users(ctx).get(name, [])
    if users_:
        running = [c for c in users_ if c.state.running]
        names = ", ".join(c.config.name for c in users_)
        if not force:
            raise VolumeInUse(f"volume {name} is being used by the following container(s): {names}",
                              "remove those containers first, or use `rootless volume rm -f` when they are stopped")
        if running:
            raise VolumeInUse(f"volume {name} is being used by running container(s): "
                              + ", ".join(c.config.name for c in running), "stop them first")
        for c in users_:
            lifecycle.remove(ctx, c.id, force=False)
    with LazyStoreNamespace(ctx) as runner:
        vs.remove(runner, name)


def prune(ctx: Context, filters: Iterable[str] = ()) -> list[str]:
    """Remove every volume no container uses; their names."""
    dangling = [v.name for v, n in listing(ctx, filters) if n == 0]
    out = []
    from rootless.runtime.lazyns import LazyStoreNamespace

    vs = store(ctx)
    with LazyStoreNamespace(ctx) as runner:
        used = users(ctx)
        for n in dangling:
            if n in used:
                continue
            try:
                vs.remove(runner, n)
                out.append(n)
            except NoSuchVolume:
                continue
    return out


def export(ctx: Context, name: str, out: str | None) -> None:
    """The volume's data as a tar into *out*, or to stdout when None."""
    import shutil
    import sys

    from rootless.runtime.lazyns import LazyStoreNamespace

    vs = store(ctx)
    vol = vs.get(name)
    if vol.kind != "data":
        raise RootlessError(f"volume {name} is a {vol.kind} mount, it keeps no data to export")
    target = out
    if out is None:
        if sys.stdout.isatty():
            raise RootlessError("refusing to write a tar archive to a terminal", "use -o FILE or redirect stdout")
        ctx.layout.tmp.mkdir(parents=True, exist_ok=True, mode=0o700)
        target = str(ctx.layout.tmp / f"volume-export-{os.urandom(6).hex()}.tar")
    assert target is not None
    target = os.path.abspath(target)
    try:
        with LazyStoreNamespace(ctx) as runner:
            runner.call("storage.volumes:export_tree", data=vs.data(name), out=target)
        if out is None:
            with open(target, "rb") as f:
                sys.stdout.flush()
                shutil.copyfileobj(f, sys.stdout.buffer)
                sys.stdout.buffer.flush()
    finally:
        if out is None:
            try:
                os.unlink(target)
            except OSError:
                pass


def import_(ctx: Context, name: str, source: str) -> None:
    """A tar (a file, or "-" for stdin) unpacked into the volume."""
    import shutil
    import sys

    from rootless.runtime.lazyns import LazyStoreNamespace

    vs = store(ctx)
    vol = vs.get(name)
    if vol.kind != "data":
        raise RootlessError(f"volume {name} is a {vol.kind} mount, it keeps no data to import into")
    tmp = None
    path = source
    if source == "-":
        ctx.layout.tmp.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = str(ctx.layout.tmp / f"volume-import-{os.urandom(6).hex()}.tar")
        with open(tmp, "wb") as f:
            shutil.copyfileobj(sys.stdin.buffer, f)
        path = tmp
    elif not os.path.isfile(source):
        raise RootlessError(f"import volume {name}: {source}: no such file")
    try:
        with LazyStoreNamespace(ctx) as runner:
            runner.call("storage.volumes:import_tree", data=vs.data(name), archive=os.path.abspath(path),
                        staging=os.path.join(vs.path(name), f"import-{os.urandom(4).hex()}"))
    finally:
        if tmp is not None:
            os.unlink(tmp)
