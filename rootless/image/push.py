"""Push: image record → blobs → registry (or an archive transport), exact digests.

The steps, as containers/image's copy pipeline takes them the other way:
 1. plan: the image's manifest, config and layers from the store. A layer goes as the very
    blob that was pulled or made (same bytes, same digest) unless the destination needs
    another compression (an uncompressed layer, --force-compression, zstd into a Docker
    v2s2 manifest); then it is compressed once and the blob kept, paired with its diff ID
    (storage.layerblobs), so the next push compresses nothing. When nothing changes, the
    stored manifest is pushed byte for byte: the manifest digest does not move.
 2. blobs, in parallel ([push] max-parallel, default 6): HEAD first; a cross-repository
    mount when the same registry is known to hold the blob in another repository; else
    POST + one streaming PATCH + PUT ?digest=, hashed as it goes.
 3. the manifest last, with its exact bytes and content type: a registry never names an
    image whose blobs it does not hold.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rootless.errors import RootlessError, StorageError
from rootless.image import manifest as mf
from rootless.record import dataclass

if TYPE_CHECKING:
    from rootless.context import Context
    from rootless.image.reference import Reference
    from rootless.image.registry import RegistryClient
    from storage.images import ImageRecord

TRANSPORTS = ("docker://", "docker-archive:", "oci-archive:", "oci:", "dir:")
_LAYER_TYPES = {
    ("oci", "gzip"): mf.OCI_LAYER_GZIP, ("oci", "zstd"): mf.OCI_LAYER_ZSTD, ("oci", "none"): mf.OCI_LAYER_TAR,
    ("v2s2", "gzip"): mf.DOCKER_LAYER_GZIP, ("v2s2", "none"): mf.DOCKER_LAYER_TAR,
}


@dataclass(frozen=True)
class PushOptions:
    creds: str | None = None  # USER[:PASSWORD]
    authfile: str | None = None
    tls_verify: bool | None = None
    compression_format: str | None = None  # gzip, zstd
    compression_level: int | None = None
    force_compression: bool = False
    digestfile: str | None = None
    format: str | None = None  # oci, v2s2
    quiet: bool = False
    show_progress: bool | None = None  # None: when stderr is a terminal


@dataclass(frozen=True)
class Blob:
    digest: str
    size: int
    media_type: str
    kind: str  # "config" or "layer"
    diff_id: str = ""


@dataclass(frozen=True)
class Pending:
    """A layer still to compress (plan(defer=True)): stored blob ``source`` (compressed as
    ``have``) goes out compressed as ``want`` while it uploads; the layers at ``indexes``
    get the blob's digest and size once it is sent (settle)."""

    source: str
    have: str
    want: str
    diff_id: str
    size: int  # of the source: the progress bar's scale
    indexes: tuple[int, ...]


@dataclass(frozen=True)
class Plan:
    """What goes out: the manifest's exact bytes and every blob it names, in the store. With
    ``pending`` layers the manifest is still empty: settle() makes it once they are sent."""

    manifest: bytes
    media_type: str
    digest: str
    config: Blob
    layers: tuple[Blob, ...]
    fmt: str = "oci"
    pending: tuple[Pending, ...] = ()


def settle(p: Plan, sent: dict[str, tuple[str, int]]) -> Plan:
    """The plan with each pending layer's blob (``sent``: source → (digest, size)) in place."""
    from dataclasses import replace

    layers = list(p.layers)
    for pend in p.pending:
        digest, size = sent[pend.source]
        for i in pend.indexes:
            layers[i] = replace(layers[i], digest=digest, size=size)
    data = manifest_bytes(p.fmt, p.config, layers)
    return Plan(data, p.media_type, mf.sha256_digest(data), p.config, tuple(layers), p.fmt)


def _format_of(media_type: str) -> str:
    return "v2s2" if media_type == mf.DOCKER_MANIFEST else "oci"


