"""`rootless [GLOBAL OPTIONS] run ...` parsed without typer, for the start-up budget.

Building typer's command tree and its per-parameter adapters costs more than starting a
container (typer 0.29 imports pydantic for them). ``parse`` accepts exactly the syntax the
typer ``run`` command accepts (click's rules: clustered short flags, ``--opt=value``,
options before the image, everything after the image passed through) and returns None for
anything else (``--help``, an unknown or malformed option, a missing image) so typer
handles it, with its own messages. tests/unit/test_runargs.py holds the two in step.
"""

from __future__ import annotations

from collections.abc import Collection

from rootless.record import dataclass, field

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
    "-m": "memory", "--memory": "memory", "--memory-swap": "memory_swap",
    "--memory-reservation": "memory_reservation", "--cpus": "cpus", "-c": "cpu_shares",
    "--cpu-shares": "cpu_shares", "--cpu-quota": "cpu_quota", "--cpu-period": "cpu_period",
    "--cpuset-cpus": "cpuset_cpus", "--pids-limit": "pids_limit", "--oom-score-adj": "oom_score_adj",
    "--cgroups": "cgroups",
}
_LISTS = {"env", "env_file", "cap_add", "cap_drop", "security_opt", "volume", "mount", "tmpfs", "publish", "dns",
          "dns_search", "dns_option", "add_host"}
_GLOBALS = {"--log-level": "log_level", "--root": "root", "--runroot": "runroot",
            "--cgroup-manager": "cgroup_manager"}
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
    memory: str | None = None
    memory_swap: str | None = None
    memory_reservation: str | None = None
    cpus: str | None = None
    cpu_shares: str | None = None
    cpu_quota: str | None = None
    cpu_period: str | None = None
    cpuset_cpus: str | None = None
    pids_limit: str | None = None
    oom_score_adj: str | None = None
    cgroups: str | None = None
    # the global options before `run`
    log_level: str = "warn"
    root: str | None = None
    runroot: str | None = None
    cgroup_manager: str | None = None


def _set(args: RunArgs, name: str, value: str) -> None:
    if name in _LISTS:
        getattr(args, name).append(value)
    else:
        setattr(args, name, value)


def scan_globals(argv: list[str], commands: Collection[str]) -> tuple[dict[str, str], int] | None:
    """The global options before the first of ``commands`` (field → value, log level checked
    and lower-cased) and that command's index; None for anything else."""
    glob: dict[str, str] = {}
    i = 0
    while i < len(argv) and argv[i] not in commands:
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
    glob["log_level"] = level
    return glob, i


def scan_options(argv: list[str], i: int, flags: Collection[str], values: Collection[str]
                 ) -> tuple[list[tuple[str, str | None]], list[str]] | None:
    """A command's options from ``argv[i]`` on, by click's rules (clustered short flags,
    ``-ovalue``, ``--opt=value``, ``--`` ends them): the options in order, with None for a
    flag, and the first positional argument with everything after it. None for an unknown
    option, a flag given a value, or a missing value."""
    opts: list[tuple[str, str | None]] = []
    while i < len(argv):
        a = argv[i]
        i += 1
        if a == "--":
            return opts, argv[i:]
        if a.startswith("--"):
            opt, eq, val = a.partition("=")
            if opt in flags and not eq:
                opts.append((opt, None))
            elif opt in values:
                if not eq:
                    if i >= len(argv):
                        return None
                    val = argv[i]
                    i += 1
                opts.append((opt, val))
            else:
                return None
        elif a.startswith("-") and len(a) > 1:
            j = 1
            while j < len(a):
                opt = "-" + a[j]
                j += 1
                if opt in flags:
                    opts.append((opt, None))
                elif opt in values:
                    if j < len(a):
                        val = a[j:]
                    elif i < len(argv):
                        val = argv[i]
                        i += 1
                    else:
                        return None
                    opts.append((opt, val))
                    break
                else:
                    return None
        else:
            return opts, argv[i - 1:]
    return opts, []


def parse(argv: list[str]) -> RunArgs | None:
    """The parsed command line when it is a `run` this parser fully understands, else None."""
    found = scan_globals(argv, ("run",))
    if found is None:
        return None
    glob, i = found
    scanned = scan_options(argv, i + 1, _FLAGS, _VALUES)
    if scanned is None:
        return None
    opts, rest = scanned
    if not rest:
        return None  # run's options up to the image; everything after it belongs to the command
    args = RunArgs(image=rest[0], command=rest[1:], log_level=glob["log_level"], root=glob.get("root"),
                   runroot=glob.get("runroot"), cgroup_manager=glob.get("cgroup_manager"))
    for opt, val in opts:
        if val is None:
            name, value = _FLAGS[opt]
            setattr(args, name, value)
        else:
            _set(args, _VALUES[opt], val)
    if args.pull.lower() not in _PULL:
        return None
    args.pull = args.pull.lower()
    return args
