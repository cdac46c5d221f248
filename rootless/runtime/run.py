"""``run(ctx, spec) -> status``: the runtime's single entry point for `rootless run`."""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

from rootless.runtime import network, process
from rootless.runtime.lazyns import LazyStoreNamespace

__all__ = ["LazyStoreNamespace", "run"]  # LazyStoreNamespace: kept importable from here

if TYPE_CHECKING:
    from rootless.context import Context, Log
    from rootless.runtime.cgroups import Cgroup
    from rootless.spec import RootfsPlan, Spec


def write_files(spec: Spec) -> None:
    """The generated files (hosts, resolv.conf, ...) in the container's run directory."""
    if not spec.files:
        return
    os.makedirs(spec.rundir, mode=0o700, exist_ok=True)
    for f in spec.files:
        path = os.path.join(spec.rundir, f.name)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, f.mode)
        try:
            os.write(fd, f.content.encode())
        finally:
            os.close(fd)


def remove_files(spec: Spec) -> None:
    if not spec.rundir:
        return
    for name in [f.name for f in spec.files] + ["passwd", "group"]:  # see process.resolve_user
        try:
            os.unlink(os.path.join(spec.rundir, name))
        except FileNotFoundError:
            pass
    try:
        os.rmdir(spec.rundir)
    except OSError:
        pass


def check_cgroups(spec: Spec) -> None:
    """Fail now (CgroupError, exit 125), before anything is started or recorded, when *spec*
    asks for resource limits this host cannot enforce."""
    if spec.resources is None or spec.cgroups == "disabled":
        return
    from rootless.runtime import cgroups

    cgroups.check(cgroups.probe("" if spec.cgroups == "enabled" else spec.cgroups), spec.resources)


def cgroup_placer(spec: Spec, log: Log) -> Callable[[int], Cgroup | None] | None:
    """process.start's *place* for *spec*, None when the container gets no cgroup of its own.

    Raises CgroupError (exit 125) when *spec* asks for limits the host cannot enforce. With
    none asked for, a host without a delegated cgroup v2 runs the container quietly without.
    """
    if spec.cgroups == "disabled":
        return None
    if spec.resources is None and not os.path.exists("/sys/fs/cgroup/cgroup.controllers"):
        return None  # cgroup v1 or hybrid, nothing asked: no further look (the start-up budget)
    from rootless.runtime import cgroups

    host = cgroups.probe("" if spec.cgroups == "enabled" else spec.cgroups)
    cgroups.check(host, spec.resources)
    if host.manager is None:
        log.debug(f"container {spec.id[:12]} gets no cgroup of its own: {host.reason}")
        return None

    def place(pid: int) -> Cgroup | None:
        try:
            return cgroups.place(host, spec.id, pid, spec.resources, log)
        except cgroups.CgroupError as e:
            if spec.resources is not None:
                raise
            log.debug(f"container {spec.id[:12]} gets no cgroup of its own: {e.message}")
            return None

    return place


def run(ctx: Context, spec: Spec, *, on_start: Callable[[process.Started], None] | None = None,
        on_exit: Callable[[bool], None] | None = None) -> int:
    """Start the container described by *spec*, attach to it and return its exit status.

    Exit status as a shell reports it: the command's own, 128+N when signal N killed it.
    The run directory is removed when the container is gone; the rootfs plan's directories
    belong to storage (``storage.rootfs.remove``). *on_start* sees the started container,
    *on_exit* whether the OOM killer struck in its cgroup.
    """
    if len(spec.uid_map) == 1 or len(spec.gid_map) == 1:
        from rootless.runtime import idmap

        user = idmap.current_user()
        maps = idmap.IdMaps(
            tuple(idmap.IdMapping(m.container_id, m.host_id, m.size) for m in spec.uid_map),
            tuple(idmap.IdMapping(m.container_id, m.host_id, m.size) for m in spec.gid_map), single=True)
        key, msg, hint = idmap.single_mapping_warning(maps, user)
        ctx.log.warn_once(key, msg, hint, store=True)
    place = cgroup_placer(spec, ctx.log)
    write_files(spec)
    started: process.Started | None = None
    try:
        with process.blocked((*process.FORWARDED, signal.SIGCHLD)):
            if spec.process.terminal:
                started = _start_tty(ctx, spec, place)
            else:
                started = process.start(spec, ctx.log, place=place)
            if on_start is not None:
                on_start(started)
            try:
                if spec.process.terminal:
                    return _relay_tty(spec, started)
                return process.wait(started)
            finally:
                network.detach(started.network)
    finally:
        if started is not None and started.cgroup is not None:
            oom = started.cgroup.oom_killed()
            started.cgroup.release()
            if on_exit is not None:
                on_exit(oom)
        if spec.rootfs.driver == "fuse-overlayfs" and started is not None and started.mount_ns is not None:
            stop_orphans(ctx, started.mount_ns)
        remove_files(spec)


def stop_orphans(ctx: Context, mount_ns: tuple[int, int], grace: float = 2.0) -> None:
    """End what the container left re-parented to us (we are a child subreaper): the
    fuse-overlayfs daemon serving its rootfs keeps the container's mount namespace, and so
    itself, alive until it is told to go. Only our children in that namespace (*mount_ns*,
    Started.mount_ns) are the container's: the caller's other children (the builder's store
    worker, the API's connections) are not touched."""
    from rootless.runtime.reap import children, stop_children

    own = [pid for pid in children() if process.namespace_id(pid, "mnt") == mount_ns]
    stop_children(grace, on_kill=lambda pid: ctx.log.debug(
        f"process {pid} left by the container ignored SIGTERM: killing it"), reap_all=False, pids=own)


def _start_tty(ctx: Context, spec: Spec, place: Callable[[int], Cgroup | None] | None) -> process.Started:
    from rootless.runtime import tty

    src = tty.terminal_size_source()
    winsize = tty.get_winsize(src) if src is not None else None
    return process.start(spec, ctx.log, winsize=winsize, place=place)


def _relay_tty(spec: Spec, started: process.Started) -> int:
    from rootless.runtime import tty

    if started.master is None:
        raise RuntimeError("the container's terminal was not received")
    if spec.process.interactive and os.isatty(0):
        sys.stdout.flush()
        with tty.raw_mode(0):
            return tty.relay(started, interactive=True)
    return tty.relay(started, interactive=spec.process.interactive)


def mount_probe(plan: RootfsPlan, check: str) -> str | None:
    """storage.drivers.probe.MountProbe: mount *plan* exactly as a container's child does (a
    new user and mount namespace with the store's mapping, as namespace-root), call *check*
    ("package.module:function", given ``target=plan.target``) there, unmount; None if all
    of that worked, else why not (one line)."""
    import importlib

    from rootless.runtime import idmap, mounts, namespaces, syscalls, userns

    modname, _, fname = check.partition(":")
    func = getattr(importlib.import_module(modname), fname)

    def child() -> None:
        namespaces.private_root()
        mounts.mount_rootfs(plan)
        try:
            func(target=plan.target)
        finally:
            if plan.driver != "vfs":
                syscalls.umount2(plan.target, syscalls.MNT_DETACH)

    pid, failure = userns.fork_mapped(idmap.current_store_maps(), syscalls.CLONE_NEWUSER | syscalls.CLONE_NEWNS,
                                      child)
    status = userns.wait_status(pid)
    if failure is not None:
        return failure.message
    if status != 0:
        return f"the probe's child exited with status {status}"
    return None
