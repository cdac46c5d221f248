"""slirp.usernet (records, subnets, addresses) and the name server of slirp.netd, without privileges."""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path

import pytest

from rootless.errors import RootlessError
from slirp.usernet import NetworkConfig, NetworkStore, NoSuchNetwork, check_name, host_routes, plan

ROUTES = "Iface\tDestination\tGateway\tFlags\tRefCnt\tUse\tMetric\tMask\n" \
         "eth0\t00000000\t0102A8C0\t0003\t0\t0\t0\t00000000\n" \
         "eth0\t0002A8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\n" \
         "docker0\t000059AC\t00000000\t0001\t0\t0\t0\t0000FFFF\n"


def test_host_routes_skip_the_default() -> None:
    assert [str(r) for r in host_routes(ROUTES)] == ["192.168.2.0/24", "172.89.0.0/16"]


def test_plan_picks_free_subnets_and_refuses_overlaps() -> None:
    a = NetworkConfig("a", "1" * 64, "10.89.0.0/24", "10.89.0.1")
    assert plan("b", None, None, [a], []) == ("10.89.1.0/24", "10.89.1.1")
    routes = [ipaddress.ip_network("10.89.1.0/24")]
    assert plan("b", None, None, [a], routes) == ("10.89.2.0/24", "10.89.2.1")
    assert plan("c", "10.90.0.0/24", "10.90.0.254", [a], []) == ("10.90.0.0/24", "10.90.0.254")
    for subnet, gw, msg in (("10.89.0.128/25", None, "overlaps network a"), ("10.0.2.0/24", None, "outbound"),
                            ("10.90.0.1/24", None, "host bits"), ("10.90.0.0/31", None, "too small"),
                            ("fd00::/64", None, "IPv4"), ("10.90.0.0/24", "10.91.0.1", "not a host address"),
                            (None, "10.89.5.1", "needs --subnet")):
        with pytest.raises(RootlessError, match=msg):
            plan("x", subnet, gw, [a], [])
    with pytest.raises(RootlessError, match="host's route"):
        plan("x", "192.168.2.0/25", None, [], host_routes(ROUTES))


def test_addresses() -> None:
    n = NetworkConfig("a", "1" * 64, "10.89.0.0/29", "10.89.0.1")
    assert n.next_address([]) == "10.89.0.2"
    assert n.next_address(["10.89.0.2", "10.89.0.3"]) == "10.89.0.4"
    assert n.check_address("10.89.0.5", ["10.89.0.2"]) == "10.89.0.5"
    for ip, msg in (("10.89.0.2", "taken"), ("10.89.0.1", "gateway"), ("10.89.0.7", "not a host address"),
                    ("10.89.1.2", "not a host address"), ("nope", "not an IPv4")):
        with pytest.raises(RootlessError, match=msg):
            n.check_address(ip, ["10.89.0.2"])
    with pytest.raises(RootlessError, match="no free address"):
        n.next_address([f"10.89.0.{i}" for i in range(2, 7)])


@pytest.mark.parametrize("name", ["none", "host", "bad/name", "-x", "x" * 65])
def test_bad_names(name: str) -> None:
    with pytest.raises(RootlessError):
        check_name(name)


def test_store(tmp_path: Path) -> None:
    st = NetworkStore(tmp_path / "networks")
    a = st.create("app", labels={"k": "v"})
    assert a.subnet == "10.89.0.0/24" and a.bridge == "rl" + a.id[:12] and len(a.bridge) <= 15
    assert st.get("app") == a and st.get(a.id[:6]) == a and st.exists("app")
    anon = st.create(None)
    assert anon.name == "rootless1" and anon.subnet == "10.89.1.0/24"
    with pytest.raises(RootlessError, match="already"):
        st.create("app")
    assert [n.name for n in st.list()] == ["app", "rootless1"]
    st.remove("app")
    with pytest.raises(NoSuchNetwork):
        st.get("app")
    assert json.loads((tmp_path / "networks" / "rootless1.json").read_text())["gateway"] == "10.89.1.1"


def test_name_server_answers_members_of_the_askers_networks() -> None:
    pytest.importorskip("dnslib")
    from dnslib import QTYPE, RCODE, DNSRecord

    from slirp import netd

    class FakeSock:
        def __init__(self) -> None:
            self.sent: list[bytes] = []

        def sendto(self, data: bytes, addr: object) -> None:
            self.sent.append(data)

    d = netd.Daemon.__new__(netd.Daemon)
    a = netd.Net(NetworkConfig("a", "a" * 64, "10.89.0.0/24", "10.89.0.1"), 1)
    b = netd.Net(NetworkConfig("b", "b" * 64, "10.89.1.0/24", "10.89.1.1"), 2)
    a.dns, b.dns = FakeSock(), FakeSock()  # type: ignore[assignment]
    a.members["c1"] = netd.Member("c1" * 32, "db", ["database"], "10.89.0.2", "", "v1", 1)
    a.members["c2"] = netd.Member("c2" * 32, "web", [], "10.89.0.3", "", "v2", 2)
    b.members["c2"] = netd.Member("c2" * 32, "web", [], "10.89.1.2", "", "v3", 2)
    b.members["c3"] = netd.Member("c3" * 32, "other", [], "10.89.1.3", "", "v4", 3)
    d.nets = {"a": a, "b": b}

    def ask(net: netd.Net, src: str, name: str) -> DNSRecord:
        net.dns.sent.clear()  # type: ignore[union-attr]
        d.answer(net, DNSRecord.question(name).pack(), (src, 5353))
        return DNSRecord.parse(net.dns.sent[-1])  # type: ignore[union-attr]

    r = ask(a, "10.89.0.3", "database")
    assert [str(x.rdata) for x in r.rr] == ["10.89.0.2"] and r.rr[0].rtype == QTYPE.A
    assert [str(x.rdata) for x in ask(a, "10.89.0.2", "db.dns.podman").rr] == ["10.89.0.2"]
    # c3 is only on b: db is not its business
    assert ask(b, "10.89.1.3", "db").header.rcode == RCODE.NXDOMAIN
    # c2 is on both: asking b's server finds a's members
    assert [str(x.rdata) for x in ask(b, "10.89.1.2", "db").rr] == ["10.89.0.2"]
    # a stranger's question is not answered
    a.dns.sent.clear()  # type: ignore[union-attr]
    d.answer(a, DNSRecord.question("db").pack(), ("10.89.1.3", 5353))
    assert a.dns.sent == []  # type: ignore[union-attr]


