"""Networking as the unprivileged user with the real slirp4netns: published ports (TCP, UDP,
random, ranges), the host's loopback, none/host modes, refusals, and teardown.

Every target is on 127.0.0.1. slirp4netns processes are found by the environment's marker
(they inherit rootless's environment), never by name alone.
"""

from __future__ import annotations

import http.server
import os
import re
import signal
import socket
import subprocess
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import TestImages, need
from tests.integration.harness import RootlessEnv, assert_clean_error, free_port

pytestmark = pytest.mark.integration

BUSYBOX = "busybox"
HTTPD = "mkdir -p /www$1 && echo hello-$1 > /www$1/index.html && exec httpd -f -p $1 -h /www$1"
PUBLISHED = re.compile(r"published (\S+):(\d+) -> (\d+)/(tcp|udp)")


@pytest.fixture(scope="module")
def rl(rl_shared: RootlessEnv, images: TestImages) -> RootlessEnv:
    need(os.path.exists("/usr/bin/slirp4netns"), "slirp4netns is not installed (apt-get install slirp4netns)")
    images.require("library/busybox:latest")
    rl_shared("pull", "-q", BUSYBOX, check=True)
    return rl_shared


HELPERS = ("slirp4netns", "rootless-ports")  # the network and the TCP port forwarder


def slirps(rl: RootlessEnv) -> list[int]:
    """Live network helpers (slirp4netns, the port forwarder) started by this environment."""
    out = []
    for pid in rl.processes():
        try:
            if Path(f"/proc/{pid}/comm").read_text().strip() in HELPERS:
                out.append(pid)
        except OSError:
            continue
    return out


def wait_no_slirp(rl: RootlessEnv, timeout: float = 10) -> list[int]:
    deadline = time.monotonic() + timeout
    left = slirps(rl)
    while left and time.monotonic() < deadline:
        time.sleep(0.05)
        left = slirps(rl)
    return left


class Running:
    """A `rootless --log-level debug run` in the background, its published ports read from the log."""

    def __init__(self, rl: RootlessEnv, *args: str) -> None:
        self.proc = rl.popen("--log-level", "debug", "run", "--rm", "--init", *args, start_new_session=True)
        self.ports: dict[tuple[int, str], int] = {}
        self.log = ""
        assert self.proc.stderr is not None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            line = self.proc.stderr.readline()
            if not line:
                raise AssertionError(f"rootless exited ({self.proc.wait()}) before the container started:\n{self.log}")
            self.log += line
            m = PUBLISHED.search(line)
            if m:
                self.ports[(int(m.group(3)), m.group(4))] = int(m.group(2))
            if "started: pid" in line:
                break
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.log += line

    def port(self, container_port: int, proto: str = "tcp") -> int:
        return self.ports[(container_port, proto)]

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=20)
        finally:
            if self.proc.stdout is not None:
                self.proc.stdout.close()


@pytest.fixture
def running(rl: RootlessEnv) -> Iterator[list[Running]]:
    started: list[Running] = []
    yield started
    for r in started:
        r.stop(signal.SIGKILL)


def start(rl: RootlessEnv, running: list[Running], *args: str) -> Running:
    r = Running(rl, *args)
    running.append(r)
    return r


def listening(port: int, timeout: float = 5) -> bool:
    """Whether 127.0.0.1:*port* still accepts connections after *timeout* seconds of asking."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as c:
                if c.getsockname()[1] == port:  # a TCP self-connect (same source port): nobody listens
                    return False
        except OSError:
            return False
        if time.monotonic() > deadline:
            return True
        time.sleep(0.1)


def fetch(port: int, path: str = "/", timeout: float = 15) -> str:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=3) as resp:
                return resp.read().decode()
        except OSError as e:
            last = e
            time.sleep(0.05)
    raise AssertionError(f"http://127.0.0.1:{port}{path} did not answer: {last}")


def host_mounts() -> list[str]:
    """-v flags that let busybox images run the host's python3 (for a UDP echo server)."""
    return ["-v", "/usr:/usr:ro", "-v", "/usr/lib:/lib:ro", "-v", "/usr/lib64:/lib64:ro"]


UDP_ECHO = ("import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(('0.0.0.0', 5353))\n"
            "while True:\n    d, a = s.recvfrom(2048); s.sendto(b'echo:' + d, a)")


