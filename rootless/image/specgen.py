"""Image config + `run` flags + rootfs plan → Spec (what Podman's SpecGenerator does).

Pure data in, data out: the caller gathers what the host contributes (HostInfo) and the
runtime performs the result. Every default follows rootless Podman 4 so a container sees
the same process, environment and file system layout under either tool.
"""

from __future__ import annotations

import fnmatch
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from rootless.errors import RootlessError
from rootless.image import confine
from rootless.record import dataclass, field, replace

if TYPE_CHECKING:
    from rootless.layout import Layout
    from slirp.config import SlirpOptions
from rootless.spec import CAPABILITIES, File, IdMap, Mount, Network, PortMapping, Process, Resources, RootfsPlan, Spec

# containers.conf(5) "env" default: every Podman container starts from these.
DEFAULT_ENV = ("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "TERM=xterm")
# containers.conf(5) default_capabilities: the eleven Podman grants.
DEFAULT_CAPS = ("CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FOWNER", "CAP_FSETID", "CAP_KILL", "CAP_NET_BIND_SERVICE",
                "CAP_SETFCAP", "CAP_SETGID", "CAP_SETPCAP", "CAP_SETUID", "CAP_SYS_CHROOT")
# Podman's (containers/common) masked and read-only paths; --privileged drops both.
MASKED_PATHS = ("/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/latency_stats", "/proc/timer_list",
                "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi", "/sys/firmware", "/sys/fs/selinux",
                "/sys/dev/block")
READONLY_PATHS = ("/proc/asound", "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger")
# The device nodes an OCI runtime provides in every container (runtime-spec config-linux.md
# "Default Devices"); a user namespace cannot mknod them, so they are bound from the host.
DEFAULT_DEVICES = ("null", "zero", "full", "random", "urandom", "tty")
TMPFS_DEFAULT_OPTIONS = ("rw", "noexec", "nosuid", "nodev")
CAP_NAMES = CAPABILITIES
CAP_NUMBERS = {name: i for i, name in enumerate(CAP_NAMES)}
NETWORK_MODES = ("slirp4netns", "none", "host")
OTHER_MODES = ("bridge", "pasta", "private", "container", "ns", "pod")  # Podman's, refused by slirp.config
_PROPAGATIONS = ("private", "rprivate", "shared", "rshared", "slave", "rslave")


@dataclass(frozen=True)
class RunOptions:
    """The `run` flags, parsed but not yet interpreted (Podman's names)."""

    image: str
    command: tuple[str, ...] = ()
    name: str | None = None
    rm: bool = False
    interactive: bool = False
    tty: bool = False
    env: tuple[str, ...] = ()
    env_files: tuple[str, ...] = ()
    workdir: str | None = None
    user: str | None = None
    entrypoint: str | None = None
    hostname: str | None = None
    init: bool = False
    cap_add: tuple[str, ...] = ()
    cap_drop: tuple[str, ...] = ()
    security_opt: tuple[str, ...] = ()
    privileged: bool = False
    network: str = "none"
    networks: tuple[str, ...] = ()  # every --network given, in order (user networks may be several)
    network_alias: tuple[str, ...] = ()
    ip: str | None = None
    # with network "bridge": the user networks, each {"net": record, "ip": IP|None, "aliases": [...]}
    # as JSON (rootless.networks.for_run), in the order given
    user_networks: tuple[str, ...] = ()
    host_loopback: bool = False  # user networks: containers reach the host's 127.0.0.1 (config)
    outbound: str = "slirp4netns"  # user networks: the shared namespace's way out (config)
    volumes: tuple[str, ...] = ()
    mounts: tuple[str, ...] = ()
    tmpfs: tuple[str, ...] = ()
    read_only: bool = False
    read_only_tmpfs: bool = True
    userns: str | None = None
    publish: tuple[str, ...] = ()
    publish_all: bool = False
    dns: tuple[str, ...] = ()
    dns_search: tuple[str, ...] = ()
    dns_option: tuple[str, ...] = ()
    add_host: tuple[str, ...] = ()
    memory: str | None = None
    memory_swap: str | None = None
    memory_reservation: str | None = None
    cpus: str | None = None
    cpu_shares: str | None = None
    cpu_quota: str | None = None
    cpu_period: str | None = None
    cpuset_cpus: str | None = None
    pids_limit: str | None = None
    oom_score_adj: str | None = None
    cgroups: str | None = None  # enabled (default) or disabled
    cgroup_manager: str = ""  # systemd, cgroupfs or empty (the first that works): config or global flag
    tz: str | None = None
    umask: str | None = None
    group_add: tuple[str, ...] = ()
    shm_size: str | None = None
    expose: tuple[str, ...] = ()
    # kept in the container's record, not its Spec (rootless.runflags checks them)
    label: tuple[str, ...] = ()
    label_file: tuple[str, ...] = ()
    restart: str | None = None
    health_cmd: str | None = None
    health_interval: str | None = None
    health_retries: str | None = None
    health_start_period: str | None = None
    health_timeout: str | None = None
    health_on_failure: str | None = None
    stop_signal: str | None = None
    stop_timeout: str | None = None
    log_driver: str | None = None
    log_opt: tuple[str, ...] = ()
    rmi: bool = False
    # what the engine does around the container
    device: tuple[str, ...] = ()
    uts: str | None = None
    pid: str | None = None
    ipc: str | None = None
    cidfile: str | None = None
    replace: bool = False
    attach: tuple[str, ...] = ()
    sig_proxy: bool = True
    ulimit: tuple[str, ...] = ()
    sysctl: tuple[str, ...] = ()
    default_ulimits: tuple[str, ...] = ()  # the config's [containers] default-ulimits


@dataclass(frozen=True)
class HostInfo:
    """What the host contributes to a spec; ``HostInfo.read()`` gathers it."""

    env: Mapping[str, str] = field(default_factory=dict)
    cwd: str = "/"
    uid: int = 0
    gid: int = 0
    hostname: str = "localhost"
    resolv_conf: str = ""
    hosts: str = ""
    cap_last: int = 40
    cgroup2: bool = False
    version: str = ""
    host_ip: str | None = None  # the host's first non-loopback IPv4 address (host.containers.internal)
    user_name: str | None = None  # yours, for the passwd entry --userns keep-id adds (None: looked up then)
    limits: confine.HostLimits = field(default_factory=confine.HostLimits)
    no_fuse_overlayfs: str | None = None  # why fuse-overlayfs cannot serve a keep-id rootfs; None: it can

    @classmethod
    def read(cls, network: str) -> HostInfo:
        def text(path: str) -> str:
            try:
                with open(path) as f:
                    return f.read()
            except OSError:
                return ""

        try:
            cap_last = int(text("/proc/sys/kernel/cap_last_cap").strip() or 40)
        except ValueError:
            cap_last = 40
        import rootless

        version = str(getattr(rootless, "__version__", "dev"))
        return cls(env=dict(os.environ), cwd=os.getcwd(), uid=os.getuid(), gid=os.getgid(),
                   hostname=os.uname().nodename,
                   resolv_conf=text("/etc/resolv.conf") if network.partition(":")[0] != "none" else "",
                   hosts=text("/etc/hosts"),
                   cap_last=min(cap_last, len(CAP_NAMES) - 1), cgroup2=_is_cgroup2("/sys/fs/cgroup"),
                   version=version, host_ip=_host_ip(text("/proc/net/fib_trie")), limits=confine.HostLimits.read(),
                   no_fuse_overlayfs=fuse_overlayfs_missing())


def _user_name() -> str | None:
    import pwd

    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        return None


def _host_ip(fib_trie: str) -> str | None:
    """The host's first non-loopback IPv4 address, from /proc/net/fib_trie's local routes (each
    address is a line followed by one reading ``/32 host LOCAL``): what Podman names
    host.containers.internal, read without the socket module's import cost."""
    prev = ""
    found: list[str] = []
    for line in fib_trie.splitlines():
        s = line.strip()
        if s.startswith("/32 host LOCAL") and prev and not prev.startswith("127."):
            found.append(prev)
        if s.startswith(("|--", "+--")):
            prev = s[3:].strip().split()[0]
    if not found:
        return None
    return min(found, key=lambda a: tuple(int(x) for x in a.split(".")))


def _is_cgroup2(path: str) -> bool:
    # Only the root of a cgroup v2 hierarchy has cgroup.controllers (cgroups(7)).
    return os.path.exists(os.path.join(path, "cgroup.controllers"))


# --------------------------------------------------------------------------- command


def container_config(layout: Layout, config_digest: str) -> dict[str, Any]:
    """The ``config`` object (Env, Entrypoint, Cmd, WorkingDir, User) of a stored image config;
    the blob was verified against its digest when it entered the store."""
    path = layout.blob(config_digest)
    try:
        data = json.loads(path.read_bytes())
    except FileNotFoundError:
        raise RootlessError(f"image config {config_digest} is missing from the store",
                            "pull the image again") from None
    except (OSError, ValueError) as e:
        raise RootlessError(f"read image config {config_digest}: {e}", "pull the image again") from None
    cfg = data.get("config") if isinstance(data, dict) else None
    return cfg if isinstance(cfg, dict) else {}



def parse_entrypoint(text: str) -> tuple[str, ...]:
    """--entrypoint: a JSON array of strings, else one program name; "" clears it."""
    if text.lstrip().startswith("["):
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            value = None
        if isinstance(value, list) and all(isinstance(x, str) for x in value):
            return tuple(value)
    return (text,) if text else ()


def command(image_config: Mapping[str, Any], args: Sequence[str], entrypoint: str | None) -> tuple[str, ...]:
    """The container's argv, by Docker's rules (which Podman follows).

    An --entrypoint replaces the image's Entrypoint *and* drops its Cmd; arguments after the
    image replace Cmd; the result is Entrypoint + Cmd.
    """
    if entrypoint is not None:
        ep = parse_entrypoint(entrypoint)
        cmd: tuple[str, ...] = tuple(args)
    else:
        ep = tuple(image_config.get("Entrypoint") or ())
        cmd = tuple(args) if args else tuple(image_config.get("Cmd") or ())
    argv = ep + cmd
    if not argv:
        raise RootlessError("no command or entrypoint provided, and no CMD or ENTRYPOINT from image",
                            "give a command after the image name")
    return argv


# --------------------------------------------------------------------------- environment


def _split_env(item: str, where: str) -> tuple[str, str | None]:
    key, sep, value = item.partition("=")
    if not key:
        raise RootlessError(f"{where}: environment variable {item!r} has no name")
    return key, value if sep else None


def expand_env(items: Iterable[str], host_env: Mapping[str, str], where: str) -> list[tuple[str, str]]:
    """-e KEY=VALUE sets; -e KEY takes the host's value (dropped when unset); -e 'KEY*' takes
    every host variable matching the glob (podman-run(1) --env)."""
    out: list[tuple[str, str]] = []
    for item in items:
        key, value = _split_env(item, where)
        if value is not None:
            out.append((key, value))
        elif key.endswith("*"):
            out.extend((k, v) for k, v in host_env.items() if fnmatch.fnmatchcase(k, key))
        elif key in host_env:
            out.append((key, host_env[key]))
    return out


def parse_env_file(text: str, path: str, host_env: Mapping[str, str]) -> list[tuple[str, str]]:
    """--env-file: KEY=VALUE lines taken literally (no quotes, no expansion); blank and # lines skipped."""
    items = []
    for raw in text.splitlines():
        line = raw.lstrip()
        if not line or line.startswith("#"):
            continue
        items.append(line)
    return expand_env(items, host_env, f"env file {path}")


def read_env_file(path: str, host_env: Mapping[str, str]) -> list[tuple[str, str]]:
    from rootless.errors import decode_utf8

    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise RootlessError(f"open env file {path}: {e.strerror}") from None
    return parse_env_file(decode_utf8(data, f"env file {path}"), path, host_env)


def merge_env(*layers: Iterable[tuple[str, str]]) -> dict[str, str]:
    env: dict[str, str] = {}
    for layer in layers:
        for k, v in layer:
            env[k] = v
    return env


def _pairs(items: Iterable[str], where: str) -> list[tuple[str, str]]:
    out = []
    for item in items:
        k, v = _split_env(item, where)
        out.append((k, v or ""))
    return out


# --------------------------------------------------------------------------- capabilities


def normalize_cap(name: str) -> str:
    n = name.strip().upper()
    if n == "ALL":
        return n
    if not n.startswith("CAP_"):
        n = "CAP_" + n
    if n not in CAP_NUMBERS:
        raise RootlessError(f"unknown capability {name!r}", "see capabilities(7) for the names")
    return n


def capabilities(add: Iterable[str], drop: Iterable[str], *, privileged: bool = False,
                 cap_last: int = len(CAP_NAMES) - 1) -> tuple[str, ...]:
    """The bounding set: Podman's default eleven (or all, with --privileged), --cap-drop
    removed, --cap-add added; ALL stands for every capability the kernel knows."""
    add_n = [normalize_cap(c) for c in add]
    drop_n = [normalize_cap(c) for c in drop]
    every = CAP_NAMES[:cap_last + 1]
    if "ALL" in add_n and "ALL" in drop_n:
        raise RootlessError("adding all capabilities and removing all capabilities is not allowed")
    if "ALL" in add_n or privileged:
        have = set(every)
    elif "ALL" in drop_n:
        have = set()
    else:
        have = set(DEFAULT_CAPS)
    if "ALL" not in drop_n:
        have -= set(drop_n)
    if "ALL" not in add_n:
        have |= {c for c in add_n if c != "ALL"}
    return tuple(sorted(have, key=CAP_NUMBERS.__getitem__))


def cap_mask(names: Iterable[str]) -> int:
    mask = 0
    for n in names:
        mask |= 1 << CAP_NUMBERS[n]
    return mask


def ambient_caps(add: Iterable[str], bounding: Sequence[str]) -> tuple[str, ...]:
    """For a non-root user Podman keeps only the capabilities named by --cap-add (and in
    the bounding set), raised as ambient so they survive execve(2)."""
    named = [normalize_cap(c) for c in add]
    wanted = set(bounding) if "ALL" in named else {c for c in named if c != "ALL"}
    return tuple(sorted(wanted & set(bounding), key=CAP_NUMBERS.__getitem__))


# --------------------------------------------------------------------------- user namespaces


def _store_ids(store: Sequence[IdMap], start: int, size: int) -> list[tuple[int, int]]:
    """Host (id, count) pieces for store-namespace ids [start, start+size)."""
    out = []
    want, end = start, start + size
    for m in sorted(store, key=lambda m: m.container_id):
        lo, hi = max(want, m.container_id), min(end, m.container_id + m.size)
        if lo < hi:
            out.append((m.host_id + lo - m.container_id, hi - lo))
            want = hi
    return out


def keep_id_map(store: Sequence[IdMap], own: int) -> tuple[IdMap, ...]:
    """--userns=keep-id: the user's own id keeps its number inside; the subordinate ids fill
    0..own-1 and own+1.. in order (Podman builds the same map through its intermediate
    namespace)."""
    total = sum(m.size for m in store)
    if total <= 1:
        return (IdMap(own, _store_ids(store, 0, 1)[0][0], 1),)
    sub = total - 1  # store ids 1..sub are the subordinate ids
    out: list[IdMap] = []
    below = min(own, sub)
    cid = 0
    for host, n in _store_ids(store, 1, below):
        out.append(IdMap(cid, host, n))
        cid += n
    out.append(IdMap(own, _store_ids(store, 0, 1)[0][0], 1))
    cid = own + 1
    for host, n in _store_ids(store, 1 + below, sub - below):
        out.append(IdMap(cid, host, n))
        cid += n
    return tuple(out)


def keep_id_shift(store: Sequence[IdMap], own: int) -> tuple[IdMap, ...]:
    """fuse-overlayfs's mapping for a --userns keep-id rootfs: the ID a file is stored with, as
    the keep-id namespace sees it → the ID the image gave it (the store's numbering), so the
    image's root shows as root and not as you: keep_id_map in the store's numbering (the
    direction fuse-overlayfs 1.10 applies uidmapping= in, checked by the integration test)."""
    total = sum(m.size for m in store)
    if total <= 1:
        return ()
    return keep_id_map((IdMap(0, 0, total),), own)


def fuse_overlayfs_missing() -> str | None:
    """Why fuse-overlayfs cannot be used (not installed, /dev/fuse closed to us), or None
    (storage.drivers.fuse_overlayfs checks the same, without the import on the run path)."""
    if not any(os.access(os.path.join(d, "fuse-overlayfs"), os.X_OK)
               for d in ("/usr/bin", "/usr/local/bin", "/bin")):
        return "fuse-overlayfs is not installed"
    if not os.access("/dev/fuse", os.R_OK | os.W_OK):
        return "/dev/fuse is not open to you"
    return None


def keep_id_rootfs(plan: RootfsPlan, uid_map: Sequence[IdMap], gid_map: Sequence[IdMap], host: HostInfo) -> RootfsPlan:
    """--userns keep-id: the same upper and lower directories, read through fuse-overlayfs's ID
    mapping, so the image's owners show as the image gives them. Without it the image's root
    would show as you (the kernel's overlayfs cannot remap IDs for us), so the run is refused
    rather than made differently; Podman makes a chown'ed copy of the image's layers instead."""
    if sum(m.size for m in uid_map) <= 1:
        return plan  # one ID mapped: every file is yours whatever the namespace (doctor says so)
    hint = ("install fuse-overlayfs (apt-get install fuse-overlayfs) and use the overlay or fuse-overlayfs "
            "storage driver, or run without --userns keep-id")
    if plan.driver == "vfs":
        raise RootlessError("--userns keep-id: the vfs storage driver cannot show the image's files with their "
                            "owners under the keep-id mapping (the image's root would appear as you)", hint)
    if host.no_fuse_overlayfs is not None:
        raise RootlessError(f"--userns keep-id needs fuse-overlayfs to show the image's files with their owners "
                            f"under the keep-id mapping, and {host.no_fuse_overlayfs}", hint)
    return replace(plan, driver="fuse-overlayfs", uid_shift=keep_id_shift(uid_map, host.uid),
                   gid_shift=keep_id_shift(gid_map, host.gid))


# --------------------------------------------------------------------------- mounts


@dataclass(frozen=True)
class VolumeRef:
    """A volume a run asks for: named (``-v NAME:/path``, ``--mount type=volume``) or anonymous
    (``-v /path``, the image's VOLUME); ``options`` are the mount's (ro, nocopy, propagation)."""

    name: str | None
    destination: str
    options: tuple[str, ...] = ()


def _is_path(src: str) -> bool:
    return src.startswith(("/", "."))


def _abs_source(src: str, cwd: str, what: str) -> str:
    path = os.path.normpath(src if src.startswith("/") else os.path.join(cwd, src))
    if not os.path.exists(path):
        raise RootlessError(f"{what}: statfs {path}: no such file or directory")
    return path


def _dest(dst: str, what: str) -> str:
    if not dst.startswith("/"):
        raise RootlessError(f"{what}: invalid container path {dst!r}, must be an absolute path")
    return os.path.normpath(dst)


def parse_volume(text: str, cwd: str) -> Mount | VolumeRef:
    """-v SRC:DST[:OPTIONS] (podman-run(1) --volume): a bind mount of a host path (SRC absolute
    or starting with "."), a named volume (SRC a name) or an anonymous volume (-v DST)."""
    what = f"volume {text!r}"
    parts = text.split(":")
    if len(parts) == 1:
        return VolumeRef(None, _dest(parts[0], what))
    if len(parts) > 3:
        raise RootlessError(f"{what}: too many colons", "use -v SRC:DST[:OPTIONS]")
    src, dst = parts[0], parts[1]
    if not src:
        raise RootlessError(f"{what}: empty source", "use -v SRC:DST[:OPTIONS]")
    opts = [o for o in (parts[2].split(",") if len(parts) == 3 else []) if o]
    out = ["rbind"]
    seen_rw = False
    for o in opts:
        if o in ("ro", "rw"):
            if seen_rw:
                raise RootlessError(f"{what}: ro and rw given more than once")
            seen_rw = True
            out.append(o)
        elif o in ("nocopy", "U"):
            if o not in out:
                out.append(o)
        elif o in ("z", "Z", "copy"):
            continue  # SELinux relabelling has no meaning here; copy-up is the default
        elif o in ("bind", "rbind"):
            out[0] = o
        elif o in _PROPAGATIONS or o in ("nosuid", "suid", "nodev", "dev", "noexec", "exec"):
            out.append(o)
        else:
            raise RootlessError(f"{what}: unsupported option {o!r}",
                                "supported: ro, rw, U, z, Z, bind, rbind, [r]private, [r]shared, [r]slave, "
                                "nosuid, nodev, noexec")
    if not _is_path(src):
        from storage.volumes import check_name

        check_name(src)
        return VolumeRef(src, _dest(dst, what), tuple(o for o in out if o not in ("bind", "rbind")))
    return Mount(_dest(dst, what), "bind", _abs_source(src, cwd, what), tuple(o for o in out if o != "nocopy"))


def _truthy(v: str, what: str) -> bool:
    if v.lower() in ("", "true", "1", "yes"):
        return True
    if v.lower() in ("false", "0", "no"):
        return False
    raise RootlessError(f"{what}: {v!r} is not true or false")


def parse_mount(text: str, cwd: str) -> Mount | VolumeRef:
    """--mount type=bind|tmpfs|volume,source=...,target=...[,ro][,...] (podman-run(1) --mount)."""
    what = f"mount {text!r}"
    kv: dict[str, str] = {}
    flags: list[str] = []
    for field_ in text.split(","):
        if not field_:
            continue
        k, sep, v = field_.partition("=")
        k = k.strip().lower()
        if k in ("ro", "readonly"):
            if _truthy(v, what):
                flags.append("ro")
            continue
        if k in ("rw",):
            if _truthy(v, what):
                flags.append("rw")
            continue
        if not sep and k not in ("bind-nonrecursive", "z", "Z", "relabel", "notmpcopyup", "tmpcopyup",
                                 "volume-nocopy"):
            flags.append(k)
            continue
        kv[k] = v
    kind = kv.pop("type", "")
    dst = kv.pop("target", None) or kv.pop("destination", None) or kv.pop("dst", None)
    src = kv.pop("source", None) or kv.pop("src", None)
    if not dst:
        raise RootlessError(f"{what}: no target", "add target=/path/in/container")
    dest = _dest(dst, what)
    for ignored in ("relabel", "consistency", "z", "Z", "notmpcopyup", "tmpcopyup"):
        kv.pop(ignored, None)
    for f in flags:
        if f not in ("ro", "rw", "nosuid", "suid", "nodev", "dev", "noexec", "exec", "z", "Z", "relabel",
                     "notmpcopyup", "tmpcopyup", "bind-nonrecursive"):
            raise RootlessError(f"{what}: unsupported option {f!r}")
    flags = [f for f in flags if f not in ("z", "Z", "relabel", "notmpcopyup", "tmpcopyup")]
    if kind == "bind":
        if not src:
            raise RootlessError(f"{what}: a bind mount needs source=", "add source=/host/path")
        opts = ["bind" if "bind-nonrecursive" in flags or "bind-nonrecursive" in kv else "rbind"]
        kv.pop("bind-nonrecursive", None)
        prop = kv.pop("bind-propagation", None)
        if prop:
            if prop not in _PROPAGATIONS:
                raise RootlessError(f"{what}: bind-propagation {prop!r} is not one of {', '.join(_PROPAGATIONS)}")
            opts.append(prop)
        if kv:
            raise RootlessError(f"{what}: unsupported option {next(iter(kv))!r} for a bind mount")
        opts += [f for f in flags if f != "bind-nonrecursive"]
        return Mount(dest, "bind", _abs_source(src, cwd, what), tuple(opts))
    if kind == "tmpfs":
        opts = list(TMPFS_DEFAULT_OPTIONS)
        size = kv.pop("tmpfs-size", None)
        mode = kv.pop("tmpfs-mode", None)
        if kv:
            raise RootlessError(f"{what}: unsupported option {next(iter(kv))!r} for a tmpfs mount")
        if size:
            opts.append(_tmpfs_option(f"size={size}", what))
        if mode:
            opts.append(_tmpfs_option(f"mode={mode}", what))
        for f in flags:
            opts = _set_flag(opts, f)
        return Mount(dest, "tmpfs", "tmpfs", tuple(opts))
    if kind == "volume":
        nocopy = "volume-nocopy" in kv and _truthy(kv.pop("volume-nocopy"), what)
        for extra in [k for k in kv if k.startswith("volume-")]:
            raise RootlessError(f"{what}: unsupported option {extra!r} for a volume mount")
        if kv:
            raise RootlessError(f"{what}: unsupported option {next(iter(kv))!r} for a volume mount")
        if src:
            from storage.volumes import check_name

            check_name(src)
        return VolumeRef(src or None, dest, tuple(flags) + (("nocopy",) if nocopy else ()))
    if kind in ("image", "devpts", "glob", "ramfs"):
        raise RootlessError(f"{what}: type={kind} is not supported yet", "use type=bind, volume or tmpfs")
    raise RootlessError(f"{what}: unknown or missing type {kind!r}", "use type=bind, volume or tmpfs")


_OPPOSITE = {"ro": "rw", "rw": "ro", "nosuid": "suid", "suid": "nosuid", "nodev": "dev", "dev": "nodev",
             "noexec": "exec", "exec": "noexec"}


def _set_flag(opts: list[str], flag: str) -> list[str]:
    other = _OPPOSITE.get(flag)
    return [o for o in opts if o not in (flag, other)] + [flag]


# tmpfs(5): sizes in bytes with a k, m or g suffix (or % of RAM), the mode in octal, IDs as numbers;
# the kernel answers anything else with a bare EINVAL at mount time.
_TMPFS_VALUES = {"size": (r"[0-9]+[kKmMgGtTpPeE%]?", "a size such as 64m, 1g or 50%"),
                 "nr_blocks": (r"[0-9]+[kKmMgG]?", "a number of blocks"),
                 "nr_inodes": (r"[0-9]+[kKmMgG]?", "a number of inodes"),
                 "mode": (r"[0-7]{1,4}", "an octal mode such as 1777"),
                 "uid": (r"[0-9]+", "a numeric user ID"), "gid": (r"[0-9]+", "a numeric group ID")}


def _tmpfs_option(option: str, what: str) -> str:
    import re

    key, eq, value = option.partition("=")
    rule = _TMPFS_VALUES.get(key)
    if eq and rule and not re.fullmatch(rule[0], value):
        raise RootlessError(f"{what}: {key}={value!r} is not {rule[1]}", "see tmpfs(5) for the options")
    return option


def parse_tmpfs(text: str) -> Mount:
    """--tmpfs DST[:OPTIONS], default options rw,noexec,nosuid,nodev (podman-run(1))."""
    dst, _, opt_text = text.partition(":")
    opts = list(TMPFS_DEFAULT_OPTIONS)
    for o in (x for x in opt_text.split(",") if x):
        opts = _set_flag(opts, o) if o in _OPPOSITE else [*opts, _tmpfs_option(o, f"--tmpfs {text!r}")]
    return Mount(_dest(dst, f"tmpfs {text!r}"), "tmpfs", "tmpfs", tuple(opts))


def volume_refs(opts: RunOptions, image_config: Mapping[str, Any], cwd: str) -> list[VolumeRef]:
    """The volumes a run uses: those given (-v NAME:/path, -v /path, --mount type=volume) and an
    anonymous one for each VOLUME of the image that no mount of the run covers."""
    given = [parse_volume(v, cwd) for v in opts.volumes] + [parse_mount(m, cwd) for m in opts.mounts]
    refs = [r for r in given if isinstance(r, VolumeRef)]
    taken = {m.destination for m in given} | {parse_tmpfs(t).destination for t in opts.tmpfs}
    for path in sorted(image_config.get("Volumes") or {}):
        if path.startswith("/") and os.path.normpath(path) not in taken:
            refs.append(VolumeRef(None, os.path.normpath(path)))
            taken.add(os.path.normpath(path))
    return refs


def _depth(m: Mount) -> int:
    return 0 if m.destination == "/" else m.destination.count("/")


def system_mounts(network: str, *, privileged: bool, cgroup2: bool, read_only: bool,
                  read_only_tmpfs: bool) -> list[Mount]:
    """The mounts every container gets, in the order an OCI runtime performs Podman's list."""
    sys_ro = () if privileged else ("ro",)
    ms = [
        Mount("/proc", "proc", "proc", ("nosuid", "noexec", "nodev")),
        Mount("/dev", "tmpfs", "tmpfs", ("nosuid", "noexec", "strictatime", "mode=755", "size=65536k")),
    ]
    if network == "host":
        # sysfs shows the network namespace of its mounter; without a namespace of our own
        # the kernel refuses a new instance, so the host's is bound (as rootless Podman does).
        ms.append(Mount("/sys", "bind", "/sys", ("rbind", "nosuid", "noexec", "nodev", *sys_ro)))
    else:
        ms.append(Mount("/sys", "sysfs", "sysfs", ("nosuid", "noexec", "nodev", *sys_ro)))
    ms += [
        Mount("/dev/pts", "devpts", "devpts",
              ("nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5")),
        Mount("/dev/mqueue", "mqueue", "mqueue", ("nosuid", "noexec", "nodev")),
    ]
    if cgroup2:
        ms.append(Mount("/sys/fs/cgroup", "cgroup2", "cgroup2", ("nosuid", "noexec", "nodev", *sys_ro)))
    # containers.conf(5) shm_size "65536k" reaches the kernel as 64000k (Podman's units)
    ms.append(Mount("/dev/shm", "tmpfs", "shm", ("nosuid", "noexec", "nodev", "mode=1777", "size=64000k")))
    ms += [Mount(f"/dev/{d}", "bind", f"/dev/{d}", ("bind",)) for d in DEFAULT_DEVICES]
    if read_only and read_only_tmpfs:
        # podman-run(1) --read-only-tmpfs (default true): writable scratch space stays.
        for d in ("/run", "/tmp", "/var/tmp"):
            ms.append(Mount(d, "tmpfs", "tmpfs", ("rw", "nosuid", "nodev", "mode=1777" if d != "/run" else
                                                  "mode=755")))
    return ms


# Not passed through by --privileged: the container has its own instances of these, or the
# host's controlling terminals and consoles, which are nobody else's business.
_PRIVATE_DEV = {"pts", "shm", "mqueue", "ptmx", "console", "tty", "core", "fd", "stdin", "stdout", "stderr"}


def host_devices(root: str = "/dev") -> list[str]:
    """The host's device nodes you may open, for `--privileged` (as rootless Podman passes the
    host's devices through): bind-mounted, since a user namespace cannot create device nodes
    that work. Those already in every container are left out."""
    import stat

    out: list[str] = []

    def walk(d: str) -> None:
        try:
            entries = sorted(os.scandir(d), key=lambda e: e.name)
        except OSError:
            return
        for e in entries:
            rel = os.path.relpath(e.path, root)
            if d == root and (e.name in _PRIVATE_DEV or e.name in DEFAULT_DEVICES):
                continue
            try:
                st = e.stat(follow_symlinks=False)
            except OSError:
                continue
            if stat.S_ISDIR(st.st_mode):
                walk(e.path)
            elif (stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode)) and \
                    (os.access(e.path, os.R_OK) or os.access(e.path, os.W_OK)):
                out.append("/dev/" + rel)

    walk(root)
    return out


