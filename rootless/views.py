"""What `--format` templates see for `info` and `version`: Podman's field names and shapes.

Podman's templates read Go struct fields (``{{.Host.Arch}}``, ``{{.Store.GraphRoot}}``,
``{{.Client.Version}}``), not the JSON keys; these views give those names, and keep our own
details beside them (``{{.Store.Driver}}``) with the first letter of each key raised.
"""

from __future__ import annotations

import os
import sys
from typing import Any

API_VERSION = "4.3.1"  # the Podman release whose CLI and output this tool follows


def _upper_keys(d: Any) -> Any:
    if isinstance(d, dict):
        return {(k[:1].upper() + k[1:]) if isinstance(k, str) else k: _upper_keys(v) for k, v in d.items()}
    if isinstance(d, list):
        return [_upper_keys(v) for v in d]
    return d


def _meminfo() -> dict[str, int]:
    out: dict[str, int] = {}
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                k, _, v = line.partition(":")
                out[k] = int(v.split()[0]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return out


def version_data() -> dict[str, Any]:
    """`version`'s data: Podman's Client (the server appears once the API serves one)."""
    import platform
    from importlib.metadata import PackageNotFoundError, version

    try:
        v = version("rootless")
    except PackageNotFoundError:
        v = "0.0.0"
    return {"Client": {"APIVersion": API_VERSION, "Version": v,
                       "GoVersion": f"python{platform.python_version()}", "GitCommit": "", "BuiltTime": "",
                       "Built": 0, "OsArch": f"linux/{_goarch()}", "Os": "linux"}}


def _goarch() -> str:
    m = os.uname().machine
    return {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "i686": "386"}.get(m, m)


def info_view(data: dict[str, Any]) -> dict[str, Any]:
    """`info`'s data for templates: Podman's Host/Store/Version fields over ours."""
    host, store = data.get("host", {}), data.get("store", {})
    cg = host.get("cgroup", {})
    idm = data.get("idmaps", {})
    helpers = data.get("helpers", {})
    mem = _meminfo()
    view = _upper_keys(data)
    view["Host"].update({
        "Arch": _goarch(), "OS": "linux", "Kernel": host.get("kernel"), "Hostname": host.get("hostname"),
        "CgroupManager": cg.get("manager") or "cgroupfs", "CgroupsVersion": cg.get("version"),
        "CgroupControllers": cg.get("controllers", []), "CPUs": os.cpu_count() or 0,
        "MemTotal": mem.get("MemTotal", 0), "MemFree": mem.get("MemFree", 0),
        "SwapTotal": mem.get("SwapTotal", 0), "SwapFree": mem.get("SwapFree", 0),
        "EventLogger": "file", "LogDriver": "k8s-file",
        "Distribution": {"Distribution": host.get("os", ""), "Version": ""},
        "IDMappings": {"UIDMap": idm.get("uid_map") if isinstance(idm, dict) else None,
                       "GIDMap": idm.get("gid_map") if isinstance(idm, dict) else None},
        "Security": {"Rootless": os.getuid() != 0, "SECCOMPEnabled": True, "SELinuxEnabled": False,
                     "AppArmorEnabled": False},
        "Slirp4NetNS": {"Executable": (helpers.get("slirp4netns") or {}).get("path") or "",
                        "Version": (helpers.get("slirp4netns") or {}).get("version") or ""},
        "RemoteSocket": {"Path": "", "Exists": False},
    })
    view["Store"].update({
        "GraphRoot": store.get("root"), "RunRoot": store.get("runroot"), "GraphDriverName": store.get("driver"),
        "ImageStore": {"Number": store.get("images", 0)},
        "ContainerStore": _container_counts(store.get("root")),
    })
    view["Version"] = version_data()["Client"]
    return view


def _container_counts(root: str | None) -> dict[str, int]:
    n = 0
    if root:
        try:
            n = sum(1 for e in os.listdir(os.path.join(root, "containers")) if len(e) == 64)
        except OSError:
            pass
    return {"Number": n, "Paused": 0, "Running": 0, "Stopped": 0}


def version_text(data: dict[str, Any]) -> str:
    """Podman's `version` layout: Client, then Server when a service answered (as `podman --remote`)."""
    parts = []
    for part in ("Client", "Server"):
        c = data.get(part)
        if c is None:
            continue
        rows = [(f"{part}:", "rootless"), ("Version:", c["Version"]), ("API Version:", c["APIVersion"]),
                ("Python Version:", c["GoVersion"].removeprefix("python")), ("OS/Arch:", c["OsArch"])]
        parts.append("\n".join(f"{k:<15}{v}" for k, v in rows))
    return "\n\n".join(parts)


def emit(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()
