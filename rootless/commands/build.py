"""Build commands: build (image build), history (image history), commit."""

from __future__ import annotations

from rootless.options import Args, Table, arg, flag, value

TYPE_CHECKING = False  # typing stays off the start-up path (`rootless --help` would import it)
if TYPE_CHECKING:
    from rootless.context import Context

table = Table()


@table.command("build", "Build an image from a Containerfile or Dockerfile.",
               args=[arg("CONTEXT", optional=True, complete="dir",
                         help="The build context: a directory (default: the current one), or - for a tar on "
                              "stdin.")],
               options=[value("-t", "--tag", many=True, help="Name the image (repeatable)."),
                        value("-f", "--file", complete="file", help="The Containerfile (default: Containerfile, "
                              "else Dockerfile, in the context; - reads stdin)."),
                        value("--build-arg", many=True, metavar="NAME[=VALUE]", help="ARG value: NAME=VALUE, or "
                              "NAME to take it from the environment."),
                        value("--target", metavar="STAGE", help="Build this stage and what it needs."),
                        flag("--no-cache", help="Do not use cached steps."),
                        value("--pull", default="missing", choices=("missing", "always", "never"),
                              help="Pull base images: always, missing (default), never."),
                        value("--network", help="RUN's network: slirp4netns, none or host (default: as for "
                              "run)."),
                        value("--label", many=True, metavar="KEY=VALUE", help="Add a label."),
                        value("--annotation", many=True, metavar="KEY=VALUE", help="Add a manifest annotation."),
                        value("--iidfile", complete="file", help="Write the image ID to this file."),
                        flag("-q", "--quiet", help="Print only the image ID."),
                        flag("--layers", default=True, word=True,
                             help="Use and keep the layer cache; --layers=false: no cache, and the build's new "
                                  "layers committed as one."),
                        flag("--squash", help="Squash the build's new layers into one on top of the base "
                                              "image's."),
                        value("--format", default="oci", choices=("oci", "docker"),
                              help="Image format: oci (default) or docker."),
                        value("--secret", many=True, metavar="id=ID,src=PATH",
                              help="A secret for RUN --mount=type=secret."),
                        value("--ignorefile", complete="file", help="The ignore file to use instead of "
                              ".containerignore/.dockerignore."),
                        value("--platform", metavar="OS/ARCH", help="Only this host's platform.")],
               aliases=["image build"])
def build(ctx: Context, a: Args) -> int:
    from rootless.build import cmd

    return cmd.build(ctx, context=a.context or ".", tags=list(a.tag or ()), file=a.file,
                     build_arg=list(a.build_arg or ()), target=a.target, no_cache=a.no_cache, pull=a.pull,
                     network=a.network, label=list(a.label or ()), annotation=list(a.annotation or ()),
                     iidfile=a.iidfile, quiet=a.quiet, layers=a.layers, squash=a.squash, fmt=a.format,
                     secret=list(a.secret or ()), ignorefile=a.ignorefile, platform=a.platform)


@table.command("history", "Show an image's history: one line per instruction that made it.",
               args=[arg("IMAGE", complete="image", help="Image (name or ID).")],
               options=[flag("--no-trunc", help="Do not truncate the output."),
                        flag("-q", "--quiet", help="Print only the IDs."),
                        flag("-H", "--human", default=True, help="Sizes and dates for humans."),
                        value("--format", default="table", help="Output format: table, json or a Go template "
                              "({{.ID}}, {{.Created}}, {{.CreatedAt}}, {{.CreatedBy}}, {{.Size}}, {{.Comment}}).")],
               aliases=["image history"])
def history(ctx: Context, a: Args) -> int:
    from rootless.build import cmd

    cmd.history(ctx, a.image, no_trunc=a.no_trunc, quiet=a.quiet, human=a.human, fmt=a.format)
    return 0


@table.command("commit", "Make a new image from a container's changes.",
               args=[arg("CONTAINER", complete="container", help="Container (name or ID)."),
                     arg("IMAGE", optional=True, help="Name for the new image.")],
               options=[value("-c", "--change", many=True, metavar="INSTRUCTION",
                              help="Apply a Dockerfile instruction (CMD, ENTRYPOINT, ENV, EXPOSE, LABEL, ONBUILD, "
                                   "STOPSIGNAL, USER, VOLUME, WORKDIR)."),
                        value("-m", "--message", default="", help="Commit message (history comment)."),
                        value("-a", "--author", default="", help="The image's author."),
                        flag("-p", "--pause", help="Pause the running container during the commit (cgroup v2 "
                                                   "freezer; without one: a warning, and it is committed running)."),
                        value("-f", "--format", default="oci", choices=("oci", "docker"),
                              help="Image format: oci (default) or docker."),
                        flag("-q", "--quiet", help="Print only the image ID.")])
def commit(ctx: Context, a: Args) -> int:
    from rootless.build.commit import commit as do_commit

    print(do_commit(ctx, a.container, a.image, changes=list(a.change or ()), message=a.message,
                    author=a.author, fmt=a.format, quiet=a.quiet, pause=a.pause))
    return 0
