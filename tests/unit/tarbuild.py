"""Build layer tars in memory for the storage tests."""

from __future__ import annotations

import gzip
import hashlib
import io
import tarfile
from dataclasses import dataclass, field

MTIME = 1_600_000_000


@dataclass
class M:
    """One tar member: name, type and what goes with it."""

    name: str
    type: bytes = tarfile.REGTYPE
    data: bytes = b""
    mode: int = 0o644
    uid: int = 0
    gid: int = 0
    linkname: str = ""
    mtime: int = MTIME
    devmajor: int = 0
    devminor: int = 0
    pax: dict[str, str] = field(default_factory=dict)


def d(name: str, mode: int = 0o755, **kw: object) -> M:
    return M(name, tarfile.DIRTYPE, mode=mode, **kw)  # type: ignore[arg-type]


def f(name: str, data: bytes = b"", mode: int = 0o644, **kw: object) -> M:
    return M(name, tarfile.REGTYPE, data=data, mode=mode, **kw)  # type: ignore[arg-type]


def sym(name: str, target: str, **kw: object) -> M:
    return M(name, tarfile.SYMTYPE, linkname=target, mode=0o777, **kw)  # type: ignore[arg-type]


def hard(name: str, target: str) -> M:
    return M(name, tarfile.LNKTYPE, linkname=target)


def build_tar(members: list[M], fmt: int = tarfile.PAX_FORMAT) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tf:
        for m in members:
            ti = tarfile.TarInfo(m.name)
            ti.type = m.type
            ti.mode = m.mode
            ti.uid, ti.gid = m.uid, m.gid
            ti.mtime = m.mtime
            ti.linkname = m.linkname
            ti.devmajor, ti.devminor = m.devmajor, m.devminor
            ti.pax_headers = dict(m.pax)
            if m.type == tarfile.REGTYPE:
                ti.size = len(m.data)
                tf.addfile(ti, io.BytesIO(m.data))
            else:
                tf.addfile(ti)
    return buf.getvalue()


def gz(data: bytes) -> bytes:
    return gzip.compress(data, compresslevel=1)


def zst(data: bytes) -> bytes:
    import zstandard

    return zstandard.ZstdCompressor().compress(data)


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()
