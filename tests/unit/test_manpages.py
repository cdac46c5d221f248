"""The manual in man/ renders cleanly and agrees with the CLI that --help describes.

Pages are hand-written roff (man(7) macros). Each command declared in rootless.commands
(rootless.options tables) has a page man/rootless-<cmd>.1 (man/rootless-<group>-<cmd>.1 inside a group);
every option of a command appears on its page, and every option a page documents
in its OPTIONS section exists on the command.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

MAN = Path(__file__).resolve().parents[2] / "man"
PAGES = sorted(p for p in MAN.iterdir() if re.fullmatch(r"[\w.-]+\.[1-9]", p.name)) if MAN.is_dir() else []

# Commands documented on another command's page (podman's aliases): command path → page's command path.
ALIASES: dict[tuple[str, ...], tuple[str, ...]] = {
    ("image", "pull"): ("pull",),
    ("image", "ls"): ("images",),
    ("image", "list"): ("images",),
    ("image", "rm"): ("rmi",),
    ("image", "tag"): ("tag",),
    ("image", "push"): ("push",),
    ("image", "save"): ("save",),
    ("image", "load"): ("load",),
    ("image", "import"): ("import",),
    ("container", "export"): ("export",),
    ("create",): ("run",),
    ("volume", "list"): ("volume", "ls"),
    ("volume", "remove"): ("volume", "rm"),
    ("container", "ls"): ("ps",),
    ("container", "list"): ("ps",),
    ("container", "ps"): ("ps",),
    **{("container", c): (c,) for c in ("run", "start", "stop", "kill", "restart", "rm", "wait", "stats",
                                        "logs", "exec", "inspect", "port", "cp", "rename", "pause", "unpause", "top",
                                        "diff", "attach")},
    ("network", "list"): ("network", "ls"),
    ("network", "remove"): ("network", "rm"),
    ("image", "build"): ("build",),
    ("image", "history"): ("history",),
}

# Pages that document no command of their own.
NON_COMMAND_PAGES = {"rootless.1", "rootless.conf.5", "rootless-volume.1", "rootless-network.1",
                     "rootless-container.1", "rootless-image.1", "rootless-system.1", "rootless-healthcheck.1"}

REQUIRED_SECTIONS = ("NAME", "SYNOPSIS", "DESCRIPTION", "OPTIONS", "EXIT STATUS", "SEE ALSO")


# --- reading roff ---------------------------------------------------------------------------------

def plain(src: str) -> str:
    """The page's text with roff comments and the escapes that hide option names removed."""
    lines = [ln for ln in src.splitlines() if not ln.startswith(('.\\"', "'\\\"", '\\"'))]
    text = "\n".join(lines)
    text = re.sub(r"\\f(\[[^]]*\]|\(..|.)", "", text)  # font changes: \fB \fI \fR \fP \f(CW \f[CR]
    text = text.replace("\\-", "-").replace("\\(hy", "-").replace("\\&", "").replace("\\c", "")
    return text.replace("\\e", "\\")


def sections(src: str) -> dict[str, str]:
    """Section name (.SH) → its roff source."""
    out: dict[str, str] = {}
    name: str | None = None
    for line in src.splitlines():
        m = re.match(r'^\.SH\s+"?([^"]*)"?\s*$', line)
        if m:
            name = m.group(1).strip()
            out[name] = ""
        elif name is not None:
            out[name] += line + "\n"
    return out


def tagged_options(section_src: str) -> set[str]:
    """Options named in the tags of the .TP paragraphs of a section."""
    lines = section_src.splitlines()
    found: set[str] = set()
    for i, line in enumerate(lines[:-1]):
        if line.startswith(".TP"):
            found.update(re.findall(r"(?<![\w-])(--?[A-Za-z][\w-]*)", plain(lines[i + 1])))
    return found


def mentions(text: str, opt: str) -> bool:
    return re.search(r"(?<![\w-])" + re.escape(opt) + r"(?![\w-])", text) is not None


def page_for(path: tuple[str, ...]) -> Path:
    return MAN / ("-".join(("rootless", *path)) + ".1") if path else MAN / "rootless.1"


# --- rendering ------------------------------------------------------------------------------------

def groff(*args: str) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("groff")
    if exe is None:
        pytest.skip("groff is not installed")
    return subprocess.run([exe, "-man", *args], capture_output=True, text=True, timeout=60, check=False)


