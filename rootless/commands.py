"""The typer app: one small function per command (cli.main runs it and reports its errors).

Everything heavy is imported inside the command that needs it, so `rootless run` of a stored
image never pays for httpx or rich.
"""

from __future__ import annotations

import os
import sys
from enum import Enum
from typing import TYPE_CHECKING, Annotated, Any

import typer

from rootless import cli
from rootless.errors import EXIT_TOOL, RootlessError

if TYPE_CHECKING:
    from rootless.context import Context

app = typer.Typer(
    name="rootless",
    help="Run registry images as an unprivileged user: no root, no daemon.",
    pretty_exceptions_enable=False,
    add_completion=False,
    no_args_is_help=True,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)
image_app = typer.Typer(help="Manage images.", no_args_is_help=True, rich_markup_mode=None)
app.add_typer(image_app, name="image")


class LogLevel(str, Enum):
    debug = "debug"
    info = "info"
    warn = "warn"
    error = "error"


class Format(str, Enum):
    table = "table"
    json = "json"


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        typer.echo(f"rootless version {version('rootless')}")
        raise typer.Exit()


@app.callback()
def _global(
    tctx: typer.Context,
    log_level: Annotated[LogLevel, typer.Option("--log-level", help="Messages to show: debug, info, warn, error.",
                                                case_sensitive=False)] = LogLevel.warn,
    root: Annotated[str | None, typer.Option("--root", help="Storage root (images and layers).")] = None,
    runroot: Annotated[str | None, typer.Option("--runroot", help="Directory for volatile state.")] = None,
    cgroup_manager: Annotated[str | None, typer.Option("--cgroup-manager", help="Who makes containers' "
                                                       "cgroups: systemd or cgroupfs (default: the config, "
                                                       "else the first that works).")] = None,
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
    tctx.obj = {"log_level": log_level.value, "root": root, "runroot": runroot, "cgroup_manager": cgroup_manager}


def _ctx() -> Context:
    """Build the context once per invocation from the global options."""
    from typer._click.globals import get_current_context

    tctx = get_current_context()
    obj = tctx.find_root().obj
    if isinstance(obj, dict) and "ctx" in obj:
        return obj["ctx"]  # type: ignore[no-any-return]
    ctx = cli._build_ctx(obj if isinstance(obj, dict) else {})
    if isinstance(obj, dict):
        obj["ctx"] = ctx
    return ctx


def _echo_json(data: Any) -> None:
    import json

    typer.echo(json.dumps(data, indent=4))


# --------------------------------------------------------------------------- images

@app.command()
def pull(
    image: Annotated[str, typer.Argument(help="Image reference, e.g. alpine or quay.io/org/img:tag.")],
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print only the image ID.")] = False,
    platform: Annotated[str | None, typer.Option("--platform", help="OS/ARCH[/VARIANT] to pull "
                                                 "(default: this host's).")] = None,
) -> None:
    """Pull an image from a registry into the store."""
    from rootless.image.pull import pull as do_pull

    ctx = _ctx()
    record = do_pull(ctx, image, platform=platform, quiet=quiet)
    typer.echo(record.id)


@app.command("images")
def images(
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print only image IDs.")] = False,
    fmt: Annotated[Format, typer.Option("--format", help="Output format: table or json.")] = Format.table,
    no_trunc: Annotated[bool, typer.Option("--no-trunc", help="Do not truncate image IDs.")] = False,
    all_: Annotated[bool, typer.Option("--all", "-a", help="Show all images (intermediate ones too).")] = False,
    digests: Annotated[bool, typer.Option("--digests", help="Show manifest digests.")] = False,
) -> None:
    """List images in the store."""
    from rootless.image import present

    ctx = _ctx()
    present.images(ctx, quiet=quiet, fmt=fmt.value, no_trunc=no_trunc, digests=digests)


@app.command()
def rmi(
    names: Annotated[list[str] | None, typer.Argument(help="Images to remove (names or IDs).")] = None,
    force: Annotated[bool, typer.Option("--force", "-f", help="Remove the image even when several names "
                                        "point at it; ignore images that are not known.")] = False,
    all_: Annotated[bool, typer.Option("--all", "-a", help="Remove all images.")] = False,
) -> None:
    """Remove images."""
    from rootless.image import present

    if not names and not all_:
        raise RootlessError("rmi needs at least one image name or ID, or --all", "rootless rmi IMAGE...")
    ctx = _ctx()
    raise typer.Exit(present.rmi(ctx, names or [], force=force, all_=all_))


@app.command()
def tag(
    source: Annotated[str, typer.Argument(help="Image to tag (name or ID).")],
    targets: Annotated[list[str], typer.Argument(help="New names.")],
) -> None:
    """Add names to an image."""
    from rootless.image import present

    present.tag(_ctx(), source, targets)


# `podman image …` spellings of the top-level image commands; documented on the main command's page
for _alias, _target, _hidden in (("pull", pull, False), ("ls", images, False), ("list", images, True),
                                 ("rm", rmi, False), ("tag", tag, False)):
    image_app.command(_alias, hidden=_hidden,
                      help=f"{(_target.__doc__ or '').strip()} (same as `rootless {_target.__name__}`).")(_target)


@image_app.command("inspect")
def image_inspect(
    names: Annotated[list[str], typer.Argument(help="Images to inspect (names or IDs).")],
    fmt: Annotated[str, typer.Option("--format", "-f", help="Output format (json).")] = "json",
) -> None:
    """Show images' configuration and layers as JSON."""
    from rootless.image import present

    if fmt != "json":
        raise RootlessError(f"unsupported format {fmt!r}", "use --format json")
    data, missing = present.inspect(_ctx(), names)
    _echo_json(data)
    if missing:
        for m in missing:
            typer.echo(f"Error: {m}", err=True)
        raise typer.Exit(EXIT_TOOL)


@image_app.command("prune")
def image_prune(
    all_: Annotated[bool, typer.Option("--all", "-a", help="Remove all unused images, not only dangling ones.")]
    = False,
    force: Annotated[bool, typer.Option("--force", "-f", help="Do not ask for confirmation.")] = False,
) -> None:
    """Remove dangling images (all unused ones with --all), then unreferenced layers and blobs."""
    from rootless.image import present

    if not force:
        what = "all images without at least one container associated with them" if all_ else \
            "all dangling images"
        typer.echo(f"WARNING! This command removes {what}.\nAre you sure you want to continue? [y/N] ", nl=False)
        answer = sys.stdin.readline().strip().lower() if sys.stdin and not sys.stdin.closed else ""
        if answer not in ("y", "yes"):
            raise typer.Exit(0)
    for line in present.prune(_ctx(), all_=all_):
        typer.echo(line)


# --------------------------------------------------------------------------- containers

class PullPolicy(str, Enum):
    missing = "missing"
    always = "always"
    never = "never"


@app.command(context_settings={"allow_interspersed_args": False})
def run(
    image: Annotated[str, typer.Argument(help="Image to run (name, name:tag, name@digest or ID).")],
    command: Annotated[list[str] | None, typer.Argument(help="Command and arguments (default: the image's "
                                                        "Entrypoint and Cmd).")] = None,
    rm: Annotated[bool, typer.Option("--rm", help="Remove the container's layer when it exits.")] = False,
    detach: Annotated[bool, typer.Option("--detach", "-d", help="Run in the background under a monitor and "
                                         "print the container ID.")] = False,
    name: Annotated[str | None, typer.Option("--name", help="Container name (default: the ID's first 12 "
                                             "hex digits).")] = None,
    interactive: Annotated[bool, typer.Option("--interactive", "-i", help="Keep standard input open.")] = False,
    tty: Annotated[bool, typer.Option("--tty", "-t", help="Allocate a pseudo-terminal.")] = False,
    env: Annotated[list[str] | None, typer.Option("--env", "-e", help="Set KEY=VALUE; KEY alone takes the "
                                                  "host's value; KEY* takes every match.")] = None,
    env_file: Annotated[list[str] | None, typer.Option("--env-file", help="Read KEY=VALUE lines from a "
                                                       "file.")] = None,
    workdir: Annotated[str | None, typer.Option("--workdir", "-w", help="Working directory inside the "
                                                "container.")] = None,
    user: Annotated[str | None, typer.Option("--user", "-u", help="USER[:GROUP], names or numbers, resolved "
                                             "in the container's /etc/passwd and /etc/group.")] = None,
    entrypoint: Annotated[str | None, typer.Option("--entrypoint", help="Override the image's Entrypoint "
                                                   "(a program, or a JSON array); drops its Cmd.")] = None,
    hostname: Annotated[str | None, typer.Option("--hostname", help="Container host name (default: the "
                                                 "short ID).")] = None,
    init: Annotated[bool, typer.Option("--init", help="Run a reaping PID 1 that forwards signals to the "
                                       "command.")] = False,
    cap_add: Annotated[list[str] | None, typer.Option("--cap-add", help="Add a capability (or ALL).")] = None,
    cap_drop: Annotated[list[str] | None, typer.Option("--cap-drop", help="Drop a capability (or "
                                                       "ALL).")] = None,
    security_opt: Annotated[list[str] | None, typer.Option("--security-opt", help="no-new-privileges.")]
    = None,
    privileged: Annotated[bool, typer.Option("--privileged", help="All capabilities of the user namespace, "
                                             "no masked or read-only paths.")] = False,
    network: Annotated[str | None, typer.Option("--network", "--net", help="slirp4netns[:mtu=N,cidr=CIDR,"
                                                "allow_host_loopback=true,enable_ipv6=true,outbound_addr=IP] "
                                                "(the default), none or host.")] = None,
    publish: Annotated[list[str] | None, typer.Option("--publish", "-p", help="Publish a port: "
                                                      "[IP:][HOST-PORT:]CONTAINER-PORT[/tcp|udp]; ranges "
                                                      "FIRST-LAST.")] = None,
    publish_all: Annotated[bool, typer.Option("--publish-all", "-P", help="Publish the image's exposed ports "
                                              "on free host ports.")] = False,
    dns: Annotated[list[str] | None, typer.Option("--dns", help="DNS server for the container's "
                                                  "/etc/resolv.conf.")] = None,
    dns_search: Annotated[list[str] | None, typer.Option("--dns-search", help="DNS search domain ('.' for "
                                                         "none).")] = None,
    dns_option: Annotated[list[str] | None, typer.Option("--dns-option", help="resolv.conf(5) option.")] = None,
    add_host: Annotated[list[str] | None, typer.Option("--add-host", help="Add NAME:IP to /etc/hosts.")]
    = None,
    volume: Annotated[list[str] | None, typer.Option("--volume", "-v", help="Mount a volume "
                                                     "or host path: NAME|HOST-PATH:CONTAINER-PATH[:ro|rw,...], "
                                                     "or CONTAINER-PATH for an anonymous volume.")] = None,
    mount: Annotated[list[str] | None, typer.Option("--mount", help="type=bind|volume|tmpfs,"
                                                    "source=...,target=...[,ro].")] = None,
    tmpfs: Annotated[list[str] | None, typer.Option("--tmpfs", help="Mount a tmpfs: "
                                                    "CONTAINER-PATH[:OPTIONS].")] = None,
    read_only: Annotated[bool, typer.Option("--read-only", help="Mount the rootfs read-only (/run, /tmp "
                                            "and /var/tmp stay writable tmpfs).")] = False,
    read_only_tmpfs: Annotated[bool, typer.Option("--read-only-tmpfs/--no-read-only-tmpfs",
                                                  help="With --read-only, mount tmpfs on /run, /tmp and "
                                                  "/var/tmp.")] = True,
    pull: Annotated[PullPolicy, typer.Option("--pull", help="Pull the image: missing, always or never.",
                                             case_sensitive=False)] = PullPolicy.missing,
    storage_driver: Annotated[str | None, typer.Option("--storage-driver", help="overlay, fuse-overlayfs or "
                                                       "vfs (default: config, else probed once).")] = None,
    platform: Annotated[str | None, typer.Option("--platform", help="OS/ARCH[/VARIANT] to pull.")] = None,
    userns: Annotated[str | None, typer.Option("--userns", help="keep-id: your uid and gid keep their "
                                               "numbers inside.")] = None,
    memory: Annotated[str | None, typer.Option("--memory", "-m", help="Memory limit (512m, 1g; at least "
                                               "6m).")] = None,
    memory_swap: Annotated[str | None, typer.Option("--memory-swap", help="Memory plus swap limit (-1: "
                                                    "unlimited swap; default: as much swap as memory).")] = None,
    memory_reservation: Annotated[str | None, typer.Option("--memory-reservation", help="Memory soft limit "
                                                           "(memory.low).")] = None,
    cpus: Annotated[str | None, typer.Option("--cpus", help="CPUs to use at most (1.5).")] = None,
    cpu_shares: Annotated[str | None, typer.Option("--cpu-shares", "-c", help="Relative CPU weight "
                                                   "(default 1024).")] = None,
    cpu_quota: Annotated[str | None, typer.Option("--cpu-quota", help="CPU microseconds per period.")] = None,
    cpu_period: Annotated[str | None, typer.Option("--cpu-period", help="CPU period in microseconds "
                                                   "(default 100000).")] = None,
    cpuset_cpus: Annotated[str | None, typer.Option("--cpuset-cpus", help="CPUs to run on (0-2,4).")] = None,
    pids_limit: Annotated[str | None, typer.Option("--pids-limit", help="Process limit (-1: "
                                                   "unlimited).")] = None,
    oom_score_adj: Annotated[str | None, typer.Option("--oom-score-adj", help="OOM score adjustment "
                                                      "(-1000 to 1000; only raising it needs no "
                                                      "privilege).")] = None,
    cgroups: Annotated[str | None, typer.Option("--cgroups", help="enabled (a cgroup of its own when the "
                                                "host can give one) or disabled.")] = None,
) -> None:
    """Run a command in a new container, as `podman run` does (rootless)."""
    from rootless.runargs import RunArgs

    ctx = _ctx()
    raise typer.Exit(cli._run_flow(ctx, RunArgs(
        image=image, command=command or [], rm=rm, detach=detach, name=name, interactive=interactive, tty=tty,
        env=env or [], env_file=env_file or [], workdir=workdir, user=user, entrypoint=entrypoint,
        hostname=hostname,
        init=init, cap_add=cap_add or [], cap_drop=cap_drop or [], security_opt=security_opt or [],
        privileged=privileged, network=network, volume=volume or [], mount=mount or [], tmpfs=tmpfs or [],
        read_only=read_only, read_only_tmpfs=read_only_tmpfs, pull=pull.value, storage_driver=storage_driver,
        platform=platform, userns=userns, publish=publish or [], publish_all=publish_all, dns=dns or [],
        dns_search=dns_search or [], dns_option=dns_option or [], add_host=add_host or [], memory=memory,
        memory_swap=memory_swap, memory_reservation=memory_reservation, cpus=cpus, cpu_shares=cpu_shares,
        cpu_quota=cpu_quota, cpu_period=cpu_period, cpuset_cpus=cpuset_cpus, pids_limit=pids_limit,
        oom_score_adj=oom_score_adj, cgroups=cgroups)))


# --------------------------------------------------------------------------- credentials

@app.command()
def login(
    registry: Annotated[str, typer.Argument(help="Registry host, e.g. quay.io or localhost:5000.")],
    username: Annotated[str | None, typer.Option("--username", "-u", help="User name.")] = None,
    password: Annotated[str | None, typer.Option("--password", "-p", help="Password (prefer "
                                                 "--password-stdin).")] = None,
    password_stdin: Annotated[bool, typer.Option("--password-stdin", help="Read the password from "
                                                 "standard input.")] = False,
    get_login: Annotated[bool, typer.Option("--get-login", help="Print the user name stored for "
                                            "REGISTRY.")] = False,
) -> None:
    """Log in to a registry; credentials are kept for later pulls."""
    from rootless.image import present

    ctx = _ctx()
    if get_login:
        typer.echo(present.get_login(ctx, registry))
        return
    if password_stdin:
        if password:
            raise RootlessError("--password and --password-stdin are mutually exclusive")
        password = sys.stdin.readline().rstrip("\r\n")
    if username is None:
        if not sys.stdin.isatty():
            raise RootlessError("no user name given", "pass --username, or run on a terminal to be asked")
        username = typer.prompt("Username")
    if password is None:
        if not sys.stdin.isatty():
            raise RootlessError("no password given", "pass --password-stdin and pipe the password in")
        import getpass

        password = getpass.getpass("Password: ")
    present.login(ctx, registry, username, password)
    typer.echo("Login Succeeded!")


@app.command()
def logout(
    registry: Annotated[str | None, typer.Argument(help="Registry host.")] = None,
    all_: Annotated[bool, typer.Option("--all", "-a", help="Remove the credentials of every registry.")] = False,
) -> None:
    """Remove stored registry credentials."""
    from rootless.image import present

    if not registry and not all_:
        raise RootlessError("logout needs a registry, or --all", "rootless logout REGISTRY")
    typer.echo(present.logout(_ctx(), registry, all_=all_))


# --------------------------------------------------------------------------- system

@app.command()
def info(
    fmt: Annotated[Format | None, typer.Option("--format", "-f", help="Output format: json.")] = None,
) -> None:
    """Show the host, store, ID maps, helper versions and cgroup delegation."""
    from rootless import doctor

    data = doctor.info(_ctx())
    if fmt == Format.json:
        _echo_json(data)
        return
    typer.echo(_yaml(data).rstrip())


def _yaml(data: Any, indent: int = 0) -> str:
    pad = "  " * indent
    out = []
    if isinstance(data, dict):
        for k, v in data.items():
            if isinstance(v, dict | list) and v:
                out.append(f"{pad}{k}:\n{_yaml(v, indent + 1)}")
            else:
                out.append(f"{pad}{k}: {_scalar(v)}\n")
    elif isinstance(data, list):
        for v in data:
            if isinstance(v, dict | list):
                out.append(f"{pad}-\n{_yaml(v, indent + 1)}")
            else:
                out.append(f"{pad}- {_scalar(v)}\n")
    return "".join(out)


def _scalar(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, dict | list):
        return "{}" if isinstance(v, dict) else "[]"
    return str(v)


@app.command()
def doctor() -> None:
    """Check every prerequisite and print the command that fixes each failing one."""
    from rootless import doctor as doc

    ctx = _ctx()
    bad = 0
    for check in doc.checks(ctx):
        mark = "ok  " if check.ok else ("FAIL" if check.needed else "warn")
        typer.echo(f"[{mark}] {check.name}: {check.detail}")
        if not check.ok and check.fix:
            for line in check.fix.splitlines():
                typer.echo(f"         fix: {line}")
        if not check.ok and check.needed:
            bad += 1
    if bad:
        typer.echo(f"{bad} needed check(s) failed", err=True)
        raise typer.Exit(1)


@app.command(context_settings={"allow_interspersed_args": False, "ignore_unknown_options": True})
def unshare(
    command: Annotated[list[str] | None, typer.Argument(help="Command and arguments (default: $SHELL).")] = None,
) -> None:
    """Run a command in the user namespace that owns the store, as `podman unshare` does."""
    from rootless.runtime.userns import run_in_store_ns

    ctx = _ctx()
    argv = command or [os.environ.get("SHELL") or "/bin/sh"]
    raise typer.Exit(run_in_store_ns(ctx.layout, ctx.log, argv, dict(os.environ)))


# --------------------------------------------------------------------------- containers

container_app = typer.Typer(help="Manage containers.", no_args_is_help=True, rich_markup_mode=None)
app.add_typer(container_app, name="container")


def _create(**kw: Any) -> None:
    """Create a container without starting it, as `podman create` does; print its ID."""
    from rootless.runargs import RunArgs

    ctx = _ctx()
    import dataclasses

    kw = {k: v.value if isinstance(v, Enum) else v for k, v in kw.items()}
    for f in dataclasses.fields(RunArgs):  # typer gives None for an absent repeatable option
        if f.name in kw and kw[f.name] is None and f.default_factory is list:
            kw[f.name] = []
    raise typer.Exit(cli._run_flow(ctx, RunArgs(**kw), create_only=True))


def _register_create() -> None:
    """`create` takes `run`'s options but -d: one list of options for both."""
    import inspect

    sig = inspect.signature(run, eval_str=True)
    params = [p for p in sig.parameters.values() if p.name != "detach"]
    _create.__signature__ = sig.replace(parameters=params)  # type: ignore[attr-defined]
    _create.__annotations__ = {p.name: p.annotation for p in params}
    app.command("create", context_settings={"allow_interspersed_args": False})(_create)


_register_create()


def _each(refs: list[str], action: Any, *, missing_code: int | None = None, echo: bool = True) -> None:
    """Apply *action* to each container named; errors are reported at the end (Podman
    goes on with the other containers), the last one picks the exit status."""
    from rootless import lifecycle
    from rootless.runtime.state import NoSuchContainer

    ctx = _ctx()
    errors: list[RootlessError] = []
    for ref in refs:
        try:
            cid = lifecycle.resolve(ctx, ref)
            action(ctx, cid)
            if echo:
                typer.echo(ref)
        except RootlessError as e:
            if missing_code is not None and isinstance(e, NoSuchContainer):
                e.exit_code = missing_code
            errors.append(e)
    for err in errors[:-1]:
        typer.echo(f"Error: {err.message}", err=True)
    if errors:
        raise errors[-1]


def _refs(names: list[str] | None, all_: bool, running_only: bool = False) -> list[str]:
    if all_:
        from rootless import lifecycle

        return [c.id for c in lifecycle.all_containers(_ctx()) if c.state.running or not running_only]
    if not names:
        raise typer.BadParameter("give at least one container name or ID, or --all")
    return names


@app.command()
def start(
    names: Annotated[list[str], typer.Argument(help="Containers to start (names, IDs or ID prefixes).")],
    attach: Annotated[bool, typer.Option("--attach", "-a", help="Follow the container's output and exit "
                                         "with its status.")] = False,
) -> None:
    """Start created or stopped containers under a monitor, as `podman start` does."""
    from rootless import lifecycle

    if attach:
        if len(names) != 1:
            raise typer.BadParameter("--attach takes exactly one container")
        ctx = _ctx()
        cid = lifecycle.resolve(ctx, names[0])
        since = __import__("time").time()
        lifecycle.start(ctx, cid)
        _print_logs(lifecycle.read_logs(ctx, cid, follow=True, tail=None, since=since - 0.001), False)
        st = lifecycle.wait_stopped(ctx, cid)
        raise typer.Exit(st.exit_code if st else EXIT_TOOL)
    _each(names, lambda ctx, cid: lifecycle.start(ctx, cid))


@app.command()
def stop(
    names: Annotated[list[str] | None, typer.Argument(help="Containers to stop.")] = None,
    time_: Annotated[int | None, typer.Option("--time", "-t", help="Seconds to wait after the stop signal "
                                              "before SIGKILL (default 10).")] = None,
    all_: Annotated[bool, typer.Option("--all", "-a", help="Stop every running container.")] = False,
) -> None:
    """Stop containers: the image's stop signal (SIGTERM), then SIGKILL after the timeout."""
    from rootless import lifecycle

    _each(_refs(names, all_, running_only=True), lambda ctx, cid: lifecycle.stop(ctx, cid, time_))


@app.command()
def kill(
    names: Annotated[list[str] | None, typer.Argument(help="Containers to signal.")] = None,
    sig: Annotated[str, typer.Option("--signal", "-s", help="Signal to send, by name or number.")] = "KILL",
    all_: Annotated[bool, typer.Option("--all", "-a", help="Signal every running container.")] = False,
) -> None:
    """Send a signal to the main process of running containers (default SIGKILL)."""
    from rootless import lifecycle

    n = lifecycle.parse_signal(sig)
    _each(_refs(names, all_, running_only=True), lambda ctx, cid: lifecycle.kill(ctx, cid, n))


@app.command()
def restart(
    names: Annotated[list[str] | None, typer.Argument(help="Containers to restart.")] = None,
    time_: Annotated[int | None, typer.Option("--time", "-t", help="Seconds to wait before SIGKILL when "
                                              "stopping (default 10).")] = None,
    all_: Annotated[bool, typer.Option("--all", "-a", help="Restart every container.")] = False,
) -> None:
    """Stop (if running) and start containers again."""
    from rootless import lifecycle

    def again(ctx: Context, cid: str) -> None:
        lifecycle.stop(ctx, cid, time_)
        lifecycle.start(ctx, cid)

    _each(_refs(names, all_), again)


@app.command()
def rm(
    names: Annotated[list[str] | None, typer.Argument(help="Containers to remove.")] = None,
    force: Annotated[bool, typer.Option("--force", "-f", help="Kill running containers first "
                                        "(SIGKILL).")] = False,
    all_: Annotated[bool, typer.Option("--all", "-a", help="Remove every container.")] = False,
    volumes: Annotated[bool, typer.Option("--volumes", "-v", help="Remove the container's anonymous "
                                          "volumes too.")] = False,
) -> None:
    """Remove containers: their layer in the store, their state and log (exit 1: no such
    container, 2: running without --force)."""
    from rootless import lifecycle

    def one(ctx: Context, cid: str) -> None:
        anonymous: list[str] = []
        if volumes:
            from rootless import volumes as vols

            try:
                anonymous = vols.anonymous_in(ctx, lifecycle.load(ctx, cid).config.spec)
            except RootlessError:
                pass
        lifecycle.remove(ctx, cid, force)
        if anonymous:
            vols.discard(ctx, anonymous)

    _each(_refs(names, all_), one, missing_code=1)


@app.command("wait")
def wait_(
    names: Annotated[list[str], typer.Argument(help="Containers to wait for.")],
) -> None:
    """Wait until containers stop; print each one's exit code."""
    from rootless import lifecycle

    def one(ctx: Context, cid: str) -> None:
        st = lifecycle.wait_stopped(ctx, cid)
        typer.echo(str(st.exit_code if st else -1))

    _each(names, one, echo=False)


@app.command()
def ps(
    all_: Annotated[bool, typer.Option("--all", "-a", help="Show every container, not only running "
                                       "ones.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print only container IDs.")] = False,
    filters: Annotated[list[str] | None, typer.Option("--filter", "-f", help="status=STATUS, name=REGEX or "
                                                      "id=PREFIX (repeatable).")] = None,
    fmt: Annotated[Format, typer.Option("--format", help="Output format: table or json.")] = Format.table,
    no_trunc: Annotated[bool, typer.Option("--no-trunc", help="Do not truncate IDs and commands.")] = False,
) -> None:
    """List containers, as `podman ps` does."""
    from rootless import lifecycle

    for line in lifecycle.ps_lines(_ctx(), all_=all_, quiet=quiet, filters=filters or [],
                                   json_format=fmt == Format.json, no_trunc=no_trunc):
        typer.echo(line)


_STATS_COLUMNS = (("ID", "id"), ("NAME", "name"), ("CPU %", "cpu_percent"), ("MEM USAGE / LIMIT", "mem_usage"),
                  ("MEM %", "mem_percent"), ("NET IO", "net_io"), ("BLOCK IO", "block_io"), ("PIDS", "pids"),
                  ("CPU TIME", "cpu_time"), ("AVG CPU %", "avg_cpu"))


@app.command()
def stats(
    names: Annotated[list[str] | None, typer.Argument(help="Containers (default: every running one).")] = None,
    all_: Annotated[bool, typer.Option("--all", "-a", help="Every container, not only running ones.")] = False,
    no_stream: Annotated[bool, typer.Option("--no-stream", help="Print one sample and exit.")] = False,
    fmt: Annotated[Format, typer.Option("--format", help="Output format: table or json.")] = Format.table,
    interval: Annotated[int, typer.Option("--interval", "-i", help="Seconds between samples.", min=1)] = 5,
    no_reset: Annotated[bool, typer.Option("--no-reset", help="Do not clear the terminal between "
                                           "samples.")] = False,
) -> None:
    """Show containers' CPU, memory, block I/O and process counts, read from their cgroups."""
    import json
    import time

    from rootless import lifecycle

    ctx = _ctx()
    before: dict[str, Any] = {}
    clear = sys.stdout.isatty() and not no_reset and not no_stream
    first = True
    while True:
        rows = []
        targets = lifecycle.stats_targets(ctx, names or [], all_, strict=first)
        if names and not targets:
            return  # every container named has ended
        first = False
        for c in targets:
            now = lifecycle.stats_sample(c)
            rows.append(lifecycle.stats_row(c, now, before.get(c.id)))
            if now is not None:
                before[c.id] = now
        if fmt == Format.json:
            text = json.dumps(rows, indent=4)
        else:
            table = [[h for h, _ in _STATS_COLUMNS]] + [[r[k] for _, k in _STATS_COLUMNS] for r in rows]
            widths = [max(len(line[i]) for line in table) for i in range(len(_STATS_COLUMNS))]
            text = "\n".join("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip()
                             for line in table)
        if clear:
            sys.stdout.write("\033[H\033[2J")
        typer.echo(text)
        sys.stdout.flush()
        if no_stream:
            return
        time.sleep(interval)


def _print_logs(lines: Any, timestamps: bool) -> None:
    out, err = sys.stdout.buffer, sys.stderr.buffer
    for ln in lines:
        stream = err if ln.stream == "stderr" else out
        if timestamps:
            stream.write(ln.time.encode() + b" ")
        stream.write(ln.text + (b"" if ln.partial else b"\n"))
        stream.flush()


@app.command()
def logs(
    name: Annotated[str, typer.Argument(help="Container name or ID.")],
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing new output until the "
                                         "container exits.")] = False,
    tail: Annotated[int | None, typer.Option("--tail", help="Only the last N lines.")] = None,
    since: Annotated[str | None, typer.Option("--since", help="Only lines since a time: RFC 3339, Unix time, "
                                              "or a duration before now (10m).")] = None,
    timestamps: Annotated[bool, typer.Option("--timestamps", "-t", help="Prefix each line with its "
                                             "time.")] = False,
) -> None:
    """Print a container's output (stdout to stdout, stderr to stderr)."""
    import time

    from rootless import lifecycle

    ctx = _ctx()
    cid = lifecycle.resolve(ctx, name)
    t = lifecycle.parse_since(since, time.time()) if since else None
    _print_logs(lifecycle.read_logs(ctx, cid, follow=follow, tail=tail, since=t), timestamps)


