"""Named and anonymous volumes as the unprivileged user: copy-up with owners and modes, data that
outlives containers, anonymous volumes that go with --rm and rm -v, removal refused while in
use, and the `volume` commands. Reference: rootless Podman 4."""

from __future__ import annotations

import io
import json
import tarfile
from collections.abc import Iterator

import pytest

from tests.integration.conftest import TestImages
from tests.integration.harness import RootlessEnv, assert_clean_error

pytestmark = pytest.mark.integration

BUSYBOX = "busybox"
IMAGE = "test/volume"


@pytest.fixture(scope="module")
def rl(rl_shared: RootlessEnv, images: TestImages) -> Iterator[RootlessEnv]:
    images.require("library/busybox:latest")
    images.require("test/volume:latest")
    rl_shared("pull", "-q", BUSYBOX, check=True)
    rl_shared("pull", "-q", IMAGE, check=True)
    yield rl_shared
    rl_shared("rm", "-f", "-a")
    rl_shared("volume", "prune", "-f")


def names(rl: RootlessEnv) -> set[str]:
    return set(rl("volume", "ls", "-q", check=True).stdout.split())


def test_named_volume_copy_up_keeps_owners_and_modes(rl: RootlessEnv) -> None:
    cp = rl("run", "--rm", "-v", "cu:/data", IMAGE, "sh", "-c",
            "stat -c '%u:%g %a %n' /data /data/seed /data/sub /data/sub/inner; readlink /data/link; cat /data/seed",
            check=True)
    assert cp.stdout.splitlines() == ["1000:1000 750 /data", "33:33 640 /data/seed", "65534:65534 700 /data/sub",
                                      "65534:65534 600 /data/sub/inner", "seed", "from the image"]
    vol = json.loads(rl("volume", "inspect", "cu", check=True).stdout)[0]
    assert vol["Name"] == "cu" and vol["Driver"] == "local" and not vol["NeedsCopyUp"]
    # once: a volume emptied by a container is not filled again
    rl("run", "--rm", "-v", "cu:/data", IMAGE, "sh", "-c", "rm -rf /data/* ", check=True)
    assert rl("run", "--rm", "-v", "cu:/data", IMAGE, "ls", "-A", "/data", check=True).stdout == ""
    # nocopy: no copy-up
    assert rl("run", "--rm", "-v", "nc:/data:nocopy", IMAGE, "ls", "-A", "/data", check=True).stdout == ""


def test_data_survives_rm_and_reaches_a_new_container(rl: RootlessEnv) -> None:
    rl("run", "--name", "writer", "-v", "keep:/data", BUSYBOX, "sh", "-c", "echo kept > /data/f; chown 7:8 /data/f",
       check=True)
    rl("rm", "writer", check=True)
    assert "keep" in names(rl)
    cp = rl("run", "--rm", "--mount", "type=volume,src=keep,dst=/m,ro", BUSYBOX, "sh", "-c",
            "cat /m/f; stat -c '%u:%g' /m/f; touch /m/x 2>&1 || echo refused", check=True)
    lines = cp.stdout.splitlines()
    assert lines[0] == "kept" and lines[1] == "7:8" and lines[-1] == "refused"


def test_anonymous_volumes_vanish_with_rm(rl: RootlessEnv) -> None:
    before = names(rl)
    # the image's VOLUME /anon gets an anonymous volume, filled from the image
    cp = rl("run", "--rm", IMAGE, "cat", "/anon/preset", check=True)
    assert cp.stdout == "anonymous seed\n"
    assert names(rl) == before
    rl("run", "--rm", "-v", "/scratch", BUSYBOX, "touch", "/scratch/x", check=True)
    assert names(rl) == before
    # without --rm it stays until `rm -v`; plain `rm` keeps it
    rl("run", "--name", "anon1", IMAGE, "true", check=True)
    made = names(rl) - before
    assert len(made) == 1
    rl("rm", "anon1", check=True)
    assert names(rl) - before == made
    rl("volume", "rm", *made, check=True)
    rl("run", "--name", "anon2", IMAGE, "true", check=True)
    rl("rm", "-v", "anon2", check=True)
    assert names(rl) == before
    # a detached --rm container takes its anonymous volume along
    rl("run", "-d", "--rm", IMAGE, "true", check=True)
    import time

    deadline = time.monotonic() + 20
    while names(rl) != before and time.monotonic() < deadline:
        time.sleep(0.1)
    assert names(rl) == before


def test_volume_rm_refused_while_in_use(rl: RootlessEnv) -> None:
    rl("run", "-d", "--name", "busy", "-v", "busyvol:/d", BUSYBOX, "sleep", "300", check=True)
    try:
        assert_clean_error(rl("volume", "rm", "busyvol"), 2, "busyvol", "busy")
        assert_clean_error(rl("volume", "rm", "-f", "busyvol"), 2, "running")
        assert "busyvol" not in rl("volume", "prune", "-f", check=True).stdout.split()
        rl("stop", "-t", "0", "busy", check=True)
        assert_clean_error(rl("volume", "rm", "busyvol"), 2, "busyvol")
        assert rl("volume", "rm", "-f", "busyvol", check=True).stdout.split() == ["busyvol"]
        assert rl("ps", "-a", "--filter", "name=busy", "-q").stdout.strip() == ""
    finally:
        rl("rm", "-f", "busy")
    assert "busyvol" not in names(rl)


