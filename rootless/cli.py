"""Entry point: the ONLY place that prints errors and picks exit codes.

typer (≈30 ms to import, and pydantic when it invokes a command) is loaded only for commands
other than a plain `run`: `run` is parsed by rootless.runargs and goes straight to _run_flow,
because `rootless run` sits on the user's critical path.
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, Any, NoReturn

from rootless.errors import EXIT_TOOL, RootlessError

if TYPE_CHECKING:
    from rootless.context import Context
    from rootless.runargs import RunArgs


def __getattr__(name: str) -> Any:
    # `rootless.cli.app` stays the typer app for tests and tools that walk the commands
    if name == "app":
        from rootless.commands import app

        return app
    raise AttributeError(name)


def _build_ctx(opts: dict[str, Any]) -> Context:
    """The context for the global options ``log_level``, ``root`` and ``runroot``."""
    from rootless import config as cfg
    from rootless.context import LEVELS, Context, Log
    from rootless.layout import Layout, config_file

    log = Log(level=LEVELS[opts.get("log_level", "warn")])
    layout = Layout.default(opts.get("root"), opts.get("runroot"))
    if layout.runroot_fallback:
        log.warn_once("runroot", f"XDG_RUNTIME_DIR is not set or not writable: using {layout.runroot} "
                      "(create /run/user/$UID owned by you, or log in through a session that does)")
    # the fallback run root may be anybody's directory in /tmp: no cached config from there
    config = cfg.load(config_file(), cache=None if layout.runroot_fallback else layout.config_cache)
    manager = opts.get("cgroup_manager")
    if manager:
        if manager not in ("systemd", "cgroupfs"):
            raise RootlessError(f"--cgroup-manager {manager!r}: must be systemd or cgroupfs")
        from rootless.record import replace

        config = replace(config, cgroup_manager=manager)
    return Context(config=config, layout=layout, log=log)



def _run_flow(ctx: Context, a: RunArgs, create_only: bool = False) -> int:
    """`run` from parsed flags to the container's exit status (typer's `run` and main's fast path);
    `run -d` and `create` print the new container's ID and return 0."""
    from rootless.image import present, specgen
    from rootless.runtime import idmap
    from rootless.runtime.run import LazyStoreNamespace, mount_probe
    from rootless.runtime.run import run as run_container
    from rootless.spec import IdMap
    from storage import rootfs

    net = a.network or ctx.config.network
    opts = specgen.RunOptions(
        image=a.image, command=tuple(a.command), name=a.name, rm=a.rm, interactive=a.interactive, tty=a.tty,
        env=tuple(a.env), env_files=tuple(a.env_file), workdir=a.workdir, user=a.user,
        entrypoint=a.entrypoint, hostname=a.hostname, init=a.init, cap_add=tuple(a.cap_add),
        cap_drop=tuple(a.cap_drop), security_opt=tuple(a.security_opt), privileged=a.privileged,
        network=net, volumes=tuple(a.volume), mounts=tuple(a.mount), tmpfs=tuple(a.tmpfs),
        read_only=a.read_only, read_only_tmpfs=a.read_only_tmpfs, userns=a.userns,
        publish=tuple(a.publish), publish_all=a.publish_all, dns=tuple(a.dns), dns_search=tuple(a.dns_search),
        dns_option=tuple(a.dns_option), add_host=tuple(a.add_host), memory=a.memory, memory_swap=a.memory_swap,
        memory_reservation=a.memory_reservation, cpus=a.cpus, cpu_shares=a.cpu_shares, cpu_quota=a.cpu_quota,
        cpu_period=a.cpu_period, cpuset_cpus=a.cpuset_cpus, pids_limit=a.pids_limit,
        oom_score_adj=a.oom_score_adj, cgroups=a.cgroups, cgroup_manager=ctx.config.cgroup_manager)
    host = specgen.HostInfo.read(opts.network)

    # 1. the image: from the store, else pulled (--pull)
    record = None
    if a.pull != "always":
        try:
            record = present.find(ctx, a.image)
        except RootlessError:
            if a.pull == "never":
                raise
    if record is None:
        from rootless.image.pull import pull as do_pull

        record = do_pull(ctx, a.image, platform=a.platform)
    config = specgen.container_config(ctx.layout, record.config_digest)

    # 2. the container layer, 3. the spec, 4. the process
    cid = os.urandom(32).hex()
    maps = idmap.current_store_maps()
    vol_refs = specgen.volume_refs(opts, config, host.cwd) if (a.volume or a.mount or config.get("Volumes")) else []
    # A record (ps, logs, exec, rm) for every container but an anonymous `run --rm` in the
    # foreground without volumes, which keeps the start-up budget (a volume's users must be
    # known to `volume rm`); the name is held unique until it is saved.
    recorded = a.detach or create_only or not a.rm or a.name is not None or bool(vol_refs)
    vol_mounts: list[Any] = []
    vol_made: list[str] = []
    from contextlib import AbstractContextManager, nullcontext

    claim: AbstractContextManager[str | None] = nullcontext(a.name)
    if recorded:
        from rootless import lifecycle

        claim = lifecycle.claim(ctx, a.name)
    with claim as name:
        if name != opts.name:
            from rootless.record import replace

            opts = replace(opts, name=name)
        with LazyStoreNamespace(ctx) as runner:
            plan = rootfs.prepare(ctx, runner, record, cid, a.storage_driver, mount_probe=mount_probe,
                                  durable=recorded)
        try:
            if vol_refs:
                from rootless import volumes

                vol_mounts, vol_made = volumes.mounts_for_run(ctx, vol_refs, copy_up=opts.userns != "keep-id")
            ctx.layout.ensure_runroot()
            spec = specgen.build(
                config, opts, plan, container_id=cid, rundir=str(ctx.layout.state / cid),
                uid_map=tuple(IdMap(m.container_id, m.host_id, m.size) for m in maps.uid_map),
                gid_map=tuple(IdMap(m.container_id, m.host_id, m.size) for m in maps.gid_map),
                image_name=record.names[0] if record.names else record.id, image_id=record.id, host=host,
                volume_mounts=vol_mounts)
            if spec.resources is not None:
                from rootless.runtime.run import check_cgroups

                check_cgroups(spec)
            if recorded:
                lifecycle.save(ctx, spec, record.names[0] if record.names else record.id, record.id,
                               config.get("StopSignal"), a.rm)
        except BaseException:
            with LazyStoreNamespace(ctx) as runner:
                rootfs.remove(ctx, runner, cid)
            if recorded:
                lifecycle.forget(ctx, cid)
            if vol_made:
                volumes.discard(ctx, vol_made)
            raise
    if create_only or a.detach:
        if not create_only:
            try:
                lifecycle.start(ctx, cid)
            except RootlessError:
                if a.rm:
                    lifecycle.remove(ctx, cid, force=True)
                    if vol_refs:
                        volumes.discard(ctx, volumes.anonymous_in(ctx, spec))
                raise
        print(cid, flush=True)
        return 0
    try:
        return lifecycle.run_foreground(ctx, spec) if recorded else run_container(ctx, spec)
    finally:
        # 5. --rm: nothing of the container stays in the store
        if a.rm:
            with LazyStoreNamespace(ctx) as runner:
                rootfs.remove(ctx, runner, cid)
            if recorded:
                lifecycle.forget(ctx, cid)
            if vol_refs:  # with its anonymous volumes (Podman's --rm)
                volumes.discard(ctx, volumes.anonymous_in(ctx, spec))


