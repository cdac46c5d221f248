"""Image and registry commands: pull, images, rmi, tag, image inspect, image prune, login, logout."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from rootless.errors import EXIT_TOOL, RootlessError
from rootless.options import Args, Table, always, arg, flag, value

TYPE_CHECKING = False  # typing stays off the start-up path (`rootless --help` would import it)
if TYPE_CHECKING:
    from typing import Any

    from rootless.context import Context

table = Table()
table.group("image", "Manage images.")

FORMAT = value("--format", default="table", help="table, json, or a Go template (`{{.Repository}}:{{.Tag}}`; "
               "`table ...` prints headers).")


def echo_json(data: object) -> None:
    import json

    print(json.dumps(data, indent=4))


TLS_VERIFY = value("--tls-verify", help="true (the default: HTTPS, certificates checked) or false (also plain "
                   "HTTP, as `insecure = true` in rootless.conf).")
AUTHFILE = value("--authfile", complete="file", help="Credentials file to read and write instead of the run "
                 "root's auth.json (also REGISTRY_AUTH_FILE).")


def registry_options(ctx: Context, a: Args, registries: list[str]) -> None:
    """--tls-verify and --authfile (and REGISTRY_AUTH_FILE) for this command's registry."""
    import os
    from pathlib import Path

    from rootless.record import replace

    auth = a.get("authfile") or os.environ.get("REGISTRY_AUTH_FILE")
    if auth:
        ctx.layout = replace(ctx.layout, auth_path=Path(auth))
    tls = a.get("tls_verify")
    if tls is not None and registries:
        verify = tls.lower()
        if verify not in ("true", "false", "1", "0"):
            raise RootlessError(f"--tls-verify={tls}: must be true or false")
        from rootless.config import RegistryConfig

        regs = dict(ctx.config.registries)
        for registry in registries:
            regs[registry] = replace(regs.get(registry, RegistryConfig()), insecure=verify in ("false", "0"))
        ctx.config = replace(ctx.config, registries=regs)


@table.command("pull", "Pull an image from a registry into the store.",
               args=[arg("IMAGE", help="Image reference, e.g. alpine or quay.io/org/img:tag.")],
               options=[flag("-q", "--quiet", help="Print only the image ID."),
                        value("--platform", metavar="OS/ARCH", help="OS/ARCH[/VARIANT] to pull (default: this "
                              "host's)."), TLS_VERIFY, AUTHFILE],
               aliases=["image pull"])
def pull(ctx: Context, a: Args) -> int:
    from rootless.image.pull import pull as do_pull
    from rootless.image.reference import parse_reference

    ref = parse_reference(a.image)
    registry_options(ctx, a, [ref.registry] if ref.qualified else list(ctx.config.unqualified_search))
    record = do_pull(ctx, a.image, platform=a.platform, quiet=a.quiet)
    print(record.id)
    return 0


@table.command("images", "List images in the store.",
               options=[flag("-q", "--quiet", help="Print only image IDs."), FORMAT,
                        flag("--no-trunc", help="Do not truncate image IDs."),
                        flag("-a", "--all", help="Show all images (intermediate ones too)."),
                        flag("--digests", help="Show manifest digests.")],
               aliases=["image ls"], hidden_aliases=["image list"], quick_exit=always)
def images(ctx: Context, a: Args) -> int:
    from rootless import engine
    from rootless.image import present

    recs = engine.images(ctx)
    if a.quiet:
        seen: dict[str, None] = {}
        for r in recs:
            seen.setdefault(r.id if a.no_trunc else r.id[:12])
        sys.stdout.write("".join(i + "\n" for i in seen))
        return 0
    if a.format not in ("json", "table"):
        from rootless import gotemplate

        counts = present.containers_per_image(ctx)
        sys.stdout.write(gotemplate.render("images", a.format, [
            present.image_row(ctx, r, name, a.no_trunc, counts.get(r.id, 0)) for r in recs for name in r.names or [""]],
            present.IMAGES_HEADERS))
        return 0
    if a.format == "json":
        out = []
        for r in recs:
            labels = (present.image_config(ctx, r).get("config") or {}).get("Labels")
            ts = present.timestamp(r.created)
            out.append({
                "Id": r.id, "ParentId": "", "RepoTags": list(r.names), "RepoDigests": list(r.digests),
                "Size": r.size, "SharedSize": 0, "VirtualSize": r.size, "Labels": labels, "Containers": 0,
                "Names": list(r.names), "Digest": r.manifest_digest, "History": list(r.names),
                "Created": int(ts) if ts else 0, "CreatedAt": r.created, "Dangling": not r.names,
            })
        echo_json(out)
        return 0
    from rootless.units import decimal_size

    rows = [("REPOSITORY", "TAG") + (("DIGEST",) if a.digests else ()) + ("IMAGE ID", "CREATED", "SIZE")]
    for r in recs:
        for name in r.names or ["<none>:<none>"]:
            repo, t = present.split_name(name) if name != "<none>:<none>" else ("<none>", "<none>")
            rows.append((repo, t) + ((r.manifest_digest,) if a.digests else ()) +
                        (r.id if a.no_trunc else r.id[:12], present.ago(r.created), decimal_size(r.size)))
    print_table(rows)
    return 0


