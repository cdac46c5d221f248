from __future__ import annotations

import os
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


# --- one run root per store (issue 16, item 1) and XDG_RUNTIME_DIR ownership (item 12)

from rootless.layout import RunRootMismatch  # noqa: E402


def _store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, xdg: Path | None) -> Layout:
    if xdg is None:
        monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    else:
        xdg.mkdir(mode=0o700, exist_ok=True)
        monkeypatch.setenv("XDG_RUNTIME_DIR", str(xdg))
    return Layout.for_store(root=tmp_path / "store")


def test_first_use_records_the_run_root(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    lay = _store(tmp_path, monkeypatch, tmp_path / "session")
    assert lay.recorded_runroot() is None
    lay.ensure_store()
    assert lay.recorded_runroot() == tmp_path / "session" / "rootless"


def test_a_shell_without_xdg_runtime_dir_uses_the_recorded_run_root(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _store(tmp_path, monkeypatch, tmp_path / "session").ensure_store()
    # su -, sudo -iu, cron: XDG_RUNTIME_DIR unset, so the environment alone says /tmp/rootless-run-UID
    lay = _store(tmp_path, monkeypatch, None)
    assert lay.runroot == tmp_path / "session" / "rootless" and not lay.runroot_fallback
    # another session's directory of ours: still the store's run root
    lay = _store(tmp_path, monkeypatch, tmp_path / "other-session")
    assert lay.runroot == tmp_path / "session" / "rootless"


def test_an_unusable_recorded_run_root_is_refused_naming_both(monkeypatch: pytest.MonkeyPatch,
                                                               tmp_path: Path) -> None:
    session = tmp_path / "session"
    _store(tmp_path, monkeypatch, session).ensure_store()
    session.rmdir()  # logged out: systemd removed /run/user/UID
    with pytest.raises(RunRootMismatch) as e:
        _store(tmp_path, monkeypatch, None)
    assert str(session / "rootless") in e.value.message and "/tmp/rootless-run-" in e.value.message
    assert "\n" not in e.value.message and e.value.hint and "system migrate" in e.value.hint


def test_an_explicit_runroot_that_differs_is_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _store(tmp_path, monkeypatch, tmp_path / "session").ensure_store()
    with pytest.raises(RunRootMismatch) as e:
        Layout.for_store(root=tmp_path / "store", runroot=tmp_path / "elsewhere")
    assert str(tmp_path / "elsewhere") in e.value.message
    assert str(tmp_path / "session" / "rootless") in e.value.message
    same = Layout.for_store(root=tmp_path / "store", runroot=tmp_path / "session" / "rootless")
    assert same.runroot == tmp_path / "session" / "rootless"


def test_a_recorded_run_root_owned_by_another_user_is_refused(monkeypatch: pytest.MonkeyPatch,
                                                              tmp_path: Path) -> None:
    if os.getuid() == 0:
        pytest.skip("needs a directory owned by another user")
    lay = _store(tmp_path, monkeypatch, tmp_path / "session")
    lay.ensure_store()
    lay.write_meta(runroot="/tmp")  # root's sticky directory: not ours
    with pytest.raises(RunRootMismatch, match="owned by uid 0"):
        _store(tmp_path, monkeypatch, None)


def test_xdg_runtime_dir_owned_by_another_user_falls_back(monkeypatch: pytest.MonkeyPatch) -> None:
    if os.getuid() == 0:
        pytest.skip("needs a directory owned by another user")
    monkeypatch.setenv("XDG_RUNTIME_DIR", "/tmp")  # writable by us, owned by root
    lay = Layout.default(root="/r")
    assert lay.runroot_fallback and lay.runroot == Path(f"/tmp/rootless-run-{os.getuid()}")
    assert "owned by uid 0, not you" in lay.fallback_reason


def test_a_fallback_run_root_made_by_someone_else_is_refused(tmp_path: Path) -> None:
    if os.getuid() == 0:
        pytest.skip("needs a directory owned by another user")
    from rootless.errors import RootlessError

    lay = Layout(root=tmp_path / "store", runroot=Path("/tmp"))
    with pytest.raises(RootlessError, match="owned by uid 0"):
        lay.ensure_runroot()


def test_file_systems_are_named_not_numbered() -> None:
    from rootless.doctor import fs_name

    assert fs_name(Path("/proc/self"))[1] == "proc"
    assert fs_name(Path("/dev/shm/does/not/exist"))[1] == "tmpfs"


def test_decode_utf8_names_the_line_and_strips_a_bom() -> None:
    from rootless.errors import RootlessError, decode_utf8

    assert decode_utf8("\ufeffA=1\n".encode(), "env file x") == "A=1\n"
    with pytest.raises(RootlessError) as e:
        decode_utf8(b"A=1\nB=\xff\n", "env file x")
    assert e.value.message == "env file x contains invalid UTF-8 at line 2 (byte 0xff)"


def test_a_slirp4netns_tun_failure_names_the_fix() -> None:
    from slirp.supervisor import failure_hint

    hint = failure_hint('open("/dev/net/tun"): Permission denied')
    assert "chmod 0666 /dev/net/tun" in hint and "modprobe tun" in hint and "--network none" in hint
    assert "chmod" not in failure_hint("something else")


def test_doctor_needs_slirp4netns_and_tun_exactly_when_the_default_network_does(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from rootless import doctor
    from rootless.config import Config
    from rootless.context import Context, Log
    from rootless.runtime import idmap

    real = idmap.find_helper
    monkeypatch.setattr(idmap, "find_helper", lambda name: None if name == "slirp4netns" else real(name))
    monkeypatch.setattr(doctor, "probe_drivers", lambda ctx: "skipped")
    monkeypatch.setenv("ROOTLESS_CONFIG", str(tmp_path / "c.toml"))
    (tmp_path / "c.toml").write_text("")
    lay = Layout(root=tmp_path / "store", runroot=tmp_path / "run")
    for network, needed in (("slirp4netns", True), ("none", False)):
        ctx = Context(config=Config(network=network), layout=lay, log=Log())
        slirp = next(c for c in doctor.checks(ctx) if c.name == "slirp4netns")
        assert not slirp.ok and slirp.needed is needed


def test_root_or_runroot_naming_a_file_is_refused(tmp_path: Path) -> None:
    from rootless.errors import RootlessError

    f = tmp_path / "file"
    f.write_text("")
    with pytest.raises(RootlessError, match=f"--root {f} is not a directory"):
        Layout.for_store(root=f, runroot=tmp_path)
    with pytest.raises(RootlessError, match=f"--runroot {f} is not a directory"):
        Layout.for_store(root=tmp_path / "store", runroot=f)


@pytest.mark.parametrize("text,problem", [
    ("alpine:tag\u00e9", "bad tag"),
    ("localhost:99999/alpine", "port 99999 of 'localhost:99999' is not in 1-65535"),
    ("localhost:0/alpine", "is not in 1-65535"),
])
def test_bad_references(text: str, problem: str) -> None:
    from rootless.errors import RootlessError
    from rootless.image.reference import parse_reference

    with pytest.raises(RootlessError, match=problem):
        parse_reference(text)
    assert parse_reference("localhost:65535/alpine").registry == "localhost:65535"


@pytest.mark.parametrize("text,problem", [
    ("/x:size=banana", "size='banana' is not a size"),
    ("/x:mode=999", "mode='999' is not an octal mode"),
    ("/x:uid=root", "uid='root' is not a numeric user ID"),
])
def test_bad_tmpfs_values_are_named(text: str, problem: str) -> None:
    from rootless.errors import RootlessError
    from rootless.image.specgen import parse_tmpfs

    with pytest.raises(RootlessError, match=problem):
        parse_tmpfs(text)
    assert "size=64m" in parse_tmpfs("/x:size=64m,mode=1777").options


def test_platform_os_alone_means_this_hosts_architecture() -> None:
    from rootless.image.manifest import host_platform, parse_platform

    p = parse_platform("linux")
    assert (p.os, p.architecture) == ("linux", host_platform().architecture)
    assert parse_platform("arm64").os == "linux"
