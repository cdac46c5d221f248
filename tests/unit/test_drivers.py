"""Storage drivers without privileges: the probe's decision logic and record, the vfs
apply rules (whiteouts, opaque directories, hard links, replacements), and the container
layer's life cycle through storage.rootfs with a LocalRunner."""

from __future__ import annotations

import io
import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from rootless.config import Config
from rootless.context import Context, Log
from rootless.errors import NotFoundError, RootlessError, StorageError
from rootless.layout import Layout
from rootless.spec import RootfsPlan
from storage import rootfs
from storage.drivers import ContainerDirs, LayerDir, check_container_id, get, mount_option_problem, probe
from storage.drivers import fuse_overlayfs as fo
from storage.drivers.vfs import build
from storage.images import ImageRecord, LayerEntry
from storage.nsrunner import LocalRunner

# --------------------------------------------------------------------------- helpers


def _ctx(tmp_path: Path, driver: str | None = None, level: int = 30) -> Context:
    layout = Layout(root=tmp_path / "store", runroot=tmp_path / "run")
    layout.ensure_store()
    return Context(config=Config(storage_driver=driver), layout=layout,
                   log=Log(level=level, stream=io.StringIO()))


def _warnings(ctx: Context) -> str:
    return ctx.log.stream.getvalue()  # type: ignore[attr-defined,no-any-return]


def _whiteout(path: Path) -> None:
    try:
        os.mknod(path, stat.S_IFCHR | 0o600, os.makedev(0, 0))
    except PermissionError:
        pytest.skip("this kernel refuses unprivileged whiteout devices (Linux < 5.8)")


def _xattr(path: Path, name: str, value: bytes) -> None:
    try:
        os.setxattr(path, name, value)
    except OSError as e:
        pytest.skip(f"user xattrs are not supported here: {e.strerror}")


class CountingRunner(LocalRunner):
    def __init__(self, tree_format: str = "overlay") -> None:
        self.calls: list[str] = []
        self.tree_format = tree_format

    def call(self, func: str, **kwargs: Any) -> Any:
        self.calls.append(func)
        result = super().call(func, **kwargs)
        if func.endswith(":make_tree"):
            return {"format": self.tree_format, "reason": "mknod a 0:0 character device: EPERM"}
        return result


@pytest.fixture
def fuse_ok(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fo, "find_program", lambda: "/usr/bin/fuse-overlayfs")
    monkeypatch.setattr(fo, "fuse_problem", lambda device=fo.FUSE_DEVICE: None)


@pytest.fixture
def no_fuse(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fo, "find_program", lambda: None)


class FakeProbe:
    """A MountProbe answering from a table; records the plans it was given."""

    def __init__(self, answers: dict[str, str | None]) -> None:
        self.answers = answers
        self.plans: list[RootfsPlan] = []

    def __call__(self, plan: RootfsPlan, check: str) -> str | None:
        assert check == probe.CHECK
        self.plans.append(plan)
        return self.answers[plan.driver]


# --------------------------------------------------------------------------- decision


@pytest.mark.parametrize(("results", "driver", "failures"), [
    ({"overlay": None}, "overlay", ()),
    ({"overlay": None, "fuse-overlayfs": None}, "overlay", ()),
    ({"overlay": "EPERM", "fuse-overlayfs": None}, "fuse-overlayfs", (("overlay", "EPERM"),)),
    ({"overlay": "EPERM", "fuse-overlayfs": "no /dev/fuse"}, "vfs",
     (("overlay", "EPERM"), ("fuse-overlayfs", "no /dev/fuse"))),
    ({}, "vfs", (("overlay", "not tried"), ("fuse-overlayfs", "not tried"))),
])
def test_decide(results: dict[str, str | None], driver: str, failures: tuple[tuple[str, str], ...]) -> None:
    assert probe.decide(results) == (driver, failures)


