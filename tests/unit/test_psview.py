"""How `ps`, `stats` and `port` render what the engine returns (rootless.commands.psview)."""

from __future__ import annotations

from pathlib import Path

import pytest

from rootless import engine
from rootless.commands import psview
from rootless.config import Config
from rootless.context import Context, Log
from rootless.image.specgen import RunOptions
from rootless.layout import Layout
from rootless.lifecycle import Container
from rootless.runtime.cgroups import Sample
from tests.unit.test_engine import FakeRuntime, store_image


@pytest.fixture
def ctx(tmp_path: Path) -> Context:
    layout = Layout(root=tmp_path / "store", runroot=tmp_path / "run")
    return Context(config=Config(network="none"), layout=layout, log=Log())


def _made(ctx: Context, **kw: object) -> Container:
    store_image(ctx)
    made = engine.create(ctx, RunOptions(image="busybox", **kw), runtime=FakeRuntime())  # type: ignore[arg-type]
    return engine.container(ctx, made.id)


def test_ps_table_and_rows(ctx: Context) -> None:
    c = _made(ctx, name="web", command=("sh", "-c", "echo a long command line"), network="slirp4netns",
              publish=("127.0.0.1:39541:80",))
    now = c.config.created + 125
    head, row = psview.ps_table([c], now, no_trunc=False)
    assert head == ("CONTAINER ID", "IMAGE", "COMMAND", "CREATED", "STATUS", "PORTS", "NAMES")
    assert row == (c.id[:12], "docker.io/library/busybox:latest", "sh -c echo a long...", "2 minutes ago", "Created",
                   "127.0.0.1:39541->80/tcp", "web")
    assert psview.ps_table([c], now, no_trunc=True)[1][:3] == (c.id, row[1], "sh -c echo a long command line")
    fields = psview.ps_row(c, now, False)
    assert fields["CreatedHuman"] == "2 minutes ago" and fields["Names"] == "web" and fields["ID"] == c.id[:12]
    assert psview.ps_json(c)["Ports"] == [{"host_ip": "127.0.0.1", "container_port": 80, "host_port": 39541,
                                          "range": 1, "protocol": "tcp"}]
    assert psview.ports(c) == ["80/tcp -> 127.0.0.1:39541"]


def test_go_time() -> None:
    assert psview.go_time(0) == "0001-01-01 00:00:00 +0000 UTC"
    assert psview.go_time(1764665399.5) == "2025-12-02 08:49:59.5 +0000 UTC"


def test_stats_row_and_table(ctx: Context) -> None:
    c = _made(ctx, name="web")
    assert psview.stats_row(c, None, None)["cpu_percent"] == "--"
    before = Sample(cpu_usec=1_000_000, memory=0, memory_limit=None, pids=1, pids_limit=None, io_read=0,
                    io_write=0, at=10.0)
    now = Sample(cpu_usec=1_500_000, memory=50_000_000, memory_limit=200_000_000, pids=3, pids_limit=None,
                 io_read=4096, io_write=0, at=11.0)
    row = psview.stats_row(c, now, before, at=c.state.started_at + 10)
    assert row["cpu_percent"] == "50.00%"  # 0.5 s of CPU in 1 s
    assert row["avg_cpu"] == "15.00%"  # 1.5 s of CPU in 10 s of life
    assert row["mem_usage"] == "50MB / 200MB" and row["mem_percent"] == "25.00%"
    assert row["block_io"] == "4.096kB / 0B" and row["pids"] == "3" and row["cpu_time"] == "1.5s"
    lines = psview.stats_table([row]).splitlines()
    assert lines[0].split("  ")[0] == "ID" and lines[1].startswith(c.id[:12] + "  web")
    assert psview.stats_view(row)["CPUPerc"] == "50.00%"
