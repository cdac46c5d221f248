"""storage.layertar and storage.compress: directory → layer tar, checked through the
project's own unpacker (unpack(write(dir)) == dir), run unprivileged without a namespace.

Owners and 0:0 whiteout devices need namespace-root: tests/integration/test_layertar_userns.py.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import stat
import tarfile
from pathlib import Path

import pytest
import zstandard

from storage import compress, layertar
from storage.layers import unpack
from storage.nsrunner import LocalRunner
from tests.unit.tarbuild import MTIME, build_tar, d, f, sha

TAR = "application/vnd.oci.image.layer.v1.tar"


def tree(root: Path) -> None:
    """A tree with every kind an unprivileged user can make."""
    (root / "etc").mkdir(parents=True)
    (root / "etc/hosts").write_bytes(b"127.0.0.1 localhost\n")
    (root / "usr/bin").mkdir(parents=True)
    (root / "usr/bin/tool").write_bytes(b"#!/bin/sh\n" + os.urandom(70_000))
    os.chmod(root / "usr/bin/tool", 0o4755)  # set-user-ID: kept
    os.link(root / "usr/bin/tool", root / "usr/bin/tool2")
    os.symlink("usr/bin", root / "bin")
    os.symlink("/nowhere/at/all", root / "etc/dangling")
    os.mkfifo(root / "etc/fifo", 0o640)
    (root / "tmp").mkdir(mode=0o777)
    os.chmod(root / "tmp", 0o1777)
    (root / "ro").mkdir()
    (root / "ro/file").write_bytes(b"x")
    (root / ("long-" + "n" * 120)).mkdir()
    (root / ("long-" + "n" * 120) / ("deeper-" + "m" * 100)).write_bytes(b"deep")
    (root / "a.txt").write_bytes(b"sorted before a/ bytewise, after it depth-first")
    (root / "a").mkdir()
    (root / "a/b").write_bytes(b"")
    os.setxattr(root / "etc/hosts", "user.note", b"kept \xff binary")
    os.chmod(root / "ro", 0o555)
    for p in sorted(root.rglob("*"), reverse=True):
        os.utime(p, (MTIME, MTIME + 0.75), follow_symlinks=False)


def snapshot(root: Path) -> dict[str, tuple]:
    """What a layer must carry of each path (owners are checked in the namespace test)."""
    out: dict[str, tuple] = {}
    for e in layertar.walk(root):
        i = e.info
        data = Path(e.source).read_bytes() if e.source else b""
        out[e.path] = (e.kind, i.mode, i.mtime, i.linkname, i.size, dict(i.pax_headers), data)
    return out


def write_bytes(root: Path) -> tuple[bytes, layertar.Written]:
    buf = io.BytesIO()
    written = layertar.write(root, buf)
    return buf.getvalue(), written


def test_round_trip_through_the_unpacker(tmp_path: Path) -> None:
    src = tmp_path / "src"
    tree(src)
    raw, written = write_bytes(src)
    assert written.diff_id == sha(raw) and written.size == len(raw)
    blob = tmp_path / "blob"
    blob.write_bytes(raw)
    res = unpack(str(blob), TAR, str(tmp_path / "dest"), written.diff_id)
    assert res["rejected"] == [] and res["xattr_failures"] == 0
    assert snapshot(tmp_path / "dest") == snapshot(src)
    # ... and the unpacked tree writes the very same bytes: same tree, same diff ID.
    assert write_bytes(tmp_path / "dest")[0] == raw
    os.chmod(src / "ro", 0o755)
    os.chmod(tmp_path / "dest/ro", 0o755)


def test_header_details(tmp_path: Path) -> None:
    src = tmp_path / "src"
    tree(src)
    raw, _ = write_bytes(src)
    with tarfile.open(fileobj=io.BytesIO(raw)) as tf:
        members = tf.getmembers()
    names = [m.name for m in members]
    assert names[:4] == ["a", "a/b", "a.txt", "bin"]  # depth first, bytewise per directory
    assert "./" not in names and "." not in names
    by = {m.name: m for m in members}
    assert by["usr/bin/tool"].mode == 0o4755 and by["tmp"].mode == 0o1777
    assert by["usr/bin/tool2"].type == tarfile.LNKTYPE and by["usr/bin/tool2"].linkname == "usr/bin/tool"
    assert by["etc/fifo"].isfifo() and by["bin"].issym()
    assert by["etc/hosts"].mtime == MTIME  # whole seconds
    assert by["etc/hosts"].pax_headers["SCHILY.xattr.user.note"].encode("utf-8", "surrogateescape") \
        == b"kept \xff binary"
    assert all(m.uname == "" and m.gname == "" for m in members)
    assert raw.endswith(b"\0" * 1024) and len(raw) % 512 == 0
    assert raw[:512].startswith(b"a/")  # no PAX header where ustar suffices
    assert raw[:3] == b"a/\0"  # a directory's name ends in a slash, as Docker writes it


def test_whiteouts_in_aufs_format_and_opaque_xattrs(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "gone").mkdir(parents=True)
    (src / "gone/.wh.deleted").write_bytes(b"")
    (src / "aufs-opaque").mkdir()
    (src / "aufs-opaque/.wh..wh..opq").write_bytes(b"")
    (src / "aufs-opaque/kept").write_bytes(b"k")
    (src / "ovl-opaque").mkdir()
    (src / "ovl-opaque/new").write_bytes(b"n")
    (src / "not-opaque").mkdir()
    try:
        os.setxattr(src / "ovl-opaque", "user.overlay.opaque", b"y")
        # overlayfs marks a merged directory holding whiteouts with "x": not opaque.
        os.setxattr(src / "not-opaque", "user.overlay.opaque", b"x")
        os.setxattr(src / "not-opaque", "user.overlay.origin", b"\0\1")
    except OSError:
        pytest.skip("no user xattrs on this file system")
    kinds = {(e.path, e.kind) for e in layertar.walk(src)}
    assert ("gone/deleted", "whiteout") in kinds
    assert ("aufs-opaque", "opaque") in kinds and ("ovl-opaque", "opaque") in kinds
    assert ("not-opaque", "opaque") not in kinds
    raw, _ = write_bytes(src)
    with tarfile.open(fileobj=io.BytesIO(raw)) as tf:
        by = {m.name: m for m in tf.getmembers()}
    assert "gone/.wh.deleted" in by and "aufs-opaque/.wh..wh..opq" in by
    assert "ovl-opaque/.wh..wh..opq" in by and by["ovl-opaque/.wh..wh..opq"].size == 0
    assert list(by).index("ovl-opaque/.wh..wh..opq") == list(by).index("ovl-opaque") + 1
    assert not any(k.startswith("SCHILY.xattr.user.overlay") for m in by.values() for k in m.pax_headers)
    # Back through the unpacker: opaque and whiteouts come back as the store keeps them.
    blob = tmp_path / "blob"
    blob.write_bytes(raw)
    res = unpack(str(blob), TAR, str(tmp_path / "dest"))
    assert res["opaque_dirs"] == 2


def test_a_file_that_changes_size_while_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "shrinks").write_bytes(b"x" * 1000)
    real = layertar._header

    def header(name, st, tartype, xattrs):  # type: ignore[no-untyped-def]
        ti = real(name, st, tartype, xattrs)
        (src / "shrinks").write_bytes(b"y" * 10)  # after lstat, before the data is read
        return ti

    monkeypatch.setattr(layertar, "_header", header)
    raw, _ = write_bytes(src)
    with tarfile.open(fileobj=io.BytesIO(raw)) as tf:
        data = tf.extractfile("shrinks").read()  # type: ignore[union-attr]
    assert data == b"y" * 10 + b"\0" * 990  # the header's size holds: the stream stays valid


@pytest.mark.parametrize("kind", ["none", "gzip", "zstd"])
def test_write_layer_entry_point(tmp_path: Path, kind: str) -> None:
    src = tmp_path / "src"
    tree(src)
    raw, _ = write_bytes(src)
    dest = tmp_path / "layer.out"
    res = LocalRunner().call("storage.layertar:write_layer", src=str(src), dest=str(dest), compression=kind)
    blob = dest.read_bytes()
    assert res["digest"] == "sha256:" + hashlib.sha256(blob).hexdigest()
    assert res["compressed_size"] == len(blob)
    assert res["diff_id"] == sha(raw) and res["size"] == len(raw)
    plain = {"none": lambda b: b, "gzip": gzip.decompress,
             "zstd": lambda b: zstandard.ZstdDecompressor().stream_reader(io.BytesIO(b)).read()}[kind](blob)
    assert plain == raw
    # reproducible down to the compressed bytes
    again = tmp_path / "again.out"
    res2 = LocalRunner().call("storage.layertar:write_layer", src=str(src), dest=str(again), compression=kind)
    assert res2["digest"] == res["digest"]
    os.chmod(src / "ro", 0o755)


def test_write_layer_refuses_an_existing_file_and_cleans_up(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    dest = tmp_path / "exists"
    dest.write_bytes(b"mine")
    with pytest.raises(Exception, match="File exists"):
        layertar.write_layer(str(tmp_path / "src"), str(dest))
    assert dest.read_bytes() == b"mine"
    with pytest.raises(Exception, match="No such file"):
        layertar.write_layer(str(tmp_path / "missing"), str(tmp_path / "new"))
    assert not (tmp_path / "new").exists()


# ---------------------------------------------------------------- compress


@pytest.mark.parametrize("library", ["isal", "zlib"])
def test_gzip_writer_is_deterministic_and_readable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   library: str) -> None:
    if library == "zlib":
        monkeypatch.setattr(compress, "_isal", lambda: None)
    else:
        pytest.importorskip("isal")
    data = build_tar([d("etc/"), f("etc/big", os.urandom(3 << 20) + b"\0" * (2 << 20))])
    outs = []
    for threads in (1, 2):
        monkeypatch.setattr(compress, "_threads", lambda n=threads: n)
        buf = io.BytesIO()
        h = compress.HashingFile(buf)
        with compress.writer(h, "gzip") as w:  # type: ignore[arg-type]
            w.write(data)
        assert not buf.closed
        assert h.size == len(buf.getvalue()) and h.digest() == "sha256:" + hashlib.sha256(buf.getvalue()).hexdigest()
        outs.append(buf.getvalue())
    assert outs[0] == outs[1]  # the blob digest does not depend on the number of cores
    assert gzip.decompress(outs[0]) == data
    assert outs[0][4:8] == b"\0\0\0\0"  # gzip MTIME 0 (RFC 1952 2.3.1)
    chunks = compress.reader(io.BytesIO(outs[0] + outs[0]), "gzip")  # two members
    got = b"".join(iter(chunks, b""))
    assert got == data + data


def test_levels() -> None:
    if compress.library() == "isal":
        assert [compress.gzip_level(x) for x in (None, 0, 1, 5, 9)] == [2, 0, 1, 2, 3]
    with pytest.raises(Exception, match="out of range"):
        compress.gzip_level(10)
    with pytest.raises(Exception, match="out of range"), compress.writer(io.BytesIO(), "zstd", 30):
        pass


@pytest.mark.parametrize("kind,make", [
    ("gzip", gzip.compress), ("zstd", lambda b: zstandard.ZstdCompressor().compress(b)),
    ("bzip2", __import__("bz2").compress), ("xz", __import__("lzma").compress), ("none", lambda b: b),
])
def test_sniff_and_read(kind: str, make, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    data = b"ustar content " * 1000
    blob = make(data)
    assert compress.sniff(blob[:6]) == kind
    assert b"".join(iter(compress.reader(io.BytesIO(blob), kind), b"")) == data


def test_layer_mode_bits_survive_as_namespace_independent_data(tmp_path: Path) -> None:
    # A layer written from a tree whose files are not readable by their owner still streams
    # (namespace-root reads through DAC; unprivileged here we only check the error is clean).
    src = tmp_path / "src"
    src.mkdir()
    (src / "secret").write_bytes(b"s")
    os.chmod(src / "secret", 0)
    if os.access(src / "secret", os.R_OK):
        pytest.skip("running with CAP_DAC_OVERRIDE")
    with pytest.raises(Exception, match="Permission denied"):
        layertar.write_layer(str(src), str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()
    assert stat.S_IMODE(os.lstat(src / "secret").st_mode) == 0


def test_walk_union_is_the_merged_view(tmp_path: Path) -> None:
    low, mid, up = tmp_path / "low", tmp_path / "mid", tmp_path / "up"
    for p, data in ((low / "etc/passwd", b"root"), (low / "etc/group", b"g"), (low / "var/old", b"o"),
                    (low / "keep", b"low"), (low / "dir-to-file/x", b"x"), (mid / "keep", b"mid"),
                    (mid / "etc/.wh.group", b""), (mid / "var/.wh..wh..opq", b""), (mid / "var/new", b"n"),
                    (up / "etc/added", b"a"), (up / "dir-to-file", b"now a file")):
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    got = {e.path: (e.kind, Path(e.source).read_bytes() if e.source else None)
           for e in layertar.walk_union([str(low), str(mid), str(up)])}
    assert got == {
        "dir-to-file": ("file", b"now a file"),
        "etc": ("dir", None), "etc/added": ("file", b"a"), "etc/passwd": ("file", b"root"),
        "keep": ("file", b"mid"),
        "var": ("dir", None), "var/new": ("file", b"n"),
    }
    raw = io.BytesIO()
    layertar.write_entries(layertar.walk_union([str(low), str(mid), str(up)]), raw)
    with tarfile.open(fileobj=io.BytesIO(raw.getvalue())) as tf:
        assert [m.name for m in tf.getmembers()] == ["dir-to-file", "etc", "etc/added", "etc/passwd", "keep",
                                                    "var", "var/new"]


def test_read_ahead_hashes_and_passes_errors() -> None:
    data = os.urandom(3 << 20)
    chunks = iter([data[i:i + (1 << 20)] for i in range(0, len(data), 1 << 20)] + [b""])
    ahead = compress.ReadAhead(lambda: next(chunks))
    assert b"".join(ahead) == data
    assert ahead.digest() == "sha256:" + hashlib.sha256(data).hexdigest()

    def broken() -> bytes:
        raise ValueError("corrupt stream")

    bad = compress.ReadAhead(broken)
    with pytest.raises(ValueError, match="corrupt"):
        list(bad)
    bad.close()


@pytest.mark.parametrize("name", ["a", "dir/x.txt", "d" * 99, "x" * 100, "x" * 101, "é", "bad\udcff"])
def test_header_fast_path_is_tarfiles_pax_header_byte_for_byte(name: str) -> None:
    """layertar.header_bytes builds plain ustar headers itself: the bytes (and so every diff
    ID) must be what tarfile writes, and anything a plain header cannot hold goes to tarfile."""
    import itertools
    import tarfile

    from storage.layertar import header_bytes

    types = (tarfile.REGTYPE, tarfile.DIRTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE, tarfile.CHRTYPE, tarfile.FIFOTYPE)
    for typ, uid, mode, mtime, link, pax in itertools.product(
            types, (0, 1000, 0o7777777, 10**8), (0o644, 0o4755, 0o1777), (0, 1_600_000_000, 2**40),
            ("t", "t" * 100, "t" * 101, "ü"), ({}, {"SCHILY.xattr.user.a": "b"})):
        ti = tarfile.TarInfo(name)
        ti.type, ti.uid, ti.gid, ti.mode, ti.mtime = typ, uid, uid // 2, mode, mtime
        ti.uname = ti.gname = ""
        ti.size = 12345 if typ == tarfile.REGTYPE else 0
        ti.linkname = link if typ in (tarfile.SYMTYPE, tarfile.LNKTYPE) else ""
        if typ == tarfile.CHRTYPE:
            ti.devmajor, ti.devminor = 1, 3
        ti.pax_headers = dict(pax)
        assert header_bytes(ti) == ti.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape"), (typ, uid, mtime, link)
