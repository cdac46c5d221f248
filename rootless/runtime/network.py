"""The runtime's side of ``Spec.network``: slirp4netns for the container's network namespace.

process.start calls ``prepare`` before forking (a missing helper fails before anything
starts) and ``attach`` once the container's PID 1 exists and waits for "go": its namespaces
are then final, so slirp4netns joins them by PID; the published ports are forwarded before
the command is exec'd, so a client that connects as soon as ``run -d`` returns finds them.
TCP ports go through slirp.forwarder (a relay in the container's namespaces, the host
sockets bound here first), UDP ports through slirp4netns's API, except on an IPv6 host address,
which that API does not take: the forwarder relays those too. Both helpers read the same
exit pipe: whoever holds ``Slirp.exit_fd`` keeps them alive.
"""

from __future__ import annotations

import os
import signal
from typing import TYPE_CHECKING

from rootless.errors import RootlessError

if TYPE_CHECKING:
    import socket

    from rootless.context import Log
    from rootless.runtime.idmap import IdMaps
    from rootless.runtime.usernet import UserNet
    from rootless.spec import PortMapping, Spec
    from slirp.supervisor import Slirp


def prepare(spec: Spec) -> str | None:
    """The slirp4netns binary the Spec needs (None: no helper), or the error naming the package."""
    if spec.network.mode != "slirp4netns":
        return None
    from slirp.supervisor import find_binary

    return find_binary()


class Joined:
    """A container on user networks before it starts: the daemon's connection and its user
    namespace, which the container's first process joins (rootless.runtime.usernet)."""

    def __init__(self, spec: Spec, runroot: str) -> None:
        from rootless.runtime import idmap, usernet

        store = idmap.current_store_maps()
        self.client = usernet.connect(runroot, store, host_loopback=("host_loopback", "true") in spec.network.options,
                                      outbound=dict(spec.network.options).get("outbound", "slirp4netns"))
        self.userns_fd = os.open(f"/proc/{self.client.pid}/ns/user", os.O_RDONLY | os.O_CLOEXEC)
        # another mapping than the store's (--userns keep-id): the container makes a user
        # namespace of its own inside the shared one (``map_nested``). The daemon, root of the
        # shared one and of the same user as its creator, keeps every capability in it: the
        # container's veth still moves in.
        self.store = store
        ours = {(m.container_id, m.host_id, m.size) for m in spec.uid_map}
        self.nested = bool(ours) and ours != {(m.container_id, m.host_id, m.size) for m in store.uid_map}

    def map_nested(self, pid: int, maps: IdMaps) -> None:
        """Write the maps of *pid*'s user namespace, made inside the shared one. user_namespaces(7):
        only a process in the parent namespace may, with IDs of the parent (newuidmap, in ours,
        may not); so a child of ours joins the shared namespace (we own it: setns gives every
        capability there) and writes them, translated (idmap.within)."""
        from rootless.runtime import idmap, syscalls

        try:
            uids = idmap.within(maps.uid_map, self.store.uid_map)
            gids = idmap.within(maps.gid_map, self.store.gid_map)
        except ValueError as e:
            raise RootlessError(f"map the container's user namespace inside the user networks' one: {e}") from None
        r, w = os.pipe2(os.O_CLOEXEC)
        child = os.fork()
        if child == 0:  # pragma: no cover - exits
            code = 0
            try:
                os.close(r)
                syscalls.setns(self.userns_fd, syscalls.CLONE_NEWUSER, "join the user networks' user namespace")
                for name, rows in (("uid_map", uids), ("gid_map", gids)):
                    with open(f"/proc/{pid}/{name}", "w") as f:
                        f.write("".join(m.line() + "\n" for m in rows))
            except BaseException as e:  # noqa: BLE001 - reported to the parent, one line
                os.write(w, str(e).encode())
                code = 1
            os._exit(code)
        os.close(w)
        with os.fdopen(r, "rb") as f:
            err = f.read().decode(errors="replace")
        os.waitpid(child, 0)
        if err:
            raise RootlessError(f"map the user namespace of process {pid}: {err}")

    def close(self) -> None:
        if self.userns_fd >= 0:
            os.close(self.userns_fd)
            self.userns_fd = -1
        self.client.close()


