"""slirp4netns's API socket (``--api-socket``): one JSON request per connection, one JSON reply.

The requests are QMP-shaped (slirp4netns(1) "API SOCKET"): ``{"execute": "add_hostfwd",
"arguments": {...}}`` answers ``{"return": {"id": N}}`` or ``{"error": {"desc": "..."}}``.
"""

from __future__ import annotations

import json
from typing import Any

from rootless.errors import RootlessError

TIMEOUT = 5.0


def request(path: str, execute: str, arguments: dict[str, Any] | None = None, *,
            timeout: float = TIMEOUT) -> dict[str, Any]:
    """Send one request to the API socket at *path*; the ``return`` object, else RootlessError."""
    import socket

    body: dict[str, Any] = {"execute": execute}
    if arguments is not None:
        body["arguments"] = arguments
    data = b""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        try:
            s.connect(path)
            s.sendall(json.dumps(body).encode())
            # slirp4netns reads the request with a single read(2) and answers once, then closes
            s.shutdown(socket.SHUT_WR)
            while chunk := s.recv(4096):
                data += chunk
        except OSError as e:
            raise RootlessError(f"slirp4netns API {execute}: {e.strerror or e}") from None
    try:
        reply = json.loads(data or b"{}")
    except ValueError:
        raise RootlessError(f"slirp4netns API {execute}: unreadable reply {data[:200]!r}") from None
    if "error" in reply:
        desc = reply["error"].get("desc") if isinstance(reply["error"], dict) else reply["error"]
        raise RootlessError(f"slirp4netns API {execute}: {desc}")
    ret = reply.get("return")
    return ret if isinstance(ret, dict) else {}


def add_hostfwd(path: str, proto: str, host_addr: str, host_port: int, guest_port: int,
                guest_addr: str | None = None) -> int:
    """Forward *host_addr*:*host_port* on the host to *guest_port* in the container; the rule's id."""
    args: dict[str, Any] = {"proto": proto, "host_addr": host_addr or "0.0.0.0", "host_port": host_port,
                            "guest_port": guest_port}
    if guest_addr:
        args["guest_addr"] = guest_addr
    ret = request(path, "add_hostfwd", args)
    return int(ret.get("id", 0))


def list_hostfwd(path: str) -> list[dict[str, Any]]:
    entries = request(path, "list_hostfwd").get("entries")
    return list(entries) if isinstance(entries, list) else []
