"""Masks learned by gradient (ste, edge-popup, supermask): the forward masks and the
straight-through gradients against float64 numpy, frozen weights that never change, exact
counts at every evaluation, SR-STE's decay on pruned weights only, a run's stored cells, a
level killed mid-way, and the combinations refused before anything runs."""

from __future__ import annotations

import math
import subprocess

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ltcli.experiment import plan, spec
from ltcli.models.lenet import MLP
from ltcli.science import learned_masks, pruning
from ltcli.storage.store import CellKey, Store
from ltcli.train import launch
from ltcli.train.engine import Engine
from ltcli.train.mask_learning import LearnedMasks
from ltcli.train.recipes import TrainConfig

from helpers import assert_refused, kill_when, learnable_data, lt_process

pytestmark = pytest.mark.unit

MODEL = MLP(hidden=(16,), num_classes=4)
KEEP = (("fc1/kernel", 200), ("out/kernel", 30))


@pytest.fixture(scope="module")
def data():
    return learnable_data()


def _top(score: np.ndarray, k: int) -> np.ndarray:
    """numpy: 1.0 at the k highest entries (flat), ties to the earlier position."""
    out = np.zeros(score.size, np.float32)
    out[np.argsort(-score.reshape(-1), kind="stable")[:k]] = 1.0
    return out.reshape(score.shape)


def test_top_k_and_n_of_m_are_numpys_with_ties_to_the_earlier():
    rng = np.random.default_rng(0)
    score = rng.integers(0, 5, size=(12, 8)).astype(np.float32)  # many ties
    for k in (1, 17, 50, 95):
        assert np.array_equal(
            np.asarray(learned_masks.top_k(jnp.asarray(score), k)), _top(score, k)
        )
    kernel = rng.integers(0, 3, size=(3, 3, 8, 5)).astype(np.float32)
    for n, m in ((2, 4), (1, 4), (3, 8)):
        expected = pruning.keep_per_group(kernel, np.ones_like(kernel), n, m)
        assert np.array_equal(np.asarray(learned_masks.n_of_m(jnp.asarray(kernel), n, m)), expected)


def _engine(method: str, optimizer: str = "sgd", lr: float = 0.1, **learned) -> Engine:
    cfg = TrainConfig(optimizer, lr, batch_size=20, iterations=30, eval_every=10)
    keep = learned.pop("keep", KEEP)
    return Engine(MODEL, cfg, "vmap", learned=LearnedMasks(method, keep, **learned))


def _start(engine: Engine, scores: bool):
    params, stats = jax.device_get(engine.init(jax.random.PRNGKey(0), (6, 6, 1)))
    mask = pruning.dense_mask(params)
    first = None
    if scores:
        rng = np.random.default_rng(1)
        first = jax.tree.map(lambda p: learned_masks.edge_popup_scores(p.shape, rng), params)
    group = engine.start([params], [stats], [mask], [jax.random.PRNGKey(7)], scores=[first])
    return params, group


def _one(group):
    return jax.tree.map(lambda x: x[0], group)


def test_the_edge_popup_score_gradient_is_the_straight_through_formula_in_float64(data):
    """dL/ds = dL/dw_eff * w * sign(s) with w_eff = w * top-k(|s|), recomputed by hand in
    float64 numpy through the two layers on one batch."""
    engine = _engine("edge-popup")
    params, group = _start(engine, scores=True)
    cell = _one(group)
    ids = jnp.arange(20)
    x, y = engine.train_batch(data, ids, jax.random.PRNGKey(3))
    learned = engine.learned
    masks = learned.masks(cell.params, cell.scores, jax.random.PRNGKey(0))

    def loss(scores):
        forward = learned.forward(cell.params, scores, masks)
        return engine._loss(forward, {}, x, y, jax.random.PRNGKey(0))[0]

    got = jax.grad(loss)(cell.scores)
    w1, b1 = (np.asarray(params["fc1"][k], np.float64) for k in ("kernel", "bias"))
    w2, b2 = (np.asarray(params["out"][k], np.float64) for k in ("kernel", "bias"))
    s1, s2 = (np.asarray(cell.scores[n]["kernel"], np.float64) for n in ("fc1", "out"))
    m1, m2 = _top(np.abs(s1), 200), _top(np.abs(s2), 30)
    xs = np.asarray(x, np.float64).reshape(20, -1)
    pre = xs @ (w1 * m1) + b1
    h = np.maximum(pre, 0)
    logits = h @ (w2 * m2) + b2
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    dlogits = (p - np.eye(4)[np.asarray(y)]) / 20
    dw2 = h.T @ dlogits
    dw1 = xs.T @ ((dlogits @ (w2 * m2).T) * (pre > 0))
    np.testing.assert_allclose(got["out"]["kernel"], dw2 * w2 * np.sign(s2), atol=1e-7, rtol=1e-5)
    np.testing.assert_allclose(got["fc1"]["kernel"], dw1 * w1 * np.sign(s1), atol=1e-7, rtol=1e-5)
    assert np.all(np.asarray(got["fc1"]["bias"]) == 0)  # no score there: nothing to learn