# --------------------------------------------------------------------------- generated files


def hosts_file(hostname: str, name: str, network: str, host_hosts: str, *,
               extra: Sequence[tuple[str, str]] = (), own_address: str = "127.0.0.1",
               host_gateway: str | None = None) -> str:
    """Podman's layout: --add-host entries first (the first match wins in every resolver), the
    host's /etc/hosts, ``host.containers.internal`` (the host as the container reaches it) and
    the container's own address, host name and name (not with --network host)."""
    # the host's entries rewritten as Podman writes them: "IP<TAB>NAMES", comments and blanks dropped
    base = [f"{w[0]}\t{' '.join(w[1:])}" for w in (ln.split("#", 1)[0].split() for ln in host_hosts.splitlines())
            if len(w) > 1] or ["127.0.0.1\tlocalhost", "::1\tlocalhost"]
    lines = [f"{ip}\t{names}" for names, ip in extra] + base
    if host_gateway:
        lines.append(f"{host_gateway}\thost.containers.internal")
    if network != "host":
        names = " ".join(dict.fromkeys(n for n in (hostname, name) if n))
        lines.append(f"{own_address}\t{names}")
    return "\n".join(lines) + "\n"


def _is_loopback(addr: str) -> bool:
    return addr.startswith("127.") or addr in ("::1", "0:0:0:0:0:0:0:1")


