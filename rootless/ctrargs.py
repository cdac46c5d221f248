"""`rootless [GLOBAL OPTIONS] ps|exec ...` parsed without typer, for the start-up budget.

`ps` and `exec` are run in loops by scripts and health checks; building typer's command
tree costs more than the command itself (see rootless.runargs). ``parse`` accepts the
syntax the typer commands accept (click's rules: clustered short flags, ``--opt=value``;
for exec, options before the container, everything after the container is the command)
and returns None for anything else (``--help``, an unknown option, a missing argument),
so typer handles it with its own messages. tests/unit/test_ctrargs.py holds them in step.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from rootless.runargs import scan_globals, scan_options

# command → (flags: option → field, value options: option → field, repeatable fields)
_SPEC: dict[str, tuple[dict[str, str], dict[str, str], set[str]]] = {
    "ps": ({"-a": "all", "--all": "all", "-q": "quiet", "--quiet": "quiet", "--no-trunc": "no_trunc"},
           {"-f": "filter", "--filter": "filter", "--format": "format"}, {"filter"}),
    "exec": ({"-i": "interactive", "--interactive": "interactive", "-t": "tty", "--tty": "tty"},
             {"-e": "env", "--env": "env", "-w": "workdir", "--workdir": "workdir", "-u": "user",
              "--user": "user"}, {"env"}),
}


@dataclass
class CtrArgs:
    command: str
    flags: set[str] = field(default_factory=set)
    values: dict[str, str] = field(default_factory=dict)
    lists: dict[str, list[str]] = field(default_factory=dict)
    positional: list[str] = field(default_factory=list)
    log_level: str = "warn"
    root: str | None = None
    runroot: str | None = None


def parse(argv: list[str]) -> CtrArgs | None:
    found = scan_globals(argv, _SPEC)
    if found is None:
        return None
    glob, i = found
    out = CtrArgs(argv[i], log_level=glob["log_level"], root=glob.get("root"), runroot=glob.get("runroot"))
    flags, values, lists = _SPEC[out.command]
    scanned = scan_options(argv, i + 1, flags, values)
    if scanned is None:
        return None
    opts, out.positional = scanned
    for opt, val in opts:
        if val is None:
            out.flags.add(flags[opt])
        elif values[opt] in lists:
            out.lists.setdefault(values[opt], []).append(val)
        else:
            out.values[values[opt]] = val
    if out.command == "exec" and len(out.positional) < 2:
        return None  # the container, then the command: not ours to parse
    if out.command == "ps" and (out.positional or out.values.get("format", "table") not in ("table", "json")):
        return None  # ps takes no arguments
    return out
