"""docker-compose 1.29 (Debian's docker-compose, over docker-py) against `rootless system service`,
as the unprivileged user: a web server and a client that reaches it by its service name on the
project's network, a named volume both use, a port published on the host's 127.0.0.1; up -d,
ps, logs, exec, down -v, and nothing of the project left afterwards.

The client speaks HTTP with busybox nc (busybox-static's wget segfaults here)."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.apiharness import Service, have_compose, have_docker
from tests.integration.conftest import need
from tests.integration.harness import RootlessEnv, free_port

COMPOSE = """\
version: "3.7"
services:
  web:
    image: alpine
    command: ["sh", "-c", "mkdir -p /w && echo hello-web > /w/index.html && echo seeded > /data/seed &&
              echo web-up && exec httpd -f -p 80 -h /w"]
    ports:
      - "127.0.0.1:{port}:80"
    volumes:
      - data:/data
    labels:
      com.example.role: server
  client:
    image: alpine
    command: ["sh", "-c", "until printf 'GET / HTTP/1.0\\\\r\\\\n\\\\r\\\\n' | nc -w 2 web 80 | tail -n 1 > /data/got &&
              grep -q hello /data/got; do sleep 0.2; done; echo client-got $$(cat /data/got); exec sleep 300"]
    volumes:
      - data:/data
    depends_on:
      - web
volumes:
  data:
"""


@pytest.fixture
def api(rl: RootlessEnv) -> Iterator[Service]:
    need(have_docker(), "docker.io is not installed (apt-get install docker.io)")
    need(have_compose(), "docker-compose is not installed (apt-get install docker-compose)")
    need(Path("/usr/bin/slirp4netns").exists() and Path("/usr/sbin/iptables").exists(),
         "compose's project network is a user network: it needs slirp4netns and iptables")
    svc = Service(rl)
    yield svc
    rl("rm", "-f", "-a")
    rl("network", "prune", "-f")
    rl("volume", "prune", "-f")
    svc.stop()


def compose(api: Service, project: Path, *args: str, check: bool = True, timeout: float = 180
            ) -> subprocess.CompletedProcess[str]:
    env = {**api.rl.env, **api.docker_env, "COMPOSE_INTERACTIVE_NO_CLI": "1"}
    cp = subprocess.run(["docker-compose", "--no-ansi", "-p", "rlc", *args], cwd=project, env=env, text=True,
                        stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout)
    if check and cp.returncode != 0:
        raise AssertionError(f"docker-compose {' '.join(args)} exited {cp.returncode}\n--- stdout\n{cp.stdout}\n"
                             f"--- stderr\n{cp.stderr}")
    return cp


def wait_for(what: str, probe: object, timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    out = ""
    while time.monotonic() < deadline:
        out = probe()  # type: ignore[operator]
        if out:
            return out
        time.sleep(0.3)
    raise AssertionError(f"{what}: not within {timeout} s")


def test_compose_up_ps_logs_exec_down(api: Service, rl: RootlessEnv, tmp_path: Path) -> None:
    project = tmp_path / "proj"
    project.mkdir()
    port = free_port()
    (project / "docker-compose.yml").write_text(COMPOSE.format(port=port))
    api.docker("pull", "alpine", check=True)
    compose(api, project, "up", "-d")
    # the project's containers, network and volume are rootless's own
    names = sorted(c["Names"][0] for c in json.loads(rl("ps", "--format", "json", check=True).stdout))
    assert names == ["rlc_client_1", "rlc_web_1"]
    assert rl("network", "exists", "rlc_default").returncode == 0
    assert "rlc_data" in rl("volume", "ls", "-q", check=True).stdout.split()
    # the client reached the server by its service name
    got = wait_for("the client's answer", lambda: "client-got hello-web" in
                   compose(api, project, "logs", "--no-color", "client").stdout)
    assert got
    # the published port, from the host
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10).read()
    assert body == b"hello-web\n"
    ps = compose(api, project, "ps").stdout
    assert "rlc_web_1" in ps and "rlc_client_1" in ps and f"127.0.0.1:{port}->80/tcp" in ps, ps
    assert ps.count(" Up ") == 2, ps
    logs = compose(api, project, "logs", "--no-color", "web").stdout
    assert "web-up" in logs
    # exec in a service's container, and the volume shared by both
    cp = compose(api, project, "exec", "-T", "client", "cat", "/data/seed", "/data/got")
    assert cp.stdout == "seeded\nhello-web\n"
    cp = compose(api, project, "exec", "-T", "web", "sh", "-c", "exit 3", check=False)
    assert cp.returncode == 3
    # a second up finds everything as it is
    compose(api, project, "up", "-d")
    assert sorted(c["Names"][0] for c in json.loads(rl("ps", "--format", "json", check=True).stdout)) == names
    compose(api, project, "down", "-v", "-t", "1")
    # nothing of the project is left
    assert json.loads(rl("ps", "-a", "--format", "json", check=True).stdout or "[]") == []
    assert rl("network", "exists", "rlc_default").returncode != 0
    assert "rlc_data" not in rl("volume", "ls", "-q", check=True).stdout.split()


ONESHOT = """\
version: "3.7"
services:
  job:
    image: alpine
    command: ["sh", "-c", "echo job-ran; sleep 1; exit 0"]
  idle:
    image: alpine
    command: ["sleep", "300"]
"""


def test_compose_up_attached_follows_and_stops_at_the_first_exit(api: Service, rl: RootlessEnv,
                                                                   tmp_path: Path) -> None:
    """`up` without -d attaches to every service's output and watches the events (filtered by the
    project's labels): --abort-on-container-exit stops the project when one container ends."""
    project = tmp_path / "oneshot"
    project.mkdir()
    (project / "docker-compose.yml").write_text(ONESHOT)
    api.docker("pull", "alpine", check=True)
    cp = compose(api, project, "up", "--abort-on-container-exit", "-t", "1", check=False, timeout=120)
    assert "job-ran" in cp.stdout, cp.stdout + cp.stderr
    assert cp.returncode == 0, cp.stdout + cp.stderr
    # the other service was stopped, not left running
    running = json.loads(rl("ps", "--format", "json", check=True).stdout or "[]")
    assert running == [], running
    compose(api, project, "down", "-t", "1")
    assert json.loads(rl("ps", "-a", "--format", "json", check=True).stdout or "[]") == []
    assert rl("network", "exists", "rlc_default").returncode != 0


TWO_NETS = """\
version: "3.7"
services:
  web:
    image: alpine
    command: ["sh", "-c", "mkdir -p /w && echo hello-web > /w/index.html && exec httpd -f -p 80 -h /w"]
    networks:
      front:
      back:
        aliases: [api]
  client:
    image: alpine
    command: ["sleep", "300"]
    networks: [back]
networks:
  front:
  back:
"""


def test_compose_service_on_two_networks(api: Service, rl: RootlessEnv, tmp_path: Path) -> None:
    """A service on two networks: compose creates it on the first and connects the second before
    the start (with the service's name and its own aliases there)."""
    project = tmp_path / "two"
    project.mkdir()
    (project / "docker-compose.yml").write_text(TWO_NETS)
    api.docker("pull", "alpine", check=True)
    compose(api, project, "up", "-d")
    nets = json.loads(api.docker("inspect", "-f", "{{json .NetworkSettings.Networks}}", "rlc_web_1",
                                 check=True).stdout)
    assert sorted(nets) == ["rlc_back", "rlc_front"]
    assert all(n["IPAddress"] for n in nets.values()), nets
    assert "api" in nets["rlc_back"]["Aliases"] and "web" in nets["rlc_front"]["Aliases"]
    get = "printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 2 {} 80 | tail -n 1"
    out = wait_for("web by name and alias on back", lambda: compose(
        api, project, "exec", "-T", "client", "sh", "-c", f"{get.format('web')}; {get.format('api')}",
        check=False).stdout.split() == ["hello-web", "hello-web"] and "ok")
    assert out == "ok"
    compose(api, project, "down", "-t", "1")
    assert json.loads(rl("ps", "-a", "--format", "json", check=True).stdout or "[]") == []
    assert rl("network", "exists", "rlc_back").returncode != 0 and rl("network", "exists", "rlc_front").returncode != 0
