from __future__ import annotations

import base64
import hashlib
import io
import json
import ssl
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from rootless.config import Config, RegistryConfig
from rootless.context import Context, Log
from rootless.errors import AuthError, DigestMismatchError, NotFoundError, RegistryError
from rootless.image.manifest import DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST
from rootless.image.registry import Endpoint, RegistryClient, endpoints_for
from rootless.layout import Layout

Handler = Callable[[httpx.Request], httpx.Response]


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


MANIFEST = json.dumps({"schemaVersion": 2, "mediaType": DOCKER_MANIFEST,
                       "config": {"mediaType": "application/vnd.docker.container.image.v1+json",
                                  "digest": "sha256:" + "1" * 64, "size": 2},
                       "layers": []}).encode()
MANIFEST_DIGEST = digest_of(MANIFEST)
BLOB = bytes(range(256)) * 12288  # 3 MiB
BLOB_DIGEST = digest_of(BLOB)


@pytest.fixture
def log() -> Log:
    return Log(level=10, stream=io.StringIO())


def make_ctx(tmp_path: Path, log: Log, registries: dict[str, RegistryConfig] | None = None) -> Context:
    return Context(config=Config(registries=registries or {}),
                   layout=Layout(root=tmp_path / "store", runroot=tmp_path / "run"), log=log)


class FakeWriter:
    """The BlobWriter surface fetch_blob uses, in memory."""

    def __init__(self, initial: bytes = b"", done: bool = False) -> None:
        self.buf = bytearray(initial)
        self.done = done
        self.resets = 0

    @property
    def offset(self) -> int:
        return len(self.buf)

    def reset(self) -> None:
        self.resets += 1
        self.buf.clear()

    def write(self, data: bytes) -> None:
        self.buf += data


class Flaky(httpx.SyncByteStream):
    """Sends ``data`` in 64 KiB chunks, then breaks the connection if ``fail`` says so."""

    def __init__(self, data: bytes, fail: bool) -> None:
        self.data, self.fail = data, fail

    def __iter__(self) -> Iterator[bytes]:
        for i in range(0, len(self.data), 65536):
            yield self.data[i:i + 65536]
        if self.fail:
            raise httpx.ReadError("[Errno 104] Connection reset by peer")


def serve_blob(request: httpx.Request, data: bytes = BLOB, cut: int | None = None) -> httpx.Response:
    """A registry blob answer honouring Range; with ``cut``, the stream dies after that many bytes."""
    rng = request.headers.get("range")
    start = int(rng.removeprefix("bytes=").rstrip("-")) if rng else 0
    body = data[start:]
    fail = cut is not None and cut < len(body)
    stream = Flaky(body[:cut] if fail else body, fail)
    headers = {"Content-Length": str(len(body)), "Docker-Content-Digest": digest_of(data)}
    if rng:
        headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
        return httpx.Response(206, headers=headers, stream=stream)
    return httpx.Response(200, headers=headers, stream=stream)


def manifest_response(data: bytes = MANIFEST, content_type: str = DOCKER_MANIFEST,
                      header_digest: str | None = None) -> httpx.Response:
    return httpx.Response(200, content=data, headers={
        "Content-Type": content_type, "Docker-Content-Digest": header_digest or digest_of(data)})


def error(status: int, code: str, message: str) -> httpx.Response:
    return httpx.Response(status, json={"errors": [{"code": code, "message": message, "detail": None}]})


class Recorder:
    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.seen: list[tuple[str, str | None, str | None]] = []  # (url, authorization, range)
        self.lock = threading.Lock()

    def __call__(self, request: httpx.Request) -> httpx.Response:
        with self.lock:
            self.seen.append((str(request.url), request.headers.get("authorization"),
                              request.headers.get("range")))
        return self.handler(request)

    @property
    def urls(self) -> list[str]:
        return [u for u, _, _ in self.seen]


def client(ctx: Context, registry: str, handler: Handler, sleeps: list[float] | None = None,
           creds: tuple[str, str] | None = None, tries: int = 4) -> RegistryClient:
    s = sleeps if sleeps is not None else []
    return RegistryClient(ctx, registry, transport=httpx.MockTransport(handler), sleep=s.append,
                          tries=tries, credentials=lambda host: creds)


