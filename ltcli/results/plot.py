"""``lt plot``: the paper's figures from the store, drawn as Vega-Lite by vl-convert (`drawing`).

Three panels side by side:

* test accuracy over training iterations at a few levels (the paper's Figure 3): one line per
  level and run, the ticket's curve averaged over replicates, labelled by % weights remaining;
* early-stop iteration, and
* test accuracy at early stop, against % weights remaining (Figure 4): log x axis, 100 % on
  the left; mean over replicates with error bars of ± one sample standard deviation or, as
  the paper draws them, the minimum to maximum over replicates; tickets solid, each control
  kind dashed with its own marker.

Diverged cells (loss NaN or inf) are in no mean, curve or error bar: a level with any is
marked by a red x at the top of the right two panels, and the legend counts them. A level
whose tickets all diverged still draws their (broken) mean curve, labelled so.

Collapsed cells (their mask empties a prunable layer, so the network outputs a constant) are
real results and stay in the means, curves and error bars; a hollow magenta ring circles each
mean that includes any, the legend counts them, and a training curve averaging any says how
many.

An optional overlay draws points a paper reports (`OverlayPoint`) as black stars on the right
two panels, so a reproduction can be read against the original at a glance.

One run: colours tell levels (left) and member kinds (right) apart. Several runs: each run has
a colour (levels are shades of it, sparser is lighter) and the legends name the runs.
The image is ``width x height`` pixels; `dpi` scales text and lines, not the image size
(`drawing.fitted`).
"""

from __future__ import annotations

import dataclasses
import math
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ltcli.core.errors import UsageError
from ltcli.results import drawing, listing, report
from ltcli.storage.store import Store

DEFAULT_LEVELS = 5
"""Levels the left panel shows unless asked: evenly spread from the first to the last."""
MAX_TICKS = 8
"""At most this many ticks on the % remaining axes, at levels' values (every k-th level)."""
ERROR_BARS = ("std", "minmax")
"""What the error bars of the right two panels span: ± one sample standard deviation, or the
minimum to the maximum over replicates (and control indices)."""
DIVERGED_STYLE = {"color": "red", "marker": "x", "linestyle": None, "markersize": 6}
"""How a level's diverged cells are marked (at the top of the panel)."""
COLLAPSED_STYLE = {
    "color": "#bf00bf",
    "marker": "o",
    "filled": False,
    "linestyle": None,
    "markersize": 11,
}
"""How a mean that includes collapsed cells is marked (a ring around its point)."""
STYLES = {"ticket": ("-", "o"), "reinit": ("--", "s"), "random": ("--", "^")}
"""Line style and marker of each member kind (other kinds: dotted)."""
ACCURACY_FIELDS = {
    "early_stop_test_acc": "Test accuracy at early stop",
    "final_test_acc": "Test accuracy at the end of training",
}
"""What the right panel can show, with its title."""
OVERLAY_STYLE = {"color": "black", "marker": "*", "markersize": 11}
"""How a paper's reported points are drawn (hollow stars for `OverlayPoint.filled` False)."""


@dataclasses.dataclass(frozen=True)
class OverlayPoint:
    """A point a paper reports, drawn over the panel of `field` as a black star.

    Attributes:
      field: ``early_stop_iter`` or one of `ACCURACY_FIELDS` (the panel it belongs on).
      percent_remaining: its x, in % of weights remaining.
      value: its y in the panel's units: iterations, or accuracy in percent.
      label: its legend entry; points with the same label share one.
      filled: a filled star, or a hollow one (to tell two kinds of point apart).
    """

    field: str
    percent_remaining: float
    value: float
    label: str = "paper"
    filled: bool = True


class _Run:
    """A run's numbers for the figure: per-level summaries, its cells by level and kind, and
    mean ticket test curves (over the tickets that did not diverge, unless all did: those
    levels are in `diverged_curves`; `collapsed_curves` counts the collapsed tickets in a
    level's curve, where there are any)."""

    def __init__(self, store: Store, run_id: str, cells: list[dict[str, Any]] | None = None):
        self.label = listing.run_label(store, run_id)
        cells = report.cell_metrics(store, run_id) if cells is None else cells
        if not cells:
            raise UsageError(f"run {self.label}: no finished cells to plot")
        self.summary = report.level_summary(cells)
        self.groups = report.by_level_and_kind(cells)
        tickets: dict[int, list[dict[str, Any]]] = defaultdict(list)
        for cell in cells:
            if cell["member"] == "ticket":
                tickets[cell["level"]].append(cell)
        self.curves, self.diverged_curves, self.collapsed_curves = {}, set(), {}
        for level, group in tickets.items():
            kept = [c for c in group if not report.is_diverged(c)]
            if not kept:
                self.diverged_curves.add(level)
            if collapsed := sum(map(report.is_collapsed, kept)):
                self.collapsed_curves[level] = collapsed
            self.curves[level] = _mean_curve([c["curve"] for c in kept or group])
        self.remaining = {row["level"]: row["percent_remaining"] for row in self.summary}


