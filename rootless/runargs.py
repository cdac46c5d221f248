"""`rootless [GLOBAL OPTIONS] run ...` parsed without typer, for the start-up budget.

Building typer's command tree and its per-parameter adapters costs more than starting a
container (typer 0.29 imports pydantic for them). ``parse`` accepts exactly the syntax the
typer ``run`` command accepts (click's rules: clustered short flags, ``--opt=value``,
options before the image, everything after the image passed through) and returns None for
anything else (``--help``, an unknown or malformed option, a missing image) so typer
handles it, with its own messages. tests/unit/test_runargs.py holds the two in step.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# option → RunArgs field; flags take no value, the rest take one (lists collect repeats)
_FLAGS: dict[str, tuple[str, bool]] = {
    "--rm": ("rm", True), "-i": ("interactive", True), "--interactive": ("interactive", True),
    "-t": ("tty", True), "--tty": ("tty", True), "--init": ("init", True),
    "-d": ("detach", True), "--detach": ("detach", True),
    "--privileged": ("privileged", True), "--read-only": ("read_only", True),
    "--read-only-tmpfs": ("read_only_tmpfs", True), "--no-read-only-tmpfs": ("read_only_tmpfs", False),
    "-P": ("publish_all", True), "--publish-all": ("publish_all", True),
}
_VALUES: dict[str, str] = {
    "--name": "name", "-e": "env", "--env": "env", "--env-file": "env_file", "-w": "workdir",
    "--workdir": "workdir", "-u": "user", "--user": "user", "--entrypoint": "entrypoint",
    "--hostname": "hostname", "--cap-add": "cap_add", "--cap-drop": "cap_drop",
    "--security-opt": "security_opt", "--network": "network", "--net": "network", "-v": "volume",
    "--volume": "volume", "--mount": "mount", "--tmpfs": "tmpfs", "--pull": "pull",
    "--storage-driver": "storage_driver", "--platform": "platform", "--userns": "userns",
    "-p": "publish", "--publish": "publish", "--dns": "dns", "--dns-search": "dns_search",
    "--dns-option": "dns_option", "--add-host": "add_host",
}
_LISTS = {"env", "env_file", "cap_add", "cap_drop", "security_opt", "volume", "mount", "tmpfs", "publish", "dns",
          "dns_search", "dns_option", "add_host"}
_GLOBALS = {"--log-level": "log_level", "--root": "root", "--runroot": "runroot"}
_LOG_LEVELS = {"debug", "info", "warn", "error"}
_PULL = {"missing", "always", "never"}


@dataclass
class RunArgs:
    image: str = ""
    command: list[str] = field(default_factory=list)
    rm: bool = False
    detach: bool = False
    name: str | None = None
    interactive: bool = False
    tty: bool = False
    env: list[str] = field(default_factory=list)
    env_file: list[str] = field(default_factory=list)
    workdir: str | None = None
    user: str | None = None
    entrypoint: str | None = None
    hostname: str | None = None
    init: bool = False
    cap_add: list[str] = field(default_factory=list)
    cap_drop: list[str] = field(default_factory=list)
    security_opt: list[str] = field(default_factory=list)
    privileged: bool = False
    network: str | None = None
    volume: list[str] = field(default_factory=list)
    mount: list[str] = field(default_factory=list)
    tmpfs: list[str] = field(default_factory=list)
    read_only: bool = False
    read_only_tmpfs: bool = True
    pull: str = "missing"
    storage_driver: str | None = None
    platform: str | None = None
    userns: str | None = None
    publish: list[str] = field(default_factory=list)
    publish_all: bool = False
    dns: list[str] = field(default_factory=list)
    dns_search: list[str] = field(default_factory=list)
    dns_option: list[str] = field(default_factory=list)
    add_host: list[str] = field(default_factory=list)
    # the global options before `run`
    log_level: str = "warn"
    root: str | None = None
    runroot: str | None = None


def _set(args: RunArgs, name: str, value: str) -> None:
    if name in _LISTS:
        getattr(args, name).append(value)
    else:
        setattr(args, name, value)


def parse(argv: list[str]) -> RunArgs | None:
    """The parsed command line when it is a `run` this parser fully understands, else None."""
    args = RunArgs()
    i = 0
    # global options, then the command name
    while i < len(argv):
        a = argv[i]
        if a == "run":
            i += 1
            break
        opt, eq, val = a.partition("=")
        if opt not in _GLOBALS:
            return None
        if not eq:
            if i + 1 >= len(argv):
                return None
            val = argv[i + 1]
            i += 1
        setattr(args, _GLOBALS[opt], val)
        i += 1
    else:
        return None
    if args.log_level.lower() not in _LOG_LEVELS:
        return None
    args.log_level = args.log_level.lower()
    # run's options up to the image; everything after the image belongs to the command
    while i < len(argv):
        a = argv[i]
        i += 1
        if a == "--":
            if i >= len(argv):
                return None
            args.image, args.command = argv[i], argv[i + 1:]
            break
        if a.startswith("--"):
            opt, eq, val = a.partition("=")
            if opt in _FLAGS and not eq:
                name, value = _FLAGS[opt]
                setattr(args, name, value)
            elif opt in _VALUES:
                if not eq:
                    if i >= len(argv):
                        return None
                    val = argv[i]
                    i += 1
                _set(args, _VALUES[opt], val)
            else:
                return None
        elif a.startswith("-") and len(a) > 1:
            j = 1
            while j < len(a):
                opt = "-" + a[j]
                j += 1
                if opt in _FLAGS:
                    name, value = _FLAGS[opt]
                    setattr(args, name, value)
                elif opt in _VALUES:
                    if j < len(a):
                        val = a[j:]
                    elif i < len(argv):
                        val = argv[i]
                        i += 1
                    else:
                        return None
                    _set(args, _VALUES[opt], val)
                    break
                else:
                    return None
        else:
            args.image, args.command = a, argv[i:]
            break
    if not args.image:
        return None
    if args.pull.lower() not in _PULL:
        return None
    args.pull = args.pull.lower()
    return args