# --- endpoints ---------------------------------------------------------------------------------
def test_docker_hub_api_host(tmp_path: Path, log: Log) -> None:
    rec = Recorder(lambda r: manifest_response())
    with client(make_ctx(tmp_path, log), "docker.io", rec) as c:
        data, mt, digest, ep = c.get_manifest("library/alpine", "latest")
    assert rec.urls == ["https://registry-1.docker.io/v2/library/alpine/manifests/latest"]
    assert (data, mt, digest) == (MANIFEST, DOCKER_MANIFEST, MANIFEST_DIGEST)
    assert ep == Endpoint("registry-1.docker.io", name="docker.io") and str(ep) == "docker.io"


def test_insecure_uses_http_and_localhost_is_not_implicitly_insecure(tmp_path: Path, log: Log) -> None:
    rec = Recorder(lambda r: manifest_response())
    ctx = make_ctx(tmp_path, log, {"localhost:5000": RegistryConfig(insecure=True)})
    with client(ctx, "localhost:5000", rec) as c:
        c.get_manifest("a/b", "1")
    with client(ctx, "localhost:5001", rec) as c:
        c.get_manifest("a/b", "1")
    with client(ctx, "127.0.0.1:5000", rec) as c:
        c.get_manifest("a/b", "1")
    assert rec.urls == ["http://localhost:5000/v2/a/b/manifests/1", "https://localhost:5001/v2/a/b/manifests/1",
                        "https://127.0.0.1:5000/v2/a/b/manifests/1"]


def test_endpoints_mirrors_first_with_their_own_insecure_flag(tmp_path: Path, log: Log) -> None:
    ctx = make_ctx(tmp_path, log, {
        "docker.io": RegistryConfig(mirrors=("mirror-a.example", "mirror-b.example:5000/hub"), insecure=True),
        "mirror-b.example:5000": RegistryConfig(insecure=True)})
    eps = endpoints_for(ctx, "docker.io")
    assert [(e.base_url, e.prefix, e.mirror) for e in eps] == [
        ("https://mirror-a.example", "", True),
        ("http://mirror-b.example:5000", "hub", True),
        ("http://registry-1.docker.io", "", False)]
    assert eps[1].repository("library/alpine") == "hub/library/alpine"


def test_mirror_fallback_order(tmp_path: Path, log: Log) -> None:
    ctx = make_ctx(tmp_path, log, {
        "docker.io": RegistryConfig(mirrors=("mirror-a.example", "mirror-b.example/hub",
                                             "mirror-c.example"))})

    def handler(request: httpx.Request) -> httpx.Response:
        host = request.url.host
        if host == "mirror-a.example":
            raise httpx.ConnectError("[Errno 111] Connection refused", request=request)
        if host == "mirror-b.example":
            return error(404, "MANIFEST_UNKNOWN", "manifest unknown")
        if host == "mirror-c.example":
            if "/manifests/" in request.url.path:
                return manifest_response()
            return error(404, "BLOB_UNKNOWN", "blob unknown")
        return serve_blob(request)

    rec = Recorder(handler)
    with client(ctx, "docker.io", rec) as c:
        *_, ep = c.get_manifest("library/alpine", "latest")
        assert ep.host == "mirror-c.example"
        w = FakeWriter()
        c.fetch_blob("library/alpine", BLOB_DIGEST, w)
    assert bytes(w.buf) == BLOB
    assert rec.urls == [
        "https://mirror-a.example/v2/library/alpine/manifests/latest",
        "https://mirror-b.example/v2/hub/library/alpine/manifests/latest",
        "https://mirror-c.example/v2/library/alpine/manifests/latest",
        # blobs: the endpoint that served the manifest first, then the others in order
        f"https://mirror-c.example/v2/library/alpine/blobs/{BLOB_DIGEST}",
        f"https://mirror-a.example/v2/library/alpine/blobs/{BLOB_DIGEST}",
        f"https://mirror-b.example/v2/hub/library/alpine/blobs/{BLOB_DIGEST}",
        f"https://registry-1.docker.io/v2/library/alpine/blobs/{BLOB_DIGEST}",
    ]
    out = log.stream.getvalue()  # type: ignore[attr-defined]
    assert ("mirror mirror-a.example failed: registry mirror-a.example is not reachable: "
            "connection refused") in out


