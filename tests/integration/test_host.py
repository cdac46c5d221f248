"""doctor, info and unshare on the host scripts/setup-host prepared (issue 2)."""

from __future__ import annotations

import json

from tests.integration.harness import RootlessEnv


def test_doctor_passes_on_the_prepared_host(rl: RootlessEnv) -> None:
    """setup-host installs every prerequisite, so every needed check passes."""
    cp = rl("doctor")
    assert cp.returncode == 0, f"doctor failed on the CI host:\n{cp.stdout}\n{cp.stderr}"
    assert "Traceback" not in cp.stderr


def test_doctor_names_the_fix_when_a_check_fails(rl: RootlessEnv) -> None:
    # no runtime dir: the check fails and the output says how to get one
    cp = rl("doctor", env={"XDG_RUNTIME_DIR": str(rl.base / "missing")})
    assert "Traceback" not in cp.stderr
    assert "XDG_RUNTIME_DIR" in cp.stdout


def test_info_json_names_the_store(rl: RootlessEnv) -> None:
    cp = rl("info", "--format", "json", check=True)
    data = json.loads(cp.stdout)
    assert str(rl.store) in json.dumps(data), "info does not show the store path"


def test_info_default_output(rl: RootlessEnv) -> None:
    cp = rl("info", check=True)
    assert str(rl.store) in cp.stdout


def test_unshare_maps_the_whole_subordinate_range(rl: RootlessEnv, subid_start: int) -> None:
    import os

    cp = rl("unshare", "cat", "/proc/self/uid_map", check=True)
    rows = [tuple(int(x) for x in ln.split()) for ln in cp.stdout.splitlines()]
    assert (0, os.getuid(), 1) in rows, cp.stdout
    assert any(r[0] == 1 and r[1] == subid_start and r[2] >= 65536 for r in rows), cp.stdout


def test_unshare_passes_the_exit_status(rl: RootlessEnv) -> None:
    assert rl("unshare", "sh", "-c", "exit 7").returncode == 7
    assert rl("unshare", "true").returncode == 0


def test_unshare_unknown_command(rl: RootlessEnv) -> None:
    cp = rl("unshare", "no-such-command-here")
    assert cp.returncode in (125, 126, 127), cp
    assert "Traceback" not in cp.stderr
