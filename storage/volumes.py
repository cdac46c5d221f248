"""Named volumes: directories in the store that outlive containers.

Each volume is ``layout.volumes/<name>/``:

  volume.json   the record (driver, labels, options, creation time, anonymous or not)
  _data/        what containers see, owned through the store's fixed ID mapping (so the
                container's root writes as the volume's root: the user's own uid)
  copied-up     present once the image's content was copied in (rootless.runtime.mounts)

A volume with ``--opt type=tmpfs`` or ``type=none,o=bind,device=PATH`` keeps no data here:
it is mounted as that tmpfs or bind mount each time. Records are written atomically under
one lock (``locks/volumes.lock``); files in ``_data`` may belong to the user's subordinate
IDs, so removal and the tar round trips run as namespace-root (the ``*_tree`` functions
below are called through a NamespaceRunner and import only the stdlib).
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from rootless.errors import NotFoundError, RootlessError, StorageError, errno_hint
from rootless.record import dataclass, field
from rootless.spec import COPY_UP_MARKER

if TYPE_CHECKING:
    from rootless.layout import Layout
    from storage.nsrunner import NamespaceRunner

# Docker's and Podman's rule for volume names (names are also directory names here)
_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*$")
DATA = "_data"
RECORD = "volume.json"
# --opt keys Podman's local driver takes; type/device/o describe a mount made at each use
_OPTS = ("type", "device", "o")
_TYPES = ("tmpfs", "none", "bind")


class NoSuchVolume(NotFoundError):
    exit_code = 1  # podman-volume-rm(1): 1 when a named volume does not exist


class VolumeInUse(RootlessError):
    exit_code = 2  # podman-volume-rm(1): 2 when a volume is being used by a container


@dataclass(frozen=True)
class Volume:
    name: str
    driver: str = "local"
    labels: Mapping[str, str] = field(default_factory=dict)
    options: Mapping[str, str] = field(default_factory=dict)
    created: float = 0.0
    anonymous: bool = False

    @property
    def kind(self) -> str:
        """"data" (a directory in the store), "tmpfs" or "bind" (a mount made at each use)."""
        t = self.options.get("type", "")
        if t == "tmpfs":
            return "tmpfs"
        if t in ("none", "bind") or "bind" in self.options.get("o", "").split(","):
            return "bind"
        return "data"

    def to_dict(self) -> dict[str, Any]:
        return {"Name": self.name, "Driver": self.driver, "Labels": dict(self.labels),
                "Options": dict(self.options), "Created": self.created, "Anonymous": self.anonymous}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Volume:
        return cls(name=str(d["Name"]), driver=str(d.get("Driver") or "local"),
                   labels={str(k): str(v) for k, v in (d.get("Labels") or {}).items()},
                   options={str(k): str(v) for k, v in (d.get("Options") or {}).items()},
                   created=float(d.get("Created") or 0.0), anonymous=bool(d.get("Anonymous")))


def check_name(name: str) -> None:
    if not _NAME.match(name) or len(name) > 255:
        raise RootlessError(f"invalid volume name {name!r}: names start with a letter or digit and hold only "
                            "letters, digits, '_', '.' and '-'")


def parse_options(opts: Mapping[str, str], driver: str = "local") -> dict[str, str]:
    """--driver/--opt checked: only what a user without privileges can mount at each use."""
    if driver != "local":
        raise RootlessError(f"volume driver {driver!r} is not supported", "use --driver local (the default)")
    for k in opts:
        if k not in _OPTS:
            raise RootlessError(f"volume option {k!r} is not supported", "supported: type=, device=, o=")
    kind = opts.get("type", "")
    if kind and kind not in _TYPES:
        raise RootlessError(f"volume option type={kind}: only tmpfs and none (a bind mount of device=) can be "
                            "mounted without root", "use --opt type=tmpfs, or --opt type=none,o=bind,device=PATH")
    bind = kind in ("none", "bind") or "bind" in opts.get("o", "").split(",")
    if bind:
        dev = opts.get("device", "")
        if not dev.startswith("/"):
            raise RootlessError("volume option device=: a bind volume needs an absolute host path",
                                "e.g. --opt type=none,o=bind,device=/srv/data")
        if not os.path.isdir(dev):
            raise RootlessError(f"volume option device={dev}: no such directory")
    elif opts.get("device") and kind != "tmpfs":
        raise RootlessError("volume option device= needs type=none (a bind mount) or type=tmpfs")
    elif not kind and opts.get("o"):
        raise RootlessError("volume option o= needs type=tmpfs or type=none", "add --opt type=tmpfs")
    return dict(opts)


# --------------------------------------------------------------------------- the records


class VolumeStore:
    def __init__(self, layout: Layout) -> None:
        self.root = layout.volumes
        self._lock_path = layout.locks / "volumes.lock"
        self.tmp = layout.tmp

    def path(self, name: str) -> str:
        return os.path.join(self.root, name)

    def data(self, name: str) -> str:
        return os.path.join(self.root, name, DATA)

    @contextmanager
    def locked(self) -> Iterator[None]:
        from storage.locks import FileLock

        self._lock_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        with FileLock(self._lock_path):
            yield

    def get(self, name: str) -> Volume:
        try:
            with open(os.path.join(self.root, name, RECORD), "rb") as f:
                return Volume.from_dict(json.loads(f.read()))
        except FileNotFoundError:
            raise NoSuchVolume(f"no volume with name {name!r} found: no such volume") from None
        except (OSError, ValueError, KeyError) as e:
            raise StorageError(f"read volume {name!r}: {e}", "remove it with `rootless volume rm -f`") from e

    def exists(self, name: str) -> bool:
        return _NAME.match(name) is not None and os.path.isfile(os.path.join(self.root, name, RECORD))

    def list(self) -> list[Volume]:
        try:
            names = sorted(os.listdir(self.root))
        except FileNotFoundError:
            return []
        out = []
        for n in names:
            if _NAME.match(n):
                try:
                    out.append(self.get(n))
                except RootlessError:
                    continue
        return out

    def create(self, name: str | None, *, driver: str = "local", labels: Mapping[str, str] | None = None,
               options: Mapping[str, str] | None = None, anonymous: bool = False, exist_ok: bool = False
               ) -> tuple[Volume, bool]:
        """The volume *name* (a random one when None), made now; (volume, made). An existing
        one is an error unless *exist_ok*."""
        from storage.atomic import write_atomic

        opts = parse_options(options or {}, driver)
        if name is None:
            name = os.urandom(32).hex()
        check_name(name)
        with self.locked():
            if self.exists(name):
                if exist_ok:
                    return self.get(name), False
                raise RootlessError(f"volume with name {name!r} already exists",
                                    "choose another name, or remove it first (`rootless volume rm`)")
            vol = Volume(name=name, driver=driver, labels=dict(labels or {}), options=opts, created=time.time(),
                         anonymous=anonymous)
            d = self.path(name)
            try:
                os.makedirs(self.root, mode=0o700, exist_ok=True)
                os.mkdir(d, 0o700)
                # 0755 root-owned as the container sees it, as Docker makes a volume's top
                os.mkdir(os.path.join(d, DATA), 0o755)
                os.chmod(os.path.join(d, DATA), 0o755)
                write_atomic(os.path.join(d, RECORD), json.dumps(vol.to_dict()).encode(), 0o600, durable=False)
            except OSError as e:
                _discard(d)
                raise StorageError(f"create volume {name!r}: {e.strerror}", hint=errno_hint(e)) from e
            except BaseException:
                _discard(d)
                raise
        return vol, True

    def remove(self, runner: NamespaceRunner, name: str) -> None:
        """The volume and its data: renamed into tmp/ first, so it is gone from the list at once
        and a removal cut short leaves only a tmp/ entry the store's cleanup finishes."""
        with self.locked():
            if not self.exists(name):
                raise NoSuchVolume(f"no volume with name {name!r} found: no such volume")
            doomed = os.path.join(self.tmp, f"rm-volume-{name[:64]}-{os.urandom(4).hex()}")
            try:
                os.makedirs(self.tmp, mode=0o700, exist_ok=True)
                os.rename(self.path(name), doomed)
            except OSError as e:
                raise StorageError(f"remove volume {name!r}: {e.strerror}", hint=errno_hint(e)) from e
        try:
            _discard(doomed)
        except OSError:
            runner.call("storage.layers:remove_tree", path=doomed)

    def needs_copy_up(self, name: str) -> bool:
        return not os.path.exists(os.path.join(self.root, name, COPY_UP_MARKER))


