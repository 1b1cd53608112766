"""The run's integrity end to end on real data: late rewinding continues the clock,
diverged tickets stop pruning, --deterministic cells are bit-identical in any group, and
checkpoints and metrics are checked before use."""

from __future__ import annotations

import hashlib
from pathlib import Path

import jax
import numpy as np
import pytest
from click.testing import CliRunner

from ltcli.cli.main import cli
from ltcli.core import atomic
from ltcli.core.errors import LtError
from ltcli.experiment import descriptor, plan, spec
from ltcli.storage.store import CellKey, Store
from ltcli.train import context, device_data, launch

from helpers import KillAfter, Killed

pytestmark = pytest.mark.integration


def run_cli(*args: str):
    return CliRunner().invoke(cli, list(args))


def test_a_rewound_level_resumes_at_k_on_level_0s_clock(write_spec, tmp_path, real_data):
    loaded = spec.load(
        str(
            write_spec(
                train={"iterations": "300it", "warmup": "200it", "lr": 1e-3},
                prune={"rewind_iter": "100it"},
            )
        )
    )
    store = Store(tmp_path)
    run_id = launch.run(loaded, store, data_dir=real_data[1])
    dense, ticket = (store.read_metrics(run_id, CellKey(0, level)) for level in (0, 1))
    assert dense["curve"]["iteration"] == [100, 200, 300]
    assert ticket["curve"]["iteration"] == [200, 300]  # trains k..T, not k..k+T
    assert ticket["start_iteration"] == 100 and ticket["iterations"] == 300
    assert ticket["early_stop_iter"] in (200, 300)
    assert dense["first_learning_rate"] == 0.0  # warmup from 0
    assert ticket["first_learning_rate"] == pytest.approx(1e-3 * 100 / 200)  # schedule(k)
    # Level 1's first batch is level 0's batch at iteration k, drawn independently here.
    desc, source = launch.prepare(loaded, real_data[1])
    key = jax.random.fold_in(jax.random.fold_in(jax.random.PRNGKey(0), 1), 0)
    train_size = source.train_size - desc["data.validation"]
    stream = device_data.batch_indices(jax.random.fold_in(key, 0), 0, 101, 60, train_size)
    assert dense["first_batch"] == np.asarray(stream[0]).tolist()
    assert ticket["first_batch"] == np.asarray(stream[100]).tolist()


@pytest.mark.unit
def test_runs_with_late_rewinding_from_before_the_clock_fix_get_new_ids(write_spec, real_data):
    loaded = spec.load(str(write_spec(prune={"rewind_iter": "100it"})))
    desc, _ = launch.prepare(loaded, real_data[1])
    assert desc.hashed["schema"] == 2
    old_full = {**desc.full, "schema": 1}
    old_id = descriptor.run_id(descriptor.hashed_form(old_full))
    assert old_id != desc.run_id
    assert "restarted at step 0" in descriptor.outdated({"full": old_full})
    assert descriptor.outdated({"full": desc.full}) is None
    plain, _ = launch.prepare(spec.load(str(write_spec())), real_data[1])
    assert plain.hashed["schema"] == 1  # runs the change does not touch keep their ids


def test_a_deterministic_cell_is_bit_identical_alone_and_in_a_group(
    write_spec, tmp_path, real_data
):
    path = str(write_spec(train={"iterations": "200it"}))
    alone = Store(tmp_path / "alone")
    grouped = Store(tmp_path / "grouped")
    run_id = launch.run(spec.load(path), alone, data_dir=real_data[1])  # warm the caches
    for store, controls in ((alone, ""), (grouped, "reinit:1,random:1")):
        loaded = spec.apply_overrides(
            spec.load(path), {"run.controls": controls, "run.deterministic": True}
        )
        store = Store(store.root / "det")
        assert launch.run(loaded, store, data_dir=real_data[1]) == run_id
    a, b = Store(tmp_path / "alone" / "det"), Store(tmp_path / "grouped" / "det")
    cell = CellKey(0, 1)
    for name in ("weights.npz", "mask.npz"):
        assert _digest(a.cell_dir(run_id, cell) / name) == _digest(b.cell_dir(run_id, cell) / name)
    ma, mb = a.read_metrics(run_id, cell), b.read_metrics(run_id, cell)
    assert ma["curve"] == mb["curve"]
    assert ma["grouping"] == mb["grouping"] == "serial" and ma["deterministic"]
    assert len(list(b.finished_cells(run_id))) == 4  # the ticket trained among 3 cells