@app.command("exec", context_settings={"allow_interspersed_args": False})
def exec_(
    name: Annotated[str, typer.Argument(help="Container name or ID.")],
    command: Annotated[list[str], typer.Argument(help="Command and arguments.")],
    interactive: Annotated[bool, typer.Option("--interactive", "-i", help="Keep standard input open.")] = False,
    tty: Annotated[bool, typer.Option("--tty", "-t", help="Allocate a pseudo-terminal.")] = False,
    env: Annotated[list[str] | None, typer.Option("--env", "-e", help="Set KEY=VALUE (KEY alone: the host's "
                                                  "value).")] = None,
    workdir: Annotated[str | None, typer.Option("--workdir", "-w", help="Working directory inside the "
                                                "container.")] = None,
    user: Annotated[str | None, typer.Option("--user", "-u", help="USER[:GROUP], names or numbers.")] = None,
) -> None:
    """Run a command in a running container (its namespaces and root); exit with its status."""
    from rootless import lifecycle

    ctx = _ctx()
    cid = lifecycle.resolve(ctx, name)
    raise typer.Exit(lifecycle.exec_(ctx, cid, command, interactive=interactive, tty=tty, env=env or [],
                                     workdir=workdir, user=user))


@app.command("inspect")
def inspect_(
    names: Annotated[list[str], typer.Argument(help="Containers to inspect.")],
) -> None:
    """Print containers' details as a JSON array (Podman's main fields); a name that is no
    container is looked up as an image, as `podman inspect` does."""
    from rootless import lifecycle
    from rootless.runtime.state import NoSuchContainer

    ctx = _ctx()
    out = []
    errors: list[RootlessError] = []
    for ref in names:
        try:
            out.append(lifecycle.inspect(ctx, lifecycle.load(ctx, lifecycle.resolve(ctx, ref))))
        except NoSuchContainer as e:
            from rootless.image import present

            data, missing = present.inspect(ctx, [ref])
            out.extend(data)
            if missing:
                errors.append(RootlessError(f"no container or image {ref!r} found", hint=e.hint))
        except RootlessError as e:
            errors.append(e)
    _echo_json(out)
    if errors:
        raise errors[-1]


