"""images, tag, rmi, image inspect, image prune (CLI.md; Podman's behaviour)."""

from __future__ import annotations

import json
import re

import pytest

from tests import imagebuild as ib
from tests import testimages as ti
from tests.integration.harness import RootlessEnv, assert_clean_error


def _id(value: str) -> str:
    return value.removeprefix("sha256:")


def _names(rl: RootlessEnv) -> list[str]:
    return sorted(n for im in rl.images_json() for n in (im.get("Names") or []))


# --------------------------------------------------------------------------- images


def test_images_table(rl: RootlessEnv, images) -> None:
    rl("pull", "-q", "alpine", check=True)
    cp = rl("images", check=True)
    lines = cp.stdout.splitlines()
    header = re.split(r"\s{2,}", lines[0].strip())
    assert header == ["REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE"], lines[0]
    row = [ln for ln in lines[1:] if "docker.io/library/alpine" in ln]
    assert row, cp.stdout
    cols = re.split(r"\s{2,}", row[0].strip())
    assert cols[0] == "docker.io/library/alpine" and cols[1] == "latest"
    assert cols[2] == images["library/alpine:latest"].id[:12]


def test_image_ls_alias(rl: RootlessEnv) -> None:
    rl("pull", "-q", "busybox", check=True)
    assert rl("image", "ls", check=True).stdout == rl("images", check=True).stdout
    assert rl("image", "list", check=True).stdout == rl("images", check=True).stdout


def test_images_quiet_and_no_trunc(rl: RootlessEnv, images) -> None:
    rl("pull", "-q", "alpine", check=True)
    rl("tag", "alpine", "second:name", check=True)
    rl("pull", "-q", "busybox", check=True)
    ids = rl("images", "-q", check=True).stdout.split()
    want = {images["library/alpine:latest"].id, images["library/busybox:latest"].id}
    assert sorted(ids) == sorted(i[:12] for i in want), "-q lists each image once, 12 hex digits"
    full = rl("images", "-q", "--no-trunc", check=True).stdout.split()
    assert sorted(_id(i) for i in full) == sorted(want)


def test_images_json(rl: RootlessEnv, images) -> None:
    rl("pull", "-q", "alpine:3.20", check=True)
    data = rl.images_json()
    assert isinstance(data, list) and len(data) == 1
    im = data[0]
    pushed = images["library/alpine:3.20"]
    assert _id(im["Id"]) == pushed.id
    assert "docker.io/library/alpine:3.20" in im["Names"]
    assert im["Digest"] == pushed.digest
    assert isinstance(im["Size"], int) and im["Size"] > 1_000_000
    assert "Created" in im


def test_images_empty_store(rl: RootlessEnv) -> None:
    assert rl.images_json() == []
    assert rl("images", "-q", check=True).stdout.strip() == ""


# --------------------------------------------------------------------------- inspect


def test_image_inspect(rl: RootlessEnv, images) -> None:
    pushed = images["test/inspect:latest"]
    rl("pull", "-q", "test/inspect", check=True)
    info = rl.inspect("test/inspect")
    assert _id(info["Id"]) == pushed.id
    assert info["Digest"] == pushed.digest
    assert "docker.io/test/inspect:latest" in info["RepoTags"]
    assert f"docker.io/test/inspect@{pushed.digest}" in info["RepoDigests"]
    assert info["Architecture"] == ib.host_platform().architecture and info["Os"] == "linux"
    cfg = info["Config"]
    assert cfg["Entrypoint"] == ["/bin/sh", "-c"]
    assert cfg["Cmd"] == ["echo hi"]
    assert cfg["WorkingDir"] == "/var/www"
    assert cfg["User"] == "1000:1000"
    assert set(cfg["ExposedPorts"]) == {"80/tcp", "53/udp"}
    assert cfg["Labels"] == {"maintainer": "rootless tests", "purpose": "inspect"}
    assert "GREETING=hello world" in cfg["Env"]
    assert info["RootFS"] == {"Type": "layers", "Layers": pushed.image.diff_ids}
    assert len(info["History"]) == len(pushed.image.config_json["history"])
    assert info["Size"] > 0
    assert info["ManifestType"] == ib.MT_DOCKER_MANIFEST


def test_image_inspect_by_id_and_prefix(rl: RootlessEnv, images) -> None:
    pushed = images["library/busybox:latest"]
    rl("pull", "-q", "busybox", check=True)
    for ref in (pushed.id, pushed.id[:12], f"sha256:{pushed.id}"):
        assert _id(rl.inspect(ref)["Id"]) == pushed.id, ref


def test_image_inspect_several_and_unknown(rl: RootlessEnv, images) -> None:
    rl("pull", "-q", "busybox", check=True)
    rl("pull", "-q", "alpine", check=True)
    cp = rl("image", "inspect", "busybox", "alpine", check=True)
    data = json.loads(cp.stdout)
    assert [_id(d["Id"]) for d in data] == [images["library/busybox:latest"].id,
                                           images["library/alpine:latest"].id]
    cp = rl("image", "inspect", "nosuchimage")
    assert cp.returncode != 0
    assert "Traceback" not in cp.stderr
    assert "nosuchimage" in cp.stderr


# --------------------------------------------------------------------------- tag


def test_tag_adds_names(rl: RootlessEnv, images) -> None:
    rl("pull", "-q", "alpine", check=True)
    rl("tag", "alpine", "myalpine:v1", "registry.example/team/alp:2", check=True)
    names = _names(rl)
    assert any(n.endswith("/myalpine:v1") or n == "myalpine:v1" for n in names), names
    assert "registry.example/team/alp:2" in names
    assert _id(rl.inspect("myalpine:v1")["Id"]) == images["library/alpine:latest"].id
    rl("image", "tag", "alpine", "third:x", check=True)
    assert _id(rl.inspect("third:x")["Id"]) == images["library/alpine:latest"].id


