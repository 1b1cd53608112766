"""`lt reproduce`: the claims table is computed from the store's cells (written here by hand,
so nothing trains), the figure's paper points come from the shipped paper data, and that data
names a source for every number."""

from __future__ import annotations

import importlib.resources
import json
import os
import re
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from ltcli.cli.options import LtGroup
from ltcli.cli.reproduce_command import reproduce as reproduce_command
from ltcli.data import idx
from ltcli.experiment import spec
from ltcli.experiment.fields import FIELDS
from ltcli.experiment.plan import Plan
from ltcli.results import plot, report, reproduce
from ltcli.storage.store import CellKey, Store
from ltcli.train import launch

pytestmark = pytest.mark.unit

group = LtGroup(commands={"reproduce": reproduce_command})
MASK = {"fc1": {"kernel": np.ones((4, 3), np.float32)}}
SHIPPED = json.loads(
    importlib.resources.files("ltcli.results.paper").joinpath("frankle2019.json").read_text()
)
LENET = SHIPPED["figures"]["lenet"]


def lenet_pm(k: int) -> float:
    """LeNet-300-100's Pm after k rounds: 20% of the hidden layers' 265,200 weights and 10% of
    the output layer's 1,000 per round."""
    return 100 * (265200 * 0.8**k + 1000 * 0.9**k) / 266200


def cell(replicate: int, level: int, member: str = "ticket", *, stop: int, acc: float, **extra):
    """A cell's metrics as the runner stores them (the fields the claims and figure read)."""
    return {
        "replicate": replicate,
        "level": level,
        "member": member,
        "percent_remaining": lenet_pm(level),
        "layers": {"fc1/kernel": [12, 12]},
        "curve": {
            "iteration": [100, 200],
            "val_loss": [0.5, 0.4],
            "val_acc": [acc, acc],
            "test_loss": [0.5, 0.4],
            "test_acc": [acc - 0.01, acc],
        },
        "early_stop_iter": stop,
        "early_stop_test_acc": acc,
        "early_stop_test_loss": 0.4,
        "min_val_loss": 0.4,
        "final_test_acc": acc,
        "final_test_loss": 0.4,
        "iterations": 3000,
        "diverged": False,
        "wall_seconds": 1.0,
        "grouping": "vmap",
        **extra,
    }


# The small LeNet budget's cells: 2 replicates, levels 0..7, one reinit per pruned level.
# Dense: stops at 1000/1100 with 97.5/97.7%; level 7 (Pm 21.1%): tickets stop at 600/770 with
# 98.0/98.1%, reinits at 1500/1400 with 97.0/97.4%.
DENSE = {0: (1000, 0.975), 1: (1100, 0.977)}
TICKET7 = {0: (600, 0.980), 1: (770, 0.981)}
REINIT7 = {0: (1500, 0.970), 1: (1400, 0.974)}


def small_cells() -> list[dict]:
    cells = []
    for r in range(2):
        cells.append(cell(r, 0, stop=DENSE[r][0], acc=DENSE[r][1]))
        for level in range(1, 8):
            stop, acc = TICKET7[r] if level == 7 else (900, 0.976)
            cells.append(cell(r, level, stop=stop, acc=acc))
            stop, acc = REINIT7[r] if level == 7 else (1000, 0.975)
            cells.append(cell(r, level, "reinit-0", stop=stop, acc=acc))
    return cells


@pytest.fixture(scope="module")
def mnist() -> Path:
    """A folder with the real MNIST IDX files (the run id is derived from the data's content)."""
    candidates = [Path(os.environ.get("LT_DATA_DIR", "/nonexistent"))]
    candidates.append(Path(__file__).resolve().parents[2] / "shared" / "data")
    for root in candidates:
        if all((root / "mnist" / f"{f}.gz").is_file() for f in idx.FILES):
            return root
    pytest.skip("no real MNIST on this machine")


def write(store: Store, run_id: str, metrics: dict) -> None:
    key = CellKey(metrics["replicate"], metrics["level"], metrics["member"])
    store.write_cell(run_id, key, MASK, metrics)


