from __future__ import annotations

import multiprocessing
import os
import threading
import time
from pathlib import Path

import pytest

from rootless.errors import DigestMismatchError, NotFoundError, StorageError
from rootless.layout import Layout
from storage.atomic import write_atomic
from storage.blobs import BlobStore, digest_bytes
from storage.locks import FileLock


@pytest.fixture
def store(tmp_path: Path) -> BlobStore:
    layout = Layout(root=tmp_path / "store", runroot=tmp_path / "run")
    layout.ensure_store()
    return BlobStore(layout)


DATA = os.urandom(300_000)
DIGEST = digest_bytes(DATA)


def test_write_verify_commit(store: BlobStore) -> None:
    with store.open_writer(DIGEST, len(DATA)) as w:
        assert not w.done and w.offset == 0
        w.write(DATA[:1000])
        w.write(memoryview(DATA)[1000:])
        assert not store.has(DIGEST)  # not visible until verified
    assert w.done and store.has(DIGEST)
    assert store.read_bytes(DIGEST) == DATA
    assert store.path(DIGEST) == store.layout.blob(DIGEST)
    assert store.size(DIGEST) == len(DATA)
    assert not w.partial_path.exists()
    assert store.list() == [DIGEST]


def test_mismatch_leaves_nothing(store: BlobStore) -> None:
    with pytest.raises(DigestMismatchError) as exc:
        with store.open_writer(DIGEST) as w:
            w.write(DATA[:-1] + b"!")
    assert DIGEST in str(exc.value) and digest_bytes(DATA[:-1] + b"!") in str(exc.value)
    assert not store.has(DIGEST) and not w.partial_path.exists()
    assert os.listdir(store.layout.tmp) == []


def test_size_mismatch(store: BlobStore) -> None:
    with pytest.raises(DigestMismatchError, match="expected 5 bytes"):
        with store.open_writer(digest_bytes(b"123456"), 5) as w:
            w.write(b"123456")
    assert not w.partial_path.exists()


def test_resume_from_partial(store: BlobStore) -> None:
    with pytest.raises(ConnectionError):
        with store.open_writer(DIGEST, len(DATA)) as w:
            w.write(DATA[:123_456])
            raise ConnectionError("network dropped")
    assert w.partial_path.stat().st_size == 123_456  # kept for the next attempt
    with store.open_writer(DIGEST, len(DATA)) as w2:
        assert not w2.done and w2.offset == 123_456
        w2.write(DATA[w2.offset:])  # what an HTTP Range request would return
    assert store.read_bytes(DIGEST) == DATA


def test_reset_when_range_ignored(store: BlobStore) -> None:
    with pytest.raises(ConnectionError):
        with store.open_writer(DIGEST) as w:
            w.write(DATA[:5000])
            raise ConnectionError
    with store.open_writer(DIGEST) as w:
        assert w.offset == 5000
        w.reset()
        assert w.offset == 0
        w.write(DATA)
    assert store.read_bytes(DIGEST) == DATA


def test_corrupt_partial_is_discarded_on_commit(store: BlobStore) -> None:
    store.partial_path(DIGEST).write_bytes(b"garbage")
    with pytest.raises(DigestMismatchError):
        with store.open_writer(DIGEST) as w:
            w.write(DATA[w.offset:])
    with store.open_writer(DIGEST) as w:
        assert w.offset == 0
        w.write(DATA)
    assert store.has(DIGEST)


def test_oversized_partial_restarts(store: BlobStore) -> None:
    store.partial_path(DIGEST).write_bytes(DATA + b"extra")
    with store.open_writer(DIGEST, len(DATA)) as w:
        assert w.offset == 0
        w.write(DATA)
    assert store.has(DIGEST)


def test_done_when_present(store: BlobStore) -> None:
    store.put_bytes(DATA)
    with store.open_writer(DIGEST, len(DATA)) as w:
        assert w.done
        with pytest.raises(StorageError):
            w.write(b"x")


def test_put_bytes(store: BlobStore) -> None:
    assert store.put_bytes(b"{}") == digest_bytes(b"{}")
    assert store.put_bytes(b"{}", digest_bytes(b"{}")) == digest_bytes(b"{}")
    with pytest.raises(DigestMismatchError):
        store.put_bytes(b"{1}", digest_bytes(b"{2}"))
    assert not store.has(digest_bytes(b"{2}"))