def join(spec: Spec, runroot: str | None) -> Joined | None:
    if spec.network.mode != "bridge":
        return None
    if runroot is None:
        raise RootlessError("user networks need the run root", "this is a bug: report it")
    return Joined(spec, runroot)


def attach_user_networks(spec: Spec, joined: Joined, pid: int, log: Log) -> UserNet:
    """Connect the container *pid* to its user networks (eth0, eth1, ... in the order given;
    the default route through the first that is not internal), then forward its ports."""
    import json

    from rootless.runtime.usernet import UserNet

    helper = UserNet()
    try:
        routed = False
        nets = [json.loads(v) for k, v in spec.network.options if k == "attach"]
        for i, a in enumerate(nets):
            default = not routed and not a["net"].get("internal")
            routed = routed or default
            reply = joined.client.call("attach", pid=pid, cid=spec.id, name=spec.name, aliases=a.get("aliases") or [],
                                       net=a["net"], ip=a.get("ip"), ifname=f"eth{i}", default_route=default)
            helper.addresses[a["net"]["name"]] = reply["ip"]
            log.debug(f"container {spec.id[:12]}: {reply['ip']} on network {a['net']['name']}")
        if helper.addresses:
            _own_address(spec, next(iter(helper.addresses.values())))
        # every port, TCP and UDP, through the forwarder in the container's namespaces (the
        # shared namespace's slirp4netns has no route to the container for its hostfwd)
        listeners = _listen(list(spec.network.ports)) if spec.network.ports else []
        try:
            if listeners:
                helper.helpers.append(_start_forwarder(listeners, helper.exit_r, pid))
            helper.published += [q for q, _ in listeners]
        finally:
            for _, sock in listeners:
                sock.close()
    except BaseException:
        helper.stop()
        raise
    return helper


def _arm_death_signal() -> None:
    from rootless.runtime import syscalls

    syscalls.set_pdeathsig(signal.SIGKILL)


def attach(spec: Spec, binary: str, pid: int, log: Log) -> Slirp:
    """Start slirp4netns for the namespaces of *pid*, wait until tap0 is up, forward the ports."""
    from slirp import supervisor
    from slirp.config import SlirpOptions

    opts = SlirpOptions.from_pairs(spec.network.options)
    relayed = [p for p in spec.network.ports if _relayed(p)]
    if not opts.allow_host_loopback and any(not _relayed(p) for p in spec.network.ports):
        log.warn_once("slirp-udp-loopback", "slirp4netns drops UDP replies to clients on this host's loopback "
                      "unless the container may reach it: add --network slirp4netns:allow_host_loopback=true "
                      "to serve local UDP clients")
    import time

    t0 = time.monotonic()
    listeners = _listen(relayed) if relayed else []
    helper = None
    try:
        helper = supervisor.start(binary, pid, opts, spec.rundir, before_exec=_arm_death_signal)
        if listeners:
            helper.helpers.append(_start_forwarder(listeners, helper.exit_r, pid))
        helper.published += [q for q, _ in listeners]
        helper.wait_ready()
        for p in spec.network.ports:
            if not _relayed(p):
                helper.published.append(_forward(helper, p))
        helper.close_api()
    except BaseException:
        if helper is not None:
            helper.stop()
        raise
    finally:
        for _, sock in listeners:
            sock.close()  # the forwarder has its own copies
    for q in helper.published:
        log.debug(f"container {spec.id[:12]} published {describe(q)}")
    log.debug(f"container {spec.id[:12]}: slirp4netns pid {helper.pid} serves its network "
              f"(up in {(time.monotonic() - t0) * 1000:.1f} ms)")
    return helper


def _own_address(spec: Spec, ip: str) -> None:
    """The container's /etc/hosts names its own address once the daemon has chosen it: the
    file is rewritten in place (the container has it bind-mounted, its command not yet run)."""
    path = os.path.join(spec.rundir, "hosts")
    try:
        with open(path, "r+") as f:
            lines = f.read().split("\n")
            for i in range(len(lines) - 1, -1, -1):
                ip_, _, names = lines[i].partition("\t")
                if ip_ == "127.0.0.1" and spec.hostname in names.split():
                    lines[i] = f"{ip}\t{names}"
                    break
            f.seek(0)
            f.write("\n".join(lines))
            f.truncate()
    except OSError:
        pass