@pytest.mark.unit
def test_deterministic_refuses_vmap(tmp_path, real_data):
    store = tmp_path / "s"
    result = run_cli("run", "smoke", "--deterministic", "--grouping", "vmap", "--store", str(store))
    assert result.exit_code == 2 and "deterministic" in result.stderr
    assert not store.exists()


def test_a_diverged_ticket_is_stored_but_never_pruned(write_spec, tmp_path, real_data):
    path = write_spec(train={"optimizer": "sgd", "lr": 1e6}, run={"rounds": 2})
    store = tmp_path / "s"
    result = run_cli("run", str(path), "--store", str(store), "--data-dir", str(real_data[1]))
    assert result.exit_code == 1, result.output
    message = result.stderr.strip().splitlines()[-1]
    assert "replicate 0 level 0 ticket diverged" in message and "lower learning rate" in message
    (run_id,) = Store(store).run_ids()
    assert Store(store).read_metrics(run_id, CellKey(0, 0))["diverged"] is True
    assert not Store(store).is_finished(run_id, CellKey(0, 1))


class Notes(plan.Progress):
    def __init__(self):
        self.notes, self.starts = [], []

    def level(self, level, cells, total_steps, start):
        self.starts.append(start)

    def note(self, text):
        self.notes.append(text)


@pytest.fixture
def killed_run(write_spec, tmp_path, real_data, monkeypatch):
    """A run killed at iteration 200 of level 0, its checkpoint on disk."""
    monkeypatch.setattr(context, "SEGMENT_ITERATIONS", 100)
    loaded = spec.load(str(write_spec(train={"iterations": "300it"}, run={"rounds": 0})))
    store = Store(tmp_path / "killed")
    with pytest.raises(Killed):
        launch.run(
            loaded, store, data_dir=real_data[1], progress=KillAfter(200), checkpoint_seconds=0
        )
    (run_id,) = store.run_ids()
    return loaded, store, run_id


def test_checkpoint_leaves_are_stored_under_their_pytree_paths(killed_run):
    _, store, run_id = killed_run
    with np.load(store.checkpoint_path(run_id, "level_0")) as saved:
        names = set(saved.files)
    assert any(".mu[" in n or "mu[" in n for n in names), names
    assert any("nu[" in n for n in names)
    assert not any(n.startswith("leaf_") for n in names)


@pytest.mark.parametrize("tamper", ["inputs", "other_mask"])
def test_a_stale_checkpoint_is_discarded_with_a_note(killed_run, real_data, tmp_path, tamper):
    loaded, store, run_id = killed_run
    path = store.checkpoint_path(run_id, "level_0")
    with np.load(path) as saved:
        arrays = {k: saved[k] for k in saved.files}
    if tamper == "inputs":
        arrays["inputs"] = np.asarray("0" * 64)  # saved from other masks or start points
    else:  # a mask saved where the level's mask is not: its pruned weights would revive
        (mask_name,) = [k for k in arrays if k.startswith("state.mask") and "fc1']['kernel" in k]
        arrays[mask_name] = np.zeros_like(arrays[mask_name])
    atomic.write_npz(path, arrays)
    notes = Notes()
    launch.run(loaded, store, data_dir=real_data[1], progress=notes)
    discarded = [n for n in notes.notes if "discarded the checkpoint" in n]
    assert notes.starts == [0] and len(discarded) == 1
    reference = Store(tmp_path / "reference")
    launch.run(loaded, reference, data_dir=real_data[1])
    cell = CellKey(0, 0)
    assert (
        store.read_metrics(run_id, cell)["curve"] == reference.read_metrics(run_id, cell)["curve"]
    )


def test_tampered_metrics_are_caught_on_read(write_spec, tmp_path, real_data):
    store = Store(tmp_path)
    run_id = launch.run(spec.load(str(write_spec(run={"rounds": 0}))), store, data_dir=real_data[1])
    metrics = store.cell_dir(run_id, CellKey(0, 0)) / "metrics.json"
    metrics.write_text(metrics.read_text().replace('"level": 0', '"level": 0 '))
    with pytest.raises(LtError, match="does not match its manifest"):
        store.read_metrics(run_id, CellKey(0, 0))


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
