"""``lt reproduce``: a figure of Frankle & Carbin (ICLR 2019) rerun through
`ltcli.train.launch`, its claims checked against the store, and the figure drawn with the
paper's own points over it.

Three parts, kept apart so each can be read and tested alone:

* protocols (`FIGURES`, `protocol`): the paper's spec for a figure, as overrides of a spec
  shipped with lt, and a ``small`` budget that cuts it down (every cut is listed by `cuts`);
* claims (`evaluate`): what the paper says about the figure is data (``ltcli/paper/
  frankle2019.json``: each claim's Pm, measure, number, the test it must pass and where in the
  paper it is); `MEASURES` are the small functions that compute a claim's measure from the
  store's cells, per replicate (each pruned cell against its own replicate's dense cell);
* the figure (`overlay_points`, `reproduce`): `ltcli.results.plot`'s three panels plus the paper's
  points as black stars.

A claim at a Pm is checked at the run's level of nearest Pm, if that is within
`MATCH_TOLERANCE` of it; otherwise it is "not reached". A claim is "held" when the mean over
replicates passes the claim's test (its direction: tickets stop earlier, are more accurate);
the paper's own magnitude is printed beside lt's for the reader to compare.
"""

from __future__ import annotations

import dataclasses
import importlib.resources
import json
import math
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ltcli.core.errors import UsageError
from ltcli.experiment import spec
from ltcli.experiment.member import parse_controls
from ltcli.experiment.plan import Progress
from ltcli.experiment.spec import Spec
from ltcli.results import report
from ltcli.storage.store import Store
from ltcli.train import launch

if TYPE_CHECKING:  # matplotlib costs half a second: `ltcli.results.plot` is imported when drawing
    from ltcli.results.plot import OverlayPoint

PAPER_DATA = "frankle2019.json"
"""The shipped file (in `ltcli.results.paper`) of what the paper reports."""
MATCH_TOLERANCE = 0.10
"""A paper's Pm matches the run's level of nearest Pm when they differ by at most this
fraction of the paper's Pm (LeNet's levels are 20% apart, so at most one ever matches)."""
BUDGETS = ("paper", "small")
SIZE, DPI = (1500, 500), 100
HELD, NOT_HELD, NOT_REACHED, NO_DATA = "held", "not held", "not reached", "no data"
ACCURACY = {
    "early_stop_test_acc": "test accuracy at early stop",
    "final_test_acc": "test accuracy at the end of training",
}
"""The accuracies a figure's claims can use (`ltcli.results.plot.ACCURACY_FIELDS` draws each)."""

# -- protocols -------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class FigureProtocol:
    """How lt runs one of the paper's figures.

    Attributes:
      experiment: the spec shipped with lt it starts from.
      paper: overrides that make it the paper's protocol (the whole protocol, so an edited
        shipped spec cannot change what "paper" means).
      small: overrides of ``--budget small`` on top of `paper`.
    """

    experiment: str
    paper: Mapping[str, Any]
    small: Mapping[str, Any]


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
    """The shipped record of what the paper reports (``ltcli/paper/frankle2019.json``)."""
    return json.loads(
        importlib.resources.files("ltcli.results.paper").joinpath(PAPER_DATA).read_text()
    )


@dataclasses.dataclass(frozen=True)
class Protocol:
    """A figure's protocol at a budget: the spec to run and how it differs from the paper's."""

    figure: str
    budget: str
    spec: Spec
    cuts: tuple[str, ...]
    """One line per spec field whose value is not the paper's: ``key: paper -> this``."""
    settings: tuple[str, ...] = ()
    """The ``--set`` assignments it includes."""

    @property
    def data(self) -> dict[str, Any]:
        """The figure's entry in the shipped paper data."""
        return paper_data()["figures"][self.figure]


def _show(value: Any) -> str:
    if isinstance(value, tuple | list):
        return "[" + ", ".join(map(str, value)) + "]"
    if value == "":
        return "(none)"
    return str(value)


