"""Container records without privileges: Spec round trip, lookup by name and prefix, locks,
stale records, log lines, --since."""

from __future__ import annotations

import dataclasses
import os
import threading
import time
from pathlib import Path

import pytest

from rootless import lifecycle
from rootless.errors import RootlessError
from rootless.layout import Layout
from rootless.runtime import monitor, state
from rootless.spec import File, IdMap, Mount, Network, PortMapping, Process, Resources, RootfsPlan, Spec


def make_spec(cid: str, name: str = "web") -> Spec:
    return Spec(
        id=cid, name=name,
        process=Process(args=("httpd", "-f"), env=("PATH=/bin",), capabilities=("CAP_CHOWN",), user="www"),
        rootfs=RootfsPlan("overlay", "/x/merged", lower=("/l1", "/l2"), upper="/u", work="/w"),
        mounts=(Mount("/proc", "proc", "proc", ("nosuid",)),), uid_map=(IdMap(0, 1000, 1),),
        gid_map=(IdMap(0, 1000, 1),), hostname="h",
        network=Network("slirp4netns", (("mtu", "1500"),), (PortMapping("127.0.0.1", 8080, 80),)),
        resources=Resources(memory=1 << 20), annotations=(("a", "b"),), rundir="/run/x",
        files=(File("hosts", "127.0.0.1 localhost\n"),))


def layout(tmp_path: Path) -> Layout:
    return Layout(root=tmp_path / "store", runroot=tmp_path / "run")


def add(lay: Layout, cid: str, name: str) -> None:
    (lay.containers / cid).mkdir(parents=True)
    state.save_config(lay, state.Config(cid, name, "busybox", "sha", time.time(), make_spec(cid, name)))


def test_spec_round_trip() -> None:
    spec = make_spec("a" * 64)
    assert state.spec_from_dict(state.spec_to_dict(spec)) == spec


def test_resolve_by_id_name_and_prefix(tmp_path: Path) -> None:
    lay = layout(tmp_path)
    a, b = "ab" + "0" * 62, "ac" + "0" * 62
    add(lay, a, "one")
    add(lay, b, "two")
    assert state.resolve(lay, a) == a
    assert state.resolve(lay, "two") == b
    assert state.resolve(lay, "ab") == a
    with pytest.raises(RootlessError, match="more than one"):
        state.resolve(lay, "a")
    with pytest.raises(state.NoSuchContainer):
        state.resolve(lay, "three")


def test_record_names_from_the_first_bytes_or_the_whole_record(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                                                ) -> None:
    """A lookup by name reads only the start of each record as save_config writes it, and any
    other well-formed record whole."""
    lay = layout(tmp_path)
    a, b, c = "a" * 64, "b" * 64, "c" * 64
    add(lay, a, "one")
    (lay.containers / b).mkdir(parents=True)
    state.config_path(lay, b).write_text('{"name": "two", "id": "' + b + '", "spec": {}}')  # keys reordered
    (lay.containers / c).mkdir(parents=True)
    state.config_path(lay, c).write_text('{"id": "' + c + '", "name": "th\\u0072ee"}')  # an escape
    assert state.names(lay) == {"one": a, "two": b, "three": c}
    parsed: list[bytes] = []
    real = state.json.loads
    monkeypatch.setattr(state.json, "loads", lambda raw: parsed.append(raw) or real(raw))
    assert state.resolve(lay, "one") == a
    assert len(parsed) == 2  # the two records not written by save_config


def test_generated_names_are_unique() -> None:
    taken: set[str] = set()
    for _ in range(300):
        n = state.new_name(taken)
        assert n not in taken and "_" in n
        taken.add(n)


def test_a_lock_waiter_sees_the_removal(tmp_path: Path) -> None:
    lay = layout(tmp_path)
    cid = "c" * 64
    add(lay, cid, "x")
    seen: list[BaseException] = []

    def second() -> None:
        try:
            with state.locked(lay, cid):
                pass
        except BaseException as e:  # noqa: BLE001 - recorded for the assertion
            seen.append(e)

    with state.locked(lay, cid):
        t = threading.Thread(target=second)
        t.start()
        time.sleep(0.1)
        os.rename(lay.containers / cid, tmp_path / "gone")
    t.join()
    assert len(seen) == 1 and isinstance(seen[0], state.NoSuchContainer)


def test_a_dead_monitor_means_exited(tmp_path: Path) -> None:
    lay = layout(tmp_path)
    cid = "d" * 64
    add(lay, cid, "x")
    me = os.getpid()
    live = state.State(status="running", pid=me, pid_start=state.proc_start(me), monitor_pid=me,
                       monitor_start=state.proc_start(me), boot_id=state.boot_id())
    state.write_state(lay, cid, live)
    assert state.read_state(lay, cid).running
    state.write_state(lay, cid, dataclasses.replace(live, monitor_start="1"))  # PID reused
    st = state.read_state(lay, cid)
    assert st.status == "exited" and st.exit_code == 137
    state.write_state(lay, cid, dataclasses.replace(live, boot_id="another-boot"))
    assert state.read_state(lay, cid).status == "exited"


def test_log_lines_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "ctr.log"
    log = monitor.LogWriter(str(path))
    log.feed("stdout", b"one\ntw")
    log.feed("stdout", b"o\n")
    log.feed("stderr", b"no newline")
    log.flush()
    lines = [lifecycle.parse_log_line(raw) for raw in path.read_bytes().splitlines()]
    assert [(ln.stream, ln.partial, ln.text) for ln in lines if ln] == [
        ("stdout", False, b"one"), ("stdout", False, b"two"), ("stderr", True, b"no newline")]
    assert all(ln and abs(ln.epoch - time.time()) < 60 for ln in lines)


@pytest.mark.parametrize(("text", "delta"), [("10s", 10), ("5m", 300), ("1h30m", 5400), ("1500ms", 1.5)])
def test_since_durations(text: str, delta: float) -> None:
    assert lifecycle.parse_since(text, 1000.0) == pytest.approx(1000.0 - delta)


def test_since_times() -> None:
    assert lifecycle.parse_since("1700000000", 0) == 1700000000
    assert lifecycle.parse_since("2023-11-14T22:13:20Z", 0) == 1700000000
    with pytest.raises(RootlessError):
        lifecycle.parse_since("yesterday", 0)


def test_signals() -> None:
    assert lifecycle.parse_signal("TERM") == 15
    assert lifecycle.parse_signal("sigkill") == 9
    assert lifecycle.parse_signal("1") == 1
    with pytest.raises(RootlessError):
        lifecycle.parse_signal("NOPE")


@pytest.mark.parametrize("t", [1796219936.5203292, 1700000000.0, 1700000000.9999996, 1700000000.0000005,
                               1700000000.0000015, 0.000001, -1.5, 4102444800.25])
def test_iso_is_datetimes_isoformat(t: float) -> None:
    """lifecycle.iso spells a time as datetime does (inspect's Created, StartedAt), without it."""
    from datetime import UTC, datetime

    assert lifecycle.iso(t) == datetime.fromtimestamp(t, UTC).isoformat().replace("+00:00", "Z")
    assert lifecycle.iso(0) == "0001-01-01T00:00:00Z"
