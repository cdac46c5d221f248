"""`rootless build`, `history`: Dockerfiles written for the tests, built as the unprivileged
user on every storage driver, checked by running the result and reading its config."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import need
from tests.integration.harness import RootlessEnv, assert_clean_error

pytestmark = pytest.mark.integration

DRIVERS = ["overlay", "fuse-overlayfs", "vfs"]


@pytest.fixture(params=DRIVERS)
def rlb(request: pytest.FixtureRequest, rl: RootlessEnv) -> Iterator[RootlessEnv]:
    """``rl`` whose store uses the driver named by the parameter."""
    rl.config_path.write_text(rl.config_text + f'\n[storage]\ndriver = "{request.param}"\n')
    rl.driver = request.param  # type: ignore[attr-defined]
    yield rl


def write(root: Path, files: dict[str, str | bytes]) -> Path:
    for name, content in files.items():
        p = root / name
        p.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            p.write_bytes(content)
        else:
            p.write_text(content)
    return root


def build(rl: RootlessEnv, ctx: Path, *args: str, check: bool = True, **kw: object) -> subprocess.CompletedProcess[str]:
    cp = rl("build", *args, str(ctx), timeout=240, **kw)  # type: ignore[arg-type]
    if check:
        assert cp.returncode == 0, f"exit {cp.returncode}\n--- stdout\n{cp.stdout}\n--- stderr\n{cp.stderr}"
    return cp


def image_config(rl: RootlessEnv, name: str) -> dict[str, object]:
    data = json.loads(rl("image", "inspect", name).stdout)[0]
    return data  # type: ignore[no-any-return]


def run(rl: RootlessEnv, image: str, script: str) -> str:
    cp = rl("run", "--rm", "--network", "none", "--user", "0", "--entrypoint", "/bin/sh", image, "-c", script)
    assert cp.returncode == 0, cp.stderr
    return cp.stdout


BASIC = """\
# syntax=docker/dockerfile:1
FROM busybox AS base
ARG GREETING=hello
ENV PATH=/usr/local/bin:/usr/bin:/bin:/sbin:/usr/sbin APP=/app \\
    NAME="the app"
LABEL org.test.name="$NAME" version=1
WORKDIR $APP
COPY --chown=1000:1000 --chmod=0640 a.txt sub/ ./
COPY dir /data/
RUN echo "$GREETING from RUN" > /app/run.txt && rm /etc/group && mkdir -p /made && chmod 4755 /made \\
    && echo "user: $(id -u)"
USER 1000:1000
EXPOSE 8080 53/udp
VOLUME ["/data"]
STOPSIGNAL SIGINT
ENTRYPOINT ["/bin/sh", "-c"]
CMD ["cat /app/run.txt"]
"""


def test_build_basic_every_driver(rlb: RootlessEnv, tmp_path: Path) -> None:
    ctx = write(tmp_path / "ctx", {"Dockerfile": BASIC, "a.txt": "A\n", "sub/b.txt": "B\n", "dir/x/y.txt": "Y\n"})
    cp = build(rlb, ctx, "-t", "basic")
    lines = cp.stdout.splitlines()
    assert lines[0] == "STEP 1/14: FROM busybox AS base"
    assert "STEP 7/14: COPY dir /data/" in lines
    assert "user: 0" in lines
    assert lines[-4:-1] == ["COMMIT basic", f"--> {lines[-1][:12]}", "Successfully tagged localhost/basic:latest"]
    image_id = lines[-1]
    assert len(image_id) == 64
    assert "Successfully tagged localhost/basic:latest" in lines
    cfg = image_config(rlb, "basic")
    c = cfg["Config"]
    assert c["Env"][0].startswith("PATH=/usr/local/bin") and "APP=/app" in c["Env"] and "NAME=the app" in c["Env"]
    assert c["Labels"] == {"org.test.name": "the app", "version": "1"}
    assert c["WorkingDir"] == "/app" and c["User"] == "1000:1000"
    assert c["ExposedPorts"] == {"8080/tcp": {}, "53/udp": {}}
    assert c["Volumes"] == {"/data": {}} and c["StopSignal"] == "SIGINT"
    assert c["Entrypoint"] == ["/bin/sh", "-c"] and c["Cmd"] == ["cat /app/run.txt"]
    hist = cfg["History"]
    assert any(h["created_by"].startswith("|1 GREETING=hello /bin/sh -c echo") for h in hist)
    assert sum(1 for h in hist if not h.get("empty_layer")) == len(cfg["RootFS"]["Layers"])
    cp_run = rlb("run", "--rm", "--network", "none", "basic")
    assert cp_run.stdout == "hello from RUN\n", cp_run.stderr
    listing = run(rlb, "basic", "ls -ln /app/a.txt /app/b.txt; stat -c '%a %u %g' /app /made /data/x/y.txt; "
                                "cat /data/x/y.txt; test -e /etc/group || echo group-gone")
    rows = listing.splitlines()
    assert rows[0].split()[0] == "-rw-r-----" and rows[0].split()[2:4] == ["1000", "1000"]
    assert rows[1].split()[0] == "-rw-r-----"
    # /app made by the COPY --chown that first needed the WORKDIR, as Buildah makes it
    assert rows[2] == "755 1000 1000" and rows[3] == "4755 0 0" and rows[4] == "644 0 0"
    assert rows[5:] == ["Y", "group-gone"]
    # the cache: nothing changed, nothing runs, the same image
    cp2 = build(rlb, ctx, "-t", "basic")
    assert cp2.stdout.count("--> Using cache") == 13
    assert "user: 0" not in cp2.stdout
    assert cp2.stdout.splitlines()[-1] == image_id
    # history
    h = rlb("history", "basic").stdout.splitlines()
    assert h[0].split()[:2] == ["ID", "CREATED"] and h[1].startswith(image_id[:12])
    assert len(h) - 1 == len(hist) + 0 or len(h) - 1 >= len(hist)



WHITEOUTS = """\
FROM busybox
RUN mkdir -p /keep /opq/sub && echo old > /opq/old && echo old > /opq/sub/f && echo k > /keep/k \\
    && echo gone > /gone && cp /bin/busybox /suid && chmod 4711 /suid && chown 1:2 /keep/k
