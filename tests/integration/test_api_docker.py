"""The docker CLI (Debian's docker.io 20.10, client only) against `rootless system service`,
as the unprivileged user, on containers `rootless run` made: what the CLI made, docker sees
and handles, and the other way round."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.apiharness import DOCKER, Service, have_docker
from tests.integration.conftest import BASIC_PASSWORD, BASIC_USER, need
from tests.integration.harness import AuthRegistries, RootlessEnv, Tty, free_port


@pytest.fixture
def api(rl: RootlessEnv) -> Iterator[Service]:
    need(have_docker(), "docker.io is not installed (apt-get install docker.io)")
    svc = Service(rl)
    yield svc
    rl("rm", "-f", "-a")
    svc.stop()


def rootless_ps(rl: RootlessEnv) -> list[dict[str, object]]:
    return json.loads(rl("ps", "-a", "--format", "json", check=True).stdout or "[]")  # type: ignore[no-any-return]


def serve_http(rl: RootlessEnv, name: str, port: int, *, via: Service | None = None) -> str:
    """A busybox httpd container publishing 80 on 127.0.0.1:*port* (made by docker through
    *via*, else by `rootless run -d`); its ID once it answers."""
    args = ["-d", "--name", name, "-p", f"127.0.0.1:{port}:80", "alpine", "sh", "-c",
            "mkdir -p /srv && echo hello-from-web > /srv/index.html && echo started && exec httpd -f -p 80 -h /srv"]
    cid = (via.docker("run", *args, check=True) if via else rl("run", *args, check=True)).stdout.strip()
    body = b""
    for _ in range(100):
        try:
            body = urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2).read()
            break
        except OSError:
            time.sleep(0.1)
    assert body == b"hello-from-web\n"
    return cid


def test_ps_logs_stop_rm(api: Service, rl: RootlessEnv) -> None:
    port = free_port()
    cid = serve_http(rl, "web", port)
    ps = api.docker("ps", "--format", "{{.ID}} {{.Names}} {{.Ports}} {{.Status}}", check=True).stdout
    assert f"{cid[:12]} web 127.0.0.1:{port}->80/tcp Up" in ps
    assert api.docker("ps", "-q", "--filter", "name=nomatch", check=True).stdout == ""
    assert api.docker("logs", "web", check=True).stdout == "started\n"
    assert api.docker("logs", "-t", "web", check=True).stdout.endswith("Z started\n")
    follow = subprocess.Popen([DOCKER, "logs", "-f", "web"], env={**rl.env, **api.docker_env},
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(0.5)
    assert follow.poll() is None, "logs -f follows while the container runs"
    assert json.loads(api.docker("inspect", "web", check=True).stdout)[0]["State"]["Running"] is True
    t0 = time.monotonic()
    api.docker("stop", "-t", "1", "web", check=True)
    assert time.monotonic() - t0 < 8
    out, _ = follow.communicate(timeout=10)
    assert out == "started\n", "logs -f ends when the container does"
    insp = json.loads(api.docker("inspect", "web", check=True).stdout)[0]
    assert insp["State"]["Status"] == "exited" and insp["Name"] == "/web" and insp["Id"] == cid
    assert rootless_ps(rl)[0]["State"] == "exited", "docker stop is rootless stop"
    cp = api.docker("rm", "web")
    assert cp.stdout.strip() == "web"
    assert rootless_ps(rl) == []
    cp = api.docker("rm", "web")
    assert cp.returncode == 1 and "No such container: web" in cp.stderr


def test_exec_and_cp(api: Service, rl: RootlessEnv, tmp_path: Path) -> None:
    rl("run", "-d", "--name", "box", "alpine", "sleep", "300", check=True)
    assert api.docker("exec", "box", "cat", "/etc/alpine-release", check=True).stdout.strip() == "3.21.0"
    cp = api.docker("exec", "box", "sh", "-c", "echo to-out; echo to-err >&2; exit 7")
    assert (cp.returncode, cp.stdout, cp.stderr) == (7, "to-out\n", "to-err\n")
    cp = api.docker("exec", "-i", "box", "tr", "a-z", "A-Z", input="shout\n")
    assert cp.stdout == "SHOUT\n"
    assert api.docker("exec", "box", "no-such-command").returncode == 127
    assert api.docker("exec", "-e", "X=1", "-w", "/tmp", "box", "sh", "-c", "echo $X $PWD").stdout == "1 /tmp\n"
    src = tmp_path / "note.txt"
    src.write_text("copied in\n")
    api.docker("cp", str(src), "box:/tmp/", check=True)
    assert rl("exec", "box", "cat", "/tmp/note.txt", check=True).stdout == "copied in\n"
    api.docker("cp", str(src), "box:/tmp/renamed.txt", check=True)
    assert rl("exec", "box", "cat", "/tmp/renamed.txt", check=True).stdout == "copied in\n"
    rl("exec", "box", "sh", "-c", "mkdir /tmp/d && echo x > /tmp/d/f", check=True)
    out = tmp_path / "out"
    out.mkdir()
    api.docker("cp", "box:/tmp/d", str(out), check=True)
    assert (out / "d" / "f").read_text() == "x\n"
    cp = api.docker("cp", "box:/nonexistent", str(out))
    assert cp.returncode != 0 and "nonexistent" in cp.stderr
    # a stopped container's files are reachable too
    rl("stop", "-t", "0", "box", check=True)
    api.docker("cp", "box:/tmp/note.txt", str(out / "after-stop.txt"), check=True)
    assert (out / "after-stop.txt").read_text() == "copied in\n"


def test_images_pull_tag_rmi(api: Service, rl: RootlessEnv) -> None:
    cp = api.docker("pull", "alpine:3.20", check=True)
    assert "Status: Downloaded newer image for alpine:3.20" in cp.stdout
    api.docker("tag", "alpine:3.20", "mine/alp:v1", check=True)
    images = api.docker("images", "--format", "{{.Repository}}:{{.Tag}}", check=True).stdout.split()
    assert "alpine:3.20" in images and "mine/alp:v1" in images
    assert any(n.endswith("mine/alp:v1") for i in rl.images_json() for n in i["Names"]), "tagged in the store"
    assert api.docker("images", "-q", "mine/alp", check=True).stdout.strip() != ""
    inspect = json.loads(api.docker("image", "inspect", "alpine:3.20", check=True).stdout)[0]
    assert inspect["Config"]["Labels"]["org.opencontainers.image.version"] == "3.20.3"
    cp = api.docker("rmi", "mine/alp:v1", check=True)
    assert "Untagged: mine/alp:v1" in cp.stdout
    cp = api.docker("rmi", "alpine:3.20", check=True)
    assert "Deleted: sha256:" in cp.stdout
    cp = api.docker("rmi", "nosuch:image")
    assert cp.returncode != 0 and "No such image" in cp.stderr
    assert "alpine:3.20" not in api.docker("images", "--format", "{{.Repository}}:{{.Tag}}").stdout
    cp = api.docker("pull", "nosuch/image")
    assert cp.returncode != 0 and "nosuch/image" in cp.stderr


def until_resized(t: Tty) -> None:
    """The client's terminal size (tmux's 160x40) reaches the shell: the client sends it
    just after the start, so it may take a moment."""
    for _ in range(20):
        t.type_line("echo rows=$(stty size)")
        time.sleep(0.3)
        if "rows=40 160" in t.screen():
            return
    raise AssertionError(f"the terminal size never reached the container:\n{t.screen()}")


class DockerTerm:
    """What Tty needs of an environment, with the docker client's variables added."""

    def __init__(self, rl: RootlessEnv, api: Service) -> None:
        self.env = {**rl.env, **api.docker_env}
        self.base = rl.base
        self.home = rl.home


