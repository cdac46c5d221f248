"""RUN: a container from the engine over the state's layers; its upper directory is the layer.

The container is made as `rootless run` makes one (storage.rootfs.prepare, specgen.build,
runtime.run) with the user's one fixed ID mapping, so owners in the new layer are exact. It
is never recorded (no `ps -a` entry) and is removed whatever happens. With the overlay
drivers the layer is the container's upper directory, renamed into the store; with vfs it
is what differs from the image by metadata (rootless.build.layerfs.vfs_diff). Mount points
the runtime had to create for /etc/hosts and the like are taken out again.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import posixpath
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from rootless.build.dockerfile import Instruction
from rootless.build.plan import PROXY_ARGS
from rootless.errors import RootlessError

if TYPE_CHECKING:
    from rootless.build.builder import Builder, State


class RunFailed(RootlessError):
    """A RUN whose command exited non-zero: the build ends with the command's status."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.exit_code = status if 0 < status < 256 else 1


@contextlib.contextmanager
def _stdio(quiet: bool) -> Iterator[None]:
    """The RUN's stdin is /dev/null; with -q its output goes there too."""
    import sys

    sys.stdout.flush()
    sys.stderr.flush()
    null = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
    fds = (0, 1, 2) if quiet else (0,)
    saved = [os.dup(fd) for fd in fds]
    try:
        for fd in fds:
            os.dup2(null, fd)
        yield
    finally:
        for fd, old in zip(fds, saved, strict=True):
            os.dup2(old, fd)
            os.close(old)
        os.close(null)


def _argv(b: Builder, state: State, ins: Instruction) -> list[str]:
    shell = list(state.c.get("Shell") or ("/bin/sh", "-c"))
    if ins.json_args is not None:
        return list(ins.json_args)
    text = ins.args
    if ins.heredocs:
        first = ins.heredocs[0]
        if text.strip().lstrip("<-").strip("\"'") == first.name and len(ins.heredocs) == 1:
            body = first.body
            if body.startswith("#!"):
                # a script with its own interpreter: BuildKit runs the file
                return [*shell, f"cat > /tmp/.rootless-heredoc <<'{first.name}'\n{body}{first.name}\n"
                        f"chmod +x /tmp/.rootless-heredoc && /tmp/.rootless-heredoc; s=$?; "
                        f"rm -f /tmp/.rootless-heredoc; exit $s"]
            return [*shell, body]
        text = text + "\n" + "".join(f"{h.body}{h.name}\n" for h in ins.heredocs)
    return [*shell, text]


def _ancestors(path: str) -> list[str]:
    out = []
    while path not in ("/", ""):
        out.append(path)
        path = posixpath.dirname(path)
    return out