RUN rm -rf /opq /gone && mkdir /opq && echo new > /opq/new && ln -s /opq/new /link && mkfifo /fifo
"""


def test_whiteouts_opaque_and_owners_every_driver(rlb: RootlessEnv, tmp_path: Path) -> None:
    ctx = write(tmp_path / "ctx", {"Dockerfile": WHITEOUTS})
    build(rlb, ctx, "-t", "wh")
    out = run(rlb, "wh", "ls -A /opq; test -e /gone || echo gone-is-gone; cat /keep/k; stat -c '%a %u %g' /suid "
                         "/keep/k; readlink /link; test -p /fifo && echo fifo")
    assert out.splitlines() == ["new", "gone-is-gone", "k", "4711 0 0", "644 1 2", "/opq/new", "fifo"]
    cfg = image_config(rlb, "wh")
    assert len(cfg["RootFS"]["Layers"]) == 3  # type: ignore[index]


MULTI = """\
ARG BASE=busybox
ARG VERSION
FROM $BASE AS builder
ARG VERSION=1.0
ARG UNSET_DEFAULT
RUN mkdir /out && echo "built $VERSION [${UNSET_DEFAULT:-none}]" > /out/version && echo x > /out/other
COPY <<EOF /out/heredoc.txt
version=$VERSION
EOF
RUN <<SCRIPT
set -e
echo "from heredoc $VERSION" > /out/script.txt
SCRIPT

FROM busybox AS never
RUN echo this stage is not needed && false

