"""What confines a container beyond its namespaces, from the `run` flags: the seccomp profile
(--security-opt seccomp=), resource limits (--ulimit, [containers] default-ulimits) and
namespaced sysctls (--sysctl), with rootless Podman's defaults.

Pure data: the host's limits arrive in HostLimits; the runtime applies the results.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

from rootless.errors import RootlessError
from rootless.record import dataclass, field
from rootless.spec import Rlimit, Seccomp

# podman-run(1) --ulimit names → setrlimit(2) resources (Docker's go-units table)
ULIMITS = {
    "core": "RLIMIT_CORE", "cpu": "RLIMIT_CPU", "data": "RLIMIT_DATA", "fsize": "RLIMIT_FSIZE",
    "locks": "RLIMIT_LOCKS", "memlock": "RLIMIT_MEMLOCK", "msgqueue": "RLIMIT_MSGQUEUE", "nice": "RLIMIT_NICE",
    "nofile": "RLIMIT_NOFILE", "nproc": "RLIMIT_NPROC", "rss": "RLIMIT_RSS", "rtprio": "RLIMIT_RTPRIO",
    "rttime": "RLIMIT_RTTIME", "sigpending": "RLIMIT_SIGPENDING", "stack": "RLIMIT_STACK", "as": "RLIMIT_AS",
}
# the bash `ulimit` option naming each limit, for hints
_ULIMIT_OPT = {"RLIMIT_NOFILE": "-n", "RLIMIT_NPROC": "-u", "RLIMIT_CORE": "-c", "RLIMIT_STACK": "-s",
               "RLIMIT_MEMLOCK": "-l", "RLIMIT_FSIZE": "-f", "RLIMIT_CPU": "-t", "RLIMIT_DATA": "-d",
               "RLIMIT_AS": "-v", "RLIMIT_LOCKS": "-x", "RLIMIT_MSGQUEUE": "-q", "RLIMIT_NICE": "-e",
               "RLIMIT_RTPRIO": "-r", "RLIMIT_SIGPENDING": "-i", "RLIMIT_RSS": "-m", "RLIMIT_RTTIME": "-R"}
UNLIMITED = -1  # RLIM_INFINITY as Python's resource module spells it
# Podman's define.RLimitDefaultValue: NOFILE and NPROC are raised to it, or to the hard limit below it.
PODMAN_DEFAULT_LIMIT = 1048576
# The sysctls Podman lets a container set (containers/common's list): those the kernel keeps
# per network or IPC namespace.
_SYSCTL_IPC = ("kernel.msgmax", "kernel.msgmnb", "kernel.msgmni", "kernel.sem", "kernel.shmall", "kernel.shmmax",
               "kernel.shmmni", "kernel.shm_rmid_forced")
_SYSCTL_PREFIXES = ("net.", "fs.mqueue.")
# Podman lets gid 0 in a container with its own network namespace open ICMP sockets (ping without CAP_NET_RAW).
DEFAULT_SYSCTLS = (("net.ipv4.ping_group_range", "0 0"),)


@dataclass(frozen=True)
class HostLimits:
    """The caller's own limits: resource name → (soft, hard), -1 unlimited; kernel.pid_max."""

    rlimits: Mapping[str, tuple[int, int]] = field(default_factory=dict)
    pid_max: int = 4194304

    @classmethod
    def read(cls) -> HostLimits:
        import resource

        limits = {}
        for name in ULIMITS.values():
            if hasattr(resource, name):
                limits[name] = resource.getrlimit(getattr(resource, name))
        try:
            with open("/proc/sys/kernel/pid_max") as f:
                pid_max = int(f.read())
        except (OSError, ValueError):
            pid_max = 4194304
        return cls(rlimits=limits, pid_max=pid_max)


# --------------------------------------------------------------------------- seccomp


def seccomp(security_opts: Sequence[str], privileged: bool, cwd: str, cache: str) -> Seccomp | None:
    """Spec.seccomp from the seccomp= of --security-opt: the built-in default profile, a
    profile file, or none (``unconfined``, and --privileged unless a profile is named)."""
    profile: str | None = None
    named = False
    for so in security_opts:
        key, sep, value = so.partition("=")
        if sep == "" and ":" in so:  # Docker's old seccomp:VALUE spelling
            key, _, value = so.partition(":")
        if key != "seccomp":
            continue
        if not value:
            raise RootlessError(f"--security-opt {so!r}: no profile given",
                                "use seccomp=unconfined or seccomp=/path/to/profile.json")
        named = True
        profile = None if value == "unconfined" else os.path.normpath(os.path.join(cwd, value))
        if value == "unconfined":
            return None
    if privileged and not named:
        return None
    if profile is not None:
        # read now: a missing or unreadable file is the user's one-line error before anything starts
        try:
            with open(profile, "rb"):
                pass
        except OSError as e:
            raise RootlessError(f"--security-opt seccomp={profile}: {e.strerror}",
                                "give a readable JSON profile, or seccomp=unconfined") from None
    return Seccomp(profile=profile, cache=cache)


