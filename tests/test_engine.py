"""The engine on a tiny network and synthetic data: masking, grouping and chunking."""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from ltcli.core.errors import InvariantError
from ltcli.experiment.member import CellKey
from ltcli.models.lenet import MLP
from ltcli.science import pruning
from ltcli.train import checks
from ltcli.train.device_data import batch_indices
from ltcli.train.engine import Engine, unstack
from ltcli.train.feeders import HostLoop, OnDevice
from ltcli.train.level import cell_metrics
from ltcli.train.recipes import TrainConfig, learning_rate
from ltcli.train.summary import TextScored, summarize

from helpers import assert_trained_under_mask, learnable_data

pytestmark = pytest.mark.integration

CFG = TrainConfig("adam", 3e-3, batch_size=20, iterations=40, eval_every=10)
MODEL = MLP(hidden=(16,), num_classes=4)


@pytest.fixture(scope="module")
def data():
    return learnable_data()


def start(engine: Engine, seeds: list[int], sparsity: float = 0.5, **kw):
    params, stats, masks, keys = [], [], [], []
    for seed in seeds:
        p, s = engine.init(jax.random.PRNGKey(seed), (6, 6, 1))
        rng = np.random.default_rng(seed)
        m = jax.tree.map(lambda x, r=rng: (r.random(x.shape) > sparsity).astype(np.float32), p)
        params.append(jax.tree.map(lambda a, b: np.asarray(a) * b, p, m))
        stats.append(s), masks.append(m), keys.append(jax.random.PRNGKey(100 + seed))
    return engine.start(params, stats, masks, keys, **kw)


def train(engine: Engine, group, data, chunks=(4,), rewind_at=0):
    """Trains through the feeder a run with `engine`'s grouping would use."""
    feeder = (HostLoop if engine.grouping == "host" else OnDevice)(data)
    curves, step = [], 0
    for evals in chunks:
        group, metrics = feeder.segment(engine, group, step, evals, rewind_at)
        curves.append(np.asarray(metrics))
        step += evals * CFG.eval_every
    return group, np.concatenate(curves, axis=1)


