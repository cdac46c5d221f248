"""What the API keeps about a container beyond the engine's record: Docker's Config and
HostConfig fields as the client sent them (attach flags, Cmd and Entrypoint as given,
port bindings, binds), which `docker inspect` shows back.

Stored beside the engine's record as <store>/containers/<id>/api.json (written atomically,
removed with the container's directory), while labels, the restart policy and the stop
signal and timeout live in the engine's record, where `rootless` sees them too.
"""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rootless.context import Context


def _path(ctx: Context, cid: str) -> str:
    return str(ctx.layout.containers / cid / "api.json")


def save(ctx: Context, cid: str, meta: dict[str, Any]) -> None:
    path = _path(ctx, cid)
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        json.dump(meta, f)
    os.replace(tmp, path)


def load(ctx: Context, cid: str) -> dict[str, Any]:
    try:
        with open(_path(ctx, cid)) as f:
            data = json.load(f)
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
