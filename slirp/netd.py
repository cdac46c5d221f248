"""The user-network daemon: one per user, root of the user namespace its containers join, inside
the network namespace that holds a bridge per user network.

rootless.runtime.usernet starts it (``python -S slirp/netd.py``) already in that user namespace
(mapped with the store's fixed mapping) and network namespace, with slirp4netns started for
that namespace by the same spawner (so slirp4netns's own sockets stay in the host's network
namespace: its tap0 here is the way out). It serves JSON requests, one per line, on a unix
socket:

  {"op": "ping"}                                   → {"ok": true, "pid": PID}
  {"op": "attach", "pid": P, "cid": ID, "name": N, "aliases": [...], "net": NETWORK RECORD,
   "ifname": "eth0", "ip": IP or null, "default_route": bool}
                                                   → {"ok": true, "ip": IP, "mac": MAC}
  {"op": "detach", "cid": ID, "net": NAME}          → {"ok": true}
  {"op": "members", "net": NAME or null}            → {"ok": true, "members": {NET: {CID: {...}}}}

For each attached container a veth pair joins the bridge to the container's own network
namespace (``ifname`` there, its address, a default route through the gateway unless the
network is internal). The container's end is gone with its namespace; a pidfd per container
tells us when. The daemon ends, with slirp4netns, once no container is attached and no client
is connected. A name server per network (with DNS enabled) listens on the gateway's port 53:
it answers the names and aliases of that network's members and forwards other names to
slirp4netns's DNS forwarder, which asks the host's resolvers.

Outbound traffic leaves through tap0 with its source rewritten to tap0's address (iptables
MASQUERADE: slirp4netns answers only its own guest address); forwarding is allowed only from a
non-internal network to tap0, and back for the connections it made, so networks stay apart.
"""

from __future__ import annotations

import ipaddress
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Mapping, Sequence
from typing import Any

if __name__ == "__main__":
    # run as a file by ``python -S`` (rootless.runtime.usernet: no site, so no .pth files to
    # read): this tree first, then the directories the caller imported from (dnslib's)
    sys.path[:1] = [os.path.dirname(os.path.dirname(os.path.abspath(__file__))), *sys.argv.pop(1).split(os.pathsep)]
from rootless.runtime import syscalls  # noqa: E402
from slirp.rtnl import Rtnl
from slirp.usernet import NetworkConfig

# as slirp4netns's tap0 (slirp.config.DEFAULT_MTU): fewer, larger frames between containers
MTU = 65520
UPSTREAM_DNS = ("10.0.2.3", 53)  # slirp4netns's forwarder (slirp.config: the CIDR's .3)
OUTBOUND_IF = "tap0"
SEARCH_DOMAIN = "dns.podman"  # Podman's domain for container names (aardvark-dns)
TTL = 60


class Member:
    def __init__(self, cid: str, name: str, aliases: list[str], ip: str, mac: str, veth: str, pid: int) -> None:
        self.cid, self.name, self.aliases, self.ip, self.mac, self.veth, self.pid = \
            cid, name, aliases, ip, mac, veth, pid

    def names(self) -> set[str]:
        return {n.lower() for n in (self.name, self.cid[:12], *self.aliases) if n}

    def view(self) -> dict[str, Any]:
        return {"name": self.name, "aliases": self.aliases, "ip": self.ip, "mac": self.mac, "pid": self.pid}


class Net:
    def __init__(self, cfg: NetworkConfig, index: int) -> None:
        self.cfg = cfg
        self.index = index
        self.subnet = ipaddress.ip_network(cfg.subnet)
        self.members: dict[str, Member] = {}
        self.dns: socket.socket | None = None


def _iptables() -> str:
    return shutil.which("iptables") or shutil.which("iptables", path="/usr/sbin:/sbin") or "iptables"


