"""/networks/…: Docker's network endpoints over rootless.networks (what `rootless network`
runs), so a network made by `docker network create` is in `rootless network ls` and a
container docker connects to it resolves its peers through that network's name server.

Docker's three predefined networks are listed and inspected as such, and refused for what
they cannot be here: ``bridge`` is the default network (slirp4netns, one per container),
``host`` the host's own and ``none`` no network; none of them takes a connect, a removal
or a prune.
"""

from __future__ import annotations

import hashlib
import time
from typing import TYPE_CHECKING, Any

from rootless import networks
from rootless.api.http import ApiError, BadRequest, Conflict, NotFound, Request
from rootless.errors import NotFoundError, RootlessError
from slirp.usernet import NetworkInUse

if TYPE_CHECKING:
    from rootless.context import Context
    from slirp.usernet import NetworkConfig

# name → driver, as `docker network ls` shows Docker's own
PREDEFINED = {"bridge": "bridge", "host": "host", "none": "null"}


class Forbidden(ApiError):
    status = 403  # Docker's answer for what a predefined or busy network cannot do


def predefined_id(name: str) -> str:
    """A stable ID for a predefined network (Docker's are random per daemon; ours are derived)."""
    return hashlib.sha256(f"rootless predefined network {name}".encode()).hexdigest()


def _iso(t: float) -> str:
    ns = int(t * 1e9)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ns // 1_000_000_000)) + f".{ns % 1_000_000_000:09d}Z"


def _base(name: str, nid: str, driver: str, created: float) -> dict[str, Any]:
    return {"Name": name, "Id": nid, "Created": _iso(created), "Scope": "local", "Driver": driver,
            "EnableIPv6": False, "IPAM": {"Driver": "default", "Options": None, "Config": []}, "Internal": False,
            "Attachable": False, "Ingress": False, "ConfigFrom": {"Network": ""}, "ConfigOnly": False,
            "Containers": {}, "Options": {}, "Labels": {}}


def docker_view(cfg: NetworkConfig, members: dict[str, Any] | None = None) -> dict[str, Any]:
    """A user network as Docker's API shows it; *members*: the running attachments
    (rootless.networks.members of this network: ID → name, ip, mac)."""
    import ipaddress

    prefix = ipaddress.ip_network(cfg.subnet).prefixlen
    out = _base(cfg.name, cfg.id, "bridge", cfg.created)
    out.update(Internal=cfg.internal, Labels=dict(cfg.labels),
               IPAM={"Driver": "default", "Options": None, "Config": [{"Subnet": cfg.subnet, "Gateway": cfg.gateway}]})
    out["Containers"] = {cid: {"Name": m.get("name", ""), "EndpointID": "", "MacAddress": m.get("mac", ""),
                               "IPv4Address": f"{m['ip']}/{prefix}" if m.get("ip") else "", "IPv6Address": ""}
                         for cid, m in (members or {}).items()}
    return out


def predefined_view(name: str) -> dict[str, Any]:
    return _base(name, predefined_id(name), PREDEFINED[name], 0.0)


# --------------------------------------------------------------------------- create


def create_args(body: Any) -> dict[str, Any]:
    """Docker's create body → the arguments of rootless.networks.create; what has no counterpart
    here is refused by name (400) rather than ignored."""
    if not isinstance(body, dict):
        raise BadRequest("the network create body must be a JSON object")
    name = body.get("Name")
    if not name or not isinstance(name, str):
        raise BadRequest("Name: a network needs a name")
    if name in PREDEFINED:
        raise Forbidden(f"{name} is a pre-defined network and cannot be created")
    driver = body.get("Driver") or "bridge"
    if driver != "bridge":
        raise BadRequest(f"Driver {driver!r}: only bridge networks are supported by rootless")
    for key in ("EnableIPv6", "Ingress", "ConfigOnly"):
        if body.get(key):
            raise BadRequest(f"{key} is not supported by rootless")
    if (body.get("ConfigFrom") or {}).get("Network"):
        raise BadRequest("ConfigFrom is not supported by rootless")
    if body.get("Scope") not in (None, "", "local"):
        raise BadRequest(f"Scope {body['Scope']!r}: only local networks are supported by rootless")
    if body.get("Options"):
        raise BadRequest(f"Options {sorted(body['Options'])}: driver options are not supported by rootless")
    ipam = body.get("IPAM") or {}
    if not isinstance(ipam, dict):
        raise BadRequest("IPAM: expected an object")
    if ipam.get("Driver") not in (None, "", "default"):
        raise BadRequest(f"IPAM.Driver {ipam['Driver']!r}: only the default IPAM driver is supported by rootless")
    if ipam.get("Options"):
        raise BadRequest("IPAM.Options are not supported by rootless")
    pools = ipam.get("Config") or []
    if len(pools) > 1:
        raise BadRequest("IPAM.Config: one subnet per network is supported by rootless")
    subnet = gateway = None
    if pools:
        pool = pools[0] or {}
        for key in ("IPRange", "AuxiliaryAddresses", "AuxAddress"):
            if pool.get(key):
                raise BadRequest(f"IPAM.Config.{key} is not supported by rootless")
        subnet, gateway = pool.get("Subnet") or None, pool.get("Gateway") or None
    labels = body.get("Labels") or {}
    if not isinstance(labels, dict):
        raise BadRequest("Labels: expected an object of strings")
    return {"name": name, "subnet": subnet, "gateway": gateway, "internal": bool(body.get("Internal")),
            "labels": [f"{k}={v}" for k, v in labels.items()]}