@pytest.mark.unit
def test_each_epoch_visits_every_example_once():
    n, batch = 50, 20
    ids = np.asarray(batch_indices(jax.random.PRNGKey(0), 0, 10, batch, n)).reshape(-1)
    for epoch in range(len(ids) // n):
        assert sorted(ids[epoch * n : (epoch + 1) * n]) == list(range(n))
    later = np.asarray(batch_indices(jax.random.PRNGKey(0), 3, 4, batch, n)).reshape(-1)
    assert np.array_equal(later, ids[3 * batch : 7 * batch])  # any start, same stream


def test_pruned_weights_and_their_optimizer_state_stay_zero(data):
    engine = Engine(MODEL, CFG)
    before = unstack(start(engine, [0, 1]), 2)
    group, curves = train(engine, start(engine, [0, 1]), data)
    for row, first in zip(unstack(group, 2), before, strict=True):
        assert_trained_under_mask(row, first, "fc1")
    assert curves.shape == (2, 4, 4)


def test_a_vmapped_group_matches_cells_trained_one_by_one(data):
    engine = Engine(MODEL, CFG, grouping="vmap")
    _, together = train(engine, start(engine, [0, 1, 2]), data)
    alone = np.concatenate([train(engine, start(engine, [s]), data)[1] for s in (0, 1, 2)])
    np.testing.assert_allclose(together, alone, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("grouping", ["serial", "host"])
def test_every_grouping_gives_the_same_metrics(data, grouping):
    vmap_engine = Engine(MODEL, CFG, "vmap")
    vmapped_group, vmapped = train(vmap_engine, start(vmap_engine, [0, 1]), data)
    other = Engine(MODEL, CFG, grouping)
    other_group, metrics = train(other, start(other, [0, 1]), data, chunks=(1, 3))
    np.testing.assert_allclose(vmapped, metrics, rtol=1e-4, atol=1e-5)
    for a, b in zip(
        jax.tree.leaves(vmapped_group.params), jax.tree.leaves(other_group.params), strict=True
    ):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_the_host_loop_captures_theta_k_like_the_program(data):
    program = Engine(MODEL, CFG)
    in_program, _ = train(program, start(program, [0, 1], capture_rewind=True), data, rewind_at=20)
    host = Engine(MODEL, CFG, "host")
    on_host, _ = train(host, start(host, [0, 1], capture_rewind=True), data, rewind_at=20)
    for a, b in zip(
        jax.tree.leaves(in_program.rewind), jax.tree.leaves(on_host.rewind), strict=True
    ):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_splitting_training_into_segments_changes_nothing(data):
    engine = Engine(MODEL, CFG)
    one_go, curve_a = train(engine, start(engine, [0]), data, chunks=(4,))
    pieces, curve_b = train(engine, start(engine, [0]), data, chunks=(1, 3))
    # Training is bit for bit the same; the two programs may sum the evaluation in another
    # order (a last-bit difference in a loss).
    np.testing.assert_allclose(curve_a, curve_b, rtol=1e-6, atol=0)
    assert all(
        np.array_equal(a, b)
        for a, b in zip(jax.tree.leaves(one_go.params), jax.tree.leaves(pieces.params), strict=True)
    )


def test_late_rewinding_captures_the_weights_at_iteration_k(data):
    engine = Engine(MODEL, CFG)
    full, _ = train(engine, start(engine, [0], capture_rewind=True), data, rewind_at=20)
    first_20, _ = train(engine, start(engine, [0]), data, chunks=(2,))
    assert all(
        np.array_equal(a, b)
        for a, b in zip(
            jax.tree.leaves(full.rewind["params"]), jax.tree.leaves(first_20.params), strict=True
        )
    )
    assert not np.array_equal(full.rewind["params"]["fc1"]["kernel"], full.params["fc1"]["kernel"])


@pytest.mark.unit
def test_summary_takes_early_stopping_at_the_minimum_validation_loss():
    curve = np.array([[0.9, 0.5, 0.8, 0.60], [0.4, 0.8, 0.5, 0.85], [0.6, 0.7, 0.6, 0.80]])
    summary = summarize(curve, eval_every=100)
    assert summary["early_stop_iter"] == 200
    assert summary["early_stop_test_acc"] == 0.85
    assert summary["final_test_acc"] == 0.80
    assert summary["iterations"] == 300


@pytest.mark.unit
def test_early_stopping_is_the_first_least_finite_validation_loss_and_reports_there():
    """A cell that trained from iteration 300, evaluated every 100: its early-stop point is
    the evaluation of least validation loss (the first of a tie; a NaN never counts), on the
    run's 0..T axis as its curve's; the test loss, accuracy and bits per byte reported at it
    are that evaluation's, the final ones the last's; bits per byte are the loss in bits times
    the tokens scored over their bytes."""
    curve = np.array(
        [  # val_loss, val_acc, test_loss, test_acc
            [2.0, 0.10, 1.9, 0.20],
            [np.nan, 0.0, np.nan, 0.0],
            [0.7, 0.60, 0.9, 0.55],  # the first least validation loss: iteration 600
            [0.9, 0.50, 0.4, 0.70],  # the least test loss
            [0.7, 0.70, 0.8, 0.65],  # ties the least validation loss, later
            [1.1, 0.40, 1.2, 0.35],
        ]
    )
    scored = TextScored(tokens=(1000, 2000), bytes=(1500, 2600))
    mask = {"fc1": {"kernel": np.ones((2, 2), np.float32)}}
    metrics = cell_metrics(
        CellKey(0, 1), mask, curve, start=300, every=100, facts={}, scored=scored
    )
    val = metrics["curve"]["val_loss"]
    best = int(np.argmin([v if math.isfinite(v) else math.inf for v in val]))
    assert metrics["early_stop_iter"] == metrics["curve"]["iteration"][best] == 600
    assert metrics["min_val_loss"] == 0.7
    assert (metrics["early_stop_test_loss"], metrics["early_stop_test_acc"]) == (0.9, 0.55)
    assert (metrics["final_test_loss"], metrics["final_test_acc"]) == (1.2, 0.35)
    bits = 1 / math.log(2)
    assert metrics["min_val_bpb"] == pytest.approx(0.7 * bits * 1000 / 1500, rel=1e-12)
    assert metrics["early_stop_test_bpb"] == pytest.approx(0.9 * bits * 2000 / 2600, rel=1e-12)
    assert metrics["final_test_bpb"] == pytest.approx(1.2 * bits * 2000 / 2600, rel=1e-12)
    assert (metrics["val_tokens"], metrics["test_tokens"]) == (1000, 2000)
    assert metrics["diverged"] and metrics["iterations"] == 900


@pytest.mark.unit
def test_checks_catch_revived_weights_and_momentum():
    mask = {"fc1": {"kernel": np.array([[1.0, 0.0]])}}
    with pytest.raises(InvariantError, match="fc1/kernel"):
        checks.pruned_are_zero({"fc1": {"kernel": np.array([[0.5, 1e-9]])}}, mask, "cell")
    params = {"fc1": {"kernel": np.array([[0.5, 0.0]])}}
    state = ({"fc1": {"kernel": np.array([[0.1, 0.2]])}}, np.int32(3))
    with pytest.raises(InvariantError, match="optimizer state"):
        checks.optimizer_state_masked(state, params, mask, "cell")
    with pytest.raises(InvariantError, match="rewind point"):
        checks.rewound(params, {"fc1": {"kernel": np.array([[0.4, 0.3]])}}, mask, "cell")
    with pytest.raises(InvariantError, match="rounding rule gives 3"):
        checks.counts({"fc1/kernel": 2}, {"fc1/kernel": 3}, "cell")


@pytest.mark.unit
def test_dense_mask_keeps_everything():
    p, _ = Engine(MODEL, CFG).init(jax.random.PRNGKey(0), (6, 6, 1))
    assert pruning.percent_remaining(pruning.dense_mask(p)) == 100.0


@pytest.mark.unit
def test_learning_rate_warms_up_then_drops_at_absolute_iterations():
    cfg = TrainConfig(
        "sgd",
        0.1,
        64,
        30000,
        100,
        momentum=0.9,
        warmup=10000,
        lr_drops=(20000, 25000),
        lr_drop_factor=0.1,
    )
    schedule = learning_rate(cfg)
    values = [float(schedule(t)) for t in (0, 5000, 10000, 19999, 20000, 24999, 25000, 29999)]
    np.testing.assert_allclose(values, [0, 0.05, 0.1, 0.1, 0.01, 0.01, 0.001, 0.001], rtol=1e-5)
    constant = learning_rate(TrainConfig("adam", 1.2e-3, 60, 50000, 100))
    assert float(constant(0)) == float(constant(49999)) == pytest.approx(1.2e-3)


SGD_WARMUP = TrainConfig("sgd", 0.5, batch_size=20, iterations=40, eval_every=10, warmup=30)


def test_a_cell_resumed_at_k_continues_the_schedule_and_the_data_stream(data):
    """Plain SGD has no optimizer state but the schedule's step, so a dense cell restarted
    from θk at iteration k must land exactly where training straight through lands: same
    learning rates (the warmup continues from k) and same batches (the stream from k)."""
    engine = Engine(MODEL, SGD_WARMUP)
    through, _ = train(
        engine, start(engine, [0], sparsity=0.0, capture_rewind=True), data, (4,), 20
    )
    theta_k = jax.device_get(through.rewind)
    first = unstack(start(engine, [0], sparsity=0.0), 1)[0]
    resumed = engine.start(
        [jax.tree.map(lambda x: x[0], theta_k["params"])],
        [jax.tree.map(lambda x: x[0], theta_k["batch_stats"])],
        [first.mask],
        [first.data_key],
        start_step=20,
    )
    (schedule_state,) = [s for s in resumed.opt_state if isinstance(s, optax.ScaleByScheduleState)]
    assert int(schedule_state.count[0]) == 20
    assert float(learning_rate(SGD_WARMUP)(20)) == pytest.approx(0.5 * 20 / 30)
    resumed, curve = engine.segment(resumed, 20, 2, data)
    assert curve.shape == (1, 2, 4)
    for a, b in zip(jax.tree.leaves(through.params), jax.tree.leaves(resumed.params), strict=True):
        assert np.array_equal(a, b)


def test_augmentation_pads_the_raw_image_with_black(data):
    engine = Engine(MODEL, dataclasses.replace(CFG, augment=True))
    white = data._replace(x_train=jnp.full_like(data.x_train, 255))
    x = np.asarray(engine.train_inputs(white, jnp.arange(40), jax.random.PRNGKey(3)))
    mean, std = float(data.mean[0]), float(data.std[0])
    black, bright = (0 - mean) / std, (255 - mean) / std
    values = np.unique(x)
    assert len(values) == 2  # black padding and white pixels; never the mean colour (0.0)
    np.testing.assert_allclose(values, [black, bright], rtol=1e-5)
