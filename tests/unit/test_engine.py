"""The engine's API (rootless.engine) with a fake Runtime where namespaces would be needed."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from rootless import engine
from rootless.config import Config
from rootless.context import Context, Log
from rootless.errors import NotFoundError, RootlessError, StorageError
from rootless.image.specgen import RunOptions
from rootless.layout import Layout
from rootless.runtime.state import NoSuchContainer
from rootless.spec import IdMap, RootfsPlan, Spec
from storage.images import ImageRecord, ImageStore

MAPS = (IdMap(0, 1000, 1), IdMap(1, 100000, 65536))


class FakeRuntime(engine.Runtime):
    """Records what the engine asks of the kernel; ``exit`` is the container's status."""

    def __init__(self, exit: int = 0, fail_run: BaseException | None = None) -> None:  # noqa: A002
        self.exit = exit
        self.fail_run = fail_run
        self.layers: set[str] = set()
        self.calls: list[tuple[str, str]] = []

    def store_maps(self) -> tuple[tuple[IdMap, ...], tuple[IdMap, ...]]:
        return MAPS, MAPS

    def prepare(self, ctx: Context, image: ImageRecord, cid: str, driver: str | None, durable: bool) -> RootfsPlan:
        self.layers.add(cid)
        self.calls.append(("prepare", cid))
        top = ctx.layout.containers / cid  # the container layer's directory, as storage.rootfs makes it
        top.mkdir(parents=True)
        return RootfsPlan("overlay", str(top / "merged"), ("/l1",), str(top / "upper"), str(top / "work"))

    def discard(self, ctx: Context, cid: str) -> None:
        import shutil

        shutil.rmtree(ctx.layout.containers / cid, ignore_errors=True)
        self.layers.discard(cid)
        self.calls.append(("discard", cid))

    def run(self, ctx: Context, spec: Spec, recorded: bool) -> int:
        self.calls.append(("run", spec.id))
        if self.fail_run is not None:
            raise self.fail_run
        return self.exit

    def start(self, ctx: Context, cid: str, stdin: int | None = None, terminal: int | None = None,
              winsize: bytes | None = None) -> int:
        self.calls.append(("start", cid))
        return 4242


@pytest.fixture
def ctx(tmp_path: Path) -> Context:
    layout = Layout(root=tmp_path / "store", runroot=tmp_path / "run")
    return Context(config=Config(network="none"), layout=layout, log=Log())


def store_image(ctx: Context, name: str = "docker.io/library/busybox:latest", **config: Any) -> ImageRecord:
    blob = json.dumps({"architecture": "amd64", "os": "linux", "config": {"Cmd": ["sh"], **config}}).encode()
    hexd = hashlib.sha256(blob).hexdigest()
    path = ctx.layout.blob(f"sha256:{hexd}")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(blob)
    store = ImageStore(ctx.layout)
    with store.locked():
        return store.add(ImageRecord(id=hexd, config_digest=f"sha256:{hexd}"), (name,))


# --------------------------------------------------------------------------- images

def test_resolve_image_pulls_only_when_not_found(ctx: Context, monkeypatch: pytest.MonkeyPatch) -> None:
    from rootless.image import present, pull

    pulled: list[str] = []
    rec = store_image(ctx)
    def fake_pull(ctx: Context, ref: str, platform: str | None = None) -> ImageRecord:
        pulled.append(ref)
        return rec

    monkeypatch.setattr(pull, "pull", fake_pull)
    assert engine.resolve_image(ctx, "busybox").id == rec.id and pulled == []
    assert engine.resolve_image(ctx, "alpine").id == rec.id and pulled == ["alpine"]  # not found: pulled
    assert engine.resolve_image(ctx, "busybox", pull="always") and pulled == ["alpine", "busybox"]
    with pytest.raises(NotFoundError):
        engine.resolve_image(ctx, "alpine", pull="never")

    def corrupt(ctx: Context, text: str, store: Any = None) -> ImageRecord:
        raise StorageError("images.json: not valid JSON")

    monkeypatch.setattr(present, "find", corrupt)
    with pytest.raises(StorageError, match="not valid JSON"):  # a store error is not "missing"
        engine.resolve_image(ctx, "busybox")
    assert pulled == ["alpine", "busybox"]


def test_images_newest_first(ctx: Context) -> None:
    store_image(ctx, "docker.io/library/a:1", Env=["A=1"])
    store_image(ctx, "docker.io/library/b:1", Env=["B=1"])
    assert {n for r in engine.images(ctx) for n in r.names} == {"docker.io/library/a:1", "docker.io/library/b:1"}
    assert engine.image(ctx, "a:1").names == ("docker.io/library/a:1",)


# --------------------------------------------------------------------------- making and running

