"""`rootless build`: plan the Dockerfile, then run its steps over the store, which is the cache.

Each step of a stage turns a state (layers + image config + cache key) into the next:
 * config steps (ENV, LABEL, CMD, ...) change the config only (history ``empty_layer``);
 * COPY, ADD and a WORKDIR that must create its directory write a new layer directly, as
   root of the store's user namespace (rootless.build.layerfs), without a container;
 * RUN runs a container made from the state's layers with the user's fixed ID mapping, and
   the container's upper directory becomes the new layer (never a walk of the whole tree).
The cache key of a step chains the parent's key with the step's own text: RUN's command and
the build arguments it sees, COPY/ADD's digest of their sources, the rest their instruction
text. ``<store>/build-cache/<key>.json`` remembers what a key made; a hit reuses the layer
(and its history time, so an unchanged rebuild gives the same image ID) and starts nothing.
The image is recorded only at the end: a build that fails or is interrupted leaves no
image, no container and no layer that is not whole.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import posixpath
import sys
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from rootless.build import ignore
from rootless.build.context import Context as BuildContext
from rootless.build.context import ContextError, digest_sources
from rootless.build.dockerfile import Dockerfile, DockerfileError, Instruction, parse
from rootless.build.plan import PROXY_ARGS, Plan, make_plan, meta_values, parse_arg, platform_args, stage_ref
from rootless.build.words import SubstitutionError, expand_heredoc, process_word, process_words, split_quoted
from rootless.errors import RootlessError
from rootless.record import dataclass, field

if TYPE_CHECKING:
    from rootless.context import Context
    from storage.nsrunner import NamespaceRunner

LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar"
DEFAULT_SHELL = ("/bin/sh", "-c")
DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_NOP = "/bin/sh -c #(nop) "
_DOCKER_ONLY = (("Healthcheck", "HEALTHCHECK"), ("Shell", "SHELL"), ("OnBuild", "ONBUILD"))


@dataclass(frozen=True)
class BuildOptions:
    context: str  # a directory
    dockerfile: str | None = None  # path; None: Containerfile, else Dockerfile, in the context
    dockerfile_text: str | None = None  # `-f -`
    tags: tuple[str, ...] = ()
    build_args: Mapping[str, str] = field(default_factory=dict)
    target: str | None = None
    no_cache: bool = False
    pull: str = "missing"  # always, missing, never
    network: str | None = None
    labels: tuple[str, ...] = ()
    annotations: tuple[str, ...] = ()
    iidfile: str | None = None
    quiet: bool = False
    layers: bool = True
    squash: bool = False
    format: str = "oci"
    secrets: Mapping[str, str] = field(default_factory=dict)
    ignorefile: str | None = None
    platform: str | None = None
    storage_driver: str | None = None


class State:
    """One stage's image so far."""

    def __init__(self, layers: list[str], config: dict[str, Any], key: str, base_name: str) -> None:
        self.layers = layers  # diff IDs, base first
        self.config = config  # the whole image config
        self.key = key  # hex cache key of everything so far
        self.base_name = base_name
        self.args: dict[str, str] = {}  # ARGs in scope: name → value
        self.declared: list[str] = []
        self.base = len(layers)  # how many of the layers are the base image's (--squash keeps them)
        self.base_history = len(config.get("history") or [])

    @property
    def c(self) -> dict[str, Any]:
        cfg = self.config.setdefault("config", {})
        assert isinstance(cfg, dict)
        return cfg

    def env(self) -> dict[str, str]:
        out = {}
        for item in self.c.get("Env") or []:
            k, _, v = item.partition("=")
            out[k] = v
        return out

    def words_env(self) -> dict[str, str]:
        """What ``$VAR`` sees: ARGs in scope, overridden by ENV."""
        return {**self.args, **self.env()}

    def set_env(self, key: str, value: str) -> None:
        env = [e for e in (self.c.get("Env") or []) if e.partition("=")[0] != key]
        env.append(f"{key}={value}")
        self.c["Env"] = env


def now_rfc3339() -> str:
    t = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1e9):09d}Z"


def _chain(key: str, text: str) -> str:
    return hashlib.sha256(f"{key}\n{text}".encode()).hexdigest()


def find_dockerfile(opts: BuildOptions) -> tuple[str, str]:
    """(text, path as named in messages)."""
    if opts.dockerfile_text is not None:
        return opts.dockerfile_text, "Dockerfile"
    if opts.dockerfile:
        path = opts.dockerfile if os.path.isabs(opts.dockerfile) or os.path.exists(opts.dockerfile) \
            else os.path.join(opts.context, opts.dockerfile)
        candidates = [path]
    else:
        candidates = [os.path.join(opts.context, n) for n in ("Containerfile", "Dockerfile")]
    for c in candidates:
        try:
            with open(c, encoding="utf-8") as f:
                return f.read(), c
        except FileNotFoundError:
            continue
        except IsADirectoryError:
            raise RootlessError(f"{c} is a directory, not a Dockerfile", "name the file with -f") from None
        except OSError as e:
            raise RootlessError(f"read {c}: {e.strerror}") from None
    raise RootlessError(f"no Containerfile or Dockerfile found in {opts.context}" if not opts.dockerfile
                        else f"the Dockerfile {candidates[0]} does not exist",
                        "name it with -f FILE, or run the build in the directory holding it")


