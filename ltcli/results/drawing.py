"""Static figures of panels side by side, drawn as Vega-Lite specs by vl-convert (the engine the
report's browser charts run on), for `lt plot` and `lt reproduce`.

A `Figure` is data: each `Panel` holds its `Series` (a line, points, error bars, marks at the
top of the panel, a horizontal rule), each with its legend entry, so what a figure shows can
be read back without drawing it. `save` turns it into a Vega-Lite spec and an image of exactly
``width x height`` pixels: the layout is measured once at `BASE_DPI` and the panels sized so
the whole fits; `dpi` scales text and lines, not the image size.
"""

from __future__ import annotations

import dataclasses
import io
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ltcli.core import atomic
from ltcli.core.errors import UsageError

BASE_DPI = 100
"""The pixels per inch at which the spec's sizes are pixels (vl-convert's scale 1)."""
FORMATS = {"png": "png", "svg": "svg", "pdf": "pdf", "jpg": "jpeg", "jpeg": "jpeg"}
"""The file types vl-convert writes, by suffix."""
TAB10 = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2")
TAB10 += ("#7f7f7f", "#bcbd22", "#17becf")
"""The cycle of series colours (Tableau 10, as matplotlib's C0..C9)."""
VIRIDIS = ("#440154", "#482475", "#414487", "#355f8d", "#2a788e", "#21918c", "#22a884")
VIRIDIS += ("#44bf70", "#7ad151", "#bddf26", "#fde725")
"""Viridis at 0, 0.1, ..., 1."""
STAR = "M0,-1L0.29,-0.4L0.95,-0.31L0.48,0.15L0.59,0.81L0,0.5L-0.59,0.81L-0.48,0.15L-0.95,-0.31"
STAR += "L-0.29,-0.4Z"
SHAPES = {"o": "circle", "s": "square", "^": "triangle-up", "d": "diamond", "*": STAR}
SHAPES |= {"x": "M-1,-1L1,1M-1,1L1,-1"}
"""Vega shapes by matplotlib's marker letters (``x`` and ``*`` as SVG paths)."""
DASHES = {"-": [], "--": [6, 3], ":": [2, 2]}
MIN_PANEL = 40.0
"""The narrowest or lowest a panel is drawn (pixels at `BASE_DPI`) when its axes crowd it."""
LEGEND = {"fillColor": "rgba(255,255,255,0.8)", "strokeColor": "#ccc", "padding": 4}
LEGEND |= {"labelFontSize": 9, "titleFontSize": 9, "symbolSize": 40, "rowPadding": 1}
"""A legend inside its panel (so it takes none of the image), as matplotlib draws one."""


@dataclasses.dataclass
class Series:
    """One thing drawn on a panel, with its legend entry.

    Attributes:
      label: the legend entry ("" for none).
      x, y: the points; a None y puts the point at the top of the panel.
      color: a CSS colour.
      linestyle: ``-``, ``--``, ``:``, or None for markers only.
      marker: a key of `SHAPES`, or None.
      filled: a filled marker, or a ring.
      markersize: the marker's width in points.
      lo, hi: each point's error bar ends (None: no error bars).
      rule: a horizontal line at ``y[0]`` across the panel instead.
    """

    label: str
    x: list[float]
    y: list[float | None]
    color: str
    linestyle: str | None = "-"
    marker: str | None = None
    filled: bool = True
    markersize: float = 4.0
    lo: list[float] | None = None
    hi: list[float] | None = None
    rule: bool = False


@dataclasses.dataclass
class Panel:
    """A chart: its titles, x scale (``linear`` or ``log``; `x_domain` in the order drawn, so
    (100, 1) puts 100 on the left), tick values and series; its legend sits inside it, in
    `legend_corner` (``top-left``, ``bottom-right``, ...) on a translucent white box."""

    title: str
    x_title: str
    y_title: str
    series: list[Series] = dataclasses.field(default_factory=list)
    x_scale: str = "linear"
    x_domain: tuple[float, float] | None = None
    ticks: list[float] | None = None
    x_format: str = "~s"
    legend_title: str | None = None
    legend_corner: str = "bottom-left"

    def labelled(self, text: str) -> list[Series]:
        """The series whose label contains `text`."""
        return [s for s in self.series if text in s.label]


