"""Sparse training against lottery tickets at laptop scale: the comparisons of Evci et al.
2020 ("Rigging the Lottery: Making All Tickets Winners", ICML 2020: RigL above SET above a
static sparse mask at equal training steps, and its Erdős-Rényi-Kernel layer budget above a
uniform one) and of Gale et al. 2019 ("The State of Sparsity in Deep Neural Networks":
gradual magnitude pruning, Zhu & Gupta 2017, at least as accurate as a lottery ticket
retrained from θ0 at the same sparsity), each checked by lt on LeNet-300-100 and MNIST.

Every arm (`ARMS`) is a run of its own from the same shipped spec, so they share data,
seeds, optimizer and steps; the sparse-training arms train one job per target (`TARGETS`,
level i to the i-th), and IMP prunes at the per-round rate that reaches the first target
at round 10 and, within 0.3% of it, the second at round 17 (`IMP_RATE`), every layer (the
output layer too) at that rate, as the sparse arms' uniform budget prunes every layer
alike. A claim (`CLAIMS`) compares two arms' mean final test accuracy over replicates at
each target: held, not held, or not reached (an arm has no level there, or all its cells
diverged).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping
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

CHECKS = {"sparse-lenet": "mnist-lenet"}
"""Each claim check and the shipped spec its arms start from."""

TARGETS = (10.0, 2.0)
"""Percents of weights remaining: 90% and 98% sparse."""

IMP_RATE = 1 - 10**-0.1
"""IMP's per-round rate: (1 - r)^10 = 10% and (1 - r)^17 = 1.995% of weights remain."""

ACCURACY = "final_test_acc"
"""Sparse training is read at the end of training, as its papers report it."""

PAPER = {
    "data.validation": 5000,
    "train.optimizer": "adam",
    "train.lr": 1.2e-3,
    "train.batch_size": 60,
    "train.iterations": "50000it",
    "train.eval_every": "100it",
    "prune.strategy": "layerwise",
    "run.replicates": 5,
    "run.controls": "",
}
"""The protocol at ``--budget paper``: LeNet's of Frankle & Carbin 2019 (the steps RigL's
paper compares methods at are each method's own run of the same length: "equal steps")."""

SMALL = {"train.iterations": "3000it", "run.replicates": 2}
"""``--budget small``: fewer steps and replicates (every cut is printed)."""


@dataclasses.dataclass(frozen=True)
class Arm:
    """One method of the comparison, as spec overrides."""

    name: str
    label: str
    overrides: Mapping[str, Any]


_SPARSE = {"prune.one_shot": list(TARGETS)}
ARMS = (
    Arm("static", "static, uniform", {**_SPARSE, "prune.method": "static"}),
    Arm("set", "SET, uniform", {**_SPARSE, "prune.method": "set"}),
    Arm("rigl", "RigL, uniform", {**_SPARSE, "prune.method": "rigl"}),
    Arm("rigl-erk", "RigL, ERK", {**_SPARSE, "prune.method": "rigl", "prune.distribution": "erk"}),
    Arm("gmp", "GMP", {**_SPARSE, "prune.method": "gmp"}),
    Arm(
        "imp",
        "IMP, rewound to θ0",
        {"prune.rate": IMP_RATE, "prune.output_rate": IMP_RATE, "run.rounds": 17},
    ),
)


@dataclasses.dataclass(frozen=True)
class Claim:
    """`better`'s mean accuracy is above `worse`'s (or, with `or_equal`, not below it)."""

    better: str
    worse: str
    says: str
    source: str
    or_equal: bool = False


_RIGL = "Evci et al. 2020 (ResNet-50, ImageNet)"
CLAIMS = (
    Claim("rigl", "set", "RigL above SET at equal steps", _RIGL),
    Claim("set", "static", "SET above a static mask", _RIGL),
    Claim("rigl-erk", "rigl", "ERK above uniform (RigL)", _RIGL),
    Claim(
        "gmp", "imp", "GMP at least IMP's ticket", "Gale et al. 2019 (ResNet-50, Transformer)", True
    ),
)


@dataclasses.dataclass(frozen=True)
class ClaimCheck:
    """A claim at one target: the two arms' accuracy over replicates and the verdict."""

    claim: Claim
    target: float
    better: report.Stat | None
    worse: report.Stat | None
    verdict: str

    @property
    def difference(self) -> float | None:
        """Mean accuracy of `better` minus `worse`'s, in points."""
        if self.better is None or self.worse is None:
            return None
        return 100 * (self.better.mean - self.worse.mean)


@dataclasses.dataclass(frozen=True)
class SparseCheck:
    """What `run` did: each arm's run id, each claim at each target, and the tables."""

    runs: dict[str, str]
    checks: list[ClaimCheck]
    text: str


def protocols(check: str, budget: str, settings: Iterable[str] = ()) -> dict[str, Spec]:
    """Each arm's spec for `lt reproduce CHECK --budget BUDGET --set ...`.

    Raises:
      UsageError: an unknown check or budget, or a bad assignment.
    """
    if check not in CHECKS:
        raise UsageError(f"check {check!r}: unknown; known: {', '.join(CHECKS)}")
    if budget not in BUDGETS:
        raise UsageError(f"--budget {budget}: use one of {', '.join(BUDGETS)}")
    shipped = spec.load(str(spec.shipped_specs()[CHECKS[check]]))
    assigned = dict(spec.parse_assignment(s) for s in settings)
    specs = {}
    for arm in ARMS:
        chosen = spec.apply_overrides(shipped, {**PAPER, **arm.overrides})
        if budget == "small":
            chosen = spec.apply_overrides(chosen, SMALL)
        specs[arm.name] = spec.apply_overrides(chosen, assigned)
    return specs


