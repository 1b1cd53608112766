"""Frankle & Carbin, "The Lottery Ticket Hypothesis" (ICLR 2019): the figures lt
reproduces, each as the paper's protocol (`FIGURES`), and what the paper says about them,
shipped as data (``ltcli/results/paper/frankle2019.json``: each claim's Pm, measure,
number, the test it must pass and where in the paper it is)."""

from __future__ import annotations

import importlib.resources
import json
from collections.abc import Iterable, Sequence
from functools import cache
from typing import TYPE_CHECKING, Any

from ltcli.core.errors import UsageError
from ltcli.experiment import spec
from ltcli.results import report
from ltcli.results.reproduce.measures import MATCH_TOLERANCE, MEASURES, Measurements
from ltcli.results.reproduce.protocols import BUDGETS, FigureProtocol, Protocol, cuts, show
from ltcli.results.reproduce.verdicts import (
    ACCURACY,
    ClaimResult,
    claim_rows,
    evaluate_claim,
)

if TYPE_CHECKING:  # `ltcli.results.plot` is imported only when drawing
    from ltcli.results.plot import OverlayPoint

PAPER_DATA = "frankle2019.json"
"""The shipped file (in `ltcli.results.paper`) of what the paper reports."""

_ADAM = {"train.optimizer": "adam", "train.batch_size": 60, "train.eval_every": "100it"}
FIGURES: dict[str, FigureProtocol] = {
    "lenet": FigureProtocol(
        "mnist-lenet",
        {
            **_ADAM,
            "data.validation": 5000,
            "train.lr": 1.2e-3,
            "train.iterations": "50000it",
            "prune.strategy": "layerwise",
            "prune.rate": 0.2,  # the output layer: half of it (10%), lt's default
            "run.rounds": 20,
            "run.replicates": 5,
            "run.controls": "reinit:3",
        },
        {
            "run.rounds": 7,
            "run.replicates": 2,
            "run.controls": "reinit:1",
            "train.iterations": "3000it",
        },
    ),
    "conv2": FigureProtocol(
        "cifar10-conv2",
        {
            **_ADAM,
            "data.validation": 5000,
            "train.lr": 2e-4,
            "train.iterations": "20000it",
            "prune.strategy": "layerwise",
            "prune.conv_rate": 0.1,
            "prune.rate": 0.2,
            "prune.output_rate": 0.1,
            "run.rounds": 20,
            "run.replicates": 5,
            "run.controls": "reinit:3",
        },
        {
            "run.rounds": 14,
            "run.replicates": 2,
            "run.controls": "",
            "train.iterations": "1000it",
        },
    ),
    "resnet20-warmup": FigureProtocol(
        "cifar10-resnet20-warmup",
        {
            "data.validation": 5000,
            "train.optimizer": "sgd",
            "train.lr": 0.03,
            "train.momentum": 0.9,
            "train.weight_decay": 1e-4,
            "train.batch_size": 128,
            "train.iterations": "30000it",
            "train.eval_every": "100it",
            "train.warmup": "20000it",
            "train.lr_drops": ["20000it", "25000it"],
            "train.lr_drop_factor": 0.1,
            "train.augment": True,
            "prune.strategy": "global",
            "prune.rate": 0.2,
            "prune.exclude": ["out", "*shortcut"],
            "run.rounds": 20,
            "run.replicates": 5,
            "run.controls": "reinit:3",
        },
        {  # the schedule scaled by 1/20: warmup, then the drops at 2/3 and 5/6 of training
            "run.rounds": 10,
            "run.replicates": 1,
            "run.controls": "",
            "train.iterations": "1500it",
            "train.warmup": "1000it",
            "train.lr_drops": ["1000it", "1250it"],
        },
    ),
}


@cache
def paper_data() -> dict[str, Any]:
    """The shipped record of what the paper reports (``ltcli/results/paper/frankle2019.json``)."""
    return json.loads(
        importlib.resources.files("ltcli.results.paper").joinpath(PAPER_DATA).read_text()
    )


def protocol(figure: str, budget: str = "paper", settings: Iterable[str] = ()) -> Protocol:
    """The spec `lt reproduce FIGURE --budget BUDGET --set ...` runs.

    Args:
      figure: a name in `FIGURES`.
      budget: ``paper`` (the paper's protocol) or ``small`` (cut down; see `FIGURES`).
      settings: ``--set key=value`` assignments, applied last.

    Raises:
      UsageError: an unknown figure or budget, or a bad assignment.
    """
    if figure not in FIGURES:
        raise UsageError(f"figure {figure!r}: unknown; known figures: {', '.join(FIGURES)}")
    if budget not in BUDGETS:
        raise UsageError(f"--budget {budget}: use one of {', '.join(BUDGETS)}")
    chosen = FIGURES[figure]
    shipped = spec.load(str(spec.shipped_specs()[chosen.experiment]))
    paper = spec.apply_overrides(shipped, chosen.paper)
    result = spec.apply_overrides(paper, chosen.small) if budget == "small" else paper
    assigned = dict(spec.parse_assignment(s) for s in settings)
    result = spec.apply_overrides(result, assigned)
    return Protocol(figure, budget, result, cuts(paper, result), tuple(settings))