def resolv_conf(host_text: str, network: str, *, dns: Sequence[str] = (), search: Sequence[str] = (),
                options: Sequence[str] = (), slirp_dns: str | None = None) -> str | None:
    """resolv.conf(5) for the container as Podman writes it; None (no file, the image's own
    stays) without a network or with ``--dns none``.

    --network host keeps the host's file. slirp4netns puts its own DNS forwarder (*slirp_dns*)
    first, then the host's nameservers but those on loopback, which is not the host's from
    inside. --dns, --dns-search ("." for none) and --dns-option replace the corresponding lines.
    """
    mode = network.partition(":")[0]
    if mode == "none" or list(dns) == ["none"]:
        return None
    if mode == "host" and not (dns or search or options):
        return host_text if host_text.endswith("\n") or not host_text else host_text + "\n"
    servers: list[str] = []
    domains: list[str] = []
    opts: list[str] = []
    for line in host_text.splitlines():
        words = line.split()
        if not words or words[0].startswith(("#", ";")):
            continue
        if words[0] == "nameserver" and len(words) > 1:
            servers.append(words[1])
        elif words[0] in ("search", "domain"):
            domains = words[1:]
        elif words[0] == "options":
            opts += words[1:]
    if mode == "slirp4netns":
        servers = ([slirp_dns] if slirp_dns else []) + [s for s in servers if not _is_loopback(s)]
    if dns:
        servers = list(dns)
    if search:
        domains = [] if list(search) == ["."] else list(search)
    if options:
        opts = list(options)
    out = ["search " + " ".join(domains)] if domains else []
    out += [f"nameserver {s}" for s in servers]
    if opts:
        out.append("options " + " ".join(opts))
    return "\n".join(out) + "\n" if out else ""


