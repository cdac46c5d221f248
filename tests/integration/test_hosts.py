"""Host shapes (issue 16): the run root a store records, whatever the shell's XDG_RUNTIME_DIR
says; a runtime dir owned by someone else. As the unprivileged test user."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import pytest

from tests.integration.conftest import TestImages
from tests.integration.harness import OtherUserEnv, RootlessEnv

pytestmark = pytest.mark.integration

BUSYBOX = "busybox"
# What su -, sudo -iu, cron and ssh without pam_systemd give: no XDG_RUNTIME_DIR at all.
NO_SESSION: dict[str, str | None] = {"XDG_RUNTIME_DIR": None}


@pytest.fixture
def rlb(rl: RootlessEnv, images: TestImages) -> RootlessEnv:
    images.require("library/busybox:latest")
    rl("pull", "-q", BUSYBOX, check=True)
    return rl


def _status(rl: RootlessEnv, name: str, env: Mapping[str, str | None] | None = None) -> str:
    cp = rl("ps", "-a", "--filter", f"name={name}", "--format", "json", env=env, check=True)
    import json

    rows = json.loads(cp.stdout)
    assert len(rows) == 1, cp.stdout
    return str(rows[0]["State"])


def test_a_shell_without_a_session_sees_and_controls_the_running_container(rlb: RootlessEnv) -> None:
    rl = rlb
    rl("run", "-d", "--name", "x", BUSYBOX, "sleep", "60", check=True)
    assert _status(rl, "x", NO_SESSION) == "running"
    cp = rl("exec", "x", "echo", "inside", env=NO_SESSION)
    assert cp.returncode == 0 and cp.stdout == "inside\n", cp.stderr
    # `start` of a running container launches nothing (no second copy on the same layer)
    before = len(rl.processes())
    rl("start", "x", env=NO_SESSION, check=True)
    assert len(rl.processes()) == before
    assert "XDG_RUNTIME_DIR" not in rl("ps", env=NO_SESSION).stderr, "no fallback warning: none is used"
    cp = rl("stop", "-t", "1", "x", env=NO_SESSION, check=True)
    assert _status(rl, "x") == "exited"
    rl("rm", "-f", "x", env=NO_SESSION, check=True)
    assert rl.wait_no_processes() == [], "the monitor or the container was orphaned"


def test_a_runroot_that_differs_from_the_stores_is_refused(rlb: RootlessEnv) -> None:
    rl = rlb
    other = rl.base / "other-run"
    cp = rl("--runroot", str(other), "ps", "-a")
    assert cp.returncode == 125, cp
    lines = cp.stderr.splitlines()
    assert lines[0].startswith("Error: ") and str(other) in lines[0] and str(rl.runroot) in lines[0], cp.stderr
    assert len(lines) == 2 and lines[1].startswith("Hint: ") and "system migrate" in lines[1], cp.stderr
    # the same for `run`: nothing is created under the other run root
    assert rl("--runroot", str(other), "run", "--rm", BUSYBOX, "true").returncode == 125
    assert not other.exists()


def test_an_unusable_recorded_run_root_is_refused_and_migrate_moves_the_store(rlb: RootlessEnv) -> None:
    rl = rlb
    rl("run", "-d", "--name", "y", BUSYBOX, "sleep", "60", check=True)
    new_session = rl.base / "run2"
    new_session.mkdir(mode=0o700)
    moved = {"XDG_RUNTIME_DIR": str(new_session)}
    cp = rl("system", "migrate", env=moved)
    assert cp.returncode == 125 and "container y is running" in cp.stderr, cp
    rl("stop", "-t", "1", "y", check=True)
    cp = rl("system", "migrate", env=moved, check=True)
    assert f"{rl.runroot} → {new_session / 'rootless'}" in cp.stdout, cp.stdout
    # the old session is gone (logged out): the new one is the store's run root now
    assert _status(rl, "y", moved) == "exited"
    rl("start", "y", env=moved, check=True)
    assert _status(rl, "y", moved) == "running"
    assert (new_session / "rootless" / "containers").is_dir()
    # the old session's environment follows the store's record too
    assert _status(rl, "y") == "running"
    rl("rm", "-f", "y", env=moved, check=True)
    assert rl.wait_no_processes() == []


def test_doctor_fails_on_a_run_root_a_run_would_refuse(rlb: RootlessEnv) -> None:
    rl = rlb
    session = rl.runroot.parent
    os.rename(session, rl.base / "logged-out")  # systemd removes /run/user/UID at logout
    try:
        cp = rl("doctor", env=NO_SESSION)
        assert cp.returncode == 1, cp
        line = next(ln for ln in cp.stdout.splitlines() if "run root" in ln)
        assert line.startswith("[FAIL] run root:") and str(rl.runroot) in line, cp.stdout
        assert rl("run", "--rm", BUSYBOX, "true", env=NO_SESSION).returncode == 125
    finally:
        os.rename(rl.base / "logged-out", session)


def test_an_xdg_runtime_dir_of_another_user_is_refused_with_one_warning(rl: RootlessEnv,
                                                                        images: TestImages) -> None:
    images.require("library/busybox:latest")
    fallback = Path(f"/tmp/rootless-run-{os.getuid()}")
    theirs = {"XDG_RUNTIME_DIR": "/tmp"}  # writable by us, owned by root
    cps = [rl("pull", "-q", BUSYBOX, env=theirs)]
    cps += [rl("run", "--rm", BUSYBOX, "true", env=theirs) for _ in range(2)]
    assert [cp.returncode for cp in cps] == [0, 0, 0], [cp.stderr for cp in cps]
    warnings = [ln for cp in cps for ln in cp.stderr.splitlines() if ln.startswith("Warning:")]
    # said once for this store, in one line (plus a hint)
    assert len(warnings) == 1 and "/tmp is owned by uid 0, not you" in warnings[0], warnings
    assert str(fallback) in warnings[0]
    assert "Warning" not in cps[-1].stderr
    assert not Path("/tmp/rootless").exists() or Path("/tmp/rootless").stat().st_uid != os.getuid()


# --- the single-ID fallback and short ranges (item 2): real users without / with a short range


def _pull_multi_owner(rl: RootlessEnv, images: TestImages) -> str:
    images.require("test/multilayer:latest")
    cp = rl("pull", "test/multilayer")
    assert cp.returncode == 0, cp.stderr
    return cp.stderr


def _owners(rl: RootlessEnv, *paths: str) -> list[str]:
    """stat of image files as the container sees them: uid:gid mode."""
    cp = rl("run", "--rm", "--network", "none", "test/multilayer", "stat", "-c", "%u:%g %a", *paths)
    assert cp.returncode == 0, cp.stderr
    return cp.stdout.split("\n")[:-1]


def test_a_user_without_a_range_pulls_and_runs_a_multi_owner_image(rl_norange: OtherUserEnv,
                                                                  images: TestImages) -> None:
    rl = rl_norange
    assert rl("unshare", "cat", "/proc/self/uid_map", check=True).stdout.split() == ["0", str(rl.uid), "1"]
    err = _pull_multi_owner(rl, images)
    warnings = [ln for ln in err.splitlines() if ln.startswith("Warning:")]
    # the single-ID warning (once for this store) and the pull's one summary of remapped owners
    assert any("single-id mapping" in w for w in warnings), err
    summary = [w for w in warnings if "cannot hold" in w]
    assert len(summary) == 1 and "owned by the container's root (you)" in summary[0], err
    assert "Traceback" not in err and "Invalid argument" not in err
    # every file owned by you, that is root in the container; set-ID bits go with a remapped group
    assert _owners(rl, "/owned/user1000", "/owned/nobody", "/owned/huge-id", "/usr/local/bin/suid",
                   "/usr/local/bin/sgid") == ["0:0 640", "0:0 644", "0:0 644", "0:0 4755", "0:0 755"]
    # said once per store: the next command is quiet
    cp = rl("run", "--rm", "--network", "none", "test/multilayer", "true")
    assert cp.returncode == 0 and "Warning" not in cp.stderr, cp.stderr


def test_a_user_without_a_range_pulls_debian(rl_norange: OtherUserEnv, images: TestImages) -> None:
    images.require("library/debian:bookworm")
    rl = rl_norange
    cp = rl("pull", "debian:bookworm", timeout=240)
    assert cp.returncode == 0, cp.stderr  # was: unpack layer …: ./etc/gshadow: Invalid argument
    cp = rl("run", "--rm", "--network", "none", "debian:bookworm", "stat", "-c", "%u:%g", "/etc/gshadow")
    assert cp.returncode == 0 and cp.stdout == "0:0\n", cp.stderr


def test_a_short_range_keeps_the_owners_it_holds(rl_short: OtherUserEnv, images: TestImages) -> None:
    rl = rl_short
    rows = [ln.split() for ln in rl("unshare", "cat", "/proc/self/uid_map", check=True).stdout.splitlines()]
    assert rows[0] == ["0", str(rl.uid), "1"] and rows[1][0] == "1" and rows[1][2] == "1000", rows
    err = _pull_multi_owner(rl, images)
    assert "single-id" not in err
    assert "2 files owned by IDs your ID mapping cannot hold" in err, err  # nobody and huge-id
    assert _owners(rl, "/owned/user1000", "/owned/nobody", "/owned/huge-id", "/usr/local/bin/sgid") == \
        ["1000:1000 640", "0:0 644", "0:0 644", "0:50 2755"]
    images.require("library/debian:bookworm")
    cp = rl("pull", "debian:bookworm", timeout=240)
    assert cp.returncode == 0, cp.stderr


def test_doctor_warns_about_a_short_range_and_names_the_fix(rl_short: OtherUserEnv) -> None:
    cp = rl_short("doctor")
    assert cp.returncode == 0, cp.stdout + cp.stderr  # a default run works: no needed check fails
    lines = cp.stdout.splitlines()
    i = next(i for i, ln in enumerate(lines) if ln.startswith("[warn] subuid range"))
    assert "(1000 ids)" in lines[i] and "under 65536 ids" in lines[i], cp.stdout
    assert "usermod --add-subuids" in lines[i + 1], cp.stdout


def test_doctor_passes_without_a_range_and_says_what_is_lost(rl_norange: OtherUserEnv) -> None:
    cp = rl_norange("doctor")
    assert cp.returncode == 0, cp.stdout + cp.stderr
    assert "[warn] subuid range: no range for" in cp.stdout and "single-id mapping" in cp.stdout


# --- doctor fails exactly when a default run would (item 4), config input (items 5, 9)


def _doctor_line(stdout: str, name: str) -> str:
    return next(ln for ln in stdout.splitlines() if ln[7:].startswith(f"{name}:"))


def test_doctor_on_the_prepared_host_probes_overlay_as_the_runtime_does(rl: RootlessEnv) -> None:
    cp = rl("doctor")
    assert cp.returncode == 0, cp.stdout
    line = _doctor_line(cp.stdout, "overlay in a user namespace")
    assert line.startswith("[ok  ]") and "(ext4)" in line or "(tmpfs)" in line or "(xfs)" in line, line
    assert _doctor_line(cp.stdout, "/dev/net/tun").startswith("[ok  ]")
    assert _doctor_line(cp.stdout, "slirp4netns").startswith("[ok  ]")
    assert _doctor_line(cp.stdout, "store").startswith("[ok  ]")
    assert not list(rl.data_home.glob("**/.rootless-doctor-*")), "doctor left its scratch store"


def test_a_store_that_cannot_be_created_fails_doctor_and_run(rl: RootlessEnv) -> None:
    nowhere: dict[str, str | None] = {"HOME": "/nonexistent", "XDG_DATA_HOME": None}
    cp = rl("doctor", env=nowhere)
    assert cp.returncode == 1, cp.stdout
    line = _doctor_line(cp.stdout, "store")
    assert line.startswith("[FAIL]") and "/nonexistent/.local/share/rootless/storage cannot be created" in line
    assert rl("pull", "busybox", env=nowhere).returncode == 125


def test_an_unparsable_config_is_one_fail_line_and_doctor_goes_on(rl: RootlessEnv) -> None:
    rl.write_config("[registry\nbroken")
    cp = rl("doctor")
    assert cp.returncode == 1 and "Traceback" not in cp.stderr, cp
    fails = [ln for ln in cp.stdout.splitlines() if ln.startswith("[FAIL]")]
    assert len(fails) == 1 and fails[0].startswith("[FAIL] config: ") and "invalid TOML" in fails[0], cp.stdout
    assert "user namespace" in cp.stdout  # the other checks still ran
    assert rl("ps").returncode == 125  # as every other command fails


def test_a_config_that_is_not_utf8_is_one_line_naming_file_and_line(rl: RootlessEnv) -> None:
    rl.config_path.write_bytes(b'unqualified-search = ["docker.io"]\n# caf\xe9\n')
    cp = rl("ps")
    assert cp.returncode == 125, cp
    lines = cp.stderr.splitlines()
    assert lines[0] == f"Error: config {rl.config_path} contains invalid UTF-8 at line 2 (byte 0xe9)", cp.stderr
    assert "internal error" not in cp.stderr and len(lines) == 2
    # a BOM is no error
    rl.config_path.write_bytes(b'\xef\xbb\xbfunqualified-search = ["docker.io"]\n')
    assert rl("ps").returncode == 0


def test_rootless_config_naming_a_missing_file_is_an_error(rl: RootlessEnv) -> None:
    cp = rl("ps", env={"ROOTLESS_CONFIG": str(rl.base / "missing.toml")})
    assert cp.returncode == 125 and f"config {rl.base / 'missing.toml'} (ROOTLESS_CONFIG) does not exist" in cp.stderr


def test_env_files_latin1_binary_and_bom(rlb: RootlessEnv) -> None:
    rl = rlb
    latin = rl.home / "latin1.env"
    latin.write_bytes(b"A=1\nNAME=Jos\xe9\n")
    cp = rl("run", "--rm", "--network", "none", "--env-file", str(latin), BUSYBOX, "true")
    assert cp.returncode == 125, cp
    assert cp.stderr.splitlines()[0] == f"Error: env file {latin} contains invalid UTF-8 at line 2 (byte 0xe9)"
    binary = rl.home / "binary.env"
    binary.write_bytes(bytes(range(256)))
    cp = rl("run", "--rm", "--network", "none", "--env-file", str(binary), BUSYBOX, "true")
    assert cp.returncode == 125 and "contains invalid UTF-8 at line 2 (byte 0x80)" in cp.stderr, cp
    bom = rl.home / "bom.env"
    bom.write_bytes(b"\xef\xbb\xbfFIRST=one\nSECOND=two\n")
    cp = rl("run", "--rm", "--network", "none", "--env-file", str(bom), BUSYBOX, "sh", "-c", "echo $FIRST $SECOND")
    assert cp.returncode == 0 and cp.stdout == "one two\n", cp


def test_image_prune_removes_a_stale_partial_download(rlb: RootlessEnv) -> None:
    partial = rl_partial = rlb.store / "tmp" / (("ab" * 32) + ".partial")
    rl_partial.write_bytes(b"half a layer")
    rlb("image", "prune", "-f", check=True)
    assert not partial.exists()


def test_a_read_only_store_changes_nothing_and_names_the_directory(rlb: RootlessEnv,
                                                                   images: TestImages) -> None:
    rl = rlb
    images.require("library/alpine:latest")
    before = rl.images_json()
    os.chmod(rl.store, 0o500)
    try:
        for args in (("tag", BUSYBOX, "extra:1"), ("pull", "alpine"), ("rmi", "-f", BUSYBOX)):
            cp = rl(*args)
            assert cp.returncode == 125, (args, cp)
            assert cp.stderr.startswith(f"Error: the store is read-only: {rl.store} is not writable"), cp.stderr
            assert "Untagged" not in cp.stdout and "Traceback" not in cp.stderr
        assert rl.images_json() == before
    finally:
        os.chmod(rl.store, 0o700)


def test_rmi_of_an_extra_tag_of_an_image_in_use_untags_it(rlb: RootlessEnv) -> None:
    rl = rlb
    rl("create", "--name", "user", BUSYBOX, "true", check=True)
    rl("tag", BUSYBOX, "extra:1", check=True)
    cp = rl("rmi", "extra:1")
    assert cp.returncode == 0 and cp.stdout == "Untagged: docker.io/library/extra:1\n", cp
    cp = rl("rmi", BUSYBOX)  # its last name: the image itself, which the container uses
    assert cp.returncode == 2 and "in use by 1 container" in cp.stderr, cp
    rl("rm", "user", check=True)


# --- invalid values (items 9 and 15): one line each, nothing done


@pytest.mark.parametrize("args,message", [
    (("run", "--rm", "--dns", "notanip", BUSYBOX, "true"), "Error: --dns notanip: notanip is not an ip address"),
    (("run", "--rm", "--hostname", "h" * 100, BUSYBOX, "true"), "more than the kernel's limit of 64"),
    (("run", "--rm", "--tmpfs", "/x:size=banana", BUSYBOX, "true"), "size='banana' is not a size"),
    (("ps", "--filter", "status=weird"), "'weird' is not a container state"),
    (("pull", "busybox:t\u00e4g"), "bad tag"),
    (("pull", "localhost:99999/busybox"), "port 99999"),
])
def test_invalid_values_are_one_line(rlb: RootlessEnv, args: tuple[str, ...], message: str) -> None:
    cp = rlb(*args)
    assert cp.returncode == 125, cp
    assert message in cp.stderr.splitlines()[0], cp.stderr
    assert "Invalid argument" not in cp.stderr and "Traceback" not in cp.stderr
    assert rlb("ps", "-aq").stdout == ""


def test_exec_workdir_must_be_absolute_and_exist(rlb: RootlessEnv) -> None:
    rl = rlb
    rl("run", "-d", "--name", "w", BUSYBOX, "sleep", "60", check=True)
    try:
        cp = rl("exec", "-w", "relative", "w", "pwd")
        assert cp.returncode == 125 and "must be an absolute path" in cp.stderr, cp
        cp = rl("exec", "-w", "/nonexistent", "w", "pwd")
        assert cp.returncode != 0 and "/nonexistent" in cp.stderr, cp
        assert rl("exec", "w", "test", "-e", "/nonexistent").returncode == 1, "exec -w created the directory"
        assert rl("exec", "-w", "/etc", "w", "pwd").stdout == "/etc\n"
    finally:
        rl("rm", "-f", "w")


def test_root_naming_a_file_is_refused(rl: RootlessEnv) -> None:
    f = rl.base / "a-file"
    f.write_text("")
    cp = rl("--root", str(f), "images")
    assert cp.returncode == 125 and f"Error: --root {f} is not a directory" in cp.stderr, cp
    cp = rl("--runroot", str(f), "ps")
    assert cp.returncode == 125 and f"Error: --runroot {f} is not a directory" in cp.stderr, cp


# --- run --platform (item 3) and --platform OS alone (item 15)


def test_run_platform_uses_the_image_of_that_platform(rl: RootlessEnv, images: TestImages) -> None:
    images.require("test/multiarch:latest")
    rl("pull", "-q", "test/multiarch", check=True)
    assert rl.inspect("test/multiarch")["Architecture"] == "amd64"
    cp = rl("run", "--rm", "--pull", "never", "--platform", "linux/arm64", "test/multiarch", "true")
    assert cp.returncode == 125 and "is stored for linux/amd64, not linux/arm64" in cp.stderr, cp
    # without --pull never: the arm64 image is pulled (its command cannot run on this host)
    rl("run", "--rm", "--platform", "linux/arm64", "test/multiarch", "true")
    assert rl.inspect("test/multiarch")["Architecture"] == "arm64"
    cp = rl("run", "--rm", "--platform", "weird/arch", "test/multiarch", "true")
    pull = rl("pull", "--platform", "weird/arch", "test/multiarch")
    assert cp.returncode == pull.returncode == 125
    assert cp.stderr.splitlines()[0] == pull.stderr.splitlines()[0], (cp.stderr, pull.stderr)


def test_platform_may_name_the_os_alone(rlb: RootlessEnv) -> None:
    cp = rlb("run", "--rm", "--platform", "linux", BUSYBOX, "true")
    assert cp.returncode == 0 and "Warning" not in cp.stderr, cp


# --- Ctrl-C during a layer unpack (item 13)


def test_ctrl_c_during_an_unpack_stops_at_once_and_the_next_pull_succeeds(rl: RootlessEnv,
                                                                          images: TestImages) -> None:
    import signal
    import time

    images.require("library/debian:bookworm")
    p = rl.popen("pull", "debian:bookworm")
    tmp, layers = rl.store / "tmp", rl.store / "layers"
    deadline = time.monotonic() + 120
    while not (tmp.is_dir() and any(n.name.startswith("layer-") for n in tmp.iterdir())):
        assert p.poll() is None, p.communicate()
        assert time.monotonic() < deadline, "the unpack never started"
        time.sleep(0.005)
    time.sleep(0.1)  # well inside the unpack of a 120 MB layer
    t0 = time.monotonic()
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=30)
    took = time.monotonic() - t0
    assert p.returncode == 130, err
    assert "Traceback" not in err
    # the unpack was cut short, not waited for: no layer was stored
    assert not [d for d in layers.iterdir() if not d.name.startswith(".")], "the unpack ran to its end"
    assert took < 2.0, f"exit took {took:.2f}s"
    cp = rl("pull", "-q", "debian:bookworm", timeout=240)
    assert cp.returncode == 0, cp.stderr
    assert not [n for n in tmp.iterdir() if n.name.startswith("layer-")], "the cut unpack's tmp entry stayed"
    assert rl("run", "--rm", "--network", "none", "debian:bookworm", "true").returncode == 0


def test_boolean_flags_take_a_value(rlb: RootlessEnv) -> None:
    cp = rlb("run", "--rm=false", "--name", "kept", BUSYBOX, "true")
    assert cp.returncode == 0, cp.stderr
    assert _status(rlb, "kept") == "exited"  # --rm=false: the container stays
    rlb("rm", "kept", check=True)
