"""-p/--publish parsing, host port checks, slirp4netns options, resolv.conf and /etc/hosts."""

from __future__ import annotations

import socket

import pytest

from rootless.errors import RootlessError
from rootless.image import specgen
from slirp import ports
from slirp.config import SlirpOptions, parse_network
from slirp.ports import Publish
from slirp.supervisor import argv, find_binary


def _triples(spec: str) -> list[tuple[str, int, int, str]]:
    return [(p.host_ip, p.host_port, p.container_port, p.protocol) for p in ports.parse_publish(spec)]


@pytest.mark.parametrize(("spec", "want"), [
    ("80", [("", 0, 80, "tcp")]),
    ("8080:80", [("", 8080, 80, "tcp")]),
    ("127.0.0.1:8080:80", [("127.0.0.1", 8080, 80, "tcp")]),
    ("127.0.0.1::80", [("127.0.0.1", 0, 80, "tcp")]),
    ("5353:53/udp", [("", 5353, 53, "udp")]),
    ("5353:53/UDP", [("", 5353, 53, "udp")]),
    ("8000-8002:80-82", [("", 8000, 80, "tcp"), ("", 8001, 81, "tcp"), ("", 8002, 82, "tcp")]),
    ("80-81", [("", 0, 80, "tcp"), ("", 0, 81, "tcp")]),
    ("9000:9000/tcp", [("", 9000, 9000, "tcp")]),
    ("[::1]:8080:80", [("::1", 8080, 80, "tcp")]),
    ("[::]::80", [("::", 0, 80, "tcp")]),
    ("[0:0::1]:8080:80/tcp", [("::1", 8080, 80, "tcp")]),
    ("[::1]:5353:53/udp", [("::1", 5353, 53, "udp")]),
])
def test_parse_publish(spec: str, want: list[tuple[str, int, int, str]]) -> None:
    assert _triples(spec) == want


def test_host_address_as_podman_shows_it() -> None:
    assert [ports.host_address(a) for a in ("", "127.0.0.1", "::1")] == ["0.0.0.0", "127.0.0.1", "[::1]"]


@pytest.mark.parametrize(("spec", "needle"), [
    ("", "expected"),
    ("abc", "not a number"),
    ("8080:", "expected"),
    ("0:80", "outside"),
    ("70000:80", "outside"),
    ("8080:80/icmp", "unknown protocol"),
    ("8080:80/sctp", "sctp"),
    ("8000-8002:80-81", "differ in length"),
    ("8000:80-81", "one port"),
    ("90-80", "ends before"),
    ("1.2.3:80:80", "not an IPv4"),
    ("[::1:80:80", "IPv6-ADDRESS"),
    ("[nope]:80:80", "not an IPv6"),
    ("a:b:c:d", "expected"),
])
def test_parse_publish_errors(spec: str, needle: str) -> None:
    with pytest.raises(RootlessError, match=needle) as e:
        ports.parse_publish(spec)
    assert e.value.hint  # every refusal says how to write it


def test_exposed_ports() -> None:
    cfg: dict[str, dict[str, dict[str, str]]] = {"ExposedPorts": {"80/tcp": {}, "53/udp": {}, "8080": {},
                                                                "9/sctp": {}, "x/tcp": {}}}
    got = {(p.container_port, p.protocol, p.host_port) for p in ports.exposed(cfg)}
    assert got == {(80, "tcp", 0), (53, "udp", 0), (8080, "tcp", 0)}
    assert ports.exposed({}) == []


def test_resolve_refuses_a_port_in_use() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(RootlessError, match="already in use") as e:
            ports.resolve(ports.parse_publish(f"127.0.0.1:{port}:80"), unprivileged_start=1024)
        assert e.value.hint and "-p 80" in e.value.hint
        # the same number over UDP is another port
        assert ports.resolve(ports.parse_publish(f"127.0.0.1:{port}:80/udp"), unprivileged_start=1024)


def test_resolve_refuses_privileged_ports() -> None:
    with pytest.raises(RootlessError, match="ip_unprivileged_port_start") as e:
        ports.resolve(ports.parse_publish("80:80"), unprivileged_start=1024)
    assert e.value.hint and "sysctl" in e.value.hint
    # a lowered start lets the check pass on to the bind (which may still fail as non-root)
    with pytest.raises(RootlessError, match="already in use|bind host port|ip_unprivileged"):
        ports.resolve(ports.parse_publish("127.0.0.1:1:80"), unprivileged_start=1024)


