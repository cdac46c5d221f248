"""The everyday commands scripts use beside the core ones: version, events, rename, pause, unpause,
top, diff, healthcheck run, container exists, image exists."""

from __future__ import annotations

import sys

from rootless.errors import RootlessError
from rootless.options import Args, Table, arg, flag, value

TYPE_CHECKING = False  # typing stays off the start-up path (`rootless --help` would import it)
if TYPE_CHECKING:
    from typing import Any

    from rootless.context import Context
    from rootless.options import Arg

table = Table()
table.group("healthcheck", "Run containers' health checks.")


def _container(help: str = "Container name or ID.") -> list[Arg]:  # noqa: A002
    return [arg("CONTAINER", help=help, complete="container")]


@table.command("version", "Print the version of rootless and the Podman API it follows; with a `rootless system "
               "service` listening (its default socket, or CONTAINER_HOST=unix://PATH), the server's too.",
               options=[value("-f", "--format", help="json, or a Go template (`{{.Client.Version}}`, "
                              "`{{.Server.Version}}`).")])
def version(ctx: Context, a: Args) -> int:
    from rootless import views

    data = views.version_data()
    server = _server_version(ctx)
    if server is not None:
        data["Server"] = server
    if a.format == "json":
        import json

        print(json.dumps(data, indent=4))
    elif a.format:
        from rootless import gotemplate

        # as Podman's: without a server the local engine answers for it ({{.Server.Version}})
        views.emit(gotemplate.render_one("version", a.format, {"Server": data["Client"], **data}))
    else:
        print(views.version_text(data))
    return 0