def test_fallback_messages_say_what_is_lost_and_how_to_get_it_back(tmp_path: Path) -> None:
    layout = Layout(root=tmp_path, runroot=tmp_path)
    fuse, hint = probe.lost((("overlay", "mount: EPERM"),), "fuse-overlayfs", layout)
    assert "mount: EPERM" in fuse and "slower" in fuse and "5.11" in hint
    assert "rootless system migrate" in hint and "driver.json" not in hint
    vfs, hint = probe.lost((("overlay", "x"), ("fuse-overlayfs", "not installed")), "vfs", layout)
    assert "copies the whole image" in vfs and "install fuse-overlayfs" in hint and "not installed" in vfs
    assert "\n" not in fuse + vfs and len(fuse) < 200 and len(vfs) < 200


# --------------------------------------------------------------------------- selection and record


def test_probe_records_and_later_runs_do_not_probe(tmp_path: Path, fuse_ok: None) -> None:
    ctx = _ctx(tmp_path)
    runner = CountingRunner()
    fake = FakeProbe({"overlay": None})
    choice = probe.select(ctx, runner, mount_probe=fake)
    assert (choice.driver, choice.source) == ("overlay", "probe")
    assert [p.driver for p in fake.plans] == ["overlay"]
    plan = fake.plans[0]
    # the probe's tree: the layer with the whiteout and opaque dir is the upper of the two
    assert plan.lower[0].endswith("/l2") and plan.lower[1].endswith("/l1")
    record = json.loads((ctx.layout.root / "driver.json").read_text())
    assert record["driver"] == "overlay" and record["kernel"] == os.uname().release
    assert runner.calls[0] == "storage.drivers.probe:make_tree"
    assert runner.calls[-1] == "storage.layers:remove_tree"
    assert not [n for n in os.listdir(ctx.layout.tmp) if "probe" in n]
    assert not [n for n in os.listdir(ctx.layout.locks) if n.startswith("tmp-")]

    again = probe.select(ctx, CountingRunner(), mount_probe=FakeProbe({}))  # would KeyError if asked
    assert (again.driver, again.source) == ("overlay", "recorded")
    assert _warnings(ctx) == ""


def test_fallback_to_fuse_overlayfs_warns_once(tmp_path: Path, fuse_ok: None) -> None:
    ctx = _ctx(tmp_path)
    fake = FakeProbe({"overlay": "mount overlay: Operation not permitted", "fuse-overlayfs": None})
    choice = probe.select(ctx, CountingRunner(), mount_probe=fake)
    assert choice.driver == "fuse-overlayfs" and choice.fallback
    assert [p.driver for p in fake.plans] == ["overlay", "fuse-overlayfs"]
    # each union driver gets its own upper/work/target
    assert len({p.upper for p in fake.plans}) == 2 and len({p.target for p in fake.plans}) == 2
    probe.select(ctx, CountingRunner(), mount_probe=fake)  # recorded now; same command: no repeat
    out = _warnings(ctx)
    assert out.count("Warning:") == 1 and "Operation not permitted" in out and "fuse-overlayfs" in out


def test_recorded_fallback_warns_once_per_store(tmp_path: Path, no_fuse: None) -> None:
    ctx = _ctx(tmp_path)
    ctx.log.store = ctx.layout
    probe.select(ctx, CountingRunner(), mount_probe=FakeProbe({"overlay": "EPERM"}))
    assert "using vfs" in _warnings(ctx)
    later = _ctx(tmp_path)  # a new command: a new log, the same store
    later.log.store = later.layout
    choice = probe.select(later, CountingRunner(), mount_probe=FakeProbe({}))
    assert (choice.driver, choice.source) == ("vfs", "recorded")
    assert _warnings(later) == ""
    other = _ctx(tmp_path / "other")  # another store says it again
    other.log.store = other.layout
    probe.select(other, CountingRunner(), mount_probe=FakeProbe({"overlay": "EPERM"}))
    assert "fuse-overlayfs is not installed" in _warnings(other) and "Hint: " in _warnings(other)


