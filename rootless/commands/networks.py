"""User-network commands: network create, ls, inspect, rm, prune, connect, disconnect, exists."""

from __future__ import annotations

import sys

from rootless.commands.volumes import report
from rootless.errors import RootlessError
from rootless.options import Args, Table, arg, flag, value

TYPE_CHECKING = False  # typing stays off the start-up path (`rootless --help` would import it)
if TYPE_CHECKING:
    from typing import Any

    from rootless.context import Context
    from slirp.usernet import NetworkConfig

table = Table()
table.group("network", "Manage user networks.")


@table.command("network create", "Create a user network; print its name.",
               args=[arg("NAME", optional=True, help="The network's name (default: rootlessN).")],
               options=[value("--subnet", help="IPv4 subnet, e.g. 10.90.0.0/24 (default: the first free /24 of "
                              "10.89.0.0/16)."),
                        value("--gateway", help="The gateway's address (default: the subnet's first)."),
                        flag("--internal", help="No outbound route: members reach only each other."),
                        flag("--disable-dns", help="No name server for the network."),
                        value("--label", many=True, help="KEY=VALUE label (repeatable)."),
                        value("-d", "--driver", default="bridge", help="Network driver: bridge.")])
def network_create(ctx: Context, a: Args) -> int:
    from rootless import networks

    if a.driver != "bridge":
        raise RootlessError(f"network driver {a.driver!r} is not supported", "use --driver bridge (the default)")
    cfg = networks.create(ctx, a.name, subnet=a.subnet, gateway=a.gateway, internal=a.internal,
                          disable_dns=a.disable_dns, labels=list(a.label))
    print(cfg.name)
    return 0


@table.command("network ls", "List user networks.",
               options=[flag("-q", "--quiet", help="Print only network names."),
                        value("--format", default="table", help="Output format: table, json or a Go template "
                              "({{.Name}}, {{.ID}}, {{.Driver}}, {{.Labels}}, {{.Subnets}}, ...)."),
                        value("-f", "--filter", many=True, help="name=REGEX, id=PREFIX, label=KEY[=VALUE], "
                              "driver=bridge (repeatable)."),
                        flag("--no-trunc", help="Do not truncate network IDs.")],
               hidden_aliases=["network list"])
def network_ls(ctx: Context, a: Args) -> int:
    from rootless import networks
    from rootless.commands.images import echo_json

    found = networks.listing(ctx, list(a.filter))
    if a.format == "json":
        echo_json([networks.inspect(ctx, n) for n in found])
    elif a.format not in ("table", ""):
        from rootless import gotemplate

        sys.stdout.write(gotemplate.render("network ls", a.format, [
            template_view(n, listing=True, no_trunc=a.no_trunc) for n in found], NETWORK_HEADERS))
    elif a.quiet:
        sys.stdout.write("".join(n.name + "\n" for n in found))
    else:
        width = 64 if a.no_trunc else 12
        print(f"{'NETWORK ID':<{width}}  {'NAME':<20}  DRIVER")
        sys.stdout.write("".join(f"{n.id[:width]:<{width}}  {n.name:<20}  bridge\n" for n in found))
    return 0


@table.command("network inspect", "Show user networks as JSON, with the running containers attached.",
               args=[arg("NETWORK", many=True, help="Networks to show.")],
               options=[value("-f", "--format", default="json", help="Output format: json or a Go template "
                              "({{.Name}}, {{.ID}}, {{.Subnets}}, {{range .Subnets}}{{.Gateway}}{{end}}, ...).")])
def network_inspect(ctx: Context, a: Args) -> int:
    from rootless import networks
    from rootless.commands.images import echo_json

    template = a.format not in ("json", "")
    live = {} if template else networks.members(ctx)
    out = []
    errors: list[RootlessError] = []
    for n in a.network:
        try:
            cfg = networks.store(ctx).get(n)
            out.append(template_view(cfg) if template else networks.inspect(ctx, cfg, live.get(cfg.name)))
        except RootlessError as e:
            errors.append(e)
    if template:
        from rootless import gotemplate

        sys.stdout.write("".join(gotemplate.render_one("inspect", a.format, v) for v in out))
    else:
        echo_json(out)
    return report(errors)


