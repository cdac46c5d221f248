from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import pytest

from rootless.errors import NotFoundError
from rootless.image import manifest as mf
from rootless.image.manifest import (
    DOCKER_CONFIG,
    DOCKER_LAYER_GZIP,
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
    OCI_CONFIG,
    OCI_INDEX,
    OCI_LAYER_ZSTD,
    OCI_MANIFEST,
    Index,
    Manifest,
    ManifestError,
    Platform,
    host_platform,
    parse_config,
    parse_manifest,
    parse_platform,
    select_platform,
    sha256_digest,
    sniff_media_type,
)

D1, D2, D3 = ("sha256:" + c * 64 for c in "123")


def image_manifest(media_type: str | None = DOCKER_MANIFEST, layers: int = 2,
                   config_type: str = DOCKER_CONFIG) -> dict[str, Any]:
    m: dict[str, Any] = {
        "schemaVersion": 2,
        "config": {"mediaType": config_type, "digest": D1, "size": 100},
        "layers": [{"mediaType": DOCKER_LAYER_GZIP, "digest": "sha256:" + f"{i:064x}", "size": 10 + i}
                   for i in range(layers)],
    }
    if media_type:
        m["mediaType"] = media_type
    return m


def index(*platforms: tuple[str, str, str | None], media_type: str = OCI_INDEX) -> Index:
    entries = []
    for i, (os_, arch, variant) in enumerate(platforms):
        p = {"os": os_, "architecture": arch}
        if variant is not None:
            p["variant"] = variant
        entries.append({"mediaType": OCI_MANIFEST, "digest": "sha256:" + f"{i + 1:064x}", "size": 500,
                        "platform": p})
    out = parse_manifest(json.dumps({"schemaVersion": 2, "mediaType": media_type,
                                     "manifests": entries}).encode())
    assert isinstance(out, Index)
    return out


def test_parse_docker_manifest() -> None:
    raw = json.dumps(image_manifest()).encode()
    m = parse_manifest(raw, DOCKER_MANIFEST)
    assert isinstance(m, Manifest)
    assert m.media_type == DOCKER_MANIFEST and m.digest == sha256_digest(raw) and m.raw == raw
    assert m.config.digest == D1 and m.config.size == 100
    assert [d.size for d in m.layers] == [10, 11]
    mf.check_image_manifest(m, "x")


def test_oci_manifest_without_media_type_sniffed_from_shape() -> None:
    raw = json.dumps(image_manifest(None, config_type=OCI_CONFIG)).encode()
    for ct in (None, "application/json", "text/plain; charset=utf-8", "application/octet-stream"):
        m = parse_manifest(raw, ct)
        assert isinstance(m, Manifest) and m.media_type == OCI_MANIFEST
    assert parse_manifest(raw, OCI_MANIFEST).media_type == OCI_MANIFEST


def test_generic_content_type_uses_body_media_type() -> None:
    raw = json.dumps({"schemaVersion": 2, "mediaType": DOCKER_MANIFEST_LIST, "manifests": []}).encode()
    assert sniff_media_type(raw, "application/json") == DOCKER_MANIFEST_LIST
    assert isinstance(parse_manifest(raw, "application/json"), Index)
    raw2 = json.dumps({"schemaVersion": 2, "manifests": []}).encode()
    assert sniff_media_type(raw2, None) == OCI_INDEX


@pytest.mark.parametrize("body,ct", [
    ({"schemaVersion": 1, "name": "x", "fsLayers": []}, "application/json"),
    ({"schemaVersion": 1}, "application/vnd.docker.distribution.manifest.v1+prettyjws"),
])
def test_schema1_rejected_with_hint(body: dict[str, Any], ct: str) -> None:
    with pytest.raises(ManifestError) as e:
        parse_manifest(json.dumps(body).encode(), ct, name="docker.io/library/old:1")
    assert "schema 1 is not supported" in e.value.message
    assert "docker.io/library/old:1" in e.value.message
    assert e.value.hint and "schema 2" in e.value.hint


@pytest.mark.parametrize("mutate,why", [
    (lambda m: m["layers"][0].update(digest="sha256:../../etc/passwd"), "invalid or unsupported digest"),
    (lambda m: m["layers"][0].update(digest="sha512:" + "a" * 128), "unsupported digest"),
    (lambda m: m["layers"][0].update(size=-1), "non-negative"),
    (lambda m: m.pop("layers"), "no layers"),
    (lambda m: m.update(mediaType="application/vnd.oci.artifact.manifest.v1+json"),
     "unsupported manifest type"),
    (lambda m: m.update(schemaVersion=3), "schemaVersion"),
])
def test_malformed_manifests(mutate: Any, why: str) -> None:
    m = image_manifest()
    mutate(m)
    with pytest.raises(ManifestError, match=why):
        parse_manifest(json.dumps(m).encode(), DOCKER_MANIFEST)