class Builder:
    def __init__(self, ctx: Context, opts: BuildOptions, runner: NamespaceRunner) -> None:
        self.ctx = ctx
        self.opts = opts
        self.runner = runner
        text, self.df_path = find_dockerfile(opts)
        shown = "Dockerfile"
        if opts.dockerfile_text is None:
            inside = os.path.relpath(os.path.abspath(self.df_path), opts.context)
            shown = inside if not inside.startswith("..") else os.path.abspath(self.df_path)
        self.df: Dockerfile = parse(text, shown)
        if self.df.syntax:
            ctx.log.info(f"{self.df.path}: ignoring the syntax directive ({self.df.syntax}): "
                         "the built-in parser is used")
        ig = opts.ignorefile or ignore.find_file(opts.context, self.df_path if opts.dockerfile_text is None
                                                  else None)
        patterns: list[ignore.Pattern] = []
        if ig:
            try:
                with open(ig, encoding="utf-8") as f:
                    patterns = ignore.parse(f.read())
            except OSError as e:
                raise RootlessError(f"read the ignore file {ig}: {e.strerror}") from None
        self.context = BuildContext(opts.context, ignore.Matcher(patterns))
        self.plan: Plan = make_plan(self.df, opts.build_args, opts.target)
        self.meta = meta_values(self.plan.meta_args, opts.build_args, self.df,
                                {n: self.df.instructions[0] for n, _ in self.plan.meta_args})
        self.results: dict[int, State] = {}
        self.used_args: set[str] = set()
        self.made_layers: list[str] = []
        self.out = sys.stdout
        self.cache = opts.layers  # False: steps leave no cache entries (--layers=false, commit's --change)
        self.fresh_layers: list[str] = []  # layers this build added to the store
        self.downloads: list[str] = []  # ADD's downloaded files, removed when the build ends
        self.memo: dict[str, list[Any]] | None = None

    # ------------------------------------------------------------------ output
    def say(self, text: str) -> None:
        if not self.opts.quiet:
            print(text, file=self.out, flush=True)

    def where(self, ins: Instruction) -> str:
        return self.df.where(ins)

    def fail(self, ins: Instruction, message: str, hint: str | None = None) -> DockerfileError:
        return DockerfileError(f"{self.where(ins)}: {message}", hint)

    def expand(self, state: State, ins: Instruction, text: str) -> str:
        try:
            return process_word(text, state.words_env(), self.df.escape)
        except SubstitutionError as e:
            raise self.fail(ins, e.message) from None

    def expand_words(self, state: State, ins: Instruction, text: str) -> list[str]:
        try:
            return process_words(text, state.words_env(), self.df.escape)
        except SubstitutionError as e:
            raise self.fail(ins, e.message) from None

    # ------------------------------------------------------------------ the build
    def run(self) -> str:
        """Build the target and return the new image's ID."""
        multi = len(self.plan.order) > 1
        self.check_platform(self.opts.platform, "--platform")
        for n, idx in enumerate(self.plan.order):
            stage = self.plan.stages[idx]
            self.check_platform(stage.platform, self.where(stage.from_ins))
            total = 1 + len(stage.instructions)
            prefix = f"[{n + 1}/{len(self.plan.order)}] " if multi else ""
            self.say(f"{prefix}STEP 1/{total}: {stage.from_ins.original}")
            state = self.from_(stage.base, stage.base_stage, stage.from_ins)
            self.onbuild(state, stage.from_ins)
            for i, ins in enumerate(stage.instructions):
                self.say(f"{prefix}STEP {i + 2}/{total}: {ins.original}")
                self.step(state, ins)
            self.ensure_workdir(state)
            self.results[idx] = state
        unused = sorted(set(self.opts.build_args) - self.used_args - set(PROXY_ARGS)
                        - {n for n, _ in self.plan.meta_args})
        if unused:
            self.ctx.log.warn(f"one or more build args were not consumed: {unused}")
        final = self.results[self.plan.target]
        if self.opts.squash or not self.opts.layers:
            self.squash(final)
        image_id = self.commit(final)
        if not self.opts.layers:
            self.drop_intermediate(final)
        return image_id

    def squash(self, state: State) -> None:
        """The build's new layers (above the base image's) merged into one, as Podman's --squash
        (and --layers=false, which commits once) makes them; the history keeps every step, with
        the one layer on the last that made one."""
        new = state.layers[state.base:]
        if len(new) < 2:
            return
        key = _chain(state.key, "squash")
        hit = self.cached(key)
        if hit:
            diff_id = hit["diff_id"]
        else:
            base = [str(self.ctx.layout.layer(d) / "diff") for d in reversed(state.layers[:state.base])]
            dirs = [str(self.ctx.layout.layer(d) / "diff") for d in new]
            made = self.new_layer(state, lambda layer: self.runner.call("rootless.build.layerfs:squash", layers=dirs,
                                                                        lowers=base, dest=layer))
            assert made is not None
            diff_id = made
            if self.cache:
                self.remember(key, {"created": now_rfc3339(), "diff_id": diff_id})
        state.layers = [*state.layers[:state.base], diff_id]
        hist = state.config.get("history") or []
        made_layer = [i for i in range(state.base_history, len(hist)) if not hist[i].get("empty_layer")]
        for i in made_layer[:-1]:
            hist[i]["empty_layer"] = True

    def drop_intermediate(self, state: State) -> None:
        """--layers=false: the step layers this build stored and its image does not use are removed."""
        from storage.images import ImageStore
        from storage.layers import LayerStore

        doomed = [d for d in dict.fromkeys(self.fresh_layers) if d not in state.layers]
        if not doomed:
            return
        used = ImageStore(self.ctx.layout).layers_in_use()
        store = LayerStore(self.ctx.layout, self.runner)
        for d in doomed:
            if d not in used:
                with contextlib.suppress(RootlessError, OSError):
                    store.remove(d)

    # ------------------------------------------------------------------ FROM
    def from_(self, base: str, base_stage: int | None, ins: Instruction) -> State:
        if base_stage is not None:
            src = self.results[base_stage]
            st = State(list(src.layers), json.loads(json.dumps(src.config)), src.key, src.base_name)
            st.base, st.base_history = src.base, src.base_history
            return st
        if base.lower() == "scratch":
            cfg: dict[str, Any] = {"architecture": platform_args()["TARGETARCH"], "os": "linux",
                                   "config": {}, "rootfs": {"type": "layers", "diff_ids": []}, "history": []}
            return State([], cfg, _chain("", "scratch"), "scratch")
        record = self.image(base, ins)
        from storage.blobs import BlobStore

        try:
            cfg = json.loads(BlobStore(self.ctx.layout).read_bytes(record.config_digest))
        except (OSError, ValueError) as e:
            raise RootlessError(f"read the config of {base}: {e}", "pull the image again") from None
        cfg.setdefault("config", {})
        cfg.setdefault("history", [])
        return State(list(record.diff_ids), cfg, _chain("", f"image {record.id}"),
                     record.names[0] if record.names else record.id)

    def check_platform(self, text: str | None, where: str) -> None:
        if not text:
            return
        from rootless.image import manifest as mf

        want, host = mf.parse_platform(text), mf.host_platform()
        if (want.os, want.architecture) != (host.os, host.architecture):
            raise RootlessError(f"{where}: platform {text}: only this host's platform "
                                f"({host.os}/{host.architecture}) can be built", "drop the platform option")

    def image(self, name: str, ins: Instruction) -> Any:
        from rootless.image import present

        record = None
        if self.opts.pull != "always":
            try:
                record = present.find(self.ctx, name)
            except RootlessError:
                if self.opts.pull == "never":
                    raise self.fail(ins, f"the image {name} is not in the store and --pull=never forbids "
                                         "pulling it", "pull it first, or drop --pull=never") from None
        if record is None:
            from rootless.image.pull import pull

            record = pull(self.ctx, name, quiet=True, show_progress=False)
        return record

    def onbuild(self, state: State, from_ins: Instruction) -> None:
        triggers = state.c.pop("OnBuild", None) or []
        for text in triggers:
            sub = parse(f"{text}\n", self.df.path).instructions
            for t in sub:
                trig = Instruction(cmd=t.cmd, line=from_ins.line, original=t.original, args=t.args, flags=t.flags,
                                   json_args=t.json_args, heredocs=t.heredocs)
                self.say(f"--> ONBUILD {t.original}")
                self.step(state, trig)

    # ------------------------------------------------------------------ steps
    def step(self, state: State, ins: Instruction) -> None:
        handler = getattr(self, f"do_{ins.cmd.lower()}")
        handler(state, ins)

    def history(self, state: State, created_by: str, empty: bool, created: str) -> None:
        entry: dict[str, Any] = {"created": created, "created_by": created_by}
        if empty:
            entry["empty_layer"] = True
        state.config.setdefault("history", []).append(entry)
        state.config["created"] = created

    def cached(self, key: str) -> dict[str, Any] | None:
        if self.opts.no_cache:
            return None
        try:
            data = json.loads((self.ctx.layout.build_cache / f"{key}.json").read_bytes())
        except (OSError, ValueError):
            return None
        diff_id = data.get("diff_id")
        if diff_id and not (self.ctx.layout.layer(diff_id) / "meta.json").is_file():
            return None
        return data if isinstance(data, dict) else None

    def remember(self, key: str, data: dict[str, Any]) -> None:
        from storage.atomic import write_atomic

        d = self.ctx.layout.build_cache
        d.mkdir(parents=True, exist_ok=True, mode=0o700)
        write_atomic(d / f"{key}.json", json.dumps(data).encode(), durable=False)

    def config_step(self, state: State, ins: Instruction, text: str) -> None:
        """A step that changes only the config: its key is its (expanded) text."""
        key = _chain(state.key, text)
        hit = self.cached(key)
        created = hit["created"] if hit else now_rfc3339()
        if hit:
            self.say(f"--> Using cache {key}")
        elif self.cache:
            self.remember(key, {"created": created})
        self.history(state, _NOP + text, True, created)
        state.key = key

    def layer_step(self, state: State, ins: Instruction | None, text: str, created_by: str, make: Any,
                   quiet: bool = False) -> None:
        """A step that adds a layer: ``make(state)`` returns its diff ID, unless the cache has it."""
        key = _chain(state.key, text)
        hit = self.cached(key)
        if hit:
            if not quiet:
                self.say(f"--> Using cache {key}")
            diff_id, created = hit["diff_id"], hit["created"]
        else:
            t0 = time.monotonic()
            diff_id = make(state)
            self.ctx.log.debug(f"step {ins.original if ins else text}: layer made in {time.monotonic() - t0:.2f}s")
            created = now_rfc3339()
            if self.cache:
                self.remember(key, {"created": created, "diff_id": diff_id})
        state.layers.append(diff_id)
        self.history(state, created_by, False, created)
        state.key = key
        if not quiet:
            self.say(f"--> {key[:12]}")

    # -- config instructions
    def _pairs(self, state: State, ins: Instruction) -> list[tuple[str, str]]:
        words = split_quoted(ins.args, self.df.escape)
        env = state.words_env()
        try:
            if words and "=" not in words[0]:
                # the legacy form: NAME VALUE (the whole rest is the value)
                key = words[0]
                rest = ins.args[len(key):].strip()
                return [(key, process_word(rest, env, self.df.escape))]
            out = []
            for w in words:
                k, eq, v = w.partition("=")
                if not eq or not k:
                    raise self.fail(ins, f"{ins.cmd} {w!r}: expected NAME=VALUE", f"write it as {ins.cmd} NAME=VALUE")
                out.append((process_word(k, env, self.df.escape), process_word(v, env, self.df.escape)))
            return out
        except SubstitutionError as e:
            raise self.fail(ins, e.message) from None

    def do_env(self, state: State, ins: Instruction) -> None:
        pairs = self._pairs(state, ins)
        for k, v in pairs:
            state.set_env(k, v)
        self.config_step(state, ins, "ENV " + " ".join(f'{k}="{v}"' if " " in v else f"{k}={v}"
                                                     for k, v in pairs))

    def do_label(self, state: State, ins: Instruction) -> None:
        pairs = self._pairs(state, ins)
        labels = dict(state.c.get("Labels") or {})
        labels.update(pairs)
        state.c["Labels"] = labels
        self.config_step(state, ins, "LABEL " + " ".join(f"{k}={v}" for k, v in pairs))

    def do_maintainer(self, state: State, ins: Instruction) -> None:
        state.config["author"] = ins.args
        self.config_step(state, ins, f"MAINTAINER {ins.args}")

    def do_arg(self, state: State, ins: Instruction) -> None:
        for name, default in parse_arg(ins, self.df):
            if name in self.opts.build_args:
                value: str | None = self.opts.build_args[name]
                self.used_args.add(name)
            elif default is not None:
                value = self.expand(state, ins, default)
            else:
                value = self.meta.get(name)
            if value is not None:
                state.args[name] = value
            else:
                state.args.pop(name, None)
            if name not in state.declared:
                state.declared.append(name)
        text = "ARG " + " ".join(f"{n}={state.args[n]}" if n in state.args else n
                                 for n, _ in parse_arg(ins, self.df))
        self.config_step(state, ins, text)

    def _exec_or_shell(self, state: State, ins: Instruction) -> list[str]:
        if ins.json_args is not None:
            return list(ins.json_args)
        shell = list(state.c.get("Shell") or DEFAULT_SHELL)
        return [*shell, ins.args] if ins.args else []

    def do_cmd(self, state: State, ins: Instruction) -> None:
        state.c["Cmd"] = self._exec_or_shell(state, ins)
        state.cmd_set = True  # type: ignore[attr-defined]
        self.config_step(state, ins, f"CMD {json.dumps(state.c['Cmd'])}")

    def do_entrypoint(self, state: State, ins: Instruction) -> None:
        state.c["Entrypoint"] = self._exec_or_shell(state, ins) or None
        if not getattr(state, "cmd_set", False):
            # the Dockerfile reference: an ENTRYPOINT resets a CMD inherited from the base image
            state.c.pop("Cmd", None)
        self.config_step(state, ins, f"ENTRYPOINT {json.dumps(state.c['Entrypoint'])}")

    def do_user(self, state: State, ins: Instruction) -> None:
        state.c["User"] = self.expand(state, ins, ins.args)
        self.config_step(state, ins, f"USER {state.c['User']}")

    def do_expose(self, state: State, ins: Instruction) -> None:
        ports = dict(state.c.get("ExposedPorts") or {})
        for w in self.expand_words(state, ins, ins.args):
            port, _, proto = w.partition("/")
            proto = (proto or "tcp").lower()
            lo, _, hi = port.partition("-")
            if not lo.isdigit() or (hi and not hi.isdigit()) or proto not in ("tcp", "udp", "sctp"):
                raise self.fail(ins, f"invalid port {w!r}", "write it as PORT[/tcp|udp|sctp]")
            for p in range(int(lo), int(hi or lo) + 1):
                ports[f"{p}/{proto}"] = {}
        state.c["ExposedPorts"] = ports
        self.config_step(state, ins, f"EXPOSE {' '.join(sorted(ports))}")

    def do_volume(self, state: State, ins: Instruction) -> None:
        vols = dict(state.c.get("Volumes") or {})
        paths = [self.expand(state, ins, a) for a in ins.json_args] if ins.json_args is not None \
            else self.expand_words(state, ins, ins.args)
        for p in paths:
            if not p:
                raise self.fail(ins, "VOLUME needs a path", "write it as VOLUME /path")
            vols[p] = {}
        state.c["Volumes"] = vols
        self.config_step(state, ins, f"VOLUME {json.dumps(paths)}")

    def do_stopsignal(self, state: State, ins: Instruction) -> None:
        state.c["StopSignal"] = self.expand(state, ins, ins.args)
        self.config_step(state, ins, f"STOPSIGNAL {state.c['StopSignal']}")

    def do_shell(self, state: State, ins: Instruction) -> None:
        state.c["Shell"] = list(ins.json_args or ())
        self.config_step(state, ins, f"SHELL {json.dumps(state.c['Shell'])}")

    def do_onbuild(self, state: State, ins: Instruction) -> None:
        inner = ins.args.split(None, 1)[0].upper() if ins.args else ""
        if inner in ("ONBUILD", "FROM", "MAINTAINER"):
            raise self.fail(ins, f"ONBUILD {inner} is not allowed", "ONBUILD takes any other instruction")
        state.c["OnBuild"] = [*(state.c.get("OnBuild") or []), ins.args]
        self.config_step(state, ins, f"ONBUILD {ins.args}")

    def do_healthcheck(self, state: State, ins: Instruction) -> None:
        words = ins.args.split(None, 1)
        kind = words[0].upper()
        if kind == "NONE":
            hc: dict[str, Any] = {"Test": ["NONE"]}
        elif kind == "CMD" and len(words) == 2:
            rest = words[1].strip()
            try:
                parsed = json.loads(rest) if rest.startswith("[") else None
            except ValueError:
                parsed = None
            hc = {"Test": ["CMD", *parsed] if isinstance(parsed, list) else ["CMD-SHELL", rest]}
            for flag, key in (("--interval", "Interval"), ("--timeout", "Timeout"),
                              ("--start-period", "StartPeriod"), ("--start-interval", "StartInterval")):
                v = ins.flag(flag)
                if v:
                    hc[key] = _duration(v, self.where(ins), flag)
            if ins.flag("--retries"):
                try:
                    hc["Retries"] = int(ins.flag("--retries") or "")
                except ValueError:
                    raise self.fail(ins, f"--retries {ins.flag('--retries')!r} is not a number") from None
        else:
            raise self.fail(ins, "HEALTHCHECK takes NONE or CMD COMMAND", "write it as HEALTHCHECK CMD command")
        state.c["Healthcheck"] = hc
        self.config_step(state, ins, f"HEALTHCHECK {json.dumps(hc, sort_keys=True)}")

    def do_workdir(self, state: State, ins: Instruction) -> None:
        # Created when a later step needs it, as Buildah does: COPY's destination (with its
        # --chown owner), RUN's working directory, or at the end of the stage (ensure_workdir).
        path = self.expand(state, ins, ins.args)
        cur = state.c.get("WorkingDir") or "/"
        path = posixpath.normpath(posixpath.join(cur, path))
        state.c["WorkingDir"] = path
        self.config_step(state, ins, f"WORKDIR {path}")

    def ensure_workdir(self, state: State) -> None:
        """The stage's working directory exists in its image (a layer of its own if missing)."""
        path = state.c.get("WorkingDir") or "/"
        if path == "/" or self.runner.call("rootless.build.layerfs:exists", lowers=self.lowers(state),
                                           paths=[path])[0]:
            return
        text = f"WORKDIR {path} (create)"
        key = _chain(state.key, text)
        hit = self.cached(key)
        if hit is None:
            made = self.new_layer(state, lambda layer: self.runner.call(
                "rootless.build.layerfs:mkdirs", layer=layer, lowers=self.lowers(state), path=path))
            assert made is not None
            self.layer_step(state, None, text, _NOP + f"WORKDIR {path}", lambda _s: made, quiet=True)
        else:
            self.layer_step(state, None, text, _NOP + f"WORKDIR {path}", lambda _s: hit["diff_id"], quiet=True)

    # -- layers written directly
    def lowers(self, state: State) -> list[str]:
        return [str(self.ctx.layout.layer(d) / "diff") for d in reversed(state.layers)]

    def new_layer(self, state: State, fill: Any, own: bool = False) -> str | None:
        """A fresh layer directory filled by ``fill(path)`` (False/None result and nothing
        written: no layer), sealed and stored; returns its diff ID."""
        from storage.layers import LayerStore

        store = LayerStore(self.ctx.layout, self.runner)
        with store.new_entry() as tmp:
            diff = tmp / "diff"
            diff.mkdir(mode=0o755)
            result = fill(str(diff))
            if result is False:
                return None
            return self.store_layer(store, tmp, own)

    def store_layer(self, store: Any, tmp: Any, own: bool = False) -> str:
        t0 = time.monotonic()
        sealed = self.runner.call("rootless.build.layerfs:seal", path=str(tmp / "diff"), own=own)
        self.ctx.log.debug(f"layer {sealed['diff_id'][:19]}: sealed in {time.monotonic() - t0:.2f}s")
        if not store.has(sealed["diff_id"]):
            self.fresh_layers.append(sealed["diff_id"])
        meta = {"diff_id": sealed["diff_id"], "blob": None, "media_type": LAYER_TAR, "origin": "build",
                "created": time.time(), "size": sealed["size"], "whiteout_format": sealed["whiteout_format"]}
        store.register(tmp, sealed["diff_id"], meta)
        self.made_layers.append(sealed["diff_id"])
        return str(sealed["diff_id"])

    def _chown(self, state: State, ins: Instruction) -> list[int] | None:
        text = ins.flag("--chown")
        if not text:
            return None
        text = self.expand(state, ins, text)
        user, _, group = text.partition(":")
        return list(self.runner.call("rootless.build.layerfs:lookup_ids", lowers=self.lowers(state),
                                     user=user, group=group or None))

    def _chmod(self, state: State, ins: Instruction) -> int | None:
        text = ins.flag("--chmod")
        if not text:
            return None
        try:
            mode = int(self.expand(state, ins, text), 8)
        except ValueError:
            raise self.fail(ins, f"--chmod {text!r} is not an octal mode", "write it as --chmod=0755") from None
        if not 0 <= mode <= 0o7777:
            raise self.fail(ins, f"--chmod {text!r} is out of range")
        return mode

    def do_copy(self, state: State, ins: Instruction) -> None:
        self.copy_or_add(state, ins, add=False)

    def do_add(self, state: State, ins: Instruction) -> None:
        self.copy_or_add(state, ins, add=True)

    def copy_or_add(self, state: State, ins: Instruction, add: bool) -> None:
        args = list(ins.json_args) if ins.json_args is not None else split_quoted(ins.args, self.df.escape)
        args = [self.expand(state, ins, a) for a in args]
        *srcs, dest = args
        workdir = state.c.get("WorkingDir") or "/"
        dest_dir = dest.endswith("/") or dest in (".", "..") or dest.endswith("/.")
        dest_abs = posixpath.normpath(posixpath.join(workdir, dest))
        chown, chmod = self._chown(state, ins), self._chmod(state, ins)
        heredocs = {h.name: h for h in ins.heredocs}
        items: list[dict[str, Any]] = []
        digest = hashlib.sha256()
        files: dict[str, str] = {}  # the context files' content digests, by host path
        from_ref = ins.flag("--from")
        what = self.where(ins)
        if from_ref is not None:
            items, text = self.copy_from(state, ins, self.expand(state, ins, from_ref), srcs, dest_abs, dest_dir)
            digest.update(text.encode())
        else:
            plain = []
            for s in srcs:
                name = s[2:].lstrip("-").strip("\"'") if s.startswith("<<") else None
                if name is not None and name in heredocs:
                    h = heredocs[name]
                    body = h.body
                    if h.expand:
                        try:
                            body = expand_heredoc(body, state.words_env(), self.df.escape)
                        except SubstitutionError as e:
                            raise self.fail(ins, e.message) from None
                    target = posixpath.join(dest_abs, name) if dest_dir else dest_abs
                    items.append({"data": body, "dest": target})
                    digest.update(f"heredoc {target}\0{body}\0".encode())
                elif add and s.startswith(("http://", "https://")):
                    items.append(self.download(ins, s, dest_abs, dest_dir, digest))
                elif s.startswith("git@") or (add and s.endswith(".git") and "://" in s):
                    raise self.fail(ins, f"ADD of a git repository ({s}) is not supported",
                                    "clone it into the context and COPY it")
                else:
                    plain.append(s)
            if plain:
                try:
                    sources = self.context.sources(plain, what)
                except ContextError as e:
                    raise DockerfileError(e.message, e.hint) from None
                if (len(sources) + len(items) > 1) and not dest_dir:
                    raise self.fail(ins, f"{ins.cmd} with several sources needs a directory as destination, "
                                         f"ending in '/': {dest}", f"write the destination as {dest}/")
                digest.update(digest_sources(self.context, sources, self.file_memo(), files).encode())
                for src in sources:
                    if add and not src.is_dir and _archive_kind(src.path):
                        items.append({"archive": src.path, "dest": dest_abs})
                        continue
                    if src.is_dir:
                        items.append({"src": src.path, "dest": dest_abs, "contents": True,
                                      "skip": self.context.excluded_under(src)})
                    else:
                        target = posixpath.join(dest_abs, src.name) if dest_dir else dest_abs
                        items.append({"src": src.path, "dest": target})
        flags = " ".join(f"{k}={v}" for k, v in ins.flags if k in ("--chown", "--chmod", "--from"))
        text = f"{ins.cmd} {flags} {digest.hexdigest()} {dest_abs}{'/' if dest_dir else ''}"
        created_by = f"{_NOP}{ins.cmd} {('' if not flags else flags + ' ')}{ins.args if ins.json_args is None else json.dumps(list(ins.json_args))}"  # noqa: E501

        # the step's identity without its sources' digest: where its previous layer is found
        reuse = _chain(state.key, f"reuse {ins.cmd} {flags} {json.dumps(args)}") if files else None

        def make(_s: State) -> str:
            index: dict[str, str] = {}
            try:
                # a plain copy holds no overlay bookkeeping for seal to undo (an archive's may)
                own = not any("archive" in i for i in items)
                diff_id = self.new_layer(state, lambda layer: self.fill_copy(state, layer, items, chown, chmod,
                                                                             files, reuse, index), own)
            except DockerfileError:
                raise
            except RootlessError as e:  # a full disk, a source that vanished: name the step
                raise self.fail(ins, e.message, e.hint) from None
            assert diff_id is not None
            if reuse is not None and self.cache:
                self.remember_copy(reuse, diff_id, index)
            return diff_id

        self.layer_step(state, ins, text, created_by, make)

    def previous_copy(self, reuse: str | None) -> tuple[str | None, dict[str, str] | None]:
        """The layer directory and file index the same COPY step made last (or None)."""
        if reuse is None or self.opts.no_cache:
            return None, None
        try:
            data = json.loads((self.ctx.layout.build_cache / "copies" / f"{reuse}.json").read_bytes())
            layer = self.ctx.layout.layer(str(data["diff_id"]))
            files = data["files"]
        except (OSError, ValueError, KeyError, TypeError):
            return None, None
        if not isinstance(files, dict) or not (layer / "meta.json").is_file():
            return None, None
        return str(layer / "diff"), files

    def remember_copy(self, reuse: str, diff_id: str, index: dict[str, str]) -> None:
        from storage.atomic import write_atomic

        d = self.ctx.layout.build_cache / "copies"
        d.mkdir(parents=True, exist_ok=True, mode=0o700)
        write_atomic(d / f"{reuse}.json", json.dumps({"diff_id": diff_id, "files": index}).encode(), durable=False)

    def fill_copy(self, state: State, layer: str, items: list[dict[str, Any]], chown: list[int] | None,
                  chmod: int | None, files: dict[str, str] | None = None, reuse: str | None = None,
                  index: dict[str, str] | None = None) -> bool:
        plain = [i for i in items if "archive" not in i]
        if plain:
            prev, known = self.previous_copy(reuse)
            t0 = time.monotonic()
            done = self.runner.call("rootless.build.layerfs:copy", layer=layer, lowers=self.lowers(state),
                                    items=plain, chown=chown, chmod=chmod, digests=files or None, prev=prev,
                                    known=known)
            if index is not None:
                index.update(done.get("index") or {})
            self.ctx.log.debug(f"COPY: {done.get('files')} entries in {time.monotonic() - t0:.2f}s, "
                               f"{done.get('linked')} of them linked from the previous layer")
        for item in items:
            if "archive" in item:
                self.runner.call("rootless.build.layerfs:extract", layer=layer, lowers=self.lowers(state),
                                 archive=item["archive"], dest=item["dest"])
        return True

    def copy_from(self, state: State, ins: Instruction, ref: str, srcs: Sequence[str], dest_abs: str,
                  dest_dir: bool) -> tuple[list[dict[str, Any]], str]:
        lowers, ident = self.union_of(ins, ref)
        if len(srcs) > 1 and not dest_dir:
            raise self.fail(ins, f"COPY with several sources needs a directory as destination, ending in '/': "
                                 f"{dest_abs}", f"write the destination as {dest_abs}/")
        items = []
        for s in srcs:
            items.append({"union": lowers, "path": s, "dest": dest_abs, "dest_dir": dest_dir})
        return items, f"from {ident} {json.dumps(list(srcs))}"

    def union_of(self, ins: Instruction, ref: str) -> tuple[list[str], str]:
        """``--from=ref``: the layer directories (top first) of that stage or image, and what
        identifies their content in a cache key."""
        by_name = {s.name: s.index for s in self.plan.stages if s.name}
        cur = next((s.index for s in self.plan.stages if ins in s.instructions), len(self.plan.stages))
        idx = stage_ref(ref, by_name, cur)
        if idx is not None and idx in self.results:
            src_state = self.results[idx]
            return self.lowers(src_state), src_state.key
        record = self.image(ref, ins)
        return [str(self.ctx.layout.layer(d) / "diff") for d in reversed(record.diff_ids)], str(record.id)

    def download(self, ins: Instruction, url: str, dest_abs: str, dest_dir: bool, digest: Any) -> dict[str, Any]:
        import urllib.parse

        from rootless.build.fetch import fetch

        checksum = ins.flag("--checksum")
        path, _sha = fetch(self.ctx, url, checksum, self.where(ins))
        name = posixpath.basename(urllib.parse.urlparse(url).path) or "index.html"
        digest.update(f"url {url} {_sha}\0".encode())
        self.downloads.append(path)
        return {"src": path, "dest": posixpath.join(dest_abs, name) if dest_dir else dest_abs}

    def file_memo(self) -> dict[str, list[Any]]:
        """Digests of context files by their stat, kept between builds (context.digest_sources)."""
        if self.memo is None:
            try:
                data = json.loads((self.ctx.layout.build_cache / "files.json").read_bytes())
                self.memo = data if isinstance(data, dict) else {}
            except (OSError, ValueError):
                self.memo = {}
        return self.memo

    def save_memo(self) -> None:
        if self.memo is not None and self.cache:
            from storage.atomic import write_atomic

            self.ctx.layout.build_cache.mkdir(parents=True, exist_ok=True, mode=0o700)
            write_atomic(self.ctx.layout.build_cache / "files.json", json.dumps(self.memo).encode(),
                         durable=False)

    # -- RUN
    def do_run(self, state: State, ins: Instruction) -> None:
        from rootless.build.runstep import run_step

        run_step(self, state, ins)

    # ------------------------------------------------------------------ the image
    def commit(self, state: State) -> str:
        c = state.c
        for item in self.opts.labels:
            k, _, v = item.partition("=")
            c["Labels"] = {**(c.get("Labels") or {}), k: v}
        self.say(f"COMMIT {self.opts.tags[0] if self.opts.tags else ''}".rstrip())
        names = tuple(tag_name(t) for t in self.opts.tags)
        image_id = record_image(self.ctx, self.runner, state.config, state.layers, names,
                                docker=self.opts.format == "docker",
                                annotations=dict(a.partition("=")[::2] for a in self.opts.annotations))
        self.say(f"--> {image_id[:12]}")
        for n in names:
            self.say(f"Successfully tagged {n}")
        return image_id


