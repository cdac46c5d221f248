"""User networks as the unprivileged user with the real kernel and slirp4netns: containers reach
each other by IP, name and alias; other networks neither resolve nor reach them; connect and
disconnect at run time; --internal; outbound through the shared namespace; -p; the shared
namespace and its helpers gone after the last container, also after kill -9 of `rootless`.

Servers are busybox httpd, clients busybox nc (busybox-static's wget segfaults here). The
outbound target is a server this test runs on the host's 127.0.0.1, reached at 10.0.2.2 through
the shared namespace's slirp4netns (``[network] host-loopback = true``), never another address.
"""

from __future__ import annotations

import json
import os
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import TestImages, need
from tests.integration.harness import RootlessEnv, assert_clean_error, free_port

pytestmark = pytest.mark.integration

BUSYBOX = "busybox"
HTTPD = "mkdir -p /w && echo hello-$0 > /w/index.html && exec httpd -f -p 80 -h /w"


def get(host: str, port: int = 80, timeout: int = 5) -> str:
    """A shell command fetching http://HOST:PORT/ with nc; prints the body's last line."""
    return f"printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w {timeout} {host} {port} | tail -n 1"


@pytest.fixture(scope="module")
def rl(rl_shared: RootlessEnv, images: TestImages) -> Iterator[RootlessEnv]:
    need(os.path.exists("/usr/bin/slirp4netns"), "slirp4netns is not installed (apt-get install slirp4netns)")
    need(os.path.exists("/usr/sbin/iptables"), "iptables is not installed (apt-get install iptables)")
    images.require("library/busybox:latest")
    rl_shared("pull", "-q", BUSYBOX, check=True)
    yield rl_shared
    rl_shared("rm", "-f", "-a")
    rl_shared("network", "prune", "-f")


def _is_netd(argv: list[bytes]) -> bool:
    """The daemon runs as ``python -S .../slirp/netd.py`` (rootless.runtime.usernet)."""
    return any(a.endswith(b"/slirp/netd.py") for a in argv[:5])


def helpers(rl: RootlessEnv) -> list[int]:
    """The user-network daemon and slirp4netns processes this environment started."""
    out = []
    for pid in rl.processes():
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            comm = Path(f"/proc/{pid}/comm").read_text().strip()
        except OSError:
            continue
        if _is_netd(cmd) or comm == "slirp4netns" or comm.startswith(("pasta", "passt")):
            out.append(pid)
    return out


def wait_no_helpers(rl: RootlessEnv, timeout: float = 15) -> list[int]:
    deadline = time.monotonic() + timeout
    left = helpers(rl)
    while left and time.monotonic() < deadline:
        time.sleep(0.1)
        left = helpers(rl)
    return left


def serve(rl: RootlessEnv, name: str, *args: str) -> str:
    cid = rl("run", "-d", "--name", name, *args, BUSYBOX, "sh", "-c", HTTPD, name, check=True).stdout.strip()
    return cid


def sh(rl: RootlessEnv, *args: str, check: bool = True) -> str:
    cp = rl("run", "--rm", *args, check=check)
    return cp.stdout


def wait_http(rl: RootlessEnv, net: str, host: str, want: str) -> None:
    deadline = time.monotonic() + 20
    out = ""
    while time.monotonic() < deadline:
        out = sh(rl, "--network", net, BUSYBOX, "sh", "-c", get(host))
        if out.strip() == want:
            return
        time.sleep(0.2)
    raise AssertionError(f"http://{host}/ on {net}: {out!r}")


@pytest.fixture
def host_server() -> Iterator[tuple[str, int]]:
    """An HTTP server of this test on the host's 127.0.0.1, and the address containers reach it at
    (slirp4netns's 10.0.2.2, with ``[network] host-loopback = true``): no other address is used."""
    import http.server

    class H(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            body = b"outbound-ok\n"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a: object) -> None:
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield "10.0.2.2", srv.server_address[1]
    srv.shutdown()
    srv.server_close()