@dataclasses.dataclass
class Figure:
    """Panels side by side in an image of `size` pixels at `dpi`."""

    panels: list[Panel]
    size: tuple[int, int]
    dpi: int


def color(i: int) -> str:
    return TAB10[i % len(TAB10)]


def viridis(t: float) -> str:
    """Viridis at `t` in [0, 1], interpolated between `VIRIDIS`' stops."""
    t = min(max(t, 0.0), 1.0) * (len(VIRIDIS) - 1)
    i = min(int(t), len(VIRIDIS) - 2)
    a, b = (_rgb(VIRIDIS[j]) for j in (i, i + 1))
    return _hex([u + (v - u) * (t - i) for u, v in zip(a, b, strict=True)])


def shade(hex_color: str, amount: float) -> str:
    """`hex_color` mixed with white: `amount` 0 keeps it, 1 is white."""
    return _hex([c + (1 - c) * amount for c in _rgb(hex_color)])


def _rgb(hex_color: str) -> list[float]:
    return [int(hex_color[i : i + 2], 16) / 255 for i in (1, 3, 5)]


def _hex(rgb: Sequence[float]) -> str:
    return "#" + "".join(f"{round(255 * c):02x}" for c in rgb)


def _layers(series: Series, legend: dict[str, Any]) -> list[dict[str, Any]]:
    """The Vega-Lite layers drawing `series`, its colour and shape keyed by its label (so the
    panel's legend lists it)."""
    rows = [
        {"x": x, "y": y, "label": series.label}
        | ({"lo": series.lo[i], "hi": series.hi[i]} if series.lo is not None else {})
        for i, (x, y) in enumerate(zip(series.x, series.y, strict=True))
    ]
    data = {"values": rows}
    x = {"field": "x", "type": "quantitative"}
    y = {"field": "y", "type": "quantitative"}
    top = {"value": 8}  # pixels from the panel's top
    keyed = {"color": legend["color"]} if series.label else {}
    fixed = {"color": series.color}
    if series.rule:
        dash = DASHES[series.linestyle or "-"]
        rule = {"type": "rule", "strokeDash": dash} | fixed
        return [{"data": data, "mark": rule, "encoding": {"y": y} | keyed}]
    layers = []
    if series.lo is not None:
        bar = {"x": x, "y": {"field": "lo", "type": "quantitative"}, "y2": {"field": "hi"}}
        layers.append({"data": data, "mark": {"type": "rule"} | fixed, "encoding": bar})
        for end in ("lo", "hi"):
            cap = {"x": x, "y": {"field": end, "type": "quantitative"}}
            tick = {"type": "tick", "orient": "horizontal", "size": 6} | fixed
            layers.append({"data": data, "mark": tick, "encoding": cap})
    if series.linestyle is not None:
        line = {"type": "line", "strokeDash": DASHES.get(series.linestyle, [2, 2])} | fixed
        layers.append({"data": data, "mark": line, "encoding": {"x": x, "y": y} | keyed})
    if series.marker is not None:
        shape = SHAPES[series.marker]
        stroked = series.marker == "x" or not series.filled
        point = {"type": "point", "shape": shape, "filled": not stroked, "opacity": 1}
        point |= {"size": series.markersize**2 * 2, "strokeWidth": 1.5} | fixed
        at = {"x": x, "y": top if any(v is None for v in series.y) else y}
        shaped = keyed | ({"shape": legend["shape"]} if series.label else {})
        layers.append({"data": data, "mark": point, "encoding": at | shaped})
    return layers