def _rules(cfg: NetworkConfig, add: bool) -> str:
    """iptables-restore input for one network: its members reach each other (bridged frames
    pass FORWARD too when br_netfilter is loaded), and, unless it is internal, NAT and
    forwarding to the way out."""
    op = "-A" if add else "-D"
    own = f"*filter\n{op} FORWARD -i {cfg.bridge} -o {cfg.bridge} -j ACCEPT\n"
    if cfg.internal:
        return own + "COMMIT\n"
    return (f"*nat\n{op} POSTROUTING -s {cfg.subnet} -o {OUTBOUND_IF} -j MASQUERADE\nCOMMIT\n"
            f"{own}{op} FORWARD -i {cfg.bridge} -o {OUTBOUND_IF} -j ACCEPT\nCOMMIT\n")


def _configure_inside(pid: int, ifname: str, ip: str, prefix: int, gateway: str | None) -> str:
    """Address, up and default route for the container's end of its veth, from a child that
    joins the container's network namespace (a netlink socket acts in the namespace it was made
    in: the daemon's own stays in the shared one); the interface's MAC address."""
    r, w = os.pipe2(os.O_CLOEXEC)
    child = os.fork()
    if child == 0:  # pragma: no cover - exits
        code = 1
        try:
            os.close(r)
            fd = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
            syscalls.setns(fd, syscalls.CLONE_NEWNET, f"join the network namespace of process {pid}")
            with Rtnl() as nl:
                index = nl.link_index(ifname)
                if index is None:
                    raise OSError(f"no {ifname} in the container's network namespace")
                nl.add_address(index, ip, prefix)
                nl.set_up(index)
                if gateway:
                    nl.add_default_route(gateway)
                mac = nl.link_mac(index)
            os.write(w, json.dumps({"mac": mac}).encode())
            code = 0
        except BaseException as e:  # noqa: BLE001 - reported to the parent
            os.write(w, json.dumps({"error": f"configure {ifname} of process {pid}: {e}"}).encode())
        finally:
            os._exit(code)
    os.close(w)
    data = b""
    while chunk := os.read(r, 4096):
        data += chunk
    os.close(r)
    os.waitpid(child, 0)
    reply = json.loads(data or b'{"error": "the configuring child died"}')
    if "error" in reply:
        raise OSError(reply["error"])
    return str(reply["mac"])


BASE_RULES = ("*filter\n:FORWARD DROP [0:0]\n"
              "-A FORWARD -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\nCOMMIT\n")


def _restore(text: str) -> None:
    if not text:
        return
    exe = _iptables() + "-restore"
    if not os.path.exists(exe):
        exe = "iptables-restore"
    r = subprocess.run([exe, "--noflush"], input=text.encode(), capture_output=True, check=False)
    if r.returncode != 0:
        raise OSError(f"iptables-restore: {r.stderr.decode(errors='replace').strip() or r.returncode}")