def test_not_json() -> None:
    with pytest.raises(ManifestError, match="not valid JSON"):
        parse_manifest(b"<html>", "text/html")
    with pytest.raises(ManifestError, match="not a JSON object"):
        parse_manifest(b"[]", None)


def test_layer_types_and_artifacts() -> None:
    assert mf.layer_compression(DOCKER_LAYER_GZIP) == "gzip"
    assert mf.layer_compression(OCI_LAYER_ZSTD) == "zstd"
    assert mf.layer_compression(mf.OCI_LAYER_TAR) == "none"
    with pytest.raises(ManifestError):
        mf.layer_compression("application/vnd.cncf.helm.chart.content.v1.tar+gzip")
    helm = parse_manifest(json.dumps(image_manifest(OCI_MANIFEST,
                                                    config_type="application/vnd.cncf.helm.config.v1+json"))
                          .encode())
    assert isinstance(helm, Manifest)
    with pytest.raises(ManifestError, match="is not a container image"):
        mf.check_image_manifest(helm, "example.com/chart:1")


@pytest.mark.parametrize("text,expect", [
    ("linux/amd64", Platform("linux", "amd64", "")),
    ("linux/x86_64", Platform("linux", "amd64", "")),
    ("linux/arm64/v8", Platform("linux", "arm64", "v8")),
    ("linux/aarch64", Platform("linux", "arm64", "")),
    ("linux/arm", Platform("linux", "arm", "v7")),
    ("linux/arm/6", Platform("linux", "arm", "v6")),
    ("arm64", Platform("linux", "arm64", "")),
    ("Linux/i686", Platform("linux", "386", "")),
])
def test_parse_platform(text: str, expect: Platform) -> None:
    assert parse_platform(text) == expect


@pytest.mark.parametrize("text", ["", "linux/", "/amd64", "a/b/c/d"])
def test_parse_platform_invalid(text: str) -> None:
    with pytest.raises(ManifestError, match="invalid platform"):
        parse_platform(text)


@pytest.mark.parametrize("machine,expect", [
    ("x86_64", Platform("linux", "amd64", "")),
    ("aarch64", Platform("linux", "arm64", "v8")),
    ("armv7l", Platform("linux", "arm", "v7")),
    ("armv6l", Platform("linux", "arm", "v6")),
    ("i686", Platform("linux", "386", "")),
    ("ppc64le", Platform("linux", "ppc64le", "")),
    ("s390x", Platform("linux", "s390x", "")),
    ("riscv64", Platform("linux", "riscv64", "")),
])
def test_host_platform(monkeypatch: pytest.MonkeyPatch, machine: str, expect: Platform) -> None:
    real = os.uname()
    fake = os.uname_result((real.sysname, real.nodename, real.release, real.version, machine))
    monkeypatch.setattr(mf.os, "uname", lambda: fake)
    assert host_platform() == expect


def _chosen(idx: Index, want: str) -> int:
    d = select_platform(idx, parse_platform(want))
    return [e.digest for e in idx.manifests].index(d.digest)


def test_select_platform_basic() -> None:
    idx = index(("linux", "amd64", None), ("linux", "arm64", "v8"), ("linux", "arm", "v7"),
                ("linux", "arm", "v6"), ("linux", "ppc64le", None), ("windows", "amd64", None))
    assert _chosen(idx, "linux/amd64") == 0
    assert _chosen(idx, "linux/arm64") == 1  # no variant wanted, v8 offered: equal
    assert _chosen(idx, "linux/arm64/v8") == 1
    assert _chosen(idx, "linux/arm/v7") == 2
    assert _chosen(idx, "linux/arm") == 2  # arm without variant means v7
    assert _chosen(idx, "linux/arm/v6") == 3
    assert _chosen(idx, "windows/amd64") == 5


def test_select_platform_arm64_without_variant_entry() -> None:
    idx = index(("linux", "amd64", None), ("linux", "arm64", None))
    assert _chosen(idx, "linux/arm64/v8") == 1
    assert select_platform(idx, Platform("linux", "arm64", "v8")).digest == idx.manifests[1].digest


def test_select_platform_prefers_exact_variant_then_older() -> None:
    idx = index(("linux", "arm", "v5"), ("linux", "arm", "v6"))
    assert _chosen(idx, "linux/arm/v7") == 1  # v7 runs v6 (best) and v5 code
    assert _chosen(idx, "linux/arm/v5") == 0
    with pytest.raises(NotFoundError):
        select_platform(index(("linux", "arm", "v7")), parse_platform("linux/arm/v6"))


def test_select_platform_amd64_levels() -> None:
    idx = index(("linux", "amd64", "v3"), ("linux", "amd64", None))
    assert _chosen(idx, "linux/amd64") == 1
    assert _chosen(idx, "linux/amd64/v3") == 0
    assert _chosen(idx, "linux/amd64/v4") == 0


