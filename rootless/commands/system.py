"""System commands: info, doctor, unshare, completion, system service."""

from __future__ import annotations

import os

from rootless.options import Args, Table, arg, value

TYPE_CHECKING = False  # typing stays off the start-up path (`rootless --help` would import it)
if TYPE_CHECKING:
    from typing import Any

    from rootless.context import Context

table = Table()


@table.command("info", "Show the host, store, ID maps, helper versions and cgroup delegation.",
               options=[value("-f", "--format", help="json, or a Go template with Podman's fields "
                              "(`{{.Host.Arch}}`, `{{.Store.GraphRoot}}`).")])
def info(ctx: Context, a: Args) -> int:
    from rootless import doctor

    data = doctor.info(ctx)
    if a.format == "json":
        import json

        print(json.dumps(data, indent=4))
    elif a.format and a.format != "table":
        from rootless import gotemplate, views

        views.emit(gotemplate.render_one("info", a.format, views.info_view(data)))
    else:
        print(_yaml(data).rstrip())
    return 0


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


@table.command("doctor", "Check every prerequisite and print the command that fixes each failing one.",
               context="lenient")
def doctor(ctx: Context, a: Args) -> int:
    import sys

    from rootless import doctor as doc

    bad = 0
    for check in doc.checks(ctx):
        mark = "ok  " if check.ok else ("FAIL" if check.needed else "warn")
        print(f"[{mark}] {check.name}: {check.detail}")
        if not check.ok and check.fix:
            for line in check.fix.splitlines():
                print(f"         fix: {line}")
        if not check.ok and check.needed:
            bad += 1
    if bad:
        print(f"{bad} needed check(s) failed", file=sys.stderr)
        return 1
    return 0


@table.command("system migrate", "Move the store to this environment's run root and probe the storage driver "
               "again.", context="lenient")
def system_migrate(ctx: Context, a: Args) -> int:
    from rootless.system import migrate

    for line in migrate(ctx):
        print(line)
    return 0


@table.command("unshare", "Run a command in the user namespace that owns the store, as `podman unshare` does.",
               args=[arg("COMMAND", many=True, optional=True, help="Command and arguments (default: $SHELL).")],
               interspersed=False, unknown_as_args=True)
def unshare(ctx: Context, a: Args) -> int:
    from rootless.runtime.userns import run_in_store_ns

    argv = list(a.command) or [os.environ.get("SHELL") or "/bin/sh"]
    return run_in_store_ns(ctx.layout, ctx.log, argv, dict(os.environ))


@table.command("completion", "Print a shell completion script: bash, zsh or fish.",
               args=[arg("SHELL", help="bash, zsh or fish.")],
               options=[value("-f", "--file", complete="file", help="Write the script to FILE instead of "
                              "standard output.")],
               context=False)
def completion(a: Args) -> int:
    from rootless import completion as comp
    from rootless.errors import RootlessError

    if a.shell not in comp.SHELLS:
        raise RootlessError(f"completion {a.shell!r}: no such shell", "rootless completion bash|zsh|fish")
    script = comp.script(a.shell)
    if a.file:
        tmp = f"{a.file}.tmp{os.getpid()}"
        with open(tmp, "w") as f:
            f.write(script)
        os.replace(tmp, a.file)
    else:
        print(script, end="")
    return 0


# the "system" group is declared with system df/prune/reset (rootless/commands/scripting.py)
@table.command("system service", "Serve the Docker-compatible REST API on a unix socket (for docker, compose and "
               "the SDKs).",
               args=[arg("URI", optional=True, help="Where to listen: unix:///PATH (default: "
                         "unix://$XDG_RUNTIME_DIR/rootless/rootless.sock).")],
               options=[value("-t", "--time", type=int, default=5, min=0, help="Seconds without a connection "
                              "before the service exits (0: never).")])
def system_service(ctx: Context, a: Args) -> int:
    from rootless.api import server

    return server.serve(ctx, a.uri, float(a.time))
