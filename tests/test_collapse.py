"""Layer collapse is shown: a cell whose mask keeps no weight of a prunable layer (the network
outputs a constant) stays in the means but is counted beside them in `lt show` and `lt
compare`, named in notes, exported, and ringed in the figures; cells stored before the
``collapsed`` key existed are judged from their per-layer counts. Small stores written by
hand, no training."""

from __future__ import annotations

import io
import json
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from test_report import make_run

from ltcli.cli.options import LtGroup
from ltcli.cli.results_commands import compare, export
from ltcli.results import compare as comparing
from ltcli.results import export as exporting
from ltcli.results import plot as plotting
from ltcli.results import plot_instability, report
from ltcli.storage.store import Store

pytestmark = pytest.mark.unit

results = LtGroup(commands={"compare": compare, "export": export})
FULL = {"fc1/kernel": [12, 12], "out/kernel": [4, 4]}
EMPTY_OUT = {"fc1/kernel": [3, 12], "out/kernel": [0, 4]}
"""Per-layer [kept, total] of a mask that keeps some of fc1 and none of the output layer."""


def cell(
    replicate: int,
    level: int,
    member: str = "ticket",
    acc: float = 0.95,
    stop: int = 300,
    *,
    diverged: bool = False,
    collapsed: bool = False,
    old: bool = False,
    **extra,
) -> dict:
    """A cell's metrics as the runner stores them: a `collapsed` one's mask empties
    ``out/kernel``; an `old` one predates the ``collapsed`` key (only its layer counts say)."""
    loss = [0.5, math.nan] if diverged else [0.5, 0.4]
    metrics = {
        "replicate": replicate,
        "level": level,
        "member": member,
        "percent_remaining": 100.0 * 0.5**level,
        "layers": EMPTY_OUT if collapsed else FULL,
        "curve": {
            "iteration": [100, 200],
            "val_loss": loss,
            "val_acc": [acc, acc],
            "test_loss": loss,
            "test_acc": [acc, acc],
        },
        "early_stop_iter": stop,
        "early_stop_test_acc": acc,
        "early_stop_test_loss": 0.5,
        "min_val_loss": 0.5,
        "final_test_acc": acc,
        "final_test_loss": math.nan if diverged else 0.4,
        "iterations": 200,
        "diverged": diverged,
        "wall_seconds": 1.0,
        "grouping": "vmap",
    }
    if not old:
        metrics["collapsed"] = ["out/kernel"] if collapsed else []
    return {**metrics, **extra}


LEGENDS = (report.DIVERGED_NOTE, getattr(report, "COLLAPSED_NOTE", None))


def column(table: str, header: str) -> list[str]:
    """The cells under `header` in a `report.format_table` table, legend lines left out."""
    head, *rows = [line for line in table.splitlines() if line not in LEGENDS]
    spans = [(m.end(), m.group()) for m in re.finditer(r"\S+(?: \S+)*", head)]
    i = [name for _, name in spans].index(header)
    start = spans[i - 1][0] if i else 0
    return [row[start : spans[i][0]].strip() for row in rows]


# Level 0 is clean. At level 1 two of three tickets collapsed (one recorded, one stored before
# the key: its layer counts say), at chance accuracy; of the reinit controls one collapsed, one
# diverged (left out of the means) and one is fine.
LEVEL1_ACC = [0.96, 0.1135, 0.098]
CELLS = [
    *(cell(r, 0, acc=0.97 + 0.01 * r, stop=200 + 100 * r) for r in range(3)),
    cell(0, 1, acc=0.96, stop=300),
    cell(1, 1, acc=0.1135, stop=100, collapsed=True),
    cell(2, 1, acc=0.098, stop=100, collapsed=True, old=True),
    cell(0, 1, "reinit-0", acc=0.1, stop=100, collapsed=True),
    cell(1, 1, "reinit-0", acc=0.5, diverged=True),
    cell(2, 1, "reinit-0", acc=0.9, stop=500),
]
CLEAN = [
    *(cell(r, 0, acc=0.97 + 0.01 * r, stop=200 + 100 * r) for r in range(3)),
    *(cell(r, 1, acc=0.96 - 0.01 * r, stop=300, old=r == 2) for r in range(3)),
]
CLEAN_TABLE = """\
level  remaining %  n  early-stop it  test acc @ES %  final test acc %
0            100.0  3      300 ± 100    98.00 ± 1.00      98.00 ± 1.00
1             50.0  3        300 ± 0    95.00 ± 1.00      95.00 ± 1.00"""
"""`report.levels_table` of `CLEAN` as it read before collapse was counted."""
NOTE = "note: level 1 has 3 collapsed cells (ticket: 2, reinit: 1); emptied: out/kernel"


