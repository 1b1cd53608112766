"""The numbers a paper's claims are checked on: a run's cells per level, member kind and
replicate (`Measurements`), and the measures a claim names (`MEASURES`): tickets' early stop
or accuracy against their own replicate's dense network, against their reinitialized
controls, or as is."""

from __future__ import annotations

import dataclasses
import math
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import numpy as np

from ltcli.results import report

MATCH_TOLERANCE = 0.10
"""A paper's Pm matches the run's level of nearest Pm when they differ by at most this
fraction of the paper's Pm (LeNet's levels are 20% apart, so at most one ever matches)."""


class Measurements:
    """A run's cells as numbers per level, member kind and replicate: each summary field
    averaged over the replicate's cells of that kind (the reinit controls of a ticket) that did
    not diverge. A replicate whose cells of a kind all diverged has no entry there."""

    def __init__(self, cells: list[dict[str, Any]]):
        self.pm = {row["level"]: row["percent_remaining"] for row in report.level_summary(cells)}
        groups: dict[tuple[int, str, int], list[dict[str, Any]]] = defaultdict(list)
        for cell in cells:
            key = (cell["level"], report.member_kind(cell["member"]), cell["replicate"])
            groups[key].append(cell)
        self.values: dict[tuple[int, str], dict[int, dict[str, float]]] = defaultdict(dict)
        self.diverged = 0
        for (level, kind, replicate), group in groups.items():
            kept = [c for c in group if not report.is_diverged(c)]
            self.diverged += len(group) - len(kept)
            if kept:
                self.values[level, kind][replicate] = {
                    f: float(np.mean([c[f] for c in kept])) for f in report.SUMMARY_FIELDS
                }

    def get(self, level: int, kind: str, field: str) -> dict[int, float]:
        """`field` of `kind` at `level`, by replicate."""
        return {r: v[field] for r, v in self.values.get((level, kind), {}).items()}

    def dense_mean(self, field: str) -> float | None:
        """The mean of `field` over the dense tickets (level 0), or None if there are none."""
        values = list(self.get(0, "ticket", field).values())
        return float(np.mean(values)) if values else None

    def match(self, pm: float) -> int | None:
        """The level whose Pm is nearest `pm`, if within `MATCH_TOLERANCE` of it."""
        if not self.pm:
            return None
        level = min(self.pm, key=lambda lv: abs(math.log(self.pm[lv] / pm)))
        return level if abs(self.pm[level] - pm) <= MATCH_TOLERANCE * pm else None


def _paired(a: dict[int, float], b: dict[int, float], f: Callable[[float, float], float]):
    """`f(a[r], b[r])` for each replicate `r` in both."""
    return [f(a[r], b[r]) for r in sorted(a.keys() & b.keys())]


ES = "early_stop_iter"


@dataclasses.dataclass(frozen=True)
class Measure:
    """What a claim measures, per replicate, at a level.

    Attributes:
      unit: how its values print (``%``, ``x``, `` pts``).
      compute: (measurements, level, accuracy field) -> one value per replicate.
      anchor: (measurements, the paper's value, accuracy field) -> (panel field, y) of the
        paper's point on the figure, where the paper's number is relative to the dense net
        (anchored at lt's dense mean); None where it cannot be drawn.
      relative: whether `anchor` rests on lt's dense net (a hollow star) or is the paper's
        own absolute number (a filled one).
    """

    unit: str
    compute: Callable[[Measurements, int, str], list[float]]
    anchor: Callable[[Measurements, float, str], tuple[str, float] | None] = lambda *_: None
    relative: bool = True


def _dense_scaled(t: Measurements, field: str, f: Callable[[float], float]):
    dense = t.dense_mean(field)
    return None if dense is None else (field, f(dense))


MEASURES: dict[str, Measure] = {
    "earlier_than_dense": Measure(
        "%",
        lambda t, lv, acc: _paired(
            t.get(lv, "ticket", ES), t.get(0, "ticket", ES), lambda x, d: 100 * (1 - x / d)
        ),
        lambda t, v, acc: _dense_scaled(t, ES, lambda d: d * (1 - v / 100)),
    ),
    "faster_than_dense": Measure(
        "x",
        lambda t, lv, acc: _paired(
            t.get(lv, "ticket", ES), t.get(0, "ticket", ES), lambda x, d: d / x
        ),
        lambda t, v, acc: _dense_scaled(t, ES, lambda d: d / v),
    ),
    "accuracy_over_dense": Measure(
        " pts",
        lambda t, lv, acc: _paired(
            t.get(lv, "ticket", acc), t.get(0, "ticket", acc), lambda x, d: 100 * (x - d)
        ),
        lambda t, v, acc: _dense_scaled(t, acc, lambda d: 100 * d + v),
    ),
    "reinit_accuracy_over_dense": Measure(
        " pts",
        lambda t, lv, acc: _paired(
            t.get(lv, "reinit", acc), t.get(0, "ticket", acc), lambda x, d: 100 * (x - d)
        ),
    ),
    "faster_than_reinit": Measure(
        "x",
        lambda t, lv, acc: _paired(
            t.get(lv, "ticket", ES), t.get(lv, "reinit", ES), lambda x, r: r / x
        ),
    ),
    "accuracy_over_reinit": Measure(
        " pts",
        lambda t, lv, acc: _paired(
            t.get(lv, "ticket", acc), t.get(lv, "reinit", acc), lambda x, r: 100 * (x - r)
        ),
    ),
    "accuracy": Measure(
        "%",
        lambda t, lv, acc: [100 * x for _, x in sorted(t.get(lv, "ticket", acc).items())],
        lambda t, v, acc: (acc, v),
        relative=False,
    ),
}
"""Each claim's ``measure`` names one: tickets' early stop or accuracy against the dense net
(their own replicate's), against the reinitialized controls of the same ticket, or as is."""
