"""`docker run`, `docker create` and `docker run -it` through `rootless system service`: the
API's create calls the engine's, so what docker makes is in `rootless ps`, as the
unprivileged user with Debian's docker client."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.apiharness import DOCKER, Service, UnixHTTP, have_docker
from tests.integration.conftest import need
from tests.integration.harness import RootlessEnv, Tty, free_port
from tests.integration.test_api_docker import DockerTerm, rootless_ps, serve_http, until_resized


@pytest.fixture
def api(rl: RootlessEnv) -> Iterator[Service]:
    need(have_docker(), "docker.io is not installed (apt-get install docker.io)")
    svc = Service(rl)
    yield svc
    rl("rm", "-f", "-a")
    svc.stop()


def test_run_rm_pulls_then_runs(api: Service, rl: RootlessEnv) -> None:
    cp = api.docker("run", "--rm", "alpine", "echo", "hi", check=True)
    assert cp.stdout == "hi\n"
    assert "Unable to find image 'alpine:latest' locally" in cp.stderr
    assert rootless_ps(rl) == [], "--rm leaves nothing behind"
    # stored now: no pull; the streams stay apart; the exit status comes through
    cp = api.docker("run", "--rm", "alpine", "sh", "-c", "echo out; echo err >&2; exit 3")
    assert (cp.returncode, cp.stdout) == (3, "out\n")
    assert "err" in cp.stderr and "Unable to find" not in cp.stderr
    assert api.docker("run", "--rm", "alpine", "no-such-command").returncode == 127
    cp = api.docker("run", "--rm", "-e", "A=b c", "-w", "/tmp", "-u", "1000", "alpine", "sh", "-c",
                    'echo "$A" $PWD $(id -u)')
    assert cp.stdout == "b c /tmp 1000\n"
    # without --rm the container stays, exited, in rootless ps; its status is kept
    cp = api.docker("run", "--name", "kept", "alpine", "sh", "-c", "exit 9")
    assert cp.returncode == 9
    [c] = rootless_ps(rl)
    assert c["Names"] == ["kept"] and c["ExitCode"] == 9


def test_run_detached_with_port_and_labels(api: Service, rl: RootlessEnv) -> None:
    port = free_port()
    cid = serve_http(rl, "web", port, via=api)
    assert [c["Id"] for c in rootless_ps(rl)] == [cid], "a container docker made is in rootless ps"
    assert rl("logs", "web", check=True).stdout == "started\n"
    assert rl("port", "web", check=True).stdout.strip() == f"80/tcp -> 127.0.0.1:{port}"
    assert api.docker("port", "web", check=True).stdout.strip() == f"80/tcp -> 127.0.0.1:{port}"
    rl("stop", "-t", "1", "web", check=True)
    assert api.docker("ps", "-q").stdout == ""
    assert api.docker("ps", "-aq", "--filter", "status=exited").stdout.strip() == cid[:12]
    api.docker("start", "web", check=True)
    assert api.docker("ps", "-q").stdout.strip() == cid[:12]
    api.docker("rm", "-f", "web", check=True)
    # labels and the restart policy are kept; label filters find them
    api.docker("create", "--name", "lab", "--label", "com.example.role=db", "--restart", "on-failure:3",
               "alpine", "true", check=True)
    assert api.docker("ps", "-aq", "--filter", "label=com.example.role=db").stdout.strip() != ""
    assert api.docker("ps", "-aq", "--filter", "label=com.example.role=web").stdout.strip() == ""
    insp = json.loads(api.docker("inspect", "lab", check=True).stdout)[0]
    # the image's labels under the client's, as Docker shows them
    assert insp["Config"]["Labels"] == {"com.example.role": "db", "org.opencontainers.image.version": "3.21.0"}
    assert insp["HostConfig"]["RestartPolicy"] == {"Name": "on-failure", "MaximumRetryCount": 3}
    assert [c["Names"] for c in rootless_ps(rl)] == [["lab"]]
    native = json.loads(rl("inspect", "lab", check=True).stdout)[0]
    assert native["Config"]["Labels"]["com.example.role"] == "db", "the labels are the engine's"
    cp = api.docker("start", "-a", "lab")
    assert cp.returncode == 0
    api.docker("rename", "lab", "lab2", check=True)
    assert [c["Names"] for c in rootless_ps(rl)] == [["lab2"]]
    cp = api.docker("run", "--blkio-weight", "300", "alpine", "true")
    assert cp.returncode == 125 and "BlkioWeight" in cp.stderr, "an unsupported field is refused, by name"
    assert api.docker("container", "prune", "-f", check=True).returncode == 0
    assert rootless_ps(rl) == []


def test_run_confinement_health_and_shared_namespaces(api: Service, rl: RootlessEnv) -> None:
    """HostConfig's ulimits, sysctls, groups, /dev/shm size, devices and --pid/--ipc/--uts/--network
    container:NAME, and Config.Healthcheck, as `rootless run`'s flags give them."""
    cp = api.docker("run", "--rm", "--ulimit", "nofile=512:1024", "--sysctl", "net.ipv4.ip_unprivileged_port_start=80",
                    "--shm-size", "8m", "--group-add", "1234", "--device", "/dev/fuse", "alpine", "sh", "-c",
                    "ulimit -Sn; ulimit -Hn; cat /proc/sys/net/ipv4/ip_unprivileged_port_start; id -G; "
                    "df -k /dev/shm | tail -n 1 | awk '{print $2}'; test -c /dev/fuse && echo fuse", check=True)
    lines = cp.stdout.split("\n")
    assert lines[:3] == ["512", "1024", "80"] and "1234" in lines[3].split() and lines[4:6] == ["8192", "fuse"], \
        cp.stdout
    cp = api.docker("run", "--rm", "--sysctl", "kernel.pid_max=100", "alpine", "true")
    assert cp.returncode == 125 and "pid_max" in cp.stderr, "the engine's check answers, in one line"
    # another container's namespaces, by name
    api.docker("run", "-d", "--name", "host1", "alpine", "sleep", "300", check=True)
    cp = api.docker("run", "--rm", "--network", "container:host1", "--pid", "container:host1", "--ipc",
                    "container:host1", "alpine", "sh", "-c",
                    "ps -o comm | grep -c sleep; ip -o -4 addr show | grep -c 10.0.2; readlink /proc/1/ns/ipc",
                    check=True)
    host1 = json.loads(rl("inspect", "host1", check=True).stdout)[0]["State"]["Pid"]
    assert cp.stdout.split() == ["1", "1", os.readlink(f"/proc/{host1}/ns/ipc")], cp.stdout
    # a health check from the create body, seen by rootless
    api.docker("run", "-d", "--name", "hc", "--health-cmd", "test -e /tmp/ok", "--health-interval", "1s",
               "--health-retries", "1", "alpine", "sh", "-c", "touch /tmp/ok; exec sleep 300", check=True)
    status = ""
    for _ in range(60):
        status = api.docker("inspect", "-f", "{{.State.Health.Status}}", "hc").stdout.strip()
        if status == "healthy":
            break
        time.sleep(0.5)
    assert status == "healthy"
    assert rl("healthcheck", "run", "hc").returncode == 0


