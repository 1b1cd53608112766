"""``lt report``: stored runs as one self-contained, interactive HTML page.

`build` is a pure function from a store's runs to an HTML string; `write` writes it
atomically. The page opens offline: the Vega, Vega-Lite and vega-embed libraries are inlined
(vl-convert's bundle, `javascript_bundle`), and so is every number, so nothing is fetched when
it is viewed. The charts are Vega-Lite specs built with altair (validated against the schema
of the Vega-Lite version the bundle carries) and drawn as SVG:

* test accuracy (at early stop, or at the end: a picker) and the early-stop iteration against
  the percent of weights remaining, on a log axis, for tickets and each control kind, with a
  band of ± one sample std or min to max over replicates (a toggle); diverged cells are red
  crosses at the top of the chart (they are in no mean), collapsed ones magenta rings;
* the mean test-accuracy curve during training at one level (a picker), ± std;
* instability against % remaining (stability copies) and against the spawn iteration k
  (spawned dense copies), and each ticket's barrier above the line and instability on the path
  from the level before against % remaining (`LEVEL_MEASURES`), where the runs have them;
* pruning at initialization against IMP, where any run prunes at initialization;
* per-layer weights remaining as a level x layer heat map;
* the paper's claims table when a run is a `lt reproduce` figure, each run's per-level table
  with diverged and collapsed cells marked, its hyperparameters and its differences from the
  first run.

Hovering a point shows its numbers with ``n`` and the std; clicking a legend entry toggles a
series (shift-click for several); dragging pans and the mouse wheel zooms. Every number comes
from `ltcli.results.report` (`Stat`, `level_summary`, `summarize_cells`), `diff` and
`reproduce`; only min/max over cells and the per-evaluation curve means are computed here.

Several runs (a sweep, or runs to compare) are drawn together, each series labelled by its
run's alias (`report.run_label`).
"""

from __future__ import annotations

import contextlib
import datetime
import html
import json
import math
from collections import defaultdict
from collections.abc import Callable, Sequence
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from ltcli.core import atomic, paths
from ltcli.core.errors import UsageError
from ltcli.experiment.descriptor import outdated
from ltcli.experiment.plan import Progress
from ltcli.results import diff, report
from ltcli.storage.store import CellKey, Store

MAX_CURVE_POINTS = 250
"""A training curve on the page keeps at most this many evaluations (every k-th, and the
last), so a 500-evaluation protocol of 21 levels stays a page of a few MB at most."""
STABLE_POINTS = 2.0
"""The instability below which a network is called stable (Frankle et al. 2020), as
`ltcli.results.plot_instability` draws it."""
CURVE_KINDS_SKIPPED = ("spawn", "stability")
"""Member kinds left out of the accuracy and curve charts: they are the instability charts'."""
LEVEL_MEASURES = {
    "barrier_above_line": (
        "Level barrier above the line against weights remaining",
        "tickets, path from the level before's: highest rise of test error above the straight "
        "line between the ends' errors",
        "barrier above the line (points)",
    ),
    "instability": (
        "Level instability against weights remaining",
        "tickets, path from the level before's: highest test error minus the mean of the "
        "ends' errors (Frankle et al. 2020)",
        "instability (points)",
    ),
}
"""The two measures of each IMP ticket's path from the level before's ticket (``--barriers``,
`report.path_measures`), each charted as ``level_<measure>``: (title, subtitle, y axis)."""
ACCURACY_FIELDS = {
    "early_stop_test_acc": "test accuracy at early stop",
    "final_test_acc": "test accuracy at the end of training",
}
SCALE = {"early_stop_test_acc": 100.0, "final_test_acc": 100.0, "early_stop_iter": 1.0}
"""What each summary field is multiplied by on the page (accuracies in percent)."""
CHART_WIDTH, CHART_HEIGHT = 460, 280
VALIDATE_SPECS = False
"""Whether altair checks each chart against the Vega-Lite schema as the page is built: seconds
per page, so off; the tests switch it on."""


# -- the JavaScript ------------------------------------------------------------------------


def vega_lite_version() -> str:
    """The Vega-Lite version (``major.minor``) altair writes specs for."""
    import altair as alt

    return ".".join(alt.SCHEMA_VERSION.lstrip("v").split(".")[:2])


@cache
def javascript_bundle() -> str:
    """Vega, Vega-Lite and vega-embed (with vega-tooltip) as one script that sets
    ``window.vegaEmbed``: vl-convert's bundle for altair's Vega-Lite version, cached in lt's
    cache folder (building it takes seconds)."""
    import vl_convert

    version = vega_lite_version()
    if version not in vl_convert.get_vegalite_versions():
        version = None  # vl-convert's newest; altair's specs are meant to read there too
    name = f"vl-convert-{vl_convert.__version__}-vl{version or 'latest'}.js"
    cached = paths.cache_dir() / "report" / name
    try:
        return cached.read_text(encoding="utf-8")
    except OSError:
        pass
    bundle = vl_convert.javascript_bundle(vl_version=version)
    with contextlib.suppress(OSError):  # a read-only cache folder costs seconds, no more
        atomic.write_bytes(cached, bundle.encode("utf-8"))
    return bundle


# -- data: the runs' numbers as tidy columns -------------------------------------------------


class _Columns:
    """Rows collected column by column: the page holds each data set as ``{column: [values]}``
    (no key repeated per row) and expands it to rows in the browser."""

    def __init__(self, *names: str):
        self.columns: dict[str, list[Any]] = {n: [] for n in names}

    def add(self, **row: Any) -> None:
        assert row.keys() == self.columns.keys(), sorted(row.keys() ^ self.columns.keys())
        for name, value in row.items():
            self.columns[name].append(_clean(value))

    def __len__(self) -> int:
        return len(next(iter(self.columns.values()), []))


