"""A paper's claims checked against a run: each claim (a record in the paper's shipped data:
its Pm or range of Pm, measure, number and test) is measured at the run's matching level and
passes or fails its test (`evaluate_claim`), and the results print as a table (`claim_rows`).

A claim at a Pm is checked at the run's level of nearest Pm, if that is within
`MATCH_TOLERANCE` of it; otherwise it is "not reached". A claim is "held" when the mean over
replicates passes the claim's test (its direction: tickets stop earlier, are more accurate);
the paper's own magnitude is printed beside lt's for the reader to compare.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ltcli.results import report
from ltcli.results.reproduce.measures import MATCH_TOLERANCE, MEASURES, Measurements

HELD, NOT_HELD, NOT_REACHED, NO_DATA = "held", "not held", "not reached", "no data"
ACCURACY = {
    "early_stop_test_acc": "test accuracy at early stop",
    "final_test_acc": "test accuracy at the end of training",
}
"""The accuracies a figure's claims can use (`ltcli.results.plot.ACCURACY_FIELDS` draws each)."""


def passes(test: Mapping[str, float], value: float) -> bool:
    """Whether `value` passes a claim's ``held_if``: ``{"above": x}``, ``{"at_least": x}``,
    ``{"below": x}`` or ``{"within": d, "of": x}``."""
    if "above" in test:
        return value > test["above"]
    if "at_least" in test:
        return value >= test["at_least"]
    if "below" in test:
        return value < test["below"]
    return abs(value - test["of"]) <= test["within"]


def held_if_text(test: Mapping[str, float], unit: str) -> str:
    """A ``held_if`` as the table prints it: ``> 0 pts``, ``within ±0.3 pts of 0``."""
    for key, sign in (("above", ">"), ("at_least", ">="), ("below", "<")):
        if key in test:
            return f"{sign} {test[key]:g}{unit}"
    return f"within ±{test['within']:g}{unit} of {test['of']:g}"


def _worst(test: Mapping[str, float], means: list[float]) -> int:
    """The index of the mean furthest on the failing side of `test`."""
    if "above" in test or "at_least" in test:
        return int(np.argmin(means))
    if "below" in test:
        return int(np.argmax(means))
    return int(np.argmax([abs(m - test["of"]) for m in means]))


@dataclasses.dataclass(frozen=True)
class ClaimResult:
    """One claim checked against a run.

    Attributes:
      claim: its entry in the shipped paper data.
      levels: the run's levels it was measured at (one for a claim at a Pm; those in the
        range for a range claim), with their Pm; empty when not reached.
      level: the level `stat` is of (for a range claim, the one that fares worst).
      stat: lt's measure over replicates (mean, sample std, n); None when not reached.
      verdict: `HELD`, `NOT_HELD`, `NOT_REACHED` or `NO_DATA` (the cells the measure needs,
        like reinit controls, are not in the run).
    """

    claim: dict[str, Any]
    levels: dict[int, float]
    level: int | None
    stat: report.Stat | None
    verdict: str


def evaluate_claim(
    claim: dict[str, Any], t: Measurements, accuracy_field: str = "early_stop_test_acc"
) -> ClaimResult:
    """Checks `claim` against the run's `t` (see the module docstring)."""
    measure, test = MEASURES[claim["measure"]], claim["held_if"]
    if "pm" in claim:
        level = t.match(claim["pm"])
        if level is None:
            return ClaimResult(claim, {}, None, None, NOT_REACHED)
        candidates = [level]
        reached = True
    else:
        bound = claim["pm_range"]
        floor = bound.get("above", bound.get("at_least"))
        inside = (lambda p: p > floor) if "above" in bound else (lambda p: p >= floor)
        candidates = [lv for lv, p in sorted(t.pm.items()) if lv > 0 and inside(p)]
        reached = bool(t.pm) and min(t.pm.values()) <= floor * (1 + MATCH_TOLERANCE)
    measured = {lv: measure.compute(t, lv, accuracy_field) for lv in candidates}
    measured = {lv: values for lv, values in measured.items() if values}
    levels = {lv: t.pm[lv] for lv in candidates}
    if not measured:
        return ClaimResult(claim, levels, None, None, NO_DATA if candidates else NOT_REACHED)
    keys = list(measured)
    level = keys[_worst(test, [float(np.mean(measured[lv])) for lv in keys])]
    stat = report.Stat.of(measured[level])
    # A range claim that fails at a level the run has fails, however far the run went.
    verdict = (HELD if reached else NOT_REACHED) if passes(test, stat.mean) else NOT_HELD
    return ClaimResult(claim, levels, level, stat, verdict)


def _format_value(value: float, unit: str) -> str:
    digits = 2 if unit == "x" else 1
    text = f"{value:+.{digits}f}" if unit == " pts" else f"{value:.{digits}f}"
    return text + unit


def _measured(result: ClaimResult) -> str:
    stat, unit = result.stat, MEASURES[result.claim["measure"]].unit
    if stat is None:
        return "-"
    text = _format_value(stat.mean, unit)
    return (
        text
        + (f" ± {stat.std:.{2 if unit == 'x' else 1}f}" if stat.n > 1 else "")
        + (f" (n={stat.n})")
    )


def _paper(claim: dict[str, Any]) -> str:
    unit = MEASURES[claim["measure"]].unit
    value = claim["value"]
    text = claim.get("paper_says", "") if value is None else _format_value(value, unit)
    return text + ("~" if claim["source"]["approximate"] and value is not None else "")


def _where(result: ClaimResult) -> str:
    claim = result.claim
    if "pm" in claim:
        wanted = f"{claim['pm']:g}"
        got = "-" if result.level is None else f"{result.levels[result.level]:.1f}"
        return f"{wanted} / {got}"
    bound = claim["pm_range"]
    sign, floor = (">", bound["above"]) if "above" in bound else (">=", bound["at_least"])
    if result.level is None:
        return f"{sign}{floor:g} / -"
    return f"{sign}{floor:g} / worst {result.levels[result.level]:.1f}"


CLAIM_HEADERS = ["claim", "Pm % paper / lt", "lt measured", "paper", "held if", "verdict"]


def claim_rows(results: Sequence[ClaimResult]) -> tuple[list[str], list[list[str]]]:
    """The claims table's headers and rows as text, one row per claim (numbered from 1):
    Pm (the paper's / lt's matched level's), lt's measure, the paper's number, the test and
    the verdict (`claims_table` prints them; `ltcli.results.page` puts them in HTML)."""
    rows = [
        [
            str(i),
            _where(r),
            _measured(r),
            _paper(r.claim),
            held_if_text(r.claim["held_if"], MEASURES[r.claim["measure"]].unit),
            r.verdict,
        ]
        for i, r in enumerate(results, 1)
    ]
    return list(CLAIM_HEADERS), rows