def test_all_endpoints_fail_reports_the_registry_itself(tmp_path: Path, log: Log) -> None:
    ctx = make_ctx(tmp_path, log, {"docker.io": RegistryConfig(mirrors=("mirror.example",))})

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.host == "mirror.example":
            return httpx.Response(500)
        return error(404, "NAME_UNKNOWN", "repository name not known to registry")

    with client(ctx, "docker.io", handler) as c, pytest.raises(NotFoundError) as e:
        c.get_manifest("library/nope", "latest")
    assert e.value.message == ("image not known: docker.io/library/nope:latest: "
                               "repository docker.io/library/nope does not exist")


# --- manifests ---------------------------------------------------------------------------------
def test_manifest_by_digest_is_verified(tmp_path: Path, log: Log) -> None:
    tampered = MANIFEST.replace(b'"layers": []', b'"layers": [ ]')
    with client(make_ctx(tmp_path, log), "r.example", lambda r: manifest_response(tampered)) as c:
        with pytest.raises(DigestMismatchError) as e:
            c.get_manifest("a", MANIFEST_DIGEST)
    assert e.value.message == (f"manifest r.example/a@{MANIFEST_DIGEST} from r.example: content has digest "
                               f"{digest_of(tampered)}")
    with client(make_ctx(tmp_path, log), "r.example", lambda r: manifest_response()) as c:
        assert c.get_manifest("a", MANIFEST_DIGEST)[2] == MANIFEST_DIGEST


def test_manifest_by_tag_cross_checks_docker_content_digest(tmp_path: Path, log: Log) -> None:
    bad = "sha256:" + "f" * 64
    with client(make_ctx(tmp_path, log), "r.example",
                lambda r: manifest_response(header_digest=bad)) as c, pytest.raises(DigestMismatchError) as e:
        c.get_manifest("a", "1")
    assert f"the registry says {bad}" in e.value.message


def test_manifest_generic_content_type_and_accept(tmp_path: Path, log: Log) -> None:
    index = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []}).encode()
    accepts: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        accepts.append(request.headers["accept"])
        return manifest_response(index, "application/json")

    with client(make_ctx(tmp_path, log), "r.example", handler) as c:
        assert c.get_manifest("a", "1")[1] == OCI_INDEX
    assert set(accepts[0].split(", ")) == {OCI_INDEX, OCI_MANIFEST, DOCKER_MANIFEST,
                                           "application/vnd.docker.distribution.manifest.list.v2+json"}


@pytest.mark.parametrize("code,ref,tags,message,hint", [
    ("NAME_UNKNOWN", "latest", ["x"],
     "image not known: docker.io/library/nope:latest: repository docker.io/library/nope does not exist",
     "check the image name"),
    ("MANIFEST_UNKNOWN", "latest", ["1.0", "2.0"],
     "image not known: docker.io/library/nope:latest: repository docker.io/library/nope has no tag latest",
     "tags there include: 1.0, 2.0"),
    # distribution says MANIFEST_UNKNOWN for a missing repository too; the tag list tells
    ("MANIFEST_UNKNOWN", "latest", None,
     "image not known: docker.io/library/nope:latest: repository docker.io/library/nope does not exist",
     "check the image name"),
    ("MANIFEST_UNKNOWN", "sha256:" + "0" * 64, [],
     f"image not known: docker.io/library/nope@sha256:{'0' * 64}: repository docker.io/library/nope has no "
     f"manifest sha256:{'0' * 64}", "check the tag (or digest)"),
    (None, "latest", [], "image not known: docker.io/library/nope:latest", "check the image name and tag"),
])
def test_manifest_not_found(tmp_path: Path, log: Log, code: str | None, ref: str, tags: list[str] | None,
                            message: str, hint: str) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/tags/list"):
            assert request.url.params["n"] == "10"
            if tags is None:
                return error(404, "NAME_UNKNOWN", "repository name not known to registry")
            return httpx.Response(200, json={"name": "library/nope", "tags": tags})
        return error(404, code, "unknown") if code else httpx.Response(404, text="404 page not found")

    with client(make_ctx(tmp_path, log), "docker.io", handler) as c, pytest.raises(NotFoundError) as e:
        c.get_manifest("library/nope", ref)
    assert (e.value.message, e.value.hint) == (message, hint)