def _clean(value: Any) -> Any:
    """JSON-ready: numpy scalars as Python numbers, NaN and inf as None, floats rounded to 6
    significant digits (the page shows at most 4)."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        return None if not math.isfinite(value) else float(f"{value:.6g}")
    return value


def _scaled(value: float | None, scale: float) -> float | None:
    return None if value is None else value * scale


class _Run:
    """One run's cells and how the page names it."""

    def __init__(self, store: Store, run_id: str, label: str):
        self.run_id, self.label = run_id, label
        self.record = store.descriptor(run_id)
        self.meta = store.meta(run_id)
        self.full = self.record["full"]
        self.cells = report.cell_metrics(store, run_id)
        self.summary = report.level_summary(self.cells)
        self.groups = report.by_level_and_kind(self.cells)
        self.method = self.full.get("prune", {}).get("method", "magnitude")

    def series(self, kind: str, several: bool) -> str:
        return f"{self.label} · {kind}" if several else kind


def _labels(store: Store, run_ids: Sequence[str]) -> list[str]:
    """`report.sweep_labels` of each run (the swept values of a sweep's points, else the
    run's alias), made unique with the id's first digits where two runs share one."""
    named = report.sweep_labels(store, run_ids)
    labels = [named[r] for r in run_ids]
    return [
        f"{label} ({run_id[:8]})" if labels.count(label) > 1 else label
        for label, run_id in zip(labels, run_ids, strict=True)
    ]


def _extent(group: list[dict[str, Any]], field: str, scale: float) -> tuple[Any, Any]:
    """Min and max of `field` over the cells of `group` that did not diverge (None, None if
    every one did)."""
    values = [c[field] * scale for c in group if not report.is_diverged(c)]
    return (min(values), max(values)) if values else (None, None)


SUMMARY_COLUMNS = (
    "run",
    "series",
    "kind",
    "method",
    "level",
    "pm",
    "metric",
    "mean",
    "std",
    "n",
    "diverged",
    "collapsed",
    "min",
    "max",
)


def _add_stat(
    table: _Columns,
    run: _Run,
    series: str,
    kind: str,
    level: int,
    pm: float,
    metric: str,
    stat: report.Stat,
    extent: tuple[Any, Any],
    scale: float,
) -> None:
    table.add(
        run=run.label,
        series=series,
        kind=kind,
        method=run.method,
        level=level,
        pm=pm,
        metric=metric,
        mean=_scaled(stat.mean, scale),
        std=_scaled(stat.std, scale),
        n=stat.n,
        diverged=stat.diverged,
        collapsed=stat.collapsed,
        min=extent[0],
        max=extent[1],
    )


def summary_data(runs: Sequence[_Run]) -> _Columns:
    """One row per run, level, member kind and measure: `report.summarize_cells`' `Stat`
    (accuracies and instability in percent) and the min and max over the cells; measures are
    the `report.SUMMARY_FIELDS`, ``instability`` of stability copies and, where recorded, the
    tickets' ``level_barrier_above_line`` and ``level_instability`` (`LEVEL_MEASURES`)."""
    table = _Columns(*SUMMARY_COLUMNS)
    several = len(runs) > 1
    for run in runs:
        for row in run.summary:
            level, pm = row["level"], row["percent_remaining"]
            for kind, stats in row["members"].items():
                group = run.groups[level][kind]
                series = run.series(kind, several)
                if kind not in CURVE_KINDS_SKIPPED:
                    for field in report.SUMMARY_FIELDS:
                        extent = _extent(group, field, SCALE[field])
                        stat = stats[field]
                        _add_stat(
                            table, run, series, kind, level, pm, field, stat, extent, SCALE[field]
                        )
                if "instability" in stats and kind == "stability":
                    copies = [c for c in group if "instability" in c and not report.is_diverged(c)]
                    values = [100 * c["instability"]["instability"] for c in copies]
                    extent = (min(values), max(values)) if values else (None, None)
                    _add_stat(
                        table,
                        run,
                        run.label,
                        kind,
                        level,
                        pm,
                        "instability",
                        stats["instability"],
                        extent,
                        100,
                    )
            tickets = run.groups[level].get("ticket", [])
            barriers = [c for c in tickets if "level_barrier" in c and not report.is_diverged(c)]
            for measure in LEVEL_MEASURES:
                measured = [
                    (c, value)
                    for c in barriers
                    if (value := report.path_measures(c["level_barrier"])[measure]) is not None
                ]
                if not measured:
                    continue
                values = [100 * value for _, value in measured]
                stat = report.Stat.of(
                    values,
                    diverged=sum(report.is_diverged(c) for c in tickets),
                    collapsed=sum(report.is_collapsed(c) for c, _ in measured),
                )
                extent = (min(values), max(values))
                metric = f"level_{measure}"
                _add_stat(table, run, run.label, "ticket", level, pm, metric, stat, extent, 1)
    return table


SPAWN_COLUMNS = ("run", "series", "kind", "level", "k", "mean", "std", "n", "diverged")
SPAWN_COLUMNS += ("collapsed", "min", "max")


def spawn_data(runs: Sequence[_Run]) -> _Columns:
    """Instability of the spawned dense copies by spawn iteration k, per run: the `Stat` of
    `report.summarize_cells` over each k's copies (in percent)."""
    table = _Columns(*SPAWN_COLUMNS)
    for run in runs:
        by_k: dict[int, list[dict[str, Any]]] = defaultdict(list)
        for cell in run.cells:
            if "instability" in cell and "spawn_iteration" in cell:
                by_k[cell["spawn_iteration"]].append(cell)
        for k in sorted(by_k):
            stat = report.summarize_cells(by_k[k])["instability"]
            kept = [
                100 * c["instability"]["instability"] for c in by_k[k] if not report.is_diverged(c)
            ]
            table.add(
                run=run.label,
                series=run.label,
                kind="spawn",
                level=0,
                k=k,
                mean=_scaled(stat.mean, 100),
                std=_scaled(stat.std, 100),
                n=stat.n,
                diverged=stat.diverged,
                collapsed=stat.collapsed,
                min=min(kept, default=None),
                max=max(kept, default=None),
            )
    return table


def _stride(length: int) -> int:
    return max(1, math.ceil(length / MAX_CURVE_POINTS))