def test_read_bytes_detects_corruption(store: BlobStore) -> None:
    store.put_bytes(DATA)
    os.chmod(store.path(DIGEST), 0o600)
    store.path(DIGEST).write_bytes(b"tampered")
    with pytest.raises(DigestMismatchError):
        store.read_bytes(DIGEST)
    assert store.read_bytes(DIGEST, verify=False) == b"tampered"


def test_remove_and_missing(store: BlobStore) -> None:
    store.put_bytes(DATA)
    assert store.remove(DIGEST) is True
    assert store.remove(DIGEST) is False
    assert not store.has(DIGEST) and store.list() == []
    with pytest.raises(NotFoundError):
        store.read_bytes(DIGEST)
    with pytest.raises(NotFoundError):
        store.size(DIGEST)


@pytest.mark.parametrize("bad", ["sha256:abc", "md5:" + "0" * 32, "sha256:" + "G" * 64, "../../x"])
def test_invalid_digest(store: BlobStore, bad: str) -> None:
    with pytest.raises(StorageError, match="invalid digest"):
        store.open_writer(bad)


def _download(store: BlobStore, writes: list[int], barrier: threading.Barrier) -> None:
    barrier.wait()
    with store.open_writer(DIGEST, len(DATA)) as w:
        if not w.done:
            time.sleep(0.05)  # hold the lock while the others queue up
            w.write(DATA)
            writes.append(1)


def test_threads_write_once(store: BlobStore) -> None:
    writes: list[int] = []
    barrier = threading.Barrier(6)
    threads = [threading.Thread(target=_download, args=(store, writes, barrier)) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert writes == [1] and store.read_bytes(DIGEST) == DATA


def _download_process(root: str, runroot: str, marker_dir: str) -> None:
    store = BlobStore(Layout(root=Path(root), runroot=Path(runroot)))
    with store.open_writer(DIGEST, len(DATA)) as w:
        if not w.done:
            time.sleep(0.05)
            w.write(DATA)
            Path(marker_dir, str(os.getpid())).touch()


def test_processes_write_once(store: BlobStore, tmp_path: Path) -> None:
    markers = tmp_path / "markers"
    markers.mkdir()
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_download_process,
                         args=(str(store.layout.root), str(store.layout.runroot), str(markers)))
             for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    assert [p.exitcode for p in procs] == [0] * 4
    assert len(os.listdir(markers)) == 1 and store.read_bytes(DIGEST) == DATA


def test_file_lock_excludes_and_try(tmp_path: Path) -> None:
    path = tmp_path / "locks" / "x.lock"
    with FileLock(path) as held:
        assert held.locked and (path.stat().st_mode & 0o777) == 0o600
        other = FileLock(path)
        assert other.acquire(blocking=False) is False
        shared = FileLock(path, shared=True)
        assert shared.acquire(blocking=False) is False
    assert other.acquire(blocking=False) is True
    other.release()
    a, b = FileLock(path, shared=True), FileLock(path, shared=True)
    assert a.acquire() and b.acquire(blocking=False)  # readers share
    a.release()
    b.release()


def test_write_atomic(tmp_path: Path) -> None:
    target = tmp_path / "f.json"
    write_atomic(target, b"one")
    write_atomic(target, b"two", mode=0o644)
    assert target.read_bytes() == b"two" and (target.stat().st_mode & 0o777) == 0o644
    assert os.listdir(tmp_path) == ["f.json"]
    with pytest.raises(StorageError):
        write_atomic(tmp_path / "missing-dir" / "f", b"x")


def test_stale_partials_are_removed_and_live_ones_kept(store: BlobStore) -> None:
    """A pull that failed (a full disk) keeps its partial to resume from; prune removes it."""
    with pytest.raises(OSError), store.open_writer(DIGEST, len(DATA)) as w:
        w.write(DATA[:1000])
        raise OSError(28, "No space left on device")
    assert w.partial_path.exists()
    other = digest_bytes(b"other")
    live = store.open_writer(other, 5)
    with live:
        live.write(b"ot")
        assert store.remove_partials() == [DIGEST]  # the one being written stays
        assert live.partial_path.exists() and not w.partial_path.exists()
        live.write(b"her")
    (store.layout.tmp / "layer-something").mkdir()  # not a blob partial: not touched
    assert store.remove_partials() == []
    assert (store.layout.tmp / "layer-something").is_dir()