def test_manifest_too_large(tmp_path: Path, log: Log) -> None:
    with client(make_ctx(tmp_path, log), "r.example",
                lambda r: httpx.Response(200, content=b" " * (5 << 20))) as c:
        with pytest.raises(RegistryError, match="larger than 4 MiB"):
            c.get_manifest("a", "1")


def test_schema1_is_refused(tmp_path: Path, log: Log) -> None:
    body = json.dumps({"schemaVersion": 1, "name": "a", "tag": "1", "fsLayers": []}).encode()
    ct = "application/vnd.docker.distribution.manifest.v1+prettyjws"
    with client(make_ctx(tmp_path, log), "r.example", lambda r: manifest_response(body, ct)) as c:
        with pytest.raises(RegistryError, match="schema 1 is not supported") as e:
            c.get_manifest("a", "1")
    assert e.value.hint


# --- errors and retries ------------------------------------------------------------------------
def test_5xx_retried_then_success(tmp_path: Path, log: Log) -> None:
    answers = [httpx.Response(503), httpx.Response(502), manifest_response()]
    rec = Recorder(lambda r: answers.pop(0))
    sleeps: list[float] = []
    with client(make_ctx(tmp_path, log), "r.example", rec, sleeps) as c:
        assert c.get_manifest("a", "1")[2] == MANIFEST_DIGEST
    assert len(rec.seen) == 3 and sleeps == [0.5, 1.0]


def test_5xx_exhausted_reports_registry_error(tmp_path: Path, log: Log) -> None:
    rec = Recorder(lambda r: error(500, "UNKNOWN", "storage driver exploded"))
    sleeps: list[float] = []
    with client(make_ctx(tmp_path, log), "r.example", rec, sleeps) as c, pytest.raises(RegistryError) as e:
        c.get_manifest("a", "1")
    assert len(rec.seen) == 4 and sleeps == [0.5, 1.0, 2.0]
    assert e.value.message == ("reading manifest 1 of r.example/a: registry r.example answered 500 "
                               "Internal Server Error: UNKNOWN: storage driver exploded")


def test_429_honours_retry_after(tmp_path: Path, log: Log) -> None:
    answers = [httpx.Response(429, headers={"Retry-After": "7"}), manifest_response()]
    sleeps: list[float] = []
    with client(make_ctx(tmp_path, log), "r.example", lambda r: answers.pop(0), sleeps) as c:
        c.get_manifest("a", "1")
    assert sleeps == [7.0]
    # A registry asking for a long wait is not waited for.
    with client(make_ctx(tmp_path, log), "r.example",
                lambda r: error(429, "TOOMANYREQUESTS", "slow down"), sleeps) as c:
        with pytest.raises(RegistryError) as e:
            c.get_manifest("a", "1")
    assert "429" in e.value.message and e.value.hint and "rootless login" in e.value.hint


def test_other_4xx_not_retried(tmp_path: Path, log: Log) -> None:
    rec = Recorder(lambda r: error(400, "NAME_INVALID", "invalid repository name"))
    with client(make_ctx(tmp_path, log), "r.example", rec) as c, pytest.raises(RegistryError) as e:
        c.get_manifest("a", "1")
    assert len(rec.seen) == 1
    assert e.value.message.endswith("answered 400 Bad Request: NAME_INVALID: invalid repository name")


