"""Images through `rootless system service`: `DOCKER_BUILDKIT=0 docker build` and the SDK's
images.build (the classic builder protocol over rootless's builder), push, save, load and import
against the test registry, and commit, export, diff, pause and system df, as the unprivileged user
with the real docker CLI."""

from __future__ import annotations

import io
import json
import os
import re
import socket
import subprocess
import tarfile
import time
import urllib.request
import uuid
from pathlib import Path

import pytest

from tests.integration.apiharness import Service, docker_service
from tests.integration.conftest import need
from tests.integration.harness import RegistryProxy, RootlessEnv

api = pytest.fixture(docker_service, name="api")


def _names(rl: RootlessEnv) -> set[str]:
    return {n for i in rl.images_json() for n in i["Names"]}


def _context(tmp_path: Path) -> Path:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "note.txt").write_text("a note from the context\n")
    (ctx / "secret.key").write_text("not for the image\n")
    (ctx / ".dockerignore").write_text("*.key\n")
    (ctx / "Dockerfile").write_text(
        "FROM alpine AS base\n"
        "ARG WHO=nobody\n"
        "COPY . /src/\n"
        "RUN echo built-by-$WHO > /who && cat /src/note.txt && echo to-stderr >&2\n"
        "CMD [\"cat\", \"/who\"]\n"
        "FROM base AS extra\n"
        "RUN echo extra > /extra\n")
    (ctx / "Dockerfile.fail").write_text("FROM alpine\nRUN echo failing; exit 3\n")
    return ctx


def test_docker_build(api: Service, rl: RootlessEnv, tmp_path: Path) -> None:
    ctx = _context(tmp_path)
    cp = api.docker("build", "-t", "app", "-t", "app:v2", "--build-arg", "WHO=docker", "--label", "made=api",
                    "--target", "base", str(ctx), timeout=300, check=True)
    assert "a note from the context\n" in cp.stdout and "to-stderr\n" in cp.stdout, "the RUN's output is streamed"
    built = re.search(r"^Successfully built ([0-9a-f]{12})$", cp.stdout, re.M)
    assert built, cp.stdout
    assert cp.stdout.rstrip().endswith("Successfully tagged app:latest\nSuccessfully tagged app:v2"), cp.stdout
    assert {"docker.io/library/app:latest", "docker.io/library/app:v2"} <= _names(rl), "in rootless's store"
    assert api.docker("run", "--rm", "app", check=True).stdout == "built-by-docker\n", "the target stage's CMD"
    assert api.docker("run", "--rm", "app", "ls", "/src").stdout.split() == ["Dockerfile", "Dockerfile.fail",
                                                                            "note.txt"], ".dockerignore kept out"
    assert api.docker("run", "--rm", "app", "test", "-e", "/extra").returncode == 1, "--target stopped at base"
    insp = json.loads(api.docker("image", "inspect", "app:v2", check=True).stdout)[0]
    assert insp["Id"].startswith(f"sha256:{built.group(1)}") and insp["Config"]["Labels"]["made"] == "api"
    # the same build again is cached; -q prints only the ID
    cp = api.docker("build", "-q", "-t", "app", "--build-arg", "WHO=docker", "--label", "made=api", "--target",
                    "base", str(ctx), timeout=300, check=True)
    assert cp.stdout.strip() == insp["Id"]
    # --no-cache runs the step again
    cp = api.docker("build", "--no-cache", "--build-arg", "WHO=again", "--target", "base", str(ctx), timeout=300,
                    check=True)
    assert "a note from the context" in cp.stdout and "Using cache" not in cp.stdout
    # a failing RUN: Docker's error message and the command's status; no image is left
    before = {i["Id"] for i in rl.images_json()}
    cp = api.docker("build", "-t", "broken", "-f", str(ctx / "Dockerfile.fail"), str(ctx), timeout=300)
    assert cp.returncode == 3, (cp.stdout, cp.stderr)
    assert "failing" in cp.stdout and "exited with status 3" in cp.stderr
    assert {i["Id"] for i in rl.images_json()} == before and "docker.io/library/broken:latest" not in _names(rl)
    # a Dockerfile that is not in the context: one line, not a traceback
    cp = api.docker("build", "-f", "Nope", str(ctx))
    assert cp.returncode != 0 and "Nope" in cp.stderr and "Traceback" not in cp.stderr


def test_build_rejects_what_it_cannot_do(api: Service) -> None:
    status, body = api.json("POST", "/v1.44/build?remote=https://example.com/ctx.git")
    assert status == 501 and "remote" in body["message"]
    status, body = api.json("POST", "/v1.44/build?memory=1000000", b"")
    assert status == 400 and "memory" in body["message"]
    status, body = api.json("GET", "/v1.44/images/search?term=alpine")
    assert status == 501 and "docker search" in body["message"]
    status, _, data = api.request("POST", "/v1.44/build", b"", {"Content-Type": "application/x-tar"})
    assert status == 400 and b"empty" in data
    status, _, data = api.request("POST", "/v1.44/build", b"not a tar" * 100, {"Content-Type": "application/x-tar"})
    assert status == 400 and b"build context" in data


