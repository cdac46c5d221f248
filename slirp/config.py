"""``--network slirp4netns[:opt=val,...]``: the options (Podman's names) and the addresses they imply.

slirp4netns(1) lays its network out inside the CIDR (default 10.0.2.0/24): the gateway,
which is also the host's loopback when that is allowed, at .2, the DNS forwarder at .3 and
the recommended guest address, which ``--configure`` gives tap0, at .100.
"""

from __future__ import annotations

from rootless.errors import RootlessError
from rootless.record import dataclass

MODES = ("slirp4netns", "none", "host")
DEFAULT_CIDR = "10.0.2.0/24"
DEFAULT_MTU = 65520
# slirp4netns(1): "-m, --mtu=MTU ... max=65521"; below 68 IPv4 cannot work (RFC 791)
_MTU_RANGE = (68, 65521)
_OPTIONS = ("mtu", "cidr", "allow_host_loopback", "enable_ipv6", "outbound_addr", "port_handler")


@dataclass(frozen=True)
class SlirpOptions:
    mtu: int = DEFAULT_MTU
    cidr: str = DEFAULT_CIDR
    allow_host_loopback: bool = False
    enable_ipv6: bool = False
    outbound_addr: str | None = None

    def host_address(self, n: int) -> str:
        """The address *n* inside the CIDR (2: gateway and host loopback, 3: DNS, 100: guest)."""
        if self.cidr == DEFAULT_CIDR:
            return f"10.0.2.{n}"
        import ipaddress

        return str(ipaddress.ip_network(self.cidr, strict=False).network_address + n)

    @property
    def gateway(self) -> str:
        return self.host_address(2)

    @property
    def dns(self) -> str:
        return self.host_address(3)

    @property
    def guest(self) -> str:
        return self.host_address(100)

    def pairs(self) -> tuple[tuple[str, str], ...]:
        """The options as Spec.Network.options carries them (only those set)."""
        out = []
        if self.mtu != DEFAULT_MTU:
            out.append(("mtu", str(self.mtu)))
        if self.cidr != DEFAULT_CIDR:
            out.append(("cidr", self.cidr))
        if self.allow_host_loopback:
            out.append(("allow_host_loopback", "true"))
        if self.enable_ipv6:
            out.append(("enable_ipv6", "true"))
        if self.outbound_addr:
            out.append(("outbound_addr", self.outbound_addr))
        return tuple(out)

    @classmethod
    def from_pairs(cls, pairs: tuple[tuple[str, str], ...]) -> SlirpOptions:
        return parse_options(",".join(f"{k}={v}" for k, v in pairs), "slirp4netns")


def _bool(text: str, what: str) -> bool:
    low = text.lower()
    if low in ("true", "1", "yes", "on"):
        return True
    if low in ("false", "0", "no", "off"):
        return False
    raise RootlessError(f"--network {what}: expected true or false, got {text!r}")


def parse_options(text: str, what: str) -> SlirpOptions:
    kw: dict[str, object] = {}
    for item in filter(None, text.split(",")):
        key, eq, value = item.partition("=")
        key = key.strip()
        if key not in _OPTIONS or not eq:
            raise RootlessError(f"--network {what}: unknown option {item!r}",
                                "slirp4netns takes mtu=N, cidr=A.B.C.D/N, allow_host_loopback=true|false, "
                                "enable_ipv6=true|false, outbound_addr=IPv4")
        if key == "mtu":
            try:
                mtu = int(value)
            except ValueError:
                mtu = -1
            if not _MTU_RANGE[0] <= mtu <= _MTU_RANGE[1]:
                raise RootlessError(f"--network {what}: mtu must be a number from {_MTU_RANGE[0]} to "
                                    f"{_MTU_RANGE[1]}, got {value!r}")
            kw["mtu"] = mtu
        elif key == "cidr":
            import ipaddress

            try:
                net = ipaddress.ip_network(value, strict=False)
            except ValueError:
                net = None
            if net is None or net.version != 4 or net.prefixlen > 25:
                raise RootlessError(f"--network {what}: cidr must be an IPv4 network of at least /25 "
                                    f"(it holds the guest at .100), got {value!r}")
            kw["cidr"] = str(net)
        elif key in ("allow_host_loopback", "enable_ipv6"):
            kw[key] = _bool(value, what)
        elif key == "outbound_addr":
            kw["outbound_addr"] = value
        # port_handler: Podman's choice of forwarder; slirp4netns's own is the only one here
    return SlirpOptions(**kw)  # type: ignore[arg-type]


def parse_network(text: str) -> tuple[str, SlirpOptions | None]:
    """``none`` / ``host`` / ``slirp4netns[:opts]`` → (mode, options for slirp4netns)."""
    mode, _, rest = text.partition(":")
    if mode == "slirp4netns":
        return mode, parse_options(rest, text)
    if mode in ("none", "host") and not rest:
        return mode, None
    if mode in ("bridge", "pasta", "private") or mode.startswith(("container", "ns", "pod")):
        raise RootlessError(f"network mode {text!r} is not supported yet",
                            "use --network slirp4netns (the default), none or host")
    raise RootlessError(f"unknown network mode {text!r}", "use --network slirp4netns (the default), none or host")