@app.command()
def port(
    name: Annotated[str, typer.Argument(help="Container name or ID.")],
    private: Annotated[str | None, typer.Argument(help="Only this container port: PORT[/PROTOCOL].")] = None,
) -> None:
    """List a container's published ports (container port -> host address)."""
    from rootless import lifecycle

    ctx = _ctx()
    c = lifecycle.load(ctx, lifecycle.resolve(ctx, name))
    lines = lifecycle.ports(c)
    if private is not None:
        num, _, proto = private.partition("/")
        key = f"{num}/{proto or 'tcp'}"
        lines = [ln.split(" -> ", 1)[1] for ln in lines if ln.startswith(key + " ")]
        if not lines:
            raise RootlessError(f"container {c.config.name} publishes no port {key}")
    for ln in lines:
        typer.echo(ln)


@app.command()
def cp(
    src: Annotated[str, typer.Argument(help="Host path or CONTAINER:PATH.")],
    dest: Annotated[str, typer.Argument(help="Host path or CONTAINER:PATH.")],
) -> None:
    """Copy files between a container (running or not) and the host, keeping modes."""
    from rootless import lifecycle

    lifecycle.copy(_ctx(), src, dest)


@container_app.command("prune")
def container_prune(
    force: Annotated[bool, typer.Option("--force", "-f", help="Do not ask for confirmation (there is no "
                                        "prompt: accepted for Podman's syntax).")] = False,
) -> None:
    """Remove every container that is not running; print their IDs."""
    from rootless import lifecycle

    del force
    for cid in lifecycle.prune(_ctx()):
        typer.echo(cid)


