from __future__ import annotations

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

[pull]
max-parallel = 3
'''
    c = parse(text, P)
    assert c.unqualified_search == ("quay.io", "docker.io")
    assert c.registry("docker.io").mirrors == ("localhost:5000",)
    assert c.registry("localhost:5000").insecure is True
    assert c.registry("quay.io").insecure is False and c.registry("quay.io").mirrors == ()
    assert (c.storage_driver, c.network, c.max_parallel_downloads) == ("fuse-overlayfs", "none", 3)


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
    ('[registry."a b"]\n', 1, "host name"),
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
