"""Build OCI and Docker images without docker, and push them over the distribution API.

The tests need images with exact contents (owners, modes, whiteouts, xattrs, several
platforms, zstd layers) in a real registry.  This module writes the layer tars itself,
deterministically, so every digest is reproducible, and pushes with httpx.

    layer = build_layer([file("etc/hostname", b"box\\n"), directory("tmp", mode=0o1777)])
    image = make_image([layer], cmd=["sh"])
    Pusher("http://127.0.0.1:5000").push_image("library/box", "latest", image)

Layer format: OCI image-layer spec (layer.md): a tar whose whiteouts are
``.wh.NAME`` files and whose opaque directories hold a ``.wh..wh..opq`` file;
xattrs travel as PAX ``SCHILY.xattr.NAME`` records (the GNU tar/libarchive
convention that containers/image and Docker use).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import stat
import tarfile
import tempfile
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Literal

# Fixed timestamp for members and configs: digests must not depend on when a test ran.
EPOCH = 1_700_000_000
CREATED = "2023-11-14T22:13:20Z"

Compression = Literal["gzip", "zstd", "none"]
Format = Literal["docker", "oci"]

MT_DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
MT_DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
MT_DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
MT_DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
MT_DOCKER_LAYER_TAR = "application/vnd.docker.image.rootfs.diff.tar"
MT_OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MT_OCI_INDEX = "application/vnd.oci.image.index.v1+json"
MT_OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
MT_OCI_LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"
MT_OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
MT_OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"

MANIFEST_ACCEPT = ", ".join([MT_OCI_INDEX, MT_DOCKER_LIST, MT_OCI_MANIFEST, MT_DOCKER_MANIFEST])

# A member taken from an existing tarball: its header and its data (None unless a file).
Member = tuple[tarfile.TarInfo, "IO[bytes] | None"]

EntryType = Literal["file", "dir", "symlink", "hardlink", "char", "block", "fifo"]

_TAR_TYPES: dict[str, bytes] = {
    "file": tarfile.REGTYPE,
    "dir": tarfile.DIRTYPE,
    "symlink": tarfile.SYMTYPE,
    "hardlink": tarfile.LNKTYPE,
    "char": tarfile.CHRTYPE,
    "block": tarfile.BLKTYPE,
    "fifo": tarfile.FIFOTYPE,
}


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


# --------------------------------------------------------------------------- entries


@dataclass(frozen=True)
class Entry:
    """One tar member.  ``path`` is written as given (no normalisation), so tests
    can also build hostile members such as ``../escape`` or ``/abs``."""

    path: str
    type: EntryType = "file"
    data: bytes = b""
    mode: int = 0o644
    uid: int = 0
    gid: int = 0
    mtime: int = EPOCH
    linkname: str = ""
    devmajor: int = 0
    devminor: int = 0
    xattrs: tuple[tuple[str, str], ...] = ()
    uname: str = ""
    gname: str = ""
    # Large contents may come from a file instead of ``data``.
    source: Path | None = None
    size: int | None = None

    def tarinfo(self) -> tarfile.TarInfo:
        ti = tarfile.TarInfo(self.path)
        ti.type = _TAR_TYPES[self.type]
        ti.mode = self.mode & 0o7777
        ti.uid, ti.gid = self.uid, self.gid
        ti.uname, ti.gname = self.uname, self.gname
        ti.mtime = self.mtime
        ti.linkname = self.linkname
        ti.devmajor, ti.devminor = self.devmajor, self.devminor
        if self.type == "file":
            ti.size = self.size if self.size is not None else len(self.data)
        if self.xattrs:
            ti.pax_headers = {f"SCHILY.xattr.{k}": v for k, v in self.xattrs}
        return ti

    def open_data(self) -> IO[bytes] | None:
        if self.type != "file":
            return None
        if self.source is not None:
            return open(self.source, "rb")
        return io.BytesIO(self.data)


def file(path: str, data: bytes | str = b"", mode: int = 0o644, uid: int = 0, gid: int = 0,
         xattrs: dict[str, str] | None = None, mtime: int = EPOCH) -> Entry:
    if isinstance(data, str):
        data = data.encode()
    return Entry(path, "file", data=data, mode=mode, uid=uid, gid=gid, mtime=mtime,
                 xattrs=tuple(sorted((xattrs or {}).items())))


def directory(path: str, mode: int = 0o755, uid: int = 0, gid: int = 0,
              xattrs: dict[str, str] | None = None, mtime: int = EPOCH) -> Entry:
    return Entry(path.rstrip("/") or ".", "dir", mode=mode, uid=uid, gid=gid, mtime=mtime,
                 xattrs=tuple(sorted((xattrs or {}).items())))


def symlink(path: str, target: str, uid: int = 0, gid: int = 0) -> Entry:
    return Entry(path, "symlink", linkname=target, mode=0o777, uid=uid, gid=gid)


def hardlink(path: str, target: str) -> Entry:
    """``target`` is the path of an earlier member of the same layer (tar semantics)."""
    return Entry(path, "hardlink", linkname=target, mode=0o644)


def chardev(path: str, major: int, minor: int, mode: int = 0o666) -> Entry:
    return Entry(path, "char", devmajor=major, devminor=minor, mode=mode)


def fifo(path: str, mode: int = 0o644) -> Entry:
    return Entry(path, "fifo", mode=mode)


def whiteout(path: str) -> Entry:
    """Deletes ``path`` of a lower layer (OCI layer.md, "Whiteouts")."""
    head, _, name = path.rstrip("/").rpartition("/")
    return file(f"{head}/.wh.{name}" if head else f".wh.{name}", mode=0o644)


def opaque(dirpath: str) -> Entry:
    """Hides every lower-layer child of ``dirpath`` (OCI layer.md, "Opaque Whiteout")."""
    return file(f"{dirpath.rstrip('/')}/.wh..wh..opq", mode=0o644)


def with_parents(entries: Iterable[Entry], mode: int = 0o755) -> list[Entry]:
    """Adds a directory member for every missing ancestor, as layer diffs carry them."""
    entries = list(entries)
    have = {e.path.rstrip("/") for e in entries if e.type == "dir"}
    out: list[Entry] = []
    for e in entries:
        parts = e.path.strip("/").split("/")[:-1]
        for i in range(1, len(parts) + 1):
            d = "/".join(parts[:i])
            if d and d not in have and d not in ("..", "."):
                have.add(d)
                out.append(directory(d, mode=mode))
        out.append(e)
    return out


def tree_entries(root: Path, *, uid: int | None = 0, gid: int | None = 0,
                 mtime: int | None = EPOCH, prefix: str = "") -> list[Entry]:
    """Members for a directory tree (sorted, so the tar is deterministic).

    ``uid``/``gid``/``mtime`` override the files' own values; pass None to keep them.
    Files sharing an inode become hardlinks to the first path seen.
    """
    out: list[Entry] = []
    seen_inodes: dict[tuple[int, int], str] = {}

    def visit(dirpath: Path, rel: str) -> None:
        for name in sorted(os.listdir(dirpath)):
            p = dirpath / name
            r = f"{rel}/{name}" if rel else f"{prefix}{name}"
            st = p.lstat()
            u = st.st_uid if uid is None else uid
            g = st.st_gid if gid is None else gid
            t = int(st.st_mtime) if mtime is None else mtime
            m = stat.S_IMODE(st.st_mode)
            xattrs = _user_xattrs(p)
            if stat.S_ISDIR(st.st_mode):
                out.append(Entry(r, "dir", mode=m, uid=u, gid=g, mtime=t, xattrs=xattrs))
                visit(p, r)
            elif stat.S_ISLNK(st.st_mode):
                out.append(Entry(r, "symlink", linkname=os.readlink(p), mode=0o777, uid=u, gid=g, mtime=t))
            elif stat.S_ISREG(st.st_mode):
                key = (st.st_dev, st.st_ino)
                if st.st_nlink > 1 and key in seen_inodes:
                    out.append(Entry(r, "hardlink", linkname=seen_inodes[key], mode=m, uid=u, gid=g, mtime=t))
                    continue
                seen_inodes[key] = r
                out.append(Entry(r, "file", source=p, size=st.st_size, mode=m, uid=u, gid=g, mtime=t,
                                 xattrs=xattrs))
            elif stat.S_ISFIFO(st.st_mode):
                out.append(Entry(r, "fifo", mode=m, uid=u, gid=g, mtime=t))
            # sockets and device nodes of a host tree are not image content

    visit(root, "")
    return out


def _user_xattrs(p: Path) -> tuple[tuple[str, str], ...]:
    try:
        names = os.listxattr(p, follow_symlinks=False)
    except OSError:
        return ()
    out = []
    for n in sorted(names):
        if n.startswith("user."):
            try:
                out.append((n, os.getxattr(p, n, follow_symlinks=False).decode("utf-8", "surrogateescape")))
            except OSError:
                continue
    return tuple(out)


def tar_members(tarpath: Path, *, skip: Callable[[tarfile.TarInfo], bool] | None = None,
                rename: Callable[[str], str] | None = None) -> Iterator[Member]:
    """Streams the members of an existing tarball (for the mmdebstrap rootfs).

    Yields (TarInfo, data) pairs ready for :func:`write_tar`; names are renamed with
    ``rename`` (default: strip a leading "./"), members for which ``skip`` is true dropped.
    """
    def default_rename(n: str) -> str:
        n = n[2:] if n.startswith("./") else n
        return n

    rn = rename or default_rename
    with tarfile.open(tarpath, "r:*") as tf:
        for ti in tf:
            if skip is not None and skip(ti):
                continue
            name = rn(ti.name)
            if name in ("", ".", "./"):
                continue
            ti.name = name
            if ti.islnk():
                ti.linkname = rn(ti.linkname)
            ti.uname = ti.gname = ""
            yield ti, (tf.extractfile(ti) if ti.isreg() else None)


# --------------------------------------------------------------------------- blobs


@dataclass(frozen=True)
class Blob:
    media_type: str
    digest: str
    size: int
    data: bytes | None = None
    path: Path | None = None

    def read(self) -> bytes:
        if self.data is not None:
            return self.data
        assert self.path is not None
        return self.path.read_bytes()

    def chunks(self, size: int = 1 << 20) -> Iterator[bytes]:
        if self.data is not None:
            yield self.data
            return
        assert self.path is not None
        with open(self.path, "rb") as f:
            while chunk := f.read(size):
                yield chunk

    def descriptor(self, **extra: Any) -> dict[str, Any]:
        d: dict[str, Any] = {"mediaType": self.media_type, "digest": self.digest, "size": self.size}
        d.update(extra)
        return d

    @property
    def hex(self) -> str:
        return self.digest.partition(":")[2]


@dataclass(frozen=True)
class Layer(Blob):
    diff_id: str = ""
    compression: Compression = "gzip"
    members: tuple[str, ...] = ()  # member names in tar order


def json_blob(obj: Any, media_type: str) -> Blob:
    data = json.dumps(obj, indent=2, sort_keys=False).encode()
    return Blob(media_type, sha256_digest(data), len(data), data=data)


class _Hasher(io.RawIOBase):
    """A write-only stream that hashes and counts what passes through to ``sink``."""

    def __init__(self, sink: IO[bytes] | None) -> None:
        self.sink = sink
        self.h = hashlib.sha256()
        self.n = 0

    def writable(self) -> bool:
        return True

    def write(self, b: Any) -> int:
        mv = memoryview(b)
        self.h.update(mv)
        self.n += len(mv)
        if self.sink is not None:
            self.sink.write(mv)
        return len(mv)


def write_tar(out: IO[bytes], members: Iterable[Entry | Member]) -> list[str]:
    """Writes a PAX tar of ``members`` to ``out``; returns the member names."""
    names: list[str] = []
    # PAX carries xattrs and long names; the USTAR fields stay as the spec's fallback.
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tf:
        for m in members:
            if isinstance(m, Entry):
                ti, fobj = m.tarinfo(), m.open_data()
            else:
                ti, fobj = m
            try:
                tf.addfile(ti, fobj)
            finally:
                if fobj is not None and isinstance(m, Entry):
                    fobj.close()
            names.append(ti.name)
    return names


def build_layer(members: Iterable[Entry | Member],
                compression: Compression = "gzip", *, fmt: Format = "docker",
                out: Path | None = None, level: int | None = None) -> Layer:
    """Builds one layer blob in a single pass: tar → diff_id hash → compressor → digest hash.

    Small layers stay in memory; with ``out`` the blob is written to that file
    (for the big rootfs layers).
    """
    sink: IO[bytes]
    sink = open(out, "wb") if out is not None else io.BytesIO()
    try:
        compressed = _Hasher(sink)
        comp: Any
        if compression == "gzip":
            # mtime=0 and no file name: the gzip header must not vary between runs (RFC 1952 2.3.1)
            comp = gzip.GzipFile(filename="", mode="wb", fileobj=compressed,
                                 compresslevel=6 if level is None else level, mtime=0)
        elif compression == "zstd":
            import zstandard

            cctx = zstandard.ZstdCompressor(level=3 if level is None else level)
            comp = cctx.stream_writer(compressed, closefd=False)  # type: ignore[arg-type]
        else:
            comp = compressed
        uncompressed: Any = _Hasher(comp)
        names = write_tar(uncompressed, members)
        if comp is not compressed:
            comp.close()
        data = sink.getvalue() if isinstance(sink, io.BytesIO) else None
    finally:
        sink.close()
    media_type = _layer_media_type(compression, fmt)
    return Layer(media_type=media_type, digest="sha256:" + compressed.h.hexdigest(), size=compressed.n,
                 data=data, path=out, diff_id="sha256:" + uncompressed.h.hexdigest(),
                 compression=compression, members=tuple(names))


def _layer_media_type(compression: Compression, fmt: Format) -> str:
    if compression == "zstd":
        return MT_OCI_LAYER_ZSTD  # Docker's schema 2 has no zstd type; Docker itself uses the OCI one
    if fmt == "docker":
        return MT_DOCKER_LAYER_GZIP if compression == "gzip" else MT_DOCKER_LAYER_TAR
    return MT_OCI_LAYER_GZIP if compression == "gzip" else MT_OCI_LAYER_TAR


def relabel(layer: Layer, fmt: Format) -> Layer:
    """The same layer bytes described with the other format's media type."""
    return Layer(media_type=_layer_media_type(layer.compression, fmt), digest=layer.digest, size=layer.size,
                 data=layer.data, path=layer.path, diff_id=layer.diff_id, compression=layer.compression,
                 members=layer.members)