# --------------------------------------------------------------------------- volumes

volume_app = typer.Typer(help="Manage volumes.", no_args_is_help=True, rich_markup_mode=None)
app.add_typer(volume_app, name="volume")


@volume_app.command("create")
def volume_create(
    name: Annotated[str | None, typer.Argument(help="The volume's name (default: a random one).")] = None,
    driver: Annotated[str, typer.Option("--driver", "-d", help="Volume driver: local.")] = "local",
    opt: Annotated[list[str] | None, typer.Option("--opt", "-o", help="Driver option: type=tmpfs|none, "
                                                   "device=PATH, o=OPTIONS (repeatable).")] = None,
    label: Annotated[list[str] | None, typer.Option("--label", "-l", help="KEY=VALUE label "
                                                     "(repeatable).")] = None,
) -> None:
    """Create a volume; print its name."""
    from rootless import volumes

    typer.echo(volumes.create(_ctx(), name, driver=driver, opts=opt or [], labels=label or []).name)


@volume_app.command("ls")
def volume_ls(
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print only volume names.")] = False,
    fmt: Annotated[Format, typer.Option("--format", help="Output format: table or json.")] = Format.table,
    filter_: Annotated[list[str] | None, typer.Option("--filter", "-f", help="name=REGEX, label=KEY[=VALUE], "
                                                       "dangling=true|false, driver=local "
                                                       "(repeatable).")] = None,
) -> None:
    """List volumes."""
    from rootless import volumes

    ctx = _ctx()
    found = volumes.listing(ctx, filter_ or [])
    if fmt == Format.json:
        _echo_json([volumes.inspect(ctx, v, n) for v, n in found])
    elif quiet:
        for v, _ in found:
            typer.echo(v.name)
    else:
        typer.echo(f"{'DRIVER':<12}VOLUME NAME")
        for v, _ in found:
            typer.echo(f"{v.driver:<12}{v.name}")


