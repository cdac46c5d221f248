"""Manifests, indexes and image configs: media types, parsing, platform selection.

Pure data code: no I/O and no httpx, so a run of a stored image can parse what the
store holds without paying for the HTTP stack. References: the OCI image spec
(manifest.md, image-index.md, config.md, descriptor.md) and Docker's "Image Manifest
V2, Schema 2", which the OCI types mirror field for field.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Mapping
from typing import Any

from rootless.errors import NotFoundError, RegistryError
from rootless.record import dataclass, field

# --- media types --------------------------------------------------------------
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"

# Schema 1 (signed JWS manifests) was deprecated in 2017 and removed from Docker and
# distribution 3; its layers are listed without a config blob, so we refuse it.
DOCKER_SCHEMA1 = "application/vnd.docker.distribution.manifest.v1+json"
DOCKER_SCHEMA1_SIGNED = "application/vnd.docker.distribution.manifest.v1+prettyjws"

DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"

DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
# Not in Docker's spec, but written by some tools (and accepted by containers/image).
DOCKER_LAYER_TAR = "application/vnd.docker.image.rootfs.diff.tar"
OCI_LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"

# Foreign / non-distributable layers (Windows base layers, mostly): registries may
# refuse to serve them and the descriptor's `urls` name where to fetch them instead.
# OCI deprecated the nondistributable types in image-spec 1.1 but they still exist.
DOCKER_FOREIGN_LAYER_GZIP = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
OCI_NONDIST_LAYER_TAR = "application/vnd.oci.image.layer.nondistributable.v1.tar"
OCI_NONDIST_LAYER_GZIP = "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
OCI_NONDIST_LAYER_ZSTD = "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd"

MANIFEST_TYPES = (DOCKER_MANIFEST, OCI_MANIFEST)
INDEX_TYPES = (DOCKER_MANIFEST_LIST, OCI_INDEX)
ALL_MANIFEST_TYPES = (OCI_INDEX, DOCKER_MANIFEST_LIST, OCI_MANIFEST, DOCKER_MANIFEST)
CONFIG_TYPES = (DOCKER_CONFIG, OCI_CONFIG)
FOREIGN_LAYER_TYPES = (DOCKER_FOREIGN_LAYER_GZIP, OCI_NONDIST_LAYER_TAR, OCI_NONDIST_LAYER_GZIP,
                       OCI_NONDIST_LAYER_ZSTD)

# Layer media type → compression of the tar stream.
LAYER_COMPRESSION: Mapping[str, str] = {
    DOCKER_LAYER_GZIP: "gzip",
    DOCKER_LAYER_TAR: "none",
    OCI_LAYER_TAR: "none",
    OCI_LAYER_GZIP: "gzip",
    OCI_LAYER_ZSTD: "zstd",
    DOCKER_FOREIGN_LAYER_GZIP: "gzip",
    OCI_NONDIST_LAYER_TAR: "none",
    OCI_NONDIST_LAYER_GZIP: "gzip",
    OCI_NONDIST_LAYER_ZSTD: "zstd",
}

# Content types that say nothing about the manifest: the body's mediaType decides.
_GENERIC_TYPES = frozenset({"", "application/json", "text/plain", "application/octet-stream",
                            "binary/octet-stream"})

_SHA256_RE = re.compile(r"^sha256:[0-9a-f]{64}$")

_SCHEMA1_HINT = ("schema 1 manifests were deprecated in 2017; push the image again with a current "
                 "Docker, Buildah or skopeo, which write schema 2 or OCI manifests")


class ManifestError(RegistryError):
    """A manifest, index or image config that is malformed or of a kind we cannot use."""


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def check_digest(digest: object, what: str) -> str:
    """Digests from manifests become file names in the store: accept only canonical sha256."""
    if not isinstance(digest, str) or not _SHA256_RE.match(digest):
        raise ManifestError(f"{what}: invalid or unsupported digest {digest!r}",
                            "only sha256 digests (64 lower-case hex digits) are supported")
    return digest


# --- platforms ----------------------------------------------------------------
@dataclass(frozen=True)
class Platform:
    os: str
    architecture: str
    variant: str = ""

    def __str__(self) -> str:
        return "/".join(p for p in (self.os, self.architecture, self.variant) if p)

    def normalized(self) -> Platform:
        arch, variant = _normalize_arch(self.architecture, self.variant)
        return Platform(self.os.lower(), arch, variant)


def _normalize_arch(arch: str, variant: str) -> tuple[str, str]:
    """GOARCH names and canonical variants, as containerd's platforms.Normalize spells them.

    arm64 "v8" is the baseline and equals no variant; arm with no variant means v7
    (Docker's default for 32-bit arm); amd64 "v1" is the baseline x86-64.
    """
    arch, variant = arch.lower(), variant.lower()
    if variant and variant[0].isdigit():
        variant = "v" + variant
    if arch in ("x86_64", "x86-64", "amd64"):
        return "amd64", "" if variant == "v1" else variant
    if arch in ("aarch64", "arm64"):
        return "arm64", "" if variant == "v8" else variant
    if arch == "armhf":
        return "arm", "v7"
    if arch == "armel":
        return "arm", "v6"
    if arch == "arm":
        return "arm", variant or "v7"
    if arch in ("i386", "i486", "i586", "i686", "x86"):
        return "386", variant
    if arch == "mips64el":
        return "mips64le", variant
    if arch == "mipsel":
        return "mipsle", variant
    if arch == "loongarch64":
        return "loong64", variant
    return arch, variant


# GOOS and GOARCH values, the names OCI image indexes use (image-spec, image-index.md)
KNOWN_OS = frozenset({"linux", "windows", "darwin", "freebsd", "netbsd", "openbsd", "dragonfly", "solaris",
                      "illumos", "aix", "android", "ios", "plan9", "js", "wasip1"})
KNOWN_ARCH = frozenset({"386", "amd64", "arm", "arm64", "arm64be", "loong64", "mips", "mipsle", "mips64",
                        "mips64le", "ppc64", "ppc64le", "riscv64", "s390x", "sparc64", "wasm"})


def parse_platform(text: str) -> Platform:
    """``os/arch[/variant]`` as given to --platform; a bare ``arch`` means linux, a bare ``os``
    this host's architecture (as Podman takes ``--platform linux``)."""
    parts = text.strip().split("/")
    if not all(parts) or not 1 <= len(parts) <= 3:
        raise ManifestError(f"invalid platform {text!r}",
                            "write it as os/architecture[/variant], e.g. linux/arm64 or linux/arm/v7")
    if len(parts) == 1 and parts[0].lower() in KNOWN_OS:
        host = host_platform()
        return Platform(parts[0].lower(), host.architecture, host.variant)
    if len(parts) == 1:
        parts = ["linux", *parts]
    os_, arch = parts[0], parts[1]
    variant = parts[2] if len(parts) == 3 else ""
    a, v = _normalize_arch(arch, variant)
    if os_.lower() not in KNOWN_OS or a not in KNOWN_ARCH:
        bad = f"operating system {os_!r}" if os_.lower() not in KNOWN_OS else f"architecture {arch!r}"
        raise ManifestError(f"invalid platform {text!r}: unknown {bad}",
                            "write it as os/architecture[/variant], e.g. linux/amd64, linux/arm64 or linux/arm/v7")
    if a == "arm64" and variant and not v:
        v = "v8"  # keep what the user wrote; matching treats it as the baseline anyway
    return Platform(os_.lower(), a, v)


def host_platform() -> Platform:
    """The platform images must be built for to run on this machine (linux only)."""
    machine = os.uname().machine.lower()
    table = {
        "x86_64": ("amd64", ""), "amd64": ("amd64", ""),
        "aarch64": ("arm64", "v8"), "arm64": ("arm64", "v8"), "aarch64_be": ("arm64be", ""),
        "armv8l": ("arm", "v8"), "armv7l": ("arm", "v7"), "armv7": ("arm", "v7"),
        "armv6l": ("arm", "v6"), "armv5tel": ("arm", "v5"), "armv5l": ("arm", "v5"),
        "i386": ("386", ""), "i486": ("386", ""), "i586": ("386", ""), "i686": ("386", ""),
        "ppc64le": ("ppc64le", ""), "ppc64": ("ppc64", ""), "s390x": ("s390x", ""),
        "riscv64": ("riscv64", ""), "mips64": ("mips64", ""), "mips": ("mips", ""),
        "loongarch64": ("loong64", ""),
    }
    arch, variant = table.get(machine, (machine, ""))
    return Platform("linux", arch, variant)


def _acceptable_variants(arch: str, variant: str) -> list[str]:
    """Normalized variants that run on (arch, variant), best first.

    32-bit arm cores run code for older ISA levels (a v7 host runs v6 and v5 images);
    x86-64 micro-architecture levels are likewise backward compatible. Elsewhere the
    exact variant is wanted, with the variant-less image as the fallback.
    """
    if arch == "arm":
        level = int(variant[1:]) if re.fullmatch(r"v[5-8]", variant) else 7
        return [f"v{n}" for n in range(level, 4, -1)]
    if arch == "amd64" and re.fullmatch(r"v[2-4]", variant):
        return [f"v{n}" for n in range(int(variant[1:]), 1, -1)] + [""]
    return [variant, ""] if variant else [""]


@dataclass(frozen=True)
class Descriptor:
    media_type: str
    digest: str
    size: int
    platform: Platform | None = None
    urls: tuple[str, ...] = ()
    annotations: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Manifest:
    media_type: str
    config: Descriptor
    layers: tuple[Descriptor, ...]
    raw: bytes
    digest: str
    annotations: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Index:
    media_type: str
    manifests: tuple[Descriptor, ...]
    raw: bytes
    digest: str
    annotations: Mapping[str, str] = field(default_factory=dict)


# --- manifests ----------------------------------------------------------------
def _load_json(data: bytes, what: str) -> dict[str, Any]:
    try:
        obj = json.loads(data)
    except (ValueError, UnicodeDecodeError) as e:
        raise ManifestError(f"{what}: not valid JSON: {e}") from None
    if not isinstance(obj, dict):
        raise ManifestError(f"{what}: not a JSON object")
    return obj


def _schema1_error(what: str) -> ManifestError:
    return ManifestError(f"{what}: image manifest schema 1 is not supported", _SCHEMA1_HINT)


def _detect(obj: dict[str, Any], content_type: str | None, what: str) -> str:
    header = (content_type or "").split(";", 1)[0].strip().lower()
    body = obj.get("mediaType")
    if header in (DOCKER_SCHEMA1, DOCKER_SCHEMA1_SIGNED) or body in (DOCKER_SCHEMA1, DOCKER_SCHEMA1_SIGNED) \
            or obj.get("schemaVersion") == 1:
        raise _schema1_error(what)
    if obj.get("schemaVersion") != 2:
        raise ManifestError(f"{what}: unsupported schemaVersion {obj.get('schemaVersion')!r}")
    # The body's mediaType is what the digest covers, so it wins over a header a
    # proxy may have rewritten; OCI made the field optional, hence the sniffing.
    if isinstance(body, str) and body:
        mt = body
    elif header in ALL_MANIFEST_TYPES:
        mt = header
    elif header not in _GENERIC_TYPES:
        mt = header
    elif "manifests" in obj:
        mt = OCI_INDEX
    elif "config" in obj and "layers" in obj:
        mt = OCI_MANIFEST
    else:
        raise ManifestError(f"{what}: cannot tell what kind of manifest this is "
                            f"(Content-Type {content_type!r}, no mediaType field)")
    if mt not in ALL_MANIFEST_TYPES:
        raise ManifestError(f"{what}: unsupported manifest type {mt}",
                            "this is not a container image (an OCI artifact, perhaps)")
    return mt


def sniff_media_type(data: bytes, content_type: str | None, what: str = "manifest") -> str:
    """The manifest's real media type: the body's mediaType field, else the Content-Type,
    else its shape. Raises ManifestError for schema 1 and for things that are not images."""
    return _detect(_load_json(data, what), content_type, what)


def _str_map(v: Any, what: str) -> dict[str, str]:
    if v is None:
        return {}
    if not isinstance(v, dict) or not all(isinstance(k, str) and isinstance(x, str) for k, x in v.items()):
        raise ManifestError(f"{what}: annotations must map strings to strings")
    return dict(v)


def _platform(v: Any, what: str) -> Platform | None:
    if v is None:
        return None
    if not isinstance(v, dict) or not isinstance(v.get("os"), str) \
            or not isinstance(v.get("architecture"), str):
        raise ManifestError(f"{what}: platform needs string os and architecture")
    variant = v.get("variant") or ""
    if not isinstance(variant, str):
        raise ManifestError(f"{what}: platform variant must be a string")
    return Platform(v["os"], v["architecture"], variant)


def _descriptor(v: Any, what: str) -> Descriptor:
    if not isinstance(v, dict):
        raise ManifestError(f"{what}: descriptor is not a JSON object")
    mt = v.get("mediaType")
    if not isinstance(mt, str) or not mt:
        raise ManifestError(f"{what}: descriptor has no mediaType")
    size = v.get("size")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise ManifestError(f"{what}: descriptor size must be a non-negative integer, not {size!r}")
    urls = v.get("urls") or []
    if not isinstance(urls, list) or not all(isinstance(u, str) for u in urls):
        raise ManifestError(f"{what}: descriptor urls must be a list of strings")
    return Descriptor(media_type=mt, digest=check_digest(v.get("digest"), what), size=size,
                      platform=_platform(v.get("platform"), what), urls=tuple(urls),
                      annotations=_str_map(v.get("annotations"), what))


def parse_manifest(data: bytes, media_type: str | None = None, digest: str | None = None,
                   name: str | None = None) -> Manifest | Index:
    """Parse a manifest or index. ``media_type`` is the Content-Type the registry sent
    (may be generic or None); ``digest`` defaults to the sha256 of ``data``; ``name``
    (e.g. "docker.io/library/alpine:latest") only decorates error messages."""
    digest = digest or sha256_digest(data)
    what = f"manifest {name} ({digest})" if name else f"manifest {digest}"
    obj = _load_json(data, what)
    mt = _detect(obj, media_type, what)
    annotations = _str_map(obj.get("annotations"), what)
    if mt in INDEX_TYPES:
        items = obj.get("manifests")
        if not isinstance(items, list):
            raise ManifestError(f"{what}: index has no manifests list")
        descs = tuple(_descriptor(d, f"{what} entry {i}") for i, d in enumerate(items))
        return Index(media_type=mt, manifests=descs, raw=data, digest=digest, annotations=annotations)
    config = _descriptor(obj.get("config"), f"{what} config")
    layers = obj.get("layers")
    if not isinstance(layers, list):
        raise ManifestError(f"{what}: manifest has no layers list")
    return Manifest(media_type=mt, config=config,
                    layers=tuple(_descriptor(d, f"{what} layer {i}") for i, d in enumerate(layers)),
                    raw=data, digest=digest, annotations=annotations)


def layer_compression(media_type: str) -> str:
    """"gzip", "zstd" or "none" for a layer media type; ManifestError for anything else."""
    try:
        return LAYER_COMPRESSION[media_type]
    except KeyError:
        raise ManifestError(f"unsupported layer media type {media_type}",
                            "only tar, tar+gzip and tar+zstd layers can be unpacked") from None


def check_image_manifest(manifest: Manifest, name: str) -> None:
    """Refuse manifests that are not runnable container images (artifacts, odd layers)."""
    if manifest.config.media_type not in CONFIG_TYPES:
        raise ManifestError(f"{name} is not a container image: its config has media type "
                            f"{manifest.config.media_type}")
    for i, layer in enumerate(manifest.layers):
        if layer.media_type not in LAYER_COMPRESSION:
            raise ManifestError(f"{name}: layer {i} ({layer.digest}) has unsupported media type "
                                f"{layer.media_type}",
                                "only tar, tar+gzip and tar+zstd layers can be unpacked")


def select_platform(index: Index, platform: Platform, name: str | None = None) -> Descriptor:
    """The index entry to pull for ``platform``.

    As containerd's and containers/image's matchers do: os and architecture must
    match exactly (after normalising aliases); among those, the entry whose variant
    comes first in the list of compatible variants wins, ties going to the first
    entry in index order. Entries without a platform, or that are not image
    manifests (attestations, other artifacts), are never chosen.
    """
    want = platform.normalized()
    ranks = {v: i for i, v in enumerate(_acceptable_variants(want.architecture, want.variant))}
    best: tuple[int, int] | None = None
    chosen: Descriptor | None = None
    for pos, d in enumerate(index.manifests):
        if d.platform is None or d.media_type not in ALL_MANIFEST_TYPES:
            continue
        have = d.platform.normalized()
        if have.os != want.os or have.architecture != want.architecture:
            continue
        rank = ranks.get(have.variant)
        if rank is None:
            continue
        if best is None or (rank, pos) < best:
            best, chosen = (rank, pos), d
    if chosen is not None:
        return chosen
    available = sorted({str(d.platform) for d in index.manifests
                        if d.platform is not None and d.media_type in ALL_MANIFEST_TYPES
                        and d.platform.os != "unknown"})
    where = f" in {name}" if name else ""
    raise NotFoundError(f"no image for platform {platform}{where}; available: "
                        f"{', '.join(available) or 'none'}",
                        "choose one of the available platforms with --platform")


# --- image config -------------------------------------------------------------
@dataclass(frozen=True)
class HistoryEntry:
    created: str | None = None
    created_by: str | None = None
    author: str | None = None
    comment: str | None = None
    empty_layer: bool = False


@dataclass(frozen=True)
class ImageConfig:
    os: str
    architecture: str
    variant: str
    config: Mapping[str, Any]  # the container defaults: Env, Entrypoint, Cmd, WorkingDir, User...
    diff_ids: tuple[str, ...]
    history: tuple[HistoryEntry, ...]
    created: str | None
    raw: bytes
    digest: str
    author: str | None = None

    @property
    def platform(self) -> Platform:
        return Platform(self.os, self.architecture, self.variant)

    @property
    def env(self) -> tuple[str, ...]:
        return tuple(self.config.get("Env") or ())

    @property
    def entrypoint(self) -> tuple[str, ...] | None:
        v = self.config.get("Entrypoint")
        return None if v is None else tuple(v)

    @property
    def cmd(self) -> tuple[str, ...] | None:
        v = self.config.get("Cmd")
        return None if v is None else tuple(v)

    @property
    def working_dir(self) -> str:
        return str(self.config.get("WorkingDir") or "")

    @property
    def user(self) -> str:
        return str(self.config.get("User") or "")

    @property
    def exposed_ports(self) -> tuple[str, ...]:
        return tuple(self.config.get("ExposedPorts") or {})

    @property
    def volumes(self) -> tuple[str, ...]:
        return tuple(self.config.get("Volumes") or {})

    @property
    def labels(self) -> Mapping[str, str]:
        return dict(self.config.get("Labels") or {})

    @property
    def stop_signal(self) -> str | None:
        v = self.config.get("StopSignal")
        return str(v) if v else None


def _opt_str(v: Any, what: str, key: str) -> str | None:
    if v is None or isinstance(v, str):
        return v
    raise ManifestError(f"{what}: {key} must be a string")


def _check_container_config(c: Any, what: str) -> dict[str, Any]:
    if c is None:
        return {}
    if not isinstance(c, dict):
        raise ManifestError(f"{what}: config must be a JSON object")
    for key in ("Env", "Entrypoint", "Cmd"):
        v = c.get(key)
        if v is not None and (not isinstance(v, list) or not all(isinstance(s, str) for s in v)):
            raise ManifestError(f"{what}: config.{key} must be a list of strings")
    for key in ("WorkingDir", "User", "StopSignal"):
        _opt_str(c.get(key), what, f"config.{key}")
    for key in ("ExposedPorts", "Volumes", "Labels"):
        v = c.get(key)
        if v is not None and not isinstance(v, dict):
            raise ManifestError(f"{what}: config.{key} must be a JSON object")
    labels = c.get("Labels") or {}
    if not all(isinstance(v, str) for v in labels.values()):
        raise ManifestError(f"{what}: config.Labels values must be strings")
    return c


def parse_config(data: bytes, manifest: Manifest | None = None, digest: str | None = None) -> ImageConfig:
    """Parse an image config blob. With ``manifest``, also check that it has exactly one
    diff_id per layer: the config's rootfs and the manifest's layers describe the same
    stack, uncompressed and compressed (image-spec config.md "rootfs")."""
    digest = digest or (manifest.config.digest if manifest else None) or sha256_digest(data)
    what = f"image config {digest}"
    obj = _load_json(data, what)
    rootfs = obj.get("rootfs")
    if not isinstance(rootfs, dict) or rootfs.get("type") != "layers" \
            or not isinstance(rootfs.get("diff_ids"), list):
        raise ManifestError(f"{what}: rootfs must be {{\"type\": \"layers\", \"diff_ids\": [...]}}")
    diff_ids = tuple(check_digest(d, f"{what} diff_id {i}") for i, d in enumerate(rootfs["diff_ids"]))
    if manifest is not None and len(manifest.layers) != len(diff_ids):
        raise ManifestError(f"{what}: {len(diff_ids)} diff_ids for the {len(manifest.layers)} layers "
                            f"of manifest {manifest.digest}",
                            "the image is corrupt; push it again")
    history_raw = obj.get("history")
    history_raw = [] if history_raw is None else history_raw
    if not isinstance(history_raw, list) or not all(isinstance(h, dict) for h in history_raw):
        raise ManifestError(f"{what}: history must be a list of objects")
    history = tuple(
        HistoryEntry(created=_opt_str(h.get("created"), what, "history.created"),
                     created_by=_opt_str(h.get("created_by"), what, "history.created_by"),
                     author=_opt_str(h.get("author"), what, "history.author"),
                     comment=_opt_str(h.get("comment"), what, "history.comment"),
                     empty_layer=bool(h.get("empty_layer", False)))
        for h in history_raw)
    os_ = obj.get("os") or ""
    arch = obj.get("architecture") or ""
    variant = obj.get("variant") or ""
    for key, v in (("os", os_), ("architecture", arch), ("variant", variant)):
        if not isinstance(v, str):
            raise ManifestError(f"{what}: {key} must be a string")
    return ImageConfig(os=os_, architecture=arch, variant=variant,
                       config=_check_container_config(obj.get("config"), what),
                       diff_ids=diff_ids, history=history,
                       created=_opt_str(obj.get("created"), what, "created"),
                       raw=data, digest=digest,
                       author=_opt_str(obj.get("author"), what, "author"))
