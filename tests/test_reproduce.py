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
from ltcli.results.reproduce import arms, ramanujan2020, zhou2019
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


# Zhou et al. 2019 (supermask-lenet) and Ramanujan et al. 2020 (edge-popup-lenet): one run
# per arm; the runs are stubbed here (the cells written by hand), so nothing trains.


def arm_cells(levels: dict[int, tuple[float, list[float]]], diverged: tuple[int, ...] = ()):
    """Tickets at each level: (percent remaining, final test accuracy per replicate)."""
    return [
        dict(
            cell(r, level, stop=100, acc=acc, diverged=level in diverged),
            percent_remaining=remaining,
        )
        for level, (remaining, accs) in levels.items()
        for r, acc in enumerate(accs)
    ]


def stub_runs(monkeypatch, cells_by_arm: dict[str, list[dict]]) -> list:
    """`launch.run` returns the arm's name as its run id (recording each spec), and the
    store's cells of that id are `cells_by_arm[name]`."""
    launched = []

    def fake_run(s, store, *, data_dir=None, name=None, progress=None):
        arm = launched_arm(s)
        launched.append((arm, name, s))
        return arm

    def launched_arm(s) -> str:
        if s["prune.method"] == "supermask":
            return "supermask"
        if s["prune.method"] == "edge-popup":
            return "edge-popup-kn" if s["prune.frozen_init"] == "kaiming-normal" else "edge-popup"
        return s["prune.criterion"]

    monkeypatch.setattr(launch, "run", fake_run)
    monkeypatch.setattr(report, "cell_metrics", lambda store, run_id: cells_by_arm[run_id])
    return launched


def test_zhou_and_ramanujan_paper_protocols_are_their_reference_codes():
    papers = {
        "supermask-lenet": zhou2019.protocols("supermask-lenet", "paper"),
        "edge-popup-lenet": ramanujan2020.protocols("edge-popup-lenet", "paper"),
    }
    sm = papers["supermask-lenet"]["supermask"]
    # train_supermask.py's README command: sgd, lr 100, momentum 0.9, batch 250, 2000 epochs
    assert (sm["train.optimizer"], sm["train.lr"], sm["train.momentum"]) == ("sgd", 100.0, 0.9)
    assert sm["train.batch_size"] == 250 and sm["train.iterations"].iterations(55000, 250) == 440000
    assert (sm["prune.method"], list(sm["prune.one_shot"])) == ("supermask", [50.0])
    for criterion in zhou2019.CRITERIA:  # print_train_command.sh's fc: adam 0.0012, 55 epochs
        s = papers["supermask-lenet"][criterion]
        assert (s["prune.method"], s["prune.criterion"]) == ("magnitude", criterion)
        assert list(s["prune.one_shot"]) == [20.0, 5.0] and s["train.optimizer"] == "adam"
        assert s["train.lr"] == 1.2e-3 and s["train.batch_size"] == 60
        assert s["train.iterations"].iterations(55000, 60) == 55 * 917
    ep = papers["edge-popup-lenet"]
    for s in ep.values():  # simple_mnist_example.py's defaults
        assert (s["train.optimizer"], s["train.lr"], s["train.momentum"]) == ("sgd", 0.1, 0.9)
        assert (s["train.weight_decay"], s["train.schedule"]) == (5e-4, "cosine")
        assert (
            s["train.batch_size"] == 64 and s["train.iterations"].iterations(55000, 64) == 14 * 859
        )
        assert (s["prune.method"], list(s["prune.one_shot"])) == ("edge-popup", [50.0])
    assert ep["edge-popup"]["prune.frozen_init"] == "auto"
    assert ep["edge-popup-kn"]["prune.frozen_init"] == "kaiming-normal"
    for module, check in ((zhou2019, "supermask-lenet"), (ramanujan2020, "edge-popup-lenet")):
        assert all(s["run.replicates"] == 5 for s in papers[check].values())
        small = module.protocols(check, "small", ["train.seed=3"])
        for arm in module.ARMS:  # the small budget's cuts, as the docs list them, and --set
            assert arms.arm_cuts(check, module.CHECKS, arm, papers[check][arm.name]) == ()
            assert set(arms.arm_cuts(check, module.CHECKS, arm, small[arm.name])) == {
                f"train.iterations: {papers[check][arm.name]['train.iterations']} -> 2000it",
                "train.eval_every: 1ep -> 100it",
                "run.replicates: 5 -> 1",
                "train.seed: 0 -> 3",
            }
    with pytest.raises(Exception, match="unknown"):
        zhou2019.protocols("edge-popup-lenet", "small")


def test_a_supermask_is_read_where_it_learned_its_density_and_criteria_at_their_targets():
    supermask = zhou2019.ARMS[0]
    # level 0 diverged (lr 100 trains the dense net too): the supermask does not need it
    found = arms.read_arm(arm_cells({0: (100.0, [0.1]), 1: (31.0, [0.93])}, (0,)), supermask)
    assert found[50.0].level == 1 and found[50.0].remaining == 31.0
    assert found[50.0].accuracy.mean == pytest.approx(0.93)
    assert arms.read_arm(arm_cells({0: (100.0, [0.1])}), supermask)[50.0] is None
    large_final = next(a for a in zhou2019.ARMS if a.name == "large_final")
    cells = arm_cells({0: (100.0, [0.97, 0.98]), 1: (20.3, [0.975, 0.985]), 2: (5.6, [0.9])})
    found = arms.read_arm(cells, large_final)
    assert found[arms.DENSE].level == 0 and found[arms.DENSE].accuracy.n == 2
    assert found[20.0].accuracy.mean == pytest.approx(0.98) and found[5.0] is None  # 12% off
    diverged = arms.read_arm(arm_cells({0: (100.0, [0.9]), 1: (20.0, [0.1])}, (1,)), large_final)
    assert diverged[20.0] is None


