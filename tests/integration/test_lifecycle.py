"""Detached containers and their lifecycle as the unprivileged user: run -d, ps, logs, exec,
stop, kill, rm, wait, inspect, cp, the monitor, concurrency. Reference: rootless Podman 4."""

from __future__ import annotations

import json
import os
import re
import signal
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.integration.conftest import TestImages
from tests.integration.harness import RootlessEnv, Tty, assert_clean_error, free_port

pytestmark = pytest.mark.integration

BUSYBOX = "busybox"


@pytest.fixture(scope="module")
def rl(rl_shared: RootlessEnv, images: TestImages) -> RootlessEnv:
    images.require("library/busybox:latest")
    rl_shared("pull", "-q", BUSYBOX, check=True)
    return rl_shared


def detach(rl: RootlessEnv, *args: str) -> str:
    cp = rl("run", "-d", *args)
    assert cp.returncode == 0, f"exit {cp.returncode}\n{cp.stdout}\n{cp.stderr}"
    cid = cp.stdout.strip()
    assert re.fullmatch(r"[0-9a-f]{64}", cid), cp.stdout
    return cid


def inspect(rl: RootlessEnv, name: str) -> dict:  # type: ignore[type-arg]
    cp = rl("inspect", name, check=True)
    data = json.loads(cp.stdout)
    assert len(data) == 1
    return data[0]  # type: ignore[no-any-return]


def wait_for(pred, timeout: float = 15, what: str = "condition") -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.05)
    raise AssertionError(f"{what} not met after {timeout}s")


def gone(rl: RootlessEnv, cid: str) -> None:
    assert not (rl.store / "containers" / cid).exists()
    assert not (rl.runroot / "containers" / cid).exists()


def test_detached_httpd(rl: RootlessEnv) -> None:
    port = free_port()
    name = "web"
    cid = detach(rl, "--name", name, "--network", "host", BUSYBOX, "sh", "-c",
                 f"echo hello > /tmp/index.html && exec httpd -f -v -p 127.0.0.1:{port} -h /tmp")
    try:
        ps = rl("ps", check=True).stdout
        assert cid[:12] in ps and name in ps and "Up " in ps, ps
        assert "CONTAINER ID" in ps.splitlines()[0]

        def served() -> bool:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/index.html", timeout=2) as r:
                    return bool(r.read() == b"hello\n")
            except OSError:
                return False

        wait_for(served, what="httpd answering")
        for _ in range(3):
            assert served()
        wait_for(lambda: "200" in rl("logs", name).stderr + rl("logs", name).stdout, what="request logged")
        ts = rl("logs", "-t", "--tail", "1", name, check=True)
        assert re.match(r"\d{4}-\d\d-\d\dT", ts.stdout + ts.stderr)

        info = inspect(rl, name)
        assert info["Id"] == cid and info["Name"] == name
        assert info["State"]["Running"] is True and info["State"]["Status"] == "running"
        assert info["State"]["Pid"] > 0 and info["State"]["OOMKilled"] is False
        host = rl("exec", name, "cat", "/etc/hostname", check=True).stdout.strip()
        assert host == info["Config"]["Hostname"]
        assert rl("exec", cid[:8], "sh", "-c", "exit 7").returncode == 7
        assert rl("exec", name, "no-such-command").returncode == 127
        assert rl("exec", "-w", "/etc", "-e", "X=1", "-u", "nobody", name, "sh", "-c", 'echo $X $(pwd) $(id -u)',
                  check=True).stdout.split() == ["1", "/etc", "65534"]

        # busybox httpd as PID 1 ignores SIGTERM: stop waits -t, then SIGKILL
        started = time.monotonic()
        rl("stop", "-t", "2", name, check=True)
        took = time.monotonic() - started
        assert 1.5 < took < 8, took
        info = inspect(rl, name)
        assert info["State"]["Status"] == "exited" and info["State"]["ExitCode"] == 137
        assert not served()
        assert cid[:12] not in rl("ps", check=True).stdout
        assert cid[:12] in rl("ps", "-a", check=True).stdout
    finally:
        rl("rm", "-f", name)
    gone(rl, cid)
    assert rl.wait_no_processes() == []