def test_resolve_keeps_random_ports_for_the_runtime_and_refuses_twice_the_same() -> None:
    out = ports.resolve([Publish("", 0, 80), Publish("", 0, 81)], unprivileged_start=1024)
    assert [p.host_port for p in out] == [0, 0]
    port = ports.pick_port("127.0.0.1", "tcp")
    assert port >= 1024
    with pytest.raises(RootlessError, match="published twice"):
        ports.resolve(ports.parse_publish(f"127.0.0.1:{port}:80") + ports.parse_publish(f"{port}:81"),
                      unprivileged_start=1024)


# --------------------------------------------------------------------------- slirp4netns options


def test_parse_network() -> None:
    assert parse_network("none") == ("none", None)
    assert parse_network("host") == ("host", None)
    mode, opts = parse_network("slirp4netns")
    assert mode == "slirp4netns" and opts == SlirpOptions()
    assert (opts.gateway, opts.dns, opts.guest) == ("10.0.2.2", "10.0.2.3", "10.0.2.100")
    _, opts = parse_network("slirp4netns:mtu=1500,cidr=10.5.0.0/24,allow_host_loopback=true,enable_ipv6=false,"
                            "outbound_addr=192.168.1.2,port_handler=slirp4netns")
    assert opts is not None
    assert (opts.mtu, opts.cidr, opts.allow_host_loopback, opts.outbound_addr) == (1500, "10.5.0.0/24", True,
                                                                                   "192.168.1.2")
    assert (opts.gateway, opts.dns, opts.guest) == ("10.5.0.2", "10.5.0.3", "10.5.0.100")
    assert SlirpOptions.from_pairs(opts.pairs()) == opts


@pytest.mark.parametrize(("text", "needle"), [
    ("bridge", "not supported"), ("slirp4netns:mtu=10", "mtu"), ("slirp4netns:mtu=x", "mtu"),
    ("slirp4netns:cidr=10.0.0.0/30", "cidr"), ("slirp4netns:cidr=fd00::/64", "cidr"),
    ("slirp4netns:allow_host_loopback=maybe", "true or false"), ("slirp4netns:bogus=1", "unknown option"),
    ("none:x", "unknown network mode"), ("wifi", "unknown network mode"),
])
def test_parse_network_errors(text: str, needle: str) -> None:
    with pytest.raises(RootlessError, match=needle):
        parse_network(text)


def test_slirp4netns_argv() -> None:
    a = argv("/usr/bin/slirp4netns", 42, SlirpOptions())
    assert a[:3] == ["/usr/bin/slirp4netns", "--configure", "--mtu=65520"]
    assert "--disable-host-loopback" in a and "--enable-sandbox" in a and "--enable-seccomp" in a
    assert a[-2:] == ["42", "tap0"] and not any(x.startswith("--cidr") for x in a)
    b = argv("s", 1, SlirpOptions(allow_host_loopback=True, cidr="10.9.0.0/24", enable_ipv6=True,
                                  outbound_addr="1.2.3.4"))
    assert "--disable-host-loopback" not in b
    assert {"--cidr=10.9.0.0/24", "--enable-ipv6", "--outbound-addr=1.2.3.4"} <= set(b)


def test_missing_binary_names_the_package(tmp_path: object) -> None:
    with pytest.raises(RootlessError, match="slirp4netns is not installed") as e:
        find_binary(str(tmp_path))
    assert e.value.hint and "slirp4netns package" in e.value.hint and "--network none" in e.value.hint


# --------------------------------------------------------------------------- DNS and hosts


def test_resolv_conf_for_slirp4netns() -> None:
    host = "# generated\nnameserver 127.0.0.53\nsearch lan example.com\noptions edns0\n"
    # Podman's order: search, then slirp4netns's forwarder and the host's non-loopback servers, options
    assert specgen.resolv_conf(host, "slirp4netns", slirp_dns="10.0.2.3") == (
        "search lan example.com\nnameserver 10.0.2.3\noptions edns0\n")
    remote = "nameserver 192.168.1.1\nnameserver ::1\nnameserver 9.9.9.9\n"
    assert specgen.resolv_conf(remote, "slirp4netns", slirp_dns="10.0.2.3") == (
        "nameserver 10.0.2.3\nnameserver 192.168.1.1\nnameserver 9.9.9.9\n")
    assert specgen.resolv_conf(remote, "slirp4netns", dns=("none",), slirp_dns="10.0.2.3") is None
    got = specgen.resolv_conf(host, "slirp4netns", dns=("1.1.1.1",), search=(".",), options=("ndots:2",),
                              slirp_dns="10.0.2.3")
    assert got == "nameserver 1.1.1.1\noptions ndots:2\n"
    assert specgen.resolv_conf(host, "host", dns=("8.8.8.8",)) == (
        "search lan example.com\nnameserver 8.8.8.8\noptions edns0\n")
    assert specgen.resolv_conf(host, "none") is None


