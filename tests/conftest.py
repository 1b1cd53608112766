"""Shared fixtures: an isolated lt cache per test session, real data when present, and
small helpers to build specs and stores; and the test tiers.

Every test is of one tier (pyproject.toml registers them): ``unit`` (no training, no
subprocess; `make test-fast`), ``integration`` (tiny training runs in this process) or
``system`` (subprocesses, Ray, many hosts, Chromium, ResNets). A module names its tier with
``pytestmark``; a test of another tier says so itself, and the closest mark wins, so that
``-m unit`` selects exactly the unit tier. A test of no tier fails collection."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from ltcli.core import paths
from ltcli.data import idx

from helpers import FAST_COMPILE_FLAG

if FAST_COMPILE_FLAG not in os.environ.get("XLA_FLAGS", ""):  # before any JAX backend starts
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {FAST_COMPILE_FLAG}".strip()

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
TIERS = ("unit", "integration", "system")


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Gives each test exactly one tier mark, its closest (its parameter's, else its own,
    else its class's, else its module's), before ``-m`` selects; refuses a test of no tier,
    and two tiers in one place."""
    holders = {node for item in items for node in item.listchain()[:-1]}
    for item in items:
        callspec = getattr(item, "callspec", None)
        params = list(callspec.marks) if callspec else []
        levels = [params, [m for m in item.own_markers if m not in params]]
        levels += [node.own_markers for node in reversed(item.listchain()[:-1])]
        tier = None
        for marks in levels:
            found = {m.name: m for m in marks if m.name in TIERS}
            if len(found) > 1:
                raise pytest.UsageError(f"{item.nodeid}: marked {sorted(found)}: pick one tier")
            if found and tier is None:
                tier = next(iter(found.values()))
        if tier is None:
            raise pytest.UsageError(
                f"{item.nodeid} has no tier: mark it (or its module) with one of "
                + ", ".join(f"pytest.mark.{t}" for t in TIERS)
            )
        item.own_markers[:] = [m for m in item.own_markers if m.name not in TIERS] + [tier]
    for node in holders:  # each test now holds its own tier, for -m to read
        node.own_markers[:] = [m for m in node.own_markers if m.name not in TIERS]


@pytest.fixture(scope="session", autouse=True)
def lt_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One lt cache folder for the whole session (shared by xdist workers), so compiled
    programs are reused across tests, and nothing is written to the user's cache."""
    folder = tmp_path_factory.getbasetemp().parent / "lt-cache"
    os.environ["LT_CACHE_DIR"] = str(folder)
    paths.enable_compile_cache()
    return folder


def _idx_folder(name: str) -> Path | None:
    candidates = []
    if os.environ.get("LT_DATA_DIR"):
        candidates.append(Path(os.environ["LT_DATA_DIR"]) / name)
    candidates.append(SHARED_DATA / name)
    candidates += [idx.SYSTEM_DIRS[name]] if name in idx.SYSTEM_DIRS else []
    for folder in candidates:
        if all((folder / f"{f}.gz").is_file() for f in idx.FILES):
            return folder
    return None


@pytest.fixture(scope="session")
def real_data() -> tuple[str, Path]:
    """A real IDX data set on this machine: (name, folder). Fashion-MNIST first."""
    for name in ("fashion-mnist", "mnist"):
        folder = _idx_folder(name)
        if folder is not None:
            return name, folder
    pytest.skip("no real MNIST or Fashion-MNIST on this machine")


@pytest.fixture
def write_spec(tmp_path: Path, real_data: tuple[str, Path]):
    """Writes a small LeNet spec on the real data set and returns its path."""

    def write(name: str = "tiny", **sections: dict) -> Path:
        table = {
            "data": {"dataset": real_data[0], "validation": 1000},
            "model": {"name": "lenet300"},
            "train": {"iterations": "200it", "eval_every": "100it", "batch_size": 60},
            "prune": {"rate": 0.5},
            "run": {"rounds": 1, "replicates": 1},
        }
        for section, fields in sections.items():
            table.setdefault(section, {}).update(fields)
        lines = []
        for section, fields in table.items():
            lines.append(f"[{section}]")
            lines += [f"{k} = {_toml(v)}" for k, v in fields.items()]
        path = tmp_path / f"{name}.toml"
        path.write_text("\n".join(lines) + "\n")
        return path

    return write


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return repr(value)


@pytest.fixture(scope="session")
def class_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small 10-class ``folder:`` data set (8x8 grey images, 30 train and 10 test per
    class, brighter by class), stored class by class as every folder data set is."""
    from PIL import Image

    root = tmp_path_factory.mktemp("classes")
    rng = np.random.default_rng(0)
    for split, count in (("train", 30), ("test", 10)):
        for c in range(10):
            folder = root / split / f"c{c}"
            folder.mkdir(parents=True)
            for i in range(count):
                pixels = rng.integers(0, 100, (8, 8)) + 15 * c
                Image.fromarray(pixels.astype(np.uint8), "L").save(folder / f"{i}.png")
    return root
