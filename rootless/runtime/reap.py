"""Reaping what a container leaves behind, shared by the monitor's loop, a foreground `run` and the
cgroup code: our children (/proc), SIGTERM then SIGKILL, and the container's cgroup.

Standard library only: the monitor's bare ``python -S`` loop imports this module.
"""

from __future__ import annotations

import os
import signal
import time

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable


def children() -> list[int]:
    """Our child processes, as /proc/self/task/*/children lists them (proc(5))."""
    out: list[int] = []
    try:
        tasks = os.listdir("/proc/self/task")
    except OSError:
        return out
    for tid in tasks:
        try:
            with open(f"/proc/self/task/{tid}/children") as f:
                out += [int(p) for p in f.read().split()]
        except OSError:
            continue
    return out


def stop_children(grace: float = 2.0, on_kill: Callable[[int], None] | None = None,
                  reap_all: bool = True, pids: list[int] | None = None) -> None:
    """SIGTERM every child (or those of ``pids``), SIGKILL those still there after ``grace``
    seconds (``on_kill`` is told which), and reap them. Used by the monitor and by a foreground
    run, both child subreapers, for what a container leaves behind (fuse-overlayfs, slirp4netns)."""
    if pids is None:
        pids = children()
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + grace
    for pid in pids:
        while True:
            try:
                done, _ = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                break
            if done:
                break
            if time.monotonic() > deadline:
                if on_kill is not None:
                    on_kill(pid)
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                break
            time.sleep(0.01)
    while reap_all:  # anything else finished meanwhile
        try:
            if os.waitpid(-1, os.WNOHANG)[0] == 0:
                break
        except ChildProcessError:
            break


def oom_kills(cgroup: str) -> int:
    """How many processes the OOM killer ended in the cgroup at *cgroup* (memory.events
    ``oom_kill``); rootless.runtime.cgroups uses this one too."""
    try:
        with open(os.path.join(cgroup, "memory.events")) as f:
            for line in f:
                key, _, value = line.partition(" ")
                if key == "oom_kill":
                    return int(value)
    except (OSError, ValueError):
        pass
    return 0


def remove_cgroup(cgroup: str, wait: float = 2.0) -> None:
    """Kill what is left in the cgroup (cgroup.kill, Linux 5.14) and remove it, waiting up to
    *wait* seconds while its last processes exit (EBUSY)."""
    try:
        with open(os.path.join(cgroup, "cgroup.kill"), "w") as f:
            f.write("1")
    except OSError:
        pass
    deadline = time.monotonic() + wait
    while True:
        try:
            os.rmdir(cgroup)
            return
        except FileNotFoundError:
            return
        except OSError as e:
            if e.errno != 16 or time.monotonic() > deadline:  # EBUSY
                return
        time.sleep(0.01)
