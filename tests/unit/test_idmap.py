from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import pytest

from rootless.errors import CommandNotFoundError, NamespaceError, NotExecutableError
from rootless.runtime import idmap, syscalls, userns
from rootless.runtime.execpath import find_executable
from rootless.runtime.idmap import IdMapping, SubIdRange

SUBUID = """\
# comment line
alice:100000:65536

bob:165536:65536
1003:231072:65536
alice:300000:1000
broken line
carol:abc:10
dave:400000:0
"""


def test_parse_by_name_keeps_every_range_in_order() -> None:
    assert idmap.parse_subid(SUBUID, "alice", 1001) == (SubIdRange(100000, 65536), SubIdRange(300000, 1000))


def test_parse_by_numeric_uid() -> None:
    assert idmap.parse_subid(SUBUID, "erin", 1003) == (SubIdRange(231072, 65536),)


def test_parse_skips_comments_malformed_and_empty_ranges() -> None:
    assert idmap.parse_subid(SUBUID, "carol", 1) == ()
    assert idmap.parse_subid(SUBUID, "dave", 2) == ()
    assert idmap.parse_subid(SUBUID, "nobody", 99) == ()
    assert idmap.parse_subid("", "alice", 1001) == ()


def test_range_end_is_inclusive() -> None:
    assert SubIdRange(100000, 65536).end == 165535


def _files(tmp_path: Path, uid_text: str, gid_text: str) -> tuple[Path, Path]:
    u, g = tmp_path / "subuid", tmp_path / "subgid"
    u.write_text(uid_text)
    g.write_text(gid_text)
    return u, g


def test_store_maps_root_is_the_user_then_the_subordinate_range(tmp_path: Path) -> None:
    u, g = _files(tmp_path, "alice:100000:65536\n", "alice:200000:65536\n")
    maps = idmap.store_maps(1001, 1002, "alice", u, g)
    assert maps.uid_map == (IdMapping(0, 1001, 1), IdMapping(1, 100000, 65536))
    assert maps.gid_map == (IdMapping(0, 1002, 1), IdMapping(1, 200000, 65536))
    assert not maps.single


def test_store_maps_appends_further_ranges_contiguously(tmp_path: Path) -> None:
    u, g = _files(tmp_path, SUBUID, SUBUID)
    maps = idmap.store_maps(1001, 1001, "alice", u, g)
    assert maps.uid_map == (IdMapping(0, 1001, 1), IdMapping(1, 100000, 65536),
                            IdMapping(65537, 300000, 1000))


def test_store_maps_by_uid(tmp_path: Path) -> None:
    u, g = _files(tmp_path, SUBUID, SUBUID)
    maps = idmap.store_maps(1003, 1003, "erin", u, g)
    assert maps.uid_map == (IdMapping(0, 1003, 1), IdMapping(1, 231072, 65536))


def test_no_range_gives_single_mapping(tmp_path: Path) -> None:
    u, g = _files(tmp_path, "bob:165536:65536\n", "")
    maps = idmap.store_maps(1001, 1001, "alice", u, g)
    assert maps.single
    assert maps.uid_map == (IdMapping(0, 1001, 1),)
    assert maps.gid_map == (IdMapping(0, 1001, 1),)


def test_missing_files_give_single_mapping(tmp_path: Path) -> None:
    maps = idmap.store_maps(5, 6, "x", tmp_path / "none", tmp_path / "none2")
    assert maps.single and maps.uid_map == (IdMapping(0, 5, 1),) and maps.gid_map == (IdMapping(0, 6, 1),)


def test_only_gid_missing_is_still_single(tmp_path: Path) -> None:
    u, g = _files(tmp_path, "alice:100000:65536\n", "")
    maps = idmap.store_maps(1001, 1001, "alice", u, g)
    assert maps.single
    assert len(maps.uid_map) == 2 and len(maps.gid_map) == 1
    key, msg, hint = idmap.single_mapping_warning(maps, "alice")
    assert "gids" in msg and "/etc/subgid" in msg and "usermod --add-subuids" in hint
    assert "\n" not in msg and len(msg) < 200 and key == "single-id-mapping:gids"


def test_short_range() -> None:
    def maps(n: int) -> idmap.IdMaps:
        m = idmap.build_map(1000, [SubIdRange(100000, n)] if n else [])
        return idmap.IdMaps(m, m, single=not n)

    assert idmap.short_range(maps(0)) == 1
    assert idmap.short_range(maps(1000)) == 1001
    assert idmap.short_range(maps(65535)) is None  # 0-65535 with the user's own id as 0