def test_there_are_pages() -> None:
    names = {p.name for p in PAGES}
    assert {"rootless.1", "rootless.conf.5"} <= names


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
@pytest.mark.parametrize("device", [None, "utf8", "ascii"])
def test_page_renders_without_warnings(page: Path, device: str | None) -> None:
    args = ["-ww", "-z", str(page)] if device is None else ["-ww", "-z", f"-T{device}", str(page)]
    r = groff(*args)
    assert r.returncode == 0, r.stderr
    assert r.stderr == "", f"{page.name}:\n{r.stderr}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_page_fits_80_columns(page: Path) -> None:
    # man-db formats for MANWIDTH=80 with a line length of 78 ens.
    r = groff("-Tutf8", "-rLL=78n", "-rLT=78n", "-P-cbou", str(page))
    assert r.returncode == 0, r.stderr
    long = [ln for ln in r.stdout.splitlines() if len(ln) > 80]
    assert not long, f"{page.name}: lines wider than 80 columns:\n" + "\n".join(long)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_page_structure(page: Path) -> None:
    src = page.read_text(encoding="ascii")  # ASCII only: other characters go through groff escapes
    assert not re.search(r"^\.(Dd|Dt|Nm|Sh|Os)\b", src, re.M), "man(7) macros only, no mdoc"
    stem, section = page.name.rsplit(".", 1)
    th = re.search(r"^\.TH\s+(\S+)\s+(\S+)", src, re.M)
    assert th, "no .TH"
    assert th.group(1).replace("\\-", "-") == stem.upper() and th.group(2) == section
    secs = sections(src)
    required = REQUIRED_SECTIONS if page.name != "rootless.conf.5" else ("NAME", "SYNOPSIS", "DESCRIPTION")
    for s in required:
        assert s in secs, f"{page.name} has no {s} section"
    name_line = plain(secs["NAME"]).strip()
    assert name_line.startswith(f"{stem} - "), name_line
    # Every rootless page referred to exists.
    for ref, sec in re.findall(r"^\.BR\s+(rootless[\w\\.-]*)\s+\((\d)\)", src, re.M):
        target = MAN / f"{ref.replace(chr(92) + '-', '-')}.{sec}"
        assert target.exists(), f"{page.name} refers to {target.name}, which does not exist"


# --- agreement with the CLI -----------------------------------------------------------------------

def cli_tree() -> list[Any]:
    from rootless import commands

    return commands.all_commands()


@dataclass(frozen=True)
class Command:
    path: tuple[str, ...]  # ("image", "inspect"); () for the root
    cmd: Any  # the declaration (rootless.options.Command), None for the root
    options: frozenset[str]  # every option spelling it accepts and shows in --help, help included


def _spellings(opts: Any) -> frozenset[str]:
    return frozenset(s for o in opts if not o.hidden for s in o.spellings())


def commands() -> list[Command]:
    """The root (its options are the global options), every command and every alias."""
    from rootless import commands as table
    from rootless.options import HELP

    out = [Command((), None, _spellings((*table.GLOBAL, HELP)))]
    for c in cli_tree():
        for path in (c.path, *c.aliases):
            out.append(Command(path, c, _spellings(c.options)))
    return out


def documented_on(path: tuple[str, ...]) -> Path:
    return page_for(ALIASES.get(path, path))


def test_aliases_table_matches_the_declarations() -> None:
    declared = {alias: c.path for c in cli_tree() for alias in (*c.aliases, *c.hidden_aliases)}
    assert {k: v for k, v in ALIASES.items() if k != ("create",)} == declared


def test_every_command_has_a_page() -> None:
    missing = [" ".join(c.path) for c in commands() if not documented_on(c.path).exists()]
    assert not missing, f"commands without a page in man/: {missing}"


def test_aliases_are_named_in_the_synopsis() -> None:
    known = {c.path for c in commands()}
    for alias, target in ALIASES.items():
        if alias not in known:
            continue
        syn = plain(sections(page_for(target).read_text())["SYNOPSIS"])
        assert re.search(r"rootless\s+" + r"\s+".join(alias) + r"\b", syn), \
            f"{page_for(target).name}: SYNOPSIS does not show 'rootless {' '.join(alias)}'"


def test_every_page_documents_a_command() -> None:
    pages = {documented_on(c.path).name for c in commands()}
    stale = [p.name for p in PAGES if p.name not in pages and p.name not in NON_COMMAND_PAGES]
    assert not stale, f"pages for commands the CLI does not have: {stale}"


def test_every_option_is_on_its_page() -> None:
    problems = []
    for c in commands():
        path, page = c.path, documented_on(c.path)
        if not page.exists():
            continue
        text = plain(page.read_text())
        options_src = sections(page.read_text()).get("OPTIONS", "")
        for opt in sorted(c.options):
            if not mentions(text, opt):
                problems.append(f"{page.name}: 'rootless {' '.join(path)}' has {opt}, not named on the page")
            elif not mentions(plain(options_src), opt):
                problems.append(f"{page.name}: {opt} is not in the OPTIONS section")
    assert not problems, "\n".join(problems)


def test_every_documented_option_exists() -> None:
    problems = []
    by_page: dict[Path, set[str]] = {}
    for c in commands():
        by_page.setdefault(documented_on(c.path), set()).update(c.options)
    for page, opts in sorted(by_page.items()):
        if not page.exists():
            continue
        documented = tagged_options(sections(page.read_text()).get("OPTIONS", ""))
        for opt in sorted(documented - opts):
            problems.append(f"{page.name}: documents {opt}, which the command does not accept")
    assert not problems, "\n".join(problems)


def test_help_output_lists_the_documented_options() -> None:
    """--help, as a user sees it, names every option its page's OPTIONS section documents."""
    from rootless.cli import root_help
    from rootless.options import command_help

    problems = []
    for c in commands():
        path, page = c.path, documented_on(c.path)
        if not page.exists():
            continue
        documented = tagged_options(sections(page.read_text()).get("OPTIONS", "")) & c.options
        shown = root_help() if c.cmd is None else command_help(c.cmd, path)
        for opt in sorted(documented):
            if not mentions(shown, opt):
                problems.append(f"'rootless {' '.join(path)} --help' does not show {opt}")
    assert not problems, "\n".join(problems)


def test_the_man_test_sees_every_command() -> None:
    # guard against a table that finds nothing (a test that cannot fail)
    paths = {c.path for c in commands()}
    assert {("run",), ("image", "inspect"), ("container", "prune"), ("completion",)} <= paths
