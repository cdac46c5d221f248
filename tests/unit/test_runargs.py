"""The typer-free `run` parser must agree with typer's `run` on everything it accepts."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from typer.main import get_command

from rootless import cli, runargs

CASES = [
    ["run", "busybox"],
    ["run", "--rm", "busybox", "true"],
    ["run", "-it", "alpine", "sh", "-c", "echo $HOME"],
    ["run", "-ti", "--rm", "alpine", "sh", "-c", "x", "--rm", "-e", "X=1"],
    ["run", "-e", "A=1", "--env=B=2", "-eC=3", "--env-file", "/f1", "--env-file=/f2", "img"],
    ["run", "-u", "1000:1000", "-w", "/tmp", "--workdir=/x", "--user=nobody", "img", "id"],
    ["run", "--entrypoint", "", "img", "--", "a"],
    ["run", "--entrypoint=[\"/bin/sh\",\"-c\"]", "img", "echo hi"],
    ["run", "--name", "web", "--hostname", "box", "--init", "--privileged", "img"],
    ["run", "--cap-add", "NET_ADMIN", "--cap-add=SYS_TIME", "--cap-drop", "ALL", "--security-opt",
     "no-new-privileges", "img"],
    ["run", "--network", "host", "--net=none", "img"],
    ["run", "-p", "8080:80", "--publish=127.0.0.1::53/udp", "-p80", "-P", "--publish-all", "img"],
    ["run", "-Pp", "9000:90", "--network", "slirp4netns:mtu=1500,allow_host_loopback=true", "img"],
    ["run", "--dns", "1.1.1.1", "--dns=9.9.9.9", "--dns-search", "lan", "--dns-option", "ndots:2",
     "--add-host", "db:10.0.2.2", "--add-host=a:1.2.3.4", "img"],
    ["run", "-v", "/a:/b:ro", "--volume=/c:/d", "-v/e:/f", "--mount", "type=tmpfs,target=/t", "--tmpfs",
     "/x:size=1m", "img"],
    ["run", "--read-only", "--no-read-only-tmpfs", "--pull", "never", "--storage-driver", "vfs",
     "--platform", "linux/arm64", "--userns", "keep-id", "img"],
    ["run", "--pull=ALWAYS", "img"],
    ["run", "-i", "-e", "-x", "img"],
    ["run", "--", "img", "--", "x"],
    ["--log-level", "debug", "--root", "/r", "--runroot=/rr", "run", "img"],
]

REFUSED = [
    ["run"],
    ["run", "--rm"],
    ["run", "--help", "img"],
    ["run", "-h"],
    ["run", "--bogus", "img"],
    ["run", "-x", "img"],
    ["run", "--rm=true", "img"],
    ["run", "--name"],
    ["run", "--pull", "sometimes", "img"],
    ["--version"],
    ["images"],
    ["--log-level", "loud", "run", "img"],
    ["--unknown", "run", "img"],
]


def _via_typer(argv: list[str], monkeypatch: pytest.MonkeyPatch) -> runargs.RunArgs:
    got: list[runargs.RunArgs] = []

    def capture(ctx: Any, a: runargs.RunArgs) -> int:
        got.append(a)
        return 0

    monkeypatch.setattr(cli, "_run_flow", capture)
    try:
        get_command(cli.app).main(argv, prog_name="rootless", standalone_mode=False)
    except BaseException as e:  # typer.Exit(0) from run
        if getattr(e, "exit_code", getattr(e, "code", 1)) != 0:
            raise
    assert len(got) == 1
    return got[0]


@pytest.mark.parametrize("argv", CASES, ids=lambda a: " ".join(a))
def test_fast_parser_agrees_with_typer(argv: list[str], monkeypatch: pytest.MonkeyPatch,
                                       tmp_path: Any) -> None:
    monkeypatch.setenv("ROOTLESS_CONFIG", str(tmp_path / "none.toml"))
    fast = runargs.parse(argv)
    assert fast is not None
    slow = _via_typer(argv, monkeypatch)
    skip = {"log_level", "root", "runroot"}
    for f in dataclasses.fields(runargs.RunArgs):
        if f.name not in skip:
            assert getattr(fast, f.name) == getattr(slow, f.name), f.name


def test_globals() -> None:
    a = runargs.parse(["--log-level", "DEBUG", "--root", "/r", "--runroot=/rr", "run", "img"])
    assert a is not None and (a.log_level, a.root, a.runroot) == ("debug", "/r", "/rr")


@pytest.mark.parametrize("argv", REFUSED, ids=lambda a: " ".join(a))
def test_anything_else_goes_to_typer(argv: list[str]) -> None:
    assert runargs.parse(argv) is None
