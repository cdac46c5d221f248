"""Bad input gets one clear line, exit 125, no traceback, and loses nothing (issue 2)."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

from tests import imagebuild as ib
from tests import testimages as ti
from tests.integration.harness import Fault, RegistryProxy, RootlessEnv, assert_clean_error


def test_unknown_image(rl: RootlessEnv) -> None:
    assert_clean_error(rl("pull", "nosuchimage"), 125, "nosuchimage")


def test_unknown_tag(rl: RootlessEnv) -> None:
    assert_clean_error(rl("pull", "alpine:nope"), 125, "nope")


def test_unknown_image_direct(rl: RootlessEnv, registry) -> None:
    ref = f"{registry.host}/library/nosuch:latest"
    assert_clean_error(rl("pull", ref), 125, "nosuch")


def test_unknown_digest(rl: RootlessEnv) -> None:
    assert_clean_error(rl("pull", "alpine@sha256:" + "0" * 64), 125)


def test_invalid_reference(rl: RootlessEnv) -> None:
    for bad in ("UPPER/case", "alpine:", "a b", "alpine@sha256:1234"):
        assert_clean_error(rl("pull", bad), 125)


def test_registry_down(rl: RootlessEnv, dead_port: int) -> None:
    t = time.monotonic()
    cp = rl("pull", f"127.0.0.1:{dead_port}/library/busybox", timeout=120)
    line = assert_clean_error(cp, 125)
    assert f"127.0.0.1:{dead_port}" in line, line
    assert time.monotonic() - t < 60, "a refused connection should fail fast"


def test_no_image_for_the_platform(rl: RootlessEnv) -> None:
    host = ib.host_platform()
    line = assert_clean_error(rl("pull", "test/s390x-only"), 125)
    assert host.architecture in line or "platform" in line.lower(), line
    assert rl.images_json() == []


def test_bad_platform_value(rl: RootlessEnv) -> None:
    assert_clean_error(rl("pull", "--platform", "notaplatform", "alpine"), 125)


def test_corrupted_blob_rejected_and_not_stored(rl: RootlessEnv, images, faults: RegistryProxy) -> None:
    img = images["test/corrupt:latest"].image
    bad = img.layers[1]
    faults.add_fault(Fault("corrupt", digest=bad.digest))
    cp = rl("pull", "test/corrupt", timeout=120)
    line = assert_clean_error(cp, 125)
    assert bad.hex[:12] in line or "digest" in line.lower(), line
    assert not (rl.store / "blobs" / "sha256" / bad.hex).exists(), "a corrupt blob entered the store"
    assert rl.check_blobs() == []
    assert not rl.layer_dir(bad.diff_id).exists()
    assert rl.images_json() == []
    # the store still works and the same pull succeeds once the bytes are right
    faults.clear_faults()
    cp = rl("pull", "-q", "test/corrupt", check=True)
    assert cp.stdout.strip() == img.id


def test_hostile_layer_cannot_write_outside(rl: RootlessEnv, registry, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    name = f"test/evil-{rl.marker}"
    img = ib.make_image([ti.evil_layer(str(outside))], cmd=["sh"])
    with registry.pusher() as p:
        p.push_image(name, "latest", img)
    cp = rl("pull", f"{registry.host}/{name}", timeout=120)
    assert cp.returncode in (0, 125), cp.stderr
    assert "Traceback" not in cp.stderr
    if cp.returncode == 125:
        assert_clean_error(cp, 125)
    assert os.listdir(outside) == [], f"files written outside the layer: {os.listdir(outside)}"
    layers = rl.store / "layers"
    for top in (rl.base, tmp_path):
        for dirpath, _dirs, files in os.walk(top):
            for f in files:
                if f.startswith("escape"):
                    p = Path(dirpath) / f
                    assert layers in p.parents and p.parent != layers, f"escaped: {p}"
    st = os.lstat("/etc/passwd")
    assert st.st_nlink == 1 or st.st_uid == 0, "a hardlink to /etc/passwd was made"


def test_debug_log_level_shows_traceback_only_then(rl: RootlessEnv) -> None:
    cp = rl("--log-level", "debug", "pull", "nosuchimage")
    assert cp.returncode == 125
    assert "Error:" in cp.stderr


def test_unknown_command_and_option(rl: RootlessEnv) -> None:
    cp = rl("frobnicate")
    assert cp.returncode != 0 and "Traceback" not in cp.stderr
    cp = rl("pull", "--no-such-option", "alpine")
    assert cp.returncode != 0 and "Traceback" not in cp.stderr


def test_full_disk_is_one_clear_line_and_leaves_no_image(rl: RootlessEnv) -> None:
    """A store on a file system that fills up mid-pull (a 400 kB tmpfs mounted in a user and
    mount namespace of our own, where the user may mount one) fails with ENOSPC's remedy."""
    script = ('mkdir -p "$1" && mount -t tmpfs -o size=400k tmpfs "$1" && shift && "$@"; rc=$?; '
              'echo "images: $(ls "$ROOT/images" 2>/dev/null | wc -l)"; exit $rc')
    small = rl.base / "small"
    root = small / "store"
    env = {**rl.env, "ROOT": str(root)}
    debug = os.environ.get("RL_DEBUG_ARGS", "").split()  # e.g. "--log-level debug" to see a traceback
    cp = subprocess.run(["unshare", "-Urm", "sh", "-c", script, "sh", str(small), *rl.command, *debug,
                         "--root", str(root), "--runroot", str(small / "run"), "pull", "test/sixlayer"],
                        env=env, cwd=rl.home, text=True, capture_output=True, timeout=120)
    assert cp.returncode == 125, (cp.returncode, cp.stdout, cp.stderr)
    errors = [ln for ln in cp.stderr.splitlines() if ln.startswith("Error:")]
    assert len(errors) == 1 and "No space left on device" in errors[0], cp.stderr
    assert "blob sha256:" in errors[0] or "layer" in errors[0], errors[0]  # names the object
    assert "Traceback" not in cp.stderr
    assert "full" in cp.stderr.split("Hint:", 1)[-1], cp.stderr
    assert "images: 0" in cp.stdout, cp.stdout
