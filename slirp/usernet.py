"""User networks: their records and the address rules (no privileges, no netlink here).

A user network is a bridge in one network namespace per user (slirp.netd holds it) with a
subnet, a gateway address on the bridge (where its name server listens) and an address per
attached container. Its record is ``<dir>/<name>.json``; ``dir`` is the store's
``networks/`` (rootless.layout). The shared namespace's own outbound link (slirp4netns's
tap0) sits in ``OUTBOUND_CIDR``, which no user network may overlap.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import time
from collections.abc import Iterable, Mapping
from typing import Any

from rootless.errors import NotFoundError, RootlessError
from rootless.record import dataclass, field

# Podman's pool for new networks: 10.89.0.0/24, 10.89.1.0/24, ... (containers.conf
# default_subnet_pools starts at 10.89.0.0/16 in /24 steps)
POOL = ipaddress.ip_network("10.89.0.0/16")
POOL_PREFIX = 24
OUTBOUND_CIDR = ipaddress.ip_network("10.0.2.0/24")  # slirp4netns's default, in the shared namespace
_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*$")
RESERVED = ("none", "host", "slirp4netns", "bridge", "pasta", "private", "default", "podman")
MAX_NAME = 64  # also an interface name's source: the bridge is "rl-" + a digest, never the name


class NoSuchNetwork(NotFoundError):
    exit_code = 1  # podman-network-rm(1)


class NetworkInUse(RootlessError):
    exit_code = 2


@dataclass(frozen=True)
class NetworkConfig:
    name: str
    id: str
    subnet: str
    gateway: str
    internal: bool = False
    dns_enabled: bool = True
    labels: Mapping[str, str] = field(default_factory=dict)
    created: float = 0.0

    @property
    def bridge(self) -> str:
        """The bridge's interface name (IFNAMSIZ: 15 bytes)."""
        return "rl" + self.id[:12]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "id": self.id, "subnet": self.subnet, "gateway": self.gateway,
                "internal": self.internal, "dns_enabled": self.dns_enabled, "labels": dict(self.labels),
                "created": self.created}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> NetworkConfig:
        return cls(name=str(d["name"]), id=str(d["id"]), subnet=str(d["subnet"]), gateway=str(d["gateway"]),
                   internal=bool(d.get("internal")), dns_enabled=bool(d.get("dns_enabled", True)),
                   labels={str(k): str(v) for k, v in (d.get("labels") or {}).items()},
                   created=float(d.get("created") or 0.0))

    def check_address(self, ip: str, taken: Iterable[str] = ()) -> str:
        """*ip* as a usable host address of this network, else the error naming why."""
        net = ipaddress.ip_network(self.subnet)
        try:
            addr = ipaddress.ip_address(ip)
        except ValueError:
            raise RootlessError(f"--ip {ip!r} is not an IPv4 address") from None
        if addr not in net or addr in (net.network_address, net.broadcast_address):
            raise RootlessError(f"--ip {ip}: not a host address of network {self.name} ({self.subnet})",
                                f"give an address inside {self.subnet}")
        if str(addr) == self.gateway:
            raise RootlessError(f"--ip {ip}: that is the gateway of network {self.name}")
        if str(addr) in set(taken):
            raise RootlessError(f"--ip {ip}: address already taken on network {self.name}",
                                "give another address, or leave --ip out")
        return str(addr)

    def next_address(self, taken: Iterable[str]) -> str:
        net = ipaddress.ip_network(self.subnet)
        used = set(taken) | {self.gateway}
        for host in net.hosts():
            if str(host) not in used:
                return str(host)
        raise RootlessError(f"network {self.name} ({self.subnet}) has no free address left")


def check_name(name: str) -> None:
    if not _NAME.match(name) or len(name) > MAX_NAME:
        raise RootlessError(f"invalid network name {name!r}: names start with a letter or digit and hold only "
                            "letters, digits, '_', '.' and '-'")
    if name in RESERVED:
        raise RootlessError(f"network name {name!r} is reserved", "choose another name")


def host_routes(text: str) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    """The host's IPv4 routes (/proc/net/route: little-endian hex destination and mask), the
    default route left out."""
    out = []
    for line in text.splitlines()[1:]:
        f = line.split()
        if len(f) < 8:
            continue
        try:
            dest, mask = int(f[1], 16), int(f[7], 16)
        except ValueError:
            continue
        if mask == 0:
            continue
        d = ipaddress.IPv4Address(dest.to_bytes(4, "little"))
        m = ipaddress.IPv4Address(mask.to_bytes(4, "little"))
        try:
            out.append(ipaddress.ip_network(f"{d}/{m}", strict=False))
        except ValueError:
            continue
    return out