def cuts(paper: Spec, chosen: Spec) -> tuple[str, ...]:
    """``key: paper value -> chosen value`` for each field where `chosen` differs."""
    return tuple(
        f"{key}: {_show(paper[key])} -> {_show(chosen[key])}"
        for key in spec.FIELDS
        if paper[key] != chosen[key]
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
    lines = [
        f"reproducing {meta['short']} (arXiv:{meta['arxiv']}), {proto.data['source']['where']}: "
        f"{proto.data['title']}",
        f"protocol: {s.experiment}, {s['run.rounds']} rounds x {s['run.replicates']} "
        f"replicates, controls {_show(s['run.controls'])}, {s['train.iterations']} per level",
    ]
    if not proto.cuts:
        return [*lines, f"--budget {proto.budget}: the paper's protocol, nothing cut"]
    what = "a reduced protocol, NOT the paper's" if proto.budget == "small" else "--set"
    lines.append(f"--budget {proto.budget} ({what}); differs from the paper's in:")
    return [*lines, *(f"  {line}" for line in proto.cuts)]


# -- the store's cells, per replicate ----------------------------------------------------------


def protocol_cells(cells: list[dict[str, Any]], s: Spec) -> list[dict[str, Any]]:
    """The cells of `cells` that `s`'s ``[run]`` section asks for (a run can hold more: a
    longer `lt run` of the same spec); the claims and the figure use exactly these."""
    counts = parse_controls(s["run.controls"])

    def asked(cell: dict[str, Any]) -> bool:
        if cell["replicate"] >= s["run.replicates"] or cell["level"] > s["run.rounds"]:
            return False
        kind, _, index = cell["member"].partition("-")
        if kind == "ticket":
            return True
        return cell["level"] > 0 and index.isdigit() and int(index) < counts.get(kind, 0)

    return [c for c in cells if asked(c)]


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


# -- measures ----------------------------------------------------------------------------------

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


def accuracy_field(figure: str) -> str:
    """The accuracy a figure's claims and right panel use (early stop unless the data says)."""
    return paper_data()["figures"][figure].get("accuracy_field", "early_stop_test_acc")


def evaluate(figure: str, cells: list[dict[str, Any]]) -> list[ClaimResult]:
    """Every claim of `figure` checked against `cells` (one run's)."""
    t = Measurements(cells)
    field = accuracy_field(figure)
    return [evaluate_claim(c, t, field) for c in paper_data()["figures"][figure]["claims"]]


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
        "gives loosely (ltcli/paper/frankle2019.json says where each number is from).",
    ]
    if "accuracy_note" in data:
        notes.append(f"note: {data['accuracy_note']}.")
    if t.diverged:
        notes.append(f"note: {t.diverged} diverged cell(s) left out of every measure.")
    return "\n".join([*lines, "", report.format_table(headers, rows), "", *notes])


# -- the figure -------------------------------------------------------------------------------


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


@dataclasses.dataclass(frozen=True)
class Reproduction:
    """What `reproduce` did: the protocol, the run, the claims and the figure it wrote."""

    protocol: Protocol
    run_id: str
    results: list[ClaimResult]
    text: str
    """The per-level table and the claims table, as `lt reproduce` prints them."""
    figure: Path


def run(
    proto: Protocol,
    store: Store,
    *,
    data_dir: Path | None = None,
    output: Path | None = None,
    progress: Progress | None = None,
) -> Reproduction:
    """Runs `proto` through `launch.run` (finished cells are reused), checks the figure's
    claims on its cells and writes the figure to `output` (default
    ``reproduce-<figure>.png``).

    Raises:
      UsageError: the data set is missing, or as `launch.run`.
    """
    from ltcli.results import plot

    # An alias only for the protocol as shipped: --set makes other runs, which must not share it.
    name = None if proto.settings else f"reproduce-{proto.figure}-{proto.budget}"
    run_id = launch.run(proto.spec, store, data_dir=data_dir, name=name, progress=progress)
    cells = protocol_cells(report.cell_metrics(store, run_id), proto.spec)
    t = Measurements(cells)
    results = evaluate(proto.figure, cells)
    path = Path(output or f"reproduce-{proto.figure}.png")
    plot.plot(
        store,
        [run_id],
        path,
        SIZE,
        DPI,
        curve_levels(proto.figure, t),
        "minmax",
        overlay=overlay_points(proto.figure, t),
        accuracy_field=accuracy_field(proto.figure),
        cells={run_id: cells},
    )
    levels = report.levels_table(report.level_summary(cells))
    text = "\n\n".join([levels, claims_table(proto.figure, results, t)])
    return Reproduction(proto, run_id, results, text, path)


def reproduce(
    figure: str,
    budget: str,
    store: Store,
    *,
    settings: Iterable[str] = (),
    **options: Any,
) -> Reproduction:
    """`run` of `protocol(figure, budget, settings)`; `options` are `run`'s."""
    return run(protocol(figure, budget, settings), store, **options)