# --------------------------------------------------------------------------- images


@dataclass(frozen=True)
class Platform:
    os: str = "linux"
    architecture: str = "amd64"
    variant: str | None = None

    def to_json(self) -> dict[str, str]:
        d = {"architecture": self.architecture, "os": self.os}
        if self.variant:
            d["variant"] = self.variant
        return d

    def __str__(self) -> str:
        return "/".join(x for x in (self.os, self.architecture, self.variant) if x)


def host_platform() -> Platform:
    machine = os.uname().machine
    arch = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "i686": "386", "i386": "386",
            "ppc64le": "ppc64le", "s390x": "s390x", "riscv64": "riscv64"}.get(machine, machine)
    return Platform("linux", arch, "v8" if arch == "arm64" else ("v7" if arch == "arm" else None))


@dataclass(frozen=True)
class Image:
    layers: tuple[Layer, ...]
    config: Blob
    manifest: Blob
    platform: Platform
    config_json: dict[str, Any] = field(default_factory=dict)

    @property
    def id(self) -> str:
        """The image ID as Podman and Docker print it: the config digest's hex."""
        return self.config.hex

    @property
    def diff_ids(self) -> list[str]:
        return [la.diff_id for la in self.layers]

    @property
    def blobs(self) -> list[Blob]:
        return [*self.layers, self.config]