def test_a_recorded_fuse_overlayfs_whose_dev_fuse_went_away_names_cause_and_fix(
        tmp_path: Path, fuse_ok: None, monkeypatch: pytest.MonkeyPatch) -> None:
    ctx = _ctx(tmp_path)
    probe.select(ctx, CountingRunner(), mount_probe=FakeProbe({"overlay": "EPERM", "fuse-overlayfs": None}))
    monkeypatch.setattr(fo, "fuse_problem", lambda device=fo.FUSE_DEVICE: "open /dev/fuse: Permission denied")
    with pytest.raises(RootlessError) as e:
        probe.select(_ctx(tmp_path), CountingRunner(), mount_probe=FakeProbe({}))
    assert "fuse-overlayfs" in e.value.message and "open /dev/fuse: Permission denied" in e.value.message
    assert e.value.hint and "modprobe fuse" in e.value.hint and "rootless system migrate" in e.value.hint


def test_fuse_overlayfs_without_program_is_not_mounted(tmp_path: Path, no_fuse: None) -> None:
    ctx = _ctx(tmp_path)
    fake = FakeProbe({"overlay": "EPERM"})
    choice = probe.select(ctx, CountingRunner(), mount_probe=fake)
    assert choice.driver == "vfs"
    assert [p.driver for p in fake.plans] == ["overlay"]
    assert dict(choice.failures)["fuse-overlayfs"] == "fuse-overlayfs is not installed"


def test_no_whiteout_devices_rules_out_kernel_overlay(tmp_path: Path, fuse_ok: None) -> None:
    ctx = _ctx(tmp_path)
    fake = FakeProbe({"fuse-overlayfs": None})
    choice = probe.select(ctx, CountingRunner(tree_format="aufs"), mount_probe=fake)
    assert choice.driver == "fuse-overlayfs"
    assert "whiteouts cannot be made in the store: mknod" in dict(choice.failures)["overlay"]
    assert [p.driver for p in fake.plans] == ["fuse-overlayfs"]


def test_a_raising_mount_probe_counts_as_a_failure(tmp_path: Path, no_fuse: None) -> None:
    ctx = _ctx(tmp_path)

    def boom(plan: RootfsPlan, check: str) -> str | None:
        raise StorageError("newuidmap failed")

    choice = probe.select(ctx, CountingRunner(), mount_probe=boom)
    assert choice.driver == "vfs" and dict(choice.failures)["overlay"] == "newuidmap failed"


def test_precedence_flag_config_record(tmp_path: Path, fuse_ok: None) -> None:
    ctx = _ctx(tmp_path, driver="vfs")
    never = FakeProbe({})
    flag = probe.select(ctx, CountingRunner(), "fuse-overlayfs", never)
    assert flag == probe.Choice("fuse-overlayfs", "flag")
    assert probe.select(ctx, CountingRunner(), None, never) == probe.Choice("vfs", "config")
    assert never.plans == [] and not (ctx.layout.root / "driver.json").exists()
    plain = _ctx(tmp_path)
    probe.write_record(plain.layout, probe.Choice("fuse-overlayfs", "probe"), {"fuse-overlayfs": None})
    assert probe.select(plain, CountingRunner(), None, never).driver == "fuse-overlayfs"
    assert probe.select(plain, CountingRunner(), "overlay", never).driver == "overlay"


def test_a_new_kernel_is_probed_again(tmp_path: Path, fuse_ok: None) -> None:
    ctx = _ctx(tmp_path)
    (ctx.layout.root / "driver.json").write_text(json.dumps({"driver": "vfs", "kernel": "4.19.0-old"}))
    fake = FakeProbe({"overlay": None})
    assert probe.select(ctx, CountingRunner(), mount_probe=fake).source == "probe"
    assert json.loads((ctx.layout.root / "driver.json").read_text())["driver"] == "overlay"


def test_unreadable_record_is_probed_again(tmp_path: Path, fuse_ok: None) -> None:
    ctx = _ctx(tmp_path)
    (ctx.layout.root / "driver.json").write_text("{not json")
    assert probe.select(ctx, CountingRunner(), mount_probe=FakeProbe({"overlay": None})).driver == "overlay"
    probe.forget(ctx.layout)
    assert not (ctx.layout.root / "driver.json").exists()


def test_requested_fuse_overlayfs_without_program_is_an_error(tmp_path: Path, no_fuse: None) -> None:
    ctx = _ctx(tmp_path)
    with pytest.raises(StorageError, match="--storage-driver.*not installed") as e:
        probe.select(ctx, CountingRunner(), "fuse-overlayfs")
    assert e.value.hint and "apt-get install fuse-overlayfs" in e.value.hint
    with pytest.raises(StorageError, match=r"\[storage\] driver"):
        probe.select(_ctx(tmp_path, driver="fuse-overlayfs"), CountingRunner())