def add_hosts(entries: Sequence[str], host_gateway: str | None) -> list[tuple[str, str]]:
    """``--add-host NAME[;NAME...]:IP`` → (names, IP); ``host-gateway`` is the host as the
    container reaches it."""
    import ipaddress

    out = []
    for e in entries:
        names, sep, ip = e.partition(":")
        if not sep or not names or not ip:
            raise RootlessError(f"--add-host {e!r}: expected NAME:IP", "e.g. --add-host db:10.0.2.2")
        if ip == "host-gateway":
            if host_gateway is None:
                raise RootlessError(f"--add-host {e!r}: host-gateway needs slirp4netns with "
                                    "allow_host_loopback=true", "or give the host's address itself")
            ip = host_gateway
        try:
            ipaddress.ip_address(ip.strip("[]"))
        except ValueError:
            raise RootlessError(f"--add-host {e!r}: {ip!r} is not an IP address") from None
        out.append((" ".join(names.split(";")), ip.strip("[]")))
    return out


def network_spec(mode: str, slirp: SlirpOptions | None, opts: RunOptions,
                 image_config: Mapping[str, Any]) -> Network:
    """Spec.network: the mode, slirp4netns's options and the published ports, the host ports
    given checked free now, before anything starts (host port 0: the runtime chooses one)."""
    pairs = slirp.pairs() if slirp is not None else (
        tuple(("attach", a) for a in opts.user_networks) + ((("host_loopback", "true"),) if opts.host_loopback else ())
        + ((("outbound", opts.outbound),) if opts.outbound != "slirp4netns" else ()))
    if not (opts.publish or opts.publish_all):
        return Network(mode=mode, options=pairs)  # type: ignore[arg-type]
    if mode not in ("slirp4netns", "bridge"):
        why = ("the container has no network" if mode == "none" else
               "with --network container:NAME they are published by that container" if mode == "container" else
               "with --network host the container's ports are the host's already")
        raise RootlessError(f"-p/--publish needs the container's own network: {why}",
                            "drop -p/-P, or use --network slirp4netns (the default)")
    from slirp import ports

    wanted = [p for spec in opts.publish for p in ports.parse_publish(spec)]
    if opts.publish_all:
        taken = {(p.container_port, p.protocol) for p in wanted}
        wanted += [p for p in ports.exposed(image_config) if (p.container_port, p.protocol) not in taken]
    resolved = ports.resolve(wanted)
    return Network(mode=mode, options=pairs,  # type: ignore[arg-type]
                   ports=tuple(PortMapping(p.host_ip, p.host_port, p.container_port,
                                           "udp" if p.protocol == "udp" else "tcp") for p in resolved))


