"""Resource limits enforced for real: cgroup v2 delegated by systemd to the unprivileged user.

Runs only in the VM lane (`sudo bash scripts/test-vm`: Debian 12, systemd, pure cgroup v2,
user@UID.service with Delegate=cpu cpuset io memory pids), as uid 1000 with its systemd
--user session reachable through $DBUS_SESSION_BUS_ADDRESS.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from rootless.runtime import cgroups
from tests.integration.conftest import TestImages
from tests.integration.harness import RootlessEnv, assert_clean_error

pytestmark = [pytest.mark.integration, pytest.mark.vm]

ROOT = Path("/sys/fs/cgroup")


@pytest.fixture(scope="module")
def rl(rl_shared: RootlessEnv, images: TestImages) -> RootlessEnv:
    if cgroups.version() != "v2" or not os.environ.get("DBUS_SESSION_BUS_ADDRESS"):
        pytest.fail("the VM lane needs cgroup v2 and the user's systemd session (DBUS_SESSION_BUS_ADDRESS)")
    images.require("library/busybox:latest")
    rl_shared("pull", "-q", "busybox", check=True)
    return rl_shared


def user_env() -> dict[str, str]:
    return {"DBUS_SESSION_BUS_ADDRESS": os.environ["DBUS_SESSION_BUS_ADDRESS"]}


def r(rl: RootlessEnv, *args: str, **kw: object) -> subprocess.CompletedProcess[str]:
    return rl(*args, env=user_env(), timeout=300, **kw)  # type: ignore[arg-type]


def ok(cp: subprocess.CompletedProcess[str]) -> str:
    assert cp.returncode == 0, f"exit {cp.returncode}\n--- stdout\n{cp.stdout}\n--- stderr\n{cp.stderr}"
    return cp.stdout


def inspect(rl: RootlessEnv, cid: str) -> dict:
    return json.loads(ok(r(rl, "inspect", cid)))[0]  # type: ignore[no-any-return]


def scopes() -> list[str]:
    out = subprocess.run(["systemctl", "--user", "list-units", "--all", "--plain", "--no-legend", "rootless-*"],
                         capture_output=True, text=True, env={**os.environ, **user_env()}).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def wait_for(pred, timeout: float = 60.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


def test_host_is_delegated(rl: RootlessEnv) -> None:
    info = json.loads(ok(r(rl, "info", "--format", "json")))["host"]["cgroup"]
    assert info["version"] == "v2" and info["manager"] == "systemd", info
    assert {"cpu", "cpuset", "memory", "pids"} <= set(info["controllers"]), info
    doctor = r(rl, "doctor").stdout
    assert "[ok  ] cgroup delegation: cgroup v2 (systemd, containers under user.slice)" in doctor, doctor


def test_every_container_gets_its_own_cgroup_and_leaves_none(rl: RootlessEnv) -> None:
    out = ok(r(rl, "run", "--rm", "--network", "none", "busybox", "sh", "-c",
               "cat /proc/self/cgroup; ls /sys/fs/cgroup/cgroup.procs"))
    # a cgroup namespace rooted at the container's own cgroup, mounted at /sys/fs/cgroup
    assert out.splitlines() == ["0::/", "/sys/fs/cgroup/cgroup.procs"], out
    wait_for(lambda: scopes() == [])


def test_memory_limit_oom_kill(rl: RootlessEnv) -> None:
    """A 200 MB allocation under --memory 64m: the OOM killer ends it, 137, OOMKilled."""
    cp = r(rl, "run", "--name", "hog", "--network", "none", "--memory", "64m", "busybox", "awk",
           'BEGIN { s = sprintf("%209715200s", ""); print length(s) }')
    assert cp.returncode == 137, cp
    assert "209715200" not in cp.stdout
    data = inspect(rl, "hog")
    assert data["State"]["OOMKilled"] is True and data["State"]["ExitCode"] == 137, data["State"]
    assert data["HostConfig"]["Memory"] == 64 << 20
    ok(r(rl, "rm", "hog"))
    # a detached one: its monitor records it
    cid = ok(r(rl, "run", "-d", "--network", "none", "-m", "64m", "busybox", "awk",
               'BEGIN { s = sprintf("%209715200s", ""); print length(s) }')).strip()
    assert ok(r(rl, "wait", cid)).strip() == "137"
    assert inspect(rl, cid)["State"]["OOMKilled"] is True
    ok(r(rl, "rm", cid))
    # within the limit: no OOM
    cp = r(rl, "run", "--name", "small", "--network", "none", "--memory", "64m", "busybox", "awk",
           'BEGIN { s = sprintf("%10485760s", ""); print length(s) }')
    assert (cp.returncode, cp.stdout) == (0, "10485760\n"), cp
    assert inspect(rl, "small")["State"]["OOMKilled"] is False
    ok(r(rl, "rm", "small"))


def test_limits_are_written(rl: RootlessEnv) -> None:
    out = ok(r(rl, "run", "--rm", "--network", "none", "--memory", "64m", "--memory-swap", "96m",
               "--memory-reservation", "32m", "--cpus", "0.5", "--cpu-shares", "512", "--cpuset-cpus", "0",
               "--pids-limit", "20", "busybox", "sh", "-c",
               "cd /sys/fs/cgroup; cat memory.max memory.swap.max memory.low cpu.max cpu.weight cpuset.cpus "
               "pids.max"))
    assert out.split("\n")[:8] == [str(64 << 20), str(32 << 20), str(32 << 20), "50000 100000", "20", "0", "20",
                                   ""], out


def test_pids_limit_stops_a_fork_bomb(rl: RootlessEnv) -> None:
    cid = ok(r(rl, "run", "-d", "--network", "none", "--pids-limit", "20", "--cpus", "0.5", "busybox", "sh", "-c",
               "bomb() { bomb | bomb & }; bomb; sleep 600")).strip()
    try:
        path = inspect(rl, cid)["State"]["CgroupPath"]
        assert path.endswith("/container"), path
        events = ROOT / path.lstrip("/") / "pids.events"
        wait_for(lambda: int(events.read_text().split()[1]) > 0)  # "max N": forks refused
        assert int((ROOT / path.lstrip("/") / "pids.current").read_text()) <= 20
        stats = json.loads(ok(r(rl, "stats", "--no-stream", "--format", "json", cid)))
        assert int(stats[0]["pids"]) <= 20
        # the host lives: another container starts and ends
        assert ok(r(rl, "run", "--rm", "--network", "none", "busybox", "echo", "alive")) == "alive\n"
    finally:
        ok(r(rl, "rm", "-f", cid))
    wait_for(lambda: not (ROOT / path.lstrip("/")).exists())


def test_cpus_throttle(rl: RootlessEnv) -> None:
    out = ok(r(rl, "run", "--rm", "--network", "none", "--cpus", "0.5", "busybox", "sh", "-c",
               "cat /sys/fs/cgroup/cpu.max; timeout 3 sh -c 'while :; do :; done'; "
               "grep -E '^(nr_throttled|usage_usec) ' /sys/fs/cgroup/cpu.stat"))
    lines = dict(line.split() for line in out.splitlines()[1:])
    assert out.splitlines()[0] == "50000 100000", out
    assert int(lines["nr_throttled"]) > 0, out
    # 3 s of spinning at half a CPU: well under 3 s of CPU time
    assert int(lines["usage_usec"]) < 2_500_000, out


def test_stats_and_exec_share_the_cgroup(rl: RootlessEnv) -> None:
    cid = ok(r(rl, "run", "-d", "--network", "none", "--memory", "64m", "busybox", "sleep", "600")).strip()
    try:
        rows = json.loads(ok(r(rl, "stats", "--no-stream", "--format", "json", cid)))
        assert rows[0]["mem_usage"].endswith("/ 67.11MB"), rows
        assert rows[0]["pids"] == "1" and rows[0]["id"] == cid[:12], rows
        assert rows[0]["net_io"] == "0B / 0B", rows  # --network none: loopback only, not counted
        table = ok(r(rl, "stats", "--no-stream", cid))
        assert table.splitlines()[0].split()[:4] == ["ID", "NAME", "CPU", "%"] and "67.11MB" in table
        # exec: the same cgroup (the root of the container's cgroup namespace), counted in pids
        out = ok(r(rl, "exec", cid, "sh", "-c", "cat /proc/self/cgroup; cat /sys/fs/cgroup/pids.current"))
        assert out.splitlines()[0] == "0::/", out
        assert int(out.splitlines()[1]) >= 2, out  # sleep, and sh (exec'd into its last cat)
        path = inspect(rl, cid)["State"]["CgroupPath"]
        assert f"rootless-{cid}.scope/container" in path, path
    finally:
        ok(r(rl, "rm", "-f", cid))
    wait_for(lambda: f"rootless-{cid}.scope" not in scopes())


def test_cgroupfs_manager_in_a_delegated_subtree(rl: RootlessEnv, tmp_path: Path) -> None:
    """No systemd in the way: a subtree delegated to us (here a Delegate=yes scope whose own
    processes moved into a leaf), where rootless makes the container's cgroup itself."""
    script = tmp_path / "in-scope.sh"
    script.write_text(
        'S=/sys/fs/cgroup$(cut -d: -f3 /proc/self/cgroup)\n'
        'mkdir "$S/leaf" && echo $$ > "$S/leaf/cgroup.procs"\n'
        'exec "$@"\n')
    env = {**rl.env, **user_env()}
    cp = subprocess.run(["systemd-run", "--user", "--scope", "--quiet", "-p", "Delegate=yes", "sh", str(script),
                         *rl.command, "--cgroup-manager", "cgroupfs", "run", "--rm", "--network", "none",
                         "--memory", "32m", "--pids-limit", "7", "busybox", "sh", "-c",
                         "cat /proc/self/cgroup /sys/fs/cgroup/memory.max /sys/fs/cgroup/pids.max"],
                        env=env, capture_output=True, text=True, timeout=300)
    assert cp.returncode == 0, cp
    assert cp.stdout.split() == ["0::/", str(32 << 20), "7"], cp.stdout