def test_no_record_and_no_probe_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="no storage driver is recorded"):
        probe.select(_ctx(tmp_path), CountingRunner())


def test_unknown_driver() -> None:
    with pytest.raises(StorageError, match="unknown storage driver 'btrfs'"):
        get("btrfs")


def test_check_merged_on_a_hand_made_union(tmp_path: Path) -> None:
    # what a correct union looks like, built by hand: check_merged accepts it and writes
    (tmp_path / "opq").mkdir()
    (tmp_path / "keep").write_text("upper\n")
    (tmp_path / "opq/new").write_text("new\n")
    probe.check_merged(str(tmp_path))
    assert sorted(os.listdir(tmp_path)) == ["made", "opq", "written"]
    (tmp_path / "keep").write_text("upper\n")
    (tmp_path / "gone").write_text("whiteout ignored\n")
    with pytest.raises(StorageError, match="ignores a whiteout"):
        probe.check_merged(str(tmp_path))


# --------------------------------------------------------------------------- vfs apply rules


def _layers(tmp_path: Path) -> list[Path]:
    """Three layers: base; overlay-format changes; aufs-format changes."""
    l1, l2, l3 = (tmp_path / n for n in ("l1", "l2", "l3"))
    for d in (l1, l2, l3):
        d.mkdir()
    # --- l1: the base
    for name in ("a", "opq", "opq/sub", "dir_to_file", "xd", "aopq", "aopq/sub"):
        (l1 / name).mkdir()
    (l1 / "a/file1").write_text("a1\n")
    (l1 / "keep").write_text("lower\n")
    (l1 / "gone").write_text("whited out\n")
    (l1 / "gonedir").mkdir()
    (l1 / "gonedir/inner").write_text("x\n")
    (l1 / "opq/old").write_text("old\n")
    (l1 / "opq/sub/old2").write_text("old2\n")
    (l1 / "dir_to_file/x").write_text("x\n")
    (l1 / "file_to_dir").write_text("file\n")
    (l1 / "aopq/old").write_text("old\n")
    (l1 / "hl1").write_text("linked\n")
    os.link(l1 / "hl1", l1 / "hl2")
    (l1 / "hl3").write_text("linked too\n")
    os.link(l1 / "hl3", l1 / "a/hl4")
    os.symlink("keep", l1 / "sym")
    os.symlink("/nowhere", l1 / "dangling")
    (l1 / "suid").write_text("#!/bin/sh\n")
    os.chmod(l1 / "suid", 0o4755)
    os.mkfifo(l1 / "fifo")
    _xattr(l1 / "xd", "user.lower", b"1")
    (l1 / "xd/f").write_text("f\n")
    os.utime(l1 / "keep", ns=(1_000_000_000, 1_500_000_000_000_000_000))
    # --- l2: overlay format
    (l2 / "keep").write_text("upper\n")
    _whiteout(l2 / "gone")
    _whiteout(l2 / "gonedir")
    (l2 / "opq").mkdir()
    _xattr(l2 / "opq", "user.overlay.opaque", b"y")
    (l2 / "opq/new").write_text("new\n")
    (l2 / "dir_to_file").write_text("now a file\n")
    (l2 / "file_to_dir").mkdir()
    (l2 / "file_to_dir/inside").write_text("inside\n")
    (l2 / "a").mkdir()
    (l2 / "a/file2").write_text("a2\n")
    os.chmod(l2 / "a", 0o750)
    (l2 / "xd").mkdir()
    _xattr(l2 / "xd", "user.upper", b"2")
    # --- l3: aufs format
    (l3 / ".wh.hl1").write_text("")
    (l3 / "aopq").mkdir()
    (l3 / "aopq/.wh..wh..opq").write_text("")
    (l3 / "aopq/fresh").write_text("fresh\n")
    (l3 / "a").mkdir()
    os.chmod(l3 / "a", 0o750)
    (l3 / "a/.wh.file1").write_text("")
    (l3 / ".wh..").write_text("")  # hostile: must not empty the root
    return [l1, l2, l3]


