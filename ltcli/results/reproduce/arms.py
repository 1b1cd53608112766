"""The parts every arm-by-arm claim check shares (`ltcli.results.reproduce.zhou2019`,
`ltcli.results.reproduce.ramanujan2020`): an arm (a run of a shipped spec with the paper's
overrides, read at its targets), a claim between two arms or against a floor, their
verdicts (held, not held, not reached) and the tables `lt reproduce` prints."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ltcli.core.errors import UsageError
from ltcli.experiment import spec
from ltcli.experiment.plan import Progress
from ltcli.experiment.spec import Spec
from ltcli.results import report
from ltcli.results.reproduce.measures import Measurements
from ltcli.results.reproduce.protocols import BUDGETS, cuts
from ltcli.results.reproduce.verdicts import HELD, NOT_HELD, NOT_REACHED
from ltcli.storage.store import Store
from ltcli.train import launch

ACCURACY = "final_test_acc"
"""Learned masks and their comparisons are read at the end of training."""

DENSE = 100.0
"""The target that reads an arm's level 0: the dense network."""

CHANCE = 10.0
"""Chance accuracy (%) on MNIST's ten classes."""


@dataclasses.dataclass(frozen=True)
class Arm:
    """One arm of a comparison: a run of the shipped spec.

    Attributes:
      name: the arm's name (its run's alias: ``reproduce-CHECK-ARM-BUDGET``).
      label: how the tables name it.
      paper: overrides that make it the paper's protocol.
      small: overrides of ``--budget small`` on top of `paper`.
      targets: the percents of weights remaining it is read at: `DENSE` reads level 0, a
        one-shot target the level nearest it (`Measurements.match`).
      learned: a mask that learns its density (a supermask): its one-shot target is only
        where it starts, so target i is read at level i + 1 whatever density it reached.
    """

    name: str
    label: str
    paper: Mapping[str, Any]
    small: Mapping[str, Any]
    targets: tuple[float, ...]
    learned: bool = False


@dataclasses.dataclass(frozen=True)
class Claim:
    """`better`'s mean accuracy is above `worse`'s (or, with `or_equal`, not below it), or
    at least `floor` percent. `better` and `worse` are (arm, target) as `Arm.targets` names
    them; `paper` is what the paper reports, as printed."""

    says: str
    source: str
    paper: str
    better: tuple[str, float]
    worse: tuple[str, float] | None = None
    floor: float | None = None
    or_equal: bool = False


@dataclasses.dataclass(frozen=True)
class Found:
    """An arm at one target: its level there, that level's percent of weights remaining and
    its tickets' final test accuracy over replicates."""

    level: int
    remaining: float
    accuracy: report.Stat


@dataclasses.dataclass(frozen=True)
class ClaimCheck:
    """A claim's two sides (or one, against a floor) as measured, and the verdict."""

    claim: Claim
    better: report.Stat | None
    worse: report.Stat | None
    verdict: str

    @property
    def difference(self) -> float | None:
        """`better` minus `worse`, or minus the floor, in points."""
        if self.better is None or self.better.mean is None:
            return None
        if self.claim.floor is not None:
            return 100 * self.better.mean - self.claim.floor
        if self.worse is None or self.worse.mean is None:
            return None
        return 100 * (self.better.mean - self.worse.mean)


@dataclasses.dataclass(frozen=True)
class Checked:
    """What `run` did: each arm's run id, each claim's check, and the tables."""

    runs: dict[str, str]
    checks: list[ClaimCheck]
    text: str


Measured = Mapping[str, Mapping[float, Found | None]]


def read_arm(cells: list[dict[str, Any]], arm: Arm) -> dict[float, Found | None]:
    """`arm`'s run at each of its targets; None where it has no level there, or every
    ticket of that level diverged."""
    tickets = [c for c in cells if report.member_kind(c["member"]) == "ticket"]
    t = Measurements(tickets)
    found: dict[float, Found | None] = {}
    for i, target in enumerate(arm.targets):
        if arm.learned:
            level: int | None = i + 1 if i + 1 in t.pm else None
        else:
            level = 0 if target == DENSE and 0 in t.pm else t.match(target)
        values = list(t.get(level, "ticket", ACCURACY).values()) if level is not None else []
        found[target] = (
            Found(level, t.pm[level], report.Stat.of(values))
            if values and level is not None
            else None
        )
    return found


def verdicts(claims: Sequence[Claim], measured: Measured) -> list[ClaimCheck]:
    """Every claim of `claims` against `measured` (`read_arm` of each arm)."""
    checks = []
    for claim in claims:
        a = measured[claim.better[0]][claim.better[1]]
        b = measured[claim.worse[0]][claim.worse[1]] if claim.worse else None
        if a is None or (claim.worse is not None and b is None):
            checks.append(ClaimCheck(claim, a and a.accuracy, b and b.accuracy, NOT_REACHED))
            continue
        if claim.floor is not None:
            held = 100 * a.accuracy.mean >= claim.floor
        else:
            gap = a.accuracy.mean - b.accuracy.mean
            held = gap >= 0 if claim.or_equal else gap > 0
        checks.append(ClaimCheck(claim, a.accuracy, b and b.accuracy, HELD if held else NOT_HELD))
    return checks


def _stat_text(stat: report.Stat) -> str:
    return f"{100 * stat.mean:.2f} ± {100 * stat.std:.2f} (n={stat.n})"


