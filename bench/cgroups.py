"""What a cgroup of its own costs a container's start: `rootless run --rm` with and without one.

    bench/cgroups.py [--runs N]

Meant for a cgroup v2 host with delegation and a systemd --user session (the VM lane runs it
after its tests with `sudo RL_VM_BENCH=1 bash scripts/test-vm`); run it as that user. It pushes busybox
to a local docker-registry, pulls it once, then times N interleaved rounds of

    rootless run --rm --network none --cgroups disabled busybox true     (no cgroup)
    rootless run --rm --network none busybox true                        (systemd: a scope over D-Bus)
    rootless run --rm --network none --memory 64m --pids-limit 100 busybox true   (the same, with limits)
    rootless --cgroup-manager cgroupfs run ...                            (cgroupfs, inside a Delegate=yes
                                                                           scope, when systemd-run exists)

and prints medians and the cost of each over `--cgroups disabled`. Exits 0 whatever the
figures; non-zero only when it could not measure.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common as c  # noqa: E402
from bench.run import push_busybox  # noqa: E402

FLAGS = ("run", "--rm", "--network", "none")

# Our own cgroup leaves the scope for a leaf, so the scope may hold the containers' cgroups.
_LEAF = ('S=/sys/fs/cgroup$(cut -d: -f3 /proc/self/cgroup); mkdir -p "$S/leaf" && '
         'echo $$ > "$S/leaf/cgroup.procs" && exec "$@"')


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=15)
    args = ap.parse_args(argv)
    if os.geteuid() == 0:
        sys.exit("run it as the unprivileged user with a systemd --user session")
    if not os.path.exists("/sys/fs/cgroup/cgroup.controllers"):
        sys.exit("this host has no cgroup v2: nothing to measure")
    work = c.make_workspace("rlbc")
    removers: list[Callable[[], None]] = []
    with c.cleanup_on_exit(work, False, removers):
        registry = c.start_bench_registry(work)
        removers.append(registry.stop)
        push_busybox(registry)
        rl = c.Rootless(work, registry)
        env = dict(rl.env)
        if os.environ.get("DBUS_SESSION_BUS_ADDRESS"):
            env["DBUS_SESSION_BUS_ADDRESS"] = os.environ["DBUS_SESSION_BUS_ADDRESS"]
        c.run_checked(rl.argv("pull", "-q", "busybox"), env)
        variants: dict[str, list[str]] = {
            "disabled": rl.argv(*FLAGS, "--cgroups", "disabled", "busybox", "true"),
            "systemd": rl.argv("--cgroup-manager", "systemd", *FLAGS, "busybox", "true"),
            "systemd+limits": rl.argv("--cgroup-manager", "systemd", *FLAGS, "--memory", "64m", "--pids-limit",
                                      "100", "busybox", "true"),
        }
        if shutil.which("systemd-run"):
            variants["cgroupfs+limits"] = ["systemd-run", "--user", "--scope", "--quiet", "-p", "Delegate=yes",
                                           "sh", "-c", _LEAF, "sh",
                                           *rl.argv("--cgroup-manager", "cgroupfs", *FLAGS, "--memory", "64m",
                                                    "--pids-limit", "100", "busybox", "true")]
            # the wrapper's own cost, to subtract
            variants["(systemd-run wrapper)"] = ["systemd-run", "--user", "--scope", "--quiet", "-p",
                                                 "Delegate=yes", "sh", "-c", _LEAF, "sh", "true"]
        for argv_ in variants.values():  # warm-up, and a check that each works
            c.run_checked(argv_, env)
        times: dict[str, list[float]] = {k: [] for k in variants}
        names = list(variants)
        for r in range(args.runs):
            order = names[r % len(names):] + names[:r % len(names)]
            for k in order:
                t0 = time.perf_counter()
                c.run_checked(variants[k], env)
                times[k].append(time.perf_counter() - t0)
        med = {k: statistics.median(v) * 1000 for k, v in times.items()}
        base = med["disabled"]
        rows = []
        for k in names:
            extra = med[k] - base
            if k == "cgroupfs+limits":
                extra -= med["(systemd-run wrapper)"]
            rows.append([k, f"{med[k]:.1f}", f"{min(times[k]) * 1000:.1f}-{max(times[k]) * 1000:.1f}",
                         "" if k in ("disabled", "(systemd-run wrapper)") else f"{extra:+.1f}"])
        print(f"rootless run --rm --network none busybox true, {args.runs} interleaved rounds "
              f"(load {c.loadavg()}):")
        print(c.table(["variant", "median ms", "min-max ms", "cost vs disabled ms"], rows))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