def make_image(layers: Sequence[Layer], *, fmt: Format = "docker", platform: Platform | None = None,
               env: Sequence[str] = ("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",),
               cmd: Sequence[str] | None = None, entrypoint: Sequence[str] | None = None,
               workdir: str | None = None, user: str | None = None,
               exposed_ports: Sequence[str] = (), labels: dict[str, str] | None = None,
               volumes: Sequence[str] = (), stop_signal: str | None = None,
               history: Sequence[dict[str, Any]] | None = None, created: str = CREATED,
               author: str | None = None, extra_config: dict[str, Any] | None = None) -> Image:
    """The image config (OCI image-spec config.md) and its manifest (Docker v2s2 or OCI)."""
    platform = platform or Platform()
    layers = tuple(relabel(la, fmt) if la.compression != "zstd" else la for la in layers)
    cfg: dict[str, Any] = {"Env": list(env)}
    if cmd is not None:
        cfg["Cmd"] = list(cmd)
    if entrypoint is not None:
        cfg["Entrypoint"] = list(entrypoint)
    if workdir:
        cfg["WorkingDir"] = workdir
    if user:
        cfg["User"] = user
    if exposed_ports:
        cfg["ExposedPorts"] = {p: {} for p in exposed_ports}
    if volumes:
        cfg["Volumes"] = {v: {} for v in volumes}
    if labels:
        cfg["Labels"] = dict(labels)
    if stop_signal:
        cfg["StopSignal"] = stop_signal
    if extra_config:
        cfg.update(extra_config)
    if history is None:
        history = [{"created": created, "created_by": f"imagebuild: layer {i} ({la.diff_id[:19]})"}
                   for i, la in enumerate(layers)]
        if cmd is not None:
            history.append({"created": created, "empty_layer": True,
                            "created_by": f"/bin/sh -c #(nop)  CMD {json.dumps(list(cmd))}"})
    config: dict[str, Any] = {
        "created": created,
        "architecture": platform.architecture,
        "os": platform.os,
        "config": cfg,
        "rootfs": {"type": "layers", "diff_ids": [la.diff_id for la in layers]},
        "history": list(history),
    }
    if platform.variant:
        config["variant"] = platform.variant
    if author:
        config["author"] = author
    config_blob = json_blob(config, MT_DOCKER_CONFIG if fmt == "docker" else MT_OCI_CONFIG)
    media_type = MT_DOCKER_MANIFEST if fmt == "docker" else MT_OCI_MANIFEST
    manifest = {
        "schemaVersion": 2,
        "mediaType": media_type,
        "config": config_blob.descriptor(),
        "layers": [la.descriptor() for la in layers],
    }
    return Image(layers=layers, config=config_blob,
                 manifest=json_blob(manifest, media_type), platform=platform, config_json=config)


