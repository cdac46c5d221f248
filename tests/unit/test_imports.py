"""DESIGN.md's import rules, enforced: each layer imports only what the one-way data flow allows."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# package prefix → module prefixes it must never import (top level or inside functions)
FORBIDDEN = {
    "storage": ("rootless.runtime", "rootless.image", "rootless.cli", "rootless.commands", "httpx", "rich",
                "slirp"),
    "rootless.runtime": ("rootless.image", "storage", "rootless.cli", "rootless.commands", "httpx", "rich"),
    "slirp": ("rootless.image", "rootless.runtime", "storage", "rootless.cli", "httpx", "rich"),
    "rootless.image": ("rootless.cli", "rootless.commands"),
}


def _modules() -> list[tuple[str, Path]]:
    out = []
    for pkg in ("rootless", "storage", "slirp"):
        for f in sorted((ROOT / pkg).rglob("*.py")):
            mod = ".".join(f.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
            out.append((mod, f))
    return out


def _imports(path: Path, mod: str) -> list[str]:
    names = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = mod.split(".")[: -node.level] if not path.name == "__init__.py" else mod.split(".")
                names.append(".".join(base + ([node.module] if node.module else [])))
            elif node.module:
                names.append(node.module)
    return names


@pytest.mark.parametrize("mod,path", _modules(), ids=lambda v: str(v) if isinstance(v, str) else "")
def test_layer_rules(mod: str, path: Path) -> None:
    for layer, banned in FORBIDDEN.items():
        if mod == layer or mod.startswith(layer + "."):
            bad = [n for n in _imports(path, mod) for b in banned if n == b or n.startswith(b + ".")]
            assert not bad, f"{mod} imports {bad}: DESIGN.md's import rules forbid it"


def test_rules_cover_something() -> None:
    # guard against a glob that finds nothing (a test that cannot fail)
    mods = [m for m, _ in _modules()]
    assert "storage.layers" in mods and "rootless.runtime.process" in mods


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
            "storage.rootfs", "storage.images", "storage.drivers.overlay", "storage.drivers.vfs", "slirp.config")
SLOW = ("dataclasses", "inspect", "tomllib", "threading", "socket", "subprocess", "datetime", "typer", "httpx",
        "rich", "pydantic")


def test_run_path_imports_nothing_slow() -> None:
    code = (f"import sys, {', '.join(RUN_PATH)}; "
            f"print(','.join(m for m in {SLOW!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "", f"the run path imports {out.stdout.strip()}"
