"""Iterative magnitude pruning over a store: train, prune, rewind, repeat, skipping every
cell that is already finished.

`Runner` walks a plan's levels: it asks which cells are unfinished, stops a replicate whose
ticket diverged (it is never pruned from), and hands each level's cells to
`ltcli.train.level.LevelTrainer`, which trains them as one group sharded over the local
devices. What every cell starts from is `ltcli.train.starts` (the combination table of
`ltcli.experiment.combinations`); with ``controls_at="end"`` the controls of pruned levels,
which feed nothing later, train at the end in large groups.
"""

from __future__ import annotations

from typing import Any

from ltcli import data
from ltcli.experiment.descriptor import Descriptor, id_at_neutral
from ltcli.experiment.plan import Plan, Progress
from ltcli.science.methods import TRAINS_TO_TARGET
from ltcli.storage.store import CellKey, Store
from ltcli.train import instability
from ltcli.train.context import RunContext, local_devices, strategy
from ltcli.train.divergence import DivergedError, diverged
from ltcli.train.keys import Keys
from ltcli.train.level import LevelTrainer
from ltcli.train.starts import Starts, masked

__all__ = ["DivergedError", "Runner", "diverged", "local_devices", "masked", "strategy"]

MAX_GROUP = 625
"""At most this many deferred controls train as one group (625 LeNet cells ran fastest of
the sizes measured on an H200; a group's memory grows linearly with it)."""


class Runner:
    """Runs a plan for one descriptor against a store.

    Attributes:
      context: what the run's pieces share (store, descriptor, data, model, engine).
      starts: what each cell starts from.
      trainer: trains and stores groups of cells.
    """

    def __init__(
        self,
        store: Store,
        desc: Descriptor,
        source: data.DataSource,
        progress: Progress | None = None,
        checkpoint_seconds: float = 60.0,
        grouping: str = "auto",
        deterministic: bool = False,
        controls_at: str = "level",
        devices: int = 0,
        parallel: str = "auto",
        placement: str = "auto",
        workers: int = -1,
    ):
        self.context = RunContext(
            store, desc, source, grouping, deterministic, devices, parallel, placement, workers
        )
        scoring_id = id_at_neutral(desc.full, "prune.score_mode")
        keys = Keys(desc["train.seed"], desc.run_id, scoring_id)
        self.starts = Starts(self.context, keys)
        self.progress = progress or Progress()
        self.trainer = LevelTrainer(
            self.context, self.starts, keys, self.progress, checkpoint_seconds
        )
        self.controls_at = controls_at

    @property
    def run_id(self) -> str:
        return self.context.run_id

    @property
    def view(self) -> Any:
        """The run's cells in the store (`ltcli.storage.writer.RunStore`)."""
        return self.context.view

    @property
    def spawn(self) -> tuple[int, ...]:
        """The spawn points of the dense level's copies."""
        return self.trainer.spawn

    @spawn.setter
    def spawn(self, points: tuple[int, ...]) -> None:
        self.trainer.spawn = points

    def train_level(self, level: int, cells: list[CellKey]) -> None:
        """Trains `cells` (of `level`, or deferred controls from `level` on) as one group and
        stores them (`LevelTrainer.train`)."""
        self.trainer.train(level, cells)

    def run(self, plan: Plan) -> None:
        """Trains every unfinished cell of `plan`, level by level (spawned copies of the dense
        network with level 0).

        Raises:
          DivergedError: after everything else trained, when a replicate's ticket diverged
            and later levels of it were asked for (they are left untrained).
        """
        self.spawn = plan.spawn
        self.trainer.barriers = plan.barriers
        self.progress.start(plan)
        try:
            self.measure_stored_barriers(plan.barriers_missing(self.context.store, self.run_id))
            self._levels(plan)
        finally:
            self.view.close()  # what finished is on disk, whatever happened

    def measure_stored_barriers(self, tickets: list[CellKey]) -> None:
        """Measures the level barrier of each stored IMP ticket of `tickets` from the store
        (its trained weights and the level before's: nothing trains) and adds it to the
        ticket's metrics, as its level would have stored it had the run asked for barriers
        then (bit for bit with ``--deterministic``). Says on the progress what it does."""
        engine = self.context.engine
        for i, ticket in enumerate(tickets):
            record = instability.stored_level_barrier(engine, ticket, self.context)
            self.view.add_to_metrics(ticket, {"level_barrier": record})
            self.progress.note(
                f"level barrier {i + 1}/{len(tickets)} (stored level {ticket.level} "
                f"r{ticket.replicate}, from level {ticket.level - 1}): "
                f"{100 * record['barrier_above_line']:.2f} points above the line, "
                f"instability {100 * record['instability']:.2f} points"
            )

    def _levels(self, plan: Plan) -> None:
        stopped: dict[int, DivergedError] = {}
        unusable: list[DivergedError] = []
        deferred: list[CellKey] = []
        for level in range(plan.rounds + 1):
            todo = [
                c
                for c in plan.cells(level)
                if c.replicate not in stopped and not self.view.is_finished(c)
            ]
            for replicate in sorted({c.replicate for c in todo}):
                try:
                    self.starts.ticket_mask(replicate, level)
                except DivergedError as err:
                    stopped[replicate] = err
            todo = [c for c in todo if c.replicate not in stopped]
            deferred += [c for c in todo if self._deferred(c)]
            now = [c for c in todo if not self._deferred(c)]
            if self._sparse_training and level > 0:  # its controls need its final masks
                if tickets := [c for c in now if c.member.is_ticket]:
                    self.train_level(level, tickets)
                now = self._final_masks_ready([c for c in now if c not in tickets], unusable)
            if now:
                self.train_level(level, now)
        if self._sparse_training:
            deferred = self._final_masks_ready(deferred, unusable)
        for start in range(0, len(deferred), MAX_GROUP):
            group = deferred[start : start + MAX_GROUP]
            self.train_level(min(c.level for c in group), group)
        if errors := [*stopped.values(), *unusable]:
            raise DivergedError("; ".join(str(err) for err in errors))

    @property
    def _sparse_training(self) -> bool:
        return self.context.desc["prune.method"] in TRAINS_TO_TARGET

    def _final_masks_ready(
        self, controls: list[CellKey], unusable: list[DivergedError]
    ) -> list[CellKey]:
        """The sparse-training controls in `controls` whose ticket ended with a usable mask;
        a diverged ticket's are left untrained (its error added to `unusable`). Levels of
        sparse training do not build on one another: the replicate's other levels go on."""
        ready = []
        for cell in controls:
            ticket = CellKey(cell.replicate, cell.level)
            if self.view.read_metrics(ticket)["diverged"]:
                err = diverged(self.run_id, cell.replicate, cell.level)
                if str(err) not in map(str, unusable):
                    unusable.append(err)
                continue
            ready.append(cell)
        return ready

    def _deferred(self, cell: CellKey) -> bool:
        """Whether `cell` waits for the end of the run (``controls_at="end"``): the controls
        of pruned levels, which feed nothing later, then train together in large groups."""
        return self.controls_at == "end" and cell.level > 0 and not cell.member.is_ticket
