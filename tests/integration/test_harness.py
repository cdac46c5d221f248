"""The harness itself, checked with a plain HTTP client, so that a failing CLI test can be
told apart from a broken fixture."""

from __future__ import annotations

import hashlib
import os

import httpx
import pytest

from tests import imagebuild as ib
from tests.integration.conftest import TOKEN_PASSWORD, TOKEN_USER
from tests.integration.harness import AuthRegistries, Fault, RegistryProxy


def _get_manifest(base: str, repo: str, ref: str, token: str | None = None,
                  auth: tuple[str, str] | None = None) -> httpx.Response:
    headers = {"Accept": ib.MANIFEST_ACCEPT}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return httpx.get(f"{base}/v2/{repo}/manifests/{ref}", headers=headers, auth=auth)


def test_not_root() -> None:
    assert os.geteuid() != 0


def test_registry_serves_pushed_images(registry, images) -> None:
    for name, pushed in images.items():
        r = _get_manifest(registry.url, pushed.repo, pushed.tag)
        assert r.status_code == 200, (name, r.text)
        assert r.headers["docker-content-digest"] == pushed.digest
        assert hashlib.sha256(r.content).hexdigest() == pushed.digest.split(":")[1]


def test_multilayer_has_the_promised_shape(images) -> None:
    img = images["test/multilayer:latest"].image
    assert len(img.layers) >= 4
    members = [m for la in img.layers for m in la.members]
    assert "data/.wh.removed.txt" in members and "opq/.wh..wh..opq" in members


def test_proxy_counts_and_corrupts(mirror: RegistryProxy, images, faults: RegistryProxy) -> None:
    layer = images["test/corrupt:latest"].image.layers[1]
    url = f"{mirror.url}/v2/test/corrupt/blobs/{layer.digest}"
    mark = mirror.mark()
    assert hashlib.sha256(httpx.get(url).content).hexdigest() == layer.hex
    faults.add_fault(Fault("corrupt", digest=layer.digest))
    body = httpx.get(url).content
    assert len(body) == layer.size and hashlib.sha256(body).hexdigest() != layer.hex
    assert len(mirror.blob_gets(mark, layer.digest)) == 2


def test_proxy_cut_and_range(faults: RegistryProxy, images) -> None:
    layer = images["test/cut:latest"].image.layers[1]
    url = f"{faults.url}/v2/test/cut/blobs/{layer.digest}"
    faults.add_fault(Fault("cut", digest=layer.digest, times=1))
    with pytest.raises(httpx.HTTPError):
        httpx.get(url)
    r = httpx.get(url, headers={"Range": "bytes=100-"})
    assert r.status_code == 206 and r.content == layer.read()[100:]


def test_proxy_redirect(faults: RegistryProxy, images) -> None:
    faults.add_fault(Fault("redirect", repo="test/redirect"))
    layer = images["test/redirect:latest"].image.layers[1]
    r = httpx.get(f"{faults.url}/v2/test/redirect/blobs/{layer.digest}")
    assert r.status_code == 307
    r = httpx.get(f"{faults.url}/v2/test/redirect/blobs/{layer.digest}", follow_redirects=True)
    assert r.content == layer.read()


def test_basic_auth_registry(auth_registries: AuthRegistries) -> None:
    b = auth_registries.basic
    assert _get_manifest(b.url, "private/busybox", "latest").status_code == 401
    r = _get_manifest(b.url, "private/busybox", "latest", auth=(b.username or "", b.password or ""))
    assert r.status_code == 200
    assert _get_manifest(b.url, "private/busybox", "latest", auth=(b.username or "", "x")).status_code == 401


def test_token_auth_registry(auth_registries: AuthRegistries) -> None:
    t = auth_registries.token
    r = _get_manifest(t.url, "private/busybox", "latest")
    assert r.status_code == 401
    scheme, params = ib._parse_challenge(r.headers["www-authenticate"])
    assert scheme == "bearer" and params["realm"] == auth_registries.token_service.realm

    def token(user: tuple[str, str] | None, repo: str) -> str:
        tr = httpx.get(params["realm"], params={"service": params["service"],
                                                "scope": f"repository:{repo}:pull"}, auth=user)
        assert tr.status_code == 200, tr.text
        return str(tr.json()["token"])

    bob = (TOKEN_USER, TOKEN_PASSWORD)
    ok = _get_manifest(t.url, "private/busybox", "latest",
                       token=token(bob, 'private/busybox'))
    assert ok.status_code == 200, ok.text
    anon = _get_manifest(t.url, "private/busybox", "latest",
                         token=token(None, 'private/busybox'))
    assert anon.status_code == 401
    pub = _get_manifest(t.url, "public/busybox", "latest",
                        token=token(None, 'public/busybox'))
    assert pub.status_code == 200
    bad = httpx.get(params["realm"], params={"service": params["service"]}, auth=(TOKEN_USER, "wrong"))
    assert bad.status_code == 401
