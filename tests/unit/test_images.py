from __future__ import annotations

import json
from pathlib import Path

import pytest

from rootless.errors import NotFoundError, RootlessError, StorageError
from rootless.layout import Layout
from storage.images import ImageRecord, ImageStore, LayerEntry

ALPINE = "docker.io/library/alpine:latest"
ALPINE_318 = "docker.io/library/alpine:3.18"
GZ = "application/vnd.oci.image.layer.v1.tar+gzip"


def rec(hex_char: str, *names: str, **kw: object) -> ImageRecord:
    image_id = (hex_char * 64)[:64]
    return ImageRecord(
        id=image_id, names=names, config_digest=f"sha256:{image_id}",
        manifest_digest="sha256:" + "e" * 64,
        layers=(LayerEntry("sha256:" + "b" * 64, "sha256:" + "d" * 64, GZ, 10),),
        **kw)  # type: ignore[arg-type]


@pytest.fixture
def store(tmp_path: Path) -> ImageStore:
    layout = Layout(root=tmp_path / "store", runroot=tmp_path / "run")
    layout.ensure_store()
    return ImageStore(layout)


def test_record_roundtrip(store: ImageStore) -> None:
    r = rec("a", ALPINE, digests=("docker.io/library/alpine@sha256:" + "e" * 64,),
            created="2024-01-01T00:00:00Z", size=123)
    assert isinstance(r.layers[0], LayerEntry) and r.layers[0].size == 10
    store.add(r)
    got = store.get(r.id)
    assert got == r
    assert got.diff_ids == ("sha256:" + "d" * 64,)
    on_disk = json.loads((store.layout.images / f"{r.id}.json").read_text())
    assert on_disk["layers"][0]["diff_id"] == "sha256:" + "d" * 64
    assert json.loads(store.layout.image_index.read_text())["names"][ALPINE] == r.id
    assert ImageRecord(**{**r.__dict__, "id": "sha256:" + r.id}).id == r.id
    with pytest.raises(StorageError):
        ImageRecord(id="xyz")


def test_lookup_rules(store: ImageStore) -> None:
    a = store.add(rec("a1"), [ALPINE, ALPINE_318])
    b = store.add(rec("b2"), ["localhost:5000/app:v1", "localhost:5000/plain:latest"])
    assert store.lookup(ALPINE) == a
    assert store.lookup("docker.io/library/alpine") == a  # no tag: :latest
    assert store.lookup(ALPINE_318) == a
    assert store.lookup("localhost:5000/plain") == b  # the port's ':' is not a tag
    assert store.lookup("localhost:5000/app") is None  # no :latest for app
    assert store.lookup("localhost:5000/app:v1") == b
    assert store.lookup(a.id) == a
    assert store.lookup("sha256:" + a.id) == a
    assert store.lookup("a1a") == a  # unique prefix
    assert store.lookup("b2b2b2") == b
    assert store.lookup("ab") is None  # fewer than 3 digits is never an ID
    assert store.lookup("alpine") is None  # short names are the caller's job
    assert store.lookup("docker.io/library/busybox") is None
    assert store.lookup("fff") is None


def test_lookup_digest_reference(store: ImageStore) -> None:
    ref = "docker.io/library/alpine@sha256:" + "e" * 64
    a = store.add(rec("a", digests=(ref,)))
    assert store.lookup(ref) == a


def test_prefix_ambiguity(store: ImageStore) -> None:
    store.add(rec("abc1"), ["r/one:1"])
    store.add(rec("abc2"), ["r/two:1"])
    with pytest.raises(RootlessError, match="ambiguous"):
        store.lookup("abc")
    assert store.lookup("abc1").names == ("r/one:1",)  # type: ignore[union-attr]


def test_tag_moves_and_leaves_dangling(store: ImageStore) -> None:
    old = store.add(rec("1"), [ALPINE])
    new = store.add(rec("2"), [ALPINE])
    assert store.lookup(ALPINE) == new
    old_now = store.get(old.id)
    assert old_now.names == () and old_now.dangling
    assert {r.id for r in store.list()} == {old.id, new.id}  # the old image stays
    store.tag(old.id, ALPINE_318)
    assert store.get(old.id).names == (ALPINE_318,)
    store.tag(old.id, ALPINE)  # moves back
    assert store.get(new.id).dangling and store.get(old.id).names == (ALPINE_318, ALPINE)


def test_add_merges_names(store: ImageStore) -> None:
    store.add(rec("1"), [ALPINE])
    merged = store.add(rec("1"), [ALPINE_318])
    assert merged.names == (ALPINE, ALPINE_318)
    assert store.add(rec("1", ALPINE)).names == (ALPINE, ALPINE_318)  # no duplicates


def test_untag(store: ImageStore) -> None:
    r = store.add(rec("1"), [ALPINE, ALPINE_318])
    after = store.untag(ALPINE)
    assert after.names == (ALPINE_318,)
    assert store.lookup(ALPINE) is None and store.lookup(ALPINE_318) == after
    with pytest.raises(NotFoundError):
        store.untag(ALPINE)
    store.untag(ALPINE_318)
    assert store.get(r.id).dangling


def test_remove_and_in_use(store: ImageStore) -> None:
    a = store.add(rec("1", index_digest="sha256:" + "f" * 64), [ALPINE])
    b = store.add(ImageRecord(id="2" * 64, config_digest="sha256:" + "2" * 64,
                              manifest_digest="sha256:" + "3" * 64,
                              layers=(LayerEntry("sha256:" + "4" * 64, "sha256:" + "5" * 64, "t", 1),)),
                  ["x/y:z"])
    assert store.layers_in_use() == {"sha256:" + "d" * 64, "sha256:" + "5" * 64}
    assert store.blobs_in_use() == {a.manifest_digest, a.config_digest, "sha256:" + "f" * 64,
                                    "sha256:" + "b" * 64, b.manifest_digest, b.config_digest,
                                    "sha256:" + "4" * 64}
    removed = store.remove(a.id)
    assert removed == a
    assert store.lookup(ALPINE) is None and [r.id for r in store.list()] == [b.id]
    assert store.layers_in_use() == {"sha256:" + "5" * 64}
    with pytest.raises(NotFoundError):
        store.get(a.id)
    with pytest.raises(NotFoundError):
        store.remove(a.id)


def test_lookup_candidates(store: ImageStore) -> None:
    a = store.add(rec("1"), ["quay.io/library/alpine:latest"])
    cands = ["localhost:5000/alpine:latest", "quay.io/library/alpine:latest",
             "docker.io/library/alpine:latest"]
    assert store.lookup_candidates(cands) == a
    assert store.lookup_candidates(["quay.io/library/alpine"]) == a
    assert store.lookup_candidates(cands[:1]) is None


def test_empty_store(store: ImageStore) -> None:
    assert store.list() == [] and store.lookup(ALPINE) is None and store.layers_in_use() == set()


def test_plain_tuples_and_lists_become_layer_entries() -> None:
    r = ImageRecord(id="1" * 64, layers=[["sha256:" + "4" * 64, "sha256:" + "5" * 64, "t", 1]])  # type: ignore[arg-type]
    assert r.layers == (LayerEntry("sha256:" + "4" * 64, "sha256:" + "5" * 64, "t", 1),)
    assert r.layers[0].diff_id == "sha256:" + "5" * 64


def test_locked_is_reentrant(store: ImageStore) -> None:
    with store.locked():
        store.add(rec("1"), [ALPINE])
        with store.locked():
            store.untag(ALPINE)
        store.tag("1" * 64, ALPINE_318)
    assert store.lookup(ALPINE_318) is not None
