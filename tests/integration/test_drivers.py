"""The storage driver conformance suite: the same assertions for overlay, fuse-overlayfs and vfs.

test/multilayer (tests/testimages.py) is pulled with the real `rootless pull`; for each
driver storage.rootfs.prepare makes a container layer, tests/integration/mountplan.py
mounts it in a fresh user+mount namespace mapped like the store (as the runtime's child
will) and reports what the container sees, before and after the container writes.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from rootless.config import Config
from rootless.context import Context, Log
from rootless.layout import Layout
from rootless.runtime.userns import StoreNamespace
from rootless.spec import RootfsPlan
from storage import rootfs
from storage.drivers import get
from storage.drivers import probe as driver_probe
from storage.images import ImageStore
from tests.integration import mountplan
from tests.integration.conftest import TestImages, need
from tests.integration.harness import RootlessEnv

DRIVERS = ["overlay", "fuse-overlayfs", "vfs"]
# Kernel overlayfs cannot keep hard links together on copy-up without ``index``, which an
# unprivileged mount may not use; fuse-overlayfs and a plain copy can.
LINKS_SURVIVE_WRITES = {"overlay": False, "fuse-overlayfs": True, "vfs": True}
IMAGE = "test/multilayer"


@dataclass
class Store:
    env: RootlessEnv
    ctx: Context
    runner: StoreNamespace
    record: Any
    inspect: dict[str, Any]


@dataclass
class Run:
    driver: str
    plan: RootfsPlan
    dirs: Path
    before: dict[str, Any]
    after: dict[str, Any]
    remounted: dict[str, Any]
    upper_after: dict[str, Any] = field(default_factory=dict)
    lower_after: dict[str, str | None] = field(default_factory=dict)
    containers_left: list[str] = field(default_factory=list)
    tmp_left: list[str] = field(default_factory=list)


def _ctx(env: RootlessEnv) -> Context:
    return Context(config=Config(), layout=Layout(root=env.store, runroot=env.runroot), log=Log(level=40))


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory, rootless_config_text: str,
          images: TestImages) -> Iterator[Store]:
    images.require(f"{IMAGE}:latest")
    env = RootlessEnv(tmp_path_factory.mktemp("drivers"), rootless_config_text)
    image_id = env("pull", "-q", IMAGE, check=True).stdout.split()[-1]
    ctx = _ctx(env)
    record = ImageStore(ctx.layout).lookup(image_id)
    assert record is not None
    with StoreNamespace(ctx.layout, ctx.log) as runner:
        yield Store(env, ctx, runner, record, env.inspect(IMAGE))
    env.kill_leftovers()
    import subprocess

    subprocess.run([*env.command, "unshare", "rm", "-rf", str(env.store)], env=env.env,
                   stdin=subprocess.DEVNULL, capture_output=True, timeout=120)


def _host_facts(runner: StoreNamespace, path: Path) -> dict[str, Any]:
    """The container layer as the host sees it (read as namespace-root: the files belong
    to the user's subordinate IDs)."""
    return runner.call("tests.integration.mountplan:inspect", target=str(path))  # type: ignore[no-any-return]


@pytest.fixture(scope="module", params=DRIVERS)
def run(request: pytest.FixtureRequest, store: Store) -> Run:
    name = request.param
    why = get(name).unavailable()
    need(why is None, f"{name}: {why}")
    cid = f"conformance-{name}"
    plan = rootfs.prepare(store.ctx, store.runner, store.record, cid, driver=name)
    cdir = store.ctx.layout.containers / cid
    before = mountplan.run_in_plan(plan, "tests.integration.mountplan:inspect")
    after = mountplan.run_in_plan(plan, "tests.integration.mountplan:mutate")
    remounted = mountplan.run_in_plan(plan, "tests.integration.mountplan:inspect")
    result = Run(name, plan, cdir, before, after, remounted)
    result.upper_after = _host_facts(store.runner, Path(plan.upper or plan.target))
    # the lower layers, straight from the store: the container must not have changed them
    for rel in ("data/keep.txt", "data/added.txt", "opq/new", "owned/dir1000/inner", "links/target.txt"):
        found = None
        for diff_id in store.record.diff_ids:
            p = store.ctx.layout.layer(diff_id) / "diff" / rel
            found = store.runner.call("tests.integration.mountplan:read_text", path=str(p)) or found
        result.lower_after[rel] = found
    assert rootfs.remove(store.ctx, store.runner, cid) is True
    result.containers_left = sorted(os.listdir(store.ctx.layout.containers))
    result.tmp_left = sorted(n for n in os.listdir(store.ctx.layout.tmp) if "container" in n)
    return result


# --------------------------------------------------------------------------- the plan


def test_plan_shape(run: Run, store: Store) -> None:
    plan = run.plan
    assert plan.driver == run.driver
    diff_dirs = [str(store.ctx.layout.layer(d) / "diff") for d in store.record.diff_ids]
    if run.driver == "vfs":
        assert plan.target == str(run.dirs / "rootfs") and plan.lower == () and plan.upper is None
    else:
        # overlayfs(5): the first lowerdir is the top-most layer
        assert plan.lower == tuple(reversed(diff_dirs))
        assert (plan.upper, plan.work, plan.target) == (str(run.dirs / "upper"), str(run.dirs / "work"),
                                                        str(run.dirs / "merged"))


# --------------------------------------------------------------------------- what the container sees


def test_layer_order(run: Run) -> None:
    assert run.before["data/keep.txt"]["content"] == "upper version\n"
    assert run.before["data/added.txt"]["content"] == "added in layer 3\n"
    assert run.before["etc/passwd"]["content"].startswith("root:x:0:0:")
    assert run.before["emptydir"]["type"] == stat.S_IFDIR


def test_whiteouts(run: Run) -> None:
    assert run.before["data/removed.txt"] is None
    assert "removed.txt" not in run.before["data"]["entries"]
    assert not any(e.startswith(".wh.") for e in run.before["data"]["entries"])


def test_opaque_directory(run: Run) -> None:
    assert run.before["opq"]["entries"] == ["new"]
    assert run.before["opq/old1"] is None and run.before["opq/sub"] is None
    assert run.before["opq/new"]["content"] == "only file left in opq\n"


def test_hardlinks(run: Run) -> None:
    target, hard = run.before["links/target.txt"], run.before["links/hard"]
    assert target["ino"] == hard["ino"] and target["nlink"] == hard["nlink"] == 2
    after_t, after_h = run.after["links/target.txt"], run.after["links/hard"]
    assert after_t["content"] == "link target\nthrough one name\n"
    if LINKS_SURVIVE_WRITES[run.driver]:
        assert after_h["content"] == after_t["content"] and after_h["ino"] == after_t["ino"]
    else:
        assert after_h["content"] == "link target\n"


def test_symlinks(run: Run) -> None:
    assert run.before["links/rel"]["link"] == "target.txt"
    assert run.before["links/abs"]["link"] == "/links/target.txt"
    assert run.before["links/dangling"]["link"] == "/nonexistent/file"


def test_ownership(run: Run, store: Store) -> None:
    b = run.before
    assert (b["owned/user1000"]["uid"], b["owned/user1000"]["gid"]) == (1000, 1000)
    assert (b["owned/nobody"]["uid"], b["owned/nobody"]["gid"]) == (65534, 65534)
    assert (b["owned/dir1000"]["uid"], b["owned/dir1000"]["mode"]) == (1000, 0o750)
    assert (b["home/user"]["uid"], b["home/user"]["gid"]) == (1000, 1000)
    assert (b["etc/passwd"]["uid"], b["bin/busybox"]["uid"]) == (0, 0)
    assert (b["/"]["uid"], b["/"]["gid"], b["/"]["mode"]) == (0, 0, 0o755)


def test_modes_and_special_files(run: Run) -> None:
    b = run.before
    assert b["usr/local/bin/suid"]["mode"] == 0o4755
    assert b["usr/local/bin/sgid"]["mode"] == 0o2755 and b["usr/local/bin/sgid"]["gid"] == 50
    assert b["owned/user1000"]["mode"] == 0o640
    assert b["sticky"]["mode"] == 0o1777
    assert b["data/fifo"]["type"] == stat.S_IFIFO
    assert b["dev/mynull"] is None  # devices are never unpacked: the runtime binds the host's
    assert b["xattr/file"]["xattrs"] == {"user.test": "hello"}


# --------------------------------------------------------------------------- what the container does


def test_writes_and_deletes_are_visible(run: Run) -> None:
    for view in (run.after, run.remounted):  # and they persist in the container layer
        assert view["newfile"]["content"] == "written in the container\n"
        assert (view["newfile"]["uid"], view["newfile"]["gid"]) == (1000, 1000)
        assert view["data/keep.txt"]["content"] == "upper version\nappended\n"
        assert view["data/added.txt"] is None
        assert view["opq/new"] is None and view["opq"]["entries"] == []
        assert view["owned/dir1000"] is None
        assert view["newdir"]["type"] == stat.S_IFDIR


def test_writes_go_to_the_container_layer(run: Run) -> None:
    up = run.upper_after
    assert up["newfile"]["content"] == "written in the container\n"
    assert up["data/keep.txt"]["content"] == "upper version\nappended\n"
    if run.driver != "vfs":
        # deletions of lower files are whiteouts in the upper dir (0:0 devices)
        for rel in ("data/added.txt", "opq/new", "owned/dir1000"):
            assert up[rel] is not None and up[rel]["type"] == stat.S_IFCHR and up[rel]["rdev"] == 0, rel
        assert up["etc/passwd"] is None  # untouched files are not copied up


def test_lower_layers_untouched(run: Run) -> None:
    assert run.lower_after == {
        "data/keep.txt": "upper version\n", "data/added.txt": "added in layer 3\n",
        "opq/new": "only file left in opq\n", "owned/dir1000/inner": "inner\n",
        "links/target.txt": "link target\n",
    }


def test_remove_leaves_nothing(run: Run) -> None:
    assert run.containers_left == []
    assert run.tmp_left == []


# --------------------------------------------------------------------------- the probe, for real


def _runtime_mount_probe() -> driver_probe.MountProbe:
    """The runtime's own MountProbe (what `rootless run` passes), else the test one."""
    try:
        from rootless.runtime.run import mount_probe
    except ImportError:
        return mountplan.mount_probe
    return mount_probe


@pytest.mark.parametrize("which", ["runtime", "test"])
def test_probe_picks_kernel_overlay_and_records_it(tmp_path: Path, store: Store, which: str) -> None:
    layout = Layout(root=tmp_path / "store", runroot=tmp_path / "run")
    layout.ensure_store()
    ctx = Context(config=Config(), layout=layout, log=Log(level=40))
    mount_probe = _runtime_mount_probe() if which == "runtime" else mountplan.mount_probe
    with StoreNamespace(layout, ctx.log) as runner:
        choice = driver_probe.select(ctx, runner, mount_probe=mount_probe)
        assert (choice.driver, choice.source, choice.failures) == ("overlay", "probe", ())
        recorded = json.loads((tmp_path / "store" / "driver.json").read_text())
        assert recorded["driver"] == "overlay" and recorded["kernel"] == os.uname().release

        def must_not_probe(plan: RootfsPlan, check: str) -> str | None:
            raise AssertionError("probed again although a result is recorded")

        again = driver_probe.select(ctx, runner, mount_probe=must_not_probe)
        assert (again.driver, again.source) == ("overlay", "recorded")
        assert [n for n in os.listdir(layout.tmp) if "probe" in n] == []


def test_probe_falls_back_to_fuse_overlayfs(tmp_path: Path, store: Store) -> None:
    need(get("fuse-overlayfs").unavailable() is None, "fuse-overlayfs is not usable here")
    layout = Layout(root=tmp_path / "store", runroot=tmp_path / "run")
    layout.ensure_store()
    import io

    log = Log(level=30, stream=io.StringIO())
    ctx = Context(config=Config(), layout=layout, log=log)
    tried: list[str] = []

    def no_kernel_overlay(plan: RootfsPlan, check: str) -> str | None:
        tried.append(plan.driver)
        if plan.driver == "overlay":
            return "mount overlay: Operation not permitted (simulated)"
        return mountplan.mount_probe(plan, check)  # fuse-overlayfs for real

    with StoreNamespace(layout, ctx.log) as runner:
        choice = driver_probe.select(ctx, runner, mount_probe=no_kernel_overlay)
    assert tried == ["overlay", "fuse-overlayfs"]
    assert choice.driver == "fuse-overlayfs"
    warning = log.stream.getvalue()  # type: ignore[attr-defined]
    assert warning.count("Warning:") == 1 and "fuse-overlayfs" in warning and "rootless system migrate" in warning


# --------------------------------------------------------------------------- through `rootless run`

# What a container sees and does, in busybox sh; the output must be the same for every driver.
SCRIPT = r"""
cat /data/keep.txt
ls /opq
test -e /data/removed.txt && echo 'whiteout ignored'
stat -c '%u:%g %a %n' /owned/user1000 /owned/nobody /owned/dir1000 /usr/local/bin/suid /usr/local/bin/sgid /
stat -c %i /links/target.txt /links/hard | uniq | wc -l
echo written > /newfile && rm /data/added.txt && rm -r /owned/dir1000 && echo changed
cat /newfile; ls /data /owned
"""
EXPECTED = """upper version
new
1000:1000 640 /owned/user1000
65534:65534 644 /owned/nobody
1000:1000 750 /owned/dir1000
0:0 4755 /usr/local/bin/suid
0:50 2755 /usr/local/bin/sgid
0:0 755 /
1
changed
written
/data:
fifo
keep.txt

/owned:
huge-id
nobody
user1000
"""


@pytest.mark.parametrize("driver", DRIVERS)
def test_run_rm_with_each_driver(store: Store, driver: str) -> None:
    need(get(driver).unavailable() is None, f"{driver} is not usable here")
    cp = store.env("run", "--rm", "--storage-driver", driver, IMAGE, "sh", "-c", SCRIPT)
    assert cp.returncode == 0, cp.stderr
    assert "Warning:" not in cp.stderr  # a driver asked for by name is no fallback
    assert cp.stdout == EXPECTED
    assert os.listdir(store.ctx.layout.containers) == []
    assert [n for n in os.listdir(store.ctx.layout.tmp) if "container" in n] == []


@pytest.mark.parametrize("driver", DRIVERS)
def test_run_keeps_the_layer_without_rm(store: Store, driver: str) -> None:
    need(get(driver).unavailable() is None, f"{driver} is not usable here")
    before = set(os.listdir(store.ctx.layout.containers))
    cp = store.env("run", "--storage-driver", driver, IMAGE, "sh", "-c", "echo kept > /kept")
    assert cp.returncode == 0, cp.stderr
    new = set(os.listdir(store.ctx.layout.containers)) - before
    assert len(new) == 1
    cid = new.pop()
    record = json.loads((store.ctx.layout.containers / cid / "rootfs.json").read_text())
    assert record["driver"] == driver and record["image"] == store.record.id
    where = "rootfs" if driver == "vfs" else "upper"
    assert (store.ctx.layout.containers / cid / where / "kept").read_text() == "kept\n"
    assert rootfs.remove(store.ctx, store.runner, cid)
    assert cid not in os.listdir(store.ctx.layout.containers)


def test_first_runs_probe_once_and_record(rl: RootlessEnv) -> None:
    """Five first runs at once on a fresh store: one probe, one record, all succeed, quietly."""
    rl("pull", "-q", IMAGE, check=True)
    procs = [rl.popen("run", "--rm", IMAGE, "cat", "/data/keep.txt") for _ in range(5)]
    outs = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        outs.append((p.returncode, out, "Warning:" in err))
    assert outs == [(0, "upper version\n", False)] * 5
    record = json.loads((rl.store / "driver.json").read_text())
    assert record["driver"] == "overlay" and record["results"] == {"overlay": None}
    assert os.listdir(rl.store / "containers") == []
    assert [n for n in os.listdir(rl.store / "tmp") if n.startswith("rm-")] == []