def create(ctx: Context, req: Request) -> None:
    args = create_args(req.json())
    name = args.pop("name")
    if networks.store(ctx).exists(name):
        raise Conflict(f"network with name {name} already exists")
    try:
        cfg = networks.create(ctx, name, disable_dns=False, **args)
    except RootlessError as e:
        if "already exists" in e.message:
            raise Conflict(e.message) from None
        raise BadRequest(f"{e.message} ({e.hint})" if e.hint else e.message) from None
    req.conn.respond_json(201, {"Id": cfg.id, "Warning": ""})


# --------------------------------------------------------------------------- list, inspect


def _ref(req: Request) -> str:
    return req.params["id"]  # type: ignore[attr-defined,no-any-return]


def find(ctx: Context, ref: str) -> NetworkConfig | str:
    """The user network *ref* names (name, ID or unique ID prefix), or a predefined one's name."""
    for name in PREDEFINED:
        if ref in (name, predefined_id(name)) or (len(ref) >= 12 and predefined_id(name).startswith(ref)):
            return name
    try:
        return networks.store(ctx).get(ref)
    except NotFoundError:
        raise NotFound(f"network {ref} not found") from None


FILTERS = ("name", "id", "label", "driver", "type", "scope", "dangling")


def matches(name: str, nid: str, driver: str, labels: dict[str, str], builtin: bool, used: bool,
            filters: dict[str, list[str]]) -> bool:
    """Docker's network filters: the values of one key any-of, the keys all-of."""
    for key, values in filters.items():
        if not values:
            continue
        if key == "name":
            hit = any(v in name for v in values)
        elif key == "id":
            hit = any(nid.startswith(v) for v in values)
        elif key == "driver":
            hit = driver in values
        elif key == "scope":
            hit = "local" in values
        elif key == "type":
            bad = [v for v in values if v not in ("custom", "builtin")]
            if bad:
                raise BadRequest(f"invalid filter: 'type'='{bad[0]}' (custom or builtin)")
            hit = ("builtin" if builtin else "custom") in values
        elif key == "dangling":
            want = {v.lower() in ("1", "true") for v in values}
            hit = (not used and not builtin) in want
        elif key == "label":
            hit = all(lk in labels and (not eq or labels[lk] == lv)
                      for lk, eq, lv in (v.partition("=") for v in values))
            if not hit:
                return False
            continue
        else:
            raise BadRequest(f"invalid filter {key!r}: rootless serves {', '.join(FILTERS)}")
        if not hit:
            return False
    return True


def list_(ctx: Context, req: Request) -> None:
    filters = req.filters()
    used = networks.users(ctx) if "dangling" in filters else {}
    rows = [predefined_view(n) for n, d in PREDEFINED.items()
            if matches(n, predefined_id(n), d, {}, True, True, filters)]
    rows += [docker_view(cfg) for cfg in networks.store(ctx).list()
             if matches(cfg.name, cfg.id, "bridge", dict(cfg.labels), False, cfg.name in used, filters)]
    req.conn.respond_json(200, rows)


def inspect(ctx: Context, req: Request) -> None:
    found = find(ctx, _ref(req))
    if isinstance(found, str):
        req.conn.respond_json(200, predefined_view(found))
        return
    req.conn.respond_json(200, docker_view(found, networks.members(ctx, found.name).get(found.name, {})))


