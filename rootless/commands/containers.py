"""Container commands: run, create, start, stop, kill, restart, rm, wait, ps, stats, logs, exec, inspect,
port, cp, container prune. Each renders what rootless.engine and rootless.lifecycle return."""

from __future__ import annotations

import sys

from rootless.errors import EXIT_TOOL, RootlessError
from rootless.options import Args, Table, UsageError, always, arg, flag, value

TYPE_CHECKING = False  # typing stays off the start-up path (`rootless --help` would import it)
if TYPE_CHECKING:
    from typing import Any

    from rootless.context import Context
    from rootless.image.specgen import RunOptions
    from rootless.lifecycle import LogLine

table = Table()
table.group("container", "Manage containers.")

FORMAT = value("--format", default="table", help="table, json, or a Go template (`{{.Names}}`; `table {{.ID}}\\t"
               "{{.Names}}` prints headers).")

# `run` and `create`: each dest is a field of specgen.RunOptions, except RUN_ONLY's
RUN_OPTIONS = (
    flag("--rm", help="Remove the container's layer when it exits."),
    flag("-d", "--detach", help="Run in the background under a monitor and print the container ID."),
    value("--name", help="Container name (default: a generated adjective_noun)."),
    flag("-i", "--interactive", help="Keep standard input open."),
    flag("-t", "--tty", help="Allocate a pseudo-terminal."),
    value("-e", "--env", many=True, help="Set KEY=VALUE; KEY alone takes the host's value; KEY* takes every "
          "match."),
    value("--env-file", dest="env_files", many=True, complete="file", help="Read KEY=VALUE lines from a file."),
    value("-w", "--workdir", help="Working directory inside the container."),
    value("-u", "--user", help="USER[:GROUP], names or numbers, resolved in the container's /etc/passwd and "
          "/etc/group."),
    value("--entrypoint", help="Override the image's Entrypoint (a program, or a JSON array); drops its Cmd."),
    value("--hostname", help="Container host name (default: the short ID)."),
    flag("--init", help="Run a reaping PID 1 that forwards signals to the command."),
    value("--cap-add", many=True, help="Add a capability (or ALL)."),
    value("--cap-drop", many=True, help="Drop a capability (or ALL)."),
    value("--security-opt", many=True, help="no-new-privileges; seccomp=unconfined or seccomp=PROFILE.json."),
    flag("--privileged", help="All capabilities of the user namespace, no masked or read-only paths."),
    value("--network", "--net", dest="networks", many=True, help="slirp4netns[:mtu=N,cidr=CIDR,"
          "allow_host_loopback=true,enable_ipv6=true,outbound_addr=IP] (the default), none, host, "
          "container:NAME (that container's), or a user network's name (repeatable)."),
    value("--network-alias", many=True, help="Another name of the container on its user networks."),
    value("--ip", help="The container's address on its (first) user network."),
    value("-p", "--publish", many=True, help="Publish a port: [IP:][HOST-PORT:]CONTAINER-PORT[/tcp|udp]; "
          "ranges FIRST-LAST."),
    flag("-P", "--publish-all", help="Publish the image's exposed ports on free host ports."),
    value("--dns", many=True, help="DNS server for the container's /etc/resolv.conf."),
    value("--dns-search", many=True, help="DNS search domain ('.' for none)."),
    value("--dns-option", many=True, help="resolv.conf(5) option."),
    value("--add-host", many=True, help="Add NAME:IP to /etc/hosts."),
    value("-v", "--volume", dest="volumes", many=True, help="Mount a volume or host path: "
          "NAME|HOST-PATH:CONTAINER-PATH[:ro|rw,...], or CONTAINER-PATH for an anonymous volume."),
    value("--mount", dest="mounts", many=True, help="type=bind|volume|tmpfs,source=...,target=...[,ro]."),
    value("--tmpfs", many=True, help="Mount a tmpfs: CONTAINER-PATH[:OPTIONS]."),
    flag("--read-only", help="Mount the rootfs read-only (/run, /tmp and /var/tmp stay writable tmpfs)."),
    flag("--read-only-tmpfs", default=True, negate="--no-read-only-tmpfs",
         help="With --read-only, mount tmpfs on /run, /tmp and /var/tmp."),
    value("--pull", default="missing", choices=("missing", "always", "never"), lower=True,
          help="Pull the image: missing, always or never."),
    value("--storage-driver", help="overlay, fuse-overlayfs or vfs (default: config, else probed once)."),
    value("--platform", help="OS/ARCH[/VARIANT] to pull."),
    value("--userns", help="keep-id: your uid and gid keep their numbers inside."),
    value("-m", "--memory", help="Memory limit (512m, 1g; at least 6m)."),
    value("--memory-swap", help="Memory plus swap limit (-1: unlimited swap; default: as much swap as memory)."),
    value("--memory-reservation", help="Memory soft limit (memory.low)."),
    value("--cpus", help="CPUs to use at most (1.5)."),
    value("-c", "--cpu-shares", help="Relative CPU weight (default 1024)."),
    value("--cpu-quota", help="CPU microseconds per period."),
    value("--cpu-period", help="CPU period in microseconds (default 100000)."),
    value("--cpuset-cpus", help="CPUs to run on (0-2,4)."),
    value("--pids-limit", help="Process limit (-1: unlimited)."),
    value("--oom-score-adj", help="OOM score adjustment (-1000 to 1000; only raising it needs no privilege)."),
    value("--cgroups", help="enabled (a cgroup of its own when the host can give one) or disabled."),
    value("-l", "--label", many=True, help="Set a label KEY=VALUE."),
    value("--label-file", many=True, complete="file", help="Read KEY=VALUE labels from a file."),
    value("--restart", help="no, on-failure[:N], always or unless-stopped (with -d)."),
    value("--health-cmd", help="Health check command (a shell line, or a JSON array; none: the image's is off)."),
    value("--health-interval", help="Time between checks (30s; disable: no checks on a timer)."),
    value("--health-retries", help="Failures in a row that make it unhealthy (3)."),
    value("--health-start-period", help="Time after start when failures do not count (0s)."),
    value("--health-timeout", help="Time a check may take (30s)."),
    value("--health-on-failure", help="none, kill, restart or stop when unhealthy."),
    value("--cidfile", complete="file", help="Write the container ID to this file."),
    flag("--replace", help="Remove a container of the same --name first."),
    flag("--rmi", help="Remove the image too when the container exits (implies --rm)."),
    value("--stop-signal", help="Signal for `stop` (default: the image's, else SIGTERM)."),
    value("--stop-timeout", help="Seconds `stop` waits before SIGKILL (10)."),
    value("--tz", help="Time zone: an IANA name (Europe/Paris), or local (the host's)."),
    value("--umask", help="The command's umask, octal (0022)."),
    value("--expose", many=True, help="Expose PORT[/PROTO] (or a range) for -P."),
    value("--log-driver", help="k8s-file (the default), none or passthrough."),
    value("--log-opt", many=True, help="max-size=SIZE: rotate the log there."),
    value("--group-add", many=True, help="Add a supplementary group (a number)."),
    value("--shm-size", help="Size of /dev/shm (64m)."),
    value("-a", "--attach", many=True, help="Attach to STDIN, STDOUT or STDERR only (repeatable)."),
    value("--device", many=True, complete="file", help="Add a host device the user may open: "
          "HOST[:CONTAINER][:PERMISSIONS]."),
    value("--uts", help="host: share the host's UTS namespace (its host name); container:NAME: that "
          "container's; private (the default)."),
    value("--pid", help="host: share the host's PID namespace (its processes); container:NAME: that "
          "container's; private (the default)."),
    value("--ipc", help="private (the default); container:NAME: that container's (host is not supported "
          "rootless)."),
    flag("--sig-proxy", default=True, help="Pass the signals rootless receives to the container; =false "
         "(without -t): the container runs under its own monitor, a signal ends rootless only."),
    value("--ulimit", many=True, help="NAME=SOFT[:HARD] resource limit (nofile=1024:2048), or host."),
    value("--sysctl", many=True, help="Namespaced sysctl KEY=VALUE (net.*, kernel.shm*, kernel.msg*, kernel.sem, "
          "fs.mqueue.*)."),
)
# what the engine takes beside RunOptions (or, for -d, which engine call)
RUN_ONLY = ("detach", "pull", "storage_driver", "platform", "help")
RUN_ARGS = (arg("IMAGE", help="Image to run (name, name:tag, name@digest or ID).", complete="image"),
            arg("COMMAND", many=True, optional=True, help="Command and arguments (default: the image's "
                "Entrypoint and Cmd)."))