@pytest.fixture
def small_store(tmp_path: Path, mnist: Path) -> tuple[Store, str]:
    """A store holding every cell of `lt reproduce lenet --budget small`, written by hand."""
    proto = reproduce.protocol("lenet", "small")
    desc, _ = launch.prepare(proto.spec, mnist)
    store = Store(tmp_path / "store")
    store.save_run(desc, proto.spec.experiment, None)
    for metrics in small_cells():
        write(store, desc.run_id, metrics)
    s = proto.spec
    assert not Plan(s["run.rounds"], s["run.replicates"], s["run.controls"]).anything_left(
        store, desc.run_id
    )  # so `lt reproduce` trains nothing
    return store, desc.run_id


def invoke(store: Store, mnist: Path, tmp_path: Path, *args: str):
    figure = tmp_path / "figure.png"
    argv = ["reproduce", *args, "--store", str(store.root), "--data-dir", str(mnist)]
    result = CliRunner().invoke(group, [*argv, "-o", str(figure)])
    return result, figure


def spread(values: list[float], unit: str, digits: int = 1) -> str:
    """``mean ± std (n=N)`` as the claims table prints a measure (sample std)."""
    sign = "+" if unit == " pts" else ""
    return (
        f"{np.mean(values):{sign}.{digits}f}{unit} ± {np.std(values, ddof=1):.{digits}f} "
        f"(n={len(values)})"
    )


def claim_rows(stdout: str) -> dict[int, list[str]]:
    """The claims table's rows by claim number: its columns split on runs of 2+ spaces."""
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("claim  "))
    rows = {}
    for line in lines[start + 1 :]:
        if not line.strip():
            break
        cols = re.split(r"\s{2,}", line.strip())
        rows[int(cols[0])] = cols
    return rows


def test_claims_table_is_computed_from_the_stored_cells(small_store, mnist, tmp_path):
    store, run_id = small_store
    result, figure = invoke(store, mnist, tmp_path, "lenet", "--budget", "small")
    assert result.exit_code == 0, result.output
    # stderr says exactly what the small budget cut versus the paper
    for cut in ("run.rounds: 20 -> 7", "run.replicates: 5 -> 2", "reinit:3 -> reinit:1"):
        assert cut in result.stderr
    assert "train.iterations: 50000it -> 3000it" in result.stderr
    rows = claim_rows(result.stdout)
    # Each measure pairs a replicate's level-7 cells with its own dense cell.
    earlier = [100 * (1 - TICKET7[r][0] / DENSE[r][0]) for r in (0, 1)]  # 40.0, 30.0
    assert rows[1][1:] == ["21.1 / 21.1", "35.0% ± 7.1 (n=2)", "38.0%", "> 0%", "held"]
    assert rows[1][2] == spread(earlier, "%")
    assert rows[2][-1] == rows[3][-1] == "not reached"  # the run stops at Pm 21.1%
    reinit_loss = [100 * (REINIT7[r][1] - DENSE[r][1]) for r in (0, 1)]  # -0.5, -0.3
    assert rows[4][2] == spread(reinit_loss, " pts") and rows[4][-1] == "held"
    faster = [REINIT7[r][0] / TICKET7[r][0] for r in (0, 1)]  # 2.5, 1.82
    assert rows[5][1:] == ["21.1 / 21.1", spread(faster, "x", 2), "2.51x~", "> 1x", "held"]
    gain = [100 * (TICKET7[r][1] - REINIT7[r][1]) for r in (0, 1)]  # 1.0, 0.7
    assert rows[6][2] == spread(gain, " pts") and rows[6][-1] == "held"
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # Tickets at level 7 now stop later than the dense net: claim 1 is measured anew.
    for r in (0, 1):
        write(store, run_id, cell(r, 7, stop=1300, acc=TICKET7[r][1]))
    again, _ = invoke(store, mnist, tmp_path, "lenet", "--budget", "small")
    rows = claim_rows(again.stdout)
    later = [100 * (1 - 1300 / DENSE[r][0]) for r in (0, 1)]  # -30.0, -18.2
    assert rows[1][2:] == [spread(later, "%"), "38.0%", "> 0%", "not held"]
    assert rows[5][2] == spread([REINIT7[r][0] / 1300 for r in (0, 1)], "x", 2)