def _tree(root: Path) -> dict[str, str]:
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for n in dirnames + filenames:
            p = Path(dirpath) / n
            rel = str(p.relative_to(root))
            st = os.lstat(p)
            if stat.S_ISLNK(st.st_mode):
                out[rel] = "-> " + os.readlink(p)
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = "dir"
            elif stat.S_ISREG(st.st_mode):
                out[rel] = p.read_text()
            else:
                out[rel] = f"type {stat.S_IFMT(st.st_mode):o}"
    return out


def test_vfs_applies_layers_like_overlayfs(tmp_path: Path) -> None:
    layers = _layers(tmp_path)
    dest = tmp_path / "rootfs"
    stats = LocalRunner().call("storage.drivers.vfs:build", layers=[str(p) for p in layers], dest=str(dest))
    assert _tree(dest) == {
        "a": "dir", "a/file2": "a2\n", "a/hl4": "linked too\n",
        "keep": "upper\n",
        "opq": "dir", "opq/new": "new\n",
        "dir_to_file": "now a file\n",
        "file_to_dir": "dir", "file_to_dir/inside": "inside\n",
        "aopq": "dir", "aopq/fresh": "fresh\n",
        "hl2": "linked\n", "hl3": "linked too\n",
        "sym": "-> keep", "dangling": "-> /nowhere",
        "suid": "#!/bin/sh\n", "fifo": f"type {stat.S_IFIFO:o}",
        "xd": "dir", "xd/f": "f\n",
    }
    assert stats["whiteouts"] == 4 and stats["opaque"] == 2 and stats["links"] == 2


def test_vfs_keeps_attributes_and_links(tmp_path: Path) -> None:
    layers = _layers(tmp_path)
    dest = tmp_path / "rootfs"
    build([str(p) for p in layers], str(dest))
    # hard links within a layer stay links, across directories too
    assert os.stat(dest / "hl3").st_ino == os.stat(dest / "a/hl4").st_ino
    assert os.stat(dest / "hl3").st_nlink == 2
    # ...and the copy shares no inode with the layer (a write must not reach the store)
    assert os.stat(dest / "hl3").st_ino != os.stat(layers[0] / "hl3").st_ino
    assert stat.S_IMODE(os.stat(dest / "suid").st_mode) == 0o4755
    assert stat.S_IMODE(os.stat(dest / "a").st_mode) == 0o750  # the upper-most directory's mode
    assert os.stat(dest / "keep").st_mtime_ns == os.stat(layers[1] / "keep").st_mtime_ns
    assert os.stat(dest / "xd").st_mtime_ns == os.stat(layers[1] / "xd").st_mtime_ns
    # a merged directory carries only the upper-most copy's xattrs; overlay's own are dropped
    assert [n for n in os.listxattr(dest / "xd") if n.startswith("user.")] == ["user.upper"]
    assert [n for n in os.listxattr(dest / "opq") if n.startswith("user.")] == []


def test_vfs_never_follows_symlinks_out(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "precious").write_text("keep me\n")
    l1, l2 = tmp_path / "l1", tmp_path / "l2"
    l1.mkdir()
    l2.mkdir()
    os.symlink(str(outside), l1 / "escape")
    (l2 / "escape").mkdir()  # replaces the symlink with a directory
    (l2 / "escape/precious").write_text("overwritten?\n")
    (l2 / ".wh.x").write_text("")
    build([str(l1), str(l2)], str(tmp_path / "rootfs"))
    assert (outside / "precious").read_text() == "keep me\n"
    assert (tmp_path / "rootfs/escape/precious").read_text() == "overwritten?\n"
    assert not (tmp_path / "rootfs/escape").is_symlink()


def test_vfs_build_refuses_an_existing_destination(tmp_path: Path) -> None:
    (tmp_path / "rootfs").mkdir()
    with pytest.raises(StorageError, match="create .*rootfs"):
        build([], str(tmp_path / "rootfs"))


# --------------------------------------------------------------------------- rootfs.prepare / remove