def print_table(rows: Sequence[Sequence[str]]) -> None:
    """Columns padded to their widest cell, two spaces apart, as Podman prints them."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    sys.stdout.write("".join("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() + "\n"
                             for row in rows))


@table.command("rmi", "Remove images.",
               args=[arg("IMAGE", many=True, optional=True, help="Images to remove (names or IDs).",
                         complete="image")],
               options=[flag("-f", "--force", help="Remove the image even when several names point at it; "
                             "ignore images that are not known."),
                        flag("-a", "--all", help="Remove all images.")],
               aliases=["image rm"])
def rmi(ctx: Context, a: Args) -> int:
    from rootless.image import present

    if not a.image and not a.all:
        raise RootlessError("rmi needs at least one image name or ID, or --all", "rootless rmi IMAGE...")
    report, status = present.rmi(ctx, list(a.image), force=a.force, all_=a.all)
    for is_error, line in report:
        if is_error:
            print(f"Error: {line}", file=sys.stderr)
        else:
            print(line)
    return status


@table.command("tag", "Add names to an image.",
               args=[arg("IMAGE", help="Image to tag (name or ID).", complete="image"),
                     arg("TARGET", many=True, help="New names.")],
               aliases=["image tag"])
def tag(ctx: Context, a: Args) -> int:
    from rootless.image import present

    present.tag(ctx, a.image, list(a.target))
    return 0


@table.command("image inspect", "Show images' configuration and layers as JSON.",
               args=[arg("IMAGE", many=True, help="Images to inspect (names or IDs).", complete="image")],
               options=[value("-f", "--format", default="json", help="json, or a Go template run once per image "
                              "(`{{.Size}}`).")])
def image_inspect(ctx: Context, a: Args) -> int:
    from rootless.image import present

    data, missing = present.inspect(ctx, list(a.image))
    emit_objects("inspect", a.format, data)
    for m in missing:
        print(f"Error: {m}", file=sys.stderr)
    return EXIT_TOOL if missing else 0


@table.command("image prune", "Remove dangling images (all unused ones with --all), then unreferenced layers "
               "and blobs.",
               options=[flag("-a", "--all", help="Remove all unused images, not only dangling ones."),
                        flag("-f", "--force", help="Do not ask for confirmation.")])
def image_prune(ctx: Context, a: Args) -> int:
    from rootless.image import present

    if not a.force:
        what = "all images without at least one container associated with them" if a.all else \
            "all dangling images"
        sys.stdout.write(f"WARNING! This command removes {what}.\nAre you sure you want to continue? [y/N] ")
        sys.stdout.flush()
        answer = sys.stdin.readline().strip().lower() if sys.stdin and not sys.stdin.closed else ""
        if answer not in ("y", "yes"):
            return 0
    for line in present.prune(ctx, all_=a.all):
        print(line)
    return 0


@table.command("login", "Log in to a registry; credentials are kept for later pulls.",
               args=[arg("REGISTRY", help="Registry host, e.g. quay.io or localhost:5000.")],
               options=[value("-u", "--username", help="User name."),
                        value("-p", "--password", help="Password (prefer --password-stdin)."),
                        flag("--password-stdin", help="Read the password from standard input."),
                        flag("--get-login", help="Print the user name stored for REGISTRY."), TLS_VERIFY,
                        AUTHFILE])
def login(ctx: Context, a: Args) -> int:
    from rootless.image import present

    registry_options(ctx, a, [a.registry])
    if a.get_login:
        print(present.get_login(ctx, a.registry))
        return 0
    username, password = a.username, a.password
    if a.password_stdin:
        if password:
            raise RootlessError("--password and --password-stdin are mutually exclusive")
        password = sys.stdin.readline().rstrip("\r\n")
    if username is None:
        if not sys.stdin.isatty():
            raise RootlessError("no user name given", "pass --username, or run on a terminal to be asked")
        username = input("Username: ")
    if password is None:
        if not sys.stdin.isatty():
            raise RootlessError("no password given", "pass --password-stdin and pipe the password in")
        import getpass

        password = getpass.getpass("Password: ")
    present.login(ctx, a.registry, username, password)
    print("Login Succeeded!")
    return 0


@table.command("logout", "Remove stored registry credentials.",
               args=[arg("REGISTRY", optional=True, help="Registry host.")],
               options=[flag("-a", "--all", help="Remove the credentials of every registry."), AUTHFILE])
def logout(ctx: Context, a: Args) -> int:
    from rootless.image import present

    registry_options(ctx, a, [])
    if not a.registry and not a.all:
        raise RootlessError("logout needs a registry, or --all", "rootless logout REGISTRY")
    print(present.logout(ctx, a.registry, all_=a.all))
    return 0


def emit_objects(name: str, fmt: str | None, objs: list[Any]) -> None:
    """inspect-style output: a JSON array, or the --format template once per object."""
    if not fmt or fmt == "json":
        import json

        print(json.dumps(objs, indent=4))
        return
    from rootless import gotemplate

    t, _ = gotemplate.parse(name, fmt)
    sys.stdout.write("".join(t.execute(o) for o in objs))
    sys.stdout.flush()