def containerenv(version: str, name: str, cid: str, image: str, image_id: str, privileged: bool) -> str:
    """/run/.containerenv: its presence says "in a container"; the keys are Podman's."""
    return (f'engine="rootless-{version}"\nname="{name}"\nid="{cid}"\nimage="{image}"\n'
            f'imageid="{image_id}"\nrootless=1\n' + ("privileged=1\n" if privileged else ""))


# --------------------------------------------------------------------------- the spec


def cgroup_settings(opts: RunOptions) -> tuple[Resources | None, int | None, str]:
    """(Spec.resources, Process.oom_score_adj, Spec.cgroups) from the limit flags, --cgroups and
    the cgroup manager chosen by the config or --cgroup-manager."""
    from rootless.image import limits

    res, oom = limits.parse({k: getattr(opts, k) for k in limits.FLAGS})
    mode = (opts.cgroups or "enabled").lower()
    if mode in ("no-conmon", "split"):
        raise RootlessError(f"--cgroups {opts.cgroups}: not supported", "use enabled or disabled")
    if mode not in ("enabled", "disabled"):
        raise RootlessError(f"--cgroups {opts.cgroups!r}: must be enabled or disabled")
    if mode == "disabled":
        if res is not None:
            first = next(limits.FLAGS[k] for k in limits.FLAGS if getattr(opts, k) not in (None, "")
                         and k != "oom_score_adj")
            raise RootlessError(f"conflicting options: {first} needs a cgroup, and --cgroups is disabled",
                                "drop the resource limits or --cgroups disabled")
        return None, oom, "disabled"
    return res, oom, opts.cgroup_manager or "enabled"



