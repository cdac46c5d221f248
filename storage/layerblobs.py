"""Which compressed blob holds which layer, and where each blob was seen.

One small JSON file (``layout.layer_blobs``), rewritten under its lock with temp file +
rename. For each compressed blob digest: the diff ID of its content, its compression,
its size, and the registry repositories known to hold it ("localhost:5000/library/debian").
A pulled layer is recorded with the repository it came from; a layer compressed here
(import, build, a push asking for another compression) with none; a push adds the
destination. So a second push of a locally made layer compresses nothing, and a push to
another repository of the same registry can mount the blob instead of uploading it.
Entries whose blob file has gone (``rmi``) are ignored and dropped on the next write.
"""

from __future__ import annotations

import json
from typing import Any, NamedTuple

from rootless.errors import StorageError, errno_hint
from rootless.layout import Layout
from storage.atomic import write_atomic
from storage.blobs import check_digest
from storage.locks import FileLock

_MAX_SEEN = 16  # repositories remembered per blob: enough to find a mount source


class BlobInfo(NamedTuple):
    digest: str
    diff_id: str
    compression: str  # gzip, zstd, none
    size: int
    seen: tuple[str, ...]  # "registry/repository", most recent last


class LayerBlobs:
    def __init__(self, layout: Layout) -> None:
        self.layout = layout

    def _read(self) -> dict[str, dict[str, Any]]:
        try:
            data = json.loads(self.layout.layer_blobs.read_bytes())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError):
            return {}  # a damaged index only costs a recompression or an upload
        return data if isinstance(data, dict) else {}

    def _info(self, digest: str, e: Any) -> BlobInfo | None:
        try:
            return BlobInfo(digest, str(e["diff_id"]), str(e["compression"]), int(e["size"]),
                            tuple(str(s) for s in e.get("seen", ())))
        except (KeyError, TypeError, ValueError):
            return None

    def get(self, digest: str) -> BlobInfo | None:
        e = self._read().get(digest)
        info = self._info(digest, e) if e is not None else None
        return info if info is not None and self.layout.blob(digest).is_file() else None

    def find(self, diff_id: str, compression: str) -> BlobInfo | None:
        """A stored blob holding layer ``diff_id`` compressed as ``compression``."""
        for digest, e in self._read().items():
            if e.get("diff_id") == diff_id and e.get("compression") == compression \
                    and self.layout.blob(digest).is_file():
                return self._info(digest, e)
        return None

    def record(self, entries: list[tuple[str, str, str, int]], seen: str | None = None) -> None:
        """Add (digest, diff_id, compression, size) pairings, each seen at ``seen`` if given."""
        for digest, diff_id, _, _ in entries:
            check_digest(digest)
            check_digest(diff_id)
        def apply(data: dict[str, dict[str, Any]]) -> None:
            for d, i, c, s in entries:
                self._merge(data, d, i, c, s, seen)

        self._update(apply)

    def mark_seen(self, digests: list[str], where: str) -> None:
        def apply(data: dict[str, dict[str, Any]]) -> None:
            for d in digests:
                if d in data:
                    self._add_seen(data[d], where)
        self._update(apply)

    @staticmethod
    def _add_seen(e: dict[str, Any], where: str) -> None:
        seen = [s for s in e.get("seen", []) if s != where] + [where]
        e["seen"] = seen[-_MAX_SEEN:]

    def _merge(self, data: dict[str, dict[str, Any]], digest: str, diff_id: str, compression: str,
               size: int, seen: str | None) -> None:
        e = data.setdefault(digest, {"seen": []})
        e.update(diff_id=diff_id, compression=compression, size=size)
        if seen:
            self._add_seen(e, seen)

    def _update(self, change: Any) -> None:
        lock = FileLock(self.layout.locks / "layer-blobs.lock")
        try:
            self.layout.locks.mkdir(parents=True, exist_ok=True, mode=0o700)
            with lock:
                data = self._read()
                change(data)
                data = {d: e for d, e in data.items() if self.layout.blob(d).is_file()}
                write_atomic(self.layout.layer_blobs, json.dumps(data, indent=1, sort_keys=True).encode(),
                             durable=False)
        except OSError as e:
            raise StorageError(f"record layer blobs in {self.layout.layer_blobs}: {e.strerror}",
                               hint=errno_hint(e)) from e


def compression_of(media_type: str) -> str:
    """gzip, zstd or none from a layer media type (OCI "+gzip", Docker ".tar.gzip")."""
    mt = media_type.lower()
    if mt.endswith("gzip"):
        return "gzip"
    if mt.endswith("zstd"):
        return "zstd"
    return "none"

