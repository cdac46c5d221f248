"""User networks as the engine uses them: records, `run --network NAME`, who uses which,
connect/disconnect of running containers, the views `network ls/inspect` render.

slirp.usernet keeps the records and address rules; rootless.runtime.usernet runs the daemon
that holds the shared namespace. This module knows containers; it prints nothing.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from rootless.errors import RootlessError
from slirp.usernet import NetworkConfig, NetworkInUse, NetworkStore, NoSuchNetwork

if TYPE_CHECKING:
    from rootless.context import Context
    from rootless.lifecycle import Container
    from rootless.runtime.usernet import Client

MODES = ("slirp4netns", "none", "host")


def store(ctx: Context) -> NetworkStore:
    return NetworkStore(ctx.layout.networks)


def _lock(ctx: Context) -> Any:
    from storage.locks import FileLock

    ctx.layout.locks.mkdir(parents=True, exist_ok=True, mode=0o700)
    return FileLock(ctx.layout.locks / "networks.lock")


def for_run(ctx: Context, nets: Sequence[str], aliases: Sequence[str], ip: str | None) -> tuple[str, tuple[str, ...]]:
    """("bridge", the attachments) for `run --network NAME...`; the bad combinations refused."""
    from rootless.image.specgen import OTHER_MODES

    modes = [n for n in nets if n.partition(":")[0] in MODES + OTHER_MODES]
    if modes:
        other = next((n for n in nets if n not in modes), None)
        if other is not None:
            raise RootlessError(f"--network {modes[0]} cannot be combined with the user network {other}",
                                "give either a network mode or user networks")
        raise RootlessError(f"--network {modes[0]} given more than once or with other modes",
                            "give one network mode")
    seen: set[str] = set()
    out = []
    vs = store(ctx)
    for i, n in enumerate(nets):
        try:
            cfg = vs.get(n)
        except NoSuchNetwork as e:
            raise RootlessError(e.message, "create it with `rootless network create NAME`, or see "
                                "`rootless network ls`") from None
        if cfg.name in seen:
            raise RootlessError(f"--network {n} given twice")
        seen.add(cfg.name)
        want_ip = ip if i == 0 else None
        if want_ip is not None:
            cfg.check_address(want_ip)
        out.append(json.dumps({"net": cfg.to_dict(), "ip": want_ip, "aliases": list(aliases)}))
    return "bridge", tuple(out)


def prestart(ctx: Context, attached: Sequence[str] = ()) -> None:
    """Start the user's network daemon now if none runs (rootless.runtime.usernet.prestart),
    making the bridges of the networks *attached* (for_run's) while `run` proceeds."""
    from rootless.runtime import idmap, usernet

    ctx.layout.ensure_runroot()
    usernet.prestart(str(ctx.layout.runroot), idmap.current_store_maps(),
                     host_loopback=ctx.config.network_host_loopback,
                     outbound=ctx.config.network_outbound, nets=[json.loads(a)["net"] for a in attached])


def abandon() -> None:
    """The run that prestarted the daemon failed before using it: the daemon ends."""
    from rootless.runtime import usernet

    usernet.abandon()


def release() -> None:
    """The run's monitor took the prestarted daemon over: this process lets go of it."""
    from rootless.runtime import usernet

    usernet.release()


def attachments(c: Container) -> list[dict[str, Any]]:
    spec = c.config.spec
    if spec.network.mode != "bridge":
        return []
    return [json.loads(v) for k, v in spec.network.options if k == "attach"]


def users(ctx: Context) -> dict[str, list[Container]]:
    """network name → the containers whose record names it (any state)."""
    from rootless import lifecycle

    out: dict[str, list[Container]] = {}
    for c in lifecycle.all_containers(ctx):
        for a in attachments(c):
            out.setdefault(a["net"]["name"], []).append(c)
    return out


def running_client(ctx: Context) -> Client | None:
    """The user's network daemon when it runs (never started for a view)."""
    from rootless.runtime import usernet

    return usernet.running(str(ctx.layout.runroot))


def endpoints(ctx: Context, c: Container, live: dict[str, dict[str, Any]] | None = None) -> dict[str, dict[str, Any]]:
    """network name → the container's endpoint on it, as `podman inspect` shows it
    (NetworkSettings.Networks.NAME, Podman 4 on netavark): address, prefix, gateway and MAC
    while it runs (the daemon's view), empty when it does not; its aliases and short ID always.
    *live*: the daemon's members (``members``), when the caller has them already."""
    import ipaddress

    attached = attachments(c)
    if not attached:
        return {}
    running = bool(c.state.running)
    if live is None:
        live = members(ctx) if running else {}
    out: dict[str, dict[str, Any]] = {}
    for a in attached:
        name = a["net"]["name"]
        m = live.get(name, {}).get(c.id) if running else None
        out[name] = {
            "EndpointID": "", "Gateway": a["net"]["gateway"] if m else "", "IPAddress": m["ip"] if m else "",
            "IPPrefixLen": ipaddress.ip_network(a["net"]["subnet"]).prefixlen if m else 0,
            "IPv6Gateway": "", "GlobalIPv6Address": "", "GlobalIPv6PrefixLen": 0,
            "MacAddress": m["mac"] if m else "", "NetworkID": name, "DriverOpts": None, "IPAMConfig": None,
            "Links": None, "Aliases": [*(a.get("aliases") or ()), c.id[:12]],
        }
    return out


def settings(ctx: Context, c: Container) -> dict[str, Any]:
    """NetworkSettings of `inspect` but its Ports: Networks (``endpoints``) and, at the top, the
    first network's address, gateway, prefix and MAC (Podman 4.3 leaves those empty for a user
    network; Docker fills them for its default bridge, and scripts read
    ``{{.NetworkSettings.IPAddress}}``)."""
    nets = endpoints(ctx, c)
    first: dict[str, Any] = next(iter(nets.values()), {})
    pid = c.state.pid if c.state.running else 0
    mode = c.config.spec.network.mode
    out: dict[str, Any] = {
        "EndpointID": "", "Gateway": first.get("Gateway", ""), "IPAddress": first.get("IPAddress", ""),
        "IPPrefixLen": first.get("IPPrefixLen", 0), "IPv6Gateway": "", "GlobalIPv6Address": "",
        "GlobalIPv6PrefixLen": 0, "MacAddress": first.get("MacAddress", ""), "Bridge": "", "SandboxID": "",
        "HairpinMode": False, "LinkLocalIPv6Address": "", "LinkLocalIPv6PrefixLen": 0,
        # the container's network namespace (Podman names its netns file; ours is the process's)
        "SandboxKey": f"/proc/{pid}/ns/net" if pid and mode != "host" else "",
    }
    if nets:
        out["Networks"] = nets
    return out


# --------------------------------------------------------------------------- commands


def create(ctx: Context, name: str | None, *, subnet: str | None, gateway: str | None, internal: bool,
           disable_dns: bool, labels: Iterable[str]) -> NetworkConfig:
    from slirp.usernet import host_routes

    lab: dict[str, str] = {}
    for item in labels:
        k, _, v = item.partition("=")
        if not k:
            raise RootlessError(f"--label {item!r}: expected KEY=VALUE")
        lab[k] = v
    try:
        with open("/proc/net/route") as f:
            routes = host_routes(f.read())
    except OSError:
        routes = []
    with _lock(ctx):
        return store(ctx).create(name, subnet=subnet, gateway=gateway, internal=internal, dns=not disable_dns,
                                 labels=lab, routes=routes)


def inspect(ctx: Context, cfg: NetworkConfig, members: dict[str, Any] | None = None) -> dict[str, Any]:
    """A network as `podman network inspect` (Podman 4, netavark) shows it."""
    import ipaddress

    net = ipaddress.ip_network(cfg.subnet)
    return {
        "name": cfg.name, "id": cfg.id, "driver": "bridge", "network_interface": cfg.bridge,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(cfg.created))
        + time.strftime("%z", time.localtime(cfg.created)),
        "subnets": [{"subnet": str(net), "gateway": cfg.gateway}], "ipv6_enabled": False,
        "internal": cfg.internal, "dns_enabled": cfg.dns_enabled, "labels": dict(cfg.labels),
        "ipam_options": {"driver": "host-local"},
        "containers": members or {},
    }


