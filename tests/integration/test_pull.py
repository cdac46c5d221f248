"""`rootless pull` against the real registry, as an unprivileged user (issue 2, CLI.md)."""

from __future__ import annotations

import os
import re
import stat
import subprocess
import time

import pytest

from tests.imagebuild import host_platform
from tests.integration.harness import Fault, RegistryProxy, RootlessEnv, Tty

HEX64 = re.compile(r"^[0-9a-f]{64}$")


def layer_of(images, name: str, index: int):  # type: ignore[no-untyped-def]
    return images[name].for_arch(host_platform().architecture).layers[index]


# --------------------------------------------------------------------------- names and output


def test_pull_short_name_through_mirror(rl: RootlessEnv, images, mirror: RegistryProxy) -> None:
    mark = mirror.mark()
    cp = rl("pull", "alpine", check=True)
    lines = cp.stdout.strip().splitlines()
    assert lines and lines[-1] == images["library/alpine:latest"].id, cp.stdout
    assert "docker.io/library/alpine:latest" in cp.stdout + cp.stderr
    assert any(r.repo == "library/alpine" for r in mirror.since(mark)), "the pull did not use the mirror"
    names = [n for im in rl.images_json() for n in im.get("Names", [])]
    assert "docker.io/library/alpine:latest" in names


def test_pull_quiet_prints_only_the_id(rl: RootlessEnv, images) -> None:
    cp = rl("pull", "-q", "busybox", check=True)
    assert HEX64.match(cp.stdout.strip()), repr(cp.stdout)
    assert cp.stdout.strip() == images["library/busybox:latest"].id
    assert cp.stdout.count("\n") == 1


def test_pull_creates_the_store_in_the_data_dir(rl: RootlessEnv, images) -> None:
    rl("pull", "-q", "busybox", check=True)
    assert rl.store.is_dir(), f"no store at {rl.store}"
    config = images["library/busybox:latest"].image.config
    blobs = {p.name for p in rl.blob_files()}
    assert config.hex in blobs
    assert rl.check_blobs() == []


def test_pull_fully_qualified_without_mirror(rl: RootlessEnv, images, registry) -> None:
    ref = f"{registry.host}/library/busybox:latest"
    cp = rl("pull", "-q", ref, check=True)
    assert cp.stdout.strip() == images["library/busybox:latest"].id
    names = [n for im in rl.images_json() for n in im.get("Names", [])]
    assert ref in names


def test_pull_by_digest(rl: RootlessEnv, images) -> None:
    alpine = images["library/alpine:3.20"]
    cp = rl("pull", "-q", f"alpine@{alpine.digest}", check=True)
    assert cp.stdout.strip() == alpine.id
    cp = rl("pull", "-q", f"alpine:3.20@{alpine.digest}", check=True)
    assert cp.stdout.strip() == alpine.id


def test_pull_user_repository(rl: RootlessEnv, images) -> None:
    cp = rl("pull", "-q", "test/dedup", check=True)
    assert cp.stdout.strip() == images["test/dedup:latest"].id


# --------------------------------------------------------------------------- unpacking


@pytest.fixture
def multilayer(rl: RootlessEnv, images):  # type: ignore[no-untyped-def]
    cp = rl("pull", "test/multilayer", check=True)
    image = images["test/multilayer:latest"].image
    return cp, [rl.layer_dir(d) for d in image.diff_ids]


def test_multilayer_owners_map_into_the_subuid_range(rl: RootlessEnv, multilayer, subid_start: int) -> None:
    _, dirs = multilayer
    l2 = dirs[1]
    st = os.lstat(l2 / "owned/user1000")
    assert (st.st_uid, st.st_gid) == (subid_start + 999, subid_start + 999), st
    st = os.lstat(l2 / "owned/nobody")
    assert (st.st_uid, st.st_gid) == (subid_start + 65533, subid_start + 65533), st
    st = os.lstat(l2 / "owned/dir1000")
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (subid_start + 999, subid_start + 999, 0o750)
    # namespace root is the user
    st = os.lstat(l2 / "links/target.txt")
    assert st.st_uid == os.getuid()