def test_403_is_auth_error(tmp_path: Path, log: Log) -> None:
    with client(make_ctx(tmp_path, log), "r.example", lambda r: error(403, "DENIED", "no")) as c:
        with pytest.raises(AuthError) as e:
            c.get_manifest("a", "1")
    assert e.value.hint == "rootless login r.example"


def test_401_without_challenge_is_auth_error(tmp_path: Path, log: Log) -> None:
    with client(make_ctx(tmp_path, log), "r.example", lambda r: httpx.Response(401)) as c:
        with pytest.raises(AuthError, match="authentication to r.example required"):
            c.get_manifest("a", "1")


def raising(exc: Callable[[httpx.Request], Exception]) -> Handler:
    def handler(request: httpx.Request) -> httpx.Response:
        raise exc(request)
    return handler


def test_connection_refused_fails_fast(tmp_path: Path, log: Log) -> None:
    def refuse(request: httpx.Request) -> Exception:
        try:
            raise ConnectionRefusedError(111, "Connection refused")
        except ConnectionRefusedError:
            return httpx.ConnectError("[Errno 111] Connection refused", request=request)

    rec = Recorder(raising(refuse))
    with client(make_ctx(tmp_path, log), "localhost:5999", rec) as c, pytest.raises(RegistryError) as e:
        c.get_manifest("a", "1")
    assert len(rec.seen) == 1
    assert e.value.message == "registry localhost:5999 is not reachable: connection refused"
    assert e.value.hint and "mirrors" in e.value.hint and "network" in e.value.hint


def test_unknown_host(tmp_path: Path, log: Log) -> None:
    h = raising(lambda r: httpx.ConnectError("[Errno -2] Name or service not known", request=r))
    with client(make_ctx(tmp_path, log), "nowhere.invalid", h) as c, pytest.raises(RegistryError) as e:
        c.get_manifest("a", "1")
    assert e.value.message == "registry nowhere.invalid is not reachable: unknown host"


def test_tls_failure_on_plain_http_registry(tmp_path: Path, log: Log) -> None:
    def tls(request: httpx.Request) -> Exception:
        try:
            raise ssl.SSLError(1, "[SSL: WRONG_VERSION_NUMBER] wrong version number (_ssl.c:992)")
        except ssl.SSLError:
            return httpx.ConnectError("[SSL: WRONG_VERSION_NUMBER] wrong version number (_ssl.c:992)",
                                      request=request)

    with client(make_ctx(tmp_path, log), "localhost:5000", raising(tls)) as c:
        with pytest.raises(RegistryError) as e:
            c.get_manifest("a", "1")
    assert e.value.message == "TLS handshake with registry localhost:5000 failed: wrong version number"
    assert e.value.hint and 'insecure = true under [registry."localhost:5000"]' in e.value.hint
    assert "rootless.conf(5)" in e.value.hint


def test_timeouts_retried(tmp_path: Path, log: Log) -> None:
    rec = Recorder(raising(lambda r: httpx.ReadTimeout("timed out", request=r)))
    sleeps: list[float] = []
    with client(make_ctx(tmp_path, log), "r.example", rec, sleeps, tries=3) as c:
        with pytest.raises(RegistryError, match="registry r.example did not answer in time"):
            c.get_manifest("a", "1")
    assert len(rec.seen) == 3 and sleeps == [0.5, 1.0]


# --- blobs -------------------------------------------------------------------------------------
def test_blob_range_resume_after_mid_stream_failure(tmp_path: Path, log: Log) -> None:
    cuts = [1 << 20, None]
    rec = Recorder(lambda r: serve_blob(r, cut=cuts.pop(0)))
    got: list[int] = []
    sleeps: list[float] = []
    w = FakeWriter()
    with client(make_ctx(tmp_path, log), "r.example", rec, sleeps) as c:
        c.fetch_blob("a", BLOB_DIGEST, w, progress=got.append, size=len(BLOB))
    assert bytes(w.buf) == BLOB and w.resets == 0
    assert [r for _, _, r in rec.seen] == [None, f"bytes={1 << 20}-"]
    assert sum(got) == len(BLOB) and sleeps == [0.5]


