"""storage.layers: safe unpacking (run unprivileged, without a namespace, via LocalRunner).

Ownership and real whiteout devices need namespace-root; those assertions apply only
when the tests run as root, and tests/integration/test_unpack_userns.py covers them in
a real user namespace.
"""

from __future__ import annotations

import os
import stat
import tarfile
from pathlib import Path

import pytest

from rootless.errors import DigestMismatchError, NotFoundError, StorageError
from rootless.layout import Layout
from storage import compress
from storage.blobs import BlobStore
from storage.layers import LayerStore, remove_tree, unpack
from storage.locks import FileLock
from storage.nsrunner import LocalRunner
from tests.unit.tarbuild import MTIME, M, build_tar, d, f, gz, hard, sha, sym, zst

TAR = "application/vnd.oci.image.layer.v1.tar"
GZ = "application/vnd.oci.image.layer.v1.tar+gzip"
ZST = "application/vnd.oci.image.layer.v1.tar+zstd"
ROOT = os.geteuid() == 0


def run(tmp_path: Path, members: list[M], media_type: str = TAR, compress=None,
        expected: str | None = None, name: str = "layer") -> tuple[dict, Path]:
    raw = build_tar(members)
    blob = tmp_path / f"{name}.blob"
    blob.write_bytes(compress(raw) if compress else raw)
    dest = tmp_path / name
    return unpack(str(blob), media_type, str(dest), expected), dest


def unpack_error(tmp_path: Path, members: list[M]) -> str:
    with pytest.raises(StorageError) as exc:
        run(tmp_path, members)
    return str(exc.value)


# ---------------------------------------------------------------- basic content


def test_files_dirs_symlinks_and_metadata(tmp_path: Path) -> None:
    res, dest = run(tmp_path, [
        d("./"), d("etc/", 0o755), f("etc/hosts", b"127.0.0.1 localhost\n", 0o644),
        f("usr/bin/tool", b"#!/bin/sh\n", 0o755), sym("bin", "usr/bin"),
        sym("etc/abs", "/etc/hosts"), M("run/fifo", tarfile.FIFOTYPE, mode=0o640),
    ])
    assert (dest / "etc/hosts").read_bytes() == b"127.0.0.1 localhost\n"
    st = os.stat(dest / "etc/hosts")
    assert stat.S_IMODE(st.st_mode) == 0o644 and st.st_mtime == MTIME
    assert stat.S_IMODE(os.stat(dest / "usr/bin/tool").st_mode) == 0o755
    assert os.readlink(dest / "bin") == "usr/bin"
    assert os.readlink(dest / "etc/abs") == "/etc/hosts"  # a symlink target is only data
    assert os.lstat(dest / "bin").st_mtime == MTIME
    assert stat.S_ISFIFO(os.lstat(dest / "run/fifo").st_mode)
    assert stat.S_IMODE(os.lstat(dest / "run/fifo").st_mode) == 0o640
    # Parents missing from the tar are created like tar(1) does: 0755.
    assert stat.S_IMODE(os.stat(dest / "usr").st_mode) == 0o755
    assert os.stat(dest / "etc").st_mtime == MTIME  # set after its entries were made
    assert res["files"] == 6  # "." is the root itself; usr, usr/bin and run are implicit
    assert res["rejected"] == [] and res["devices_skipped"] == 0


def test_result_and_diff_id(tmp_path: Path) -> None:
    members = [f("a", b"x" * 5000), f("b")]
    raw = build_tar(members)
    res, _ = run(tmp_path, members, expected=sha(raw))
    assert res["diff_id"] == sha(raw)
    assert res["size"] == len(raw)
    assert set(res) >= {"diff_id", "size", "files", "devices_skipped", "overflow_ids",
                        "xattr_failures", "whiteout_format", "rejected"}


def test_diff_id_mismatch(tmp_path: Path) -> None:
    with pytest.raises(DigestMismatchError) as exc:
        run(tmp_path, [f("a", b"1")], expected="sha256:" + "0" * 64)
    assert "sha256:" + "0" * 64 in str(exc.value)


