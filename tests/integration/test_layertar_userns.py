"""storage.layertar for real: a layer unpacked as root of the store's user namespace is
written back from inside it; owners as the image knows them, whiteouts from 0:0 devices
and opaque xattrs, the same bytes every time."""

from __future__ import annotations

import gzip
import io
import os
import tarfile
import time
from pathlib import Path

import pytest

from rootless.layout import Layout
from rootless.runtime import idmap
from rootless.runtime.userns import StoreNamespace
from storage.blobs import BlobStore
from storage.layers import LayerStore
from tests.integration import test_unpack_userns
from tests.unit.tarbuild import MTIME, M, build_tar, d, f, hard, sha, sym

USER = idmap.current_user()
SUBUIDS = idmap.read_subid(idmap.SUBUID, USER, os.getuid())
pytestmark = [pytest.mark.integration, pytest.mark.skipif(not SUBUIDS, reason=f"{USER} has no subordinate ids")]
TAR = "application/vnd.oci.image.layer.v1.tar"
GZ = "application/vnd.oci.image.layer.v1.tar+gzip"
BOOKWORM = Path("/var/cache/rootless-ci/bookworm.tar")
env = test_unpack_userns.env  # the store-namespace fixture


def members(raw: bytes) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(raw)) as tf:
        return {m.name.rstrip("/"): m for m in tf.getmembers()}


def write(ns: StoreNamespace, layout: Layout, src: Path, name: str, compression: str = "none") -> tuple[dict, bytes]:
    dest = layout.tmp / name
    res = ns.call("storage.layertar:write_layer", src=str(src), dest=str(dest), compression=compression)
    data = dest.read_bytes()
    return res, gzip.decompress(data) if compression == "gzip" else data


def test_owners_whiteouts_and_modes_come_back(env: tuple[Layout, BlobStore, LayerStore, StoreNamespace]) -> None:
    layout, blobs, layers, ns = env
    original = [
        d("etc/", 0o755),
        f("etc/user-file", b"u", 0o640, uid=1000, gid=1000),
        f("etc/nobody-file", b"n", 0o600, uid=65534, gid=65534),
        f("usr/bin/su", b"\x7fELF", 0o4755),
        f("usr/bin/wall", b"\x7fELF", 0o2755, gid=5),
        hard("usr/bin/su2", "usr/bin/su"),
        sym("etc/link", "/nowhere", uid=1000, gid=1000),
        d("ro/", 0o555, uid=33, gid=33), f("ro/inside", b"i"),
        d("gone/"), f("gone/.wh.deleted", uid=7, gid=7),
        d("opaque/"), f("opaque/.wh..wh..opq"), f("opaque/kept", b"k"),
        M("run/fifo", tarfile.FIFOTYPE, mode=0o620, uid=1000, gid=5),
        f("note", b"c", 0o755, pax={"SCHILY.xattr.user.note": "kept"}),
    ]
    raw = build_tar(original)
    meta = layers.ensure(sha(raw), blobs.put_bytes(raw), TAR)
    assert meta["whiteout_format"] == "overlay"  # so the writer sees real 0:0 devices
    root = layers.path(sha(raw))

    res, out = write(ns, layout, root, "one")
    got = members(out)
    assert res["diff_id"] == sha(out)
    assert (got["etc/user-file"].uid, got["etc/user-file"].gid) == (1000, 1000)  # as the namespace sees it
    assert (got["etc/nobody-file"].uid, got["etc/nobody-file"].mode) == (65534, 0o600)
    assert (got["ro"].uid, got["ro"].mode, got["ro"].mtime) == (33, 0o555, MTIME)
    assert got["usr/bin/su"].mode == 0o4755 and got["usr/bin/su"].uid == 0
    assert got["usr/bin/wall"].mode == 0o2755 and got["usr/bin/wall"].gid == 5
    assert got["usr/bin/su2"].islnk() and got["usr/bin/su2"].linkname == "usr/bin/su"
    assert got["etc/link"].issym() and got["etc/link"].uid == 1000
    assert got["run/fifo"].isfifo() and (got["run/fifo"].uid, got["run/fifo"].gid) == (1000, 5)
    assert got["note"].pax_headers.get("SCHILY.xattr.user.note") == "kept"
    # The 0:0 device became the whiteout file again; the opaque xattr its marker.
    assert got["gone/.wh.deleted"].isreg() and got["gone/.wh.deleted"].size == 0
    assert "gone/deleted" not in got
    assert got["opaque/.wh..wh..opq"].isreg()
    assert not any("overlay" in k for m in got.values() for k in m.pax_headers)
    kinds = {e[0]: e[1] for e in ns.call("tests.integration.nsfuncs:layertar_walk", root=str(root))}
    assert kinds["gone/deleted"] == "whiteout" and kinds["opaque"] == "opaque"

    # unpack(write(dir)) == dir: written again from the re-unpacked tree, byte for byte.
    meta2 = layers.ensure(res["diff_id"], blobs.put_bytes(out), TAR)
    assert meta2["overflow_ids"] == 0
    res2, out2 = write(ns, layout, layers.path(res["diff_id"]), "two")
    assert out2 == out and res2["diff_id"] == res["diff_id"]


def test_an_upper_dir_with_overlay_whiteouts(env: tuple[Layout, BlobStore, LayerStore, StoreNamespace]) -> None:
    """A container's upper directory as overlayfs leaves it: 0:0 devices and user.overlay.opaque."""
    layout, _, _, ns = env
    upper = layout.tmp / "upper"
    ns.call("tests.integration.nsfuncs:make_upper", path=str(upper))
    res, out = write(ns, layout, upper, "upper.tar.gz", "gzip")
    got = members(out)
    assert res["diff_id"] == sha(out) and res["compression"] == "gzip"
    assert set(got) == {"etc", "etc/.wh.passwd", "var", "var/.wh..wh..opq", "var/new"}
    assert (got["etc/.wh.passwd"].mode, got["etc/.wh.passwd"].uid) == (0o600, 0)
    assert got["var/new"].uid == 1000


@pytest.mark.slow
@pytest.mark.skipif(not BOOKWORM.is_file(), reason=f"{BOOKWORM} (a Debian rootfs tar) is not there")
def test_bookworm_round_trip_is_reproducible(env: tuple[Layout, BlobStore, LayerStore, StoreNamespace]) -> None:
    layout, blobs, layers, ns = env
    raw = BOOKWORM.read_bytes()
    layers.ensure(sha(raw), blobs.put_bytes(raw), TAR)
    start = time.monotonic()
    res, out = write(ns, layout, layers.path(sha(raw)), "bookworm.tar.gz", "gzip")
    print(f"bookworm layer written and compressed in {time.monotonic() - start:.2f} s")
    assert res["entries"] > 8000
    # Device nodes are not made in a user namespace (the unpacker skips them).
    names = {n.removeprefix("./") for n, m in members(raw).items() if not (m.ischr() or m.isblk())} - {"", "."}
    assert set(members(out)) == names
    os.rename(layout.tmp / "bookworm.tar.gz", layout.blob(res["digest"]))
    layers.ensure(res["diff_id"], res["digest"], GZ)
    res2, _ = write(ns, layout, layers.path(res["diff_id"]), "again.tar.gz", "gzip")
    assert (res2["diff_id"], res2["digest"]) == (res["diff_id"], res["digest"])