def test_blob_resumes_from_partial_writer(tmp_path: Path, log: Log) -> None:
    rec = Recorder(serve_blob)
    w = FakeWriter(BLOB[:1000])
    got: list[int] = []
    with client(make_ctx(tmp_path, log), "r.example", rec) as c:
        c.fetch_blob("a", BLOB_DIGEST, w, progress=got.append)
    assert bytes(w.buf) == BLOB and rec.seen[0][2] == "bytes=1000-" and sum(got) == len(BLOB) - 1000


def test_blob_flaky_link_keeps_resuming_while_it_advances(tmp_path: Path, log: Log) -> None:
    rec = Recorder(lambda r: serve_blob(r, cut=300_000))  # every answer dies after 300 kB
    w = FakeWriter()
    with client(make_ctx(tmp_path, log), "r.example", rec, tries=2) as c:
        c.fetch_blob("a", BLOB_DIGEST, w)
    assert bytes(w.buf) == BLOB and len(rec.seen) == 11


def test_blob_server_ignoring_range_restarts(tmp_path: Path, log: Log) -> None:
    w = FakeWriter(b"garbage!")
    got: list[int] = []
    with client(make_ctx(tmp_path, log), "r.example",
                lambda r: httpx.Response(200, content=BLOB)) as c:
        c.fetch_blob("a", BLOB_DIGEST, w, progress=got.append)
    assert bytes(w.buf) == BLOB and w.resets == 1
    assert got[0] == -8 and sum(got) == len(BLOB) - 8


def test_blob_416_restarts_from_zero(tmp_path: Path, log: Log) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.headers.get("range"):
            return httpx.Response(416)
        return serve_blob(request)

    w = FakeWriter(b"x" * 10)
    sleeps: list[float] = []
    with client(make_ctx(tmp_path, log), "r.example", handler, sleeps) as c:
        c.fetch_blob("a", BLOB_DIGEST, w)
    assert bytes(w.buf) == BLOB and w.resets == 1


def test_blob_larger_than_descriptor(tmp_path: Path, log: Log) -> None:
    w = FakeWriter()
    with client(make_ctx(tmp_path, log), "r.example", serve_blob) as c:
        with pytest.raises(DigestMismatchError) as e:
            c.fetch_blob("a", BLOB_DIGEST, w, size=1000)
    assert "more than the 1000 bytes" in e.value.message and w.offset == 0


def test_blob_done_or_complete_needs_no_request(tmp_path: Path, log: Log) -> None:
    rec = Recorder(serve_blob)
    with client(make_ctx(tmp_path, log), "r.example", rec) as c:
        c.fetch_blob("a", BLOB_DIGEST, FakeWriter(done=True))
        c.fetch_blob("a", BLOB_DIGEST, FakeWriter(BLOB), size=len(BLOB))
    assert rec.seen == []


def test_blob_not_found(tmp_path: Path, log: Log) -> None:
    with client(make_ctx(tmp_path, log), "r.example",
                lambda r: error(404, "BLOB_UNKNOWN", "blob unknown to registry")) as c:
        with pytest.raises(NotFoundError, match=f"blob {BLOB_DIGEST} not known in r.example/a"):
            c.fetch_blob("a", BLOB_DIGEST, FakeWriter())


def test_blob_invalid_digest_refused(tmp_path: Path, log: Log) -> None:
    with client(make_ctx(tmp_path, log), "r.example", serve_blob) as c, pytest.raises(RegistryError):
        c.fetch_blob("a", "sha256:../../x", FakeWriter())


def test_redirect_to_other_host_drops_authorization(tmp_path: Path, log: Log) -> None:
    good = "Basic " + base64.b64encode(b"u:p").decode()

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.host == "cdn.example":
            return serve_blob(request)
        if request.headers.get("authorization") != good:
            return httpx.Response(401, headers={"WWW-Authenticate": 'Basic realm="r"'})
        return httpx.Response(307, headers={"Location": "https://cdn.example/blobs/x?sig=abc"})

    rec = Recorder(handler)
    w = FakeWriter()
    with client(make_ctx(tmp_path, log), "r.example", rec, creds=("u", "p")) as c:
        c.fetch_blob("a", BLOB_DIGEST, w)
    assert bytes(w.buf) == BLOB
    assert [(u.split("/")[2], a) for u, a, _ in rec.seen] == [
        ("r.example", None), ("r.example", good), ("cdn.example", None)]