def run_options(a: Args) -> RunOptions:
    """The engine's typed input from a parsed `run` or `create`."""
    from rootless.image.specgen import RunOptions

    kw = {o.dest: getattr(a, o.dest) for o in RUN_OPTIONS if o.dest not in RUN_ONLY}
    kw["network"] = kw["networks"][-1] if kw["networks"] else ""  # "": the config's
    return RunOptions(image=a.image, command=a.command, **kw)


@table.command("run", "Run a command in a new container, as `podman run` does (rootless).",
               args=RUN_ARGS, options=RUN_OPTIONS, interspersed=False, quick_exit=lambda a: not a.detach)
def run(ctx: Context, a: Args) -> int:
    from rootless import engine

    if a.detach:
        print(engine.run_detached(ctx, run_options(a), pull=a.pull, platform=a.platform,
                                  storage_driver=a.storage_driver), flush=True)
        return 0
    if not a.sig_proxy and not a.tty:
        return _run_unproxied(ctx, a)
    return engine.run(ctx, run_options(a), pull=a.pull, platform=a.platform, storage_driver=a.storage_driver)


def _run_unproxied(ctx: Context, a: Args) -> int:
    """`run --sig-proxy=false`: the container runs under a monitor of its own, as `run -d` makes
    it (reading our standard input with -i); we follow its output and exit with its status. A
    signal ends us only and the container goes on, as under Podman (whose conmon keeps it);
    with -t the terminal carries Ctrl-C and the flag changes nothing (Docker: non-TTY only)."""
    import time

    from rootless import engine

    since = time.time()
    cid = engine.run_detached(ctx, run_options(a), pull=a.pull, platform=a.platform,
                              storage_driver=a.storage_driver, stdin=0 if a.interactive else None)
    engine.attached(ctx, cid)
    print_logs(engine.logs(ctx, cid, follow=True, since=since - 0.001), False)
    code = engine.exit_code(ctx, cid)
    return EXIT_TOOL if code is None else code