def _server_version(ctx: Context) -> dict[str, Any] | None:
    """The Server part of `version`, from GET /version of the REST API service (rootless system
    service) on CONTAINER_HOST's unix socket, else on its default one; None when none answers."""
    import json
    import os
    import socket

    host = os.environ.get("CONTAINER_HOST", "")
    if host and not host.startswith("unix://"):
        raise RootlessError(f"CONTAINER_HOST={host}: only unix:// sockets are served",
                            hint="e.g. CONTAINER_HOST=unix://$XDG_RUNTIME_DIR/rootless/rootless.sock")
    path = host.removeprefix("unix://") if host else str(ctx.layout.runroot / "rootless.sock")
    if not os.path.exists(path):
        if host:
            raise RootlessError(f"CONTAINER_HOST={host}: no such socket", hint="start `rootless system service` there")
        return None
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(5)
            sock.connect(path)
            sock.sendall(b"GET /version HTTP/1.1\r\nHost: d\r\nConnection: close\r\n\r\n")
            raw = b""
            while chunk := sock.recv(65536):
                raw += chunk
        head, _, body = raw.partition(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 200"):
            raise ValueError(head.split(b"\r\n", 1)[0].decode(errors="replace"))
        v = json.loads(body)
    except (OSError, ValueError) as e:
        if host:
            raise RootlessError(f"CONTAINER_HOST={host}: {e}", hint="is `rootless system service` running?") from None
        return None  # a stale socket of a service that is gone
    return {"APIVersion": v.get("ApiVersion", ""), "Version": v.get("Version", ""), "GoVersion": v.get("GoVersion", ""),
            "GitCommit": v.get("GitCommit", ""), "BuiltTime": v.get("BuildTime", ""), "Built": 0,
            "OsArch": f"{v.get('Os', '')}/{v.get('Arch', '')}", "Os": v.get("Os", "")}


@table.command("events", "Show the events log: containers created, started, died, removed; images pulled, "
               "tagged, removed.",
               options=[value("--since", help="Only events since a time: RFC 3339, Unix time, or a duration "
                              "before now (10m)."),
                        value("--until", help="Only events until a time (same forms); streaming stops then."),
                        value("-f", "--filter", many=True, help="type=, event=, container=, image=, "
                              "label=KEY[=VALUE] (repeatable)."),
                        value("--format", help="json (a JSON object a line), or a Go template "
                              "(`{{.Status}} {{.Name}}`)."),
                        flag("--stream", default=True, help="--stream=false: print the logged events and exit "
                             "(default: keep printing new ones).")])
def events(ctx: Context, a: Args) -> int:
    import time

    from rootless import events as ev_log
    from rootless import lifecycle

    now = time.time()
    t0 = lifecycle.parse_since(a.since, now) if a.since else None
    t1 = lifecycle.parse_since(a.until, now) if a.until else None
    keep = ev_log.Filter(list(a.filter))
    template = None
    if a.format and a.format != "json":
        from rootless import gotemplate

        template, _ = gotemplate.parse("events", a.format)
    follow = a.stream and (t1 is None or t1 > now)
    source = ev_log.follow(ctx.layout, since=t0, until=t1, keep=keep) if follow else \
        ev_log.read(ctx.layout, since=t0, until=t1, keep=keep)
    for ev in source:
        if a.format == "json":
            line = ev_log.json_line(ev) + "\n"
        elif template is not None:
            line = template.execute(ev_log.template_view(ev))
        else:
            line = ev_log.human(ev) + "\n"
        sys.stdout.write(line)
        sys.stdout.flush()
    return 0


@table.command("rename", "Rename a container (running or not).",
               args=[arg("CONTAINER", help="Container name or ID.", complete="container"),
                     arg("NAME", help="Its new name.")],
               aliases=["container rename"])
def rename(ctx: Context, a: Args) -> int:
    from rootless import lifecycle

    lifecycle.rename(ctx, lifecycle.resolve(ctx, a.container), a.name)
    return 0


def _pause(ctx: Context, a: Args, frozen: bool) -> int:
    from rootless import lifecycle
    from rootless.commands.many import each, refs

    return each(ctx, refs(ctx, a, running_only=True),
                lambda ctx, ref: lifecycle.pause(ctx, lifecycle.resolve(ctx, ref), frozen))


@table.command("pause", "Freeze every process of running containers (the cgroup v2 freezer).",
               args=[arg("CONTAINER", many=True, optional=True, help="Containers to pause.", complete="container")],
               options=[flag("-a", "--all", help="Pause every running container.")],
               aliases=["container pause"])
def pause(ctx: Context, a: Args) -> int:
    return _pause(ctx, a, True)


@table.command("unpause", "Thaw paused containers.",
               args=[arg("CONTAINER", many=True, optional=True, help="Containers to unpause.",
                         complete="container")],
               options=[flag("-a", "--all", help="Unpause every paused container.")],
               aliases=["container unpause"])
def unpause(ctx: Context, a: Args) -> int:
    return _pause(ctx, a, False)


@table.command("top", "List the processes of a running container.",
               args=[arg("CONTAINER", help="Container name or ID.", complete="container"),
                     arg("DESCRIPTOR", many=True, optional=True, help="ps descriptors (user pid ppid pcpu etime tty "
                         "time args comm ...), or ps(1) options run by the container's own ps.")],
               aliases=["container top"], interspersed=False, unknown_as_args=True)
def top(ctx: Context, a: Args) -> int:
    from rootless import lifecycle

    cid = lifecycle.resolve(ctx, a.container)
    wanted = lifecycle.top_descriptors(list(a.descriptor))
    if wanted is None:  # ps(1) options: the container's ps reads its own /proc
        return lifecycle.exec_(ctx, cid, ["ps", *a.descriptor], interactive=False, tty=False, env=[],
                               workdir=None, user=None)
    rows = lifecycle.top(ctx, cid, wanted)
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip())
    return 0


@table.command("diff", "List the paths a container added (A), changed (C) or deleted (D) in its image.",
               args=_container(),
               options=[value("--format", help="json, or a Go template over .Kind and .Path.")],
               aliases=["container diff"])
