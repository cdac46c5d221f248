"""HTTP/1.1 on one client connection: h11 (sans-I/O) over a blocking socket.

One process serves one connection (rootless.api.server forks per accepted client), so a
blocking socket is the simplest correct model: a slow request, a followed log or a
hijacked attach stream holds only its own process. h11 parses requests and frames
responses (Content-Length, or chunked when the length is unknown, RFC 9112 §7.1); after a
``101 Switching Protocols`` (RFC 9110 §15.2.2), h11 steps aside and the raw socket, with
any bytes h11 had already read, carries Docker's attach/exec stream.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import h11

_RECV = 65536


class ClientGone(Exception):
    """The client closed the connection (or broke it) mid-request or mid-response."""


class Request:
    def __init__(self, conn: Connection, event: h11.Request) -> None:
        self.conn = conn
        self.method = event.method.decode("ascii").upper()
        target = event.target.decode("latin-1")
        parts = urlsplit(target)
        self.raw_path = unquote(parts.path)
        self.query: dict[str, list[str]] = parse_qs(parts.query, keep_blank_values=True)
        self.headers: dict[str, str] = {}
        for k, v in event.headers:
            self.headers[k.decode("latin-1").lower()] = v.decode("latin-1")
        self.path = self.raw_path  # without the /v1.xx prefix (set by the router)
        self.api_version: str | None = None
        self._body_done = False

    # ---- query parameters, with Docker's spellings of booleans
    def q(self, name: str, default: str | None = None) -> str | None:
        v = self.query.get(name)
        return v[-1] if v else default

    def qbool(self, name: str, default: bool = False) -> bool:
        v = self.q(name)
        if v is None:
            return default
        return v.strip().lower() in ("1", "true", "yes", "on")

    def qint(self, name: str, default: int | None = None) -> int | None:
        v = self.q(name)
        if v is None or v == "":
            return default
        try:
            return int(v)
        except ValueError:
            raise BadRequest(f"query parameter {name}={v!r}: not an integer") from None

    def qjson(self, name: str) -> Any:
        v = self.q(name)
        if not v:
            return None
        try:
            return json.loads(v)
        except ValueError:
            raise BadRequest(f"query parameter {name}: not valid JSON") from None

    def filters(self) -> dict[str, list[str]]:
        """The ``filters`` parameter in either of the API's spellings: {"label": ["a=b"]} and
        {"label": {"a=b": true}}."""
        raw = self.qjson("filters") or {}
        if not isinstance(raw, dict):
            raise BadRequest("filters: expected a JSON object")
        out: dict[str, list[str]] = {}
        for k, v in raw.items():
            out[k] = [x for x, on in v.items() if on] if isinstance(v, dict) else [str(x) for x in v]
        return out

    @property
    def wants_upgrade(self) -> bool:
        return "upgrade" in self.headers.get("connection", "").lower()

    # ---- the body
    def body_chunks(self) -> Iterator[bytes]:
        """The request body as it arrives (h11 undoes chunked transfer coding)."""
        if self._body_done:
            return
        while True:
            ev = self.conn.next_event()
            if isinstance(ev, h11.Data):
                yield bytes(ev.data)
            elif isinstance(ev, h11.EndOfMessage):
                self._body_done = True
                return
            else:
                raise ClientGone()

    def body(self, limit: int = 16 << 20) -> bytes:
        out = bytearray()
        for chunk in self.body_chunks():
            out += chunk
            if len(out) > limit:
                raise BadRequest(f"request body larger than {limit} bytes")
        return bytes(out)

    def json(self) -> Any:
        data = self.body()
        if not data.strip():
            return {}
        try:
            return json.loads(data)
        except ValueError:
            raise BadRequest("request body: not valid JSON") from None

    def spool(self, directory: os.PathLike[str] | str, what: str) -> str:
        """The body, written to a new file in *directory* (the caller removes it); an empty body
        is a BadRequest naming *what* it should have been."""
        import tempfile

        fd, path = tempfile.mkstemp(prefix="body-", dir=directory)
        size = 0
        try:
            with os.fdopen(fd, "wb") as f:
                for chunk in self.body_chunks():
                    f.write(chunk)
                    size += len(chunk)
            if size == 0:
                raise BadRequest(f"{self.method} {self.path}: the request body ({what}) is empty")
        except BaseException:
            os.unlink(path)
            raise
        return path

    def drain(self) -> None:
        for _ in self.body_chunks():
            pass


class ApiError(Exception):
    """An answer with Docker's error body: {"message": "..."}."""

    status = 500

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status


class BadRequest(ApiError):
    status = 400


class NotFound(ApiError):
    status = 404


class Conflict(ApiError):
    status = 409


class NotImplementedHere(ApiError):
    status = 501


