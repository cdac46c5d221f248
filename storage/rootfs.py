"""An image's stored layers → a container's RootfsPlan, and removing it again.

The container layer lives in the store, at layout.containers/<id>/:

  upper/ work/ merged/   overlay and fuse-overlayfs: the writable layer, overlayfs's work
                         dir, and the mount target the runtime's child mounts the union on
  rootfs/                vfs: the full copy
  rootfs.json            driver, image and layers (what rmi and prune must keep)

Files in it belong to the user's subordinate IDs, so ``remove`` falls back to the store's
user namespace for what the user alone may not delete.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from rootless.context import Context
from rootless.errors import NotFoundError, RootlessError, StorageError, errno_hint
from rootless.spec import RootfsPlan
from storage.atomic import write_atomic
from storage.drivers import DRIVERS, ContainerDirs, LayerDir, StorageDriver, check_container_id, get, remove_entry
from storage.drivers.probe import MountProbe, select
from storage.locks import FileLock

if TYPE_CHECKING:
    from storage.images import ImageRecord
    from storage.nsrunner import NamespaceRunner


def layer_dirs(ctx: Context, image_record: ImageRecord) -> list[LayerDir]:
    """The image's stored layers as LayerStore keeps them (``diff/`` and ``meta.json`` in
    layout.layer(diff_id)), read directly: storage.layers costs ~15 ms to import, which
    a run of a stored image does not otherwise pay."""
    out = []
    for diff_id in image_record.diff_ids:
        d = ctx.layout.layer(diff_id)
        try:
            meta = json.loads((d / "meta.json").read_bytes())
        except FileNotFoundError:
            raise NotFoundError(f"layer {diff_id} of image {image_record.id[:12]} is not in the store",
                                hint="pull the image again") from None
        except (OSError, ValueError) as e:
            raise StorageError(f"read metadata of layer {diff_id}: {e}",
                               hint="remove the images using it and pull them again") from e
        out.append(LayerDir(diff_id=diff_id, path=str(d / "diff"),
                            whiteout_format=str(meta.get("whiteout_format") or "overlay")))
    return out


def _usable(ctx: Context, first: StorageDriver, layers: Sequence[LayerDir], explicit: bool) -> StorageDriver:
    """``first``, unless it cannot assemble these layers: then (when it was not asked for by
    name) the next driver that can, said once."""
    why = first.refuses(layers)
    if why is None:
        return first
    if explicit:
        raise StorageError(f"the {first.name} storage driver cannot use this image: {why}",
                           hint="choose another driver with --storage-driver")
    for name in DRIVERS[DRIVERS.index(first.name) + 1:]:
        other = get(name)
        if other.unavailable() is None and other.refuses(layers) is None:
            ctx.log.warn_once(f"storage-driver-refused-{first.name}",
                              f"the {first.name} storage driver cannot use this image ({why}): "
                              f"using {other.name} for it")  # per image: not once per store
            return other
    raise StorageError(f"no storage driver can use this image: {why}")


def prepare(ctx: Context, runner: NamespaceRunner, image_record: ImageRecord, container_id: str,
            driver: str | None = None, *, mount_probe: MountProbe | None = None,
            durable: bool = True) -> RootfsPlan:
    """Create the container layer of ``image_record`` for ``container_id`` and return its plan.

    ``driver`` is the --storage-driver flag (None: config, record or probe, see
    storage.drivers.probe.select; ``mount_probe`` is needed only for a first probe).
    ``durable=False``: the layer's record need not survive a crash of the machine (a
    container that ends with this process, `run --rm` in the foreground), so it is
    written without fsync.
    """
    dirs = ContainerDirs.of(ctx.layout, container_id)
    choice = select(ctx, runner, driver, mount_probe)
    layers = layer_dirs(ctx, image_record)
    chosen = _usable(ctx, get(choice.driver), layers, explicit=choice.source in ("flag", "config"))
    try:
        ctx.layout.containers.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.mkdir(dirs.root, 0o700)
    except FileExistsError:
        raise StorageError(f"container {container_id} already has a layer in {dirs.root}",
                           hint="remove that container first") from None
    except OSError as e:
        raise StorageError(f"create the container layer {dirs.root}: {e.strerror}", hint=errno_hint(e)) from e
    try:
        record = {"id": container_id, "driver": chosen.name, "image": image_record.id,
                  "layers": [layer.diff_id for layer in layers], "created": time.time()}
        write_atomic(dirs.record, json.dumps(record, indent=1).encode() + b"\n", durable=durable)
        started = time.monotonic()
        plan = chosen.create(runner, layers, dirs)
        ctx.log.debug(f"container {container_id}: {chosen.name} layer ready in "
                      f"{(time.monotonic() - started) * 1000:.0f} ms")
    except BaseException:
        try:
            remove(ctx, runner, container_id)
        except RootlessError as e:
            ctx.log.debug(f"remove the half-made layer of {container_id}: {e}")
        raise
    return plan


def remove(ctx: Context, runner: NamespaceRunner, container_id: str) -> bool:
    """Delete the container layer of ``container_id``; False if there was none.

    The directory is first renamed into tmp/ (gone from containers/ at once; a removal
    cut short is finished by LayerStore.cleanup_tmp), then deleted: by the user where
    that suffices, which spares starting a namespace worker, else as namespace-root.
    """
    dirs = ContainerDirs.of(ctx.layout, container_id)
    if not os.path.lexists(dirs.root):
        return False
    name = f"rm-container-{container_id}-{os.urandom(4).hex()}"
    lock = FileLock(ctx.layout.locks / f"tmp-{name}.lock")
    lock.acquire()
    try:
        doomed = ctx.layout.tmp / name
        try:
            ctx.layout.tmp.mkdir(parents=True, exist_ok=True, mode=0o700)
            os.rename(dirs.root, doomed)
        except FileNotFoundError:
            return False  # removed meanwhile by another command
        except OSError as e:
            raise StorageError(f"remove container layer {dirs.root}: {e.strerror}", hint=errno_hint(e)) from e
        try:
            _remove_as_user(str(doomed))
        except OSError:
            # Directories owned by the image's other users: only namespace-root may empty them.
            runner.call("storage.layers:remove_tree", path=str(doomed))
        try:
            os.unlink(lock.path)
        except OSError:
            pass
    finally:
        lock.release()
    return True


def _remove_as_user(path: str) -> None:
    parent, name = os.path.split(path)
    pfd = os.open(parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        remove_entry(pfd, name)
    finally:
        os.close(pfd)


def in_use(ctx: Context) -> dict[str, dict[str, Any]]:
    """container ID → its rootfs.json, for every container layer in the store (what image
    and layer removal must not delete)."""
    out: dict[str, dict[str, Any]] = {}
    try:
        names = sorted(os.listdir(ctx.layout.containers))
    except FileNotFoundError:
        return out
    for name in names:
        try:
            check_container_id(name)
            data = json.loads((ctx.layout.containers / name / "rootfs.json").read_bytes())
        except (RootlessError, OSError, ValueError):
            continue
        if isinstance(data, dict):
            out[name] = data
    return out