def test_debug_lines_stay_out_of_the_containers_log(rl: RootlessEnv) -> None:
    cp = rl("--log-level", "debug", "run", "-d", "--name", "chatty", BUSYBOX, "echo", "only this", check=True)
    assert re.search(r"^DEBU container [0-9a-f]{12} started: pid \d+$", cp.stderr, re.M), cp.stderr
    try:
        wait_for(lambda: inspect(rl, "chatty")["State"]["Status"] == "exited", what="chatty exited")
        assert rl("logs", "chatty", check=True).stdout == "only this\n"
        restarted = rl("--log-level", "debug", "start", "chatty", check=True)
        assert "DEBU" in restarted.stderr
        wait_for(lambda: inspect(rl, "chatty")["State"]["Status"] == "exited", what="chatty exited again")
        assert rl("logs", "chatty", check=True).stdout == "only this\nonly this\n"
    finally:
        rl("rm", "-f", "chatty")


def test_published_port(rl: RootlessEnv) -> None:
    port = free_port()
    cid = detach(rl, "-p", f"127.0.0.1:{port}:80", BUSYBOX, "sh", "-c",
                 "echo hi > /tmp/index.html && exec httpd -f -p 80 -h /tmp")
    try:
        assert rl("port", cid, check=True).stdout == f"80/tcp -> 127.0.0.1:{port}\n"
        assert f"127.0.0.1:{port}->80/tcp" in rl("ps", check=True).stdout
        assert inspect(rl, cid)["NetworkSettings"]["Ports"] == {"80/tcp": [{"HostIp": "127.0.0.1",
                                                                            "HostPort": str(port)}]}

        def served() -> bool:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/index.html", timeout=2) as r:
                    return bool(r.read() == b"hi\n")
            except OSError:
                return False

        wait_for(served, what="httpd answering through the published port")
    finally:
        rl("rm", "-f", cid)
    gone(rl, cid)
    assert rl.wait_no_processes() == []


def test_interactive_exec_on_a_terminal(rl: RootlessEnv) -> None:
    cid = detach(rl, BUSYBOX, "sleep", "300")
    term = Tty(rl, [*rl.command, "exec", "-it", cid[:12], "sh"])
    try:
        term.wait_for("#")
        term.type_line("echo tty=$(tty) ok")
        term.wait_for("tty=/dev/pts/")
        term.type_line("exit 5")
        assert term.wait_exit() == 5
    finally:
        term.close()
        rl("rm", "-f", cid)


def test_exit_codes_recorded(rl: RootlessEnv) -> None:
    a = detach(rl, BUSYBOX, "sh", "-c", "exit 3")
    b = detach(rl, BUSYBOX, "sleep", "300")
    try:
        assert rl("wait", a, check=True).stdout.strip() == "3"
        assert inspect(rl, a)["State"]["ExitCode"] == 3
        rl("kill", b, check=True)
        assert rl("wait", b, check=True).stdout.strip() == "137"
        assert "Exited (137)" in rl("ps", "-a", "--filter", f"id={b[:12]}").stdout
        rows = json.loads(rl("ps", "-a", "--format", "json", "--filter", "status=exited", check=True).stdout)
        assert {a, b} <= {r["Id"] for r in rows}
    finally:
        rl("rm", "-f", a, b)


def test_logs_follow_ends_with_the_container(rl: RootlessEnv) -> None:
    cid = detach(rl, BUSYBOX, "sh", "-c", "for i in 1 2 3; do echo line$i; sleep 0.4; done; echo err >&2")
    try:
        cp = rl("logs", "-f", cid, timeout=20)
        assert cp.returncode == 0
        assert cp.stdout.split() == ["line1", "line2", "line3"], cp.stdout
        assert cp.stderr.strip() == "err"
        assert rl("logs", "--tail", "1", cid, check=True).stdout == ""  # the last line went to stderr
        assert rl("logs", "--since", "1h", cid, check=True).stdout.split() == ["line1", "line2", "line3"]
    finally:
        rl("rm", "-f", cid)


