"""/containers/…: Docker's container endpoints over the same engine calls as the CLI, so a
container made here is in `rootless ps` and one made by `rootless run` is in `docker ps`."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from typing import TYPE_CHECKING, Any

from rootless import lifecycle
from rootless.api import ctrmeta
from rootless.api.http import ApiError, BadRequest, ClientGone, Conflict, NotFound, Request
from rootless.api.streams import client_gone
from rootless.errors import NotFoundError, RootlessError
from rootless.runtime import state
from rootless.runtime.state import NoSuchContainer

if TYPE_CHECKING:
    from collections.abc import Callable

    from rootless.context import Context
    from rootless.image.specgen import RunOptions
    from rootless.lifecycle import Container


def _cid(ctx: Context, req: Request) -> str:
    ref = req.params["id"]  # type: ignore[attr-defined]
    try:
        return lifecycle.resolve(ctx, ref.lstrip("/"))
    except NoSuchContainer:
        raise NotFound(f"No such container: {ref}") from None


def _load(ctx: Context, cid: str) -> Container:
    try:
        return lifecycle.load(ctx, cid)
    except NoSuchContainer:
        raise NotFound(f"No such container: {cid}") from None


# --------------------------------------------------------------------------- create

# HostConfig fields with no counterpart here: a request that sets one is refused (400)
# rather than silently run without it.
_UNSUPPORTED_HOST = ("DeviceRequests", "VolumesFrom", "Links", "UsernsMode", "BlkioWeight", "BlkioDeviceReadBps",
                     "BlkioDeviceWriteBps", "CgroupParent", "Runtime", "OomKillDisable",
                     "StorageOpt", "VolumeDriver", "KernelMemory", "CpuRealtimePeriod", "CpuRealtimeRuntime",
                     "DeviceCgroupRules", "Isolation")
_UNSUPPORTED_CONFIG = ("Shell", "OnBuild", "MacAddress", "NetworkDisabled")
_RESTART = ("", "no", "always", "unless-stopped", "on-failure")


def _unsupported(section: str, data: dict[str, Any], fields: tuple[str, ...]) -> None:
    for k in fields:
        v = data.get(k)
        if v in (None, "", 0, False, [], {}) or (k == "Isolation" and v == "default"):
            continue
        raise BadRequest(f"{section}.{k} is not supported by rootless (got {json.dumps(v)})")


def _network(host: dict[str, Any], body: dict[str, Any], ctx: Context) -> tuple[str, tuple[str, ...], tuple[str, ...],
                                                                       str | None, dict[str, Any]]:
    """(network mode, user networks, the first one's aliases and address, the other endpoints) of
    HostConfig.NetworkMode and NetworkingConfig.EndpointsConfig: the mode names a user network (or
    Docker's default ``bridge``, slirp4netns here) and the endpoints give its aliases; an endpoint
    on another network is connected once the container exists, as `docker network connect` would."""
    from rootless.api.networks import endpoint_args

    mode = host.get("NetworkMode") or "default"
    endpoints = (body.get("NetworkingConfig") or {}).get("EndpointsConfig") or {}
    if not isinstance(endpoints, dict):
        raise BadRequest("NetworkingConfig.EndpointsConfig: expected an object")
    if mode in ("default", "bridge"):
        for key in ("default", "bridge"):
            if any(endpoint_args(endpoints.get(key))):
                raise BadRequest(f"NetworkingConfig.EndpointsConfig.{key}: aliases and addresses need a user "
                                 "network (docker network create)")
        others = {k: v for k, v in endpoints.items() if k not in ("default", "bridge")}
        if others:
            raise BadRequest(f"NetworkingConfig.EndpointsConfig.{next(iter(others))}: the default network cannot be "
                             "combined with user networks here (set HostConfig.NetworkMode to one of them)")
        return ctx.config.network, (), (), None, {}  # the default network here is slirp4netns
    if mode in ("none", "host", "slirp4netns") or mode.startswith(("slirp4netns:", "container:")):
        if endpoints:
            raise BadRequest(f"NetworkingConfig.EndpointsConfig: HostConfig.NetworkMode {mode!r} has no endpoints")
        return mode, (mode,), (), None, {}  # container:NAME: that container's network (run --network)
    aliases, ip = endpoint_args(endpoints.get(mode))
    return mode, (mode,), tuple(aliases), ip, {k: v for k, v in endpoints.items() if k != mode}


def _publish(host: dict[str, Any]) -> tuple[str, ...]:
    out = []
    for port, bindings in (host.get("PortBindings") or {}).items():
        cport, _, proto = port.partition("/")
        for b in bindings or [{}]:
            hip = (b or {}).get("HostIp") or ""
            hport = (b or {}).get("HostPort") or ""
            spec = f"{cport}/{proto or 'tcp'}"
            if hip:
                if ":" in hip:
                    hip = f"[{hip}]"
                out.append(f"{hip}:{hport}:{spec}")
            elif hport:
                out.append(f"{hport}:{spec}")
            else:
                out.append(spec)
    return tuple(out)


def _mounts(host: dict[str, Any]) -> tuple[str, ...]:
    out = []
    for m in host.get("Mounts") or []:
        kind = (m.get("Type") or "volume").lower()
        if kind not in ("bind", "tmpfs", "volume"):
            raise BadRequest(f"HostConfig.Mounts: type {kind!r} is not supported by rootless (bind, volume and "
                             "tmpfs are)")
        parts = [f"type={kind}"]
        if m.get("Source"):
            parts.append(f"source={m['Source']}")
        parts.append(f"target={m.get('Target') or ''}")
        if m.get("ReadOnly"):
            parts.append("readonly")
        opts = m.get("TmpfsOptions") or {}
        if kind == "tmpfs" and opts.get("SizeBytes"):
            parts.append(f"tmpfs-size={opts['SizeBytes']}")
        out.append(",".join(parts))
    return tuple(out)


def _anonymous(body: dict[str, Any], host: dict[str, Any]) -> tuple[str, ...]:
    """Config.Volumes's paths that no bind, mount or tmpfs covers: anonymous volumes, as
    `rootless run -v PATH` makes them (compose lists every volume's path there, named ones too)."""
    wanted = body.get("Volumes") or {}
    if not isinstance(wanted, dict):
        raise BadRequest("Config.Volumes: expected an object of paths")
    covered = {b.split(":")[1] if ":" in b else b for b in host.get("Binds") or ()}
    covered |= {m.get("Target") for m in host.get("Mounts") or ()} | set(host.get("Tmpfs") or {})
    return tuple(p for p in wanted if p.rstrip("/") not in {str(c).rstrip("/") for c in covered})


def _confinement(host: dict[str, Any]) -> dict[str, Any]:
    """HostConfig's devices, ulimits, sysctls, groups, /dev/shm size and shared namespaces → the
    RunOptions `rootless run` gets from --device, --ulimit, --sysctl, --group-add, --shm-size,
    --pid, --ipc and --uts (which check them)."""
    try:
        devices = tuple(f"{d['PathOnHost']}:{d.get('PathInContainer') or d['PathOnHost']}:"
                        f"{d.get('CgroupPermissions') or 'rwm'}" for d in host.get("Devices") or ())
        ulimits = tuple(f"{u['Name']}={int(u['Soft'])}:{int(u['Hard'])}" for u in host.get("Ulimits") or ())
    except (KeyError, TypeError, ValueError) as e:
        raise BadRequest(f"HostConfig.Devices/Ulimits: a malformed entry ({type(e).__name__}: {e})") from None
    shm = host.get("ShmSize")
    return {"device": devices, "ulimit": ulimits,
            "sysctl": tuple(f"{k}={v}" for k, v in (host.get("Sysctls") or {}).items()),
            "group_add": tuple(str(g) for g in host.get("GroupAdd") or ()),
            "shm_size": str(int(shm)) if shm else None,
            "pid": host.get("PidMode") or None, "ipc": host.get("IpcMode") or None, "uts": host.get("UTSMode") or None}


def _health(body: dict[str, Any]) -> dict[str, Any]:
    """Config.Healthcheck → the --health-* options (durations in nanoseconds; Test as the JSON
    array --health-cmd also takes; ["NONE"] turns the image's check off)."""
    hc = body.get("Healthcheck")
    if not hc:
        return {}
    if not isinstance(hc, dict):
        raise BadRequest("Config.Healthcheck: expected an object")
    out: dict[str, Any] = {}
    test = hc.get("Test")
    if test:
        if not isinstance(test, list) or not all(isinstance(x, str) for x in test):
            raise BadRequest("Config.Healthcheck.Test: expected a list of strings")
        out["health_cmd"] = "none" if test[0] == "NONE" else json.dumps(test)
    for key, opt in (("Interval", "health_interval"), ("Timeout", "health_timeout"),
                     ("StartPeriod", "health_start_period")):
        if hc.get(key):
            out[opt] = f"{int(hc[key]) / 1e9}s"
    if hc.get("Retries"):
        out["health_retries"] = str(int(hc["Retries"]))
    return out


def _num(v: Any) -> str | None:
    return str(v) if v not in (None, 0, "", -0) else None


def run_options(ctx: Context, body: dict[str, Any], name: str | None) -> tuple[RunOptions, dict[str, Any]]:
    """Docker's create body → the engine's RunOptions (the flags `rootless run` would be given),
    and what only the API keeps (labels, restart policy)."""
    from rootless.image.specgen import RunOptions

    host = body.get("HostConfig") or {}
    if not isinstance(body, dict) or not isinstance(host, dict):
        raise BadRequest("the create body must be a JSON object")
    image = body.get("Image")
    if not image:
        raise BadRequest("Config.Image: no image given")
    _unsupported("Config", body, _UNSUPPORTED_CONFIG)
    _unsupported("HostConfig", host, _UNSUPPORTED_HOST)
    policy = host.get("RestartPolicy") or {}
    restart = policy.get("Name") or ""
    if restart not in _RESTART:
        raise BadRequest(f"HostConfig.RestartPolicy.Name {restart!r}: must be one of no, always, "
                         "unless-stopped, on-failure")
    if restart == "on-failure" and policy.get("MaximumRetryCount"):
        restart = f"on-failure:{int(policy['MaximumRetryCount'])}"
    labels = body.get("Labels") or {}
    if not isinstance(labels, dict):
        raise BadRequest("Config.Labels: expected an object of strings")
    stop_timeout = body.get("StopTimeout")
    entrypoint = body.get("Entrypoint")
    if isinstance(entrypoint, str):
        entrypoint = [entrypoint]
    tmpfs = tuple(f"{path}:{opts}" if opts else path for path, opts in (host.get("Tmpfs") or {}).items())
    nano = host.get("NanoCpus") or 0
    swap = host.get("MemorySwap")
    network, nets, aliases, ip, more = _network(host, body, ctx)
    opts = RunOptions(
        image=image, command=tuple(body.get("Cmd") or ()), name=name, rm=bool(host.get("AutoRemove")),
        interactive=bool(body.get("OpenStdin")), tty=bool(body.get("Tty")), env=tuple(body.get("Env") or ()),
        workdir=body.get("WorkingDir") or None, user=body.get("User") or None,
        entrypoint=json.dumps(entrypoint) if entrypoint is not None else None,
        hostname=body.get("Hostname") or None, init=bool(host.get("Init")),
        cap_add=tuple(host.get("CapAdd") or ()), cap_drop=tuple(host.get("CapDrop") or ()),
        security_opt=tuple(host.get("SecurityOpt") or ()), privileged=bool(host.get("Privileged")),
        network=network, networks=nets, network_alias=aliases, ip=ip,
        volumes=(*(host.get("Binds") or ()), *_anonymous(body, host)), mounts=_mounts(host), tmpfs=tmpfs,
        read_only=bool(host.get("ReadonlyRootfs")), publish=_publish(host),
        publish_all=bool(host.get("PublishAllPorts")), dns=tuple(host.get("Dns") or ()),
        dns_search=tuple(host.get("DnsSearch") or ()), dns_option=tuple(host.get("DnsOptions") or ()),
        add_host=tuple(host.get("ExtraHosts") or ()), memory=_num(host.get("Memory")),
        memory_swap=str(swap) if swap not in (None, 0) else None,
        memory_reservation=_num(host.get("MemoryReservation")), cpus=str(nano / 1e9) if nano else None,
        cpu_shares=_num(host.get("CpuShares")), cpu_quota=_num(host.get("CpuQuota")),
        cpu_period=_num(host.get("CpuPeriod")), cpuset_cpus=host.get("CpusetCpus") or None,
        pids_limit=_num(host.get("PidsLimit")) if (host.get("PidsLimit") or 0) > 0 else None,
        oom_score_adj=_num(host.get("OomScoreAdj")), cgroup_manager=ctx.config.cgroup_manager,
        label=tuple(f"{k}={v}" for k, v in labels.items()), restart=restart or None,
        stop_signal=body.get("StopSignal") or None,
        stop_timeout=str(stop_timeout) if stop_timeout is not None else None, **_confinement(host), **_health(body))
    meta = {"Config": {k: body.get(k) for k in ("Env", "Cmd", "Entrypoint", "Tty", "OpenStdin",
                                                "StdinOnce", "AttachStdin", "AttachStdout", "AttachStderr",
                                                "ExposedPorts", "Hostname", "User", "WorkingDir", "Image")},
            "HostConfig": {k: host.get(k) for k in ("Binds", "PortBindings", "AutoRemove",
                                                    "NetworkMode", "Mounts", "PublishAllPorts", "Memory",
                                                    "NanoCpus", "CpuShares", "Init", "Privileged", "CapAdd",
                                                    "CapDrop")},
            "Connect": more}
    return opts, meta


def create(ctx: Context, req: Request) -> None:
    body = req.json()
    name = req.q("name") or None
    if name is not None:
        name = name.lstrip("/")
    opts, meta = run_options(ctx, body, name)
    from rootless import engine
    from rootless.errors import NamespaceError, StorageError

    try:
        made = engine.create(ctx, opts, pull="never", platform=req.q("platform") or None)
    except NotFoundError:
        # the docker CLI pulls on this answer, then creates again
        raise NotFound(f"No such image: {opts.image}") from None
    except (StorageError, NamespaceError):
        raise
    except RootlessError as e:
        if "already in use" in e.message:
            raise Conflict(e.message) from None
        raise BadRequest(f"{e.message} ({e.hint})" if e.hint else e.message) from None  # the request's values
    more = meta.pop("Connect")
    ctrmeta.save(ctx, made.id, meta)
    if more:
        _connect_more(ctx, made.id, more)
    req.conn.respond_json(201, {"Id": made.id, "Warnings": []})


def _connect_more(ctx: Context, cid: str, endpoints: dict[str, Any]) -> None:
    """The endpoints beyond HostConfig.NetworkMode's: connected, each with its own aliases; the
    container goes again if one cannot be (nothing half-made is left)."""
    from rootless import networks
    from rootless.api.networks import endpoint_args

    try:
        for name, endpoint in endpoints.items():
            aliases, ip = endpoint_args(endpoint)
            networks.connect(ctx, name, cid, aliases, ip)
    except (RootlessError, ApiError) as e:
        with contextlib.suppress(RootlessError):
            lifecycle.remove(ctx, cid, force=True)
        if isinstance(e, ApiError):
            raise
        if isinstance(e, NotFoundError):
            raise NotFound(e.message) from None
        raise BadRequest(f"{e.message} ({e.hint})" if e.hint else e.message) from None


# --------------------------------------------------------------------------- views


def _status(c: Container) -> str:
    return lifecycle.status_name(c.state)


def _ports(c: Container) -> list[dict[str, Any]]:
    return [{"IP": p.host_ip or "0.0.0.0", "PrivatePort": p.container_port, "PublicPort": p.host_port,
             "Type": p.protocol} for p in lifecycle.published(c)]


def _summary(ctx: Context, c: Container, live: dict[str, Any] | None) -> dict[str, Any]:
    spec = c.config.spec
    nets = _networks(ctx, c, live)
    return {
        "Id": c.id, "Names": [f"/{c.config.name}"], "Image": c.config.image, "ImageID": f"sha256:{c.config.image_id}",
        "Command": " ".join(spec.process.args), "Created": int(c.config.created), "Ports": _ports(c),
        "Labels": dict(c.config.labels), "State": _status(c), "Status": lifecycle.status_text(c, time.time()),
        "HostConfig": {"NetworkMode": next(iter(nets), "") if spec.network.mode == "bridge" else spec.network.mode},
        "NetworkSettings": {"Networks": nets}, "Mounts": _mount_points(c),
    }


def _networks(ctx: Context, c: Container, live: dict[str, Any] | None = None) -> dict[str, Any]:
    """NetworkSettings.Networks: the user networks' endpoints (rootless.networks.endpoints: the
    address while it runs, the aliases with the short ID always, as compose expects), else the
    one network of its mode. *live*: the network daemon's members, when the caller has them."""
    mode = c.config.spec.network.mode
    if mode == "none":
        return {}
    if mode == "bridge":
        from rootless import networks

        return networks.endpoints(ctx, c, live)
    ip = "10.0.2.100" if mode.startswith("slirp4netns") and c.state.running else ""
    return {mode.split(":")[0]: {"IPAddress": ip, "Gateway": "10.0.2.2" if ip else "", "IPPrefixLen": 24 if ip else 0,
                                 "MacAddress": "", "NetworkID": mode, "EndpointID": "", "Aliases": None}}


def _mount_points(c: Container) -> list[dict[str, Any]]:
    spec = c.config.spec
    return [{"Type": "bind", "Source": m.source, "Destination": m.destination, "Mode": "",
             "RW": "ro" not in m.options, "Propagation": "rprivate"}
            for m in spec.mounts if m.type == "bind" and not m.source.startswith(spec.rundir or "\0")]


def matches(ctx: Context, c: Container, filters: dict[str, list[str]]) -> bool:
    import re

    for key, values in filters.items():
        if key == "label":
            if not all(lifecycle.label_matches(dict(c.config.labels), v) for v in values):
                return False
        elif key == "status":
            if _status(c) not in values:
                return False
        elif key == "name":
            if not any(re.search(v.lstrip("/"), c.config.name) for v in values):
                return False
        elif key == "id":
            if not any(c.id.startswith(v) for v in values):
                return False
        elif key == "ancestor":
            if not any(v in (c.config.image, c.config.image_id, c.config.image_id[:12]) or
                       c.config.image.endswith("/" + v) or c.config.image.endswith("/" + v + ":latest")
                       for v in values):
                return False
        elif key == "exited":
            if c.state.status != "exited" or str(c.state.exit_code) not in values:
                return False
        else:
            raise BadRequest(f"filter {key!r} is not supported by rootless (label, status, name, id, ancestor, "
                             "exited are)")
    return True


def list_(ctx: Context, req: Request) -> None:
    filters = req.filters()
    rows = lifecycle.all_containers(ctx)
    if not req.qbool("all") and "status" not in filters:
        rows = [c for c in rows if c.state.running]
    rows = [c for c in rows if matches(ctx, c, filters)]
    limit = req.qint("limit")
    if limit is not None and limit > 0:
        rows = rows[:limit]
    live = None
    if any(c.state.running and c.config.spec.network.mode == "bridge" for c in rows):
        from rootless import networks

        live = networks.members(ctx)  # one call to the network daemon for every row
    req.conn.respond_json(200, [_summary(ctx, c, live) for c in rows])


def inspect_data(ctx: Context, c: Container) -> dict[str, Any]:
    base = lifecycle.inspect(ctx, c)
    meta = ctrmeta.load(ctx, c.id)
    mcfg, mhost = meta.get("Config") or {}, meta.get("HostConfig") or {}
    spec = c.config.spec
    st = base["State"]
    st["Error"] = ""
    st["Restarting"] = False
    base.pop("ImageName", None)
    base["Image"] = f"sha256:{c.config.image_id}"
    base["Name"] = f"/{c.config.name}"
    base["RestartCount"] = 0
    base["Platform"] = "linux"
    base["ResolvConfPath"] = base["HostnamePath"] = base["HostsPath"] = ""
    base["MountLabel"] = base["ProcessLabel"] = base["AppArmorProfile"] = ""
    base["ExecIDs"] = None
    base["GraphDriver"] = {"Name": spec.rootfs.driver, "Data": {}}
    base["Mounts"] = _mount_points(c)
    cfg = base["Config"]
    cfg.update({"Labels": dict(c.config.labels), "AttachStdin": bool(mcfg.get("AttachStdin")),
                "AttachStdout": bool(mcfg.get("AttachStdout", True)),
                "AttachStderr": bool(mcfg.get("AttachStderr", True)),
                "StdinOnce": bool(mcfg.get("StdinOnce")), "ExposedPorts": mcfg.get("ExposedPorts"),
                "Entrypoint": mcfg.get("Entrypoint"), "Domainname": "", "Volumes": None, "OnBuild": None})
    cfg.pop("Annotations", None)
    if mcfg.get("Cmd") is not None:
        cfg["Cmd"] = mcfg["Cmd"]
    if mcfg.get("Image"):
        cfg["Image"] = mcfg["Image"]
    hc = base["HostConfig"]
    hc.update({"Binds": mhost.get("Binds"), "PortBindings": mhost.get("PortBindings") or {},
               "RestartPolicy": {"Name": c.config.restart or "no", "MaximumRetryCount": c.config.restart_max},
               # json-file: docker-py's containers.run() returns the output only for json-file or journald;
               # the logs endpoint serves this log the same way
               "NetworkMode": mhost.get("NetworkMode") or spec.network.mode, "LogConfig": {"Type": "json-file",
                                                                                          "Config": {}},
               "PublishAllPorts": bool(mhost.get("PublishAllPorts")), "Mounts": mhost.get("Mounts"),
               "Privileged": bool(mhost.get("Privileged")), "CapAdd": mhost.get("CapAdd"),
               "CapDrop": mhost.get("CapDrop"), "Init": mhost.get("Init"), "Tmpfs": None,
               "ReadonlyRootfs": False, "Dns": [], "DnsOptions": [], "DnsSearch": [], "ExtraHosts": None,
               "VolumesFrom": None, "Links": None, "Devices": [], "Ulimits": None})
    nets = _networks(ctx, c)
    first: dict[str, Any] = next(iter(nets.values()), {})
    base["NetworkSettings"] = {
        "Ports": base["NetworkSettings"]["Ports"], "Networks": nets, "IPAddress": first.get("IPAddress", ""),
        "Gateway": first.get("Gateway", ""), "IPPrefixLen": first.get("IPPrefixLen", 0),
        "MacAddress": first.get("MacAddress", ""), "Bridge": "", "SandboxID": "", "SandboxKey": "",
        "HairpinMode": False, "LinkLocalIPv6Address": "",
        "LinkLocalIPv6PrefixLen": 0, "SecondaryIPAddresses": None, "SecondaryIPv6Addresses": None,
        "EndpointID": "", "GlobalIPv6Address": "", "GlobalIPv6PrefixLen": 0, "IPv6Gateway": ""}
    return base


def inspect(ctx: Context, req: Request) -> None:
    c = _load(ctx, _cid(ctx, req))
    req.conn.respond_json(200, inspect_data(ctx, c))


# --------------------------------------------------------------------------- lifecycle


def start(ctx: Context, req: Request) -> None:
    cid = _cid(ctx, req)
    c = _load(ctx, cid)
    if c.state.running:
        req.conn.respond(304)
        return
    from rootless.api import attach

    try:
        if not attach.start_attached(ctx, c):
            lifecycle.start(ctx, cid)
    except RootlessError:
        if c.config.rm:  # AutoRemove: a container that cannot start goes too, as with Docker
            with contextlib.suppress(RootlessError):
                lifecycle.remove(ctx, cid, force=True)
        raise
    req.conn.respond(204)


def _timeout(req: Request) -> float | None:
    t = req.qint("t")
    if t is None:
        t = req.qint("timeout")
    return None if t is None or t < 0 else float(t)


def stop(ctx: Context, req: Request) -> None:
    cid = _cid(ctx, req)
    c = _load(ctx, cid)
    if not c.state.running:
        req.conn.respond(304)
        return
    lifecycle.stop(ctx, cid, _timeout(req))
    req.conn.respond(204)


def restart(ctx: Context, req: Request) -> None:
    cid = _cid(ctx, req)
    c = _load(ctx, cid)
    if c.state.running:
        lifecycle.stop(ctx, cid, _timeout(req))
    lifecycle.start(ctx, cid)
    req.conn.respond(204)


def kill(ctx: Context, req: Request) -> None:
    cid = _cid(ctx, req)
    sig = lifecycle.parse_signal(req.q("signal") or "SIGKILL")
    c = _load(ctx, cid)
    if not c.state.running:
        raise Conflict(f"Cannot kill container: {c.config.name}: Container {cid} is not running")
    lifecycle.kill(ctx, cid, sig)
    if sig in (signal.SIGKILL, signal.SIGTERM):
        lifecycle.wait_stopped(ctx, cid, 2)
    req.conn.respond(204)


def remove(ctx: Context, req: Request) -> None:
    """``v=1``: the container's anonymous volumes go too (`rootless rm -v`); named ones stay."""
    from rootless import volumes

    cid = _cid(ctx, req)
    anonymous = volumes.anonymous_in(ctx, _load(ctx, cid).config.spec) if req.qbool("v") else []
    try:
        lifecycle.remove(ctx, cid, force=req.qbool("force"))
    except state.ContainerRunning:
        c = _load(ctx, cid)
        raise Conflict(f"You cannot remove a running container {cid}. Stop the container before attempting "
                       f"removal or force remove ({c.config.name} is running)") from None
    if anonymous:
        volumes.discard(ctx, anonymous)
    req.conn.respond(204)


def prune(ctx: Context, req: Request) -> None:
    filters = req.filters()
    removed = []
    for c in lifecycle.all_containers(ctx):
        if c.state.running or not matches(ctx, c, {k: v for k, v in filters.items() if k == "label"}):
            continue
        try:
            lifecycle.remove(ctx, c.id, force=False)
        except (NoSuchContainer, state.ContainerRunning):
            continue
        removed.append(c.id)
    req.conn.respond_json(200, {"ContainersDeleted": removed or None, "SpaceReclaimed": 0})


def rename(ctx: Context, req: Request) -> None:
    cid = _cid(ctx, req)
    new = (req.q("name") or "").lstrip("/")
    if not new:
        raise BadRequest("rename: no new name given (?name=)")
    try:
        lifecycle.rename(ctx, cid, new)
    except RootlessError as e:
        if "already in use" in e.message:
            raise Conflict(e.message) from None
        raise BadRequest(e.message) from None
    req.conn.respond(204)


def wait(ctx: Context, req: Request) -> None:
    """Answered at exit: ``not-running`` (default) returns at once for a stopped container,
    ``next-exit`` waits for an exit after this request, ``removed`` for the container to go."""
    cid = _cid(ctx, req)
    cond = req.q("condition") or "not-running"
    if cond not in ("not-running", "next-exit", "removed"):
        raise BadRequest(f"condition {cond!r}: must be not-running, next-exit or removed")
    since = time.time()
    # The status line goes out now, the body at exit: the docker CLI starts the container
    # only once this request has been answered with its headers.
    out = req.conn.stream(200)
    code = _wait_for(ctx, cid, cond, since, lambda: client_gone(req.conn.sock))
    out.json({"StatusCode": code, "Error": None})
    out.close()


def _wait_for(ctx: Context, cid: str, cond: str, since: float, gone: Callable[[], bool]) -> int:
    last = 0
    delay = 0.01
    cfg = state.config_path(ctx.layout, cid)
    while True:
        if not cfg.exists():  # removed (read_state would report a removed container as created)
            from rootless.api.attach import exit_file

            ef = exit_file(ctx, cid)
            with contextlib.suppress(OSError, ValueError):
                last = int(ef.read_text())
                ef.unlink()
            return last
        # no record (being removed): nothing to learn; read_state would make up a status
        try:
            st = state.read_state(ctx.layout, cid) if state.read_state_raw(ctx.layout, cid) else None
        except RootlessError:
            st = None
        if st is not None and st.status == "exited":
            last = st.exit_code
            if cond == "not-running" or (cond == "next-exit" and st.finished_at >= since):
                return last
        elif st is not None and cond == "not-running" and st.status == "created":
            return last
        if gone():
            raise ClientGone()
        time.sleep(delay)
        delay = min(delay * 2, 0.02)  # a monitor's --rm removal follows the exit closely


# --------------------------------------------------------------------------- logs


def _log_frames(tty: bool, stream: str, data: bytes) -> bytes:
    if tty:
        return data
    from rootless.api.streams import frame

    return frame(2 if stream == "stderr" else 1, data)


def logs(ctx: Context, req: Request) -> None:
    cid = _cid(ctx, req)
    c = _load(ctx, cid)
    want = {s for s in ("stdout", "stderr") if req.qbool(s)}
    if not want:
        raise BadRequest("you must choose at least one stream (stdout=1 and/or stderr=1)")
    tail_q = req.q("tail") or "all"
    tail = None if tail_q == "all" else int(tail_q) if tail_q.lstrip("-").isdigit() else None
    since_q = req.q("since") or "0"
    since = lifecycle.parse_since(since_q, time.time()) if since_q not in ("0", "") else None
    until_q = req.q("until") or "0"
    until = lifecycle.parse_since(until_q, time.time()) if until_q not in ("0", "") else None
    stamps = req.qbool("timestamps")
    tty = c.config.spec.process.terminal
    # open before the answer: docker-py's run() follows the logs, then waits and removes the
    # container at once; what was written must still be read after that removal
    log = lifecycle.open_log(ctx, cid)
    out = req.conn.stream(200, "application/vnd.docker.raw-stream" if tty else
                          "application/vnd.docker.multiplexed-stream")
    for ln in lifecycle.read_logs(ctx, cid, follow=req.qbool("follow"), tail=tail, since=since, log=log):
        if until is not None and ln.epoch > until:
            break
        if ln.stream not in want:
            continue
        text = ln.text if ln.partial else ln.text + b"\n"
        if stamps:
            text = ln.time.encode() + b" " + text
        out.write(_log_frames(tty, ln.stream, text))
    out.close()


# --------------------------------------------------------------------------- top, stats


def _pid_ns(pid: int) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/ns/pid")
    except OSError:
        return None


def top(ctx: Context, req: Request) -> None:
    c = _load(ctx, _cid(ctx, req))
    if not c.state.running:
        raise Conflict(f"Container {c.id} is not running")
    ns = _pid_ns(c.state.pid)
    hz = os.sysconf("SC_CLK_TCK")
    rows = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or _pid_ns(int(entry)) != ns:
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
            with open(f"/proc/{entry}/cmdline", "rb") as fb:
                cmd = fb.read().replace(b"\0", b" ").decode(errors="replace").strip()
            uid = os.stat(f"/proc/{entry}").st_uid
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2:].split()
        ppid = fields[1]
        cpu = (int(fields[11]) + int(fields[12])) // hz
        rows.append([str(uid), entry, ppid, "0", "", "?", f"{cpu // 3600:02d}:{cpu // 60 % 60:02d}:{cpu % 60:02d}",
                     cmd or stat[stat.find("(") + 1:stat.rfind(")")]])
    req.conn.respond_json(200, {"Titles": ["UID", "PID", "PPID", "C", "STIME", "TTY", "TIME", "CMD"],
                                "Processes": rows})


def _stats_json(c: Container, sample: Any, before: Any) -> dict[str, Any]:
    from rootless.api.system import mem_total
    from rootless.lifecycle import net_io

    now = time.time()
    mem = getattr(sample, "memory", 0) or 0
    limit = getattr(sample, "memory_limit", None) or mem_total()
    cpu = int((getattr(sample, "cpu_usec", 0) or 0) * 1000)
    pre_cpu = int((getattr(before, "cpu_usec", 0) or 0) * 1000)
    net = net_io(c.state.pid) if c.state.running else None
    from datetime import UTC, datetime

    return {
        "read": datetime.fromtimestamp(now, UTC).isoformat().replace("+00:00", "Z"),
        "preread": "0001-01-01T00:00:00Z", "id": c.id, "name": f"/{c.config.name}",
        "pids_stats": {"current": getattr(sample, "pids", 0) or 0},
        "cpu_stats": {"cpu_usage": {"total_usage": cpu, "usage_in_kernelmode": 0, "usage_in_usermode": 0},
                      "system_cpu_usage": int(now * 1e9) * (os.cpu_count() or 1), "online_cpus": os.cpu_count() or 1,
                      "throttling_data": {"periods": 0, "throttled_periods": 0, "throttled_time": 0}},
        "precpu_stats": {"cpu_usage": {"total_usage": pre_cpu}, "system_cpu_usage": 0,
                         "online_cpus": os.cpu_count() or 1},
        "memory_stats": {"usage": mem, "limit": limit, "stats": {}},
        "blkio_stats": {"io_service_bytes_recursive": [
            {"major": 0, "minor": 0, "op": "read", "value": getattr(sample, "io_read", 0) or 0},
            {"major": 0, "minor": 0, "op": "write", "value": getattr(sample, "io_write", 0) or 0}]},
        "networks": {"eth0": {"rx_bytes": net[0], "tx_bytes": net[1], "rx_packets": 0, "tx_packets": 0,
                              "rx_errors": 0, "tx_errors": 0, "rx_dropped": 0, "tx_dropped": 0}} if net else {},
    }


def stats(ctx: Context, req: Request) -> None:
    """One sample (stream=false) or one a second. A container without a cgroup of its own
    (cgroup v1 hosts, --cgroups disabled) reports zero CPU and memory, as Docker does for a
    stopped one; its network counters are still real."""
    cid = _cid(ctx, req)
    stream = req.qbool("stream", True) and not req.qbool("one-shot")
    out = req.conn.stream(200)
    before = None
    while True:
        c = _load(ctx, cid)
        try:
            sample = lifecycle.stats_sample(c)
        except RootlessError:
            sample = None
        out.json(_stats_json(c, sample, before))
        if not stream or not c.state.running:
            break
        before = sample
        time.sleep(1)
    out.close()


# --------------------------------------------------------------------------- attach, resize, archive


def attach(ctx: Context, req: Request) -> None:
    from rootless.api import attach as att

    att.attach(ctx, req, _load(ctx, _cid(ctx, req)))


def resize(ctx: Context, req: Request) -> None:
    from rootless.api import attach as att

    c = _load(ctx, _cid(ctx, req))
    h, w = req.qint("h", 0) or 0, req.qint("w", 0) or 0
    att.resize_container(ctx, c, h, w)
    req.conn.respond(200, b"", "text/plain")


def archive_head(ctx: Context, req: Request) -> None:
    from rootless.api import archive

    archive.head(ctx, req, _load(ctx, _cid(ctx, req)))


def archive_get(ctx: Context, req: Request) -> None:
    from rootless.api import archive

    archive.get(ctx, req, _load(ctx, _cid(ctx, req)))


def archive_put(ctx: Context, req: Request) -> None:
    from rootless.api import archive

    archive.put(ctx, req, _load(ctx, _cid(ctx, req)))


__all__ = ["ApiError"]
