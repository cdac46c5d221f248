"""Layers unpacked for real: as root of the store's user namespace (StoreNamespace), checked
from the host. Owners land at subuid_start + id - 1, whiteouts are 0:0 devices."""

from __future__ import annotations

import io
import os
import stat
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from rootless.context import Log
from rootless.errors import StorageError
from rootless.layout import Layout
from rootless.runtime import idmap
from rootless.runtime.userns import StoreNamespace
from storage.blobs import BlobStore
from storage.layers import LayerStore
from tests.unit.tarbuild import MTIME, M, build_tar, d, f, gz, hard, sha, sym

UID, GID = os.getuid(), os.getgid()
USER = idmap.current_user()
SUBUIDS = idmap.read_subid(idmap.SUBUID, USER, UID)
SUBGIDS = idmap.read_subid(idmap.SUBGID, USER, UID)
pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(not (SUBUIDS and SUBGIDS), reason=f"{USER} has no subordinate ids")]
GZ = "application/vnd.oci.image.layer.v1.tar+gzip"
BOOKWORM = Path("/var/cache/rootless-ci/bookworm.tar")


def host_uid(ns_id: int) -> int:
    return UID if ns_id == 0 else SUBUIDS[0].start + ns_id - 1


def host_gid(ns_id: int) -> int:
    return GID if ns_id == 0 else SUBGIDS[0].start + ns_id - 1


@pytest.fixture
def env(tmp_path: Path) -> Iterator[tuple[Layout, BlobStore, LayerStore, StoreNamespace]]:
    layout = Layout(root=tmp_path / "store", runroot=tmp_path / "run")
    layout.ensure_store()
    with StoreNamespace(layout, Log(level=30, stream=io.StringIO()), workers=2) as ns:
        yield layout, BlobStore(layout), LayerStore(layout, ns), ns
        # Files owned by subordinate IDs: only namespace-root can remove them.
        ns.call("storage.layers:remove_tree", path=str(layout.root.parent))


def test_owners_modes_whiteouts(env: tuple[Layout, BlobStore, LayerStore, StoreNamespace]) -> None:
    layout, blobs, layers, ns = env
    raw = build_tar([
        d("./", 0o755),
        d("etc/", 0o755),
        f("etc/root-file", b"r", 0o644),
        f("etc/user-file", b"u", 0o640, uid=1000, gid=1000),
        f("etc/nobody-file", b"n", 0o600, uid=65534, gid=65534),
        f("etc/huge-id", b"h", 0o644, uid=4_000_000_000, gid=4_000_000_000),
        f("usr/bin/su", b"\x7fELF", 0o4755, uid=0, gid=0),
        f("usr/bin/wall", b"\x7fELF", 0o2755, uid=0, gid=5),
        f("usr/bin/userprog", b"\x7fELF", 0o6755, uid=1000, gid=1000),
        hard("usr/bin/su2", "usr/bin/su"),
        sym("etc/link", "/nowhere", uid=1000, gid=1000),
        d("home/user/", 0o700, uid=1000, gid=1000),
        d("ro/", 0o555, uid=33, gid=33), f("ro/inside", b"i"),
        d("gone/"), f("gone/.wh.deleted"),
        d("opaque/"), f("opaque/.wh..wh..opq"), f("opaque/kept", b"k"),
        M("dev/null", tarfile.CHRTYPE, devmajor=1, devminor=3),
        M("run/fifo", tarfile.FIFOTYPE, mode=0o620, uid=1000, gid=5),
        f("cap", b"c", 0o755, pax={"SCHILY.xattr.user.note": "kept"}),
    ])
    digest = blobs.put_bytes(gz(raw))
    meta = layers.ensure(sha(raw), digest, GZ)
    root = layers.path(sha(raw))

    def owner(p: str) -> tuple[int, int]:
        st = os.lstat(root / p)
        return st.st_uid, st.st_gid

    assert meta["whiteout_format"] == "overlay"
    assert owner("etc/root-file") == (UID, GID)
    assert owner("etc/user-file") == (host_uid(1000), host_gid(1000))
    assert host_uid(1000) == SUBUIDS[0].start + 999  # 100999 for rltest
    assert owner("etc/nobody-file") == (host_uid(65534), host_gid(65534))
    # 4000000000 is outside the mapping: owned by the mapped root (the user), and counted.
    assert owner("etc/huge-id") == (UID, GID)
    assert meta["overflow_ids"] == 1
    assert stat.S_IMODE(os.stat(root / "usr/bin/su").st_mode) == 0o4755
    assert stat.S_IMODE(os.stat(root / "usr/bin/wall").st_mode) == 0o2755
    assert owner("usr/bin/wall") == (UID, host_gid(5))
    assert stat.S_IMODE(os.stat(root / "usr/bin/userprog").st_mode) == 0o6755
    assert owner("usr/bin/userprog") == (host_uid(1000), host_gid(1000))
    assert os.stat(root / "usr/bin/su2").st_ino == os.stat(root / "usr/bin/su").st_ino
    assert owner("etc/link") == (host_uid(1000), host_gid(1000))
    assert owner("home/user") == (host_uid(1000), host_gid(1000))
    assert stat.S_IMODE(os.stat(root / "home/user").st_mode) == 0o700
    assert owner("ro") == (host_uid(33), host_gid(33))
    assert stat.S_IMODE(os.stat(root / "ro").st_mode) == 0o555
    assert os.stat(root / "ro").st_mtime == MTIME
    wh = os.lstat(root / "gone/deleted")
    assert stat.S_ISCHR(wh.st_mode) and wh.st_rdev == 0
    assert not (root / "gone/.wh.deleted").exists()
    assert os.getxattr(root / "opaque", "user.overlay.opaque") == b"y"
    assert (root / "opaque/kept").read_bytes() == b"k"
    assert meta["devices_skipped"] == 1 and not (root / "dev/null").exists()
    assert stat.S_ISFIFO(os.lstat(root / "run/fifo").st_mode)
    assert owner("run/fifo") == (host_uid(1000), host_gid(5))
    assert os.getxattr(root / "cap", "user.note") == b"kept"

    # Subordinate-owned, read-only trees are removed from inside the namespace.
    layers.remove(sha(raw))
    assert not layout.layer(sha(raw)).exists() and os.listdir(layout.tmp) == []


