"""The images the integration tests and benchmarks pull, built with tests/imagebuild.py.

Every recipe is deterministic: the same inputs give the same digests, so tests can
compare what `rootless` stored with what was pushed.
"""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import tarfile
from dataclasses import dataclass
from pathlib import Path

from tests import imagebuild as ib
from tests.imagebuild import Entry, Image, Index, Layer, Platform

BUSYBOX = Path("/bin/busybox")
BOOKWORM_TAR = Path(os.environ.get("ROOTLESS_TEST_BOOKWORM", "/var/cache/rootless-ci/bookworm.tar"))

PASSWD = (
    "root:x:0:0:root:/root:/bin/sh\n"
    "nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
    "user:x:1000:1000:user:/home/user:/bin/sh\n"
)
GROUP = "root:x:0:\nnobody:x:65534:\nuser:x:1000:\n"


def pseudo_random(seed: str, size: int) -> bytes:
    """Incompressible, reproducible bytes (so each fault-injection image has its own blob)."""
    out = bytearray()
    counter = 0
    while len(out) < size:
        out += hashlib.sha256(f"{seed}:{counter}".encode()).digest()
        counter += 1
    return bytes(out[:size])


def busybox_applets(busybox: Path = BUSYBOX) -> list[str]:
    """Paths of the applets (``bin/sh``, ``usr/bin/awk``…) as the binary itself installs them."""
    out = subprocess.run([str(busybox), "--list-full"], capture_output=True, text=True, check=True).stdout
    return sorted({line.strip().lstrip("/") for line in out.splitlines() if line.strip()} - {"bin/busybox"})


def busybox_rootfs(os_release: str = 'NAME="BusyBox"\nID=busybox\n', busybox: Path = BUSYBOX) -> list[Entry]:
    """A small but complete root file system: busybox, its applets, users and the usual dirs."""
    entries: list[Entry] = [
        ib.directory("bin"), ib.directory("dev"), ib.directory("etc"), ib.directory("home"),
        ib.directory("home/user", uid=1000, gid=1000), ib.directory("proc"),
        ib.directory("root", mode=0o700), ib.directory("run"), ib.directory("sbin"), ib.directory("sys"),
        ib.directory("tmp", mode=0o1777), ib.directory("usr"), ib.directory("usr/bin"),
        ib.directory("usr/sbin"), ib.directory("var"), ib.directory("var/tmp", mode=0o1777),
        ib.directory("var/www"),
        Entry("bin/busybox", "file", source=busybox, size=busybox.stat().st_size, mode=0o755),
    ]
    have = {e.path for e in entries}
    for applet in busybox_applets(busybox):
        parent = applet.rpartition("/")[0]
        if parent and parent not in have:
            entries.append(ib.directory(parent))
            have.add(parent)
        entries.append(ib.symlink(applet, "/bin/busybox"))
    entries += [
        ib.file("etc/passwd", PASSWD),
        ib.file("etc/group", GROUP),
        ib.file("etc/shadow", "root:*:19000:0:99999:7:::\nnobody:*:19000::::::\nuser:*:19000::::::\n",
                mode=0o600),
        ib.file("etc/hostname", "busybox\n"),
        ib.file("etc/os-release", os_release),
        ib.file("var/www/index.html", "<h1>hello from rootless</h1>\n"),
    ]
    return entries


def busybox_layer(compression: ib.Compression = "gzip") -> Layer:
    return ib.build_layer(busybox_rootfs(), compression)


def alpine_layer(version: str) -> Layer:
    return ib.build_layer([
        ib.directory("etc"),
        ib.file("etc/alpine-release", f"{version}\n"),
        ib.file("etc/os-release", f'NAME="Alpine Linux"\nID=alpine\nVERSION_ID={version}\n'),
    ])


def unique_layer(name: str, size: int = 256 * 1024, compression: ib.Compression = "gzip") -> Layer:
    """A layer no other image shares, with ``size`` incompressible bytes in /NAME.bin."""
    safe = name.replace("/", "_")
    return ib.build_layer([ib.file(f"{safe}.bin", pseudo_random(name, size)),
                           ib.file(f"{safe}.txt", f"{name}\n")], compression)