def _mean_curve(curves: list[dict[str, Any]]) -> tuple[np.ndarray, np.ndarray]:
    """(iterations, test accuracy in percent averaged over replicates)."""
    length = min(len(c["iteration"]) for c in curves)
    accuracy = np.mean([np.asarray(c["test_acc"][:length], float) for c in curves], axis=0)
    return np.asarray(curves[0]["iteration"][:length]), 100 * accuracy


def _chosen_levels(runs: list[_Run], levels: list[int] | None) -> list[int]:
    available = sorted({level for run in runs for level in run.curves})
    if levels is None:
        picks = np.linspace(0, len(available) - 1, min(DEFAULT_LEVELS, len(available)))
        return [available[i] for i in sorted({round(p) for p in picks})]
    missing = [level for level in levels if level not in available]
    if missing:
        raise UsageError(
            f"--levels: no finished ticket at level {missing[0]}; "
            f"the runs have levels {', '.join(map(str, available))}"
        )
    return levels


def _curves_panel(runs: list[_Run], levels: list[int]) -> drawing.Panel:
    panel = drawing.Panel(
        "Test accuracy during training",
        "training iteration",
        "test accuracy (%)",
        legend_title="weights remaining",
        legend_corner="bottom-right",  # curves rise from the left
    )
    for r, run in enumerate(runs):
        shown = [level for level in levels if level in run.curves]
        for j, level in enumerate(shown):
            if len(runs) == 1:
                color, label = drawing.viridis(j / max(len(shown), 2)), ""
            else:
                amount = 0.6 * j / max(len(shown) - 1, 1)
                color, label = drawing.shade(drawing.color(r), amount), f"{run.label} "
            iterations, accuracy = run.curves[level]
            label += f"{run.remaining[level]:.1f}%"
            label += " (diverged)" if level in run.diverged_curves else ""
            if level in run.collapsed_curves:
                label += f" ({run.collapsed_curves[level]} collapsed)"
            panel.series.append(
                drawing.Series(label, iterations.tolist(), accuracy.tolist(), color)
            )
    return panel


def error_bar(cells: list[dict[str, Any]], field: str, error_bars: str) -> tuple[float, float]:
    """How far below and above the mean of `field` over `cells` (those that did not diverge)
    the error bar reaches: one sample std each way (0 for one cell), or to the min and max."""
    values = np.asarray([c[field] for c in cells], float)
    if error_bars == "minmax":
        return float(values.mean() - values.min()), float(values.max() - values.mean())
    std = float(values.std(ddof=1)) if len(values) > 1 else 0.0
    return std, std


def _overlay(points: Sequence[OverlayPoint]) -> list[drawing.Series]:
    """`points` as black stars, one legend entry per label."""
    series = []
    for label in dict.fromkeys(p.label for p in points):
        group = [p for p in points if p.label == label]
        series.append(
            drawing.Series(
                label,
                [p.percent_remaining for p in group],
                [p.value for p in group],
                OVERLAY_STYLE["color"],
                linestyle=None,
                marker=OVERLAY_STYLE["marker"],
                filled=group[0].filled,
                markersize=OVERLAY_STYLE["markersize"],
            )
        )
    return series


def _levels_panel(
    titles: tuple[str, str],
    runs: list[_Run],
    field: str,
    scale: float,
    error_bars: str,
    overlay: Sequence[OverlayPoint] = (),
) -> drawing.Panel:
    """A panel (`titles`: its title and y axis title) of `field` of every member kind
    against % remaining, with `error_bars` over the cells that
    did not diverge; a red x at the top of the panel at each level with diverged cells, a
    ring around each mean that includes collapsed cells; the `overlay` points of `field` as
    stars (the x axis widened to show every overlay point)."""
    values = sorted({p for run in runs for p in run.remaining.values()}, reverse=True)
    # The panel spans every overlay point, and ticks those beyond the runs' levels.
    beyond = {p.percent_remaining for p in overlay} - set(values)
    beyond = {x for x in beyond if not values[-1] <= x <= values[0]}
    shown = sorted({*values, *beyond}, reverse=True)
    ticks = [*values[:: math.ceil(len(values) / MAX_TICKS)], *sorted(beyond)]
    panel = drawing.Panel(
        titles[0],
        "weights remaining (%)",
        titles[1],
        x_scale="log",
        x_domain=(shown[0] * 1.15, shown[-1] / 1.15),  # reversed: dense on the left
        ticks=ticks,
        x_format=".3~g",
    )
    diverged, rings = [], []
    for r, run in enumerate(runs):
        kinds = dict.fromkeys(kind for row in run.summary for kind in row["members"])
        for k, kind in enumerate(kinds):
            rows = [row for row in run.summary if kind in row["members"]]
            diverged += [
                (row["percent_remaining"], row["members"][kind][field].diverged) for row in rows
            ]
            rows = [row for row in rows if row["members"][kind][field].n > 0]
            rings += [
                (row["percent_remaining"], scale * stat.mean, stat.collapsed)
                for row in rows
                if (stat := row["members"][kind][field]).collapsed
            ]
            kept = [
                [c for c in run.groups[row["level"]][kind] if not report.is_diverged(c)]
                for row in rows
            ]
            spans = [error_bar(cells, field, error_bars) for cells in kept]
            means = [scale * row["members"][kind][field].mean for row in rows]
            linestyle, marker = STYLES.get(kind, (":", "d"))
            panel.series.append(
                drawing.Series(
                    kind if len(runs) == 1 else f"{run.label} {kind}",
                    [row["percent_remaining"] for row in rows],
                    means,
                    drawing.color(k if len(runs) == 1 else r),
                    linestyle=linestyle,
                    marker=marker,
                    lo=[m - scale * below for m, (below, _) in zip(means, spans, strict=True)],
                    hi=[m + scale * above for m, (_, above) in zip(means, spans, strict=True)],
                )
            )
    marked = [x for x, count in diverged if count]
    if marked:
        total = sum(count for _, count in diverged)
        label = f"{total} diverged cell{'s' if total > 1 else ''} (not in means)"
        panel.series.append(
            drawing.Series(label, marked, [None] * len(marked), **DIVERGED_STYLE)  # the top
        )
    panel.series += collapse_rings(rings, "collapsed cell", "collapsed cells")
    panel.series += _overlay([p for p in overlay if p.field == field])
    return panel


