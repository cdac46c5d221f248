"""Resource-limit flags → Resources (Podman's parsing and checks) → cgroup v2 files."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from rootless.errors import RootlessError
from rootless.image import limits
from rootless.image.specgen import RunOptions, cgroup_settings
from rootless.runtime import cgroups
from rootless.spec import Resources

M = 1 << 20


@pytest.mark.parametrize(("text", "size"), [
    ("1024", 1024), ("10b", 10), ("2k", 2048), ("2K", 2048), ("512m", 512 * M), ("512MB", 512 * M),
    ("512MiB", 512 * M), ("1g", 1 << 30), ("1.5g", 3 << 29), ("1gb", 1 << 30), (" 64m ", 64 * M),
])
def test_sizes(text: str, size: int) -> None:
    assert limits.parse_size(text, "--memory") == size


@pytest.mark.parametrize("text", ["", "abc", "12x", "-5m", "m", "1.2.3g", "5mbb"])
def test_bad_sizes(text: str) -> None:
    with pytest.raises(RootlessError, match="--memory .*not a size"):
        limits.parse_size(text, "--memory")


def parse(**kw: str) -> tuple[Resources | None, int | None]:
    return limits.parse(kw, cpus_online=4)


def test_nothing_asked() -> None:
    assert parse() == (None, None)
    assert limits.parse({"memory": None, "cpus": ""}) == (None, None)


def test_memory_and_default_swap() -> None:
    res, _ = parse(memory="64m")
    assert res == Resources(memory=64 * M)
    assert cgroups.limit_files(res) == [("memory.max", str(64 * M)), ("memory.swap.max", str(64 * M))]


def test_memory_swap_is_memory_plus_swap() -> None:
    res, _ = parse(memory="64m", memory_swap="100m")
    assert res is not None
    assert dict(cgroups.limit_files(res))["memory.swap.max"] == str(36 * M)
    res, _ = parse(memory="64m", memory_swap="64m")
    assert res is not None
    assert dict(cgroups.limit_files(res))["memory.swap.max"] == "0"
    res, _ = parse(memory="64m", memory_swap="-1")
    assert res is not None
    assert dict(cgroups.limit_files(res))["memory.swap.max"] == "max"


@pytest.mark.parametrize(("kw", "message"), [
    ({"memory": "5m"}, "minimum memory limit is 6m"),
    ({"memory_swap": "100m"}, "--memory-swap needs --memory"),
    ({"memory": "64m", "memory_swap": "32m"}, "less than --memory"),
    ({"memory": "64m", "memory_reservation": "128m"}, "more than --memory"),
    ({"cpus": "5"}, "range of CPUs is from 0.01 to 4.00"),
    ({"cpus": "x"}, "--cpus 'x': not a number"),
    ({"cpus": "1", "cpu_quota": "50000"}, "conflicting options"),
    ({"cpu_period": "10"}, "--cpu-period 10: must be from 1000"),
    ({"cpu_quota": "10"}, "--cpu-quota 10: must be at least 1000"),
    ({"cpu_shares": "1"}, "--cpu-shares 1: must be from 2"),
    ({"cpuset_cpus": "0-9"}, "CPU 9 does not exist"),
    ({"cpuset_cpus": "a"}, "not a CPU list"),
    ({"cpuset_cpus": "3-1"}, "not a valid range"),
    ({"pids_limit": "many"}, "--pids-limit 'many': not a whole number"),
    ({"oom_score_adj": "1001"}, "out of range"),
])
def test_rejected(kw: dict[str, str], message: str) -> None:
    with pytest.raises(RootlessError, match=message):
        parse(**kw)


def test_cpus_become_quota_and_period() -> None:
    res, _ = parse(cpus="1.5")
    assert res == Resources(cpu_quota=150000, cpu_period=100000)
    assert cgroups.limit_files(res) == [("cpu.max", "150000 100000")]
    res, _ = parse(cpus="0.001")  # the kernel's minimum quota is 1 ms
    assert res is not None and res.cpu_quota == 1000


def test_quota_period_shares_cpuset_pids() -> None:
    res, oom = parse(cpu_quota="20000", cpu_period="50000", cpu_shares="512", cpuset_cpus="0, 2-3",
                     pids_limit="20", oom_score_adj="300")
    assert oom == 300
    assert res == Resources(cpu_quota=20000, cpu_period=50000, cpu_shares=512, cpuset_cpus="0,2-3", pids_limit=20)
    assert cgroups.limit_files(res) == [("cpu.max", "20000 50000"), ("cpu.weight", "20"),
                                        ("cpuset.cpus", "0,2-3"), ("pids.max", "20")]
    assert cgroups.needed(res) == ["cpu", "cpuset", "pids"]


def test_period_alone_keeps_no_quota() -> None:
    res, _ = parse(cpu_period="50000")
    assert res is not None
    assert cgroups.limit_files(res) == [("cpu.max", "max 50000")]


@pytest.mark.parametrize(("shares", "weight"), [(2, 1), (1024, 39), (262144, 10000)])
def test_cpu_weight_is_crun_mapping(shares: int, weight: int) -> None:
    assert cgroups.cpu_weight(shares) == weight


def test_unlimited_values_mean_no_limit() -> None:
    assert parse(pids_limit="-1") == (None, None)
    assert parse(pids_limit="0") == (None, None)
    assert parse(memory="0") == (None, None)
    assert parse(cpu_quota="-1") == (None, None)


def test_cgroups_flag() -> None:
    assert cgroup_settings(RunOptions(image="x")) == (None, None, "enabled")
    assert cgroup_settings(RunOptions(image="x", cgroup_manager="cgroupfs"))[2] == "cgroupfs"
    assert cgroup_settings(RunOptions(image="x", cgroups="disabled", oom_score_adj="10")) == (None, 10, "disabled")
    with pytest.raises(RootlessError, match="--memory needs a cgroup, and --cgroups is disabled"):
        cgroup_settings(RunOptions(image="x", cgroups="disabled", memory="64m"))
    with pytest.raises(RootlessError, match="--cgroups split: not supported"):
        cgroup_settings(RunOptions(image="x", cgroups="split"))
    with pytest.raises(RootlessError, match="must be enabled or disabled"):
        cgroup_settings(RunOptions(image="x", cgroups="sometimes"))


# --------------------------------------------------------------------------- the host


def test_version(tmp_path: Path) -> None:
    assert cgroups.version(str(tmp_path)) == "v1"
    (tmp_path / "unified").mkdir()
    (tmp_path / "unified" / "cgroup.controllers").write_text("")
    assert cgroups.version(str(tmp_path)) == "hybrid"
    (tmp_path / "cgroup.controllers").write_text("cpu memory pids\n")
    assert cgroups.version(str(tmp_path)) == "v2"


def test_v1_host_explains(tmp_path: Path) -> None:
    h = cgroups.probe(root=str(tmp_path))
    assert h.manager is None and "cgroup v1 only" in h.reason
    assert "systemd.unified_cgroup_hierarchy=1" in h.fix and "Delegate=cpu cpuset io memory pids" in h.fix
    cgroups.check(h, None)  # nothing asked: no error
    with pytest.raises(cgroups.CgroupError, match="--memory needs a cgroup v2 delegated to you, and this host "
                                                  "has cgroup v1 only"):
        cgroups.check(h, Resources(memory=64 * M))


def test_missing_controller_named() -> None:
    h = cgroups.Host("v2", "/x", "systemd", "user.slice", ("cpu", "memory", "pids"))
    cgroups.check(h, Resources(memory=64 * M, pids_limit=5, cpu_quota=1000, cpu_period=100000))
    with pytest.raises(cgroups.CgroupError, match="--cpuset-cpus needs the cpuset controller, which is not "
                                                  r"delegated to you \(delegated: cpu memory pids\)"):
        cgroups.check(h, Resources(memory=64 * M, cpuset_cpus="0"))


def test_delegated_needs_ownership(tmp_path: Path) -> None:
    d = tmp_path / "cg"
    d.mkdir()
    for f in ("cgroup.procs", "cgroup.subtree_control"):
        (d / f).write_text("")
    assert cgroups.delegated(str(d)) == (os.geteuid() == d.stat().st_uid)
    (d / "cgroup.procs").chmod(0o444)
    if os.geteuid() != 0:  # root writes anything
        assert not cgroups.delegated(str(d))


def test_oom_kills_counted(tmp_path: Path) -> None:
    assert cgroups.oom_kills(str(tmp_path)) == 0
    (tmp_path / "memory.events").write_text("low 0\nhigh 0\nmax 12\noom 1\noom_kill 1\noom_group_kill 0\n")
    assert cgroups.oom_kills(str(tmp_path)) == 1


def test_user_bus(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DBUS_SESSION_BUS_ADDRESS", raising=False)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    assert cgroups.user_bus() is None
    (tmp_path / "bus").write_text("")
    assert cgroups.user_bus() == f"unix:path={tmp_path}/bus"
    monkeypatch.setenv("DBUS_SESSION_BUS_ADDRESS", f"unix:path={tmp_path}/other,guid=1")
    assert cgroups.user_bus() == f"unix:path={tmp_path}/bus"  # the named socket does not exist
    (tmp_path / "other").write_text("")
    assert cgroups.user_bus() == f"unix:path={tmp_path}/other,guid=1"


def test_human_size_and_duration() -> None:
    from rootless.commands.psview import stat_size as human_size
    from rootless.lifecycle import duration

    assert human_size(64 * M) == "67.11MB"
    assert human_size(999) == "999B"
    assert human_size(1500) == "1.5kB"
    assert duration(0.01453) == "14.53ms"
    assert duration(2.5) == "2.5s"
    assert duration(63.2) == "1m3.2s"