def udp_echo(port: int, why: Callable[[], str] = str) -> bytes:
    """"ping" sent to 127.0.0.1:PORT until a reply comes (15 s); the reply."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(0.5)
        deadline = time.monotonic() + 15
        while True:
            s.sendto(b"ping", ("127.0.0.1", port))
            try:
                return s.recvfrom(2048)[0]
            except TimeoutError:
                assert time.monotonic() < deadline, f"no UDP echo {why()}"


# --------------------------------------------------------------------------- published ports


def test_tcp_port_served_to_the_host(rl: RootlessEnv, running: list[Running]) -> None:
    port = free_port()
    r = start(rl, running, "-p", f"127.0.0.1:{port}:80", BUSYBOX, "sh", "-c", HTTPD, "sh", "80")
    assert r.port(80) == port
    assert fetch(port) == "hello-80\n"
    assert r.stop() == 143
    assert wait_no_slirp(rl) == []


def test_udp_port_echoes(rl: RootlessEnv, running: list[Running]) -> None:
    # slirp4netns drops a UDP reply to the host's loopback under --disable-host-loopback
    # (podman#4586): a client on this host needs allow_host_loopback=true
    need(os.path.exists("/usr/bin/python3"), "python3 is missing on the host")
    port = free_port()
    r = start(rl, running, "--network", "slirp4netns:allow_host_loopback=true", "-p", f"127.0.0.1:{port}:5353/udp",
              *host_mounts(), BUSYBOX, "/usr/bin/python3",
              "-c", UDP_ECHO)
    assert udp_echo(port, lambda: f"({r.proc.poll()}):\n{r.log}") == b"echo:ping"


def test_published_port_with_keep_id(rl: RootlessEnv, running: list[Running]) -> None:
    port = free_port()
    # under keep-id the image's / is root's, as under Podman: the user serves from /tmp
    start(rl, running, "--userns", "keep-id", "-p", f"127.0.0.1:{port}:8080", BUSYBOX, "sh", "-c",
          HTTPD.replace("/www", "/tmp/www"), "sh", "8080")
    assert fetch(port) == "hello-8080\n"


def test_random_host_port(rl: RootlessEnv, running: list[Running]) -> None:
    r = start(rl, running, "-p", "80", BUSYBOX, "sh", "-c", HTTPD, "sh", "80")
    port = r.port(80)
    assert port >= 1024
    assert fetch(port) == "hello-80\n"


def test_port_range(rl: RootlessEnv, running: list[Running]) -> None:
    base = free_port()
    for _ in range(20):
        try:
            with socket.socket() as a, socket.socket() as b:
                a.bind(("127.0.0.1", base))
                b.bind(("127.0.0.1", base + 1))
            break
        except OSError:
            base = free_port()
    else:
        pytest.skip("no two consecutive free ports")
    r = start(rl, running, "-p", f"127.0.0.1:{base}-{base + 1}:80-81", BUSYBOX, "sh", "-c",
              f"({HTTPD.replace('$1', '81')}) & {HTTPD}", "sh", "80")
    assert (r.port(80), r.port(81)) == (base, base + 1)
    assert fetch(base) == "hello-80\n"
    assert fetch(base + 1) == "hello-81\n"


def test_publish_all_exposed_ports(rl: RootlessEnv, images: TestImages) -> None:
    images.require("test/inspect:latest")
    cp = rl("--log-level", "debug", "run", "--rm", "-P", "--entrypoint", "true", "test/inspect", check=True)
    found = {(int(m.group(3)), m.group(4)) for m in PUBLISHED.finditer(cp.stderr)}
    assert found == {(80, "tcp"), (53, "udp")}, cp.stderr


def test_twenty_containers_with_published_ports(rl: RootlessEnv, running: list[Running]) -> None:
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(20) as pool:
        started = list(pool.map(lambda _: start(rl, running, "-p", "127.0.0.1::80", BUSYBOX, "sh", "-c", HTTPD,
                                                "sh", "80"), range(20)))
    ports = {r.port(80) for r in started}
    assert len(ports) == 20
    for port in ports:
        assert fetch(port) == "hello-80\n"
    assert len(slirps(rl)) >= 40  # slirp4netns and a forwarder each
    assert [r.stop() for r in started] == [143] * 20
    assert wait_no_slirp(rl) == []


# --------------------------------------------------------------------------- refusals


def test_port_in_use_refused(rl: RootlessEnv) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        cp = rl("run", "--rm", "-p", f"127.0.0.1:{port}:80", BUSYBOX, "true")
    line = assert_clean_error(cp, 125, "already in use", str(port))
    assert "Hint:" in cp.stderr, line


def test_privileged_port_refused(rl: RootlessEnv) -> None:
    start_ = int(Path("/proc/sys/net/ipv4/ip_unprivileged_port_start").read_text())
    need(start_ > 80, "unprivileged users may bind port 80 here")
    cp = rl("run", "--rm", "-p", "80:80", BUSYBOX, "true")
    assert_clean_error(cp, 125, "ip_unprivileged_port_start")
    assert "sysctl" in cp.stderr


@pytest.mark.parametrize(("spec", "needle"), [
    ("abc", "not a number"), ("70000:80", "outside"), ("8000-8002:80-81", "differ"), ("80/sctp", "sctp"),
    ("1.2.3:8080:80", "not an IPv4"),
])
def test_bad_publish_refused(rl: RootlessEnv, spec: str, needle: str) -> None:
    assert_clean_error(rl("run", "--rm", "-p", spec, BUSYBOX, "true"), 125, needle)


def test_publish_without_a_network_refused(rl: RootlessEnv) -> None:
    assert_clean_error(rl("run", "--rm", "--network", "none", "-p", "8080:80", BUSYBOX, "true"), 125, "network")


def test_missing_slirp4netns_names_the_package(rl: RootlessEnv, tmp_path: Path) -> None:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for tool in ("newuidmap", "newgidmap", "fuse-overlayfs"):
        real = f"/usr/bin/{tool}"
        if os.path.exists(real):
            (bindir / tool).symlink_to(real)
    cp = rl("run", "--rm", BUSYBOX, "true", env={"PATH": str(bindir)})
    line = assert_clean_error(cp, 125, "slirp4netns")
    assert "--network none" in cp.stderr and "slirp4netns package" in cp.stderr, line
    assert rl("run", "--rm", "--network", "none", BUSYBOX, "true", env={"PATH": str(bindir)}).returncode == 0


# --------------------------------------------------------------------------- modes, DNS, hosts


@pytest.fixture
def host_server() -> Iterator[int]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            body = b"from-the-host\n"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a: object) -> None:
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield srv.server_address[1]
    srv.shutdown()
    srv.server_close()


def test_host_loopback_only_when_allowed(rl: RootlessEnv, host_server: int) -> None:
    # busybox-static's wget crashes here (static glibc without NSS): a raw request through nc
    get = f"printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 5 10.0.2.2 {host_server}"
    cp = rl("run", "--rm", "--network", "slirp4netns:allow_host_loopback=true", BUSYBOX, "sh", "-c",
            f"grep host.containers.internal /etc/hosts; {get}", check=True)
    assert cp.stdout.splitlines()[0] == "10.0.2.2\thost.containers.internal"
    assert "from-the-host" in cp.stdout
    cp = rl("run", "--rm", BUSYBOX, "sh", "-c", f"{get}; grep host.containers.internal /etc/hosts")
    # without the option the name is the host's own address, as Podman writes it, not the gateway
    assert "from-the-host" not in cp.stdout, cp.stdout + cp.stderr
    assert "10.0.2.2" not in cp.stdout.splitlines()[-1], cp.stdout


def test_default_network_has_tap0_and_dns(rl: RootlessEnv) -> None:
    cp = rl("run", "--rm", BUSYBOX, "sh", "-c", "ls /sys/class/net; ip -4 -o addr show tap0; "
            "cat /sys/class/net/tap0/mtu; cat /etc/resolv.conf; ip route", check=True)
    text = cp.stdout
    assert "lo" in text.split() and "tap0" in text.split()
    assert "10.0.2.100/24" in text and "65520" in text.split() and "default via 10.0.2.2" in text
    host_ns = [ln.split()[1] for ln in Path("/etc/resolv.conf").read_text().splitlines()
               if ln.startswith("nameserver")]
    # Podman's: slirp4netns's forwarder first, then the host's servers not on loopback
    expect = ["10.0.2.3"] + [n for n in host_ns if not n.startswith("127.") and n != "::1"]
    assert [ln.split()[1] for ln in text.splitlines() if ln.startswith("nameserver")] == expect


def test_network_options(rl: RootlessEnv) -> None:
    cp = rl("run", "--rm", "--network", "slirp4netns:mtu=1500,cidr=10.8.0.0/24", "--dns", "10.8.0.3",
            "--dns-search", "example.test", "--add-host", "db:10.1.2.3", BUSYBOX, "sh", "-c",
            "cat /sys/class/net/tap0/mtu; ip -4 -o addr show tap0; cat /etc/resolv.conf; cat /etc/hosts",
            check=True)
    assert cp.stdout.splitlines()[0] == "1500"
    assert "10.8.0.100/24" in cp.stdout
    assert "nameserver 10.8.0.3" in cp.stdout and "search example.test" in cp.stdout
    assert "10.1.2.3\tdb" in cp.stdout
    assert_clean_error(rl("run", "--rm", "--network", "slirp4netns:bogus=1", BUSYBOX, "true"), 125, "bogus")
    assert_clean_error(rl("run", "--rm", "--network", "none", "--dns", "1.1.1.1", BUSYBOX, "true"), 125, "dns")


def test_network_none_has_only_lo(rl: RootlessEnv) -> None:
    cp = rl("run", "--rm", "--network", "none", BUSYBOX, "sh", "-c", "ls /sys/class/net; ls /etc/resolv.conf",
            check=False)
    assert cp.stdout.split()[0] == "lo" and len(cp.stdout.split()) == 1, cp.stdout
    assert not slirps(rl)


def test_network_host_sees_the_host_interfaces(rl: RootlessEnv) -> None:
    cp = rl("run", "--rm", "--network", "host", BUSYBOX, "ls", "/sys/class/net", check=True)
    assert sorted(cp.stdout.split()) == sorted(os.listdir("/sys/class/net"))


# --------------------------------------------------------------------------- teardown


def test_no_helper_after_a_normal_exit(rl: RootlessEnv) -> None:
    cp = rl("run", "--rm", "-p", "127.0.0.1::80", BUSYBOX, "true")
    assert cp.returncode == 0, cp.stderr
    assert wait_no_slirp(rl, 2) == []
    assert not list(rl.runroot.glob("**/slirp4netns.sock"))


def test_no_helper_after_the_container_is_killed(rl: RootlessEnv, running: list[Running]) -> None:
    r = start(rl, running, "-p", "127.0.0.1::80", BUSYBOX, "sh", "-c", HTTPD, "sh", "80")
    fetch(r.port(80))
    helpers = slirps(rl)
    assert helpers
    # the container's PID 1 (rootless-init under --init) killed from outside
    inits = [p for p in rl.processes() if Path(f"/proc/{p}/comm").read_text().strip() == "rootless-init"]
    for p in inits:
        os.kill(p, signal.SIGKILL)
    assert r.proc.wait(timeout=20) == 137
    assert wait_no_slirp(rl) == []


def test_no_helper_after_rootless_is_sigkilled(rl: RootlessEnv, running: list[Running]) -> None:
    r = start(rl, running, "-p", "127.0.0.1::80", BUSYBOX, "sh", "-c", HTTPD, "sh", "80")
    fetch(r.port(80))
    assert slirps(rl)
    r.proc.kill()
    r.proc.wait(timeout=10)
    assert wait_no_slirp(rl) == []
    assert not listening(r.port(80))


def test_default_network_is_configurable(rl: RootlessEnv) -> None:
    rl.write_config(rl.config_text + '\n[network]\ndefault = "none"\n')
    try:
        cp = rl("run", "--rm", BUSYBOX, "ls", "/sys/class/net", check=True)
    finally:
        rl.write_config(rl.config_text)
    assert cp.stdout.split() == ["lo"]


def test_run_latency_with_the_network(rl: RootlessEnv) -> None:
    """Not a benchmark (bench/net.py is): catches a network set-up that waits on a timeout."""
    def best(*args: str) -> float:
        times = []
        for _ in range(3):
            t0 = time.monotonic()
            subprocess.run([*rl.command, "run", "--rm", *args, BUSYBOX, "true"], env=rl.env, check=True,
                           capture_output=True)
            times.append(time.monotonic() - t0)
        return min(times)

    none, slirp = best("--network", "none"), best()
    assert slirp - none < 0.5, (none, slirp)