volume_app.command("list", hidden=True)(volume_ls)


@volume_app.command("inspect")
def volume_inspect(
    names: Annotated[list[str] | None, typer.Argument(help="Volumes to show.")] = None,
    all_: Annotated[bool, typer.Option("--all", "-a", help="Show every volume.")] = False,
) -> None:
    """Show volumes' records as JSON."""
    from rootless import volumes

    ctx = _ctx()
    counts = {v.name: n for v, n in volumes.listing(ctx)}
    if all_:
        wanted = list(counts)
    elif names:
        wanted = names
    else:
        raise typer.BadParameter("give at least one volume name, or --all")
    out = []
    errors: list[RootlessError] = []
    for n in wanted:
        try:
            out.append(volumes.inspect(ctx, volumes.find(ctx, n), counts.get(n, 0)))
        except RootlessError as e:
            errors.append(e)
    _echo_json(out)
    for err in errors[:-1]:
        typer.echo(f"Error: {err.message}", err=True)
    if errors:
        raise errors[-1]


@volume_app.command("rm")
def volume_rm(
    names: Annotated[list[str] | None, typer.Argument(help="Volumes to remove.")] = None,
    force: Annotated[bool, typer.Option("--force", "-f", help="Remove the stopped containers using them "
                                        "too.")] = False,
    all_: Annotated[bool, typer.Option("--all", "-a", help="Remove every volume.")] = False,
) -> None:
    """Remove volumes (exit 1: no such volume, 2: in use by a container)."""
    from rootless import volumes

    ctx = _ctx()
    if all_:
        wanted = [v.name for v, _ in volumes.listing(ctx)]
    elif names:
        wanted = names
    else:
        raise typer.BadParameter("give at least one volume name, or --all")
    errors: list[RootlessError] = []
    for n in wanted:
        try:
            volumes.remove(ctx, n, force)
            typer.echo(n)
        except RootlessError as e:
            errors.append(e)
    for err in errors[:-1]:
        typer.echo(f"Error: {err.message}", err=True)
    if errors:
        raise errors[-1]


