"""Restart policies and health checks for detached containers, without a daemon.

Restart: when a container with ``--restart`` ends, its monitor (runtime/monitor.py) records the
exit and then execs ``python -m rootless.supervise exited ID`` in its own place; the hook decides
from the policy, the exit code, the restart count and whether `stop` ended the container
(a ``stopped`` marker in its run directory) and starts it again under a new monitor after a
backoff (0.1 s, doubling per restart, at most 10 s), as Podman's restart policy does.

Health: `start` spawns one small detached process per container with a health check
(``python -m rootless.supervise health ID``) that runs the check every interval through `exec`
while the same container process lives, records each result (health.json, the last five) and
the status (starting, healthy, unhealthy) in the container's state, records a
``health_status`` event when the status changes, and carries out ``--health-on-failure``.
"""

from __future__ import annotations

import json
import os
import time
from typing import TYPE_CHECKING, Any

from rootless.errors import RootlessError
from rootless.lifecycle import cli_argv, restarts, restarts_file, stopped_marker
from rootless.record import replace
from rootless.runtime import state

if TYPE_CHECKING:
    from pathlib import Path

    from rootless.context import Context
    from rootless.runtime.state import Config

BACKOFF_FIRST, BACKOFF_MAX = 0.1, 10.0
HEALTH_LOG_KEEP = 5


def should_restart(cfg: Config, st: state.State, count: int, stopped: bool) -> bool:
    if stopped or st.running:
        return False
    if cfg.restart in ("always", "unless-stopped"):
        return True
    if cfg.restart == "on-failure":
        return st.exit_code != 0 and (cfg.restart_max == 0 or count < cfg.restart_max)
    return False


def exited_hook(ctx: Context, cid: str) -> None:
    """In the monitor's place once the container has ended: restart it if its policy says so."""
    from rootless import lifecycle

    try:
        cfg = state.load_config(ctx.layout, cid)
    except state.NoSuchContainer:
        return  # removed meanwhile
    if cfg.rm:
        from rootless import volumes

        anonymous = volumes.anonymous_in(ctx, cfg.spec)
        try:
            lifecycle.remove(ctx, cid, force=True)
        except state.NoSuchContainer:
            return
        volumes.discard(ctx, anonymous)
        if cfg.rmi:
            from rootless.image import present

            present.remove_unused(ctx, cfg.image)
        return
    count = restarts(ctx, cid)
    st = state.read_state(ctx.layout, cid)
    if not should_restart(cfg, st, count, stopped_marker(ctx, cid).exists()):
        return
    time.sleep(min(BACKOFF_FIRST * 2 ** count, BACKOFF_MAX))
    if stopped_marker(ctx, cid).exists() or not state.config_path(ctx.layout, cid).exists():
        return  # stopped or removed during the backoff
    _write(restarts_file(ctx, cid), str(count + 1))
    lifecycle.event(ctx, cfg, "restart")
    lifecycle.start(ctx, cid, keep_count=True)


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


# --------------------------------------------------------------------------- health


def run_check(ctx: Context, cfg: Config) -> tuple[int, str]:
    """Run the health check once in the container: (exit code, output); a check that passes
    its timeout counts as failed (exit 1), as in Podman."""
    import subprocess

    test = list(cfg.health["test"])
    argv = ["/bin/sh", "-c", test[1]] if test[0] == "CMD-SHELL" else test[1:]
    try:
        cp = subprocess.run([*cli_argv(ctx), "exec", cfg.id, *argv], capture_output=True,
                            timeout=cfg.health.get("timeout") or None, check=False)
    except subprocess.TimeoutExpired:
        return 1, f"the health check timed out after {cfg.health.get('timeout')}s"
    out = (cp.stdout + cp.stderr).decode(errors="replace")
    return cp.returncode, out[-4096:]


def check_once(ctx: Context, cid: str, started_at: float | None = None) -> tuple[str, int]:
    """Run the check, record its result and the resulting status; (the status, the check's
    exit code)."""
    from rootless import lifecycle

    cfg = state.load_config(ctx.layout, cid)
    st = state.read_state(ctx.layout, cid)
    if not st.running:
        raise RootlessError(f"container {cfg.name} is not running: no health check",
                                      hint=f"`rootless start {cfg.name}` first")
    t0 = time.time()
    code, out = run_check(ctx, cfg)
    entry = {"Start": lifecycle.iso(t0), "End": lifecycle.iso(time.time()), "ExitCode": code, "Output": out}
    path = lifecycle.health_log_path(ctx, cid)
    try:
        log: list[dict[str, Any]] = json.loads(path.read_text())
    except (OSError, ValueError):
        log = []
    log = (log + [entry])[-HEALTH_LOG_KEEP:]
    streak = 0
    for e in reversed(log):
        if e["ExitCode"] == 0:
            break
        streak += 1
    in_start_period = started_at is not None and t0 - started_at < float(cfg.health.get("start_period") or 0)
    if code == 0:
        status = "healthy"
    elif streak >= int(cfg.health.get("retries") or 3) and not in_start_period:
        status = "unhealthy"
    else:
        status = st.health or "starting"
    with state.locked(ctx.layout, cid):
        _write(path, json.dumps(log))
        now = state.read_state_raw(ctx.layout, cid)
        if now is not None and now.running and now.pid == st.pid:
            state.write_state(ctx.layout, cid, replace(now, health=status))
    if status != st.health:
        lifecycle.event(ctx, cfg, "health_status", attributes={"health_status": status})
    return status, code


def health_loop(ctx: Context, cid: str) -> None:
    """Check every interval while the same container process lives; act on unhealthy."""
    from rootless import lifecycle

    cfg = state.load_config(ctx.layout, cid)
    st = state.read_state(ctx.layout, cid)
    if not st.running:
        return
    pid, started = st.pid, st.started_at
    with state.locked(ctx.layout, cid):
        now = state.read_state_raw(ctx.layout, cid)
        if now is not None and now.pid == pid:
            state.write_state(ctx.layout, cid, replace(now, health="starting"))
    interval = float(cfg.health["interval"])
    while True:
        time.sleep(interval)
        try:
            st = state.read_state(ctx.layout, cid)
        except RootlessError:
            return
        if not st.running or st.pid != pid:
            return
        try:
            status, _ = check_once(ctx, cid, started)
        except RootlessError:
            return
        action = cfg.health.get("on_failure", "none")
        if status == "unhealthy" and action != "none":
            if action == "kill":
                lifecycle.kill(ctx, cid, 9)
            elif action == "stop":
                lifecycle.stop(ctx, cid, None)
            elif action == "restart":
                lifecycle.stop(ctx, cid, None)
                lifecycle.start(ctx, cid)
            return


def main(argv: list[str]) -> int:
    """``exited|health ROOT RUNROOT ID``: run by a container's monitor or by `start`."""
    from rootless.context import build

    what, root, runroot, cid = argv
    try:
        ctx = build(root=root, runroot=runroot)
        if what == "exited":
            exited_hook(ctx, cid)
        elif what == "health":
            health_loop(ctx, cid)
    except RootlessError as e:
        import sys

        print(f"Error: {e.message}", file=sys.stderr)
        return e.exit_code
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main(sys.argv[1:]))