@pytest.mark.parametrize("compress,media_type", [
    (None, TAR), (gz, GZ), (zst, ZST),
    (gz, TAR),  # mislabelled: the magic bytes win
    (zst, "application/vnd.docker.image.rootfs.diff.tar.gzip"),
    (gz, "application/vnd.docker.image.rootfs.diff.tar.gzip"),
])
def test_compression_detection(tmp_path: Path, compress, media_type: str) -> None:
    members = [d("etc/"), f("etc/big", os.urandom(3 << 20)), f("etc/small", b"s")]
    raw = build_tar(members)
    res, dest = run(tmp_path, members, media_type, compress, expected=sha(raw))
    assert (dest / "etc/big").stat().st_size == 3 << 20
    assert res["diff_id"] == sha(raw)


def test_plain_tar_labelled_gzip_is_refused(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="not gzip-compressed"):
        run(tmp_path, [f("a")], GZ)


@pytest.mark.parametrize("library", ["isal", "zlib"])
def test_gzip_inflaters(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, library: str) -> None:
    # ISA-L when python-isal is installed, zlib otherwise: both verify and both fail cleanly.
    if library == "zlib":
        monkeypatch.setattr(compress, "_isal", lambda: None)
    else:
        pytest.importorskip("isal")
    assert compress.library() == library
    members = [f("a", os.urandom(1 << 20))]
    raw = build_tar(members)
    res, _ = run(tmp_path, members, GZ, gz, expected=sha(raw))
    assert res["diff_id"] == sha(raw)
    blob = tmp_path / "bad.blob"
    blob.write_bytes(gz(raw)[: len(gz(raw)) // 2])
    with pytest.raises(StorageError, match="decompress"):
        unpack(str(blob), GZ, str(tmp_path / "bad"), None)


def test_multi_member_gzip(tmp_path: Path) -> None:
    raw = build_tar([f("a", b"1" * 10000), f("b", b"2")])
    blob = tmp_path / "l.blob"
    blob.write_bytes(gz(raw[:4096]) + gz(raw[4096:]))
    res = unpack(str(blob), GZ, str(tmp_path / "l"), sha(raw))
    assert (tmp_path / "l/b").read_bytes() == b"2" and res["diff_id"] == sha(raw)


def test_truncated_gzip(tmp_path: Path) -> None:
    raw = build_tar([f("a", os.urandom(200_000))])
    blob = tmp_path / "l.blob"
    blob.write_bytes(gz(raw)[:50_000])
    with pytest.raises(StorageError):
        unpack(str(blob), GZ, str(tmp_path / "l"), None)


def test_corrupt_header_midway(tmp_path: Path) -> None:
    raw = bytearray(build_tar([f("a", b"1"), f("b", b"2"), f("c", b"3")]))
    raw[1024 + 100:1024 + 200] = b"\xff" * 100  # inside the second member's header
    blob = tmp_path / "l.blob"
    blob.write_bytes(bytes(raw))
    with pytest.raises(StorageError, match="corrupt tar|invalid header"):
        unpack(str(blob), TAR, str(tmp_path / "l"), None)


def test_empty_layer(tmp_path: Path) -> None:
    res, dest = run(tmp_path, [])
    assert res["files"] == 0 and os.listdir(dest) == []


def test_long_names(tmp_path: Path) -> None:
    long = "d" * 120 + "/" + "f" * 150
    for fmt in (tarfile.PAX_FORMAT, tarfile.GNU_FORMAT):
        raw = build_tar([f(long, b"x"), sym("l" * 130, "t" * 200)], fmt=fmt)
        blob = tmp_path / f"{fmt}.blob"
        blob.write_bytes(raw)
        dest = tmp_path / f"out{fmt}"
        unpack(str(blob), TAR, str(dest), sha(raw))
        assert (dest / long).read_bytes() == b"x"
        assert os.readlink(dest / ("l" * 130)) == "t" * 200


# ---------------------------------------------------------------- refused members


def test_dotdot_refused(tmp_path: Path) -> None:
    msg = unpack_error(tmp_path, [f("../x", b"evil")])
    assert "'..'" in msg and "../x" in msg
    assert not (tmp_path / "x").exists()


def test_dotdot_inside_refused(tmp_path: Path) -> None:
    assert "'..'" in unpack_error(tmp_path, [d("a/"), f("a/../../y", b"evil")])
    assert not (tmp_path / "y").exists()


def test_absolute_names_are_layer_relative(tmp_path: Path) -> None:
    # as Docker and GNU tar read what `tar -P` writes; nothing lands outside the layer
    _, dest = run(tmp_path, [d("/etc/"), f("/etc/x", b"inside"), f("//twice", b"2"), hard("/etc/y", "/etc/x")])
    assert (dest / "etc/x").read_bytes() == b"inside" and (dest / "twice").read_bytes() == b"2"
    assert os.stat(dest / "etc/y").st_ino == os.stat(dest / "etc/x").st_ino
    assert not (tmp_path / "etc").exists()
    assert "'..'" in unpack_error(tmp_path, [f("/../abs", b"evil")])


def test_write_through_symlink_refused(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    msg = unpack_error(tmp_path, [sym("a", str(outside)), f("a/evil", b"evil")])
    assert "symlink" in msg and "a/evil" in msg
    assert not (outside / "evil").exists()


def test_write_through_relative_symlink_refused(tmp_path: Path) -> None:
    msg = unpack_error(tmp_path, [d("x/"), sym("x/up", "../.."), f("x/up/evil", b"evil")])
    assert "symlink" in msg
    assert not (tmp_path / "evil").exists()


def test_dir_through_symlink_refused(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    unpack_error(tmp_path, [sym("a", str(outside)), d("a/sub/")])
    assert not (outside / "sub").exists()


def test_symlink_replacing_dir_then_write_refused(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    # The directory fd cached for "a" must not survive "a" becoming a symlink.
    unpack_error(tmp_path, [d("a/"), f("a/one"), sym("a", str(outside)), f("a/two", b"evil")])
    assert not (outside / "two").exists()


def test_hardlink_outside_refused(tmp_path: Path) -> None:
    assert "'..'" in unpack_error(tmp_path, [hard("pw", "../../etc/passwd")])
    # an absolute target is the layer's own /etc/passwd, which this layer lacks
    assert "pw" in unpack_error(tmp_path, [hard("pw", "/etc/passwd")])


def test_hardlink_through_symlink_refused(tmp_path: Path) -> None:
    assert "symlink" in unpack_error(tmp_path, [sym("etc", "/etc"), hard("pw", "etc/passwd")])


def test_hardlink_missing_refused(tmp_path: Path) -> None:
    assert "not in this layer" in unpack_error(tmp_path, [hard("b", "nothere")])


def test_hardlink_to_dir_refused(tmp_path: Path) -> None:
    assert "directory" in unpack_error(tmp_path, [d("dir/"), hard("b", "dir")])


def test_file_under_file_refused(tmp_path: Path) -> None:
    assert "not a directory" in unpack_error(tmp_path, [f("a"), f("a/b")])


# ---------------------------------------------------------------- kept members


def test_devices_skipped_and_counted(tmp_path: Path) -> None:
    res, dest = run(tmp_path, [
        d("dev/"), M("dev/null", tarfile.CHRTYPE, devmajor=1, devminor=3),
        M("dev/sda", tarfile.BLKTYPE, devmajor=8, devminor=0), f("dev/keep"),
    ])
    assert res["devices_skipped"] == 2
    assert sorted(os.listdir(dest / "dev")) == ["keep"]


def test_unknown_type_listed(tmp_path: Path) -> None:
    res, dest = run(tmp_path, [M("weird", b"Z"), f("ok")])
    assert res["rejected"] == ["weird"]
    assert os.listdir(dest) == ["ok"]


def test_setuid_kept(tmp_path: Path) -> None:
    _, dest = run(tmp_path, [f("su", b"\x7fELF", 0o4755), f("sg", b"x", 0o2711), f("st", b"x", 0o1644)])
    assert stat.S_IMODE(os.stat(dest / "su").st_mode) == 0o4755
    assert stat.S_IMODE(os.stat(dest / "sg").st_mode) == 0o2711
    assert stat.S_IMODE(os.stat(dest / "st").st_mode) == 0o1644


def test_odd_modes_not_narrowed_by_umask(tmp_path: Path) -> None:
    old = os.umask(0o077)
    try:
        _, dest = run(tmp_path, [f("w", b"x", 0o666), f("ro", b"x", 0o444), d("wd/", 0o777)])
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(dest / "w").st_mode) == 0o666
    assert stat.S_IMODE(os.stat(dest / "ro").st_mode) == 0o444
    assert stat.S_IMODE(os.stat(dest / "wd").st_mode) == 0o777


def test_hardlinks_share_inode(tmp_path: Path) -> None:
    res, dest = run(tmp_path, [d("bin/"), f("bin/a", b"data", 0o755), hard("bin/b", "bin/a"),
                               hard("c", "./bin/a")])
    a, b, c = (os.stat(dest / p) for p in ("bin/a", "bin/b", "c"))
    assert a.st_ino == b.st_ino == c.st_ino and a.st_nlink == 3
    assert (dest / "c").read_bytes() == b"data"


def test_hardlink_to_symlink_links_the_symlink(tmp_path: Path) -> None:
    _, dest = run(tmp_path, [sym("s", "/etc/passwd"), hard("h", "s")])
    assert os.path.islink(dest / "h") and os.readlink(dest / "h") == "/etc/passwd"


def test_xattrs(tmp_path: Path) -> None:
    res, dest = run(tmp_path, [
        f("x", b"1", pax={"SCHILY.xattr.user.comment": "hello",
                          "SCHILY.xattr.trusted.secret": "s",
                          "SCHILY.xattr.user.overlay.opaque": "y"}),
        d("dx/", pax={"SCHILY.xattr.user.dir": "yes"}),
    ])
    assert os.getxattr(dest / "x", "user.comment") == b"hello"
    assert os.getxattr(dest / "dx", "user.dir") == b"yes"
    assert res["xattrs_skipped"] == 1  # a layer may not set the overlay's own xattrs
    assert "user.overlay.opaque" not in os.listxattr(dest / "x")
    if not ROOT:
        assert res["xattr_failures"] == 1  # trusted.* needs CAP_SYS_ADMIN


def test_binary_xattr_value(tmp_path: Path) -> None:
    value = bytes(range(256))
    raw_value = value.decode("utf-8", "surrogateescape")
    _, dest = run(tmp_path, [f("x", b"1", pax={"SCHILY.xattr.user.bin": raw_value})])
    assert os.getxattr(dest / "x", "user.bin") == value


def test_whiteouts(tmp_path: Path) -> None:
    res, dest = run(tmp_path, [d("etc/"), f("etc/.wh.gone"), d("var/"), f("var/.wh..wh..opq"),
                               f("var/new", b"n"), f(".wh.toplevel")])
    if res["whiteout_format"] == "overlay":
        for p in ("etc/gone", "toplevel"):
            st = os.lstat(dest / p)
            assert stat.S_ISCHR(st.st_mode) and st.st_rdev == 0
        assert os.getxattr(dest / "var", "user.overlay.opaque") == b"y"
        assert not (dest / "etc/.wh.gone").exists()
        assert not (dest / "var/.wh..wh..opq").exists()
    else:
        assert not ROOT  # only an unprivileged process without a namespace falls back
        assert res["whiteout_format"] == "aufs"
        assert (dest / "etc/.wh.gone").is_file() and (dest / "var/.wh..wh..opq").is_file()
    assert res["whiteouts"] == 2 and res["opaque_dirs"] == 1
    assert (dest / "var/new").read_bytes() == b"n"


def test_no_whiteouts_reports_overlay(tmp_path: Path) -> None:
    res, _ = run(tmp_path, [f("a")])
    assert res["whiteout_format"] == "overlay" and res["whiteouts"] == 0


def test_replaced_members(tmp_path: Path) -> None:
    _, dest = run(tmp_path, [
        f("x", b"old"), f("x", b"new"),
        d("d/"), f("d/child"), f("d", b"now a file"),
        f("e", b"was a file"), d("e/"), f("e/in"),
        sym("s", "target"), f("s", b"regular"),
        d("keep/", 0o700), f("keep/a"), d("keep/", 0o755), f("keep/b"),
    ])
    assert (dest / "x").read_bytes() == b"new"
    assert (dest / "d").read_bytes() == b"now a file"
    assert (dest / "e").is_dir() and (dest / "e/in").exists()
    assert not os.path.islink(dest / "s") and (dest / "s").read_bytes() == b"regular"
    assert sorted(os.listdir(dest / "keep")) == ["a", "b"]  # dir over dir keeps its entries
    assert stat.S_IMODE(os.stat(dest / "keep").st_mode) == 0o755  # the later entry's mode


def test_readonly_dir_applied_last(tmp_path: Path) -> None:
    _, dest = run(tmp_path, [d("ro/", 0o555), f("ro/f", b"x"), d("ro/sub/", 0o500), f("ro/sub/g"),
                             d("none/", 0o000), f("none/h")])
    assert stat.S_IMODE(os.stat(dest / "ro").st_mode) == 0o555
    assert stat.S_IMODE(os.stat(dest / "ro/sub").st_mode) == 0o500
    assert stat.S_IMODE(os.stat(dest / "none").st_mode) == 0o000
    assert (dest / "ro/f").read_bytes() == b"x"
    assert os.stat(dest / "ro").st_mtime == MTIME
    remove_tree(str(dest))
    assert not dest.exists()


def test_many_directories(tmp_path: Path) -> None:
    # More directories than the fd cache holds, visited out of order.
    members = [d(f"d{i}/") for i in range(150)]
    members += [f(f"d{i}/f", str(i).encode()) for i in range(150)]
    members += [f(f"d{i}/g") for i in reversed(range(150))]
    members += [f("/".join(["deep"] * 80) + "/leaf", b"deep")]
    _, dest = run(tmp_path, members)
    assert (dest / "d149/f").read_bytes() == b"149"
    assert (dest / ("/".join(["deep"] * 80) + "/leaf")).read_bytes() == b"deep"


def test_ownership_applied_as_root(tmp_path: Path) -> None:
    if not ROOT:
        pytest.skip("needs (namespace-)root; see tests/integration/test_unpack_userns.py")
    res, dest = run(tmp_path, [f("u", b"1", uid=1000, gid=1001), f("su", b"x", 0o4755, uid=1000),
                               d("dd/", uid=7, gid=8), sym("l", "u", uid=5, gid=6)])
    assert (os.stat(dest / "u").st_uid, os.stat(dest / "u").st_gid) == (1000, 1001)
    assert stat.S_IMODE(os.stat(dest / "su").st_mode) == 0o4755  # chmod after chown
    assert (os.stat(dest / "dd").st_uid, os.stat(dest / "dd").st_gid) == (7, 8)
    assert os.lstat(dest / "l").st_uid == 5
    assert res["overflow_ids"] == 0


def test_remove_tree_readonly(tmp_path: Path) -> None:
    top = tmp_path / "t"
    (top / "a/b").mkdir(parents=True)
    (top / "a/b/f").write_text("x")
    os.symlink("/etc", top / "a/link")
    os.chmod(top / "a/b", 0o000)
    os.chmod(top / "a", 0o555)
    remove_tree(str(top))
    assert not top.exists()
    assert os.path.exists("/etc/passwd")
    remove_tree(str(top))  # already gone: no error


# ---------------------------------------------------------------- LayerStore


@pytest.fixture
def stores(tmp_path: Path) -> tuple[Layout, BlobStore, LayerStore]:
    layout = Layout(root=tmp_path / "store", runroot=tmp_path / "run")
    layout.ensure_store()
    return layout, BlobStore(layout), LayerStore(layout, LocalRunner())


def test_layer_store_ensure(stores: tuple[Layout, BlobStore, LayerStore]) -> None:
    layout, blobs, ls = stores
    raw = build_tar([d("etc/", 0o555), f("etc/os-release", b"ID=test\n")])
    digest = blobs.put_bytes(gz(raw))
    diff_id = sha(raw)
    assert not ls.has(diff_id)
    meta = ls.ensure(diff_id, digest, GZ)
    assert ls.has(diff_id) and ls.list() == [diff_id]
    assert (ls.path(diff_id) / "etc/os-release").read_bytes() == b"ID=test\n"
    assert ls.path(diff_id) == layout.layer(diff_id) / "diff"
    assert meta["diff_id"] == diff_id and meta["blob"] == digest and meta["size"] == len(raw)
    assert ls.meta(diff_id) == meta
    assert ls.ensure(diff_id, digest, GZ) == meta  # already there: not unpacked again
    assert os.listdir(layout.tmp) == []
    ls.remove(diff_id)
    assert not ls.has(diff_id) and ls.list() == [] and os.listdir(layout.tmp) == []
    with pytest.raises(NotFoundError):
        ls.remove(diff_id)


def test_layer_store_bad_layer_leaves_nothing(stores: tuple[Layout, BlobStore, LayerStore]) -> None:
    layout, blobs, ls = stores
    raw = build_tar([f("a", b"1")])
    digest = blobs.put_bytes(raw)
    with pytest.raises(DigestMismatchError):
        ls.ensure("sha256:" + "1" * 64, digest, TAR)
    evil = blobs.put_bytes(build_tar([f("ok"), f("../evil")]))
    with pytest.raises(StorageError, match="'..'"):
        ls.ensure("sha256:" + "2" * 64, evil, TAR)
    assert os.listdir(layout.tmp) == [] and ls.list() == []
    assert [n for n in os.listdir(layout.locks) if n.startswith("tmp-")] == []


def test_layer_store_missing_blob(stores: tuple[Layout, BlobStore, LayerStore]) -> None:
    _, _, ls = stores
    with pytest.raises(NotFoundError):
        ls.ensure("sha256:" + "1" * 64, "sha256:" + "2" * 64, TAR)


def test_cleanup_tmp(stores: tuple[Layout, BlobStore, LayerStore]) -> None:
    layout, _, ls = stores
    stale = layout.tmp / "layer-dead"
    (stale / "diff/ro").mkdir(parents=True)
    os.chmod(stale / "diff/ro", 0o555)
    live = layout.tmp / "layer-live"
    live.mkdir()
    partial = layout.tmp / ("a" * 64 + ".partial")
    partial.write_bytes(b"resume me")
    with FileLock(layout.locks / "tmp-layer-live.lock"):
        assert ls.cleanup_tmp() == ["layer-dead"]
    assert sorted(os.listdir(layout.tmp)) == sorted([live.name, partial.name])


def test_truncated_inside_skipped_member(tmp_path: Path) -> None:
    raw = bytearray(build_tar([f("a", os.urandom(10_000))]))
    raw[156:157] = b"Z"  # an unknown type: its data is skipped (seeked over), not read
    header = bytes(raw[:148]) + b" " * 8 + bytes(raw[156:512])
    raw[148:156] = b"%06o\0 " % sum(header)
    blob = tmp_path / "l.blob"
    blob.write_bytes(bytes(raw[:3000]))
    with pytest.raises(StorageError):
        unpack(str(blob), TAR, str(tmp_path / "l"), None)


def test_truncated_inside_file(tmp_path: Path) -> None:
    raw = build_tar([f("a", os.urandom(10_000))])
    blob = tmp_path / "l.blob"
    blob.write_bytes(raw[:3000])
    with pytest.raises(StorageError, match="ends inside"):
        unpack(str(blob), TAR, str(tmp_path / "l"), None)