def test_rtnl_attributes_are_padded_and_read_back() -> None:
    from slirp import rtnl

    a = rtnl.attr(rtnl.IFLA_IFNAME, b"br0\0")  # 4 + 4 bytes: no padding
    b = rtnl.attr(rtnl.IFLA_INFO_KIND, b"veth")
    c = rtnl.attr(rtnl.IFLA_MTU, b"\x01")  # 5 bytes, padded to 8
    assert len(a) == 8 and len(c) == 8 and c[:2] == b"\x05\x00"
    assert rtnl.attrs(a + c + b) == {rtnl.IFLA_IFNAME: b"br0\0", rtnl.IFLA_MTU: b"\x01",
                                    rtnl.IFLA_INFO_KIND: b"veth"}
    nested = rtnl.attr(rtnl.IFLA_LINKINFO | 0x8000, b)  # NLA_F_NESTED is masked off
    assert rtnl.attrs(nested) == {rtnl.IFLA_LINKINFO: b}
    assert rtnl.attrs(b"\x02\x00\x01\x00") == {}  # a length shorter than the header ends the walk


def test_rtnl_makes_a_bridge_and_a_veth_into_another_namespace() -> None:
    """The daemon's requests against the kernel, in a throw-away user and network namespace: a
    bridge with an address, a veth whose peer lands in a second network namespace, where it gets
    an address, a default route and its MAC address is read."""
    import os
    import select
    import subprocess

    from rootless.runtime import syscalls
    from slirp.rtnl import Rtnl

    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - exits
        msg = b"ok"
        try:
            os.close(r)
            uid, gid = os.geteuid(), os.getegid()
            syscalls.unshare(syscalls.CLONE_NEWUSER | syscalls.CLONE_NEWNET)
            with open("/proc/self/setgroups", "w") as f:
                f.write("deny")
            with open("/proc/self/uid_map", "w") as f:
                f.write(f"0 {uid} 1")
            with open("/proc/self/gid_map", "w") as f:
                f.write(f"0 {gid} 1")
            other = subprocess.Popen(["unshare", "-n", "sleep", "30"])  # the container's namespace
            try:
                for _ in range(200):
                    if os.readlink(f"/proc/{other.pid}/ns/net") != os.readlink("/proc/self/ns/net"):
                        break
                    select.select([], [], [], 0.01)
                with Rtnl() as nl:
                    nl.set_up(1)
                    nl.add_bridge("rltest0", 1500)
                    br = nl.link_index("rltest0")
                    assert br is not None and nl.link_index("nosuch0") is None
                    nl.add_address(br, "10.89.0.1", 24)
                    fd = os.open(f"/proc/{other.pid}/ns/net", os.O_RDONLY)
                    nl.add_veth("rlvtest", 1500, br, "eth0", fd)
                    assert nl.link_index("rlvtest") is not None and nl.link_index("eth0") is None
                    try:
                        nl.add_bridge("rltest0", 1500)
                        raise AssertionError("a second bridge of the same name was made")
                    except OSError as e:
                        assert "add bridge rltest0: File exists" in str(e), e
                # the bridge's namespace is kept while we are away (with nobody in it, it would
                # go, and the veth pair with it)
                keep = os.open("/proc/self/ns/net", os.O_RDONLY)
                syscalls.setns(fd, syscalls.CLONE_NEWNET)
                with Rtnl() as nl:
                    eth0 = nl.link_index("eth0")
                    assert eth0 is not None
                    nl.add_address(eth0, "10.89.0.2", 24)
                    nl.set_up(eth0)
                    nl.add_default_route("10.89.0.1")
                    mac = nl.link_mac(eth0)
                routes = subprocess.run(["ip", "-4", "route"], capture_output=True, text=True).stdout
                link = subprocess.run(["ip", "-o", "link", "show", "eth0"], capture_output=True, text=True).stdout
                os.close(keep)
                assert "default via 10.89.0.1 dev eth0" in routes, routes
                assert len(mac) == 17 and f"link/ether {mac} " in link and "mtu 1500" in link, (mac, link)
            finally:
                other.kill()
                other.wait()
        except BaseException as e:  # noqa: BLE001 - reported to the test
            msg = f"{type(e).__name__}: {e}".encode()
        os.write(w, msg)
        os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        got = f.read().decode()
    os.waitpid(pid, 0)
    if "Operation not permitted" in got and "unshare" in got:
        pytest.skip(f"no unprivileged user namespaces here: {got}")
    assert got == "ok"
