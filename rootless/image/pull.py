"""Pull: reference → manifest → blobs → layers → image record.

The steps, in the order containers/image's copy pipeline takes them:
 1. resolve the name (short names through unqualified-search, each registry's mirrors first);
 2. fetch the manifest; an index picks the platform's manifest (verified against its digest);
 3. fetch and verify the config; its rootfs.diff_ids name the layers as the store keys them;
 4. download layers in parallel, each hashed while it streams and renamed into the store only
    when its digest matches; a layer starts unpacking the moment its blob is complete;
 5. record the image (names → manifest → config + layers) last, so a pull killed at any instant
    leaves either no image or a whole one.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from rootless.errors import NotFoundError, RegistryError, RootlessError, StorageError
from rootless.image.reference import Reference, candidates, parse_reference
from rootless.units import decimal_size

if TYPE_CHECKING:
    from rootless.context import Context
    from rootless.image.manifest import Descriptor, ImageConfig, Manifest, Platform
    from rootless.image.registry import RegistryClient
    from storage.images import ImageRecord


@dataclass(frozen=True)
class Resolved:
    ref: Reference  # fully qualified
    client: RegistryClient
    manifest: Manifest
    config_bytes: bytes
    config: ImageConfig


class Progress:
    """One bar per layer on a TTY (rich, imported only here); silence otherwise."""

    def __init__(self, enabled: bool, stream: Any = None) -> None:
        self._lock = threading.Lock()
        self._rich: Any = None
        self._tasks: dict[str, Any] = {}
        if enabled:
            from rich.console import Console
            from rich.progress import BarColumn, DownloadColumn, TextColumn, TransferSpeedColumn
            from rich.progress import Progress as RichProgress

            self._rich = RichProgress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                                      TransferSpeedColumn(), transient=False,
                                      console=Console(file=stream or sys.stderr))

    def __enter__(self) -> Progress:
        if self._rich:
            self._rich.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._rich:
            self._rich.stop()

    def add(self, digest: str, size: int, label: str) -> None:
        if self._rich:
            with self._lock:
                self._tasks[digest] = self._rich.add_task(f"{label} {digest[7:19]}", total=size or None)

    def advance(self, digest: str, n: int) -> None:
        if self._rich and digest in self._tasks:
            self._rich.advance(self._tasks[digest], n)

    def status(self, digest: str, text: str, done: bool = False) -> None:
        if self._rich and digest in self._tasks:
            t = self._tasks[digest]
            self._rich.update(t, description=f"{text} {digest[7:19]}")
            if done:
                task = self._rich.tasks[[x.id for x in self._rich.tasks].index(t)]
                if task.total:
                    self._rich.update(t, completed=task.total)


def _platform(text: str | None) -> Platform:
    from rootless.image import manifest as mf

    return mf.parse_platform(text) if text else mf.host_platform()


def resolve(ctx: Context, text: str, platform: str | None = None) -> Resolved:
    """Steps 1–3: find the image and return its verified manifest and config."""
    from rootless.image import manifest as mf
    from rootless.image.registry import RegistryClient
    from storage.blobs import BlobStore

    want = _platform(platform)
    ref = parse_reference(text)
    tries = candidates(ref, ctx.config.unqualified_search)
    last: RootlessError | None = None
    blobs = BlobStore(ctx.layout)
    for cand in tries:
        client = RegistryClient(ctx, cand.registry)
        try:
            data, media_type, digest, _ = client.get_manifest(cand.repository, cand.ref)
            parsed = mf.parse_manifest(data, media_type)
            if isinstance(parsed, mf.Index):
                desc = mf.select_platform(parsed, want, name=str(cand))
                blobs.put_bytes(data, digest)
                data, media_type, digest, _ = client.get_manifest(cand.repository, desc.digest)
                parsed = mf.parse_manifest(data, media_type)
                if isinstance(parsed, mf.Index):
                    raise RegistryError(f"{cand}: an index inside an index is not supported")
            assert isinstance(parsed, mf.Manifest)
            mf.check_image_manifest(parsed, str(cand))
            config_bytes = _fetch_small_blob(client, blobs, cand.repository, parsed.config)
            config = mf.parse_config(config_bytes, parsed)
            if platform and (config.os, config.architecture) != (want.os, want.architecture):
                ctx.log.warn(f"image platform ({config.os}/{config.architecture}) does not match the "
                             f"expected platform ({want.os}/{want.architecture})")
            blobs.put_bytes(data, digest)
            manifest = mf.Manifest(media_type=parsed.media_type, config=parsed.config, layers=parsed.layers,
                                   raw=data, digest=digest) if parsed.digest != digest else parsed
            return Resolved(cand, client, manifest, config_bytes, config)
        except NotFoundError as e:
            client.close()
            last = e
            continue
        except RegistryError as e:
            client.close()
            if len(tries) > 1 and not isinstance(e, NotFoundError):
                last = e
                continue
            raise
        except BaseException:
            client.close()
            raise
    assert last is not None
    if len(tries) > 1:
        raise NotFoundError(f"{text}: image not known in any of {', '.join(ctx.config.unqualified_search)} "
                            f"({last.message})", last.hint)
    raise last


def _fetch_small_blob(client: RegistryClient, blobs: Any, repository: str, desc: Descriptor) -> bytes:
    if not blobs.has(desc.digest):
        with blobs.open_writer(desc.digest, desc.size) as w:
            if not w.done:
                client.fetch_blob(repository, desc.digest, w, size=desc.size)
    return blobs.read_bytes(desc.digest)  # type: ignore[no-any-return]


def pull(ctx: Context, text: str, *, platform: str | None = None, quiet: bool = False,
         show_progress: bool | None = None) -> ImageRecord:
    """Pull ``text`` into the store and return its image record."""
    from storage.locks import FileLock

    started = time.monotonic()
    ctx.layout.ensure_store()
    ctx.log.store_created()
    # shared: pulls run side by side, but `rmi`/`prune` (exclusive) cannot collect the blobs and
    # layers of a pull that has not recorded its image yet
    gc_lock = FileLock(ctx.layout.locks / "gc.lock", shared=True)
    gc_lock.acquire()
    try:
        return _pull_locked(ctx, text, platform, quiet, show_progress, started)
    finally:
        gc_lock.release()


def _pull_locked(ctx: Context, text: str, platform: str | None, quiet: bool, show_progress: bool | None,
                 started: float) -> ImageRecord:
    from rootless.runtime.userns import StoreNamespace
    from storage.blobs import BlobStore
    from storage.images import ImageRecord, ImageStore, LayerEntry
    from storage.layers import LayerStore

    res = resolve(ctx, text, platform)
    try:
        blobs = BlobStore(ctx.layout)
        tty = ctx.log.stream.isatty() if show_progress is None else show_progress
        with StoreNamespace(ctx.layout, ctx.log) as runner, Progress(tty and not quiet, ctx.log.stream) as progress:
            layers = LayerStore(ctx.layout, runner)
            layers.cleanup_tmp()
            metas, fresh = _fetch_and_unpack(ctx, res, blobs, layers, progress)
        _warn_losses(ctx, res.ref, fresh)
        image_id = res.manifest.config.digest.partition(":")[2]
        cfg = res.config
        record = ImageRecord(
            id=image_id,
            # pulled by digest alone: Podman keeps the repository name with the digest
            names=(res.ref.tagged_name,) if res.ref.tag else (f"{res.ref.name}@{res.ref.digest}",),
            digests=(f"{res.ref.name}@{res.manifest.digest}",),
            manifest_digest=res.manifest.digest,
            config_digest=res.manifest.config.digest,
            layers=tuple(LayerEntry(d.digest, diff, d.media_type, d.size) for d, diff in
                         zip(res.manifest.layers, cfg.diff_ids, strict=True)),
            created=cfg.created or "",
            os=cfg.os,
            arch=cfg.architecture,
            size=sum(int(m.get("size", 0)) for m in metas),
        )
        ImageStore(ctx.layout).add(record, list(record.names))
        _remember_blobs(ctx, res, record)
    finally:
        res.client.close()
    if not quiet:
        n = len(res.manifest.layers)
        took = time.monotonic() - started
        ctx.log.note(f"Pulled {res.ref} ({n} layer{'s' if n != 1 else ''}, "
                     f"{decimal_size(sum(d.size for d in res.manifest.layers), '.1f')} in {took:.1f}s)")
    from rootless import events

    events.emit(ctx, "image", "pull", id_=record.id, name=str(res.ref))
    return record


def _remember_blobs(ctx: Context, res: Resolved, record: ImageRecord) -> None:
    """Pair each layer blob with its diff ID and where it came from: a later push to another
    repository of the same registry mounts it instead of uploading it (push.py)."""
    from storage.layerblobs import LayerBlobs, compression_of

    try:
        LayerBlobs(ctx.layout).record([(e.digest, e.diff_id, compression_of(e.media_type), e.size)
                                       for e in record.layers], seen=res.ref.name)
    except RootlessError as e:
        ctx.log.debug(f"{e.message}: a push of this image may upload layers a mount could spare")


def _warn_losses(ctx: Context, ref: Reference, fresh: list[dict[str, Any]]) -> None:
    """One warning per kind of loss, summed over the layers this pull unpacked."""
    devices = sum(int(m.get("devices_skipped", 0)) for m in fresh)
    overflow = sum(int(m.get("overflow_ids", 0)) for m in fresh)
    xattrs = sum(int(m.get("xattr_failures", 0)) for m in fresh)
    if devices:
        ctx.log.warn(f"{ref}: skipped {devices} device node{'s' if devices > 1 else ''}: a user namespace "
                     "cannot create them (the container's /dev provides the usual ones)")
    if overflow:
        from rootless.runtime import idmap

        ctx.log.warn(f"{ref}: {overflow} file{'s' if overflow > 1 else ''} owned by IDs your ID mapping "
                     "cannot hold are owned by the container's root (you) instead",
                     f"to keep their owners, as root: {idmap.usermod_fix(idmap.current_user())}; then remove "
                     "the image and pull it again")
    if xattrs:
        ctx.log.warn(f"{ref}: {xattrs} extended attribute{'s' if xattrs > 1 else ''} could not be set "
                     "(security.* and trusted.* need real root)")


def _fetch_and_unpack(ctx: Context, res: Resolved, blobs: Any, layers: Any,
                      progress: Progress) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Step 4: downloads on up to ``max_parallel`` threads; each finished blob goes straight to an
    unpack thread (the unpack itself runs in a namespace worker process, so both cores work)."""
    import os

    jobs: dict[str, tuple[Descriptor, str]] = {}
    for desc, diff_id in zip(res.manifest.layers, res.config.diff_ids, strict=True):
        jobs.setdefault(diff_id, (desc, diff_id))
    results: dict[str, dict[str, Any]] = {}
    fresh: list[dict[str, Any]] = []
    stop = threading.Event()

    def download(desc: Descriptor) -> None:
        if blobs.has(desc.digest):
            progress.status(desc.digest, "Already exists", done=True)
            return
        with blobs.open_writer(desc.digest, desc.size) as w:
            if w.done:
                progress.status(desc.digest, "Already exists", done=True)
                return
            if w.offset:
                progress.advance(desc.digest, w.offset)
            if stop.is_set():
                raise RootlessError("pull cancelled")
            def advance(n: int) -> None:
                if stop.is_set():  # Ctrl-C or a failed layer: this download is not wanted now
                    raise StorageError("pull cancelled")
                progress.advance(desc.digest, n)

            res.client.fetch_blob(res.ref.repository, desc.digest, w, progress=advance, size=desc.size)

    def unpack(desc: Descriptor, diff_id: str) -> None:
        progress.status(desc.digest, "Extracting")
        results[diff_id] = meta = layers.ensure(diff_id, desc.digest, desc.media_type)
        fresh.append(meta)
        progress.status(desc.digest, "Done", done=True)

    todo = [(d, i) for d, i in jobs.values() if not layers.has(i)]
    for desc, _ in todo:
        progress.add(desc.digest, desc.size, "Copying")
    for _d, diff_id in jobs.values():
        if layers.has(diff_id):
            results[diff_id] = layers.meta(diff_id)
    if not todo:
        return list(results.values()), fresh
    unpackers = ThreadPoolExecutor(max_workers=max(1, min(len(todo), os.cpu_count() or 2)),
                                   thread_name_prefix="unpack")
    downloaders = ThreadPoolExecutor(max_workers=ctx.config.max_parallel_downloads,
                                     thread_name_prefix="download")
    futures: list[Future[None]] = []
    try:
        def chain(desc: Descriptor, diff_id: str) -> Callable[[Future[None]], None]:
            def after_download(f: Future[None]) -> None:
                # a download still queued when a failure shut the pool down is cancelled, and
                # exception() of a cancelled future raises
                if not f.cancelled() and f.exception() is None and not stop.is_set():
                    futures.append(unpackers.submit(unpack, desc, diff_id))
            return after_download

        dls = []
        for desc, diff_id in todo:
            f = downloaders.submit(download, desc)
            f.add_done_callback(chain(desc, diff_id))
            dls.append(f)
        done, _ = wait(dls, return_when=FIRST_EXCEPTION)
        for f in done:
            if f.exception() is not None:
                stop.set()
                raise f.exception()  # type: ignore[misc]
        downloaders.shutdown(wait=True)
        # every download succeeded, so every unpack has been submitted
        done2, _ = wait(list(futures), return_when=FIRST_EXCEPTION)
        for f in done2:
            if f.exception() is not None:
                stop.set()
                raise f.exception()  # type: ignore[misc]
        wait(list(futures))
    except KeyboardInterrupt:
        # Ctrl-C: no waiting for unpacks to finish (seconds for a large layer); each runs in a
        # namespace worker, and what a killed one leaves is a tmp entry the next pull removes.
        stop.set()
        abort = getattr(layers.runner, "abort", None)
        if abort is not None:
            abort()
        raise
    finally:
        stop.set()
        downloaders.shutdown(wait=True, cancel_futures=True)
        unpackers.shutdown(wait=True, cancel_futures=True)
    for f in futures:
        if f.exception() is not None:
            raise f.exception()  # type: ignore[misc]
    return list(results.values()), fresh