def test_tag_unknown_source(rl: RootlessEnv) -> None:
    cp = rl("tag", "nosuchimage", "other:tag")
    assert cp.returncode != 0 and "Traceback" not in cp.stderr
    assert "nosuchimage" in cp.stderr


# --------------------------------------------------------------------------- rmi


def test_rmi_untags_then_deletes(rl: RootlessEnv, images) -> None:
    pushed = images["library/alpine:latest"]
    rl("pull", "-q", "alpine", check=True)
    rl("tag", "alpine", "other:v1", check=True)
    cp = rl("rmi", "other:v1", check=True)
    assert "Untagged:" in cp.stdout and "Deleted:" not in cp.stdout, cp.stdout
    assert _names(rl) == ["docker.io/library/alpine:latest"]
    cp = rl("rmi", "alpine", check=True)
    assert "Untagged: docker.io/library/alpine:latest" in cp.stdout
    assert f"Deleted: {pushed.id}" in cp.stdout or f"Deleted: sha256:{pushed.id}" in cp.stdout, cp.stdout
    assert rl.images_json() == []


def test_rmi_unknown_image(rl: RootlessEnv) -> None:
    cp = rl("rmi", "nosuchimage")
    assert_clean_error(cp, 1, "nosuchimage")
    assert "image not known" in cp.stderr


def test_rmi_force_removes_all_names(rl: RootlessEnv, images) -> None:
    pushed = images["library/busybox:latest"]
    rl("pull", "-q", "busybox", check=True)
    rl("tag", "busybox", "a:1", "b:2", check=True)
    cp = rl("rmi", "-f", pushed.id[:12], check=True)
    assert cp.stdout.count("Untagged:") == 3, cp.stdout
    assert rl.images_json() == []


def test_rmi_all(rl: RootlessEnv) -> None:
    rl("pull", "-q", "busybox", check=True)
    rl("pull", "-q", "alpine:3.20", check=True)
    rl("rmi", "-a", check=True)
    assert rl.images_json() == []
    rl("image", "rm", "--help", check=True)


def test_rmi_keeps_layers_shared_with_other_images(rl: RootlessEnv, images) -> None:
    rl("pull", "-q", "busybox", check=True)
    rl("pull", "-q", "alpine", check=True)
    rl("rmi", "alpine", check=True)
    base = images["library/busybox:latest"].image.diff_ids[0]
    assert (rl.layer_dir(base) / "bin/busybox").is_file()
    assert _id(rl.inspect("busybox")["Id"]) == images["library/busybox:latest"].id


# --------------------------------------------------------------------------- prune


@pytest.fixture
def dangling(rl: RootlessEnv, registry) -> tuple[str, str]:  # type: ignore[no-untyped-def]
    """Pulls test/moving twice while its tag moves: the first image is left dangling."""
    name = f"test/moving-{rl.marker}"
    with registry.pusher() as p:
        v1 = ib.make_image([ti.unique_layer(f"{name}-v1", 2048)], cmd=["sh"])
        p.push_image(name, "latest", v1)
        rl("pull", "-q", name, check=True)
        v2 = ib.make_image([ti.unique_layer(f"{name}-v2", 2048)], cmd=["sh"])
        p.push_image(name, "latest", v2)
        rl("pull", "-q", name, check=True)
    return v1.id, v2.id


def test_prune_removes_dangling_images(rl: RootlessEnv, dangling: tuple[str, str]) -> None:
    old, new = dangling
    ids = {_id(im["Id"]) for im in rl.images_json()}
    assert ids == {old, new}, "the older image should still be there, untagged"
    cp = rl("image", "prune", "-f", check=True)
    assert old in cp.stdout and new not in cp.stdout, cp.stdout
    assert {_id(im["Id"]) for im in rl.images_json()} == {new}


def test_prune_without_force_asks_and_eof_means_no(rl: RootlessEnv, dangling: tuple[str, str]) -> None:
    old, new = dangling
    cp = rl("image", "prune", check=True)
    assert "Are you sure you want to continue? [y/N]" in cp.stdout + cp.stderr
    assert {_id(im["Id"]) for im in rl.images_json()} == {old, new}
    cp = rl("image", "prune", input="y\n", check=True)
    assert {_id(im["Id"]) for im in rl.images_json()} == {new}


def test_prune_all_removes_every_image_layer_and_blob(rl: RootlessEnv, images) -> None:
    rl("pull", "-q", "alpine", check=True)
    rl("pull", "-q", "test/multilayer", check=True)
    cp = rl("image", "prune", "-a", "-f", check=True)
    assert images["library/alpine:latest"].id in cp.stdout
    assert rl.images_json() == []
    assert rl.blob_files() == [], [p.name for p in rl.blob_files()]
    layers = rl.store / "layers"
    assert not layers.exists() or list(layers.iterdir()) == []


# --------------------------------------------------------------------------- config


def test_bad_config_names_file_and_line(rl: RootlessEnv) -> None:
    rl.write_config('unqualified-search = ["docker.io"]\n\n[storage]\ndriver = "overlay"\nbogus-key = 1\n')
    cp = rl("images")
    line = assert_clean_error(cp, 125)
    assert f"{rl.config_path}:5" in line, line
    assert "bogus-key" in line


def test_bad_config_syntax(rl: RootlessEnv) -> None:
    rl.write_config('unqualified-search = ["docker.io"\n')
    cp = rl("pull", "alpine")
    line = assert_clean_error(cp, 125)
    assert str(rl.config_path) in line