def _ctr_fast(args: list[str]) -> int | None:
    """`ps` and `exec` without typer (rootless.ctrargs); None when typer must parse them."""
    from rootless import ctrargs

    c = ctrargs.parse(args)
    if c is None:
        return None
    from rootless import lifecycle

    ctx = _build_ctx({"log_level": c.log_level, "root": c.root, "runroot": c.runroot})
    if c.command == "ps":
        lines = lifecycle.ps_lines(ctx, all_="all" in c.flags, quiet="quiet" in c.flags,
                                   filters=c.lists.get("filter", []),
                                   json_format=c.values.get("format") == "json", no_trunc="no_trunc" in c.flags)
        sys.stdout.write("".join(line + "\n" for line in lines))
        sys.stdout.flush()
        return 0
    name, *command = c.positional
    return lifecycle.exec_(ctx, lifecycle.resolve(ctx, name), command, interactive="interactive" in c.flags,
                           tty="tty" in c.flags, env=c.lists.get("env", []), workdir=c.values.get("workdir"),
                           user=c.values.get("user"))


def _fail(message: str, hint: str | None, code: int) -> NoReturn:
    print(f"Error: {message}", file=sys.stderr)
    if hint:
        print(f"Hint: {hint}", file=sys.stderr)
    sys.exit(code)


def _debug_requested(argv: list[str]) -> bool:
    for i, a in enumerate(argv):
        if a == "--log-level=debug" or (a == "--log-level" and i + 1 < len(argv) and argv[i + 1] == "debug"):
            return True
    return False


def _exit_now(code: int) -> NoReturn:
    """End a foreground `run` without interpreter shutdown (≈10 ms of module teardown): every
    child is reaped and every file we wrote is closed by then; only our own streams need a flush."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


def main(argv: list[str] | None = None) -> NoReturn:
    args = list(sys.argv[1:] if argv is None else argv)
    debug = _debug_requested(args)
    try:
        from rootless import runargs

        fast = runargs.parse(args)  # `run` without building typer's commands (the start-up budget)
        if fast is not None:
            import gc

            gc.disable()  # a short-lived process that frees little: the collector only costs time
            rv: int = _run_flow(_build_ctx(vars(fast)), fast)
            if not fast.detach:
                _exit_now(rv)
        elif (ctr := _ctr_fast(args)) is not None:
            rv = ctr
        else:
            from rootless.commands import invoke

            rv = invoke(args)
    except RootlessError as e:
        if debug:
            import traceback

            traceback.print_exc()
        _fail(e.message, e.hint, e.exit_code)
    except SystemExit:
        raise
    except KeyboardInterrupt:
        print("", file=sys.stderr)
        sys.exit(130)
    except BrokenPipeError:
        sys.exit(0)
    except OSError as e:
        if debug:
            import traceback

            traceback.print_exc()
        from rootless.errors import errno_hint

        what = f"{e.filename}: " if e.filename else ""
        _fail(f"{what}{e.strerror or e}", errno_hint(e), EXIT_TOOL)
    except Exception as e:  # a bug: still one line unless debugging
        if debug:
            raise
        _fail(f"internal error: {type(e).__name__}: {e}",
              "rerun with --log-level debug for a traceback and report it", EXIT_TOOL)
    sys.exit(rv if isinstance(rv, int) else 0)