FROM ${BASE}
ARG VERSION
COPY --from=builder /out/version /out/heredoc.txt /app/
COPY --from=0 /out/script.txt /app/script.txt
COPY --from=builder /out /all
RUN echo "final sees [$VERSION]" > /app/final.txt
"""


def test_multistage_args_heredocs(rl: RootlessEnv, tmp_path: Path) -> None:
    ctx = write(tmp_path / "ctx", {"Dockerfile": MULTI})
    cp = build(rl, ctx, "-t", "multi")
    assert "this stage is not needed" not in cp.stdout
    assert "[1/2] STEP 1/6: FROM $BASE AS builder" in cp.stdout and "[2/2] STEP 1/6: FROM ${BASE}" in cp.stdout
    out = run(rl, "multi", "cat /app/version /app/heredoc.txt /app/script.txt /app/final.txt; ls /all")
    # the global VERSION has no value, so the final stage's bare ARG imports nothing
    assert out.splitlines() == ["built 1.0 [none]", "version=1.0", "from heredoc 1.0", "final sees []",
                                "heredoc.txt", "other", "script.txt", "version"]
    build(rl, ctx, "-t", "multi2", "--build-arg", "VERSION=2.5")
    out = run(rl, "multi2", "cat /app/version /app/final.txt")
    assert out.splitlines() == ["built 2.5 [none]", "final sees [2.5]"]
    build(rl, ctx, "-t", "only-builder", "--target", "builder")
    out = run(rl, "only-builder", "ls /out; test -e /app || echo no-app")
    assert out.splitlines() == ["heredoc.txt", "other", "script.txt", "version", "no-app"]


CACHED = """\
FROM busybox
ARG LEVEL=1
COPY a.txt /a.txt
RUN --mount=type=cache,target=/cache echo run >> /cache/log && wc -l < /cache/log > /runs && echo RUN-RAN
COPY b.txt /b.txt
RUN echo "level $LEVEL" > /level && echo SECOND-RAN
"""


def test_cache_hits_and_misses(rl: RootlessEnv, tmp_path: Path) -> None:
    ctx = write(tmp_path / "ctx", {"Dockerfile": CACHED, "a.txt": "a\n", "b.txt": "b\n"})
    first = build(rl, ctx, "-t", "c1")
    ran = lambda cp: [ln for ln in cp.stdout.splitlines() if ln.endswith("-RAN") and "STEP" not in ln]  # noqa: E731
    assert ran(first) == ["RUN-RAN", "SECOND-RAN"]
    again = build(rl, ctx, "-t", "c1")
    assert ran(again) == [] and again.stdout.count("--> Using cache") == 5
    assert again.stdout.splitlines()[-1] == first.stdout.splitlines()[-1]
    # a touch is not a change; a later file's change keeps the earlier steps
    os.utime(ctx / "a.txt", (1, 1))
    (ctx / "b.txt").write_text("b2\n")
    third = build(rl, ctx, "-t", "c1")
    assert ran(third) == ["SECOND-RAN"]
    assert third.stdout.count("--> Using cache") == 3
    # a build arg the RUN uses misses from there
    fourth = build(rl, ctx, "-t", "c1", "--build-arg", "LEVEL=2")
    assert ran(fourth) == ["RUN-RAN", "SECOND-RAN"]
    assert run(rl, "c1", "cat /level /b.txt /runs").splitlines() == ["level 2", "b2", "2"]
    # the cache mount's contents persisted without changing the key; --no-cache runs everything
    fifth = build(rl, ctx, "-t", "c1", "--no-cache", "--build-arg", "LEVEL=2")
    assert ran(fifth) == ["RUN-RAN", "SECOND-RAN"] and "Using cache" not in fifth.stdout
    assert run(rl, "c1", "cat /runs") == "3\n"


def test_ignore_file_rules(rl: RootlessEnv, tmp_path: Path) -> None:
    ctx = write(tmp_path / "ctx", {
        "Dockerfile": "FROM busybox\nCOPY . /ctx/\n",
        ".dockerignore": "*.log\n**/*.tmp\nsecret\ndocs\n!docs/keep.md\n",
        "a.log": "", "sub/b.log": "", "sub/c.tmp": "", "d/e/f.tmp": "", "secret/key": "", "docs/x.md": "",
        "docs/keep.md": "", "main.c": "",
    })
    build(rl, ctx, "-t", "ign")
    out = run(rl, "ign", "cd /ctx && find . | sort")
    assert out.split() == [".", "./.dockerignore", "./Dockerfile", "./d", "./d/e", "./docs", "./docs/keep.md",
                           "./main.c", "./sub", "./sub/b.log"]
    # <Dockerfile>.dockerignore beside the file wins over the context's
    write(ctx, {"Dockerfile.dockerignore": "main.c\n"})
    build(rl, ctx, "-t", "ign2")
    listing = run(rl, "ign2", "ls /ctx").split()
    assert "main.c" not in listing and "a.log" in listing


def _count_layers(rl: RootlessEnv) -> int:
    layers = rl.store / "layers"
    return len(os.listdir(layers)) if layers.exists() else 0


def _leftovers(rl: RootlessEnv) -> list[str]:
    left = []
    for d in ("containers", "tmp"):
        p = rl.store / d
        if p.exists():
            left += [f"{d}/{n}" for n in os.listdir(p)]
    return left


@pytest.mark.parametrize("dockerfile,links,needles,code", [
    ("FROM busybox\nRUN true\nFROB x\n", {}, ["Dockerfile:3: unknown instruction: FROB"], 125),
    ("FROM busybox\nCOPY ../x /x\n", {}, ["Dockerfile:2:", "outside the build context"], 125),
    ("FROM busybox\nCOPY link /x\n", {"link": "/etc/passwd"}, ["Dockerfile:2:", "symlink leading out"], 125),
    ("FROM busybox\nCOPY up/x /x\n", {"up": "../.."}, ["Dockerfile:2:", "symlink leading out"], 125),
    ("FROM busybox\nCOPY missing.txt /x\n", {}, ["Dockerfile:2:", "missing.txt"], 125),
    ("FROM busybox AS a\nCOPY --from=b /x /x\nFROM busybox AS b\nCOPY --from=a /y /y\n", {},
     ["circular dependency"], 125),
    ("FROM busybox\nRUN echo started && exit 3\n", {}, ["Dockerfile:2:", "RUN echo started && exit 3",
                                                         "status 3"], 3),
], ids=["syntax", "dotdot", "symlink-out", "symlink-up", "missing", "cycle", "run-fails"])
def test_bad_input_is_one_line_and_leaves_nothing(rl: RootlessEnv, tmp_path: Path, dockerfile: str,
                                                  links: dict[str, str], needles: list[str], code: int) -> None:
    ctx = write(tmp_path / "ctx", {"Dockerfile": dockerfile})
    for name, target in links.items():
        os.symlink(target, ctx / name)
    assert rl("pull", "-q", "busybox").returncode == 0  # the base may stay: it is not the build's making
    before = (rl("images", "-q").stdout, _count_layers(rl))
    cp = build(rl, ctx, "-t", "bad", check=False)
    line = assert_clean_error(cp, code)
    for n in needles:
        assert n in line, line
    assert (rl("images", "-q").stdout, rl("ps", "-a", "-q").stdout) == (before[0], "")
    assert _leftovers(rl) == []


def test_target_naming_no_stage(rl: RootlessEnv, tmp_path: Path) -> None:
    ctx = write(tmp_path / "ctx", {"Dockerfile": "FROM busybox AS one\n"})
    cp = build(rl, ctx, "--target", "two", check=False)
    line = assert_clean_error(cp, 125)
    assert "--target two: no stage has that name (stages: one)" in line


def test_quiet_iidfile_and_stdin_dockerfile(rl: RootlessEnv, tmp_path: Path) -> None:
    ctx = write(tmp_path / "ctx", {"f.txt": "F\n"})
    cp = rl("build", "-q", "--iidfile", str(tmp_path / "iid"), "-f", "-", str(ctx), timeout=120,
            input="FROM busybox\nCOPY f.txt /\nRUN echo noisy\n")
    assert cp.returncode == 0, cp.stderr
    assert cp.stdout.strip() == (tmp_path / "iid").read_text().removeprefix("sha256:")
    assert len(cp.stdout.strip()) == 64
    # the context as a tar on stdin
    write(ctx, {"Dockerfile": "FROM busybox\nCOPY f.txt /from-tar.txt\n"})
    tar = subprocess.run(["tar", "-C", str(ctx), "-cf", "-", "."], capture_output=True, check=True).stdout
    p = rl.popen("build", "-t", "fromtar", "-", stdin=subprocess.PIPE)
    out, err = p.communicate(tar.decode("latin-1"), timeout=120)
    assert p.returncode == 0, err
    assert run(rl, "fromtar", "cat /from-tar.txt") == "F\n"


def test_commit_and_history(rl: RootlessEnv, tmp_path: Path) -> None:
    assert rl("run", "--name", "src", "busybox", "sh", "-c", "echo made > /made; rm /etc/group").returncode == 0
    cp = rl("commit", "-c", 'CMD ["cat", "/made"]', "-c", "ENV COMMITTED=yes", "-m", "by the test",
            "src", "committed")
    assert cp.returncode == 0, cp.stderr
    image_id = cp.stdout.strip()
    assert len(image_id) == 64
    assert rl("run", "--rm", "committed").stdout == "made\n"
    assert run(rl, "committed", "test -e /etc/group || echo gone; echo $COMMITTED") == "gone\nyes\n"
    rows = rl("history", "committed").stdout.splitlines()
    assert rows[0].split() == ["ID", "CREATED", "CREATED", "BY", "SIZE", "COMMENT"]
    assert rows[1].startswith(image_id[:12]) and "by the test" in rows[1]
    js = json.loads(rl("history", "--no-trunc", "--format", "json", "committed").stdout)
    assert js[0]["id"] == image_id and js[0]["comment"] == "by the test" and js[1]["id"] == "<missing>"
    assert rl("history", "-q", "committed").stdout.splitlines()[0] == image_id[:12]


def _tar(path: Path, compress: str) -> None:
    import bz2
    import gzip
    import io
    import lzma
    import tarfile

    import zstandard

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, data in ((f"{compress}/hello.txt", f"hello {compress}\n".encode()), ("shared/x", b"x")):
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.uid, info.gid = len(data), 0o640, 7, 8
            tf.addfile(info, io.BytesIO(data))
    raw = buf.getvalue()
    packed = {"none": raw, "gzip": gzip.compress(raw), "bzip2": bz2.compress(raw), "xz": lzma.compress(raw),
              "zstd": zstandard.ZstdCompressor().compress(raw)}[compress]
    path.write_bytes(packed)


def test_add_extracts_local_archives_and_downloads_urls(rl: RootlessEnv, tmp_path: Path) -> None:
    import hashlib
    import http.server
    import threading

    ctx = tmp_path / "ctx"
    ctx.mkdir()
    for kind in ("none", "gzip", "bzip2", "xz", "zstd"):
        _tar(ctx / f"a-{kind}.tar", kind)
    (tmp_path / "www").mkdir()
    (tmp_path / "www" / "file.txt").write_text("downloaded\n")
    good = hashlib.sha256(b"downloaded\n").hexdigest()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a: object, **kw: object) -> None:
            super().__init__(*a, directory=str(tmp_path / "www"), **kw)  # type: ignore[arg-type]

        def log_message(self, *a: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/file.txt"
    try:
        write(ctx, {"Dockerfile": "FROM busybox\nADD a-*.tar /x/\nCOPY a-gzip.tar /copied/\n"
                                  f"ADD --checksum=sha256:{good} {url} /dl/\n"})
        build(rl, ctx, "-t", "added")
        out = run(rl, "added", "cat /x/*/hello.txt; stat -c '%a %u %g' /x/gzip/hello.txt; ls /copied; "
                               "cat /dl/file.txt")
        assert out.splitlines() == ["hello bzip2", "hello gzip", "hello none", "hello xz", "hello zstd",
                                    "640 7 8", "a-gzip.tar", "downloaded"]
        write(ctx, {"Dockerfile": f"FROM busybox\nADD --checksum=sha256:{'0' * 64} {url} /dl/\n"})
        line = assert_clean_error(build(rl, ctx, check=False), 125)
        assert "Dockerfile:2:" in line and "checksum" in line
    finally:
        server.shutdown()


def test_interrupt_mid_run_leaves_nothing(rl: RootlessEnv, tmp_path: Path) -> None:
    import signal
    import time

    ctx = write(tmp_path / "ctx", {"Dockerfile": "FROM busybox\nRUN echo started && sleep 60\n"})
    assert rl("pull", "-q", "busybox").returncode == 0
    before = rl("images", "-q").stdout
    p = rl.popen("build", "-t", "interrupted", str(ctx), start_new_session=True)
    assert p.stdout is not None
    deadline = time.monotonic() + 120
    for line in p.stdout:
        if line.strip() == "started" or time.monotonic() > deadline:
            break
    os.killpg(p.pid, signal.SIGINT)
    p.wait(timeout=60)
    assert p.returncode == 130
    assert rl.wait_no_processes() == []
    assert rl("images", "-q").stdout == before
    assert rl("ps", "-a", "-q").stdout == ""
    assert _leftovers(rl) == []


# --------------------------------------------------------------------------- against podman build

LISTING = (
    "cd / && find . -xdev \\( -path ./proc -o -path ./sys -o -path ./dev -o -path ./run -o -path ./etc/hosts "
    "-o -path ./etc/hostname -o -path ./etc/resolv.conf -o -path ./etc/passwd -o -path ./etc/group "
    "-o -path ./etc/mtab \\) "
    "-prune -o -print | sort | while IFS= read -r f; do "
    "t=$(stat -c '%F %a %u %g' \"$f\"); case \"$t\" in 'regular file'*|'regular empty file'*) "
    "s=$(md5sum < \"$f\" | cut -d' ' -f1);; 'symbolic link'*) s=$(readlink \"$f\");; *) s=;; esac; "
    "echo \"$f $t $s\"; done"
)

DIFFERENTIAL = """\
FROM {base}
ENV APP=/srv/app PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin
WORKDIR $APP
COPY --chown=1000:1000 --chmod=0640 one.txt two.txt ./
COPY tree/ /opt/tree/
COPY tree /opt/tree2
RUN rm -rf /usr/share /etc/hostname.d && mkdir -p /var/lib/thing && echo data > /var/lib/thing/f \\
    && ln -s /var/lib/thing/f /link && mkdir -p /usr/local/bin && cp /bin/busybox /usr/local/bin/tool \\
    && chmod 4755 /usr/local/bin/tool \\
    && chown 12:34 /var/lib/thing/f && mkdir -m 1777 /shared
