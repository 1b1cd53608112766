"""Numbers a researcher can trust, on small stores written by hand (no training): diverged
cells are left out of means but shown, standard deviations are sample ones, tables count the
cells behind each mean, and `lt show` notes levels whose cells trained in different ways."""

from __future__ import annotations

import hashlib
import io
import json
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from ltcli.cli.options import LtGroup
from ltcli.cli.results_commands import export, plot
from ltcli.core import atomic
from ltcli.results import compare as comparing
from ltcli.results import export as exporting
from ltcli.results import listing, report
from ltcli.results import plot as plotting
from ltcli.storage.store import CellKey, Store

pytestmark = pytest.mark.unit

results = LtGroup(commands={"export": export, "plot": plot})
MASK = {"fc1": {"kernel": np.ones((4, 3), np.float32)}}


def cell(
    replicate: int,
    level: int,
    member: str = "ticket",
    acc: float = 0.95,
    stop: int = 300,
    diverged: bool = False,
    **extra,
) -> dict:
    """A cell's metrics as the runner stores them; a diverged one's loss went NaN late, so
    its early-stop numbers are finite and only the flag tells it apart."""
    loss = [0.5, math.nan] if diverged else [0.5, 0.4]
    metrics = {
        "replicate": replicate,
        "level": level,
        "member": member,
        "percent_remaining": 100.0 * 0.5**level,
        "layers": {"fc1/kernel": [12, 12]},
        "curve": {
            "iteration": [100, 200],
            "val_loss": loss,
            "val_acc": [acc, 0.1 if diverged else acc],
            "test_loss": loss,
            "test_acc": [acc, 0.1 if diverged else acc],
        },
        "early_stop_iter": stop,
        "early_stop_test_acc": acc,
        "early_stop_test_loss": 0.5,
        "min_val_loss": 0.5,
        "final_test_acc": 0.1 if diverged else acc,
        "final_test_loss": math.nan if diverged else 0.4,
        "iterations": 200,
        "diverged": diverged,
        "wall_seconds": 1.0,
        "grouping": "vmap",
    }
    return {**metrics, **extra}


def make_run(root: Path, name: str, cells: list[dict]) -> str:
    """A run named `name` in the store at `root` holding `cells`; its id."""
    run_id = hashlib.sha256(name.encode()).hexdigest()
    full = {"data": {"dataset": "mnist"}, "model": {"name": "lenet300"}}
    atomic.write_json(
        root / run_id / "descriptor.json", {"run_id": run_id, "hashed": full, "full": full}
    )
    atomic.write_json(root / run_id / "meta.json", {"experiment": "hand", "names": [name]})
    store = Store(root)
    for metrics in cells:
        key = CellKey(metrics["replicate"], metrics["level"], metrics["member"])
        store.write_cell(run_id, key, MASK, metrics)
    return run_id


def column(table: str, header: str) -> list[str]:
    """The cells under `header` in a `report.format_table` table, legend lines left out."""
    head, *rows = [line for line in table.splitlines() if line != report.DIVERGED_NOTE]
    spans = [(m.end(), m.group()) for m in re.finditer(r"\S+(?: \S+)*", head)]
    i = [name for _, name in spans].index(header)
    start = spans[i - 1][0] if i else 0
    return [row[start : spans[i][0]].strip() for row in rows]


# A run with 3 replicates: level 0 clean; level 1 with one diverged ticket (its numbers would
# move the mean: acc 0.50, stop 900) and reinit controls; level 2 with every ticket diverged.
LEVEL1 = [(0, 0.96, 300), (1, 0.98, 500), (2, 0.50, 900)]
CELLS = [
    *(cell(r, 0, acc=0.97 + 0.01 * r, stop=200 + 100 * r) for r in range(3)),
    *(cell(r, 1, acc=acc, stop=stop, diverged=r == 2) for r, acc, stop in LEVEL1),
    *(cell(r, 1, "reinit-0", acc=0.90 + 0.02 * r, stop=100 * (r + 1)) for r in range(3)),
    *(cell(r, 2, diverged=True) for r in range(3)),
]


