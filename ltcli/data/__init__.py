"""Data sets by name. `locate` finds one on disk and identifies it by content.

Plain names (``mnist``) are looked up in `DATASETS`; ``kind:ARG`` names (``folder:PATH``)
in `PREFIXED`. Both registries are plain dicts whose errors list the valid names.

The package may import core only (errors, atomic writes, lt's folders, the progress meter):
a data set knows nothing of runs, models or training.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ltcli.core.errors import UsageError
from ltcli.data import cifar, folder, idx, tfds_source
from ltcli.data.base import Arrays, DataSource

Locator = Callable[[str, Path | None], DataSource]

DATASETS: dict[str, Locator] = {
    "mnist": idx.locate,
    "fashion-mnist": idx.locate,
    "cifar10": cifar.locate,
}
PREFIXED: dict[str, Locator] = {
    "folder": folder.locate,
    "tfds": tfds_source.locate,
}

__all__ = ["DATASETS", "PREFIXED", "Arrays", "DataSource", "locate"]


def locate(name: str, data_dir: Path | None = None) -> DataSource:
    """Finds data set `name`, searching `data_dir`, ``$LT_DATA_DIR``, its system location and
    lt's data cache.

    Raises:
      UsageError: an unknown name, or the files are missing or malformed (never a download).
    """
    kind, sep, arg = name.partition(":")
    if sep and kind in PREFIXED:
        return PREFIXED[kind](arg, data_dir)
    if name in DATASETS:
        return DATASETS[name](name, data_dir)
    known = sorted(DATASETS) + [f"{k}:..." for k in sorted(PREFIXED)]
    raise UsageError(f"data.dataset: unknown data set {name!r}; known: {', '.join(known)}")