def curve_data(runs: Sequence[_Run]) -> tuple[_Columns, int]:
    """Mean test accuracy (percent) over a level's cells of each member kind at each
    evaluation, its sample std and n (cells that did not diverge; all of them where all
    did, as `lt plot` draws them), every k-th evaluation (and the last) where a curve has
    more than `MAX_CURVE_POINTS`; and the largest k used."""
    table = _Columns("run", "series", "kind", "level", "iteration", "mean", "std", "n")
    several, widest = len(runs) > 1, 1
    for run in runs:
        for level, kinds in run.groups.items():
            for kind, group in kinds.items():
                if kind in CURVE_KINDS_SKIPPED:
                    continue
                kept = [c for c in group if not report.is_diverged(c)] or group
                length = min(len(c["curve"]["iteration"]) for c in kept)
                if not length:
                    continue
                acc = 100 * np.asarray([c["curve"]["test_acc"][:length] for c in kept], float)
                mean = acc.mean(axis=0)
                std = acc.std(axis=0, ddof=1) if len(kept) > 1 else np.zeros(length)
                iterations = kept[0]["curve"]["iteration"][:length]
                stride = _stride(length)
                widest = max(widest, stride)
                picks = sorted({*range(0, length, stride), length - 1})
                series = run.series(kind, several)
                for i in picks:
                    table.add(
                        run=run.label,
                        series=series,
                        kind=kind,
                        level=level,
                        iteration=iterations[i],
                        mean=float(mean[i]),
                        std=float(std[i]),
                        n=len(kept),
                    )
    return table, widest


LAYER_COLUMNS = ("run", "level", "pm", "layer", "order", "pct", "shade", "kept", "total", "n")
LAYER_COLUMNS += ("empty",)
EMPTY_SHADE = 0.01
"""The colour of an emptied layer (0% on a log scale): that of 0.01%."""


def layer_data(runs: Sequence[_Run]) -> _Columns:
    """Per run, level and prunable layer: the percent of the layer's weights the level's
    tickets keep (their mean; global pruning gives replicates different counts), the kept and
    total counts, and how many of the tickets empty the layer."""
    table = _Columns(*LAYER_COLUMNS)
    for run in runs:
        for row in run.summary:
            level = row["level"]
            tickets = run.groups[level].get("ticket") or next(iter(run.groups[level].values()))
            layers = list(dict.fromkeys(name for c in tickets for name in c.get("layers", {})))
            for order, layer in enumerate(layers):
                counts = [c["layers"][layer] for c in tickets if layer in c.get("layers", {})]
                kept = float(np.mean([k for k, _ in counts]))
                total = counts[0][1]
                pct = 100 * kept / total if total else None
                table.add(
                    run=run.label,
                    level=level,
                    pm=row["percent_remaining"],
                    layer=layer.removesuffix("/kernel"),
                    order=order,
                    pct=pct,
                    shade=None if pct is None else max(pct, EMPTY_SHADE),
                    kept=kept,
                    total=total,
                    n=len(counts),
                    empty=sum(1 for k, t in counts if k == 0 < t),
                )
    return table


# -- charts ---------------------------------------------------------------------------------


def _pm_ticks(pms: list[float]) -> list[float]:
    """At most 8 tick values, at levels' Pm (every k-th level)."""
    values = sorted(set(pms), reverse=True)
    step = max(1, math.ceil(len(values) / 8))
    return values[::step]


def _band_param(alt: Any, name: str = "band") -> Any:
    return alt.param(
        name=name,
        value="std",
        bind=alt.binding_radio(
            options=["std", "minmax"], labels=["± std", "min to max"], name="band: "
        ),
    )


def _stat_tooltip(alt: Any, series: str, y_title: str, fmt: str, x: Any) -> list[Any]:
    return [
        alt.Tooltip(f"{series}:N", title="series"),
        alt.Tooltip("level:Q", title="level"),
        x,
        alt.Tooltip("mean:Q", title=y_title, format=fmt),
        alt.Tooltip("std:Q", title="std", format=fmt),
        alt.Tooltip("n:Q", title="n"),
        alt.Tooltip("min:Q", title="min", format=fmt),
        alt.Tooltip("max:Q", title="max", format=fmt),
        alt.Tooltip("diverged:Q", title="diverged (not in n)"),
        alt.Tooltip("collapsed:Q", title="collapsed (in n)"),
    ]


