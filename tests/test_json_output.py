"""``--json`` of `lt run`, `lt show`, `lt ls` and `lt data ls`: one JSON document on stdout
holding the numbers of the text tables (progress and notes stay on stderr)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from ltcli.cli.main import cli
from ltcli.core import atomic
from ltcli.data import fetch
from ltcli.results import report
from ltcli.storage.store import CellKey, Store

pytestmark = pytest.mark.integration


def invoke(*args: str):
    return CliRunner().invoke(cli, list(args))


def strict(text: str):
    """`text` parsed as strict JSON: NaN and Infinity are refused."""

    def refuse(name: str):
        raise ValueError(f"not strict JSON: {name}")

    return json.loads(text, parse_constant=refuse)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, real_data):
    """A tiny real run (2 replicates, 1 round, a reinit control) made by `lt run --json`."""
    store = tmp_path_factory.mktemp("json") / "store"
    result = invoke(
        "run",
        "smoke",
        "--rounds",
        "1",
        "--replicates",
        "2",
        "--iterations",
        "100",
        "--controls",
        "reinit:1",
        "--name",
        "tiny",
        "--json",
        "--set",
        f"data.dataset={real_data[0]}",
        "--data-dir",
        str(real_data[1]),
        "--store",
        str(store),
        "--progress-every",
        "1",
    )
    assert result.exit_code == 0, result.output
    return store, result


def stored_cells(store: Path, **where) -> list[dict]:
    s = Store(store)
    (run_id,) = s.run_ids()
    found = report.cell_metrics(s, run_id)
    return [c for c in found if all(c[k] == v for k, v in where.items())]


def test_run_json_is_one_document_with_the_tables_numbers(trained):
    store, result = trained
    document = strict(result.stdout)  # the whole of stdout: no progress, no table
    assert "level 0" in result.stderr  # progress went to stderr
    s = Store(store)
    (run_id,) = s.run_ids()
    assert document["run_id"] == run_id and document["names"] == ["tiny"]
    assert document["experiment"] == "smoke" and document["outdated"] is None
    assert document["descriptor"] == s.descriptor(run_id)["full"]
    summary = report.level_summary(report.cell_metrics(s, run_id))
    assert [row["level"] for row in document["levels"]] == [0, 1]
    for row, expected in zip(document["levels"], summary, strict=True):
        assert row["percent_remaining"] == expected["percent_remaining"]
        assert list(row["members"]) == list(expected["members"])
        for kind, stats in expected["members"].items():
            for field, stat in stats.items():
                got = row["members"][kind][field]
                assert got == {"mean": stat.mean, "std": stat.std, "n": stat.n, "diverged": 0}
    # And against the stored cells themselves: mean and sample std over replicates.
    accs = [c["early_stop_test_acc"] for c in stored_cells(store, level=1, member="ticket")]
    ticket = document["levels"][1]["members"]["ticket"]["early_stop_test_acc"]
    assert ticket["n"] == 2 and ticket["mean"] == pytest.approx(np.mean(accs))
    assert ticket["std"] == pytest.approx(np.std(accs, ddof=1))
    assert document["levels"][1]["members"]["reinit"]["final_test_acc"]["n"] == 2
    assert "ticket" in document["levels"][0]["members"]


def test_show_json_is_what_run_json_printed_and_the_table_agrees(trained):
    store, result = trained
    shown = invoke("show", "tiny", "--json", "--store", str(store))
    assert shown.exit_code == 0, shown.output
    document = strict(shown.stdout)
    assert document == strict(result.stdout)
    text = invoke("show", "tiny", "--store", str(store)).stdout
    acc = document["levels"][1]["members"]["ticket"]["early_stop_test_acc"]
    stat = report.Stat(acc["mean"], acc["std"], acc["n"], acc["diverged"])
    level1 = next(line for line in text.splitlines() if line.startswith("1 "))
    assert report.format_stat(stat, 100) in level1


@pytest.mark.unit
def test_show_json_keeps_diverged_cells_countable_and_stays_strict(tmp_path):
    run_id = "f" * 64
    full = {
        "data": {"dataset": "mnist"},
        "model": {"name": "lenet300"},
        "train": {"augment": False},
        "prune": {"rewind_iter": 0},
        "schema": 1,
    }
    atomic.write_json(
        tmp_path / run_id / "descriptor.json", {"run_id": run_id, "hashed": full, "full": full}
    )
    atomic.write_json(tmp_path / run_id / "meta.json", {"experiment": "hand", "names": ["x"]})
    mask = {"fc1": {"kernel": np.ones((4, 3), np.float32)}}
    for replicate, level, acc, diverged in [(0, 0, 0.9, False), (1, 0, 0.5, True)] + [
        (r, 1, math.nan, True) for r in range(2)
    ]:
        metrics = {
            "replicate": replicate,
            "level": level,
            "member": "ticket",
            "percent_remaining": 100.0 * 0.5**level,
            "early_stop_iter": 100,
            "early_stop_test_acc": acc,
            "final_test_acc": acc,
            "diverged": diverged,
        }
        Store(tmp_path).write_cell(run_id, CellKey(replicate, level), mask, metrics)
    result = invoke("show", "x", "--json", "--store", str(tmp_path))
    assert result.exit_code == 0, result.output
    levels = strict(result.stdout)["levels"]
    acc = levels[0]["members"]["ticket"]["early_stop_test_acc"]
    assert acc == {"mean": 0.9, "std": 0.0, "n": 1, "diverged": 1}
    everything = levels[1]["members"]["ticket"]["final_test_acc"]
    assert everything == {"mean": None, "std": None, "n": 0, "diverged": 2}


def test_ls_json_has_a_row_per_run_with_its_best_accuracy(trained, tmp_path):
    store, _ = trained
    result = invoke("ls", "--json", "--store", str(store))
    assert result.exit_code == 0, result.output
    (row,) = strict(result.stdout)
    s = Store(store)
    (run_id,) = s.run_ids()
    assert row["run_id"] == run_id and row["names"] == ["tiny"]
    assert (row["levels"], row["replicates"], row["cells"]) == (2, 2, 2 * (1 + 2))
    tickets = [c for c in report.cell_metrics(s, run_id) if c["member"] == "ticket"]
    means = [
        r["members"]["ticket"]["early_stop_test_acc"].mean for r in report.level_summary(tickets)
    ]
    assert row["best_test_acc"] == max(means)
    table = invoke("ls", "--store", str(store)).stdout
    assert f"{100 * row['best_test_acc']:.2f}" in table.splitlines()[1]
    empty = invoke("ls", "--json", "--store", str(tmp_path / "none"))
    assert empty.exit_code == 0 and strict(empty.stdout) == []
    assert "no runs" in empty.stderr


@pytest.mark.unit
def test_data_ls_json_lists_every_known_data_set(real_data):
    result = invoke("data", "ls", "--json", "--data-dir", str(real_data[1]))
    assert result.exit_code == 0, result.output
    rows = {row["name"]: row for row in strict(result.stdout)}
    expected = fetch.list_datasets(real_data[1])
    assert list(rows) == [item.name for item in expected]
    found = rows[real_data[0]]
    (listing,) = [item for item in expected if item.name == real_data[0]]
    assert found["content_id"] == listing.content_id and len(found["content_id"]) == 64
    assert found["origin"] == listing.origin and found["verified"] == listing.verified
    assert set(found) == {"name", "origin", "content_id", "verified", "problem"}
