"""TensorBoard event files of a run's cells, written with tensorboardX (no TensorFlow):
``lt run --log tensorboard`` writes each group of cells as it is stored (`Logger`, a progress
receiver), ``lt export --tensorboard`` writes them for runs made before (`write_run`).

One event file per cell, each its own TensorBoard run, named in the run selector by where it
lies under the run's ``tensorboard/`` folder (`run_name`)::

    <store>/<run id>/tensorboard/r<R>/level_<LL>/<member>/events.out.tfevents.<ns>.lt

(``r0/level_03/ticket``, ``r1/level_03/reinit-0``; levels have two digits so they sort).
It holds, at each evaluation, with the iteration on the run's 0..T axis as the global step:
`SCALARS` (validation and test loss and accuracy, the values of the cell's metrics.json
curve) and ``learning_rate`` (the run's schedule at the optimizer's step there: the
iteration, or T and beyond for a fine-tuned cell, whose schedule starts at T). Then the
cell's hyperparameters for the HParams dashboard (`hparams`: the run's descriptor flattened
to dotted fields, and the cell's replicate, level, member and % of weights remaining) as a
session whose metrics are the `SUMMARY` scalars at the cell's last iteration.

Writing a cell is idempotent. A cell's folder keeps a fingerprint of what its event file was
written from (`MARKER`); a cell whose fingerprint matches is skipped, so a rerun rewrites
nothing. Otherwise the whole file is written elsewhere first, the old event file is removed
and the new one renamed into place under a later name: every reader sees one complete file
per cell, and a TensorBoard that had read the old file reads the new one from its first
event. Its steps start over, and TensorBoard replaces the points at and after a step it sees
again, so no point is shown twice.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import math
import os
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from ltcli.core import atomic
from ltcli.core.errors import UsageError
from ltcli.experiment.plan import Progress
from ltcli.storage.store import CellKey, Store

FOLDER = "tensorboard"
"""The folder of a run's event files, in the run's folder: ``tensorboard --logdir`` it."""
FORMAT = 1
"""What an event file holds; a change rewrites every cell's file at its next write."""
MARKER = ".lt-source.json"
"""In each cell's folder: the fingerprint of what its event file was written from."""
SCALARS = {
    "loss/val": "val_loss",
    "loss/test": "test_loss",
    "accuracy/val": "val_acc",
    "accuracy/test": "test_acc",
}
"""Tag of each scalar written at every evaluation: the curve field it comes from."""
LEARNING_RATE = "learning_rate"
SUMMARY = (
    "final_test_acc",
    "final_test_loss",
    "early_stop_test_acc",
    "early_stop_test_loss",
    "early_stop_iter",
    "min_val_loss",
)
"""The cell's metrics that are its HParams session's metrics, as ``summary/<name>``."""


def require(flag: str) -> Any:
    """The tensorboardX package.

    Raises:
      UsageError: it is not installed; the message, for `flag`, says how to install it.
    """
    try:
        import tensorboardX
    except ImportError as err:
        raise UsageError(
            f"{flag}: tensorboardX is not installed; install it: pip install tensorboardX "
            "(from a clone, pip install -e . installs it with lt)"
        ) from err
    return tensorboardX


def folder(store: Store, run_id: str) -> Path:
    """The run's event-file folder (``<run dir>/tensorboard``)."""
    return store.run_dir(run_id) / FOLDER


def run_name(cell: CellKey) -> str:
    """The cell's TensorBoard run, relative to `folder`: ``r0/level_03/ticket``."""
    return f"r{cell.replicate}/level_{cell.level:02d}/{cell.member}"


def cell_folder(store: Store, run_id: str, cell: CellKey) -> Path:
    return folder(store, run_id) / run_name(cell)


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _hparam(value: Any) -> bool | int | float | str:
    """A value the HParams plugin takes: numbers, strings and booleans as they are, None as
    ``"none"``, lists and empty tables as JSON."""
    if value is None:
        return "none"
    if isinstance(value, bool | int | float | str):
        return value
    return orjson.dumps(value).decode()


def hparams(
    record: dict[str, Any], meta: dict[str, Any], cell: CellKey, metrics: dict[str, Any]
) -> dict:
    """The cell's hyperparameters: ``run`` (the id's first 12 digits), ``experiment``, the
    run descriptor's fields (``train.lr``, ``prune.rates.fc``, ``data.content``, ...), and
    the cell's ``replicate``, ``level``, ``member``, ``member_kind``, ``percent_remaining``
    and ``start_iteration``."""
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
    return {key: _hparam(value) for key, value in values.items()}


def _fingerprint(hyper: dict[str, Any], metrics: dict[str, Any]) -> str:
    content = orjson.dumps(
        {"format": FORMAT, "hparams": hyper, "metrics": metrics}, option=orjson.OPT_SORT_KEYS
    )
    return hashlib.sha256(content).hexdigest()


def learning_rates(
    schedule: Callable[[Any], Any], metrics: dict[str, Any], iterations: list[int]
) -> np.ndarray:
    """The learning rate at each of `iterations` of a cell: the schedule at the optimizer's
    step there, which counts from the cell's ``schedule_step`` at its ``start_iteration``."""
    import jax

    if not len(iterations):
        return np.zeros(0, np.float32)
    start = metrics.get("start_iteration", 0)
    steps = np.asarray(iterations, np.int32) - start + metrics.get("schedule_step", start)
    return np.asarray(jax.vmap(schedule)(steps), np.float32)