def device_mount(text: str) -> Mount:
    """--device HOST[:CONTAINER][:PERMISSIONS]: the host's node bound in, as rootless Podman
    does (a user namespace cannot make device nodes that work); only one the user may open."""
    import stat

    parts = text.split(":")
    host = parts[0]
    dest = parts[1] if len(parts) > 1 and parts[1].startswith("/") else host
    perms = parts[-1] if len(parts) > 1 and not parts[-1].startswith("/") else "rwm"
    if not set(perms) <= set("rwm") or len(parts) > 3:
        raise RootlessError(f"--device {text!r}: not HOST[:CONTAINER][:PERMISSIONS]", hint="for example /dev/fuse")
    try:
        st = os.stat(host)
    except OSError as e:
        raise RootlessError(f"--device {host}: {e.strerror}", hint="give a device node of the host") from None
    if not (stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode)):
        raise RootlessError(f"--device {host}: not a device node")
    want = (os.R_OK if "r" in perms else 0) | (os.W_OK if "w" in perms else 0)
    if want and not os.access(host, want):
        raise RootlessError(f"--device {host}: you may not open it ({perms})",
                            hint="a rootless container gets only the devices its user may open (see ls -l)")
    return Mount(dest, "bind", host, ("bind",) if "w" in perms else ("bind", "ro"))


def check_unique_destinations(destinations: Sequence[str]) -> None:
    """Two mounts on one container path: Podman refuses them (exit 125), as the second would
    hide the first."""
    seen: set[str] = set()
    for d in destinations:
        norm = os.path.normpath(d)
        if norm in seen:
            raise RootlessError(f"{norm}: duplicate mount destination",
                                hint="give each -v, --mount and --tmpfs its own container path")
        seen.add(norm)


def exposed_ports(image_config: Mapping[str, Any], expose: Sequence[str]) -> dict[str, Any]:
    """The image's ExposedPorts with --expose PORT[-LAST][/PROTO] added."""
    out = dict(image_config.get("ExposedPorts") or {})
    for e in expose:
        ports, _, proto = e.partition("/")
        first, _, last = ports.partition("-")
        try:
            lo, hi = int(first), int(last or first)
        except ValueError:
            lo = hi = 0
        if not (1 <= lo <= hi <= 65535) or (proto or "tcp").lower() not in ("tcp", "udp", "sctp"):
            raise RootlessError(f"--expose {e!r}: not a port", hint="PORT[-LAST][/tcp|udp], for example 8080/tcp")
        for p in range(lo, hi + 1):
            out[f"{p}/{(proto or 'tcp').lower()}"] = {}
    return out


def timezone(tz: str) -> str:
    """--tz: the host's zone file to bind on /etc/localtime (``local``: the host's own)."""
    path = "/etc/localtime" if tz == "local" else os.path.join("/usr/share/zoneinfo", tz)
    if ".." in tz.split("/") or tz.startswith("/") or not os.path.isfile(path):
        raise RootlessError(f"--tz {tz!r}: unknown time zone", hint="an IANA name such as Europe/Paris or UTC "
                            "(a file under /usr/share/zoneinfo), or local")
    return os.path.realpath(path)


def parse_umask(text: str) -> int:
    try:
        value = int(text, 8)
    except ValueError:
        value = -1
    if not 0 <= value <= 0o777:
        raise RootlessError(f"--umask {text!r}: not an octal mask", hint="for example 0022 or 0077")
    return value


def group_ids(groups: Sequence[str]) -> tuple[int, ...]:
    out = []
    for g in groups:
        if not g.isdigit():
            raise RootlessError(f"--group-add {g!r}: give a group ID (a number)",
                                hint="the container's group names are not read for --group-add")
        out.append(int(g))
    return tuple(out)