volume_app.command("remove", hidden=True)(volume_rm)


@volume_app.command("prune")
def volume_prune(
    force: Annotated[bool, typer.Option("--force", "-f", help="Do not ask for confirmation.")] = False,
    filter_: Annotated[list[str] | None, typer.Option("--filter", help="Prune only volumes that match: "
                                                       "name=, label=, driver= (repeatable).")] = None,
) -> None:
    """Remove every volume no container uses; print their names."""
    from rootless import volumes

    if not force:
        typer.echo("WARNING! This will remove all volumes not used by at least one container. "
                   "The following volumes will be removed:", err=True)
        for v, users in volumes.listing(_ctx(), filter_ or []):
            if users == 0:
                typer.echo(v.name, err=True)
        if not typer.confirm("Are you sure you want to continue?", default=False, err=True):
            return
    for name in volumes.prune(_ctx(), filter_ or []):
        typer.echo(name)


@volume_app.command("exists")
def volume_exists(
    name: Annotated[str, typer.Argument(help="The volume's name.")],
) -> None:
    """Exit 0 if the volume exists, 1 if not."""
    from storage.volumes import VolumeStore

    raise typer.Exit(0 if VolumeStore(_ctx().layout).exists(name) else 1)


@volume_app.command("export")
def volume_export(
    name: Annotated[str, typer.Argument(help="The volume's name.")],
    output: Annotated[str | None, typer.Option("--output", "-o", help="Write the tar archive to this file "
                                               "(default: standard output).")] = None,
) -> None:
    """Write a volume's content as a tar archive."""
    from rootless import volumes

    volumes.export(_ctx(), name, output)


@volume_app.command("import")
def volume_import(
    name: Annotated[str, typer.Argument(help="The volume's name.")],
    source: Annotated[str, typer.Argument(help="A tar archive, or - for standard input.")],
) -> None:
    """Unpack a tar archive into a volume."""
    from rootless import volumes

    volumes.import_(_ctx(), name, source)


# --------------------------------------------------------------------------- entry point


def invoke(args: list[str]) -> int:
    """Run the typer app on ``args``; usage errors are Podman's exit 125. RootlessError and
    OSError propagate to cli.main, which reports them."""
    from typer._click import exceptions as cx
    from typer.main import get_command

    try:
        rv = get_command(app).main(args, prog_name="rootless", standalone_mode=False)
    except (cx.UsageError, cx.ClickException) as e:
        e.show()
        return EXIT_TOOL
    except (typer.Exit, SystemExit) as e:
        code = getattr(e, "exit_code", getattr(e, "code", 0))
        return code if isinstance(code, int) else 0
    except typer.Abort:
        return 130
    return rv if isinstance(rv, int) else 0

