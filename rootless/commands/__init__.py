"""The commands: each module of this package declares its commands in a ``table`` (rootless.options)
and renders what the engine returns. cli.py parses with these declarations and reports errors.

INDEX says which module declares each first word, so a command line loads one module; ``--help``,
completion and the man-page test load them all. A new module goes into INDEX (one line per word).
"""

from __future__ import annotations

import sys

from rootless.options import flag, value

TYPE_CHECKING = False  # typing stays off the start-up path (`rootless --help` would import it)
if TYPE_CHECKING:
    from rootless.options import Command, Group, Opt, Table

# first word of a command → the module (in this package) that declares it
INDEX: dict[str, tuple[str, ...]] = {
    "pull": ("images",), "images": ("images",), "rmi": ("images",), "tag": ("images",), "login": ("images",),
    "logout": ("images",), "image": ("images", "scripting", "build", "sharing"),
    "build": ("build",), "history": ("build",), "commit": ("build",),
    "push": ("sharing",), "save": ("sharing",), "load": ("sharing",), "import": ("sharing",),
    "export": ("sharing",),
    "run": ("containers",), "create": ("containers",), "start": ("containers",), "stop": ("containers",),
    "kill": ("containers",), "restart": ("containers",), "rm": ("containers",), "wait": ("containers",),
    "ps": ("containers",), "stats": ("containers",), "logs": ("containers",), "exec": ("containers",),
    "inspect": ("containers",), "port": ("containers",), "cp": ("containers",),
    "container": ("containers", "scripting", "sharing"),
    "volume": ("volumes",), "network": ("networks",),
    "info": ("system",), "doctor": ("system",), "unshare": ("system",), "completion": ("system",),
    "version": ("scripting",), "events": ("scripting",), "rename": ("scripting",), "pause": ("scripting",),
    "unpause": ("scripting",), "top": ("scripting",), "diff": ("scripting",), "healthcheck": ("scripting",),
    "system": ("scripting", "system"), "attach": ("scripting",),
}

DESCRIPTION = "Run registry images as an unprivileged user: no root, no daemon."

# the options before the command
GLOBAL: tuple[Opt, ...] = (
    value("--log-level", help="Messages to show: debug, info, warn, error.", default="warn"),
    value("--root", help="Storage root (images and layers).", complete="dir"),
    value("--runroot", help="Directory for volatile state.", complete="dir"),
    value("--cgroup-manager", help="Who makes containers' cgroups: systemd or cgroupfs (default: the config, "
          "else the first that works)."),
    value("--storage-driver", help="overlay, fuse-overlayfs or vfs for new containers (default: the config, "
          "else probed)."),
    value("--events-backend", help="file (the events log) or none (no events recorded)."),
    flag("--noout", help="Print nothing on standard output."),
    flag("--version", help="Print the version and exit."),
)


def tables(word: str | None = None) -> list[Table]:
    """The tables of the modules declaring ``word`` (every module when None or unknown)."""
    names = INDEX.get(word, ()) if word is not None else ()
    if not names:
        names = tuple(dict.fromkeys(m for mods in INDEX.values() for m in mods))
    out = []
    for m in names:
        name = f"rootless.commands.{m}"
        __import__(name)
        out.append(sys.modules[name].table)
    return out


def all_commands() -> list[Command]:
    return [c for t in tables() for c in t.commands]


def all_groups() -> list[Group]:
    return [g for t in tables() for g in t.groups]


def find(words: list[str]) -> tuple[Command, tuple[str, ...]] | None:
    """The command the first words name (by its path or an alias) and the path as typed."""
    for t in tables(words[0] if words else None):
        for c in t.commands:
            for p in (c.path, *c.aliases, *c.hidden_aliases):
                if tuple(words[:len(p)]) == p:
                    return c, p
    return None
