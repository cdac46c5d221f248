"""``rootless system migrate``: re-record what a store remembers about its host.

A store records its run root (store.json) and its storage driver (driver.json) at first
use. When the host changes under it (a new session type without /run/user/UID, /dev/fuse
gone), the command that fits is to move the store's run root to this environment's and
probe the driver again, once none of its containers runs. Prints nothing: the CLI renders
the lines returned.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rootless.errors import RootlessError

if TYPE_CHECKING:
    from rootless.context import Context


def _moved(value: Any, old: str, new: str) -> Any:
    """Every string of a container record under the old run root, moved under the new one."""
    if isinstance(value, str):
        return new + value[len(old):] if value == old or value.startswith(old + "/") else value
    if isinstance(value, list):
        return [_moved(v, old, new) for v in value]
    if isinstance(value, dict):
        return {k: _moved(v, old, new) for k, v in value.items()}
    return value


def migrate(ctx: Context) -> list[str]:
    """Move the store to this command's run root and forget the recorded driver; what was done."""
    from rootless.layout import Layout
    from rootless.runtime import state

    layout = ctx.layout
    if not layout.root.is_dir():
        raise RootlessError(f"no store at {layout.root}", hint="nothing to migrate: the first pull creates it")
    done: list[str] = []
    recorded = layout.recorded_runroot()
    if recorded is not None and recorded != layout.runroot:
        old = Layout(root=layout.root, runroot=recorded)
        for cid in state.all_ids(old):
            if state.read_state(old, cid).running:
                name = state.load_config(old, cid).name
                raise RootlessError(f"container {name} is running with the store's run root {recorded}",
                                    hint=f"stop it from a shell that has that run root (XDG_RUNTIME_DIR="
                                         f"{recorded.parent}), then migrate")
        layout.ensure_runroot()
        for cid in state.all_ids(old):
            path = state.config_path(layout, cid)
            data = json.loads(path.read_bytes())
            state.write_json(path, _moved(data, str(recorded), str(layout.runroot)))
            shutil.rmtree(old.state / cid, ignore_errors=True)
        if old.auth_file.exists() and not layout.auth_file.exists():
            try:
                shutil.copy2(old.auth_file, layout.auth_file)
                os.chmod(layout.auth_file, 0o600)
            except OSError:
                pass  # credentials are per session anyway: `rootless login` again
        if not layout.write_meta(runroot=str(layout.runroot)):
            raise RootlessError(f"write {layout.store_meta}: the store is not writable",
                                hint=f"make {layout.root} writable, then migrate again")
        done.append(f"run root: {recorded} → {layout.runroot}")
    elif recorded is None:
        layout.record_runroot()
    from storage.drivers.probe import record_path

    driver = record_path(layout)
    if driver.exists():
        try:
            name = json.loads(driver.read_bytes()).get("driver", "?")
        except (OSError, ValueError):
            name = "?"
        Path(driver).unlink()
        done.append(f"storage driver: {name} forgotten; the next run probes this host again")
    return done or ["nothing to migrate"]
