"""Stages, build arguments and which stages a target needs: the pure half of a build.

A Dockerfile is a list of stages, each opened by FROM. ARGs before the first FROM are the
build's "meta" arguments: usable in FROM lines only, and inside a stage after a bare
``ARG NAME`` imports them. Inside a stage an ARG is visible from its line to the stage's
end; its value is the ``--build-arg`` one, else its default. ENV overrides an ARG of the
same name. The proxy ARGs (HTTP_PROXY, ...) may be given without being declared; they reach
RUN's environment but neither the image's history nor the cache key (Dockerfile reference,
"Predefined ARGs"). Only the stages the target needs are built, dependencies first; a
stage is needed when the target is based on it, copies from it, or mounts it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

from rootless.build.dockerfile import Dockerfile, DockerfileError, Instruction
from rootless.build.words import SubstitutionError, process_word, split_quoted
from rootless.record import dataclass

PROXY_ARGS = ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "FTP_PROXY", "ftp_proxy",
              "NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy")


def platform_args(os_: str = "linux", arch: str = "amd64", variant: str = "") -> dict[str, str]:
    """BuildKit's automatic platform ARGs (global scope: a stage must declare them to use them)."""
    plat = f"{os_}/{arch}" + (f"/{variant}" if variant else "")
    out = {}
    for prefix in ("TARGET", "BUILD"):
        out[f"{prefix}PLATFORM"] = plat
        out[f"{prefix}OS"] = os_
        out[f"{prefix}ARCH"] = arch
        out[f"{prefix}VARIANT"] = variant
    return out


@dataclass(frozen=True)
class Stage:
    index: int
    name: str | None  # the AS name, lower-cased
    base: str  # FROM's image (meta ARGs substituted): an image, "scratch", or another stage's name
    base_stage: int | None  # the stage it is based on, if any
    platform: str | None
    from_ins: Instruction
    instructions: tuple[Instruction, ...]  # after FROM
    deps: tuple[int, ...]  # stages copied or mounted from (base included)


@dataclass(frozen=True)
class Plan:
    dockerfile: Dockerfile
    meta_args: tuple[tuple[str, str | None], ...]  # ARGs before the first FROM: name, default
    stages: tuple[Stage, ...]
    order: tuple[int, ...]  # stages to build, dependencies first, the target last
    target: int

    @property
    def steps(self) -> int:
        return sum(1 + len(self.stages[i].instructions) for i in self.order)


def parse_arg(ins: Instruction, df: Dockerfile) -> list[tuple[str, str | None]]:
    """An ARG's ``name[=default]`` pairs, defaults still unexpanded."""
    out: list[tuple[str, str | None]] = []
    for word in split_quoted(ins.args, df.escape):
        name, eq, default = word.partition("=")
        if not name or not (name[0].isalpha() or name[0] == "_") or not name.replace("_", "a").isalnum():
            raise DockerfileError(f"{df.where(ins)}: ARG name {name!r} is not valid",
                                  "use letters, digits and underscores, starting with a letter or underscore")
        out.append((name, default if eq else None))
    return out


def meta_values(meta: Sequence[tuple[str, str | None]], build_args: Mapping[str, str],
                df: Dockerfile, ins_of: Mapping[str, Instruction]) -> dict[str, str]:
    """The meta ARGs' values: defaults expanded in order, overridden by --build-arg."""
    values: dict[str, str] = platform_args()
    for name, default in meta:
        if name in build_args:
            values[name] = build_args[name]
        elif default is not None:
            try:
                values[name] = process_word(default, values, df.escape)
            except SubstitutionError as e:
                raise DockerfileError(f"{df.where(ins_of[name])}: {e.message}") from None
        elif name not in platform_args():
            values.pop(name, None)
    return values


def _expand(text: str, env: Mapping[str, str], df: Dockerfile, ins: Instruction) -> str:
    try:
        return process_word(text, env, df.escape)
    except SubstitutionError as e:
        raise DockerfileError(f"{df.where(ins)}: {e.message}") from None


def _from_parts(ins: Instruction, df: Dockerfile, meta: Mapping[str, str]) -> tuple[str, str | None]:
    words = ins.args.split()
    if len(words) == 3 and words[1].lower() == "as":
        image, name = words[0], words[2].lower()
        if not name or not all(c.isalnum() or c in "_.-" for c in name) or not name[0].isalpha():
            raise DockerfileError(f"{df.where(ins)}: invalid stage name {words[2]!r}",
                                  "a stage name starts with a letter and holds letters, digits, '_', '.', '-'")
    elif len(words) == 1:
        image, name = words[0], None
    else:
        raise DockerfileError(f"{df.where(ins)}: FROM takes an image and an optional 'AS name'",
                              "write it as FROM IMAGE [AS NAME]")
    return _expand(image, meta, df, ins), name


def _mount_froms(ins: Instruction) -> list[str]:
    out = []
    for spec in ins.flag_all("--mount"):
        for part in spec.split(","):
            k, _, v = part.partition("=")
            if k.strip() == "from" and v:
                out.append(v.strip())
    return out


