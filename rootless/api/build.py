"""POST /build: the classic builder protocol (`DOCKER_BUILDKIT=0 docker build`, the SDKs'
images.build) over the builder `rootless build` runs (rootless.build.builder.build).

The body is the context as a tar (plain or compressed); the query names the Dockerfile in
it and the options. The answer streams Docker's JSON messages: the builder's lines as
``{"stream": …}``, then ``{"aux": {"ID": …}}``, ``Successfully built ID`` and ``Successfully
tagged NAME`` as Docker prints them; a failure as ``{"error": …, "errorDetail": …}`` (with
a failed RUN's status as the code, which the docker CLI exits with). Tags are named as
Docker names them (``-t app`` is docker.io/library/app:latest, shown as app:latest), as
``POST /images/{name}/tag`` does. The image is recorded only when the build succeeds.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from typing import TYPE_CHECKING, Any

from rootless.api.http import BadRequest, NotImplementedHere, Request
from rootless.errors import RootlessError

if TYPE_CHECKING:
    from rootless.context import Context

# Options the docker CLI always sends; only their defaults are served (a RUN step has no
# resource limits of its own here).
_UNSUPPORTED_UNLESS_DEFAULT = ("cpusetcpus", "cpusetmems", "cpushares", "cpuquota", "cpuperiod", "memory", "memswap",
                               "shmsize", "extrahosts", "cgroupparent", "isolation", "outputs")
_DEFAULTS = ("", "0", "-1", "[]", "{}", "null", "default")


def _names(req: Request) -> list[str]:
    from rootless.image.reference import parse_reference

    out = []
    for t in req.query.get("t", []):
        if not t:
            continue
        try:
            ref = parse_reference(t)
        except RootlessError as e:
            raise BadRequest(f"invalid tag {t!r}: {e.message}") from None
        if ref.digest:
            raise BadRequest(f"invalid tag {t!r}: a build cannot be tagged with a digest")
        out.append(ref.tagged_name)
    return out


def _string_map(req: Request, name: str) -> dict[str, str | None]:
    raw = req.qjson(name) or {}
    if not isinstance(raw, dict) or not all(isinstance(v, str | None) for v in raw.values()):
        raise BadRequest(f"query parameter {name}: expected a JSON object of strings")
    return raw


def _network(req: Request) -> str | None:
    mode = req.q("networkmode") or "default"
    if mode in ("default", "bridge", "slirp4netns"):
        return None
    if mode in ("host", "none"):
        return mode
    raise BadRequest(f"networkmode {mode!r}: RUN steps support default, host or none")


def options(req: Request, context: str) -> Any:
    """The query → the builder's BuildOptions (BadRequest names what is not served)."""
    from rootless.build.builder import BuildOptions

    if req.q("remote"):
        raise NotImplementedHere("POST /build?remote= (a remote context) is not served by rootless: "
                                 "send the context as a tar")
    if req.q("version") == "2":
        raise NotImplementedHere("POST /build?version=2 (BuildKit) is not served by rootless: "
                                 "use the classic builder (DOCKER_BUILDKIT=0)")
    for name in _UNSUPPORTED_UNLESS_DEFAULT:
        v = req.q(name)
        if v is not None and v.strip() not in _DEFAULTS:
            raise BadRequest(f"build option {name}={v!r} is not supported by rootless")
    ulimits = req.qjson("ulimits")
    if ulimits:
        raise BadRequest("build option ulimits is not supported by rootless")
    dockerfile = req.q("dockerfile") or None
    if dockerfile is not None:
        inside = os.path.normpath(os.path.join("/", dockerfile)).lstrip("/")
        if not inside:
            raise BadRequest(f"dockerfile {dockerfile!r}: not a file in the context")
        dockerfile = os.path.join(context, inside)
    build_args = {k: v for k, v in _string_map(req, "buildargs").items() if v is not None}
    labels = tuple(f"{k}={v or ''}" for k, v in _string_map(req, "labels").items())
    return BuildOptions(
        context=context, dockerfile=dockerfile, tags=tuple(_names(req)), build_args=build_args,
        target=req.q("target") or None, no_cache=req.qbool("nocache"),
        pull="always" if req.qbool("pull") else "missing", network=_network(req), labels=labels,
        quiet=req.qbool("q"), squash=req.qbool("squash"), format="docker", platform=req.q("platform") or None)


def _receive_context(ctx: Context, req: Request, dest: str) -> None:
    """The body (a tar, plain or compressed) → ``dest``, through the store's safe unpacker (no
    member lands outside ``dest``), as the user (owners are not needed for a context)."""
    from storage.layers import unpack

    path = req.spool(ctx.layout.tmp, "the context as a tar")
    try:
        unpack(path, "", os.path.join(dest, "."))
    except RootlessError as e:
        raise BadRequest(f"the build context: {e.message}") from None
    finally:
        os.unlink(path)


def build(ctx: Context, req: Request) -> None:
    import tempfile

    from rootless.api import child
    from rootless.api.images import familiar

    ctx.layout.ensure_store()
    tmpdir = tempfile.mkdtemp(prefix="context-", dir=ctx.layout.tmp)
    try:
        opts = options(req, tmpdir)
        _receive_context(ctx, req, tmpdir)
        out = req.conn.stream(200)
        own = {f"Successfully tagged {n}\n" for n in opts.tags}  # said again below, the way Docker says it

        def line(text: str) -> None:
            if not opts.quiet and text not in own:
                out.json({"stream": text})

        def call() -> str:
            from rootless.build.builder import build as do_build

            ctx.log.level = max(ctx.log.level, 30)  # the client sees warnings, not the service's own notes
            return do_build(ctx, opts)

        try:
            image_id = child.run(req, call, line)
        except child.CallFailed as e:
            detail: dict[str, Any] = {"message": e.message}
            if e.code:
                detail["code"] = e.code
            out.json({"errorDetail": detail, "error": e.message})
            out.close()
            return
        if opts.quiet:
            out.json({"stream": f"sha256:{image_id}\n"})
        else:
            out.json({"aux": {"ID": f"sha256:{image_id}"}})
            out.json({"stream": f"Successfully built {image_id[:12]}\n"})
            for n in opts.tags:
                out.json({"stream": f"Successfully tagged {familiar(n)}\n"})
        out.close()
    finally:
        with contextlib.suppress(OSError):
            shutil.rmtree(tmpdir)