def test_containers_reach_each_other_by_ip_name_and_alias(rl: RootlessEnv) -> None:
    rl("network", "create", "app", check=True)
    rl("network", "create", "elsewhere", check=True)
    try:
        serve(rl, "db", "--network", "app", "--network-alias", "database")
        wait_http(rl, "app", "db", "hello-db")
        out = sh(rl, "--network", "app", "--name", "client", BUSYBOX, "sh", "-c",
                 f"{get('database')}; ip=$(nslookup db | awk '/^Address: /{{print $2}}' | tail -n 1); echo $ip; "
                 f"{get('$ip')}; nslookup client >/dev/null && echo self-resolves")
        lines = out.splitlines()
        assert lines[0] == "hello-db" and lines[1].startswith("10.89.") and lines[2] == "hello-db", out
        assert lines[3] == "self-resolves", out
        inspect = json.loads(rl("network", "inspect", "app", check=True).stdout)[0]
        addr = next(m["ip"] for m in inspect["containers"].values() if m["name"] == "db")
        assert addr == lines[1]
        # another network: the name does not resolve, the address is not reached
        out = sh(rl, "--network", "elsewhere", BUSYBOX, "sh", "-c",
                 f"nslookup db >/dev/null 2>&1 && echo resolved; nc -w 2 {addr} 80 </dev/null && echo reached; "
                 "echo done", check=False)
        assert out.split() == ["done"], out
        # connect and disconnect at run time
        rl("run", "-d", "--name", "roamer", "--network", "elsewhere", BUSYBOX, "sleep", "300", check=True)
        assert rl("exec", "roamer", "sh", "-c", get("db", timeout=2)).stdout.strip() == ""
        rl("network", "connect", "--alias", "wanderer", "app", "roamer", check=True)
        assert rl("exec", "roamer", "sh", "-c", get("db"), check=True).stdout.strip() == "hello-db"
        assert sh(rl, "--network", "app", BUSYBOX, "sh", "-c", "nslookup wanderer >/dev/null && echo yes"
                  ).strip() == "yes"
        rl("network", "disconnect", "app", "roamer", check=True)
        assert rl("exec", "roamer", "sh", "-c", get("db", timeout=2)).stdout.strip() == ""
        assert_clean_error(rl("network", "rm", "app"), 2, "app")
    finally:
        rl("rm", "-f", "db", "roamer")
    rl("network", "rm", "app", "elsewhere", check=True)
    assert wait_no_helpers(rl) == []


def test_internal_network_has_no_way_out(rl: RootlessEnv, host_server: tuple[str, int]) -> None:
    ip, port = host_server
    # the shared namespace's slirp4netns lets containers reach the host's loopback only when asked
    rl.write_config(rl.config_path.read_text() + "\n[network]\nhost-loopback = true\n")
    rl("network", "create", "--internal", "sealed", check=True)
    rl("network", "create", "open", check=True)
    try:
        out = sh(rl, "--network", "open", BUSYBOX, "sh", "-c", get(ip, port))
        assert out.strip() == "outbound-ok"
        serve(rl, "inner", "--network", "sealed")
        wait_http(rl, "sealed", "inner", "hello-inner")
        out = sh(rl, "--network", "sealed", BUSYBOX, "sh", "-c",
                 f"ip route; nc -w 2 {ip} {port} </dev/null && echo escaped; echo done", check=False)
        assert "default" not in out and "escaped" not in out and out.split()[-1] == "done", out
    finally:
        rl("rm", "-f", "inner")
        rl("network", "rm", "sealed", "open")


@pytest.mark.xfail(reason="pasta's way out to the host (10.0.2.2) hangs on this machine since 15:40 UTC, "
                          "also on the tree that passed here at 15:30: not understood yet (issue 14)", strict=False)