def plan(ctx: Context, rec: ImageRecord, opts: PushOptions, compress_plain: bool = True,
         defer: bool = False) -> Plan:
    """Step 1 (compressing what must be compressed; everything else is read as stored).
    ``compress_plain=False`` keeps uncompressed layers as they are (an OCI layout on disk).
    ``defer``: a stored blob to compress is not compressed here but left pending, to be
    compressed while it uploads (a push to a registry)."""
    from storage.blobs import BlobStore
    from storage.layerblobs import LayerBlobs, compression_of

    blobs = BlobStore(ctx.layout)
    stored: bytes | None = None
    stored_type = mf.OCI_MANIFEST
    if rec.manifest_digest and blobs.has(rec.manifest_digest):
        stored = blobs.read_bytes(rec.manifest_digest)
        stored_type = mf.sniff_media_type(stored, None, f"manifest of image {rec.id[:12]}")
    fmt = opts.format or _format_of(stored_type)
    if opts.compression_format not in (None, "gzip", "zstd"):
        raise RootlessError(f"unknown compression format {opts.compression_format!r}", "use gzip or zstd")
    if fmt == "v2s2" and opts.compression_format == "zstd":
        raise RootlessError("--compression-format zstd needs --format oci: Docker's v2s2 manifests have no "
                            "zstd layers", "push with --format oci, or with gzip")
    pairs = LayerBlobs(ctx.layout)
    layers: list[Blob] = []
    pending: dict[tuple[str, str], Pending] = {}
    changed = fmt != _format_of(stored_type) or stored is None
    for entry in rec.layers:
        have = compression_of(entry.media_type)
        want = have
        if have == "none" and (compress_plain or opts.compression_format):
            want = opts.compression_format or "gzip"
        elif opts.force_compression and opts.compression_format and opts.compression_format != have:
            want = opts.compression_format
        elif have == "zstd" and fmt == "v2s2":
            want = "gzip"
        if want == have and blobs.has(entry.digest):
            digest, size = entry.digest, entry.size
        else:
            found = pairs.find(entry.diff_id, want)
            if found is not None:
                digest, size = found.digest, found.size
            elif defer and blobs.has(entry.digest):
                key = (entry.digest, want)
                same = pending.get(key)
                pending[key] = Pending(entry.digest, have, want, entry.diff_id, entry.size,
                                       (*(same.indexes if same else ()), len(layers)))
                digest, size = "", 0
            else:
                digest, size = _recompress(ctx, entry.digest, have, entry.diff_id, want, opts.compression_level)
            changed = True
        media_type = _LAYER_TYPES.get((fmt, want)) or entry.media_type
        if media_type != entry.media_type:
            changed = True
        layers.append(Blob(digest, size, media_type, "layer", entry.diff_id))
    config_type = mf.DOCKER_CONFIG if fmt == "v2s2" else mf.OCI_CONFIG
    config = Blob(rec.config_digest, blobs.size(rec.config_digest), config_type, "config")
    if not changed and stored is not None:
        return Plan(stored, stored_type, rec.manifest_digest, config, tuple(layers), fmt)
    media_type = mf.DOCKER_MANIFEST if fmt == "v2s2" else mf.OCI_MANIFEST
    if pending:
        return Plan(b"", media_type, "", config, tuple(layers), fmt, tuple(pending.values()))
    data = manifest_bytes(fmt, config, layers)
    return Plan(data, media_type, mf.sha256_digest(data), config, tuple(layers), fmt)


def manifest_bytes(fmt: str, config: Blob, layers: list[Blob] | tuple[Blob, ...]) -> bytes:
    """A v2s2 or OCI image manifest for these blobs (the key order Docker and Podman write)."""
    media_type = mf.DOCKER_MANIFEST if fmt == "v2s2" else mf.OCI_MANIFEST
    config_type = mf.DOCKER_CONFIG if fmt == "v2s2" else mf.OCI_CONFIG
    body = {
        "schemaVersion": 2,
        "mediaType": media_type,
        "config": {"mediaType": config_type, "size": config.size, "digest": config.digest},
        "layers": [{"mediaType": b.media_type, "size": b.size, "digest": b.digest} for b in layers],
    }
    return json.dumps(body, indent=3).encode()


def _recompress(ctx: Context, digest: str, have: str, diff_id: str, want: str,
                level: int | None) -> tuple[str, int]:
    """The layer blob ``digest`` compressed as ``want``, once: the result is kept and paired."""
    from storage import compress
    from storage.layerblobs import LayerBlobs

    if not ctx.layout.blob(digest).exists():
        return _from_layer_dir(ctx, diff_id, want, level)
    with open(ctx.layout.blob(digest), "rb") as f:
        res = compress.store_stream(ctx.layout, compress.reader(f, have), want, level, expect_diff_id=diff_id)
    LayerBlobs(ctx.layout).record([(res.digest, res.diff_id, want, res.size)])
    return res.digest, res.size