def test_exec_it_on_a_terminal(api: Service, rl: RootlessEnv) -> None:
    rl("run", "-dit", "--name", "term", "alpine", "sh", check=True)
    x = Tty(DockerTerm(rl, api), [DOCKER, "exec", "-it", "term", "sh"])  # type: ignore[arg-type]
    try:
        x.wait_for("# ")
        x.type_line("echo in-exec-$((6*7)); tty")
        x.wait_for("in-exec-42")
        x.wait_for("/dev/pts/")
        until_resized(x)
        x.type_line("exit 5")
        assert x.wait_exit(30) == 5
    finally:
        x.close()


def test_volumes(api: Service, rl: RootlessEnv) -> None:
    api.docker("volume", "create", "--label", "team=db", "vol1", check=True)
    assert "vol1" in rl("volume", "ls", "-q", check=True).stdout.split(), "docker volume create is rootless's"
    rl("volume", "create", "vol2", check=True)
    assert sorted(api.docker("volume", "ls", "-q", check=True).stdout.split()) == ["vol1", "vol2"]
    assert api.docker("volume", "ls", "-q", "--filter", "label=team=db", check=True).stdout.split() == ["vol1"]
    info = json.loads(api.docker("volume", "inspect", "vol1", check=True).stdout)[0]
    assert info["Labels"] == {"team": "db"} and info["Driver"] == "local" and info["Mountpoint"]
    rl("run", "-d", "--name", "user", "-v", "vol1:/data", "alpine", "sleep", "300", check=True)
    cp = api.docker("volume", "rm", "vol1")
    assert cp.returncode != 0 and "in use" in cp.stderr
    assert api.docker("volume", "prune", "-f", check=True).stdout.count("vol2") == 1
    rl("rm", "-f", "user", check=True)
    api.docker("volume", "rm", "vol1", check=True)
    assert api.docker("volume", "ls", "-q", check=True).stdout == ""
    cp = api.docker("volume", "inspect", "vol1")
    assert cp.returncode != 0 and "no such volume" in cp.stderr.lower()
    # an anonymous volume (-v PATH) goes with its container under rm -v
    api.docker("run", "--name", "anon", "-v", "/scratch", "alpine", "touch", "/scratch/x", check=True)
    [anon] = api.docker("volume", "ls", "-q", check=True).stdout.split()
    assert json.loads(rl("volume", "inspect", anon, check=True).stdout)[0]["Anonymous"] is True
    api.docker("rm", "-v", "anon", check=True)
    assert api.docker("volume", "ls", "-q", check=True).stdout == ""