@pytest.fixture
def store(tmp_path: Path) -> Store:
    make_run(tmp_path, "collapsing", CELLS)
    make_run(tmp_path, "clean", CLEAN)
    return Store(tmp_path)


def test_collapsed_layers_are_recorded_or_derived_from_the_layer_counts():
    assert report.collapsed_layers(cell(0, 1, collapsed=True)) == ["out/kernel"]
    assert report.collapsed_layers(cell(0, 1, collapsed=True, old=True)) == ["out/kernel"]
    both = cell(0, 1, old=True, layers={"fc2/kernel": [0, 8], "fc1/kernel": [0, 12]})
    assert report.collapsed_layers(both) == ["fc1/kernel", "fc2/kernel"]  # sorted
    assert report.collapsed_layers({**both, "collapsed": ["fc2/kernel"]}) == ["fc2/kernel"]
    assert (
        report.collapsed_layers(cell(0, 1)) == [] == report.collapsed_layers(cell(0, 1, old=True))
    )
    bare = {k: v for k, v in cell(0, 1, old=True).items() if k != "layers"}
    assert report.collapsed_layers(bare) == []  # neither key: nothing to say
    assert report.is_collapsed(cell(0, 1, collapsed=True, old=True))
    assert not report.is_collapsed(cell(0, 1)) and not report.is_collapsed(bare)


def test_collapsed_cells_stay_in_the_means_and_are_counted():
    summary = {row["level"]: row["members"] for row in report.level_summary(CELLS)}
    ticket = summary[1]["ticket"]["early_stop_test_acc"]
    assert ticket == report.Stat.of(LEVEL1_ACC, collapsed=2)
    assert ticket.mean == pytest.approx(np.mean(LEVEL1_ACC)) and ticket.n == 3
    reinit = summary[1]["reinit"]["final_test_acc"]
    assert (reinit.n, reinit.diverged, reinit.collapsed) == (2, 1, 1)
    assert reinit.mean == pytest.approx(0.5)  # 0.1 (collapsed) and 0.9; the diverged 0.5 out
    assert summary[0]["ticket"]["early_stop_iter"].collapsed == 0


def test_the_levels_table_counts_collapsed_cells_and_explains_them():
    table = report.levels_table(report.level_summary(CELLS))
    assert table.splitlines()[-2:] == [report.DIVERGED_NOTE, report.COLLAPSED_NOTE]
    assert column(table, "n") == ["3", "3 (2 collapsed)"]
    assert column(table, "reinit n") == ["-", "2 (+1 diverged, 1 collapsed)"]
    assert column(table, "test acc @ES %")[1] == report.format_stat(report.Stat.of(LEVEL1_ACC), 100)
    only = report.levels_table(report.level_summary([c for c in CELLS if not c["diverged"]]))
    assert only.splitlines()[-1] == report.COLLAPSED_NOTE
    assert report.DIVERGED_NOTE not in only
    assert column(only, "reinit n") == ["-", "2 (1 collapsed)"]


def test_a_run_without_collapsed_cells_reads_as_before(store):
    clean = store.resolve("clean")
    assert report.levels_table(report.level_summary(CLEAN)) == CLEAN_TABLE
    assert report.collapse_notes(CLEAN) == []
    document = report.run_json(store, clean)
    assert document["notes"] == []
    stat = document["levels"][1]["members"]["ticket"]["early_stop_test_acc"]
    assert list(stat) == ["mean", "std", "n", "diverged"]  # no "collapsed" key
    result = comparing.compare(store, [clean, clean])
    assert "collapsed" not in comparing.to_json(result)
    assert report.COLLAPSED_NOTE not in comparing.table(result)
    frame = pd.read_csv(io.StringIO(exporting.export(store, [clean])))
    assert frame["collapsed"].dtype == bool and not frame["collapsed"].any()
    assert frame["collapsed_layers"].isna().all()