NETWORK_HEADERS = {"ID": "NETWORK ID"}  # Podman's header for the ID column


def template_view(cfg: NetworkConfig, *, listing: bool = False, no_trunc: bool = True) -> dict[str, Any]:
    """What `network inspect --format` (and, with *listing*, `network ls --format`) templates see:
    Podman 4.3's Network fields, Go-shaped (recorded there): Subnets print as Go prints the struct,
    Created as a Go time; ls shows Labels as KEY=VALUE,... and the ID cut to 12 unless no_trunc."""
    import ipaddress

    from rootless.commands.psview import go_time
    from rootless.gotemplate import GoStringer, GoStruct

    net = ipaddress.ip_network(cfg.subnet)
    mask = f"{int(net.netmask):08x}"
    subnet = GoStruct(Subnet=GoStringer(str(net), f"{{{{{net.network_address} {mask}}}}}"), Gateway=cfg.gateway,
                      LeaseRange=None)
    labels: Any = dict(cfg.labels)
    if listing:
        labels = ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
    return GoStruct(Name=cfg.name, ID=cfg.id if no_trunc else cfg.id[:12], Driver="bridge",
                    NetworkInterface=cfg.bridge, Created=go_time(cfg.created), Subnets=[subnet], IPv6Enabled=False,
                    Internal=cfg.internal, DNSEnabled=cfg.dns_enabled, Labels=labels, Options={},
                    IPAMOptions={"driver": "host-local"})


@table.command("network rm", "Remove user networks (exit 1: no such network, 2: in use).",
               args=[arg("NETWORK", many=True, help="Networks to remove.")],
               options=[flag("-f", "--force", help="Remove the containers using them too.")],
               hidden_aliases=["network remove"])
def network_rm(ctx: Context, a: Args) -> int:
    from rootless import networks

    errors: list[RootlessError] = []
    for n in a.network:
        try:
            print(networks.remove(ctx, n, a.force))
        except RootlessError as e:
            errors.append(e)
    return report(errors)


@table.command("network prune", "Remove every user network no container uses; print their names.",
               options=[flag("-f", "--force", help="Do not ask for confirmation.")])
def network_prune(ctx: Context, a: Args) -> int:
    from rootless import networks

    if not a.force:
        sys.stderr.write("WARNING! This will remove all networks not used by at least one container.\n"
                         "Are you sure you want to continue? [y/N]: ")
        sys.stderr.flush()
        answer = sys.stdin.readline().strip().lower() if sys.stdin and not sys.stdin.closed else ""
        if answer not in ("y", "yes"):
            return 0
    for name in networks.prune(ctx):
        print(name)
    return 0


@table.command("network connect", "Connect a container to a user network (at once when it runs).",
               args=[arg("NETWORK", help="The network."), arg("CONTAINER", help="The container.",
                                                               complete="container")],
               options=[value("--alias", many=True, help="Another name of the container on this network "
                              "(repeatable)."),
                        value("--ip", help="The container's address on this network.")])
def network_connect(ctx: Context, a: Args) -> int:
    from rootless import networks

    networks.connect(ctx, a.network, a.container, list(a.alias), a.ip)
    return 0


@table.command("network disconnect", "Disconnect a container from a user network (at once when it runs).",
               args=[arg("NETWORK", help="The network."), arg("CONTAINER", help="The container.",
                                                               complete="container")],
               options=[flag("-f", "--force", help="Accepted for Podman's syntax.")])
def network_disconnect(ctx: Context, a: Args) -> int:
    from rootless import networks

    networks.disconnect(ctx, a.network, a.container)
    return 0


@table.command("network exists", "Exit 0 if the network exists, 1 if not.",
               args=[arg("NAME", help="The network's name or ID.")])
def network_exists(ctx: Context, a: Args) -> int:
    from rootless import networks

    return 0 if networks.store(ctx).exists(a.name) else 1