# --------------------------------------------------------------------------- remove, prune


def _user_network(ctx: Context, ref: str, what: str) -> NetworkConfig:
    found = find(ctx, ref)
    if isinstance(found, str):
        raise Forbidden(f"{found} is a pre-defined network and cannot be {what}")
    return found


def remove(ctx: Context, req: Request) -> None:
    cfg = _user_network(ctx, _ref(req), "removed")
    try:
        networks.remove(ctx, cfg.name, force=False)
    except NetworkInUse as e:
        raise Forbidden(f"error while removing network: {e.message}") from None
    except NotFoundError:
        raise NotFound(f"network {_ref(req)} not found") from None
    req.conn.respond(204)


def prune(ctx: Context, req: Request) -> None:
    filters = req.filters()
    for key in filters:
        if key not in ("label", "label!", "until"):
            raise BadRequest(f"invalid filter {key!r}: network prune takes label, label! and until")
    until = None
    if filters.get("until"):
        from rootless import lifecycle

        until = lifecycle.parse_since(filters["until"][-1], time.time())
    used = networks.users(ctx)
    gone = []
    for cfg in networks.store(ctx).list():
        labels = dict(cfg.labels)
        if cfg.name in used or not matches(cfg.name, cfg.id, "bridge", labels, False, False,
                                           {"label": filters.get("label", [])}):
            continue
        if any(lk in labels and (not eq or labels[lk] == lv)
               for lk, eq, lv in (v.partition("=") for v in filters.get("label!", []))):
            continue
        if until is not None and cfg.created > until:
            continue
        try:
            networks.remove(ctx, cfg.name, force=False)
        except (NetworkInUse, NotFoundError):
            continue  # taken or removed meanwhile
        gone.append(cfg.name)
    req.conn.respond_json(200, {"NetworksDeleted": gone or None})


# --------------------------------------------------------------------------- connect, disconnect


def _container(body: Any) -> str:
    if not isinstance(body, dict) or not body.get("Container"):
        raise BadRequest("Container: no container given")
    return str(body["Container"])


def endpoint_args(endpoint: Any) -> tuple[list[str], str | None]:
    """(aliases, IPv4 address) of Docker's EndpointSettings; what has no counterpart refused."""
    if endpoint is None:
        return [], None
    if not isinstance(endpoint, dict):
        raise BadRequest("EndpointConfig: expected an object")
    ipam = endpoint.get("IPAMConfig") or {}
    for key in ("IPv6Address", "LinkLocalIPs"):
        if ipam.get(key):
            raise BadRequest(f"IPAMConfig.{key} is not supported by rootless")
    for key in ("Links", "DriverOpts", "MacAddress"):
        if endpoint.get(key):
            raise BadRequest(f"EndpointConfig.{key} is not supported by rootless")
    aliases = endpoint.get("Aliases") or []
    if not isinstance(aliases, list) or not all(isinstance(a, str) for a in aliases):
        raise BadRequest("EndpointConfig.Aliases: expected a list of names")
    return list(dict.fromkeys(aliases)), ipam.get("IPv4Address") or None


def _engine_call(call: Any, ref: str) -> None:
    from rootless.runtime.state import NoSuchContainer

    try:
        call()
    except NoSuchContainer:
        raise NotFound(f"No such container: {ref}") from None
    except NotFoundError as e:
        raise NotFound(e.message) from None
    except RootlessError as e:
        if "already connected" in e.message:
            raise Forbidden(e.message) from None
        raise BadRequest(f"{e.message} ({e.hint})" if e.hint else e.message) from None


def connect(ctx: Context, req: Request) -> None:
    body = req.json()
    ref = _container(body)
    aliases, ip = endpoint_args(body.get("EndpointConfig"))
    cfg = _user_network(ctx, _ref(req), "connected to by rootless")
    _engine_call(lambda: networks.connect(ctx, cfg.name, ref, aliases, ip), ref)
    req.conn.respond(200, b"", "text/plain")


def disconnect(ctx: Context, req: Request) -> None:
    body = req.json()
    ref = _container(body)
    cfg = _user_network(ctx, _ref(req), "disconnected from by rootless")
    _engine_call(lambda: networks.disconnect(ctx, cfg.name, ref), ref)
    req.conn.respond(200, b"", "text/plain")