SDK_BUILD = """
import json, sys, docker
client = docker.DockerClient(base_url=sys.argv[1])
image, logs = client.images.build(path=sys.argv[2], tag="sdkapp:1", buildargs={"WHO": "sdk"}, target="base",
                                  labels={"via": "sdk"}, rm=True)
out = {"tags": image.tags, "labels": image.labels, "streamed": "".join(c.get("stream", "") for c in logs)}
out["run"] = client.containers.run("sdkapp:1", remove=True).decode()
try:
    client.images.build(path=sys.argv[2], dockerfile="Dockerfile.fail")
except docker.errors.BuildError as e:
    out["error"] = str(e)
print(json.dumps(out))
"""


def test_python_sdk_build(api: Service, rl: RootlessEnv, tmp_path: Path) -> None:
    need(Path("/usr/lib/python3/dist-packages/docker").is_dir(), "python3-docker is not installed")
    ctx = _context(tmp_path)
    cp = subprocess.run(["/usr/bin/python3", "-c", SDK_BUILD, f"unix://{api.sock}", str(ctx)], env=rl.env,
                        capture_output=True, text=True, timeout=300)
    assert cp.returncode == 0, cp.stderr
    out = json.loads(cp.stdout)
    assert out["tags"] == ["sdkapp:1"] and out["labels"]["via"] == "sdk"
    assert "a note from the context" in out["streamed"] and "Successfully built" in out["streamed"]
    assert out["run"] == "built-by-sdk\n"
    assert "exited with status 3" in out["error"]


def test_docker_push_save_load_import(api: Service, rl: RootlessEnv, mirror: RegistryProxy, tmp_path: Path) -> None:
    repo = f"{mirror.host}/apipushed/t{uuid.uuid4().hex[:10]}"
    api.docker("pull", "alpine", check=True)
    api.docker("tag", "alpine", f"{repo}:v1", check=True)
    cp = api.docker("push", f"{repo}:v1", check=True)
    assert f"The push refers to repository [{repo}]" in cp.stdout
    assert re.search(r"^[0-9a-f]{12}: (Mounted from library/alpine|Pushed)$", cp.stdout, re.M), cp.stdout
    pushed = re.search(r"^v1: digest: (sha256:[0-9a-f]{64}) size: [1-9]\d*$", cp.stdout, re.M)
    assert pushed, cp.stdout
    with urllib.request.urlopen(urllib.request.Request(
            f"{mirror.url}/v2/{repo.partition('/')[2]}/manifests/v1", method="HEAD", headers={"Accept": ", ".join([
                "application/vnd.oci.image.manifest.v1+json",
                "application/vnd.docker.distribution.manifest.v2+json"])})) as r:
        assert r.headers["docker-content-digest"] == pushed.group(1), "in the registry, as docker push said"
    cp = api.docker("push", f"{repo}:v1", check=True)
    assert re.search(r"^[0-9a-f]{12}: Layer already exists$", cp.stdout, re.M), cp.stdout
    cp = api.docker("push", f"{mirror.host}/apipushed/nothing:v1")
    assert cp.returncode != 0 and "does not exist locally" in cp.stderr
    # save → rmi → load: the same image, runnable
    alpine_id = json.loads(api.docker("image", "inspect", "alpine", check=True).stdout)[0]["Id"]
    tar = tmp_path / "alpine.tar"
    api.docker("save", "-o", str(tar), "alpine", check=True)
    with tarfile.open(tar) as t:
        member = t.extractfile("manifest.json")
        assert member is not None
        assert json.load(member)[0]["RepoTags"] == ["alpine:latest"]
    api.docker("rmi", "alpine", f"{repo}:v1", check=True)
    assert alpine_id not in {f"sha256:{i['Id']}" for i in rl.images_json()}
    cp = api.docker("load", "-i", str(tar), check=True)
    assert cp.stdout == "Loaded image: alpine:latest\n"
    assert json.loads(api.docker("image", "inspect", "alpine", check=True).stdout)[0]["Id"] == alpine_id
    assert api.docker("run", "--rm", "alpine", "echo", "loaded", check=True).stdout == "loaded\n"
    cp = api.docker("load", input="not an archive\n" * 100)
    assert cp.returncode != 0 and "load:" in cp.stderr and "Traceback" not in cp.stderr
    # import: a tarball of a file tree → a one-layer image with the changes given
    tree = tmp_path / "tree.tar"
    with tarfile.open(tree, "w") as t:
        data = b"imported\n"
        info = tarfile.TarInfo("hello.txt")
        info.size = len(data)
        t.addfile(info, io.BytesIO(data))
    cp = api.docker("import", "-c", "CMD [\"/hello.txt\"]", "-m", "from the API", str(tree), "imported:v1",
                    check=True)
    assert re.fullmatch(r"sha256:[0-9a-f]{64}\n", cp.stdout)
    insp = json.loads(api.docker("image", "inspect", "imported:v1", check=True).stdout)[0]
    assert insp["Config"]["Cmd"] == ["/hello.txt"] and len(insp["RootFS"]["Layers"]) == 1
    assert "docker.io/library/imported:v1" in _names(rl)