@dataclass(frozen=True)
class Index:
    images: tuple[Image, ...]
    manifest: Blob

    def for_platform(self, arch: str) -> Image:
        for im in self.images:
            if im.platform.architecture == arch:
                return im
        raise KeyError(arch)


def make_index(images: Sequence[Image], fmt: Format = "oci",
               annotations: dict[str, str] | None = None) -> Index:
    """An OCI image index or a Docker manifest list over ``images`` (image-index.md)."""
    body: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": MT_OCI_INDEX if fmt == "oci" else MT_DOCKER_LIST,
        "manifests": [im.manifest.descriptor(platform=im.platform.to_json()) for im in images],
    }
    if annotations:
        body["annotations"] = dict(annotations)
    return Index(images=tuple(images), manifest=json_blob(body, body["mediaType"]))


# --------------------------------------------------------------------------- pushing


class PushError(RuntimeError):
    pass


def _parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """Parses ``Bearer realm="…",service="…",scope="…"`` (RFC 7235 section 2.1)."""
    scheme, _, rest = header.strip().partition(" ")
    params: dict[str, str] = {}
    i = 0
    while i < len(rest):
        while i < len(rest) and rest[i] in " ,":
            i += 1
        eq = rest.find("=", i)
        if eq < 0:
            break
        key = rest[i:eq].strip().lower()
        i = eq + 1
        if i < len(rest) and rest[i] == '"':
            j = i + 1
            val = []
            while j < len(rest) and rest[j] != '"':
                if rest[j] == "\\" and j + 1 < len(rest):
                    j += 1
                val.append(rest[j])
                j += 1
            params[key] = "".join(val)
            i = j + 1
        else:
            j = rest.find(",", i)
            j = len(rest) if j < 0 else j
            params[key] = rest[i:j].strip()
            i = j
    return scheme.lower(), params


