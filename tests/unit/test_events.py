"""The events log: Podman's JSON and text shapes, filters, rotation, following across a rotation."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

from rootless import events
from rootless.layout import Layout


@pytest.fixture
def layout(tmp_path: Path) -> Layout:
    return Layout(root=tmp_path / "store", runroot=tmp_path / "run")


def _ev(status: str, **kw: Any) -> dict[str, Any]:
    return events.record("container", status, id_="ab" * 32, name="web", image="localhost/bb:latest", **kw)


def test_shapes_as_podman_prints_them(layout: Layout) -> None:
    ns = 1796201399348989047
    ev = _ev("create", attributes={"z": "2", "a": "1"}, ns=ns)
    assert events.human(ev) == (f"2026-12-02 08:49:59.348989047 +0000 UTC container create {'ab' * 32} "
                                "(image=localhost/bb:latest, name=web, a=1, z=2)")
    assert events.json_line(ev) == (
        '{"ID":"' + "ab" * 32 + '","Image":"localhost/bb:latest","Name":"web","Status":"create",'
        '"Time":"2026-12-02T08:49:59.348989047Z","Type":"container","Attributes":{"z":"2","a":"1"}}')
    img = events.record("image", "tag", id_="41db" * 16, name="localhost/bb:latest", ns=ns)
    assert events.human(img) == f"2026-12-02 08:49:59.348989047 +0000 UTC image tag {'41db' * 16} localhost/bb:latest"
    view = events.template_view(_ev("died", exit_code=3, ns=ns))
    assert view["ContainerExitCode"] == 3 and view["Time"].endswith("+0000 UTC") and view["Status"] == "died"


def test_filters(layout: Layout) -> None:
    for ev in (_ev("create", attributes={"app": "shop"}), _ev("start"),
               events.record("image", "pull", id_="cd" * 32, name="docker.io/library/busybox:latest")):
        events.append(layout, ev)

    def statuses(*f: str) -> list[str]:
        return [e["Status"] for e in events.read(layout, since=None, until=None, keep=events.Filter(list(f)))]

    assert statuses() == ["create", "start", "pull"]
    assert statuses("type=image") == ["pull"]
    assert statuses("event=start", "event=create") == ["create", "start"]
    assert statuses("container=web", "event=start") == ["start"]
    assert statuses("container=abab") == ["create", "start"]
    assert statuses("image=busybox") == ["pull"]
    assert statuses("label=app=shop") == ["create"]
    assert statuses("label=app=other") == []
    with pytest.raises(events.RootlessError):
        events.Filter(["colour=red"])
    later = time.time() + 60
    assert [e for e in events.read(layout, since=later, until=None, keep=events.Filter([]))] == []


def test_rotation_keeps_the_previous_file(layout: Layout, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(events, "MAX_SIZE", 600)
    for i in range(10):
        events.append(layout, _ev("start", attributes={"n": str(i)}))
    path = events.log_path(layout)
    assert path.with_name("events.log.1").exists()
    assert path.stat().st_size <= 600 + 300
    got = [e["Attributes"]["n"] for e in events.read(layout, since=None, until=None, keep=events.Filter([]))]
    assert got == [str(i) for i in range(10 - len(got), 10)] and len(got) >= 3


def test_follow_sees_new_events_across_a_rotation(layout: Layout, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(events, "MAX_SIZE", 700)
    events.append(layout, _ev("create", attributes={"n": "old"}))
    seen: list[str] = []

    def writer() -> None:
        time.sleep(0.2)
        for i in range(12):
            events.append(layout, _ev("start", attributes={"n": str(i)}))
            time.sleep(0.02)

    t = threading.Thread(target=writer)
    t.start()
    for ev in events.follow(layout, since=None, until=time.time() + 10, keep=events.Filter([]), poll=0.01):
        seen.append(ev["Attributes"]["n"])
        if seen[-1] == "11":
            break
    t.join()
    assert seen == ["old", *[str(i) for i in range(12)]]
