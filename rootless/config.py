"""config.toml → a frozen Config. The file format is documented in man/rootless.conf.5."""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rootless.errors import ConfigError

STORAGE_DRIVERS = ("overlay", "fuse-overlayfs", "vfs")
NETWORK_MODES = ("slirp4netns", "none", "host")


@dataclass(frozen=True)
class RegistryConfig:
    mirrors: tuple[str, ...] = ()
    insecure: bool = False


@dataclass(frozen=True)
class Config:
    unqualified_search: tuple[str, ...] = ("docker.io",)
    registries: dict[str, RegistryConfig] = field(default_factory=dict)
    storage_driver: str | None = None
    network: str = "slirp4netns"
    max_parallel_downloads: int = 6
    source: Path | None = None

    def registry(self, host: str) -> RegistryConfig:
        return self.registries.get(host, RegistryConfig())


def _line_of(text: str, key: str) -> int | None:
    """The first line that defines ``key`` (tomllib reports no positions for valid TOML)."""
    pat = re.compile(r'^\s*(\[+\s*)?("?)' + re.escape(key) + r'\2\s*(=|\]|\.)', re.M)
    m = pat.search(text)
    if m:
        return text.count("\n", 0, m.start()) + 1
    for i, line in enumerate(text.splitlines(), 1):
        if key in line:
            return i
    return None


class _Checker:
    def __init__(self, path: Path, text: str) -> None:
        self.path = path
        self.text = text

    def fail(self, key: str, problem: str, hint: str | None = None) -> ConfigError:
        line = _line_of(self.text, key.split(".")[-1].strip('"'))
        where = f"{self.path}:{line}" if line else str(self.path)
        return ConfigError(f"{where}: {problem}", hint or "see rootless.conf(5) for the keys and their types")

    def table(self, d: Any, key: str, allowed: set[str]) -> dict[str, Any]:
        if not isinstance(d, dict):
            raise self.fail(key, f"{key} must be a table")
        for k in d:
            if k not in allowed:
                full = f"{key}.{k}" if key else k
                raise self.fail(k, f"unknown key {full!r}",
                                f"known keys here: {', '.join(sorted(allowed))}")
        return d

    def strings(self, v: Any, key: str) -> tuple[str, ...]:
        if not isinstance(v, list) or not all(isinstance(s, str) and s for s in v):
            raise self.fail(key, f"{key} must be a list of non-empty strings")
        return tuple(v)


_HOST_RE = re.compile(r"^[A-Za-z0-9.-]+(:[0-9]+)?$")


def parse(text: str, path: Path) -> Config:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        # tomllib's message ends with "(at line N, column M)"
        raise ConfigError(f"{path}: invalid TOML: {e}", "fix the syntax at the line named") from None
    c = _Checker(path, text)
    c.table(data, "", {"unqualified-search", "registry", "storage", "network", "pull"})
    kw: dict[str, Any] = {"source": path}
    if "unqualified-search" in data:
        kw["unqualified_search"] = c.strings(data["unqualified-search"], "unqualified-search")
    regs: dict[str, RegistryConfig] = {}
    for host, body in c.table(data.get("registry", {}), "registry", set(data.get("registry", {}))).items():
        if not _HOST_RE.match(host):
            raise c.fail(host, f"registry {host!r} is not a host name with an optional :port")
        c.table(body, f'registry."{host}"', {"mirrors", "insecure"})
        mirrors = c.strings(body.get("mirrors", []), f'registry."{host}".mirrors')
        for m in mirrors:
            if not _HOST_RE.match(m.split("/", 1)[0]):
                raise c.fail("mirrors", f"mirror {m!r} of {host} is not a host name with an optional :port")
        insecure = body.get("insecure", False)
        if not isinstance(insecure, bool):
            raise c.fail("insecure", f'registry."{host}".insecure must be true or false')
        regs[host] = RegistryConfig(mirrors=mirrors, insecure=insecure)
    kw["registries"] = regs
    storage = c.table(data.get("storage", {}), "storage", {"driver"})
    if "driver" in storage:
        if storage["driver"] not in STORAGE_DRIVERS:
            raise c.fail("driver", f"storage.driver must be one of {', '.join(STORAGE_DRIVERS)}")
        kw["storage_driver"] = storage["driver"]
    network = c.table(data.get("network", {}), "network", {"default"})
    if "default" in network:
        mode = network["default"]
        if not isinstance(mode, str) or mode.split(":", 1)[0] not in NETWORK_MODES:
            raise c.fail("default", f"network.default must be one of {', '.join(NETWORK_MODES)}")
        kw["network"] = mode
    pull = c.table(data.get("pull", {}), "pull", {"max-parallel"})
    if "max-parallel" in pull:
        n = pull["max-parallel"]
        if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= 64:
            raise c.fail("max-parallel", "pull.max-parallel must be a whole number from 1 to 64")
        kw["max_parallel_downloads"] = n
    return Config(**kw)


def load(path: Path) -> Config:
    try:
        text = path.read_text()
    except FileNotFoundError:
        return Config()
    except OSError as e:
        raise ConfigError(f"cannot read config {path}: {e.strerror}",
                          "fix its permissions or point ROOTLESS_CONFIG elsewhere") from None
    return parse(text, path)
