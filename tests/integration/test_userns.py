"""The store's user namespace, the `rootless unshare` path and doctor, as an unprivileged user."""

from __future__ import annotations

import errno
import io
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from rootless import doctor
from rootless.config import Config
from rootless.context import Context, Log
from rootless.errors import CommandNotFoundError, NotExecutableError, StorageError
from rootless.layout import Layout
from rootless.runtime import idmap
from rootless.runtime.userns import StoreNamespace, run_in_store_ns

pytestmark = pytest.mark.integration

UID, GID = os.getuid(), os.getgid()
USER = idmap.current_user()
SUBUIDS = idmap.read_subid(idmap.SUBUID, USER, UID)
SUBGIDS = idmap.read_subid(idmap.SUBGID, USER, UID)
has_ranges = pytest.mark.skipif(not (SUBUIDS and SUBGIDS), reason=f"{USER} has no subordinate ids")
WHOAMI = "rootless.runtime.nsworker:whoami"


def _rows(text: str) -> list[list[int]]:
    return [[int(x) for x in line.split()] for line in text.splitlines() if line.strip()]


@pytest.fixture
def layout(tmp_path: Path) -> Layout:
    return Layout(root=tmp_path / "store", runroot=tmp_path / "run")


@pytest.fixture
def log() -> Log:
    return Log(level=30, stream=io.StringIO())


@has_ranges
def test_worker_is_root_with_the_store_mapping(layout: Layout, log: Log) -> None:
    with StoreNamespace(layout, log, workers=1) as ns:
        me = ns.call(WHOAMI)
    assert (me["uid"], me["gid"], me["euid"], me["egid"]) == (0, 0, 0, 0)
    assert me["groups"] == []
    first = SUBUIDS[0]
    assert _rows(me["uid_map"])[:2] == [[0, UID, 1], [1, first.start, first.count]]
    assert _rows(me["gid_map"])[:2] == [[0, GID, 1], [1, SUBGIDS[0].start, SUBGIDS[0].count]]
    assert not ns.maps.single
    assert log.stream.getvalue() == ""  # type: ignore[attr-defined]


@has_ranges
def test_chown_inside_lands_on_the_subordinate_id(tmp_path: Path, layout: Layout, log: Log) -> None:
    f = tmp_path / "owned"
    f.write_text("x")
    with StoreNamespace(layout, log, workers=1) as ns:
        assert ns.call("tests.integration.nsfuncs:chown", path=str(f), uid=1000, gid=1000) == [1000, 1000]
    st = f.stat()
    assert (st.st_uid, st.st_gid) == (SUBUIDS[0].start + 999, SUBGIDS[0].start + 999)


def test_parallel_calls_use_at_most_n_workers(layout: Layout, log: Log) -> None:
    results: list[int] = []
    lock = threading.Lock()
    with StoreNamespace(layout, log, workers=3) as ns:
        def one() -> None:
            pid = ns.call("tests.integration.nsfuncs:nap", seconds=0.3)
            with lock:
                results.append(pid)

        threads = [threading.Thread(target=one) for _ in range(6)]
        started = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        took = time.monotonic() - started
    assert len(results) == 6
    assert len(set(results)) == 3
    assert took < 6 * 0.3  # ran concurrently: about two rounds of 0.3 s


def test_worker_survives_the_thread_that_started_it(layout: Layout, log: Log) -> None:
    # PR_SET_PDEATHSIG follows the forking thread: workers must not die with pool threads.
    with StoreNamespace(layout, log, workers=1) as ns:
        box: list[int] = []
        t = threading.Thread(target=lambda: box.append(ns.call(WHOAMI)["pid"]))
        t.start()
        t.join()
        time.sleep(0.1)
        assert ns.call(WHOAMI)["pid"] == box[0]


def test_killed_worker_is_a_clean_error_and_is_replaced(layout: Layout, log: Log) -> None:
    with StoreNamespace(layout, log, workers=1) as ns:
        first = ns.call(WHOAMI)["pid"]
        with pytest.raises(StorageError) as ei:
            ns.call("tests.integration.nsfuncs:die")
        assert "tests.integration.nsfuncs:die" in ei.value.message
        assert "SIGKILL" in ei.value.message
        assert ns.call(WHOAMI)["pid"] != first


def test_errors_come_back_typed(layout: Layout, log: Log) -> None:
    with StoreNamespace(layout, log, workers=1) as ns:
        with pytest.raises(StorageError) as ei:
            ns.call("tests.integration.nsfuncs:fail_storage", message="disk on fire", hint="call someone")
        assert (ei.value.message, ei.value.hint) == ("disk on fire", "call someone")
        with pytest.raises(FileNotFoundError) as oe:
            ns.call("os:stat", path="/nonexistent/x")
        assert oe.value.errno == errno.ENOENT and oe.value.filename == "/nonexistent/x"
        with pytest.raises(StorageError) as ei:
            ns.call("tests.integration.nsfuncs:fail_plain")
        assert "ValueError: not a rootless error" in ei.value.message
        with pytest.raises(StorageError):
            ns.call("no.such.module:fn")
        assert ns.call("tests.integration.nsfuncs:noisy") == "fine"
    with pytest.raises(StorageError):
        ns.call(WHOAMI)  # closed