@pytest.fixture
def store(tmp_path: Path) -> Store:
    make_run(tmp_path, "flaky", CELLS)
    make_run(tmp_path, "clean", [c for c in CELLS if not c["diverged"]])
    return Store(tmp_path)


def test_stat_is_the_sample_standard_deviation():
    stat = report.Stat.of([0.96, 0.98])
    assert stat.mean == pytest.approx(0.97) and stat.n == 2 and stat.diverged == 0
    assert stat.std == pytest.approx(np.std([0.96, 0.98], ddof=1)) == pytest.approx(0.01414, 1e-3)
    assert report.Stat.of([0.5]).std == 0.0
    assert report.Stat.of([], diverged=3) == report.Stat(None, None, 0, 3)


def test_level_means_leave_diverged_cells_out_and_count_them():
    summary = {row["level"]: row["members"] for row in report.level_summary(CELLS)}
    ticket = summary[1]["ticket"]
    assert ticket["early_stop_test_acc"] == report.Stat.of([0.96, 0.98], diverged=1)
    assert ticket["early_stop_iter"].mean == 400 and ticket["early_stop_iter"].n == 2
    assert summary[1]["reinit"]["early_stop_iter"].diverged == 0
    assert summary[2]["ticket"]["final_test_acc"] == report.Stat(None, None, 0, 3)
    assert summary[0]["ticket"]["early_stop_iter"].n == 3


def test_a_cell_from_before_the_flag_with_a_nan_counts_as_diverged():
    old = cell(0, 0, acc=math.nan)
    del old["diverged"]
    assert report.is_diverged(old) and not report.is_diverged(cell(0, 0))
    stat = report.level_summary([old, cell(1, 0)])[0]["members"]["ticket"]["final_test_acc"]
    assert (stat.n, stat.diverged, stat.mean) == (1, 1, 0.95)


def test_the_levels_table_counts_cells_and_marks_diverged_ones():
    table = report.levels_table(report.level_summary(CELLS))
    assert table.splitlines()[-1] == report.DIVERGED_NOTE
    assert column(table, "n") == ["3", "2 (+1 diverged)", "0 (+3 diverged)"]
    assert column(table, "early-stop it") == ["300 ± 100", "400 ± 141", "diverged"]
    assert column(table, "test acc @ES %") == ["98.00 ± 1.00", "97.00 ± 1.41", "diverged"]
    assert column(table, "final test acc %")[2] == "diverged"
    assert column(table, "reinit n") == ["-", "3", "-"]
    assert column(table, "reinit acc @ES %") == ["-", "92.00 ± 2.00", "-"]
    clean = report.levels_table(report.level_summary([c for c in CELLS if not c["diverged"]]))
    assert report.DIVERGED_NOTE not in clean and "diverged" not in clean


def test_ls_best_accuracy_skips_levels_whose_cells_all_diverged(store):
    overview = listing.run_overview(store, store.resolve("flaky"))
    assert overview["best_test_acc"] == pytest.approx(0.98)  # level 0: 0.97, 0.98, 0.99 / 3
    assert overview["cells"] == len(CELLS)


def test_show_notes_levels_that_mixed_groupings(tmp_path):
    cells = [
        cell(0, 0, grouping="single"),
        *(cell(r, 0) for r in range(1, 5)),
        *(cell(r, 1) for r in range(5)),
        *(cell(r, 2, grouping="serial", deterministic=r == 0) for r in range(2)),
        *(cell(r, 3, grouping=g, deterministic=True) for r, g in enumerate(["single", "vmap"])),
    ]
    store = Store(tmp_path)
    text = report.run_text(store, make_run(tmp_path, "mixed", cells))
    notes = [line for line in text.splitlines() if line.startswith("note:")]
    assert notes == [
        "note: level 0 mixes groupings (single: 1 cell, vmap: 4 cells); numbers agree to "
        "float rounding only, rerun with --deterministic for bit-identical cells",
        "note: level 2 mixes groupings (serial: 1 cell, serial deterministic: 1 cell); "
        "numbers agree to float rounding only, rerun with --deterministic for bit-identical "
        "cells",
    ]
    assert text.index("level  remaining %") < text.index(notes[0])  # under the table
    assert "note:" not in report.run_text(store, make_run(tmp_path, "plain", cells[5:10]))


