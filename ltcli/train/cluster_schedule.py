"""Which cells of a run a cluster driver may start now, and in which groups: the scheduling
that the Ray executor (`ltcli.train.executor_ray`) and the Slurm executor
(`ltcli.train.executor_slurm`) share.

A replicate's next level is ready as soon as its ticket is stored (there is no barrier
between replicates); a sparse-training level's controls wait for its own ticket's final mask;
a diverged ticket stops its replicate. Ready cells are packed by level into groups and
claimed (`ltcli.train.claims`) so that no other driver (cluster or local) trains them: claims
are taken while holding the run's lock (`Store.try_lock`), which a local driver holds for the
whole time it trains, so a cluster driver never claims under a local one.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from ltcli.experiment.plan import Plan
from ltcli.experiment.spec import Spec
from ltcli.science.methods import TRAINS_TO_TARGET
from ltcli.storage.store import CellKey, Store
from ltcli.train.claims import Claims
from ltcli.train.divergence import diverged


class Schedule:
    """The cells of one run as a cluster driver sees them.

    Attributes:
      cells: every cell of the plan, level by level.
      stopped: replicates stopped by a diverged ticket, with the error's text.
    """

    def __init__(self, spec: Spec, store: Store, run_id: str, plan: Plan, claims: Claims):
        self.spec, self.store, self.run_id, self.claims = spec, store, run_id, claims
        self.cells = [c for level in range(plan.rounds + 1) for c in plan.cells(level)]
        self.stopped: dict[int, str] = {}
        self._tickets_diverged: dict[CellKey, bool] = {}

    def finished(self, cell: CellKey) -> bool:
        return self.store.is_finished(self.run_id, cell)

    def blocked(self, cell: CellKey) -> bool:
        """Whether `cell`'s replicate was stopped by a diverged ticket."""
        return cell.replicate in self.stopped

    def settled(self, done: set[CellKey]) -> bool:
        """Whether every cell is stored or can never start."""
        return all(c in done or self.blocked(c) for c in self.cells)

    def ready(self, done: set[CellKey], in_flight: Iterable[CellKey] = ()) -> list[CellKey]:
        """Unfinished cells whose level can start (the replicate's ticket of the level
        before is stored and did not diverge), not in `in_flight`, not claimed by another
        driver."""
        flying = set(in_flight)
        found = []
        for cell in self.cells:
            if cell in done or cell in flying or self.blocked(cell):
                continue
            if cell.level > 0:
                ticket = CellKey(cell.replicate, cell.level - 1)
                if ticket not in done:
                    continue
                own = CellKey(cell.replicate, cell.level)  # sparse training's final mask
                sparse = self.spec["prune.method"] in TRAINS_TO_TARGET and cell != own
                if sparse and (own not in done or self._diverged(own)):
                    continue
                if self._diverged(ticket):
                    self.stopped[cell.replicate] = str(
                        diverged(self.run_id, ticket.replicate, ticket.level)
                    )
                    continue
            holder = self.claims.holder(cell)
            if holder is None or holder["owner"] == self.claims.owner:
                found.append(cell)
        return found

    def claim_groups(self, ready: list[CellKey], slots: int) -> dict[int, list[list[CellKey]]]:
        """Packs each level's `ready` cells into at most `slots` groups and claims them;
        returns the groups by level, each holding the cells this driver could claim. Claims
        nothing while a local driver holds the run (it trains every cell it finds)."""
        by_level: dict[int, list[CellKey]] = {}
        for cell in ready:
            by_level.setdefault(cell.level, []).append(cell)
        claimed: dict[int, list[list[CellKey]]] = {}
        with self.store.try_lock(self.run_id) as held:
            if not held:
                return claimed
            for level, cells in by_level.items():
                size = math.ceil(len(cells) / max(1, slots))
                for start in range(0, len(cells), size):
                    group = [c for c in cells[start : start + size] if self.claims.claim(c)]
                    if group:
                        claimed.setdefault(level, []).append(group)
        return claimed

    def _diverged(self, ticket: CellKey) -> bool:
        """Whether a stored ticket diverged, read once (drivers poll every cell)."""
        if ticket not in self._tickets_diverged:
            metrics = self.store.read_metrics(self.run_id, ticket)
            self._tickets_diverged[ticket] = bool(metrics["diverged"])
        return self._tickets_diverged[ticket]