def stat_chart(
    dataset: str,
    *,
    title: str,
    y_title: str,
    fmt: str,
    metric: str | Sequence[tuple[str, str]] | None,
    x_field: str = "pm",
    x_title: str = "weights remaining (%)",
    x_scale: str = "log",
    ticks: Sequence[float] = (),
    series: str = "series",
    rule: float | None = None,
    subtitle: str = "",
    order: Sequence[str] = (),
    transforms: Sequence[dict[str, str]] = (),
    diverged: bool = True,
    collapsed: bool = True,
) -> Any:
    """Mean with a band (± std or min to max: a toggle) against `x_field`, one line per
    `series` (coloured in `order`: the tickets first), from the rows of `dataset` whose
    ``metric`` is `metric` (for a list of (field, label) choices, the one a picker selects;
    None: every row), after `transforms` (Vega-Lite transforms); red crosses at the top where
    cells diverged, magenta rings where the mean includes collapsed cells (those layers only
    where `diverged` and `collapsed` say the rows have any: an empty layer makes Vega warn).
    A log `x_scale` runs from 100% on the left. Legend click toggles a series; drag pans,
    wheel zooms."""
    import altair as alt

    band = _band_param(alt)
    params: list[Any] = [band]
    chart = alt.Chart(alt.Data(name=dataset))
    if transforms:
        chart = chart.properties(transform=list(transforms))
    if metric is None:
        pass
    elif isinstance(metric, str):
        chart = chart.transform_filter(alt.datum.metric == metric)
    else:
        picked = alt.param(
            name="field",
            value=metric[0][0],
            bind=alt.binding_select(
                options=[m for m, _ in metric], labels=[label for _, label in metric], name="show: "
            ),
        )
        params.append(picked)
        chart = chart.transform_filter("datum.metric == field")
    chart = chart.transform_calculate(
        lo="datum.mean == null ? null : band == 'minmax' ? datum.min : datum.mean - datum.std",
        hi="datum.mean == null ? null : band == 'minmax' ? datum.max : datum.mean + datum.std",
    )
    if x_scale == "log":  # 100% on the left, the domain the data's (not powers of 10)
        scale = alt.Scale(type="log", reverse=True, nice=False, padding=12)
    else:
        scale = alt.Scale(type=x_scale, padding=12)
    axis = alt.Axis(values=list(ticks), format=".3~g") if ticks else alt.Axis(format=",d")
    x = alt.X(f"{x_field}:Q", title=x_title, scale=scale, axis=axis)
    x_tip = alt.Tooltip(f"{x_field}:Q", title=x_title, format=".4~g")
    legend = alt.selection_point(fields=[series], bind="legend", name="shown")
    zoom = alt.selection_interval(bind="scales", name="zoom")
    color = alt.Color(
        f"{series}:N",
        title="series",
        legend=alt.Legend(symbolOpacity=1),
        sort=list(order) or "ascending",
    )
    opacity = alt.condition(legend, alt.value(1.0), alt.value(0.12))
    dash = alt.StrokeDash(
        "kind:N",
        title="member",
        scale=alt.Scale(
            domain=["ticket", "reinit", "random", "shuffle", "invert", "stability", "spawn"],
            range=[[1, 0], [6, 3], [2, 2], [8, 2, 2, 2], [4, 4], [1, 3], [1, 0]],
        ),
        legend=None,
    )
    y = alt.Y("mean:Q", title=y_title, scale=alt.Scale(zero=False))
    tooltip = _stat_tooltip(alt, series, y_title, fmt, x_tip)
    areas = chart.mark_area(opacity=0.15).encode(
        x=x,
        y="lo:Q",
        y2="hi:Q",
        color=color,
        opacity=alt.condition(legend, alt.value(0.15), alt.value(0.02)),
    )
    lines = chart.mark_line(strokeWidth=2).encode(
        x=x, y=y, color=color, strokeDash=dash, opacity=opacity
    )
    points = (
        chart.mark_point(filled=True, size=55)
        .encode(x=x, y=y, color=color, opacity=opacity, tooltip=tooltip)
        .add_params(legend, zoom)
    )
    rings = (
        chart.transform_filter("datum.collapsed > 0 && datum.mean != null")
        .mark_point(size=260, filled=False, strokeWidth=2, color="#d0d")
        .encode(x=x, y=y, tooltip=tooltip)
    )
    crosses = (
        chart.transform_filter("datum.diverged > 0")
        .mark_point(shape="cross", size=90, color="red", filled=True)
        .encode(x=x, y=alt.value(6), tooltip=tooltip)
    )
    layers = [
        areas,
        lines,
        points,
        *([rings] if collapsed else []),
        *([crosses] if diverged else []),
    ]
    if rule is not None:
        layers.append(
            alt.Chart(alt.Data(values=[{"y": rule}]))
            .mark_rule(color="grey", strokeDash=[3, 3])
            .encode(y="y:Q")
        )
    return (
        alt.layer(*layers)
        .add_params(*params)
        .properties(
            title=alt.Title(title, subtitle=subtitle or alt.Undefined),
            width=CHART_WIDTH,
            height=CHART_HEIGHT,
        )
    )


def curve_chart(levels: dict[int, float], subtitle: str, order: Sequence[str] = ()) -> Any:
    """Mean test accuracy during training at the level a picker selects, one line per series,
    ± std; hovering shows the evaluation nearest the pointer."""
    import altair as alt

    options = sorted(levels)
    picked = alt.param(
        name="level",
        value=options[min(1, len(options) - 1)],
        bind=alt.binding_select(
            options=options,
            labels=[f"{lv} ({levels[lv]:.3g}% remaining)" for lv in options],
            name="level: ",
        ),
    )
    legend = alt.selection_point(fields=["series"], bind="legend", name="shown")
    zoom = alt.selection_interval(bind="scales", name="zoom")
    near = alt.selection_point(
        name="near",
        nearest=True,
        on="pointerover",
        fields=["iteration"],
        empty=False,
        clear="pointerout",
    )
    chart = alt.Chart(alt.Data(name="curves")).transform_filter("datum.level == level")
    chart = chart.transform_calculate(lo="datum.mean - datum.std", hi="datum.mean + datum.std")
    x = alt.X("iteration:Q", title="training iteration", axis=alt.Axis(format="~s"))
    y = alt.Y("mean:Q", title="test accuracy (%)", scale=alt.Scale(zero=False))
    color = alt.Color(
        "series:N",
        title="series",
        legend=alt.Legend(symbolOpacity=1),
        sort=list(order) or "ascending",
    )
    opacity = alt.condition(legend, alt.value(1.0), alt.value(0.12))
    tooltip = [
        alt.Tooltip("series:N"),
        alt.Tooltip("level:Q"),
        alt.Tooltip("iteration:Q", format=","),
        alt.Tooltip("mean:Q", title="test accuracy (%)", format=".2f"),
        alt.Tooltip("std:Q", format=".2f"),
        alt.Tooltip("n:Q"),
    ]
    band = chart.mark_area(opacity=0.15).encode(
        x=x,
        y="lo:Q",
        y2="hi:Q",
        color=color,
        opacity=alt.condition(legend, alt.value(0.15), alt.value(0.02)),
    )
    lines = (
        chart.mark_line().encode(x=x, y=y, color=color, opacity=opacity).add_params(legend, zoom)
    )
    points = (
        chart.mark_point(filled=True, size=40)
        .encode(
            x=x,
            y=y,
            color=color,
            opacity=alt.condition(near, alt.value(1.0), alt.value(0.0)),
            tooltip=tooltip,
        )
        .add_params(near)
    )
    return (
        alt.layer(band, lines, points)
        .add_params(picked)
        .properties(
            title=alt.Title("Test accuracy during training", subtitle=subtitle),
            width=CHART_WIDTH,
            height=CHART_HEIGHT,
        )
    )


