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

_GLOBALS = {"--log-level": "log_level", "--root": "root", "--runroot": "runroot"}
_LOG_LEVELS = {"debug", "info", "warn", "error"}

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
    i = 0
    glob: dict[str, str] = {}
    while i < len(argv) and argv[i] not in _SPEC:
        opt, eq, val = argv[i].partition("=")
        if opt not in _GLOBALS:
            return None
        if not eq:
            if i + 1 >= len(argv):
                return None
            i += 1
            val = argv[i]
        glob[_GLOBALS[opt]] = val
        i += 1
    if i >= len(argv):
        return None
    level = glob.get("log_level", "warn").lower()
    if level not in _LOG_LEVELS:
        return None
    out = CtrArgs(argv[i], log_level=level, root=glob.get("root"), runroot=glob.get("runroot"))
    flags, values, lists = _SPEC[out.command]
    i += 1

    def put(name: str, value: str) -> None:
        if name in lists:
            out.lists.setdefault(name, []).append(value)
        else:
            out.values[name] = value

    while i < len(argv):
        a = argv[i]
        i += 1
        if a == "--":
            out.positional += argv[i:]
            break
        if a.startswith("--"):
            opt, eq, val = a.partition("=")
            if opt in flags and not eq:
                out.flags.add(flags[opt])
            elif opt in values:
                if not eq:
                    if i >= len(argv):
                        return None
                    val = argv[i]
                    i += 1
                put(values[opt], val)
            else:
                return None
        elif a.startswith("-") and len(a) > 1:
            j = 1
            while j < len(a):
                opt = "-" + a[j]
                j += 1
                if opt in flags:
                    out.flags.add(flags[opt])
                elif opt in values:
                    if j < len(a):
                        val = a[j:]
                    elif i < len(argv):
                        val = argv[i]
                        i += 1
                    else:
                        return None
                    put(values[opt], val)
                    break
                else:
                    return None
        elif out.command == "exec":
            out.positional = [a, *argv[i:]]  # the container, then the command: not ours to parse
            break
        else:
            return None  # ps takes no arguments
    if out.command == "exec" and len(out.positional) < 2:
        return None
    if out.command == "ps" and out.values.get("format", "table") not in ("table", "json"):
        return None
    return out
