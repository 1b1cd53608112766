"""What an experiment tracker shows of a finished cell, the same in each of them: TensorBoard
(`ltcli.results.tensorboard`), Weights & Biases (`ltcli.results.wandb_log`) and MLflow
(`ltcli.results.mlflow_log`) all write what `RunCells` reads.

A cell (`Cell`, from `RunCells.read`) has its parameters (`params`: the run's descriptor
flattened to dotted fields, like ``train.lr`` and ``prune.rates.fc``, and the cell's
replicate, level, member and % of weights remaining) and its scalars (`Scalars`, from
`RunCells.scalars`): at each evaluation, with the iteration on the run's 0..T axis as the
step, `SCALARS` (validation and test loss and accuracy, the values of the cell's
metrics.json curve) and `LEARNING_RATE` (the run's schedule at the optimizer's step there);
then the `SUMMARY` scalars, as ``summary/<name>``, at the cell's last iteration. A diverged
cell's NaN (null in metrics.json) stays NaN. Each tracker names the cell by `run_name`
(``r0/level_03/ticket``) and knows what it wrote by `Cell.fingerprint`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import math
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from ltcli.storage.store import CellKey, Store

SCALARS = {
    "loss/val": "val_loss",
    "loss/test": "test_loss",
    "accuracy/val": "val_acc",
    "accuracy/test": "test_acc",
}
"""Name of each scalar written at every evaluation: the curve field it comes from."""
LEARNING_RATE = "learning_rate"
SUMMARY = (
    "final_test_acc",
    "final_test_loss",
    "early_stop_test_acc",
    "early_stop_test_loss",
    "early_stop_iter",
    "min_val_loss",
)
"""The cell's metrics written once, as ``summary/<name>``, at its last iteration."""

Param = bool | int | float | str
"""A parameter's value as every tracker takes it."""


def run_name(cell: CellKey) -> str:
    """The cell's name in a tracker: ``r0/level_03/ticket`` (levels have two digits, so
    they sort)."""
    return f"r{cell.replicate}/level_{cell.level:02d}/{cell.member}"


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _param(value: Any) -> Param:
    """Numbers, strings and booleans as they are, None as ``"none"``, lists and empty
    tables as JSON."""
    if value is None:
        return "none"
    if isinstance(value, bool | int | float | str):
        return value
    return orjson.dumps(value).decode()


def params(
    record: dict[str, Any], meta: dict[str, Any], cell: CellKey, metrics: dict[str, Any]
) -> dict[str, Param]:
    """The cell's parameters: ``run`` (the id's first 12 digits), ``experiment``, the run
    descriptor's fields (``train.lr``, ``prune.rates.fc``, ``data.content``, ...), and the
    cell's ``replicate``, ``level``, ``member``, ``member_kind``, ``percent_remaining`` and
    ``start_iteration``."""
    values: dict[str, Any] = {
        "run": record["run_id"][:12],
        "experiment": meta.get("experiment", ""),
        **_flatten(record["full"]),
        "replicate": cell.replicate,
        "level": cell.level,
        "member": str(cell.member),
        "member_kind": cell.member.kind,
        "percent_remaining": metrics.get("percent_remaining"),
        "start_iteration": metrics.get("start_iteration", 0),
    }
    return {key: _param(value) for key, value in values.items()}


def learning_rates(
    schedule: Callable[[Any], Any], metrics: dict[str, Any], iterations: list[int]
) -> np.ndarray:
    """The learning rate at each of `iterations` of a cell: the schedule at the optimizer's
    step there, which counts from the cell's ``schedule_step`` at its ``start_iteration``
    (T and beyond for a fine-tuned cell, whose schedule starts at T)."""
    import jax

    if not len(iterations):
        return np.zeros(0, np.float32)
    start = metrics.get("start_iteration", 0)
    steps = np.asarray(iterations, np.int32) - start + metrics.get("schedule_step", start)
    return np.asarray(jax.vmap(schedule)(steps), np.float32)


def _number(value: Any) -> float:
    return math.nan if value is None else float(value)


@dataclasses.dataclass(frozen=True)
class Cell:
    """A finished cell as the trackers read it: its key, its metrics.json (with what was
    added to it) and its `params`."""

    key: CellKey
    metrics: dict[str, Any]
    params: dict[str, Param]

    @property
    def name(self) -> str:
        return run_name(self.key)

    def fingerprint(self, version: int) -> str:
        """What a tracker's record of the cell was written from, for the tracker's format
        `version`: equal fingerprints, equal records."""
        content = {"format": version, "hparams": self.params, "metrics": self.metrics}
        return hashlib.sha256(orjson.dumps(content, option=orjson.OPT_SORT_KEYS)).hexdigest()


@dataclasses.dataclass(frozen=True)
class Scalars:
    """A cell's scalars.

    Attributes:
      points: each evaluation's iteration and its `SCALARS` and `LEARNING_RATE`, by name.
      summary: the `SUMMARY` metrics the cell has, as ``summary/<name>``.
      last: the cell's last iteration, the step of `summary`.
    """

    points: list[tuple[int, dict[str, float]]]
    summary: dict[str, float]
    last: int


class RunCells:
    """The cells of run `run_id` as the trackers show them: the run's descriptor is read
    once, its learning-rate schedule built at the first `scalars` (which imports JAX)."""

    def __init__(self, store: Store, run_id: str):
        self.store, self.run_id = store, run_id
        self.record, self.meta = store.descriptor(run_id), store.meta(run_id)
        self._schedule: Callable[[Any], Any] | None = None

    def read(self, key: CellKey) -> Cell:
        """A finished cell.

        Raises:
          LtError: its metrics do not match its manifest.
        """
        metrics = self.store.read_metrics(self.run_id, key)
        return Cell(key, metrics, params(self.record, self.meta, key, metrics))

    def scalars(self, cell: Cell) -> Scalars:
        """The scalars of `cell`, one of this run's."""
        if self._schedule is None:
            from ltcli.train import recipes  # JAX: only when something is written

            train = recipes.TrainConfig.of(self.record["full"]["train"])
            self._schedule = recipes.learning_rate(train)
        metrics, curve = cell.metrics, cell.metrics["curve"]
        rates = learning_rates(self._schedule, metrics, curve["iteration"])
        points = []
        for i, step in enumerate(curve["iteration"]):
            values = {name: _number(curve[field][i]) for name, field in SCALARS.items()}
            values[LEARNING_RATE] = float(rates[i])
            points.append((int(step), values))
        summary = {f"summary/{name}": _number(metrics[name]) for name in SUMMARY if name in metrics}
        last = int(metrics.get("iterations") or max(curve["iteration"], default=0))
        return Scalars(points, summary, last)


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Holds a run's output of one tracker for this process (a live run and an export may
    meet), by the lock file `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