def test_redirect_resume_after_failure(tmp_path: Path, log: Log) -> None:
    cuts = [100_000, None]

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.host == "cdn.example":
            return serve_blob(request, cut=cuts.pop(0))
        return httpx.Response(307, headers={"Location": "https://cdn.example/b"})

    rec = Recorder(handler)
    w = FakeWriter()
    with client(make_ctx(tmp_path, log), "r.example", rec) as c:
        c.fetch_blob("a", BLOB_DIGEST, w)
    assert bytes(w.buf) == BLOB
    assert [r for _, _, r in rec.seen] == [None, None, "bytes=100000-", "bytes=100000-"]


def test_fetch_blob_bytes_verifies(tmp_path: Path, log: Log) -> None:
    data = b'{"config": 1}'
    with client(make_ctx(tmp_path, log), "r.example", lambda r: serve_blob(r, data)) as c:
        assert c.fetch_blob_bytes("a", digest_of(data)) == data
        with pytest.raises(DigestMismatchError):
            c.fetch_blob_bytes("a", "sha256:" + "0" * 64)


def test_parallel_downloads_share_one_token(tmp_path: Path, log: Log) -> None:
    tokens = []
    lock = threading.Lock()

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.host == "auth.example":
            with lock:
                tokens.append(1)
            return httpx.Response(200, json={"token": "T", "expires_in": 300})
        if request.headers.get("authorization") != "Bearer T":
            return httpx.Response(401, headers={
                "WWW-Authenticate": 'Bearer realm="https://auth.example/token",service="r"'})
        return serve_blob(request)

    with client(make_ctx(tmp_path, log), "r.example", handler) as c:
        w0 = FakeWriter()
        c.fetch_blob("a", BLOB_DIGEST, w0)
        writers = [FakeWriter() for _ in range(6)]
        with ThreadPoolExecutor(6) as pool:
            list(pool.map(lambda w: c.fetch_blob("a", BLOB_DIGEST, w), writers))
    assert all(bytes(w.buf) == BLOB for w in writers)
    assert len(tokens) == 1


# --- ping and login ------------------------------------------------------------------------------
def test_ping(tmp_path: Path, log: Log) -> None:
    with client(make_ctx(tmp_path, log), "r.example", lambda r: httpx.Response(200)) as c:
        assert c.ping() is True
    with client(make_ctx(tmp_path, log), "r.example", lambda r: httpx.Response(
            401, headers={"WWW-Authenticate": 'Basic realm="x"'})) as c:
        assert c.ping() is False
    with client(make_ctx(tmp_path, log), "r.example", lambda r: httpx.Response(404)) as c:
        with pytest.raises(RegistryError, match="404"):
            c.ping()


def token_login_registry(user: str, password: str) -> Handler:
    good = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.host == "auth.example":
            assert "scope" not in request.url.params
            if request.headers.get("authorization") != good:
                return httpx.Response(401, json={"details": "incorrect username or password"})
            return httpx.Response(200, json={"token": "T"})
        if request.headers.get("authorization") == "Bearer T":
            return httpx.Response(200)
        return httpx.Response(401, headers={
            "WWW-Authenticate": 'Bearer realm="https://auth.example/token",service="r"'})

    return handler


def test_login_check_bearer(tmp_path: Path, log: Log) -> None:
    ctx = make_ctx(tmp_path, log)
    with client(ctx, "docker.io", token_login_registry("u", "p")) as c:
        c.login_check("u", "p")
        with pytest.raises(AuthError) as e:
            c.login_check("u", "wrong")
    assert e.value.message.startswith("authentication to docker.io refused")
    assert e.value.hint == "rootless login docker.io"


