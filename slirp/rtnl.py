"""A small rtnetlink client: the handful of requests the user-network daemon (slirp.netd) makes,
each one message and its acknowledgement on a NETLINK_ROUTE socket.

Why not a library: the daemon's start is on the path of the first `run --network NAME`, and
pyroute2 (0.9) imports about 300 modules, asyncio among them, before its first request: 0.3 to
0.4 s of CPU, longer than everything else the daemon does. These requests need only the
structures of rtnetlink(7) (<linux/netlink.h>, <linux/rtnetlink.h>, <linux/if_link.h>,
<linux/veth.h>): a header, a fixed part, then attributes, each padded to 4 bytes.

A socket acts in the network namespace it was made in (netlink(7)), whatever namespace its user
joins later: ``Rtnl()`` made after setns(2) configures the namespace joined.
"""

from __future__ import annotations

import errno
import os
import socket
import struct

NETLINK_ROUTE = 0
# message types (<linux/rtnetlink.h>) and flags (<linux/netlink.h>)
NLMSG_ERROR, NLMSG_DONE = 2, 3
RTM_NEWLINK, RTM_DELLINK, RTM_GETLINK = 16, 17, 18
RTM_NEWADDR = 20
RTM_NEWROUTE = 24
NLM_F_REQUEST, NLM_F_ACK, NLM_F_EXCL, NLM_F_CREATE = 0x1, 0x4, 0x200, 0x400
# link attributes (<linux/if_link.h>, <linux/veth.h>)
IFLA_ADDRESS, IFLA_IFNAME, IFLA_MTU, IFLA_MASTER, IFLA_LINKINFO, IFLA_NET_NS_FD = 1, 3, 4, 10, 18, 28
IFLA_INFO_KIND, IFLA_INFO_DATA = 1, 2
VETH_INFO_PEER = 1
IFF_UP = 0x1
# address and route attributes (<linux/if_addr.h>, <linux/rtnetlink.h>)
IFA_ADDRESS, IFA_LOCAL = 1, 2
RTA_GATEWAY = 5
RT_TABLE_MAIN, RTPROT_BOOT, RT_SCOPE_UNIVERSE, RTN_UNICAST = 254, 3, 0, 1

_HDR = struct.Struct("=IHHII")  # struct nlmsghdr: len, type, flags, seq, pid
_IFINFO = struct.Struct("=BxHiII")  # struct ifinfomsg: family, type, index, flags, change
_IFADDR = struct.Struct("=BBBBI")  # struct ifaddrmsg: family, prefixlen, flags, scope, index
_RTMSG = struct.Struct("=BBBBBBBBI")  # struct rtmsg
_ATTR = struct.Struct("=HH")  # struct rtattr: len, type


def attr(kind: int, data: bytes) -> bytes:
    """One attribute, padded to 4 bytes (RTA_ALIGN)."""
    n = _ATTR.size + len(data)
    return _ATTR.pack(n, kind) + data + b"\0" * (-n & 3)


def attrs(data: bytes) -> dict[int, bytes]:
    """The attributes of a message's tail, by type (the last of a type wins; nesting not opened)."""
    out: dict[int, bytes] = {}
    i = 0
    while i + _ATTR.size <= len(data):
        n, kind = _ATTR.unpack_from(data, i)
        if n < _ATTR.size:
            break
        out[kind & 0x3FFF] = data[i + _ATTR.size:i + n]  # NLA_F_NESTED and NLA_F_NET_BYTEORDER masked
        i += (n + 3) & ~3
    return out


def _name(ifname: str) -> bytes:
    return ifname.encode() + b"\0"


def _u32(v: int) -> bytes:
    return struct.pack("=I", v)


class NetlinkError(OSError):
    pass