def test_pasta_as_the_way_out(rl: RootlessEnv, host_server: tuple[str, int]) -> None:
    """[network] outbound = "pasta": pasta, not slirp4netns, gives the shared namespace its way
    out (configured as slirp4netns's: the host's loopback at 10.0.2.2 with host-loopback), and
    ends with the last container."""
    import shutil

    need(shutil.which("pasta") is not None or os.path.exists("/usr/bin/pasta"),
         "pasta is not installed (apt-get install passt)")
    ip, port = host_server
    before = rl.config_path.read_text()
    base = before.replace("\n[network]\nhost-loopback = true\n", "")  # test_internal_network_has_no_way_out's
    rl.write_config(base + "\n[network]\nhost-loopback = true\noutbound = \"pasta\"\n")
    assert wait_no_helpers(rl) == []  # a daemon of an earlier test would be reused with its way out
    rl("network", "create", "viapasta", check=True)
    try:
        serve(rl, "pastaweb", "--network", "viapasta")
        comms = {Path(f"/proc/{p}/comm").read_text().strip() for p in helpers(rl)}
        assert "slirp4netns" not in comms and any(c.startswith(("pasta", "passt")) for c in comms), comms
        wait_http(rl, "viapasta", "pastaweb", "hello-pastaweb")
        assert sh(rl, "--network", "viapasta", BUSYBOX, "sh", "-c", get(ip, port)).strip() == "outbound-ok"
    finally:
        rl("rm", "-f", "pastaweb")
        rl("network", "rm", "viapasta")
        rl.write_config(before)
    assert wait_no_helpers(rl) == []


def test_publish_on_a_user_network(rl: RootlessEnv) -> None:
    rl("network", "create", "pub", check=True)
    port = free_port()
    try:
        serve(rl, "pubweb", "--network", "pub", "-p", f"127.0.0.1:{port}:80")
        deadline = time.monotonic() + 15
        body = ""
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=3) as r:
                    body = r.read().decode()
                break
            except OSError:
                time.sleep(0.1)
        assert body == "hello-pubweb\n"
        assert rl("port", "pubweb", check=True).stdout.strip() == f"80/tcp -> 127.0.0.1:{port}"
    finally:
        rl("rm", "-f", "pubweb")
        rl("network", "rm", "pub")


def test_udp_publish_on_a_user_network(rl: RootlessEnv) -> None:
    from tests.integration.test_network import UDP_ECHO, host_mounts, udp_echo

    need(os.path.exists("/usr/bin/python3"), "python3 is missing on the host")
    rl("network", "create", "udppub", check=True)
    port = free_port()
    try:
        rl("run", "-d", "--name", "udpecho", "--network", "udppub", "-p", f"127.0.0.1:{port}:5353/udp",
           *host_mounts(), BUSYBOX, "/usr/bin/python3", "-c", UDP_ECHO, check=True)
        assert udp_echo(port, lambda: "through the user network's forwarder") == b"echo:ping"
        assert rl("port", "udpecho", check=True).stdout.strip() == f"5353/udp -> 127.0.0.1:{port}"
    finally:
        rl("rm", "-f", "udpecho")
        rl("network", "rm", "udppub")


def test_keep_id_on_a_user_network(rl: RootlessEnv) -> None:
    """--userns keep-id with a user network (Podman allows it): the container runs as our own
    ID in a user namespace nested in the shared one, and still reaches its peers by name."""
    rl("network", "create", "kept", check=True)
    try:
        serve(rl, "keptweb", "--network", "kept")
        wait_http(rl, "kept", "keptweb", "hello-keptweb")
        out = sh(rl, "--userns", "keep-id", "--network", "kept", BUSYBOX, "sh", "-c", f"id -u; {get('keptweb')}")
        assert out.split() == [str(os.getuid()), "hello-keptweb"], out
    finally:
        rl("rm", "-f", "keptweb")
        rl("network", "rm", "kept")
    assert wait_no_helpers(rl) == []


