"""One D-Bus method call on the user's session bus, spoken directly: the systemd cgroup manager's
transport, without the fork and exec of busctl(1) on every `run`.

Only what that needs of the D-Bus specification ("Message Protocol"): SASL EXTERNAL
authentication, little-endian messages, the Hello call every bus client makes first (sent
together with the real call: the bus answers in order), and the marshalling of the basic
types, arrays, structs and variants. The reply's body is returned raw; an ERROR reply is
raised as DBusError with its name and message.
"""

from __future__ import annotations

import os
import socket
import struct
import time
from typing import Any

_METHOD_CALL, _METHOD_RETURN, _ERROR = 1, 2, 3
# header field codes
_PATH, _INTERFACE, _MEMBER, _ERROR_NAME, _REPLY_SERIAL, _DESTINATION, _SENDER, _SIGNATURE = range(1, 9)
_ALIGN = {"y": 1, "b": 4, "n": 2, "q": 2, "i": 4, "u": 4, "x": 8, "t": 8, "d": 8, "s": 4, "o": 4, "g": 1,
          "a": 4, "(": 8, "{": 8, "v": 1, "h": 4}
_FIXED = {"y": "B", "b": "I", "n": "h", "q": "H", "i": "i", "u": "I", "x": "q", "t": "Q", "d": "d", "h": "I"}


class DBusError(Exception):
    def __init__(self, name: str, message: str) -> None:
        super().__init__(f"{name}: {message}" if message else name)
        self.name = name
        self.message = message


# --------------------------------------------------------------------------- signatures


def _one(sig: str, i: int = 0) -> int:
    """The end of the single complete type starting at sig[i]."""
    c = sig[i]
    if c == "a":
        return _one(sig, i + 1)
    if c in "({":
        close = ")" if c == "(" else "}"
        j = i + 1
        while sig[j] != close:
            j = _one(sig, j)
        return j + 1
    return i + 1


def split(sig: str) -> list[str]:
    """``"ssa(sv)"`` → ``["s", "s", "a(sv)"]``."""
    out, i = [], 0
    while i < len(sig):
        j = _one(sig, i)
        out.append(sig[i:j])
        i = j
    return out


# --------------------------------------------------------------------------- marshalling


def _pad(buf: bytearray, align: int) -> None:
    buf.extend(b"\0" * (-len(buf) % align))


def marshal(sig: str, value: Any, buf: bytearray) -> None:
    """Append *value* of the single complete type *sig* to *buf* (offsets are from buf's start,
    which must be 8-aligned in the message)."""
    c = sig[0]
    _pad(buf, _ALIGN[c])
    if c in _FIXED:
        buf.extend(struct.pack("<" + _FIXED[c], int(value)))
    elif c in "so":
        data = value.encode()
        buf.extend(struct.pack("<I", len(data)) + data + b"\0")
    elif c == "g":
        data = value.encode()
        buf.extend(struct.pack("<B", len(data)) + data + b"\0")
    elif c == "v":
        inner, v = value
        marshal("g", inner, buf)
        marshal(inner, v, buf)
    elif c == "(":
        for t, v in zip(split(sig[1:-1]), value, strict=True):
            marshal(t, v, buf)
    elif c == "a":
        elem = sig[1:]
        at = len(buf)
        buf.extend(b"\0\0\0\0")
        _pad(buf, _ALIGN[elem[0]])  # padding to the first element is not counted in the length
        start = len(buf)
        items = value.items() if elem[0] == "{" else value
        for item in items:
            marshal("(" + elem[1:-1] + ")" if elem[0] == "{" else elem, item, buf)
        struct.pack_into("<I", buf, at, len(buf) - start)
    else:
        raise ValueError(f"D-Bus type {c!r} is not supported here")


class _Reader:
    def __init__(self, data: bytes, pos: int = 0) -> None:
        self.data = data
        self.pos = pos

    def read(self, sig: str) -> Any:
        c = sig[0]
        self.pos += -self.pos % _ALIGN[c]
        if c in _FIXED:
            fmt = "<" + _FIXED[c]
            (v,) = struct.unpack_from(fmt, self.data, self.pos)
            self.pos += struct.calcsize(fmt)
            return bool(v) if c == "b" else v
        if c in "so":
            (n,) = struct.unpack_from("<I", self.data, self.pos)
            s = self.data[self.pos + 4:self.pos + 4 + n].decode()
            self.pos += 4 + n + 1
            return s
        if c == "g":
            n = self.data[self.pos]
            s = self.data[self.pos + 1:self.pos + 1 + n].decode()
            self.pos += 1 + n + 1
            return s
        if c == "v":
            inner = self.read("g")
            return self.read(inner)
        if c == "(":
            return tuple(self.read(t) for t in split(sig[1:-1]))
        if c == "a":
            (n,) = struct.unpack_from("<I", self.data, self.pos)
            self.pos += 4
            elem = sig[1:]
            self.pos += -self.pos % _ALIGN[elem[0]]
            end = self.pos + n
            out = []
            while self.pos < end:
                out.append(self.read("(" + elem[1:-1] + ")" if elem[0] == "{" else elem))
            return dict(out) if elem[0] == "{" else out
        raise ValueError(f"D-Bus type {c!r} is not supported here")


