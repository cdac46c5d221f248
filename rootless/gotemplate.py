"""Go text/template for ``--format``, as Podman's commands evaluate it.

Scripts read Podman's and Docker's output through Go templates (``{{.State.Pid}}``,
``table {{.ID}}\\t{{.Names}}``); this is a small evaluator of that language (pkg.go.dev/text/template):
actions with field paths, variables, pipelines, parenthesised commands, ``if``/``else if``/``else``,
``range`` (with ``$i, $v :=``, ``else``, ``break``, ``continue``), ``with``, comments and ``{{-``/``-}}``
trimming; Go's builtin functions (and, or, not, len, index, slice, print, printf, println, eq, ne,
lt, le, gt, ge, html, js, urlquery) and the ones Podman adds (json, join, lower, upper, title,
split, truncate, pad). Values print as Go's fmt prints them (``map[a:1 b:2]``, ``[x y]``, ``<nil>``,
``<no value>``).

Data is JSON-shaped Python (dict, list, str, int, float, bool, None). A dict stands for a Go struct
when all its keys are exported names (a missing field is then an error, as on a struct) and for a
map otherwise (a missing key prints ``<no value>``). Errors are :class:`TemplateError`, one line
in Go's words: ``template: ps:1:8: executing "ps" at <.Nmae>: can't evaluate field Nmae``.

``render`` adds Podman's conventions on top: a leading ``table`` prints a header row (names from
the fields, as Podman prints them) and aligns columns as Go's tabwriter does; ``json`` alone prints
the data as indented JSON; ``\\t`` in the format is a tab; each row ends with a newline.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from rootless.errors import RootlessError


class TemplateError(RootlessError):
    pass


class _NoValue:
    """Go's invalid reflect.Value: a missing map key (prints ``<no value>``)."""

    def __repr__(self) -> str:
        return "<no value>"


NO_VALUE = _NoValue()


class GoStruct(dict[str, Any]):
    """A Go struct value with its fields in order: fmt's %v prints ``{v1 v2 ...}`` (a dict of
    exported names is a struct for field access already; this one also prints as one)."""


class GoStringer(str):
    """A Go value whose String method has a pointer receiver (net.IPNet in a struct field): the
    template prints the string, fmt prints *nested* (its fields) when it is inside another value."""

    nested: str

    def __new__(cls, text: str, nested: str) -> GoStringer:
        o = super().__new__(cls, text)
        o.nested = nested
        return o


# --------------------------------------------------------------------------- lexer

_KEYWORDS = {"if", "else", "end", "range", "with", "define", "template", "block", "break", "continue",
             "nil", "true", "false"}

_TOKEN = re.compile(r"""
    (?P<space>\s+)
  | (?P<comment>/\*.*?\*/)
  | (?P<string>"(?:[^"\\\n]|\\.)*")
  | (?P<raw>`[^`]*`)
  | (?P<char>'(?:[^'\\\n]|\\.)+')
  | (?P<number>[+-]?(?:0[xX][0-9a-fA-F_]+|0[bB][01_]+|0[oO][0-7_]+|(?:\d[\d_]*\.?[\d_]*|\.\d[\d_]*)(?:[eE][+-]?\d+)?))
  | (?P<field>(?:\.[A-Za-z_][A-Za-z0-9_]*)+)
  | (?P<var>\$[A-Za-z0-9_]*)
  | (?P<dot>\.)
  | (?P<declare>:=)
  | (?P<assign>=)
  | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<lparen>\()
  | (?P<rparen>\))
  | (?P<pipe>\|)
  | (?P<comma>,)
""", re.X | re.S)


class _Tok:
    __slots__ = ("kind", "text", "pos")

    def __init__(self, kind: str, text: str, pos: int) -> None:
        self.kind, self.text, self.pos = kind, text, pos


class _Src:
    def __init__(self, name: str, text: str) -> None:
        self.name, self.text = name, text

    def where(self, pos: int) -> str:
        line = self.text.count("\n", 0, pos) + 1
        col = pos - (self.text.rfind("\n", 0, pos) + 1) + 1
        return f"{self.name}:{line}:{col}"

    def fail(self, pos: int, msg: str) -> TemplateError:
        return TemplateError(f"template: {self.where(pos)}: {msg}",
                             hint="see the Go text/template syntax: https://pkg.go.dev/text/template")


def _lex(src: _Src) -> list[tuple[str, Any, int]]:
    """The template as a list of ("text", str, pos) and ("action", [tokens], pos) items."""
    text = src.text
    items: list[tuple[str, Any, int]] = []
    i = 0
    trim_next = False
    while i < len(text):
        j = text.find("{{", i)
        chunk = text[i:] if j < 0 else text[i:j]
        if trim_next:
            chunk = chunk.lstrip(" \t\r\n")
        trim = j >= 0 and text[j + 2:j + 3] == "-" and text[j + 3:j + 4] in (" ", "\t", "\r", "\n")
        if trim:
            chunk = chunk.rstrip(" \t\r\n")
        if chunk:
            items.append(("text", chunk, i))
        if j < 0:
            break
        start = j
        k = j + (3 if trim else 2)
        toks: list[_Tok] = []
        trim_next = False
        while True:
            if k >= len(text):
                raise src.fail(start, "unclosed action")
            if text.startswith("}}", k):
                k += 2
                break
            m = _TOKEN.match(text, k)
            if m is None:
                raise src.fail(k, f"bad character {_go_char(text[k])}")
            kind = m.lastgroup or ""
            if kind == "space" and text.startswith("-}}", m.end()):
                trim_next = True
                k = m.end() + 3
                break
            if kind == "comment":
                if toks:
                    raise src.fail(k, "comment ends before closing delimiter")
            elif kind != "space":
                toks.append(_Tok(kind, m.group(), k))
            k = m.end()
        items.append(("action", toks, start))
        i = k
    return items