def registry_auth(username: str | None, password: str | None, scope_actions: str = "pull,push") -> Any:
    """An httpx.Auth that answers Basic and Bearer challenges (the distribution token flow,
    docs/spec/auth/token.md), asking the token service for the repository of each request."""
    import httpx

    class _Auth(httpx.Auth):
        def __init__(self) -> None:
            self.tokens: dict[str, str] = {}

        def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
            repo = _repo_of(request.url.path)
            tok = self.tokens.get(repo)
            if tok:
                request.headers["Authorization"] = f"Bearer {tok}"
            elif username is not None and "basic" in self.tokens:
                request.headers["Authorization"] = _basic(username, password)
            response = yield request
            if response.status_code != 401:
                return
            scheme, params = _parse_challenge(response.headers.get("www-authenticate", ""))
            if scheme == "basic":
                if username is None:
                    return
                self.tokens["basic"] = "1"
                request.headers["Authorization"] = _basic(username, password)
                yield request
                return
            if scheme != "bearer":
                return
            query = {"service": params.get("service", "")}
            scope = params.get("scope") or (f"repository:{repo}:{scope_actions}" if repo else "")
            if repo and scope_actions not in scope:
                scope = f"repository:{repo}:{scope_actions}"
            if scope:
                query["scope"] = scope
            auth = (username, password or "") if username is not None else None
            tr = httpx.get(params["realm"], params=query, auth=auth, timeout=30)
            if tr.status_code != 200:
                raise PushError(f"token service {params['realm']} refused: {tr.status_code} {tr.text[:200]}")
            body = tr.json()
            tok = body.get("token") or body.get("access_token")
            self.tokens[repo] = tok
            request.headers["Authorization"] = f"Bearer {tok}"
            yield request

    return _Auth()


