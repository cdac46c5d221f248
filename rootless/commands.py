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
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
    tctx.obj = {"log_level": log_level.value, "root": root, "runroot": runroot}


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


@image_app.command("list", hidden=True)
@image_app.command("ls")
def image_ls(
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print only image IDs.")] = False,
    fmt: Annotated[Format, typer.Option("--format", help="Output format: table or json.")] = Format.table,
    no_trunc: Annotated[bool, typer.Option("--no-trunc", help="Do not truncate image IDs.")] = False,
    all_: Annotated[bool, typer.Option("--all", "-a", help="Show all images (intermediate ones too).")] = False,
    digests: Annotated[bool, typer.Option("--digests", help="Show manifest digests.")] = False,
) -> None:
    """List images in the store (same as `rootless images`)."""
    images(quiet=quiet, fmt=fmt, no_trunc=no_trunc, all_=all_, digests=digests)


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


@image_app.command("rm")
def image_rm(
    names: Annotated[list[str] | None, typer.Argument(help="Images to remove (names or IDs).")] = None,
    force: Annotated[bool, typer.Option("--force", "-f", help="Remove the image even when several names "
                                        "point at it; ignore images that are not known.")] = False,
    all_: Annotated[bool, typer.Option("--all", "-a", help="Remove all images.")] = False,
) -> None:
    """Remove images (same as `rootless rmi`)."""
    rmi(names=names, force=force, all_=all_)


@app.command()
def tag(
    source: Annotated[str, typer.Argument(help="Image to tag (name or ID).")],
    targets: Annotated[list[str], typer.Argument(help="New names.")],
) -> None:
    """Add names to an image."""
    from rootless.image import present

    present.tag(_ctx(), source, targets)


@image_app.command("tag")
def image_tag(
    source: Annotated[str, typer.Argument(help="Image to tag (name or ID).")],
    targets: Annotated[list[str], typer.Argument(help="New names.")],
) -> None:
    """Add names to an image (same as `rootless tag`)."""
    tag(source, targets)


@image_app.command("pull")
def image_pull(
    image: Annotated[str, typer.Argument(help="Image reference.")],
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print only the image ID.")] = False,
    platform: Annotated[str | None, typer.Option("--platform", help="OS/ARCH[/VARIANT] to pull.")] = None,
) -> None:
    """Pull an image (same as `rootless pull`)."""
    pull(image, quiet=quiet, platform=platform)


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
    network: Annotated[str | None, typer.Option("--network", "--net", help="none (the default until "
                                                "slirp4netns support lands) or host.")] = None,
    volume: Annotated[list[str] | None, typer.Option("--volume", "-v", help="Bind mount "
                                                     "HOST-PATH:CONTAINER-PATH[:ro|rw,...].")] = None,
    mount: Annotated[list[str] | None, typer.Option("--mount", help="type=bind|tmpfs,source=...,"
                                                    "target=...[,ro].")] = None,
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
) -> None:
    """Run a command in a new container, as `podman run` does (rootless)."""
    from rootless.runargs import RunArgs

    ctx = _ctx()
    raise typer.Exit(cli._run_flow(ctx, RunArgs(
        image=image, command=command or [], rm=rm, name=name, interactive=interactive, tty=tty, env=env or [],
        env_file=env_file or [], workdir=workdir, user=user, entrypoint=entrypoint, hostname=hostname,
        init=init, cap_add=cap_add or [], cap_drop=cap_drop or [], security_opt=security_opt or [],
        privileged=privileged, network=network, volume=volume or [], mount=mount or [], tmpfs=tmpfs or [],
        read_only=read_only, read_only_tmpfs=read_only_tmpfs, pull=pull.value, storage_driver=storage_driver,
        platform=platform, userns=userns)))


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

