from __future__ import annotations

from pathlib import Path

import pytest

from rootless.layout import Layout, config_file


def test_xdg_dirs(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("XDG_DATA_HOME", raising=False)
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    monkeypatch.delenv("ROOTLESS_CONFIG", raising=False)
    assert Layout.default().root == tmp_path / ".local/share/rootless/storage"
    assert config_file() == tmp_path / ".config/rootless/config.toml"
    monkeypatch.setenv("XDG_DATA_HOME", "/srv/data")
    monkeypatch.setenv("XDG_CONFIG_HOME", "relative/ignored")  # the spec: relative paths are invalid
    assert Layout.default().root == Path("/srv/data/rootless/storage")
    assert config_file() == tmp_path / ".config/rootless/config.toml"
    monkeypatch.setenv("ROOTLESS_CONFIG", "/etc/x.toml")
    assert config_file() == Path("/etc/x.toml")


def test_runroot_fallback(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    lay = Layout.default()
    assert lay.runroot == tmp_path / "rootless" and not lay.runroot_fallback
    monkeypatch.delenv("XDG_RUNTIME_DIR")
    lay = Layout.default()
    assert lay.runroot_fallback and str(lay.runroot).startswith("/tmp/rootless-run-")
    assert Layout.default(root="/r", runroot="/rr") == Layout(Path("/r"), Path("/rr"), False)
