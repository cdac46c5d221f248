"""Images in files: save/load (docker-archive, oci-archive, oci-dir, dir), import/export.

Formats written:
 * docker-archive, as Docker 25+ writes it, which `docker load` and `podman load` both
   read: an OCI image layout (oci-layout, index.json, blobs/sha256/…) whose layers are the
   uncompressed tars named by their diff IDs, plus Docker's manifest.json (Config,
   RepoTags, Layers as paths into blobs/) and repositories;
 * oci-archive / oci-dir: an OCI image layout whose blobs are the stored ones, byte for
   byte (a pulled image keeps its manifest digest);
 * dir: containers/image's directory transport (manifest.json, blobs by hex, version).
Loading reads any of these, plain or compressed (gzip, zstd, bzip2, xz), from a file or
a pipe: members are staged under the store's tmp/, every blob is verified against the
digest that names it, every layer's content against its diff ID while it is compressed
or unpacked, and layers go through the same unpacker as a pull (same refusal of escapes).
The image record is written last: a failed load leaves no image and no staged files.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import sys
import tarfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from rootless.errors import DigestMismatchError, RootlessError, StorageError, errno_hint
from rootless.image import manifest as mf

if TYPE_CHECKING:
    from rootless.context import Context
    from rootless.image.push import Plan, PushOptions
    from storage.images import ImageRecord

FORMATS = ("docker-archive", "oci-archive", "oci-dir", "docker-dir")
_CHUNK = 1 << 20
_MAX_JSON = 16 << 20  # manifest.json, index.json, configs: real ones are KiB
_OCI_LAYOUT = b'{"imageLayoutVersion":"1.0.0"}'
_LAYER_MEDIA = {("v2s2", "none"): mf.DOCKER_LAYER_TAR, ("v2s2", "gzip"): mf.DOCKER_LAYER_GZIP,
                ("oci", "none"): mf.OCI_LAYER_TAR, ("oci", "gzip"): mf.OCI_LAYER_GZIP,
                ("oci", "zstd"): mf.OCI_LAYER_ZSTD, ("v2s2", "zstd"): mf.OCI_LAYER_ZSTD}


# --------------------------------------------------------------------------- names


def _familiar(name: str) -> str:
    """docker.io/library/busybox:latest → busybox:latest (how Docker writes RepoTags)."""
    if name.startswith("docker.io/"):
        name = name[len("docker.io/"):]
        if name.startswith("library/") and name.count("/") == 1:
            name = name[len("library/"):]
    return name


def _names_for(rec: ImageRecord, text: str) -> list[str]:
    """The names an archive records for ``text``: the name it was asked by, else none for an ID."""
    from rootless.image.reference import parse_reference

    if rec.id.startswith(text.removeprefix("sha256:")):
        return []
    try:
        full = parse_reference(text).tagged_name
    except RootlessError:
        return list(rec.names[:1])
    for n in rec.names:
        if n == full or n.endswith("/" + full) or n.endswith("/" + text):
            return [n]
    return list(rec.names[:1])


# --------------------------------------------------------------------------- writing tars


class _TarOut:
    """A tar stream written member by member, sizes known up front (no seeking: stdout works)."""

    def __init__(self, out: IO[bytes]) -> None:
        self.out = out

    def _header(self, name: str, size: int, kind: bytes = tarfile.REGTYPE) -> None:
        ti = tarfile.TarInfo(name)
        ti.size, ti.type, ti.mode, ti.mtime = size, kind, 0o755 if kind == tarfile.DIRTYPE else 0o644, 0
        self.out.write(ti.tobuf(tarfile.PAX_FORMAT))

    def directory(self, name: str) -> None:
        self._header(name, 0, tarfile.DIRTYPE)

    def data(self, name: str, data: bytes) -> None:
        self._header(name, len(data))
        self.out.write(data)
        self._pad(len(data))

    def stream(self, name: str, size: int, chunks: Iterator[bytes]) -> None:
        self._header(name, size)
        n = 0
        for c in chunks:
            n += len(c)
            if n > size:
                raise StorageError(f"save {name}: more than the {size} bytes recorded for it",
                                   "the store is damaged: remove the image and pull it again")
            self.out.write(c)
        if n != size:
            raise StorageError(f"save {name}: {n} bytes where {size} were recorded",
                               "the store is damaged: remove the image and pull it again")
        self._pad(size)

    def _pad(self, size: int) -> None:
        if size % tarfile.BLOCKSIZE:
            self.out.write(b"\0" * (tarfile.BLOCKSIZE - size % tarfile.BLOCKSIZE))

    def close(self) -> None:
        self.out.write(b"\0" * (2 * tarfile.BLOCKSIZE))
        self.out.flush()


class _DirOut:
    """The same calls, into a directory (oci-dir, dir)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def directory(self, name: str) -> None:
        (self.root / name).mkdir(parents=True, exist_ok=True)

    def data(self, name: str, data: bytes) -> None:
        p = self.root / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)

    def stream(self, name: str, size: int, chunks: Iterator[bytes]) -> None:
        p = self.root / name
        p.parent.mkdir(parents=True, exist_ok=True)
        with open(p, "wb") as f:
            for c in chunks:
                f.write(c)

    def close(self) -> None:
        pass