def _mounts(b: Builder, state: State, ins: Instruction) -> tuple[list[str], list[str], list[str], list[Any]]:
    """--mount flags → (volumes, tmpfs, key texts, binds from a stage or image: (its layers, the
    path in it, the target and its options), made only when the step runs)."""
    volumes: list[str] = []
    tmpfs: list[str] = []
    keys: list[str] = []
    froms: list[Any] = []
    workdir = state.c.get("WorkingDir") or "/"
    for spec in ins.flag_all("--mount"):
        spec = b.expand(state, ins, spec)
        kv: dict[str, str] = {}
        flags: set[str] = set()
        for part in spec.split(","):
            k, eq, v = part.partition("=")
            if eq:
                kv[k.strip()] = v.strip()
            else:
                flags.add(k.strip())
        kind = kv.get("type", "bind")
        target = kv.get("target") or kv.get("dst") or kv.get("destination")
        if kind == "secret":
            sid = kv.get("id") or posixpath.basename(target or "")
            target = target or f"/run/secrets/{sid}"
        if not target:
            raise b.fail(ins, f"--mount {spec}: a target is needed", "add target=/path")
        target = posixpath.normpath(posixpath.join(workdir, target))
        ro = "ro" in flags or "readonly" in flags or kv.get("readonly") in ("true", "1") \
            or kv.get("ro") in ("true", "1")
        if kind == "cache":
            ident = kv.get("id") or target
            d = b.ctx.layout.build_mounts / hashlib.sha256(ident.encode()).hexdigest()[:32]
            d.mkdir(parents=True, exist_ok=True, mode=0o755)
            volumes.append(f"{d}:{target}" + (":ro" if ro else ""))
            keys.append(f"cache {target}")
        elif kind == "tmpfs":
            tmpfs.append(target)
            keys.append(f"tmpfs {target}")
        elif kind == "bind":
            rw = "rw" in flags or kv.get("rw") in ("true", "1") or kv.get("readwrite") in ("true", "1")
            if kv.get("from"):
                # Docker's from=: the path of that stage or image (default its root); writes
                # with rw go to a copy and are discarded
                lowers, ident = b.union_of(ins, kv["from"])
                path = posixpath.normpath("/" + (kv.get("source") or kv.get("src") or "/"))
                froms.append((spec, lowers, path, target + ("" if rw else ":ro")))
                keys.append(f"bind {target} from {ident} {path} {'rw' if rw else 'ro'}")
                continue
            rel = b.context.resolve(kv.get("source") or kv.get("src") or ".", b.where(ins))
            src = os.path.join(b.context.root, rel)
            if not os.path.exists(src):
                raise b.fail(ins, f"--mount {spec}: {rel or '.'} does not exist in the build context")
            volumes.append(f"{src}:{target}" + ("" if rw else ":ro"))
            from rootless.build.context import Source, digest_sources

            keys.append(f"bind {target} {digest_sources(b.context, [Source(rel=rel, path=src, is_dir=os.path.isdir(src), name='.')])}")  # noqa: E501
        elif kind == "secret":
            sid = kv.get("id") or posixpath.basename(target)
            path = b.opts.secrets.get(sid)
            if path is None:
                if kv.get("required") in ("true", "1"):
                    raise b.fail(ins, f"--mount {spec}: no secret {sid!r} was given",
                                  f"pass it with --secret id={sid},src=PATH")
                continue
            volumes.append(f"{os.path.abspath(path)}:{target}:ro")
            keys.append(f"secret {sid} {target}")
        else:
            raise b.fail(ins, f"--mount type={kind} is not supported", "use cache, bind, tmpfs or secret")
    return volumes, tmpfs, keys, froms


def run_step(b: Builder, state: State, ins: Instruction) -> None:
    argv = _argv(b, state, ins)
    env = state.env()
    args = {k: state.args[k] for k in state.declared if k in state.args and k not in env}
    for k in args:
        b.used_args.add(k)
    proxies = {k: b.opts.build_args[k] for k in PROXY_ARGS if k in b.opts.build_args and k not in args}
    for k in proxies:
        b.used_args.add(k)
    prefix = f"|{len(args)} " + " ".join(f"{k}={v}" for k, v in args.items()) + " " if args else ""
    created_by = prefix + " ".join(argv)
    volumes, tmpfs, mount_keys, froms = _mounts(b, state, ins)
    network = ins.flag("--network") or b.opts.network or b.ctx.config.network
    if network == "default":
        network = b.opts.network or b.ctx.config.network
    text = json.dumps({"run": created_by, "argv": argv, "mounts": mount_keys, "network": network})

    def make(_s: State) -> str:
        if not froms:
            return _execute(b, state, ins, argv, {**proxies, **args}, volumes, tmpfs, network)
        from storage.layers import LayerStore

        store = LayerStore(b.ctx.layout, b.runner)
        with contextlib.ExitStack() as stack:
            binds = list(volumes)
            for spec, lowers, path, target in froms:
                scratch = stack.enter_context(store.new_entry())
                try:
                    made = b.runner.call("rootless.build.layerfs:materialize", union=lowers, path=path,
                                         dest=str(scratch))
                except RootlessError as e:
                    raise b.fail(ins, f"--mount {spec}: {e.message}", e.hint) from None
                binds.append(f"{made}:{target}")
            return _execute(b, state, ins, argv, {**proxies, **args}, binds, tmpfs, network)

    b.layer_step(state, ins, text, created_by, make)