# --------------------------------------------------------------------------- multilayer

MULTILAYER_L2 = [
    ib.directory("data"),
    ib.file("data/removed.txt", "removed by the next layer\n"),
    ib.file("data/keep.txt", "lower version\n"),
    ib.directory("opq"),
    ib.file("opq/old1", "hidden by the opaque dir above\n"),
    ib.directory("opq/sub"),
    ib.file("opq/sub/old2", "hidden too\n"),
    ib.directory("links"),
    ib.file("links/target.txt", "link target\n"),
    ib.hardlink("links/hard", "links/target.txt"),
    ib.symlink("links/rel", "target.txt"),
    ib.symlink("links/abs", "/links/target.txt"),
    ib.symlink("links/dangling", "/nonexistent/file"),
    ib.directory("usr"), ib.directory("usr/local"), ib.directory("usr/local/bin"),
    ib.file("usr/local/bin/suid", "#!/bin/sh\nid\n", mode=0o4755),
    ib.file("usr/local/bin/sgid", "#!/bin/sh\nid\n", mode=0o2755, gid=50),
    ib.directory("owned"),
    ib.file("owned/user1000", "owned by 1000\n", mode=0o640, uid=1000, gid=1000),
    ib.file("owned/nobody", "owned by 65534\n", mode=0o644, uid=65534, gid=65534),
    ib.directory("owned/dir1000", mode=0o750, uid=1000, gid=1000),
    ib.file("owned/dir1000/inner", "inner\n", uid=1000, gid=1000),
    ib.file("owned/huge-id", "owned by an ID beyond any subordinate range\n", uid=4000000000, gid=4000000000),
    ib.directory("xattr"),
    ib.file("xattr/file", "has a user xattr\n", xattrs={"user.test": "hello"}),
    ib.directory("sticky", mode=0o1777),
    ib.directory("dev"),
    ib.chardev("dev/mynull", 1, 3),
    ib.fifo("data/fifo"),
]

MULTILAYER_L3 = [
    ib.directory("data"),
    ib.whiteout("data/removed.txt"),
    ib.file("data/keep.txt", "upper version\n"),
    ib.file("data/added.txt", "added in layer 3\n"),
    ib.directory("opq"),
    ib.opaque("opq"),
    ib.file("opq/new", "only file left in opq\n"),
]

MULTILAYER_L4 = [ib.directory("emptydir", mode=0o755)]


def multilayer_image(base: Layer) -> Image:
    layers = [base, ib.build_layer(MULTILAYER_L2), ib.build_layer(MULTILAYER_L3),
              ib.build_layer(MULTILAYER_L4), ib.build_layer([])]
    return ib.make_image(layers, cmd=["sh"])


# --------------------------------------------------------------------------- hostile layer


def evil_layer(outside: str) -> Layer:
    """Members that try to write outside the layer directory (``outside`` is an absolute
    directory the test watches)."""
    return ib.build_layer([
        ib.directory("ok"),
        ib.file("ok/file", "fine\n"),
        ib.file("../escape-dotdot", "escaped through ..\n"),
        ib.file("ok/../../escape-dotdot2", "escaped through ok/../..\n"),
        ib.file(f"{outside}/escape-absolute", "escaped through an absolute path\n"),
        ib.symlink("link", outside),
        ib.file("link/escape-through-symlink", "escaped through a symlink\n"),
        ib.hardlink("hardlink-out", "../../../../../../../../etc/passwd"),
        ib.symlink("rel-up", "../../../../../../../.."),
        ib.file("rel-up/tmp/escape-through-relative-symlink", "escaped\n"),
    ])


# --------------------------------------------------------------------------- debian


def _skip_devices(ti: tarfile.TarInfo) -> bool:
    # mmdebstrap puts /dev/null & co in its tarball; published images ship an empty /dev.
    return ti.ischr() or ti.isblk()


