"""Running a sweep: every point checked against its data first, then each run in turn.

Each point is its own run (`ltcli.train.launch.run`: its own id, cached and resumable), so
a rerun of a finished sweep trains nothing and a killed one resumes at the point it was
training. Nothing is written until every point has resolved (`prepare` and `plan_of`: the
data's metadata, no training), so a point that fails a combination check stops the sweep
with exit 2 before the first run folder exists. Like `launch`, no JAX unless a point has
cells to train.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ltcli.core.errors import LtError, UsageError
from ltcli.data import DataSource
from ltcli.experiment import sweep
from ltcli.experiment.descriptor import Descriptor
from ltcli.experiment.plan import Progress, plan_of, prepare
from ltcli.experiment.spec import Spec
from ltcli.storage.store import Store
from ltcli.train import launch
from ltcli.train.divergence import DivergedError


@dataclasses.dataclass(frozen=True)
class SweepRun:
    """A sweep that ran: its id, its name, and each point with its run id, in order."""

    id: str
    name: str
    points: list[tuple[sweep.Point, str]]

    @property
    def run_ids(self) -> list[str]:
        return [run_id for _, run_id in self.points]


def resolve(
    base: Spec, axes: Sequence[sweep.Axis], data_dir: Path | None = None
) -> list[tuple[sweep.Point, tuple[Descriptor, DataSource]]]:
    """Every point of the sweep with what it resolves to (`prepare`: its descriptor and data
    source, which its run then reuses); writes nothing.

    Raises:
      UsageError: a point fails a check that needs the data or other fields (its label
        leads the message), or two points are the same run (a swept field that does not
        enter the run id there).
    """
    resolved: list[tuple[sweep.Point, tuple[Descriptor, DataSource]]] = []
    for point in sweep.expand(base, axes):
        try:
            desc, source = prepare(point.spec, data_dir)
            plan_of(point.spec, desc, source)
        except UsageError as err:
            raise UsageError(f"--sweep point {point.label}: {err}") from err
        for other, (other_desc, _) in resolved:
            if other_desc.run_id == desc.run_id:
                raise UsageError(
                    f"--sweep points {other.label} and {point.label} are the same run "
                    f"({desc.run_id[:12]}): a swept field does not change it there"
                )
        resolved.append((point, (desc, source)))
    return resolved


def run_sweep(
    base: Spec,
    axes: Sequence[sweep.Axis],
    store: Store,
    *,
    data_dir: Path | None = None,
    name: str | None = None,
    progress: Progress | None = None,
    **options: Any,
) -> SweepRun:
    """Runs (or resumes, or extends) every point of the sweep `axes` over `base` in `store`,
    one run each, after checking them all (`resolve`), and records each run's membership
    (`Store.add_sweep`) once it has run.

    A point whose ticket diverged does not stop the sweep: the other points run, then the
    divergences are raised together (`DivergedError`, exit 1), as one run trains its other
    replicates before raising.

    Args:
      base: the experiment with ``--set`` and flags applied.
      axes: the swept fields (`ltcli.experiment.sweep.parse_axes`).
      name: the sweep's name (default `ltcli.experiment.sweep.default_name`); the runs get
        no alias.
      progress: receives a note per point, then that point's run's events.
      options: the rest of `ltcli.train.launch.run`'s keywords (grouping, executor, ...).
    """
    resolved = resolve(base, axes, data_dir)
    identity = sweep.sweep_id(axes, [desc.run_id for _, (desc, _) in resolved])
    name = name or sweep.default_name(base.experiment, axes)
    points, diverged = [], []
    for point, prepared in resolved:
        run_id = prepared[0].run_id
        if progress is not None:
            progress.note(f"sweep {name}: point {point.index + 1}/{len(resolved)}: {point.label}")
        try:
            launch.run(
                point.spec,
                store,
                data_dir=data_dir,
                progress=progress,
                prepared=prepared,
                **options,
            )
        except LtError as err:
            if not isinstance(err, DivergedError):
                raise
            diverged.append(f"{point.label}: {err}")
        store.add_sweep(run_id, sweep.entry(identity, name, point, len(resolved)))
        points.append((point, run_id))
    if diverged:
        raise DivergedError("; ".join(diverged))
    return SweepRun(identity, name, points)
