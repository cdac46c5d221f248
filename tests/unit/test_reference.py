from __future__ import annotations

import pytest

from rootless.errors import ReferenceError_
from rootless.image.reference import candidates, parse_reference, short_name


@pytest.mark.parametrize("text,expect", [
    ("alpine", "docker.io/library/alpine:latest"),
    ("alpine:3.20", "docker.io/library/alpine:3.20"),
    ("user/img", "docker.io/user/img:latest"),
    ("localhost:5000/a/b:tag", "localhost:5000/a/b:tag"),
    ("localhost/a", "localhost/a:latest"),
    ("quay.io/podman/stable", "quay.io/podman/stable:latest"),
    ("index.docker.io/library/busybox", "docker.io/library/busybox:latest"),
    ("127.0.0.1:5000/x", "127.0.0.1:5000/x:latest"),
    ("alpine@sha256:" + "a" * 64, "docker.io/library/alpine@sha256:" + "a" * 64),
    ("alpine:3@sha256:" + "b" * 64, "docker.io/library/alpine:3@sha256:" + "b" * 64),
    ("my_org/my-img__x", "docker.io/my_org/my-img__x:latest"),
])
def test_parse(text: str, expect: str) -> None:
    assert str(parse_reference(text)) == expect


def test_fields() -> None:
    r = parse_reference("localhost:5000/a/b:tag")
    assert (r.registry, r.repository, r.tag, r.digest, r.qualified) == ("localhost:5000", "a/b", "tag", None, True)
    d = parse_reference("alpine@sha256:" + "c" * 64)
    assert d.tag is None and d.ref == "sha256:" + "c" * 64 and d.tagged_name.endswith(":latest")
    assert not parse_reference("alpine").qualified


@pytest.mark.parametrize("text,why", [
    ("", "empty"),
    ("Alpine", "lowercase"),
    ("alpine:", "bad tag"),
    ("alpine:bad tag", "white space"),
    ("alpine@sha256:abc", "64 lower-case"),
    ("alpine@md5:" + "a" * 32, "unsupported digest"),
    ("a//b", "empty path component"),
    ("-alpine", "bad name component"),
    ("localhost:5000/", "empty path component"),
    ("a" * 64, "image ID"),
    ("x/" + "a" * 260, "longer than"),
    ("alpine:" + "t" * 129, "bad tag"),
])
def test_invalid(text: str, why: str) -> None:
    with pytest.raises(ReferenceError_) as e:
        parse_reference(text)
    assert why in str(e.value)
    assert e.value.hint


def test_candidates_short_name_uses_search_list() -> None:
    r = parse_reference("alpine")
    got = [str(c) for c in candidates(r, ("quay.io", "docker.io"))]
    assert got == ["quay.io/alpine:latest", "docker.io/library/alpine:latest"]
    q = parse_reference("quay.io/x/y")
    assert candidates(q, ("docker.io",)) == [q]


def test_short_name() -> None:
    assert short_name("docker.io/library/alpine:latest") == "alpine:latest"
    assert short_name("docker.io/user/x:1") == "user/x:1"
    assert short_name("quay.io/a/b:1") == "quay.io/a/b:1"