def _from_layer_dir(ctx: Context, diff_id: str, want: str, level: int | None) -> tuple[str, int]:
    """A layer made here (a build step, commit) is kept unpacked, with no blob: its tar is written
    from the layer's directory in the store's namespace (storage.layertar, the writer that gave it
    its diff ID), compressed as ``want`` while it is written, checked against the diff ID, and
    kept and paired like any other, so that it is made once."""
    from rootless.errors import DigestMismatchError, NotFoundError
    from rootless.runtime.userns import StoreNamespace
    from storage.atomic import fsync_dir
    from storage.layerblobs import LayerBlobs
    from storage.layers import LayerStore

    ctx.layout.tmp.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = ctx.layout.tmp / f"layer-{os.urandom(8).hex()}.partial"
    try:
        with StoreNamespace(ctx.layout, ctx.log) as runner:
            layers = LayerStore(ctx.layout, runner)
            if not layers.has(diff_id):
                raise NotFoundError(f"layer {diff_id} has neither a blob nor a directory in the store",
                                    "the image is damaged: build or pull it again")
            res = runner.call("storage.layertar:write_layer", src=str(layers.path(diff_id)), dest=str(tmp),
                              compression=want, level=level)
        if res["diff_id"] != diff_id:
            raise DigestMismatchError(f"layer {diff_id} now reads as {res['diff_id']}",
                                      "the layer's files changed in the store: build the image again")
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        final = ctx.layout.blob(res["digest"])
        final.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.rename(tmp, final)
        fsync_dir(final.parent)
    finally:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
    LayerBlobs(ctx.layout).record([(res["digest"], diff_id, want, res["compressed_size"])])
    return res["digest"], res["compressed_size"]


# --------------------------------------------------------------------------- destinations


def parse_destination(text: str) -> tuple[str, str]:
    """(transport, rest): "docker" for a registry reference, else the archive transport."""
    for t in TRANSPORTS:
        if text.startswith(t):
            return t.rstrip(":/"), text[len(t):]
    return "docker", text


def _credentials(ctx: Context, opts: PushOptions) -> Callable[[str], tuple[str, str] | None] | None:
    if opts.creds is not None:
        user, sep, password = opts.creds.partition(":")
        if not user:
            raise RootlessError("--creds needs USERNAME[:PASSWORD]", "e.g. --creds alice:secret")
        if not sep:
            import getpass

            password = getpass.getpass(f"Password for {user}: ")
        return lambda _host: (user, password)
    if opts.authfile is not None:
        from rootless.image import credentials

        path = Path(opts.authfile)
        if not path.is_file():
            raise RootlessError(f"--authfile {path}: no such file", "give the path of a Docker config.json")
        return lambda host: credentials.get_from(path, host)
    return None


def _client(ctx: Context, ref: Reference, opts: PushOptions) -> RegistryClient:
    from rootless.image.registry import RegistryClient

    client = RegistryClient(ctx, ref.registry, credentials=_credentials(ctx, opts),
                            tls_verify=opts.tls_verify is not False)
    if opts.tls_verify is False:
        client.settle_scheme()
    return client


# --------------------------------------------------------------------------- progress


class _Report:
    """Bars on a terminal (pull's Progress); one line per blob otherwise; nothing with -q."""

    def __init__(self, progress: Any, lines: bool) -> None:
        self.progress = progress
        self.lines = lines
        self._lock = threading.Lock()

    def say(self, text: str) -> None:
        if self.lines:
            with self._lock:
                print(text, file=sys.stderr, flush=True)

    def blob(self, b: Blob, outcome: str) -> None:
        self.progress.status(b.digest, outcome, done=True)
        self.say(f"Copying {'config' if b.kind == 'config' else 'blob'} {b.digest[7:19]} {outcome}")


# --------------------------------------------------------------------------- push


