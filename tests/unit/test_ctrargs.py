"""The typer-free `ps` and `exec` parser must agree with typer's commands on everything it accepts."""

from __future__ import annotations

from typing import Any

import pytest
from typer.main import get_command

from rootless import cli, ctrargs, lifecycle

CASES = [
    ["ps"],
    ["ps", "-a"],
    ["ps", "-aq", "--no-trunc"],
    ["ps", "--all", "--quiet", "--format", "json"],
    ["ps", "--format=json", "-f", "status=exited", "--filter=name=web", "-fid=ab"],
    ["exec", "web", "true"],
    ["exec", "-it", "web", "sh", "-c", "echo $HOME"],
    ["exec", "-ti", "-e", "A=1", "--env=B=2", "-eC=3", "web", "env", "-i", "--", "x"],
    ["exec", "-w", "/tmp", "--workdir=/x", "-u", "nobody", "--user=1:2", "web", "id", "-u"],
    ["exec", "--interactive", "--tty", "web", "sh"],
    ["exec", "--", "web", "ls", "-l"],
    ["--log-level", "debug", "--root", "/r", "--runroot=/rr", "exec", "web", "true"],
    ["--root=/r", "ps", "-a"],
]

REFUSED = [
    ["ps", "--help"],
    ["ps", "extra"],
    ["ps", "--format", "yaml"],
    ["ps", "-x"],
    ["exec", "web"],
    ["exec"],
    ["exec", "-h", "web", "true"],
    ["exec", "--bogus", "web", "true"],
    ["exec", "-w"],
    ["--log-level", "loud", "ps"],
    ["images"],
]


def _capture(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, dict[str, Any]]]:
    got: list[tuple[str, dict[str, Any]]] = []

    def ps_lines(ctx: Any, **kw: Any) -> list[str]:
        got.append(("ps", kw))
        return []

    def exec_(ctx: Any, cid: str, argv: list[str], **kw: Any) -> int:
        got.append(("exec", {"cid": cid, "argv": argv, **kw}))
        return 0

    monkeypatch.setattr(lifecycle, "ps_lines", ps_lines)
    monkeypatch.setattr(lifecycle, "exec_", exec_)
    monkeypatch.setattr(lifecycle, "resolve", lambda ctx, ref: f"id-of-{ref}")
    return got


@pytest.mark.parametrize("argv", CASES, ids=lambda a: " ".join(a))
def test_fast_parser_agrees_with_typer(argv: list[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    monkeypatch.setenv("ROOTLESS_CONFIG", str(tmp_path / "none.toml"))
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    got = _capture(monkeypatch)
    assert ctrargs.parse(argv) is not None
    assert cli._ctr_fast(argv) == 0
    try:
        get_command(cli.app).main(argv, prog_name="rootless", standalone_mode=False)
    except BaseException as e:  # typer.Exit(0)
        if getattr(e, "exit_code", getattr(e, "code", 1)) != 0:
            raise
    assert len(got) == 2
    assert got[0] == got[1]


@pytest.mark.parametrize("argv", REFUSED, ids=lambda a: " ".join(a))
def test_anything_else_goes_to_typer(argv: list[str]) -> None:
    assert ctrargs.parse(argv) is None
