"""`rootless completion zsh|fish` in the real shells: each script loads without an error and completes a
command name and an option (bash's is tried in tests/unit/test_options.py)."""

from __future__ import annotations

import os
import pty
import select
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from rootless import completion


def _script(tmp_path: Path, shell: str) -> Path:
    path = tmp_path / f"rootless.{shell}"
    path.write_text(completion.script(shell))
    return path


def _need(shell: str) -> str:
    found = shutil.which(shell)
    if found is None:
        pytest.skip(f"no {shell}")
    return found


# --------------------------------------------------------------------------- fish

def _fish(tmp_path: Path, script: Path, line: str) -> list[str]:
    """What fish offers for *line* (`complete -C`): the candidates, without their descriptions."""
    cp = subprocess.run([_need("fish"), "--no-config", "-c", f"source {script}; and complete -C '{line}'"],
                        capture_output=True, text=True, timeout=60,
                        env={**os.environ, "HOME": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path)})
    assert cp.returncode == 0 and cp.stderr == "", cp.stderr
    return [ln.split("\t", 1)[0] for ln in cp.stdout.splitlines()]


def test_fish_completes_commands_and_options(tmp_path: Path) -> None:
    script = _script(tmp_path, "fish")
    assert _fish(tmp_path, script, "rootless ru") == ["run"]
    assert {"load", "ls"} <= set(_fish(tmp_path, script, "rootless image l"))
    assert _fish(tmp_path, script, "rootless images --no-t") == ["--no-trunc"]
    assert {"all", "container", "image"} <= set(_fish(tmp_path, script, "rootless inspect --type "))


# --------------------------------------------------------------------------- zsh

class _Zsh:
    """An interactive `zsh -f` on a pseudo-terminal: completion runs only in the line editor."""

    def __init__(self, home: Path) -> None:
        zsh = _need("zsh")
        env = {**os.environ, "HOME": str(home), "TERM": "dumb", "PS1": "> "}
        self.pid, self.fd = pty.fork()
        if self.pid == 0:  # pragma: no cover - the child
            os.execve(zsh, [zsh, "-f", "-i"], env)
        self.seen = b""

    def type(self, text: str) -> None:
        os.write(self.fd, text.encode())

    def until(self, wanted: bytes, timeout: float = 30) -> bytes:
        """The output up to and with *wanted* (compinit takes seconds on a busy machine); all of it
        when *wanted* did not come in time."""
        deadline = time.monotonic() + timeout
        while wanted not in self.seen and time.monotonic() < deadline:
            ready, _, _ = select.select([self.fd], [], [], 0.1)
            if ready:
                try:
                    self.seen += os.read(self.fd, 4096)
                except OSError:
                    break
        head, found, self.seen = self.seen.partition(wanted)
        return head + found

    def close(self) -> None:
        os.close(self.fd)
        os.kill(self.pid, 9)
        os.waitpid(self.pid, 0)


def test_zsh_loads_and_completes_commands_and_options(tmp_path: Path) -> None:
    script = _script(tmp_path, "zsh")
    z = _Zsh(tmp_path)
    try:
        z.type(f"source {script}; print LOADED $?\n")
        loaded = z.until(b"LOADED 0")
        assert loaded.endswith(b"LOADED 0"), loaded
        assert b"command not found" not in loaded and b"compinit:" not in loaded, loaded
        z.type("rootless ru\t")
        assert z.until(b"rootless run ").endswith(b"rootless run ")
        z.type("\x15rootless images --no-t\t")  # ^U: a new line
        assert z.until(b"images --no-trunc ").endswith(b"images --no-trunc ")
    finally:
        z.close()
