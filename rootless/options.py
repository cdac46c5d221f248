"""One declaration per command: it drives parsing, ``--help``, shell completion and the man-page test.

A command is a function that renders what the engine returns, and one ``@table.command`` that
declares everything a user can type: its name and aliases, its help, its positional arguments and
its options. Nothing else declares them: cli.py parses with this declaration, ``--help`` and
``rootless completion bash|zsh|fish`` are rendered from it, and tests/unit/test_manpages.py checks
that every option declared here is documented on the command's page in man/.

How to add a command (e.g. in rootless/commands/containers.py, or a new module of that package
listed in rootless/commands/__init__.py's INDEX)::

    @table.command("pause", "Pause containers' processes.",
                   args=[arg("CONTAINER", many=True, help="Containers to pause.")],
                   options=[flag("-a", "--all", help="Pause every running container."),
                            value("-t", "--time", type=int, metavar="SECONDS", help="Give up after SECONDS."),
                            value("--filter", many=True, help="KEY=VALUE (repeatable).")],
                   aliases=["container pause"])
    def pause(ctx: Context, a: Args) -> int | None:
        for name in a.container or ...:    # an argument's value is a.<metavar in lower case>
            ...                            # an option's value is a.<longest name without dashes>
        return 0                           # the exit status (None is 0); errors: raise RootlessError

then document every option on man/rootless-pause.1 (the unit test names what is missing). To add an
option to an existing command, add one ``flag(...)`` or ``value(...)`` to its list:

    flag("--rm", help=...)                          a.rm: bool; also --rm=true|false
    flag("--x", default=True, negate="--no-x")      a.x: bool, --no-x turns it off
    value("-e", "--env", many=True, help=...)       a.env: tuple[str, ...], one item per use
    value("--tail", type=int, min=0, help=...)      a.tail: int | None
    value("--format", choices=("table", "json"), default="table", help=...)
    value("-v", "--volume", dest="volumes", ...)    a.volumes (dest: another attribute name)
    arg("IMAGE"), arg("COMMAND", many=True, optional=True)   a.image: str, a.command: tuple[str, ...]

A group of subcommands (`volume ls`) is ``table.group("volume", help)`` and commands named
"volume ls"; ``hidden_aliases`` are accepted but not listed. A usage problem found by the handler
(two options that exclude each other) is ``raise UsageError(message)``. For `run` and
`create`, add it to RUN_OPTIONS in rootless/commands/containers.py and a field of the same name to
rootless.image.specgen.RunOptions (the engine's typed input; tests/unit/test_options.py checks the
two agree).

Parsing follows the rules click accepted before (so every existing command line keeps working) and
Podman's where they differ: global options come before the command; ``-abc`` clusters short flags;
``-ovalue``, ``-o value``, ``--opt=value`` and ``--opt value`` give a value; ``--`` ends the options;
a boolean flag also takes ``--flag=true|false``; options may follow positional arguments unless the
command says ``interspersed=False`` (run, create, exec, unshare: everything after the first
positional belongs to the container's command). A bad command line is a UsageError (exit 125).

This module is on `rootless run`'s path: it imports only typing's names and declares classes with
__slots__ (no dataclasses).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

TYPE_CHECKING = False  # typing stays off the start-up path (`rootless --help` would import it)
if TYPE_CHECKING:
    from typing import Any

_TRUE = ("true", "1", "yes", "on", "t", "y")
_FALSE = ("false", "0", "no", "off", "f", "n")


class UsageError(Exception):
    """A command line the table refuses: cli.py prints ``Error: <message>`` and a hint naming
    ``--help``, and exits 125."""

    def __init__(self, message: str, path: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.message = message
        self.path = tuple(path)


class Opt:
    """One option: its spellings, where its value goes, how it is checked and shown."""

    __slots__ = ("names", "dest", "help", "metavar", "type", "many", "default", "choices", "min", "negate",
                 "hidden", "complete", "lower", "word")

    def __init__(self, names: Sequence[str], *, help: str, dest: str | None = None,  # noqa: A002
                 metavar: str | None = None, type: Any = None, many: bool = False,  # noqa: A002
                 default: Any = None, choices: Sequence[str] = (), min: int | None = None,  # noqa: A002
                 negate: str | None = None, hidden: bool = False, complete: str = "", lower: bool = False,
                 word: bool = False) -> None:
        self.names = tuple(names)
        longs = [n for n in self.names if n.startswith("--")]
        self.dest = dest or max(longs or self.names, key=len).lstrip("-").replace("-", "_")
        self.help = help
        self.type = type  # None: a flag (bool); str or int: takes a value
        self.metavar = metavar or ("" if type is None else ("INT" if type is int else "STRING"))
        self.many = many
        self.default = default
        self.choices = tuple(choices)
        self.min = min
        self.negate = negate  # --no-NAME: sets a flag False
        self.hidden = hidden
        self.complete = complete  # what a shell completes the value with: "file", "dir", or ""
        self.lower = lower  # choices compared in lower case
        self.word = word  # a flag that also takes its value as the next word: --layers false

    @property
    def takes_value(self) -> bool:
        return self.type is not None

    def spellings(self) -> tuple[str, ...]:
        return self.names + ((self.negate,) if self.negate else ())

    def initial(self) -> Any:
        if self.many:
            return ()
        if self.type is None:
            return bool(self.default)
        return self.default

    def convert(self, raw: str, spelled: str, path: Sequence[str]) -> Any:
        if self.type is int:
            try:
                number = int(raw)
            except ValueError:
                raise UsageError(f"Invalid value for '{spelled}': {raw!r} is not a valid integer.", path) from None
            if self.min is not None and number < self.min:
                raise UsageError(f"Invalid value for '{spelled}': {number} is not in the range x>={self.min}.",
                                 path)
            return number
        if self.choices:
            key = raw.lower() if self.lower else raw
            if key not in self.choices:
                one_of = ", ".join(repr(c) for c in self.choices)
                raise UsageError(f"Invalid value for '{spelled}': {raw!r} is not one of {one_of}.", path)
            return key
        return raw


def flag(*names: str, help: str, dest: str | None = None, default: bool = False,  # noqa: A002
         negate: str | None = None, hidden: bool = False, word: bool = False) -> Opt:
    """A boolean option: ``--rm``, ``--rm=true``, ``--rm=false`` (and ``negate``, e.g. ``--no-x``;
    ``word``: ``--layers false`` too, the next word taken when it is exactly true or false)."""
    return Opt(names, help=help, dest=dest, default=default, negate=negate, hidden=hidden, word=word)


def value(*names: str, help: str, dest: str | None = None, metavar: str | None = None,  # noqa: A002
          type: Any = str, many: bool = False, default: Any = None,  # noqa: A002
          choices: Sequence[str] = (), min: int | None = None, complete: str = "",  # noqa: A002
          lower: bool = False, hidden: bool = False) -> Opt:
    """An option with a value; ``many=True`` collects every occurrence into a tuple."""
    return Opt(names, help=help, dest=dest, metavar=metavar, type=type, many=many, default=default,
               choices=choices, min=min, complete=complete, lower=lower, hidden=hidden)


class Arg:
    """A positional argument: ``many`` takes every remaining word (a tuple); ``optional`` may be absent."""

    __slots__ = ("metavar", "dest", "help", "many", "optional", "complete")

    def __init__(self, metavar: str, *, help: str, many: bool = False, optional: bool = False,  # noqa: A002
                 dest: str | None = None, complete: str = "") -> None:
        self.metavar = metavar
        self.dest = dest or metavar.lower().replace("-", "_")
        self.help = help
        self.many = many
        self.optional = optional
        self.complete = complete  # "container", "image", "file" or ""

    def usage(self) -> str:
        text = self.metavar + ("..." if self.many else "")
        return f"[{text}]" if self.optional else text


def arg(metavar: str, *, help: str, many: bool = False, optional: bool = False,  # noqa: A002
        dest: str | None = None, complete: str = "") -> Arg:
    return Arg(metavar, help=help, many=many, optional=optional, dest=dest, complete=complete)


HELP = flag("-h", "--help", help="Show this help and exit.")


def always(_: Args) -> bool:
    """``quick_exit`` of a command that writes nothing a finalizer would flush (ps, inspect):
    the process may end as soon as it has printed (the start-up budget)."""
    return True


class Command:
    """A command's whole declaration; ``path`` is its words ("image inspect" → ("image", "inspect"))."""

    __slots__ = ("path", "help", "args", "options", "handler", "aliases", "hidden_aliases", "interspersed",
                 "unknown_as_args", "context", "quick_exit", "_by_name")

    def __init__(self, path: str, help: str, handler: Callable[..., int | None], *,  # noqa: A002
                 args: Sequence[Arg] = (), options: Sequence[Opt] = (), aliases: Sequence[str] = (),
                 hidden_aliases: Sequence[str] = (), interspersed: bool = True, unknown_as_args: bool = False,
                 context: bool | str = True, quick_exit: Callable[[Args], bool] | None = None) -> None:
        self.path = tuple(path.split())
        self.help = help
        self.handler = handler
        self.args = tuple(args)
        self.options = (*options, HELP)
        self.aliases = tuple(tuple(a.split()) for a in aliases)
        self.hidden_aliases = tuple(tuple(a.split()) for a in hidden_aliases)
        self.interspersed = interspersed
        self.unknown_as_args = unknown_as_args  # unshare: `rootless unshare ls -l` passes -l on
        # False: the handler takes no Context (completion); "lenient": one built even for a store
        # whose run root does not match or a bad config (rootless.context.build)
        self.context = context
        # True for these arguments: end the process right after the handler, without collecting
        # garbage or tearing the interpreter down (a foreground `run`: the start-up budget)
        self.quick_exit = quick_exit
        self._by_name: dict[str, Opt] | None = None

    @property
    def name(self) -> str:
        return " ".join(self.path)

    def by_name(self) -> dict[str, Opt]:
        if self._by_name is None:
            self._by_name = {s: o for o in self.options for s in o.spellings()}
        return self._by_name

    def usage(self, path: Sequence[str] | None = None) -> str:
        words = " ".join(path or self.path)
        args = " ".join(a.usage() for a in self.args)
        return f"rootless {words} [options]{' ' + args if args else ''}"