def test_map_lines_are_capped_at_the_kernel_limit() -> None:
    ranges = [SubIdRange(100000 + i * 10, 10) for i in range(400)]
    assert len(idmap.build_map(1000, ranges)) == idmap.MAX_MAP_LINES


def test_helper_argv_matches_newuidmap_usage() -> None:
    m = (IdMapping(0, 1001, 1), IdMapping(1, 100000, 65536))
    assert idmap.helper_argv("/usr/bin/newuidmap", 4242, m) == [
        "/usr/bin/newuidmap", "4242", "0", "1001", "1", "1", "100000", "65536"]


def test_to_json() -> None:
    maps = idmap.IdMaps((IdMapping(0, 1, 1),), (IdMapping(0, 2, 1),), True)
    assert maps.to_json() == {"uid_map": [{"container_id": 0, "host_id": 1, "size": 1}],
                              "gid_map": [{"container_id": 0, "host_id": 2, "size": 1}], "single": True}


def test_free_range_suggests_ids_after_every_allocated_range() -> None:
    assert idmap.free_range([SUBUID]) == SubIdRange(400000, 65536)
    assert idmap.free_range([""]) == SubIdRange(100000, 65536)


def _fake_helper(tmp_path: Path, name: str, script: str) -> Path:
    p = tmp_path / name
    p.write_text("#!/bin/sh\n" + script)
    p.chmod(0o755)
    return p