def test_edge_popup_changes_scores_never_weights_and_keeps_k_at_every_evaluation(data):
    engine = _engine("edge-popup")
    params, group = _start(engine, scores=True)
    first_scores = jax.device_get(group.scores)
    for step0 in (0, 10, 20):
        group, metrics = engine.segment(group, step0, 1, data)
        row = jax.device_get(_one(group))
        for name, keep in KEEP:  # the mask evaluated: top-k of the scores reached
            layer = name.split("/")[0]
            assert row.mask[layer]["kernel"].sum() == keep
            expected = _top(np.abs(row.scores[layer]["kernel"]), keep)
            assert np.array_equal(row.mask[layer]["kernel"], expected)
        assert all(
            np.asarray(a).tobytes() == np.asarray(b).tobytes()
            for a, b in zip(jax.tree.leaves(row.params), jax.tree.leaves(params), strict=True)
        )
    moved = row.scores["fc1"]["kernel"] != first_scores["fc1"]["kernel"][0]
    assert moved.mean() > 0.5
    assert np.all(np.isfinite(np.asarray(metrics)))


def test_ste_masks_the_top_weights_of_every_step_and_trains_the_pruned_ones(data):
    engine = _engine("ste")
    _, group = _start(engine, scores=False)
    cell = _one(group)
    ids = jnp.arange(20).reshape(1, 20)
    for t in range(4):
        before = jax.device_get(cell.params)
        cell = engine.steps(cell, jnp.asarray(t), ids + 20 * t, data)
        after = jax.device_get(cell)
        for name, keep in KEEP:
            layer = name.split("/")[0]
            used = _top(np.abs(before[layer]["kernel"]), keep)
            assert np.array_equal(after.mask[layer]["kernel"], used)
            pruned = used == 0
            assert (
                np.mean(after.params[layer]["kernel"][pruned] != before[layer]["kernel"][pruned])
                > 0.5
            )


def test_an_n_m_ste_mask_is_the_top_n_of_every_group_of_the_weights_of_each_step(data):
    engine = _engine("ste", pattern=(2, 4))
    _, group = _start(engine, scores=False)
    cell = _one(group)
    for t in range(3):
        before = jax.device_get(cell.params)
        cell = engine.steps(cell, jnp.asarray(t), jnp.arange(20).reshape(1, 20) + 20 * t, data)
        for layer in ("fc1", "out"):
            w = np.abs(before[layer]["kernel"])
            expected = pruning.keep_per_group(w, np.ones_like(w), 2, 4)
            assert np.array_equal(np.asarray(cell.mask[layer]["kernel"]), expected)