def test_cp_both_ways(rl: RootlessEnv, tmp_path: Path) -> None:
    cid = detach(rl, BUSYBOX, "sleep", "300")
    try:
        src = rl.home / "script.sh"
        src.write_text("#!/bin/sh\necho copied\n")
        os.chmod(src, 0o750)
        rl("cp", str(src), f"{cid[:12]}:/tmp/", check=True)
        assert rl("exec", cid, "/tmp/script.sh", check=True).stdout == "copied\n"
        assert rl("exec", cid, "stat", "-c", "%a %u", "/tmp/script.sh", check=True).stdout.split() == ["750", "0"]
        d = rl.home / "out"
        d.mkdir()
        rl("cp", f"{cid}:/etc/passwd", str(d / "pw"), check=True)
        assert "root:" in (d / "pw").read_text()
        rl("cp", f"{cid}:/tmp/script.sh", str(d), check=True)
        assert (d / "script.sh").stat().st_mode & 0o777 == 0o750
        assert_clean_error(rl("cp", f"{cid}:/no/such", str(d)), 125)
    finally:
        rl("rm", "-f", cid)


def test_monitor_killed(rl: RootlessEnv) -> None:
    cid = detach(rl, BUSYBOX, "sleep", "300")
    state = json.loads((rl.runroot / "containers" / cid / "state.json").read_text())
    os.kill(state["monitor_pid"], signal.SIGKILL)
    wait_for(lambda: "Exited" in rl("ps", "-a", "--filter", f"id={cid}").stdout, what="shown as exited")
    rl("rm", cid, check=True)
    gone(rl, cid)
    assert rl.wait_no_processes() == []


def test_twenty_at_once(rl: RootlessEnv) -> None:
    with ThreadPoolExecutor(20) as pool:
        ids = list(pool.map(lambda i: detach(rl, "--name", f"many{i}", BUSYBOX, "sleep", "300"), range(20)))
    listed = rl("ps", "-q", "--no-trunc", check=True).stdout.split()
    assert set(ids) <= set(listed)
    names = json.loads(rl("ps", "--format", "json", check=True).stdout)
    assert {f"many{i}" for i in range(20)} <= {n for r in names for n in r["Names"]}
    with ThreadPoolExecutor(20) as pool:
        codes = list(pool.map(lambda c: rl("rm", "-f", c).returncode, ids))
    assert codes == [0] * 20
    for cid in ids:
        gone(rl, cid)
    assert rl.wait_no_processes() == []


def test_concurrent_rm(rl: RootlessEnv) -> None:
    """Two removals at once: without -f one of them finds no container (exit 1); with -f a
    container that is already gone is no error (Podman's exit 0)."""
    cid = rl("create", "--network", "none", BUSYBOX, "true", check=True).stdout.strip()
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda _: rl("rm", cid), range(2)))
    codes = sorted(r.returncode for r in results)
    assert codes == [0, 1], [(r.returncode, r.stderr) for r in results]
    assert_clean_error(next(r for r in results if r.returncode), 1, "no container")
    gone(rl, cid)
    cid = detach(rl, BUSYBOX, "sleep", "300")
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda _: rl("rm", "-f", cid), range(2)))
    assert [(r.returncode, r.stderr) for r in results] == [(0, ""), (0, "")]
    gone(rl, cid)
    assert rl("rm", "-f", "no-such-container", check=True).stdout == ""


def test_exit_codes_of_the_commands(rl: RootlessEnv) -> None:
    assert_clean_error(rl("rm", "no-such"), 1, "no-such")
    cid = detach(rl, "--name", "busy", BUSYBOX, "sleep", "300")
    try:
        assert_clean_error(rl("rm", "busy"), 2, "running")
        assert_clean_error(rl("run", "-d", "--name", "busy", BUSYBOX, "true"), 125, "already in use")
        assert_clean_error(rl("exec", "no-such", "true"), 125)
        assert rl("port", "busy", check=True).stdout == ""
    finally:
        rl("rm", "-f", cid)