class Group:
    """A word that only leads to commands (``image``, ``container``)."""

    __slots__ = ("name", "help")

    def __init__(self, name: str, help: str) -> None:  # noqa: A002
        self.name = name
        self.help = help


class Table:
    """The commands one module declares (rootless/commands/*.py): ``@table.command(...)``."""

    def __init__(self) -> None:
        self.commands: list[Command] = []
        self.groups: list[Group] = []

    def command(self, path: str, help: str, *, args: Sequence[Arg] = (),  # noqa: A002
                options: Sequence[Opt] = (), aliases: Sequence[str] = (), hidden_aliases: Sequence[str] = (),
                interspersed: bool = True, unknown_as_args: bool = False, context: bool | str = True,
                quick_exit: Callable[[Args], bool] | None = None
                ) -> Callable[[Callable[..., int | None]], Callable[..., int | None]]:
        def register(fn: Callable[..., int | None]) -> Callable[..., int | None]:
            self.commands.append(Command(path, help, fn, args=args, options=options, aliases=aliases,
                                         hidden_aliases=hidden_aliases, interspersed=interspersed,
                                         unknown_as_args=unknown_as_args, context=context,
                                         quick_exit=quick_exit))
            return fn

        return register

    def group(self, name: str, help: str) -> None:  # noqa: A002
        self.groups.append(Group(name, help))


