"""The Dockerfile (Containerfile) parser: text → instructions, nothing evaluated yet.

Follows the Dockerfile reference: parser directives (``# escape=`` and ``# syntax=``) are
read only at the very top, before any comment, blank line or instruction; a line ending in
the escape character continues on the next; comment lines (``#`` first) are dropped, also
inside a continued instruction; an instruction is its keyword (any case) and its arguments;
``--flag=value`` words lead the arguments of FROM, RUN, COPY, ADD and HEALTHCHECK; RUN, CMD,
ENTRYPOINT, SHELL, COPY, ADD and VOLUME also take a JSON array (exec form). Heredocs
(``<<EOF``, ``<<-EOF``, ``<<"EOF"``) of RUN, COPY and ADD take the lines after the
instruction up to the delimiter. Every error names ``file:line``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence

from rootless.errors import RootlessError
from rootless.record import dataclass

INSTRUCTIONS = frozenset({
    "FROM", "RUN", "CMD", "LABEL", "MAINTAINER", "EXPOSE", "ENV", "ADD", "COPY", "ENTRYPOINT", "VOLUME",
    "USER", "WORKDIR", "ARG", "ONBUILD", "STOPSIGNAL", "HEALTHCHECK", "SHELL"})
_FLAGGED = frozenset({"FROM", "RUN", "COPY", "ADD", "HEALTHCHECK"})
_JSON_FORM = frozenset({"RUN", "CMD", "ENTRYPOINT", "SHELL", "COPY", "ADD", "VOLUME"})
_HEREDOC_OK = frozenset({"RUN", "COPY", "ADD"})
_DIRECTIVE = re.compile(r"^#\s*([a-zA-Z][a-zA-Z0-9]*)\s*=\s*(.+?)\s*$")
_HEREDOC = re.compile(r"<<(-?)(?:\"([^\"\s]+)\"|'([^'\s]+)'|([A-Za-z_][A-Za-z0-9_]*))")


class DockerfileError(RootlessError):
    """A Dockerfile that cannot be parsed or built: the message starts with ``file:line``."""


@dataclass(frozen=True)
class Heredoc:
    name: str
    body: str
    expand: bool  # an unquoted delimiter: variables in the body are substituted
    strip_tabs: bool


@dataclass(frozen=True)
class Instruction:
    cmd: str  # upper case
    line: int  # first line, 1-based
    original: str  # the instruction as written (continuations joined), for history and errors
    args: str  # the arguments after the flags
    flags: tuple[tuple[str, str | None], ...] = ()  # ("--from", "build") in order
    json_args: tuple[str, ...] | None = None  # the exec (JSON) form, when used
    heredocs: tuple[Heredoc, ...] = ()

    def flag(self, name: str) -> str | None:
        """The last value of ``--name`` ("" for a bare ``--name``), None when absent."""
        value = None
        for k, v in self.flags:
            if k == name:
                value = "" if v is None else v
        return value

    def flag_all(self, name: str) -> list[str]:
        return ["" if v is None else v for k, v in self.flags if k == name]


@dataclass(frozen=True)
class Dockerfile:
    path: str  # as named in messages
    instructions: tuple[Instruction, ...]
    escape: str = "\\"
    syntax: str | None = None

    def where(self, ins: Instruction) -> str:
        return f"{self.path}:{ins.line}"


def parse(text: str, path: str = "Dockerfile") -> Dockerfile:
    lines = text.replace("\r\n", "\n").split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    escape, syntax, i = _directives(lines, path)
    out: list[Instruction] = []
    n = len(lines)
    while i < n:
        raw = lines[i]
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            i += 1
            continue
        start = i
        parts: list[str] = []
        line = raw.lstrip()
        while True:
            body = line.rstrip()
            if body.endswith(escape) and not _escaped(body, escape):
                parts.append(body[:-1])
                i += 1
                # comment and empty lines inside a continued instruction are dropped
                while i < n and (not lines[i].strip() or lines[i].lstrip().startswith("#")):
                    i += 1
                if i >= n:
                    break
                line = lines[i]
                continue
            parts.append(line)
            i += 1
            break
        logical = "".join(parts).strip()
        ins, i = _instruction(logical, start + 1, lines, i, path, escape)
        out.append(ins)
    return Dockerfile(path=path, instructions=tuple(out), escape=escape, syntax=syntax)


def _escaped(body: str, escape: str) -> bool:
    """Whether the final escape character is itself escaped (an even run of them)."""
    run = len(body) - len(body.rstrip(escape))
    return run % 2 == 0


def _directives(lines: Sequence[str], path: str) -> tuple[str, str | None, int]:
    escape, syntax, seen = "\\", None, set()
    i = 0
    while i < len(lines):
        m = _DIRECTIVE.match(lines[i].strip()) if lines[i].strip().startswith("#") else None
        if m is None:
            break
        key, value = m.group(1).lower(), m.group(2)
        if key in seen:
            raise DockerfileError(f"{path}:{i + 1}: the parser directive {key} is given twice",
                                  "keep one of them")
        seen.add(key)
        if key == "escape":
            if value not in ("\\", "`"):
                raise DockerfileError(f"{path}:{i + 1}: invalid escape character {value!r}",
                                      "use # escape=\\ or # escape=`")
            escape = value
        elif key == "syntax":
            syntax = value
        i += 1
    return escape, syntax, i


def _instruction(logical: str, line: int, lines: Sequence[str], i: int, path: str,
                 escape: str) -> tuple[Instruction, int]:
    word, _, rest = logical.partition(" ") if " " in logical else logical.partition("\t")
    cmd = word.upper()
    if cmd not in INSTRUCTIONS:
        raise DockerfileError(f"{path}:{line}: unknown instruction: {word}",
                              "check the spelling; the instructions are listed in the Dockerfile reference")
    rest = rest.strip()
    flags: list[tuple[str, str | None]] = []
    if cmd in _FLAGGED:
        while rest.startswith("--"):
            flag, _, after = rest.partition(" ")
            if "\t" in flag:
                flag, _, tail = flag.partition("\t")
                after = tail + " " + after
            name, eq, value = flag.partition("=")
            if name == "--":
                break
            flags.append((name, value if eq else None))
            rest = after.strip()
    json_args = None
    if cmd in _JSON_FORM and rest.startswith("["):
        try:
            parsed = json.loads(rest)
        except ValueError:
            parsed = None
        if isinstance(parsed, list) and all(isinstance(a, str) for a in parsed):
            json_args = tuple(parsed)
        elif cmd == "SHELL":
            raise DockerfileError(f"{path}:{line}: SHELL requires the arguments as a JSON array of strings",
                                  'write it as SHELL ["/bin/sh", "-c"]')
    elif cmd == "SHELL":
        raise DockerfileError(f"{path}:{line}: SHELL requires the arguments as a JSON array of strings",
                              'write it as SHELL ["/bin/sh", "-c"]')
    heredocs: list[Heredoc] = []
    if cmd in _HEREDOC_OK and json_args is None and "<<" in rest:
        for m in _HEREDOC.finditer(rest):
            name = m.group(2) or m.group(3) or m.group(4)
            strip = m.group(1) == "-"
            body: list[str] = []
            while True:
                if i >= len(lines):
                    raise DockerfileError(f"{path}:{line}: the heredoc <<{name} is not closed",
                                          f"end it with a line holding only {name}")
                text = lines[i]
                i += 1
                candidate = text.lstrip("\t") if strip else text
                if candidate == name:
                    break
                body.append(candidate)
            heredocs.append(Heredoc(name=name, body="".join(b + "\n" for b in body),
                                    expand=m.group(4) is not None, strip_tabs=strip))
    ins = Instruction(cmd=cmd, line=line, original=logical, args=rest, flags=tuple(flags),
                      json_args=json_args, heredocs=tuple(heredocs))
    _check(ins, path)
    return ins, i


_ALLOWED_FLAGS = {
    "FROM": {"--platform"},
    "RUN": {"--mount", "--network", "--security"},
    "COPY": {"--from", "--chown", "--chmod", "--link", "--parents", "--exclude"},
    "ADD": {"--chown", "--chmod", "--checksum", "--link", "--keep-git-dir", "--exclude"},
    "HEALTHCHECK": {"--interval", "--timeout", "--start-period", "--start-interval", "--retries"},
}


def _check(ins: Instruction, path: str) -> None:
    where = f"{path}:{ins.line}"
    allowed = _ALLOWED_FLAGS.get(ins.cmd, set())
    for name, _ in ins.flags:
        if name not in allowed:
            raise DockerfileError(f"{where}: {ins.cmd} does not take the flag {name}",
                                  f"{ins.cmd} takes {', '.join(sorted(allowed)) or 'no flags'}")
    needs_args = ins.cmd not in ("CMD", "ENTRYPOINT")
    if needs_args and not ins.args and ins.json_args is None:
        raise DockerfileError(f"{where}: {ins.cmd} requires at least one argument",
                              "see the Dockerfile reference for its form")
    if ins.cmd in ("COPY", "ADD"):
        n = len(ins.json_args) if ins.json_args is not None else len(ins.args.split())
        if n < 2:
            raise DockerfileError(f"{where}: {ins.cmd} requires at least two arguments (sources and a "
                                  "destination)", f"write it as {ins.cmd} SRC... DEST")
