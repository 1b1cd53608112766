"""Retraining modes (Renda et al. 2020) and instability analysis (Frankle et al.
2020): where a pruned level starts, which learning rates it sees, and the error path between
two copies of a network."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from ltcli.cli.main import cli
from ltcli.experiment import spec
from ltcli.models.lenet import MLP
from ltcli.results import plot_instability
from ltcli.science import interpolation, pruning
from ltcli.storage.store import CellKey, Store
from ltcli.train import engine, instability, launch, runner
from ltcli.train.engine import Engine, unstack
from ltcli.train.feeders import OnDevice
from ltcli.train.recipes import TrainConfig, learning_rate

from helpers import learnable_data

pytestmark = pytest.mark.integration

WARMUP = {"iterations": "300it", "warmup": "200it", "lr": 1e-3, "lr_drops": ["250it"]}


def run_spec(write_spec, real_data, store, **sections):
    loaded = spec.load(str(write_spec(**sections)))
    run_id = launch.run(loaded, store, data_dir=real_data[1])
    desc, source = launch.prepare(loaded, real_data[1])
    return run_id, runner.Runner(store, desc, source)


def test_lr_rewinding_starts_from_the_trained_survivors_at_schedule_k(
    write_spec, tmp_path, real_data
):
    store = Store(tmp_path)
    run_id, run = run_spec(
        write_spec,
        real_data,
        store,
        train=WARMUP,
        prune={"rewind_iter": "100it", "retrain": "lr-rewind"},
        run={"controls": "reinit:1"},
    )
    start, mask, _ = run.starts.cell_inputs(CellKey(0, 1))
    trained = store.read_trained(run_id, CellKey(0, 0))
    for name, value in pruning.flatten(start["params"]).items():
        kept = pruning.flatten(mask)[name] == 1
        assert np.array_equal(value[kept], pruning.flatten(trained["params"])[name][kept])
        assert np.all(value[~kept] == 0)
    theta_k = store.load_weights(store.rewind_path(run_id, 0))["params"]
    assert not np.array_equal(start["params"]["fc2"]["kernel"], theta_k["fc2"]["kernel"])
    ticket = store.read_metrics(run_id, CellKey(0, 1))
    assert ticket["first_learning_rate"] == pytest.approx(1e-3 * 100 / 200)  # schedule(k)
    assert ticket["curve"]["iteration"] == [200, 300]
    # Controls keep the 2019 definitions: a reinit control starts from fresh weights.
    reinit, _, _ = run.starts.cell_inputs(CellKey(0, 1, "reinit-0"))
    assert not np.array_equal(reinit["params"]["fc1"]["kernel"], start["params"]["fc1"]["kernel"])


def test_finetuning_trains_at_the_final_learning_rate_throughout(write_spec, tmp_path, real_data):
    store = Store(tmp_path)
    run_id, run = run_spec(
        write_spec,
        real_data,
        store,
        train=WARMUP,
        prune={"rewind_iter": "100it", "retrain": "finetune"},
    )
    final = 1e-3 * 0.1
    ticket = store.read_metrics(run_id, CellKey(0, 1))
    assert ticket["first_learning_rate"] == pytest.approx(final)
    assert ticket["curve"]["iteration"] == [200, 300]  # T - k steps
    assert run.starts.schedule_step(CellKey(0, 1)) == 300
    schedule = learning_rate(run.context.cfg)
    assert all(float(schedule(300 + t)) == pytest.approx(final) for t in range(0, 200, 7))
    trained = store.read_trained(run_id, CellKey(0, 0))["params"]
    start, mask, _ = run.starts.cell_inputs(CellKey(0, 1))
    kept = mask["fc1"]["kernel"] == 1
    assert np.array_equal(start["params"]["fc1"]["kernel"][kept], trained["fc1"]["kernel"][kept])


CFG = TrainConfig("sgd", 0.05, batch_size=20, iterations=40, eval_every=10, momentum=0.9)
MODEL = MLP(hidden=(16,), num_classes=4)


@pytest.fixture(scope="module")
def data():
    return learnable_data()


def two_copies(data, keys):
    """Two copies of one sparse network trained from the same start with data keys `keys`."""
    model = Engine(MODEL, CFG, "serial", 4)
    params, stats = model.init(jax.random.PRNGKey(0), (6, 6, 1))
    rng = np.random.default_rng(0)
    mask = jax.tree.map(lambda x: (rng.random(x.shape) > 0.5).astype(np.float32), params)
    params = jax.tree.map(lambda p, m: np.asarray(p) * m, params, mask)
    group = model.start([params] * 2, [stats] * 2, [mask] * 2, keys)
    group, curves = model.segment(group, 0, 4, data)
    a, b = unstack(group, 2)
    return model, mask, a, b, np.asarray(curves)


def variables(row):
    return {"params": row.params, "batch_stats": row.batch_stats}


def test_two_copies_with_the_same_data_key_are_stable_and_identical(data):
    key = jax.random.PRNGKey(7)
    model, mask, a, b, _ = two_copies(data, [key, key])
    assert all(
        np.array_equal(x, y)
        for x, y in zip(jax.tree.leaves(a.params), jax.tree.leaves(b.params), strict=True)
    )
    result = instability.path(model, variables(a), variables(b), mask, OnDevice(data))
    assert result["instability"] == pytest.approx(0.0, abs=1e-7)
    assert len(result["alpha"]) == interpolation.POINTS


def test_the_paths_ends_are_the_two_networks_own_evaluations(data):
    model, mask, a, b, curves = two_copies(data, [jax.random.PRNGKey(1), jax.random.PRNGKey(2)])
    result = instability.path(model, variables(a), variables(b), mask, OnDevice(data))
    test_loss, test_acc = curves[:, -1, 2], curves[:, -1, 3]
    np.testing.assert_allclose(result["test_error"][0], 1 - test_acc[0], atol=1e-6)
    np.testing.assert_allclose(result["test_error"][-1], 1 - test_acc[1], atol=1e-6)
    np.testing.assert_allclose([result["test_loss"][0], result["test_loss"][-1]], test_loss, 1e-5)
    errors = np.asarray(result["test_error"])
    assert result["instability"] == pytest.approx(errors.max() - (errors[0] + errors[-1]) / 2)


def test_every_interpolated_network_is_masked(data):
    _, mask, a, b, _ = two_copies(data, [jax.random.PRNGKey(1), jax.random.PRNGKey(2)])
    for alpha in np.linspace(0, 1, 5):
        point = interpolation.interpolate(a.params, b.params, mask, alpha)
        for name, leaf in pruning.flatten(jax.device_get(point)).items():
            assert np.all(leaf[pruning.flatten(mask)[name] == 0] == 0)


@pytest.fixture
def segment_calls(monkeypatch) -> list[int]:
    calls: list[int] = []
    original = engine.Engine.segment

    def counting(self, group, step0, evals, data, rewind_at=0):
        calls.append(group.data_key.shape[0])
        return original(self, group, step0, evals, data, rewind_at)

    monkeypatch.setattr(engine.Engine, "segment", counting)
    return calls


def test_adding_stability_copies_to_a_finished_run_trains_only_the_copies(
    write_spec, tmp_path, real_data, segment_calls
):
    path = str(write_spec(run={"rounds": 2}))
    store = Store(tmp_path)
    run_id = launch.run(spec.load(path), store, data_dir=real_data[1], grouping="vmap")
    before = {c: store.read_metrics(run_id, c)["curve"] for c in store.finished_cells(run_id)}
    segment_calls.clear()
    copies = spec.apply_overrides(spec.load(path), {"run.controls": "stability:1"})
    launch.run(copies, store, data_dir=real_data[1], grouping="vmap")
    assert segment_calls and set(segment_calls) == {1}  # one copy per level, nothing else
    after = list(store.finished_cells(run_id))
    assert sorted(set(after) - set(before)) == [
        CellKey(0, 1, "stability-0"),
        CellKey(0, 2, "stability-0"),
    ]
    assert all(store.read_metrics(run_id, c)["curve"] == curve for c, curve in before.items())
    for level in (1, 2):
        copy = store.read_metrics(run_id, CellKey(0, level, "stability-0"))
        ticket = store.read_metrics(run_id, CellKey(0, level))
        assert copy["first_batch"] != ticket["first_batch"]  # another data order
        path_errors = copy["instability"]["test_error"]
        assert path_errors[0] == pytest.approx(1 - ticket["final_test_acc"], abs=1e-6)
        assert path_errors[-1] == pytest.approx(1 - copy["final_test_acc"], abs=1e-6)
    figure = tmp_path / "instability.png"
    args = ["plot", run_id[:8], "--instability", "-o", str(figure), "--store", str(tmp_path)]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert Image.open(figure).size == (1500, 500)
    panels = plot_instability.figure(store, [run_id], (1500, 500), 100).panels
    assert [panel.title for panel in panels[:2]] == [
        "Test error on the linear path",
        "Instability of IMP tickets",
    ]
    (bars,) = [s for s in panels[1].series if s.label == run_id[:12] and s.lo is not None]
    expected = [
        100
        * store.read_metrics(run_id, CellKey(0, lv, "stability-0"))["instability"]["instability"]
        for lv in (2, 1)  # sparsest first: sorted by % remaining
    ]
    np.testing.assert_allclose(np.asarray(bars.y, float), expected)
    shown = CliRunner().invoke(cli, ["show", run_id[:8], "--store", str(tmp_path)]).stdout
    lines = shown.splitlines()
    top = next(i for i, line in enumerate(lines) if line.startswith("level"))
    assert lines[top].endswith("stability instability pts")
    assert lines[top + 2].split()[-1] == f"{expected[1]:.2f}"  # level 1: its one copy


def test_a_spawned_copy_follows_the_dense_ticket_to_k_then_its_own_data(
    write_spec, tmp_path, real_data
):
    loaded = spec.apply_overrides(
        spec.load(str(write_spec(train={"iterations": "300it"}, run={"rounds": 0}))),
        {"run.spawn": "100it", "run.deterministic": True},
    )
    store = Store(tmp_path)
    run_id = launch.run(loaded, store, data_dir=real_data[1])
    ticket = store.read_metrics(run_id, CellKey(0, 0))
    copy = store.read_metrics(run_id, CellKey(0, 0, "spawn-100"))
    assert copy["spawn_iteration"] == 100
    # Its own training is k..T; before k it was the ticket, whose curve says so.
    assert copy["start_iteration"] == 100 and copy["curve"]["iteration"] == [200, 300]
    assert copy["curve"]["test_loss"] != ticket["curve"]["test_loss"][1:]
    assert copy["instability"]["partner"] == "ticket"
    assert copy["instability"]["test_error"][0] == pytest.approx(1 - ticket["final_test_acc"])


@pytest.mark.unit
def test_spawn_points_must_fall_on_evaluations_before_the_end(write_spec, real_data):
    loaded = spec.apply_overrides(spec.load(str(write_spec())), {"run.spawn": "150it"})
    desc, source = launch.prepare(loaded, real_data[1])
    with pytest.raises(launch.UsageError, match=r"run\.spawn"):
        launch.plan_of(loaded, desc, source)
