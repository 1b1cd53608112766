"""The report page's data: the stored runs' numbers as tidy columns, one table per chart data
set (``summary``, ``spawn``, ``curves``, ``layers``), embedded in the page as JSON; and which
runs' masks the page compares with an IMP run's (`overlaps`).

Every number comes from `ltcli.results.report` (`Stat`, `level_summary`, `summarize_cells`);
only min/max over cells and the per-evaluation curve means are computed here.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np

from ltcli.results import compare, listing, report
from ltcli.storage.store import Store

MAX_CURVE_POINTS = 250
"""A training curve on the page keeps at most this many evaluations (every k-th, and the
last), so a 500-evaluation protocol of 21 levels stays a page of a few MB at most."""
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
SCALE = {"early_stop_test_acc": 100.0, "final_test_acc": 100.0, "early_stop_iter": 1.0}
"""What each summary field is multiplied by on the page (accuracies in percent)."""


class Columns:
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


class Run:
    """One run's cells and how the page names it."""

    def __init__(self, store: Store, run_id: str, label: str):
        self.store, self.run_id, self.label = store, run_id, label
        self.record = store.descriptor(run_id)
        self.meta = store.meta(run_id)
        self.full = self.record["full"]
        self.cells = report.cell_metrics(store, run_id)
        self.summary = report.level_summary(self.cells)
        self.groups = report.by_level_and_kind(self.cells)
        self.method = self.full.get("prune", {}).get("method", "magnitude")
        # IMP: magnitude pruning, iterative (no one-shot targets)
        self.is_imp = self.method == "magnitude" and not self.full.get("prune", {}).get("one_shot")

    def series(self, kind: str, several: bool) -> str:
        return f"{self.label} · {kind}" if several else kind


def labels(store: Store, run_ids: Sequence[str]) -> list[str]:
    """`listing.sweep_labels` of each run (the swept values of a sweep's points, else the
    run's alias), made unique with the id's first digits where two runs share one."""
    named = listing.sweep_labels(store, run_ids)
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
    table: Columns,
    run: Run,
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


def summary_data(runs: Sequence[Run]) -> Columns:
    """One row per run, level, member kind and measure: `report.summarize_cells`' `Stat`
    (accuracies and instability in percent) and the min and max over the cells; measures are
    the `report.SUMMARY_FIELDS`, ``instability`` of stability copies and, where recorded, the
    tickets' ``level_barrier_above_line`` and ``level_instability`` (`LEVEL_MEASURES`)."""
    table = Columns(*SUMMARY_COLUMNS)
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


def spawn_data(runs: Sequence[Run]) -> Columns:
    """Instability of the spawned dense copies by spawn iteration k, per run: the `Stat` of
    `report.summarize_cells` over each k's copies (in percent)."""
    table = Columns(*SPAWN_COLUMNS)
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


def curve_data(runs: Sequence[Run]) -> tuple[Columns, int]:
    """Mean test accuracy (percent) over a level's cells of each member kind at each
    evaluation, its sample std and n (cells that did not diverge; all of them where all
    did, as `lt plot` draws them), every k-th evaluation (and the last) where a curve has
    more than `MAX_CURVE_POINTS`; and the largest k used."""
    table = Columns("run", "series", "kind", "level", "iteration", "mean", "std", "n")
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


def layer_data(runs: Sequence[Run]) -> Columns:
    """Per run, level and prunable layer: the percent of the layer's weights the level's
    tickets keep (their mean; global pruning gives replicates different counts), the kept and
    total counts, and how many of the tickets empty the layer."""
    table = Columns(*LAYER_COLUMNS)
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


def order(table: Columns, column: str = "series") -> list[str]:
    """The values of `column` in the order the rows first give them (each run's tickets
    first, as `report.by_level_and_kind` orders member kinds): the colours' order."""
    return list(dict.fromkeys(table.columns[column]))


def flags(
    table: Columns, metrics: Sequence[str] | None = None, kinds: Sequence[str] | None = None
) -> dict[str, bool]:
    """Whether any row of `table` (those of `metrics` and `kinds`, or all) has diverged or
    collapsed cells: `ltcli.results.page.charts.stat_chart` draws their markers only then."""
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


def overlaps(runs: Sequence[Run]) -> list[tuple[Run, Run, dict[str, Any]]]:
    """Each run's ticket masks against an IMP run's (`compare.mask_overlap`): for every run,
    the first IMP run of the page (`Run.is_imp`) whose masks are comparable (the same model);
    that IMP run is its model's reference and is not compared itself. (reference, run,
    overlap) for each run that has a reference."""
    imps = [run for run in runs if run.is_imp]
    found = []
    for run in runs:
        for reference in imps:
            if reference is run:
                break  # the first IMP run of its model: the reference
            result = compare.mask_overlap(run.store, reference.run_id, run.run_id)
            if result["comparable"]:
                found.append((reference, run, result))
                break
    return found