def test_multilayer_modes_links_xattrs(rl: RootlessEnv, multilayer) -> None:
    _, dirs = multilayer
    l2 = dirs[1]
    assert stat.S_IMODE(os.lstat(l2 / "usr/local/bin/suid").st_mode) == 0o4755
    assert stat.S_IMODE(os.lstat(l2 / "usr/local/bin/sgid").st_mode) == 0o2755
    assert stat.S_IMODE(os.lstat(l2 / "sticky").st_mode) == 0o1777
    assert stat.S_IMODE(os.lstat(l2 / "owned/user1000").st_mode) == 0o640
    assert os.lstat(l2 / "links/hard").st_ino == os.lstat(l2 / "links/target.txt").st_ino
    assert os.lstat(l2 / "links/target.txt").st_nlink == 2
    assert os.readlink(l2 / "links/rel") == "target.txt"
    assert os.readlink(l2 / "links/abs") == "/links/target.txt"
    assert os.readlink(l2 / "links/dangling") == "/nonexistent/file"
    assert os.getxattr(l2 / "xattr/file", "user.test") == b"hello"
    assert stat.S_ISFIFO(os.lstat(l2 / "data/fifo").st_mode)
    assert (l2 / "data/keep.txt").read_text() == "lower version\n"


def test_multilayer_whiteouts_for_overlay(rl: RootlessEnv, multilayer) -> None:
    _, dirs = multilayer
    l3 = dirs[2]
    st = os.lstat(l3 / "data/removed.txt")
    assert stat.S_ISCHR(st.st_mode) and st.st_rdev == 0, "a whiteout must be a 0:0 character device"
    assert not (l3 / "data/.wh.removed.txt").exists()
    assert os.getxattr(l3 / "opq", "user.overlay.opaque") == b"y"
    assert not (l3 / "opq/.wh..wh..opq").exists()
    assert (l3 / "opq/new").read_text() == "only file left in opq\n"
    assert (l3 / "data/keep.txt").read_text() == "upper version\n"
    l4 = dirs[3]
    assert (l4 / "emptydir").is_dir() and os.listdir(l4 / "emptydir") == []
    assert os.listdir(dirs[4]) == [], "the empty layer must unpack to an empty directory"


def test_multilayer_device_nodes_skipped_with_one_warning(rl: RootlessEnv, multilayer) -> None:
    cp, dirs = multilayer
    warnings = [ln for ln in cp.stderr.splitlines() if ln.startswith("Warning:")]
    assert len([w for w in warnings if "device" in w.lower()]) == 1, cp.stderr
    assert not os.path.lexists(dirs[1] / "dev/mynull")


def test_multilayer_ids_outside_the_range_become_the_mapped_root(rl: RootlessEnv, multilayer) -> None:
    cp, dirs = multilayer
    warnings = [ln for ln in cp.stderr.splitlines() if ln.startswith("Warning:")]
    assert len([w for w in warnings if "cannot hold" in w]) == 1, cp.stderr
    assert "1 file owned by IDs your ID mapping cannot hold" in cp.stderr, cp.stderr
    st = os.lstat(dirs[1] / "owned/huge-id")
    assert (st.st_uid, st.st_gid) == (os.getuid(), os.getgid())


def test_multilayer_seen_from_the_namespace(rl: RootlessEnv, multilayer) -> None:
    _, dirs = multilayer
    l2 = dirs[1]
    cp = rl("unshare", "stat", "-c", "%u:%g %a %n", str(l2 / "owned/user1000"), str(l2 / "owned/nobody"),
            str(l2 / "usr/local/bin/suid"), check=True)
    got = [ln.split()[:2] for ln in cp.stdout.splitlines()]
    assert got == [["1000:1000", "640"], ["65534:65534", "644"], ["0:0", "4755"]], cp.stdout
    assert rl("unshare", "id", "-u", check=True).stdout.strip() == "0"


def test_busybox_layer_contents(rl: RootlessEnv, images) -> None:
    rl("pull", "-q", "busybox", check=True)
    d = rl.layer_dir(images["library/busybox:latest"].image.diff_ids[0])
    assert (d / "bin/busybox").is_file()
    assert os.readlink(d / "bin/sh") == "/bin/busybox"
    assert stat.S_IMODE(os.lstat(d / "tmp").st_mode) == 0o1777
    assert stat.S_IMODE(os.lstat(d / "root").st_mode) == 0o700
    assert "user:x:1000:1000" in (d / "etc/passwd").read_text()


# --------------------------------------------------------------------------- platforms and formats


@pytest.mark.parametrize("name", ["test/multiarch", "test/multiarch-list"])
def test_platform_arm64_from_index(rl: RootlessEnv, images, name: str) -> None:
    pushed = images[f"{name}:latest"]
    arm = pushed.for_arch("arm64")
    cp = rl("pull", "-q", "--platform", "linux/arm64", name, check=True)
    assert cp.stdout.strip() == arm.id
    info = rl.inspect(name)
    assert info["Architecture"] == "arm64"
    assert (rl.layer_dir(arm.diff_ids[-1]) / "arch").read_text() == "arm64\n"