def _go_char(c: str) -> str:
    return f"U+{ord(c):04X} {c!r}"


# --------------------------------------------------------------------------- parser

class _Node:
    pos = 0


class _Text(_Node):
    def __init__(self, text: str, pos: int) -> None:
        self.text, self.pos = text, pos


class _Cmd(_Node):
    """One command of a pipeline: its operands (each a tuple: kind, value, [trailing fields])."""

    def __init__(self, args: list[tuple[str, Any, list[str], int]], pos: int) -> None:
        self.args, self.pos = args, pos


class _Pipe(_Node):
    def __init__(self, decl: list[str], assign: bool, cmds: list[_Cmd], pos: int, text: str) -> None:
        self.decl, self.assign, self.cmds, self.pos, self.text = decl, assign, cmds, pos, text


class _Action(_Node):
    def __init__(self, pipe: _Pipe, pos: int) -> None:
        self.pipe, self.pos = pipe, pos


class _Branch(_Node):
    def __init__(self, kind: str, pipe: _Pipe, body: list[_Node], other: list[_Node] | None, pos: int) -> None:
        self.kind, self.pipe, self.body, self.other, self.pos = kind, pipe, body, other, pos


class _Jump(_Node):
    def __init__(self, kind: str, pos: int) -> None:
        self.kind, self.pos = kind, pos


