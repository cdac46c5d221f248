"""The runtime's side of ``Spec.network``: slirp4netns for the container's network namespace.

process.start calls ``prepare`` before forking (a missing helper fails before anything
starts) and ``attach`` once the container's PID 1 exists and waits for "go": its namespaces
are then final, so slirp4netns joins them by PID; the published ports are forwarded before
the command is exec'd, so a client that connects as soon as ``run -d`` returns finds them.
TCP ports go through slirp.forwarder (a relay in the container's namespaces, the host
sockets bound here first), UDP ports through slirp4netns's API. Both helpers read the same
exit pipe: whoever holds ``Slirp.exit_fd`` keeps them alive.
"""

from __future__ import annotations

import signal
from typing import TYPE_CHECKING

from rootless.errors import RootlessError

if TYPE_CHECKING:
    import socket

    from rootless.context import Log
    from rootless.spec import PortMapping, Spec
    from slirp.supervisor import Slirp


def prepare(spec: Spec) -> str | None:
    """The slirp4netns binary the Spec needs (None: no helper), or the error naming the package."""
    if spec.network.mode != "slirp4netns":
        return None
    from slirp.supervisor import find_binary

    return find_binary()


def _arm_death_signal() -> None:
    from rootless.runtime import syscalls

    syscalls.set_pdeathsig(signal.SIGKILL)


def attach(spec: Spec, binary: str, pid: int, log: Log) -> Slirp:
    """Start slirp4netns for the namespaces of *pid*, wait until tap0 is up, forward the ports."""
    from slirp import supervisor
    from slirp.config import SlirpOptions

    opts = SlirpOptions.from_pairs(spec.network.options)
    if not opts.allow_host_loopback and any(p.protocol == "udp" for p in spec.network.ports):
        log.warn_once("slirp-udp-loopback", "slirp4netns drops UDP replies to clients on this host's loopback "
                      "unless the container may reach it: add --network slirp4netns:allow_host_loopback=true "
                      "to serve local UDP clients")
    import time

    t0 = time.monotonic()
    tcp = [p for p in spec.network.ports if p.protocol == "tcp"]
    listeners = _listen(tcp) if tcp else []
    helper = None
    try:
        helper = supervisor.start(binary, pid, opts, spec.rundir, before_exec=_arm_death_signal)
        if listeners:
            helper.helpers.append(_start_forwarder(listeners, helper.exit_r, pid))
        helper.published += [q for q, _ in listeners]
        helper.wait_ready()
        for p in spec.network.ports:
            if p.protocol != "tcp":
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


def _listen(ports: list[PortMapping]) -> list[tuple[PortMapping, socket.socket]]:
    """The host side of each TCP port, bound and listening now: a port taken fails here, and a
    port left out (0) is chosen by the kernel with no window for another process to take it."""
    from dataclasses import replace

    from slirp.forwarder import listen
    from slirp.ports import bind_error

    out: list[tuple[PortMapping, socket.socket]] = []
    try:
        for p in ports:
            try:
                sock = listen(p.host_ip, p.host_port)
            except OSError as e:
                raise bind_error(describe(p), p.host_ip, p.host_port, p.container_port, p.protocol, e) from None
            out.append((replace(p, host_port=sock.getsockname()[1]), sock))
    except BaseException:
        for _, sock in out:
            sock.close()
        raise
    return out


def _start_forwarder(listeners: list[tuple[PortMapping, socket.socket]], exit_fd: int, pid: int) -> int:
    """The TCP forwarder (slirp.forwarder) in the namespaces of the container's PID 1 *pid*."""
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
        return start_forwarder([Listener(s, q.container_port) for q, s in listeners], exit_fd, enter)
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


def published(started_network: Slirp | None) -> list[PortMapping]:
    """The ports a started container's slirp4netns forwards, host ports chosen (for `rootless port`)."""
    return list(started_network.published) if started_network is not None else []


def detach(helper: Slirp | None) -> None:
    if helper is not None:
        helper.stop(wait=False)


def describe(p: PortMapping) -> str:
    """``0.0.0.0:8080 -> 80/tcp``"""
    return f"{p.host_ip or '0.0.0.0'}:{p.host_port} -> {p.container_port}/{p.protocol}"


def port_lines(spec: Spec) -> list[str]:
    """The container's published ports as `podman port` lists them: ``80/tcp -> 0.0.0.0:8080``."""
    return [f"{p.container_port}/{p.protocol} -> {p.host_ip or '0.0.0.0'}:{p.host_port}"
            for p in spec.network.ports]