def _panel_spec(panel: Panel, width: float, height: float) -> dict[str, Any]:
    shown = [s for s in panel.series if s.label]
    labels = list(dict.fromkeys(s.label for s in shown))
    first = {s.label: s for s in reversed(shown)}
    box = {"title": panel.legend_title, "orient": panel.legend_corner} | LEGEND
    legend = {
        "color": {
            "field": "label",
            "type": "nominal",
            "scale": {"domain": labels, "range": [first[k].color for k in labels]},
            "legend": box,
        },
        "shape": {
            "field": "label",
            "type": "nominal",
            "scale": {
                "domain": labels,
                "range": [SHAPES.get(first[k].marker or "", "stroke") for k in labels],
            },
            "legend": box,
        },
    }
    layers = [layer for s in panel.series for layer in _layers(s, legend)]
    scale: dict[str, Any] = {"type": panel.x_scale, "nice": False, "zero": False}
    if panel.x_domain is not None:
        low, high = panel.x_domain
        scale |= {"domain": sorted((low, high)), "reverse": low > high}
    axis: dict[str, Any] = {"title": panel.x_title, "format": panel.x_format}
    if panel.ticks is not None:
        axis |= {"values": panel.ticks}
    for layer in layers:
        encoding = layer["encoding"]
        if "x" in encoding:
            encoding["x"] = encoding["x"] | {"scale": scale, "axis": axis}
        if "field" in encoding.get("y", {}):
            encoding["y"] = encoding["y"] | {"scale": {"zero": False}, "title": panel.y_title}
    return {"title": panel.title, "width": width, "height": height, "layer": layers}


def spec(figure: Figure, width: float, height: float) -> dict[str, Any]:
    """The Vega-Lite spec of `figure` with each panel `width x height` (pixels at
    `BASE_DPI`)."""
    return {
        "background": "white",
        "hconcat": [_panel_spec(p, width, height) for p in figure.panels],
        "resolve": {"scale": {"color": "independent", "shape": "independent"}},
        "config": {"legend": {"labelLimit": 400}},
    }


def fitted(figure: Figure) -> tuple[dict[str, Any], float]:
    """The spec of `figure` sized to fill `figure.size` pixels at its dpi, and the scale to
    draw it at: the axes and titles are measured once at a trial panel size, the
    rest shared out between the panels."""
    import vl_convert

    scale = figure.dpi / BASE_DPI
    n = len(figure.panels)
    # A trial near the answer: the axes' labels depend a little on the panel's size.
    trial = (
        max(0.8 * figure.size[0] / scale / n, MIN_PANEL),
        max(0.6 * figure.size[1] / scale, MIN_PANEL),
    )
    laid_out = vl_convert.vegalite_to_scenegraph(spec(figure, *trial))  # cheaper than an image
    used = laid_out["width"], laid_out["height"]
    width = (figure.size[0] / scale - (used[0] - n * trial[0])) / n
    height = figure.size[1] / scale - (used[1] - trial[1])
    return spec(figure, max(width, MIN_PANEL), max(height, MIN_PANEL)), scale


def check_format(path: Path) -> str:
    """The vl-convert format `path`'s suffix names.

    Raises:
      UsageError: a suffix vl-convert does not write.
    """
    fmt = Path(path).suffix.lstrip(".").lower()
    if fmt not in FORMATS:
        raise UsageError(f"{path}: unknown image type; use one of .{', .'.join(FORMATS)}")
    return FORMATS[fmt]


def image(figure: Figure, fmt: str) -> bytes:
    """`figure` as an image file's bytes in `fmt` (one of `FORMATS`' values); raster images
    are exactly `figure.size` pixels (a pixel of rounding padded; a drawing whose axes make it
    too big for the size, shrunk to fit)."""
    import vl_convert
    from PIL import Image

    vl, scale = fitted(figure)
    if fmt == "svg":
        return vl_convert.vegalite_to_svg(vl).encode("utf-8")
    if fmt == "pdf":
        return vl_convert.vegalite_to_pdf(vl, scale=scale)
    png = Image.open(io.BytesIO(vl_convert.vegalite_to_png(vl, scale=scale))).convert("RGB")
    if png.size != tuple(figure.size):  # rounding, or axes too big for the size asked
        png.thumbnail(figure.size, Image.Resampling.LANCZOS)
        canvas = Image.new("RGB", figure.size, "white")
        canvas.paste(png, (0, 0))
        png = canvas
    out = io.BytesIO()
    dots = (figure.dpi, figure.dpi)
    png.save(out, format="JPEG" if fmt == "jpeg" else "PNG", dpi=dots)
    return out.getvalue()


def save(draw: Callable[[], Figure], path: Path) -> None:
    """Writes the figure `draw` makes to `path` atomically, in the format its suffix names
    (`FORMATS`).

    Raises:
      UsageError: an unknown suffix (checked before drawing).
    """
    fmt = check_format(path)
    atomic.write_bytes(Path(path), image(draw(), fmt))
