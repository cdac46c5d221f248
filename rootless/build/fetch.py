"""ADD of a URL: the file downloaded into the store's tmp/, checked against ``--checksum``."""

from __future__ import annotations

import hashlib
import os
from typing import TYPE_CHECKING

from rootless.build.dockerfile import DockerfileError

if TYPE_CHECKING:
    from rootless.context import Context


def fetch(ctx: Context, url: str, checksum: str | None, where: str) -> tuple[str, str]:
    """(path of the downloaded file, its sha256 hex). The caller removes the file."""
    import httpx

    want = None
    if checksum:
        algo, _, want = checksum.partition(":")
        if algo != "sha256" or len(want) != 64:
            raise DockerfileError(f"{where}: --checksum {checksum!r}: only sha256:<64 hex digits> is supported",
                                  "write it as --checksum=sha256:...")
    ctx.layout.tmp.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = str(ctx.layout.tmp / f"add-{os.urandom(8).hex()}")
    h = hashlib.sha256()
    try:
        with httpx.stream("GET", url, follow_redirects=True, timeout=60) as r, open(path, "wb") as f:
            if r.status_code != 200:
                raise DockerfileError(f"{where}: ADD {url}: the server answered {r.status_code}",
                                      "check the URL")
            for chunk in r.iter_bytes(1 << 20):
                h.update(chunk)
                f.write(chunk)
    except httpx.HTTPError as e:
        _unlink(path)
        raise DockerfileError(f"{where}: ADD {url}: {e}", "check the URL and the network") from None
    except BaseException:
        _unlink(path)
        raise
    got = h.hexdigest()
    if want is not None and got != want:
        _unlink(path)
        raise DockerfileError(f"{where}: ADD {url}: the checksum is sha256:{got}, --checksum wants sha256:{want}",
                              "fix the checksum or the URL")
    os.chmod(path, 0o600)
    return path, got


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass
