"""The contract between planning and execution: everything the runtime may know.

It plays the role of config.json for crun and SpecGenerator for Podman. The runtime never sees
a registry, a manifest or a layer; storage and specgen produce these values, only the runtime's
child acts on them.
"""

from __future__ import annotations

from typing import Literal

from rootless.record import dataclass, field

Driver = Literal["overlay", "fuse-overlayfs", "vfs"]

# capabilities(7) by number (<linux/capability.h>): Process.capabilities holds these names.
CAPABILITIES = (
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID", "CAP_KILL", "CAP_SETGID",
    "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE", "CAP_NET_BIND_SERVICE", "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_IPC_LOCK", "CAP_IPC_OWNER", "CAP_SYS_MODULE", "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT", "CAP_SYS_PTRACE", "CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE", "CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE", "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL", "CAP_SETFCAP", "CAP_MAC_OVERRIDE", "CAP_MAC_ADMIN", "CAP_SYSLOG", "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ", "CAP_PERFMON", "CAP_BPF", "CAP_CHECKPOINT_RESTORE",
)


@dataclass(frozen=True)
class IdMap:
    container_id: int
    host_id: int
    size: int


@dataclass(frozen=True)
class RootfsPlan:
    """How to assemble the container's root file system.

    overlay / fuse-overlayfs: mount ``lower`` (top-most layer first, as overlayfs(5) orders
    lowerdir) under ``upper``/``work`` at ``target``. vfs: ``target`` is already a full copy
    and is bind-mounted.
    """

    driver: Driver
    target: str
    lower: tuple[str, ...] = ()
    upper: str | None = None
    work: str | None = None
    readonly: bool = False
    # fuse-overlayfs's uidmapping/gidmapping (ID as stored, seen from the container's user
    # namespace → ID shown), so a --userns keep-id container sees the image's owners (root as
    # root) without the chown'ed copy of its layers Podman makes.
    uid_shift: tuple[IdMap, ...] = ()
    gid_shift: tuple[IdMap, ...] = ()


# A bind Mount with the option "copyup" (a new named volume) gets the image's content at its
# destination copied into its empty source before it is mounted, owners and modes kept, once:
# the runtime then creates this file beside the source (Docker's volume copy-up).
COPY_UP_OPTION = "copyup"
COPY_UP_MARKER = "copied-up"
# A Mount with the option "U" (-v SRC:DST:U, podman-run(1)) has everything at its destination
# given to the container's user and group once they are resolved, before the command starts.
CHOWN_OPTION = "U"


@dataclass(frozen=True)
class Mount:
    destination: str
    type: str  # "bind", "tmpfs", "proc", "sysfs", "devpts", "mqueue", ...
    source: str = ""
    options: tuple[str, ...] = ()


@dataclass(frozen=True)
class Rlimit:
    """setrlimit(2) for the container's process: ``type`` is RLIMIT_NOFILE, RLIMIT_NPROC, ..."""

    type: str
    soft: int  # -1: unlimited (RLIM_INFINITY, all bits of rlim_t set; Python's resource module spells it -1)
    hard: int


@dataclass(frozen=True)
class Seccomp:
    """The seccomp filter every process entering the container loads last before execve(2).

    ``profile``: a Docker/Podman JSON profile, None for the built-in default (Podman's). It
    is evaluated for Process.capabilities and compiled once into ``cache``, a directory of the
    store (rootless.runtime.seccomp).
    """

    profile: str | None = None
    cache: str = ""


