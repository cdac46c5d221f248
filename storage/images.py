"""Image records and the names that point at them.

An image is identified, as in Docker and Podman, by the hex of its config digest. Its
record (``images/<id>.json``) lists its names, manifest digests and layers; the names
index (``images.json``: full reference -> id) is what ``lookup`` reads. Both are
rewritten with write_atomic under one store-wide lock, record first and index second,
so a reader without the lock never finds a name pointing at a missing record.
"""

from __future__ import annotations

import _thread
import builtins
import contextlib
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

from rootless.errors import NotFoundError, RootlessError, StorageError, errno_hint
from rootless.layout import Layout
from rootless.record import dataclass, field, field_names, replace
from storage.atomic import write_atomic
from storage.locks import FileLock

_HEX_ID = re.compile(r"^[0-9a-f]{64}$")
_ID_PREFIX = re.compile(r"^(sha256:)?[0-9a-f]{3,64}$")
_FORMAT = 1


class LayerEntry(NamedTuple):
    """One layer of an image, in manifest order (lowest first)."""

    digest: str  # the blob (compressed) digest, as in the manifest
    diff_id: str  # the uncompressed digest, as in the config's rootfs.diff_ids
    media_type: str
    size: int  # the blob's size


@dataclass(frozen=True)
class ImageRecord:
    id: str  # hex of config_digest
    names: tuple[str, ...] = ()  # full references: docker.io/library/alpine:latest
    digests: tuple[str, ...] = ()  # repo@sha256:... references of the manifests pulled
    manifest_digest: str = ""
    config_digest: str = ""
    layers: tuple[LayerEntry, ...] = field(default=())
    created: str = ""  # the config's "created" (RFC 3339), "" when absent
    os: str = "linux"
    arch: str = "amd64"
    size: int = 0  # sum of the uncompressed layer sizes
    index_digest: str = ""  # the image index (manifest list) it was chosen from, if any

    def __post_init__(self) -> None:
        # Accept lists (from JSON) and plain tuples; store tuples of LayerEntry.
        object.__setattr__(self, "names", tuple(self.names))
        object.__setattr__(self, "digests", tuple(self.digests))
        object.__setattr__(self, "layers", tuple(
            LayerEntry(**entry) if isinstance(entry, dict) else LayerEntry(*entry) for entry in self.layers))
        if self.id.startswith("sha256:"):
            object.__setattr__(self, "id", self.id[7:])
        if not _HEX_ID.match(self.id):
            raise StorageError(f"invalid image ID {self.id!r}: expected 64 hex digits")

    @property
    def dangling(self) -> bool:
        """No names left: shown as <none>:<none> (its tags moved to a newer image)."""
        return not self.names

    @property
    def diff_ids(self) -> tuple[str, ...]:
        return tuple(entry.diff_id for entry in self.layers)

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {name: getattr(self, name) for name in field_names(ImageRecord)}
        data["layers"] = [entry._asdict() for entry in self.layers]
        data["format"] = _FORMAT
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ImageRecord:
        known = set(field_names(cls))
        return cls(**{k: v for k, v in data.items() if k in known})


def _has_tag_or_digest(name: str) -> bool:
    """Whether the last path component carries ":tag" or "@digest" (a port is in the first)."""
    last = name.rsplit("/", 1)[-1]
    return ":" in last or "@" in last