def shm_mount(m: Mount, size: str) -> Mount:
    from rootless.image.limits import parse_size

    n = parse_size(size, "--shm-size")
    if n <= 0:
        raise RootlessError(f"--shm-size {size!r}: must be more than 0")
    return replace(m, options=tuple(o for o in m.options if not o.startswith("size=")) + (f"size={n // 1024}k",))


def build(image_config: Mapping[str, Any], opts: RunOptions, plan: RootfsPlan, *,
          container_id: str, rundir: str, uid_map: Sequence[IdMap], gid_map: Sequence[IdMap],
          image_name: str = "", image_id: str = "", host: HostInfo | None = None,
          volume_mounts: Sequence[Mount] = (), seccomp_cache: str = "",
          shared: Mapping[str, Spec] | None = None) -> Spec:
    """The Spec for ``rootless run`` of an image whose container config (the ``config``
    object of the image config: Env, Entrypoint, Cmd, WorkingDir, User) is *image_config*;
    *volume_mounts* are the run's volumes (``volume_refs``) as the volume store resolved them;
    *shared*: the Spec of each container ``shared_refs`` names, by namespace."""
    host = host or HostInfo()
    from slirp.config import parse_network

    shared = dict(shared or {})
    if set(shared) != set(shared_refs(opts)):
        raise RootlessError("the containers whose namespaces are shared were not looked up", "this is a bug: report it")
    if opts.expose:
        image_config = {**image_config, "ExposedPorts": exposed_ports(image_config, opts.expose)}
    if "network" in shared:
        mode, slirp = "container", None
        if opts.dns or opts.dns_search or opts.dns_option:  # Podman's wording
            raise RootlessError("conflicting options: dns and the network mode: container",
                                "the container uses the other container's /etc/resolv.conf: drop --dns*")
        if opts.add_host:
            raise RootlessError("cannot set extra host entries when the container is joined to another container's "
                                "network namespace", "the container uses the other container's /etc/hosts: drop "
                                "--add-host")
    elif opts.network == "bridge" and opts.user_networks:
        mode, slirp = "bridge", None
    else:
        mode, slirp = parse_network(opts.network)
    argv = command(image_config, opts.command, opts.entrypoint)
    name = opts.name or container_id[:12]
    if opts.uts == "host" and opts.hostname:
        raise RootlessError("conflicting options: --hostname and --uts host", hint="drop one of them")
    if "uts" in shared and opts.hostname:
        raise RootlessError(f"conflicting options: --hostname and --uts {opts.uts}",
                            hint="the container has the other container's host name: drop one of them")
    hostname = opts.hostname or (shared["uts"].hostname if "uts" in shared else
                                 host.hostname if mode == "host" or opts.uts == "host" else container_id[:12])
    if len(hostname) > 64:  # sethostname(2): EINVAL beyond HOST_NAME_MAX
        raise RootlessError(f"--hostname {hostname[:20]}…: {len(hostname)} characters, more than the kernel's "
                            "limit of 64")
    for server in opts.dns if list(opts.dns) != ["none"] else ():  # --dns none: no resolv.conf
        import ipaddress

        try:
            ipaddress.ip_address(server)
        except ValueError:
            raise RootlessError(f"--dns {server}: {server} is not an ip address") from None

    env = merge_env(
        _pairs(DEFAULT_ENV, "default environment"),
        _pairs(image_config.get("Env") or (), "image environment"),
        *(read_env_file(p, host.env) for p in opts.env_files),
        expand_env(opts.env, host.env, "--env"),
    )
    env.setdefault("container", "rootless")
    env.setdefault("HOSTNAME", hostname)
    localtime = timezone(opts.tz) if opts.tz else None
    if opts.tz and opts.tz != "local":
        env["TZ"] = opts.tz

    workdir = opts.workdir or image_config.get("WorkingDir") or "/"
    if not workdir.startswith("/"):
        raise RootlessError(f"workdir {workdir!r} must be an absolute path")

    no_new_privs = False
    for so in opts.security_opt:
        # Podman takes both no-new-privileges=true and no-new-privileges:true
        key, _, value = so.partition("=") if "=" in so else so.partition(":")
        if key in ("no-new-privileges", "no_new_privileges") and (not value or _truthy(value, so)):
            no_new_privs = True
        elif key == "seccomp" or so.startswith("seccomp:"):
            continue  # confine.seccomp
        elif key in ("label", "apparmor", "mask", "unmask", "proc-opts"):
            raise RootlessError(f"--security-opt {so!r} is not supported yet",
                                "supported: no-new-privileges, seccomp=unconfined|PROFILE.json")
        else:
            raise RootlessError(f"--security-opt {so!r}: unknown option",
                                "supported: no-new-privileges, seccomp=unconfined|PROFILE.json")
    seccomp = confine.seccomp(opts.security_opt, opts.privileged, host.cwd, seccomp_cache)

    caps = capabilities(opts.cap_add, opts.cap_drop, privileged=opts.privileged, cap_last=host.cap_last)
    resources, oom_score_adj, cgroups = cgroup_settings(opts)

    user_name: str | None = None
    if shared and opts.userns not in (None, "", "host"):
        raise RootlessError(f"conflicting options: --userns {opts.userns} and sharing another container's "
                            "namespaces: the container joins that container's user namespace", "drop --userns")
    owner = next(iter(shared.values()), None)
    if owner is not None:
        # the user namespace is the other container's, with its maps
        umap, gmap = owner.uid_map, owner.gid_map
        user = opts.user if opts.user is not None else (image_config.get("User") or "")
    elif opts.userns in (None, "", "host"):
        umap, gmap = tuple(uid_map), tuple(gid_map)
        user = opts.user if opts.user is not None else (image_config.get("User") or "")
    elif opts.userns == "keep-id":
        umap, gmap = keep_id_map(uid_map, host.uid), keep_id_map(gid_map, host.gid)
        user = opts.user if opts.user is not None else f"{host.uid}:{host.gid}"
        user_name = (host.user_name or _user_name()) if opts.user is None else None
    elif opts.userns == "nomap":
        # Podman's nomap leaves your own ID out of the namespace; the image's files are stored
        # as that ID (the store's root), so they would all show as nobody: Podman gives such a
        # container a chown'ed copy of its image, which this store does not make.
        raise RootlessError("--userns nomap is not supported: the image's files are stored as your own ID, which "
                            "that namespace leaves out", "supported: keep-id, host (the default)")
    else:
        raise RootlessError(f"--userns {opts.userns!r} is not supported", "supported: keep-id, host (the default)")

    process = Process(
        args=argv,
        env=tuple(f"{k}={v}" for k, v in env.items()),
        cwd=workdir,
        terminal=opts.tty,
        interactive=opts.interactive,
        init=opts.init,
        no_new_privileges=no_new_privs,
        capabilities=caps,
        user=user,
        ambient_capabilities=ambient_caps(opts.cap_add, caps),
        oom_score_adj=oom_score_adj,
        umask=parse_umask(opts.umask) if opts.umask is not None else 0o022,
        additional_gids=group_ids(opts.group_add),
        rlimits=confine.rlimits(opts.ulimit, opts.default_ulimits, host.limits),
        user_name=user_name,
    )

    given = [parse_volume(v, host.cwd) for v in opts.volumes] + [parse_mount(m, host.cwd) for m in opts.mounts]
    check_unique_destinations([m.destination for m in given] + [parse_tmpfs(t).destination for t in opts.tmpfs])
    user_mounts = [m for m in given if isinstance(m, Mount)] + list(volume_mounts)
    user_mounts += [parse_tmpfs(t) for t in opts.tmpfs]
    if localtime is not None:
        user_mounts.append(Mount("/etc/localtime", "bind", localtime, ("bind", "ro")))
    # Parents before children whatever the order given (Podman sorts by destination depth).
    user_mounts.sort(key=_depth)
    taken = {m.destination for m in user_mounts}

    if mode == "none" and ((opts.dns and list(opts.dns) != ["none"]) or opts.dns_search or opts.dns_option):
        raise RootlessError("conflicting options: --dns, --dns-search and --dns-option need a network, and "
                            "the network mode is none", "drop them, or use --network slirp4netns")
    gateway = slirp.gateway if slirp is not None and slirp.allow_host_loopback else None
    # host.containers.internal: the host's loopback through slirp4netns when that is allowed,
    # else the host's own address (which slirp4netns also reaches), as Podman writes it
    host_address = gateway or host.host_ip
    if mode == "bridge":
        # the name server on the gateway of the first network that has one (slirp.netd), else
        # the shared namespace's slirp4netns forwarder, reached through its NAT
        servers = [a["net"]["gateway"] for a in map(json.loads, opts.user_networks) if a["net"].get("dns_enabled")]
        resolv = resolv_conf(host.resolv_conf, "slirp4netns", dns=opts.dns or servers[:1] or ["10.0.2.3"],
                             search=opts.dns_search, options=opts.dns_option)
    else:
        resolv = resolv_conf(host.resolv_conf, mode, dns=opts.dns, search=opts.dns_search, options=opts.dns_option,
                             slirp_dns=slirp.dns if slirp is not None else None)
    hosts = hosts_file(hostname, name, mode, host.hosts, extra=add_hosts(opts.add_host, gateway),
                       own_address=slirp.guest if slirp is not None else "127.0.0.1", host_gateway=host_address)
    wanted = [("/run/.containerenv", File(".containerenv", containerenv(
                  host.version, name, container_id, image_name, image_id, opts.privileged))),
              ("/etc/hostname", File("hostname", hostname + "\n"))]
    if mode != "container":
        wanted.append(("/etc/hosts", File("hosts", hosts)))
        if resolv is not None:
            wanted.append(("/etc/resolv.conf", File("resolv.conf", resolv)))
    files = [f for _, f in wanted]
    generated = [Mount(dst, "bind", os.path.join(rundir, f.name), ("bind",))
                 for dst, f in wanted if dst not in taken]
    if mode == "container":
        # the other container's files, as Podman binds them (those of its run directory live while it runs)
        generated += [m for m in shared["network"].mounts
                      if m.destination in ("/etc/hosts", "/etc/resolv.conf") and m.destination not in taken]
    mounts = system_mounts(mode, privileged=opts.privileged, cgroup2=host.cgroup2,
                           read_only=opts.read_only, read_only_tmpfs=opts.read_only_tmpfs)
    if opts.shm_size is not None:
        mounts = [shm_mount(m, opts.shm_size) if m.destination == "/dev/shm" else m for m in mounts]
    if opts.privileged:
        mounts += [Mount(d, "bind", d, ("bind",)) for d in host_devices()]
    mounts += [device_mount(d) for d in opts.device]
    mounts = [m for m in mounts if m.destination not in taken] + generated + user_mounts

    namespaces = {"user", "mount", "pid", "uts", "ipc", "cgroup"} - set(shared)
    if "pid" in shared:
        pass  # a proc instance of its own, mounted in that PID namespace, shows the other's processes
    elif opts.pid == "host":
        # no PID namespace: a new proc instance would need one of ours, so the host's /proc
        # is bound in (as rootless Podman does); the masked paths still cover it
        namespaces.discard("pid")
        mounts = [Mount("/proc", "bind", "/proc", ("rbind", "nosuid", "noexec", "nodev")) if m.destination == "/proc"
                  else m for m in mounts]
    elif opts.pid not in (None, "", "private"):
        raise RootlessError(f"--pid {opts.pid!r} is not supported", hint="supported: host, private, container:NAME")
    if opts.ipc not in (None, "", "private", "shareable") and "ipc" not in shared:
        raise RootlessError(f"--ipc {opts.ipc!r} is not supported",
                            hint="private, shareable or container:NAME: the host's IPC namespace would need its "
                            "/dev/mqueue, which a user namespace cannot mount")
    if opts.uts == "host":
        namespaces.discard("uts")  # the host's name, which the container cannot change
    elif opts.uts not in (None, "", "private") and "uts" not in shared:
        raise RootlessError(f"--uts {opts.uts!r} is not supported", hint="supported: host, private, container:NAME")
    if mode not in ("host", "container"):
        namespaces.add("network")
    rootfs = replace(plan, readonly=True) if opts.read_only else plan
    if owner is not None and owner.rootfs.uid_shift:
        # the other container's keep-id namespace: the files shown as the image gave them, as there
        if rootfs.driver == "vfs" or host.no_fuse_overlayfs is not None:
            raise RootlessError(f"container {owner.name} uses --userns keep-id, and sharing its namespaces needs "
                                "fuse-overlayfs to show the image's files with their owners",
                                "install fuse-overlayfs and use the overlay or fuse-overlayfs storage driver")
        rootfs = replace(rootfs, driver="fuse-overlayfs", uid_shift=owner.rootfs.uid_shift,
                         gid_shift=owner.rootfs.gid_shift)
    elif opts.userns == "keep-id":
        rootfs = keep_id_rootfs(rootfs, uid_map, gid_map, host)
    return Spec(
        id=container_id,
        name=name,
        process=process,
        rootfs=rootfs,
        mounts=tuple(mounts),
        uid_map=umap,
        gid_map=gmap,
        namespaces=frozenset(namespaces),
        hostname=hostname,
        network=network_spec(mode, slirp, opts, image_config),
        masked_paths=() if opts.privileged else MASKED_PATHS,
        readonly_paths=() if opts.privileged else READONLY_PATHS,
        resources=resources,
        cgroups=cgroups,
        annotations=(("io.rootless.image", image_name), ("io.rootless.image-id", image_id)),
        rundir=rundir,
        files=tuple(files),
        sysctls=confine.sysctls(opts.sysctl, own_network=mode not in ("host", "container")),
        seccomp=seccomp,
        shared=tuple((ns, s.id) for ns, s in shared.items()),
    )


SHAREABLE = ("network", "pid", "ipc", "uts")


def shared_refs(opts: RunOptions) -> dict[str, str]:
    """--network/--pid/--ipc/--uts container:NAME: the container named for each namespace."""
    out = {}
    for ns, value in zip(SHAREABLE, (opts.network, opts.pid, opts.ipc, opts.uts), strict=True):
        kind, _, ref = (value or "").partition(":")
        if kind == "container":
            if not ref:
                raise RootlessError(f"--{ns} {value}: no container named", f"--{ns} container:NAME")
            out[ns] = ref
    return out