def test_create_records_a_container_seen_by_the_views(ctx: Context) -> None:
    store_image(ctx)
    rt = FakeRuntime()
    made = engine.create(ctx, RunOptions(image="busybox", command=("true",), name="web"), runtime=rt)
    assert made.recorded and made.spec.process.args == ("true",) and made.spec.uid_map == MAPS
    assert engine.resolve(ctx, "web") == made.id
    (c,) = engine.containers(ctx, all_=True)
    assert c.config.name == "web" and c.config.image == "docker.io/library/busybox:latest"
    assert engine.containers(ctx, all_=False) == []  # not running
    assert engine.containers(ctx, filters=["name=^we"])[0].id == made.id
    assert engine.containers(ctx, filters=["status=running"]) == []
    with pytest.raises(RootlessError, match="invalid filter"):
        engine.containers(ctx, filters=["colour=red"])
    assert engine.inspect(ctx, "web")["Name"] == "web"
    assert engine.start(ctx, "web", runtime=rt) == 4242 and rt.calls[-1] == ("start", made.id)


def test_a_name_is_held_unique(ctx: Context) -> None:
    store_image(ctx)
    rt = FakeRuntime()
    engine.create(ctx, RunOptions(image="busybox", name="web"), runtime=rt)
    with pytest.raises(RootlessError, match="already in use"):
        engine.create(ctx, RunOptions(image="busybox", name="web"), runtime=rt)
    assert len(rt.layers) == 1


def test_a_failed_create_leaves_nothing(ctx: Context) -> None:
    store_image(ctx)
    rt = FakeRuntime()
    with pytest.raises(RootlessError):
        engine.create(ctx, RunOptions(image="busybox", name="bad", memory="lots"), runtime=rt)
    assert rt.layers == set() and engine.containers(ctx) == []
    with pytest.raises(NoSuchContainer):
        engine.resolve(ctx, "bad")


def test_an_unknown_image_is_not_pulled_with_never(ctx: Context) -> None:
    rt = FakeRuntime()
    with pytest.raises(NotFoundError):
        engine.create(ctx, RunOptions(image="nothere"), pull="never", runtime=rt)
    assert rt.calls == []


def test_run_rm_anonymous_is_not_recorded_and_leaves_nothing(ctx: Context) -> None:
    store_image(ctx)
    rt = FakeRuntime(exit=3)
    assert engine.run(ctx, RunOptions(image="busybox", rm=True), runtime=rt) == 3
    assert [k for k, _ in rt.calls] == ["prepare", "run", "discard"] and rt.layers == set()
    assert engine.containers(ctx) == []


def test_run_keeps_a_recorded_container_without_rm(ctx: Context) -> None:
    store_image(ctx)
    rt = FakeRuntime(exit=0)
    assert engine.run(ctx, RunOptions(image="busybox", name="keep"), runtime=rt) == 0
    assert engine.resolve(ctx, "keep") and len(rt.layers) == 1


def test_run_rm_cleans_up_when_the_process_fails(ctx: Context) -> None:
    store_image(ctx)
    rt = FakeRuntime(fail_run=RootlessError("exec: boom"))
    with pytest.raises(RootlessError, match="boom"):
        engine.run(ctx, RunOptions(image="busybox", rm=True, name="gone"), runtime=rt)
    assert rt.layers == set() and engine.containers(ctx) == []


def test_run_detached_starts_under_a_monitor(ctx: Context) -> None:
    store_image(ctx)
    rt = FakeRuntime()
    cid = engine.run_detached(ctx, RunOptions(image="busybox", name="bg"), runtime=rt)
    assert rt.calls == [("prepare", cid), ("start", cid)] and engine.resolve(ctx, "bg") == cid


def test_the_network_default_is_the_configs(ctx: Context) -> None:
    store_image(ctx)
    made = engine.create(ctx, RunOptions(image="busybox", network=""), runtime=FakeRuntime())
    assert made.spec.network.mode == "none"


def test_operations_on_missing_containers(ctx: Context) -> None:
    for op in (lambda: engine.stop(ctx, "nope"), lambda: engine.kill(ctx, "nope"),
               lambda: engine.remove(ctx, "nope"), lambda: engine.inspect(ctx, "nope"),
               lambda: engine.wait(ctx, "nope", 0)):
        with pytest.raises(NoSuchContainer):
            op()


def test_remove_a_created_container(ctx: Context, monkeypatch: pytest.MonkeyPatch) -> None:
    store_image(ctx)
    rt = FakeRuntime()
    made = engine.create(ctx, RunOptions(image="busybox", name="x"), runtime=rt)
    from storage import rootfs

    removed: list[str] = []

    def remove_layer(ctx: Context, runner: Any, cid: str) -> bool:
        rt.discard(ctx, cid)
        removed.append(cid)
        return True

    monkeypatch.setattr(rootfs, "remove", remove_layer)
    assert engine.remove(ctx, "x") == made.id and removed == [made.id]
    assert engine.containers(ctx) == [] and engine.prune(ctx) == []


def test_the_engine_prints_nothing(ctx: Context, capsys: pytest.CaptureFixture[str]) -> None:
    store_image(ctx)
    rt = FakeRuntime()
    engine.run_detached(ctx, RunOptions(image="busybox"), runtime=rt)
    engine.containers(ctx)
    engine.images(ctx)
    out, err = capsys.readouterr()
    assert out == "" and err == ""