LEGEND_PERCENTS = (100, 50, 20, 10, 5, 2, 1, 0.5, 0.2, 0.1, 0.05, 0.02, 0.01)


def layer_chart(runs: int, levels: int, layers: int, lowest: float = 1.0) -> Any:
    """Per-layer weights remaining: a heat map of level (rows) by layer (columns), the percent
    kept written in each cell, emptied layers outlined in red; one per run."""
    import altair as alt

    base = alt.Chart(alt.Data(name="layers"))
    x = alt.X("layer:N", sort=alt.EncodingSortField("order"), title="layer")
    y = alt.Y("level:O", title="level")
    tooltip = [
        alt.Tooltip("run:N"),
        alt.Tooltip("level:Q"),
        alt.Tooltip("pm:Q", title="weights remaining (%)", format=".4~g"),
        alt.Tooltip("layer:N"),
        alt.Tooltip("pct:Q", title="layer kept (%)", format=".4~g"),
        alt.Tooltip("kept:Q", format=",.0f"),
        alt.Tooltip("total:Q", format=","),
        alt.Tooltip("n:Q", title="n (tickets)"),
        alt.Tooltip("empty:Q", title="tickets emptying it"),
    ]
    rect = base.mark_rect().encode(
        x=x,
        y=y,
        color=alt.Color(
            "shade:Q",
            title="kept (%)",
            scale=alt.Scale(type="log", scheme="viridis", domainMax=100),
            legend=alt.Legend(values=[v for v in LEGEND_PERCENTS if v >= lowest] or [100]),
        ),
        stroke=alt.condition("datum.empty > 0", alt.value("red"), alt.value(None)),
        strokeWidth=alt.condition("datum.empty > 0", alt.value(2), alt.value(0)),
        tooltip=tooltip,
    )
    text = base.mark_text(fontSize=10).encode(
        x=x,
        y=y,
        text=alt.Text("pct:Q", format=".3~g"),
        color=alt.condition("datum.pct > 20", alt.value("black"), alt.value("white")),
        tooltip=tooltip,
    )
    width = max(180, min(70 * layers, 1100))
    chart = alt.layer(rect, text).properties(width=width, height=max(120, 18 * levels))
    if runs > 1:
        chart = chart.facet(row=alt.Row("run:N", title=None), data=alt.Data(name="layers"))
    return chart.properties(title="Weights remaining per layer (tickets)")


# -- HTML -----------------------------------------------------------------------------------


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]], classes=None) -> str:
    """An HTML table; `classes` gives each row's cells' CSS classes ("" for none)."""
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = []
    for i, row in enumerate(rows):
        marks = classes[i] if classes else [""] * len(row)
        tds = "".join(
            f'<td class="{c}">{_e(v)}</td>' if c else f"<td>{_e(v)}</td>"
            for v, c in zip(row, marks, strict=True)
        )
        body.append(f"<tr>{tds}</tr>")
    table = f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"
    return f'<div class="wide">{table}</div>'


def _mark(stat: report.Stat | None) -> str:
    if stat is None:
        return ""
    return "diverged" if stat.diverged else "collapsed" if stat.collapsed else ""


def levels_html(run: _Run) -> str:
    """A run's per-level table as `lt show` prints it (`report.format_stat`,
    `report.format_count`), with the cells whose numbers leave out diverged cells (red) or
    include collapsed ones (magenta) marked, then the legend and notes."""
    summary = run.summary
    kinds = list(dict.fromkeys(k for row in summary for k in row["members"]))
    headers = ["level", "remaining %"]
    for kind in kinds:
        headers += [f"{kind} n", f"{kind} early-stop it", f"{kind} acc @ES %", f"{kind} final %"]
        headers += (
            [f"{kind} instability pts"]
            if any("instability" in row["members"].get(kind, {}) for row in summary)
            else []
        )
    rows, classes, stats = [], [], []
    for row in summary:
        cells, marks = [str(row["level"]), f"{row['percent_remaining']:.1f}"], ["", ""]
        for kind in kinds:
            member = row["members"].get(kind, {})
            count = member.get("early_stop_iter")
            stats.append(count)
            cells += [
                report.format_count(count),
                report.format_stat(count, digits=0),
                report.format_stat(member.get("early_stop_test_acc"), 100),
                report.format_stat(member.get("final_test_acc"), 100),
            ]
            marks += [_mark(count)] * 4
            if any("instability" in r["members"].get(kind, {}) for r in summary):
                cells.append(report.format_stat(member.get("instability"), 100))
                marks.append(_mark(member.get("instability")))
        rows.append(cells)
        classes.append(marks)
    notes = [
        *report.legend(stats),
        *report.grouping_notes(run.cells),
        *report.collapse_notes(run.cells),
    ]
    return _table(headers, rows, classes) + "".join(f'<p class="note">{_e(n)}</p>' for n in notes)


def marked_cells_html(run: _Run) -> str:
    """Every diverged or collapsed cell of a run, one row each (empty where there is none)."""
    rows, classes = [], []
    for c in sorted(run.cells, key=lambda c: (c["level"], c["replicate"], c["member"])):
        diverged, emptied = report.is_diverged(c), report.collapsed_layers(c)
        if diverged or emptied:
            what = "diverged" if diverged else "collapsed"
            rows.append(
                [str(c["level"]), str(c["replicate"]), c["member"], what, "; ".join(emptied) or "-"]
            )
            classes.append([what] * 5)
    if not rows:
        return '<p class="note">no diverged or collapsed cells</p>'
    return _table(["level", "replicate", "member", "state", "emptied layers"], rows, classes)


