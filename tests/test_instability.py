"""Instability paths and their inputs, beyond what the combination table pins: batch-norm
statistics on a class-balanced sample, spawned copies that branch from their ticket's state,
layer collapse recorded and warned, and early stopping that reads the validation curve."""

from __future__ import annotations

from pathlib import Path

import jax
import numpy as np
import pytest

from ltcli.experiment import spec
from ltcli.experiment.member import Member
from ltcli.experiment.plan import Progress
from ltcli.science import interpolation
from ltcli.storage.store import CellKey, Store
from ltcli.train import device_data, launch, level
from ltcli.train.summary import summarize

pytestmark = pytest.mark.integration


def _spec(folder: Path, **sections: dict) -> spec.Spec:
    table = {
        "data": {"dataset": f"folder:{folder}", "validation": 50},
        "model": {"name": "lenet300"},
        "train": {"iterations": "200it", "eval_every": "100it", "batch_size": 20},
        "prune": {"rate": 0.5},
        "run": {"rounds": 0},
    }
    for section, fields in sections.items():
        table.setdefault(section, {}).update(fields)
    return spec.from_mapping("trust", table)


@pytest.mark.unit
def test_batch_norm_statistics_come_from_a_class_balanced_sample():
    labels = np.repeat(np.arange(10), 5000)  # a folder data set: sorted by class
    ids = interpolation.bn_sample(labels)
    assert np.bincount(labels[ids], minlength=10).tolist() == [100] * 10
    assert len(set(ids.tolist())) == len(ids) == interpolation.BN_EXAMPLES
    assert np.array_equal(ids, interpolation.bn_sample(labels))  # fixed
    assert not np.array_equal(ids, np.arange(len(ids)))  # not the first examples
    short = np.concatenate([np.zeros(20, int), np.ones(5000, int)])
    assert np.bincount(short[interpolation.bn_sample(short)]).tolist() == [20, 500]


def test_a_spawned_copy_branches_from_its_tickets_state_at_k(class_folder, tmp_path, monkeypatch):
    branches = []
    original = level.branch

    def spy(group, copy, ticket, key, label):
        out = original(group, copy, ticket, key, label)
        rows = jax.device_get(out)
        for a, b in zip(
            jax.tree.leaves((rows.params, rows.opt_state)),
            jax.tree.leaves(jax.device_get((group.params, group.opt_state))),
            strict=True,
        ):
            assert np.asarray(a[copy]).tobytes() == np.asarray(b[ticket]).tobytes()
        assert (rows.first_batch[copy] == -1).all()  # its next step records its own batch
        assert not np.array_equal(rows.data_key[copy], rows.data_key[ticket])
        branches.append(label)
        return out

    monkeypatch.setattr(level, "branch", spy)
    store = Store(tmp_path)
    loaded = _spec(class_folder, run={"spawn": ["0it", "100it"]})
    run_id = launch.run(loaded, store)
    assert [b.split()[-1] for b in branches] == ["spawn-0", "spawn-100"]
    # spawn-0 left the ticket's data order before its first step: it records its own batch.
    ticket = store.read_metrics(run_id, CellKey(0, 0))
    copy = store.read_metrics(run_id, CellKey(0, 0, Member("spawn", 0)))
    late = store.read_metrics(run_id, CellKey(0, 0, Member("spawn", 100)))
    assert copy["first_batch"] != ticket["first_batch"]
    assert late["first_batch"] != ticket["first_batch"]  # its own order, from position k
    assert late["start_iteration"] == 100 and late["curve"]["iteration"] == [200]
    assert late["schedule_step"] == 100
    own = jax.random.fold_in(jax.random.fold_in(jax.random.fold_in(jax.random.PRNGKey(0), 3), 0), 0)
    n = 250
    batch = device_data.batch_indices(jax.random.fold_in(own, 0), 0, 1, 20, n)[0]
    assert copy["first_batch"] == np.asarray(batch).tolist()


def test_a_copy_added_later_branches_from_a_replayed_ticket(class_folder, tmp_path, monkeypatch):
    store = Store(tmp_path)
    loaded = _spec(class_folder)
    run_id = launch.run(loaded, store)
    branches = []
    original = level.branch
    monkeypatch.setattr(level, "branch", lambda *a: branches.append(a[1:3]) or original(*a))
    stored = store.read_trained(run_id, CellKey(0, 0))
    assert launch.run(spec.apply_overrides(loaded, {"run.spawn": "100it"}), store) == run_id
    assert branches == [(0, 1)]  # the copy (row 0) branched from the replayed ticket (row 1)
    again = store.read_trained(run_id, CellKey(0, 0))
    assert all(
        np.array_equal(a, b)
        for a, b in zip(jax.tree.leaves(stored), jax.tree.leaves(again), strict=True)
    )  # the stored ticket is not rewritten by its replay
    path = store.read_metrics(run_id, CellKey(0, 0, Member("spawn", 100)))["instability"]
    assert path["partner"] == "ticket"