def test_cgroups_disabled_runs_in_callers_cgroup(rl: RootlessEnv) -> None:
    out = ok(r(rl, "run", "--rm", "--network", "none", "--cgroups", "disabled", "busybox", "cat",
               "/proc/self/cgroup"))
    assert out.strip() == "0::/", out  # the namespace is rooted where we run, no cgroup of its own
    assert_clean_error(r(rl, "run", "--rm", "--cgroups", "disabled", "--pids-limit", "5", "busybox", "true"), 125,
                       "--pids-limit")


def test_stats_streams_until_the_container_ends(rl: RootlessEnv) -> None:
    cid = ok(r(rl, "run", "-d", "--network", "none", "--pids-limit", "50", "busybox", "sleep", "4")).strip()
    try:
        out = ok(r(rl, "stats", "-i", "1", "--format", "json", cid))
        assert out.count('"id"') >= 2, out  # one sample a second until it ended
    finally:
        r(rl, "rm", "-f", cid)


def test_restart_gets_a_fresh_scope(rl: RootlessEnv) -> None:
    """stop and start at once: the old scope may still be being collected when the new one is
    asked for under the same name."""
    cid = ok(r(rl, "run", "-d", "--network", "none", "--memory", "64m", "busybox", "sleep", "600")).strip()
    try:
        for _ in range(2):
            ok(r(rl, "restart", "-t", "0", cid))
            data = inspect(rl, cid)
            assert data["State"]["Running"] is True and data["State"]["CgroupPath"].endswith("/container"), data
            path = ROOT / data["State"]["CgroupPath"].lstrip("/")
            assert (path / "memory.max").read_text().strip() == str(64 << 20)
            assert int((path / "pids.current").read_text()) == 1
    finally:
        ok(r(rl, "rm", "-f", cid))
    wait_for(lambda: f"rootless-{cid}.scope" not in scopes())