@table.command("create", "Create a container without starting it, as `podman create` does; print its ID.",
               args=RUN_ARGS, options=[o for o in RUN_OPTIONS if o.dest != "detach"], interspersed=False)
def create(ctx: Context, a: Args) -> int:
    from rootless import engine

    made = engine.create(ctx, run_options(a), pull=a.pull, platform=a.platform, storage_driver=a.storage_driver)
    print(made.id, flush=True)
    return 0


def _containers(help: str, optional: bool = True) -> list[Any]:  # noqa: A002
    return [arg("CONTAINER", many=True, optional=optional, help=help, complete="container")]


@table.command("start", "Start created or stopped containers under a monitor, as `podman start` does.",
               args=_containers("Containers to start (names, IDs or ID prefixes)."),
               options=[flag("-a", "--attach", help="Follow the container's output and exit with its status; a "
                             "container made with -i reads this standard input, one made with -t gets this "
                             "terminal."),
                        flag("--all", help="Start every container that is not running.")])
def start(ctx: Context, a: Args) -> int:
    from rootless import engine
    from rootless.commands.many import each

    if a.all:
        if a.container or a.attach:
            raise UsageError("Invalid value: --all takes no container names and no --attach")
        return each(ctx, [c.id for c in engine.containers(ctx) if not c.state.running], engine.start)
    if not a.container:
        raise UsageError("Invalid value: give at least one container name or ID, or --all")
    if a.attach:
        if len(a.container) != 1:
            raise UsageError("Invalid value: --attach takes exactly one container")
        import time

        cid = engine.resolve(ctx, a.container[0])
        if engine.container(ctx, cid).config.spec.process.terminal:
            return _start_terminal(ctx, cid)
        since = time.time()
        engine.start(ctx, cid, stdin=0)  # a container made with -i reads ours, as under Podman
        engine.attached(ctx, cid)
        print_logs(engine.logs(ctx, cid, follow=True, since=since - 0.001), False)
        code = engine.wait(ctx, cid)
        return EXIT_TOOL if code is None else code
    return each(ctx, list(a.container), engine.start)


def _start_terminal(ctx: Context, cid: str) -> int:
    """`start -a` of a container made with -t: its terminal, relayed by its monitor over a socket
    pair, on ours (in raw mode when it reads our keys: made with -i and we are on a terminal)."""
    import os
    import socket

    from rootless import engine
    from rootless.runtime import tty

    interactive = engine.container(ctx, cid).config.spec.process.interactive
    src = tty.terminal_size_source()
    ours, theirs = socket.socketpair()
    with ours:
        try:
            engine.start(ctx, cid, terminal=theirs.fileno(), winsize=tty.get_winsize(src) if src is not None else None)
        finally:
            theirs.close()
        sys.stdout.flush()
        if interactive and os.isatty(0):
            with tty.raw_mode(0):
                tty.relay_attached(ours.fileno(), interactive=True)
        else:
            tty.relay_attached(ours.fileno(), interactive=interactive)
    code = engine.wait(ctx, cid)
    return EXIT_TOOL if code is None else code