def _relayed(p: PortMapping) -> bool:
    """Whether slirp.forwarder relays *p* (TCP, and UDP on an IPv6 host address) rather than slirp4netns."""
    return p.protocol == "tcp" or ":" in p.host_ip


def _listen(ports: list[PortMapping]) -> list[tuple[PortMapping, socket.socket]]:
    """The host side of each relayed port, bound (and listening, for TCP) now: a port taken fails
    here, and a port left out (0) is chosen by the kernel with no window for another process to take it."""
    from dataclasses import replace

    from slirp.forwarder import bind_udp, listen
    from slirp.ports import bind_error

    out: list[tuple[PortMapping, socket.socket]] = []
    try:
        for p in ports:
            try:
                sock = listen(p.host_ip, p.host_port) if p.protocol == "tcp" else bind_udp(p.host_ip, p.host_port)
            except OSError as e:
                raise bind_error(describe(p), p.host_ip, p.host_port, p.container_port, p.protocol, e) from None
            out.append((replace(p, host_port=sock.getsockname()[1]), sock))
    except BaseException:
        for _, sock in out:
            sock.close()
        raise
    return out


def _start_forwarder(listeners: list[tuple[PortMapping, socket.socket]], exit_fd: int, pid: int) -> int:
    """The port forwarder (slirp.forwarder) in the namespaces of the container's PID 1 *pid*."""
    import os

    from rootless.runtime import syscalls
    from slirp.forwarder import Listener
    from slirp.forwarder import start as start_forwarder

    user = os.open(f"/proc/{pid}/ns/user", os.O_RDONLY | os.O_CLOEXEC)
    net = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)

    def enter() -> None:
        syscalls.set_pdeathsig(signal.SIGKILL)
        # setns(2): the user namespace first, which gives the capabilities to join its network one
        syscalls.setns(user, syscalls.CLONE_NEWUSER, f"/proc/{pid}/ns/user")
        syscalls.setns(net, syscalls.CLONE_NEWNET, f"/proc/{pid}/ns/net")

    try:
        return start_forwarder([Listener(s, q.container_port, q.protocol) for q, s in listeners], exit_fd, enter)
    finally:
        os.close(user)
        os.close(net)


def _forward(helper: Slirp, p: PortMapping) -> PortMapping:
    """Forward one port; a host port left out (0) is chosen now, again if another process takes
    it between our choice and slirp4netns's bind."""
    from dataclasses import replace

    from slirp import api
    from slirp.ports import pick_port

    tries = 16 if p.host_port == 0 else 1
    for attempt in range(tries):
        q = replace(p, host_port=pick_port(p.host_ip, p.protocol)) if p.host_port == 0 else p
        try:
            api.add_hostfwd(helper.api_path, q.protocol, q.host_ip, q.host_port, q.container_port)
            return q
        except RootlessError as e:
            if attempt + 1 < tries:
                continue
            tail = helper.log_tail(1)
            raise RootlessError(f"publish {describe(q)}: {e.message}" + (f" ({tail})" if tail else ""),
                                "the host port was taken after it was checked: publish another one") from None
    raise AssertionError("unreachable")


def published(started_network: Slirp | UserNet | None) -> list[PortMapping]:
    """The ports a started container's slirp4netns forwards, host ports chosen (for `rootless port`)."""
    return list(started_network.published) if started_network is not None else []


def detach(helper: Slirp | UserNet | None) -> None:
    if helper is not None:
        helper.stop(wait=False)


def host_side(p: PortMapping) -> str:
    """``0.0.0.0:8080``, ``[::1]:8080``: a published port's host address as Podman shows it."""
    from slirp.ports import host_address

    return f"{host_address(p.host_ip)}:{p.host_port}"


def describe(p: PortMapping) -> str:
    """``0.0.0.0:8080 -> 80/tcp``"""
    return f"{host_side(p)} -> {p.container_port}/{p.protocol}"


def port_lines(spec: Spec) -> list[str]:
    """The container's published ports as `podman port` lists them: ``80/tcp -> 0.0.0.0:8080``."""
    return [f"{p.container_port}/{p.protocol} -> {host_side(p)}" for p in spec.network.ports]