# --------------------------------------------------------------------------- rlimits


def _limit_value(text: str, what: str, hard_now: int) -> int:
    t = text.strip()
    if t in ("-1", "unlimited"):
        # podman-run(1): -1 is "the maximum limit of the current process"
        return hard_now
    try:
        n = int(t)
    except ValueError:
        raise RootlessError(f"{what}: {text!r} is not a number", "give NAME=SOFT[:HARD], e.g. nofile=1024:2048") \
            from None
    if n < 0:
        raise RootlessError(f"{what}: {text!r} is negative", "use -1 for the largest value allowed")
    return n


def _fits(v: int, hard: int) -> bool:
    return hard == UNLIMITED or (v != UNLIMITED and v <= hard)


def parse_ulimit(text: str, host: HostLimits, where: str = "--ulimit") -> Rlimit:
    """``NAME=SOFT[:HARD]`` → Rlimit, refused above the caller's hard limit (raising one needs
    CAP_SYS_RESOURCE on the host, setrlimit(2))."""
    what = f"{where} {text!r}"
    name, sep, values = text.partition("=")
    res = ULIMITS.get(name.strip().lower())
    if not sep or res is None:
        raise RootlessError(f"{what}: unknown limit {name!r}" if sep else f"{what}: expected NAME=SOFT[:HARD]",
                            f"names: {', '.join(sorted(ULIMITS))}")
    hard_now = host.rlimits.get(res, (UNLIMITED, UNLIMITED))[1]
    soft_s, _, hard_s = values.partition(":")
    soft = _limit_value(soft_s, what, hard_now)
    hard = _limit_value(hard_s, what, hard_now) if hard_s else soft
    if not _fits(soft, hard):
        raise RootlessError(f"{what}: the soft limit {soft} is above the hard limit {hard}",
                            "give SOFT:HARD with SOFT no larger than HARD")
    if not _fits(hard, hard_now):
        opt = _ULIMIT_OPT.get(res, "-a")
        raise RootlessError(f"{what}: {res} {hard} is above your hard limit {hard_now}",
                            f"`ulimit -H {opt}` shows it; only root on the host can raise it "
                            "(/etc/security/limits.conf)")
    return Rlimit(res, soft, hard)


def rlimits(ulimits: Sequence[str], defaults: Sequence[str], host: HostLimits) -> tuple[Rlimit, ...]:
    """Process.rlimits: rootless Podman's NOFILE and NPROC (raised to 1048576, or to the hard
    limit and kernel.pid_max when lower), then [containers] default-ulimits, then --ulimit.
    ``--ulimit host`` keeps every limit the caller has."""
    if any(u.strip() == "host" for u in ulimits):
        if len(ulimits) > 1:
            raise RootlessError("--ulimit host cannot be combined with other --ulimit values",
                                "give either host or NAME=SOFT[:HARD] values")
        return ()
    out: dict[str, Rlimit] = {}
    for res in ("RLIMIT_NOFILE", "RLIMIT_NPROC"):
        if res not in host.rlimits:
            continue
        hard_now = host.rlimits[res][1]
        v = PODMAN_DEFAULT_LIMIT if hard_now == UNLIMITED else min(PODMAN_DEFAULT_LIMIT, hard_now)
        if res == "RLIMIT_NPROC":
            # measured with rootless Podman 4.3 here: NPROC stops at kernel.pid_max
            v = min(v, host.pid_max)
        out[res] = Rlimit(res, v, v)
    for d in defaults:
        r = parse_ulimit(d, host, "default-ulimits")
        out[r.type] = r
    for u in ulimits:
        r = parse_ulimit(u, host)
        out[r.type] = r
    return tuple(out.values())


# --------------------------------------------------------------------------- sysctls


def sysctls(items: Sequence[str], own_network: bool) -> tuple[tuple[str, str], ...]:
    """Spec.sysctls: Podman's default ping_group_range (in a network namespace of the
    container's own), then each --sysctl KEY=VALUE, namespaced ones only."""
    out: dict[str, str] = dict(DEFAULT_SYSCTLS) if own_network else {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip().replace("/", ".")
        if not sep or not key:
            raise RootlessError(f"--sysctl {item!r}: expected KEY=VALUE", "e.g. --sysctl net.ipv4.ip_forward=1")
        if key.startswith("net."):
            if not own_network:
                raise RootlessError(f"--sysctl {key}: the container shares another's network namespace (the "
                                    "host's or a container's)", "drop it, or give the container its own network")
        elif not (key in _SYSCTL_IPC or key.startswith(_SYSCTL_PREFIXES)):
            raise RootlessError(f"--sysctl {key}: not a namespaced sysctl, so a container cannot set it",
                                "allowed: net.*, kernel.shm*, kernel.msg*, kernel.sem, fs.mqueue.*")
        out[key] = value
    return tuple(out.items())
