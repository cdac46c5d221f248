from __future__ import annotations

import base64
import json
import stat
from pathlib import Path

import pytest

from rootless.errors import ConfigError
from rootless.image import credentials
from rootless.layout import Layout


@pytest.fixture
def layout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Layout:
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("DOCKER_CONFIG", raising=False)
    return Layout(root=tmp_path / "store", runroot=tmp_path / "run" / "rootless")


def b64(s: str) -> str:
    return base64.b64encode(s.encode()).decode()


def test_save_get_mode_and_format(layout: Layout) -> None:
    credentials.save(layout, "localhost:5000", "alice", "pa:ss")
    path = layout.auth_file
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert json.loads(path.read_text()) == {"auths": {"localhost:5000": {"auth": b64("alice:pa:ss")}}}
    assert credentials.get(layout, "localhost:5000") == ("alice", "pa:ss")
    assert credentials.get(layout, "localhost:5001") is None
    assert [p.name for p in path.parent.iterdir()] == ["auth.json"]  # no temp file left behind


def test_save_replaces_and_keeps_others(layout: Layout) -> None:
    credentials.save(layout, "a.example", "u1", "p1")
    credentials.save(layout, "b.example", "u2", "p2")
    credentials.save(layout, "a.example", "u3", "p3")
    assert credentials.get(layout, "a.example") == ("u3", "p3")
    assert credentials.get(layout, "b.example") == ("u2", "p2")
    assert stat.S_IMODE(layout.auth_file.stat().st_mode) == 0o600


@pytest.mark.parametrize("alias", ["docker.io", "index.docker.io", "registry-1.docker.io"])
def test_docker_hub_aliases(layout: Layout, alias: str) -> None:
    credentials.save(layout, alias, "hub", "pw")
    for other in credentials.DOCKER_HUB_ALIASES:
        assert credentials.get(layout, other) == ("hub", "pw")
    assert list(json.loads(layout.auth_file.read_text())["auths"]) == ["docker.io"]
    assert credentials.remove(layout, "index.docker.io")
    assert credentials.get(layout, "docker.io") is None


def test_docker_config_fallback(layout: Layout, tmp_path: Path) -> None:
    cfg = tmp_path / "home" / ".docker" / "config.json"
    cfg.parent.mkdir()
    cfg.write_text(json.dumps({"auths": {
        "https://index.docker.io/v1/": {"auth": b64("dock:Zecret9")},
        "https://quay.example/v2/": {"auth": b64("q:uay")},
        "helper.example": {},  # credsStore-only entry: nothing usable
        "split.example": {"username": "s", "password": "p"},
    }, "credsStore": "desktop"}))
    assert credentials.get(layout, "docker.io") == ("dock", "Zecret9")
    assert credentials.get(layout, "registry-1.docker.io") == ("dock", "Zecret9")
    assert credentials.get(layout, "quay.example") == ("q", "uay")
    assert credentials.get(layout, "split.example") == ("s", "p")
    assert credentials.get(layout, "helper.example") is None
    found = credentials.lookup(layout, "docker.io")
    assert found is not None and found.source == cfg and "Zecret9" not in repr(found)
    # Ours wins over Docker's; logout removes only ours.
    credentials.save(layout, "docker.io", "mine", "pw")
    assert credentials.get(layout, "docker.io") == ("mine", "pw")
    assert credentials.remove(layout, "docker.io")
    assert credentials.get(layout, "docker.io") == ("dock", "Zecret9")
    assert not credentials.remove(layout, "docker.io")


def test_docker_config_env(layout: Layout, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    d = tmp_path / "dc"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({"auths": {"r.example": {"auth": b64("x:y")}}}))
    monkeypatch.setenv("DOCKER_CONFIG", str(d))
    assert credentials.get(layout, "r.example") == ("x", "y")


def test_remove_and_remove_all(layout: Layout) -> None:
    assert not credentials.remove(layout, "a.example")
    assert credentials.remove_all(layout) == 0
    credentials.save(layout, "a.example", "u", "p")
    credentials.save(layout, "b.example", "u", "p")
    assert credentials.remove(layout, "a.example")
    assert not credentials.remove(layout, "a.example")
    assert credentials.remove_all(layout) == 1
    assert not layout.auth_file.exists()


def test_corrupt_file(layout: Layout) -> None:
    layout.auth_file.parent.mkdir(parents=True)
    layout.auth_file.write_text("{nope")
    with pytest.raises(ConfigError, match="not valid JSON"):
        credentials.get(layout, "a.example")
    assert credentials.remove_all(layout) == 0
    assert not layout.auth_file.exists()
    layout.auth_file.write_text(json.dumps({"auths": {"a.example": {"auth": "!!!"}}}))
    with pytest.raises(ConfigError, match="invalid \"auth\""):
        credentials.get(layout, "a.example")


def test_normalize_host() -> None:
    assert credentials.normalize_host("https://index.docker.io/v1/") == "docker.io"
    assert credentials.normalize_host("http://Reg.Example:5000/v2/") == "reg.example:5000"
    assert credentials.normalize_host("localhost:5000") == "localhost:5000"