def diff(ctx: Context, a: Args) -> int:
    from rootless import lifecycle

    found = lifecycle.diff(ctx, lifecycle.resolve(ctx, a.container))
    if a.format == "json":
        import json

        print(json.dumps({"changed": [p for k, p in found if k == "C"], "added": [p for k, p in found if k == "A"],
                          "deleted": [p for k, p in found if k == "D"]}, indent=4))
    elif a.format:
        from rootless import gotemplate

        sys.stdout.write(gotemplate.render("diff", a.format, [{"Kind": k, "Path": p} for k, p in found]))
    else:
        for k, p in found:
            print(f"{k} {p}")
    return 0


@table.command("healthcheck run", "Run a container's health check now: exit 0 when it passes, 1 (printing "
               "\"unhealthy\") when not.", args=_container())
def healthcheck_run(ctx: Context, a: Args) -> int:
    from rootless import lifecycle, supervise

    cid = lifecycle.resolve(ctx, a.container)
    c = lifecycle.load(ctx, cid)
    if not c.config.health:
        raise RootlessError(f"container {c.config.name} has no health check",
                            hint="create it with --health-cmd (or from an image with a HEALTHCHECK)")
    _, code = supervise.check_once(ctx, cid, c.state.started_at)
    if code != 0:
        print("unhealthy")
        return 1
    return 0


@table.command("container exists", "Exit 0 if the container exists, 1 if it does not (nothing is printed).",
               args=_container())
def container_exists(ctx: Context, a: Args) -> int:
    from rootless import lifecycle
    from rootless.runtime.state import NoSuchContainer

    try:
        lifecycle.resolve(ctx, a.container)
    except NoSuchContainer:
        return 1
    return 0


@table.command("image exists", "Exit 0 if the image is in the store, 1 if it is not (nothing is printed).",
               args=[arg("IMAGE", help="Image name or ID.", complete="image")])
def image_exists(ctx: Context, a: Args) -> int:
    from rootless.errors import NotFoundError
    from rootless.image import present

    try:
        present.find(ctx, a.image)
    except NotFoundError:
        return 1
    return 0


# --------------------------------------------------------------------------- system df, prune, reset

table.group("system", "Manage the store as a whole.")


def _df_rows(ctx: Context) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    from rootless import engine
    from rootless.units import decimal_size

    d = engine.disk_usage(ctx)
    images, ctrs, sizes, vols, vsizes, used = (d[k] for k in ("images", "containers", "sizes", "volumes", "vsizes",
                                                                "used"))
    img_size = sum(r.size for r in images)
    img_free = sum(r.size for r in images if r.id not in used)
    ctr_size = sum(sizes.values())
    ctr_free = sum(sizes[c.id] for c in ctrs if not c.state.running)
    vol_size = sum(vsizes.values())
    vol_free = sum(vsizes[v.name] for v, n in vols if n == 0)

    def row(kind: str, total: int, active: int, size: int, free: int) -> dict[str, Any]:
        pct = f"{free * 100 // size}%" if size else "0%"
        return {"Type": kind, "Total": total, "Active": active, "Size": decimal_size(size, ".4g", ""),
                "Reclaimable": f"{decimal_size(free, '.4g', '')} ({pct})", "RawSize": size, "RawReclaimable": free}

    rows = [row("Images", len(images), len({r.id for r in images} & used), img_size, img_free),
            row("Containers", len(ctrs), sum(1 for c in ctrs if c.state.running), ctr_size, ctr_free),
            row("Local Volumes", len(vols), sum(1 for _, n in vols if n), vol_size, vol_free)]
    return rows, d


@table.command("system df", "Show how much space images, containers and volumes take, and how much is "
               "reclaimable.",
               options=[flag("-v", "--verbose", help="One line per image, container and volume."),
                        value("--format", help="json, or a Go template over .Type, .Total, .Active, .Size, "
                              ".Reclaimable.")])