def push(ctx: Context, source: str, destination: str | None, opts: PushOptions) -> str:
    """Push image ``source`` (a name or ID in the store) to the registry ``destination``
    (default: its own name). Returns the manifest digest. The file transports are
    archive.push_to_transport's."""
    from rootless.image import present
    from rootless.image.reference import parse_reference
    from storage.locks import FileLock

    ctx.layout.ensure_store()
    rec = present.find(ctx, source)
    transport, rest = parse_destination(destination or source)
    if transport != "docker":
        raise RootlessError(f"{transport}: is a file transport", "rootless.image.archive.push_to_transport")
    try:
        ref = parse_reference(rest)
    except RootlessError as e:
        raise RootlessError(f"invalid destination {rest!r}: {e.message}", "give REGISTRY/REPOSITORY[:TAG]") from e
    if ref.digest:
        raise RootlessError(f"cannot push to a digest reference: {rest}", "give a tag, or none for :latest")
    # Shared like a pull: `rmi` cannot collect the blobs we are about to send.
    gc_lock = FileLock(ctx.layout.locks / "gc.lock", shared=True)
    gc_lock.acquire()
    try:
        p = plan(ctx, rec, opts, defer=True)
        digest = _push_registry(ctx, ref, p, opts)
    finally:
        gc_lock.release()
    # as Podman logs it: the destination as given
    present.image_event(ctx, "push", rec.id, destination or source)
    if opts.digestfile:
        from storage.atomic import write_atomic

        try:
            write_atomic(opts.digestfile, digest.encode(), mode=0o644, durable=False)
        except OSError as e:
            raise RootlessError(f"--digestfile {opts.digestfile}: {e.strerror}") from e
    return digest


def _candidates(pairs: Any, p: Plan) -> Callable[[Blob], tuple[str, ...]]:
    """Where each blob may be mounted from ("registry/repository", most recent last): a layer
    where it was seen; the config where the image's layers were (pulled or pushed with them)."""
    seen = {b.digest: (i.seen if (i := pairs.get(b.digest)) is not None else None) for b in p.layers}
    image_seen = tuple(dict.fromkeys(w for b in p.layers for w in seen[b.digest] or ()))

    def where(b: Blob) -> tuple[str, ...]:
        known = seen.get(b.digest) if b.kind == "layer" else None
        return known if known is not None else image_seen

    return where


def _quick(ctx: Context, ref: Reference, p: Plan, opts: PushOptions, tty: bool,
           candidates: Callable[[Blob], tuple[str, ...]]) -> str | None:
    """The re-push lane (quickpush): the manifest digest, or None for the full client."""
    from rootless.image import quickpush
    from rootless.image.reference import DOCKER_HUB

    if ref.registry == DOCKER_HUB or opts.tls_verify is False:
        return None
    has_creds = opts.creds is not None or opts.authfile is not None
    if not has_creds:
        from rootless.image import credentials

        has_creds = credentials.get(ctx.layout, ref.registry) is not None
    if not quickpush.eligible(ref.registry, [candidates(b) for b in p.layers], has_creds,
                              tty and not opts.quiet):
        return None
    scheme = "http" if ctx.config.registry(ref.registry).insecure else "https"
    outcomes = quickpush.push(scheme, ref.registry, ref.registry, ref.repository, ref.tag or "latest", p,
                              candidates, ctx.config.max_parallel_uploads, log=ctx.log.debug)
    if outcomes is None:
        return None
    if not opts.quiet:
        report = _Report(None, True)
        report.say("Getting image source signatures")
        for b, outcome in outcomes:
            report.say(f"Copying {'config' if b.kind == 'config' else 'blob'} {b.digest[7:19]} {outcome}")
        report.say("Writing manifest to image destination")
    return p.digest


def _push_registry(ctx: Context, ref: Reference, p: Plan, opts: PushOptions) -> str:
    from storage.layerblobs import LayerBlobs

    pairs = LayerBlobs(ctx.layout)
    candidates = _candidates(pairs, p)
    tty = sys.stderr.isatty() if opts.show_progress is None else opts.show_progress
    digest = None if p.pending else _quick(ctx, ref, p, opts, tty, candidates)
    if digest is None:
        digest, p = _push_full(ctx, ref, p, opts, tty, candidates)
    pairs.mark_seen([b.digest for b in p.layers], f"{ref.registry}/{ref.repository}")
    return digest