class _Parser:
    def __init__(self, src: _Src) -> None:
        self.src = src
        self.items = _lex(src)
        self.i = 0
        self.loops = 0

    def parse(self) -> list[_Node]:
        body, end = self._list()
        if end is not None:
            raise self.src.fail(end[1], f"unexpected {{{{{end[0]}}}}}")
        return body

    def _list(self) -> tuple[list[_Node], tuple[str, int, list[_Tok]] | None]:
        """Nodes up to an {{end}} or {{else ...}}, and which of them stopped the list."""
        out: list[_Node] = []
        while self.i < len(self.items):
            kind, val, pos = self.items[self.i]
            self.i += 1
            if kind == "text":
                out.append(_Text(val, pos))
                continue
            toks: list[_Tok] = val
            if not toks:
                continue  # a comment
            head = toks[0]
            if head.kind == "ident" and head.text in ("end", "else"):
                if head.text == "end" and len(toks) > 1:
                    raise self.src.fail(toks[1].pos, f"unexpected {toks[1].text!r} in end")
                return out, (head.text, head.pos, toks[1:])
            if head.kind == "ident" and head.text in ("if", "range", "with"):
                out.append(self._branch(head.text, toks[1:], head.pos))
            elif head.kind == "ident" and head.text in ("break", "continue"):
                if not self.loops:
                    raise self.src.fail(head.pos, f"{{{{{head.text}}}}} outside {{{{range}}}}")
                out.append(_Jump(head.text, head.pos))
            elif head.kind == "ident" and head.text in ("define", "template", "block"):
                raise self.src.fail(head.pos, f"{{{{{head.text}}}}} is not supported in --format")
            else:
                out.append(_Action(self._pipe(toks, pos, None), pos))
        return out, None

    def _branch(self, kind: str, toks: list[_Tok], pos: int) -> _Branch:
        pipe = self._pipe(toks, pos, kind)
        if kind == "range":
            self.loops += 1
        body, end = self._list()
        if kind == "range":
            self.loops -= 1
        if end is None:
            raise self.src.fail(pos, f"unexpected EOF: {{{{{kind}}}}} has no {{{{end}}}}")
        other: list[_Node] | None = None
        if end[0] == "else":
            rest = end[2]
            if rest and rest[0].kind == "ident" and rest[0].text in ("if", "with") and kind != "range":
                # {{else if X}}: a nested branch that shares this one's {{end}}
                other = [self._branch(rest[0].text, rest[1:], rest[0].pos)]
            elif rest:
                raise self.src.fail(rest[0].pos, f"unexpected {rest[0].text!r} in else")
            else:
                other, end2 = self._list()
                if end2 is None:
                    raise self.src.fail(pos, f"unexpected EOF: {{{{{kind}}}}} has no {{{{end}}}}")
                if end2[0] != "end":
                    raise self.src.fail(end2[1], "expected end; found {{else}}")
        return _Branch(kind, pipe, body, other, pos)

    def _pipe(self, toks: list[_Tok], pos: int, ctx: str | None) -> _Pipe:
        decl: list[str] = []
        assign = False
        k = 0
        # `$x :=`, `$i, $v :=`, `$x =`
        if toks and toks[0].kind == "var":
            if len(toks) > 1 and toks[1].kind in ("declare", "assign"):
                decl, assign, k = [toks[0].text], toks[1].kind == "assign", 2
            elif len(toks) > 3 and toks[1].kind == "comma" and toks[2].kind == "var" and \
                    toks[3].kind in ("declare", "assign") and ctx == "range":
                decl, assign, k = [toks[0].text, toks[2].text], toks[3].kind == "assign", 4
        cmds: list[_Cmd] = []
        cur: list[tuple[str, Any, list[str], int]] = []
        cpos = toks[k].pos if k < len(toks) else pos
        while k < len(toks):
            t = toks[k]
            if t.kind == "pipe":
                if not cur:
                    raise self.src.fail(t.pos, "missing command")
                cmds.append(_Cmd(cur, cpos))
                cur = []
                k += 1
                cpos = toks[k].pos if k < len(toks) else t.pos
                continue
            operand, k = self._operand(toks, k)
            cur.append(operand)
        if cur:
            cmds.append(_Cmd(cur, cpos))
        elif cmds:
            raise self.src.fail(pos, "missing command")
        if not cmds:
            raise self.src.fail(pos, f"missing value for {ctx or 'command'}")
        end = toks[-1].pos + len(toks[-1].text) if toks else pos
        start = toks[0].pos if toks else pos
        return _Pipe(decl, assign, cmds, pos, self.src.text[start:end])

    def _operand(self, toks: list[_Tok], k: int) -> tuple[tuple[str, Any, list[str], int], int]:
        t = toks[k]
        k += 1
        kind = t.kind
        val: Any = t.text
        if kind == "lparen":
            depth, j = 1, k
            while j < len(toks) and depth:
                depth += {"lparen": 1, "rparen": -1}.get(toks[j].kind, 0)
                j += 1
            if depth:
                raise self.src.fail(t.pos, "unclosed left paren")
            val = self._pipe(toks[k:j - 1], t.pos, "parenthesized pipeline")
            kind, k = "pipe", j
        elif kind == "rparen":
            raise self.src.fail(t.pos, "unexpected right paren")
        elif kind in ("declare", "assign", "comma"):
            raise self.src.fail(t.pos, f"unexpected {val!r} in command")
        elif kind == "ident" and val in _KEYWORDS and val not in ("nil", "true", "false"):
            raise self.src.fail(t.pos, f"unexpected <{val}> in command")
        elif kind == "string":
            val = _unquote(val, self.src, t.pos)
        elif kind == "raw":
            kind, val = "string", val[1:-1]
        elif kind == "char":
            kind, val = "number", ord(_unquote('"' + val[1:-1] + '"', self.src, t.pos))
        elif kind == "number":
            val = _number(val, self.src, t.pos)
        elif kind == "field":
            val = val[1:].split(".")
        fields: list[str] = []
        # a field chain after an operand: (index .X 0).Name, $v.Name
        while k < len(toks) and toks[k].kind == "field" and toks[k].pos == toks[k - 1].pos + len(toks[k - 1].text):
            fields.extend(toks[k].text[1:].split("."))
            k += 1
        return (kind, val, fields, t.pos), k


def _unquote(text: str, src: _Src, pos: int) -> str:
    try:
        val = json.loads(re.sub(r"\\([abfv'])|\\x([0-9a-fA-F]{2})|\\([0-7]{3})", _escape, text), strict=False)
    except ValueError:
        raise src.fail(pos, f"bad quoted string: {text}") from None
    return val  # type: ignore[no-any-return]


def _escape(m: re.Match[str]) -> str:
    if m.group(1):
        return {"a": "\\u0007", "b": "\\b", "f": "\\f", "v": "\\u000b", "'": "'"}[m.group(1)]
    code = int(m.group(2), 16) if m.group(2) else int(m.group(3), 8)
    return f"\\u{code:04x}"


def _number(text: str, src: _Src, pos: int) -> int | float:
    t = text.replace("_", "")
    try:
        if re.fullmatch(r"[+-]?0[xX][0-9a-fA-F]+|[+-]?0[bB][01]+|[+-]?0[oO][0-7]+", t):
            return int(t, 0)
        if re.fullmatch(r"[+-]?0[0-7]+", t):
            return int(t.replace("0", "0o", 1) if t[0] == "0" else t[0] + "0o" + t[2:], 0)
        if re.fullmatch(r"[+-]?\d+", t):
            return int(t)
        return float(t)
    except ValueError:
        raise src.fail(pos, f"bad number syntax: {text!r}") from None


# --------------------------------------------------------------------------- values as Go prints them

def _type(v: Any) -> str:
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, int):
        return "int"
    if isinstance(v, float):
        return "float64"
    if isinstance(v, str):
        return "string"
    if isinstance(v, list | tuple):
        return "[]interface {}"
    if isinstance(v, dict):
        return "map[string]interface {}"
    return "<nil>"