def test_helpers_end_with_the_last_container_also_after_kill_9(rl: RootlessEnv) -> None:
    rl("network", "create", "brief", check=True)
    try:
        assert rl("run", "--rm", "--network", "brief", BUSYBOX, "true").returncode == 0
        assert wait_no_helpers(rl) == []
        # a foreground `rootless run` killed with SIGKILL: its container dies, then the daemon
        p = rl.popen("run", "--rm", "--network", "brief", BUSYBOX, "sleep", "300", start_new_session=True)
        deadline = time.monotonic() + 20
        while len(helpers(rl)) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert len(helpers(rl)) >= 2
        p.kill()
        p.wait(timeout=10)
        assert wait_no_helpers(rl) == []
        # a killed daemon is not reused: the next container gets a fresh one
        rl("run", "-d", "--name", "holder", "--network", "brief", BUSYBOX, "sleep", "300", check=True)
        netd = [p for p in helpers(rl) if _is_netd(Path(f"/proc/{p}/cmdline").read_bytes().split(b"\0"))]
        assert len(netd) == 1
        os.kill(netd[0], 9)
        rl("rm", "-f", "holder", check=True)
        assert sh(rl, "--network", "brief", BUSYBOX, "sh", "-c", "ip -4 -o addr show eth0 | wc -l").strip() == "1"
        assert wait_no_helpers(rl) == []
    finally:
        rl("rm", "-f", "holder")
        rl("network", "rm", "brief")
    assert not (rl.runroot / "netns" / "netd.sock").exists()


def test_a_failed_run_leaves_nothing_at_once(rl: RootlessEnv) -> None:
    """A run on a user network that fails, before its container exists or after the daemon
    answered it, leaves neither the daemon nor slirp4netns nor their files, and at once: the
    daemon does not wait for a client that is not coming."""
    import socket

    rl("network", "create", "failing", check=True)
    netns = rl.runroot / "netns"

    def nothing_left(what: str) -> None:
        t0 = time.monotonic()
        left = wait_no_helpers(rl, timeout=8)
        assert left == [], f"{what}: {left} still run"
        assert time.monotonic() - t0 < 4, f"{what}: the helpers took {time.monotonic() - t0:.1f} s to end"
        assert sorted(p.name for p in netns.iterdir()) == ["lock"], (what, list(netns.iterdir()))

    try:
        # create fails (a mount the kernel refuses: a file onto a directory) after the daemon
        # started for it answered its client: the container's first process never got a network
        cp = rl("run", "--rm", "--network", "failing", "--mount", "type=bind,src=/etc/hostname,dst=/bin",
                BUSYBOX, "true")
        assert_clean_error(cp, 125, "mount")
        nothing_left("a start that failed")
        # the image cannot be had: create fails while the daemon starts
        assert_clean_error(rl("run", "--rm", "--network", "failing", "localhost:1/nosuch", "true"), 125, "localhost:1")
        nothing_left("a create that failed")
        # the command that started it is killed before it connects (its pull hangs on a server
        # that never answers): the daemon ends with it, not after a delay
        with socket.socket() as mute:
            mute.bind(("127.0.0.1", 0))
            mute.listen(8)
            ref = f"127.0.0.1:{mute.getsockname()[1]}/hang/img"
            p = rl.popen("run", "--rm", "--network", "failing", ref, "true", start_new_session=True)
            deadline = time.monotonic() + 20
            while not (netns / "netd.sock").exists() and time.monotonic() < deadline:
                time.sleep(0.05)
            time.sleep(0.3)  # its socket is bound just before it reports that it is ready
            assert len(helpers(rl)) >= 2 and p.poll() is None, "the daemon did not start while the image was fetched"
            p.kill()
            p.wait(timeout=10)
            nothing_left("a command killed before it connected")
    finally:
        rl("network", "rm", "failing")