def test_pause_freezes_and_unpause_resumes(rl: RootlessEnv) -> None:
    """pause: the cgroup v2 freezer stops every process of the container (its counter stands still,
    cgroup.events says frozen, ps and inspect say paused); unpause lets it go on from where it was."""
    cid = ok(r(rl, "run", "-d", "--network", "none", "busybox", "sh", "-c",
               "i=0; while :; do i=$((i+1)); echo $i; sleep 0.1; done")).strip()

    def count() -> int:
        lines = ok(r(rl, "logs", cid)).split()
        return int(lines[-1]) if lines else 0

    try:
        wait_for(lambda: count() >= 3)
        ok(r(rl, "pause", cid))
        data = inspect(rl, cid)
        assert data["State"]["Status"] == "paused" and data["State"]["Paused"] is True, data["State"]
        path = ROOT / data["State"]["CgroupPath"].lstrip("/")
        assert (path / "cgroup.freeze").read_text().strip() == "1"
        assert "frozen 1" in (path / "cgroup.events").read_text()
        assert "Paused" in ok(r(rl, "ps", "--filter", f"id={cid}", "--format", "{{.Status}}"))
        frozen_at = count()
        time.sleep(1.5)  # fifteen ticks of its loop, had it run
        assert count() == frozen_at
        assert_clean_error(r(rl, "pause", cid), 125, "paused")  # Podman's refusal: it is paused already
        ok(r(rl, "unpause", cid))
        assert inspect(rl, cid)["State"]["Status"] == "running"
        assert "frozen 0" in (path / "cgroup.events").read_text()
        wait_for(lambda: count() >= frozen_at + 3, timeout=30)
    finally:
        ok(r(rl, "rm", "-f", "-t", "0", cid))
    wait_for(lambda: f"rootless-{cid}.scope" not in scopes())