def test_select_platform_skips_attestations_and_keeps_index_order() -> None:
    raw = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
        {"mediaType": OCI_MANIFEST, "digest": D1, "size": 1,
         "platform": {"os": "unknown", "architecture": "unknown"},
         "annotations": {"vnd.docker.reference.type": "attestation-manifest"}},
        {"mediaType": "application/vnd.example+json", "digest": D2, "size": 1,
         "platform": {"os": "linux", "architecture": "amd64"}},
        {"mediaType": OCI_MANIFEST, "digest": D3, "size": 1},
        {"mediaType": OCI_MANIFEST, "digest": "sha256:" + "4" * 64, "size": 1,
         "platform": {"os": "linux", "architecture": "amd64"}},
        {"mediaType": OCI_MANIFEST, "digest": "sha256:" + "5" * 64, "size": 1,
         "platform": {"os": "linux", "architecture": "amd64"}},
    ]}).encode()
    idx = parse_manifest(raw)
    assert isinstance(idx, Index)
    assert select_platform(idx, Platform("linux", "amd64")).digest == "sha256:" + "4" * 64
    assert idx.manifests[0].annotations["vnd.docker.reference.type"] == "attestation-manifest"


def test_select_platform_no_match_lists_available() -> None:
    idx = index(("linux", "amd64", None), ("linux", "arm", "v7"), ("linux", "arm64", "v8"),
                ("unknown", "unknown", None))
    with pytest.raises(NotFoundError) as e:
        select_platform(idx, parse_platform("linux/s390x"), name="docker.io/library/x:1")
    assert e.value.message == ("no image for platform linux/s390x in docker.io/library/x:1; "
                               "available: linux/amd64, linux/arm/v7, linux/arm64/v8")
    assert e.value.hint and "--platform" in e.value.hint


def config_blob(n_diff_ids: int = 2, **extra: Any) -> bytes:
    c: dict[str, Any] = {
        "architecture": "arm64", "variant": "v8", "os": "linux", "created": "2024-01-01T00:00:00Z",
        "config": {"Env": ["PATH=/usr/bin"], "Entrypoint": ["/init"], "Cmd": None, "WorkingDir": "/srv",
                   "User": "1000:1000", "ExposedPorts": {"80/tcp": {}}, "Labels": {"a": "b"}},
        "rootfs": {"type": "layers", "diff_ids": ["sha256:" + f"{i:064x}" for i in range(n_diff_ids)]},
        "history": [{"created_by": "ADD x /"}, {"created_by": "ENV a=b", "empty_layer": True},
                    {"created_by": "RUN y"}],
    }
    c.update(extra)
    return json.dumps(c).encode()


def test_parse_config() -> None:
    m = parse_manifest(json.dumps(image_manifest()).encode())
    assert isinstance(m, Manifest)
    c = parse_config(config_blob(), m)
    assert c.platform == Platform("linux", "arm64", "v8")
    assert c.env == ("PATH=/usr/bin",) and c.entrypoint == ("/init",) and c.cmd is None
    assert (c.working_dir, c.user) == ("/srv", "1000:1000")
    assert (c.exposed_ports, c.labels) == (("80/tcp",), {"a": "b"})
    assert len(c.diff_ids) == 2 and c.created == "2024-01-01T00:00:00Z" and c.digest == D1
    assert [h.empty_layer for h in c.history] == [False, True, False]


def test_parse_config_layer_count_must_match() -> None:
    # Three history entries, one of them empty: still the diff_ids alone must match the layers.
    m = parse_manifest(json.dumps(image_manifest(layers=3)).encode())
    assert isinstance(m, Manifest)
    with pytest.raises(ManifestError, match="2 diff_ids for the 3 layers"):
        parse_config(config_blob(2), m)


@pytest.mark.parametrize("extra,why", [
    ({"rootfs": {"type": "layers"}}, "rootfs"),
    ({"rootfs": {"type": "layers", "diff_ids": ["md5:x"]}}, "diff_id 0"),
    ({"config": {"Env": "PATH=/bin"}}, "Env must be a list"),
    ({"config": {"Cmd": ["a", 1]}}, "Cmd must be a list"),
    ({"config": {"User": 0}}, "User must be a string"),
    ({"history": {}}, "history"),
])
def test_parse_config_invalid(extra: dict[str, Any], why: str) -> None:
    with pytest.raises(ManifestError, match=why):
        parse_config(config_blob(**extra))


def test_config_null_container_config() -> None:
    c = parse_config(json.dumps({"os": "linux", "architecture": "amd64", "config": None,
                                 "rootfs": {"type": "layers", "diff_ids": []}}).encode())
    assert c.env == () and c.entrypoint is None and c.cmd is None and c.working_dir == ""


def test_manifest_module_does_not_import_httpx() -> None:
    code = ("import sys, rootless.image.manifest; "
            "bad = [m for m in ('httpx', 'httpcore', 'rich') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("text", ["notaplatform", "linux/notanarch", "plan10/amd64"])
def test_parse_platform_unknown_names(text: str) -> None:
    with pytest.raises(ManifestError) as e:
        parse_platform(text)
    assert "unknown" in str(e.value) and e.value.hint
