"""DESIGN.md's import rules, enforced: an allow-list of what each layer may import, no import cycles
(imports inside functions count), no private names across modules, and nothing slow on `run`'s path."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# The modules every layer may use: errors, the data types, paths, the config and the context.
BASE = ("rootless.errors", "rootless.record", "rootless.spec", "rootless.layout", "rootless.config",
        "rootless.context", "rootless.units", "rootless.names")
ENGINE = ("rootless.engine", "rootless.lifecycle", "rootless.image", "rootless.runtime", "storage", "slirp",
          "rootless.events", "rootless.doctor", "rootless.volumes", "rootless.runflags", "rootless.supervise",
          "rootless.networks", "rootless.system")
FRONT = (*BASE, *ENGINE, "rootless.options", "rootless.gotemplate", "rootless.views")

# Module (or package) → the project's modules it may import, top level or inside functions (the
# longest matching key applies). A new module needs an entry: its place in the one-way flow
# (DESIGN.md) is decided when it is written, not discovered later.
ALLOWED: dict[str, tuple[str, ...]] = {
    # front ends: they parse, call the engine and render; none imports another front end
    "rootless.__main__": ("rootless.cli",),
    "rootless.cli": ("rootless.options", "rootless.commands", "rootless.context", "rootless.errors"),
    # `build` starts the builder, `system service` the REST API front end (its entry point only)
    "rootless.commands": (*FRONT, "rootless.commands", "rootless.completion", "rootless.build",
                          "rootless.api.server"),
    "rootless.completion": ("rootless.options", "rootless.commands"),
    "rootless.build": (*FRONT, "rootless.build"),
    # POST /build and /commit start the same builder and commit as `rootless build`/`commit`
    "rootless.api": (*FRONT, "rootless.api", "rootless.build.builder", "rootless.build.commit"),
    "rootless.options": (),
    # the engine: makes, runs and handles containers and images
    "rootless.engine": (*BASE, *ENGINE),
    "rootless.lifecycle": (*BASE, "rootless.runtime", "storage", "rootless.events"),
    "rootless.events": BASE,
    "rootless.runflags": (*BASE, "rootless.lifecycle", "rootless.image"),
    "rootless.supervise": (*BASE, "rootless.lifecycle", "rootless.runtime", "rootless.image", "rootless.volumes"),
    # front-end helpers: Go templates for --format, Podman-shaped views for them
    "rootless.gotemplate": ("rootless.errors",),
    "rootless.views": (),
    "rootless.volumes": (*BASE, "rootless.lifecycle", "rootless.runtime", "storage"),
    "rootless.networks": (*BASE, "rootless.lifecycle", "rootless.runtime", "storage", "slirp", "rootless.image"),
    # doctor probes the storage driver with the runtime's own probe (storage.drivers.probe)
    "rootless.doctor": (*BASE, "rootless.runtime", "storage"),
    # system migrate: re-records the store's run root (container records) and driver
    "rootless.system": (*BASE, "rootless.runtime", "storage"),
    # below the engine
    "rootless.image": (*BASE, "rootless.image", "storage", "rootless.runtime.userns", "rootless.runtime.idmap",
                       "rootless.events",
                       "slirp.config", "slirp.ports"),
    "rootless.runtime": (*BASE, "rootless.runtime", "slirp"),
    "storage": ("rootless.errors", "rootless.record", "rootless.spec", "rootless.layout", "rootless.context",
                "storage"),
    "slirp": ("rootless.errors", "rootless.record", "slirp"),
    # the user-network daemon joins a container's network namespace to configure its end
    "slirp.netd": ("rootless.errors", "rootless.record", "slirp", "rootless.runtime.syscalls"),
    # the shared leaves
    "rootless.errors": (),
    "rootless.record": (),
    "rootless.units": (),
    "rootless.names": (),
    "rootless.spec": ("rootless.record",),
    "rootless.layout": ("rootless.errors", "rootless.record"),
    "rootless.config": ("rootless.errors", "rootless.record"),
    "rootless.context": ("rootless.config", "rootless.errors", "rootless.layout", "rootless.record"),
    "rootless": (),
}

# third-party packages a layer must never import
FORBIDDEN = {
    "storage": ("httpx", "rich"),
    "rootless.runtime": ("httpx", "rich"),
    "slirp": ("httpx", "rich"),
}


def _modules() -> dict[str, Path]:
    out = {}
    for pkg in ("rootless", "storage", "slirp"):
        for f in sorted((ROOT / pkg).rglob("*.py")):
            out[".".join(f.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")] = f
    return out


MODULES = _modules()


def _type_checking_only(tree: ast.AST) -> set[int]:
    """The nodes under ``if TYPE_CHECKING:`` (never executed)."""
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                skip.update(id(n) for n in ast.walk(child))
    return skip


def _imports(path: Path, mod: str) -> set[str]:
    """Every module ``mod`` imports when it runs: the top level and inside functions."""
    tree = ast.parse(path.read_text())
    skip = _type_checking_only(tree)
    names: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = mod.split(".")[: -node.level] if path.name != "__init__.py" else mod.split(".")
                parent = ".".join(base + ([node.module] if node.module else []))
            else:
                parent = node.module or ""
            # `from pkg import mod` imports the module pkg.mod (and pkg/__init__, counted as pkg.mod's)
            subs = {f"{parent}.{a.name}" for a in node.names if f"{parent}.{a.name}" in MODULES}
            names.update(subs)
            if len(subs) < len(node.names):
                names.add(parent)
    return names


def _project(names: set[str], mod: str) -> set[str]:
    return {n for n in names if n in MODULES and n != mod and n != "rootless"}


def _rule(mod: str) -> tuple[str, ...] | None:
    keys = [k for k in ALLOWED if mod == k or mod.startswith(k + ".")]
    return ALLOWED[max(keys, key=len)] if keys else None


def _allowed(target: str, allowed: tuple[str, ...]) -> bool:
    return any(target == a or target.startswith(a + ".") for a in allowed)


@pytest.mark.parametrize("mod", sorted(MODULES))
def test_layer_rules(mod: str) -> None:
    rule = _rule(mod)
    assert rule is not None, f"{mod} has no entry in ALLOWED: decide what it may import (DESIGN.md)"
    names = _imports(MODULES[mod], mod)
    bad = sorted(n for n in _project(names, mod) if not _allowed(n, rule) and not _same_package(n, mod))
    assert not bad, f"{mod} imports {bad}: DESIGN.md's import rules do not allow it"
    for layer, banned in FORBIDDEN.items():
        if mod == layer or mod.startswith(layer + "."):
            third = [n for n in names for b in banned if n == b or n.startswith(b + ".")]
            assert not third, f"{mod} imports {third}"


def _same_package(target: str, mod: str) -> bool:
    """A package's own modules (storage.drivers.overlay → storage.drivers.base)."""
    return target.split(".")[0] == mod.split(".")[0] and _rule(target) == _rule(mod) and \
        target.split(".")[:2] == mod.split(".")[:2]


