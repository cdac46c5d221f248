"""``-p/--publish`` and ``-P``: parsing, then host ports checked (or chosen) on the host.

Syntax (podman-run(1)): ``[IP:][HOST-PORT:]CONTAINER-PORT[/PROTOCOL]``, each port either a
number or a range ``FIRST-LAST``; a host range must be as long as the container range. A
missing host port is chosen by the kernel (a bind to port 0), as Podman does.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from rootless.errors import RootlessError
from rootless.record import dataclass

PROTOCOLS = ("tcp", "udp")
SYNTAX = "-p [IP:][HOST-PORT:]CONTAINER-PORT[/tcp|udp], e.g. -p 8080:80, -p 127.0.0.1:5353:53/udp, -p 8000-8003:80-83"
UNPRIVILEGED_START_FILE = "/proc/sys/net/ipv4/ip_unprivileged_port_start"


@dataclass(frozen=True)
class Publish:
    """One port to forward; ``host_port`` 0 until one is chosen; ``host_ip`` "" is every address."""

    host_ip: str
    host_port: int
    container_port: int
    protocol: str = "tcp"
    spec: str = ""  # what the user wrote, for messages

    def describe(self) -> str:
        return f"{self.host_ip or '0.0.0.0'}:{self.host_port} -> {self.container_port}/{self.protocol}"


def _fail(spec: str, why: str) -> RootlessError:
    return RootlessError(f"-p {spec}: {why}", SYNTAX)


def _port_range(text: str, spec: str, what: str) -> tuple[int, int]:
    first, dash, last = text.partition("-")
    try:
        lo = int(first)
        hi = int(last) if dash else lo
    except ValueError:
        raise _fail(spec, f"{what} port {text!r} is not a number or FIRST-LAST range") from None
    if not (1 <= lo <= 65535 and 1 <= hi <= 65535):
        raise _fail(spec, f"{what} port {text!r} is outside 1-65535")
    if hi < lo:
        raise _fail(spec, f"{what} port range {text!r} ends before it starts")
    return lo, hi


def parse_publish(spec: str) -> list[Publish]:
    """One ``-p`` value → a Publish per port (host_port 0: to be chosen)."""
    text, slash, proto = spec.strip().partition("/")
    proto = proto.lower() if slash else "tcp"
    if proto not in PROTOCOLS:
        if proto == "sctp":
            raise RootlessError(f"-p {spec}: sctp cannot be forwarded by slirp4netns", "publish tcp or udp ports")
        raise _fail(spec, f"unknown protocol {proto!r} (tcp or udp)")
    host_ip = ""
    if text.startswith("["):
        # [IPv6]:HOST-PORT:CONTAINER-PORT (podman-run(1) --publish)
        addr, bracket, rest = text[1:].partition("]")
        if not bracket or not rest.startswith(":"):
            raise _fail(spec, "expected [IPv6-ADDRESS]:[HOST-PORT]:CONTAINER-PORT")
        host_ip = _check_ipv6(addr, spec)
        parts = rest[1:].split(":")
        if len(parts) != 2 or not parts[-1]:
            raise _fail(spec, "expected [IPv6-ADDRESS]:[HOST-PORT]:CONTAINER-PORT")
        parts = [addr, *parts]
    else:
        parts = text.split(":")
    if len(parts) > 3 or not parts[-1]:
        raise _fail(spec, "expected [IP:][HOST-PORT:]CONTAINER-PORT")
    if len(parts) == 3 and not host_ip:
        host_ip = parts[0]
        _check_ipv4(host_ip, spec)
    host_text = parts[-2] if len(parts) >= 2 else ""
    clo, chi = _port_range(parts[-1], spec, "container")
    if not host_text:
        return [Publish(host_ip, 0, p, proto, spec) for p in range(clo, chi + 1)]
    hlo, hhi = _port_range(host_text, spec, "host")
    if hhi - hlo != chi - clo:
        if hlo == hhi and clo != chi:
            raise _fail(spec, f"host port {host_text} is one port but container ports {parts[-1]} are a range")
        raise _fail(spec, f"host range {host_text} and container range {parts[-1]} differ in length")
    return [Publish(host_ip, hlo + i, clo + i, proto, spec) for i in range(chi - clo + 1)]


def host_address(ip: str) -> str:
    """How Podman shows a published port's host address: 0.0.0.0 for every one, [::1] for IPv6."""
    return f"[{ip}]" if ":" in ip else ip or "0.0.0.0"