def test_hosts_file_with_slirp4netns() -> None:
    text = specgen.hosts_file("box", "web", "slirp4netns", "127.0.0.1 localhost\n",
                              extra=specgen.add_hosts(["db:10.1.1.1", "a;b:10.2.2.2"], None),
                              own_address="10.0.2.100", host_gateway="10.0.2.2")
    assert text.splitlines() == ["10.1.1.1\tdb", "10.2.2.2\ta b", "127.0.0.1\tlocalhost",
                                 "10.0.2.2\thost.containers.internal", "10.0.2.100\tbox web"]
    assert specgen.add_hosts(["gw:host-gateway"], "10.0.2.2") == [("gw", "10.0.2.2")]
    for bad, needle in (("nocolon", "NAME:IP"), ("x:notanip", "not an IP"), ("gw:host-gateway", "host-gateway")):
        with pytest.raises(RootlessError, match=needle):
            specgen.add_hosts([bad], None)


# --------------------------------------------------------------------------- the TCP forwarder


def test_forwarder_relays_and_ends_with_its_exit_pipe() -> None:
    """In this namespace (no enter): a host listener relayed to a local echo server."""
    import os
    import threading

    from slirp import forwarder

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()

    def echo() -> None:
        conn, _ = server.accept()
        with conn:
            while data := conn.recv(65536):
                conn.sendall(data)

    threading.Thread(target=echo, daemon=True).start()
    lst = forwarder.listen("127.0.0.1", 0)
    port = lst.getsockname()[1]
    exit_r, exit_w = os.pipe()
    pid = forwarder.start([forwarder.Listener(lst, server.getsockname()[1])], exit_r, lambda: None)
    try:
        lst.close()
        os.close(exit_r)
        payload = os.urandom(3 << 20)
        with socket.create_connection(("127.0.0.1", port)) as c:
            threading.Thread(target=c.sendall, args=(payload,), daemon=True).start()
            got = b""
            while len(got) < len(payload):
                chunk = c.recv(1 << 20)
                assert chunk
                got += chunk
        assert got == payload
    finally:
        os.close(exit_w)  # EOF: the forwarder exits by itself
        _, status = os.waitpid(pid, 0)
        server.close()
    assert os.waitstatus_to_exitcode(status) == 0


def test_forwarder_relays_udp_per_client() -> None:
    """An IPv6 UDP host socket relayed to a local IPv4 echo server: each client's replies come
    back to it, from the published address."""
    import os

    from slirp import forwarder

    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    server.bind(("127.0.0.1", 0))
    try:
        lst = forwarder.bind_udp("::1", 0)
    except OSError:
        server.close()
        pytest.skip("the loopback has no ::1")
    port = lst.getsockname()[1]
    exit_r, exit_w = os.pipe()
    pid = forwarder.start([forwarder.Listener(lst, server.getsockname()[1], "udp")], exit_r, lambda: None)
    clients = [socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) for _ in range(2)]
    try:
        lst.close()
        os.close(exit_r)
        for i, c in enumerate(clients):
            c.settimeout(5)
            c.sendto(b"ping-%d" % i, ("::1", port))
        seen = set()
        for _ in clients:
            data, peer = server.recvfrom(100)
            seen.add(data)
            server.sendto(data.replace(b"ping", b"pong"), peer)
        assert seen == {b"ping-0", b"ping-1"}
        for i, c in enumerate(clients):
            data, src = c.recvfrom(100)
            assert data == b"pong-%d" % i and src[:2] == ("::1", port)
    finally:
        for c in clients:
            c.close()
        os.close(exit_w)
        _, status = os.waitpid(pid, 0)
        server.close()
    assert os.waitstatus_to_exitcode(status) == 0
