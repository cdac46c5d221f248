"""storage.volumes: records, names, options, removal; and the runtime's copy-up (unprivileged parts)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from rootless.errors import RootlessError
from rootless.layout import Layout
from storage.nsrunner import LocalRunner
from storage.volumes import NoSuchVolume, VolumeStore, check_name, parse_options


@pytest.fixture
def vs(tmp_path: Path) -> VolumeStore:
    return VolumeStore(Layout(root=tmp_path / "store", runroot=tmp_path / "run"))


def test_create_get_list_remove(vs: VolumeStore) -> None:
    vol, made = vs.create("db", labels={"app": "web"})
    assert made and vol.name == "db" and vol.labels == {"app": "web"} and vol.kind == "data"
    assert os.path.isdir(vs.data("db")) and os.stat(vs.data("db")).st_mode & 0o777 == 0o755
    assert vs.get("db") == vol
    again, made = vs.create("db", exist_ok=True)
    assert again == vol and not made
    with pytest.raises(RootlessError, match="already exists"):
        vs.create("db")
    anon, _ = vs.create(None, anonymous=True)
    assert len(anon.name) == 64 and vs.get(anon.name).anonymous
    assert [v.name for v in vs.list()] == sorted(["db", anon.name])
    assert vs.needs_copy_up("db")
    vs.remove(LocalRunner(), "db")
    assert not vs.exists("db") and not os.path.exists(vs.path("db"))
    with pytest.raises(NoSuchVolume) as e:
        vs.remove(LocalRunner(), "db")
    assert e.value.exit_code == 1


@pytest.mark.parametrize("name", ["", "-x", "a/b", "..", "a b", "x" * 256])
def test_bad_names(name: str) -> None:
    with pytest.raises(RootlessError, match="invalid volume name"):
        check_name(name)


def test_options(tmp_path: Path) -> None:
    assert parse_options({"type": "tmpfs", "o": "size=1m"}) == {"type": "tmpfs", "o": "size=1m"}
    assert parse_options({"type": "none", "o": "bind", "device": str(tmp_path)})["device"] == str(tmp_path)
    for bad, msg in (({"type": "nfs"}, "only tmpfs and none"), ({"type": "none", "device": "rel"}, "absolute"),
                     ({"type": "none", "device": str(tmp_path / "missing")}, "no such directory"),
                     ({"colour": "red"}, "not supported"), ({"o": "size=1m"}, "needs type")):
        with pytest.raises(RootlessError, match=msg):
            parse_options(bad)
    with pytest.raises(RootlessError, match="driver"):
        parse_options({}, driver="nfs")


def test_failed_create_leaves_nothing(vs: VolumeStore, monkeypatch: pytest.MonkeyPatch) -> None:
    import storage.atomic

    def boom(*a: object, **k: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(storage.atomic, "write_atomic", boom)
    with pytest.raises(RootlessError, match="No space"):
        vs.create("full")
    assert not os.path.exists(vs.path("full"))


def test_copy_up_keeps_modes_and_runs_once(tmp_path: Path) -> None:
    from rootless.runtime.mounts import copy_up_once

    src = tmp_path / "image" / "data"
    (src / "sub").mkdir(parents=True)
    (src / "f").write_text("seed\n")
    os.chmod(src / "f", 0o640)
    os.chmod(src / "sub", 0o711)
    os.link(src / "f", src / "hard")
    os.symlink("f", src / "link")
    os.chmod(src, 0o750)
    vol = tmp_path / "vol" / "_data"
    vol.mkdir(parents=True)
    copy_up_once(str(src), str(vol))
    assert (vol / "f").read_text() == "seed\n" and os.stat(vol / "f").st_mode & 0o777 == 0o640
    assert os.stat(vol / "sub").st_mode & 0o777 == 0o711 and os.stat(vol).st_mode & 0o777 == 0o750
    assert os.readlink(vol / "link") == "f" and os.stat(vol / "hard").st_ino == os.stat(vol / "f").st_ino
    assert (tmp_path / "vol" / "copied-up").exists()
    (vol / "f").unlink()
    (src / "new").write_text("x")
    copy_up_once(str(src), str(vol))  # once only
    assert not (vol / "f").exists() and not (vol / "new").exists()


def test_copy_up_skips_a_volume_with_data(tmp_path: Path) -> None:
    from rootless.runtime.mounts import copy_up_once

    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_text("image")
    vol = tmp_path / "v" / "_data"
    vol.mkdir(parents=True)
    (vol / "mine").write_text("kept")
    copy_up_once(str(src), str(vol))
    assert sorted(os.listdir(vol)) == ["mine"]
