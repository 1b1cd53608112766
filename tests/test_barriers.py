"""Trust pass 3, items 1, 2 and 8: the two measures of an error path (Frankle et al. 2020's
instability and the barrier above the straight line between the ends' errors), each pinned to
its formula; level barriers measured after the fact from the store, bit for bit as a run that
asked for them from the start; and layer collapse's boundary."""

from __future__ import annotations

import hashlib
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

from ltcli.core import atomic
from ltcli.core.errors import UsageError
from ltcli.experiment import spec
from ltcli.experiment.plan import Progress, plan_of
from ltcli.results import export, page, report
from ltcli.science import interpolation, pruning
from ltcli.storage.store import ADDED, MANIFEST, CellKey, Store
from ltcli.train import launch, level

pytestmark = pytest.mark.integration

# A path whose ends differ (10% and 50% error) and whose error rises above the straight line
# between them only near the far end: the two measures differ four-fold.
ALPHAS = np.linspace(0, 1, 5)
ERRORS = np.array([0.10, 0.12, 0.20, 0.45, 0.50])


@pytest.mark.unit
def test_the_instability_is_the_highest_error_minus_the_mean_of_the_ends():
    assert interpolation.instability(ERRORS) == pytest.approx(0.50 - (0.10 + 0.50) / 2)
    # Not the straight line (0.05), nor the larger (0.0) or the smaller end (0.40).
    assert interpolation.instability(ERRORS) == pytest.approx(0.20, abs=1e-12)
    rng = np.random.default_rng(0)
    for errors in rng.random((20, 31)):
        expected = float(np.max(errors)) - (float(errors[0]) + float(errors[-1])) / 2
        assert interpolation.instability(errors) == pytest.approx(expected, abs=1e-12)


@pytest.mark.unit
def test_the_barrier_is_the_highest_rise_above_the_line_between_the_ends_errors():
    # 0.45 at a = 3/4 against the line's 0.10 + 0.75 * 0.40 = 0.40; elsewhere below it.
    assert interpolation.barrier_above_line(ALPHAS, ERRORS) == pytest.approx(0.05, abs=1e-12)
    # The line runs from the first end's error to the last's, at each point's own alpha.
    uneven = np.array([0.0, 0.1, 1.0])
    assert interpolation.barrier_above_line(uneven, np.array([0.1, 0.2, 0.5])) == pytest.approx(
        0.2 - (0.1 + 0.1 * 0.4), abs=1e-12
    )
    lopsided = np.array([0.10, 0.40, 0.30, 0.30, 0.50])  # the line reversed would give 0.40
    assert interpolation.barrier_above_line(ALPHAS, lopsided) == pytest.approx(0.20, abs=1e-12)
    rng = np.random.default_rng(1)
    alphas = np.linspace(0, 1, 31)
    for errors in rng.random((20, 31)):
        line = [(1 - a) * errors[0] + a * errors[-1] for a in alphas.tolist()]
        expected = max(e - x for e, x in zip(errors.tolist(), line, strict=True))
        assert interpolation.barrier_above_line(alphas, errors) == pytest.approx(
            expected, abs=1e-12
        )


@pytest.mark.unit
def test_a_path_summary_holds_both_measures_of_its_errors():
    metrics = np.stack([np.linspace(2.0, 1.0, 5), 1 - ERRORS], axis=1)  # (loss, accuracy)
    summary = interpolation.summarize_path(ALPHAS, metrics)
    assert summary["test_error"] == pytest.approx(ERRORS.tolist(), abs=1e-12)
    assert summary["test_loss"] == np.linspace(2.0, 1.0, 5).tolist()
    assert summary["alpha"] == ALPHAS.tolist()
    assert summary["instability"] == pytest.approx(0.20, abs=1e-12)
    assert summary["barrier_above_line"] == pytest.approx(0.05, abs=1e-12)
    assert "barrier" not in summary


def _first_weight_error(params, batch_stats, data):
    """A stand-in evaluation whose error is the first weight of ``w`` and loss the sum."""
    return jnp.stack([params["w"].sum(), 1.0 - params["w"][0]])