def test_workers_die_with_the_parent(tmp_path: Path) -> None:
    script = textwrap.dedent(f"""
        import os, signal, sys
        from pathlib import Path
        from rootless.context import Log
        from rootless.layout import Layout
        from rootless.runtime.userns import StoreNamespace
        ns = StoreNamespace(Layout(Path({str(tmp_path)!r}) / "s", Path({str(tmp_path)!r}) / "r"), Log(), 2)
        print(ns.call("tests.integration.nsfuncs:nap", seconds=0), flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          cwd=Path(__file__).parents[2], timeout=30, check=False)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    worker = int(proc.stdout.strip())
    deadline = time.monotonic() + 3
    while os.path.exists(f"/proc/{worker}") and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not os.path.exists(f"/proc/{worker}")


def test_single_mapping_without_subordinate_ids(tmp_path: Path, layout: Layout, log: Log) -> None:
    if SUBUIDS or SUBGIDS:
        empty = tmp_path / "empty"
        empty.write_text("")
        maps = idmap.store_maps(UID, GID, USER, empty, empty)
    else:
        maps = None  # a real user without ranges (e.g. rlnosub): the default must fall back
    f = tmp_path / "file"
    f.write_text("x")
    with StoreNamespace(layout, log, workers=2, maps=maps) as ns:
        assert ns.maps.single
        results = []
        threads = [threading.Thread(target=lambda: results.append(ns.call(WHOAMI))) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len({r["pid"] for r in results}) == 2
        for me in results:
            assert me["uid"] == 0
            assert _rows(me["uid_map"]) == [[0, UID, 1]]
            assert _rows(me["gid_map"]) == [[0, GID, 1]]
        with pytest.raises(OSError) as ei:
            ns.call("tests.integration.nsfuncs:chown", path=str(f), uid=1000, gid=1000)
        assert ei.value.errno == errno.EINVAL  # uid 1000 does not exist in a single-id namespace
    text = log.stream.getvalue()  # type: ignore[attr-defined]
    assert text.count("Warning:") == 1
    assert "single-id mapping" in text and "usermod --add-subuids" in text


def test_unshare_exit_status_and_identity(tmp_path: Path, layout: Layout, log: Log) -> None:
    assert run_in_store_ns(layout, log, ["sh", "-c", "exit 3"]) == 3
    out = tmp_path / "out"
    cmd = f'echo "$(id -u) $ROOTLESS_UNSHARE $CONTAINERS_GRAPHROOT" > {out}; cat /proc/self/uid_map >> {out}'
    assert run_in_store_ns(layout, log, ["sh", "-c", cmd]) == 0
    first, *maps = out.read_text().splitlines()
    assert first == f"0 1 {layout.root}"
    assert _rows("\n".join(maps))[0] == [0, UID, 1]
    assert run_in_store_ns(layout, log, ["sh", "-c", "kill -TERM $$"]) == 128 + signal.SIGTERM


def test_unshare_has_its_own_mount_namespace(tmp_path: Path, layout: Layout, log: Log) -> None:
    target = tmp_path / "mnt"
    target.mkdir()
    cmd = f"mount -t tmpfs none {target} && touch {target}/x"
    assert run_in_store_ns(layout, log, ["sh", "-c", cmd]) == 0
    assert list(target.iterdir()) == []  # the mount stayed inside


def test_unshare_command_errors(tmp_path: Path, layout: Layout, log: Log) -> None:
    with pytest.raises(CommandNotFoundError) as ei:
        run_in_store_ns(layout, log, ["no-such-command-xyz"])
    assert ei.value.exit_code == 127
    assert ei.value.message == 'exec: "no-such-command-xyz": executable file not found in $PATH'
    plain = tmp_path / "plain"
    plain.write_text("#!/bin/sh\n")
    with pytest.raises(NotExecutableError) as ne:
        run_in_store_ns(layout, log, [str(plain)])
    assert ne.value.exit_code == 126


def test_unshare_forwards_sigterm(tmp_path: Path) -> None:
    script = textwrap.dedent(f"""
        import io, sys
        from pathlib import Path
        from rootless.context import Log
        from rootless.layout import Layout
        from rootless.runtime.userns import run_in_store_ns
        lay = Layout(Path({str(tmp_path)!r}) / "s", Path({str(tmp_path)!r}) / "r")
        print(run_in_store_ns(lay, Log(stream=io.StringIO()), ["sleep", "30"]), flush=True)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
                            cwd=Path(__file__).parents[2], start_new_session=True)
    time.sleep(0.5)
    os.kill(proc.pid, signal.SIGTERM)
    out, _ = proc.communicate(timeout=10)
    assert out.strip() == str(128 + signal.SIGTERM)
    assert proc.returncode == 0