def _store_layer(layout: Layout, n: int, fmt: str = "overlay") -> tuple[str, Path]:
    diff_id = "sha256:" + f"{n:x}" * 64
    d = layout.layer(diff_id)
    (d / "diff").mkdir(parents=True)
    (d / "meta.json").write_text(json.dumps({"diff_id": diff_id, "whiteout_format": fmt}))
    return diff_id, d / "diff"


def _image(*diff_ids: str) -> ImageRecord:
    blob = "sha256:" + "0" * 64
    return ImageRecord(id="c" * 64, layers=tuple(LayerEntry(blob, d, "tar", 1) for d in diff_ids))


@pytest.fixture
def two_layers(tmp_path: Path) -> tuple[Context, ImageRecord, list[Path]]:
    ctx = _ctx(tmp_path, level=30)
    a, pa = _store_layer(ctx.layout, 1)
    b, pb = _store_layer(ctx.layout, 2)
    (pa / "etc").mkdir()
    (pa / "etc/os-release").write_text("base\n")
    (pb / "etc").mkdir()
    (pb / "etc/os-release").write_text("top\n")
    os.chmod(pb, 0o751)
    return ctx, _image(a, b), [pa, pb]


def test_prepare_overlay_plan(two_layers: tuple[Context, ImageRecord, list[Path]]) -> None:
    ctx, image, (pa, pb) = two_layers
    plan = rootfs.prepare(ctx, CountingRunner(), image, "c1", driver="overlay")
    dirs = ContainerDirs.of(ctx.layout, "c1")
    assert plan == RootfsPlan(driver="overlay", target=str(dirs.merged), lower=(str(pb), str(pa)),
                              upper=str(dirs.upper), work=str(dirs.work))
    # the container's / shows the top layer's root attributes, and the umask did not narrow them
    assert stat.S_IMODE(os.stat(dirs.upper).st_mode) == 0o751
    assert os.listdir(dirs.upper) == [] and os.listdir(dirs.work) == []
    rec = json.loads(dirs.record.read_text())
    assert rec["driver"] == "overlay" and rec["layers"] == list(image.diff_ids) and rec["image"] == image.id
    assert rootfs.in_use(ctx) == {"c1": rec}


def test_prepare_vfs_and_remove(two_layers: tuple[Context, ImageRecord, list[Path]]) -> None:
    ctx, image, _ = two_layers
    plan = rootfs.prepare(ctx, CountingRunner(), image, "c2", driver="vfs")
    assert plan.driver == "vfs" and plan.lower == () and plan.upper is None
    assert Path(plan.target, "etc/os-release").read_text() == "top\n"
    # what overlayfs leaves behind: work/work with mode 0 must not stop the removal
    dirs = ContainerDirs.of(ctx.layout, "c2")
    (dirs.root / "work/work").mkdir(parents=True)
    os.chmod(dirs.root / "work/work", 0)
    os.chmod(Path(plan.target, "etc"), 0o555)
    runner = CountingRunner()
    assert rootfs.remove(ctx, runner, "c2") is True
    assert os.listdir(ctx.layout.containers) == []
    assert [n for n in os.listdir(ctx.layout.tmp)] == []
    assert [n for n in os.listdir(ctx.layout.locks) if n.startswith("tmp-")] == []
    assert runner.calls == []  # the user could remove it alone: no namespace worker needed
    assert rootfs.remove(ctx, runner, "c2") is False