def _check_ipv6(ip: str, spec: str) -> str:
    import ipaddress

    try:
        return str(ipaddress.IPv6Address(ip))
    except ValueError:
        raise _fail(spec, f"host address {ip!r} is not an IPv6 address") from None


def _check_ipv4(ip: str, spec: str) -> None:
    parts = ip.split(".")
    if len(parts) != 4 or not all(p.isdigit() and int(p) <= 255 for p in parts):
        raise _fail(spec, f"host address {ip!r} is not an IPv4 address")


def exposed(image_config: Mapping[str, Any]) -> list[Publish]:
    """``-P``: every ExposedPorts entry of the image ("80/tcp", "53/udp", "8080") on a host port
    the kernel chooses."""
    out = []
    for key in sorted(image_config.get("ExposedPorts") or {}):
        port, _, proto = str(key).partition("/")
        proto = proto.lower() or "tcp"
        if proto not in PROTOCOLS:
            continue  # sctp: slirp4netns cannot forward it; Podman's rootless port forwarder neither
        try:
            n = int(port)
        except ValueError:
            continue
        if 1 <= n <= 65535:
            out.append(Publish("", 0, n, proto, f"{key} (-P)"))
    return out


def unprivileged_port_start() -> int:
    try:
        with open(UNPRIVILEGED_START_FILE) as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return 1024


def _bind(p: Publish) -> int:
    """Bind the host side as slirp4netns will (SO_REUSEADDR for TCP, as libslirp sets it, so a
    port in TIME_WAIT counts as free); the bound port, or OSError."""
    import socket

    kind = socket.SOCK_STREAM if p.protocol == "tcp" else socket.SOCK_DGRAM
    family = socket.AF_INET6 if ":" in p.host_ip else socket.AF_INET
    with socket.socket(family, kind) as s:
        if p.protocol == "tcp":
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        s.bind((p.host_ip or "0.0.0.0", p.host_port))
        port: int = s.getsockname()[1]
        return port


def bind_error(spec: str, host_ip: str, host_port: int, container_port: int, protocol: str,
               e: OSError) -> RootlessError:
    """The one-line error for a host port that cannot be bound."""
    import errno

    if e.errno == errno.EADDRINUSE:
        return RootlessError(f"-p {spec}: host port {host_port}/{protocol} is already in use",
                             "stop what listens there, publish another host port, or leave the host port out "
                             f"for a free one (-p {container_port})")
    if e.errno == errno.EADDRNOTAVAIL:
        return RootlessError(f"-p {spec}: host address {host_ip} is not an address of this host",
                             "leave it out (every address) or use one `ip addr` lists")
    return RootlessError(f"-p {spec}: bind host port {host_port}/{protocol}: {e.strerror}")


def pick_port(host_ip: str, protocol: str) -> int:
    """A host port free right now, chosen by the kernel (bind to port 0, ip(7))."""
    return _bind(Publish(host_ip, 0, 1, protocol))


def resolve(publishes: Iterable[Publish], unprivileged_start: int | None = None) -> list[Publish]:
    """Check each given host port is free and may be bound by us.

    Ports left out stay 0: the runtime chooses them (``pick_port``) right before slirp4netns
    binds them, and chooses again if another process took one meanwhile.
    A port below net.ipv4.ip_unprivileged_port_start needs CAP_NET_BIND_SERVICE in the host's
    network namespace (ip(7)), which slirp4netns, running as the user there, does not have.
    """
    start = unprivileged_port_start() if unprivileged_start is None else unprivileged_start
    seen: dict[tuple[str, int], Publish] = {}
    out = []
    for p in publishes:
        if not p.host_port:
            out.append(p)
            continue
        if p.host_port < start:
            raise RootlessError(
                f"-p {p.spec}: host port {p.host_port} is below net.ipv4.ip_unprivileged_port_start ({start}): "
                "only root may bind it",
                f"use a host port from {start} up (-p {max(start, 8000) + p.container_port % 1000}:"
                f"{p.container_port}), or as root: sysctl -w net.ipv4.ip_unprivileged_port_start={p.host_port}")
        try:
            _bind(p)
        except OSError as e:
            raise bind_error(p.spec, p.host_ip, p.host_port, p.container_port, p.protocol, e) from None
        key = (p.protocol, p.host_port)
        other = seen.get(key)
        if other is not None and (not other.host_ip or not p.host_ip or other.host_ip == p.host_ip):
            raise RootlessError(f"-p {p.spec}: host port {p.host_port}/{p.protocol} is published twice",
                                "give each mapping its own host port")
        seen[key] = p
        out.append(p)
    return out
