"""config.toml → a frozen Config. The file format is documented in man/rootless.conf.5."""

from __future__ import annotations

import json
import os
import time
from typing import TYPE_CHECKING, Any

from rootless.errors import ConfigError, RootlessError
from rootless.record import dataclass, field, field_names

if TYPE_CHECKING:
    from pathlib import Path

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
    network_host_loopback: bool = False  # user networks' slirp4netns: allow_host_loopback
    network_outbound: str = "slirp4netns"  # the user networks' way out: "slirp4netns" or "pasta"
    max_parallel_downloads: int = 6
    max_parallel_uploads: int = 6
    cgroup_manager: str = ""  # "systemd", "cgroupfs"; empty: the first that works
    events_logger: str = "file"  # "file" (the events log) or "none"
    default_ulimits: tuple[str, ...] = ()  # [containers] default-ulimits: NAME=SOFT[:HARD] for every container
    source: Path | None = None

    def registry(self, host: str) -> RegistryConfig:
        return self.registries.get(host, RegistryConfig())


def _line_of(text: str, key: str) -> int | None:
    """The first line that defines ``key`` (tomllib reports no positions for valid TOML)."""
    import re

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


def _is_host(text: str) -> bool:
    """A host name with an optional :port."""
    import re

    return re.match(r"^[A-Za-z0-9.-]+(:[0-9]+)?$", text) is not None


def parse(text: str, path: Path) -> Config:
    import tomllib

    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        # tomllib's message ends with "(at line N, column M)"
        raise ConfigError(f"{path}: invalid TOML: {e}", "fix the syntax at the line named") from None
    c = _Checker(path, text)
    c.table(data, "", {"unqualified-search", "registry", "storage", "network", "pull", "push", "engine",
                       "containers"})
    kw: dict[str, Any] = {"source": path}
    if "unqualified-search" in data:
        kw["unqualified_search"] = c.strings(data["unqualified-search"], "unqualified-search")
    regs: dict[str, RegistryConfig] = {}
    for host, body in c.table(data.get("registry", {}), "registry", set(data.get("registry", {}))).items():
        if not _is_host(host):
            raise c.fail(host, f"registry {host!r} is not a host name with an optional :port")
        c.table(body, f'registry."{host}"', {"mirrors", "insecure"})
        mirrors = c.strings(body.get("mirrors", []), f'registry."{host}".mirrors')
        for m in mirrors:
            if not _is_host(m.split("/", 1)[0]):
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
    network = c.table(data.get("network", {}), "network", {"default", "host-loopback", "outbound"})
    if "outbound" in network:
        if network["outbound"] not in ("slirp4netns", "pasta"):
            raise c.fail("outbound", "network.outbound must be slirp4netns or pasta")
        kw["network_outbound"] = network["outbound"]
    if "host-loopback" in network:
        if not isinstance(network["host-loopback"], bool):
            raise c.fail("host-loopback", "network.host-loopback must be true or false")
        kw["network_host_loopback"] = network["host-loopback"]
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
    push = c.table(data.get("push", {}), "push", {"max-parallel"})
    if "max-parallel" in push:
        n = push["max-parallel"]
        if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= 64:
            raise c.fail("max-parallel", "push.max-parallel must be a whole number from 1 to 64")
        kw["max_parallel_uploads"] = n
    engine = c.table(data.get("engine", {}), "engine", {"cgroup-manager", "events-logger"})
    if "events-logger" in engine:
        if engine["events-logger"] not in ("file", "none"):
            raise c.fail("events-logger", "engine.events-logger must be file or none")
        kw["events_logger"] = engine["events-logger"]
    if "cgroup-manager" in engine:
        if engine["cgroup-manager"] not in ("systemd", "cgroupfs"):
            raise c.fail("cgroup-manager", "engine.cgroup-manager must be systemd or cgroupfs")
        kw["cgroup_manager"] = engine["cgroup-manager"]
    containers = c.table(data.get("containers", {}), "containers", {"default-ulimits"})
    if "default-ulimits" in containers:
        ulimits = c.strings(containers["default-ulimits"], "containers.default-ulimits")
        for u in ulimits:
            name, sep, value = u.partition("=")
            if not sep or not name or not value:
                raise c.fail("default-ulimits", f"containers.default-ulimits: {u!r} is not NAME=SOFT[:HARD]",
                             "e.g. default-ulimits = [\"nofile=1024:2048\"]")
        kw["default_ulimits"] = ulimits
    return Config(**kw)


