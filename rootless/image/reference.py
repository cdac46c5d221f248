"""Image references, following the grammar of distribution's reference package.

    reference  := name [ ":" tag ] [ "@" digest ]
    name       := [domain "/"] path-component ["/" path-component]*
    domain     := host [":" port]   (the first component is a domain only when it holds
                                     "." or ":", is "localhost", or has upper case)

Docker Hub names with one component live under ``library/``.
"""

from __future__ import annotations

import re

from rootless.errors import ReferenceError_
from rootless.record import dataclass

DOCKER_HUB = "docker.io"
_HUB_ALIASES = {"index.docker.io", "registry-1.docker.io", "registry.hub.docker.com"}

_COMPONENT = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
# Compiled on first use (re's cache): `run busybox` needs none of them, and compiling them costs
# ≈1 ms of its start-up.
_DOMAIN = (r"^(?:localhost|\[[0-9A-Fa-f:]+\]|"
           r"(?:[A-Za-z0-9]|[A-Za-z0-9][A-Za-z0-9-]*[A-Za-z0-9])"
           r"(?:\.(?:[A-Za-z0-9]|[A-Za-z0-9][A-Za-z0-9-]*[A-Za-z0-9]))*)"
           r"(?::[0-9]+)?$")
_TAG = r"^[\w][\w.-]{0,127}$"  # with re.ASCII: the distribution spec's [a-zA-Z0-9_]
_DIGEST = r"^[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}$"
_SHA256 = r"^sha256:[0-9a-f]{64}$"
MAX_NAME = 255


@dataclass(frozen=True)
class Reference:
    registry: str
    repository: str
    tag: str | None = None
    digest: str | None = None
    qualified: bool = True  # False when the user typed no registry (short name)

    @property
    def name(self) -> str:
        return f"{self.registry}/{self.repository}"

    @property
    def ref(self) -> str:
        """What to ask the registry for: the digest when pinned, else the tag."""
        return self.digest or self.tag or "latest"

    def with_registry(self, registry: str) -> Reference:
        repo = self.repository
        if registry == DOCKER_HUB and "/" not in repo:
            repo = "library/" + repo
        elif registry != DOCKER_HUB and repo.startswith("library/") and self.registry == DOCKER_HUB:
            repo = repo[len("library/"):]
        return Reference(registry, repo, self.tag, self.digest, True)

    def __str__(self) -> str:
        s = self.name
        if self.tag:
            s += ":" + self.tag
        if self.digest:
            s += "@" + self.digest
        return s

    @property
    def tagged_name(self) -> str:
        """``name:tag`` (``latest`` when only a digest was given, as Podman records no tag then)."""
        return f"{self.name}:{self.tag or 'latest'}"


def _fail(text: str, why: str) -> ReferenceError_:
    return ReferenceError_(f"invalid reference format {text!r}: {why}",
                           "a reference looks like [registry[:port]/]name[:tag][@sha256:<64 hex>]")


def parse_reference(text: str, *, default_tag: bool = True) -> Reference:
    """Parse what a user typed. A bare name gets ``docker.io`` and ``latest``; ``qualified`` says
    whether the user named the registry (short names go through unqualified-search)."""
    if not text:
        raise _fail(text, "empty")
    if any(c.isspace() for c in text):
        raise _fail(text, "contains white space")
    rest, digest = text, None
    if "@" in rest:
        rest, digest = rest.split("@", 1)
        if digest.startswith("sha256:") and not re.match(_SHA256, digest):
            raise _fail(text, "a sha256 digest is 64 lower-case hex digits")
        if not re.match(_DIGEST, digest):
            raise _fail(text, f"bad digest {digest!r}")
        if not digest.startswith("sha256:"):
            raise _fail(text, f"unsupported digest algorithm {digest.split(':')[0]!r}")
    tag = None
    last = rest.rsplit("/", 1)[-1]
    if ":" in last:
        rest, tag = rest.rsplit(":", 1)
        if not re.match(_TAG, tag, re.ASCII):
            raise _fail(text, f"bad tag {tag!r}")
    if not rest:
        raise _fail(text, "no name")
    parts = rest.split("/")
    first = parts[0]
    qualified = len(parts) > 1 and (
        "." in first or ":" in first or first == "localhost" or first.lower() != first)
    if qualified:
        registry, path = first, parts[1:]
        if not re.match(_DOMAIN, registry):
            raise _fail(text, f"bad registry host {registry!r}")
        port = re.search(r":([0-9]+)$", registry)
        if port and not 0 < int(port.group(1)) < 65536:
            raise _fail(text, f"port {port.group(1)} of {registry!r} is not in 1-65535")
        if registry in _HUB_ALIASES:
            registry = DOCKER_HUB
    else:
        registry, path = DOCKER_HUB, parts
    if not path:
        raise _fail(text, "no repository after the registry")
    for comp in path:
        if not comp:
            raise _fail(text, "empty path component")
        if not _COMPONENT.match(comp):
            if comp.lower() != comp and _COMPONENT.match(comp.lower()):
                raise _fail(text, "repository name must be lowercase")
            raise _fail(text, f"bad name component {comp!r}")
    if len(parts) == 1 and _HEX64.match(first) and tag is None and digest is None:
        raise _fail(text, "a 64-hex name is an image ID, not a repository name")
    repository = "/".join(path)
    if registry == DOCKER_HUB and len(path) == 1:
        repository = "library/" + repository
    if len(registry) + 1 + len(repository) > MAX_NAME:
        raise _fail(text, f"name longer than {MAX_NAME} characters")
    if tag is None and digest is None and default_tag:
        tag = "latest"
    return Reference(registry, repository, tag, digest, qualified)


def candidates(ref: Reference, search: tuple[str, ...]) -> list[Reference]:
    """Fully-qualified references to try for what the user typed, in order."""
    if ref.qualified:
        return [ref]
    return [ref.with_registry(r) for r in search] or [ref]


def short_name(full: str) -> str:
    """``docker.io/library/alpine:latest`` → ``alpine:latest`` for display (as docker does)."""
    if full.startswith(DOCKER_HUB + "/library/"):
        return full[len(DOCKER_HUB + "/library/"):]
    if full.startswith(DOCKER_HUB + "/"):
        return full[len(DOCKER_HUB + "/"):]
    return full