def _number(value: Any) -> float:
    return math.nan if value is None else float(value)


def _events(hyper: dict[str, Any], metrics: dict[str, Any], rates: np.ndarray) -> bytes:
    """The cell's event file, written by tensorboardX in a temporary folder: one event per
    evaluation holding its `SCALARS` and the learning rate, the HParams session's start and
    end, and the `SUMMARY` scalars at the cell's last iteration. A diverged cell's NaN (null
    in metrics.json) stays NaN. (tensorboardX's `EventsWriter`, which writes as it is
    called: its `SummaryWriter` sends each scalar through a queue to a thread, several times
    slower for a cell of 500 evaluations.)"""
    from tensorboardX.event_file_writer import EventsWriter
    from tensorboardX.proto.event_pb2 import Event
    from tensorboardX.proto.summary_pb2 import Summary
    from tensorboardX.summary import hparams as hparams_summaries

    def values(pairs: Iterable[tuple[str, Any]]) -> Summary:
        return Summary(value=[Summary.Value(tag=t, simple_value=_number(v)) for t, v in pairs])

    curve = metrics["curve"]
    summary = {f"summary/{name}": _number(metrics[name]) for name in SUMMARY if name in metrics}
    last = int(metrics.get("iterations") or max(curve["iteration"], default=0))
    now = time.time()
    with tempfile.TemporaryDirectory(prefix="lt-tensorboard-") as tmp:
        writer = EventsWriter(os.path.join(tmp, "events"))
        try:
            for i, step in enumerate(curve["iteration"]):
                scalars = [(tag, curve[field][i]) for tag, field in SCALARS.items()]
                scalars.append((LEARNING_RATE, rates[i]))
                writer.write_event(Event(wall_time=now, step=int(step), summary=values(scalars)))
            # The session's start and end; no experiment summary: TensorBoard then builds
            # the experiment from every session under --logdir (several runs' cells too).
            _, begin, end = hparams_summaries(hyper, summary)
            for event in (begin, end):
                writer.write_event(Event(wall_time=now, step=last, summary=event))
            writer.write_event(Event(wall_time=now, step=last, summary=values(summary.items())))
        finally:
            writer.close()
        (written,) = Path(tmp).glob("*tfevents*")
        return written.read_bytes()


def _place(target: Path, data: bytes, fingerprint: str) -> None:
    """Makes `data` the one event file in `target`, then records `fingerprint`."""
    target.mkdir(parents=True, exist_ok=True)
    (target / MARKER).unlink(missing_ok=True)  # a crash below leaves the cell to rewrite
    # Named without "tfevents" until complete, so TensorBoard never reads it half written;
    # `lt gc` removes one a killed write leaves (".*.tmp").
    fd, tmp = tempfile.mkstemp(dir=target, prefix=".lt-events.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        for old in target.iterdir():
            if "tfevents" in old.name:
                old.unlink()
        os.replace(tmp, target / f"events.out.tfevents.{time.time_ns()}.lt")
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    atomic.write_json(target / MARKER, {"format": FORMAT, "fingerprint": fingerprint})


def _is_current(target: Path, fingerprint: str) -> bool:
    try:
        marker = atomic.read_json(target / MARKER)
    except (OSError, ValueError):
        return False
    has_events = any("tfevents" in p.name for p in target.iterdir())
    return isinstance(marker, dict) and marker.get("fingerprint") == fingerprint and has_events


@contextlib.contextmanager
def _lock(root: Path) -> Iterator[None]:
    """Holds the run's event files for this process (a live run and an export may meet)."""
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".lock", "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def write_cells(store: Store, run_id: str, cells: Iterable[CellKey]) -> list[Path]:
    """Writes the event file of each of `cells` (finished cells of run `run_id`) whose file
    is missing or was written from anything else; returns the folders written.

    Raises:
      UsageError: tensorboardX is not installed.
      LtError: a cell's metrics do not match its manifest.
    """
    require("TensorBoard event files")
    record, meta = store.descriptor(run_id), store.meta(run_id)
    schedule = None
    written = []
    with _lock(folder(store, run_id)):
        for cell in cells:
            metrics = store.read_metrics(run_id, cell)
            hyper = hparams(record, meta, cell, metrics)
            fingerprint = _fingerprint(hyper, metrics)
            target = cell_folder(store, run_id, cell)
            if _is_current(target, fingerprint):
                continue
            if schedule is None:
                from ltcli.train import recipes  # JAX: only when something is written

                schedule = recipes.learning_rate(recipes.TrainConfig.of(record["full"]["train"]))
            rates = learning_rates(schedule, metrics, metrics["curve"]["iteration"])
            _place(target, _events(hyper, metrics, rates), fingerprint)
            written.append(target)
    return written


def write_run(store: Store, run_id: str) -> Path:
    """Writes the event files of every finished cell of run `run_id` that lacks an up-to-date
    one; returns the run's event-file folder (`folder`)."""
    write_cells(store, run_id, list(store.finished_cells(run_id)))
    return folder(store, run_id)


class Logger(Progress):
    """A progress receiver that writes the event files of each group of cells once they are
    stored, so ``tensorboard --logdir`` shows a run as it trains, group by group."""

    def __init__(self, store: Store, run_id: str):
        require("--log tensorboard")
        self.store, self.run_id = store, run_id

    def stored(self, cells: list[CellKey], flush: Callable[[], None]) -> None:
        flush()
        write_cells(self.store, self.run_id, cells)
