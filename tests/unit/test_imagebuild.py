"""The test image builder itself: deterministic, spec-shaped output (no network, no privileges)."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile

import httpx
import pytest

from tests import imagebuild as ib


def _members(layer: ib.Layer) -> list[tarfile.TarInfo]:
    data = layer.read()
    if layer.compression == "gzip":
        data = gzip.decompress(data)
    elif layer.compression == "zstd":
        import zstandard

        data = zstandard.ZstdDecompressor().decompressobj().decompress(data)
    return tarfile.open(fileobj=io.BytesIO(data)).getmembers()


ENTRIES = [
    ib.directory("etc"),
    ib.file("etc/hostname", "box\n", mode=0o600, uid=1000, gid=1000),
    ib.symlink("etc/link", "hostname"),
    ib.hardlink("etc/hard", "etc/hostname"),
    ib.file("etc/x", "x", xattrs={"user.k": "v"}),
    ib.whiteout("etc/gone"),
    ib.opaque("var"),
]


@pytest.mark.parametrize("compression", ["gzip", "zstd", "none"])
def test_layer_is_deterministic_and_digests_match(compression: ib.Compression) -> None:
    a = ib.build_layer(ENTRIES, compression)
    b = ib.build_layer(ENTRIES, compression)
    assert a.digest == b.digest and a.diff_id == b.diff_id
    assert a.digest == ib.sha256_digest(a.read())
    assert a.size == len(a.read())
    raw = a.read() if compression == "none" else None
    if raw is not None:
        assert a.digest == a.diff_id
    names = [m.name for m in _members(a)]
    assert names == ["etc", "etc/hostname", "etc/link", "etc/hard", "etc/x", "etc/.wh.gone",
                     "var/.wh..wh..opq"]


def test_member_attributes() -> None:
    ms = {m.name: m for m in _members(ib.build_layer(ENTRIES))}
    h = ms["etc/hostname"]
    assert (h.uid, h.gid, h.mode, h.mtime) == (1000, 1000, 0o600, ib.EPOCH)
    assert ms["etc/link"].issym() and ms["etc/link"].linkname == "hostname"
    assert ms["etc/hard"].islnk() and ms["etc/hard"].linkname == "etc/hostname"
    assert ms["etc/x"].pax_headers["SCHILY.xattr.user.k"] == "v"


def test_gzip_header_has_no_timestamp() -> None:
    data = ib.build_layer(ENTRIES).read()
    assert data[:2] == b"\x1f\x8b" and data[4:8] == b"\0\0\0\0"


def test_image_config_and_manifest() -> None:
    layer = ib.build_layer(ENTRIES)
    img = ib.make_image([layer], cmd=["sh"], exposed_ports=["80/tcp"], labels={"a": "b"}, user="1000")
    cfg = json.loads(img.config.read())
    assert cfg["rootfs"] == {"type": "layers", "diff_ids": [layer.diff_id]}
    assert cfg["config"]["Cmd"] == ["sh"] and cfg["config"]["ExposedPorts"] == {"80/tcp": {}}
    assert cfg["architecture"] == "amd64" and cfg["os"] == "linux"
    man = json.loads(img.manifest.read())
    assert man["mediaType"] == ib.MT_DOCKER_MANIFEST
    assert man["config"] == {"mediaType": ib.MT_DOCKER_CONFIG, "digest": img.config.digest,
                             "size": img.config.size}
    assert man["layers"][0]["mediaType"] == ib.MT_DOCKER_LAYER_GZIP
    assert img.id == hashlib.sha256(img.config.read()).hexdigest()
    oci = ib.make_image([layer], fmt="oci")
    assert json.loads(oci.manifest.read())["layers"][0]["mediaType"] == ib.MT_OCI_LAYER_GZIP


def test_index() -> None:
    a = ib.make_image([ib.build_layer([ib.file("arch", "amd64")])], fmt="oci")
    b = ib.make_image([ib.build_layer([ib.file("arch", "arm64")])], fmt="oci",
                      platform=ib.Platform("linux", "arm64", "v8"))
    idx = ib.make_index([a, b])
    body = json.loads(idx.manifest.read())
    assert body["mediaType"] == ib.MT_OCI_INDEX
    assert [m["platform"] for m in body["manifests"]] == [
        {"architecture": "amd64", "os": "linux"}, {"architecture": "arm64", "os": "linux", "variant": "v8"}]
    assert idx.for_platform("arm64") is b


def test_with_parents_adds_missing_dirs() -> None:
    out = ib.with_parents([ib.file("a/b/c", "x")])
    assert [e.path for e in out] == ["a", "a/b", "a/b/c"]


def test_challenge_parsing() -> None:
    scheme, params = ib._parse_challenge(
        'Bearer realm="http://h/token",service="reg",scope="repository:a/b:pull,push"')
    assert scheme == "bearer"
    assert params == {"realm": "http://h/token", "service": "reg", "scope": "repository:a/b:pull,push"}


def test_pusher_protocol_with_mock_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    """POST → PUT ?digest= for each blob, HEAD skips existing ones, PUT manifest with its type."""
    blobs: dict[str, bytes] = {}
    manifests: dict[str, tuple[str, bytes]] = {}
    seen: list[str] = []

    def handler(req: httpx.Request) -> httpx.Response:
        seen.append(f"{req.method} {req.url.path}")
        path = req.url.path
        if req.method == "HEAD" and "/blobs/" in path:
            return httpx.Response(200 if path.rsplit("/", 1)[1] in blobs else 404)
        if req.method == "POST" and path.endswith("/blobs/uploads/"):
            return httpx.Response(202, headers={"Location": "/v2/r/blobs/uploads/u1?state=x"})
        if req.method == "PUT" and "/blobs/uploads/" in path:
            d = req.url.params["digest"]
            assert ib.sha256_digest(req.content) == d
            blobs[d] = req.content
            return httpx.Response(201)
        if req.method == "PUT" and "/manifests/" in path:
            manifests[path.rsplit("/", 1)[1]] = (req.headers["content-type"], req.content)
            return httpx.Response(201, headers={"Docker-Content-Digest": ib.sha256_digest(req.content)})
        return httpx.Response(404)

    img = ib.make_image([ib.build_layer(ENTRIES)])
    p = ib.Pusher("http://reg.test")
    p.client = httpx.Client(transport=httpx.MockTransport(handler))
    assert p.push_image("r", "latest", img) == img.manifest.digest
    assert set(blobs) == {img.layers[0].digest, img.config.digest}
    assert manifests["latest"][0] == ib.MT_DOCKER_MANIFEST
    seen.clear()
    p.push_image("r", "v2", img)
    assert not any(s.startswith("POST") for s in seen), "existing blobs are uploaded again"
