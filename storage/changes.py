"""A container's changes to its image, as `podman diff` lists them: A (added), C (changed),
D (deleted), one line per path.

The container's upper directory is read with storage.layertar's walker (the same one that
writes layers, so overlay whiteouts and opaque directories mean here what they mean in a
committed layer); whether a path is new or changed is decided by the image's layers below.
Runs as namespace-root in the store's user namespace (through a NamespaceRunner): the upper
directory holds files of the image's users that only that namespace may read.
"""

from __future__ import annotations

import os

from storage import layertar


def changes(upper: str, lowers: list[str]) -> list[list[str]]:
    """[kind, "/path"] for every path the upper directory adds, changes or deletes."""

    def below(rel: str) -> bool:
        return any(os.path.lexists(os.path.join(lo, rel)) for lo in lowers)

    out: list[list[str]] = []
    for e in layertar.walk(upper):
        if e.kind == "whiteout":
            out.append(["D", "/" + e.path])
        elif e.kind == "opaque":
            continue  # the directory's own entry says A or C
        else:
            out.append(["C" if below(e.path) else "A", "/" + e.path])
    return out
