"""Docker's word processing for Dockerfile instructions: quotes, escapes and ``$VAR``.

The Dockerfile reference ("Environment replacement") lists where substitution happens: ADD,
COPY, ENV, EXPOSE, FROM, LABEL, STOPSIGNAL, USER, VOLUME, WORKDIR, ONBUILD's trigger when it
runs, and ARG's default. RUN, CMD and ENTRYPOINT are left to the container's shell. As in
Docker's lexer, single quotes keep everything literal, double quotes keep spaces and allow
``$`` substitution, the escape character (``\\`` or the ``# escape=`` one) takes the next
character literally, and quote characters are removed. Supported forms: ``$VAR``,
``${VAR}``, ``${VAR:-word}``, ``${VAR-word}``, ``${VAR:+word}``, ``${VAR+word}``,
``${VAR:?msg}``, ``${VAR?msg}``. An unset variable expands to nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from rootless.errors import RootlessError

_NAME_FIRST = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz_")
_NAME = _NAME_FIRST | frozenset("0123456789")


class SubstitutionError(RootlessError):
    """A ``${VAR:?msg}`` whose variable is unset, or a malformed ``${...}``."""


class _Lexer:
    def __init__(self, text: str, env: Mapping[str, str], escape: str, used: set[str] | None,
                 quotes: bool = True) -> None:
        self.quotes = quotes
        self.s = text
        self.i = 0
        self.env = env
        self.esc = escape
        self.used = used

    def peek(self) -> str:
        return self.s[self.i] if self.i < len(self.s) else ""

    def take(self) -> str:
        ch = self.peek()
        self.i += 1
        return ch

    def words(self, split: bool) -> list[str]:
        """The text's words (one word when ``split`` is False)."""
        out: list[str] = []
        cur: list[str] = []
        started = False
        while self.i < len(self.s):
            ch = self.take()
            if split and ch in " \t\r\n":
                if started:
                    out.append("".join(cur))
                    cur, started = [], False
                continue
            started = True
            cur.append(self.atom(ch))
        if started or not split:
            out.append("".join(cur))
        return out

    def single(self) -> str:
        end = self.s.find("'", self.i)
        if end < 0:
            raise SubstitutionError(f"unexpected end of text looking for the closing ' in {self.s!r}")
        out = self.s[self.i:end]
        self.i = end + 1
        return out

    def double(self) -> str:
        cur: list[str] = []
        while True:
            if self.i >= len(self.s):
                raise SubstitutionError(f'unexpected end of text looking for the closing " in {self.s!r}')
            ch = self.take()
            if ch == '"':
                return "".join(cur)
            if ch == self.esc and self.peek() in ('"', "$", self.esc):
                cur.append(self.take())
            elif ch == "$":
                cur.append(self.dollar())
            else:
                cur.append(ch)

    def lookup(self, name: str) -> str | None:
        if self.used is not None:
            self.used.add(name)
        return self.env.get(name)

    def dollar(self) -> str:
        ch = self.peek()
        if ch == "{":
            self.take()
            return self.braced()
        if ch and ch in _NAME_FIRST:
            start = self.i
            while self.peek() and self.peek() in _NAME:
                self.i += 1
            return self.lookup(self.s[start:self.i]) or ""
        return "$"

    def braced(self) -> str:
        start = self.i
        while self.peek() and self.peek() in _NAME:
            self.i += 1
        name = self.s[start:self.i]
        if not name:
            raise SubstitutionError(f"bad substitution in {self.s!r}: a name must follow '${{'")
        ch = self.take()
        if ch == "}":
            return self.lookup(name) or ""
        colon = ch == ":"
        if colon:
            ch = self.take()
        if ch not in ("-", "+", "?"):
            raise SubstitutionError(f"bad substitution in {self.s!r}: unsupported modifier after ${{{name}")
        word = self.word_until_brace()
        value = self.lookup(name)
        is_set = value is not None and (value != "" or not colon)
        if ch == "-":
            return value if is_set and value is not None else word
        if ch == "+":
            return word if is_set else ""
        if not is_set:
            raise SubstitutionError(f"{name}: {word or 'is not set'}")
        return value or ""

    def word_until_brace(self) -> str:
        """The ``word`` of ``${VAR:-word}``, itself expanded, up to the matching ``}``."""
        cur: list[str] = []
        while True:
            if self.i >= len(self.s):
                raise SubstitutionError(f"bad substitution in {self.s!r}: missing '}}'")
            ch = self.take()
            if ch == "}":
                return "".join(cur)
            cur.append(self.atom(ch))

    def atom(self, ch: str) -> str:
        """What the unquoted character ``ch`` (already taken) and what it introduces stand for."""
        if not self.quotes:
            if ch == self.esc and self.peek() in ("$", self.esc):
                return self.take()
            return self.dollar() if ch == "$" else ch
        if ch == self.esc:
            return self.take() or ch
        if ch == "'":
            return self.single()
        if ch == '"':
            return self.double()
        if ch == "$":
            return self.dollar()
        return ch


def process_word(text: str, env: Mapping[str, str], escape: str = "\\", used: set[str] | None = None) -> str:
    """``text`` with quotes removed and variables substituted, as one word."""
    return _Lexer(text, env, escape, used).words(split=False)[0]


def process_words(text: str, env: Mapping[str, str], escape: str = "\\",
                  used: set[str] | None = None) -> list[str]:
    """``text`` split at unquoted white space, each word processed as ``process_word`` does."""
    return _Lexer(text, env, escape, used).words(split=True)


def expand_heredoc(text: str, env: Mapping[str, str], escape: str = "\\") -> str:
    """A heredoc body with an unquoted delimiter: variables substituted, quotes kept as text."""
    return _Lexer(text, env, escape, None, quotes=False).words(split=False)[0]


def split_quoted(text: str, escape: str = "\\") -> list[str]:
    """Split at unquoted white space, keeping quotes and escapes for later processing (ENV,
    LABEL and ARG split ``k=v`` pairs first, then process each value)."""
    out: list[str] = []
    cur: list[str] = []
    quote = ""
    i = 0
    while i < len(text):
        ch = text[i]
        if quote:
            cur.append(ch)
            if ch == escape and quote == '"' and i + 1 < len(text):
                cur.append(text[i + 1])
                i += 1
            elif ch == quote:
                quote = ""
        elif ch == escape and i + 1 < len(text):
            cur += [ch, text[i + 1]]
            i += 1
        elif ch in "'\"":
            quote = ch
            cur.append(ch)
        elif ch in " \t\r\n":
            if cur:
                out.append("".join(cur))
                cur = []
        else:
            cur.append(ch)
        i += 1
    if quote:
        raise SubstitutionError(f"unmatched {quote} in {text!r}")
    if cur:
        out.append("".join(cur))
    return out


def expander(env: Mapping[str, str], escape: str = "\\", used: set[str] | None = None) -> Callable[[str], str]:
    return lambda text: process_word(text, env, escape, used)