def figure(
    store: Store,
    run_ids: list[str],
    size: tuple[int, int],
    dpi: int,
    levels: list[int] | None = None,
    error_bars: str = "std",
    *,
    overlay: Sequence[OverlayPoint] = (),
    accuracy_field: str = "early_stop_test_acc",
    cells: Mapping[str, list[dict[str, Any]]] | None = None,
) -> drawing.Figure:
    """The three-panel figure of `run_ids` (each drawn once), `size` pixels at `dpi`.

    Args:
      levels: the levels the training-curve panel shows; default up to `DEFAULT_LEVELS`
        spread from the first to the last.
      error_bars: one of `ERROR_BARS`: ``std`` (± one sample standard deviation) or
        ``minmax`` (the minimum to the maximum over replicates, as the paper's Figure 4).
      overlay: points a paper reports, drawn as black stars on the panel of their field.
      accuracy_field: what the right panel shows, one of `ACCURACY_FIELDS`.
      cells: the cells to draw of some runs, by run id (default: every finished cell).

    Raises:
      UsageError: a run has no finished cell, a level in `levels` has no finished ticket,
        or `error_bars` or `accuracy_field` is unknown.
    """
    if error_bars not in ERROR_BARS:
        raise UsageError(f"--error-bars {error_bars}: use one of {', '.join(ERROR_BARS)}")
    if accuracy_field not in ACCURACY_FIELDS:
        raise UsageError(f"{accuracy_field}: use one of {', '.join(ACCURACY_FIELDS)}")
    cells = cells or {}
    runs = [_Run(store, run_id, cells.get(run_id)) for run_id in dict.fromkeys(run_ids)]
    curves = _curves_panel(runs, _chosen_levels(runs, levels))
    early = ("Early-stop iteration", "iteration of min. validation loss")
    iterations = _levels_panel(early, runs, "early_stop_iter", 1, error_bars, overlay)
    titles = (ACCURACY_FIELDS[accuracy_field], "test accuracy (%)")
    accuracy = _levels_panel(titles, runs, accuracy_field, 100, error_bars, overlay)
    return drawing.Figure([curves, iterations, accuracy], size, dpi)


def plot(
    store: Store,
    run_ids: list[str],
    path: Path,
    size: tuple[int, int],
    dpi: int,
    levels: list[int] | None = None,
    error_bars: str = "std",
    **options: Any,
) -> None:
    """Draws `figure` and writes it to `path` (see `save`). `options` are `figure`'s
    keyword-only arguments (``overlay``, ``accuracy_field``, ``cells``).

    Raises:
      UsageError: an unknown suffix, or as `figure`.
    """
    save(lambda: figure(store, run_ids, size, dpi, levels, error_bars, **options), path, dpi)


def save(draw: Callable[[], drawing.Figure], path: Path, dpi: int) -> None:
    """Writes the figure `draw` makes (at its own size and `dpi`) to `path` atomically, in
    the format its suffix names (`ltcli.results.drawing.FORMATS`).

    Raises:
      UsageError: an unknown suffix (checked before drawing).
    """
    drawing.save(lambda: dataclasses.replace(draw(), dpi=dpi), path)


def collapse_rings(
    rings: list[tuple[float, float, int]], one: str, many: str
) -> list[drawing.Series]:
    """A ring around each mean ``(x, y, count)`` that includes `count` collapsed cells, with
    one legend entry counting them (`one` or `many` names them); none without rings."""
    if not rings:
        return []
    total = sum(count for *_, count in rings)
    label = f"{total} {one if total == 1 else many} (a layer emptied; in means)"
    xs, ys = [x for x, *_ in rings], [y for _, y, _ in rings]
    return [drawing.Series(label, xs, ys, **COLLAPSED_STYLE)]