def test_sr_ste_decays_the_pruned_weights_only(data):
    """With plain SGD, SR-STE's step differs from STE's by exactly -lr λ w at the weights the
    forward pruned, and not at all at the kept ones."""
    lr, decay = 0.1, 0.05
    plain, decayed = _engine("ste", lr=lr), _engine("ste", lr=lr, decay=decay)
    params, group = _start(plain, scores=False)
    ids = jnp.arange(20).reshape(1, 20)
    a = jax.device_get(plain.steps(_one(group), jnp.asarray(0), ids, data))
    _, group = _start(decayed, scores=False)
    b = jax.device_get(decayed.steps(_one(group), jnp.asarray(0), ids, data))
    for name, keep in KEEP:
        layer = name.split("/")[0]
        w = np.asarray(params[layer]["kernel"], np.float64)
        kept = _top(np.abs(w), keep) > 0
        diff = b.params[layer]["kernel"].astype(np.float64) - a.params[layer]["kernel"]
        assert np.all(diff[kept] == 0)
        np.testing.assert_allclose(diff[~kept], -lr * decay * w[~kept], rtol=1e-3, atol=1e-8)
    assert np.array_equal(a.params["fc1"]["bias"], b.params["fc1"]["bias"])


def test_a_supermask_draws_from_sigmoid_of_its_scores_and_passes_the_gradient_through_it():
    scores = jnp.asarray(np.linspace(-3, 3, 4000, dtype=np.float32).reshape(80, 50))
    draws = np.mean([learned_masks.bernoulli(jax.random.PRNGKey(i), scores) for i in range(40)], 0)
    expected = 1 / (1 + np.exp(-np.asarray(scores, np.float64)))
    assert abs(float(np.mean(draws - expected))) < 0.01
    assert learned_masks.supermask_scores((3, 2), 0.2)[0, 0] == pytest.approx(math.log(0.25))
    weights = jnp.asarray(np.random.default_rng(0).normal(size=(80, 50)).astype(np.float32))
    mask = learned_masks.bernoulli(jax.random.PRNGKey(0), scores)
    got = jax.grad(lambda s: learned_masks.supermask_weights(weights, s, mask).sum())(scores)
    sig = expected
    np.testing.assert_allclose(got, np.asarray(weights) * sig * (1 - sig), rtol=1e-5, atol=1e-7)
    value = learned_masks.supermask_weights(weights, scores, mask)
    assert np.asarray(value).tobytes() == np.asarray(weights * mask).tobytes()  # exactly w * m


@pytest.mark.integration
def test_an_edge_popup_run_stores_its_frozen_theta0_under_the_learned_mask(
    write_spec, tmp_path, real_data
):
    """The ticket's stored weights are θ0 (±sqrt(2 / fan-in) with the model's signs) under a
    mask of exactly the layer budget; its rewind control trains that mask, its random
    control the same per-layer counts."""
    path = write_spec(
        train={"iterations": "40it", "eval_every": "20it", "batch_size": 20},
        prune={"method": "edge-popup", "one_shot": 50},
        run={"controls": "rewind:1,random:1", "deterministic": True},
    )
    store = Store(tmp_path / "store")
    run_id = launch.run(spec.load(str(path)), store, data_dir=real_data[1])
    theta0 = store.load_weights(store.init_path(run_id, 0))["params"]
    for layer in ("fc1", "fc2", "out"):
        kernel = theta0[layer]["kernel"]
        assert np.all(np.abs(kernel) == np.float32(math.sqrt(2 / kernel.shape[0])))
    ticket = CellKey(0, 1)
    mask = store.read_mask(run_id, ticket, theta0)
    trained = store.read_trained(run_id, ticket)["params"]
    for layer in ("fc1", "fc2", "out"):
        m, w = mask[layer]["kernel"], theta0[layer]["kernel"]
        assert m.sum() == round(m.size / 2)
        expected = np.where(m > 0, w, np.zeros_like(w))
        assert trained[layer]["kernel"].tobytes() == expected.tobytes()
        assert trained[layer]["bias"].tobytes() == theta0[layer]["bias"].tobytes()
    metrics = store.read_metrics(run_id, ticket)
    assert metrics["learned_mask"] == "edge-popup" and metrics["training_flops"] > 0
    rewind = store.read_mask(run_id, CellKey(0, 1, "rewind-0"), theta0)
    random = store.read_mask(run_id, CellKey(0, 1, "random-0"), theta0)
    for layer in ("fc1", "fc2", "out"):
        assert np.array_equal(rewind[layer]["kernel"], mask[layer]["kernel"])
        assert random[layer]["kernel"].sum() == mask[layer]["kernel"].sum()
        assert not np.array_equal(random[layer]["kernel"], mask[layer]["kernel"])