def tables(arms: Sequence[Arm], measured: Measured, checks: list[ClaimCheck]) -> str:
    """Each arm's final test accuracy at each of its targets, then the claims: lt's
    difference (points), the paper's number, the verdict and the source."""
    width = max(len(arm.label) for arm in arms)
    rows = [f"{'arm':<{width}}  target  level  remaining  final test acc %"]
    for arm in arms:
        for target in arm.targets:
            shown = "dense" if target == DENSE else f"{target:g}%"
            found = measured[arm.name][target]
            if found is None:
                rows.append(f"{arm.label:<{width}}  {shown:>6}  not reached")
                continue
            rows.append(
                f"{arm.label:<{width}}  {shown:>6}  {found.level:>5}  {found.remaining:>8.2f}%  "
                f"{_stat_text(found.accuracy)}"
            )
    says = max(len(c.claim.says) for c in checks)
    paper = max(len(c.claim.paper) for c in checks)
    rows += ["", f"{'claim':<{says}}  {'lt':<16}  {'paper':<{paper}}  verdict      source"]
    for c in checks:
        if c.difference is None:
            lt = "-"
        elif c.claim.floor is not None:
            lt = f"{100 * c.better.mean:.2f}%"
        else:
            lt = f"{c.difference:+.2f} pts"
        rows.append(
            f"{c.claim.says:<{says}}  {lt:<16}  {c.claim.paper:<{paper}}  {c.verdict:<11}  "
            f"{c.claim.source}"
        )
    return "\n".join(rows)


def _shipped(check: str, checks: Mapping[str, str]) -> Spec:
    return spec.load(str(spec.shipped_specs()[checks[check]]))


def arm_specs(
    check: str,
    budget: str,
    settings: Iterable[str],
    checks: Mapping[str, str],
    arms: Sequence[Arm],
) -> dict[str, Spec]:
    """Each arm's spec at `budget` with ``--set`` `settings` on top.

    Raises:
      UsageError: an unknown check or budget, or a bad assignment.
    """
    if check not in checks:
        raise UsageError(f"check {check!r}: unknown; known: {', '.join(checks)}")
    if budget not in BUDGETS:
        raise UsageError(f"--budget {budget}: use one of {', '.join(BUDGETS)}")
    shipped = _shipped(check, checks)
    assigned = dict(spec.parse_assignment(s) for s in settings)
    specs = {}
    for arm in arms:
        chosen = spec.apply_overrides(shipped, arm.paper)
        if budget == "small":
            chosen = spec.apply_overrides(chosen, arm.small)
        specs[arm.name] = spec.apply_overrides(chosen, assigned)
    return specs


def arm_cuts(check: str, checks: Mapping[str, str], arm: Arm, chosen: Spec) -> tuple[str, ...]:
    """How `chosen` (an arm's spec) differs from the arm's paper protocol."""
    return cuts(spec.apply_overrides(_shipped(check, checks), arm.paper), chosen)


def describe_arms(
    check: str,
    budget: str,
    specs: Mapping[str, Spec],
    checks: Mapping[str, str],
    arms: Sequence[Arm],
) -> list[str]:
    """Each arm's replicates and steps, and how the budget differs from the paper's."""
    lines = []
    for arm in arms:
        s = specs[arm.name]
        lines.append(
            f"  {arm.label}: {s['run.replicates']} replicate(s), {s['train.iterations']} per "
            f"level, {s['train.optimizer']} lr {s['train.lr']:g}"
        )
        differs = arm_cuts(check, checks, arm, s)
        if differs:
            lines.append(f"    --budget {budget}: differs from the paper's protocol in:")
            lines += [f"      {line}" for line in differs]
    return lines


def run_arms(
    check: str,
    budget: str,
    store: Store,
    specs: Mapping[str, Spec],
    arms: Sequence[Arm],
    *,
    named: bool,
    data_dir: Path | None,
    progress: Callable[[Spec], Progress] | None,
) -> tuple[dict[str, str], dict[str, dict[float, Found | None]]]:
    """Runs every arm through `launch.run` (finished cells are reused; `named`: under the
    alias ``reproduce-CHECK-ARM-BUDGET``) and reads each at its targets."""
    runs, measured = {}, {}
    for arm in arms:
        s = specs[arm.name]
        name = f"reproduce-{check}-{arm.name}-{budget}" if named else None
        run_id = launch.run(
            s, store, data_dir=data_dir, name=name, progress=progress(s) if progress else None
        )
        runs[arm.name] = run_id
        measured[arm.name] = read_arm(report.cell_metrics(store, run_id), arm)
    return runs, measured


def run_check(
    check: str,
    budget: str,
    store: Store,
    specs: Mapping[str, Spec],
    arms: Sequence[Arm],
    claims: Sequence[Claim],
    *,
    named: bool,
    data_dir: Path | None = None,
    progress: Callable[[Spec], Progress] | None = None,
) -> Checked:
    """Runs every arm (`run_arms`) and checks `claims` on their cells (`verdicts`)."""
    runs, measured = run_arms(
        check, budget, store, specs, arms, named=named, data_dir=data_dir, progress=progress
    )
    checks = verdicts(claims, measured)
    return Checked(runs, checks, tables(arms, measured, checks))


def runner(
    protocols: Callable[[str, str, Iterable[str]], dict[str, Spec]],
    arms: Sequence[Arm],
    claims: Sequence[Claim],
) -> Callable[..., Checked]:
    """The ``run`` of a check whose arms' specs `protocols` makes: every arm through
    `launch.run` (finished cells are reused; each under its alias unless ``--set`` changed
    it), then `claims` checked on their cells."""

    def run(
        check: str,
        budget: str,
        store: Store,
        *,
        settings: Iterable[str] = (),
        data_dir: Path | None = None,
        progress: Callable[[Spec], Progress] | None = None,
    ) -> Checked:
        specs = protocols(check, budget, settings)
        return run_check(
            check,
            budget,
            store,
            specs,
            arms,
            claims,
            named=not settings,
            data_dir=data_dir,
            progress=progress,
        )

    return run
