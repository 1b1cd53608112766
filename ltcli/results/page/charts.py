"""The report page's charts: Vega-Lite specs built with altair, each reading a named data set
of `ltcli.results.page.data` (the page fills it in the browser), drawn as SVG by vega-embed.

Hovering a point shows its numbers with ``n`` and the std; clicking a legend entry toggles a
series (shift-click for several); dragging pans and the mouse wheel zooms.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

STABLE_POINTS = 2.0
"""The instability below which a network is called stable (Frankle et al. 2020), as
`ltcli.results.plot_instability` draws it."""
ACCURACY_FIELDS = {
    "early_stop_test_acc": "test accuracy at early stop",
    "final_test_acc": "test accuracy at the end of training",
}
CHART_WIDTH, CHART_HEIGHT = 460, 280


def vega_lite_version() -> str:
    """The Vega-Lite version (``major.minor``) altair writes specs for."""
    import altair as alt

    return ".".join(alt.SCHEMA_VERSION.lstrip("v").split(".")[:2])


def pm_ticks(pms: list[float]) -> list[float]:
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