def test_a_diverged_cell_leaves_its_replicate_out(small_store, mnist, tmp_path):
    store, run_id = small_store
    write(store, run_id, cell(1, 7, stop=100, acc=0.1, diverged=True))
    result, _ = invoke(store, mnist, tmp_path, "lenet", "--budget", "small")
    rows = claim_rows(result.stdout)
    assert rows[1][2] == "40.0% (n=1)"  # replicate 0 alone
    assert "1 diverged cell(s) left out" in result.stdout


def measurements(cells: list[dict]) -> reproduce.Measurements:
    return reproduce.Measurements(cells)


def test_claims_match_levels_by_nearest_pm_within_tolerance():
    t = measurements(small_cells())
    assert t.match(21.1) == 7 and t.match(51.3) == 3 and t.match(100) == 0
    assert t.match(13.5) is None  # nearest is 21.1%, far more than 10% away
    assert t.match(21.1 * 1.09) == 7 and t.match(21.1 * 1.12) is None
    results = reproduce.evaluate("lenet", small_cells())
    assert [r.verdict for r in results][:3] == ["held", "not reached", "not reached"]
    assert results[0].level == 7 and results[1].stat is None


def test_claims_need_the_cells_they_measure():
    no_controls = [c for c in small_cells() if c["member"] == "ticket"]
    verdicts = [r.verdict for r in reproduce.evaluate("lenet", no_controls)]
    assert verdicts == ["held", "not reached", "not reached", "no data", "no data", "no data"]


def conv2_cells(gains: dict[int, float], deepest: int) -> list[dict]:
    """Conv-2-like cells down to level `deepest` (Pm 0.8^k), tickets `gains[level]` points
    over a dense net at 70%."""
    cells = [dict(cell(0, 0, stop=1000, acc=0.70), percent_remaining=100.0)]
    for level in range(1, deepest + 1):
        acc = 0.70 + gains.get(level, 1.0) / 100
        cells.append(dict(cell(0, level, stop=500, acc=acc), percent_remaining=100 * 0.8**level))
    return cells


def test_a_range_claim_is_checked_at_every_level_and_needs_the_run_to_reach_its_end():
    claim = next(c for c in SHIPPED["figures"]["conv2"]["claims"] if "pm_range" in c)
    check = lambda cells: reproduce.evaluate_claim(claim, measurements(cells))  # noqa: E731
    held = check(conv2_cells({}, 18))  # Pm down to 1.8%: every level with Pm > 2% is above dense
    assert held.verdict == "held" and max(held.levels) == 17 and 18 not in held.levels
    dip = check(conv2_cells({9: -0.5}, 18))
    assert dip.verdict == "not held" and dip.level == 9 and dip.stat.mean == pytest.approx(-0.5)
    short = check(conv2_cells({}, 10))  # Pm 10.7%: 2% not reached
    assert short.verdict == "not reached" and short.stat.mean == pytest.approx(1.0)
    assert check(conv2_cells({4: -1.0}, 10)).verdict == "not held"  # fails before its end


def test_overlay_points_come_from_the_shipped_paper_data():
    t = measurements(small_cells())
    dense_stop = np.mean([DENSE[r][0] for r in (0, 1)])
    dense_acc = 100 * np.mean([DENSE[r][1] for r in (0, 1)])
    expected = {}
    for claim in LENET["claims"]:
        if claim["overlay"]:
            if claim["measure"] == "earlier_than_dense":
                expected["early_stop_iter"] = (claim["pm"], dense_stop * (1 - claim["value"] / 100))
            if claim["measure"] == "accuracy_over_dense":
                expected["early_stop_test_acc"] = (claim["pm"], dense_acc + claim["value"])
    assert expected == {
        "early_stop_iter": (21.1, pytest.approx(1050 * 0.62)),
        "early_stop_test_acc": (13.5, pytest.approx(97.9)),
    }
    points = reproduce.overlay_points("lenet", t)
    assert {p.field: (p.percent_remaining, pytest.approx(p.value)) for p in points} == expected

    resnet = reproduce.overlay_points("resnet20-warmup", t)
    claim = SHIPPED["figures"]["resnet20-warmup"]["claims"][0]
    assert [(p.field, p.percent_remaining, p.value, p.filled) for p in resnet] == [
        ("final_test_acc", claim["pm"], claim["value"], True)  # absolute: no anchoring
    ]


