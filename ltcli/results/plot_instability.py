"""``lt plot --instability``: instability analysis figures (Frankle et al. 2020, Figures 2-4
style), drawn as Vega-Lite like `ltcli.results.plot`.

Panels, as the runs have data for them:

* test error along the linear path between a ticket and its copy (x: interpolation
  coefficient), mean over replicates: one curve per pruned level (stability copies) and one
  per spawn iteration of the dense network;
* instability (highest error on the path minus the mean of the ends, in percentage points)
  against % of weights remaining, one point per level (stability copies);
* instability against the spawn iteration k (dense copies), log-scaled when k spans decades.

Error bars are ± one sample standard deviation over replicates and copies. Copies whose mask
empties a prunable layer (collapsed: the network outputs a constant, so its instability says
nothing of what pruning found) stay in the means: a path averaging any is labelled so, and
a ring (`ltcli.results.plot.COLLAPSED_STYLE`) circles each instability point that includes any,
counted in the legend.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np

from ltcli.core.errors import UsageError
from ltcli.results import drawing, listing, report
from ltcli.results.plot import collapse_rings
from ltcli.storage.store import Store

STABLE_POINTS = 2.0
"""The paper's threshold: a network is stable when its instability is within 2 points."""


Key = tuple[str, float]


def copies(cells: list[dict[str, Any]]) -> dict[Key, list[dict[str, Any]]]:
    """The cells of `cells` that are copies with an instability record, grouped by
    ``("level", % remaining)`` for stability copies and ``("spawn", k)`` for spawned dense
    copies."""
    grouped: dict[Key, list[dict[str, Any]]] = defaultdict(list)
    for cell in cells:
        if "instability" not in cell:
            continue
        if "spawn_iteration" in cell:
            grouped["spawn", cell["spawn_iteration"]].append(cell)
        else:
            grouped["level", cell["percent_remaining"]].append(cell)
    return dict(grouped)


def paths(store: Store, run_id: str) -> dict[Key, list[dict[str, Any]]]:
    """The instability records of a run's copies, grouped as `copies` groups them."""
    grouped = copies(report.cell_metrics(store, run_id))
    return {key: [c["instability"] for c in group] for key, group in grouped.items()}


class _Run:
    """A run's label, its copies' instability records by key (as `paths`), and how many
    copies under each key collapsed (keys without any left out)."""

    def __init__(self, store: Store, run_id: str):
        self.label = listing.run_label(store, run_id)
        grouped = copies(report.cell_metrics(store, run_id))
        self.records = {key: [c["instability"] for c in group] for key, group in grouped.items()}
        self.collapsed = {
            key: n for key, group in grouped.items() if (n := sum(map(report.is_collapsed, group)))
        }


def _stats(values: list[float]) -> tuple[float, float]:
    return float(np.mean(values)), float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def _paths_panel(runs: list[_Run]) -> drawing.Panel:
    panel = drawing.Panel("Test error on the linear path", "interpolation", "test error (%)")
    panel.legend_corner = "top-left"  # errors are lowest at the ends
    panel.x_format = ".2~f"
    for r, run in enumerate(runs):
        keys = sorted(run.records, key=lambda k: (k[0], -k[1] if k[0] == "level" else k[1]))
        for j, key in enumerate(keys):
            records = run.records[key]
            errors = 100 * np.mean([rec["test_error"] for rec in records], axis=0)
            name = f"{key[1]:.3g}% remaining" if key[0] == "level" else f"spawn at k={key[1]:g}"
            name += f" ({run.collapsed[key]} collapsed)" if key in run.collapsed else ""
            prefix = f"{run.label} " if len(runs) > 1 else ""
            color = drawing.color(r * 5 + j)
            panel.series.append(
                drawing.Series(prefix + name, list(records[0]["alpha"]), errors.tolist(), color)
            )
    return panel


def _instability_panel(runs: list[_Run], kind: str) -> drawing.Panel:
    values = sorted({x for run in runs for k, x in run.records if k == kind})
    y_title = "instability: max error - mean of ends' (points)"
    if kind == "level":
        panel = drawing.Panel("Instability of IMP tickets", "weights remaining (%)", y_title)
        panel.x_scale, panel.ticks, panel.x_format = "log", values, ".3~g"
        panel.x_domain = (values[-1] * 1.15, values[0] / 1.15)  # dense on the left
        panel.legend_corner = "top-left"  # the densest tickets are the stablest
    else:
        panel = drawing.Panel("Instability of the dense network", "spawn iteration k", y_title)
        panel.legend_corner = "top-right"  # late spawns are the stablest
        if values[0] > 0 and values[-1] / values[0] >= 100:
            panel.x_scale = "log"
    rings = []
    for r, run in enumerate(runs):
        xs = sorted(k[1] for k in run.records if k[0] == kind)
        if not xs:
            continue
        stats = [_stats([100 * rec["instability"] for rec in run.records[kind, x]]) for x in xs]
        means = [m for m, _ in stats]
        panel.series.append(
            drawing.Series(
                run.label,
                xs,
                means,
                drawing.color(r),
                marker="o",
                lo=[m - s for m, s in stats],
                hi=[m + s for m, s in stats],
            )
        )
        rings += [
            (x, m, run.collapsed[kind, x])
            for x, m in zip(xs, means, strict=True)
            if (kind, x) in run.collapsed
        ]
    panel.series += collapse_rings(rings, "collapsed copy", "collapsed copies")
    panel.series.append(
        drawing.Series(
            f"{STABLE_POINTS:g} points", [0], [STABLE_POINTS], "grey", linestyle=":", rule=True
        )
    )
    return panel


def figure(store: Store, run_ids: list[str], size: tuple[int, int], dpi: int) -> drawing.Figure:
    """The instability figure of `run_ids` (`size` pixels at `dpi`).

    Raises:
      UsageError: no run has stability or spawned copies.
    """
    runs = [_Run(store, r) for r in dict.fromkeys(run_ids)]
    kinds = [
        k for k in ("level", "spawn") if any(key[0] == k for run in runs for key in run.records)
    ]
    if not kinds:
        raise UsageError(
            "no instability data: run with --controls stability:1 (IMP tickets) or "
            "--spawn 0,500,... (the dense network) first (the paths between successive "
            "levels that --barriers measures are charted by lt report)"
        )
    panels = [_paths_panel(runs), *(_instability_panel(runs, kind) for kind in kinds)]
    return drawing.Figure(panels, size, dpi)