def test_wait_conditions(api: Service, rl: RootlessEnv) -> None:
    api.docker("run", "-d", "--name", "w", "alpine", "sh", "-c", "sleep 1; exit 4", check=True)
    t0 = time.monotonic()
    cp = api.docker("wait", "w", check=True)
    assert cp.stdout.strip() == "4" and time.monotonic() - t0 > 0.3
    status, body = api.json("POST", "/v1.44/containers/w/wait?condition=not-running")
    assert (status, body["StatusCode"]) == (200, 4)
    status, body = api.json("POST", "/v1.44/containers/w/wait?condition=bogus")
    assert status == 400


def test_run_it_on_a_terminal(api: Service, rl: RootlessEnv) -> None:
    t = Tty(DockerTerm(rl, api), [DOCKER, "run", "-it", "--rm", "--name", "fg", "alpine", "sh"])  # type: ignore[arg-type]
    try:
        t.wait_for("# ")
        until_resized(t)
        t.type_line("tty; echo marker > /tmp/m; read x; echo got-$x")
        t.wait_for("/dev/pts/")
        # the attached container is entered like any other
        assert api.docker("exec", "fg", "cat", "/tmp/m", check=True).stdout == "marker\n"
        assert rl("exec", "fg", "cat", "/tmp/m", check=True).stdout == "marker\n"
        t.type_line("typed")
        t.wait_for("got-typed")
        t.type_line("exit 4")
        assert t.wait_exit(30) == 4
    finally:
        t.close()
    assert rootless_ps(rl) == []
    cp = api.docker("run", "-i", "--rm", "alpine", "tr", "a-z", "A-Z", input="piped\n")
    assert (cp.returncode, cp.stdout) == (0, "PIPED\n")


