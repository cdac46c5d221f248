"""Resource-limit flags (`--memory 512m`, `--cpus 1.5`, ...) parsed and checked as Podman does.

Pure functions: the values become a ``rootless.spec.Resources``; the runtime turns that into
cgroup v2 files (rootless.runtime.cgroups). Sizes follow Docker's ``RAMInBytes``: binary
multiples, ``b``/``k``/``m``/``g``/``t``/``p`` in either case, an optional ``b`` after the unit
(``512m``, ``512MB``, ``1.5g``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from rootless.errors import RootlessError
from rootless.spec import Resources

MIN_MEMORY = 6 * 1024 * 1024  # Podman and Docker refuse less: the runtime itself needs some
CPU_PERIOD = 100_000  # µs, the kernel's default cpu.max period, used for --cpus
_UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50}
_SIZE_FLAGS = ("memory", "memory_swap", "memory_reservation")
FLAGS = {  # RunOptions field → flag, for messages
    "memory": "--memory", "memory_swap": "--memory-swap", "memory_reservation": "--memory-reservation",
    "cpus": "--cpus", "cpu_shares": "--cpu-shares", "cpu_quota": "--cpu-quota", "cpu_period": "--cpu-period",
    "cpuset_cpus": "--cpuset-cpus", "pids_limit": "--pids-limit", "oom_score_adj": "--oom-score-adj",
}


def parse_size(text: str, flag: str) -> int:
    """Bytes in *text* (``512m``, ``1g``, ``1.5GB``, ``1024``)."""
    s = text.strip().lower()
    i = 0
    while i < len(s) and (s[i].isdigit() or s[i] == "."):
        i += 1
    num, unit = s[:i], s[i:].strip()
    if len(unit) > 1 and unit.endswith("b"):  # 512mb, 512mib
        unit = unit[:-1]
    if len(unit) > 1 and unit.endswith("i"):
        unit = unit[:-1]
    try:
        value = float(num)
    except ValueError:
        value = -1.0
    if unit not in _UNITS or value < 0:
        raise RootlessError(f"{flag} {text!r}: not a size", "give bytes, or a number with b, k, m or g "
                            "(for example 512m or 1.5g)")
    return int(value * _UNITS[unit])


def _int(text: str, flag: str) -> int:
    try:
        return int(text.strip())
    except ValueError:
        raise RootlessError(f"{flag} {text!r}: not a whole number") from None


def parse_cpuset(text: str, online: int | None = None) -> str:
    """``0-3,6``: checked and returned in the kernel's form (cpuset.cpus)."""
    spans = []
    for part in text.strip().split(","):
        lo, dash, hi = part.strip().partition("-")
        try:
            a = int(lo)
            b = int(hi) if dash else a
        except ValueError:
            raise RootlessError(f"--cpuset-cpus {text!r}: not a CPU list",
                                "give CPU numbers and ranges, for example 0-2,4") from None
        if a < 0 or b < a:
            raise RootlessError(f"--cpuset-cpus {text!r}: {part.strip()!r} is not a valid range")
        if online is not None and b >= online:
            raise RootlessError(f"--cpuset-cpus {text!r}: CPU {b} does not exist (this machine has "
                                f"{online}: 0-{online - 1})")
        spans.append(f"{a}-{b}" if b > a else str(a))
    return ",".join(spans)


def online_cpus() -> int:
    return os.cpu_count() or 1


def parse(values: Mapping[str, str | None], *, cpus_online: int | None = None) -> tuple[Resources | None,
                                                                                         int | None]:
    """The Resources for the given flags (RunOptions field → text) and the OOM score adjustment;
    None where nothing was asked. Raises RootlessError naming the flag for bad values."""
    v = {k: t for k, t in values.items() if t is not None and t != ""}
    oom = None
    if "oom_score_adj" in v:
        oom = _int(v.pop("oom_score_adj"), "--oom-score-adj")
        if not -1000 <= oom <= 1000:
            raise RootlessError(f"--oom-score-adj {oom}: out of range", "give a number from -1000 to 1000")
    if not v:
        return None, oom
    sizes: dict[str, int] = {}
    for k in _SIZE_FLAGS:
        if k in v:
            if k == "memory_swap" and v[k].strip() == "-1":
                sizes[k] = -1
            else:
                sizes[k] = parse_size(v[k], FLAGS[k])
    memory = sizes.get("memory")
    if memory is not None and 0 < memory < MIN_MEMORY:
        raise RootlessError(f"--memory {v['memory']}: the minimum memory limit is 6m")
    if memory == 0:
        memory = None  # 0: no limit, as Podman
    swap = sizes.get("memory_swap")
    if swap is not None and swap != -1:
        if memory is None:
            raise RootlessError("--memory-swap needs --memory: it is the limit of memory and swap together",
                                "add --memory, or use --memory-swap -1 for unlimited swap")
        if swap < memory:
            raise RootlessError(f"--memory-swap {v['memory_swap']} is less than --memory {v['memory']}",
                                "--memory-swap is memory plus swap: give at least the --memory value, or -1")
    reservation = sizes.get("memory_reservation")
    if reservation is not None and memory is not None and reservation > memory:
        raise RootlessError(f"--memory-reservation {v['memory_reservation']} is more than --memory {v['memory']}",
                            "the reservation (a soft limit) must not exceed the memory limit")

    quota = period = None
    if "cpus" in v:
        if "cpu_quota" in v or "cpu_period" in v:
            raise RootlessError("conflicting options: --cpus and --cpu-quota/--cpu-period",
                                "give either --cpus or --cpu-quota with --cpu-period")
        try:
            cpus = float(v["cpus"])
        except ValueError:
            raise RootlessError(f"--cpus {v['cpus']!r}: not a number", "for example 1.5") from None
        online = cpus_online if cpus_online is not None else online_cpus()
        if not 0 <= cpus <= online:
            raise RootlessError(f"--cpus {v['cpus']}: range of CPUs is from 0.01 to {online}.00, as there are "
                                f"only {online} CPUs available")
        if cpus > 0:
            period = CPU_PERIOD
            quota = max(1000, round(cpus * CPU_PERIOD))
    if "cpu_period" in v:
        period = _int(v["cpu_period"], "--cpu-period")
        if not 1000 <= period <= 1_000_000:
            raise RootlessError(f"--cpu-period {period}: must be from 1000 to 1000000 (microseconds)")
    if "cpu_quota" in v:
        quota = _int(v["cpu_quota"], "--cpu-quota")
        if quota == -1:
            quota = None
        elif quota < 1000:
            raise RootlessError(f"--cpu-quota {quota}: must be at least 1000 (microseconds), or -1 for none")
    shares = None
    if "cpu_shares" in v:
        shares = _int(v["cpu_shares"], "--cpu-shares")
        if shares == 0:
            shares = None
        elif not 2 <= shares <= 262144:
            raise RootlessError(f"--cpu-shares {shares}: must be from 2 to 262144 (default 1024)")
    cpuset = parse_cpuset(v["cpuset_cpus"], cpus_online if cpus_online is not None else online_cpus()) \
        if "cpuset_cpus" in v else None
    pids = None
    if "pids_limit" in v:
        pids = _int(v["pids_limit"], "--pids-limit")
        if pids <= 0:
            pids = None  # -1 and 0: unlimited, as Podman
    res = Resources(memory=memory, memory_swap=swap, memory_reservation=reservation, cpu_quota=quota,
                    cpu_period=period, cpu_shares=shares, cpuset_cpus=cpuset, pids_limit=pids)
    if res == Resources():
        return None, oom
    return res, oom