def nc_get(host: str, timeout: int = 5) -> str:
    """A shell command fetching http://HOST/ with busybox nc (its wget segfaults here): the body's last line."""
    return f"printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w {timeout} {host} 80 | tail -n 1"


HTTPD = "mkdir -p /w && echo hello-$0 > /w/index.html && exec httpd -f -p 80 -h /w"


def test_networks(api: Service, rl: RootlessEnv) -> None:
    need(Path("/usr/bin/slirp4netns").exists() and Path("/usr/sbin/iptables").exists(),
         "user networks need slirp4netns and iptables")
    api.docker("network", "create", "--label", "team=web", "front", check=True)
    rl("network", "create", "back", check=True)
    try:
        assert rl("network", "exists", "front").returncode == 0, "docker network create is rootless's"
        ls = api.docker("network", "ls", "--format", "{{.Name}} {{.Driver}} {{.Scope}}", check=True).stdout
        assert sorted(ls.splitlines()) == ["back bridge local", "bridge bridge local", "front bridge local",
                                           "host host local", "none null local"]
        assert api.docker("network", "ls", "-q", "--filter", "label=team=web", check=True).stdout.strip() \
            == json.loads(rl("network", "inspect", "front", check=True).stdout)[0]["id"][:12]
        names = api.docker("network", "ls", "--format", "{{.Name}}", "--filter", "type=custom", check=True).stdout
        assert sorted(names.split()) == ["back", "front"]
        net = json.loads(api.docker("network", "inspect", "front", check=True).stdout)[0]
        assert net["Driver"] == "bridge" and net["Labels"] == {"team": "web"}
        [pool] = net["IPAM"]["Config"]
        assert pool["Subnet"].startswith("10.89.") and pool["Gateway"].startswith("10.89.")
        # a container docker runs on the network, with an alias, is reached by that alias
        api.docker("run", "-d", "--name", "web", "--network", "front", "--network-alias", "www", "alpine", "sh",
                   "-c", HTTPD, "web", check=True)
        out = ""
        for _ in range(50):
            out = api.docker("run", "--rm", "--network", "front", "alpine", "sh", "-c", nc_get("www")).stdout
            if out.strip() == "hello-web":
                break
            time.sleep(0.2)
        assert out.strip() == "hello-web"
        ip = api.docker("inspect", "-f", "{{.NetworkSettings.Networks.front.IPAddress}}", "web", check=True)
        ip_addr = ip.stdout.strip()
        assert ip_addr.startswith(pool["Subnet"].rsplit(".", 1)[0] + "."), ip_addr
        native = json.loads(rl("inspect", "web", check=True).stdout)[0]
        assert native["NetworkSettings"]["Networks"]["front"]["IPAddress"] == ip_addr
        aliases = json.loads(api.docker("inspect", "-f", "{{json .NetworkSettings.Networks.front.Aliases}}", "web",
                                        check=True).stdout)
        assert "www" in aliases and native["Id"][:12] in aliases
        members = json.loads(api.docker("network", "inspect", "front", check=True).stdout)[0]["Containers"]
        assert [(m["Name"], m["IPv4Address"].split("/")[0]) for m in members.values()] == [("web", ip_addr)]
        # connect and disconnect a running container
        api.docker("run", "-d", "--name", "roamer", "--network", "back", "alpine", "sleep", "300", check=True)
        assert api.docker("exec", "roamer", "sh", "-c", nc_get("www", 2)).stdout.strip() == ""
        api.docker("network", "connect", "--alias", "wanderer", "front", "roamer", check=True)
        assert api.docker("exec", "roamer", "sh", "-c", nc_get("www"), check=True).stdout.strip() == "hello-web"
        assert api.docker("exec", "web", "sh", "-c", "nslookup wanderer >/dev/null && echo yes").stdout.strip() \
            == "yes"
        cp = api.docker("network", "connect", "front", "roamer")
        assert cp.returncode != 0 and "already connected" in cp.stderr
        api.docker("network", "disconnect", "front", "roamer", check=True)
        assert api.docker("exec", "roamer", "sh", "-c", nc_get("www", 2)).stdout.strip() == ""
        # what cannot be done says so, in one line
        cp = api.docker("network", "rm", "front")
        assert cp.returncode != 0 and "web" in cp.stderr and rl("network", "exists", "front").returncode == 0
        cp = api.docker("network", "rm", "bridge")
        assert cp.returncode != 0 and "pre-defined" in cp.stderr
        cp = api.docker("network", "create", "front")
        assert cp.returncode != 0 and "already exists" in cp.stderr
        api.docker("network", "create", "--subnet", "10.95.7.0/24", "--gateway", "10.95.7.254", "--internal", "iso",
                   check=True)
        iso = json.loads(rl("network", "inspect", "iso", check=True).stdout)[0]
        assert iso["subnets"] == [{"subnet": "10.95.7.0/24", "gateway": "10.95.7.254"}] and iso["internal"] is True
        iso_d = json.loads(api.docker("network", "inspect", "iso", check=True).stdout)[0]
        assert iso_d["Internal"] is True and iso_d["IPAM"]["Config"] == [{"Subnet": "10.95.7.0/24",
                                                                          "Gateway": "10.95.7.254"}]
        api.docker("network", "rm", "iso", check=True)
        cp = api.docker("network", "create", "--subnet", "10.95.7.0/24", "--ip-range", "10.95.7.0/25", "x")
        assert cp.returncode != 0 and "IPRange" in cp.stderr
        cp = api.docker("network", "create", "--driver", "overlay", "x")
        assert cp.returncode != 0 and "Driver" in cp.stderr and rl("network", "exists", "x").returncode != 0
        cp = api.docker("run", "--rm", "--network", "nosuch", "alpine", "true")
        assert cp.returncode == 125 and "nosuch" in cp.stderr
        cp = api.docker("network", "inspect", "nosuch")
        assert cp.returncode != 0 and "No such network: nosuch" in cp.stderr
        # prune: the networks no container uses
        api.docker("rm", "-f", "roamer", check=True)
        api.docker("network", "create", "spare", check=True)
        out = api.docker("network", "prune", "-f", check=True).stdout
        assert sorted(out.split()[2:]) == ["back", "spare"], out
        assert api.docker("network", "ls", "-q", "--filter", "type=custom", check=True).stdout.count("\n") == 1
        api.docker("rm", "-f", "web", check=True)
        api.docker("network", "rm", "front", check=True)
        assert rl("network", "exists", "front").returncode != 0
    finally:
        rl("rm", "-f", "web", "roamer")
        rl("network", "rm", "front", "back", "spare")