def members(ctx: Context, name: str | None = None) -> dict[str, dict[str, Any]]:
    """network → {container ID → {name, ip, mac, aliases}} of the running attachments."""
    c = running_client(ctx)
    if c is None:
        return {}
    try:
        return dict(c.call("members", net=name)["members"])
    finally:
        c.close()


def listing(ctx: Context, filters: Iterable[str] = ()) -> list[NetworkConfig]:
    import re

    want: list[tuple[str, str]] = []
    for f in filters:
        k, sep, v = f.partition("=")
        if not sep or k not in ("name", "label", "id", "driver"):
            raise RootlessError(f"invalid network filter {f!r}", "supported: name=, id=, label=KEY[=VALUE], driver=")
        want.append((k, v))
    out = []
    for cfg in store(ctx).list():
        ok: dict[str, bool] = {}
        for k, v in want:
            if k == "name":
                hit = re.search(v, cfg.name) is not None
            elif k == "id":
                hit = cfg.id.startswith(v)
            elif k == "driver":
                hit = v == "bridge"
            else:
                lk, eq, lv = v.partition("=")
                hit = lk in cfg.labels and (not eq or cfg.labels[lk] == lv)
            ok[k] = ok.get(k, False) or hit
        if all(ok.values()):
            out.append(cfg)
    return out


