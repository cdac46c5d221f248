"""Sharing images: push, save, load, import, export (and their `image`/`container` spellings)."""

from __future__ import annotations

from rootless.options import Args, Table, arg, flag, value

TYPE_CHECKING = False  # typing stays off the start-up path (`rootless --help` would import it)
if TYPE_CHECKING:
    from rootless.context import Context

table = Table()


@table.command("push", "Push an image to a registry or into an archive.",
               args=[arg("IMAGE", help="Image to push (name or ID).", complete="image"),
                     arg("DESTINATION", optional=True, help="REGISTRY/REPOSITORY[:TAG], or docker-archive:PATH, "
                         "oci-archive:PATH, oci:DIR, dir:DIR (default: IMAGE).")],
               options=[value("--creds", metavar="USER[:PASS]", help="Credentials for the registry."),
                        value("--authfile", metavar="PATH", complete="file",
                              help="Credentials file (Docker config.json format) instead of the login store."),
                        flag("--tls-verify", default=True,
                             help="false: accept any certificate, and plain HTTP from a registry without TLS."),
                        value("--compression-format", metavar="FORMAT", choices=("gzip", "zstd"),
                              help="gzip (default) or zstd, for layers that must be compressed."),
                        value("--compression-level", metavar="LEVEL", type=int, help="gzip 0-9, zstd 1-22."),
                        flag("--force-compression", help="Recompress layers stored with another compression."),
                        value("--digestfile", metavar="PATH", complete="file",
                              help="Write the manifest digest to this file."),
                        value("-f", "--format", metavar="FORMAT", choices=("oci", "v2s2", "docker"),
                              help="Manifest type: oci or v2s2 (default: the image's own)."),
                        flag("-q", "--quiet", help="Print nothing but errors."),
                        flag("--remove-signatures", help="Accepted (images here carry no signatures).")],
               aliases=["image push"])
def push(ctx: Context, a: Args) -> int:
    from rootless.image.push import PushOptions, parse_destination
    from rootless.image.push import push as do_push

    opts = PushOptions(creds=a.creds, authfile=a.authfile, tls_verify=None if a.tls_verify else False,
                       compression_format=a.compression_format, compression_level=a.compression_level,
                       force_compression=a.force_compression, digestfile=a.digestfile,
                       format="v2s2" if a.format == "docker" else a.format, quiet=a.quiet)
    transport, rest = parse_destination(a.destination or a.image)
    if transport == "docker":
        do_push(ctx, a.image, a.destination, opts)
    else:
        from rootless.image import archive, present

        archive.push_to_transport(ctx, present.find(ctx, a.image), transport, rest, a.image, opts)
    return 0


@table.command("save", "Save images to an archive.",
               args=[arg("IMAGE", many=True, help="Images to save (names or IDs).", complete="image")],
               options=[value("-o", "--output", metavar="PATH", complete="file",
                              help="Write to this file (default: stdout, never a terminal)."),
                        value("--format", metavar="FORMAT", default="docker-archive",
                              choices=("docker-archive", "oci-archive", "oci-dir", "docker-dir"),
                              help="docker-archive, oci-archive, oci-dir or docker-dir."),
                        flag("-m", "--multi-image-archive",
                             help="Accepted: a docker-archive always holds every image given."),
                        flag("-q", "--quiet", help="Print nothing but errors."),
                        flag("--compress", help="Accepted (layers are written as stored).")],
               aliases=["image save"])
def save(ctx: Context, a: Args) -> int:
    from rootless.image import archive

    archive.save(ctx, list(a.image), a.output, a.format)
    return 0


@table.command("load", "Load images from an archive (docker-archive, oci-archive, oci-dir; plain or compressed).",
               options=[value("-i", "--input", metavar="PATH", complete="file",
                              help="Read this archive (default: stdin, never a terminal)."),
                        flag("-q", "--quiet", help="Print nothing but errors.")],
               aliases=["image load"])
def load(ctx: Context, a: Args) -> int:
    from rootless.image import archive

    for name in archive.load(ctx, a.input, a.quiet):
        if not a.quiet:
            print(f"Loaded image: {name}")
    return 0


@table.command("import", "Import a tarball of a file tree as a one-layer image.",
               args=[arg("FILE", help="Tarball (plain, gzip, bzip2, xz or zstd), or - for stdin.", complete="file"),
                     arg("REFERENCE", optional=True, help="Name for the new image.")],
               options=[value("-c", "--change", metavar="INSTRUCTION", many=True,
                              help="Apply a Dockerfile instruction (CMD, ENTRYPOINT, ENV, EXPOSE, LABEL, USER, "
                                   "VOLUME, WORKDIR, STOPSIGNAL, ONBUILD)."),
                        value("-m", "--message", metavar="TEXT", help="Commit message."),
                        flag("-q", "--quiet", help="Print only the image ID.")],
               aliases=["image import"])
def import_(ctx: Context, a: Args) -> int:
    from rootless.image import archive

    image_id = archive.import_tarball(ctx, a.file, a.reference, list(a.change or ()), a.message)
    print(image_id if a.quiet else f"sha256:{image_id}")
    return 0


@table.command("export", "Export a container's file tree as a tar archive.",
               args=[arg("CONTAINER", help="Container (name or ID).", complete="container")],
               options=[value("-o", "--output", metavar="PATH", complete="file",
                              help="Write to this file (default: stdout, never a terminal).")],
               aliases=["container export"])
def export(ctx: Context, a: Args) -> int:
    from rootless import engine
    from rootless.image import archive

    archive.export(ctx, engine.resolve(ctx, a.container), a.output)
    return 0
