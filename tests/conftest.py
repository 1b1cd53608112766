"""Shared fixtures: an isolated lt cache per test session, real data when present, and
small helpers to build specs and stores."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from ltcli.core import paths
from ltcli.data import idx

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


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


def assert_trained_under_mask(row, first, layer: str) -> None:
    """A trained cell `row` against its start `first`: pruned weights and their optimizer
    state exactly zero, and most survivors of `layer`'s kernel moved (it did train)."""
    from ltcli.train import checks

    checks.pruned_are_zero(row.params, first.mask, "test")
    checks.optimizer_state_masked(row.opt_state, row.params, first.mask, "test")
    kept = first.mask[layer]["kernel"] == 1
    kernel, initial = row.params[layer]["kernel"], first.params[layer]["kernel"]
    assert np.all(kernel[~kept] == 0)
    assert np.mean(kernel[kept] != initial[kept]) > 0.5