def test_the_figure_draws_the_overlay_as_stars(small_store, tmp_path):
    store, run_id = small_store
    small = reproduce.protocol("lenet", "small").spec
    cells = reproduce.protocol_cells(report.cell_metrics(store, run_id), small)
    points = reproduce.overlay_points("lenet", measurements(cells))
    fig = plot.figure(store, [run_id], (1500, 500), 100, overlay=points, cells={run_id: cells})
    for panel, point in zip(fig.panels[1:], points, strict=True):
        (star,) = [s for s in panel.series if s.label.startswith("paper")]
        assert star.marker == "*" and star.color == "black" and star.linestyle is None
        assert star.x == [point.percent_remaining]
        assert star.y == [point.value]
        assert panel.x_domain[1] < point.percent_remaining  # the axis reaches the point
    assert set(reproduce.ACCURACY) == set(plot.ACCURACY_FIELDS)  # every claim accuracy drawable
    plain = plot.figure(store, [run_id], (1500, 500), 100)
    labels = [s.label for panel in plain.panels for s in panel.series]
    assert not [label for label in labels if label.startswith("paper")]


def test_the_shipped_paper_data_has_a_source_for_every_number():
    assert SHIPPED["paper"]["arxiv"] == "1803.03635v5"
    assert set(SHIPPED["figures"]) == set(reproduce.FIGURES)
    for figure in SHIPPED["figures"].values():
        assert figure["source"]["where"]
        labelled = figure.get("labelled_pm")
        if labelled:
            assert labelled["source"]["where"] and labelled["source"]["approximate"] is False
        for claim in figure["claims"]:
            source = claim["source"]
            assert source["where"] and isinstance(source["approximate"], bool), claim["id"]
            assert claim["measure"] in reproduce.MEASURES
            text = claim["text"]
            if "pm" in claim:  # the paper's Pm is the one its text states (rounded if loose)
                assert f"{claim['pm']:g}%" in text or (
                    source["approximate"] and f"{round(claim['pm'])}%" in text
                ), text
            if claim["value"] is not None:
                assert f"{claim['value']:g}" in text, text
            else:
                assert source["approximate"] or "pm_range" in claim, text
    # Figure 3's labelled Pm are LeNet's after 0, 3, 7, 9 and 15 rounds
    pms = [round(lenet_pm(k), 1) for k in (0, 3, 7, 9, 15)]
    assert pms == LENET["labelled_pm"]["values"]


def test_the_paper_budget_is_the_shipped_spec_of_the_paper():
    for name, figure in reproduce.FIGURES.items():
        proto = reproduce.protocol(name)
        shipped = spec.load(str(spec.shipped_specs()[figure.experiment]))
        trained = [k for k in FIELDS if not k.startswith("run.")]
        assert {k: proto.spec[k] for k in trained} == {k: shipped[k] for k in trained}, name
        assert proto.cuts == () and proto.spec["run.replicates"] == 5
    small = reproduce.protocol("lenet", "small", ["train.seed=3"])
    assert "train.seed: 0 -> 3" in small.cuts and small.spec["run.rounds"] == 7


def test_unknown_figures_and_missing_data_exit_2(tmp_path, monkeypatch):
    result = CliRunner().invoke(group, ["reproduce", "vgg19", "--store", str(tmp_path)])
    assert result.exit_code == 2
    assert "'lenet', 'conv2', 'resnet20-warmup', 'sparse-lenet'" in result.stderr
    monkeypatch.setenv("LT_DATA_DIR", str(tmp_path / "empty"))
    args = ["reproduce", "conv2", "--budget", "small", "--store", str(tmp_path / "s")]
    result = CliRunner().invoke(group, [*args, "--data-dir", str(tmp_path / "empty")])
    assert result.exit_code == 2 and "cifar" in result.stderr.lower()


def test_cells_beyond_the_protocol_are_left_out():
    small = reproduce.protocol("lenet", "small").spec
    extra = [
        cell(2, 7, stop=100, acc=0.5),  # a third replicate
        cell(0, 8, stop=100, acc=0.5),  # a deeper level
        cell(0, 7, "reinit-1", stop=100, acc=0.5),  # a second reinit
        cell(0, 7, "random-0", stop=100, acc=0.5),  # a control kind it does not ask for
    ]
    assert reproduce.protocol_cells(small_cells() + extra, small) == small_cells()