def test_the_path_runs_evenly_from_the_first_network_to_the_second_under_the_mask():
    a = {"params": {"w": np.array([0.2, 0.5, -1.0], np.float32)}, "batch_stats": {}}
    b = {"params": {"w": np.array([0.6, -0.5, 3.0], np.float32)}, "batch_stats": {}}
    mask = {"w": np.array([1.0, 1.0, 0.0], np.float32)}
    result = interpolation.path(_first_weight_error, None, a, b, mask, None, None, bn_momentum=0.9)
    alphas = np.linspace(0.0, 1.0, interpolation.POINTS)
    np.testing.assert_allclose(result["alpha"], alphas, atol=1e-7)
    w_a, w_b, m = (
        np.asarray(x, np.float64) for x in (a["params"]["w"], b["params"]["w"], mask["w"])
    )
    points = [m * ((1 - t) * w_a + t * w_b) for t in alphas]  # the third weight is pruned
    np.testing.assert_allclose(result["test_error"], [p[0] for p in points], atol=1e-6)
    np.testing.assert_allclose(result["test_loss"], [p.sum() for p in points], atol=1e-6)
    point = interpolation.interpolate(a["params"], b["params"], mask, 0.3)
    np.testing.assert_allclose(point["w"], m * (0.7 * w_a + 0.3 * w_b), atol=1e-7)


@pytest.mark.unit
def test_paths_stored_before_the_rename_read_their_barrier_from_its_old_key():
    old = {"alpha": [0, 1], "test_error": [0.1, 0.1], "instability": 0.3, "barrier": 0.1}
    assert report.path_measures(old) == {"instability": 0.3, "barrier_above_line": 0.1}
    new = {"instability": 0.3, "barrier_above_line": 0.2}
    assert report.path_measures(new) == {"instability": 0.3, "barrier_above_line": 0.2}
    assert report.path_measures(None) == {"instability": None, "barrier_above_line": None}


@pytest.mark.unit
def test_a_layer_keeping_one_weight_has_not_collapsed():
    mask = {
        "fc1": {"kernel": np.zeros((4, 3), np.float32), "bias": np.ones(3, np.float32)},
        "fc2": {"kernel": np.eye(3, 2, dtype=np.float32) * np.array([1, 0], np.float32)},
    }
    assert pruning.counts(mask)["fc2/kernel"] == (1, 6)
    assert level.collapsed_layers(mask) == ["fc1/kernel"]
    counts = {"layers": {"fc1/kernel": [0, 12], "fc2/kernel": [1, 6], "out/kernel": [0, 0]}}
    assert report.collapsed_layers(counts) == ["fc1/kernel"]


# -- level barriers measured after the fact ------------------------------------------------


def _spec(folder: Path, **run: object) -> spec.Spec:
    table = {
        "data": {"dataset": f"folder:{folder}", "validation": 50},
        "model": {"name": "lenet300"},
        "train": {"iterations": "200it", "eval_every": "100it", "batch_size": 20},
        "prune": {"rate": 0.5},
        "run": {"rounds": 2, "deterministic": True, **run},
    }
    return spec.from_mapping("barriers", table)


class Notes(Progress):
    def __init__(self):
        self.notes: list[str] = []
        self.levels: list[int] = []

    def level(self, level, cells, total_steps, start):
        self.levels.append(level)

    def note(self, text: str) -> None:
        self.notes.append(text)


def _digests(store: Store, run_id: str, cell: CellKey) -> dict[str, str]:
    folder = store.cell_dir(run_id, cell)
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in folder.iterdir()
        if p.name != MANIFEST and not p.name.startswith(ADDED)
    }


