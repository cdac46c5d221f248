"""The REST API service under test, and clients for it: raw HTTP over its unix socket, the
docker CLI (Debian's /usr/bin/docker, client only) and docker-compose."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tests.integration.harness import RootlessEnv

DOCKER = "/usr/bin/docker"  # Debian's docker.io 20.10 client


class UnixHTTP(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float = 60) -> None:
        super().__init__("localhost", timeout=timeout)
        self.path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.path)


class Service:
    """``rootless system service`` started by a test: ``.sock``, ``.proc``, ``.request()``,
    ``.docker(*args)``, ``.stop()``."""

    def __init__(self, rl: RootlessEnv, sock: Path | None = None, idle: int = 0, extra_env: dict[str, str] | None
                 = None) -> None:
        self.rl = rl
        self.sock = sock or rl.runroot / "rootless.sock"
        # info: the requests are logged (debug would add the engine's own lines)
        args = ["--log-level", "info", "system", "service", "--time", str(idle)]
        if sock is not None:
            args.append(f"unix://{sock}")
        self.log = rl.base / f"service-{time.monotonic_ns()}.log"
        with open(self.log, "w") as log:
            self.proc = rl.popen(*args, env=extra_env, start_new_session=True, stdout=log, stderr=log)
        self.wait_ready()
        self.docker_config = rl.base / "docker-config"
        self.docker_config.mkdir(exist_ok=True)

    def wait_ready(self, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"the service exited {self.proc.returncode}: {self.log.read_text()}")
            if self.sock.exists():
                with contextlib.suppress(OSError):
                    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                    s.connect(str(self.sock))
                    s.close()
                    return
            time.sleep(0.02)
        raise AssertionError("the service did not listen in time")

    def request(self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None,
                timeout: float = 60) -> tuple[int, dict[str, str], bytes]:
        conn = UnixHTTP(str(self.sock), timeout)
        try:
            data = json.dumps(body).encode() if body is not None and not isinstance(body, bytes) else body
            hs = {"Content-Type": "application/json"} if data is not None else {}
            conn.request(method, path, body=data, headers={**hs, **(headers or {})})
            r = conn.getresponse()
            return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
        finally:
            conn.close()

    def json(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        status, _, data = self.request(method, path, body)
        return status, json.loads(data) if data.strip() else None

    @property
    def docker_env(self) -> dict[str, str]:
        return {"DOCKER_HOST": f"unix://{self.sock}", "DOCKER_CONFIG": str(self.docker_config),
                "DOCKER_BUILDKIT": "0"}

    def docker(self, *args: str, input: str | None = None, timeout: float = 90,  # noqa: A002
               check: bool = False) -> subprocess.CompletedProcess[str]:
        env = {**self.rl.env, **self.docker_env}
        cp = subprocess.run([DOCKER, *args], env=env, cwd=self.rl.home, text=True, input=input,
                            stdin=None if input is not None else subprocess.DEVNULL, capture_output=True,
                            timeout=timeout)
        if check and cp.returncode != 0:
            raise AssertionError(f"docker {' '.join(args)} exited {cp.returncode}\n--- stdout\n{cp.stdout}\n"
                                 f"--- stderr\n{cp.stderr}")
        return cp

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        print(f"--- {self.log.name}\n{self.log.read_text()}")


def have_docker() -> bool:
    return os.path.exists(DOCKER)


def have_compose() -> bool:
    return bool(shutil.which("docker-compose"))


def docker_service(rl: RootlessEnv) -> Iterator[Service]:
    """A test's service for the docker CLI (skipped without it); afterwards no container is left
    (as a pytest fixture: ``api = pytest.fixture(docker_service, name="api")``)."""
    import pytest

    if not have_docker():
        pytest.skip("docker.io is not installed (apt-get install docker.io)")
    svc = Service(rl)
    yield svc
    rl("rm", "-f", "-a")
    svc.stop()
