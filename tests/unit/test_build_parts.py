"""Build pieces that need no namespace: the layer union view, the context and its digest,
names, durations and archive detection."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from rootless.build import ignore
from rootless.build.builder import _archive_kind, _duration, tag_name
from rootless.build.context import Context, ContextError, digest_sources
from rootless.build.dockerfile import DockerfileError
from rootless.build.layerfs import View, _union_names


def _tree(root: Path, files: dict[str, str]) -> Path:
    for name, content in files.items():
        p = root / name
        p.parent.mkdir(parents=True, exist_ok=True)
        if content.startswith("->"):
            os.symlink(content[2:], p)
        elif name.endswith("/"):
            p.mkdir(exist_ok=True)
        else:
            p.write_text(content)
    return root


def test_view_follows_overlay_rules(tmp_path: Path) -> None:
    low = _tree(tmp_path / "low", {"usr/bin/sh": "sh", "bin": "->usr/bin", "etc/group": "g", "opq/old": "o",
                                   "keep/k": "k"})
    mid = _tree(tmp_path / "mid", {"etc/.wh.group": "", "opq/.wh..wh..opq": "", "opq/new": "n", "keep/k2": "k2"})
    top = _tree(tmp_path / "top", {"abs": "->/usr/bin", "loop": "->loop"})
    view = View([str(top), str(mid), str(low)])
    assert view.lookup("etc/group") is None
    assert view.lookup("opq/old") is None and view.lookup("opq/new") is not None
    assert view.lookup("keep/k") is not None and view.lookup("keep/k2") is not None
    assert view.resolve("/bin/sh") == "usr/bin/sh"
    assert view.resolve("/abs/../bin/x") == "usr/bin/x"
    assert view.resolve("/../../etc") == "etc"
    assert _union_names(view, "opq") == ["new"]
    assert _union_names(view, "keep") == ["k", "k2"]
    assert _union_names(view, "etc") == []
    with pytest.raises(Exception, match="too many levels"):
        view.resolve("/loop/x")
    assert View([]).lookup("x") is None


def test_context_sources_globs_and_escapes(tmp_path: Path) -> None:
    root = _tree(tmp_path / "ctx", {"a.txt": "a", "b.txt": "b", "d/e.txt": "e", "in": "->d", "out": "->../x",
                                    "abs": "->/etc", "skip.log": "s"})
    ctx = Context(str(root), ignore.Matcher(ignore.parse("*.log")))
    assert [s.rel for s in ctx.sources(["*.txt"], "D:1")] == ["a.txt", "b.txt"]
    assert [s.rel for s in ctx.sources(["in/e.txt"], "D:1")] == ["d/e.txt"]
    for bad, msg in (("../a.txt", "outside the build context"), ("out/x", "symlink leading out"),
                     ("abs", "symlink leading out"), ("skip.log", "ignore file excludes it"),
                     ("nothing", "does not exist")):
        with pytest.raises(ContextError, match=msg):
            ctx.sources([bad], "D:1")


def test_digest_covers_content_and_mode_not_times(tmp_path: Path) -> None:
    root = _tree(tmp_path / "ctx", {"d/a": "a", "d/b": "b"})
    ctx = Context(str(root), ignore.Matcher([]))

    def digest() -> str:
        return digest_sources(ctx, ctx.sources(["d"], "D:1"))

    first = digest()
    os.utime(root / "d" / "a", (1, 1))
    assert digest() == first
    (root / "d" / "a").write_text("A")
    assert digest() != first
    (root / "d" / "a").write_text("a")
    assert digest() == first
    os.chmod(root / "d" / "a", 0o600)
    assert digest() != first


def test_names_durations_archives(tmp_path: Path) -> None:
    assert tag_name("app") == "localhost/app:latest"
    assert tag_name("app:1") == "localhost/app:1"
    assert tag_name("quay.io/org/app") == "quay.io/org/app:latest"
    assert tag_name("localhost:5000/app:2") == "localhost:5000/app:2"
    assert _duration("1m30s", "D:1", "--interval") == 90 * 10**9
    assert _duration("500ms", "D:1", "--timeout") == 5 * 10**8
    with pytest.raises(DockerfileError, match="D:1: --interval '10' is not a duration"):
        _duration("10", "D:1", "--interval")
    (tmp_path / "x.gz").write_bytes(b"\x1f\x8b rest")
    (tmp_path / "plain").write_text("not an archive")
    assert _archive_kind(str(tmp_path / "x.gz")) == "gzip"
    assert _archive_kind(str(tmp_path / "plain")) is None