def test_barriers_asked_later_are_measured_from_the_store_as_from_the_start(class_folder, tmp_path):
    first = Store(tmp_path / "from_start")
    run_id = launch.run(_spec(class_folder, barriers=True), first)
    later = Store(tmp_path / "later")
    assert launch.run(_spec(class_folder), later) == run_id  # not part of the run id
    tickets = [CellKey(0, 1), CellKey(0, 2)]
    assert all("level_barrier" not in later.read_metrics(run_id, c) for c in tickets)
    stored = {c: _digests(later, run_id, c) for c in tickets}

    notes = Notes()
    launch.run(_spec(class_folder, barriers=True), later, progress=notes)
    assert notes.levels == []  # nothing trained
    measured = [n for n in notes.notes if n.startswith("level barrier")]
    assert len(measured) == 2 and "stored level 2 r0, from level 1" in measured[1]
    for cell in tickets:
        recorded = later.read_metrics(run_id, cell)["level_barrier"]
        assert recorded == first.read_metrics(run_id, cell)["level_barrier"]  # bit for bit
        assert recorded["from_level"] == cell.level - 1
        errors = np.asarray(recorded["test_error"])
        assert recorded["instability"] == interpolation.instability(errors)
        assert recorded["barrier_above_line"] == interpolation.barrier_above_line(
            np.asarray(recorded["alpha"]), errors
        )
        assert _digests(later, run_id, cell) == stored[cell]  # the stored files stay as they were
        assert ADDED in (later.cell_dir(run_id, cell) / MANIFEST).read_text()
    assert "level_barrier" not in later.read_metrics(run_id, CellKey(0, 0))

    again = Notes()
    launch.run(_spec(class_folder, barriers=True), later, progress=again)
    assert again.notes == [] and again.levels == []  # measured once

    columns, rows = export.cell_rows(later, [run_id])
    assert "level_barrier" not in columns
    for row in rows:
        record = later.read_metrics(run_id, CellKey(0, row["level"])).get("level_barrier", {})
        assert row["level_barrier_above_line"] == record.get("barrier_above_line")
        assert row["level_instability"] == record.get("instability")
    assert [r["level_instability"] is None for r in rows] == [True, False, False]


def test_the_report_charts_both_level_measures_and_names_each(class_folder, tmp_path):
    store = Store(tmp_path)
    run_id = launch.run(_spec(class_folder, barriers=True, rounds=1), store)
    html = page.build(store, [run_id])
    assert "Level barrier above the line against weights remaining" in html
    assert "Level instability against weights remaining" in html
    assert "minus the mean of the ends' errors" in html


@pytest.mark.unit
def test_one_shot_levels_refuse_barriers(class_folder):
    loaded = _spec(class_folder, barriers=True)
    one_shot = spec.apply_overrides(loaded, {"prune.one_shot": [50.0, 20.0]})
    desc, source = launch.prepare(one_shot)
    with pytest.raises(UsageError, match="one-shot"):
        plan_of(one_shot, desc, source)


@pytest.mark.unit
def test_an_addition_is_read_only_once_the_manifest_lists_it(tmp_path):
    store, cell = Store(tmp_path), CellKey(0, 1)
    mask = {"fc1": {"kernel": np.ones((2, 2), np.float32)}}
    store.write_cell("run", cell, mask, {"level": 1})
    folder = store.cell_dir("run", cell)
    (folder / f"{ADDED}0123456789abcdef.json").write_text('{"level_barrier": 1}')  # a crash
    assert store.read_metrics("run", cell) == {"level": 1}
    store.add_to_metrics("run", cell, {"level_barrier": {"instability": 0.5}})
    store.follower().add_to_metrics("run", cell, {"other": 1})  # only the writer writes
    assert store.read_metrics("run", cell) == {"level": 1, "level_barrier": {"instability": 0.5}}
    stored = folder / "metrics.json"
    assert stored.read_text().strip() == '{\n  "level": 1\n}'
    # A second addition never rewrites the file the manifest lists: a crash after its new
    # file is written (the manifest not yet rewritten) still reads the first addition whole.
    listed = set(atomic.read_json(folder / MANIFEST))
    (folder / f"{ADDED}fedcba9876543210.json").write_text('{"torn": ')
    assert store.read_metrics("run", cell) == {"level": 1, "level_barrier": {"instability": 0.5}}
    store.add_to_metrics("run", cell, {"other": 2})
    assert store.read_metrics("run", cell) == {
        "level": 1,
        "level_barrier": {"instability": 0.5},
        "other": 2,
    }
    now = set(atomic.read_json(folder / MANIFEST))
    assert len(now - listed) == 1 and len(listed - now) == 1  # the old addition unlisted
    assert not (folder / next(iter(listed - now))).exists()  # and removed