def test_file_capabilities_survive(env: tuple[Layout, BlobStore, LayerStore, StoreNamespace]) -> None:
    """security.capability from the tar (v2, as images carry it) is stored as a namespaced
    v3 capability by the kernel; the file keeps it after the chown."""
    _, blobs, layers, _ = env
    # VFS_CAP_REVISION_2 with CAP_NET_BIND_SERVICE (bit 10) permitted+effective.
    cap = (0x02000001).to_bytes(4, "little") + (1 << 10).to_bytes(4, "little") + bytes(4) + bytes(8)
    raw = build_tar([f("ping", b"\x7fELF", 0o755, uid=0, pax={
        "SCHILY.xattr.security.capability": cap.decode("utf-8", "surrogateescape")})])
    meta = layers.ensure(sha(raw), blobs.put_bytes(raw), "application/vnd.oci.image.layer.v1.tar")
    assert meta["xattr_failures"] == 0
    assert "security.capability" in os.listxattr(layers.path(sha(raw)) / "ping")


def test_malicious_layer_fails_and_leaves_nothing(
        env: tuple[Layout, BlobStore, LayerStore, StoreNamespace]) -> None:
    layout, blobs, layers, _ = env
    outside = layout.root.parent / "outside"
    outside.mkdir()
    raw = build_tar([d("a/"), sym("a/esc", str(outside)), f("a/esc/pwned", b"x")])
    with pytest.raises(StorageError, match="symlink"):
        layers.ensure(sha(raw), blobs.put_bytes(raw), "application/vnd.oci.image.layer.v1.tar")
    assert os.listdir(outside) == []
    assert os.listdir(layout.tmp) == [] and layers.list() == []


def test_cleanup_tmp_of_subordinate_owned_tree(
        env: tuple[Layout, BlobStore, LayerStore, StoreNamespace]) -> None:
    layout, _, layers, ns = env
    stale = layout.tmp / "layer-killed"
    stale.mkdir()
    ns.call("tests.integration.nsfuncs:chown", path=str(stale), uid=1000, gid=1000)
    assert os.stat(stale).st_uid == host_uid(1000)
    assert layers.cleanup_tmp() == ["layer-killed"]
    assert not stale.exists()


@pytest.mark.slow
@pytest.mark.skipif(not BOOKWORM.is_file(), reason=f"{BOOKWORM} (a Debian rootfs tar) is not there")
def test_unpack_bookworm_speed(env: tuple[Layout, BlobStore, LayerStore, StoreNamespace],
                               tmp_path: Path) -> None:
    """debian:bookworm-sized layer (60 MB gzip, 170 MB, ~8,700 files): the budget is 3.5 s."""
    _, blobs, layers, _ = env
    raw = BOOKWORM.read_bytes()
    digest = blobs.put_bytes(gz(raw))
    start = time.monotonic()
    meta = layers.ensure(sha(raw), digest, GZ)
    elapsed = time.monotonic() - start
    print(f"bookworm unpack in the store namespace: {elapsed:.2f} s, {meta['files']} files")
    assert meta["size"] == len(raw) and meta["files"] > 8000
    assert elapsed < 10  # generous: disk writeback on a shared VM varies widely