def load(path: Path, cache: Path | None = None, required: bool = False) -> Config:
    """The config in ``path``; the defaults when there is none.

    ``cache``: where to keep a JSON copy of the checked result, used while ``path`` keeps
    its identity, size and times and this module its own: tomllib and the checks cost a
    `rootless run` ≈4 ms, json is loaded on that path anyway. It lives in the run root
    (volatile, the user's own) and is only a copy: any doubt about it means parsing again.
    """
    try:
        st = os.stat(path)
        key = _cache_key(path, st) if cache is not None else None
        if cache is not None and (cached := _read_cache(cache, key, path)) is not None:
            return cached
        data = path.read_bytes()
    except FileNotFoundError:
        if required:
            raise ConfigError(f"config {path} (ROOTLESS_CONFIG) does not exist",
                              "create it, or unset ROOTLESS_CONFIG to use the default") from None
        return Config()
    except OSError as e:
        raise ConfigError(f"cannot read config {path}: {e.strerror}",
                          "fix its permissions or point ROOTLESS_CONFIG elsewhere") from None
    from rootless.errors import decode_utf8

    try:
        text = decode_utf8(data, f"config {path}")
    except RootlessError as e:
        raise ConfigError(e.message, e.hint) from None
    config = parse(text, path)
    # git's "racy clean" rule: a file changed within the granularity of its timestamps may
    # change again without them changing; such a file is parsed every time until it settles.
    if cache is not None and time.time_ns() - max(st.st_mtime_ns, st.st_ctime_ns) > _SETTLED_NS:
        _write_cache(cache, key, config)
    return config


_CACHE_FORMAT = 1
_SETTLED_NS = 2_000_000_000


def _cache_key(path: Path, st: os.stat_result) -> list[Any]:
    """What the cached copy is valid for: the file's identity, size and times, and this
    module's own (its rules and Config's fields decide what a file means)."""
    me = os.stat(__file__)
    return [_CACHE_FORMAT, str(path), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns,
            me.st_size, me.st_mtime_ns, list(field_names(Config)), list(field_names(RegistryConfig))]


def _tuples(d: dict[str, Any]) -> dict[str, Any]:
    return {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}


def _read_cache(cache: Path, key: Any, path: Path) -> Config | None:
    try:
        fd = os.open(cache, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if st.st_uid != os.getuid() or st.st_mode & 0o022:
            return None  # not written by us
        data = json.loads(os.read(fd, 1 << 20))
        if data["key"] != key:
            return None
        body = data["config"]
        regs = {host: RegistryConfig(**_tuples(r)) for host, r in body.pop("registries").items()}
        return Config(**_tuples(body), registries=regs, source=path)
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return None
    finally:
        os.close(fd)


def _write_cache(cache: Path, key: Any, config: Config) -> None:
    body = {name: getattr(config, name) for name in field_names(Config) if name != "source"}
    body["registries"] = {host: {name: getattr(r, name) for name in field_names(RegistryConfig)}
                          for host, r in config.registries.items()}
    tmp = f"{cache}.{os.getpid()}.tmp"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        try:
            os.write(fd, json.dumps({"key": key, "config": body}).encode())
        finally:
            os.close(fd)
        os.replace(tmp, cache)  # readers see the old copy or the new one, never a torn one
    except OSError:
        try:
            os.unlink(tmp)
        except OSError:
            pass
