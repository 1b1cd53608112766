"""One ``lt run`` with the outputs that follow it live: an experiment tracker (`TRACKERS`:
TensorBoard event files, `ltcli.results.tensorboard`; Weights & Biases runs,
`ltcli.results.wandb_log`; MLflow runs, `ltcli.results.mlflow_log`) and the HTML report
(`ltcli.results.page`), each fed by the run's ``stored`` events and written once more when
the run ends, for one run or for every point of a sweep (`ltcli.train.sweep_runner`).

With the Ray executor, or a sweep, the driver takes no receivers: the outputs are written
when the command ends.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ltcli.core import hosts
from ltcli.experiment import sweep
from ltcli.experiment.plan import Fanout, Progress
from ltcli.experiment.spec import Spec
from ltcli.results import mlflow_log, page, tensorboard, wandb_log
from ltcli.storage.store import CellKey, Store
from ltcli.train import launch
from ltcli.train import sweep_runner as sweeping


@dataclasses.dataclass(frozen=True)
class Tracker:
    """An experiment tracker as ``lt run`` and ``lt export`` drive it: its module's three
    entry points.

    Attributes:
      name: its name in ``run.log``.
      require: raises a UsageError, for a flag, when its package is not installed.
      write_cells: writes the given stored cells of a run (those not written yet).
      write_run: writes a run's finished cells not written yet; says where, in words.
    """

    name: str
    require: Callable[[str], Any]
    write_cells: Callable[[Store, str, list[CellKey]], Any]
    write_run: Callable[[Store, str], str]

    def logger(self, store: Store, run_id: str) -> Progress:
        """The progress receiver that writes each group of `run_id`'s cells once they are
        stored, so the tracker shows the run as it trains, group by group.

        Raises:
          UsageError: the tracker's package is not installed.
        """
        self.require(f"--log {self.name}")
        return _Logger(self, store, run_id)


class _Logger(Progress):
    def __init__(self, tracker: Tracker, store: Store, run_id: str):
        self.tracker, self.store, self.run_id = tracker, store, run_id

    def stored(self, cells: list[CellKey], flush: Callable[[], None]) -> None:
        flush()
        self.tracker.write_cells(self.store, self.run_id, cells)


TRACKERS = {
    "tensorboard": Tracker(
        "tensorboard",
        tensorboard.require,
        tensorboard.write_cells,
        lambda store, run_id: str(tensorboard.write_run(store, run_id).absolute()),
    ),
    "wandb": Tracker("wandb", wandb_log.require, wandb_log.write_cells, wandb_log.write_run),
    "mlflow": Tracker("mlflow", mlflow_log.require, mlflow_log.write_cells, mlflow_log.write_run),
}
"""Each tracker by its name in ``run.log`` (``lt run --log NAME``, ``lt export --NAME``)."""


@dataclasses.dataclass(frozen=True)
class LiveOutputs:
    """What a run writes beside its cells.

    Attributes:
      log: the tracker that follows the run (``run.log``: a name in `TRACKERS`), or "".
      report: the HTML report's path, or None.
      note: told what was written where (a line for stderr).
    """

    log: str = ""
    report: Path | None = None
    note: Callable[[str], None] = lambda _: None

    def receivers(self, store: Store, run_id: str) -> list[Progress]:
        """The progress receivers that keep the outputs of `run_id` current as it trains."""
        found: list[Progress] = []
        if self.log:
            found.append(TRACKERS[self.log].logger(store, run_id))
        if self.report is not None:
            found.append(page.Rewrite(store, [run_id], self.report, note=self.note))
        return found

    def finish(self, store: Store, run_ids: list[str]) -> None:
        """Writes the outputs of `run_ids` once more, now that they ended."""
        for run_id in run_ids if self.log else ():
            self.note(f"{self.log}: {TRACKERS[self.log].write_run(store, run_id)}")
        if self.report is not None:
            page.write(store, run_ids, self.report)
            self.note(f"report: {self.report}")


def run(
    spec: Spec,
    store: Store,
    outputs: LiveOutputs,
    *,
    progress: Progress,
    data_dir: Path | None = None,
    executor: str = "local",
    **options: Any,
) -> str:
    """Runs `spec` (`ltcli.train.launch.run`) with its live `outputs`; returns the run id.
    In a multi-host job (``distributed``) the processes other than the store's writer
    write no outputs (`ltcli.core.hosts`); every refusal that needs no other process comes
    before the job meets (`ltcli.train.launch.join`)."""
    if outputs.log:
        TRACKERS[outputs.log].require(f"--log {outputs.log}")
    prepared = None
    if options.get("distributed"):
        prepared = launch.join(spec, data_dir, options.get("grouping", "auto"), executor)
        if not hosts.writer():
            outputs = LiveOutputs()
    if executor == "local" and (outputs.log or outputs.report is not None):
        prepared = prepared or launch.prepare(spec, data_dir)
        receivers = outputs.receivers(store, prepared[0].run_id)
        progress = Fanout(progress, *receivers)
    run_id = launch.run(
        spec,
        store,
        data_dir=data_dir,
        progress=progress,
        executor=executor,
        prepared=prepared,
        **options,
    )
    outputs.finish(store, [run_id])
    return run_id


def run_sweep(
    spec: Spec,
    axes: Sequence[sweep.Axis],
    store: Store,
    outputs: LiveOutputs,
    **options: Any,
) -> sweeping.SweepRun:
    """Runs every point of a sweep (`ltcli.train.sweep_runner.run_sweep`), then writes the outputs
    of its runs (the report draws them together)."""
    if outputs.log:
        TRACKERS[outputs.log].require(f"--log {outputs.log}")
    done = sweeping.run_sweep(spec, axes, store, **options)
    outputs.finish(store, done.run_ids)
    return done