@table.command("stop", "Stop containers: the image's stop signal (SIGTERM), then SIGKILL after the timeout.",
               args=_containers("Containers to stop."),
               options=[value("-t", "--time", type=int, help="Seconds to wait after the stop signal before "
                              "SIGKILL (default 10)."),
                        flag("-a", "--all", help="Stop every running container.")])
def stop(ctx: Context, a: Args) -> int:
    from rootless import engine
    from rootless.commands.many import each, refs

    return each(ctx, refs(ctx, a, running_only=True), lambda ctx, ref: engine.stop(ctx, ref, a.time))


@table.command("kill", "Send a signal to the main process of running containers (default SIGKILL).",
               args=_containers("Containers to signal."),
               options=[value("-s", "--signal", default="KILL", help="Signal to send, by name or number."),
                        flag("-a", "--all", help="Signal every running container.")])
def kill(ctx: Context, a: Args) -> int:
    from rootless import engine, lifecycle
    from rootless.commands.many import each, refs

    n = lifecycle.parse_signal(a.signal)
    return each(ctx, refs(ctx, a, running_only=True), lambda ctx, ref: engine.kill(ctx, ref, n))


@table.command("restart", "Stop (if running) and start containers again.",
               args=_containers("Containers to restart."),
               options=[value("-t", "--time", type=int, help="Seconds to wait before SIGKILL when stopping "
                              "(default 10)."),
                        flag("-a", "--all", help="Restart every container.")])
def restart(ctx: Context, a: Args) -> int:
    from rootless import engine
    from rootless.commands.many import each, refs

    return each(ctx, refs(ctx, a), lambda ctx, ref: engine.restart(ctx, ref, a.time))


@table.command("rm", "Remove containers: their layer in the store, their state and log (exit 1: no such "
               "container, 2: running without --force).",
               args=_containers("Containers to remove."),
               options=[flag("-f", "--force", help="Kill running containers first (SIGKILL)."),
                        flag("-a", "--all", help="Remove every container."),
                        flag("-v", "--volumes", help="Remove the container's anonymous volumes too."),
                        value("-t", "--time", type=int, help="With --force: seconds to wait after the stop signal "
                              "before SIGKILL (default: SIGKILL at once)."),
                        flag("-i", "--ignore", help="A container that does not exist is no error.")],
               quick_exit=always)
def rm(ctx: Context, a: Args) -> int:
    from rootless import engine
    from rootless.commands.many import each, refs

    def one(ctx: Context, ref: str) -> None:
        anonymous: list[str] = []
        if a.volumes:
            from rootless import volumes

            try:
                anonymous = volumes.anonymous_in(ctx, engine.container(ctx, ref).config.spec)
            except RootlessError:
                pass
        if a.force and a.time:
            engine.stop(ctx, ref, a.time)
        engine.remove(ctx, ref, force=a.force)
        if anonymous:
            volumes.discard(ctx, anonymous)

    # Podman: a container that does not exist is an error (exit 1), but not with --force or --ignore;
    # with --all, one that removes itself meanwhile (run --rm) is none either
    return each(ctx, refs(ctx, a), one, missing_code=0 if a.force or a.ignore or a.all else 1)


@table.command("wait", "Wait until containers stop (or reach a --condition); print each one's exit code.",
               args=_containers("Containers to wait for.", optional=False),
               options=[value("--condition", many=True, help="Wait for this state: stopped (the default), exited, "
                              "running, created, paused, healthy, unhealthy (repeatable: any)."),
                        value("-i", "--interval", default="250ms", help="How often to look (250ms, 1s).")])
def wait(ctx: Context, a: Args) -> int:
    import time

    from rootless import engine, lifecycle
    from rootless.commands.many import each
    conds = set(a.condition or ["stopped"])
    bad = conds - lifecycle.WAIT_CONDITIONS
    if bad:
        raise RootlessError(f"--condition {sorted(bad)[0]!r}: not a container state",
                            hint=f"one of {', '.join(sorted(lifecycle.WAIT_CONDITIONS))}")
    every = lifecycle.parse_duration(a.interval, "--interval")

    def one(ctx: Context, ref: str) -> None:
        if conds <= {"stopped", "exited"}:
            print(engine.wait(ctx, ref))
            return
        while not lifecycle.reached(engine.container(ctx, ref), conds):
            time.sleep(every)
        c = engine.container(ctx, ref)
        print(c.state.exit_code if not c.state.running else -1)

    return each(ctx, list(a.container), one, echo=False)