RUN rm -rf /opt/tree2 && mkdir /opt/tree2 && echo fresh > /opt/tree2/new
USER 1000:1000
EXPOSE 80 9000/udp
LABEL a=1 "b c"=d
VOLUME /data
STOPSIGNAL SIGUSR1
ENTRYPOINT ["/bin/sh", "-c"]
CMD ["echo hi"]
"""


@pytest.fixture
def podman(rl: RootlessEnv, registry: object, tmp_path: Path) -> Iterator[object]:
    """``podman(*args) -> CompletedProcess`` for the test user, configured as PEERS.md says
    (runc, cgroupfs, file events, overlay, the test registry as insecure), with its own store."""
    import shutil

    need(shutil.which("podman") is not None and shutil.which("runc") is not None,
         "podman and runc are not installed (apt-get install podman runc)")
    host = registry.host  # type: ignore[attr-defined]
    # containers.conf and storage.conf are read from $XDG_CONFIG_HOME, registries.conf from $HOME/.config
    for conf in {Path(rl.env.get("XDG_CONFIG_HOME") or rl.home / ".config") / "containers",
                 rl.home / ".config" / "containers"}:
        conf.mkdir(parents=True, exist_ok=True)
        (conf / "containers.conf").write_text('[engine]\nruntime = "runc"\ncgroup_manager = "cgroupfs"\n'
                                              'events_logger = "file"\n')
        (conf / "storage.conf").write_text('[storage]\ndriver = "overlay"\n')
        (conf / "registries.conf").write_text(f'[[registry]]\nlocation = "{host}"\ninsecure = true\n')
    root = tmp_path / "pm"
    runroot = Path(f"/tmp/pm-{os.getpid()}")
    env = {**rl.env, "HOME": str(rl.home)}

    def pm(*args: str, **kw: object) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["podman", "--root", str(root), "--runroot", str(runroot), *args], env=env,
                              capture_output=True, text=True, timeout=600, **kw)  # type: ignore[call-overload]

    yield pm
    pm("unshare", "rm", "-rf", str(root))
    subprocess.run(["rm", "-rf", str(runroot)], capture_output=True)


def test_same_image_as_podman_build(rl: RootlessEnv, podman: object, registry: object, tmp_path: Path) -> None:
    pm = podman
    base = f"{registry.host}/library/busybox:latest"  # type: ignore[attr-defined]
    ctx = write(tmp_path / "ctx", {"Dockerfile": DIFFERENTIAL.format(base=base), "one.txt": "1\n", "two.txt": "2\n",
                                   "tree/a/b.txt": "b\n", "tree/c.txt": "c\n"})
    os.chmod(ctx / "tree" / "c.txt", 0o600)
    os.symlink("a/b.txt", ctx / "tree" / "link")
    ours = build(rl, ctx, "-t", "diff")
    assert ours.returncode == 0
    theirs = pm("build", "--layers", "-t", "diff", str(ctx))  # type: ignore[operator]
    assert theirs.returncode == 0, theirs.stderr
    mine = rl("run", "--rm", "--network", "none", "--user", "0", "--entrypoint", "/bin/sh", "diff", "-c", LISTING)
    assert mine.returncode == 0, mine.stderr
    peer = pm("run", "--rm", "--network", "none", "--user", "0", "--entrypoint", "/bin/sh", "localhost/diff", "-c",
              LISTING)  # type: ignore[operator]
    assert peer.returncode == 0, peer.stderr
    # "/" itself is the runtime's (Podman's runc shows its upper directory's mode, 555)
    ours_l, theirs_l = mine.stdout.splitlines()[1:], peer.stdout.splitlines()[1:]
    assert sorted(set(ours_l) - set(theirs_l)) == sorted(set(theirs_l) - set(ours_l)) == []
    assert ours_l == theirs_l
    assert "./usr/local/bin/tool regular file 4755 0 0" in mine.stdout
    c_ours = image_config(rl, "diff")["Config"]
    c_theirs = json.loads(pm("image", "inspect", "localhost/diff").stdout)[0]["Config"]  # type: ignore[operator]
    c_theirs["Labels"].pop("io.buildah.version", None)  # Buildah's own mark
    for key in ("Env", "Cmd", "Entrypoint", "WorkingDir", "User", "ExposedPorts", "Labels", "Volumes",
                "StopSignal"):
        assert c_ours.get(key) == c_theirs.get(key), key  # type: ignore[union-attr]


def test_docker_format_healthcheck_shell_onbuild(rl: RootlessEnv, tmp_path: Path) -> None:
    ctx = write(tmp_path / "ctx", {"Dockerfile": (
        "FROM busybox\n"
        "SHELL [\"/bin/sh\", \"-xc\"]\n"
        "RUN echo via-shell > /shell.txt\n"
        "HEALTHCHECK --interval=30s --retries=2 CMD [\"true\"]\n"
        "ONBUILD RUN echo triggered > /onbuild.txt\n"
        "MAINTAINER someone\n")})
    cp = build(rl, ctx, "-t", "dock", "--format", "docker")
    assert "+ echo via-shell" in cp.stderr + cp.stdout
    data = image_config(rl, "dock")
    assert data["Author"] == "someone"
    oci = build(rl, ctx, "-t", "ocifmt")
    assert "HEALTHCHECK, SHELL, ONBUILD are not supported by the OCI image format" in oci.stderr
    # the trigger runs when the docker-format image is a base
    child = write(tmp_path / "child", {"Dockerfile": "FROM localhost/dock\nRUN cat /onbuild.txt\n"})
    cp = build(rl, child, "-t", "child")
    assert "triggered" in cp.stdout
    assert run(rl, "child", "cat /onbuild.txt /shell.txt") == "triggered\nvia-shell\n"


def test_run_mounts_secret_bind_tmpfs(rl: RootlessEnv, tmp_path: Path) -> None:
    (tmp_path / "token").write_text("s3cret-value")
    ctx = write(tmp_path / "ctx", {"data/x": "from-context\n", "Dockerfile": (
        "FROM busybox\n"
        "RUN --mount=type=secret,id=tok wc -c < /run/secrets/tok > /len\n"
        "RUN --mount=type=bind,source=data,target=/mnt/data cat /mnt/data/x > /copied"
        " && (touch /mnt/data/y 2>/dev/null && echo rw || echo ro) > /mode\n"
        "RUN --mount=type=tmpfs,target=/scratch touch /scratch/t && echo ok > /tmpfs-ok\n")})
    build(rl, ctx, "-t", "mounts", "--secret", f"id=tok,src={tmp_path / 'token'}")
    out = run(rl, "mounts", "cat /len /copied /mode /tmpfs-ok; test -e /scratch || echo no-scratch; "
                            "test -e /mnt/data || echo no-mnt-data; test -e /run/secrets || echo no-secrets-dir")
    assert out.split() == ["12", "from-context", "ro", "ok", "no-scratch", "no-mnt-data", "no-secrets-dir"]
    assert not (ctx / "data" / "y").exists()
    assert "s3cret" not in json.dumps(image_config(rl, "mounts"))


# --------------------------------------------------------------------------- the COPY layer of a rebuild

def _diff_ids(rl: RootlessEnv, name: str) -> list[str]:
    return list(image_config(rl, name)["RootFS"]["Layers"])  # type: ignore[index]


def test_rebuilt_copy_links_unchanged_files_from_the_previous_layer(rl: RootlessEnv, tmp_path: Path) -> None:
    files = {f"tree/f{i}.txt": f"file {i}\n" for i in range(20)}
    ctx = write(tmp_path / "ctx", {**files, "big.bin": os.urandom(1 << 20),
                                   "Dockerfile": "FROM busybox\nCOPY . /c\nRUN cat /c/tree/f3.txt > /seen\n"})
    old_time = 1_600_000_000
    for p in (ctx / "tree").iterdir():  # out of the racy window: their digests are remembered
        os.utime(p, (old_time, old_time))
    os.utime(ctx / "big.bin", (old_time, old_time))
    build(rl, ctx, "-t", "c1")
    first = rl.layer_dir(_diff_ids(rl, "c1")[-2])
    # one file's content changes, one is touched only (same bytes, a new mtime), one changes mode
    (ctx / "tree" / "f3.txt").write_text("changed\n")
    os.utime(ctx / "tree" / "f4.txt", (old_time + 5, old_time + 5))
    os.chmod(ctx / "tree" / "f5.txt", 0o600)
    build(rl, ctx, "-t", "c2")
    second = rl.layer_dir(_diff_ids(rl, "c2")[-2])
    assert first != second
    ino = {n: ((first / "c" / n).stat().st_ino, (second / "c" / n).stat().st_ino)
           for n in ("big.bin", "tree/f0.txt", "tree/f3.txt", "tree/f4.txt", "tree/f5.txt")}
    assert ino["big.bin"][0] == ino["big.bin"][1] and ino["tree/f0.txt"][0] == ino["tree/f0.txt"][1], ino
    for changed in ("tree/f3.txt", "tree/f4.txt", "tree/f5.txt"):
        assert ino[changed][0] != ino[changed][1], (changed, ino)
    out = run(rl, "c2", "cat /seen /c/tree/f3.txt /c/tree/f0.txt; stat -c '%Y %a' /c/tree/f4.txt /c/tree/f5.txt "
                        "/c/tree/f6.txt")
    assert out.splitlines() == ["changed", "changed", "file 0", f"{old_time + 5} 644", f"{old_time} 600",
                                f"{old_time} 644"]
    # the first image is untouched by the second build, and a --no-cache rebuild copies afresh
    assert run(rl, "c1", "cat /seen /c/tree/f3.txt; stat -c %a /c/tree/f5.txt").split() == ["file", "3", "file",
                                                                                            "3", "644"]
    build(rl, ctx, "-t", "c3", "--no-cache")
    third = rl.layer_dir(_diff_ids(rl, "c3")[-2])
    assert _diff_ids(rl, "c3")[-2] == _diff_ids(rl, "c2")[-2]  # the same content, the same layer
    assert third == second


# --------------------------------------------------------------------------- --squash and --layers=false

SQUASH = """\
FROM busybox
RUN mkdir -p /a/b && echo one > /a/b/f && echo keep > /a/k && rm -rf /var && rm /bin/ls
RUN rm -rf /a/b && mkdir -p /var/new && echo two > /var/new/g && echo x > /a/b2
COPY x.txt /a/x.txt
RUN rm /a/k && ln -s /a/x.txt /link
ENV DONE=1
"""
SQUASH_LISTING = ("for p in /a/b /a/k /a/x.txt /a/b2 /var/new/g /var/www /var/spool /bin/ls /bin/sh /link; do "
                  "if [ -e $p ]; then echo \"$p $(cat $p 2>/dev/null | head -c 20)\"; else echo \"$p -\"; fi; done; "
                  "echo $DONE")


def test_squash_and_layers_false_make_one_new_layer_every_driver(rlb: RootlessEnv, tmp_path: Path) -> None:
    ctx = write(tmp_path / "ctx", {"x.txt": "ex\n", "Dockerfile": SQUASH})
    assert rlb("pull", "-q", "busybox").returncode == 0
    base = _diff_ids(rlb, "busybox")
    build(rlb, ctx, "-t", "layered")
    build(rlb, ctx, "-t", "squashed", "--squash")
    expect = run(rlb, "layered", SQUASH_LISTING)
    assert "/a/x.txt ex" in expect and "/var/www -" in expect and "/bin/ls -" in expect, expect
    assert run(rlb, "squashed", SQUASH_LISTING) == expect
    layered, squashed = _diff_ids(rlb, "layered"), _diff_ids(rlb, "squashed")
    assert len(layered) == len(base) + 4 and squashed[:-1] == base and len(squashed) == len(base) + 1
    hist = json.loads(rlb("history", "--format", "json", "--no-trunc", "squashed").stdout)
    assert len([h for h in hist if h["size"]]) <= len(base) + 1
    # --layers=false (also spelled --layers false): Podman's one commit, no cache used or left
    layers_before = _count_layers(rlb)
    for spelling in (["--layers=false"], ["--layers", "false"]):
        cp = build(rlb, ctx, "-t", "nolayers", *spelling)
        assert "Using cache" not in cp.stdout
        assert _diff_ids(rlb, "nolayers")[:-1] == base and len(_diff_ids(rlb, "nolayers")) == len(base) + 1
        assert run(rlb, "nolayers", SQUASH_LISTING) == expect
    # each --layers=false build left its one squashed layer and none of its step layers
    assert _count_layers(rlb) == layers_before + 2
    assert _leftovers(rlb) == []


# --------------------------------------------------------------------------- RUN --mount=type=bind,from=

def test_run_mount_bind_from_a_stage_or_an_image(rl: RootlessEnv, tmp_path: Path) -> None:
    ctx = write(tmp_path / "ctx", {"Dockerfile": (
        "FROM busybox AS data\n"
        "RUN mkdir /stuff && echo from-stage > /stuff/f && chown 7:8 /stuff/f\n"
        "FROM busybox\n"
        "RUN --mount=type=bind,from=data,source=/stuff,target=/m cat /m/f > /got && stat -c %u:%g /m/f >> /got"
        " && (touch /m/new 2>/dev/null && echo rw || echo ro) >> /got\n"
        "RUN --mount=type=bind,from=busybox,target=/b,rw test -x /b/bin/sh && touch /b/new && echo ok > /img\n"
        "RUN --mount=type=bind,from=data,source=/stuff/f,target=/one.txt cp /one.txt /copied\n")})
    build(rl, ctx, "-t", "bindfrom")
    out = run(rl, "bindfrom", "cat /got /img /copied; test -e /m || echo no-m; test -e /b || echo no-b")
    assert out.split() == ["from-stage", "7:8", "ro", "ok", "from-stage", "no-m", "no-b"]
    # the stage and the image are as they were (writes through rw went to a copy)
    assert run(rl, "busybox", "test -e /new || echo clean") == "clean\n"
    assert _leftovers(rl) == []
    # a rebuild is all cache; a path the stage lacks is one line naming the step
    assert build(rl, ctx, "-t", "bindfrom").stdout.count("Using cache") == 4
    bad = write(tmp_path / "bad", {"Dockerfile": "FROM busybox AS data\nFROM busybox\n"
                                                 "RUN --mount=type=bind,from=data,source=/nope,target=/m true\n"})
    line = assert_clean_error(build(rl, bad, check=False), 125)
    assert "Dockerfile:3:" in line and "/nope does not exist" in line, line
    assert _leftovers(rl) == []


# --------------------------------------------------------------------------- commit --pause

def test_commit_pause(rl: RootlessEnv) -> None:
    rl("run", "-d", "--name", "pc", "busybox", "sh", "-c", "echo made > /made; exec sleep 300", check=True)
    try:
        has_cgroup = bool(json.loads(rl("inspect", "pc", check=True).stdout)[0]["State"]["CgroupPath"])
        cp = rl("commit", "--pause", "pc", "paused-commit")
        assert cp.returncode == 0, cp.stderr
        if has_cgroup:
            assert "--pause" not in cp.stderr
            events = rl("events", "--stream=false", "--filter", "container=pc", "--format", "{{.Status}}").stdout
            assert events.split()[-2:] == ["pause", "unpause"], events
        else:
            # Podman's answer where it cannot freeze: a warning, and the commit of the running container
            warn = [ln for ln in cp.stderr.splitlines() if "--pause" in ln]
            assert len(warn) == 1 and "no cgroup v2 freezer" in warn[0] and "while it runs" in warn[0], cp.stderr
        assert rl("ps", "--format", "{{.Status}}", "--filter", "name=^pc$", check=True).stdout.startswith("Up ")
        assert run(rl, "paused-commit", "cat /made") == "made\n"
    finally:
        rl("rm", "-f", "pc")


# --------------------------------------------------------------------------- flags from the command line

def test_label_annotation_secret_and_network_flags(rl: RootlessEnv, tmp_path: Path) -> None:
    (tmp_path / "tok").write_text("t0ken")
    ctx = write(tmp_path / "ctx", {"Dockerfile": (
        "FROM busybox\n"
        "LABEL from.file=1\n"
        "RUN --mount=type=secret,id=tok,required=true cat /run/secrets/tok > /secret-copy\n"
        "RUN awk -F: 'NR>2 {gsub(/ /, \"\", $1); print $1}' /proc/net/dev | sort | tr '\\n' ' ' > /nets\n")})
    secret = f"id=tok,src={tmp_path / 'tok'}"
    nets = {}
    for net in ("none", "slirp4netns", "host"):
        build(rl, ctx, "-t", f"net-{net}", "--network", net, "--secret", secret, "--label", "cli.label=yes",
              "--label", "from.file=overridden", "--annotation", "org.test.note=hello")
        nets[net] = run(rl, f"net-{net}", "cat /nets").split()
    assert nets["none"] == ["lo"]
    assert sorted(nets["slirp4netns"]) == ["lo", "tap0"]
    host = sorted(line.split(":")[0].strip() for line in Path("/proc/net/dev").read_text().splitlines()[2:])
    assert sorted(nets["host"]) == host
    data = image_config(rl, "net-none")
    assert data["Config"]["Labels"] == {"from.file": "overridden", "cli.label": "yes"}  # type: ignore[index]
    assert run(rl, "net-none", "cat /secret-copy") == "t0ken"
    digest = str(data["Digest"]).partition(":")[2]
    manifest = json.loads((rl.store / "blobs" / "sha256" / digest).read_text())
    assert manifest["annotations"] == {"org.test.note": "hello"}
    # bad values: one line each, nothing built
    for args, needle in ((["--secret", "tok"], "--secret 'tok': expected id=ID,src=PATH"),
                         (["--secret", f"id=tok,src={tmp_path / 'missing'}"], "is not a file"),
                         (["--label", "novalue"], "--label 'novalue': expected KEY=VALUE"),
                         (["--annotation", "x"], "--annotation 'x': expected KEY=VALUE"),
                         (["--network", "bridge"], "--network 'bridge'")):
        assert_clean_error(build(rl, ctx, "-t", "bad-flags", *args, check=False), 125, needle)
    # a required secret not given names the step
    line = assert_clean_error(build(rl, ctx, "-t", "bad-flags", check=False), 125, "Dockerfile:3:")
    assert "no secret 'tok' was given" in line
    assert rl("image", "exists", "bad-flags").returncode == 1


# --------------------------------------------------------------------------- disk full, Ctrl-C in a COPY

def test_disk_full_mid_step_fails_in_one_line_and_leaves_nothing(rl: RootlessEnv, tmp_path: Path) -> None:
    import getpass

    small = Path(f"/var/tmp/rootless-small-{getpass.getuser()}")
    if not os.path.ismount(small):
        pytest.skip(f"no small file system at {small} (scripts/setup-host mounts one)")
    root, runroot = small / f"store-{os.getpid()}", rl.runtime_dir / "small"

    def rls(*args: str) -> subprocess.CompletedProcess[str]:
        return rl("--root", str(root), "--runroot", str(runroot), *args, timeout=240)

    def state() -> tuple[list[str], list[str], list[str]]:
        """(layers, images, what is left in tmp/ and containers/) of the small store."""
        layers = sorted(os.listdir(root / "layers")) if (root / "layers").exists() else []
        left = [f"{d}/{n}" for d in ("containers", "tmp") if (root / d).exists() for n in os.listdir(root / d)]
        return layers, rls("images", "-q", "--no-trunc").stdout.split(), left

    try:
        assert rls("pull", "-q", "busybox").returncode == 0
        vfs = os.statvfs(small)
        ctx = write(tmp_path / "ctx", {"small.txt": "s\n", "Dockerfile": "FROM busybox\nCOPY small.txt big.bin /d/\n"})
        with open(ctx / "big.bin", "wb") as f:
            f.truncate(vfs.f_bavail * vfs.f_frsize + (8 << 20))  # sparse here; the layer's copy needs every byte
        before = state()
        line = assert_clean_error(rls("build", "-t", "full", str(ctx)), 125, "No space left on device")
        assert "big.bin" in line, line
        assert state() == before
        assert rls("ps", "-a", "-q").stdout == ""
        # a RUN that fills the disk fails as its command does, and leaves nothing either
        (ctx / "big.bin").unlink()
        write(ctx, {"Dockerfile": "FROM busybox\nRUN dd if=/dev/zero of=/fill bs=1M count=200\n"})
        cp = rls("build", "-t", "full", str(ctx))
        assert cp.returncode != 0 and "Traceback" not in cp.stderr, cp.stderr
        assert state() == before
        # with the space back, the same store builds
        write(ctx, {"Dockerfile": "FROM busybox\nCOPY small.txt /d/\nRUN cat /d/small.txt > /seen\n"})
        cp = rls("build", "-t", "fits", str(ctx))
        assert cp.returncode == 0, cp.stderr
    finally:
        rls("system", "reset", "-f")
        subprocess.run(["rm", "-rf", str(root)], check=False)


def test_interrupt_during_a_big_copy_leaves_nothing_and_the_next_build_works(rl: RootlessEnv,
                                                                             tmp_path: Path) -> None:
    import signal
    import time

    ctx = tmp_path / "ctx"
    for i in range(40):
        d = ctx / "many" / f"d{i}"
        d.mkdir(parents=True)
        for j in range(250):
            (d / f"f{j}").write_text(f"{i} {j}\n")
    with open(ctx / "many" / "big.bin", "wb") as f:
        f.write(os.urandom(1 << 20) * 200)
    (ctx / "Dockerfile").write_text("FROM busybox\nCOPY many /many\n")
    assert rl("pull", "-q", "busybox").returncode == 0
    before = (rl("images", "-q").stdout, _count_layers(rl))
    p = rl.popen("build", "-t", "interrupted", str(ctx), start_new_session=True)
    assert p.stdout is not None
    deadline = time.monotonic() + 120
    for line in p.stdout:
        if "COPY many" in line or time.monotonic() > deadline:
            break
    time.sleep(1.0)  # well into the copy
    os.killpg(p.pid, signal.SIGINT)
    p.wait(timeout=60)
    assert p.returncode == 130, p.stderr.read() if p.stderr else ""
    assert rl.wait_no_processes() == []
    assert (rl("images", "-q").stdout, _count_layers(rl)) == before
    assert rl("ps", "-a", "-q").stdout == ""
    assert _leftovers(rl) == []
    build(rl, ctx, "-t", "after")
    assert run(rl, "after", "find /many -type f | wc -l; cat /many/d7/f9") == "10001\n7 9\n"


def test_a_linked_file_stays_as_the_first_image_has_it_every_driver(rlb: RootlessEnv, tmp_path: Path) -> None:
    """The file a rebuilt COPY shares with the previous layer is written by a later RUN through
    the driver's copy-up, never through the link: the first image keeps its bytes and mode."""
    ctx = write(tmp_path / "ctx", {"keep.txt": "keep\n", "other.txt": "1\n", "Dockerfile": "FROM busybox\nCOPY . /c\n"})
    for name in ("keep.txt", "other.txt"):
        os.utime(ctx / name, (1_600_000_000, 1_600_000_000))
    build(rlb, ctx, "-t", "first")
    (ctx / "other.txt").write_text("2\n")
    build(rlb, ctx, "-t", "second")
    first, second = (rlb.layer_dir(_diff_ids(rlb, n)[-1]) / "c" / "keep.txt" for n in ("first", "second"))
    assert first.stat().st_ino == second.stat().st_ino  # shared
    write(ctx, {"Dockerfile": "FROM localhost/second\nRUN echo more >> /c/keep.txt && chmod 600 /c/keep.txt\n"})
    build(rlb, ctx, "-t", "third")
    assert run(rlb, "third", "cat /c/keep.txt; stat -c %a /c/keep.txt") == "keep\nmore\n600\n"
    for name in ("first", "second"):
        assert run(rlb, name, "cat /c/keep.txt; stat -c %a /c/keep.txt") == "keep\n644\n", name
    assert first.read_text() == "keep\n" and first.stat().st_mode & 0o777 == 0o644
