"""``lt export``: the store as tidy rows (one per finished cell, or one per evaluation of a
cell), written as CSV or JSON for pandas, R or a spreadsheet.

Cell rows have the columns `RUN_COLUMNS` and `CELL_COLUMNS`, then ``remaining_<layer>``
(percent of the layer's weights remaining, one column per prunable layer of any exported run:
``fc1/kernel`` gives ``remaining_fc1``), then `MASK_COLUMNS`: whether the cell's mask empties
a prunable layer (``collapsed``, a boolean: the network outputs a constant; `lt show` keeps
such cells in its means and counts them) and which (``collapsed_layers``, the layer names
joined by ``;`` such as ``fc1/kernel;fc2/kernel``, empty or null where none), then
`SUMMARY_COLUMNS` (and `TEXT_COLUMNS` for language models), then `COST_COLUMNS` (FLOPs),
then `TRAINING_COLUMNS`:
whether the cell diverged (its loss became NaN or inf; `lt show` leaves such cells out of its
means, and a reader of the export should too), and how its group trained (cells trained
differently agree to float rounding only). Curve rows have `CURVE_COLUMNS`. Accuracies are
fractions and percentages are 0-100, as stored; a value a row lacks is empty (CSV) or null
(JSON); ``deterministic`` reads false for cells stored before it was recorded.
"""

from __future__ import annotations

import csv
import io
import json
import math
from typing import Any

from ltcli.results import report
from ltcli.storage.store import Store

RUN_COLUMNS = ("run_id", "name", "experiment", "dataset", "model")
CELL_COLUMNS = ("replicate", "level", "member", "percent_remaining")
MASK_COLUMNS = ("collapsed", "collapsed_layers")
SUMMARY_COLUMNS = (
    "early_stop_iter",
    "early_stop_test_acc",
    "early_stop_test_loss",
    "final_test_acc",
    "final_test_loss",
    "min_val_loss",
    "start_iteration",
    "iterations",
    "wall_seconds",
)
TEXT_COLUMNS = (
    "min_val_bpb",
    "early_stop_test_bpb",
    "final_test_bpb",
    "val_tokens",
    "test_tokens",
    "val_bytes",
    "test_bytes",
)
"""Bits per byte of a language model's cells (text data sets), and the next-token targets
(and their UTF-8 bytes) each split scored, after `SUMMARY_COLUMNS` when an exported cell has
them (the counts are empty for cells stored before lt recorded them)."""
COST_COLUMNS = ("inference_flops", "training_flops", "training_flops_total")
"""The cell's forward FLOPs and its training FLOPs as multiples of the dense network's (over
the same training steps), and its training FLOPs in all, counted as RigL counts them
(`ltcli.science.flops`); empty for cells stored before lt recorded them."""
TRAINING_COLUMNS = ("diverged", "grouping", "deterministic")
INSTABILITY_COLUMNS = (
    "spawn_iteration",
    "instability",
    "barrier_above_line",
    "level_instability",
    "level_barrier_above_line",
)
"""A stability or spawned copy's spawn point (dense copies) and the two measures of its path
from its ticket, then an IMP ticket's two measures of the path from the level before's ticket
(``--barriers``; Paul et al. 2023): the ``instability`` (the highest test error on the path
minus the mean of the two ends' errors, Frankle et al. 2020) and the ``barrier_above_line``
(the highest rise of the error above the straight line between the ends' errors), fractions
of error (`report.path_measures`; ``level_barrier_above_line`` was ``level_barrier``)."""
CURVE_METRICS = ("val_loss", "val_acc", "test_loss", "test_acc")
CURVE_COLUMNS = ("run_id", *CELL_COLUMNS, "iteration", *CURVE_METRICS)

Row = dict[str, Any]


def layer_column(layer: str) -> str:
    """The column of a prunable layer: ``fc1/kernel`` -> ``remaining_fc1``."""
    return "remaining_" + layer.removesuffix("/kernel").replace("/", "_")


def _cells(store: Store, run_ids: list[str]) -> list[tuple[str, dict[str, Any]]]:
    return [
        (run_id, store.read_metrics(run_id, cell))
        for run_id in run_ids
        for cell in store.finished_cells(run_id)
    ]


def _run_fields(store: Store, run_id: str) -> Row:
    full = store.descriptor(run_id)["full"]
    meta = store.meta(run_id)
    return {
        "run_id": run_id,
        "name": ",".join(meta.get("names", [])),
        "experiment": meta.get("experiment", ""),
        "dataset": full["data"]["dataset"],
        "model": full["model"]["name"],
    }