class Connection:
    """h11's state machine and the socket it speaks through."""

    def __init__(self, sock: socket.socket, keepalive: float | None) -> None:
        self.sock = sock
        self.h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=64 * 1024)
        self.keepalive = keepalive
        self.responded = False
        self.head = False

    def next_event(self, idle: bool = False) -> Any:
        while True:
            try:
                ev = self.h11.next_event()
            except h11.RemoteProtocolError as e:
                raise BadRequest(f"malformed HTTP request: {e}") from None
            if ev is not h11.NEED_DATA:
                return ev
            self.sock.settimeout(self.keepalive if idle else None)
            try:
                data = self.sock.recv(_RECV)
            except TimeoutError:
                raise ClientGone() from None
            except OSError:
                raise ClientGone() from None
            self.h11.receive_data(data)

    def next_request(self) -> Request | None:
        """The next request on this connection, None once the client is done with it."""
        if self.h11.our_state is h11.DONE and self.h11.their_state is h11.DONE:
            try:
                self.h11.start_next_cycle()
            except h11.LocalProtocolError:
                return None
        if self.h11.our_state is not h11.IDLE:
            return None
        try:
            ev = self.next_event(idle=True)
        except ClientGone:
            return None
        if isinstance(ev, h11.Request):
            self.responded = False
            req = Request(self, ev)
            self.head = req.method == "HEAD"
            return req
        return None

    def _send(self, event: Any) -> None:
        data = self.h11.send(event)
        if data:
            self.write_raw(data)

    def write_raw(self, data: bytes) -> None:
        try:
            self.sock.sendall(data)
        except OSError:
            raise ClientGone() from None

    # ---- responses
    def respond(self, status: int, body: bytes = b"", content_type: str = "application/json",
                headers: list[tuple[str, str]] | None = None) -> None:
        hs = [("Content-Type", content_type), ("Content-Length", str(len(body))), *_common(),
              *(headers or [])]
        self.responded = True
        self._send(h11.Response(status_code=status, headers=hs, reason=_phrase(status)))
        if body and not self.head:
            self._send(h11.Data(data=body))
        self._send(h11.EndOfMessage())

    def respond_stream_fd(self, status: int, fd: int, size: int, content_type: str,
                          headers: list[tuple[str, str]] | None = None) -> None:
        """A body of *size* bytes read from *fd*."""
        hs = [("Content-Type", content_type), ("Content-Length", str(size)), *_common(), *(headers or [])]
        self.responded = True
        self._send(h11.Response(status_code=status, headers=hs, reason=_phrase(status)))
        left = size
        while left > 0 and not self.head:
            chunk = os.read(fd, min(left, _RECV * 4))
            if not chunk:
                raise ClientGone()  # cannot happen with a memfd; the client sees a short body
            self._send(h11.Data(data=chunk))
            left -= len(chunk)
        self._send(h11.EndOfMessage())

    def respond_made_tar(self, tmp_dir: str, prefix: str, make: Callable[[str], None]) -> None:
        """A tar that *make* writes to a path in *tmp_dir* (the store's tmp/), sent as the body and
        never left behind: the file is unlinked once open, its descriptor keeps the data until sent."""
        import tempfile

        fd, path = tempfile.mkstemp(prefix=prefix, suffix=".tar", dir=tmp_dir)
        os.close(fd)
        try:
            make(path)
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        finally:
            os.unlink(path)
        try:
            self.respond_stream_fd(200, fd, os.fstat(fd).st_size, "application/x-tar")
        finally:
            os.close(fd)

    def respond_raw_error(self, status: int, message: str) -> None:
        """An error answer outside h11's state machine (after the request could not be parsed)."""
        body = json.dumps({"message": message}).encode() + b"\n"
        head = (f"HTTP/1.1 {status} {_phrase(status)}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\nApi-Version: {API_VERSION}\r\n\r\n")
        with contextlib.suppress(ClientGone):
            self.write_raw(head.encode() + body)

    def respond_json(self, status: int, obj: Any) -> None:
        self.respond(status, json.dumps(obj).encode() + b"\n")

    def respond_error(self, status: int, message: str) -> None:
        self.respond_json(status, {"message": message})

    def stream(self, status: int = 200, content_type: str = "application/json") -> Stream:
        """A response of unknown length: chunked (HTTP/1.1) or ended by closing (HTTP/1.0)."""
        self.responded = True
        self._send(h11.Response(status_code=status, headers=[("Content-Type", content_type), *_common()],
                                reason=_phrase(status)))
        return Stream(self)

    def hijack(self, req: Request, content_type: str) -> tuple[socket.socket, bytes]:
        """Take the raw connection over for a bidirectional stream: ``101 Switching Protocols``
        when the client asked to upgrade (the docker CLI does), else a 200 whose body is the
        stream, ended by closing. Returns the socket and bytes already read past the request."""
        self.responded = True
        req.drain()
        if req.wants_upgrade:
            self._send(h11.InformationalResponse(status_code=101, headers=[
                ("Content-Type", content_type), ("Connection", "Upgrade"), ("Upgrade", "tcp"), *_common()]))
            extra = bytes(self.h11.trailing_data[0])
        else:
            head = (f"HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nConnection: close\r\n"
                    f"Api-Version: {API_VERSION}\r\n\r\n")
            self.write_raw(head.encode())
            extra = bytes(self.h11.trailing_data[0])
        self.sock.settimeout(None)
        return self.sock, extra

    @property
    def must_close(self) -> bool:
        return self.h11.our_state is h11.MUST_CLOSE or self.h11.our_state is h11.SWITCHED_PROTOCOL


class Stream:
    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.closed = False

    def write(self, data: bytes) -> None:
        if data:
            self.conn._send(h11.Data(data=data))

    def json(self, obj: Any) -> None:
        self.write(json.dumps(obj).encode() + b"\n")

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.conn._send(h11.EndOfMessage())


API_VERSION = "1.44"
MIN_API_VERSION = "1.24"


def _phrase(status: int) -> str:
    from http import HTTPStatus

    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""


def _common() -> list[tuple[str, str]]:
    return [("Api-Version", API_VERSION), ("Server", "rootless"), ("Docker-Experimental", "false"),
            ("Ostype", "linux")]