@pytest.mark.parametrize("name", ["test/multiarch", "test/multiarch-list"])
def test_platform_default_is_the_host(rl: RootlessEnv, images, name: str) -> None:
    host = host_platform().architecture
    want = images[f"{name}:latest"].for_arch(host)
    cp = rl("pull", "-q", name, check=True)
    assert cp.stdout.strip() == want.id
    assert rl.inspect(name)["Architecture"] == host
    assert (rl.layer_dir(want.diff_ids[-1]) / "arch").read_text() == f"{host}\n"


def test_platform_explicit_other_arch_only_index(rl: RootlessEnv, images) -> None:
    cp = rl("pull", "-q", "--platform", "linux/s390x", "test/s390x-only", check=True)
    assert cp.stdout.strip() == images["test/s390x-only:latest"].for_arch("s390x").id


def test_zstd_layers(rl: RootlessEnv, images) -> None:
    img = images["test/zstd:latest"].image
    cp = rl("pull", "-q", "test/zstd", check=True)
    assert cp.stdout.strip() == img.id
    assert (rl.layer_dir(img.diff_ids[0]) / "bin/busybox").is_file()
    assert (rl.layer_dir(img.diff_ids[1]) / "zstd-top.txt").read_text() == "zstd-top\n"


def test_uncompressed_layer(rl: RootlessEnv, images) -> None:
    img = images["test/uncompressed:latest"].image
    rl("pull", "-q", "test/uncompressed", check=True)
    assert (rl.layer_dir(img.diff_ids[0]) / "uncompressed.txt").read_text() == "uncompressed\n"


# --------------------------------------------------------------------------- downloading


def test_shared_base_layer_downloaded_once(rl: RootlessEnv, images, mirror: RegistryProxy) -> None:
    base = images["library/busybox:latest"].image.layers[0]
    top = images["library/alpine:3.20"].image.layers[1]
    rl("pull", "-q", "busybox", check=True)
    mark = mirror.mark()
    rl("pull", "-q", "alpine:3.20", check=True)
    gets = mirror.blob_gets(mark)
    layer_gets = [r.blob for r in gets if r.blob != images["library/alpine:3.20"].image.config.digest]
    assert layer_gets == [top.digest], f"second pull fetched {layer_gets}, only {top.digest} is new"
    assert not mirror.blob_gets(mark, base.digest)


def test_second_pull_downloads_nothing(rl: RootlessEnv, images, mirror: RegistryProxy) -> None:
    rl("pull", "-q", "alpine", check=True)
    mark = mirror.mark()
    cp = rl("pull", "-q", "alpine", check=True)
    assert cp.stdout.strip() == images["library/alpine:latest"].id
    assert mirror.blob_gets(mark) == []