# --------------------------------------------------------------------------- views

@table.command("ps", "List containers, as `podman ps` does.",
               options=[flag("-a", "--all", help="Show every container, not only running ones."),
                        flag("-q", "--quiet", help="Print only container IDs."),
                        value("-f", "--filter", many=True, help="status=STATUS, name=REGEX, id=PREFIX, "
                              "label=KEY[=VALUE], ancestor=IMAGE or exited=CODE (repeatable)."),
                        FORMAT, flag("--no-trunc", help="Do not truncate IDs and commands."),
                        flag("--external", help="Also list containers made outside rootless's records (build "
                             "containers: there are none).")],
               aliases=["container ls"], hidden_aliases=["container list", "container ps"], quick_exit=always)
def ps(ctx: Context, a: Args) -> int:
    import time

    from rootless import engine
    from rootless.commands import psview
    from rootless.commands.images import echo_json, print_table

    rows = engine.containers(ctx, all_=a.all, filters=a.filter)
    if a.format == "json":
        echo_json([psview.ps_json(c) for c in rows])
    elif a.quiet:
        sys.stdout.write("".join((c.id if a.no_trunc else c.id[:12]) + "\n" for c in rows))
    elif a.format != "table":
        from rootless import gotemplate

        now = time.time()
        sys.stdout.write(gotemplate.render("ps", a.format, [psview.ps_row(c, now, a.no_trunc) for c in rows],
                                           psview.PS_HEADERS))
    else:
        print_table(psview.ps_table(rows, time.time(), a.no_trunc))
    return 0


@table.command("stats", "Show containers' CPU, memory, block I/O and process counts, read from their cgroups.",
               args=_containers("Containers (default: every running one)."),
               options=[flag("-a", "--all", help="Every container, not only running ones."),
                        flag("--no-stream", help="Print one sample and exit."), FORMAT,
                        value("-i", "--interval", type=int, default=5, min=1, help="Seconds between samples."),
                        flag("--no-reset", help="Do not clear the terminal between samples.")])
def stats(ctx: Context, a: Args) -> int:
    import json
    import time

    from rootless import lifecycle
    from rootless.commands import psview

    names = list(a.container)
    before: dict[str, Any] = {}
    clear = sys.stdout.isatty() and not a.no_reset and not a.no_stream
    first = True
    while True:
        rows = []
        targets = lifecycle.stats_targets(ctx, names, a.all, strict=first)
        if names and not targets:
            return 0  # every container named has ended
        first = False
        for c in targets:
            now = lifecycle.stats_sample(c)
            rows.append(psview.stats_row(c, now, before.get(c.id)))
            if now is not None:
                before[c.id] = now
        if a.format == "json":
            text = json.dumps(rows, indent=4)
        elif a.format != "table":
            from rootless import gotemplate

            text = gotemplate.render("stats", a.format, [psview.stats_view(r) for r in rows],
                                     psview.STATS_HEADERS).rstrip("\n")
        else:
            text = psview.stats_table(rows)
        if clear:
            sys.stdout.write("\033[H\033[2J")
        print(text)
        sys.stdout.flush()
        if a.no_stream:
            return 0
        time.sleep(a.interval)


def print_logs(lines: Any, timestamps: bool) -> None:
    out, err = sys.stdout.buffer, sys.stderr.buffer
    ln: LogLine
    for ln in lines:
        stream = err if ln.stream == "stderr" else out
        if timestamps:
            stream.write(ln.time.encode() + b" ")
        stream.write(ln.text + (b"" if ln.partial else b"\n"))
        stream.flush()


@table.command("logs", "Print a container's output (stdout to stdout, stderr to stderr).",
               args=[arg("CONTAINER", help="Container name or ID.", complete="container")],
               options=[flag("-f", "--follow", help="Keep printing new output until the container exits."),
                        value("--tail", type=int, help="Only the last N lines."),
                        value("--since", help="Only lines since a time: RFC 3339, Unix time, or a duration "
                              "before now (10m)."),
                        flag("-t", "--timestamps", help="Prefix each line with its time.")], quick_exit=always)
