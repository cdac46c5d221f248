"""The VM lane's own sanity check (scripts/test-vm): the guest is what the cgroup v2 limit
tests need, and the session fixtures work there.

A failure here says the lane is broken, not the tool: a mixed or v1 hierarchy, a user manager
without delegation, no session bus, or a harness that cannot pull and run an image.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.integration.conftest import TestImages
from tests.integration.harness import RootlessEnv

pytestmark = pytest.mark.vm

CGROUP_ROOT = Path("/sys/fs/cgroup")
# Debian 12's user@.service delegates cpu, memory and pids; the image's drop-in (what
# `rootless doctor` advises) adds cpuset and io.
DELEGATED = {"cpu", "cpuset", "io", "memory", "pids"}


def user_manager_cgroup() -> Path:
    uid = os.getuid()
    return CGROUP_ROOT / "user.slice" / f"user-{uid}.slice" / f"user@{uid}.service"


def test_pure_cgroup_v2() -> None:
    mounts = [line.split() for line in Path("/proc/self/mounts").read_text().splitlines()]
    kinds = {m[1]: m[2] for m in mounts}
    assert kinds.get(str(CGROUP_ROOT)) == "cgroup2", f"/sys/fs/cgroup is {kinds.get(str(CGROUP_ROOT))}"
    v1 = [m[1] for m in mounts if m[2] == "cgroup"]
    assert not v1, f"cgroup v1 hierarchies mounted: {v1}"


def test_user_manager_is_delegated() -> None:
    cg = user_manager_cgroup()
    controllers = set((cg / "cgroup.controllers").read_text().split())
    assert controllers >= DELEGATED, f"{cg} has {sorted(controllers)}, lacks {sorted(DELEGATED - controllers)}"
    # Delegation hands the subtree's control files to the user (cgroups(7), "Delegation").
    for name in ("cgroup.procs", "cgroup.subtree_control"):
        assert (cg / name).stat().st_uid == os.getuid(), f"{cg / name} is not the user's"


def test_user_manager_takes_limits_over_the_bus() -> None:
    """systemd-run --user reaches the user's manager through DBUS_SESSION_BUS_ADDRESS and puts
    the command in a scope with the limits asked for."""
    assert os.environ.get("DBUS_SESSION_BUS_ADDRESS"), "no session bus address in the environment"
    script = 'cg=/sys/fs/cgroup$(cut -d: -f3 /proc/self/cgroup); cat "$cg/memory.max" "$cg/pids.max"'
    cp = subprocess.run(["systemd-run", "--user", "--scope", "--quiet", "-p", "MemoryMax=64M",
                         "-p", "TasksMax=32", "sh", "-c", script],
                        capture_output=True, text=True, timeout=120)
    assert cp.returncode == 0, cp.stderr
    assert cp.stdout.split() == [str(64 << 20), "32"], cp.stdout


def test_rl_pulls_and_runs_alpine(rl: RootlessEnv, images: TestImages) -> None:
    images.require("library/alpine:latest")
    cp = rl("run", "--rm", "alpine", "sh", "-c", "cat /etc/os-release; echo ran", timeout=600)
    assert cp.returncode == 0, f"exit {cp.returncode}\n--- stdout\n{cp.stdout}\n--- stderr\n{cp.stderr}"
    assert cp.stdout.rstrip().endswith("ran"), cp.stdout