class Notes(Progress):
    def __init__(self):
        self.notes = []

    def note(self, text: str) -> None:
        self.notes.append(text)


def test_layer_collapse_is_recorded_and_warned(class_folder, tmp_path):
    notes = Notes()
    loaded = _spec(
        class_folder,
        prune={"method": "magnitude-init", "strategy": "global", "one_shot": [0.5, 50.0]},
    )
    store = Store(tmp_path)
    run_id = launch.run(loaded, store, progress=notes)
    collapsed = store.read_metrics(run_id, CellKey(0, 2))
    assert collapsed["collapsed"] == ["fc1/kernel", "fc2/kernel"]
    assert store.read_metrics(run_id, CellKey(0, 1))["collapsed"] == []
    assert store.read_metrics(run_id, CellKey(0, 0))["collapsed"] == []
    (warning,) = [n for n in notes.notes if "collapse" in n]
    assert "level 2" in warning and "fc1/kernel" in warning


@pytest.mark.unit
def test_early_stopping_reads_the_validation_loss_not_the_test_loss():
    # columns: val_loss, val_acc, test_loss, test_acc; the minima are at different points.
    curve = np.array(
        [
            [0.9, 0.70, 0.30, 0.71],
            [0.5, 0.80, 0.80, 0.81],  # lowest validation loss
            [0.7, 0.75, 0.10, 0.91],  # lowest test loss
        ]
    )
    summary = summarize(curve, 100, start=0)
    assert summary["early_stop_iter"] == 200
    assert summary["early_stop_test_acc"] == pytest.approx(0.81)
    assert summary["min_val_loss"] == pytest.approx(0.5)
    assert summary["early_stop_test_loss"] == pytest.approx(0.80)


@pytest.mark.unit
@pytest.mark.parametrize(
    "prune,changed",
    [
        (
            {"method": "synflow", "strategy": "global", "one_shot": [50.0], "rewind_iter": "100it"},
            True,
        ),
        ({"method": "synflow", "strategy": "global", "one_shot": [50.0]}, False),
        ({"one_shot": [50.0, 20.0], "retrain": "lr-rewind"}, True),
        ({"one_shot": [50.0, 20.0], "retrain": "finetune"}, True),
        ({"one_shot": [50.0], "retrain": "lr-rewind"}, False),
        ({"retrain": "lr-rewind"}, False),
    ],
)
def test_runs_whose_cells_the_fixes_change_get_new_ids(class_folder, prune, changed):
    from ltcli.experiment import descriptor

    desc, _ = launch.prepare(_spec(class_folder, prune=prune))
    assert (desc.full["schema"] == 4) == changed
    if changed:
        old = descriptor.hashed_form(dict(desc.full, schema=3))
        assert descriptor.run_id(old) != desc.run_id
        assert "scores θk" in descriptor.outdated({"full": dict(desc.full, schema=1)})


def test_level_barriers_are_measured_between_successive_trained_tickets(class_folder, tmp_path):
    from ltcli.results import export
    from ltcli.train import instability
    from ltcli.train.feeders import OnDevice
    from ltcli.train.runner import Runner

    loaded = _spec(class_folder, run={"rounds": 2, "barriers": True})
    store = Store(tmp_path)
    run_id = launch.run(loaded, store)
    context = Runner(store, *launch.prepare(loaded)).context
    for lv in (1, 2):
        recorded = store.read_metrics(run_id, CellKey(0, lv))["level_barrier"]
        assert recorded["from_level"] == lv - 1
        # The same path computed here from the two stored tickets, under the mask before.
        before, after = (store.read_trained(run_id, CellKey(0, k)) for k in (lv - 1, lv))
        mask = store.read_mask(run_id, CellKey(0, lv - 1), before["params"])
        again = instability.path(context.engine, before, after, mask, OnDevice(context.data))
        assert recorded["test_error"] == pytest.approx(again["test_error"], abs=1e-6)
        for measure in ("barrier_above_line", "instability"):
            assert recorded[measure] == pytest.approx(again[measure], abs=1e-6)
        first, last = (store.read_metrics(run_id, CellKey(0, k)) for k in (lv - 1, lv))
        assert recorded["test_error"][0] == pytest.approx(1 - first["final_test_acc"], abs=1e-6)
        assert recorded["test_error"][-1] == pytest.approx(1 - last["final_test_acc"], abs=1e-6)
    assert "level_barrier" not in store.read_metrics(run_id, CellKey(0, 0))
    rows = export.cell_rows(store, [run_id])[1]
    assert [r["level_barrier_above_line"] is not None for r in rows] == [False, True, True]