def logs(ctx: Context, a: Args) -> int:
    import time

    from rootless import engine, lifecycle

    t = lifecycle.parse_since(a.since, time.time()) if a.since else None
    print_logs(engine.logs(ctx, a.container, follow=a.follow, tail=a.tail, since=t), a.timestamps)
    return 0


@table.command("exec", "Run a command in a running container (its namespaces and root); exit with its status.",
               args=[arg("CONTAINER", help="Container name or ID.", complete="container"),
                     arg("COMMAND", many=True, help="Command and arguments.")],
               options=[flag("-i", "--interactive", help="Keep standard input open."),
                        flag("-t", "--tty", help="Allocate a pseudo-terminal."),
                        value("-e", "--env", many=True, help="Set KEY=VALUE (KEY alone: the host's value)."),
                        value("-w", "--workdir", help="Working directory inside the container."),
                        value("-u", "--user", help="USER[:GROUP], names or numbers.")],
               interspersed=False)
def exec_(ctx: Context, a: Args) -> int:
    from rootless import engine

    return engine.exec_(ctx, a.container, a.command, interactive=a.interactive, tty=a.tty, env=a.env,
                        workdir=a.workdir, user=a.user)


@table.command("inspect", "Print containers' details as a JSON array (Podman's main fields); a name that is "
               "no container is looked up as an image, as `podman inspect` does.",
               args=[arg("NAME", many=True, help="Containers (or images) to inspect.", complete="container")],
               options=[value("-f", "--format", help="json, or a Go template run once per object "
                              "(`{{.State.Pid}}`)."),
                        value("-t", "--type", default="all", choices=("all", "container", "image"),
                              help="container, image or all (default).")],
               aliases=["container inspect"], quick_exit=always)
def inspect(ctx: Context, a: Args) -> int:
    from rootless import engine
    from rootless.runtime.state import NoSuchContainer

    out = []
    errors: list[RootlessError] = []
    for ref in a.name:
        try:
            if a.type == "image":
                raise NoSuchContainer(ref)
            out.append(engine.inspect(ctx, ref))
        except NoSuchContainer as e:
            if a.type == "container":
                errors.append(e)
                continue
            from rootless.image import present

            data, missing = present.inspect(ctx, [ref])
            out.extend(data)
            if missing:
                errors.append(RootlessError(f'no such object: "{ref}"', hint=e.hint))
        except RootlessError as e:
            errors.append(e)
    from rootless.commands.images import emit_objects

    emit_objects("inspect", a.format, out)
    if errors:
        raise errors[-1]
    return 0


@table.command("port", "List a container's published ports (container port -> host address).",
               args=[arg("CONTAINER", help="Container name or ID.", complete="container"),
                     arg("PRIVATE", optional=True, help="Only this container port: PORT[/PROTOCOL].")],
               quick_exit=always)
def port(ctx: Context, a: Args) -> int:
    from rootless import engine
    from rootless.commands import psview

    c = engine.container(ctx, a.container)
    lines = psview.ports(c)
    if a.private is not None:
        num, _, proto = a.private.partition("/")
        key = f"{num}/{proto or 'tcp'}"
        lines = [ln.split(" -> ", 1)[1] for ln in lines if ln.startswith(key + " ")]
        if not lines:
            raise RootlessError(f"container {c.config.name} publishes no port {key}")
    for ln in lines:
        print(ln)
    return 0


@table.command("cp", "Copy files between a container (running or not) and the host, keeping modes.",
               args=[arg("SRC", help="Host path or CONTAINER:PATH.", complete="file"),
                     arg("DEST", help="Host path or CONTAINER:PATH.", complete="file")])
def cp(ctx: Context, a: Args) -> int:
    from rootless import engine

    engine.copy(ctx, a.src, a.dest)
    return 0


@table.command("container prune", "Remove every container that is not running; print their IDs.",
               options=[flag("-f", "--force", help="Do not ask for confirmation (there is no prompt: accepted "
                             "for Podman's syntax).")])
def container_prune(ctx: Context, a: Args) -> int:
    from rootless import engine

    for cid in engine.prune(ctx):
        print(cid)
    return 0


# `podman container …` spellings of the top-level container commands (documented on their pages)
for _c in table.commands:
    if _c.path in (("run",), ("start",), ("stop",), ("kill",), ("restart",), ("rm",), ("wait",),
                   ("stats",), ("logs",), ("exec",), ("port",), ("cp",)):
        _c.aliases += (("container", *_c.path),)