def _graph() -> dict[str, set[str]]:
    return {m: _project(_imports(p, m), m) for m, p in MODULES.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_import_cycles() -> None:
    cycles = _cycles(_graph())
    assert not cycles, f"import cycles (counting imports inside functions): {cycles}"


def test_the_cycle_check_finds_cycles() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_module_imports_private_names() -> None:
    """``from x import _name`` and ``module._name`` of another project module are refused."""
    problems = []
    for mod, path in MODULES.items():
        tree = ast.parse(path.read_text())
        aliases: dict[str, str] = {}
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module:
                for a in node.names:
                    full = f"{node.module}.{a.name}"
                    if full in MODULES:
                        aliases[a.asname or a.name] = full
                    elif a.name.startswith("_") and not a.name.startswith("__") and node.module in MODULES \
                            and node.module != mod:
                        problems.append(f"{mod} imports {node.module}.{a.name}")
            elif isinstance(node, ast.Import):
                for a in node.names:
                    if a.name in MODULES and a.asname:
                        aliases[a.asname] = a.name
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) \
                    and node.value.id in aliases and node.attr.startswith("_") and not node.attr.startswith("__"):
                problems.append(f"{mod} uses {aliases[node.value.id]}.{node.attr}")
    assert not problems, "\n".join(sorted(set(problems)))


