"""`rootless system service`: the socket, idle exit, socket activation, the system endpoints
and the error contract, as the unprivileged user with the real docker client."""

from __future__ import annotations

import json
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.apiharness import Service, have_docker
from tests.integration.conftest import need
from tests.integration.harness import RootlessEnv


@pytest.fixture
def api(rl: RootlessEnv) -> Iterator[Service]:
    svc = Service(rl)
    yield svc
    svc.stop()


def test_default_socket_is_private(api: Service, rl: RootlessEnv) -> None:
    assert api.sock == rl.runtime_dir / "rootless" / "rootless.sock"
    assert stat.S_ISSOCK(api.sock.stat().st_mode)
    assert stat.S_IMODE(api.sock.stat().st_mode) == 0o600
    assert stat.S_IMODE(api.sock.parent.stat().st_mode) == 0o700


def test_ping_version_info(api: Service) -> None:
    for path in ("/_ping", "/v1.44/_ping", "/v1.24/_ping"):
        status, headers, body = api.request("GET", path)
        assert (status, body) == (200, b"OK"), path
        assert headers["api-version"] == "1.44"
    status, headers, body = api.request("HEAD", "/_ping")
    assert status == 200 and body == b"" and headers["api-version"] == "1.44"
    for path in ("/version", "/v1.41/version"):
        status, data = api.json("GET", path)
        assert status == 200 and data["ApiVersion"] == "1.44" and data["MinAPIVersion"] == "1.24"
    status, data = api.json("GET", "/v1.44/info")
    assert status == 200 and data["OSType"] == "linux" and data["Containers"] == 0


def test_errors_are_docker_json(api: Service) -> None:
    status, data = api.json("POST", "/v1.44/containers/abc/update")
    assert status == 501 and "POST /containers/abc/update" in data["message"] and "not" in data["message"]
    status, data = api.json("GET", "/v1.45/version")
    assert status == 400 and "too new" in data["message"]
    status, data = api.json("GET", "/v1.44/containers/nosuch/json")
    assert status == 404 and data["message"] == "No such container: nosuch"
    status, data = api.json("POST", "/v1.44/containers/create", {"HostConfig": {"VolumesFrom": ["other"]},
                                                                  "Image": "alpine"})
    assert status == 400 and "HostConfig.VolumesFrom" in data["message"]
    # a malformed request gets an answer and the service stays up
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(str(api.sock))
    s.sendall(b"NOT HTTP AT ALL\r\n\r\n")
    s.settimeout(10)
    reply = s.recv(4096)
    s.close()
    assert reply.startswith(b"HTTP/1.1 400") and b'"message"' in reply and b"Traceback" not in reply
    assert api.request("GET", "/_ping")[0] == 200


def test_a_stalled_connection_blocks_nobody(api: Service) -> None:
    stalled = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stalled.connect(str(api.sock))
    stalled.sendall(b"GET /_ping HTTP/1.1\r\nHost: x\r\n")  # headers never finished
    try:
        t0 = time.monotonic()
        assert api.request("GET", "/_ping", timeout=5)[0] == 200
        assert time.monotonic() - t0 < 5
    finally:
        stalled.close()


def test_docker_version(api: Service) -> None:
    need(have_docker(), "docker.io is not installed (apt-get install docker.io)")
    cp = api.docker("version", "--format", "{{json .}}", check=True)
    data = json.loads(cp.stdout)
    assert data["Server"]["ApiVersion"] == "1.44"
    assert data["Client"]["ApiVersion"] in ("1.41", "1.44")  # 20.10 speaks 1.41 at most


def _wait_exit(proc: subprocess.Popen[str], timeout: float) -> float | None:
    t0 = time.monotonic()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        return None
    return time.monotonic() - t0


def test_idle_exit(rl: RootlessEnv, tmp_path: Path) -> None:
    sock = tmp_path / "idle.sock"
    svc = Service(rl, sock, idle=2)
    try:
        time.sleep(1.2)
        assert svc.request("GET", "/_ping")[0] == 200  # a request restarts the clock
        time.sleep(1.2)
        assert svc.proc.poll() is None, "exited less than 2 s after the last request"
        took = _wait_exit(svc.proc, 10)
        assert took is not None, "still running 10 s after the last request"
        assert svc.proc.returncode == 0
        assert not sock.exists(), "the socket it made is removed when it exits"
    finally:
        svc.stop()


def test_time_zero_never_exits(rl: RootlessEnv, tmp_path: Path) -> None:
    svc = Service(rl, tmp_path / "forever.sock", idle=0)
    try:
        assert _wait_exit(svc.proc, 3) is None
    finally:
        svc.stop()


def test_refuses_a_socket_in_use(rl: RootlessEnv, tmp_path: Path) -> None:
    svc = Service(rl, tmp_path / "busy.sock")
    try:
        cp = rl("system", "service", f"unix://{tmp_path / 'busy.sock'}")
        assert cp.returncode == 125
        assert "already listening" in cp.stderr and "Traceback" not in cp.stderr
        cp = rl("system", "service", "tcp://0.0.0.0:2375")
        assert cp.returncode == 125 and "only unix://" in cp.stderr
    finally:
        svc.stop()


def test_socket_activation(rl: RootlessEnv, tmp_path: Path) -> None:
    """LISTEN_FDS/LISTEN_PID as systemd passes them (sd_listen_fds(3)): the service serves
    the socket it is given, makes none of its own, and leaves the given one in place."""
    path = tmp_path / "activated.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(16)
    fd = listener.fileno()
    # LISTEN_PID must be the service's own PID: a launcher puts the socket at fd 3, sets it, execs
    launch = ("import os, sys; fd = int(sys.argv[1]); os.dup2(fd, 3); fd == 3 or os.close(fd); "
              "os.environ.update(LISTEN_PID=str(os.getpid()), LISTEN_FDS='1'); os.execvp(sys.argv[2], sys.argv[2:])")
    proc = subprocess.Popen([sys.executable, "-c", launch, str(fd), *rl.command, "system", "service", "--time", "2"],
                            env=rl.env, cwd=rl.home, pass_fds=(fd,),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        svc = Service.__new__(Service)
        svc.sock = path
        status, headers, body = svc.request("GET", "/v1.44/_ping")
        assert (status, body) == (200, b"OK")
        assert not (rl.runroot / "rootless.sock").exists(), "made a socket of its own"
        took = _wait_exit(proc, 15)
        assert took is not None and proc.returncode == 0, proc.stderr.read() if proc.stderr else ""
        assert path.exists(), "the activated socket belongs to systemd: it stays"
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()
        listener.close()


def test_a_client_that_leaves_a_wait_frees_the_service(rl: RootlessEnv, tmp_path: Path) -> None:
    """A waiting handler notices its client has gone: the service is idle again and exits,
    though the container it waited for still runs."""
    rl("run", "-d", "--name", "long", "alpine", "sleep", "300", check=True)
    svc = Service(rl, tmp_path / "wait.sock", idle=1)
    try:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(str(svc.sock))
        s.sendall(b"POST /v1.44/containers/long/wait HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
        s.settimeout(10)
        assert s.recv(4096).startswith(b"HTTP/1.1 200")  # the status line comes at once, the body at exit
        time.sleep(1.5)
        assert svc.proc.poll() is None, "a wait under way keeps the service"
        s.close()
        assert _wait_exit(svc.proc, 10) is not None, "the abandoned wait kept the service up"
    finally:
        svc.stop()
        rl("rm", "-f", "long")