def test_helper_not_setuid_is_explained(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_helper(tmp_path, "newuidmap",
                 "echo 'newuidmap: write to uid_map failed: Operation not permitted' >&2\nexit 1\n")
    monkeypatch.setenv("PATH", str(tmp_path))
    maps = idmap.IdMaps((IdMapping(0, os.geteuid() + 1, 1),), (IdMapping(0, os.getegid(), 1),), False)
    with pytest.raises(NamespaceError) as ei:
        idmap.apply(99999999, maps, "alice")
    assert "write to uid_map failed: Operation not permitted" in ei.value.message
    assert ei.value.message.startswith("newuidmap 99999999 0 ")
    assert ei.value.hint is not None and f"chmod u+s {tmp_path}/newuidmap" in ei.value.hint


def test_helper_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(idmap, "_HELPER_DIRS", ())
    maps = idmap.IdMaps((IdMapping(0, 1, 1), IdMapping(1, 100000, 10)), (IdMapping(0, 1, 1),), False)
    with pytest.raises(NamespaceError) as ei:
        idmap.apply(1, maps, "alice")
    assert ei.value.message == "newuidmap not found"
    assert ei.value.hint is not None and "install the uidmap package" in ei.value.hint


def test_range_not_listed_suggests_usermod(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    helper = _fake_helper(tmp_path, "newuidmap",
                          "echo 'newuidmap: uid range [1-11) -> [5-15) not allowed' >&2\nexit 1\n")
    monkeypatch.setattr(idmap, "helper_privileged", lambda path: True)
    monkeypatch.setenv("PATH", str(tmp_path))
    u, g = _files(tmp_path, "alice:100000:65536\n", "")
    maps = idmap.IdMaps((IdMapping(0, 1, 1), IdMapping(1, 5, 10)), (IdMapping(0, 1, 1),), False)
    with pytest.raises(NamespaceError) as ei:
        idmap.apply(1, maps, "alice", subuid=u, subgid=g)
    assert "not allowed" in ei.value.message
    assert ei.value.hint is not None
    assert "usermod --add-subuids 165536-231071 --add-subgids 165536-231071 alice" in ei.value.hint
    assert helper.exists()


def test_helper_privileged_detects_setuid(tmp_path: Path) -> None:
    p = _fake_helper(tmp_path, "h", "exit 0\n")
    assert not idmap.helper_privileged(str(p))
    if Path("/usr/bin/newuidmap").exists():
        st = os.stat("/usr/bin/newuidmap")
        assert idmap.helper_privileged("/usr/bin/newuidmap") == bool(
            (st.st_mode & stat.S_ISUID and st.st_uid == 0) or _has_caps("/usr/bin/newuidmap"))


def _has_caps(path: str) -> bool:
    try:
        return bool(os.getxattr(path, "security.capability"))
    except OSError:
        return False


# --- syscalls and userns helpers that need no privileges ---------------------------------


def test_describe_names_the_object() -> None:
    e = OSError(errno.EPERM, os.strerror(errno.EPERM), "mount overlay on /x/rootfs")
    assert syscalls.describe(e) == "mount overlay on /x/rootfs: Operation not permitted"
    assert syscalls.ns_names(syscalls.CLONE_NEWUSER | syscalls.CLONE_NEWNS) == "mount+user"


def test_mount_error_is_named(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("root may mount")
    with pytest.raises(OSError) as ei:
        syscalls.mount("overlay", str(tmp_path), "overlay", 0, "lowerdir=/")
    assert syscalls.describe(ei.value) == f"mount overlay on {tmp_path}: Operation not permitted"


def test_userns_error_names_the_sysctl(monkeypatch: pytest.MonkeyPatch) -> None:
    values = {"user.max_user_namespaces": "0"}
    monkeypatch.setattr(userns, "read_sysctl", values.get)
    err = userns.userns_error(OSError(errno.ENOSPC, "No space left on device", "unshare user namespace"))
    assert "user.max_user_namespaces = 0" in err.message
    assert err.hint is not None and "sysctl -w user.max_user_namespaces=28633" in err.hint

    values.clear()
    values["kernel.apparmor_restrict_unprivileged_userns"] = "1"
    err = userns.userns_error(OSError(errno.EPERM, "Operation not permitted", "unshare user namespace"))
    assert err.hint is not None and "kernel.apparmor_restrict_unprivileged_userns=0" in err.hint

    values.clear()
    values["kernel.unprivileged_userns_clone"] = "0"
    err = userns.userns_error(OSError(errno.EPERM, "Operation not permitted", "unshare user namespace"))
    assert err.hint is not None and "kernel.unprivileged_userns_clone=1" in err.hint

    values.clear()
    err = userns.userns_error(OSError(errno.EPERM, "Operation not permitted", "unshare user namespace"))
    assert err.message.startswith("unshare user namespace: Operation not permitted")


def test_lookup_skips_unsearchable_dirs_and_reports_non_executables(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir(mode=0)
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "tool").write_text("x")
    good = tmp_path / "good"
    good.mkdir()
    _fake_helper(good, "tool2", "")
    path = os.pathsep.join(map(str, (locked, plain, good)))
    try:
        assert find_executable("tool2", path) == str(good / "tool2")
        assert find_executable("tool", path) == str(plain / "tool")
        with pytest.raises(FileNotFoundError):
            find_executable("nope", path)
        assert find_executable("./x", path) == "./x"
    finally:
        locked.chmod(0o700)


def test_exec_errors_follow_podman_wording() -> None:
    f = userns.ChildFailure
    e = userns._exec_error("nope", f("run", errno.ENOENT, "x"), 0)
    assert isinstance(e, CommandNotFoundError) and e.exit_code == 127
    assert e.message == 'exec: "nope": executable file not found in $PATH'
    e = userns._exec_error("/bin/nope", f("run", errno.ENOENT, "x"), 0)
    assert e.message == 'exec: "/bin/nope": stat /bin/nope: no such file or directory'
    e = userns._exec_error("/etc/passwd", f("run", errno.EACCES, "x"), 0)
    assert isinstance(e, NotExecutableError) and e.exit_code == 126
    assert isinstance(userns._exec_error("x", f("setup", errno.EPERM, "setresuid: boom"), 0), NamespaceError)


def test_within_maps_a_nested_namespace_in_its_parents_ids() -> None:
    from rootless.runtime.idmap import IdMapping as M
    from rootless.runtime.idmap import within

    store = (M(0, 1000, 1), M(1, 100000, 65536))  # the shared user namespace: 0 is you
    keep_id = (M(0, 100000, 1000), M(1000, 1000, 1), M(1001, 101000, 64536))
    assert within(keep_id, store) == (M(0, 1, 1000), M(1000, 0, 1), M(1001, 1001, 64536))
    # a range that crosses two of the parent's ranges is cut where they meet
    assert within((M(0, 1000, 3),), (M(0, 1000, 1), M(5, 1001, 10))) == (M(0, 0, 1), M(1, 5, 2))
    with pytest.raises(ValueError, match="host ID 99"):
        within((M(0, 99, 1),), store)