class Daemon:
    def __init__(self, sock_path: str, exit_fd: int, owner: int) -> None:
        self.nl = Rtnl()
        self.sock_path = sock_path
        self.exit_fd = exit_fd
        self.nets: dict[str, Net] = {}
        self.clients: dict[int, tuple[socket.socket, bytearray]] = {}
        self.pidfds: dict[int, str] = {}  # pidfd → cid
        self.upstream = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.pending: dict[int, tuple[socket.socket, Any, int]] = {}  # our id → (server, client addr, their id)
        self.next_id = 1
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            os.unlink(sock_path)
        except FileNotFoundError:
            pass
        self.listener.bind(sock_path)
        self.listener.listen(64)
        # until a client has come: the process that started us, whose client is on its way
        # (a pidfd: its end, before it connects, ends us too)
        try:
            self.owner = os.pidfd_open(owner)
        except OSError:
            self.owner = -1
        self.served = False

    # ------------------------------------------------------------------ networks

    def ensure_net(self, cfg: NetworkConfig) -> Net:
        net = self.nets.get(cfg.name)
        if net is not None:
            if net.cfg.id == cfg.id:
                return net
            self.drop_net(net)  # the network was removed and made again meanwhile
        for other in self.nets.values():
            if ipaddress.ip_network(other.cfg.subnet).overlaps(ipaddress.ip_network(cfg.subnet)):
                raise ValueError(f"network {cfg.name} ({cfg.subnet}) overlaps network {other.cfg.name} "
                                 f"({other.cfg.subnet}), which is in use")
        found = self.nl.link_index(cfg.bridge)
        if found is not None:
            self.nl.delete(found)
        self.nl.add_bridge(cfg.bridge, MTU)
        index = self.nl.link_index(cfg.bridge)
        if index is None:
            raise OSError(f"bridge {cfg.bridge} vanished as it was made")
        net = Net(cfg, index)
        try:
            self.nl.add_address(index, cfg.gateway, ipaddress.ip_network(cfg.subnet).prefixlen)
            _restore(_rules(cfg, True))
            if cfg.dns_enabled:
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                s.bind((cfg.gateway, 53))
                net.dns = s
        except BaseException:
            self.nl.delete(index)
            raise
        self.nets[cfg.name] = net
        return net

    def drop_net(self, net: Net) -> None:
        if net.dns is not None:
            net.dns.close()
        try:
            _restore(_rules(net.cfg, False))
        except OSError:
            pass
        try:
            self.nl.delete(net.index)
        except OSError:  # gone already
            pass
        self.nets.pop(net.cfg.name, None)

    def attach(self, req: dict[str, Any]) -> dict[str, Any]:
        cfg = NetworkConfig.from_dict(req["net"])
        pid = int(req["pid"])
        cid = str(req["cid"])
        net = self.ensure_net(cfg)
        try:
            if cid in net.members:
                raise ValueError(f"container {req.get('name') or cid[:12]} is already connected to network "
                                 f"{cfg.name}")
            taken = [m.ip for m in net.members.values()]
            ip = cfg.check_address(req["ip"], taken) if req.get("ip") else cfg.next_address(taken)
            pidfd = os.pidfd_open(pid)
            veth = "rlv" + os.urandom(5).hex()
            try:
                nsfd = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
                try:
                    # one request: our end up on the bridge, the container's in its namespace
                    self.nl.add_veth(veth, MTU, net.index, req.get("ifname") or "eth0", nsfd)
                finally:
                    os.close(nsfd)
            except BaseException:
                os.close(pidfd)
                raise
            try:
                prefix = ipaddress.ip_network(cfg.subnet).prefixlen
                mac = _configure_inside(pid, req.get("ifname") or "eth0", ip, prefix,
                                        cfg.gateway if req.get("default_route") and not cfg.internal else None)
            except BaseException:
                os.close(pidfd)
                self._delete(veth)
                raise
        except BaseException:
            if not net.members:
                self.drop_net(net)
            raise
        net.members[cid] = Member(cid, str(req.get("name") or ""), [str(a) for a in req.get("aliases") or ()],
                                  ip, str(mac), veth, pid)
        if cid not in self.pidfds.values():
            self.pidfds[pidfd] = cid
        else:
            os.close(pidfd)
        self.served = True
        return {"ok": True, "ip": ip, "mac": mac}

    def detach(self, cid: str, name: str | None) -> None:
        for net in list(self.nets.values()):
            if name is not None and net.cfg.name != name:
                continue
            m = net.members.pop(cid, None)
            if m is not None:
                self._delete(m.veth)  # gone already when the container's namespace went
            if not net.members:
                self.drop_net(net)
        if not any(cid in n.members for n in self.nets.values()):
            for fd, c in list(self.pidfds.items()):
                if c == cid:
                    os.close(fd)
                    del self.pidfds[fd]

    def _delete(self, ifname: str) -> None:
        try:
            index = self.nl.link_index(ifname)
            if index is not None:
                self.nl.delete(index)
        except OSError:
            pass

    # ------------------------------------------------------------------ requests

    def handle(self, req: dict[str, Any]) -> dict[str, Any]:
        op = req.get("op")
        if op == "ping":
            return {"ok": True, "pid": os.getpid()}
        if op == "attach":
            return self.attach(req)
        if op == "detach":
            self.detach(str(req["cid"]), req.get("net"))
            return {"ok": True}
        if op == "members":
            want = req.get("net")
            return {"ok": True, "members": {n: {c: m.view() for c, m in net.members.items()}
                                            for n, net in self.nets.items() if want in (None, n)}}
        return {"error": f"unknown request {op!r}"}

    def serve_client(self, fd: int) -> None:
        sock, buf = self.clients[fd]
        try:
            data = sock.recv(65536)
        except OSError:
            data = b""
        if not data:
            sock.close()
            del self.clients[fd]
            self.served = True  # a client that attached nothing (a start that failed) ends us too
            return
        buf += data
        while b"\n" in buf:
            line, _, rest = bytes(buf).partition(b"\n")
            buf[:] = rest
            try:
                reply = self.handle(json.loads(line))
            except Exception as e:  # noqa: BLE001 - reported to the client, one line
                reply = {"error": str(e) or type(e).__name__}
            try:
                sock.sendall(json.dumps(reply).encode() + b"\n")
            except OSError:
                pass

    # ------------------------------------------------------------------ DNS

    def answer(self, net: Net, data: bytes, addr: Any) -> None:
        try:
            from dnslib import DNSRecord  # the first question imports it: off the daemon's start

            rec = DNSRecord.parse(data)
        except Exception:  # noqa: BLE001 - not DNS: ignored
            return
        if ipaddress.IPv4Address(addr[0]) not in net.subnet:
            return  # only the network's own members may ask (names of other networks do not resolve)
        from dnslib import QTYPE, RCODE, RR, A

        q = rec.q
        qname = str(q.qname).rstrip(".").lower()
        short = qname.removesuffix("." + SEARCH_DOMAIN)
        # the names of every network the asking container is on (a container connected to a
        # second network resolves its members through the name server it already has)
        asker = next((c for c, m in net.members.items() if m.ip == addr[0]), None)
        scope = [n for n in self.nets.values() if n is net or (asker is not None and asker in n.members)]
        hits = [m for n in scope for m in n.members.values() if short in m.names()]
        reply = rec.reply()
        if hits:
            if q.qtype == QTYPE.A:
                for m in hits:
                    reply.add_answer(RR(q.qname, QTYPE.A, rdata=A(m.ip), ttl=TTL))
        elif "." not in short or net.cfg.internal or qname.endswith("." + SEARCH_DOMAIN):
            reply.header.rcode = RCODE.NXDOMAIN
        else:
            self.forward(net, rec, data, addr)
            return
        try:
            assert net.dns is not None
            net.dns.sendto(reply.pack(), addr)
        except OSError:
            pass

    def forward(self, net: Net, rec: Any, data: bytes, addr: Any) -> None:
        ours = self.next_id
        self.next_id = self.next_id % 65535 + 1
        assert net.dns is not None
        self.pending[ours] = (net.dns, addr, rec.header.id)
        if len(self.pending) > 4096:
            self.pending.pop(next(iter(self.pending)))
        try:
            self.upstream.sendto(ours.to_bytes(2, "big") + data[2:], UPSTREAM_DNS)
        except OSError:
            self.pending.pop(ours, None)

    def from_upstream(self) -> None:
        try:
            data, _ = self.upstream.recvfrom(65536)
        except OSError:
            return
        if len(data) < 2:
            return
        entry = self.pending.pop(int.from_bytes(data[:2], "big"), None)
        if entry is None:
            return
        server, addr, their = entry
        try:
            server.sendto(their.to_bytes(2, "big") + data[2:], addr)
        except OSError:
            pass

    # ------------------------------------------------------------------ the loop

    def run(self, report_fd: int, early: Sequence[Mapping[str, Any]] = ()) -> None:
        os.write(report_fd, json.dumps({"ok": True, "pid": os.getpid()}).encode())
        os.close(report_fd)
        for rec in early:  # the bridges of the run that started us, while it prepares the rest
            try:
                self.ensure_net(NetworkConfig.from_dict(rec))
            except Exception:  # noqa: BLE001 - its attach makes it again and reports why it cannot
                pass
        while True:
            if (self.served or self.owner < 0) and not self.pidfds and not self.clients:
                return
            dns = {n.dns.fileno(): n for n in self.nets.values() if n.dns is not None}
            fds = [self.listener.fileno(), self.upstream.fileno(), *self.clients, *self.pidfds, *dns]
            if self.owner >= 0:
                fds.append(self.owner)
            ready, _, _ = select.select(fds, [], [])
            for fd in ready:
                if fd == self.listener.fileno():
                    conn, _ = self.listener.accept()
                    self.clients[conn.fileno()] = (conn, bytearray())
                    if self.owner >= 0:
                        os.close(self.owner)
                        self.owner = -1
                elif fd == self.owner:
                    os.close(self.owner)  # it ended before it connected: nobody is coming
                    self.owner = -1
                elif fd == self.upstream.fileno():
                    self.from_upstream()
                elif fd in self.clients:
                    self.serve_client(fd)
                elif fd in self.pidfds:
                    cid = self.pidfds[fd]
                    self.detach(cid, None)
                elif fd in dns:
                    net = dns[fd]
                    try:
                        data, addr = net.dns.recvfrom(4096)  # type: ignore[union-attr]
                    except OSError:
                        continue
                    self.answer(net, data, addr)

    def close(self) -> None:
        self.listener.close()  # a command asking from now on is refused, and replaces us
        for net in list(self.nets.values()):
            self.drop_net(net)
        try:
            os.close(self.exit_fd)  # slirp4netns ends (it also has PR_SET_PDEATHSIG: no wait for it)
        except OSError:
            pass
        # Our names are removed under the commands' lock (rootless.runtime.usernet), and only
        # while the PID file names us or is not written (our starter died before it could):
        # a command that found us ending may have removed them and started our successor.
        import fcntl

        d = os.path.dirname(self.sock_path)
        pidfile = os.path.join(d, "netd.pid")
        try:
            lock = os.open(os.path.join(d, "lock"), os.O_RDWR | os.O_CLOEXEC)
        except OSError:
            return
        try:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                with open(pidfile) as f:
                    names = f.read().split()[:1]
            except FileNotFoundError:
                names = []
            except OSError:
                return
            if names in ([], [str(os.getpid())]):
                for path in (self.sock_path, pidfile):
                    try:
                        os.unlink(path)
                    except OSError:
                        pass
        finally:
            os.close(lock)


