"""Entry point: parses the command line, calls the command, and is the ONLY place that prints
errors and picks exit codes (125 tool, 126, 127, the container's own status).

The command line is parsed with the commands' own declarations (rootless.options, one table per
module of rootless.commands); only the module that declares the command typed is imported, so
`rootless run` loads `run`'s table and the engine, and nothing of the other commands.
"""

from __future__ import annotations

import os
import sys

from rootless.errors import EXIT_TOOL, RootlessError
from rootless.options import UsageError

TYPE_CHECKING = False  # typing stays off the start-up path (`rootless --help` would import it)
if TYPE_CHECKING:
    from typing import NoReturn

    from rootless.options import Args, Command


def _root() -> Command:
    from rootless.commands import DESCRIPTION, GLOBAL
    from rootless.options import Command, arg

    return Command("", DESCRIPTION, lambda: None, options=GLOBAL, interspersed=False,
                   args=[arg("COMMAND", optional=True, help="The command."),
                         arg("ARGS", many=True, optional=True, help="Its options and arguments.")])


def root_help() -> str:
    from rootless import commands
    from rootless.options import group_help

    entries = [(c.path[0], c.help) for c in commands.all_commands() if len(c.path) == 1]
    entries += [(g.name, g.help) for g in commands.all_groups()]
    return group_help(commands.DESCRIPTION, "rootless [options] COMMAND", entries, _root().options)


def group_entries(group: str) -> list[tuple[str, str]]:
    from rootless import commands

    out = []
    for c in commands.all_commands():
        for p in (c.path, *c.aliases):
            if len(p) == 2 and p[0] == group:
                same = "" if p == c.path else f" (same as `rootless {c.name}`)"
                out.append((p[1], c.help + same))
    return out


def _group_help(group: str, help_text: str) -> str:
    from rootless.options import HELP, group_help

    return group_help(help_text, f"rootless {group} COMMAND", group_entries(group), (HELP,))


def dispatch(argv: list[str], *, end_early: bool = False) -> int:
    """Parse ``argv`` and run the command it names; its exit status. ``end_early`` (the process's
    own command line, not a caller's): a help text, or a command whose declaration says
    ``quick_exit``, ends the process as soon as it is done (_exit_now)."""
    from rootless import commands
    from rootless.options import command_help, parse

    glob = parse(_root(), argv, ())
    if glob is None:
        sys.stdout.write(root_help())
        if end_early:
            _exit_now(0)
        return 0
    level = glob.log_level.lower()
    if level != "warn":  # the default needs no check: `CMD --help` loads no context module
        from rootless.context import LEVELS

        if level not in LEVELS:
            # Podman: an unknown level is exit 1, before any command runs
            err = RootlessError(f'log level "{glob.log_level}" is not valid', hint="use debug, info, warn or error")
            err.exit_code = 1
            raise err
    glob.__dict__["log_level"] = level
    if glob.noout:
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - for the life of the process
    if glob.version:
        from importlib.metadata import version

        print(f"rootless version {version('rootless')}")
        return 0
    if glob.command is None:
        sys.stderr.write(root_help())
        raise UsageError("missing command 'rootless COMMAND'")
    words = [glob.command, *glob.args]
    found = commands.find(words)
    if found is None:
        group = next((g for g in commands.all_groups() if g.name == words[0]), None)
        if group is None:
            raise UsageError(f"No such command {words[0]!r}.")
        rest = words[1:]
        if rest and rest[0] in ("-h", "--help"):
            sys.stdout.write(_group_help(group.name, group.help))
            return 0
        if not rest:
            sys.stderr.write(_group_help(group.name, group.help))
            raise UsageError(f"missing command 'rootless {group.name} COMMAND'", (group.name,))
        raise UsageError(f"No such command {rest[0]!r}.", (group.name,))
    cmd, path = found
    try:
        a = parse(cmd, words[len(path):], path)
    except UsageError as e:
        e.path = e.path or path
        raise
    if a is None:
        sys.stdout.write(command_help(cmd, path))
        if end_early:
            _exit_now(0)
        return 0
    if end_early and cmd.quick_exit is not None and cmd.quick_exit(a):
        _exit_now(_call(cmd, a, glob))  # the collector stays off (main): it would only cost time
    if end_early:
        import gc

        gc.enable()  # a command that may run long (pull, build, the API) collects its cycles
    return _call(cmd, a, glob)


def _call(cmd: Command, a: Args, glob: Args) -> int:
    if not cmd.context:
        rv = cmd.handler(a)
    else:
        from rootless.context import build

        ctx = build(glob.log_level, glob.root, glob.runroot, glob.cgroup_manager, glob.storage_driver,
                    glob.events_backend, lenient=cmd.context == "lenient")
        rv = cmd.handler(ctx, a)
    return rv if isinstance(rv, int) else 0


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
    """End the process without interpreter shutdown (≈5 ms of module teardown, ≈10 ms after a
    foreground `run`): every child is reaped and every file we wrote is closed by then; only our
    own streams need a flush."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    import os

    os._exit(code)


def main(argv: list[str] | None = None) -> NoReturn:
    args = list(sys.argv[1:] if argv is None else argv)
    if argv is None:
        import gc

        # Start-up allocates a few hundred thousand objects and frees few of them: the collector's
        # passes over them cost time and free nothing until dispatch knows the command.
        gc.disable()
    debug = _debug_requested(args)
    try:
        rv = dispatch(args, end_early=argv is None)
    except UsageError as e:
        where = " ".join(("rootless", *e.path))
        _fail(e.message, f"see '{where} --help'", EXIT_TOOL)
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
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        pass
    sys.exit(rv)