def test_remove_falls_back_to_the_namespace(two_layers: tuple[Context, ImageRecord, list[Path]],
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    ctx, image, _ = two_layers
    rootfs.prepare(ctx, CountingRunner(), image, "c3", driver="overlay")

    def refuse(path: str) -> None:
        raise PermissionError(13, "Permission denied", path)

    monkeypatch.setattr(rootfs, "_remove_as_user", refuse)
    runner = CountingRunner()
    assert rootfs.remove(ctx, runner, "c3")
    assert runner.calls == ["storage.layers:remove_tree"]
    assert os.listdir(ctx.layout.containers) == []


def test_prepare_twice_and_bad_ids(two_layers: tuple[Context, ImageRecord, list[Path]]) -> None:
    ctx, image, _ = two_layers
    rootfs.prepare(ctx, CountingRunner(), image, "same", driver="vfs")
    with pytest.raises(StorageError, match="already has a layer"):
        rootfs.prepare(ctx, CountingRunner(), image, "same", driver="vfs")
    for bad in ("../x", "a/b", "", ".hidden", "x" * 200, "x" * 129, "ab\n", "a\0b", "é"):
        with pytest.raises(StorageError, match="invalid container ID"):
            check_container_id(bad)
    for good in ("a", "0" * 64, "web-1_a.b", "A" + "x" * 127):
        assert check_container_id(good) == good


def test_prepare_durable_or_not(two_layers: tuple[Context, ImageRecord, list[Path]],
                                monkeypatch: pytest.MonkeyPatch) -> None:
    ctx, image, _ = two_layers
    synced: list[int] = []
    real = os.fsync

    def fsync(fd: int) -> None:
        synced.append(fd)
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    rootfs.prepare(ctx, CountingRunner(), image, "brief", driver="vfs", durable=False)
    assert synced == []  # a foreground `run --rm`: the record need not outlive a crash
    rootfs.prepare(ctx, CountingRunner(), image, "kept", driver="vfs")
    assert len(synced) == 2  # the record and its directory
    assert json.loads((ctx.layout.containers / "brief" / "rootfs.json").read_text())["id"] == "brief"


def test_prepare_missing_layer(tmp_path: Path) -> None:
    ctx = _ctx(tmp_path)
    with pytest.raises(NotFoundError, match="is not in the store"):
        rootfs.prepare(ctx, CountingRunner(), _image("sha256:" + "9" * 64), "c4", driver="vfs")
    assert os.listdir(ctx.layout.containers) == [] if ctx.layout.containers.exists() else True


def test_failed_prepare_leaves_nothing(two_layers: tuple[Context, ImageRecord, list[Path]],
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    ctx, image, _ = two_layers

    def broken(layers: list[str], dest: str) -> dict[str, int]:
        os.mkdir(dest)
        Path(dest, "half").write_text("")
        raise StorageError("disk full (simulated)")

    monkeypatch.setattr("storage.drivers.vfs.build", broken)
    with pytest.raises(StorageError, match="simulated"):
        rootfs.prepare(ctx, CountingRunner(), image, "c5", driver="vfs")
    assert os.listdir(ctx.layout.containers) == []


def test_aufs_layers_and_kernel_overlay(two_layers: tuple[Context, ImageRecord, list[Path]],
                                        fuse_ok: None) -> None:
    ctx, _, _ = two_layers
    a, _ = _store_layer(ctx.layout, 3, fmt="aufs")
    image = _image(a)
    with pytest.raises(StorageError, match="aufs .wh. files") as e:
        rootfs.prepare(ctx, CountingRunner(), image, "c6", driver="overlay")
    assert e.value.hint and "--storage-driver" in e.value.hint
    # chosen by the probe, not by the user: the next driver that reads them, said once
    probe.write_record(ctx.layout, probe.Choice("overlay", "probe"), {"overlay": None})
    plan = rootfs.prepare(ctx, CountingRunner(), image, "c7")
    assert plan.driver == "fuse-overlayfs"
    assert "cannot use this image" in _warnings(ctx)


def test_image_without_layers_gets_an_empty_lower(tmp_path: Path) -> None:
    ctx = _ctx(tmp_path)
    plan = rootfs.prepare(ctx, CountingRunner(), _image(), "c8", driver="overlay")
    assert plan.lower == (str(ContainerDirs.of(ctx.layout, "c8").empty),)


def test_mount_option_problem() -> None:
    assert mount_option_problem(["/home/u/.local/share/rootless/storage/layers/ab/diff"]) is None
    assert "':'" in (mount_option_problem(["/data/a:b/layers"]) or "")
    assert "','" in (mount_option_problem(["/data/a,b"]) or "")


def test_layer_dir_is_data() -> None:
    layer = LayerDir("sha256:" + "a" * 64, "/x", "overlay")
    with pytest.raises(AttributeError):
        layer.path = "/y"  # type: ignore[misc]