def plan(name: str, subnet: str | None, gateway: str | None, existing: Iterable[NetworkConfig],
         routes: Iterable[ipaddress.IPv4Network | ipaddress.IPv6Network]) -> tuple[str, str]:
    """(subnet, gateway) for a new network: the given ones checked, else the first free /24 of
    the pool (not used by another network, the host's routes or the shared namespace's link)."""
    busy = [ipaddress.ip_network(n.subnet) for n in existing]
    routes = list(routes)
    if subnet is None:
        if gateway is not None:
            raise RootlessError("--gateway needs --subnet")
        for cand in POOL.subnets(new_prefix=POOL_PREFIX):
            if not any(cand.overlaps(b) for b in busy) and not any(cand.overlaps(r) for r in routes):
                net = cand
                break
        else:
            raise RootlessError(f"no free /24 left in {POOL} for network {name}", "give --subnet")
    else:
        try:
            net = ipaddress.ip_network(subnet)
        except ValueError:
            raise RootlessError(f"--subnet {subnet!r} is not an IPv4 network with its host bits zero",
                                "e.g. --subnet 10.90.0.0/24") from None
        if net.version != 4:
            raise RootlessError(f"--subnet {subnet}: only IPv4 subnets are supported")
        if net.prefixlen > 30:
            raise RootlessError(f"--subnet {subnet}: too small, it needs room for a gateway and a container",
                                "use a /30 or larger")
        for other in existing:
            if net.overlaps(ipaddress.ip_network(other.subnet)):
                raise RootlessError(f"--subnet {subnet} overlaps network {other.name} ({other.subnet})",
                                    "choose a subnet no other network uses")
        if net.overlaps(OUTBOUND_CIDR):
            raise RootlessError(f"--subnet {subnet} overlaps {OUTBOUND_CIDR}, the shared namespace's outbound link")
        for r in routes:
            if net.overlaps(r):
                raise RootlessError(f"--subnet {subnet} overlaps the host's route to {r}",
                                    "choose a subnet the host does not route")
    if gateway is None:
        gw = str(next(net.hosts()))
    else:
        try:
            addr = ipaddress.ip_address(gateway)
        except ValueError:
            raise RootlessError(f"--gateway {gateway!r} is not an IPv4 address") from None
        if addr not in net or addr in (net.network_address, net.broadcast_address):
            raise RootlessError(f"--gateway {gateway} is not a host address of {net}")
        gw = str(addr)
    return str(net), gw


class NetworkStore:
    """The records, ``<dir>/<name>.json``, written atomically (temp file + rename)."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.dir = str(directory)

    def path(self, name: str) -> str:
        return os.path.join(self.dir, name + ".json")

    def list(self) -> list[NetworkConfig]:
        try:
            names = sorted(os.listdir(self.dir))
        except FileNotFoundError:
            return []
        out = []
        for n in names:
            if n.endswith(".json") and _NAME.match(n[:-5]):
                try:
                    out.append(self.get(n[:-5]))
                except RootlessError:
                    continue
        return out

    def get(self, name: str) -> NetworkConfig:
        if not _NAME.match(name):
            raise NoSuchNetwork(f"unable to find network with name or ID {name}: network not found")
        try:
            with open(self.path(name), "rb") as f:
                return NetworkConfig.from_dict(json.loads(f.read()))
        except FileNotFoundError:
            for n in self.list():  # by ID or a unique ID prefix, as Podman
                if len(name) >= 3 and n.id.startswith(name):
                    return n
            raise NoSuchNetwork(f"unable to find network with name or ID {name}: network not found") from None
        except (OSError, ValueError, KeyError) as e:
            raise RootlessError(f"read network {name}: {e}", "remove it with `rootless network rm`") from e

    def exists(self, name: str) -> bool:
        try:
            self.get(name)
            return True
        except RootlessError:
            return False

    def create(self, name: str | None, *, subnet: str | None = None, gateway: str | None = None,
               internal: bool = False, dns: bool = True, labels: Mapping[str, str] | None = None,
               routes: Iterable[ipaddress.IPv4Network | ipaddress.IPv6Network] = ()) -> NetworkConfig:
        """A new network (the caller holds the networks' lock)."""
        existing = self.list()
        if name is None:
            taken = {n.name for n in existing}
            name = next(f"rootless{i}" for i in range(1, 10000) if f"rootless{i}" not in taken)
        check_name(name)
        if os.path.exists(self.path(name)):
            raise RootlessError(f"network name {name} already used: network already exists",
                                "choose another name, or remove that network first")
        sub, gw = plan(name, subnet, gateway, existing, routes)
        cfg = NetworkConfig(name=name, id=os.urandom(32).hex(), subnet=sub, gateway=gw, internal=internal,
                            dns_enabled=dns, labels=dict(labels or {}), created=time.time())
        os.makedirs(self.dir, mode=0o700, exist_ok=True)
        tmp = self.path(name) + f".{os.getpid()}.tmp"
        with open(tmp, "w") as f:
            json.dump(cfg.to_dict(), f)
        os.replace(tmp, self.path(name))
        return cfg

    def remove(self, name: str) -> None:
        try:
            os.unlink(self.path(name))
        except FileNotFoundError:
            raise NoSuchNetwork(f"unable to find network with name or ID {name}: network not found") from None