def test_rules_cover_something() -> None:
    # guard against a glob that finds nothing (a test that cannot fail)
    assert "storage.layers" in MODULES and "rootless.runtime.process" in MODULES
    graph = _graph()
    assert "rootless.runtime.reap" in graph["rootless.runtime.cgroups"]
    assert "rootless.engine" in graph["rootless.commands.containers"]


@pytest.mark.parametrize("module", ["rootless.cli", "rootless.options", "rootless.commands.containers",
                                    "rootless.commands.images", "rootless.commands.system", "rootless.engine",
                                    "rootless.completion", "rootless.image.manifest",
                                    "rootless.runtime.process", "storage.rootfs", "rootless.image.specgen"])
def test_run_path_modules_do_not_import_network_or_ui_libraries(module: str) -> None:
    code = (f"import sys, {module}; bad = [m for m in ('httpx', 'rich', 'typer', 'pydantic') "
            "if m in sys.modules]; print(','.join(bad))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "", f"{module} pulls in {out.stdout.strip()}"


# What a `rootless run` of a stored image imports, and modules too slow to load on that path
# (DESIGN.md principle 7): dataclasses brings inspect, ast and dis (rootless.record instead),
# tomllib is needed only when the config's cached copy is stale, threading and socket only
# for pulls and terminals.
RUN_PATH = ("rootless.cli", "rootless.options", "rootless.commands", "rootless.commands.containers",
            "rootless.engine", "rootless.config", "rootless.context", "rootless.layout",
            "rootless.image.present", "rootless.image.specgen", "rootless.runtime.run", "rootless.runtime.process",
            "storage.rootfs", "storage.images", "storage.drivers.overlay", "storage.drivers.vfs", "slirp.config",
            "rootless.runtime.network", "rootless.events")
SLOW = ("dataclasses", "inspect", "tomllib", "threading", "socket", "subprocess", "datetime", "typer", "httpx",
        "rich", "pydantic", "pyroute2", "dnslib")


def test_run_path_imports_nothing_slow() -> None:
    code = (f"import sys, {', '.join(RUN_PATH)}; "
            f"print(','.join(m for m in {SLOW!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "", f"the run path imports {out.stdout.strip()}"


# What ps, logs, inspect, port, rm and images load: no dataclasses (and its inspect, ast and dis),
# which records on these paths replace with rootless.record, and not the runtime that starts
# containers (ctypes) (DESIGN.md principle 7: every command starts in the time Podman's does).
# ps and port format published ports with runtime.network.host_side (slirp.ports); inspect spells
# its times with lifecycle.iso (no datetime).
VIEW_PATH = ("rootless.cli", "rootless.commands.containers", "rootless.commands.images", "rootless.engine",
             "rootless.lifecycle", "rootless.runtime.state", "rootless.runtime.lazyns", "rootless.image.present",
             "storage.images", "storage.rootfs", "rootless.commands.psview", "rootless.runtime.network",
             "slirp.ports")


def test_view_commands_import_nothing_slow() -> None:
    code = (f"import sys, {', '.join(VIEW_PATH)}; rootless.lifecycle.iso(1.5); "
            "print(','.join(m for m in ('dataclasses', 'inspect', 'ctypes', 'datetime', 'typer', 'httpx', 'rich', "
            "'pydantic') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "", f"the view commands import {out.stdout.strip()}"


def test_help_texts_load_neither_typing_nor_the_context() -> None:
    """`rootless --help`, `rootless ps --help`: the option tables only, none of the typing module
    (≈5 ms) nor the context's config, paths and records. -S: no site (an editable install's finder
    imports typing)."""
    code = ("import io, sys\nfrom rootless import cli\nsys.stdout = io.StringIO()\n"
            "for argv in (['--help'], ['ps', '--help'], ['image', 'ls', '--help'], ['volume', '--help']):\n"
            "    cli.dispatch(argv)\n"
            "sys.stdout = sys.__stdout__\n"
            "print(','.join(m for m in ('typing', 'rootless.context', 'pathlib', 'json') if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "", f"the help texts import {out.stdout.strip()}"
