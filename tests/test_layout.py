"""The package's rooms (issue 19): imports point down the list of packages, never up, and
form no circle; every package says in its docstring what it holds and what it may import."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "ltcli"
LAYERS = ("cli", "results", "train", "storage", "experiment", "models", "data", "science", "core")
"""Top to bottom: a module may import its own package and those below it."""
ENTRY_POINTS = ("__main__", "bench")
"""Top-level modules above every package (``python -m ltcli``, ``python -m ltcli.bench``)."""


def _module(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """The ltcli modules (or packages) `path` imports, at any depth (lazy imports too)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("ltcli"):
            for alias in node.names:  # "from ltcli.train import engine" imports a module
                name = f"{node.module}.{alias.name}"
                is_module = (PACKAGE.parent / f"{name.replace('.', '/')}.py").exists()
                is_package = (PACKAGE.parent / name.replace(".", "/") / "__init__.py").exists()
                found.add(name if is_module or is_package else node.module)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("ltcli")}
    return found


def _layer(module: str) -> str | None:
    """The package of `module` (``ltcli.train.engine`` -> ``train``); None for the root."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


GRAPH = {_module(p): _imports(p) for p in PACKAGE.rglob("*.py")}


def test_every_module_is_in_a_package_of_the_list():
    loose = {m for m in GRAPH if _layer(m) not in (*LAYERS, *ENTRY_POINTS, None, "experiments")}
    assert not loose, f"modules outside the packages {LAYERS}: {sorted(loose)}"


@pytest.mark.parametrize("layer", LAYERS)
def test_imports_point_down(layer):
    below = set(LAYERS[LAYERS.index(layer) :])
    upward = {
        (module, imported)
        for module, imports in GRAPH.items()
        if _layer(module) == layer
        for imported in imports
        if imported != "ltcli" and _layer(imported) not in below
    }
    assert not upward, f"{layer} imports from packages above it: {sorted(upward)}"


def test_no_module_imports_a_circle():
    modules = set(GRAPH)

    edges = {m: {i for i in imports if i in modules and i != m} for m, imports in GRAPH.items()}
    visiting, done = set(), set()

    def visit(node: str, path: list[str]) -> None:
        if node in done:
            return
        assert node not in visiting, f"import circle: {' -> '.join([*path, node])}"
        visiting.add(node)
        for nxt in sorted(edges.get(node, ())):
            visit(nxt, [*path, node])
        visiting.discard(node)
        done.add(node)

    for module in sorted(edges):
        visit(module, [])


@pytest.mark.parametrize("layer", LAYERS)
def test_each_package_says_what_it_holds_and_may_import(layer):
    doc = importlib.import_module(f"ltcli.{layer}").__doc__ or ""
    assert len(doc.split()) >= 20 and "import" in doc.lower(), layer


def test_the_layout_check_sees_an_upward_import(tmp_path):
    """The rule itself: an engine module that imported the CLI would be caught."""
    bad = tmp_path / "bad.py"
    bad.write_text("from ltcli.cli import main\nfrom ltcli.core import errors\n")
    assert {_layer(m) for m in _imports(bad)} == {"cli", "core"}
    assert LAYERS.index("cli") < LAYERS.index("train")