@pytest.mark.system
def test_an_edge_popup_level_killed_9_resumes_to_the_same_cells(write_spec, tmp_path, real_data):
    """kill -9 once the edge-popup level has checkpointed (its scores and masks in it): the
    rerun resumes there and stores the cells of a run never killed. (fc1 is left dense, so
    that the steps sort only the smaller layers' scores.)"""
    path = write_spec(
        train={"iterations": "1200it", "eval_every": "600it", "batch_size": 20},
        prune={"method": "edge-popup", "one_shot": 95, "exclude": ["fc1"]},
    )
    loaded = spec.load(str(path))
    reference = Store(tmp_path / "reference")
    run_id = launch.run(loaded, reference, data_dir=real_data[1])
    killed = tmp_path / "killed"
    command = lt_process(path, killed, real_data[1], "--checkpoint-every", "0")
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    kill_when(proc, killed, "*/checkpoints/level_1.npz", 300)
    resumed = []

    class Watch(plan.Progress):
        def level(self, level, cells, total_steps, start):
            resumed.append((level, start))

    store = Store(killed)
    launch.run(loaded, store, data_dir=real_data[1], progress=Watch())
    assert resumed[0] == (1, 600)
    template = reference.load_weights(reference.init_path(run_id, 0))["params"]
    a, b = (done.read_metrics(run_id, CellKey(0, 1)) for done in (reference, store))
    assert a["curve"] == b["curve"]
    ma, mb = (done.read_mask(run_id, CellKey(0, 1), template) for done in (reference, store))
    assert all(np.array_equal(ma[k]["kernel"], mb[k]["kernel"]) for k in ma)


@pytest.mark.parametrize(
    "args,field",
    [
        (["--method", "ste"], "prune.one_shot"),
        (["--method", "edge-popup", "--one-shot", "50", "--retrain", "finetune"], "retrain"),
        (["--method", "supermask", "--one-shot", "50", "--controls", "stability:1"], "stability"),
        (["--method", "edge-popup", "--one-shot", "50", "--pattern", "2:4"], "prune.pattern"),
        (["--frozen-init", "kaiming-normal"], "prune.frozen_init"),
        (["--method", "edge-popup", "--one-shot", "50", "--srste-decay", "2e-4"], "srste_decay"),
    ],
)
def test_undefined_learned_mask_combinations_exit_2(write_spec, tmp_path, real_data, args, field):
    assert_refused(write_spec(), args, field, tmp_path / "store", real_data[1])


def test_frozen_weights_follow_their_papers():
    kernel = np.random.default_rng(0).normal(size=(50, 20)).astype(np.float32)
    key = jax.random.PRNGKey(0)
    signed = learned_masks.frozen_weights("signed-kaiming-constant", kernel, key)
    assert np.array_equal(signed, np.sign(kernel) * np.float32(math.sqrt(2 / 50)))
    zhou = learned_masks.frozen_weights("signed-constant", kernel, key)
    assert np.allclose(zhou, np.sign(kernel) * np.std(kernel.astype(np.float64)))
    normal = learned_masks.frozen_weights("kaiming-normal", kernel, key)
    assert abs(np.std(normal) - math.sqrt(2 / 50)) < 0.01 and not np.allclose(normal, kernel)
    assert np.array_equal(learned_masks.frozen_weights("model", kernel, key), kernel)
    assert learned_masks.frozen_kind("edge-popup", "auto") == "signed-kaiming-constant"
    assert learned_masks.frozen_kind("supermask", "auto") == "model"


def test_edge_popup_scores_are_kaiming_uniform_of_the_fan_in():
    scores = learned_masks.edge_popup_scores((3, 3, 16, 8), np.random.default_rng(0))
    bound = 1 / math.sqrt(3 * 3 * 16)
    assert scores.min() >= -bound and scores.max() <= bound and scores.std() > bound / 2