def describe(check: str, budget: str, specs: Mapping[str, Spec]) -> list[str]:
    """What `run` runs, for stderr: the arms, and how the budget differs from the paper's."""
    first = specs[ARMS[0].name]
    lines = [
        f"checking sparse training against lottery tickets ({check}): "
        + "; ".join(arm.label for arm in ARMS),
        f"targets {', '.join(f'{t:g}%' for t in TARGETS)} of weights remaining; "
        f"{first['run.replicates']} replicates, {first['train.iterations']} per level",
    ]
    shipped = spec.load(str(spec.shipped_specs()[CHECKS[check]]))
    paper = spec.apply_overrides(shipped, {**PAPER, **ARMS[0].overrides})
    differs = cuts(paper, first)
    if differs:
        lines.append(f"--budget {budget}: differs from the paper's protocol in:")
        lines += [f"  {line}" for line in differs]
    return lines


@dataclasses.dataclass(frozen=True)
class AtTarget:
    """An arm at one target: its level there, that level's percent of weights remaining,
    its tickets' final test accuracy over replicates and their mean training FLOPs (x a
    dense run of the same steps, over the tickets that did not diverge, as
    `report.level_summary` gives it; None for cells stored without them). For IMP, the training
    FLOPs of every level up to this one: finding the ticket took all of them."""

    level: int
    remaining: float
    accuracy: report.Stat
    training_flops: float | None


def at_targets(
    cells: list[dict[str, Any]], iterative: bool = False
) -> dict[float, AtTarget | None]:
    """An arm's run at each target; None where it has no level there, or every ticket of
    that level diverged. `iterative`: its levels are IMP's rounds (see `AtTarget`)."""
    tickets = [c for c in cells if report.member_kind(c["member"]) == "ticket"]
    t = Measurements(tickets)
    flops = {
        row["level"]: row["members"]["ticket"].get("training_flops")
        for row in report.level_summary(tickets)
    }
    found: dict[float, AtTarget | None] = {}
    for target in TARGETS:
        level = t.match(target)
        accuracy = list(t.get(level, "ticket", ACCURACY).values()) if level is not None else []
        if not accuracy:
            found[target] = None
            continue
        paid = [flops.get(lv) for lv in (range(level + 1) if iterative else (level,))]
        known = all(stat is not None and stat.mean is not None for stat in paid)
        cost = sum(stat.mean for stat in paid) if known else None
        found[target] = AtTarget(level, t.pm[level], report.Stat.of(accuracy), cost)
    return found


def verdicts(measured: Mapping[str, Mapping[float, AtTarget | None]]) -> list[ClaimCheck]:
    """Every claim at every target against `measured` (`at_targets` of each arm)."""
    checks = []
    for claim in CLAIMS:
        for target in TARGETS:
            a, b = measured[claim.better][target], measured[claim.worse][target]
            if a is None or b is None:
                checks.append(ClaimCheck(claim, target, None, None, NOT_REACHED))
                continue
            gap = a.accuracy.mean - b.accuracy.mean
            held = gap >= 0 if claim.or_equal else gap > 0
            verdict = HELD if held else NOT_HELD
            checks.append(ClaimCheck(claim, target, a.accuracy, b.accuracy, verdict))
    return checks


def _stat_text(stat: report.Stat) -> str:
    return f"{100 * stat.mean:.2f} ± {100 * stat.std:.2f} (n={stat.n})"


def tables(
    measured: Mapping[str, Mapping[float, AtTarget | None]], checks: list[ClaimCheck]
) -> str:
    """The arms' accuracy and training FLOPs at each target, then the claims."""
    rows = ["arm                  target  remaining  final test acc %        train FLOPs"]
    for arm in ARMS:
        for target in TARGETS:
            found = measured[arm.name][target]
            if found is None:
                rows.append(f"{arm.label:<20} {target:>5g}%  not reached")
                continue
            cost = "-" if found.training_flops is None else f"{found.training_flops:.3f}x"
            rows.append(
                f"{arm.label:<20} {target:>5g}%  {found.remaining:>8.2f}%  "
                f"{_stat_text(found.accuracy):<23} {cost}"
            )
    width = max(len(c.says) for c in CLAIMS)
    rows += ["", f"{'claim':<{width}}  target  difference  verdict      source"]
    for c in checks:
        gap = "-" if c.difference is None else f"{c.difference:+.2f} pts"
        rows.append(
            f"{c.claim.says:<{width}}  {c.target:>5g}%  {gap:<10}  {c.verdict:<11}  "
            f"{c.claim.source}"
        )
    return "\n".join(rows)


def run(
    check: str,
    budget: str,
    store: Store,
    *,
    settings: Iterable[str] = (),
    data_dir: Path | None = None,
    progress: Callable[[Spec], Progress] | None = None,
) -> SparseCheck:
    """Runs every arm of `check` through `launch.run` (finished cells are reused) and checks
    the claims on their cells.

    Args:
      progress: makes the progress of one arm's run from its spec.
    """
    specs = protocols(check, budget, settings)
    runs, measured = {}, {}
    for arm in ARMS:
        s = specs[arm.name]
        name = None if settings else f"reproduce-{check}-{arm.name}-{budget}"
        run_id = launch.run(
            s, store, data_dir=data_dir, name=name, progress=progress(s) if progress else None
        )
        runs[arm.name] = run_id
        iterative = "prune.one_shot" not in arm.overrides
        measured[arm.name] = at_targets(report.cell_metrics(store, run_id), iterative)
    checks = verdicts(measured)
    return SparseCheck(runs, checks, tables(measured, checks))