def unmarshal(sig: str, data: bytes) -> list[Any]:
    """The values of a body of signature *sig*."""
    r = _Reader(data)
    return [r.read(t) for t in split(sig)]


def message(serial: int, destination: str, path: str, interface: str, member: str, signature: str = "",
            args: tuple[Any, ...] = ()) -> bytes:
    body = bytearray()
    for t, v in zip(split(signature), args, strict=True):
        marshal(t, v, body)
    fields: list[tuple[int, tuple[str, Any]]] = [(_PATH, ("o", path)), (_INTERFACE, ("s", interface)),
                                                 (_MEMBER, ("s", member)), (_DESTINATION, ("s", destination))]
    if signature:
        fields.append((_SIGNATURE, ("g", signature)))
    head = bytearray(b"l" + bytes([_METHOD_CALL, 0, 1]) + struct.pack("<II", len(body), serial))
    marshal("a(yv)", fields, head)
    _pad(head, 8)
    return bytes(head + body)


def parse(data: bytes) -> tuple[int, dict[int, Any], bytes, int] | None:
    """(type, header fields, body, length) of the first whole message in *data*, None when
    more bytes are needed."""
    if len(data) < 16:
        return None
    if data[:1] != b"l":
        raise DBusError("rootless.Protocol", "the bus sent a big-endian message")
    body_len, _, fields_len = struct.unpack_from("<III", data, 4)
    head_end = 16 + fields_len
    head_end += -head_end % 8
    total = head_end + body_len
    if len(data) < total:
        return None
    fields = dict(_Reader(data, 12).read("a(yv)"))
    return data[1], fields, data[head_end:total], total


# --------------------------------------------------------------------------- the connection


def _connect(address: str, timeout: float) -> socket.socket:
    for part in address.split(";"):
        kind, _, rest = part.partition(":")
        opts = dict(kv.partition("=")[::2] for kv in rest.split(",") if kv)
        if kind != "unix":
            continue
        target = opts.get("path") or ("\0" + opts["abstract"] if "abstract" in opts else "")
        if not target:
            continue
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        s.settimeout(timeout)
        try:
            s.connect(target)
            return s
        except OSError:
            s.close()
    raise DBusError("rootless.NoBus", f"cannot connect to the D-Bus session bus at {address}")


def _auth(s: socket.socket) -> None:
    uid = str(os.geteuid()).encode().hex()
    s.sendall(b"\0AUTH EXTERNAL " + uid.encode() + b"\r\n")
    line = b""
    while not line.endswith(b"\r\n"):
        chunk = s.recv(256)
        if not chunk:
            break
        line += chunk
    if not line.startswith(b"OK "):
        raise DBusError("rootless.AuthFailed", f"the bus refused us: {line.decode(errors='replace').strip()}")


def call(address: str, destination: str, path: str, interface: str, member: str, signature: str = "",
         args: tuple[Any, ...] = (), timeout: float = 25.0) -> tuple[str, bytes]:
    """Call *member* and wait for its reply: (the reply's signature, its body). Raises DBusError
    for an ERROR reply or a bus that cannot be reached or spoken to."""
    deadline = time.monotonic() + timeout
    try:
        s = _connect(address, timeout)
    except OSError as e:
        raise DBusError("rootless.NoBus", f"{address}: {e.strerror or e}") from None
    with s:
        try:
            _auth(s)
            s.sendall(b"BEGIN\r\n"
                      + message(1, "org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus", "Hello")
                      + message(2, destination, path, interface, member, signature, args))
            data = b""
            while True:
                got = parse(data)
                if got is None:
                    s.settimeout(max(0.01, deadline - time.monotonic()))
                    chunk = s.recv(65536)
                    if not chunk:
                        raise DBusError("rootless.Disconnected", "the bus closed the connection")
                    data += chunk
                    continue
                kind, fields, body, n = got
                data = data[n:]
                if kind not in (_METHOD_RETURN, _ERROR):
                    continue  # signals (NameAcquired)
                sig = fields.get(_SIGNATURE, "")
                if kind == _ERROR:
                    text = unmarshal(sig, body)[0] if sig.startswith("s") else ""
                    raise DBusError(fields.get(_ERROR_NAME, "org.freedesktop.DBus.Error.Failed"), text)
                if fields.get(_REPLY_SERIAL) == 2:
                    return sig, body
        except TimeoutError:
            raise DBusError("rootless.Timeout", f"no reply to {member} within {timeout:.0f} s") from None
        except OSError as e:
            raise DBusError("rootless.Disconnected", f"{address}: {e.strerror or e}") from None
