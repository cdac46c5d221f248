"""Volume commands: volume create, ls, inspect, rm, prune, exists, export, import."""

from __future__ import annotations

import sys

from rootless.errors import RootlessError
from rootless.options import Args, Table, UsageError, arg, flag, value

TYPE_CHECKING = False  # typing stays off the start-up path (`rootless --help` would import it)
if TYPE_CHECKING:
    from rootless.context import Context

table = Table()
table.group("volume", "Manage volumes.")


def report(errors: list[RootlessError]) -> int:
    """Every error but the last as a line; the last one raised (it picks the exit status)."""
    for err in errors[:-1]:
        print(f"Error: {err.message}", file=sys.stderr)
    if errors:
        raise errors[-1]
    return 0


@table.command("volume create", "Create a volume; print its name.",
               args=[arg("NAME", optional=True, help="The volume's name (default: a random one).")],
               options=[value("-d", "--driver", default="local", help="Volume driver: local."),
                        value("-o", "--opt", many=True, help="Driver option: type=tmpfs|none, device=PATH, "
                              "o=OPTIONS (repeatable)."),
                        value("-l", "--label", many=True, help="KEY=VALUE label (repeatable).")])
def volume_create(ctx: Context, a: Args) -> int:
    from rootless import volumes

    print(volumes.create(ctx, a.name, driver=a.driver, opts=list(a.opt), labels=list(a.label)).name)
    return 0


@table.command("volume ls", "List volumes.",
               options=[flag("-q", "--quiet", help="Print only volume names."),
                        value("--format", default="table", help="table, json, or a Go template "
                              "(`{{.Name}}`)."),
                        value("-f", "--filter", many=True, help="name=REGEX, label=KEY[=VALUE], "
                              "dangling=true|false, driver=local (repeatable).")],
               hidden_aliases=["volume list"])
def volume_ls(ctx: Context, a: Args) -> int:
    from rootless import volumes
    from rootless.commands.images import echo_json

    found = volumes.listing(ctx, list(a.filter))
    if a.format == "json":
        echo_json([volumes.inspect(ctx, v, n) for v, n in found])
    elif a.quiet:
        sys.stdout.write("".join(v.name + "\n" for v, _ in found))
    elif a.format != "table":
        from rootless import gotemplate

        sys.stdout.write(gotemplate.render("volume", a.format, [volumes.inspect(ctx, v, n) for v, n in found],
                                           {"Name": "VOLUME NAME"}))
    else:
        print(f"{'DRIVER':<12}VOLUME NAME")
        sys.stdout.write("".join(f"{v.driver:<12}{v.name}\n" for v, _ in found))
    return 0


@table.command("volume inspect", "Show volumes' records as JSON.",
               args=[arg("VOLUME", many=True, optional=True, help="Volumes to show.")],
               options=[flag("-a", "--all", help="Show every volume."),
                        value("-f", "--format", help="json, or a Go template run once per volume "
                              "(`{{.Mountpoint}}`).")])
def volume_inspect(ctx: Context, a: Args) -> int:
    from rootless import volumes
    from rootless.commands.images import emit_objects

    counts = {v.name: n for v, n in volumes.listing(ctx)}
    if a.all:
        wanted = list(counts)
    elif a.volume:
        wanted = list(a.volume)
    else:
        raise UsageError("Invalid value: give at least one volume name, or --all")
    out = []
    errors: list[RootlessError] = []
    for n in wanted:
        try:
            out.append(volumes.inspect(ctx, volumes.find(ctx, n), counts.get(n, 0)))
        except RootlessError as e:
            errors.append(e)
    emit_objects("inspect", a.format, out)
    return report(errors)


@table.command("volume rm", "Remove volumes (exit 1: no such volume, 2: in use by a container).",
               args=[arg("VOLUME", many=True, optional=True, help="Volumes to remove.")],
               options=[flag("-f", "--force", help="Remove the stopped containers using them too."),
                        flag("-a", "--all", help="Remove every volume.")],
               hidden_aliases=["volume remove"])
def volume_rm(ctx: Context, a: Args) -> int:
    from rootless import volumes

    if a.all:
        wanted = [v.name for v, _ in volumes.listing(ctx)]
    elif a.volume:
        wanted = list(a.volume)
    else:
        raise UsageError("Invalid value: give at least one volume name, or --all")
    errors: list[RootlessError] = []
    for n in wanted:
        try:
            volumes.remove(ctx, n, a.force)
            print(n)
        except RootlessError as e:
            errors.append(e)
    return report(errors)


@table.command("volume prune", "Remove every volume no container uses; print their names.",
               options=[flag("-f", "--force", help="Do not ask for confirmation."),
                        value("--filter", many=True, help="Prune only volumes that match: name=, label=, driver= "
                              "(repeatable).")])
def volume_prune(ctx: Context, a: Args) -> int:
    from rootless import volumes

    if not a.force:
        print("WARNING! This will remove all volumes not used by at least one container. "
              "The following volumes will be removed:", file=sys.stderr)
        for v, users in volumes.listing(ctx, list(a.filter)):
            if users == 0:
                print(v.name, file=sys.stderr)
        sys.stderr.write("Are you sure you want to continue? [y/N]: ")
        sys.stderr.flush()
        answer = sys.stdin.readline().strip().lower() if sys.stdin and not sys.stdin.closed else ""
        if answer not in ("y", "yes"):
            return 0
    for name in volumes.prune(ctx, list(a.filter)):
        print(name)
    return 0


@table.command("volume exists", "Exit 0 if the volume exists, 1 if not.",
               args=[arg("NAME", help="The volume's name.")])
def volume_exists(ctx: Context, a: Args) -> int:
    from storage.volumes import VolumeStore

    return 0 if VolumeStore(ctx.layout).exists(a.name) else 1


@table.command("volume export", "Write a volume's content as a tar archive.",
               args=[arg("NAME", help="The volume's name.")],
               options=[value("-o", "--output", complete="file", help="Write the tar archive to this file "
                              "(default: standard output).")])
def volume_export(ctx: Context, a: Args) -> int:
    from rootless import volumes

    volumes.export(ctx, a.name, a.output)
    return 0


@table.command("volume import", "Unpack a tar archive into a volume.",
               args=[arg("NAME", help="The volume's name."),
                     arg("SOURCE", help="A tar archive, or - for standard input.", complete="file")])
def volume_import(ctx: Context, a: Args) -> int:
    from rootless import volumes

    volumes.import_(ctx, a.name, a.source)
    return 0
