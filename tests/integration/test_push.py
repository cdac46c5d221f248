"""push against the real docker-registry, as the unprivileged user: exact digests, mounts
instead of uploads, auth (basic and token), retries, and one-line refusals."""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import BASIC_PASSWORD, BASIC_USER, TOKEN_PUSHER, TOKEN_PUSHER_PASSWORD
from tests.integration.harness import (
    AuthRegistries,
    Fault,
    Registry,
    RegistryProxy,
    RootlessEnv,
    assert_clean_error,
    start_registry,
)


def _repo(prefix: str = "pushed") -> str:
    return f"{prefix}/t{uuid.uuid4().hex[:10]}"


def _uploaded(proxy: RegistryProxy, mark: int) -> int:
    """Blob bytes sent to the registry since ``mark`` (every PATCH/PUT body)."""
    return sum(int(r.headers.get("content-length") or 0) for r in proxy.since(mark)
               if r.method in ("PATCH", "PUT") and "/blobs/uploads/" in r.path)


def _manifest_digest(proxy: RegistryProxy, repo: str, tag: str) -> str:
    import httpx

    r = httpx.get(f"{proxy.url}/v2/{repo}/manifests/{tag}", headers={"Accept": ", ".join([
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.v2+json"])})
    r.raise_for_status()
    return r.headers["docker-content-digest"]


def test_push_pulled_image_elsewhere_mounts_and_keeps_digests(rl: RootlessEnv, mirror: RegistryProxy) -> None:
    src = f"{mirror.host}/library/alpine:latest"
    rl("pull", "-q", src, check=True)
    before = rl.inspect(src)
    repo = _repo()
    mark = mirror.mark()
    cp = rl("push", src, f"{mirror.host}/{repo}:v1", check=True)
    reqs = mirror.since(mark)
    assert _uploaded(mirror, mark) == 0, "nothing uploaded: the layers and the config are mounted"
    mounts = [r for r in reqs if r.method == "POST" and "mount=" in r.path]
    assert mounts and all(r.status == 201 for r in mounts)
    assert not any(r.method == "PATCH" and r.headers.get("content-length", "0") != "0" and "mount" in r.path
                   for r in reqs)
    assert "Copying blob" in cp.stderr and "mounted from library/alpine" in cp.stderr
    assert "Writing manifest" in cp.stderr
    # the manifest went last, with exact bytes: the registry names the same digest
    puts = [r for r in reqs if r.method == "PUT"]
    assert puts[-1].path.endswith(f"/{repo}/manifests/v1")
    assert _manifest_digest(mirror, repo, "v1") == before["Digest"]
    # pulled back into a fresh store: same image ID, same manifest digest
    rl("rmi", "-a", check=True)
    rl("pull", "-q", f"{mirror.host}/{repo}:v1", check=True)
    after = rl.inspect(f"{mirror.host}/{repo}:v1")
    assert after["Id"] == before["Id"] and after["Digest"] == before["Digest"]


def test_push_again_uploads_nothing(rl: RootlessEnv, mirror: RegistryProxy) -> None:
    src = f"{mirror.host}/library/busybox:latest"
    rl("pull", "-q", src, check=True)
    repo = _repo()
    rl("push", "-q", src, f"{mirror.host}/{repo}", check=True)
    mark = mirror.mark()
    cp = rl("push", src, f"{mirror.host}/{repo}", check=True)
    assert _uploaded(mirror, mark) == 0
    heads = [r for r in mirror.since(mark) if r.method == "HEAD"]
    assert len(heads) == 2 and cp.stderr.count("skipped: already exists") == 2


def test_repush_lane_makes_no_httpx_client(rl: RootlessEnv, mirror: RegistryProxy) -> None:
    """A re-push the registry can satisfy with HEADs and mounts goes over http.client: httpx
    (most of a re-push's time) is never imported; same digest, no byte uploaded."""
    src = f"{mirror.host}/library/busybox:latest"
    rl("pull", "-q", src, check=True)
    repo = _repo("lane")
    mark = mirror.mark()
    cp = rl("push", src, f"{mirror.host}/{repo}:v1", env={"PYTHONPROFILEIMPORTTIME": "1"}, check=True)
    imported = {ln.split("|")[-1].strip() for ln in cp.stderr.splitlines() if ln.startswith("import time:")}
    assert "rootless.image.quickpush" in imported and "httpx" not in imported, cp.stderr[-2000:]
    assert _uploaded(mirror, mark) == 0
    assert cp.stderr.count("skipped: mounted from library/busybox") == 2
    assert _manifest_digest(mirror, repo, "v1") == rl.inspect(src)["Digest"]


def test_format_conversion_and_digestfile(rl: RootlessEnv, mirror: RegistryProxy) -> None:
    src = f"{mirror.host}/library/busybox:latest"
    rl("pull", "-q", src, check=True)
    repo = _repo()
    dfile = rl.home / "digest"
    rl("push", "-q", "--format", "oci", "--digestfile", str(dfile), src, f"{mirror.host}/{repo}:oci", check=True)
    import httpx

    r = httpx.get(f"{mirror.url}/v2/{repo}/manifests/oci",
                  headers={"Accept": "application/vnd.oci.image.manifest.v1+json"})
    assert r.headers["content-type"] == "application/vnd.oci.image.manifest.v1+json"
    body = json.loads(r.content)
    assert body["config"]["mediaType"] == "application/vnd.oci.image.config.v1+json"
    assert body["layers"][0]["mediaType"] == "application/vnd.oci.image.layer.v1.tar+gzip"
    assert dfile.read_text() == r.headers["docker-content-digest"]
    # the same config, hence the same image ID, pulled back
    rl("pull", "-q", f"{mirror.host}/{repo}:oci", check=True)
    assert rl.inspect(f"{mirror.host}/{repo}:oci")["Id"] == rl.inspect(src)["Id"]


def test_zstd_recompression_once(rl: RootlessEnv, mirror: RegistryProxy) -> None:
    src = f"{mirror.host}/library/busybox:latest"
    rl("pull", "-q", src, check=True)
    blobs = len(rl.blob_files())
    repo = _repo()
    rl("push", "-q", "--format", "oci", "--compression-format", "zstd", "--force-compression", src,
       f"{mirror.host}/{repo}:z", check=True)
    assert len(rl.blob_files()) == blobs + 1  # the zstd layer, kept
    repo2 = _repo()
    rl("push", "-q", "--format", "oci", "--compression-format", "zstd", "--force-compression", src,
       f"{mirror.host}/{repo2}:z", check=True)
    assert len(rl.blob_files()) == blobs + 1  # compressed nothing the second time
    rl("pull", "-q", f"{mirror.host}/{repo}:z", check=True)
    assert rl.inspect(f"{mirror.host}/{repo}:z")["Id"] == rl.inspect(src)["Id"]
    assert_clean_error(rl("push", "-q", "--format", "v2s2", "--compression-format", "zstd", src,
                          f"{mirror.host}/{repo}:bad"), 125, "zstd")


def test_dropped_connection_mid_blob_is_retried(rl: RootlessEnv, faults: RegistryProxy, registry: Registry) -> None:
    # pulled from the registry itself, pushed through the proxy (another host): nothing to mount
    src = f"{registry.host}/library/busybox:latest"
    rl("pull", "-q", src, check=True)
    repo = _repo("flaky")
    fault = faults.add_fault(Fault("drop", methods=("PATCH",), times=1))
    rl("push", "-q", src, f"{faults.host}/{repo}", check=True)
    assert fault.hits == 1
    rl("rmi", "-a", check=True)
    rl("pull", "-q", f"{faults.host}/{repo}", check=True)


def test_registry_that_keeps_dropping_fails_cleanly(rl: RootlessEnv, faults: RegistryProxy,
                                                    registry: Registry) -> None:
    src = f"{registry.host}/library/busybox:latest"
    rl("pull", "-q", src, check=True)
    repo = _repo("dead")
    faults.add_fault(Fault("drop", methods=("PATCH",)))
    cp = rl("push", "-q", src, f"{faults.host}/{repo}", timeout=120)
    assert_clean_error(cp, 125, faults.host)
    # a push's hint, not a pull's: a push never goes through mirrors
    assert "mirror" not in cp.stderr and "push again" in cp.stderr, cp.stderr
    faults.clear_faults()
    import httpx

    r = httpx.get(f"{faults.url}/v2/{repo}/tags/list")
    assert r.status_code == 404, "no manifest may name blobs that never arrived"


@pytest.mark.parametrize("status", [413, 507])
def test_quota_refusal_is_one_line_and_records_nothing(rl: RootlessEnv, faults: RegistryProxy, registry: Registry,
                                                       status: int) -> None:
    # pulled from the registry itself, pushed through the proxy (another host): the layers upload
    src = f"{registry.host}/library/busybox:latest"
    rl("pull", "-q", src, check=True)
    repo = _repo("full")
    fault = faults.add_fault(Fault("status", methods=("PATCH",), status=status))
    mark = faults.mark()
    line = assert_clean_error(rl("push", "-q", src, f"{faults.host}/{repo}", timeout=60), 125, str(status))
    assert "room" in line
    assert fault.hits <= 2, "a full registry is asked once per blob (config and layer), not again and again"
    cancels = [r for r in faults.since(mark) if r.method == "DELETE" and "/blobs/uploads/" in r.path]
    assert cancels and all(r.status in (202, 204) for r in cancels), "the refused upload session is cancelled"
    faults.clear_faults()
    import httpx

    assert httpx.get(f"{faults.url}/v2/{repo}/tags/list").status_code == 404, "no manifest was written"
    pairs = json.loads((rl.store / "layer-blobs.json").read_text())
    assert not any(f"{faults.host}/{repo}" in e.get("seen", []) for e in pairs.values()), \
        "the store does not think the registry holds the layers"


@pytest.fixture(scope="module")
def tls_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    """docker-registry over HTTPS with a self-signed certificate made here (no CA knows it)."""
    work = tmp_path_factory.mktemp("tls-registry")
    cert, key = work / "cert.pem", work / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    reg = start_registry("tls", work, tls=(cert, key))
    yield reg
    reg.stop()


def test_tls_verify(rl: RootlessEnv, mirror: RegistryProxy, registry: Registry, tls_registry: Registry) -> None:
    import httpx

    src = f"{mirror.host}/library/busybox:latest"
    rl("pull", "-q", src, check=True)
    # verification on (the default): a certificate no CA signed is one line, with the fix
    cp = rl("push", "-q", src, f"{tls_registry.host}/self/signed")
    assert_clean_error(cp, 125, tls_registry.host, "certificate")
    assert "--tls-verify=false" in cp.stderr, cp.stderr
    # --tls-verify=false: HTTPS without checking the certificate (not plain HTTP)
    rl("push", "-q", "--tls-verify=false", src, f"{tls_registry.host}/self/signed", check=True)
    r = httpx.get(f"{tls_registry.url}/v2/self/signed/manifests/latest", verify=False, headers={"Accept": ", ".join([
        "application/vnd.oci.image.manifest.v1+json", "application/vnd.docker.distribution.manifest.v2+json"])})
    assert r.status_code == 200 and r.headers["docker-content-digest"] == rl.inspect(src)["Digest"]
    # ...and plain HTTP to a registry that does not speak TLS (a proxy of the plain registry on
    # a port the config does not call insecure)
    plain = RegistryProxy(registry)
    try:
        cp = rl("push", "-q", src, f"{plain.host}/plain/http")
        assert_clean_error(cp, 125, plain.host)
        assert "--tls-verify=false" in cp.stderr, cp.stderr
        rl("push", "-q", "--tls-verify=false", src, f"{plain.host}/plain/http", check=True)
        assert httpx.get(f"{plain.url}/v2/plain/http/tags/list").json()["tags"] == ["latest"]
    finally:
        plain.stop()


def test_manifest_rejected_is_one_line(rl: RootlessEnv, faults: RegistryProxy) -> None:
    src = f"{faults.host}/library/busybox:latest"
    rl("pull", "-q", src, check=True)
    repo = _repo("rejected")
    faults.add_fault(Fault("status", repo=repo, methods=("PUT",), status=400))
    assert_clean_error(rl("push", "-q", src, f"{faults.host}/{repo}"), 125, "manifest")


def test_invalid_destination(rl: RootlessEnv, mirror: RegistryProxy) -> None:
    src = f"{mirror.host}/library/busybox:latest"
    rl("pull", "-q", src, check=True)
    assert_clean_error(rl("push", "-q", src, f"{mirror.host}/UPPER/Case"), 125, "invalid")
    assert_clean_error(rl("push", "-q", "no-such-image-here"), 125)


def test_basic_auth(rl: RootlessEnv, mirror: RegistryProxy, auth_registries: AuthRegistries) -> None:
    src = f"{mirror.host}/library/busybox:latest"
    rl("pull", "-q", src, check=True)
    host = auth_registries.basic.host
    line = assert_clean_error(rl("push", "-q", src, f"{host}/pushed/busybox"), 125)
    assert "authentication" in line
    rl("push", "-q", "--creds", f"{BASIC_USER}:{BASIC_PASSWORD}", src, f"{host}/pushed/busybox", check=True)
    rl("login", "-u", BASIC_USER, "-p", BASIC_PASSWORD, host, check=True)
    rl("push", "-q", src, f"{host}/pushed/busybox:again", check=True)
    rl("pull", "-q", f"{host}/pushed/busybox:again", check=True)


def test_token_auth_push_scope(rl: RootlessEnv, mirror: RegistryProxy, auth_registries: AuthRegistries) -> None:
    src = f"{mirror.host}/library/busybox:latest"
    rl("pull", "-q", src, check=True)
    host = auth_registries.token.host
    line = assert_clean_error(rl("push", "-q", src, f"{host}/public/pushed"), 125)
    assert "push" in line and "Hint: rootless login" in rl("push", src, f"{host}/public/pushed").stderr
    authfile = rl.home / "auth.json"
    import base64

    token = base64.b64encode(f"{TOKEN_PUSHER}:{TOKEN_PUSHER_PASSWORD}".encode()).decode()
    authfile.write_text(json.dumps({"auths": {host: {"auth": token}}}))
    rl("push", "-q", "--authfile", str(authfile), src, f"{host}/public/pushed", check=True)
    # a second repository on the token registry: the layers are mounted from the first
    cp = rl("push", "--authfile", str(authfile), f"{mirror.host}/library/busybox:latest",
            f"{host}/public/pushed2")
    assert cp.returncode == 0, cp.stderr
    assert "mounted from public/pushed" in cp.stderr


def test_built_image_pushes_and_pulls_back(rl: RootlessEnv, mirror: RegistryProxy, tmp_path: Path) -> None:
    """build → push → pull back elsewhere: the built layers (kept unpacked, no blob yet) are written,
    compressed once and uploaded; a second push uploads and compresses nothing; the pulled image
    is the same image and runs."""
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "greeting").write_text("hello from a built layer\n")
    (ctx / "Containerfile").write_text(
        f"FROM {mirror.host}/library/busybox:latest\n"
        "COPY greeting /greeting\n"
        "RUN echo ran > /ran && rm -f /bin/true\n")
    rl("build", "-q", "-t", "localhost/built:1", str(ctx), check=True)
    built = rl.inspect("localhost/built:1")
    repo = _repo("built")
    rl("push", "-q", "localhost/built:1", f"{mirror.host}/{repo}:v1", check=True)
    mark = mirror.mark()
    cp = rl("push", "localhost/built:1", f"{mirror.host}/{repo}:v1", check=True)
    assert _uploaded(mirror, mark) == 0 and "skipped: already exists" in cp.stderr
    rl("rmi", "-a", "-f", check=True)
    rl("pull", "-q", f"{mirror.host}/{repo}:v1", check=True)
    assert rl.inspect(f"{mirror.host}/{repo}:v1")["Id"] == built["Id"]
    out = rl("run", "--rm", f"{mirror.host}/{repo}:v1", "sh", "-c",
             "cat /greeting /ran; test -e /bin/true && echo still-there || echo whited-out", check=True).stdout
    assert out.split("\n")[:3] == ["hello from a built layer", "ran", "whited-out"], out