class Args:
    """Parsed values by ``dest``: ``a.quiet``, ``a.image``; ``a.spelled`` holds what the user typed."""

    def __init__(self, values: dict[str, Any]) -> None:
        self.__dict__.update(values)

    def __getattr__(self, name: str) -> Any:
        raise AttributeError(name)

    def get(self, name: str, default: Any = None) -> Any:
        return self.__dict__.get(name, default)


# --------------------------------------------------------------------------- parsing

def _bool(raw: str, spelled: str, path: Sequence[str]) -> bool:
    low = raw.lower()
    if low in _TRUE:
        return True
    if low in _FALSE:
        return False
    raise UsageError(f"Invalid value for '{spelled}': {raw!r} is not a valid boolean.", path)


def parse(cmd: Command, argv: Sequence[str], path: Sequence[str] | None = None) -> Args | None:
    """``argv`` (the words after the command's own) parsed by ``cmd``'s declaration; None when
    ``-h``/``--help`` was asked for. Raises UsageError."""
    shown = tuple(path or cmd.path)
    opts = cmd.by_name()
    values: dict[str, Any] = {o.dest: o.initial() for o in cmd.options}
    collected: dict[str, list[Any]] = {}
    words: list[str] = []
    i, n = 0, len(argv)

    def put(o: Opt, v: Any) -> None:
        if o.many:
            collected.setdefault(o.dest, []).append(v)
        else:
            values[o.dest] = v

    def need_value(spelled: str) -> str:
        nonlocal i
        if i >= n:
            raise UsageError(f"Option '{spelled}' requires an argument.", shown)
        i += 1
        return argv[i - 1]

    while i < n:
        a = argv[i]
        i += 1
        if a == "--":
            words.extend(argv[i:])
            break
        if a.startswith("--") and len(a) > 2:
            name, eq, raw = a.partition("=")
            o = opts.get(name)
            if o is None:
                if cmd.unknown_as_args:
                    words.append(a)
                    if not cmd.interspersed:
                        words.extend(argv[i:])
                        break
                    continue
                raise UsageError(f"No such option: {name}", shown)
            if o is HELP:
                return None
            if not o.takes_value:
                on = _bool(raw, name, shown) if eq else True
                if not eq and o.word and i < n and argv[i] in ("true", "false"):
                    on = argv[i] == "true"
                    i += 1
                put(o, (not on) if name == o.negate else on)
            else:
                put(o, o.convert(raw if eq else need_value(name), name, shown))
        elif a.startswith("-") and len(a) > 1:
            j = 1
            unknown = False
            while j < len(a):
                name = "-" + a[j]
                j += 1
                o = opts.get(name)
                if o is None:
                    if not cmd.unknown_as_args:
                        raise UsageError(f"No such option: {name}", shown)
                    unknown = True
                    break
                if o is HELP:
                    return None
                if not o.takes_value:
                    put(o, True)
                    continue
                put(o, o.convert(a[j:] if j < len(a) else need_value(name), name, shown))
                break
            if unknown:
                words.append(a)
                if not cmd.interspersed:
                    words.extend(argv[i:])
                    break
        else:
            words.append(a)
            if not cmd.interspersed:
                words.extend(argv[i:])
                break
    for dest, got in collected.items():
        values[dest] = tuple(got)
    _bind(cmd, words, values, shown)
    return Args(values)


