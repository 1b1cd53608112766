"""Running an experiment: resolve the spec, record the run, and train what is missing.

This module loads no JAX: a rerun whose cells are all finished answers from the store
alone. `ltcli.runner` (the IMP loop, JAX and the engine) is imported only when a level has
cells left to train.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from ltcli import data, descriptor, paths
from ltcli.descriptor import Descriptor
from ltcli.errors import UsageError
from ltcli.spec import Spec
from ltcli.store import CellKey, Store


class Progress:
    """Receives progress events; the CLI draws them, tests and notebooks ignore them."""

    def level(self, level: int, cells: list[CellKey], total_steps: int, start: int) -> None:
        """A level's group starts training at iteration `start` (> 0 when resumed)."""

    def advance(self, steps: int) -> None:
        """`steps` more iterations of the group are done."""

    def finish(self) -> None:
        """The group finished training."""


def members(controls: str) -> list[str]:
    """Member names of a level: the ticket, then ``reinit-0``... and ``random-0``... as
    asked for by a controls string like ``"reinit:3,random:1"``."""
    out = ["ticket"]
    for item in filter(None, controls.split(",")):
        kind, count = item.split(":")
        out += [f"{kind}-{i}" for i in range(int(count))]
    return out


@dataclasses.dataclass
class Plan:
    """What a command asks of a run: levels 0..rounds for each replicate, with controls."""

    rounds: int
    replicates: int
    controls: str = ""

    def cells(self, level: int) -> list[CellKey]:
        names = members(self.controls) if level > 0 else ["ticket"]
        return [CellKey(r, level, m) for r in range(self.replicates) for m in names]

    def unfinished(self, store: Store, run_id: str, level: int) -> list[CellKey]:
        """The cells of `level` that `store` does not hold finished."""
        return [c for c in self.cells(level) if not store.is_finished(run_id, c)]


def prepare(spec: Spec, data_dir: Path | None = None) -> tuple[Descriptor, data.DataSource]:
    """Locates the data and resolves the descriptor; checks the plan fits the strategy."""
    source = data.locate(spec["data.dataset"], data_dir)
    desc = descriptor.resolve(spec, source)
    if desc["prune.one_shot"] is not None and spec["run.rounds"] > 1:
        raise UsageError(
            f"run.rounds: one-shot pruning has exactly one round (got {spec['run.rounds']})"
        )
    return desc, source


def run(
    spec: Spec,
    store: Store,
    *,
    data_dir: Path | None = None,
    name: str | None = None,
    progress: Progress | None = None,
    checkpoint_seconds: float = 60.0,
    grouping: str = "auto",
) -> str:
    """Runs (or resumes, or extends) the experiment `spec` in `store`; returns the run id.

    With cells to train, JAX's persistent compilation cache is switched on (in lt's cache
    directory), so a later process reuses what this one compiles.
    """
    desc, source = prepare(spec, data_dir)
    store.save_run(desc, spec.experiment, name)
    plan = Plan(spec["run.rounds"], spec["run.replicates"], spec["run.controls"])
    with store.lock(desc.run_id):
        if any(plan.unfinished(store, desc.run_id, level) for level in range(plan.rounds + 1)):
            paths.enable_compile_cache()
            from ltcli.runner import Runner

            Runner(store, desc, source, progress, checkpoint_seconds, grouping).run(plan)
    return desc.run_id