def _execute(b: Builder, state: State, ins: Instruction, argv: list[str], extra_env: dict[str, str],
             volumes: list[str], tmpfs: list[str], network: str) -> str:
    """The step's container through the engine's runtime seam (rootless.engine.RUNTIME: the layer,
    the foreground process, the discard), over the state's layers rather than a stored image."""
    from rootless.engine import RUNTIME
    from rootless.image import specgen
    from storage.images import ImageRecord, LayerEntry
    from storage.layers import LayerStore

    ctx = b.ctx
    cid = os.urandom(32).hex()
    record = ImageRecord(id=state.key, layers=tuple(LayerEntry(d, d, "", 0) for d in state.layers))
    cfg = dict(state.c)
    cfg.pop("Entrypoint", None)
    cfg["Cmd"] = argv
    plan = RUNTIME.prepare(ctx, record, cid, b.opts.storage_driver, False)
    try:
        ctx.layout.ensure_runroot()
        opts = specgen.RunOptions(image=b.df.path, command=tuple(argv), entrypoint="",
                                  env=tuple(f"{k}={v}" for k, v in extra_env.items()), network=network,
                                  volumes=tuple(volumes), tmpfs=tuple(tmpfs), cgroups="disabled",
                                  # a reaping PID 1 that passes Ctrl-C on: a shell as PID 1 would
                                  # ignore it (pid_namespaces(7)) and the build could not be stopped
                                  init=True,
                                  cgroup_manager=ctx.config.cgroup_manager)
        uid_map, gid_map = RUNTIME.store_maps()
        spec = specgen.build(cfg, opts, plan, container_id=cid, rundir=str(ctx.layout.state / cid),
                             uid_map=uid_map, gid_map=gid_map, image_name=state.base_name, image_id="",
                             host=specgen.HostInfo.read(network),
                             # the default seccomp profile, compiled once into the store's cache as for `run`
                             seccomp_cache=str(ctx.layout.seccomp))
        top = plan.upper if plan.upper else plan.target
        lowers = b.lowers(state)
        workdir = spec.process.cwd
        if workdir != "/":
            b.runner.call("rootless.build.layerfs:mkdirs", layer=top, lowers=lowers if plan.upper else [],
                          path=workdir)
        # the mount points and their parents: those the image lacks are the runtime's doing
        points = sorted({a for m in spec.mounts for a in _ancestors(m.destination)}, key=lambda p: -p.count("/"))
        there = b.runner.call("rootless.build.layerfs:exists", lowers=[top, *lowers] if plan.upper else [top],
                              paths=points)
        made = [p for p, ok in zip(points, there, strict=True) if not ok]
        # The runtime ends whatever children the container left us (the fuse-overlayfs daemon is
        # one): the store's namespace worker must not be among them. It restarts when next called.
        close = getattr(b.runner, "__exit__", None)
        if close is not None:
            close(None, None, None)
        with _stdio(b.opts.quiet):
            status = RUNTIME.run(ctx, spec, False)
        if status != 0:
            raise RunFailed(f"{b.where(ins)}: building at STEP \"{ins.original}\": the command exited with "
                            f"status {status}", status)
        b.runner.call("rootless.build.layerfs:remove_created", upper=top, paths=made)
        store = LayerStore(ctx.layout, b.runner)
        with store.new_entry() as tmp:
            if plan.upper:
                os.rename(plan.upper, tmp / "diff")
            else:
                b.runner.call("rootless.build.layerfs:vfs_diff", rootfs=plan.target, lowers=lowers,
                              dest=str(tmp / "diff"))
            return b.store_layer(store, tmp)
    finally:
        with contextlib.suppress(RootlessError, OSError):
            RUNTIME.discard(ctx, cid)