def _bind(cmd: Command, words: list[str], values: dict[str, Any], path: Sequence[str]) -> None:
    k = 0
    for idx, p in enumerate(cmd.args):
        if p.many:
            # the words the later single arguments need are left for them
            later = sum(1 for q in cmd.args[idx + 1:] if not q.optional)
            take = words[k:max(k, len(words) - later)]
            if not take and not p.optional:
                raise UsageError(f"Missing argument '{p.usage()}'.", path)
            values[p.dest] = tuple(take)
            k += len(take)
        elif k < len(words):
            values[p.dest] = words[k]
            k += 1
        elif p.optional:
            values[p.dest] = None
        else:
            raise UsageError(f"Missing argument '{p.metavar}'.", path)
    if k < len(words):
        extra = words[k:]
        noun = "argument" if len(extra) == 1 else "arguments"
        raise UsageError(f"Got unexpected extra {noun} ({' '.join(extra)})", path)


# --------------------------------------------------------------------------- help

def _wrap(text: str, width: int, indent: int) -> list[str]:
    out: list[str] = []
    line = ""
    for word in text.split():
        if line and len(line) + 1 + len(word) > width - indent:
            out.append(line)
            line = word
        else:
            line = f"{line} {word}" if line else word
    if line:
        out.append(line)
    return out or [""]


def option_label(o: Opt) -> str:
    shorts = [s for s in o.names if not s.startswith("--")]
    longs = [s for s in o.names if s.startswith("--")] + ([o.negate] if o.negate else [])
    head = f"{shorts[0]}, " if shorts else "    "
    label = head + ", ".join(longs or shorts[1:])
    if o.takes_value:
        label += " " + ("{" + "|".join(o.choices) + "}" if o.choices else o.metavar)
    return label


def _rows(rows: Iterable[tuple[str, str]], width: int) -> list[str]:
    rows = list(rows)
    col = min(max((len(left) for left, _ in rows), default=0) + 4, 34)
    out = []
    for left, right in rows:
        text = _wrap(right, width, col)
        if len(left) + 4 > col:
            out.append(f"  {left}")
            out.extend(" " * col + t for t in text)
        else:
            out.append(f"  {left.ljust(col - 2)}{text[0]}")
            out.extend(" " * col + t for t in text[1:])
    return out


def _default_note(o: Opt) -> str:
    if o.takes_value and o.default is not None and not o.many:
        return f" (default {o.default})"
    if not o.takes_value and o.default:
        return " (default true)"
    return ""


def command_help(cmd: Command, path: Sequence[str] | None = None, width: int = 100) -> str:
    """Podman's layout: the description, Usage, Aliases, Arguments, Options."""
    lines = [cmd.help, "", "Usage:", f"  {cmd.usage(path)}"]
    others = [" ".join(p) for p in (cmd.path, *cmd.aliases) if p != tuple(path or cmd.path)]
    if others:
        lines += ["", "Aliases:", "  " + ", ".join(f"rootless {o}" for o in others)]
    if cmd.args:
        lines += ["", "Arguments:"] + _rows(((a.usage(), a.help) for a in cmd.args), width)
    lines += ["", "Options:"] + _rows(((option_label(o), o.help + _default_note(o))
                                       for o in cmd.options if not o.hidden), width)
    return "\n".join(lines) + "\n"


def group_help(title: str, usage: str, entries: Iterable[tuple[str, str]], options: Sequence[Opt],
               width: int = 100) -> str:
    lines = [title, "", "Usage:", f"  {usage}", "", "Available Commands:"]
    lines += _rows(entries, width)
    if options:
        lines += ["", "Options:"] + _rows(((option_label(o), o.help + _default_note(o)) for o in options), width)
    return "\n".join(lines) + "\n"