def debian_layer(cache_dir: Path, tarball: Path = BOOKWORM_TAR) -> Layer:
    st = tarball.stat()
    key = f"debian-bookworm-{st.st_size}-{int(st.st_mtime)}-v1"
    return ib.cached_layer(cache_dir, key,
                           lambda out: ib.build_layer(ib.tar_members(tarball, skip=_skip_devices), out=out))


def sixlayer_layers(cache_dir: Path, tarball: Path = BOOKWORM_TAR, n: int = 6) -> list[Layer]:
    """The bookworm rootfs cut into ``n`` layers of similar size (for the pull benchmark).

    Files are split by cumulative size in tar order; each layer carries the directories
    above its files, as a real layer diff does, and a hardlink goes with its target.
    """
    st = tarball.stat()
    keys = [f"sixlayer-{st.st_size}-{int(st.st_mtime)}-{i}of{n}-v1" for i in range(n)]
    hits = [ib.load_cached_layer(cache_dir, k) for k in keys]
    if all(h is not None for h in hits):
        return [h for h in hits if h is not None]
    members: list[tuple[tarfile.TarInfo, bytes]] = []
    for ti, f in ib.tar_members(tarball, skip=_skip_devices):
        members.append((ti, f.read() if f is not None else b""))
    dirs = {ti.name.rstrip("/"): ti for ti, _ in members if ti.isdir()}
    total = sum(ti.size for ti, _ in members if ti.isreg())
    chunk_of: dict[str, int] = {}
    chunks: list[list[tuple[tarfile.TarInfo, bytes]]] = [[] for _ in range(n)]
    acc = 0
    for ti, data in members:
        if ti.isdir():
            continue
        if ti.isreg():
            c = min(n - 1, acc * n // max(total, 1))
            acc += ti.size
        elif ti.islnk():
            c = chunk_of.get(ti.linkname, 0)
        else:
            c = 0
        chunk_of[ti.name] = c
        chunks[c].append((ti, data))
    layers = []
    for i, chunk in enumerate(chunks):
        need: list[str] = []
        seen: set[str] = set()
        for ti, _ in chunk:
            parts = ti.name.split("/")[:-1]
            for j in range(1, len(parts) + 1):
                d = "/".join(parts[:j])
                if d not in seen:
                    seen.add(d)
                    need.append(d)
        if i == 0:
            need = [d for d in dirs if d not in seen] + need
        ordered = [(dirs[d], b"") for d in need if d in dirs] + chunk

        def build(out: Path, items: list[tuple[tarfile.TarInfo, bytes]] = ordered) -> Layer:
            members = [(ti, io.BytesIO(data) if ti.isreg() else None) for ti, data in items]
            return ib.build_layer(members, out=out)

        layers.append(ib.cached_layer(cache_dir, keys[i], build))
    return layers


# --------------------------------------------------------------------------- the catalogue


@dataclass(frozen=True)
class Pushed:
    """An image (or index) as it sits in a test registry."""

    repo: str  # e.g. library/alpine
    tag: str
    digest: str  # manifest (or index) digest
    image: Image | None = None
    index: Index | None = None

    @property
    def name(self) -> str:
        return f"{self.repo}:{self.tag}"

    @property
    def id(self) -> str:
        """The ID `rootless` should report for the host's platform."""
        return self.for_arch(ib.host_platform().architecture).id

    def for_arch(self, arch: str) -> Image:
        if self.image is not None:
            return self.image
        assert self.index is not None
        return self.index.for_platform(arch)


def push_image(pusher: ib.Pusher, repo: str, tag: str, image: Image) -> Pushed:
    return Pushed(repo, tag, pusher.push_image(repo, tag, image), image=image)


def push_index(pusher: ib.Pusher, repo: str, tag: str, index: Index) -> Pushed:
    return Pushed(repo, tag, pusher.push_index(repo, tag, index), index=index)


def arch_image(arch: str, variant: str | None, fmt: ib.Format, base: Layer | None) -> Image:
    layer = ib.build_layer([ib.file("arch", f"{arch}\n")])
    layers = [base, layer] if base is not None else [layer]
    return ib.make_image(layers, fmt=fmt, platform=Platform("linux", arch, variant), cmd=["sh"],
                         labels={"arch": arch})