class ImageStore:
    def __init__(self, layout: Layout) -> None:
        self.layout = layout
        # thread → how deep it holds the lock (a dict rather than threading.local: importing
        # threading costs a `rootless run` ≈1 ms, and keys of other threads are never touched)
        self._depth: dict[int, int] = {}

    # ---- files
    def _record_path(self, image_id: str) -> Path:
        return self.layout.images / f"{image_id}.json"

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the store-wide images lock across several calls (e.g. find, then untag).

        Re-entrant for this ImageStore object in this thread; the methods below take it
        themselves. Do not lock ``images.lock`` through a separate FileLock while calling
        them: flock(2) would make this process wait for itself.
        """
        me = _thread.get_ident()
        depth = self._depth.get(me, 0)
        if depth:
            self._depth[me] = depth + 1
            try:
                yield
            finally:
                self._depth[me] = depth
            return
        with FileLock(self.layout.locks / "images.lock"):
            self._depth[me] = 1
            try:
                yield
            finally:
                del self._depth[me]

    def _read_index(self) -> dict[str, str]:
        try:
            data = json.loads(self.layout.image_index.read_bytes())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as e:
            raise StorageError(f"read image index {self.layout.image_index}: {e}",
                               hint="the store is damaged; remove that file and pull the images again") from e
        names = data.get("names", {}) if isinstance(data, dict) else {}
        return {str(k): str(v) for k, v in names.items()}

    def _write_index(self, index: dict[str, str]) -> None:
        self.layout.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        body = {"format": _FORMAT, "names": dict(sorted(index.items()))}
        write_atomic(self.layout.image_index, json.dumps(body, indent=1).encode())

    def _read_record(self, image_id: str) -> ImageRecord | None:
        path = self._record_path(image_id)
        try:
            with open(path, "rb") as f:
                return ImageRecord.from_json(json.load(f))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, TypeError) as e:
            raise StorageError(f"read image record {path}: {e}",
                               hint="the store is damaged; remove the image and pull it again") from e

    def _write_record(self, record: ImageRecord) -> None:
        self.layout.images.mkdir(parents=True, exist_ok=True, mode=0o700)
        write_atomic(self._record_path(record.id), json.dumps(record.to_json(), indent=1).encode())

    def _move_refs(self, index: dict[str, str], refs: tuple[str, ...], image_id: str) -> None:
        """Point ``refs`` at ``image_id``, taking them off the images they named before."""
        losers: dict[str, set[str]] = {}
        for ref in refs:
            old = index.get(ref)
            if old is not None and old != image_id:
                losers.setdefault(old, set()).add(ref)
            index[ref] = image_id
        for old_id, lost in losers.items():
            old_rec = self._read_record(old_id)
            if old_rec is not None:
                # The old image stays, dangling if this took its last name.
                self._write_record(replace(old_rec,
                                           names=tuple(n for n in old_rec.names if n not in lost),
                                           digests=tuple(d for d in old_rec.digests if d not in lost)))

    # ---- writes
    def add(self, record: ImageRecord, names: tuple[str, ...] | builtins.list[str] = ()) -> ImageRecord:
        """Store ``record`` under ``names`` (plus the names and digests it carries).

        A name that pointed at another image moves here; that image stays, dangling if
        it has no name left. Returns the stored record (names merged with any earlier).
        """
        self.layout.check_writable(self.layout.root, self.layout.images)
        with self.locked():
            index = self._read_index()
            existing = self._read_record(record.id)
            new_names = _merge(existing.names if existing else (), record.names, tuple(names))
            new_digests = _merge(existing.digests if existing else (), record.digests)
            stored = replace(record, names=new_names, digests=new_digests)
            self._move_refs(index, new_names + new_digests, record.id)
            self._write_record(stored)
            self._write_index(index)
            return stored

    def tag(self, image_id: str, name: str) -> ImageRecord:
        self.layout.check_writable(self.layout.root, self.layout.images)
        with self.locked():
            record = self._get_locked(image_id)
            index = self._read_index()
            self._move_refs(index, (name,), record.id)
            stored = replace(record, names=_merge(record.names, (name,)))
            self._write_record(stored)
            self._write_index(index)
            return stored

    def untag(self, name: str) -> ImageRecord:
        """Remove ``name``; the image stays (dangling if it was its last name)."""
        self.layout.check_writable(self.layout.root, self.layout.images)
        with self.locked():
            index = self._read_index()
            image_id = index.pop(name, None)
            if image_id is None:
                raise NotFoundError(f"image name {name} is not in the store")
            record = self._read_record(image_id)
            if record is None:
                self._write_index(index)
                raise NotFoundError(f"image name {name} pointed at a missing image {image_id[:12]}")
            stored = replace(record, names=tuple(n for n in record.names if n != name),
                             digests=tuple(d for d in record.digests if d != name))
            self._write_record(stored)
            self._write_index(index)
            return stored

    def remove(self, image_id: str) -> ImageRecord:
        """Forget the image and its names; its layers and blobs are the caller's to collect."""
        self.layout.check_writable(self.layout.root, self.layout.images)
        with self.locked():
            record = self._get_locked(image_id)
            index = {k: v for k, v in self._read_index().items() if v != record.id}
            self._write_index(index)  # names first: a reader never follows one to nothing
            try:
                os.unlink(self._record_path(record.id))
            except FileNotFoundError:
                pass
            except OSError as e:
                raise StorageError(f"remove image {record.id[:12]}: {e.strerror}", hint=errno_hint(e)) from e
            return record

    # ---- reads
    def _get_locked(self, image_id: str) -> ImageRecord:
        image_id = image_id.removeprefix("sha256:")
        record = self._read_record(image_id) if _HEX_ID.match(image_id) else None
        if record is None:
            raise NotFoundError(f"image {image_id[:12]} is not in the store")
        return record

    def get(self, image_id: str) -> ImageRecord:
        return self._get_locked(image_id)

    def ids(self) -> builtins.list[str]:
        try:
            names = os.listdir(self.layout.images)
        except FileNotFoundError:
            return []
        return sorted(n[:-5] for n in names if n.endswith(".json") and _HEX_ID.match(n[:-5]))

    def lookup(self, text: str) -> ImageRecord | None:
        """The image ``text`` names, or None.

        ``text`` is a full reference (docker.io/library/alpine:latest or
        ...@sha256:...), a full name without tag (":latest" is assumed), or an image ID
        or unique ID prefix of at least 3 hex digits. An ambiguous prefix is an error.
        Short names (``alpine``) are expanded by the caller: see lookup_candidates.
        """
        record = self._by_name(self._read_index(), text)
        if record is not None:
            return record
        if _ID_PREFIX.match(text):
            prefix = text.removeprefix("sha256:")
            matches = [i for i in self.ids() if i.startswith(prefix)]
            if len(matches) > 1:
                raise RootlessError(f"image ID {prefix} is ambiguous: it starts {len(matches)} image IDs",
                                    hint="give more characters of the ID")
            if matches:
                return self._read_record(matches[0])
        return None

    def lookup_candidates(self, names: builtins.list[str] | tuple[str, ...]) -> ImageRecord | None:
        """The first of ``names`` (full references, in search order) that is stored."""
        index = self._read_index()
        for name in names:
            record = self._by_name(index, name)
            if record is not None:
                return record
        return None

    def _by_name(self, index: dict[str, str], name: str) -> ImageRecord | None:
        """The record *name* names in *index* (":latest" assumed without a tag or digest)."""
        image_id = index.get(name)
        if image_id is None and not _has_tag_or_digest(name):
            image_id = index.get(f"{name}:latest")
        return self._read_record(image_id) if image_id is not None else None

    def layers_in_use(self) -> set[str]:
        """diff_ids of every stored image's layers."""
        return {entry.diff_id for record in self.list() for entry in record.layers}

    def blobs_in_use(self) -> set[str]:
        """Digests of every blob a stored image needs (manifests, configs, layers)."""
        used: set[str] = set()
        for record in self.list():
            used.update(d for d in (record.manifest_digest, record.config_digest, record.index_digest) if d)
            used.update(entry.digest for entry in record.layers)
        return used

    def list(self) -> builtins.list[ImageRecord]:
        """Every stored image, dangling ones included, sorted by ID."""
        out = []
        for image_id in self.ids():
            record = self._read_record(image_id)
            if record is not None:
                out.append(record)
        return out


def _merge(*groups: tuple[str, ...]) -> tuple[str, ...]:
    """Concatenate, keeping the first occurrence of each item."""
    return tuple(dict.fromkeys(item for group in groups for item in group))
