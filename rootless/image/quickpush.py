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
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rootless.image.push import Blob, Plan

_PROXY_VARS = ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY")
_TIMEOUT = 15.0
_MAX_LINE = 8192
_MAX_HEADERS = 100


class _GiveUp(Exception):
    """An answer the lane does not handle: the full client takes over."""


class _Conn:
    """One HTTP/1.1 keep-alive connection (RFC 9112), just enough for the lane's requests:
    small bodies out, status and headers in, the answer's body read (by Content-Length,
    chunked, or to the close) and dropped. http.client would do, but importing it (with the
    email parser it reads headers with) costs more than the requests themselves."""

    def __init__(self, host: str, port: int, ssl_ctx: Any, name: str) -> None:
        import socket

        # bytes: getaddrinfo then skips the idna codec, whose import is most of a lookup's cost
        try:
            addr: Any = host.encode("ascii")
        except UnicodeEncodeError:
            addr = host
        sock = socket.create_connection((addr, port), timeout=_TIMEOUT)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if ssl_ctx is not None:
            sock = ssl_ctx.wrap_socket(sock, server_hostname=host)
        self.sock = sock
        self.rf = sock.makefile("rb")
        self.name = name  # the Host header
        self.open = True

    def close(self) -> None:
        self.open = False
        self.rf.close()
        self.sock.close()

    def _line(self) -> bytes:
        line = self.rf.readline(_MAX_LINE + 1)
        if len(line) > _MAX_LINE or not line.endswith(b"\n"):
            raise _GiveUp("a malformed or cut answer")
        return line.rstrip(b"\r\n")

    def request(
        self, method: str, path: str, body: bytes | None, headers: dict[str, str]
    ) -> tuple[int, dict[str, str]]:
        head = [
            f"{method} {path} HTTP/1.1",
            f"Host: {self.name}",
            "User-Agent: rootless/0.1",
            "Accept-Encoding: identity",
        ]
        head += [f"{k}: {v}" for k, v in headers.items()]
        if body is not None or method in ("POST", "PUT", "PATCH"):
            head.append(f"Content-Length: {len(body or b'')}")
        self.sock.sendall("\r\n".join(head).encode("latin-1") + b"\r\n\r\n" + (body or b""))
        status_line = self._line().split(None, 2)
        if len(status_line) < 2 or not status_line[0].startswith(b"HTTP/1.") or not status_line[1].isdigit():
            raise _GiveUp(f"not an HTTP/1.1 answer: {status_line!r}")
        status = int(status_line[1])
        hdrs: dict[str, str] = {}
        for _ in range(_MAX_HEADERS):
            line = self._line()
            if not line:
                break
            k, sep, v = line.decode("latin-1").partition(":")
            if not sep:
                raise _GiveUp(f"a malformed header line: {line!r}")
            hdrs[k.strip().lower()] = v.strip()
        else:
            raise _GiveUp("too many header lines")
        self._skip_body(method, status, hdrs)
        if hdrs.get("connection", "").lower() == "close" or status_line[0] == b"HTTP/1.0":
            self.close()
        return status, hdrs

    def _skip_body(self, method: str, status: int, hdrs: dict[str, str]) -> None:
        # RFC 9112 §6.3: no body for HEAD, 1xx, 204, 304; else chunked, Content-Length, or to the close
        if method == "HEAD" or status < 200 or status in (204, 304):
            return
        if "chunked" in hdrs.get("transfer-encoding", "").lower():
            while True:
                size = int(self._line().split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while self._line():
                        pass  # trailer fields
                    return
                self._read(size + 2)
        elif (length := hdrs.get("content-length")) is not None:
            if not length.isdigit():
                raise _GiveUp(f"Content-Length {length!r}")
            self._read(int(length))
        else:
            while self.rf.read(1 << 16):
                pass
            self.close()

    def _read(self, n: int) -> None:
        while n > 0:
            chunk = self.rf.read(min(n, 1 << 16))
            if not chunk:
                raise _GiveUp("the answer was cut")
            n -= len(chunk)


class _Conns:
    """One keep-alive connection per thread to ``host`` ("name[:port]") over ``scheme``."""

    def __init__(self, scheme: str, host: str, verify: bool) -> None:
        self.scheme, self.host, self.verify = scheme, host, verify
        name, sep, port = host.rpartition(":")
        if not sep or "]" in port:  # no port (or an IPv6 literal without one)
            name, port = host, ""
        self._addr = (name.strip("[]"), int(port) if port.isdigit() else (80 if scheme == "http" else 443))
        self._local = threading.local()
        self._all: list[_Conn] = []
        self._lock = threading.Lock()
        self._ssl: Any = None

    def _new(self) -> _Conn:
        ctx = None
        if self.scheme == "https":
            import ssl

            with self._lock:
                if self._ssl is None:
                    self._ssl = ssl.create_default_context() if self.verify else ssl._create_unverified_context()
            ctx = self._ssl
        conn = _Conn(*self._addr, ctx, self.host)
        with self._lock:
            self._all.append(conn)
        return conn

    def request(
        self, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str]]:
        """(status, lower-cased headers); the answer's body is read and dropped."""
        conn = getattr(self._local, "conn", None)
        try:
            if conn is None or not conn.open:
                conn = self._local.conn = self._new()
            return conn.request(method, path, body, headers or {})
        except (OSError, ValueError, _GiveUp) as e:  # the full client retries, or says why
            if conn is not None:
                conn.close()
            self._local.conn = None
            raise _GiveUp(f"{method} {path}: {e}") from e

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
            # digests and repository names need no escaping in a query (distribution's grammar)
            status, headers = conns.request("POST", f"/v2/{repo}/blobs/uploads/?mount={b.digest}&from={other}", b"")
            if status == 201:
                return f"skipped: mounted from {other}"
            if status == 202 and headers.get("location"):
                # the registry opened an upload instead: cancel it (the full client uploads)
                _cancel(conns, headers["location"])
            raise _GiveUp(f"mount {b.digest}: {status}")
        raise _GiveUp(f"{b.digest}: not in {repo} and nowhere to mount it from")

    todo = [p.config, *{b.digest: b for b in p.layers}.values()]
    outcomes: list[str] = [""] * len(todo)
    failed: list[_GiveUp] = []
    queue = iter(range(len(todo)))
    lock = threading.Lock()

    def worker() -> None:
        while not failed:
            with lock:
                i = next(queue, None)
            if i is None:
                return
            try:
                outcomes[i] = one(todo[i])
            except _GiveUp as e:
                failed.append(e)
            except Exception as e:  # noqa: BLE001 - whatever it is, the full client reports it
                failed.append(_GiveUp(repr(e)))

    try:
        threads = [threading.Thread(target=worker, name="quickpush") for _ in range(max(1, min(workers, len(todo))))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if failed:
            raise failed[0]
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