def test_network_commands_and_bad_input(rl: RootlessEnv) -> None:
    assert rl("network", "create", "--subnet", "10.77.0.0/24", "--gateway", "10.77.0.254", "--label", "k=v",
              "cmd1", check=True).stdout == "cmd1\n"
    try:
        data = json.loads(rl("network", "inspect", "cmd1", check=True).stdout)[0]
        assert data["subnets"] == [{"subnet": "10.77.0.0/24", "gateway": "10.77.0.254"}]
        assert data["labels"] == {"k": "v"} and data["dns_enabled"] and not data["internal"]
        assert rl("network", "ls", "-q", "--filter", "label=k=v", check=True).stdout.split() == ["cmd1"]
        assert rl("network", "exists", "cmd1").returncode == 0
        assert rl("network", "exists", "nope").returncode == 1
        assert_clean_error(rl("network", "create", "cmd1"), 125, "already")
        assert_clean_error(rl("network", "create", "--subnet", "10.77.0.128/25", "x1"), 125, "overlaps", "cmd1")
        assert_clean_error(rl("network", "create", "--subnet", "10.0.2.0/24", "x2"), 125, "overlaps")
        assert_clean_error(rl("network", "create", "--subnet", "10.78.0.0/24", "--gateway", "10.79.0.1", "x3"),
                           125, "gateway")
        assert_clean_error(rl("run", "--rm", "--network", "nosuchnet", BUSYBOX, "true"), 125, "nosuchnet")
        assert_clean_error(rl("run", "--rm", "--network", "none", "--network", "cmd1", BUSYBOX, "true"), 125,
                           "none")
        assert_clean_error(rl("run", "--rm", "--network", "cmd1", "--ip", "10.78.0.5", BUSYBOX, "true"), 125,
                           "10.78.0.5")
        rl("run", "-d", "--name", "fixed", "--network", "cmd1", "--ip", "10.77.0.9", "--network-alias", "fixedalias",
           BUSYBOX, "sleep", "300", check=True)
        assert "10.77.0.9/24" in rl("exec", "fixed", "ip", "-4", "-o", "addr", "show", "eth0", check=True).stdout
        # inspect shows the address, gateway, prefix, MAC and aliases, as Podman's does
        mac = rl("exec", "fixed", "cat", "/sys/class/net/eth0/address", check=True).stdout.strip()
        data = json.loads(rl("inspect", "fixed", check=True).stdout)[0]
        ep = data["NetworkSettings"]["Networks"]["cmd1"]
        assert (ep["IPAddress"], ep["Gateway"], ep["IPPrefixLen"], ep["MacAddress"]) == \
            ("10.77.0.9", "10.77.0.254", 24, mac), ep
        assert ep["Aliases"] == ["fixedalias", data["Id"][:12]] and ep["NetworkID"] == "cmd1"
        assert rl("inspect", "--format", "{{.NetworkSettings.IPAddress}} {{.NetworkSettings.MacAddress}}",
                  "fixed", check=True).stdout.split() == ["10.77.0.9", mac]
        cp = rl("run", "--rm", "--name", "clash", "--network", "cmd1", "--ip", "10.77.0.9", BUSYBOX, "true")
        assert_clean_error(cp, 125, "taken")
        assert "clash" not in rl("ps", "-a", "--format", "json").stdout
        rl("stop", "-t", "0", "fixed", check=True)
        ep = json.loads(rl("inspect", "fixed", check=True).stdout)[0]["NetworkSettings"]["Networks"]["cmd1"]
        assert (ep["IPAddress"], ep["MacAddress"], ep["Aliases"][0]) == ("", "", "fixedalias"), ep
        rl("rm", "-f", "fixed", check=True)
        for name in ("x1", "x2", "x3"):
            assert rl("network", "exists", name).returncode == 1
    finally:
        rl("rm", "-f", "fixed")
        rl("network", "rm", "cmd1")
    assert_clean_error(rl("network", "rm", "cmd1"), 1, "cmd1")