def describe(proto: Protocol) -> list[str]:
    """What `proto` runs, for stderr: the paper and figure, the protocol in one line, and
    every way it differs from the paper's."""
    meta, s = paper_data()["paper"], proto.spec
    figure = paper_data()["figures"][proto.figure]
    lines = [
        f"reproducing {meta['short']} (arXiv:{meta['arxiv']}), {figure['source']['where']}: "
        f"{figure['title']}",
        f"protocol: {s.experiment}, {s['run.rounds']} rounds x {s['run.replicates']} "
        f"replicates, controls {show(s['run.controls'])}, {s['train.iterations']} per level",
    ]
    if not proto.cuts:
        return [*lines, f"--budget {proto.budget}: the paper's protocol, nothing cut"]
    what = "a reduced protocol, NOT the paper's" if proto.budget == "small" else "--set"
    lines.append(f"--budget {proto.budget} ({what}); differs from the paper's in:")
    return [*lines, *(f"  {line}" for line in proto.cuts)]


def accuracy_field(figure: str) -> str:
    """The accuracy a figure's claims and right panel use (early stop unless the data says)."""
    return paper_data()["figures"][figure].get("accuracy_field", "early_stop_test_acc")


def evaluate(figure: str, cells: list[dict[str, Any]]) -> list[ClaimResult]:
    """Every claim of `figure` checked against `cells` (one run's)."""
    t = Measurements(cells)
    field = accuracy_field(figure)
    return [evaluate_claim(c, t, field) for c in paper_data()["figures"][figure]["claims"]]


def claims_table(figure: str, results: Sequence[ClaimResult], t: Measurements) -> str:
    """The claims, numbered, then a table: Pm (the paper's / lt's matched level's), lt's
    measure (mean ± sample std over replicates, n), the paper's number, the test lt applies
    and the verdict; then what the columns mean, how far the run `t` went and how many of
    its cells diverged."""
    meta = paper_data()["paper"]
    data = paper_data()["figures"][figure]
    lines = [f"claims of {meta['short']} (arXiv:{meta['arxiv']}), {data['source']['where']}:"]
    lines += [f"  {i}. {r.claim['text']}" for i, r in enumerate(results, 1)]
    headers, rows = claim_rows(results)
    notes = [
        f"lt measured: mean ± sample std over replicates, each pruned cell against its own "
        f"replicate's dense cell; accuracy: {ACCURACY[accuracy_field(figure)]}.",
        f"Pm: the run's level nearest the paper's Pm, within ±{MATCH_TOLERANCE:.0%} of it, "
        "else 'not reached'; a range claim is checked at every level in the range (the worst "
        f"shown) and needs the run to reach its end. This run's sparsest level: Pm "
        f"{min(t.pm.values(), default=100):.1f}%.",
        "held if: the test on lt's mean (the paper's direction); ~ marks a number the paper "
        "gives loosely (ltcli/results/paper/frankle2019.json says where each number is from).",
    ]
    if "accuracy_note" in data:
        notes.append(f"note: {data['accuracy_note']}.")
    if t.diverged:
        notes.append(f"note: {t.diverged} diverged cell(s) left out of every measure.")
    return "\n".join([*lines, "", report.format_table(headers, rows), "", *notes])


def overlay_points(figure: str, t: Measurements) -> list[OverlayPoint]:
    """The paper's points for the figure: each claim with ``overlay`` and a number, at the
    paper's Pm. A number relative to the dense net (38% earlier, +0.3 points) is drawn from
    lt's own dense mean (a hollow star); an absolute one (90.5%) as is (a filled star)."""
    from ltcli.results.plot import OverlayPoint

    points = []
    acc = accuracy_field(figure)
    for claim in paper_data()["figures"][figure]["claims"]:
        if not claim.get("overlay") or claim["value"] is None or "pm" not in claim:
            continue
        measure = MEASURES[claim["measure"]]
        anchored = measure.anchor(t, claim["value"], acc)
        if anchored is None:
            continue
        field, value = anchored
        label = "paper (its change applied to lt's dense net)" if measure.relative else "paper"
        points.append(OverlayPoint(field, claim["pm"], value, label, not measure.relative))
    return points


def curve_levels(figure: str, t: Measurements) -> list[int] | None:
    """The run's levels at the Pm values the paper's figure labels (None: plot's default)."""
    labelled = paper_data()["figures"][figure].get("labelled_pm", {}).get("values", [])
    levels = sorted({lv for pm in labelled if (lv := t.match(pm)) is not None})
    return levels if len(levels) >= 2 else None