SDK = r"""
import json, sys
import docker

client = docker.DockerClient(base_url=sys.argv[1], version="auto")
out = {"api": client.version()["ApiVersion"]}
box = client.containers.get("sdkbox")
out["status"] = box.status
out["names"] = [c.name for c in client.containers.list()]
res = box.exec_run(["sh", "-c", "echo sdk-exec; exit 3"])
out["exec"] = [res.exit_code, res.output.decode()]
out["logs"] = box.logs().decode()
out["streamed"] = b"".join(box.logs(stream=True, follow=False)).decode()
out["pulled"] = client.images.pull("alpine", tag="3.20").tags
out["images"] = sorted(t for i in client.images.list() for t in i.tags)
box.stop(timeout=1)
box.reload()
out["after_stop"] = box.status
box.remove()
print(json.dumps(out))
"""


def test_python_sdk(api: Service, rl: RootlessEnv) -> None:
    """Debian's python3-docker (the Docker SDK for Python) on containers and images."""
    need(Path("/usr/lib/python3/dist-packages/docker").is_dir(), "python3-docker is not installed")
    rl("run", "-d", "--name", "sdkbox", "alpine", "sh", "-c", "echo line1; echo line2 >&2; exec sleep 300",
       check=True)
    cp = subprocess.run(["/usr/bin/python3", "-c", SDK, f"unix://{api.sock}"], env=rl.env, capture_output=True,
                        text=True, timeout=120)
    assert cp.returncode == 0, cp.stderr
    out = json.loads(cp.stdout)
    assert out["api"] == "1.44" and out["status"] == "running" and out["names"] == ["sdkbox"]
    assert out["exec"] == [3, "sdk-exec\n"]
    assert out["logs"] == out["streamed"] == "line1\nline2\n"
    assert "alpine:3.20" in out["pulled"] and "alpine:3.20" in out["images"]
    assert out["after_stop"] == "exited"
    assert rootless_ps(rl) == []


def test_login_then_pull(api: Service, rl: RootlessEnv, auth_registries: AuthRegistries) -> None:
    host = auth_registries.basic.host
    cp = api.docker("pull", f"{host}/private/busybox")
    assert cp.returncode != 0, "the registry wants credentials"
    cp = api.docker("login", "-u", BASIC_USER, "-p", "wrong", host)
    assert cp.returncode != 0 and "Login Succeeded" not in cp.stdout
    cp = api.docker("login", "-u", BASIC_USER, "-p", BASIC_PASSWORD, host)
    assert cp.returncode == 0 and "Login Succeeded" in cp.stdout, cp.stderr
    api.docker("pull", f"{host}/private/busybox", check=True)
    assert rl("login", "--get-login", host, check=True).stdout.strip() == BASIC_USER, "kept as rootless login's"