def hyperparameters_html(runs: Sequence[_Run]) -> str:
    """Every run's hyperparameters (`diff.flatten` of the stored descriptor) side by side,
    fields that differ from the first run marked, then each run's differences as `lt diff`
    writes them."""
    flats = [diff.flatten(run.full) for run in runs]
    fields = list(dict.fromkeys(f for flat in flats for f in flat))
    rows, classes = [], []
    for f in fields:
        values = [flat.get(f, diff.MISSING) for flat in flats]
        rows.append(
            [
                f,
                *(
                    "-" if v is diff.MISSING else json.dumps(v) if not isinstance(v, str) else v
                    for v in values
                ),
            ]
        )
        base = values[0]
        classes.append(
            [
                "",
                "",
                *(
                    "differs"
                    if (v is diff.MISSING) != (base is diff.MISSING) or not diff._same(v, base)
                    else ""
                    for v in values[1:]
                ),
            ]
        )
    parts = [_table(["field", *(r.label for r in runs)], rows, classes)]
    for run in runs[1:]:
        found = diff.differences(runs[0].full, run.full)
        parts.append(
            f"<h4>{_e(runs[0].label)} → {_e(run.label)}</h4><pre>{_e(diff.text(found))}</pre>"
        )
    return "".join(parts)


def check_figure(figure: str | None) -> None:
    """Refuses a `figure` that `lt reproduce` does not know.

    Raises:
      UsageError: `figure` is not None and not in `ltcli.results.reproduce.FIGURES`.
    """
    from ltcli.results import reproduce

    if figure is not None and figure not in reproduce.FIGURES:
        known = ", ".join(reproduce.FIGURES)
        raise UsageError(f"--figure {figure}: unknown; known figures: {known}")


def _figure_of(run: _Run) -> tuple[str, str | None] | None:
    """(figure, budget) for a run `lt reproduce` made (its alias ``reproduce-FIGURE-BUDGET``)."""
    from ltcli.results import reproduce

    for name in run.meta.get("names", []):
        for figure in reproduce.FIGURES:
            for budget in reproduce.BUDGETS:
                if name == f"reproduce-{figure}-{budget}":
                    return figure, budget
    return None


def claims_html(run: _Run, figure: str | None) -> str | None:
    """The paper's claims checked on a run, as `lt reproduce` prints them
    (`ltcli.results.reproduce`): for a run `lt reproduce` made, or any run with `figure`
    named; None for other runs."""
    from ltcli.results import reproduce

    found = _figure_of(run)
    if figure is None and found is None:
        return None
    name = figure or found[0]
    cells = run.cells
    if found is not None and found[0] == name:
        cells = reproduce.protocol_cells(cells, reproduce.protocol(name, found[1]).spec)
    t = reproduce.Measurements(cells)
    results = reproduce.evaluate(name, cells)
    headers, rows = reproduce.claim_rows(results)
    verdicts = {reproduce.HELD: "held", reproduce.NOT_HELD: "not-held"}
    classes = [[""] * 5 + [verdicts.get(r.verdict, "not-reached")] for r in results]
    meta = reproduce.paper_data()["paper"]
    where = reproduce.paper_data()["figures"][name]["source"]["where"]
    claims = "".join(f"<li>{_e(r.claim['text'])}</li>" for r in results)
    notes = reproduce.claims_table(name, results, t).split("\n\n")[-1].splitlines()
    return (
        f"<h3>Claims of {_e(meta['short'])} (arXiv:{_e(meta['arxiv'])}), {_e(where)}: "
        f"{_e(run.label)}</h3><ol>{claims}</ol>"
        + _table(headers, rows, classes)
        + "".join(f'<p class="note">{_e(n)}</p>' for n in notes)
    )


STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:0 2em 3em;color:#222}
h1{font-size:1.5em;margin-top:1em}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;
margin-top:1.6em}nav a{margin-right:1em}table{border-collapse:collapse;font-size:13px;
margin:.5em 0}td,th{border:1px solid #ddd;padding:2px 6px;text-align:right}
td:first-child,th:first-child{text-align:left}th{background:#f4f4f4}
td.diverged{background:#fdd}td.collapsed{background:#fcf}td.differs{background:#ffe7a8}
td.held{background:#d8f5d8}td.not-held{background:#fdd}td.not-reached{background:#eee}
.note{color:#555;font-size:13px;margin:.2em 0}.charts{display:flex;flex-wrap:wrap;gap:1.5em}
.chart{min-height:120px}.wide{overflow-x:auto}td{white-space:nowrap}.error{color:#b00;font-weight:bold}pre{font-size:12px}
.vega-bindings{font-size:13px;margin:.3em 0}.vega-bindings label{margin-right:1em}
"""

SCRIPT = """
(function () {
  window.ltErrors = [];
  window.addEventListener("error", function (e) { window.ltErrors.push(String(e.message)); });
  var data = JSON.parse(document.getElementById("lt-data").textContent);
  var charts = JSON.parse(document.getElementById("lt-charts").textContent);
  function rows(columns) {
    var keys = Object.keys(columns), n = keys.length ? columns[keys[0]].length : 0, out = [];
    for (var i = 0; i < n; i++) {
      var row = {};
      for (var k = 0; k < keys.length; k++) row[keys[k]] = columns[keys[k]][i];
      out.push(row);
    }
    return out;
  }
  window.ltViews = {};
  var jobs = charts.map(function (chart) {
    var spec = chart.spec;
    spec.datasets = spec.datasets || {};
    chart.data.forEach(function (name) { spec.datasets[name] = rows(data[name]); });
    var el = document.getElementById("chart-" + chart.name);
    return vegaEmbed(el, spec, {renderer: "svg", actions: false}).then(function (result) {
      window.ltViews[chart.name] = result.view;
    }, function (err) {
      el.innerHTML = '<p class="error">chart failed: ' + String(err) + "</p>";
      throw err;
    });
  });
  Promise.all(jobs).then(function () { document.body.dataset.ready = "ok"; },
    function (err) {
      console.error(err);
      window.ltErrors.push(String(err));
      document.body.dataset.ready = "error";
    });
})();
"""


def _json_script(value: Any) -> str:
    """`value` as JSON safe inside a ``<script>`` element."""
    text = json.dumps(value, separators=(",", ":"), allow_nan=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


class _Page:
    def __init__(self) -> None:
        self.sections: list[tuple[str, str, str]] = []  # (anchor, title, html)
        self.charts: list[dict[str, Any]] = []
        self.data: dict[str, dict[str, list[Any]]] = {}

    def chart(self, name: str, chart: Any, data: Sequence[str], about: str = "") -> str:
        spec = chart.to_dict(validate=VALIDATE_SPECS)
        self.charts.append({"name": name, "spec": spec, "data": list(data)})
        note = f'<p class="note">{_e(about)}</p>' if about else ""
        chart_div = f'<div class="chart" id="chart-{name}" data-chart="{name}"></div>'
        return f'<div class="chart-box">{note}{chart_div}</div>'

    def section(self, anchor: str, title: str, body: str) -> None:
        self.sections.append((anchor, title, body))


def build(store: Store, run_ids: Sequence[str], *, figure: str | None = None) -> str:
    """The report page of `run_ids` (each once, in order; the first is the reference of the
    differences) as one HTML document with everything inlined.

    Args:
      store: the store holding the runs.
      run_ids: one or more run ids.
      figure: a figure of `ltcli.results.reproduce.FIGURES` whose claims to check on every
        run; by default only runs `lt reproduce` made (by their alias) get a claims table.

    Raises:
      UsageError: no runs, a run without finished cells, or an unknown figure.
    """
    check_figure(figure)
    ids = list(dict.fromkeys(run_ids))
    if not ids:
        raise UsageError("report: name at least one run")
    runs = [_Run(store, r, label) for r, label in zip(ids, _labels(store, ids), strict=True)]
    for run in runs:
        if not run.cells:
            raise UsageError(f"run {run.label}: no finished cells to report")
    return _build(runs, figure)


def _order(table: _Columns, column: str = "series") -> list[str]:
    """The values of `column` in the order the rows first give them (each run's tickets
    first, as `report.by_level_and_kind` orders member kinds): the colours' order."""
    return list(dict.fromkeys(table.columns[column]))


def _ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def _flags(
    table: _Columns, metrics: Sequence[str] | None = None, kinds: Sequence[str] | None = None
) -> dict[str, bool]:
    """Whether any row of `table` (those of `metrics` and `kinds`, or all) has diverged or
    collapsed cells: `stat_chart` draws their markers only then."""
    cols = table.columns
    rows = range(len(table))
    if metrics is not None:
        rows = [i for i in rows if cols["metric"][i] in metrics]
    if kinds is not None:
        rows = [i for i in rows if cols["kind"][i] in kinds]
    return {
        "diverged": any(cols["diverged"][i] for i in rows),
        "collapsed": any(cols["collapsed"][i] for i in rows),
    }


PM_ABOUT = (
    "Mean over replicates (and control indices) with a band of ± one sample std or min to max. "
    "Red crosses at the top: levels with diverged cells (left out of every mean); magenta rings: "
    "means that include collapsed cells (a layer emptied). Click a legend entry to show one "
    "series (shift-click for more, double-click to reset); drag to pan, wheel to zoom. "
    "Stability and spawned copies are in the instability charts."
)
ACCURACY_CHOICES = list(ACCURACY_FIELDS.items())
NO_INSTABILITY = (
    "no instability data: run with --controls stability:1 (tickets) or --spawn 0,500,... "
    "(the dense network)"
)


def _build(runs: list[_Run], figure: str | None) -> str:
    page = _Page()
    summary = summary_data(runs)
    page.data["summary"] = summary.columns
    ticks = _pm_ticks([row["percent_remaining"] for run in runs for row in run.summary])
    claims = [c for run in runs if (c := claims_html(run, figure))]
    if claims:  # first: what a reproduction is for
        page.section("claims", "The paper's claims", "".join(claims))
    _pm_section(page, summary, ticks)
    _curve_section(page, runs)
    _instability_section(page, runs, summary, ticks)
    if any(run.method != "magnitude" for run in runs):
        _at_init_section(page, summary, ticks)
    _layer_section(page, runs)
    for run in runs:
        page.section(f"run-{run.run_id[:12]}", f"Run {run.label}", run_html(run))
    page.section("hyperparameters", "Hyperparameters", hyperparameters_html(runs))
    return _document(runs, page)


def _pm_section(page: _Page, summary: _Columns, ticks: list[float]) -> None:
    accuracy = stat_chart(
        "summary",
        title="Test accuracy against weights remaining",
        y_title="test accuracy (%)",
        fmt=".2f",
        metric=ACCURACY_CHOICES,
        ticks=ticks,
        order=_order(summary),
        **_flags(summary, list(ACCURACY_FIELDS)),
    )
    early = stat_chart(
        "summary",
        title="Early-stop iteration against weights remaining",
        subtitle="the iteration of minimum validation loss",
        y_title="early-stop iteration",
        fmt=",.0f",
        metric="early_stop_iter",
        ticks=ticks,
        order=_order(summary),
        **_flags(summary, ["early_stop_iter"]),
    )
    page.section(
        "pm",
        "Against weights remaining",
        f'<p class="note">{_e(PM_ABOUT)}</p><div class="charts">'
        + page.chart("accuracy", accuracy, ["summary"])
        + page.chart("early_stop", early, ["summary"])
        + "</div>",
    )


def _curve_section(page: _Page, runs: list[_Run]) -> None:
    curves, stride = curve_data(runs)
    page.data["curves"] = curves.columns
    levels = {row["level"]: row["percent_remaining"] for run in runs[::-1] for row in run.summary}
    shown = "every evaluation" if stride == 1 else f"every {_ordinal(stride)} evaluation"
    subtitle = f"mean over the level's cells of each kind, ± std; {shown}"
    page.section(
        "curves",
        "Training curves",
        page.chart(
            "curves",
            curve_chart(levels, subtitle, _order(curves)),
            ["curves"],
            "Pick a level; hover for the evaluation nearest the pointer.",
        ),
    )


def _instability_section(
    page: _Page, runs: list[_Run], summary: _Columns, ticks: list[float]
) -> None:
    charts = []
    if "instability" in summary.columns["metric"]:
        chart = stat_chart(
            "summary",
            title="Instability of tickets against weights remaining",
            subtitle="stability copies: highest test error on the linear path minus the mean "
            "of the ends' errors (Frankle et al. 2020)",
            y_title="instability (points)",
            fmt=".2f",
            metric="instability",
            ticks=ticks,
            rule=STABLE_POINTS,
            order=_order(summary),
            **_flags(summary, ["instability"]),
        )
        charts.append(page.chart("instability_pm", chart, ["summary"]))
    spawn = spawn_data(runs)
    if len(spawn):
        page.data["spawn"] = spawn.columns
        ks = sorted(set(spawn.columns["k"]))
        wide = ks[-1] >= 100 * max(ks[1] if ks[0] == 0 and len(ks) > 1 else ks[0], 1)
        chart = stat_chart(
            "spawn",
            title="Instability of the dense network against the spawn iteration",
            subtitle="spawned copies of level 0",
            y_title="instability (points)",
            fmt=".2f",
            metric=None,
            x_field="k",
            x_title="spawn iteration k",
            x_scale="symlog" if wide else "linear",
            rule=STABLE_POINTS,
            order=_order(spawn),
            **_flags(spawn),
        )
        charts.append(page.chart("instability_k", chart, ["spawn"]))
    for measure, (title, subtitle, y_title) in LEVEL_MEASURES.items():
        metric = f"level_{measure}"
        if metric in summary.columns["metric"]:
            chart = stat_chart(
                "summary",
                title=title,
                subtitle=subtitle,
                y_title=y_title,
                fmt=".2f",
                metric=metric,
                ticks=ticks,
                order=_order(summary),
                **_flags(summary, [metric]),
            )
            charts.append(page.chart(metric, chart, ["summary"]))
    body = f'<div class="charts">{"".join(charts)}</div>'
    page.section(
        "instability", "Instability", body if charts else f'<p class="note">{NO_INSTABILITY}</p>'
    )


def _at_init_section(page: _Page, summary: _Columns, ticks: list[float]) -> None:
    by_method = "(datum.method == 'magnitude' ? 'IMP' : datum.method) + ': ' + datum.run"
    chart = stat_chart(
        "summary",
        title="Pruning at initialization against IMP",
        subtitle="tickets of each run, by its method",
        y_title="test accuracy (%)",
        fmt=".2f",
        metric=ACCURACY_CHOICES,
        ticks=ticks,
        series="by_method",
        transforms=[
            {"filter": "datum.kind == 'ticket'"},
            {"calculate": by_method, "as": "by_method"},
        ],
        **_flags(summary, list(ACCURACY_FIELDS), ["ticket"]),
    )
    page.section("at-init", "Pruning at initialization", page.chart("at_init", chart, ["summary"]))


def _layer_section(page: _Page, runs: list[_Run]) -> None:
    layers = layer_data(runs)
    page.data["layers"] = layers.columns
    kept = [v for v in layers.columns["shade"] if v]
    chart = layer_chart(
        len(runs),
        max(len(run.summary) for run in runs),
        len(set(layers.columns["layer"])),
        min(kept, default=100),
    )
    about = (
        "Percent of each prunable layer's weights the level's tickets keep (their mean); a red "
        "outline marks a layer some ticket empties."
    )
    page.section(
        "layers", "Weights remaining per layer", page.chart("layers", chart, ["layers"], about)
    )


def run_html(run: _Run) -> str:
    """A run's section: what it is, its per-level table and its diverged and collapsed cells."""
    names = ", ".join(run.meta.get("names", [])) or "-"
    experiment = run.meta.get("experiment", "?")
    lines = [f"run {run.run_id} · experiment {experiment} · names {names} · {len(run.cells)} cells"]
    if why := outdated(run.record):
        lines.append(f"note: {why}; a spec now makes a new run")
    head = "".join(f'<p class="note">{_e(line)}</p>' for line in lines)
    cells = "<h4>Diverged and collapsed cells</h4>" + marked_cells_html(run)
    return head + levels_html(run) + cells


def _document(runs: list[_Run], page: _Page) -> str:
    labels = ", ".join(run.label for run in runs)
    nav = "".join(f'<a href="#{a}">{_e(t)}</a>' for a, t, _ in page.sections)
    body = "".join(f'<section id="{a}"><h2>{_e(t)}</h2>{b}</section>' for a, t, b in page.sections)
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>lt report: {_e(labels)}</title><style>{STYLE}</style></head><body>"
        f'<h1>lt report: {_e(labels)}</h1><p class="note">{len(runs)} run(s), written {stamp} '
        "by lt report; opens offline (every library and number is in this file)</p>"
        f"<nav>{nav}</nav>{body}"
        f'<script type="application/json" id="lt-data">{_json_script(page.data)}</script>'
        f'<script type="application/json" id="lt-charts">{_json_script(page.charts)}</script>'
        f"<script>{_safe_js(javascript_bundle())}</script><script>{SCRIPT}</script></body></html>\n"
    )


def _safe_js(code: str) -> str:
    """`code` safe inside a ``<script>`` element (no ``</script`` ends it early)."""
    return code.replace("</script", "<\\/script")


def write(store: Store, run_ids: Sequence[str], path: Path, *, figure: str | None = None) -> Path:
    """Writes `build`'s page to `path` atomically (readers see the old page or the new one)."""
    atomic.write_bytes(Path(path), build(store, run_ids, figure=figure).encode("utf-8"))
    return Path(path)


class Rewrite(Progress):
    """A progress receiver that rewrites the report of `run_ids` at `path` each time the run
    stores a group of cells (after every level), once they are on disk.

    A report that cannot be written (a full disk, a run without cells yet) does not stop the
    training: `note` is told why, and the next level tries again.
    """

    def __init__(
        self,
        store: Store,
        run_ids: Sequence[str],
        path: Path,
        note: Callable[[str], None] = lambda text: None,
        figure: str | None = None,
    ):
        self.store, self.run_ids, self.path, self.note = store, list(run_ids), Path(path), note
        self.figure = figure
        self.writes = 0

    def stored(self, cells: list[CellKey], flush: Callable[[], None]) -> None:
        flush()
        self.rewrite()

    def rewrite(self) -> None:
        """Writes the report now."""
        try:
            write(self.store, self.run_ids, self.path, figure=self.figure)
            self.writes += 1
        except (OSError, UsageError) as err:
            self.note(f"note: report {self.path} not written: {err}")