def _basic(username: str, password: str | None) -> str:
    import base64

    return "Basic " + base64.b64encode(f"{username}:{password or ''}".encode()).decode()


def _repo_of(path: str) -> str:
    # /v2/<name>/(blobs|manifests|tags)/...
    if not path.startswith("/v2/"):
        return ""
    rest = path[4:]
    for marker in ("/blobs/", "/manifests/", "/tags/"):
        k = rest.find(marker)
        if k >= 0:
            return rest[:k]
    return ""


class Pusher:
    """Pushes blobs and manifests to one registry (distribution spec, "Push")."""

    def __init__(self, base_url: str, username: str | None = None, password: str | None = None,
                 timeout: float = 120) -> None:
        import httpx

        self.base = base_url.rstrip("/")
        self.client = httpx.Client(auth=registry_auth(username, password), timeout=timeout,
                                   follow_redirects=True)

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> Pusher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _check(self, r: Any, what: str, ok: Sequence[int]) -> None:
        if r.status_code not in ok:
            raise PushError(f"{what}: HTTP {r.status_code}: {r.text[:500]}")

    def has_blob(self, repo: str, digest: str) -> bool:
        r = self.client.head(f"{self.base}/v2/{repo}/blobs/{digest}")
        return r.status_code == 200

    def push_blob(self, repo: str, blob: Blob) -> None:
        if self.has_blob(repo, blob.digest):
            return
        r = self.client.post(f"{self.base}/v2/{repo}/blobs/uploads/")
        self._check(r, f"start upload of {blob.digest} to {repo}", (202,))
        location = r.headers["location"]
        if location.startswith("/"):
            location = self.base + location
        sep = "&" if "?" in location else "?"
        r = self.client.put(f"{location}{sep}digest={blob.digest}",
                            content=blob.read(),
                            headers={"Content-Type": "application/octet-stream"})
        self._check(r, f"upload {blob.digest} to {repo}", (201,))

    def push_manifest(self, repo: str, ref: str, manifest: Blob) -> str:
        r = self.client.put(f"{self.base}/v2/{repo}/manifests/{ref}", content=manifest.read(),
                            headers={"Content-Type": manifest.media_type})
        self._check(r, f"put manifest {repo}:{ref}", (201,))
        got = r.headers.get("docker-content-digest", manifest.digest)
        if got != manifest.digest:
            raise PushError(f"registry stored manifest {repo}:{ref} as {got}, expected {manifest.digest}")
        return manifest.digest

    def push_image(self, repo: str, tag: str | None, image: Image) -> str:
        for b in image.blobs:
            self.push_blob(repo, b)
        return self.push_manifest(repo, tag or image.manifest.digest, image.manifest)

    def push_index(self, repo: str, tag: str, index: Index) -> str:
        for im in index.images:
            self.push_image(repo, None, im)
        return self.push_manifest(repo, tag, index.manifest)

    def delete_manifest(self, repo: str, digest: str) -> None:
        r = self.client.delete(f"{self.base}/v2/{repo}/manifests/{digest}")
        self._check(r, f"delete manifest {repo}@{digest}", (202,))