def test_volume_commands(rl: RootlessEnv, tmp_path_factory: pytest.TempPathFactory) -> None:
    assert rl("volume", "create", "--label", "app=web", "--label", "tier", "labelled", check=True).stdout == \
        "labelled\n"
    anon = rl("volume", "create", check=True).stdout.strip()
    assert len(anon) == 64
    assert rl("volume", "exists", "labelled").returncode == 0
    assert rl("volume", "exists", "nope").returncode == 1
    assert rl("volume", "ls", "-q", "--filter", "label=app=web", check=True).stdout.split() == ["labelled"]
    assert rl("volume", "ls", "-q", "--filter", "label=tier", "--filter", "name=^lab", check=True
              ).stdout.split() == ["labelled"]
    table = rl("volume", "ls", check=True).stdout.splitlines()
    assert table[0].split() == ["DRIVER", "VOLUME", "NAME"] and any(ln.split() == ["local", "labelled"]
                                                                    for ln in table)
    data = json.loads(rl("volume", "ls", "--format", "json", check=True).stdout)
    assert {"Name", "Driver", "Mountpoint", "Labels", "Options", "CreatedAt"} <= set(data[0])
    rl("run", "-d", "--name", "holder", "-v", "labelled:/x", BUSYBOX, "sleep", "300", check=True)
    try:
        dangling = set(rl("volume", "ls", "-q", "--filter", "dangling=true", check=True).stdout.split())
        assert anon in dangling and "labelled" not in dangling
        pruned = rl("volume", "prune", "-f", check=True).stdout.split()
        assert anon in pruned and "labelled" not in pruned
    finally:
        rl("rm", "-f", "holder", check=True)
    # export and import, owners kept
    rl("run", "--rm", "-v", "labelled:/x", BUSYBOX, "sh", "-c", "echo one > /x/a; chown 5:6 /x/a", check=True)
    out = tmp_path_factory.mktemp("export") / "v.tar"
    rl("volume", "export", "labelled", "-o", str(out), check=True)
    with tarfile.open(out) as tf:
        a = tf.getmember("a")
        assert (a.uid, a.gid) == (5, 6)
    rl("volume", "create", "copy", check=True)
    rl("volume", "import", "copy", str(out), check=True)
    cp = rl("run", "--rm", "-v", "copy:/y", BUSYBOX, "stat", "-c", "%u:%g %n", "/y/a", check=True)
    assert cp.stdout.strip() == "5:6 /y/a"
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        info = tarfile.TarInfo("fromstdin")
        info.size = 3
        tf.addfile(info, io.BytesIO(b"hi\n"))
    import subprocess

    p = subprocess.run([*rl.command, "volume", "import", "copy", "-"], input=buf.getvalue(), env=rl.env,
                       capture_output=True, check=False)
    assert p.returncode == 0, p.stderr
    assert rl("run", "--rm", "-v", "copy:/y", BUSYBOX, "cat", "/y/fromstdin", check=True).stdout == "hi\n"
    assert rl("volume", "rm", "labelled", "copy", check=True).stdout.split() == ["labelled", "copy"]


def test_tmpfs_and_bind_volumes(rl: RootlessEnv, tmp_path_factory: pytest.TempPathFactory) -> None:
    rl("volume", "create", "--opt", "type=tmpfs", "--opt", "o=size=1m", "tvol", check=True)
    cp = rl("run", "--rm", "-v", "tvol:/t", BUSYBOX, "sh", "-c", "grep ' /t ' /proc/mounts", check=True)
    assert cp.stdout.split()[2] == "tmpfs" and "size=1024k" in cp.stdout
    host = tmp_path_factory.mktemp("bindvol")
    (host / "hostfile").write_text("from host\n")
    rl("volume", "create", "--opt", "type=none", "--opt", "o=bind", "--opt", f"device={host}", "bvol", check=True)
    assert rl("run", "--rm", "-v", "bvol:/b", BUSYBOX, "cat", "/b/hostfile", check=True).stdout == "from host\n"
    rl("volume", "rm", "tvol", "bvol", check=True)


def test_bad_input_is_one_line_and_leaves_nothing(rl: RootlessEnv) -> None:
    before = names(rl)
    rl("volume", "create", "dup", check=True)
    assert_clean_error(rl("volume", "create", "dup"), 125, "already exists")
    assert_clean_error(rl("volume", "create", "bad/name"), 125, "invalid volume name")
    assert_clean_error(rl("volume", "create", "--opt", "type=nfs", "x"), 125, "nfs")
    assert_clean_error(rl("volume", "rm", "nosuch"), 1, "nosuch")
    assert_clean_error(rl("volume", "inspect", "nosuch"), 1, "nosuch")
    assert_clean_error(rl("volume", "ls", "--filter", "colour=red"), 125, "filter")
    # a run that fails before it starts leaves no volume it made
    assert_clean_error(rl("run", "--rm", "-v", "fresh:/d", "--memory", "1k", BUSYBOX, "true"), 125)
    rl("volume", "rm", "dup", check=True)
    assert names(rl) == before
