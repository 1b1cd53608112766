"""TensorBoard event files of a run's cells, written with tensorboardX (no TensorFlow):
``lt run --log tensorboard`` writes each group of cells as it is stored (`write_cells`,
through `ltcli.results.session`'s progress receiver), ``lt export --tensorboard`` writes them
for runs made before (`write_run`).

One event file per cell, each its own TensorBoard run, named in the run selector by where it
lies under the run's ``tensorboard/`` folder (`run_name`)::

    <store>/<run id>/tensorboard/r<R>/level_<LL>/<member>/events.out.tfevents.<ns>.lt

(``r0/level_03/ticket``, ``r1/level_03/reinit-0``; levels have two digits so they sort).
It holds what every tracker shows of a cell (`ltcli.results.cell_scalars`): at each
evaluation, with the iteration as the global step, `SCALARS` and ``learning_rate``; then the
cell's parameters for the HParams dashboard as a session whose metrics are the ``summary/``
scalars at the cell's last iteration.

Writing a cell is idempotent. A cell's folder keeps a fingerprint of what its event file was
written from (`MARKER`); a cell whose fingerprint matches is skipped, so a rerun rewrites
nothing. Otherwise the whole file is written elsewhere first, the old event file is removed
and the new one renamed into place under a later name: every reader sees one complete file
per cell, and a TensorBoard that had read the old file reads the new one from its first
event. Its steps start over, and TensorBoard replaces the points at and after a step it sees
again, so no point is shown twice.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ltcli.core import atomic, extras
from ltcli.results import cell_scalars
from ltcli.results.cell_scalars import LEARNING_RATE as LEARNING_RATE
from ltcli.results.cell_scalars import SCALARS as SCALARS
from ltcli.results.cell_scalars import run_name
from ltcli.storage.store import CellKey, Store

FOLDER = "tensorboard"
"""The folder of a run's event files, in the run's folder: ``tensorboard --logdir`` it."""
FORMAT = 1
"""What an event file holds; a change rewrites every cell's file at its next write."""
MARKER = ".lt-source.json"
"""In each cell's folder: the fingerprint of what its event file was written from."""


def require(flag: str) -> Any:
    """The tensorboardX package.

    Raises:
      UsageError: it is not installed; the message, for `flag`, says how to install it.
    """
    return extras.require(
        "tensorboardX",
        flag,
        "pip install tensorboardX (from a clone, pip install -e . installs it with lt)",
    )


def folder(store: Store, run_id: str) -> Path:
    """The run's event-file folder (``<run dir>/tensorboard``)."""
    return store.run_dir(run_id) / FOLDER


def cell_folder(store: Store, run_id: str, cell: CellKey) -> Path:
    return folder(store, run_id) / run_name(cell)


def _events(params: dict[str, Any], scalars: cell_scalars.Scalars) -> bytes:
    """The cell's event file, written by tensorboardX in a temporary folder: one event per
    evaluation holding its scalars, the HParams session's start and end, and the summary
    scalars at the cell's last iteration. (tensorboardX's `EventsWriter`, which writes as
    it is called: its `SummaryWriter` sends each scalar through a queue to a thread,
    several times slower for a cell of 500 evaluations.)"""
    from tensorboardX.event_file_writer import EventsWriter
    from tensorboardX.proto.event_pb2 import Event
    from tensorboardX.proto.summary_pb2 import Summary
    from tensorboardX.summary import hparams as hparams_summaries

    def values(pairs: Iterable[tuple[str, float]]) -> Summary:
        return Summary(value=[Summary.Value(tag=t, simple_value=v) for t, v in pairs])

    now = time.time()
    with tempfile.TemporaryDirectory(prefix="lt-tensorboard-") as tmp:
        writer = EventsWriter(os.path.join(tmp, "events"))
        try:
            for step, point in scalars.points:
                writer.write_event(Event(wall_time=now, step=step, summary=values(point.items())))
            # The session's start and end; no experiment summary: TensorBoard then builds
            # the experiment from every session under --logdir (several runs' cells too).
            _, begin, end = hparams_summaries(params, scalars.summary)
            for event in (begin, end):
                writer.write_event(Event(wall_time=now, step=scalars.last, summary=event))
            summary = values(scalars.summary.items())
            writer.write_event(Event(wall_time=now, step=scalars.last, summary=summary))
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


def write_cells(store: Store, run_id: str, cells: Iterable[CellKey]) -> list[Path]:
    """Writes the event file of each of `cells` (finished cells of run `run_id`) whose file
    is missing or was written from anything else; returns the folders written.

    Raises:
      UsageError: tensorboardX is not installed.
      LtError: a cell's metrics do not match its manifest.
    """
    require("TensorBoard event files")
    run = cell_scalars.RunCells(store, run_id)
    written = []
    with cell_scalars.locked(folder(store, run_id) / ".lock"):
        for key in cells:
            cell = run.read(key)
            fingerprint = cell.fingerprint(FORMAT)
            target = cell_folder(store, run_id, key)
            if _is_current(target, fingerprint):
                continue
            _place(target, _events(cell.params, run.scalars(cell)), fingerprint)
            written.append(target)
    return written


def write_run(store: Store, run_id: str) -> Path:
    """Writes the event files of every finished cell of run `run_id` that lacks an up-to-date
    one; returns the run's event-file folder (`folder`)."""
    write_cells(store, run_id, list(store.finished_cells(run_id)))
    return folder(store, run_id)
