"""Storage drivers: how an image's stored layers become one container's root file system.

The contract and the helpers the drivers share are in storage.drivers.base; ``get`` names a
driver (each module is imported only when it is asked for); storage.drivers.probe picks one.
"""

from __future__ import annotations

from storage.drivers.base import (
    DRIVERS,
    ContainerDirs,
    LayerDir,
    StorageDriver,
    check_container_id,
    mount_option_problem,
    remove_entry,
    root_attrs,
)

__all__ = ["DRIVERS", "ContainerDirs", "LayerDir", "StorageDriver", "check_container_id", "get",
           "mount_option_problem", "remove_entry", "root_attrs"]


def get(name: str) -> StorageDriver:
    """The driver called ``name``."""
    if name == "overlay":
        from storage.drivers.overlay import Overlay

        return Overlay()
    if name == "fuse-overlayfs":
        from storage.drivers.fuse_overlayfs import FuseOverlayfs

        return FuseOverlayfs()
    if name == "vfs":
        from storage.drivers.vfs import Vfs

        return Vfs()
    from rootless.errors import StorageError

    raise StorageError(f"unknown storage driver {name!r}", hint=f"choose one of {', '.join(DRIVERS)}")
