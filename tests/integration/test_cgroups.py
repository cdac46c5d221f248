"""Resource limits on a host that cannot enforce them (this one: cgroup v1 with an empty v2
tree), as the unprivileged user: a run that asks for a limit fails with 125 and one line
naming the controller and the fix, leaving nothing behind; a run without limits goes on
quietly; --cgroups disabled and --oom-score-adj need no cgroup at all.

The limits themselves are tested on a real cgroup v2 host by test_cgroups_vm.py (VM lane).
"""

from __future__ import annotations

import json
import os

import pytest

from rootless.runtime import cgroups
from tests.integration.conftest import TestImages
from tests.integration.harness import RootlessEnv, assert_clean_error

pytestmark = pytest.mark.integration

needs_no_v2 = pytest.mark.skipif(cgroups.probe().manager is not None,
                                 reason="this host can give containers cgroups: the VM lane's case")


@pytest.fixture(scope="module")
def rl(rl_shared: RootlessEnv, images: TestImages) -> RootlessEnv:
    images.require("library/busybox:latest")
    rl_shared("pull", "-q", "busybox", check=True)
    return rl_shared


def nothing_left(rl: RootlessEnv) -> None:
    assert rl("ps", "-aq", check=True).stdout == ""
    d = rl.store / "containers"
    assert not d.is_dir() or not os.listdir(d)


@needs_no_v2
@pytest.mark.parametrize(("flags", "flag", "controller"), [
    (("--memory", "64m"), "--memory", "memory"),
    (("-m", "64m"), "--memory", "memory"),
    (("--memory-reservation", "10m"), "--memory-reservation", "memory"),
    (("--cpus", "0.5"), "--cpus", "cpu"),
    (("--cpu-shares", "512"), "--cpu-shares", "cpu"),
    (("--cpuset-cpus", "0"), "--cpuset-cpus", "cpuset"),
    (("--pids-limit", "20"), "--pids-limit", "pids"),
])
def test_limit_on_this_host_fails_clearly(rl: RootlessEnv, flags: tuple[str, ...], flag: str,
                                          controller: str) -> None:
    for extra in ((), ("--rm",), ("-d",)):
        cp = rl("run", *extra, *flags, "busybox", "true")
        line = assert_clean_error(cp, 125, flag, "cgroup v2")
        assert "hybrid" in line or "v1" in line, line
        assert "systemd.unified_cgroup_hierarchy=1" in cp.stderr and "Delegate=" in cp.stderr, cp.stderr
        nothing_left(rl)


@needs_no_v2
def test_no_limit_runs_quietly(rl: RootlessEnv) -> None:
    cp = rl("run", "--rm", "--network", "none", "busybox", "cat", "/proc/self/cgroup")
    assert cp.returncode == 0 and cp.stderr == "", cp.stderr
    cp = rl("run", "--rm", "--network", "none", "--cgroups", "disabled", "busybox", "echo", "ok")
    assert (cp.returncode, cp.stdout, cp.stderr) == (0, "ok\n", "")


def test_cgroups_disabled_refuses_limits(rl: RootlessEnv) -> None:
    assert_clean_error(rl("run", "--rm", "--cgroups", "disabled", "--memory", "64m", "busybox", "true"), 125,
                       "--memory", "--cgroups is disabled")
    assert_clean_error(rl("run", "--rm", "--cgroups", "split", "busybox", "true"), 125, "--cgroups split")
    nothing_left(rl)


@pytest.mark.parametrize(("flags", "needle"), [
    (("--memory", "5m"), "minimum memory limit is 6m"),
    (("--memory", "lots"), "not a size"),
    (("--memory-swap", "1g"), "--memory-swap needs --memory"),
    (("--cpus", "9999"), "range of CPUs"),
    (("--cpuset-cpus", "0-9999"), "does not exist"),
    (("--pids-limit", "x"), "--pids-limit"),
    (("--oom-score-adj", "5000"), "--oom-score-adj"),
])
def test_bad_values_fail_before_anything_starts(rl: RootlessEnv, flags: tuple[str, ...], needle: str) -> None:
    assert_clean_error(rl("run", "--rm", *flags, "busybox", "true"), 125, needle)
    nothing_left(rl)


def test_bad_cgroup_manager(rl: RootlessEnv) -> None:
    assert_clean_error(rl("--cgroup-manager", "magic", "run", "--rm", "busybox", "true"), 125,
                       "--cgroup-manager 'magic'")


def test_oom_score_adj(rl: RootlessEnv) -> None:
    """Podman's --oom-score-adj: no cgroup needed; raising is free, lowering needs privilege."""
    cp = rl("run", "--rm", "--network", "none", "--oom-score-adj", "500", "busybox", "sh", "-c",
            "cat /proc/self/oom_score_adj; cat /proc/1/oom_score_adj")
    assert (cp.returncode, cp.stdout) == (0, "500\n500\n"), cp.stderr
    own = int(open("/proc/self/oom_score_adj").read())
    if own > -1000 and os.geteuid() != 0:
        assert_clean_error(rl("run", "--rm", "--oom-score-adj", str(own - 1), "busybox", "true"), 125,
                           "--oom-score-adj", "CAP_SYS_RESOURCE")


@needs_no_v2
def test_stats_inspect_and_doctor_without_cgroups(rl: RootlessEnv) -> None:
    cid = rl("run", "-d", "--network", "none", "busybox", "sleep", "60", check=True).stdout.strip()
    try:
        assert_clean_error(rl("stats", "--no-stream", cid), 125, "no cgroup to read")
        assert rl("stats", "--no-stream", "-a", "--format", "json").returncode == 125
        data = json.loads(rl("inspect", cid, check=True).stdout)[0]
        assert data["State"]["OOMKilled"] is False and data["State"]["CgroupPath"] == ""
        assert data["HostConfig"]["Memory"] == 0 and data["HostConfig"]["Cgroups"] == "enabled"
    finally:
        rl("rm", "-f", cid)
    # no container running: the header alone, as Podman prints
    cp = rl("stats", "--no-stream", check=True)
    assert cp.stdout.split()[:2] == ["ID", "NAME"] and len(cp.stdout.splitlines()) == 1
    assert json.loads(rl("stats", "--no-stream", "--format", "json", check=True).stdout) == []
    doc = rl("doctor").stdout
    assert "cgroup delegation" in doc and "delegate.conf" in doc and "Delegate=cpu cpuset io memory pids" in doc
    info = json.loads(rl("info", "--format", "json", check=True).stdout)["host"]["cgroup"]
    assert info["version"] in ("v1", "hybrid") and info["manager"] is None and info["unavailable"]
    assert info["version"] == "v1" or info["path"].startswith("/")  # hybrid: the v2 tree's path


def test_inspect_shows_limits_asked(rl: RootlessEnv) -> None:
    """What was asked is recorded with Docker's names."""
    cid = rl("create", "--cgroups", "disabled", "--oom-score-adj", "100", "busybox", "true", check=True)
    c = cid.stdout.strip()
    try:
        hc = json.loads(rl("inspect", c, check=True).stdout)[0]["HostConfig"]
        assert hc["Cgroups"] == "disabled" and hc["OomScoreAdj"] == 100
    finally:
        rl("rm", "-f", c)
