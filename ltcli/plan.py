"""What a command asks of a run (levels, replicates, controls), and the progress events a
run reports. No JAX: `ltcli.launch` decides from a plan and the store whether to train, and
`ltcli.runner` trains it."""

from __future__ import annotations

import dataclasses

from ltcli.member import level_members
from ltcli.store import CellKey, Store


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


@dataclasses.dataclass
class Plan:
    """Levels 0..rounds for each replicate, with the controls string's cells at each pruned
    level and a copy of the dense network for each spawn iteration at level 0."""

    rounds: int
    replicates: int
    controls: str = ""
    spawn: tuple[int, ...] = ()

    def cells(self, level: int) -> list[CellKey]:
        members = level_members(self.controls, level, self.spawn)
        return [CellKey(r, level, m) for r in range(self.replicates) for m in members]

    def anything_left(self, store: Store, run_id: str) -> bool:
        """Whether `store` lacks any finished cell of the plan."""
        levels = range(self.rounds + 1)
        return any(not store.is_finished(run_id, c) for lv in levels for c in self.cells(lv))