def system_df(ctx: Context, a: Args) -> int:
    import time

    from rootless import lifecycle
    from rootless.commands import psview
    from rootless.commands.images import print_table
    from rootless.image import present
    from rootless.units import decimal_size

    rows, d = _df_rows(ctx)
    if a.format == "json":
        import json

        print(json.dumps([{k: v for k, v in r.items() if not k.startswith("Raw")} for r in rows], indent=4))
        return 0
    if a.format:
        from rootless import gotemplate

        sys.stdout.write(gotemplate.render("df", a.format, rows))
        return 0
    if not a.verbose:
        print_table([("TYPE", "TOTAL", "ACTIVE", "SIZE", "RECLAIMABLE")] +
                    [(str(r["Type"]), str(r["Total"]), str(r["Active"]), str(r["Size"]), str(r["Reclaimable"]))
                     for r in rows])
        return 0
    now = time.time()
    counts: dict[str, int] = {}
    for c in d["containers"]:
        counts[c.config.image_id] = counts.get(c.config.image_id, 0) + 1
    print("Images space usage:\n")
    grid: list[tuple[str, ...]] = [("REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE", "SHARED SIZE",
                                    "UNIQUE SIZE", "CONTAINERS")]
    for r in d["images"]:
        for name in r.names or ["<none>:<none>"]:
            repo, tag = present.split_name(name) if r.names else ("<none>", "<none>")
            grid.append((repo, tag, r.id[:12], present.ago(r.created), decimal_size(r.size, ".4g", ""), "0B",
                         decimal_size(r.size, ".4g", ""), str(counts.get(r.id, 0))))
    print_table(grid)
    print("\nContainers space usage:\n")
    grid = [("CONTAINER ID", "IMAGE", "COMMAND", "LOCAL VOLUMES", "SIZE", "CREATED", "STATUS", "NAMES")]
    for c in d["containers"]:
        grid.append((c.id[:12], c.config.image_id[:12], psview.ps_command(c, False),
                     str(len(c.config.spec.mounts and [m for m in c.config.spec.mounts if m.type == "bind"])),
                     decimal_size(d["sizes"][c.id], ".4g", ""),
                     lifecycle.ago(now - c.config.created), lifecycle.status_name(c.state), c.config.name))
    print_table(grid)
    print("\nLocal Volumes space usage:\n")
    grid = [("VOLUME NAME", "LINKS", "SIZE")]
    for v, n in d["volumes"]:
        grid.append((v.name, str(n), decimal_size(d["vsizes"][v.name], ".4g", "")))
    print_table(grid)
    return 0


def _confirm(what: str) -> bool:
    print(f"WARNING! This command removes:\n{what}\nAre you sure you want to continue? [y/N] ", end="",
          file=sys.stderr, flush=True)
    answer = sys.stdin.readline().strip().lower() if sys.stdin and not sys.stdin.closed else ""
    return answer in ("y", "yes")


@table.command("system prune", "Remove stopped containers, dangling images (all unused ones with -a) and, "
               "with --volumes, unused volumes.",
               options=[flag("-a", "--all", help="Remove all unused images, not only dangling ones."),
                        flag("--volumes", help="Remove unused volumes too."),
                        flag("-f", "--force", help="Do not ask for confirmation.")])
def system_prune(ctx: Context, a: Args) -> int:
    from rootless import engine, volumes
    from rootless.image import present

    if not a.force and not _confirm("  - all stopped containers\n" + ("  - all volumes not used by at least one "
                                    "container\n" if a.volumes else "") + ("  - all images without at least one "
                                    "container associated with them" if a.all else "  - all dangling images")):
        return 0
    print("Deleted Containers")
    for cid in engine.prune(ctx):
        print(cid)
    if a.volumes:
        print("Deleted Volumes")
        for name in volumes.prune(ctx):
            print(name)
    print("Deleted Images")
    used = {c.config.image_id for c in engine.containers(ctx)}
    gone = [r.id for r in engine.images(ctx) if r.id not in used and (a.all or not r.names)]
    if gone:
        report, _ = present.rmi(ctx, gone, force=True, all_=False)
        for is_error, line in report:
            if not is_error and line.startswith("Deleted: "):
                print(line.removeprefix("Deleted: "))
    return 0


@table.command("system reset", "Remove every container, image and volume of the store, and the events log.",
               options=[flag("-f", "--force", help="Do not ask for confirmation.")])