def test_show_counts_collapsed_cells_and_names_the_emptied_layers(store):
    run_id = store.resolve("collapsing")
    text = report.run_text(store, run_id)
    lines = text.splitlines()
    assert lines[-1] == NOTE
    assert lines.index(report.COLLAPSED_NOTE) < lines.index(NOTE)  # the note under the table
    assert "3 (2 collapsed)" in text
    document = json.loads(report.to_json(report.run_json(store, run_id)))
    assert document["notes"] == [NOTE]
    ticket = document["levels"][1]["members"]["ticket"]["early_stop_test_acc"]
    assert list(ticket) == ["mean", "std", "n", "diverged", "collapsed"]
    assert (ticket["n"], ticket["diverged"], ticket["collapsed"]) == (3, 0, 2)
    assert ticket["mean"] == pytest.approx(np.mean(LEVEL1_ACC))
    reinit = document["levels"][1]["members"]["reinit"]["early_stop_iter"]
    assert (reinit["n"], reinit["diverged"], reinit["collapsed"]) == (2, 1, 1)
    assert "collapsed" not in document["levels"][0]["members"]["ticket"]["early_stop_iter"]


def test_a_collapsed_cell_that_diverged_counts_as_diverged_only():
    cells = [cell(0, 1), cell(1, 1, collapsed=True, diverged=True)]
    stat = report.level_summary(cells)[0]["members"]["ticket"]["early_stop_iter"]
    assert (stat.n, stat.diverged, stat.collapsed) == (1, 1, 0)
    assert report.collapse_notes(cells) == []


def test_compare_counts_collapsed_cells_in_its_table_and_json(store):
    clean, collapsing = store.resolve("clean"), store.resolve("collapsing")
    args = ["compare", "clean", "collapsing", "--json", "--store", str(store.root)]
    result = CliRunner().invoke(results, args)
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    first, second = data["levels"][1]["runs"]
    acc = second["members"]["ticket"]["early_stop_test_acc"]
    assert list(acc) == ["mean", "std", "n", "diverged", "collapsed", "delta"]
    assert (acc["n"], acc["diverged"], acc["collapsed"]) == (3, 0, 2)
    assert acc["delta"] == pytest.approx(np.mean(LEVEL1_ACC) - 0.95)  # collapsed cells count
    assert "collapsed" not in first["members"]["ticket"]["early_stop_test_acc"]
    reinit = second["members"]["reinit"]["early_stop_iter"]
    assert (reinit["n"], reinit["diverged"], reinit["collapsed"]) == (2, 1, 1)
    table = comparing.table(comparing.compare(store, [clean, collapsing]))
    assert table.splitlines()[-2:] == [report.DIVERGED_NOTE, report.COLLAPSED_NOTE]
    assert column(table, "n") == [
        "3",
        "3",
        "3",
        "3 (2 collapsed)",
        "-",
        "2 (+1 diverged, 1 collapsed)",
    ]