def record_image(ctx: Context, runner: NamespaceRunner, cfg: dict[str, Any], layers: Sequence[str],
                 names: tuple[str, ...], *, docker: bool, annotations: Mapping[str, str] | None = None) -> str:
    """Store the image made of ``layers`` (diff IDs of stored layers, base first) and the
    config ``cfg``: config and manifest blobs, then the record under ``names``. The layers
    are listed uncompressed (their digest is their diff ID); push compresses them once."""
    from storage.blobs import BlobStore
    from storage.images import ImageRecord, ImageStore, LayerEntry
    from storage.layers import LayerStore

    c = cfg.setdefault("config", {})
    if not docker:
        dropped = [word for key, word in _DOCKER_ONLY if c.pop(key, None) is not None]
        if dropped:
            ctx.log.warn(f"{', '.join(dropped)} {'is' if len(dropped) == 1 else 'are'} not supported by "
                         "the OCI image format and will be ignored: use --format docker to keep it")
    cfg["rootfs"] = {"type": "layers", "diff_ids": list(layers)}
    cfg.setdefault("architecture", platform_args()["TARGETARCH"])
    cfg.setdefault("os", "linux")
    cfg.setdefault("created", now_rfc3339())
    for k in ("container", "container_config", "docker_version", "parent", "id"):
        cfg.pop(k, None)
    ls = LayerStore(ctx.layout, runner)
    sizes = {d: int(ls.meta(d).get("size", 0)) for d in dict.fromkeys(layers)}
    blobs = BlobStore(ctx.layout)
    config_bytes = json.dumps(cfg, separators=(",", ":"), sort_keys=True).encode()
    config_digest = blobs.put_bytes(config_bytes)
    layer_type = DOCKER_LAYER if docker else LAYER_TAR
    manifest: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": DOCKER_MANIFEST if docker else OCI_MANIFEST,
        "config": {"mediaType": DOCKER_CONFIG if docker else OCI_CONFIG, "digest": config_digest,
                   "size": len(config_bytes)},
        "layers": [{"mediaType": layer_type, "digest": d, "size": sizes[d]} for d in layers],
    }
    if annotations and not docker:
        manifest["annotations"] = dict(annotations)
    manifest_digest = blobs.put_bytes(json.dumps(manifest, separators=(",", ":")).encode())
    image_id = config_digest.partition(":")[2]
    record = ImageRecord(
        id=image_id, names=names, manifest_digest=manifest_digest, config_digest=config_digest,
        layers=tuple(LayerEntry(d, d, layer_type, sizes[d]) for d in layers),
        created=str(cfg.get("created", "")), os=str(cfg.get("os", "linux")),
        arch=str(cfg.get("architecture", "amd64")), size=sum(sizes[d] for d in layers))
    ImageStore(ctx.layout).add(record, list(names))
    return image_id