def test_login_check_basic(tmp_path: Path, log: Log) -> None:
    good = "Basic " + base64.b64encode(b"u:p").decode()

    def handler(request: httpx.Request) -> httpx.Response:
        if request.headers.get("authorization") == good:
            return httpx.Response(200)
        return httpx.Response(401, headers={"WWW-Authenticate": 'Basic realm="Registry Realm"'})

    with client(make_ctx(tmp_path, log), "localhost:5000", handler) as c:
        c.login_check("u", "p")
        with pytest.raises(AuthError, match="authentication to localhost:5000 refused"):
            c.login_check("u", "nope")


def test_credentials_come_from_the_store(tmp_path: Path, log: Log, monkeypatch: pytest.MonkeyPatch) -> None:
    from rootless.image import credentials

    monkeypatch.setenv("HOME", str(tmp_path))
    ctx = make_ctx(tmp_path, log)
    credentials.save(ctx.layout, "docker.io", "u", "p")
    seen: list[str | None] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.host == "auth.example":
            seen.append(request.headers.get("authorization"))
            return httpx.Response(200, json={"token": "T"})
        if request.headers.get("authorization") == "Bearer T":
            return manifest_response()
        return httpx.Response(401, headers={
            "WWW-Authenticate": 'Bearer realm="https://auth.example/token",service="r"'})

    with RegistryClient(ctx, "docker.io", transport=httpx.MockTransport(handler)) as c:
        c.get_manifest("library/alpine", "latest")
    assert seen == ["Basic " + base64.b64encode(b"u:p").decode()]


def test_unreachable_token_server_is_named(tmp_path: Path, log: Log) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.host == "auth.example":
            raise httpx.ConnectError("[Errno 111] Connection refused", request=request)
        return httpx.Response(401, headers={"WWW-Authenticate": 'Bearer realm="https://auth.example/token"'})

    with client(make_ctx(tmp_path, log), "r.example", handler) as c, pytest.raises(RegistryError) as e:
        c.get_manifest("a", "1")
    assert e.value.message == "auth.example (for registry r.example) is not reachable: connection refused"


def test_a_mirror_that_never_answers_is_left_after_one_timeout(tmp_path: Path, log: Log) -> None:
    ctx = make_ctx(tmp_path, log, {"docker.io": RegistryConfig(mirrors=("stuck.example",))})

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.host == "stuck.example":
            raise httpx.ReadTimeout("timed out", request=request)
        return manifest_response() if "/manifests/" in request.url.path else serve_blob(request)

    rec = Recorder(handler)
    sleeps: list[float] = []
    with client(ctx, "docker.io", rec, sleeps=sleeps) as c:
        *_, ep = c.get_manifest("library/alpine", "latest")
    assert ep.host == "registry-1.docker.io"
    assert [u for u in rec.urls if "stuck.example" in u] == [
        "https://stuck.example/v2/library/alpine/manifests/latest"], "one try, no retries"
    assert sleeps == []
    out = log.stream.getvalue()  # type: ignore[attr-defined]
    assert out.count("Warning:") == 1 and "stuck.example did not answer in time" in out, out


def test_a_plain_http_mirror_without_insecure_gets_the_hint_a_direct_pull_gives(tmp_path: Path,
                                                                                log: Log) -> None:
    ctx = make_ctx(tmp_path, log, {"docker.io": RegistryConfig(mirrors=("plain.example:5000",))})

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.host == "plain.example":
            try:
                raise ssl.SSLError(1, "[SSL: WRONG_VERSION_NUMBER] wrong version number (_ssl.c:992)")
            except ssl.SSLError as e:
                raise httpx.ConnectError("[SSL: WRONG_VERSION_NUMBER] wrong version number", request=request) from e
        return manifest_response()

    with client(ctx, "docker.io", handler) as c:
        c.get_manifest("library/alpine", "latest")
    out = log.stream.getvalue()  # type: ignore[attr-defined]
    assert "Warning: mirror plain.example:5000 failed: TLS handshake" in out, out
    assert 'Hint: if plain.example:5000 serves plain HTTP, set insecure = true under [registry."plain.example:5000"]' \
        in out, out
