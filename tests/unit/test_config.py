from __future__ import annotations

import json
from pathlib import Path

import pytest

from rootless.config import Config, load, parse
from rootless.errors import ConfigError

P = Path("/home/u/.config/rootless/config.toml")


def test_full_example() -> None:
    text = '''
unqualified-search = ["quay.io", "docker.io"]

[registry."docker.io"]
mirrors = ["localhost:5000"]

[registry."localhost:5000"]
insecure = true

[storage]
driver = "fuse-overlayfs"

[network]
default = "none"
host-loopback = true
outbound = "pasta"

[pull]
max-parallel = 3

[push]
max-parallel = 2
'''
    c = parse(text, P)
    assert c.max_parallel_uploads == 2
    assert c.unqualified_search == ("quay.io", "docker.io")
    assert c.registry("docker.io").mirrors == ("localhost:5000",)
    assert c.registry("localhost:5000").insecure is True
    assert c.registry("quay.io").insecure is False and c.registry("quay.io").mirrors == ()
    assert (c.storage_driver, c.network, c.max_parallel_downloads) == ("fuse-overlayfs", "none", 3)
    assert c.network_host_loopback is True and Config().network_host_loopback is False
    assert c.network_outbound == "pasta" and Config().network_outbound == "slirp4netns"


def test_defaults_when_missing(tmp_path: Path) -> None:
    c = load(tmp_path / "nope.toml")
    assert c == Config()
    assert c.unqualified_search == ("docker.io",) and c.max_parallel_downloads == 6


@pytest.mark.parametrize("text,line,words", [
    ('unqualified-search = ["docker.io"]\nbogus = 1\n', 2, "unknown key 'bogus'"),
    ('[registry."docker.io"]\nmirrors = ["a:1"]\nmirrorz = []\n', 3, "unknown key"),
    ('[registry."x.io"]\ninsecure = "yes"\n', 2, "true or false"),
    ('\n\n[storage]\ndriver = "btrfs"\n', 4, "must be one of"),
    ('unqualified-search = "docker.io"\n', 1, "list of non-empty strings"),
    ('[pull]\nmax-parallel = 0\n', 2, "from 1 to 64"),
    ('[push]\nmax-parallel = 65\n', 2, "push.max-parallel must be a whole number"),
    ('[registry."a b"]\n', 1, "host name"),
    ('[engine]\ncgroup-manager = "cgmanager"\n', 2, "systemd or cgroupfs"),
    ('[engine]\nruntime = "crun"\n', 2, "unknown key"),
    ('[network]\nhost-loopback = "yes"\n', 2, "host-loopback must be true or false"),
    ('[network]\noutbound = "vde"\n', 2, "outbound must be slirp4netns or pasta"),
])
def test_bad_values_name_file_and_line(text: str, line: int, words: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse(text, P)
    assert str(e.value).startswith(f"{P}:{line}: ")
    assert words in str(e.value)
    assert e.value.hint


def test_syntax_error_names_file() -> None:
    with pytest.raises(ConfigError) as e:
        parse("[registry\n", P)
    assert str(P) in str(e.value) and "line 1" in str(e.value)


# ---- the cached copy (rootless.config.load's ``cache``)

FULL = '''unqualified-search = ["quay.io", "docker.io"]

[registry."docker.io"]
mirrors = ["localhost:5000"]

[registry."localhost:5000"]
insecure = true

[storage]
driver = "vfs"
'''


@pytest.fixture
def settled(monkeypatch: pytest.MonkeyPatch) -> None:
    """Files count as settled at once (the tests write them a moment before reading)."""
    from rootless import config

    monkeypatch.setattr(config, "_SETTLED_NS", -10**12)


def _no_parse(monkeypatch: pytest.MonkeyPatch) -> None:
    from rootless import config

    def fail(text: str, path: Path) -> Config:
        raise AssertionError("parsed although the cached copy is valid")

    monkeypatch.setattr(config, "parse", fail)


def test_cache_round_trip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, settled: None) -> None:
    path, cache = tmp_path / "config.toml", tmp_path / "cache.json"
    path.write_text(FULL)
    first = load(path, cache)
    assert cache.exists() and cache.stat().st_mode & 0o777 == 0o600
    _no_parse(monkeypatch)
    again = load(path, cache)
    assert again == first == parse(FULL, path) and again.source == path
    assert again.registry("docker.io").mirrors == ("localhost:5000",) and again.registry("localhost:5000").insecure


def test_cache_follows_the_file(tmp_path: Path, settled: None) -> None:
    path, cache = tmp_path / "config.toml", tmp_path / "cache.json"
    path.write_text(FULL)
    load(path, cache)
    path.write_text(FULL.replace("vfs", "overlay"))
    assert load(path, cache).storage_driver == "overlay"
    path.unlink()
    assert load(path, cache) == Config()
    path.write_text("[storage]\ndriver = 1\n")  # errors are never cached
    for _ in range(2):
        with pytest.raises(ConfigError, match="storage.driver"):
            load(path, cache)


@pytest.mark.parametrize("damage", ["garbage", "mode", "key"])
def test_doubtful_cache_is_ignored(tmp_path: Path, settled: None, damage: str) -> None:
    path, cache = tmp_path / "config.toml", tmp_path / "cache.json"
    path.write_text(FULL)
    load(path, cache)
    if damage == "garbage":
        cache.write_text("{not json")
    elif damage == "mode":  # someone else could have written it
        data = json.loads(cache.read_text())
        data["config"]["storage_driver"] = "overlay"
        cache.write_text(json.dumps(data))
        cache.chmod(0o666)
    else:
        data = json.loads(cache.read_text())
        data["config"]["storage_driver"] = "overlay"
        data["key"][1] = "/elsewhere"
        cache.write_text(json.dumps(data))
    assert load(path, cache).storage_driver == "vfs"


def test_recently_changed_file_is_not_cached(tmp_path: Path) -> None:
    path, cache = tmp_path / "config.toml", tmp_path / "cache.json"
    path.write_text(FULL)
    load(path, cache)
    assert not cache.exists()


def test_engine_cgroup_manager() -> None:
    assert parse('[engine]\ncgroup-manager = "cgroupfs"\n', P).cgroup_manager == "cgroupfs"
    assert parse("", P).cgroup_manager == ""