def test_diff_commit_export_pause_df(api: Service, rl: RootlessEnv, tmp_path: Path) -> None:
    api.docker("run", "-d", "--name", "snap", "alpine", "sh", "-c",
               "echo changed > /etc/alpine-release; mkdir /made; touch /made/f; rm /etc/os-release; touch /ready; "
               "exec sleep 300",
               check=True)
    for _ in range(100):
        if api.docker("exec", "snap", "test", "-e", "/ready").returncode == 0:
            break
        time.sleep(0.1)
    lines = set(api.docker("diff", "snap", check=True).stdout.splitlines())
    assert {"C /etc", "C /etc/alpine-release", "D /etc/os-release", "A /made", "A /made/f"} <= lines, lines
    assert set(rl("diff", "snap", check=True).stdout.splitlines()) == lines, "docker diff is rootless diff"
    cp = api.docker("commit", "-c", 'CMD ["cat", "/etc/alpine-release"]', "-m", "a snapshot", "snap", "snapped:v1",
                    check=True)
    assert re.fullmatch(r"sha256:[0-9a-f]{64}\n", cp.stdout)
    assert "docker.io/library/snapped:v1" in _names(rl)
    assert api.docker("run", "--rm", "snapped:v1", check=True).stdout == "changed\n", "the change and the CMD"
    assert api.docker("run", "--rm", "snapped:v1", "ls", "/made").stdout == "f\n"
    comments = api.docker("history", "--format", "{{.Comment}}", "snapped:v1", check=True).stdout.splitlines()
    assert comments[0] == "a snapshot"
    cp = api.docker("commit", "-c", "RUN true", "snap")
    assert cp.returncode != 0 and "changes" in cp.stderr and "Traceback" not in cp.stderr
    out = tmp_path / "snap.tar"
    api.docker("export", "-o", str(out), "snap", check=True)
    with tarfile.open(out) as t:
        names = set(t.getnames())
        release = t.extractfile("etc/alpine-release")
        assert release is not None and release.read() == b"changed\n"
    assert "made/f" in names and "etc/os-release" not in names and "bin/busybox" in names
    # pause needs a cgroup v2 freezer: it freezes where there is one, else one clear line
    cp = api.docker("pause", "snap")
    if cp.returncode == 0:
        assert json.loads(api.docker("inspect", "snap", check=True).stdout)[0]["State"]["Status"] == "paused"
        api.docker("unpause", "snap", check=True)
        assert api.docker("exec", "snap", "true").returncode == 0
    else:
        assert "freezer" in cp.stderr and len(cp.stderr.strip().splitlines()) == 1, cp.stderr
    assert api.docker("pause", "nosuch").returncode == 1
    # docker system df reads GET /system/df
    df = api.docker("system", "df", check=True).stdout
    assert re.search(r"^Containers\s+1\s+1\s", df, re.M), df
    assert re.search(r"^Images\s+[2-9]\s+1\s", df, re.M), df
    assert re.search(r"^Local Volumes\s+0\s+0\s", df, re.M), df


def _sleepers(marker: str) -> list[int]:
    """PIDs of this user's processes whose command line holds *marker*."""
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if marker.encode() in (d / "cmdline").read_bytes() and d.stat().st_uid == os.getuid():
                    out.append(int(d.name))
            except OSError:
                pass
    return out


def test_a_client_that_leaves_interrupts_the_build(api: Service, rl: RootlessEnv, tmp_path: Path) -> None:
    """docker build ends when its client goes (Ctrl-C): the RUN's container is stopped and no
    image is made; the service serves on."""
    marker = f"sleep-{uuid.uuid4().hex[:8]}"
    context = io.BytesIO()
    with tarfile.open(fileobj=context, mode="w") as t:
        data = f"FROM alpine\nRUN echo started; sleep 120; : {marker}\n".encode()
        info = tarfile.TarInfo("Dockerfile")
        info.size = len(data)
        t.addfile(info, io.BytesIO(data))
    body = context.getvalue()
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(str(api.sock))
    s.sendall(b"POST /v1.44/build?t=never-made HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-tar\r\n"
              + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
    s.settimeout(120)
    seen = b""
    while b"started" not in seen:
        chunk = s.recv(65536)
        assert chunk, seen
        seen += chunk
    for _ in range(100):
        if _sleepers(marker):
            break
        time.sleep(0.1)
    assert _sleepers(marker), "the RUN step runs (its shell's command line holds the marker)"
    s.close()
    for _ in range(200):
        if not _sleepers(marker):
            break
        time.sleep(0.1)
    assert not _sleepers(marker), "the RUN step's container was stopped when the client left"
    assert "docker.io/library/never-made:latest" not in _names(rl)
    assert api.request("GET", "/_ping")[0] == 200