def _setup_namespace(ready_fd: int) -> None:
    """lo up, forwarding on, the base firewall; then wait for slirp4netns's tap0."""
    with Rtnl() as nl:
        nl.set_up(1)  # lo is the first interface of every network namespace (loopback_net_init)
    with open("/proc/sys/net/ipv4/ip_forward", "w") as f:
        f.write("1")
    _restore(BASE_RULES)
    r, _, _ = select.select([ready_fd], [], [], 10.0)
    data = os.read(ready_fd, 32) if r else b""
    if not data.strip().isdigit():  # slirp4netns writes "1"; pasta its PID (its --pid file is this pipe)
        raise OSError("the way out (slirp4netns or pasta) did not bring up the shared namespace's tap0 in 10 s"
                      if not r else "the way out (slirp4netns or pasta) exited before the shared namespace's tap0 "
                      "was up")
    os.close(ready_fd)


def main(argv: list[str]) -> int:
    """argv: SOCKET REPORT_FD SLIRP_READY_FD SLIRP_EXIT_FD OWNER_PID [NETWORKS]: the records
    (JSON list) of the networks whose bridges are made at once, before any container asks."""
    sock_path = argv[0]
    report, ready, exit_fd, owner = (int(a) for a in argv[1:5])
    early = json.loads(argv[5]) if len(argv) > 5 else []
    for sig in (signal.SIGHUP, signal.SIGINT, signal.SIGPIPE):
        signal.signal(sig, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        _setup_namespace(ready)
        d = Daemon(sock_path, exit_fd, owner)
    except BaseException as e:  # noqa: BLE001 - reported to the spawner, one line
        os.write(report, json.dumps({"error": str(e) or type(e).__name__}).encode())
        return 1
    try:
        d.run(report, early)
    finally:
        d.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
