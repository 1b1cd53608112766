"""What a command asks of a run (levels, replicates, controls, spawn points), resolved from a
spec (`prepare`, `plan_of`), and the progress events a run reports. No JAX:
`ltcli.train.launch` decides from a plan and the store whether to train, and
`ltcli.train.runner` trains it."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from ltcli import data
from ltcli.core.errors import UsageError
from ltcli.experiment import combinations, descriptor
from ltcli.experiment.descriptor import Descriptor
from ltcli.experiment.member import CellKey, level_members, parse_controls
from ltcli.experiment.spec import Spec
from ltcli.science.pruning import parse_pattern


class FinishedCells(Protocol):
    """What a plan asks of a store (`ltcli.storage.store.Store` is one)."""

    def is_finished(self, run_id: str, cell: CellKey) -> bool: ...

    def read_metrics(self, run_id: str, cell: CellKey) -> dict: ...


class Progress:
    """Receives progress events; the CLI draws them, tests and notebooks ignore them."""

    def start(self, plan: Plan) -> None:
        """A run starts training what is left of `plan` (levels 0..``plan.rounds``)."""

    def level(self, level: int, cells: list[CellKey], total_steps: int, start: int) -> None:
        """A level's group trains to iteration `total_steps` from iteration `start` (its
        first iteration, or where a checkpoint resumed it)."""

    def advance(self, steps: int) -> None:
        """`steps` more iterations of the group are done."""

    def finish(self) -> None:
        """The group finished training."""

    def note(self, text: str) -> None:
        """Something the user should know that is not an error (a discarded checkpoint)."""

    def stored(self, cells: list[CellKey], flush: Callable[[], None]) -> None:
        """`cells` were handed to the store (they are written in the background); `flush()`
        waits until they are on disk, for a receiver that reads them (a report, logs)."""


class Fanout(Progress):
    """Sends every event to each of `receivers`, in order."""

    def __init__(self, *receivers: Progress):
        self.receivers = receivers

    def start(self, plan: Plan) -> None:
        for r in self.receivers:
            r.start(plan)

    def level(self, level: int, cells: list[CellKey], total_steps: int, start: int) -> None:
        for r in self.receivers:
            r.level(level, cells, total_steps, start)

    def advance(self, steps: int) -> None:
        for r in self.receivers:
            r.advance(steps)

    def finish(self) -> None:
        for r in self.receivers:
            r.finish()

    def note(self, text: str) -> None:
        for r in self.receivers:
            r.note(text)

    def stored(self, cells: list[CellKey], flush: Callable[[], None]) -> None:
        for r in self.receivers:
            r.stored(cells, flush)


@dataclasses.dataclass
class Plan:
    """Levels 0..rounds for each replicate, with the controls string's cells at each pruned
    level and a copy of the dense network for each spawn iteration at level 0; with
    `barriers`, each IMP ticket's error barrier to the level before is measured."""

    rounds: int
    replicates: int
    controls: str = ""
    spawn: tuple[int, ...] = ()
    barriers: bool = False

    def cells(self, level: int) -> list[CellKey]:
        members = level_members(self.controls, level, self.spawn)
        return [CellKey(r, level, m) for r in range(self.replicates) for m in members]

    def anything_left(self, store: FinishedCells, run_id: str) -> bool:
        """Whether `store` lacks any finished cell of the plan, or (`barriers_missing`) the
        level barrier of a stored ticket."""
        levels = range(self.rounds + 1)
        missing = any(not store.is_finished(run_id, c) for lv in levels for c in self.cells(lv))
        return missing or bool(self.barriers_missing(store, run_id))

    def barriers_missing(self, store: FinishedCells, run_id: str) -> list[CellKey]:
        """With `barriers`, the stored IMP tickets of the plan's pruned levels whose level
        barrier was not measured (their levels trained without `barriers`) though the level
        before's ticket is stored: measured from the store, they need no training."""
        if not self.barriers:
            return []
        return [
            ticket
            for level in range(1, self.rounds + 1)
            for ticket in (CellKey(r, level) for r in range(self.replicates))
            if store.is_finished(run_id, ticket)
            and store.is_finished(run_id, CellKey(ticket.replicate, level - 1))
            and "level_barrier" not in store.read_metrics(run_id, ticket)
        ]


def prepare(spec: Spec, data_dir: Path | None = None) -> tuple[Descriptor, data.DataSource]:
    """Locates the data and resolves the descriptor."""
    source = data.locate(
        spec["data.dataset"],
        data_dir,
        tokens=spec["data.tokens"],
        image_size=spec["data.image_size"],
    )
    return descriptor.resolve(spec, source), source


def plan_of(spec: Spec, desc: Descriptor, source: data.DataSource) -> Plan:
    """The cells `spec`'s ``[run]`` section asks for, spawn points in iterations. A one-shot
    run has one level per target (``run.rounds`` does not apply to it).

    Raises:
      UsageError: a spawn point that is not a multiple of the evaluation period below T, an
        ``invert`` control without pruning at initialization, or barriers of one-shot levels.
    """
    if source.text:  # an epoch of text: the training split in windows of the context
        train_size = source.train_size // desc["model.context"]
    else:
        train_size = source.train_size - desc["data.validation"]
    batch, every, end = desc["train.batch_size"], desc["train.eval_every"], desc["train.iterations"]
    spawn = sorted({d.iterations(train_size, batch) for d in spec["run.spawn"]})
    bad = [k for k in spawn if k >= end or k % every]
    if bad:
        raise UsageError(
            f"run.spawn: each must be a multiple of train.eval_every ({every}) below "
            f"train.iterations ({end}); got {bad}"
        )
    controls = spec["run.controls"]
    for kind in parse_controls(controls):
        if refused := combinations.member_refusal(desc["prune.method"], kind):
            raise UsageError(refused)
    targets = descriptor.one_shot_targets(desc.full)
    if targets and spec["run.barriers"]:
        raise UsageError(
            "--barriers: a level barrier is measured between successive IMP levels; one-shot "
            "levels each prune the same network, not the level before: drop --barriers"
        )
    rounds = len(targets) if targets else spec["run.rounds"]
    pattern = parse_pattern(spec["prune.pattern"])
    if pattern and rounds > pattern[1] - pattern[0]:
        n, m = pattern
        raise UsageError(
            f"run.rounds: IMP reaches {n}:{m} in {m - n} rounds of one weight per group of "
            f"{m}; {rounds} would prune past it"
        )
    return Plan(rounds, spec["run.replicates"], controls, tuple(spawn), spec["run.barriers"])
