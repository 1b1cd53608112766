"""One ``lt run`` with the outputs that follow it live: TensorBoard event files
(`ltcli.results.tensorboard`) and the HTML report (`ltcli.results.page`), each fed by the
run's ``stored`` events and written once more when the run ends, for one run or for every
point of a sweep (`ltcli.train.sweep_runner`).

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
from ltcli.results import page, tensorboard
from ltcli.storage.store import Store
from ltcli.train import launch
from ltcli.train import sweep_runner as sweeping


@dataclasses.dataclass(frozen=True)
class LiveOutputs:
    """What a run writes beside its cells.

    Attributes:
      tensorboard: write TensorBoard event files (``run.log = "tensorboard"``).
      report: the HTML report's path, or None.
      note: told what was written where (a line for stderr).
    """

    tensorboard: bool = False
    report: Path | None = None
    note: Callable[[str], None] = lambda _: None

    def receivers(self, store: Store, run_id: str) -> list[Progress]:
        """The progress receivers that keep the outputs of `run_id` current as it trains."""
        found: list[Progress] = []
        if self.tensorboard:
            found.append(tensorboard.Logger(store, run_id))
        if self.report is not None:
            found.append(page.Rewrite(store, [run_id], self.report, note=self.note))
        return found

    def finish(self, store: Store, run_ids: list[str]) -> None:
        """Writes the outputs of `run_ids` once more, now that they ended."""
        for run_id in run_ids if self.tensorboard else ():
            self.note(f"tensorboard: {tensorboard.write_run(store, run_id).absolute()}")
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
    if outputs.tensorboard:
        tensorboard.require("--log tensorboard")
    prepared = None
    if options.get("distributed"):
        prepared = launch.join(spec, data_dir, options.get("grouping", "auto"), executor)
        if not hosts.writer():
            outputs = LiveOutputs()
    if executor == "local" and (outputs.tensorboard or outputs.report is not None):
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
    if outputs.tensorboard:
        tensorboard.require("--log tensorboard")
    done = sweeping.run_sweep(spec, axes, store, **options)
    outputs.finish(store, done.run_ids)
    return done