def make_plan(df: Dockerfile, build_args: Mapping[str, str] | None = None, target: str | None = None) -> Plan:
    build_args = dict(build_args or {})
    meta: list[tuple[str, str | None]] = []
    ins_of: dict[str, Instruction] = {}
    ins_list = list(df.instructions)
    i = 0
    while i < len(ins_list) and ins_list[i].cmd == "ARG":
        for pair in parse_arg(ins_list[i], df):
            meta.append(pair)
            ins_of[pair[0]] = ins_list[i]
        i += 1
    if i >= len(ins_list):
        raise DockerfileError(f"{df.path}: the file has no FROM instruction", "start a stage with FROM IMAGE")
    if ins_list[i].cmd != "FROM":
        raise DockerfileError(f"{df.where(ins_list[i])}: {ins_list[i].cmd} before the first FROM",
                              "only ARG may come before the first FROM")
    values = meta_values(meta, build_args, df, ins_of)
    raw: list[tuple[Instruction, list[Instruction]]] = []
    for ins in ins_list[i:]:
        if ins.cmd == "FROM":
            raw.append((ins, []))
        else:
            raw[-1][1].append(ins)
    stages: list[Stage] = []
    by_name: dict[str, int] = {}
    for idx, (from_ins, body) in enumerate(raw):
        base, name = _from_parts(from_ins, df, values)
        if name is not None:
            if name in by_name:
                raise DockerfileError(f"{df.where(from_ins)}: the stage name {name!r} is used twice",
                                      "give each stage its own name")
            by_name[name] = idx
        base_stage = by_name.get(base.lower()) if base.lower() != name else None
        platform = from_ins.flag("--platform")
        stages.append(Stage(index=idx, name=name, base=base, base_stage=base_stage,
                            platform=_expand(platform, values, df, from_ins) if platform else None,
                            from_ins=from_ins, instructions=tuple(body), deps=()))
    # dependencies by name may point forward (BuildKit allows it), so resolve after all are known
    resolved = []
    for st in stages:
        deps: list[int] = [] if st.base_stage is None else [st.base_stage]
        for ins in st.instructions:
            refs = []
            if ins.cmd == "COPY" and ins.flag("--from"):
                refs.append(ins.flag("--from") or "")
            if ins.cmd == "RUN":
                refs += _mount_froms(ins)
            for ref in refs:
                ref = _expand(ref, values, df, ins)
                dep = stage_ref(ref, by_name, st.index)
                if dep is not None and dep not in deps:
                    if dep == st.index:
                        raise DockerfileError(f"{df.where(ins)}: circular dependency: stage {ref!r} copies "
                                              "from itself", "copy from an earlier stage or an image")
                    deps.append(dep)
        resolved.append(Stage(index=st.index, name=st.name, base=st.base, base_stage=st.base_stage,
                              platform=st.platform, from_ins=st.from_ins, instructions=st.instructions,
                              deps=tuple(deps)))
    stages = resolved
    if target is None:
        tgt = len(stages) - 1
    else:
        t = by_name.get(target.lower())
        if t is None:
            names = ", ".join(n for n in by_name) or "none"
            raise DockerfileError(f"{df.path}: --target {target}: no stage has that name (stages: {names})",
                                  "name a stage given with FROM ... AS NAME")
        tgt = t
    order: list[int] = []
    state: dict[int, int] = {}  # 1: on the path, 2: done

    def visit(n: int, via: Instruction) -> None:
        if state.get(n) == 2:
            return
        if state.get(n) == 1:
            raise DockerfileError(f"{df.where(via)}: circular dependency between stages "
                                  f"(stage {stages[n].name or n} depends on itself through --from)",
                                  "break the cycle: a stage may not copy from a stage that needs it")
        state[n] = 1
        for d in stages[n].deps:
            visit(d, _dep_ins(stages[n], d, stages, df) or stages[n].from_ins)
        state[n] = 2
        order.append(n)

    visit(tgt, stages[tgt].from_ins)
    return Plan(dockerfile=df, meta_args=tuple(meta), stages=tuple(stages), order=tuple(order), target=tgt)


def _dep_ins(st: Stage, dep: int, stages: Sequence[Stage], df: Dockerfile) -> Instruction | None:
    for ins in st.instructions:
        ref = ins.flag("--from") if ins.cmd == "COPY" else None
        if ref is not None and (ref.lower() == (stages[dep].name or "") or ref == str(dep)):
            return ins
    return None


def stage_ref(ref: str, by_name: Mapping[str, int], current: int) -> int | None:
    """The stage ``--from=ref`` names (a name, or the index of an earlier stage), else None
    (then it is an image)."""
    if ref.lower() in by_name:
        return by_name[ref.lower()]
    if ref.isdigit():
        n = int(ref)
        if n < current or n == current:
            return n
    return None


def build_args_from(items: Sequence[str], environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """``--build-arg K=V`` (and ``K`` alone: its value from the environment, skipped when unset)."""
    env = os.environ if environ is None else environ
    out: dict[str, str] = {}
    for item in items:
        k, eq, v = item.partition("=")
        if not k:
            raise DockerfileError(f"--build-arg {item!r}: a name is needed before '='", "write it as NAME=VALUE")
        if eq:
            out[k] = v
        elif k in env:
            out[k] = env[k]
    return out