class Rtnl:
    """A NETLINK_ROUTE socket of the current network namespace."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_ROUTE)
        self.sock.bind((0, 0))
        self.seq = 0

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Rtnl:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def request(self, kind: int, flags: int, body: bytes, what: str) -> list[tuple[int, bytes]]:
        """Send one request with NLM_F_ACK; the messages answered before the acknowledgement
        (type, payload). A negative acknowledgement raises NetlinkError naming *what*."""
        self.seq += 1
        seq = self.seq
        self.sock.send(_HDR.pack(_HDR.size + len(body), kind, NLM_F_REQUEST | NLM_F_ACK | flags, seq, 0) + body)
        out: list[tuple[int, bytes]] = []
        while True:
            data = self.sock.recv(65536)
            i = 0
            while i + _HDR.size <= len(data):
                n, mtype, _, mseq, _ = _HDR.unpack_from(data, i)
                payload = data[i + _HDR.size:i + n]
                i += (n + 3) & ~3
                if mseq != seq:
                    continue
                if mtype == NLMSG_ERROR:
                    (code,) = struct.unpack_from("=i", payload)
                    if code:
                        raise NetlinkError(-code, f"{what}: {os.strerror(-code)}")
                    return out
                if mtype == NLMSG_DONE:
                    return out
                out.append((mtype, payload))

    # ------------------------------------------------------------------ links

    def link_index(self, ifname: str) -> int | None:
        try:
            got = self.request(RTM_GETLINK, 0, _IFINFO.pack(0, 0, 0, 0, 0) + attr(IFLA_IFNAME, _name(ifname)),
                               f"look up {ifname}")
        except NetlinkError as e:
            if e.errno == errno.ENODEV:
                return None
            raise
        return next((_IFINFO.unpack_from(p)[2] for t, p in got if t == RTM_NEWLINK), None)

    def link_mac(self, index: int) -> str:
        got = self.request(RTM_GETLINK, 0, _IFINFO.pack(0, 0, index, 0, 0), f"look up interface {index}")
        for t, p in got:
            if t == RTM_NEWLINK:
                mac = attrs(p[_IFINFO.size:]).get(IFLA_ADDRESS, b"")
                return ":".join(f"{b:02x}" for b in mac)
        raise NetlinkError(errno.ENODEV, f"interface {index}: no such device")

    def add_bridge(self, ifname: str, mtu: int) -> None:
        """A bridge, up (ifi_flags on a new link are applied as `ip link set up` would)."""
        body = (_IFINFO.pack(0, 0, 0, IFF_UP, IFF_UP) + attr(IFLA_IFNAME, _name(ifname)) + attr(IFLA_MTU, _u32(mtu))
                + attr(IFLA_LINKINFO, attr(IFLA_INFO_KIND, b"bridge")))
        self.request(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, body, f"add bridge {ifname}")

    def add_veth(self, ifname: str, mtu: int, master: int, peer: str, peer_netns_fd: int) -> None:
        """A veth pair: *ifname* here, up and enslaved to *master*; its peer *peer* in the
        network namespace of *peer_netns_fd* (down, for its side to configure)."""
        peer_info = (_IFINFO.pack(0, 0, 0, 0, 0) + attr(IFLA_IFNAME, _name(peer)) + attr(IFLA_MTU, _u32(mtu))
                     + attr(IFLA_NET_NS_FD, _u32(peer_netns_fd)))
        info = attr(IFLA_INFO_KIND, b"veth") + attr(IFLA_INFO_DATA, attr(VETH_INFO_PEER, peer_info))
        body = (_IFINFO.pack(0, 0, 0, IFF_UP, IFF_UP) + attr(IFLA_IFNAME, _name(ifname)) + attr(IFLA_MTU, _u32(mtu))
                + attr(IFLA_MASTER, _u32(master)) + attr(IFLA_LINKINFO, info))
        self.request(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, body, f"add veth {ifname}")

    def set_up(self, index: int) -> None:
        self.request(RTM_NEWLINK, 0, _IFINFO.pack(0, 0, index, IFF_UP, IFF_UP), f"set interface {index} up")

    def delete(self, index: int) -> None:
        self.request(RTM_DELLINK, 0, _IFINFO.pack(0, 0, index, 0, 0), f"delete interface {index}")

    # ------------------------------------------------------------------ addresses and routes

    def add_address(self, index: int, ip: str, prefix: int) -> None:
        packed = socket.inet_pton(socket.AF_INET, ip)
        body = (_IFADDR.pack(socket.AF_INET, prefix, 0, RT_SCOPE_UNIVERSE, index) + attr(IFA_LOCAL, packed)
                + attr(IFA_ADDRESS, packed))
        self.request(RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL, body, f"add address {ip}/{prefix}")

    def add_default_route(self, gateway: str) -> None:
        body = (_RTMSG.pack(socket.AF_INET, 0, 0, 0, RT_TABLE_MAIN, RTPROT_BOOT, RT_SCOPE_UNIVERSE, RTN_UNICAST, 0)
                + attr(RTA_GATEWAY, socket.inet_pton(socket.AF_INET, gateway)))
        self.request(RTM_NEWROUTE, NLM_F_CREATE | NLM_F_EXCL, body, f"add default route via {gateway}")