SDK_RUN = r"""
import json, sys
import docker

client = docker.DockerClient(base_url=sys.argv[1], version="auto")
out = {"run": client.containers.run("alpine", ["sh", "-c", "echo sdk-run"], remove=True).decode()}
c = client.containers.run("alpine", ["sh", "-c", "for i in 1 2 3; do echo n$i; sleep 0.2; done; exit 2"],
                          detach=True, name="sdkd", labels={"k": "v"}, environment={"E": "1"})
out["stream"] = b"".join(c.logs(stream=True, follow=True)).decode()
out["wait"] = c.wait()["StatusCode"]
out["labels"] = client.containers.get("sdkd").labels
out["listed"] = [x.name for x in client.containers.list(all=True, filters={"label": "k=v"})]
c.remove()
print(json.dumps(out))
"""


def test_python_sdk_runs_containers(api: Service, rl: RootlessEnv) -> None:
    need(Path("/usr/lib/python3/dist-packages/docker").is_dir(), "python3-docker is not installed")
    cp = subprocess.run(["/usr/bin/python3", "-c", SDK_RUN, f"unix://{api.sock}"], env=rl.env, capture_output=True,
                        text=True, timeout=120)
    assert cp.returncode == 0, cp.stderr
    out = json.loads(cp.stdout)
    assert out["run"] == "sdk-run\n"
    assert out["stream"] == "n1\nn2\nn3\n" and out["wait"] == 2
    assert out["labels"]["k"] == "v" and out["listed"] == ["sdkd"]
    assert rootless_ps(rl) == []


def test_followed_log_outlives_the_container(api: Service, rl: RootlessEnv) -> None:
    """docker-py's run(): start, follow the logs (headers only), wait, remove, then read the body.
    The log must exist the moment the start has answered: a follower that found none then kept
    polling for it, and lost the whole output when the container was removed before its next look."""
    api.docker("pull", "alpine", check=True)
    for _ in range(3):
        status, body = api.json("POST", "/v1.44/containers/create", {"Image": "alpine", "Cmd": ["echo", "hi"]})
        assert status == 201, body
        cid = body["Id"]
        log_path = api.json("GET", f"/v1.44/containers/{cid}/json")[1]["LogPath"]
        assert api.request("POST", f"/v1.44/containers/{cid}/start")[0] == 204
        assert Path(log_path).exists(), "the log is there once the start has answered"
        conn = UnixHTTP(str(api.sock))
        try:
            conn.request("GET", f"/v1.44/containers/{cid}/logs?follow=1&stdout=1&stderr=1")
            r = conn.getresponse()
            assert api.json("POST", f"/v1.44/containers/{cid}/wait")[1]["StatusCode"] == 0
            assert api.request("DELETE", f"/v1.44/containers/{cid}")[0] == 204
            assert r.read() == b"\x01\0\0\0\0\0\0\x03hi\n"
        finally:
            conn.close()


def test_events(api: Service, rl: RootlessEnv) -> None:
    since = str(time.time() - 1)
    api.docker("run", "--name", "ev", "--label", "app=x", "alpine", "true", check=True)
    rl("rm", "ev", check=True)
    until = str(time.time() + 1)
    cp = api.docker("events", "--since", since, "--until", until, "--format", "{{json .}}",
                    "--filter", "type=container", "--filter", "label=app=x", check=True)
    got = [json.loads(line) for line in cp.stdout.splitlines()]
    actions = [e["Action"] for e in got]
    assert "create" in actions and "start" in actions and "die" in actions and actions[-1] == "remove", actions
    assert all(e["Actor"]["Attributes"]["app"] == "x" and e["Actor"]["Attributes"]["name"] == "ev" for e in got)
    # the filter drops what does not match
    cp = api.docker("events", "--since", since, "--until", until, "--filter", "label=app=other", check=True)
    assert cp.stdout == ""