def test_compare_counts_diverged_cells_in_its_table_and_json(store):
    result = comparing.compare(store, [store.resolve("clean"), store.resolve("flaky")])
    data = json.loads(comparing.to_json(result))
    clean, flaky = data["levels"][1]["runs"]
    acc = flaky["members"]["ticket"]["early_stop_test_acc"]
    assert (acc["n"], acc["diverged"]) == (2, 1)
    assert acc["std"] == pytest.approx(np.std([0.96, 0.98], ddof=1))
    assert acc["delta"] == pytest.approx(0.0)  # the diverged 0.50 is not in the mean
    assert clean["members"]["ticket"]["early_stop_test_acc"]["diverged"] == 0
    assert data["levels"][2]["runs"][0] is None
    everything = data["levels"][2]["runs"][1]["members"]["ticket"]["final_test_acc"]
    assert everything == {"mean": None, "std": None, "n": 0, "diverged": 3, "delta": None}
    table = comparing.table(result)
    assert table.splitlines()[-1] == report.DIVERGED_NOTE
    assert column(table, "n") == [
        "3",
        "3",
        "2",
        "2 (+1 diverged)",
        "3",
        "3",
        "-",
        "0 (+3 diverged)",
    ]
    assert column(table, "test acc @ES %")[-1] == "diverged"
    assert column(table, "Δ @ES")[-1] == "-"
    assert column(table, "test acc @ES %")[3] == "97.00 ± 1.41"


def test_export_says_which_cells_diverged_and_how_they_trained(tmp_path):
    old = cell(0, 1, acc=0.9)
    del old["diverged"], old["grouping"]
    cells = [cell(0, 0, grouping="single", deterministic=True), cell(1, 0, diverged=True), old]
    store = Store(tmp_path)
    run_id = make_run(tmp_path, "x", cells)
    frame = pd.read_csv(io.StringIO(exporting.export(store, [run_id])))
    training = len(exporting.INSTABILITY_COLUMNS) + len(exporting.TRAINING_COLUMNS)
    assert list(frame.columns[-training:][:3]) == ["diverged", "grouping", "deterministic"]
    assert frame["diverged"].dtype == bool and frame["deterministic"].dtype == bool
    rows = frame.set_index(["replicate", "level"])
    assert list(rows.loc[(0, 0)][["diverged", "grouping", "deterministic"]]) == [
        False,
        "single",
        True,
    ]
    assert list(rows.loc[(1, 0)][["diverged", "grouping", "deterministic"]]) == [
        True,
        "vmap",
        False,
    ]
    assert rows.loc[(0, 1)]["diverged"] == np.False_ and pd.isna(rows.loc[(0, 1)]["grouping"])
    as_json = json.loads(
        CliRunner().invoke(results, ["export", "--json", "--store", str(tmp_path)]).stdout
    )
    assert [(r["diverged"], r["grouping"], r["deterministic"]) for r in as_json] == [
        (False, "single", True),
        (False, None, False),
        (True, "vmap", False),
    ]


def test_the_exported_csv_gives_the_tables_standard_deviation(store):
    frame = pd.read_csv(io.StringIO(exporting.export(store, [store.resolve("flaky")])))
    kept = frame[~frame["diverged"] & (frame["member"] == "ticket")]
    by_level = kept.groupby("level")["early_stop_test_acc"]
    summary = report.level_summary(report.cell_metrics(store, store.resolve("flaky")))
    for row in summary[:2]:
        stat = row["members"]["ticket"]["early_stop_test_acc"]
        assert stat.std == pytest.approx(by_level.std()[row["level"]])
        assert stat.n == by_level.count()[row["level"]]


