"""The package's rooms: imports point down the list of packages, never up, and
form no circle; every package says in its docstring what it holds and what it may import.

The import rules are import-linter contracts in setup.cfg (``lint-imports`` checks them,
lazy imports inside functions included); these tests run them and keep the list of
packages, the contracts and the package tree in agreement."""

from __future__ import annotations

import configparser
import importlib
from pathlib import Path

import pytest
from importlinter.cli import lint_imports

pytestmark = pytest.mark.unit

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "ltcli"
CONFIG = configparser.ConfigParser()
CONFIG.read(ROOT / "setup.cfg")
CONTRACT = CONFIG["importlinter:contract:layers"]["layers"].split()
ENTRY_POINTS = ("__main__",)
"""Top-level modules above every package (``python -m ltcli``)."""
LAYERS = tuple(name.removeprefix("ltcli.") for name in CONTRACT[len(ENTRY_POINTS) :])
"""Top to bottom: a module may import its own package and those below it."""


def test_the_contract_lists_the_entry_points_then_the_packages():
    assert [f"ltcli.{name}" for name in ENTRY_POINTS] == CONTRACT[: len(ENTRY_POINTS)]
    assert LAYERS == (
        "cli",
        "results",
        "train",
        "storage",
        "experiment",
        "models",
        "data",
        "science",
        "core",
    )


def test_every_module_is_in_a_package_of_the_list():
    modules = {p.relative_to(PACKAGE).parts for p in PACKAGE.rglob("*.py")}
    top = {parts[0].removesuffix(".py") for parts in modules}
    loose = top - {*LAYERS, *ENTRY_POINTS, "__init__", "experiments"}
    assert not loose, f"modules outside the packages {LAYERS}: {sorted(loose)}"


def test_imports_point_down_and_form_no_circle():
    assert lint_imports(str(ROOT / "setup.cfg"), no_cache=True, no_logo=True) == 0


@pytest.mark.parametrize("layer", LAYERS)
def test_each_package_says_what_it_holds_and_may_import(layer):
    doc = importlib.import_module(f"ltcli.{layer}").__doc__ or ""
    assert len(doc.split()) >= 20 and "import" in doc.lower(), layer


@pytest.mark.parametrize(
    "code,broken",
    [
        ("def later():\n    from toy.top import x\n", {"layers", "acyclic"}),  # lazily up
        ("from toy.low import b\n", {"acyclic"}),  # low.a <-> low.b
        ("", set()),
    ],
)
def test_the_contracts_see_an_upward_import_and_a_circle(tmp_path, monkeypatch, code, broken):
    """The contract types of setup.cfg on a toy package of two layers, `top` over `low`,
    whose `low.a` imports as `code` says: both catch what the rules forbid, lazily too."""
    (tmp_path / "toy" / "low").mkdir(parents=True)
    (tmp_path / "toy" / "__init__.py").write_text("")
    (tmp_path / "toy" / "top.py").write_text("from toy.low import a\nx = 1\n")
    (tmp_path / "toy" / "low" / "__init__.py").write_text("")
    (tmp_path / "toy" / "low" / "a.py").write_text(code)
    (tmp_path / "toy" / "low" / "b.py").write_text("from toy.low import a\n")
    config = tmp_path / "setup.cfg"
    contracts = {
        name: dict(CONFIG[f"importlinter:contract:{name}"]) for name in ("layers", "acyclic")
    }
    contracts["layers"]["layers"] = "\n    toy.top\n    toy.low"
    contracts["acyclic"]["ancestors"] = "\n    toy"
    toy = configparser.ConfigParser()
    toy["importlinter"] = {"root_package": "toy"}
    for name, fields in contracts.items():
        toy[f"importlinter:contract:{name}"] = fields
    with config.open("w") as out:
        toy.write(out)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    for name in contracts:
        status = lint_imports(str(config), (name,), no_cache=True, no_logo=True)
        assert status == (name in broken), name
