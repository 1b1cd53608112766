"""`ltcli.results.drawing`: a figure of panels as a valid Vega-Lite spec whose legends list
every series, drawn by vl-convert at exactly the size asked in each format it writes."""

from __future__ import annotations

import io

import altair as alt
import numpy as np
import pytest
from PIL import Image

from ltcli.core.errors import UsageError
from ltcli.results import drawing

pytestmark = pytest.mark.unit


def figure(size=(900, 300), dpi=100) -> drawing.Figure:
    bars = drawing.Series("ticket", [100, 50, 25], [97.0, 98.0, 96.0], drawing.color(0))
    bars.marker, bars.lo, bars.hi = "o", [96.0, 97.5, 95.0], [98.0, 98.5, 97.0]
    marks = drawing.Series("2 diverged cells", [25], [None], "red", linestyle=None, marker="x")
    ring = drawing.Series("1 collapsed cell", [50], [98.0], "#bf00bf", None, "o", filled=False)
    star = drawing.Series("paper", [10], [97.5], "black", linestyle=None, marker="*")
    rule = drawing.Series("2 points", [0], [2.0], "grey", linestyle=":", rule=True)
    levels = drawing.Panel("accuracy", "weights remaining (%)", "test accuracy (%)")
    levels.series = [bars, marks, ring, star, rule]
    levels.x_scale, levels.x_domain, levels.ticks = "log", (115.0, 8.0), [100, 50, 25, 10]
    curve = drawing.Series("100.0%", [0, 100, 200], [10.0, 80.0, 90.0], drawing.viridis(0))
    curves = drawing.Panel("curves", "iteration", "test accuracy (%)", [curve])
    return drawing.Figure([curves, levels], size, dpi)


def test_the_spec_is_valid_vega_lite_and_its_legends_list_every_series():
    fig = figure()
    spec = drawing.spec(fig, 300, 200)
    alt.HConcatChart.from_dict(spec, validate=True)  # the schema of altair's Vega-Lite
    curves, levels = spec["hconcat"]
    legend = [
        layer["encoding"]["color"]["scale"]
        for layer in levels["layer"]
        if "color" in layer.get("encoding", {})
    ]
    assert legend[0]["domain"] == [s.label for s in fig.panels[1].series]
    assert legend[0]["range"] == [s.color for s in fig.panels[1].series]
    x = next(layer["encoding"]["x"] for layer in levels["layer"] if "x" in layer["encoding"])
    assert x["scale"] == {"type": "log", "nice": False, "zero": False} | {
        "domain": [8.0, 115.0],
        "reverse": True,
    }
    assert x["axis"]["values"] == [100, 50, 25, 10]
    rows = [row for layer in levels["layer"] for row in layer.get("data", {}).get("values", [])]
    assert {"x": 50, "y": 98.0, "label": "ticket", "lo": 97.5, "hi": 98.5} in rows
    assert curves["layer"][0]["data"]["values"][1] == {"x": 100, "y": 80.0, "label": "100.0%"}


@pytest.mark.parametrize("size, dpi", [((900, 300), 100), ((640, 360), 150), ((1500, 500), 72)])
def test_a_png_is_exactly_the_size_asked_at_any_dpi(size, dpi):
    png = Image.open(io.BytesIO(drawing.image(figure(size, dpi), "png")))
    assert png.format == "PNG" and png.size == size
    dark = np.asarray(png.convert("L")) < 200
    assert dark.mean() > 0.01  # lines and text were drawn


def test_each_format_vl_convert_writes(tmp_path):
    heads = {"pdf": b"%PDF", "svg": b"<svg", "jpg": b"\xff\xd8", "jpeg": b"\xff\xd8"}
    for suffix, head in heads.items():
        path = tmp_path / f"figure.{suffix.upper()}"
        drawing.save(figure, path)
        assert path.read_bytes().startswith(head), suffix
    assert Image.open(tmp_path / "figure.JPG").size == (900, 300)
    with pytest.raises(UsageError, match=r"unknown image type; use one of \.png"):
        drawing.save(figure, tmp_path / "figure.eps")
    assert not (tmp_path / "figure.eps").exists()


def test_colours_are_matplotlibs():
    assert drawing.color(0) == "#1f77b4" and drawing.color(10) == "#1f77b4"
    assert drawing.viridis(0) == "#440154" and drawing.viridis(1) == "#fde725"
    assert drawing.viridis(0.55) == "#229c88"  # halfway between the 0.5 and 0.6 stops
    assert drawing.shade("#000000", 0.5) == "#808080" and drawing.shade("#1f77b4", 0) == "#1f77b4"