def bars(panel) -> dict:
    """Each error-bar series of `panel` by label: (x, y, [(low, high) of each bar])."""
    return {
        s.label: (s.x, s.y, list(zip(s.lo, s.hi, strict=True)))
        for s in panel.series
        if s.lo is not None
    }


def test_the_plot_leaves_diverged_cells_out_and_marks_them(store):
    fig = plotting.figure(store, [store.resolve("flaky")], (1500, 500), 100)
    curves, iterations, accuracy = fig.panels
    x, y, spans = bars(accuracy)["ticket"]
    assert x == [100.0, 50.0]  # level 2: every ticket diverged, no point
    assert y == pytest.approx([98.0, 97.0])
    sd = 100 * np.std([0.96, 0.98], ddof=1)
    assert spans[1] == pytest.approx((97.0 - sd, 97.0 + sd))
    (marks,) = accuracy.labelled("(not in means)")
    assert marks.label == "4 diverged cells (not in means)"
    assert marks.x == [50.0, 25.0] and marks.marker == "x" and marks.linestyle is None
    assert marks.y == [None, None]  # at the top of the panel
    assert marks.color == "red"
    assert iterations.labelled("(not in means)")
    labels = [s.label for s in curves.series]
    assert labels == ["100.0%", "50.0%", "25.0% (diverged)"]
    assert curves.series[1].y == pytest.approx([97.0, 97.0])


def test_minmax_error_bars_span_the_replicates(store):
    fig = plotting.figure(store, [store.resolve("flaky")], (1500, 500), 100, error_bars="minmax")
    _, iterations, accuracy = fig.panels
    assert np.allclose(bars(accuracy)["ticket"][2], [(97.0, 99.0), (96.0, 98.0)])
    assert np.allclose(bars(iterations)["reinit"][2], [(100.0, 300.0)])
    clean = plotting.figure(store, [store.resolve("clean")], (1500, 500), 100)
    assert not clean.panels[2].labelled("diverged")


def test_lt_plot_takes_error_bars(store, tmp_path):
    path = tmp_path / "minmax.png"
    args = ["plot", "flaky", "-o", str(path), "--error-bars", "minmax", "--store", str(store.root)]
    result = CliRunner().invoke(results, args)
    assert result.exit_code == 0, result.output
    assert path.stat().st_size > 0
    args[-3] = "sem"
    result = CliRunner().invoke(results, args)
    assert result.exit_code == 2 and "--error-bars" in result.stderr


def test_show_and_export_say_how_many_tokens_bits_per_byte_scored(tmp_path):
    bpb = {"min_val_bpb": 2.1, "early_stop_test_bpb": 2.0, "final_test_bpb": 2.0}
    counts = {"val_tokens": 65536, "test_tokens": 65536, "val_bytes": 65536, "test_bytes": 65540}
    old = cell(0, 1, **bpb)  # a text cell stored before lt counted what it scored
    store = Store(tmp_path)
    run_id = make_run(tmp_path, "gpt", [cell(0, 0, **bpb, **counts), old])
    assert report.run_text(store, run_id).splitlines()[-1] == (
        "note: bits per byte over 65,536 validation and 65,536 test tokens, in windows spread "
        "evenly over each split"
    )
    assert report.run_json(store, run_id)["notes"][-1].startswith("note: bits per byte over")
    frame = pd.read_csv(io.StringIO(exporting.export(store, [run_id])))
    rows = frame.set_index("level")
    assert list(rows.loc[0][["test_tokens", "test_bytes"]]) == [65536, 65540]
    assert rows.loc[1][["val_tokens", "test_tokens"]].isna().all()
    assert "note: bits" not in report.run_text(store, make_run(tmp_path, "images", [cell(0, 0)]))
