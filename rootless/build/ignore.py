"""``.containerignore`` / ``.dockerignore``: which context paths COPY and ADD never see.

Docker's rules (the Dockerfile reference, ".dockerignore file"): one pattern a line, ``#``
lines are comments, surrounding white space is trimmed, each pattern is cleaned as a path
(a leading ``/`` means the context root, as no ``/`` does); ``*``, ``?`` and ``[...]`` match
within one path component as Go's filepath.Match does, ``**`` matches any number of
directories (none included); ``!`` makes an exception. A pattern that matches a directory
excludes everything under it. The last pattern that matches a path decides.
"""

from __future__ import annotations

import os
import posixpath
import re
from collections.abc import Sequence

from rootless.record import dataclass


@dataclass(frozen=True)
class Pattern:
    text: str
    exclusion: bool  # a "!" exception
    regex: re.Pattern[str]


def _compile(pattern: str) -> re.Pattern[str]:
    out = ["^"]
    i, n = 0, len(pattern)
    while i < n:
        ch = pattern[i]
        if ch == "*":
            if i + 1 < n and pattern[i + 1] == "*":
                i += 1
                if i + 1 < n and pattern[i + 1] == "/":
                    i += 1
                    out.append("(.*/)?")
                else:
                    out.append(".*")
            else:
                out.append("[^/]*")
        elif ch == "?":
            out.append("[^/]")
        elif ch == "\\" and i + 1 < n:
            i += 1
            out.append(re.escape(pattern[i]))
        elif ch == "[":
            end = pattern.find("]", i + 2 if i + 1 < n and pattern[i + 1] in "^!" else i + 1)
            if end < 0:
                out.append(re.escape(ch))
            else:
                body = pattern[i + 1:end]
                if body.startswith(("^", "!")):
                    body = "^" + body[1:].replace("\\", "\\\\")
                else:
                    body = body.replace("\\", "\\\\")
                out.append(f"[{body}]")
                i = end
        else:
            out.append(re.escape(ch))
        i += 1
    out.append("$")
    return re.compile("".join(out), re.S)


def parse(text: str) -> list[Pattern]:
    patterns = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        exclusion = line.startswith("!")
        if exclusion:
            line = line[1:].strip()
        cleaned = posixpath.normpath(line).lstrip("/") if line else ""
        if cleaned in ("", "."):
            # "!" alone or "/" alone: Docker keeps "." which matches the whole context
            cleaned = "."
        patterns.append(Pattern(text=cleaned, exclusion=exclusion, regex=_compile(cleaned)))
    return patterns


class Matcher:
    def __init__(self, patterns: Sequence[Pattern]) -> None:
        self.patterns = tuple(patterns)
        self.has_exceptions = any(p.exclusion for p in self.patterns)

    def excluded(self, rel: str) -> bool:
        """Whether the context path ``rel`` (relative, "/"-separated) is ignored."""
        if not self.patterns:
            return False
        rel = posixpath.normpath(rel).lstrip("/")
        parents = []
        p = posixpath.dirname(rel)
        while p and p != ".":
            parents.append(p)
            p = posixpath.dirname(p)
        matched = False
        for pat in self.patterns:
            if pat.exclusion != matched:
                continue
            if pat.text == "." or pat.regex.match(rel) or any(pat.regex.match(q) for q in parents):
                matched = not pat.exclusion
        return matched

    def may_descend(self, rel: str) -> bool:
        """Whether an excluded directory may still hold paths an exception brings back."""
        if not self.has_exceptions:
            return False
        prefix = rel.rstrip("/") + "/"
        for pat in self.patterns:
            if not pat.exclusion:
                continue
            literal = re.split(r"[*?\[\\]", pat.text, maxsplit=1)[0]
            if literal.startswith(prefix) or prefix.startswith(literal) or not literal:
                return True
        return False


def find_file(context: str, dockerfile: str | None) -> str | None:
    """The ignore file that applies: ``<Dockerfile>.containerignore`` or ``.dockerignore``
    beside the Dockerfile first (it wins), then ``.containerignore`` or ``.dockerignore`` in
    the context's root."""
    if dockerfile:
        for suffix in (".containerignore", ".dockerignore"):
            candidate = dockerfile + suffix
            if os.path.isfile(candidate):
                return candidate
    for name in (".containerignore", ".dockerignore"):
        candidate = os.path.join(context, name)
        if os.path.isfile(candidate):
            return candidate
    return None