def _float(f: float) -> str:
    """strconv.FormatFloat(f, 'g', -1, 64) as fmt's %v uses it: the shortest digits that round-trip,
    in exponent form below 1e-4 and from 1e6 (1e+06)."""
    if f != f:
        return "NaN"
    if f in (float("inf"), float("-inf")):
        return "+Inf" if f > 0 else "-Inf"
    if f == 0:
        return "0"
    from decimal import Decimal

    sign, digits, exp = Decimal(repr(f)).normalize().as_tuple()
    ds = "".join(map(str, digits))
    assert isinstance(exp, int)
    point = len(ds) + exp  # decimal point position
    e = point - 1
    neg = "-" if sign else ""
    if e < -4 or e >= 6:
        mant = ds[0] + ("." + ds[1:] if len(ds) > 1 else "")
        return f"{neg}{mant}e{'-' if e < 0 else '+'}{abs(e):02d}"
    if point <= 0:
        return f"{neg}0.{'0' * -point}{ds}"
    if point >= len(ds):
        return neg + ds + "0" * (point - len(ds))
    return f"{neg}{ds[:point]}.{ds[point:]}"


def fmt_value(v: Any) -> str:
    """fmt's %v."""
    if v is NO_VALUE:
        return "<no value>"
    if v is None:
        return "<nil>"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return _float(v)
    if isinstance(v, str):
        return v
    if isinstance(v, list | tuple):
        return "[" + " ".join(_inner(x) for x in v) + "]"
    if isinstance(v, GoStruct):
        return "{" + " ".join(_inner(x) for x in v.values()) + "}"
    if isinstance(v, dict):
        return "map[" + " ".join(f"{fmt_value(k)}:{_inner(v[k])}" for k in sorted(v, key=_sort_key)) + "]"
    return str(v)


def _inner(v: Any) -> str:
    """%v of a value inside a slice, map or struct."""
    return v.nested if isinstance(v, GoStringer) else fmt_value(v)


def _sort_key(k: Any) -> tuple[int, Any]:
    return (0, k) if isinstance(k, int | float) else (1, str(k))


def _truth(v: Any) -> bool:
    if v is NO_VALUE or v is None:
        return False
    if isinstance(v, bool | int | float | str | list | tuple | dict):
        return bool(v)
    return True