def _file_chunks(path: Path) -> Iterator[bytes]:
    with open(path, "rb") as f:
        while c := f.read(_CHUNK):
            yield c


def _layer_chunks(ctx: Context, digest: str, compression: str, diff_id: str) -> Iterator[bytes]:
    """The uncompressed layer, its diff ID checked as it streams."""
    from storage import compress

    with open(ctx.layout.blob(digest), "rb") as f:
        ahead = compress.ReadAhead(compress.reader(f, compression))
        try:
            yield from ahead
        finally:
            ahead.close()
    if ahead.digest() != diff_id:
        raise DigestMismatchError(f"layer {diff_id[:19]} in the store does not match its diff ID",
                                  "remove the image and pull it again")


@contextlib.contextmanager
def _output(path: str | None, what: str) -> Iterator[IO[bytes]]:
    """stdout (never a terminal), or a temp file renamed to ``path`` once complete."""
    if path is None or path == "-":
        if sys.stdout.isatty():
            raise RootlessError(f"refusing to write {what} to the terminal",
                                "use -o FILE, or redirect the output to a file or a pipe")
        yield sys.stdout.buffer
        sys.stdout.buffer.flush()
        return
    target = Path(path)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        f = open(tmp, "xb")  # noqa: SIM115 - closed below
    except OSError as e:
        raise RootlessError(f"write {path}: {e.strerror}", errno_hint(e)) from e
    try:
        with f:
            yield f
        # No fsync, as Podman's save: the rename is what keeps a half-written archive out of
        # sight; forcing 170 MB to disk would double the time of a save.
        os.rename(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


# --------------------------------------------------------------------------- save


@dataclass(frozen=True)
class _Item:
    rec: ImageRecord
    names: list[str]


def save(ctx: Context, images: list[str], output: str | None, fmt: str = "docker-archive",
         quiet: bool = True) -> None:
    """``rootless save``: several images into one docker-archive; one into the others."""
    from rootless.image import present

    if fmt not in FORMATS:
        raise RootlessError(f"unknown format {fmt!r}", f"use one of {', '.join(FORMATS)}")
    if not images:
        raise RootlessError("save needs at least one image", "rootless save -o FILE IMAGE...")
    items = []
    for text in images:
        rec = present.find(ctx, text)
        items.append(_Item(rec, _names_for(rec, text)))
    if fmt != "docker-archive" and len(items) > 1:
        raise RootlessError(f"{fmt} holds one image; {len(items)} were given", "save several as docker-archive")
    if fmt in ("oci-dir", "docker-dir"):
        if output is None:
            raise RootlessError(f"--format {fmt} needs -o DIRECTORY")
        _to_dir(ctx, Path(output), lambda out: _write(ctx, out, items, fmt))
    else:
        with _output(output, "an image archive") as f:
            out = _TarOut(f)
            _write(ctx, out, items, fmt)
            out.close()
    # Podman logs one "save" per image, named by where it went
    for it in items:
        present.image_event(ctx, "save", it.rec.id, output or "/dev/stdout")


def _to_dir(ctx: Context, target: Path, fill: Callable[[_DirOut], None]) -> None:
    """Fill a new directory beside ``target`` and rename it into place."""
    occupied = any(target.iterdir()) if target.is_dir() else target.exists()
    if occupied:
        raise RootlessError(f"{target} already exists and is not an empty directory", "give a new directory")
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        tmp.mkdir(parents=True)
        fill(_DirOut(tmp))
        if target.is_dir():
            target.rmdir()
        os.rename(tmp, target)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise RootlessError(f"write {target}: {e.strerror}", errno_hint(e)) from e
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _write(ctx: Context, out: Any, items: list[_Item], fmt: str) -> None:
    if fmt == "docker-archive":
        _write_docker(ctx, out, items)
    elif fmt == "docker-dir":
        _write_dir_transport(ctx, out, items[0])
    else:
        _write_oci(ctx, out, items[0])


def _oci_plan(ctx: Context, rec: ImageRecord, fmt: str = "oci") -> Plan:
    from rootless.image.push import PushOptions, plan

    return plan(ctx, rec, PushOptions(format=fmt), compress_plain=False)


def _write_docker(ctx: Context, out: Any, items: list[_Item]) -> None:
    from storage.blobs import BlobStore
    from storage.layerblobs import compression_of
    from storage.layers import LayerStore

    blobs = BlobStore(ctx.layout)
    layers = LayerStore(ctx.layout, runner=None)  # type: ignore[arg-type]  # meta only
    written: set[str] = set()
    manifest_json: list[dict[str, Any]] = []
    repositories: dict[str, dict[str, str]] = {}
    index: list[dict[str, Any]] = []
    out.directory("blobs/")
    out.directory("blobs/sha256/")
    for item in items:
        rec = item.rec
        descs = []
        for entry in rec.layers:
            size = int(layers.meta(entry.diff_id)["size"])
            if entry.diff_id not in written:
                out.stream(f"blobs/sha256/{entry.diff_id[7:]}", size,
                           _layer_chunks(ctx, entry.digest, compression_of(entry.media_type), entry.diff_id))
                written.add(entry.diff_id)
            descs.append({"mediaType": mf.OCI_LAYER_TAR, "digest": entry.diff_id, "size": size})
        config = blobs.read_bytes(rec.config_digest)
        if rec.config_digest not in written:
            out.data(f"blobs/sha256/{rec.config_digest[7:]}", config)
            written.add(rec.config_digest)
        manifest = json.dumps({"schemaVersion": 2, "mediaType": mf.OCI_MANIFEST,
                               "config": {"mediaType": mf.OCI_CONFIG, "digest": rec.config_digest,
                                          "size": len(config)},
                               "layers": descs}, separators=(",", ":")).encode()
        mdigest = mf.sha256_digest(manifest)
        if mdigest not in written:
            out.data(f"blobs/sha256/{mdigest[7:]}", manifest)
            written.add(mdigest)
        tags = [_familiar(n) for n in item.names]
        manifest_json.append({"Config": f"blobs/sha256/{rec.config_digest[7:]}", "RepoTags": tags or None,
                              "Layers": [f"blobs/sha256/{e.diff_id[7:]}" for e in rec.layers]})
        for full, fam in zip(item.names, tags, strict=True):
            repo, _, tag = fam.rpartition(":")
            if rec.layers:
                repositories.setdefault(repo, {})[tag] = rec.layers[-1].diff_id[7:]
            index.append({"mediaType": mf.OCI_MANIFEST, "digest": mdigest, "size": len(manifest),
                          "annotations": {"io.containerd.image.name": full,
                                          "org.opencontainers.image.ref.name": tag}})
        if not item.names:
            index.append({"mediaType": mf.OCI_MANIFEST, "digest": mdigest, "size": len(manifest)})
    out.data("index.json", json.dumps({"schemaVersion": 2, "mediaType": mf.OCI_INDEX, "manifests": index},
                                      separators=(",", ":")).encode())
    out.data("manifest.json", json.dumps(manifest_json, separators=(",", ":")).encode())
    out.data("oci-layout", _OCI_LAYOUT)
    if repositories:
        out.data("repositories", json.dumps(repositories, separators=(",", ":")).encode())


def _write_oci(ctx: Context, out: Any, item: _Item) -> None:
    p = _oci_plan(ctx, item.rec)
    out.directory("blobs/")
    out.directory("blobs/sha256/")
    done: set[str] = set()
    for b in (*p.layers, p.config):
        if b.digest not in done:
            out.stream(f"blobs/sha256/{b.digest[7:]}", b.size, _file_chunks(ctx.layout.blob(b.digest)))
            done.add(b.digest)
    out.data(f"blobs/sha256/{p.digest[7:]}", p.manifest)
    desc: dict[str, Any] = {"mediaType": p.media_type, "digest": p.digest, "size": len(p.manifest)}
    if item.names:
        desc["annotations"] = {"org.opencontainers.image.ref.name": item.names[0]}
    out.data("index.json", json.dumps({"schemaVersion": 2, "manifests": [desc]}, separators=(",", ":")).encode())
    out.data("oci-layout", _OCI_LAYOUT)


def _write_dir_transport(ctx: Context, out: Any, item: _Item, fmt: str = "") -> None:
    p = _oci_plan(ctx, item.rec, fmt or _stored_format(ctx, item.rec))
    for b in (*p.layers, p.config):
        out.stream(b.digest[7:], b.size, _file_chunks(ctx.layout.blob(b.digest)))
    out.data("manifest.json", p.manifest)
    out.data("version", b"Directory Transport Version: 1.1\n")


def _stored_format(ctx: Context, rec: ImageRecord) -> str:
    from storage.blobs import BlobStore

    try:
        data = BlobStore(ctx.layout).read_bytes(rec.manifest_digest)
    except RootlessError:
        return "oci"
    return "v2s2" if mf.sniff_media_type(data, None) == mf.DOCKER_MANIFEST else "oci"


def push_to_transport(ctx: Context, rec: ImageRecord, transport: str, rest: str, source: str,
                      opts: PushOptions) -> str:
    """`push IMAGE docker-archive:PATH[:NAME]` and the other file transports."""
    path, _, name = rest.partition(":") if transport != "oci" and transport != "dir" else (rest, "", "")
    if transport in ("oci", "dir"):
        path, sep, ref = rest.rpartition(":")
        if not sep or "/" in ref:
            path, ref = rest, ""
        name = ref
    if not path:
        raise RootlessError(f"{transport}: needs a path", f"e.g. {transport}:/tmp/image")
    item = _Item(rec, [name] if name else _names_for(rec, source))
    digest = _push_to_file(ctx, rec, transport, path, item, opts)
    from rootless.image import present

    # Podman logs the destination as given, transport and all
    present.image_event(ctx, "push", rec.id, f"{transport}:{rest}")
    return digest


def _push_to_file(ctx: Context, rec: ImageRecord, transport: str, path: str, item: _Item,
                  opts: PushOptions) -> str:
    if transport == "docker-archive":
        with _output(path, "an image archive") as f:
            out = _TarOut(f)
            _write_docker(ctx, out, [item])
            out.close()
        return ""
    if transport == "oci-archive":
        with _output(path, "an image archive") as f:
            out = _TarOut(f)
            _write_oci(ctx, out, item)
            out.close()
        return _oci_plan(ctx, rec).digest
    if transport == "oci":
        _to_dir(ctx, Path(path), lambda out: _write_oci(ctx, out, item))
        return _oci_plan(ctx, rec).digest
    _to_dir(ctx, Path(path), lambda out: _write_dir_transport(ctx, out, item, opts.format or ""))
    return ""


# --------------------------------------------------------------------------- load


class _ChunkFile(io.RawIOBase):
    """A readable file object over a function returning chunks (b"" at the end)."""

    def __init__(self, pull: Callable[[], bytes]) -> None:
        self._pull = pull
        self._buf = b""

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        if not self._buf:
            self._buf = self._pull()
            if not self._buf:
                return 0
        n = min(len(b), len(self._buf))
        b[:n] = self._buf[:n]
        self._buf = self._buf[n:]
        return n


@dataclass
class _Member:
    path: Path
    digest: str
    size: int


class _Staged:
    """Every regular member of the archive, copied to tmp/ and hashed on the way."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.members: dict[str, _Member] = {}

    def get(self, name: str) -> _Member | None:
        return self.members.get(name.removeprefix("./").lstrip("/"))

    def json(self, name: str) -> Any:
        m = self.get(name)
        if m is None:
            return None
        if m.size > _MAX_JSON:
            raise StorageError(f"archive member {name} is {m.size} bytes; that is no metadata file")
        try:
            return json.loads(m.path.read_bytes())
        except ValueError as e:
            raise StorageError(f"archive member {name} is not valid JSON: {e}") from e


def _stage(src: IO[bytes], staging: Path) -> _Staged:
    from storage import compress

    head = src.read(6) if hasattr(src, "read") else b""
    kind = compress.sniff(head)
    joined = io.BufferedReader(_ChunkFile(_prefixed(head, src)), buffer_size=_CHUNK)  # type: ignore[arg-type]
    stream: IO[bytes] = joined
    if kind != "none":
        stream = io.BufferedReader(_ChunkFile(compress.reader(joined, kind)), buffer_size=_CHUNK)  # type: ignore[arg-type]
    mode = "r|"
    if kind == "none" and _seekable(src):
        # A plain archive in a file: tarfile reads each member in place (seek + read)
        # instead of pulling the whole stream through its 10 KiB record buffer.
        src.seek(0)
        stream, mode = src, "r:"
    staged = _Staged(staging)
    n = 0
    try:
        with tarfile.open(fileobj=stream, mode=mode) as tf:  # type: ignore[call-overload]
            for m in tf:
                if not m.isreg():
                    continue
                name = m.name.removeprefix("./").lstrip("/")
                if not name or any(p in ("..", "") for p in name.split("/")):
                    raise StorageError(f"archive member {m.name!r} has an unsafe name",
                                       "the archive is malformed or malicious; nothing was loaded")
                n += 1
                path = staging / f"m{n}"
                h = hashlib.sha256()
                data = tf.extractfile(m)
                assert data is not None
                with open(path, "wb") as f:
                    while c := data.read(_CHUNK):
                        h.update(c)
                        f.write(c)
                staged.members[name] = _Member(path, f"sha256:{h.hexdigest()}", m.size)
    except (tarfile.TarError, EOFError, OSError, ValueError) as e:
        if isinstance(e, OSError) and e.errno is not None:
            raise StorageError(f"read the archive: {e.strerror}", errno_hint(e)) from e
        raise StorageError(f"the archive is truncated or corrupt: {e}",
                           "check the file (a complete tar, optionally compressed); nothing was loaded") from e
    except Exception as e:  # zlib/zstd/lzma errors of a corrupt compressed stream
        if isinstance(e, RootlessError):
            raise
        raise StorageError(f"the archive is truncated or corrupt: {e}",
                           "check the file (a complete tar, optionally compressed); nothing was loaded") from e
    if not staged.members:
        raise StorageError("the input holds no image archive (no files in it)",
                           "give a docker-archive or oci-archive (rootless save, podman save, docker save)")
    return staged


def _seekable(f: IO[bytes]) -> bool:
    try:
        return f.seekable() and os.path.isfile(f"/proc/self/fd/{f.fileno()}")
    except (OSError, ValueError, AttributeError):
        return False


def _prefixed(head: bytes, src: IO[bytes]) -> Callable[[], bytes]:
    first = [head]

    def pull() -> bytes:
        if first:
            return first.pop()
        return src.read(_CHUNK)

    return pull


def load(ctx: Context, input_path: str | None, quiet: bool = False) -> list[str]:
    """``rootless load``: returns what was loaded ("Loaded image: …" lines)."""
    from rootless import events

    loaded = _load(ctx, input_path)
    # Podman logs one "loadfromarchive", named by the archive, with no image ID
    events.emit(ctx, "image", "loadfromarchive", name=input_path if input_path not in (None, "-") else "/dev/stdin")
    return loaded


def _load(ctx: Context, input_path: str | None) -> list[str]:
    from storage.locks import FileLock

    if input_path is None or input_path == "-":
        if sys.stdin.isatty():
            raise RootlessError("refusing to read an image archive from the terminal",
                                "use -i FILE, or redirect the input from a file or a pipe")
        src: IO[bytes] = sys.stdin.buffer
        close = False
    else:
        p = Path(input_path)
        if p.is_dir():
            return _with_gc(ctx, lambda: _load_dir(ctx, p))
        try:
            src = open(p, "rb")  # noqa: SIM115 - closed below
        except OSError as e:
            raise RootlessError(f"open {input_path}: {e.strerror}", errno_hint(e)) from e
        close = True
    ctx.layout.ensure_store()
    gc = FileLock(ctx.layout.locks / "gc.lock", shared=True)
    gc.acquire()
    staging = ctx.layout.tmp / f"load-{os.urandom(8).hex()}"
    try:
        staging.mkdir(mode=0o700)
        staged = _stage(src, staging)
        return _load_staged(ctx, staged)
    finally:
        if close:
            src.close()
        shutil.rmtree(staging, ignore_errors=True)
        gc.release()


def _with_gc(ctx: Context, fn: Callable[[], list[str]]) -> list[str]:
    from storage.locks import FileLock

    ctx.layout.ensure_store()
    gc = FileLock(ctx.layout.locks / "gc.lock", shared=True)
    gc.acquire()
    try:
        return fn()
    finally:
        gc.release()


def _load_dir(ctx: Context, root: Path) -> list[str]:
    """An oci-dir (or a directory holding an unpacked archive)."""
    staged = _Staged(root)
    for p in sorted(root.rglob("*")):
        if p.is_file() and not p.is_symlink():
            h = hashlib.sha256()
            with open(p, "rb") as f:
                while c := f.read(_CHUNK):
                    h.update(c)
            staged.members[str(p.relative_to(root))] = _Member(p, f"sha256:{h.hexdigest()}", p.stat().st_size)
    return _load_staged(ctx, staged, copy=True)


def _load_staged(ctx: Context, staged: _Staged, copy: bool = False) -> list[str]:
    docker = staged.json("manifest.json")
    if isinstance(docker, list) and docker:
        return [_load_docker_entry(ctx, staged, e, copy) for e in docker]
    index = staged.json("index.json")
    if isinstance(index, dict) and isinstance(index.get("manifests"), list):
        return _load_oci(ctx, staged, index, copy)
    raise StorageError("the archive is neither a docker-archive (manifest.json) nor an OCI layout (index.json)",
                       "give an archive written by rootless, podman or docker save")


def _blob_member(staged: _Staged, digest: str, what: str) -> _Member:
    mf.check_digest(digest, what)
    m = staged.get(f"blobs/sha256/{digest[7:]}") or staged.get(digest[7:])
    if m is None:
        raise StorageError(f"{what}: blob {digest} is missing from the archive")
    if m.digest != digest:
        raise DigestMismatchError(f"{what}: archive member for {digest} has digest {m.digest}",
                                  "the archive is corrupt; nothing was loaded")
    return m


def _store_blob(ctx: Context, m: _Member, copy: bool) -> None:
    """Move (or copy) a verified member into the blob store under its digest."""
    final = ctx.layout.blob(m.digest)
    if final.exists():
        return
    if copy:
        tmp = ctx.layout.tmp / f"copy-{os.urandom(8).hex()}"
        shutil.copyfile(m.path, tmp)
        os.rename(tmp, final)
    else:
        os.rename(m.path, final)


def _config_of(ctx: Context, staged: _Staged, digest: str, what: str, copy: bool) -> tuple[bytes, Any]:
    from storage.blobs import BlobStore

    m = _blob_member(staged, digest, what)
    if m.size > _MAX_JSON:
        raise StorageError(f"{what}: config blob is {m.size} bytes")
    data = m.path.read_bytes()
    config = mf.parse_config(data)
    BlobStore(ctx.layout).put_bytes(data, digest)
    return data, config


def _load_docker_entry(ctx: Context, staged: _Staged, entry: Any, copy: bool) -> str:
    """One manifest.json entry: layers are tars (compressed or not) checked against the diff IDs."""
    from storage import compress
    from storage.layerblobs import LayerBlobs

    if not isinstance(entry, dict) or not isinstance(entry.get("Config"), str) \
            or not isinstance(entry.get("Layers"), list):
        raise StorageError("manifest.json: an entry lacks Config or Layers")
    cm = staged.get(entry["Config"])
    if cm is None:
        raise StorageError(f"manifest.json names config {entry['Config']}, which the archive lacks")
    config_digest = cm.digest
    _, config = _config_direct(ctx, cm)
    if len(entry["Layers"]) != len(config.diff_ids):
        raise StorageError(f"manifest.json lists {len(entry['Layers'])} layers, its config "
                           f"{len(config.diff_ids)} diff IDs")
    pairs = LayerBlobs(ctx.layout)
    layer_descs: list[tuple[str, str, int, str]] = []  # digest, diff_id, size, compression
    for path, diff_id in zip(entry["Layers"], config.diff_ids, strict=True):
        m = staged.get(path) if isinstance(path, str) else None
        if m is None:
            raise StorageError(f"manifest.json names layer {path}, which the archive lacks")
        # Kept as the plain tar it is (Podman keeps layers uncompressed too): a push compresses
        # it once, later pushes reuse that blob (storage.layerblobs).
        found = pairs.find(diff_id, "none") or pairs.find(diff_id, "gzip")
        if found is not None:
            layer_descs.append((found.digest, diff_id, found.size, found.compression))
            continue
        if m.digest == diff_id:  # an uncompressed member named by what it holds: no copy
            _store_blob(ctx, m, copy)
            pairs.record([(m.digest, diff_id, "none", m.size)])
            layer_descs.append((m.digest, diff_id, m.size, "none"))
            continue
        with open(m.path, "rb") as f:
            kind = compress.sniff(f.read(6))
            f.seek(0)
            if kind not in ("gzip", "zstd", "none"):
                raise StorageError(f"layer {path}: {kind}-compressed layers are not supported")
            try:
                res = compress.store_stream(ctx.layout, compress.reader(f, kind), "none", expect_diff_id=diff_id)
            except DigestMismatchError as e:
                raise DigestMismatchError(f"layer {path} of the archive does not match its diff ID {diff_id}",
                                          "the archive is corrupt or was altered; nothing was loaded") from e
        pairs.record([(res.digest, diff_id, "none", res.size)])
        layer_descs.append((res.digest, diff_id, res.size, "none"))
    tags = entry.get("RepoTags") or []
    names = [t for t in tags if isinstance(t, str)]
    return _record(ctx, config_digest, config, layer_descs, "v2s2", names)


def _config_direct(ctx: Context, m: _Member) -> tuple[bytes, Any]:
    from storage.blobs import BlobStore

    if m.size > _MAX_JSON:
        raise StorageError(f"config member is {m.size} bytes")
    data = m.path.read_bytes()
    config = mf.parse_config(data)
    BlobStore(ctx.layout).put_bytes(data, m.digest)
    return data, config


def _load_oci(ctx: Context, staged: _Staged, index: dict[str, Any], copy: bool) -> list[str]:
    from storage.blobs import BlobStore
    from storage.layerblobs import LayerBlobs, compression_of

    out = []
    blobs = BlobStore(ctx.layout)
    for desc in index["manifests"]:
        if not isinstance(desc, dict):
            continue
        m = _blob_member(staged, str(desc.get("digest")), "index.json")
        data = m.path.read_bytes()
        parsed = mf.parse_manifest(data, desc.get("mediaType"))
        if not isinstance(parsed, mf.Manifest):
            raise StorageError("index.json: nested indexes are not supported")
        _, config = _config_of(ctx, staged, parsed.config.digest, "OCI layout", copy)
        if len(parsed.layers) != len(config.diff_ids):
            raise StorageError("OCI layout: the manifest's layers and the config's diff IDs differ in number")
        for layer in parsed.layers:
            lm = _blob_member(staged, layer.digest, "OCI layout")
            _store_blob(ctx, lm, copy)
        LayerBlobs(ctx.layout).record([(d.digest, i, compression_of(d.media_type), d.size)
                                       for d, i in zip(parsed.layers, config.diff_ids, strict=True)])
        blobs.put_bytes(data, m.digest)
        ann = desc.get("annotations") or {}
        name = ann.get("io.containerd.image.name") or ann.get("org.opencontainers.image.ref.name") or ""
        layers = [(d.digest, i, d.size, compression_of(d.media_type))
                  for d, i in zip(parsed.layers, config.diff_ids, strict=True)]
        out.append(_record(ctx, parsed.config.digest, config, layers, "", [name] if name else [],
                           manifest=(data, m.digest, parsed)))
    return out


def _record(ctx: Context, config_digest: str, config: Any, layers: list[tuple[str, str, int, str]], fmt: str,
            names: list[str], manifest: tuple[bytes, str, Any] | None = None) -> str:
    """Unpack the layers (the pull's unpacker: verified, sanitised) and write the image record."""
    from rootless.image.push import Blob, manifest_bytes
    from rootless.image.reference import parse_reference
    from rootless.runtime.userns import StoreNamespace
    from storage.blobs import BlobStore
    from storage.images import ImageRecord, ImageStore, LayerEntry
    from storage.layers import LayerStore

    blobs = BlobStore(ctx.layout)
    if manifest is None:
        descs = [Blob(d, s, _LAYER_MEDIA[fmt, kind], "layer", i) for d, i, s, kind in layers]
        cfg = Blob(config_digest, blobs.size(config_digest), "", "config")
        data = manifest_bytes(fmt, cfg, descs)
        mdigest = blobs.put_bytes(data)
        entries = [LayerEntry(b.digest, b.diff_id, b.media_type, b.size) for b in descs]
    else:
        data, mdigest, parsed = manifest
        entries = [LayerEntry(d.digest, i, d.media_type, d.size)
                   for d, i in zip(parsed.layers, config.diff_ids, strict=True)]
    metas = []
    with StoreNamespace(ctx.layout, ctx.log) as runner:
        store = LayerStore(ctx.layout, runner)
        for e in entries:
            metas.append(store.ensure(e.diff_id, e.digest, e.media_type))
    full: list[str] = []
    for n in names:
        try:
            full.append(parse_reference(n).tagged_name)
        except RootlessError:
            ctx.log.warn(f"archive names the image {n!r}, which is not a valid reference: ignored")
    rec = ImageRecord(id=config_digest[7:], names=tuple(full), digests=(), manifest_digest=mdigest,
                      config_digest=config_digest, layers=tuple(entries), created=config.created or "",
                      os=config.os, arch=config.architecture,
                      size=sum(int(m.get("size", 0)) for m in metas))
    ImageStore(ctx.layout).add(rec, full)
    return ", ".join(full) if full else f"sha256:{rec.id}"


# --------------------------------------------------------------------------- import / export


_CHANGE_KEYS = ("CMD", "ENTRYPOINT", "ENV", "EXPOSE", "LABEL", "USER", "VOLUME", "WORKDIR", "STOPSIGNAL",
                "ONBUILD")


def apply_changes(config: dict[str, Any], changes: list[str]) -> None:
    """--change "INSTRUCTION ARGS" (the Dockerfile instructions `podman import` accepts)."""
    for change in changes:
        key, _, rest = change.strip().partition(" ")
        if not key:
            continue
        key = key.upper()
        if "=" in key and key.split("=")[0] in _CHANGE_KEYS:  # "CMD=…", as Podman also takes it
            key, _, rest = change.strip().partition("=")
            key = key.upper()
        rest = rest.strip()
        if key not in _CHANGE_KEYS:
            raise RootlessError(f"--change {change!r}: {key} cannot be changed",
                                f"use one of {', '.join(_CHANGE_KEYS)}")
        if key in ("CMD", "ENTRYPOINT"):
            try:
                value = json.loads(rest) if rest.startswith("[") else ["/bin/sh", "-c", rest]
            except ValueError as e:
                raise RootlessError(f"--change {change!r}: not a JSON array: {e}") from e
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise RootlessError(f"--change {change!r}: expected a JSON array of strings")
            config["Cmd" if key == "CMD" else "Entrypoint"] = value
        elif key in ("ENV", "LABEL"):
            target = config.setdefault("Env", []) if key == "ENV" else config.setdefault("Labels", {})
            pairs = _pairs(rest) if "=" in rest.split(" ", 1)[0] else [tuple(rest.split(None, 1) + [""])[:2]]
            for k, v in pairs:
                if not k:
                    raise RootlessError(f"--change {change!r}: needs NAME=VALUE")
                if key == "ENV":
                    target[:] = [e for e in target if not e.startswith(k + "=")] + [f"{k}={v}"]
                else:
                    target[k] = v
        elif key == "EXPOSE":
            for port in rest.split():
                config.setdefault("ExposedPorts", {})[port if "/" in port else f"{port}/tcp"] = {}
        elif key == "VOLUME":
            vols = json.loads(rest) if rest.startswith("[") else rest.split()
            for v in vols:
                config.setdefault("Volumes", {})[v] = {}
        elif key == "USER":
            config["User"] = rest
        elif key == "WORKDIR":
            config["WorkingDir"] = rest
        elif key == "STOPSIGNAL":
            config["StopSignal"] = rest
        elif key == "ONBUILD":
            config.setdefault("OnBuild", []).append(rest)


def _pairs(text: str) -> list[tuple[str, str]]:
    import shlex

    out = []
    for word in shlex.split(text):
        k, _, v = word.partition("=")
        out.append((k, v))
    return out


def import_tarball(ctx: Context, source: str, name: str | None, changes: list[str], message: str | None) -> str:
    """``rootless import``: a (compressed) tar of a file tree → a one-layer image; returns its ID."""
    from rootless.image.manifest import host_platform
    from rootless.image.reference import parse_reference
    from storage import compress
    from storage.blobs import BlobStore
    from storage.layerblobs import LayerBlobs
    from storage.locks import FileLock

    if source.startswith(("http://", "https://")):
        raise RootlessError("import from a URL is not supported", "download the file first, then import it")
    if name is not None:
        try:
            name = parse_reference(name).tagged_name
        except RootlessError as e:
            raise RootlessError(f"invalid image name {name!r}: {e.message}") from e
    container_config: dict[str, Any] = {}
    apply_changes(container_config, changes)
    if source == "-":
        if sys.stdin.isatty():
            raise RootlessError("refusing to read a tarball from the terminal", "redirect the input, or give FILE")
        f: IO[bytes] = sys.stdin.buffer
    else:
        try:
            f = open(source, "rb")  # noqa: SIM115 - closed below
        except OSError as e:
            raise RootlessError(f"open {source}: {e.strerror}", errno_hint(e)) from e
    ctx.layout.ensure_store()
    gc = FileLock(ctx.layout.locks / "gc.lock", shared=True)
    gc.acquire()
    try:
        head = f.read(6)
        kind = compress.sniff(head)
        pull = _prefixed(head, f)
        if kind != "none":
            pull = compress.reader(io.BufferedReader(_ChunkFile(pull), buffer_size=_CHUNK),  # type: ignore[arg-type]
                                   kind)
        try:
            # the plain tar: a push compresses it once (and keeps that), as Podman's does each time
            res = compress.store_stream(ctx.layout, pull, "none")
        except RootlessError:
            raise
        except Exception as e:  # noqa: BLE001 - zlib/lzma/bz2/zstd errors of corrupt input
            raise StorageError(f"import {source}: the input is truncated or corrupt: {e}",
                               "give a tar archive, plain or gzip, bzip2, xz or zstd compressed") from e
        LayerBlobs(ctx.layout).record([(res.digest, res.diff_id, "none", res.size)])
        plat = host_platform()
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        history: dict[str, Any] = {"created": now, "created_by": "/bin/sh -c #(nop) ADD file in / "}
        if message:
            history["comment"] = message
        config = {"architecture": plat.architecture, "os": plat.os, "created": now,
                  "config": container_config, "rootfs": {"type": "layers", "diff_ids": [res.diff_id]},
                  "history": [history]}
        if message:
            config["comment"] = message
        data = json.dumps(config, separators=(",", ":")).encode()
        config_digest = BlobStore(ctx.layout).put_bytes(data)
        parsed = mf.parse_config(data)
        try:
            _record(ctx, config_digest, parsed, [(res.digest, res.diff_id, res.size, "none")], "oci",
                    [name] if name else [])
        except StorageError as e:
            raise StorageError(f"import {source}: {e.message}", e.hint) from e
    finally:
        if source != "-":
            f.close()
        gc.release()
    if name:
        from rootless.image import present

        # what Podman logs for an import: the name given to the new image (none without one)
        present.image_event(ctx, "tag", config_digest[7:], name)
    return config_digest[7:]


def export(ctx: Context, cid: str, output: str | None) -> None:
    """``rootless export``: the file tree of container ``cid`` (its image's layers and its
    changes) as one tar."""
    from rootless.runtime.userns import StoreNamespace
    from storage.drivers import ContainerDirs

    container = cid[:12]
    dirs = ContainerDirs.of(ctx.layout, cid)
    try:
        record = json.loads(dirs.record.read_bytes())
    except (OSError, ValueError) as e:
        raise StorageError(f"container {container} has no readable layer record: {e}") from e
    if record.get("driver") == "vfs":
        trees = [str(dirs.root / "rootfs")]
    else:
        trees = [str(ctx.layout.layer(d) / "diff") for d in record.get("layers", [])] + [str(dirs.upper)]
    tmp = ctx.layout.tmp / f"export-{os.urandom(8).hex()}.tar"
    with _output(output, "a container's files") as out:
        try:
            with StoreNamespace(ctx.layout, ctx.log) as runner:
                runner.call("storage.layertar:export_union", dirs=trees, dest=str(tmp))
            with open(tmp, "rb") as f:
                shutil.copyfileobj(f, out, _CHUNK)
        finally:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