def _discard(path: str) -> None:
    import shutil

    if os.path.lexists(path):
        shutil.rmtree(path)


# --------------------------------------------------------------------------- as namespace-root


def export_tree(data: str, out: str) -> None:
    """A tar of the volume's data (IDs as containers see them) into the file *out*."""
    import tarfile

    try:
        with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as tf:
            for entry in sorted(os.listdir(data)):
                tf.add(os.path.join(data, entry), arcname=entry, recursive=True)
    except OSError as e:
        raise StorageError(f"export volume: {e.filename or data}: {e.strerror}", hint=errno_hint(e)) from e


def import_tree(data: str, archive: str, staging: str) -> None:
    """The tar *archive* unpacked into the volume's *data* (its entries replace what is there).

    The layer unpacker does the work (it never writes outside its target, and keeps owners,
    modes and times) into *staging*, a new directory beside *data*, whose entries are then
    renamed into place."""
    from storage.layers import remove_tree, unpack

    try:
        unpack(archive, "application/vnd.oci.image.layer.v1.tar", staging)
        for entry in os.listdir(staging):
            target = os.path.join(data, entry)
            if os.path.lexists(target):
                remove_tree(target)
            os.rename(os.path.join(staging, entry), target)
    except OSError as e:
        raise StorageError(f"import volume: {e.filename or data}: {e.strerror}", hint=errno_hint(e)) from e
    finally:
        remove_tree(staging)