def _push_full(ctx: Context, ref: Reference, p: Plan, opts: PushOptions, tty: bool,
               candidates: Callable[[Blob], tuple[str, ...]]) -> tuple[str, Plan]:
    """Step 2 and 3 with the full client; returns the manifest digest and the plan as sent
    (pending layers settled)."""
    from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait

    from rootless.image.pull import Progress

    client = _client(ctx, ref, opts)
    repo = ref.repository
    try:
        with Progress(tty and not opts.quiet) as progress:
            report = _Report(progress, not tty and not opts.quiet)
            report.say("Getting image source signatures")
            todo = [p.config, *{b.digest: b for b in p.layers if b.digest}.values()]
            for b in todo:
                progress.add(b.digest, b.size, "Copying")
            for pend in p.pending:
                progress.add(pend.source, pend.size, "Compressing")
            sent: dict[str, tuple[str, int]] = {}

            def compressing(pend: Pending) -> None:
                digest, size = _upload_compressing(ctx, client, repo, pend, opts.compression_level,
                                                   lambda n: progress.advance(pend.source, n))
                sent[pend.source] = (digest, size)
                report.blob(Blob(digest, size, "", "layer"), "done")

            def one(b: Blob) -> None:
                if client.blob_exists(repo, b.digest):
                    report.blob(b, "skipped: already exists")
                    return
                for where in reversed(candidates(b)):
                    reg, _, other = where.partition("/")
                    if reg == ref.registry and other != repo and client.mount_blob(repo, b.digest, other):
                        report.blob(b, f"skipped: mounted from {other}")
                        return
                client.upload_blob(repo, b.digest, str(ctx.layout.blob(b.digest)), b.size,
                                   progress=lambda n: progress.advance(b.digest, n))
                report.blob(b, "done")

            pool = ThreadPoolExecutor(max_workers=ctx.config.max_parallel_uploads, thread_name_prefix="upload")
            try:
                futures = [pool.submit(compressing, pend) for pend in p.pending]
                futures += [pool.submit(one, b) for b in todo]
                done, _ = wait(futures, return_when=FIRST_EXCEPTION)
                for f in done:
                    if f.exception() is not None:
                        raise f.exception()  # type: ignore[misc]
            finally:
                pool.shutdown(wait=True, cancel_futures=True)
            if p.pending:
                p = settle(p, sent)
            report.say("Writing manifest to image destination")
            return client.put_manifest(repo, ref.tag or "latest", p.manifest, p.media_type), p
    finally:
        client.close()


def _upload_compressing(ctx: Context, client: RegistryClient, repo: str, pend: Pending, level: int | None,
                        progress: Callable[[int], None]) -> tuple[str, int]:
    """A first push of a layer made here: its stored blob is compressed while it uploads (one
    pass, no staging), the compressed bytes written beside into the store's tmp/; once the
    registry has them, the blob is renamed in under its digest and paired with the diff ID
    (storage.layerblobs), so the next push compresses nothing. A retry compresses anew."""
    from rootless.errors import DigestMismatchError
    from storage import compress
    from storage.atomic import fsync_dir
    from storage.layerblobs import LayerBlobs

    ctx.layout.tmp.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = ctx.layout.tmp / f"push-{os.urandom(8).hex()}.partial"
    tees: list[compress.Tee] = []

    def body() -> Iterator[bytes]:
        with open(ctx.layout.blob(pend.source), "rb") as src, open(tmp, "wb") as raw:
            tee = compress.Tee(compress.reader(src, pend.have), pend.want, level, raw)
            tees.append(tee)
            yield from tee
            if tee.diff_id != pend.diff_id:  # raised before the last chunk: the upload is not closed
                raise DigestMismatchError(f"layer {pend.diff_id} reads as {tee.diff_id} in the store",
                                          "the store is damaged: remove the image and import or build it again")
            os.fsync(raw.fileno())

    try:
        digest = client.upload_stream(repo, body, f"layer {pend.diff_id[7:19]}", progress)
        tee = tees[-1]
        if tee.digest() != digest:
            raise DigestMismatchError(f"layer {pend.diff_id}: sent {digest}, kept {tee.digest()}")
        final = ctx.layout.blob(digest)
        final.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.rename(tmp, final)
        fsync_dir(final.parent)
    except OSError as e:
        raise StorageError(f"keep the compressed layer in {ctx.layout.blobs}: {e.strerror or e}") from e
    finally:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
    LayerBlobs(ctx.layout).record([(digest, pend.diff_id, pend.want, tee.size)])
    return digest, tee.size