@dataclass(frozen=True)
class Process:
    args: tuple[str, ...]
    env: tuple[str, ...] = ()
    cwd: str = "/"
    make_cwd: bool = True  # create a missing cwd (run, as Docker does); exec -w does not
    uid: int = 0
    gid: int = 0
    additional_gids: tuple[int, ...] = ()
    terminal: bool = False
    interactive: bool = False
    init: bool = False
    no_new_privileges: bool = False
    capabilities: tuple[str, ...] = ()  # bounding = effective = permitted set, e.g. "CAP_CHOWN"
    umask: int = 0o022
    # "name|uid[:group|gid]" resolved by the runtime against the container's own /etc/passwd
    # and /etc/group once its rootfs is mounted (as crun does): uid, gid and the supplementary
    # groups of the entry replace the fields above, and HOME is added to env when unset.
    # None: uid/gid/additional_gids are used as given.
    user: str | None = None
    # Raised into the ambient set so a non-root user keeps them across execve(2)
    # (capabilities(7)); Podman does this for --cap-add with --user.
    ambient_capabilities: tuple[str, ...] = ()
    # written to /proc/self/oom_score_adj before execve (--oom-score-adj); None: inherited
    oom_score_adj: int | None = None
    rlimits: tuple[Rlimit, ...] = ()  # set before execve; those not named are inherited
    # The name the passwd and group entries added for a user the image does not list carry
    # (--userns keep-id: yours, as Podman adds them); None: the uid, "container user".
    user_name: str | None = None


@dataclass(frozen=True)
class PortMapping:
    host_ip: str
    host_port: int
    container_port: int
    protocol: Literal["tcp", "udp"] = "tcp"


@dataclass(frozen=True)
class Network:
    # "bridge": user networks (rootless.runtime.usernet); each option ("attach", JSON) names
    # one: {"net": its record (slirp.usernet.NetworkConfig), "ip": IP or null, "aliases": [...]}
    # "container": another container's network namespace (Spec.shared names it)
    mode: Literal["none", "host", "slirp4netns", "bridge", "container"] = "none"
    options: tuple[tuple[str, str], ...] = ()
    ports: tuple[PortMapping, ...] = ()


@dataclass(frozen=True)
class Resources:
    memory: int | None = None
    memory_swap: int | None = None
    memory_reservation: int | None = None
    cpu_quota: int | None = None
    cpu_period: int | None = None
    cpu_shares: int | None = None
    cpuset_cpus: str | None = None
    pids_limit: int | None = None


@dataclass(frozen=True)
class File:
    """A file the runtime writes into ``Spec.rundir`` before starting (hosts, resolv.conf, ...);
    a bind Mount with source ``<rundir>/<name>`` puts it in the container."""

    name: str
    content: str
    mode: int = 0o644


@dataclass(frozen=True)
class Spec:
    id: str
    name: str
    process: Process
    rootfs: RootfsPlan
    mounts: tuple[Mount, ...] = ()
    uid_map: tuple[IdMap, ...] = ()
    gid_map: tuple[IdMap, ...] = ()
    namespaces: frozenset[str] = field(default_factory=lambda: frozenset(
        {"user", "mount", "pid", "uts", "ipc", "cgroup"}))
    hostname: str = ""
    network: Network = field(default_factory=Network)
    masked_paths: tuple[str, ...] = ()
    readonly_paths: tuple[str, ...] = ()
    resources: Resources | None = None
    # "enabled": a cgroup of its own when the host can give one (required when resources are
    # set), made by the first manager that works; "systemd" or "cgroupfs": by that manager
    # (--cgroup-manager); "disabled": none, the container stays in the caller's (--cgroups)
    cgroups: str = "enabled"
    annotations: tuple[tuple[str, str], ...] = ()
    rundir: str = ""  # volatile per-container directory, removed when the container ends
    files: tuple[File, ...] = ()
    # written under /proc/sys once the namespaces exist (net.ipv4.ping_group_range = "0 0")
    sysctls: tuple[tuple[str, str], ...] = ()
    seccomp: Seccomp | None = None  # None: unconfined (--privileged, seccomp=unconfined)
    # --network/--pid/--ipc/--uts container:NAME: (namespace, ID of the container whose namespace
    # is joined); those namespaces are not in ``namespaces``.
    shared: tuple[tuple[str, str], ...] = ()
    # ``shared`` once started: (namespace, the PID 1 of that container). The first process joins
    # that process's user namespace, then these namespaces, as Podman does rootless.
    join: tuple[tuple[str, int], ...] = ()