def tag_name(tag: str) -> str:
    from rootless.image.reference import parse_reference

    try:
        ref = parse_reference(tag)
    except RootlessError as e:
        raise RootlessError(f"--tag {tag}: {e.message}", "give a name such as myimage or myimage:1.0") from None
    first, slash, _ = tag.partition("/")
    if slash and ("." in first or ":" in first or first == "localhost"):
        return ref.tagged_name
    # Podman names an image built without a registry localhost/NAME, not docker.io/library/NAME
    last = tag.rsplit("/", 1)[-1]
    return f"localhost/{tag}" if ":" in last or "@" in last else f"localhost/{tag}:latest"


def _archive_kind(path: str) -> str | None:
    """The compression of a local tar ADD extracts, None if it is not a tar archive."""
    try:
        with open(path, "rb") as f:
            head = f.read(512)
    except OSError:
        return None
    if head[:2] == b"\x1f\x8b":
        return "gzip"
    if head[:3] == b"BZh":
        return "bzip2"
    if head[:6] == b"\xfd7zXZ\x00":
        return "xz"
    if head[:4] == b"\x28\xb5\x2f\xfd":
        return "zstd"
    if len(head) == 512 and head[257:262] == b"ustar":
        return "none"
    return None


def _duration(text: str, where: str, flag: str) -> int:
    """Go's duration syntax (30s, 1m30s, 500ms) → nanoseconds, as the image config holds them."""
    import re

    units = {"ns": 1, "us": 1000, "µs": 1000, "ms": 10**6, "s": 10**9, "m": 60 * 10**9, "h": 3600 * 10**9}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)", text)
    if not parts or "".join(a + b for a, b in parts) != text:
        raise DockerfileError(f"{where}: {flag} {text!r} is not a duration", "write it as 30s, 1m or 500ms")
    return int(sum(float(n) * units[u] for n, u in parts))


def build(ctx: Context, opts: BuildOptions) -> str:
    """Build and return the image ID (the CLI prints it)."""
    from rootless.runtime.run import LazyStoreNamespace
    from storage.locks import FileLock

    if not os.path.isdir(opts.context):
        raise RootlessError(f"the build context {opts.context} is not a directory",
                            "give the directory holding the files to copy, or - for a tar on stdin")
    if opts.format not in ("oci", "docker"):
        raise RootlessError(f"--format {opts.format}: must be oci or docker")
    ctx.layout.ensure_store()
    gc_lock = FileLock(ctx.layout.locks / "gc.lock", shared=True)
    gc_lock.acquire()
    try:
        with LazyStoreNamespace(ctx) as runner:
            builder = Builder(ctx, opts, runner)
            try:
                image_id = builder.run()
                builder.save_memo()
            finally:
                for path in builder.downloads:
                    with contextlib.suppress(OSError):
                        os.unlink(path)
    finally:
        gc_lock.release()
    if opts.iidfile:
        from storage.atomic import write_atomic

        write_atomic(opts.iidfile, f"sha256:{image_id}".encode())
    return image_id