def test_create_start_restart_prune(rl: RootlessEnv) -> None:
    cp = rl("create", "--name", "later", BUSYBOX, "sh", "-c", "echo started")
    assert cp.returncode == 0, cp.stderr
    cid = cp.stdout.strip()
    assert inspect(rl, "later")["State"]["Status"] == "created"
    assert "later" not in rl("ps").stdout
    cp = rl("start", "-a", "later")
    assert cp.returncode == 0 and cp.stdout == "started\n", cp
    rl("restart", "later", check=True)
    assert rl("wait", "later", check=True).stdout.strip() == "0"
    assert rl("logs", "later", check=True).stdout == "started\nstarted\n"
    pruned = rl("container", "prune", check=True).stdout.split()
    assert cid in pruned
    gone(rl, cid)


def test_rmi_refuses_an_image_in_use(rl: RootlessEnv) -> None:
    cid = rl("create", BUSYBOX, "true", check=True).stdout.strip()
    try:
        cp = rl("rmi", BUSYBOX)
        assert cp.returncode != 0 and "Traceback" not in cp.stderr
    finally:
        rl("rm", cid, check=True)


def test_detached_terminal(rl: RootlessEnv) -> None:
    cid = detach(rl, "-t", BUSYBOX, "sh", "-c", "tty; echo done")
    try:
        assert rl("wait", cid, check=True).stdout.strip() == "0"
        out = rl("logs", cid, check=True).stdout
        assert out.split() == ["/dev/pts/0", "done"], out
    finally:
        rl("rm", "-f", cid)


def test_detached_rm_and_damaged_records(rl: RootlessEnv) -> None:
    cid = detach(rl, "--rm", BUSYBOX, "true")
    wait_for(lambda: not (rl.store / "containers" / cid).exists(), what="--rm container removed")
    gone(rl, cid)
    # a reboot empties the run directory; a damaged record is still removable
    cid = detach(rl, BUSYBOX, "sleep", "300")
    rl("kill", cid, check=True)
    rl("wait", cid, check=True)
    (rl.runroot / "containers" / cid / "state.json").unlink()
    assert "Exited" in rl("ps", "-a", "--filter", f"id={cid}", check=True).stdout
    (rl.store / "containers" / cid / "config.json").write_text("{not json")
    rl("rm", cid, check=True)
    gone(rl, cid)
    assert rl.wait_no_processes() == []


@pytest.mark.parametrize("driver", ["overlay", "fuse-overlayfs", "vfs"])
def test_cp_with_a_stopped_container(rl: RootlessEnv, driver: str) -> None:
    cid = rl("create", "--storage-driver", driver, BUSYBOX, "cat", "/tmp/in.txt", check=True).stdout.strip()
    try:
        src = rl.home / "in.txt"
        src.write_text("from the host\n")
        os.chmod(src, 0o604)
        rl("cp", str(src), f"{cid}:/tmp/", check=True)
        cp = rl("start", "-a", cid)
        assert cp.returncode == 0 and cp.stdout == "from the host\n", cp
        out = rl.home / f"back-{driver}"
        rl("cp", f"{cid}:/tmp/in.txt", str(out), check=True)
        assert out.read_text() == "from the host\n" and out.stat().st_mode & 0o777 == 0o604
        assert_clean_error(rl("cp", f"{cid}:/no/such", str(out)), 125, "no such file")
    finally:
        rl("rm", "-f", cid)
    assert rl.wait_no_processes() == []


def test_inspect_falls_back_to_images(rl: RootlessEnv) -> None:
    data = json.loads(rl("inspect", BUSYBOX, check=True).stdout)
    assert len(data) == 1 and "Id" in data[0]
    assert_clean_error(rl("inspect", "no-such-thing"), 125, "no-such-thing")