@has_ranges
def test_doctor_needed_checks_pass(layout: Layout) -> None:
    ctx = Context(Config(), layout, Log(stream=io.StringIO()))
    started = time.monotonic()
    checks = doctor.checks(ctx)
    # the overlay check runs the runtime's own driver probe (a namespace worker and a mount):
    # about 0.5 s here, several times that on a loaded machine; this catches a hang, not speed
    assert time.monotonic() - started < 20.0
    failed = [c for c in checks if c.needed and not c.ok]
    assert failed == []
    names = {c.name for c in checks}
    assert {"subuid range", "newuidmap", "user namespace", "store id mapping",
            "overlay in a user namespace"} <= names
    assert all(c.fix for c in checks if not c.ok)


def test_info(layout: Layout) -> None:
    data = doctor.info(Context(Config(), layout, Log(stream=io.StringIO())))
    assert data["host"]["uid"] == UID
    assert data["store"]["root"] == str(layout.root)
    assert data["store"]["driver"] in ("overlay", "fuse-overlayfs", "vfs")
    assert data["idmaps"]["uid_map"][0] == {"container_id": 0, "host_id": UID, "size": 1}
    assert data["host"]["cgroup"]["version"] in ("v1", "hybrid", "v2")
    data = doctor.info(Context(Config(storage_driver="vfs"), layout, Log(stream=io.StringIO())))
    assert data["store"]["driver"] == "vfs"


def test_unshare_restores_default_signals(tmp_path: Path, layout: Layout, log: Log) -> None:
    # Python ignores SIGPIPE; the command must not inherit that, nor our blocked signals
    out = tmp_path / "status"
    cmd = f"grep -E '^Sig(Ign|Blk)' /proc/self/status > {out}"
    assert run_in_store_ns(layout, log, ["sh", "-c", cmd]) == 0
    masks = {line.split(":")[0]: int(line.split()[1], 16) for line in out.read_text().splitlines()}
    assert masks["SigBlk"] == 0, masks
    # what the user's shell ignores is inherited, as exec(2) does; what Python ignores is not
    for sig in (signal.SIGPIPE, signal.SIGXFSZ):
        assert not masks["SigIgn"] & (1 << (sig - 1)), (sig, masks)


def test_syscalls_inside_a_namespace() -> None:
    from rootless.runtime import syscalls
    from rootless.runtime.userns import run_in_userns

    assert syscalls.capget()[0] == 0  # an unprivileged process on the host

    def child() -> None:
        syscalls.sethostname("rl-test-host")
        assert os.uname().nodename == "rl-test-host"
        eff, perm, _ = syscalls.capget()
        assert eff & (1 << 21) and perm & (1 << 21)  # CAP_SYS_ADMIN in our namespace
        syscalls.capset(eff & ~(1 << 21), perm, 0)
        assert not syscalls.capget()[0] & (1 << 21)
        syscalls.set_no_new_privs()
        syscalls.capbset_drop(21)
        assert not syscalls.capbset_read(21)

    single = idmap.IdMaps((idmap.IdMapping(0, UID, 1),), (idmap.IdMapping(0, GID, 1),), True)
    run_in_userns(single, syscalls.CLONE_NEWUSER | syscalls.CLONE_NEWUTS, child)
    assert os.uname().nodename != "rl-test-host"


def test_pivot_root_inside_a_namespace(tmp_path: Path) -> None:
    from rootless.errors import NamespaceError
    from rootless.runtime import syscalls
    from rootless.runtime.userns import run_in_userns

    new_root = tmp_path / "root"
    (new_root / "old").mkdir(parents=True)
    (new_root / "marker").write_text("x")

    def child() -> None:
        syscalls.mount(None, "/", None, syscalls.MS_REC | syscalls.MS_PRIVATE)
        syscalls.mount(str(new_root), str(new_root), None, syscalls.MS_BIND | syscalls.MS_REC)
        syscalls.pivot_root(str(new_root), str(new_root / "old"))
        os.chdir("/")
        syscalls.umount2("/old", syscalls.MNT_DETACH)
        assert sorted(os.listdir("/")) == ["marker", "old"]
        syscalls.pivot_root("/nonexistent", "/nonexistent")

    single = idmap.IdMaps((idmap.IdMapping(0, UID, 1),), (idmap.IdMapping(0, GID, 1),), True)
    with pytest.raises(NamespaceError) as ei:
        run_in_userns(single, syscalls.CLONE_NEWUSER | syscalls.CLONE_NEWNS, child)
    assert ei.value.message == "pivot_root to /nonexistent: No such file or directory"
