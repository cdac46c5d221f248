"""The re-push lane: the registry already holds every blob, so a push is one HEAD (or one
cross-repository mount) per blob and the manifest PUT.

Most of a re-push's time went to loading httpx and reading the CA bundle, not to the few
requests it makes. This lane makes those requests with http.client, one keep-alive
connection per thread, the blobs in parallel, and reads no blob. It is tried only when
every layer was seen at the destination's registry (storage.layerblobs) and nothing asks
for what only the full client (push._push_registry) does: credentials, a proxy, bars on a
terminal. Any other answer (401, a blob to upload, an error, a refused manifest) returns
None and the full client pushes from the start, with its auth flow, retries and messages;
the lane has written nothing the registry would keep but blob links it already had.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rootless.image.push import Blob, Plan

_PROXY_VARS = ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY")
_TIMEOUT = 15.0


class _GiveUp(Exception):
    """An answer the lane does not handle: the full client takes over."""


class _Conns:
    """One keep-alive connection per thread to ``host`` over ``scheme``."""

    def __init__(self, scheme: str, host: str, verify: bool) -> None:
        self.scheme, self.host, self.verify = scheme, host, verify
        self._local = threading.local()
        self._all: list[Any] = []
        self._lock = threading.Lock()
        self._ssl: Any = None

    def _new(self) -> Any:
        import http.client

        if self.scheme == "http":
            conn = http.client.HTTPConnection(self.host, timeout=_TIMEOUT)
        else:
            import ssl

            with self._lock:
                if self._ssl is None:
                    self._ssl = ssl.create_default_context() if self.verify else ssl._create_unverified_context()
            conn = http.client.HTTPSConnection(self.host, timeout=_TIMEOUT, context=self._ssl)
        with self._lock:
            self._all.append(conn)
        return conn

    def request(
        self, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str]]:
        """(status, lower-cased headers); the body is read and dropped (keeps the connection)."""
        import http.client

        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = self._new()
        hdrs = {"User-Agent": "rootless/0.1", **(headers or {})}
        try:
            conn.request(method, path, body=body, headers=hdrs)
            r = conn.getresponse()
            r.read()
        except (OSError, http.client.HTTPException) as e:  # the full client retries, or says why
            conn.close()
            self._local.conn = None
            raise _GiveUp(f"{method} {path}: {e}") from e
        return r.status, {k.lower(): v for k, v in r.getheaders()}

    def close(self) -> None:
        for c in self._all:
            c.close()


def eligible(registry: str, layer_seen: list[tuple[str, ...]], has_credentials: bool, tty: bool) -> bool:
    """Worth trying: every layer seen at ``registry``, and nothing only the full client does."""
    if has_credentials or tty or any(os.environ.get(v) for v in _PROXY_VARS):
        return False
    return bool(layer_seen) and all(any(w.partition("/")[0] == registry for w in seen) for seen in layer_seen)


def push(
    scheme: str,
    host: str,
    registry: str,
    repo: str,
    tag: str,
    p: Plan,
    candidates: Callable[[Blob], tuple[str, ...]],
    workers: int,
    verify: bool = True,
    log: Callable[[str], None] | None = None,
) -> list[tuple[Blob, str]] | None:
    """Every blob of ``p`` present in ``registry``/``repo`` (HEAD, else a mount from one of
    ``candidates(blob)`` — "registry/repository" strings), then the manifest. Returns each
    blob with its outcome ("skipped: already exists" or "skipped: mounted from R"), or None
    when the full client must push."""
    from urllib.parse import quote

    conns = _Conns(scheme, host, verify)

    def one(b: Blob) -> str:
        status, _ = conns.request("HEAD", f"/v2/{repo}/blobs/{b.digest}")
        if status == 200:
            return "skipped: already exists"
        if status != 404:
            raise _GiveUp(f"HEAD {b.digest}: {status}")
        for where in reversed(candidates(b)):
            reg, _, other = where.partition("/")
            if reg != registry or other == repo:
                continue
            status, headers = conns.request(
                "POST",
                f"/v2/{repo}/blobs/uploads/?mount={quote(b.digest)}&from={quote(other)}",
                body=b"",
                headers={"Content-Length": "0"},
            )
            if status == 201:
                return f"skipped: mounted from {other}"
            if status == 202 and headers.get("location"):
                # the registry opened an upload instead: cancel it (the full client uploads)
                _cancel(conns, headers["location"])
            raise _GiveUp(f"mount {b.digest}: {status}")
        raise _GiveUp(f"{b.digest}: not in {repo} and nowhere to mount it from")

    todo = [p.config, *{b.digest: b for b in p.layers}.values()]
    try:
        with ThreadPoolExecutor(max_workers=max(1, min(workers, len(todo))), thread_name_prefix="quickpush") as pool:
            outcomes = list(pool.map(one, todo))
        status, headers = conns.request(
            "PUT", f"/v2/{repo}/manifests/{tag}", body=p.manifest, headers={"Content-Type": p.media_type}
        )
        if status not in (200, 201, 202):
            raise _GiveUp(f"PUT manifest: {status}")
        said = headers.get("docker-content-digest")
        if said and said != p.digest:
            raise _GiveUp(f"PUT manifest: the registry stored {said}")
    except _GiveUp as e:
        if log is not None:
            log(f"re-push lane: {e}; pushing with the full client")
        return None
    finally:
        conns.close()
    return list(zip(todo, outcomes, strict=True))


def _cancel(conns: _Conns, location: str) -> None:
    from urllib.parse import urlsplit

    u = urlsplit(location)
    path = u.path + (f"?{u.query}" if u.query else "")
    try:
        conns.request("DELETE", path)
    except _GiveUp:
        pass  # an abandoned upload session expires on its own