def training_fields(metrics: dict[str, Any]) -> Row:
    """The `TRAINING_COLUMNS` of a cell: ``diverged`` as `report.is_diverged` judges it (so
    the export and the tables agree), ``deterministic`` false and ``grouping`` None where the
    cell predates them."""
    return {
        "diverged": report.is_diverged(metrics),
        "grouping": metrics.get("grouping"),
        "deterministic": bool(metrics.get("deterministic", False)),
    }


def mask_fields(metrics: dict[str, Any]) -> Row:
    """The `MASK_COLUMNS` of a cell, as `report.collapsed_layers` finds them (so the export
    and the tables agree): ``collapsed`` a boolean, ``collapsed_layers`` the emptied layers
    joined by ``;`` (None where none)."""
    layers = report.collapsed_layers(metrics)
    return {"collapsed": bool(layers), "collapsed_layers": ";".join(layers) or None}


def cell_rows(store: Store, run_ids: list[str]) -> tuple[list[str], list[Row]]:
    """One row per finished cell of `run_ids`, in run, replicate, level, member order.

    Returns:
      (columns, rows); every row has every column (None where a run lacks a layer).
    """
    cells = _cells(store, run_ids)
    layers = list(dict.fromkeys(layer for _, m in cells for layer in m["layers"]))
    columns = [*RUN_COLUMNS, *CELL_COLUMNS, *map(layer_column, layers), *MASK_COLUMNS]
    columns += SUMMARY_COLUMNS
    text = TEXT_COLUMNS if any(TEXT_COLUMNS[0] in m for _, m in cells) else ()
    columns += [*text, *COST_COLUMNS, *TRAINING_COLUMNS, *INSTABILITY_COLUMNS]
    runs = {run_id: _run_fields(store, run_id) for run_id in run_ids}
    rows = []
    for run_id, metrics in cells:
        row = dict.fromkeys(columns)
        row.update(runs[run_id])
        shown = CELL_COLUMNS + SUMMARY_COLUMNS + text + COST_COLUMNS
        row.update({c: metrics[c] for c in shown if c in metrics})
        row["start_iteration"] = metrics.get("start_iteration", 0)  # older cells: all from 0
        for layer, (kept, total) in metrics["layers"].items():
            row[layer_column(layer)] = 100.0 * kept / total
        row.update(mask_fields(metrics))
        row.update(training_fields(metrics))
        row["spawn_iteration"] = metrics.get("spawn_iteration")
        row.update(report.path_measures(metrics.get("instability")))
        level = report.path_measures(metrics.get("level_barrier"))
        row.update({f"level_{name}": value for name, value in level.items()})
        rows.append(row)
    return columns, rows


def curve_rows(store: Store, run_ids: list[str]) -> tuple[list[str], list[Row]]:
    """One row per evaluation of each finished cell of `run_ids`.

    Returns:
      (columns, rows) with the columns `CURVE_COLUMNS`.
    """
    rows = []
    for run_id, metrics in _cells(store, run_ids):
        cell = {c: metrics[c] for c in CELL_COLUMNS}
        curve = metrics["curve"]
        for i, iteration in enumerate(curve["iteration"]):
            values = {m: curve[m][i] for m in CURVE_METRICS}
            rows.append({"run_id": run_id, **cell, "iteration": iteration, **values})
    return list(CURVE_COLUMNS), rows


def to_csv(columns: list[str], rows: list[Row]) -> str:
    """CSV with a header line; None is an empty field, floats keep every digit."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def to_json(rows: list[Row]) -> str:
    """A JSON array of row objects, one per line; a NaN or infinite number (a diverged cell's
    loss) is null, since strict JSON has no such numbers."""
    return "[\n" + ",\n".join(json.dumps(_strict(row)) for row in rows) + "\n]\n"


def _strict(row: Row) -> Row:
    return {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in row.items()}


def export(store: Store, run_ids: list[str], fmt: str = "csv", curves: bool = False) -> str:
    """The text of `lt export`: the cell rows (or, with `curves`, the curve rows) of `run_ids`
    (each once) as ``"csv"`` or ``"json"``."""
    unique = list(dict.fromkeys(run_ids))
    columns, rows = (curve_rows if curves else cell_rows)(store, unique)
    return to_csv(columns, rows) if fmt == "csv" else to_json(rows)
