"""save/load, import/export and the file transports of push, as the unprivileged user, with
the real other side where installed (podman load/save, skopeo inspect/copy)."""

from __future__ import annotations

import gzip
import io
import json
import os
import shutil
import subprocess
import tarfile
import uuid
from pathlib import Path

import pytest

from tests.integration.conftest import need
from tests.integration.harness import Registry, RegistryProxy, RootlessEnv, Tty, assert_clean_error


def _tree_tarball(path: Path) -> None:
    """A small file tree as a gzip tarball: busybox, a symlink, a file."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, data, mode in (("bin/busybox", Path("/bin/busybox").read_bytes(), 0o755),
                                 ("etc/hello", b"hi\n", 0o644)):
            ti = tarfile.TarInfo(name)
            ti.size, ti.mode, ti.mtime = len(data), mode, 1_600_000_000
            tf.addfile(ti, io.BytesIO(data))
        ti = tarfile.TarInfo("bin/sh")
        ti.type, ti.linkname, ti.mtime = tarfile.SYMTYPE, "busybox", 1_600_000_000
        tf.addfile(ti)
    path.write_bytes(gzip.compress(buf.getvalue()))


@pytest.fixture
def imported(rl: RootlessEnv) -> str:
    src = rl.home / "tree.tgz"
    _tree_tarball(src)
    cp = rl("import", "-c", 'CMD ["/bin/sh"]', "-c", "ENV A=1", "-m", "from a tarball", str(src), "mytest:1",
            check=True)
    assert cp.stdout.startswith("sha256:")
    return cp.stdout.strip()[7:]


def _podman(rl: RootlessEnv, *args: str, input_path: Path | None = None) -> subprocess.CompletedProcess[str]:
    need(bool(shutil.which("podman")), "podman is not installed (apt-get install podman)")
    env = dict(rl.env, CONTAINERS_STORAGE_CONF="/dev/null", CONTAINERS_CONF="/dev/null",
               CONTAINERS_REGISTRIES_CONF="/dev/null")
    base = rl.home / "podman"
    # podman refuses a --runroot longer than 50 characters
    runroot = Path(f"/tmp/rlp-{os.getuid()}-{abs(hash(str(base))) % 10**8}")
    return subprocess.run(["podman", "--root", str(base / "root"), "--runroot", str(runroot),
                           "--storage-driver", "vfs", "--cgroup-manager", "cgroupfs", "--events-backend", "file",
                           *args], env=env, capture_output=True, text=True, timeout=180,
                          stdin=subprocess.DEVNULL)


# --------------------------------------------------------------------------- import / export


def test_import_makes_a_one_layer_image(rl: RootlessEnv, imported: str) -> None:
    info = rl.inspect("mytest:1")
    assert info["Id"] == imported and info["Comment"] == "from a tarball"
    assert info["Config"]["Cmd"] == ["/bin/sh"] and "A=1" in info["Config"]["Env"]
    cp = rl("run", "--rm", "--network", "none", "mytest:1", "/bin/busybox", "cat", "/etc/hello", check=True)
    assert cp.stdout == "hi\n"


def _diff_ids(rl: RootlessEnv, name: str) -> list[str]:
    rec = json.loads((rl.store / "images" / f"{rl.inspect(name)['Id']}.json").read_text())
    return [layer["diff_id"] for layer in rec["layers"]]


@pytest.mark.parametrize("kind", ["plain", "bzip2", "xz", "zstd"])
def test_import_compressions_give_the_same_layer(rl: RootlessEnv, kind: str, tmp_path: Path) -> None:
    import bz2
    import lzma

    import zstandard

    gz = tmp_path / "t.tgz"
    _tree_tarball(gz)
    raw = gzip.decompress(gz.read_bytes())
    data = {"plain": raw, "bzip2": bz2.compress(raw), "xz": lzma.compress(raw),
            "zstd": zstandard.ZstdCompressor().compress(raw)}[kind]
    rl("import", "-q", str(gz), "ref:gz", check=True)
    p = tmp_path / f"t.{kind}"
    p.write_bytes(data)
    if kind == "plain":  # and from stdin
        cp = subprocess.run([*rl.command, "import", "-q", "-", f"ref:{kind}"], env=rl.env, input=data,
                            capture_output=True, timeout=60)
        assert cp.returncode == 0, cp.stderr
    else:
        rl("import", "-q", str(p), f"ref:{kind}", check=True)
    assert _diff_ids(rl, f"ref:{kind}") == _diff_ids(rl, "ref:gz") == ["sha256:" + __import__("hashlib").sha256(
        raw).hexdigest()]


def test_export_import_same_tree(rl: RootlessEnv, imported: str) -> None:
    rl("run", "--name", "c1", "--network", "none", "mytest:1", "sh", "-c",
       "echo new > /etc/new; rm /etc/hello; mkdir -p /var/x; echo y > /var/x/y", check=True)
    a = rl.home / "c1.tar"
    rl("export", "-o", str(a), "c1", check=True)
    with tarfile.open(a) as tf:
        names = tf.getnames()
    assert "etc/new" in names and "var/x/y" in names and "bin/busybox" in names
    assert "etc/hello" not in names and not any(".wh." in n for n in names)
    rl("import", "-q", str(a), "c1img", check=True)
    rl("run", "--name", "c2", "--network", "none", "c1img", "/bin/busybox", "true", check=True)
    b = rl.home / "c2.tar"
    rl("container", "export", "-o", str(b), "c2", check=True)
    assert a.read_bytes() == b.read_bytes()


def test_import_bad_input_leaves_nothing(rl: RootlessEnv, tmp_path: Path) -> None:
    gz = tmp_path / "t.tgz"
    _tree_tarball(gz)
    cut = tmp_path / "cut.tgz"
    cut.write_bytes(gz.read_bytes()[: gz.stat().st_size // 2])
    assert_clean_error(rl("import", str(cut), "cut:1"), 125, "corrupt")
    assert_clean_error(rl("import", str(tmp_path / "missing.tar")), 125, "missing.tar")
    assert_clean_error(rl("import", "-c", "FROM x", str(gz)), 125, "FROM")
    assert_clean_error(rl("import", str(gz), "Bad:Name:"), 125, "invalid")
    evil = io.BytesIO()
    with tarfile.open(fileobj=evil, mode="w") as tf:
        ti = tarfile.TarInfo("../escape")
        tf.addfile(ti, io.BytesIO(b""))
    (tmp_path / "evil.tar").write_bytes(evil.getvalue())
    assert_clean_error(rl("import", str(tmp_path / "evil.tar"), "evil:1"), 125, "..")
    assert rl.images_json() == []
    assert not [p for p in (rl.store / "tmp").iterdir() if not p.name.endswith(".lock")] \
        if (rl.store / "tmp").exists() else True


# --------------------------------------------------------------------------- save / load


@pytest.mark.parametrize("fmt", ["docker-archive", "oci-archive"])
def test_save_load_round_trip(rl: RootlessEnv, mirror: RegistryProxy, imported: str, fmt: str,
                              tmp_path: Path) -> None:
    src = f"{mirror.host}/library/alpine:latest"
    rl("pull", "-q", src, check=True)
    before = {n: rl.inspect(n) for n in (src, "mytest:1")}
    for name in before:
        out = tmp_path / f"{fmt}-{before[name]['Id']}.tar"
        rl("save", "--format", fmt, "-o", str(out), name, check=True)
    rl("rmi", "-a", check=True)
    for name in before:
        cp = rl("load", "-i", str(tmp_path / f"{fmt}-{before[name]['Id']}.tar"), check=True)
        full = src if name == src else "docker.io/library/mytest:1"
        assert cp.stdout.strip() == f"Loaded image: {full}"
        assert rl.inspect(name)["Id"] == before[name]["Id"]
    if fmt == "oci-archive":  # an OCI image keeps its manifest byte for byte
        assert rl.inspect("mytest:1")["Digest"] == before["mytest:1"]["Digest"]
    rl("run", "--rm", "--network", "none", src, "true", check=True)


def test_save_several_to_stdout_and_load_compressed_from_stdin(rl: RootlessEnv, mirror: RegistryProxy,
                                                              imported: str) -> None:
    src = f"{mirror.host}/library/busybox:latest"
    rl("pull", "-q", src, check=True)
    ids = {rl.inspect(n)["Id"] for n in (src, "mytest:1")}
    env = rl.env
    saved = subprocess.run([*rl.command, "save", src, "mytest:1"], env=env, capture_output=True, timeout=120,
                           stdin=subprocess.DEVNULL)
    assert saved.returncode == 0, saved.stderr
    with tarfile.open(fileobj=io.BytesIO(saved.stdout)) as tf:
        manifest = json.load(tf.extractfile("manifest.json"))  # type: ignore[arg-type]
        assert tf.extractfile("oci-layout") is not None and tf.extractfile("index.json") is not None
    assert sorted(t for e in manifest for t in e["RepoTags"]) == sorted([src, "mytest:1"])
    rl("rmi", "-a", check=True)
    loaded = subprocess.run([*rl.command, "load"], env=env, input=gzip.compress(saved.stdout, 1),
                            capture_output=True, timeout=120)
    assert loaded.returncode == 0, loaded.stderr
    assert {rl.inspect(n)["Id"] for n in (src, "mytest:1")} == ids


def test_load_refuses_bad_archives_and_leaves_nothing(rl: RootlessEnv, imported: str, tmp_path: Path) -> None:
    good = tmp_path / "good.tar"
    rl("save", "-o", str(good), "mytest:1", check=True)
    rl("rmi", "-a", check=True)
    data = good.read_bytes()
    cut = tmp_path / "cut.tar"
    cut.write_bytes(data[: len(data) // 2])
    assert_clean_error(rl("load", "-i", str(cut)), 125, "truncated")
    # a layer whose bytes do not match the diff ID the config names (same length)
    with tarfile.open(good) as tf:
        members = [(m, tf.extractfile(m).read() if m.isreg() else None) for m in tf.getmembers()]  # type: ignore[union-attr]
    bad = io.BytesIO()
    with tarfile.open(fileobj=bad, mode="w") as tf:
        for m, body in members:
            if body is not None and len(body) > 100_000:
                b = bytearray(body)
                b[len(b) // 2] ^= 0xFF
                body = bytes(b)
            tf.addfile(m, io.BytesIO(body) if body is not None else None)
    (tmp_path / "bad.tar").write_bytes(bad.getvalue())
    line = assert_clean_error(rl("load", "-i", str(tmp_path / "bad.tar")), 125)
    assert "digest" in line or "diff ID" in line
    (tmp_path / "junk").write_bytes(os.urandom(4096))
    assert_clean_error(rl("load", "-i", str(tmp_path / "junk")), 125)
    assert rl.images_json() == []
    tmp = rl.store / "tmp"
    assert not tmp.exists() or [p.name for p in tmp.iterdir()] == []


def test_save_refuses_a_terminal(rl: RootlessEnv, imported: str) -> None:
    need(bool(shutil.which("tmux")), "tmux is not installed")
    tty = Tty(rl, [*rl.command, "save", "mytest:1"])
    assert tty.wait_exit() == 125
    screen = tty.screen()
    assert "Error: refusing to write an image archive to the terminal" in screen and "Traceback" not in screen


# --------------------------------------------------------------------------- the other side


def test_podman_loads_ours_and_we_load_podmans(rl: RootlessEnv, imported: str, tmp_path: Path) -> None:
    for fmt in ("docker-archive", "oci-archive"):
        ours = tmp_path / f"ours-{fmt}.tar"
        rl("save", "--format", fmt, "-o", str(ours), "mytest:1", check=True)
        cp = _podman(rl, "load", "-i", str(ours))
        assert cp.returncode == 0, cp.stderr
        assert "Loaded image: docker.io/library/mytest:1" in cp.stdout + cp.stderr
    cp = _podman(rl, "images", "--format", "{{.ID}}", "--no-trunc")
    assert imported in cp.stdout
    rl("rmi", "-a", check=True)
    for fmt in ("docker-archive", "oci-archive"):
        theirs = tmp_path / f"theirs-{fmt}.tar"
        cp = _podman(rl, "save", "--format", fmt, "-o", str(theirs), "docker.io/library/mytest:1")
        assert cp.returncode == 0, cp.stderr
        cp = rl("load", "-i", str(theirs), check=True)
        assert "Loaded image: docker.io/library/mytest:1" in cp.stdout
        assert rl.inspect("mytest:1")["Id"] == imported
        rl("run", "--rm", "--network", "none", "mytest:1", "/bin/busybox", "cat", "/etc/hello", check=True)
        rl("rmi", "-a", check=True)


def test_push_transports_and_skopeo(rl: RootlessEnv, registry: Registry, imported: str,
                                    tmp_path: Path) -> None:
    # straight to the registry: the counting proxy passes one Accept header only
    need(bool(shutil.which("skopeo")), "skopeo is not installed (apt-get install skopeo)")
    repo = f"pushed/t{uuid.uuid4().hex[:10]}"
    dfile = tmp_path / "digest"
    rl("push", "-q", "--digestfile", str(dfile), "mytest:1", f"{registry.host}/{repo}:v1", check=True)
    cp = subprocess.run(["skopeo", "inspect", "--tls-verify=false", f"docker://{registry.host}/{repo}:v1"],
                        capture_output=True, text=True, timeout=60, env=rl.env)
    assert cp.returncode == 0, cp.stderr
    assert json.loads(cp.stdout)["Digest"] == dfile.read_text()
    cp = subprocess.run(["skopeo", "copy", "--src-tls-verify=false", f"docker://{registry.host}/{repo}:v1",
                         f"oci:{tmp_path / 'sk'}:x"], capture_output=True, text=True, timeout=60, env=rl.env)
    assert cp.returncode == 0, cp.stderr
    # our file transports, each loaded back
    for dest in (f"docker-archive:{tmp_path / 'd.tar'}", f"oci-archive:{tmp_path / 'o.tar'}",
                 f"oci:{tmp_path / 'odir'}"):
        rl("push", "-q", "mytest:1", dest, check=True)
    rl("push", "-q", "mytest:1", f"dir:{tmp_path / 'ddir'}", check=True)
    assert (tmp_path / "ddir" / "version").read_text().startswith("Directory Transport Version")
    cp = subprocess.run(["skopeo", "inspect", f"dir:{tmp_path / 'ddir'}"], capture_output=True, text=True,
                        timeout=60, env=rl.env)
    assert cp.returncode == 0, cp.stderr
    rl("rmi", "-a", check=True)
    for path in ("d.tar", "o.tar", "odir"):
        rl("load", "-i", str(tmp_path / path), check=True)
        assert rl.inspect("mytest:1")["Id"] == imported
        rl("rmi", "-a", check=True)
    # skopeo's own OCI layout of what we pushed loads too
    cp = rl("load", "-i", str(tmp_path / "sk"), check=True)
    assert rl.images_json()


def test_second_push_of_an_imported_image_compresses_nothing(rl: RootlessEnv, mirror: RegistryProxy,
                                                              imported: str) -> None:
    blobs = sorted(p.name for p in rl.blob_files())
    mark = mirror.mark()
    rl("push", "-q", "mytest:1", f"{mirror.host}/pushed/imp{uuid.uuid4().hex[:8]}", check=True)
    after_first = sorted(p.name for p in rl.blob_files())
    assert len(after_first) == len(blobs) + 1  # the layer compressed once, kept
    (kept,) = set(after_first) - set(blobs)
    # compressed while it uploaded: a body of unknown length (chunked), no staging pass first,
    # and the upload closed with the digest of the very blob kept
    patches = [r for r in mirror.since(mark) if r.method == "PATCH"]
    assert any("chunked" in r.headers.get("transfer-encoding", "") for r in patches), patches
    assert any(r.method == "PUT" and f"digest=sha256%3A{kept}" in r.path.replace(":", "%3A")
               for r in mirror.since(mark)), mirror.since(mark)
    assert not list((rl.store / "tmp").glob("*")), "nothing left in the store's tmp/"
    repo = f"pushed/imp{uuid.uuid4().hex[:8]}"
    mark = mirror.mark()
    cp = rl("push", "mytest:1", f"{mirror.host}/{repo}", check=True)
    assert sorted(p.name for p in rl.blob_files()) == after_first  # compressed nothing
    assert "mounted from" in cp.stderr  # and sent nothing: the first repository holds it
    assert not [r for r in mirror.since(mark) if r.method == "PATCH"]  # the config is mounted too


def test_dropped_upload_of_a_layer_compressed_on_the_way(rl: RootlessEnv, faults: RegistryProxy,
                                                       imported: str) -> None:
    from tests.integration.harness import Fault

    fault = faults.add_fault(Fault("drop", methods=("PATCH",), times=1))
    repo = f"pushed/drop{uuid.uuid4().hex[:8]}"
    blobs = sorted(p.name for p in rl.blob_files())
    rl("push", "-q", "mytest:1", f"{faults.host}/{repo}", check=True, timeout=120)
    assert fault.hits == 1  # dropped once, compressed and sent again
    assert len(rl.blob_files()) == len(blobs) + 1 and not rl.check_blobs()
    assert not list((rl.store / "tmp").glob("*")), "no partial blob left behind"
    rl("rmi", "-a", check=True)
    rl("pull", "-q", f"{faults.host}/{repo}", check=True)
    assert rl.inspect(f"{faults.host}/{repo}")["Id"] == imported


def test_sharing_events_as_podman_logs_them(rl: RootlessEnv, mirror: RegistryProxy, tmp_path: Path) -> None:
    """Podman 4.3's records: import → "tag" (ID, the name); save → "save" per image (ID, the
    output); load → "loadfromarchive" (the archive, no ID); push → "push" (ID, the
    destination as given, transport and all)."""
    since = rl("events", "--stream=false", "--format", "{{.Time}}").stdout  # nothing yet
    assert since == ""
    src = rl.home / "tree.tgz"
    _tree_tarball(src)
    iid = rl("import", str(src), "ev/imported:1", check=True).stdout.strip()[7:]
    rl("import", str(src), check=True)  # no name: Podman logs nothing
    out = tmp_path / "ev.tar"
    rl("save", "-o", str(out), "ev/imported:1", check=True)
    rl("load", "-q", "-i", str(out), check=True)
    arch = tmp_path / "pushed.tar"
    rl("push", "-q", "ev/imported:1", f"docker-archive:{arch}", check=True)
    dest = f"{mirror.host}/events/t{uuid.uuid4().hex[:8]}"
    rl("push", "-q", "ev/imported:1", dest, check=True)
    lines = rl("events", "--stream=false", "--format", "json", check=True).stdout.splitlines()
    got = [(e["Status"], e.get("ID"), e.get("Name")) for e in map(json.loads, lines) if e["Type"] == "image"]
    assert got == [
        ("tag", iid, "docker.io/ev/imported:1"),  # the name as the store keeps it
        ("save", iid, str(out)),
        ("loadfromarchive", None, str(out)),
        ("push", iid, f"docker-archive:{arch}"),
        ("push", iid, dest),
    ], got