def system_reset(ctx: Context, a: Args) -> int:
    from rootless import engine, events, volumes
    from rootless.image import present

    if not a.force and not _confirm("  - all containers\n  - all images\n  - all volumes\n  - the events log"):
        return 0
    for c in engine.containers(ctx):
        engine.remove(ctx, c.id, force=True)
    for name in [v.name for v, _ in volumes.listing(ctx)]:
        volumes.remove(ctx, name, True)
    present.rmi(ctx, [], force=True, all_=True)
    for p in (events.log_path(ctx.layout), events.log_path(ctx.layout).with_name("events.log.1")):
        p.unlink(missing_ok=True)
    return 0


@table.command("image tree", "Show an image's layers as a tree (with --whatrequires, the images built on it).",
               args=[arg("IMAGE", help="Image name or ID.", complete="image")],
               options=[flag("--whatrequires", help="Show the images whose layers start with this image's.")])
def image_tree(ctx: Context, a: Args) -> int:
    from rootless import engine
    from rootless.units import decimal_size

    rec = engine.image(ctx, a.image)

    def size(n: int) -> str:
        return decimal_size(n, ".4g", "")

    print(f"Image ID: {rec.id[:12]}\nTags:     [{' '.join(rec.names)}]\nSize:     {size(rec.size)}")
    chain = [layer.diff_id for layer in rec.layers]
    if a.whatrequires:
        children = [r for r in engine.images(ctx) if r.id != rec.id
                    and [x.diff_id for x in r.layers][:len(chain)] == chain]
        for i, r in enumerate(children):
            branch = "└──" if i == len(children) - 1 else "├──"
            print(f"{branch} ID: {r.id[:12]} Size: {size(r.size)} Tags: [{' '.join(r.names)}]")
        return 0
    print("Image Layers")
    # which images have each layer chain as their top: "Top Layer of"
    tops: dict[tuple[str, ...], list[str]] = {}
    for r in engine.images(ctx):
        tops.setdefault(tuple(x.diff_id for x in r.layers), []).extend(r.names)
    for i, layer in enumerate(rec.layers):
        branch = "└──" if i == len(rec.layers) - 1 else "├──"
        top = tops.get(tuple(chain[:i + 1]))
        note = f" Top Layer of: [{' '.join(top)}]" if top else ""
        print(f"{branch} ID: {layer.diff_id.removeprefix('sha256:')[:12]} Size: {size(layer.size)}{note}")
    return 0


@table.command("attach", "Follow a running container's output until it exits, passing it the signals received; "
               "exit with its status.",
               args=_container(),
               options=[value("--detach-keys", help="Keys that detach from a container's input (accepted: "
                              "there is no input to read)."),
                        flag("--no-stdin", help="Do not attach standard input (the only mode supported)."),
                        flag("--sig-proxy", default=True, help="Pass the signals received to the container "
                             "(=false: SIGINT detaches).")],
               aliases=["container attach"])
def attach(ctx: Context, a: Args) -> int:
    import signal
    import time

    from rootless import engine, lifecycle
    from rootless.commands.containers import print_logs
    from rootless.errors import EXIT_TOOL

    c = engine.container(ctx, a.container)
    if not c.state.running:
        raise RootlessError(f"you can only attach to running containers: {c.config.name} is "
                            f"{lifecycle.status_name(c.state)}", hint=f"`rootless start --attach {c.config.name}`")
    if c.config.spec.process.interactive and not a.no_stdin:
        raise RootlessError(f"attaching the standard input of detached container {c.config.name} is not supported",
                            hint="add --no-stdin to follow its output, or use `rootless exec -it`")
    if a.sig_proxy:
        def forward(sig: int, _frame: object) -> None:
            try:
                lifecycle.kill(ctx, c.id, sig)
            except RootlessError:
                pass

        for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2):
            signal.signal(s, forward)
    since = time.time()
    engine.attached(ctx, c.id)
    print_logs(engine.logs(ctx, c.id, follow=True, since=since - 0.001), False)
    code = engine.wait(ctx, c.id)
    return EXIT_TOOL if code is None else code