def remove(ctx: Context, name: str, force: bool) -> str:
    """`network rm`: refused while a container's record names it; -f removes those containers."""
    from rootless import lifecycle

    cfg = store(ctx).get(name)
    users_ = users(ctx).get(cfg.name, [])
    if users_ and not force:
        raise NetworkInUse(f"network {cfg.name} is being used by container(s): "
                           + ", ".join(c.config.name for c in users_),
                           "remove them first, or use `rootless network rm -f` to remove them too")
    for c in users_:
        lifecycle.remove(ctx, c.id, force=True)
    with _lock(ctx):
        store(ctx).remove(cfg.name)
    return cfg.name


def prune(ctx: Context) -> list[str]:
    used = users(ctx)
    out = []
    with _lock(ctx):
        for cfg in store(ctx).list():
            if cfg.name not in used:
                store(ctx).remove(cfg.name)
                out.append(cfg.name)
    return out


@contextmanager
def _record(ctx: Context, ref: str) -> Iterator[tuple[str, Any, Any]]:
    """(ID, record, state) of the container *ref*, under its lock."""
    from rootless import lifecycle
    from rootless.runtime import state

    cid = lifecycle.resolve(ctx, ref)
    with state.locked(ctx.layout, cid):
        yield cid, state.load_config(ctx.layout, cid), state.read_state(ctx.layout, cid)


def _save(ctx: Context, conf: Any, options: tuple[tuple[str, str], ...]) -> None:
    from rootless.record import replace
    from rootless.runtime import state

    spec = conf.spec
    state.save_config(ctx.layout, replace(conf, spec=replace(spec, network=replace(spec.network, options=options))))


def _alive(st: Any) -> bool:
    from rootless.runtime import state

    return bool(st.running and state.alive(st.pid, st.pid_start))


def connect(ctx: Context, name: str, ref: str, aliases: Sequence[str], ip: str | None) -> None:
    """Add the network to the container's record and, when it runs, attach it now."""
    cfg = store(ctx).get(name)
    with _record(ctx, ref) as (cid, conf, st):
        spec = conf.spec
        if spec.network.mode != "bridge":
            raise RootlessError(f"container {conf.name} is on the {spec.network.mode} network: only a container "
                                "started on user networks can join another", "recreate it with --network NAME")
        current = [json.loads(v) for k, v in spec.network.options if k == "attach"]
        if any(a["net"]["name"] == cfg.name for a in current):
            raise RootlessError(f"container {conf.name} is already connected to network {cfg.name}")
        if ip is not None:
            cfg.check_address(ip)
        entry = {"net": cfg.to_dict(), "ip": ip, "aliases": list(aliases)}
        if _alive(st):
            from rootless.runtime import idmap, usernet

            c = usernet.connect(str(ctx.layout.runroot), idmap.current_store_maps(),
                                host_loopback=ctx.config.network_host_loopback,
                                outbound=ctx.config.network_outbound)
            try:
                c.call("attach", pid=st.pid, cid=cid, name=conf.name, aliases=list(aliases), net=cfg.to_dict(),
                       ip=ip, ifname=f"eth{_next_if(st.pid, len(current))}", default_route=False)
            finally:
                c.close()
        _save(ctx, conf, (*spec.network.options, ("attach", json.dumps(entry))))


def _next_if(pid: int, attached: int) -> int:
    """The first free ethN in the container's network namespace (its own /sys shows it)."""
    import os

    try:
        names = set(os.listdir(f"/proc/{pid}/root/sys/class/net"))
    except OSError:
        return attached
    n = 0
    while f"eth{n}" in names:
        n += 1
    return n


def disconnect(ctx: Context, name: str, ref: str) -> None:
    """Drop the network from the container's record and, when it runs, detach it now."""
    cfg = store(ctx).get(name)
    with _record(ctx, ref) as (cid, conf, st):
        opts = conf.spec.network.options
        keep = tuple((k, v) for k, v in opts if not (k == "attach" and json.loads(v)["net"]["name"] == cfg.name))
        if len(keep) == len(opts):
            raise RootlessError(f"container {conf.name} is not connected to network {cfg.name}")
        if _alive(st):
            c = running_client(ctx)
            if c is not None:
                try:
                    c.call("detach", cid=cid, net=cfg.name)
                finally:
                    c.close()
        _save(ctx, conf, keep)
