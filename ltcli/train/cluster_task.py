"""What a cluster task runs, on a worker of Ray (`ltcli.train.executor_ray`) or in a Slurm job
(`ltcli.train.executor_slurm`): train one group of a level's cells, or measure the barriers of
stored tickets, and write them to the store exactly as the local executor would
(`Runner.train_level`).

A worker process keeps its runners (data and compiled programs) between the groups it is
sent. A retried or requeued group skips the cells an earlier attempt stored, and resumes its
cells from their last checkpoint, which is named by the group's cells: other tasks train the
level's other groups at the same time.
"""

from __future__ import annotations

from pathlib import Path

from ltcli.experiment.plan import prepare
from ltcli.experiment.spec import Spec
from ltcli.storage.store import CellKey, Store
from ltcli.train.runner import Runner

_RUNNERS: dict[tuple[str, str], Runner] = {}
"""A worker process's runners, by store and run."""


def train_group(
    spec: Spec,
    store_root: str,
    data_dir: str | None,
    spawn: tuple[int, ...],
    cells: list[str],
    checkpoint_seconds: float = 60.0,
) -> list[str]:
    """Trains and stores the cells `cells` (relative paths) of one level, saving their state
    at most every `checkpoint_seconds`; returns those it trained (a retried group skips what
    an earlier attempt stored)."""
    store = Store(Path(store_root))
    keys = [CellKey.from_relpath(path) for path in cells]
    runner = _runner(spec, store, data_dir, checkpoint_seconds)
    runner.spawn = spawn
    runner.trainer.barriers = spec["run.barriers"]
    runner.trainer.checkpoints_by_cells = True  # other tasks train the level's other groups
    todo = [c for c in keys if not store.is_finished(runner.run_id, c)]
    if todo:
        runner.train_level(todo[0].level, todo)
        runner.view.flush()
    return [str(c.relpath) for c in todo]


def measure_barriers(spec: Spec, store_root: str, data_dir: str | None, cells: list[str]) -> None:
    """Measures the level barriers of the stored tickets `cells` (relative paths) from the
    store and adds them to their metrics (`Runner.measure_stored_barriers`)."""
    runner = _runner(spec, Store(Path(store_root)), data_dir)
    runner.measure_stored_barriers([CellKey.from_relpath(path) for path in cells])


def _runner(
    spec: Spec, store: Store, data_dir: str | None, checkpoint_seconds: float = 60.0
) -> Runner:
    """This worker's runner of `spec`'s run in `store`, made on first use."""
    key = (str(store.root), spec.experiment + repr(sorted(spec.values.items())))
    if key not in _RUNNERS:
        desc, source = prepare(spec, Path(data_dir) if data_dir else None)
        _RUNNERS[key] = Runner(
            store,
            desc,
            source,
            checkpoint_seconds=checkpoint_seconds,
            deterministic=spec["run.deterministic"],
            devices=spec["run.devices"],
            parallel=spec["run.parallel"],
            placement=spec["data.placement"],
            workers=spec["data.workers"],
        )
    return _RUNNERS[key]