def zhou_cells(acc: dict[str, tuple[float, float]], supermask: float) -> dict[str, list[dict]]:
    cells = {"supermask": arm_cells({0: (100.0, [0.1]), 1: (51.2, [supermask])}, (0,))}
    for criterion, (at20, at5) in acc.items():
        cells[criterion] = arm_cells({0: (100.0, [0.975]), 1: (20.0, [at20]), 2: (5.0, [at5])})
    return cells


def test_zhou_claims_are_the_stored_accuracies_differences(monkeypatch, tmp_path):
    acc = {
        "large_final": (0.97, 0.95),
        "magnitude_increase": (0.96, 0.90),  # below random at 5%
        "large_init": (0.95, 0.96),  # above large_final at 5%
        "small_final": (0.50, 0.20),
        "random": (0.94, 0.91),
    }
    launched = stub_runs(monkeypatch, zhou_cells(acc, supermask=0.956))
    checked = zhou2019.run("supermask-lenet", "small", Store(tmp_path))
    assert [a for a, _, _ in launched] == [arm.name for arm in zhou2019.ARMS]
    assert launched[0][1] == "reproduce-supermask-lenet-supermask-small"
    got = {c.claim.says: (c.difference, c.verdict) for c in checked.checks}
    assert got["learned supermask over θ0 far above chance"] == (pytest.approx(95.6 - 86), "held")
    assert got["large_final above random at 20%"] == (pytest.approx(3.0), "held")
    assert got["magnitude_increase above random at 5%"] == (pytest.approx(-1.0), "not held")
    assert got["large_final above large_init at 5%"] == (pytest.approx(-1.0), "not held")
    assert got["small_final below random at 20%"] == (pytest.approx(44.0), "held")
    assert len(checked.checks) == 1 + 4 * len(zhou2019.TARGETS)
    assert "95.60%" in checked.text and "+44.00 pts" in checked.text
    row = next(line for line in checked.text.splitlines() if line.startswith("supermask"))
    assert re.split(r"\s{2,}", row) == [
        "supermask over θ0",
        "50%",
        "1",
        "51.20%",
        "95.60 ± 0.00 (n=1)",
    ]

    launched = stub_runs(monkeypatch, zhou_cells(acc, supermask=0.80))  # below 86%
    low = zhou2019.run("supermask-lenet", "small", Store(tmp_path), settings=["train.seed=1"])
    assert low.checks[0].verdict == "not held" and launched[0][1] is None  # --set: no alias
    missing = zhou_cells(acc, 0.9)
    missing["random"] = arm_cells({0: (100.0, [0.975]), 1: (20.0, [0.9])})  # no 5% level
    stub_runs(monkeypatch, missing)
    verdicts = {
        c.claim.says: c.verdict
        for c in zhou2019.run("supermask-lenet", "small", Store(tmp_path)).checks
    }
    assert verdicts["large_final above random at 5%"] == "not reached"
    assert verdicts["large_final above random at 20%"] == "held"


def test_edge_popup_check_through_the_command(monkeypatch, tmp_path):
    cells = {
        "edge-popup": arm_cells({0: (100.0, [0.98]), 1: (50.0, [0.955])}),
        "edge-popup-kn": arm_cells({0: (100.0, [0.98]), 1: (50.0, [0.96])}),
    }
    stub_runs(monkeypatch, cells)
    args = ["reproduce", "edge-popup-lenet", "--budget", "small", "--store", str(tmp_path)]
    result = CliRunner().invoke(group, args)
    assert result.exit_code == 0, result.output
    assert "train.iterations: 14ep -> 2000it" in result.stderr
    lines = result.stdout.splitlines()
    row = lambda says: re.split(r"\s{2,}", next(x for x in lines if x.startswith(says)))  # noqa: E731
    assert row("edge-popup on random weights matches")[1:3] == [
        "-2.50 pts",
        "WRN-50 at 30%: 73.3 vs a trained ResNet-34",
    ]
    assert row("edge-popup on random weights matches")[3] == "not held"
    assert row("edge-popup on random weights far above")[1] == "95.50%"
    assert row("edge-popup on random weights far above")[3] == "held"
    assert row("signed Kaiming constant above")[1:4:2] == ["-0.50 pts", "not held"]


@pytest.mark.parametrize("check", ["supermask-lenet", "edge-popup-lenet"])
def test_the_learned_mask_checks_are_listed_and_draw_no_figure(check, tmp_path):
    listed = CliRunner().invoke(group, ["reproduce", "--help"])
    assert check in listed.stdout and check in reproduce.ARM_CHECKS
    args = ["reproduce", check, "-o", str(tmp_path / "x.png"), "--store", str(tmp_path / "s")]
    result = CliRunner().invoke(group, args)
    assert result.exit_code == 2 and "draws no figure" in result.output
    assert not (tmp_path / "s").exists()
    unknown = CliRunner().invoke(group, ["reproduce", "vgg19", "--store", str(tmp_path)])
    assert f"'{check}'" in unknown.stderr