def test_export_says_which_cells_collapsed_and_which_layers(store):
    run_id = store.resolve("collapsing")
    frame = pd.read_csv(io.StringIO(exporting.export(store, [run_id])))
    columns = list(frame.columns)
    at = columns.index("remaining_out")
    assert columns[at + 1 : at + 3] == ["collapsed", "collapsed_layers"]
    assert frame["collapsed"].dtype == bool
    rows = frame.set_index(["level", "member", "replicate"])
    collapsed = {key for key, flag in rows["collapsed"].items() if flag}
    assert collapsed == {(1, "ticket", 1), (1, "ticket", 2), (1, "reinit-0", 0)}
    assert rows.loc[(1, "ticket", 2), "collapsed_layers"] == "out/kernel"  # derived: old cell
    assert rows.loc[(1, "reinit-0", 0), "collapsed_layers"] == "out/kernel"
    assert pd.isna(rows.loc[(1, "ticket", 0), "collapsed_layers"])
    assert rows.loc[(1, "ticket", 1), "remaining_out"] == 0.0
    args = ["export", "collapsing", "--json", "--store", str(store.root)]
    as_json = json.loads(CliRunner().invoke(results, args).stdout)
    found = {
        (r["member"], r["replicate"]): (r["collapsed"], r["collapsed_layers"])
        for r in as_json
        if r["level"] == 1
    }
    assert found == {
        ("ticket", 0): (False, None),
        ("ticket", 1): (True, "out/kernel"),
        ("ticket", 2): (True, "out/kernel"),
        ("reinit-0", 0): (True, "out/kernel"),
        ("reinit-0", 1): (False, None),
        ("reinit-0", 2): (False, None),
    }


def test_export_joins_several_emptied_layers_with_semicolons(tmp_path):
    layers = {"fc1/kernel": [0, 12], "fc2/kernel": [0, 8], "out/kernel": [2, 4]}
    run_id = make_run(tmp_path, "two", [cell(0, 1, old=True, layers=layers)])
    (row,) = json.loads(exporting.export(Store(tmp_path), [run_id], "json"))
    assert (row["collapsed"], row["collapsed_layers"]) == (True, "fc1/kernel;fc2/kernel")


def rings(panel) -> list:
    """The series of `panel` marking collapsed cells (by their legend label)."""
    return panel.labelled(" collapsed cop") + panel.labelled(" collapsed cell")


def test_the_plot_rings_means_that_include_collapsed_cells(store):
    fig = plotting.figure(store, [store.resolve("collapsing")], (1500, 500), 100)
    curves, iterations, accuracy = fig.panels
    (ring,) = rings(accuracy)
    assert ring.label == "3 collapsed cells (a layer emptied; in means)"
    assert ring.x == [50.0, 50.0]  # the ticket's and the reinit's level 1
    assert ring.y == pytest.approx([100 * np.mean(LEVEL1_ACC), 50.0])
    assert ring.marker == "o" and not ring.filled and ring.linestyle is None
    assert ring.color != "red"  # not a divergence mark
    (on_iterations,) = rings(iterations)
    assert on_iterations.y == pytest.approx([np.mean([300, 100, 100]), 300.0])
    (diverged,) = accuracy.labelled("diverged")
    assert diverged.marker == "x"  # a diverged cell is still marked its own way
    labels = [s.label for s in curves.series]
    assert labels == ["100.0%", "50.0% (2 collapsed)"]
    clean = plotting.figure(store, [store.resolve("clean")], (1500, 500), 100)
    assert not any(rings(panel) for panel in clean.panels)
    assert all("collapsed" not in s.label for s in clean.panels[0].series)


def copy(replicate: int, level: int, instability: float, **flags) -> dict:
    """A stability copy with its linear-path record."""
    errors = [0.1, 0.1 + instability, 0.1]
    record = {"alpha": [0.0, 0.5, 1.0], "test_error": errors, "instability": instability}
    return cell(replicate, level, "stability-0", instability=record, **flags)


def test_the_instability_plot_rings_collapsed_copies(tmp_path):
    cells = [
        *(cell(r, level) for r in range(2) for level in range(3)),
        copy(0, 1, 0.05),
        copy(1, 1, 0.03),
        copy(0, 2, 0.0, collapsed=True),
        copy(1, 2, 0.2),
    ]
    store = Store(tmp_path)
    run_id = make_run(tmp_path, "stable", cells)
    paths, levels = plot_instability.figure(store, [run_id], (1000, 500), 100).panels
    (ring,) = rings(levels)
    assert ring.label == "1 collapsed copy (a layer emptied; in means)"
    assert ring.x == [25.0]
    assert ring.y == pytest.approx([10.0])  # mean of 0 and 20 points
    labels = [s.label for s in paths.series]
    assert labels == ["50% remaining", "25% remaining (1 collapsed)"]
    assert list(plot_instability.paths(store, run_id)) == [("level", 50.0), ("level", 25.0)]
