"""/_ping, /version and /info: what clients ask first (the docker CLI negotiates its API
version from /_ping's Api-Version header)."""

from __future__ import annotations

import functools
import os
import platform
from typing import TYPE_CHECKING, Any

from rootless.api.http import API_VERSION, MIN_API_VERSION, Request

if TYPE_CHECKING:
    from rootless.context import Context

_ARCH = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "s390x": "s390x", "ppc64le": "ppc64le"}


@functools.cache
def _version() -> str:
    """The package's version, read once (in the service's parent, by its warm-up)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("rootless")
    except PackageNotFoundError:
        return "0.0.0"


def arch() -> str:
    m = platform.machine()
    return _ARCH.get(m, m)


def ping(ctx: Context, req: Request) -> None:
    # Builder-Version 1: the classic builder protocol (the docker CLI then skips BuildKit's session)
    req.conn.respond(200, b"OK", "text/plain; charset=utf-8",
                     headers=[("Builder-Version", "1"), ("Cache-Control", "no-cache, no-store, must-revalidate"),
                              ("Pragma", "no-cache")])


def version(ctx: Context, req: Request) -> None:
    v = _version()
    kernel = platform.release()
    details = {"ApiVersion": API_VERSION, "MinAPIVersion": MIN_API_VERSION, "Os": "linux", "Arch": arch(),
               "KernelVersion": kernel, "GitCommit": "", "GoVersion": f"python{platform.python_version()}",
               "BuildTime": "", "Experimental": "false"}
    req.conn.respond_json(200, {
        "Platform": {"Name": f"rootless {v}"},
        "Components": [{"Name": "Engine", "Version": v, "Details": details}],
        "Version": v, "ApiVersion": API_VERSION, "MinAPIVersion": MIN_API_VERSION, "GitCommit": "",
        "GoVersion": f"python{platform.python_version()}", "Os": "linux", "Arch": arch(),
        "KernelVersion": kernel, "BuildTime": "", "Experimental": False,
    })


def mem_total() -> int:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return 0


def _os_name() -> str:
    try:
        with open("/etc/os-release") as f:
            for line in f:
                if line.startswith("PRETTY_NAME="):
                    return line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    return "Linux"


def info(ctx: Context, req: Request) -> None:
    from rootless import lifecycle
    from storage.images import ImageStore

    ctrs = lifecycle.all_containers(ctx)
    running = sum(1 for c in ctrs if c.state.running)
    try:
        n_images = len(ImageStore(ctx.layout).list())
    except Exception:  # an unreadable store still answers /info
        n_images = 0
    driver = ctx.config.storage_driver
    req.conn.respond_json(200, {
        "ID": "", "Containers": len(ctrs), "ContainersRunning": running, "ContainersPaused": 0,
        "ContainersStopped": len(ctrs) - running, "Images": n_images, "Driver": driver or "overlay",
        "DriverStatus": [], "Plugins": {"Volume": ["local"], "Network": ["slirp4netns", "none", "host"],
                                        "Authorization": None, "Log": ["k8s-file"]},
        "MemoryLimit": True, "SwapLimit": True, "KernelMemory": False, "CpuCfsPeriod": True, "CpuCfsQuota": True,
        "CPUShares": True, "CPUSet": True, "PidsLimit": True, "IPv4Forwarding": True, "BridgeNfIptables": False,
        "BridgeNfIp6tables": False, "Debug": False, "NFd": 0, "OomKillDisable": False, "NGoroutines": 0,
        "SystemTime": _now(), "LoggingDriver": "k8s-file", "CgroupDriver": ctx.config.cgroup_manager or "cgroupfs",
        "CgroupVersion": "2", "NEventsListener": 0, "KernelVersion": platform.release(),
        "OperatingSystem": _os_name(), "OSVersion": "", "OSType": "linux", "Architecture": platform.machine(),
        "IndexServerAddress": "https://index.docker.io/v1/", "RegistryConfig": _registry_config(ctx),
        "NCPU": os.cpu_count() or 1, "MemTotal": mem_total(), "DockerRootDir": str(ctx.layout.root),
        "HttpProxy": os.environ.get("HTTP_PROXY", ""), "HttpsProxy": os.environ.get("HTTPS_PROXY", ""),
        "NoProxy": os.environ.get("NO_PROXY", ""), "Name": platform.node(), "Labels": [],
        "ExperimentalBuild": False, "ServerVersion": _version(), "Runtimes": {"rootless": {"path": "rootless"}},
        "DefaultRuntime": "rootless", "Swarm": {"NodeID": "", "NodeAddr": "", "LocalNodeState": "inactive",
                                                "ControlAvailable": False, "Error": "", "RemoteManagers": None},
        "LiveRestoreEnabled": False, "Isolation": "", "InitBinary": "", "SecurityOptions": ["name=rootless"],
        "Warnings": [],
    })


def _now() -> str:
    from datetime import UTC, datetime

    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def _registry_config(ctx: Context) -> dict[str, Any]:
    return {"AllowNondistributableArtifactsCIDRs": [], "AllowNondistributableArtifactsHostnames": [],
            "InsecureRegistryCIDRs": [], "IndexConfigs": {}, "Mirrors": []}


def auth(ctx: Context, req: Request) -> None:
    """POST /auth (`docker login`): the credentials are checked against the registry and kept
    where `rootless login` keeps them."""
    from rootless.api.http import BadRequest
    from rootless.image import present

    body = req.json()
    user, password = body.get("username") or "", body.get("password") or ""
    server = body.get("serveraddress") or "docker.io"
    if not user or not password:
        raise BadRequest("auth: username and password are required (identity tokens are not supported)")
    present.login(ctx, server, user, password)
    req.conn.respond_json(200, {"Status": "Login Succeeded", "IdentityToken": ""})


def events(ctx: Context, req: Request) -> None:
    """GET /events: the events log (rootless.events) as Docker's messages, one JSON object a
    line; the past ones from ``since``, then new ones as they are logged, until ``until``."""
    import time as _time

    from rootless import events as ev
    from rootless.api.http import BadRequest
    from rootless.errors import RootlessError

    raw = req.qjson("filters") or {}
    if not isinstance(raw, dict):
        raise BadRequest("filters: expected a JSON object")
    specs = [f"{k}={v}" for k, vals in raw.items()
             for v in ([x for x, on in vals.items() if on] if isinstance(vals, dict) else vals)]
    try:
        keep = ev.Filter(specs)
    except RootlessError as e:
        raise BadRequest(e.message) from None
    now = _time.time()

    def when(name: str) -> float | None:
        v = req.q(name)
        if not v:
            return None
        from rootless.lifecycle import parse_since

        return parse_since(v, now)

    since, until = when("since"), when("until")
    out = req.conn.stream(200)
    # without ``since`` only what happens from now on (Docker's rule)
    for line in ev.follow(ctx.layout, since=since if since is not None else now, until=until, keep=keep):
        out.json(docker_event(line))
    out.close()


def docker_event(e: dict[str, Any]) -> dict[str, Any]:
    """A line of the events log → Docker's event message (with the pre-1.22 fields clients still read)."""
    ns = int(e.get("timeNano") or 0)
    attrs = {str(k): str(v) for k, v in (e.get("Attributes") or {}).items()}
    if e.get("Name"):
        attrs.setdefault("name", str(e["Name"]))
    if e.get("Image"):
        attrs.setdefault("image", str(e["Image"]))
    if e.get("ContainerExitCode") is not None:
        attrs.setdefault("exitCode", str(e["ContainerExitCode"]))
    action = str(e.get("Status", ""))
    if action == "died":
        action = "die"
    out: dict[str, Any] = {"Type": e.get("Type", ""), "Action": action,
                           "Actor": {"ID": e.get("ID", ""), "Attributes": attrs}, "scope": "local",
                           "time": ns // 1_000_000_000, "timeNano": ns}
    if e.get("Type") == "container":
        out.update(status=action, id=e.get("ID", ""), **({"from": e["Image"]} if e.get("Image") else {}))
    return out