def _go_quote(s: str) -> str:
    out = ['"']
    for ch in s:
        o = ord(ch)
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ch == "\r":
            out.append("\\r")
        elif o < 0x20 or o == 0x7F:
            out.append(f"\\x{o:02x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


_VERB = re.compile(r"%([-+# 0]*)(\*|\d+)?(\.(\*|\d+)?)?([a-zA-Z%])")


def sprintf(fmt: str, args: Sequence[Any]) -> str:
    """fmt.Sprintf for the verbs templates use: v s q d x X o b c f F e E g G t T %."""
    out: list[str] = []
    n = 0
    pos = 0
    for m in _VERB.finditer(fmt):
        out.append(fmt[pos:m.start()])
        pos = m.end()
        flags, width, dot, prec, verb = m.groups()
        if dot and prec is None:
            prec = "0"
        if verb == "%":
            out.append("%")
            continue
        if width == "*":
            width = str(args[n]) if n < len(args) else "0"
            n += 1
        if prec == "*":
            prec = str(args[n]) if n < len(args) else "0"
            n += 1
        if n >= len(args):
            out.append(f"%!{verb}(MISSING)")
            continue
        arg = args[n]
        n += 1
        out.append(_width(_verb(verb, arg, flags, prec), flags, int(width) if width else 0))
    out.append(fmt[pos:])
    if n < len(args):
        out.append("%!(EXTRA " + ", ".join(f"{_type(a)}={fmt_value(a)}" for a in args[n:]) + ")")
    return "".join(out)


def _width(s: str, flags: str, width: int) -> str:
    if len(s) >= width:
        return s
    if "-" in flags:
        return s + " " * (width - len(s))
    if "0" in flags and s[:1] in "+-" and s[1:2].isdigit():
        return s[0] + "0" * (width - len(s)) + s[1:]
    if "0" in flags and (s[:1].isdigit()):
        return "0" * (width - len(s)) + s
    return " " * (width - len(s)) + s


def _verb(verb: str, arg: Any, flags: str, prec: str | None) -> str:
    p = int(prec) if prec is not None else None
    bad = f"%!{verb}({_type(arg)}={fmt_value(arg)})"
    if verb == "T":
        return _type(arg)
    if verb == "v":
        return fmt_value(arg)
    if verb == "s":
        if isinstance(arg, bool | int | float) or arg is None:
            return bad
        s = fmt_value(arg)
        return s[:p] if p is not None else s
    if verb == "q":
        if isinstance(arg, str):
            return _go_quote(arg)
        if isinstance(arg, int) and not isinstance(arg, bool):
            return "'" + chr(arg) + "'"
        return bad
    if verb == "t":
        return fmt_value(arg) if isinstance(arg, bool) else bad
    if verb in "dxXobc":
        if isinstance(arg, bool) or not isinstance(arg, int):
            if verb in "xX" and isinstance(arg, str):
                h = arg.encode().hex()
                return h.upper() if verb == "X" else h
            return bad
        if verb == "c":
            return chr(arg)
        base = {"d": "d", "x": "x", "X": "X", "o": "o", "b": "b"}[verb]
        s = format(abs(arg), base)
        if "#" in flags and verb in "xXo":
            s = {"x": "0x", "X": "0X", "o": "0"}[verb] + s
        sign = "-" if arg < 0 else ("+" if "+" in flags else (" " if " " in flags else ""))
        return sign + s
    if verb in "fFeEgG":
        if isinstance(arg, bool) or not isinstance(arg, int | float):
            return bad
        f = float(arg)
        if verb in "gG" and p is None:
            s = _float(f)
        else:
            spec = f"{'+' if '+' in flags else ''}.{6 if p is None else p}{verb.lower() if verb == 'F' else verb}"
            s = format(f, spec)
        return s
    return f"%!{verb}({_type(arg)}={fmt_value(arg)})"


# --------------------------------------------------------------------------- functions

class _FuncError(Exception):
    pass


def _want_str(v: Any) -> str:
    if not isinstance(v, str):
        raise _FuncError(f"expected string; found {fmt_value(v)}")
    return v


def _want_int(v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise _FuncError(f"expected integer; found {fmt_value(v)}")
    return v


def _len(v: Any) -> int:
    if isinstance(v, str):
        return len(v.encode())  # Go counts bytes
    if isinstance(v, list | tuple | dict):
        return len(v)
    raise _FuncError(f"error calling len: len of type {_type(v)}")


def _index(v: Any, *keys: Any) -> Any:
    for k in keys:
        if isinstance(v, list | tuple | str):
            if isinstance(k, bool) or not isinstance(k, int):
                raise _FuncError(f"error calling index: cannot index slice/array with type {_type(k)}")
            if not 0 <= k < len(v):
                raise _FuncError(f"error calling index: index out of range: {k}")
            v = v[k] if not isinstance(v, str) else v.encode()[k]
        elif isinstance(v, dict):
            v = v[k] if k in v else "" if all(isinstance(x, str) for x in v.values()) else None
        elif v is None or v is NO_VALUE:
            raise _FuncError("error calling index: index of untyped nil")
        else:
            raise _FuncError(f"error calling index: can't index item of type {_type(v)}")
    return v


def _slice(v: Any, *idx: Any) -> Any:
    if not isinstance(v, str | list | tuple):
        raise _FuncError(f"error calling slice: can't slice item of type {_type(v)}")
    ix = [_want_int(i) for i in idx]
    if len(ix) > 2 or any(i < 0 or i > len(v) for i in ix) or (len(ix) == 2 and ix[0] > ix[1]):
        raise _FuncError(f"error calling slice: index out of range: {ix}")
    return v[slice(*ix)] if len(ix) == 2 else v[ix[0]:] if ix else v


def _basic(v: Any) -> tuple[str, Any]:
    if isinstance(v, bool):
        return "bool", v
    if isinstance(v, int):
        return "int", v
    if isinstance(v, float):
        return "float", v
    if isinstance(v, str):
        return "string", v
    if v is None or v is NO_VALUE:
        return "nil", None
    raise _FuncError("error calling eq: non-comparable type")


def _eq(a: Any, *others: Any) -> bool:
    if not others:
        raise _FuncError("wrong number of args for eq: want at least 1 got 0")
    ka, va = _basic(a)
    for b in others:
        kb, vb = _basic(b)
        if ka == "nil" or kb == "nil":
            if ka == kb:
                return True
            continue
        if ka != kb:
            raise _FuncError("error calling eq: incompatible types for comparison")
        if va == vb:
            return True
    return False


def _order(name: str) -> Callable[[Any, Any], bool]:
    ops: dict[str, Callable[[Any, Any], bool]] = {
        "lt": lambda a, b: bool(a < b), "le": lambda a, b: bool(a <= b),
        "gt": lambda a, b: bool(a > b), "ge": lambda a, b: bool(a >= b)}

    def cmp(a: Any, b: Any) -> bool:
        ka, va = _basic(a)
        kb, vb = _basic(b)
        if ka != kb or ka in ("bool", "nil"):
            raise _FuncError(f"error calling {name}: incompatible types for comparison")
        return ops[name](va, vb)
    return cmp


def _print(*args: Any) -> str:
    # fmt.Sprint: a space between operands when neither is a string
    out = ""
    for i, a in enumerate(args):
        if i and not isinstance(a, str) and not isinstance(args[i - 1], str):
            out += " "
        out += fmt_value(a)
    return out


def _json(v: Any) -> str:
    return json.dumps(None if v is NO_VALUE else v, separators=(",", ":"), ensure_ascii=False, default=str)


def _title(s: str) -> str:
    # strings.Title: upper-case each letter that follows a separator (not a letter, digit or _)
    out, prev = [], " "
    for ch in _want_str(s):
        out.append(ch.upper() if not (prev.isalnum() or prev == "_") else ch)
        prev = ch
    return "".join(out)


def _html(*args: Any) -> str:
    import html

    return html.escape(_print(*args), quote=True).replace("&#x27;", "&#39;")


def _js(*args: Any) -> str:
    s = _print(*args)
    rep = {"\\": "\\\\", "'": "\\'", '"': "\\\"", "<": "\\u003C", ">": "\\u003E", "&": "\\u0026", "=": "\\u003D",
           "\n": "\\n", "\r": "\\r", "\t": "\\t"}
    return "".join(rep.get(c, c) for c in s)


def _urlquery(*args: Any) -> str:
    from urllib.parse import quote_plus

    return quote_plus(_print(*args))


def _join(items: Any, sep: Any) -> str:
    if not isinstance(items, list | tuple):
        raise _FuncError(f"wrong type for value; expected []string; got {_type(items)}")
    return _want_str(sep).join(fmt_value(x) for x in items)


def _truncate(s: Any, n: Any) -> str:
    s, n = _want_str(s), _want_int(n)
    return s if len(s) < n else s[:n]


def _pad(s: Any, prefix: Any, suffix: Any) -> str:
    s = _want_str(s)
    return s if not s else " " * _want_int(prefix) + s + " " * _want_int(suffix)


FUNCS: dict[str, Callable[..., Any]] = {
    "len": _len, "index": _index, "slice": _slice, "print": _print,
    "printf": lambda f, *a: sprintf(_want_str(f), a), "println": lambda *a: " ".join(map(fmt_value, a)) + "\n",
    "eq": _eq, "ne": lambda a, b: not _eq(a, b), "lt": _order("lt"), "le": _order("le"), "gt": _order("gt"),
    "ge": _order("ge"), "html": _html, "js": _js, "urlquery": _urlquery,
    # containers/common's report.DefaultFuncs
    "json": _json, "join": _join, "lower": lambda s: _want_str(s).lower(), "upper": lambda s: _want_str(s).upper(),
    "title": _title, "split": lambda s, sep: _want_str(s).split(_want_str(sep)), "truncate": _truncate,
    "pad": _pad,
}
_SPECIAL = {"and", "or", "not"}


# --------------------------------------------------------------------------- evaluation

class _Break(Exception):
    pass


class _Continue(Exception):
    pass


class Template:
    """A parsed template: ``Template("ps", "{{.Names}}").execute(row)`` → str."""

    def __init__(self, name: str, text: str) -> None:
        self.src = _Src(name, text)
        self.nodes = _Parser(self.src).parse()
        self._check(self.nodes)

    def _check(self, nodes: Iterable[_Node]) -> None:
        """Unknown functions are parse errors in Go."""
        for n in nodes:
            if isinstance(n, _Action):
                self._check_pipe(n.pipe)
            elif isinstance(n, _Branch):
                self._check_pipe(n.pipe)
                self._check(n.body)
                self._check(n.other or [])

    def _check_pipe(self, pipe: _Pipe) -> None:
        for cmd in pipe.cmds:
            for kind, val, _, pos in cmd.args:
                if kind == "ident" and val not in FUNCS and val not in _SPECIAL and val not in ("nil", "true", "false"):
                    raise self.src.fail(pos, f'function "{val}" not defined')
                if kind == "pipe":
                    self._check_pipe(val)

    def execute(self, data: Any) -> str:
        out: list[str] = []
        self._run(self.nodes, data, [("$", data)], out)
        return "".join(out)

    # each variable scope is a list of (name, value); blocks restore its length on exit
    def _run(self, nodes: list[_Node], dot: Any, vars_: list[tuple[str, Any]], out: list[str]) -> None:
        for n in nodes:
            if isinstance(n, _Text):
                out.append(n.text)
            elif isinstance(n, _Action):
                v = self._pipe(n.pipe, dot, vars_)
                if not n.pipe.decl:
                    out.append(fmt_value(v))
            elif isinstance(n, _Branch):
                self._branch(n, dot, vars_, out)
            elif isinstance(n, _Jump):
                raise _Break() if n.kind == "break" else _Continue()

    def _branch(self, n: _Branch, dot: Any, vars_: list[tuple[str, Any]], out: list[str]) -> None:
        mark = len(vars_)
        try:
            if n.kind == "range":
                self._range(n, dot, vars_, out)
                return
            v = self._pipe(n.pipe, dot, vars_)
            if _truth(v):
                self._run(n.body, v if n.kind == "with" else dot, vars_, out)
            elif n.other is not None:
                self._run(n.other, dot, vars_, out)
        finally:
            del vars_[mark:]

    def _range(self, n: _Branch, dot: Any, vars_: list[tuple[str, Any]], out: list[str]) -> None:
        v = self._pipe(n.pipe, dot, vars_, declare=False)
        if isinstance(v, dict):
            pairs: list[tuple[Any, Any]] = [(k, v[k]) for k in sorted(v, key=_sort_key)]
        elif isinstance(v, list | tuple):
            pairs = list(enumerate(v))
        elif isinstance(v, int) and not isinstance(v, bool):
            pairs = [(i, i) for i in range(v)]
        elif v is None or v is NO_VALUE:
            pairs = []
        else:
            raise self._exec_fail(n.pos, n.pipe.text, f"range can't iterate over {fmt_value(v)}")
        mark = len(vars_)
        for k, item in pairs:
            if len(n.pipe.decl) == 1:
                vars_.append((n.pipe.decl[0], item))
            elif len(n.pipe.decl) == 2:
                vars_.extend(((n.pipe.decl[0], k), (n.pipe.decl[1], item)))
            try:
                self._run(n.body, item, vars_, out)
            except _Break:
                break
            except _Continue:
                continue
            finally:
                del vars_[mark:]
        if not pairs and n.other is not None:
            self._run(n.other, dot, vars_, out)

    def _exec_fail(self, pos: int, at: str, msg: str) -> TemplateError:
        name = self.src.name
        return TemplateError(f"template: {self.src.where(pos)}: executing \"{name}\" at <{at}>: {msg}",
                             hint="check the field names: `--format json` shows them")

    def _pipe(self, pipe: _Pipe, dot: Any, vars_: list[tuple[str, Any]], declare: bool = True) -> Any:
        val: Any = NO_VALUE
        final: Any = _MISSING
        for cmd in pipe.cmds:
            val = self._cmd(cmd, dot, vars_, final)
            final = val
        if pipe.decl and declare:
            if pipe.assign:
                for i in range(len(vars_) - 1, -1, -1):
                    if vars_[i][0] == pipe.decl[0]:
                        vars_[i] = (pipe.decl[0], val)
                        break
                else:
                    raise self._exec_fail(pipe.pos, pipe.text, f"undefined variable: {pipe.decl[0]}")
            else:
                vars_.append((pipe.decl[0], val))
        return val

    def _cmd(self, cmd: _Cmd, dot: Any, vars_: list[tuple[str, Any]], final: Any) -> Any:
        kind, val, fields, pos = cmd.args[0]
        text = self.src.text
        at = _node_text(text, cmd)
        if kind == "ident" and val not in ("nil", "true", "false"):
            args = [a for a in cmd.args[1:]]
            if val in _SPECIAL:
                return self._logic(val, args, dot, vars_, final, pos, at)
            values = [self._arg(a, dot, vars_) for a in args]
            if final is not _MISSING:
                values.append(final)
            try:
                return FUNCS[val](*values)
            except _FuncError as e:
                raise self._exec_fail(pos, at, str(e)) from None
            except TypeError:
                raise self._exec_fail(pos, at, f"wrong number of args for {val}: got {len(values)}") from None
        if len(cmd.args) > 1 or final is not _MISSING:
            if kind == "field":
                raise self._exec_fail(pos, at, f"{val[-1]} is not a method but has arguments")
            raise self._exec_fail(pos, at, f"can't give argument to non-function {_node_text(text, cmd, 1)}")
        if kind == "ident" and val == "nil":
            raise self._exec_fail(pos, at, "nil is not a command")
        return self._arg(cmd.args[0], dot, vars_)

    def _logic(self, name: str, args: list[Any], dot: Any, vars_: list[tuple[str, Any]], final: Any,
               pos: int, at: str) -> Any:
        # and/or evaluate their operands lazily, from the left (Go 1.18)
        thunks: list[Callable[[], Any]] = [functools.partial(self._arg, a, dot, vars_) for a in args]
        if final is not _MISSING:
            thunks.append(lambda: final)
        if name == "not":
            if len(thunks) != 1:
                raise self._exec_fail(pos, at, f"wrong number of args for not: want 1 got {len(thunks)}")
            return not _truth(thunks[0]())
        if not thunks:
            raise self._exec_fail(pos, at, f"wrong number of args for {name}: want at least 1 got 0")
        v: Any = None
        for t in thunks:
            v = t()
            if _truth(v) != (name == "and"):
                return v
        return v

    def _arg(self, a: tuple[str, Any, list[str], int], dot: Any, vars_: list[tuple[str, Any]]) -> Any:
        kind, val, fields, pos = a
        if kind == "field":
            return self._fields(dot, val + fields, pos, "." + ".".join(val + fields))
        if kind == "dot":
            base = dot
        elif kind == "var":
            for name, v in reversed(vars_):
                if name == val:
                    base = v
                    break
            else:
                raise self.src.fail(pos, f"undefined variable \"{val}\"")
        elif kind == "pipe":
            base = self._pipe(val, dot, vars_)
        elif kind in ("string", "number"):
            base = val
        elif kind == "ident":
            if val in ("true", "false"):
                base = val == "true"
            elif val == "nil":
                base = None
            else:
                base = self._cmd(_Cmd([a], pos), dot, vars_, _MISSING)
        else:
            base = val
        if fields:
            return self._fields(base, fields, pos, self.src.text[pos:pos + 1] + "." + ".".join(fields))
        return base

    def _fields(self, v: Any, names: list[str], pos: int, at: str) -> Any:
        for name in names:
            if isinstance(v, _HeaderRow):
                v = v.header(name)
            elif isinstance(v, dict):
                if name in v:
                    v = v[name]
                elif v and all(isinstance(k, str) and k[:1].isupper() for k in v):
                    raise self._exec_fail(pos, at, f"can't evaluate field {name}")
                else:
                    v = NO_VALUE
            elif v is None:
                raise self._exec_fail(pos, at, f"nil pointer evaluating interface {{}}.{name}")
            elif v is NO_VALUE:
                v = NO_VALUE
            else:
                raise self._exec_fail(pos, at, f"can't evaluate field {name} in type {_type(v)}")
        return v


def _node_text(text: str, cmd: _Cmd, start: int = 0) -> str:
    first = cmd.args[start][3]
    last = cmd.args[-1][3]
    m = _TOKEN.match(text, last)
    end = m.end() if m else last
    # widen to the closing paren of a parenthesised last operand
    depth = text[first:end].count("(") - text[first:end].count(")")
    while depth > 0 and end < len(text):
        depth += {"(": 1, ")": -1}.get(text[end], 0)
        end += 1
    return text[first:end].strip()


_MISSING = object()


# --------------------------------------------------------------------------- Podman's conventions

def header_name(field: str, overrides: dict[str, str] | None = None) -> str:
    """Podman's column header for a field: ``CreatedAt`` → ``CREATED AT``, ``ImageID`` → ``IMAGE ID``."""
    if overrides and field in overrides:
        return overrides[field]
    words = re.findall(r"[A-Z]+(?=[A-Z][a-z]|\d|\b)|[A-Z]?[a-z]+|[A-Z]+|\d+", field)
    return " ".join(words).upper() if words else field.upper()


class _HeaderRow(dict[str, str]):
    """What a `table` template's header row is rendered from: every field is its header."""

    def __init__(self, overrides: dict[str, str] | None) -> None:
        super().__init__()
        self.overrides = overrides

    def header(self, name: str) -> str:
        return header_name(name, self.overrides)


def _headers(t: Template, overrides: dict[str, str] | None) -> str:
    """The header row of a `table` template: the template run on the headers, as Podman does
    (`{{upper .State}}` → STATE); where that fails (a path into a header, a function that wants a
    list), each action is the header of the last field it names."""
    try:
        return t.execute(_HeaderRow(overrides))
    except TemplateError:
        pass
    out: list[str] = []
    for n in t.nodes:
        if isinstance(n, _Text):
            out.append(n.text)
        elif isinstance(n, _Action | _Branch):
            f = _first_field(n.pipe)
            out.append(header_name(f, overrides) if f else "")
    return "".join(out)


def _first_field(pipe: _Pipe) -> str | None:
    for cmd in pipe.cmds:
        for kind, val, fields, _ in cmd.args:
            if kind == "field":
                return str((val + fields)[-1])
            if kind == "var" and fields:
                return str(fields[-1])
            if kind == "pipe":
                f = _first_field(val)
                if f:
                    return f
    return None


def tabwrite(text: str, minwidth: int = 12, padding: int = 2) -> str:
    """Go's text/tabwriter as Podman configures it (minwidth 12, padding 2, spaces): tab-terminated
    cells of consecutive lines form a column as wide as its widest cell plus the padding."""
    lines = [ln.split("\t") for ln in text.split("\n")]
    out: list[str] = []
    widths: list[int] = []

    def write(l0: int, l1: int) -> None:
        for ln in lines[l0:l1]:
            parts = []
            for j, cell in enumerate(ln):
                parts.append(cell.ljust(widths[j]) if j < len(ln) - 1 and j < len(widths) else cell)
            out.append("".join(parts))

    def fmt(l0: int, l1: int) -> None:
        column = len(widths)
        this = l0
        while this < l1:
            if column >= len(lines[this]) - 1:
                this += 1
                continue
            write(l0, this)
            l0 = this
            width = minwidth
            while this < l1 and column < len(lines[this]) - 1:
                width = max(width, len(lines[this][column]) + padding)
                this += 1
            widths.append(width)
            fmt(l0, this)
            widths.pop()
            l0 = this
        write(l0, l1)

    # a line without a tab ends every column (tabwriter flushes on it)
    start = 0
    for i, ln in enumerate(lines):
        if len(ln) == 1:
            fmt(start, i)
            out.append(ln[0])
            start = i + 1
    fmt(start, len(lines))
    return "\n".join(out)


def is_template(fmt: str | None) -> bool:
    return bool(fmt) and fmt not in ("json", "table")


def parse(name: str, fmt: str) -> tuple[Template, bool]:
    """A --format value as Podman reads it: (template, whether it is a `table`). ``\\t`` and
    ``\\n`` are a tab and a newline; in a table, spaces between actions separate columns too."""
    table = fmt.startswith("table ") or fmt.startswith("table\t")
    body = fmt[6:] if table else fmt
    body = body.replace("\\t", "\t").replace("\\n", "\n")
    if table:
        body = re.sub(r"({{.*?}})|( )", lambda m: m.group(1) or "\t", body, flags=re.S)
    if not body.endswith("\n"):
        body += "\n"
    return Template(name, body), table


def render(name: str, fmt: str, rows: Sequence[Any], overrides: dict[str, str] | None = None,
           header: bool = True) -> str:
    """Each row through the template, one after another (Podman's `{{range .}}` around it); with
    `table`, a header row first and the columns aligned."""
    t, table = parse(name, fmt)
    body = "".join(t.execute(r) for r in rows)
    if not table:
        return body
    head = _headers(t, overrides) if header else ""
    return tabwrite(head + body)


def render_one(name: str, fmt: str, data: Any) -> str:
    """One object (inspect, info, version): the template once, with a final newline."""
    t, _ = parse(name, fmt)
    return t.execute(data)