def test_concurrent_pulls_download_each_blob_once(rl: RootlessEnv, images, faults: RegistryProxy) -> None:
    img = images["test/concurrent:latest"].image
    big = img.layers[1]
    # slow enough (8 MiB at 4 MiB/s) that the two pulls overlap
    faults.add_fault(Fault("slow", digest=big.digest, rate=4 << 20))
    mark = faults.mark()
    procs = [rl.popen("pull", "-q", "test/concurrent") for _ in range(2)]
    outs = [p.communicate(timeout=180) for p in procs]
    for p, (out, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err
        assert out.strip() == img.id
    for blob in img.blobs:
        n = len(faults.blob_gets(mark, blob.digest))
        assert n == 1, f"{blob.digest} downloaded {n} times by two concurrent pulls"
    assert rl.check_blobs() == []


def test_redirect_to_blob_storage_followed(rl: RootlessEnv, images, faults: RegistryProxy) -> None:
    faults.add_fault(Fault("redirect", repo="test/redirect"))
    mark = faults.mark()
    cp = rl("pull", "-q", "test/redirect", check=True)
    assert cp.stdout.strip() == images["test/redirect:latest"].id
    assert any(r.path.startswith("/_blobstore/") for r in faults.since(mark)), "no redirect was followed"


def test_transient_errors_retried(rl: RootlessEnv, images, faults: RegistryProxy) -> None:
    layer = images["test/flaky:latest"].image.layers[1]
    faults.add_fault(Fault("status", digest=layer.digest, status=503, times=2))
    cp = rl("pull", "-q", "test/flaky", check=True, timeout=120)
    assert cp.stdout.strip() == images["test/flaky:latest"].id


def test_interrupted_blob_resumes_with_range(rl: RootlessEnv, images, faults: RegistryProxy) -> None:
    layer = images["test/cut:latest"].image.layers[1]
    faults.add_fault(Fault("cut", digest=layer.digest, times=1))
    mark = faults.mark()
    cp = rl("pull", "-q", "test/cut", check=True, timeout=120)
    assert cp.stdout.strip() == images["test/cut:latest"].id
    gets = faults.blob_gets(mark, layer.digest)
    assert len(gets) >= 2, gets
    ranged = [g for g in gets[1:] if g.headers.get("range", "").startswith("bytes=")]
    assert ranged, f"the retry did not resume with a Range header: {[g.headers for g in gets]}"
    start = int(ranged[0].headers["range"].split("=")[1].split("-")[0])
    assert start > 0
    assert ranged[0].status == 206


# --------------------------------------------------------------------------- killed pulls


def _layer_listing(rl: RootlessEnv, layer_dir) -> set[str]:  # type: ignore[no-untyped-def]
    cp = rl("unshare", "find", str(layer_dir), "-mindepth", "1", check=True, timeout=120)
    prefix = str(layer_dir) + "/"
    return {ln[len(prefix):] for ln in cp.stdout.splitlines() if ln.startswith(prefix)}


@pytest.mark.slow
def test_pull_killed_at_any_instant_leaves_a_consistent_store(rl: RootlessEnv, images,
                                                             mirror: RegistryProxy) -> None:
    debian = images.require("library/debian:bookworm")
    img = debian.image
    timeline = []
    for delay in (0.05, 0.2, 0.5, 1.0, 2.0, 3.5):
        p = rl.popen("pull", "-q", "debian:bookworm")
        time.sleep(delay)
        finished = p.poll() is not None
        p.kill()
        p.communicate()
        timeline.append((delay, finished))
        # every blob file in the store is whole and correct, whatever instant it died at
        assert rl.check_blobs() == [], f"after a kill at {delay}s"
        assert rl("images", timeout=60).returncode == 0, f"store unreadable after a kill at {delay}s"
        if finished:
            break
    print(f"kills (delay s, pull had finished): {timeline}")
    assert sum(1 for _, finished in timeline if not finished) >= 3, f"too few kills landed mid-pull: {timeline}"
    left = rl.wait_no_processes(15)
    assert not left, f"processes outlived the killed pull: {left}"
    cp = rl("pull", "-q", "debian:bookworm", check=True, timeout=300)
    assert cp.stdout.strip() == img.id
    assert rl.check_blobs() == []
    layer = img.layers[0]
    got = _layer_listing(rl, rl.layer_dir(layer.diff_id))
    want = {m.rstrip("/") for m in layer.members}
    assert not (want - got), f"{len(want - got)} files missing from the layer, e.g. {sorted(want - got)[:5]}"
    assert not (got - want), f"unexpected files in the layer: {sorted(got - want)[:5]}"
    mark = mirror.mark()
    rl("pull", "-q", "debian:bookworm", check=True)
    assert mirror.blob_gets(mark) == [], "a complete image was downloaded again"


@pytest.mark.slow
def test_debian_pull(rl: RootlessEnv, images) -> None:
    debian = images.require("library/debian:bookworm")
    t = time.monotonic()
    cp = rl("pull", "debian:bookworm", check=True, timeout=300)
    elapsed = time.monotonic() - t
    assert cp.stdout.strip().splitlines()[-1] == debian.id
    d = rl.layer_dir(debian.image.diff_ids[0])
    assert (d / "etc/debian_version").read_text().startswith("12")
    print(f"debian:bookworm cold pull: {elapsed:.2f}s")


@pytest.mark.slow
def test_sixlayer_pull(rl: RootlessEnv, images) -> None:
    six = images.require("test/sixlayer:latest")
    assert len(six.image.layers) == 6
    cp = rl("pull", "-q", "test/sixlayer", check=True, timeout=300)
    assert cp.stdout.strip() == six.id


def test_pull_writes_progress_to_a_tty(rl: RootlessEnv, images) -> None:
    """On a terminal the pull shows progress and still ends with the ID."""
    script = subprocess.run(["which", "script"], capture_output=True, text=True).stdout.strip()
    if not script:
        pytest.skip("script(1) is not installed")
    cmd = " ".join([*rl.command, "pull", "busybox"])
    cp = subprocess.run([script, "-qefc", cmd, "/dev/null"], env=rl.env, cwd=rl.home, capture_output=True,
                        text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert cp.returncode == 0, cp.stdout + cp.stderr
    assert "Traceback" not in cp.stdout
    assert images["library/busybox:latest"].id in cp.stdout


def test_pull_progress_on_a_tmux_terminal(rl: RootlessEnv, images) -> None:
    tty = Tty(rl, [*rl.command, "pull", "alpine:3.20"])
    try:
        assert tty.wait_exit() == 0, tty.screen()
        screen = tty.screen()
    finally:
        tty.close()
    assert "Traceback" not in screen
    assert images["library/alpine:3.20"].id in screen.replace("\n", "")