# --------------------------------------------------------------------------- cache


def load_cached_layer(cache_dir: Path, key: str) -> Layer | None:
    rec = cache_dir / f"{key}.json"
    if not rec.exists():
        return None
    d = json.loads(rec.read_text())
    p = Path(d["path"])
    if not p.exists() or p.stat().st_size != d["size"]:
        return None
    return Layer(media_type=d["media_type"], digest=d["digest"], size=d["size"], path=p,
                 diff_id=d["diff_id"], compression=d["compression"], members=tuple(d["members"]))


def cached_layer(cache_dir: Path, key: str, build: Callable[[Path], Layer]) -> Layer:
    """A big layer built once: its blob lives in ``cache_dir`` with a JSON record beside it.

    ``key`` must change whenever the inputs change (e.g. the source's size and mtime).
    """
    cache_dir.mkdir(parents=True, exist_ok=True)
    hit = load_cached_layer(cache_dir, key)
    if hit is not None:
        return hit
    fd, tmp = tempfile.mkstemp(dir=cache_dir, prefix=".building-")
    os.close(fd)
    try:
        layer = build(Path(tmp))
        final = cache_dir / f"{layer.hex}.blob"
        shutil.move(tmp, final)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    layer = Layer(media_type=layer.media_type, digest=layer.digest, size=layer.size, path=final,
                  diff_id=layer.diff_id, compression=layer.compression, members=layer.members)
    rec = cache_dir / f"{key}.json"
    rec_tmp = rec.with_suffix(".tmp")
    rec_tmp.write_text(json.dumps({"path": str(final), "media_type": layer.media_type, "digest": layer.digest,
                                   "size": layer.size, "diff_id": layer.diff_id,
                                   "compression": layer.compression, "members": list(layer.members)}))
    os.replace(rec_tmp, rec)
    return layer
