"""push and archive logic that needs no registry: destinations, --change, manifests, the
layer-blob pairing, and the token scopes a push asks for."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from rootless.errors import RootlessError
from rootless.image import manifest as mf
from rootless.image.archive import _familiar, apply_changes
from rootless.image.auth import SCOPE_EXTENSION, RegistryAuth
from rootless.image.push import Blob, manifest_bytes, parse_destination
from rootless.layout import Layout
from storage.layerblobs import LayerBlobs, compression_of

D1 = "sha256:" + "1" * 64
D2 = "sha256:" + "2" * 64
DIFF = "sha256:" + "d" * 64


@pytest.mark.parametrize("text,want", [
    ("localhost:5000/a/b:1", ("docker", "localhost:5000/a/b:1")),
    ("docker://quay.io/x/y", ("docker", "quay.io/x/y")),
    ("docker-archive:/tmp/a.tar:name:tag", ("docker-archive", "/tmp/a.tar:name:tag")),
    ("oci-archive:/tmp/o.tar", ("oci-archive", "/tmp/o.tar")),
    ("oci:/tmp/dir:ref", ("oci", "/tmp/dir:ref")),
    ("dir:/tmp/d", ("dir", "/tmp/d")),
])
def test_destinations(text: str, want: tuple[str, str]) -> None:
    assert parse_destination(text) == want


def test_changes() -> None:
    cfg: dict = {"Env": ["A=0", "B=1"]}
    apply_changes(cfg, ['CMD ["/bin/sh", "-c", "x"]', "ENTRYPOINT run me", "ENV A=2 C=3", "ENV D four",
                        "EXPOSE 80 53/udp", "LABEL a=b", "USER 1000:1000", "WORKDIR /w", 'VOLUME ["/data"]',
                        "STOPSIGNAL SIGINT", "cmd=[\"x\"]"])
    assert cfg["Cmd"] == ["x"]
    assert cfg["Entrypoint"] == ["/bin/sh", "-c", "run me"]
    assert cfg["Env"] == ["B=1", "A=2", "C=3", "D=four"]
    assert cfg["ExposedPorts"] == {"80/tcp": {}, "53/udp": {}}
    assert (cfg["Labels"], cfg["User"], cfg["WorkingDir"], cfg["StopSignal"]) == ({"a": "b"}, "1000:1000", "/w",
                                                                                  "SIGINT")
    assert cfg["Volumes"] == {"/data": {}}
    with pytest.raises(RootlessError, match="FROM cannot be changed"):
        apply_changes({}, ["FROM scratch"])
    with pytest.raises(RootlessError, match="JSON"):
        apply_changes({}, ['CMD ["unclosed'])


def test_manifest_bytes_both_formats() -> None:
    cfg = Blob(D1, 300, "", "config")
    layers = [Blob(D2, 4000, mf.DOCKER_LAYER_GZIP, "layer", DIFF)]
    v2 = json.loads(manifest_bytes("v2s2", cfg, layers))
    assert v2["mediaType"] == mf.DOCKER_MANIFEST and v2["config"]["mediaType"] == mf.DOCKER_CONFIG
    oci = manifest_bytes("oci", cfg, layers)
    parsed = mf.parse_manifest(oci, mf.OCI_MANIFEST)
    assert isinstance(parsed, mf.Manifest) and parsed.config.digest == D1 and parsed.layers[0].size == 4000
    assert manifest_bytes("oci", cfg, layers) == oci  # deterministic


def test_familiar_names() -> None:
    assert _familiar("docker.io/library/busybox:latest") == "busybox:latest"
    assert _familiar("docker.io/user/app:1") == "user/app:1"
    assert _familiar("localhost:5000/a:b") == "localhost:5000/a:b"


def test_layer_blob_pairing(tmp_path: Path) -> None:
    layout = Layout(root=tmp_path / "store", runroot=tmp_path / "run")
    layout.ensure_store()
    pairs = LayerBlobs(layout)
    pairs.record([(D1, DIFF, "gzip", 10)])
    assert pairs.find(DIFF, "gzip") is None, "a pairing is kept only for a blob in the store"
    for d in (D1, D2):
        layout.blob(d).write_bytes(b"x")
    pairs.record([(D1, DIFF, "gzip", 10), (D2, DIFF, "none", 20)], seen="reg:5000/a/b")
    assert pairs.find(DIFF, "gzip").digest == D1  # type: ignore[union-attr]
    pairs.mark_seen([D1], "reg:5000/c/d")
    pairs.mark_seen([D1], "reg:5000/a/b")
    assert pairs.get(D1).seen == ("reg:5000/c/d", "reg:5000/a/b")  # type: ignore[union-attr]
    layout.blob(D2).unlink()
    pairs.mark_seen([D1], "x/y")
    assert D2 not in json.loads(layout.layer_blobs.read_text())  # dropped with its blob
    assert compression_of(mf.OCI_LAYER_ZSTD) == "zstd" and compression_of(mf.DOCKER_LAYER_TAR) == "none"


def test_push_scope_from_the_request_extension() -> None:
    asked: list[list[str]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/token":
            asked.append(request.url.params.get_list("scope"))
            return httpx.Response(200, json={"token": "t"})
        if request.headers.get("authorization") != "Bearer t":
            return httpx.Response(401, headers={"WWW-Authenticate": 'Bearer realm="http://reg/token",service="s"'})
        return httpx.Response(202, headers={"Location": "/v2/a/blobs/uploads/u1"})

    auth = RegistryAuth(lambda host: ("u", "p"))
    with httpx.Client(transport=httpx.MockTransport(handler), auth=auth) as client:
        r = client.post("http://reg/v2/a/blobs/uploads/", params={"mount": D1, "from": "b"},
                        extensions={SCOPE_EXTENSION: "repository:a:pull,push repository:b:pull"})
    assert r.status_code == 202
    assert asked == [["repository:a:pull,push", "repository:b:pull"]]


def test_repush_lane_only_when_every_layer_was_seen_at_the_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    from rootless.image.quickpush import eligible

    for v in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(v, raising=False)
    seen = [("reg:5000/a/b",), ("other.io/x", "reg:5000/c")]
    assert eligible("reg:5000", seen, has_credentials=False, tty=False)
    assert not eligible("reg:5000", [*seen, ()], has_credentials=False, tty=False)  # a layer never seen there
    assert not eligible("reg:5000", [("other.io/reg:5000",)], has_credentials=False, tty=False)
    assert not eligible("reg:5000", [], has_credentials=False, tty=False)
    assert not eligible("reg:5000", seen, has_credentials=True, tty=False)  # auth: the full client's flow
    assert not eligible("reg:5000", seen, has_credentials=False, tty=True)  # bars: the full client's
    monkeypatch.setenv("https_proxy", "http://proxy:3128")
    assert not eligible("reg:5000", seen, has_credentials=False, tty=False)  # httpx honours proxies


@pytest.mark.parametrize("kind", ["gzip", "zstd"])
def test_tee_sends_exactly_what_it_keeps(kind: str) -> None:
    """A layer compressed while it uploads: the bytes yielded (sent) are the bytes written
    (kept), they decompress to the content, and both digests are the content's and the blob's."""
    import hashlib
    import io

    from storage import compress

    content = b"".join(hashlib.sha256(str(i).encode()).digest() * 64 for i in range(20000))  # ~40 MB
    src = io.BytesIO(content)
    kept = io.BytesIO()
    tee = compress.Tee(lambda: src.read(1 << 20), kind, None, kept)
    sent = b"".join(tee)
    assert sent == kept.getvalue() and len(sent) == tee.size < len(content)
    assert tee.digest() == "sha256:" + hashlib.sha256(sent).hexdigest()
    assert tee.diff_id == "sha256:" + hashlib.sha256(content).hexdigest() and tee.usize == len(content)
    back = compress.reader(io.BytesIO(sent), kind)
    assert b"".join(iter(back, b"")) == content


def test_lane_http_reads_each_answer_body_and_keeps_the_connection() -> None:
    """The re-push lane's HTTP/1.1: bodies by Content-Length, chunked, or to the close, each
    read whole so the next answer starts where it should; a malformed answer is a give-up."""
    import socket
    import threading

    from rootless.image.quickpush import _Conns, _GiveUp

    answers = [
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nDocker-Content-Digest: sha256:x\r\n\r\nhello",
        b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n3;ext=1\r\nabc\r\n2\r\nde\r\n0\r\nT: 1\r\n\r\n",
        b"HTTP/1.1 200 OK\r\n\r\n",  # HEAD: no body whatever the headers say
        b"HTTP/1.1 201 Created\r\nConnection: close\r\n\r\nto the close",
        b"garbage\r\n\r\n",
    ]
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen()
    seen: list[bytes] = []
    accepted: list[int] = []

    def serve() -> None:
        for group in (answers[:4], answers[4:]):
            conn, _ = srv.accept()
            accepted.append(1)
            f = conn.makefile("rb")
            for a in group:
                req = b""
                while not req.endswith(b"\r\n\r\n"):
                    req += f.readline()
                seen.append(req.split(b"\r\n", 1)[0])
                conn.sendall(a)
            f.close()
            conn.close()

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    conns = _Conns("http", f"127.0.0.1:{srv.getsockname()[1]}", verify=True)
    assert conns.request("GET", "/a") == (200, {"content-length": "5", "docker-content-digest": "sha256:x"})
    assert conns.request("GET", "/b")[0] == 404
    assert conns.request("HEAD", "/c")[0] == 200
    assert conns.request("PUT", "/d", b"{}")[0] == 201
    assert len(accepted) == 1, "one connection for the four"
    with pytest.raises(_GiveUp):
        conns.request("GET", "/e")  # after the close: a new connection, then a malformed answer
    conns.close()
    t.join(5)
    srv.close()
    assert seen == [b"GET /a HTTP/1.1", b"GET /b HTTP/1.1", b"HEAD /c HTTP/1.1", b"PUT /d HTTP/1.1", b"GET /e HTTP/1.1"]
