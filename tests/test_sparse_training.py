"""Sparse training while training: layer budgets, schedules and the mask updates of
GMP, SET and RigL inside the engine's step, each against an independent float64 numpy
computation; a RigL level killed mid-way resumes to the same cells; bad combinations exit 2
before anything runs."""

from __future__ import annotations

import dataclasses
import math
import subprocess

import jax
import numpy as np
import pytest

from ltcli.experiment import plan, spec
from ltcli.models.lenet import MLP
from ltcli.science import pruning, sparse_training
from ltcli.storage.store import CellKey, Store
from ltcli.train import checks, launch
from ltcli.train.device_data import step_key_of
from ltcli.train.engine import Engine
from ltcli.train.mask_updates import MaskUpdates
from ltcli.train.recipes import TrainConfig, schedule_steps
from ltcli.train.starts import masked

from helpers import assert_refused, kill_when, learnable_data, lt_process

pytestmark = pytest.mark.unit

LENET = {"fc1/kernel": (784, 300), "fc2/kernel": (300, 100), "out/kernel": (100, 10)}
CONV2 = {
    "conv1/kernel": (3, 3, 3, 64),
    "conv2/kernel": (3, 3, 64, 64),
    "fc1/kernel": (16384, 256),
    "fc2/kernel": (256, 256),
    "out/kernel": (256, 10),
}


def _erk_reference(shapes, density):
    """ERK from its definition, solved another way: bisect the scale ε at which the layers'
    densities min(1, ε (sum of dims)/(product of dims)) keep `density` of all weights."""
    sizes = {n: float(np.prod(s)) for n, s in shapes.items()}
    raw = {n: float(np.sum(s)) / sizes[n] for n, s in shapes.items()}

    def kept(eps):
        return sum(min(1.0, eps * raw[n]) * sizes[n] for n in shapes)

    lo, hi = 0.0, 1.0
    while kept(hi) < density * sum(sizes.values()):
        hi *= 2
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if kept(mid) < density * sum(sizes.values()) else (lo, mid)
    return {n: min(1.0, hi * raw[n]) for n in shapes}


@pytest.mark.parametrize("shapes", [LENET, CONV2])
@pytest.mark.parametrize("density", [0.1, 0.02, 0.5])
def test_erk_densities_are_the_formula_capped_at_one(shapes, density):
    got = sparse_training.erk_densities(shapes, density)
    want = _erk_reference(shapes, density)
    assert got == pytest.approx(want, rel=1e-9)
    total = sum(got[n] * math.prod(s) for n, s in shapes.items())
    assert total == pytest.approx(density * sum(math.prod(s) for s in shapes.values()))


@pytest.mark.parametrize("distribution", ["uniform", "erk"])
def test_budget_counts_meet_the_target_exactly_with_excluded_layers_counted(distribution):
    pruned = ["conv1/kernel", "conv2/kernel", "fc1/kernel", "fc2/kernel"]  # out excluded
    counts = sparse_training.budget_counts(CONV2, pruned, 10.0, distribution)
    everything = sum(math.prod(s) for s in CONV2.values())
    assert sum(counts.values()) + 2560 == round(0.1 * everything)
    if distribution == "uniform":  # one density, within one weight per layer
        density = sum(counts.values()) / sum(math.prod(CONV2[n]) for n in pruned)
        for n in pruned:
            assert abs(counts[n] - density * math.prod(CONV2[n])) < 1
    else:  # conv1 is the smallest layer: ERK makes it dense at 10%
        assert counts["conv1/kernel"] == math.prod(CONV2["conv1/kernel"])
        assert counts["fc1/kernel"] / math.prod(CONV2["fc1/kernel"]) < 0.1


def test_the_cosine_drop_fraction_and_gmp_cubic_schedule_are_the_papers():
    steps = sparse_training.update_steps("rigl", 0, 750, 100)
    assert steps.tolist() == [0, 100, 200, 300, 400, 500, 600, 700]
    table = sparse_training.schedule_table(
        "rigl", {"a": 1000}, {"a": 101}, steps, alpha=0.3, start=0, end=750, anneal="cosine"
    )
    for t, n in zip(steps, table["a"], strict=True):
        assert n == math.floor(101 * 0.3 / 2 * (1 + math.cos(math.pi * t / 750)))
    # GMP: Zhu & Gupta's s_t = s_f + (s_i - s_f)(1 - (t - t0)/(n Δt))^3, s_i = 0.
    t0, every = 100, 50
    steps = sparse_training.update_steps("gmp", t0, 600, every)
    assert steps.tolist() == [150, 200, 250, 300, 350, 400, 450, 500, 550, 600]
    size, final = 30000, 3000
    kept = sparse_training.schedule_table(
        "gmp", {"a": size}, {"a": final}, steps, alpha=0, start=t0, end=600, anneal="cosine"
    )["a"]
    n = len(steps)
    for t, k in zip(steps, kept, strict=True):
        s_t = 0.9 + (0 - 0.9) * (1 - (t - t0) / (n * every)) ** 3
        assert k == size - round(s_t * size)
    assert kept[-1] == final


def _drop_and_grow_reference(mask, weights, grow, n):
    """float64 numpy: drop the n active weights of smallest |w| (among equal |w| the later
    first), grow n of highest score among the positions not kept (the earlier first)."""
    active = mask.reshape(-1) > 0
    magnitude = np.where(active, np.abs(weights.reshape(-1).astype(np.float64)), np.inf)
    order = np.lexsort((-np.arange(active.size), magnitude))  # smallest |w|, later first
    kept = active.copy()
    kept[order[:n]] = False
    score = np.where(kept, -np.inf, grow.reshape(-1).astype(np.float64))
    grown = np.zeros_like(kept)
    grown[np.lexsort((np.arange(active.size), -score))[:n]] = True
    return (kept | grown).reshape(mask.shape)


def _layer_cases(rng):
    """LeNet's fc1 at 10% density, its weights and grow scores: plain, tied, and with the
    band's sample stacked against it (the high scores all at its positions)."""
    shape, size = (784, 300), 784 * 300
    mask = sparse_training.random_mask(shape, 23520, rng)
    weights = rng.normal(size=shape).astype(np.float32) * mask
    grow = np.abs(rng.normal(size=shape)).astype(np.float32)
    tied = (np.round(weights * 4) / 4, np.round(grow * 2) / 2)
    skewed_grow = grow.reshape(-1).copy()
    skewed_grow[sparse_training._sample_positions(size)] += 10.0
    skewed_weights = weights.reshape(-1).copy()
    skewed_weights[sparse_training._sample_positions(size)] *= 1e-3
    return mask, [
        (weights, grow),
        tied,
        (skewed_weights.reshape(shape) * mask.reshape(shape), skewed_grow.reshape(shape)),
    ]


def test_large_layers_drop_and_grow_exactly_numpys_choice_alone_and_in_groups():
    """A layer large enough for the band selection (`_first_in_band`): the same choice as
    float64 numpy, with ties and where the sample misleads it, lone and under `vmap`."""
    rng = np.random.default_rng(3)
    mask, cases = _layer_cases(rng)
    bound = 7056
    one = jax.jit(lambda m, w, g, n: sparse_training.drop_and_grow(m, w, g, n, bound))
    for weights, grow in cases:
        for n in (0, 1, 2000, bound):
            got = np.asarray(one(mask, weights, grow, n))
            assert np.array_equal(got, _drop_and_grow_reference(mask, weights, grow, n))
            assert got.sum() == mask.sum()
    wide = (2000, 500)  # a band of 6,496 for drops of up to 30,000
    wide_mask = sparse_training.random_mask(wide, 100_000, rng)
    weights, grow = rng.normal(size=(2, *wide)).astype(np.float32)
    weights *= wide_mask
    got = sparse_training.drop_and_grow(wide_mask, weights, grow, 30_000, 30_000)
    assert np.array_equal(got, _drop_and_grow_reference(wide_mask, weights, grow, 30_000))
    group = jax.jit(jax.vmap(lambda w, g, n: sparse_training.drop_and_grow(mask, w, g, n, bound)))
    weights, grow = (np.stack(x) for x in zip(*cases, strict=True))
    counts = np.array([bound, 1500, 6000])
    got = np.asarray(group(weights, grow, counts))
    for i, n in enumerate(counts):
        assert np.array_equal(got[i], _drop_and_grow_reference(mask, weights[i], grow[i], n))


CFG = TrainConfig("adam", 3e-3, batch_size=20, iterations=40, eval_every=10)
MODEL = MLP(hidden=(16,), num_classes=4)


@pytest.fixture(scope="module")
def data():
    return learnable_data()


def _top(score, k):
    """numpy: True at the k highest entries, ties to the earlier position."""
    out = np.zeros(score.size, bool)
    out[np.argsort(-score, kind="stable")[:k]] = True
    return out


def _cell_and_table(method, every=3, count=3):
    engine = Engine(MODEL, CFG, "vmap")
    params, stats = engine.init(jax.random.PRNGKey(0), (6, 6, 1))
    rng = np.random.default_rng(0)
    flat = pruning.flatten(pruning.dense_mask(jax.device_get(params)))
    budget = {"fc1/kernel": 150, "out/kernel": 20}
    if method != "gmp":
        for name, keep in budget.items():
            flat[name] = sparse_training.random_mask(flat[name].shape, keep, rng)
    mask = pruning.unflatten(flat)
    start = jax.tree.map(lambda p, m: np.asarray(p) * m, jax.device_get(params), mask)
    steps = 2 + every * np.arange(count)
    sizes = {n: int(np.size(flat[n])) for n in budget}
    table = sparse_training.schedule_table(
        method, sizes, budget, steps, alpha=0.3, start=2, end=2 + every * count, anneal="cosine"
    )
    updates = MaskUpdates.of(method, steps, every, sizes, [table])
    engine = dataclasses.replace(engine, updates=updates)
    group = engine.start([start], [stats], [mask], [jax.random.PRNGKey(7)], schedules=[table])
    return engine, jax.tree.map(lambda x: x[0], group), table, steps


@pytest.mark.integration
@pytest.mark.parametrize("method", ["rigl", "set", "gmp"])
def test_mask_updates_in_the_step_match_numpy(method, data):
    """Every update step keeps each layer's exact count; RigL grows at the top-|g| inactive
    positions of the dense gradient (recomputed here, float64 numpy); grown weights and
    their Adam moments are zero right after; SET and RigL skip the optimizer update there
    while the learning-rate schedule's counter advances."""
    engine, cell, table, steps = _cell_and_table(method)
    ids = np.asarray(engine.period_indices(cell, 0, data, 2)).reshape(20, CFG.batch_size)
    for t in range(12):
        before = jax.device_get(cell)
        grads = None
        if method == "rigl" and t in steps:
            key = step_key_of(cell.data_key, t)
            x, y = engine.train_batch(data, ids[t], key)
            grads = jax.grad(engine._loss, has_aux=True)(cell.params, cell.batch_stats, x, y, key)[
                0
            ]
            grads = pruning.flatten(jax.device_get(grads))
        cell = engine.steps(cell, t, ids[t : t + 1], data)
        after = jax.device_get(cell)
        m0, m1 = pruning.flatten(before.mask), pruning.flatten(after.mask)
        if t not in steps:
            assert all(np.array_equal(m0[n], m1[n]) for n in m0)
            continue
        j = list(steps).index(t)
        assert int(schedule_steps(jax.tree.map(lambda x: x[None], after.opt_state))[0]) == t + 1
        w0 = pruning.flatten(before.params)
        mu, nu = (pruning.flatten(s) for s in _adam(after.opt_state))
        w1 = pruning.flatten(after.params)
        for name, counts in table.items():
            old, new = m0[name].reshape(-1) > 0, m1[name].reshape(-1) > 0
            if method == "gmp":
                assert new.sum() == counts[j] and not np.any(new & ~old)
                continue
            assert new.sum() == old.sum()  # exact counts after every update
            n_drop = int(counts[j])
            magnitude = np.abs(w0[name].reshape(-1).astype(np.float64))
            kept = _top(np.where(old, magnitude, -np.inf), int(old.sum()) - n_drop)
            assert np.array_equal(new & kept, kept)
            if method == "rigl":
                g = np.abs(grads[name].reshape(-1).astype(np.float64))
                grown = _top(np.where(kept, -np.inf, g), n_drop)
                assert np.array_equal(new, kept | grown)
            grown = new & ~old
            assert grown.sum() > 0
            for tree in (w1, mu, nu):  # grown: zero, with zero moments
                assert np.all(tree[name].reshape(-1)[grown] == 0)
            # the update replaced the optimizer step: survivors are as before it
            assert np.array_equal(w1[name].reshape(-1)[new & old], w0[name].reshape(-1)[new & old])
        for tree in (w1, mu, nu):  # dropped weights and moments exactly zero
            for name in table:
                assert np.all(tree[name][m1[name] == 0] == 0)


def _adam(opt_state):
    (adam,) = [
        s
        for s in jax.tree.leaves(opt_state, is_leaf=lambda s: hasattr(s, "mu"))
        if hasattr(s, "mu")
    ]
    return adam.mu, adam.nu


@pytest.mark.system
def test_a_rigl_level_killed_9_resumes_to_the_same_cells(write_spec, tmp_path, real_data):
    """kill -9 once the RigL level has checkpointed (after its first 600 of 1,200 steps):
    the rerun resumes there, masks and schedule restored, and gives the ticket of a run
    never killed."""
    path = write_spec(
        train={"iterations": "1200it", "eval_every": "600it", "batch_size": 20},
        prune={"method": "rigl", "one_shot": 10, "update_every": "100it"},
    )
    loaded = spec.load(str(path))
    reference = Store(tmp_path / "reference")
    run_id = launch.run(loaded, reference, data_dir=real_data[1])
    killed = tmp_path / "killed"
    command = lt_process(path, killed, real_data[1], "--checkpoint-every", "0")
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    kill_when(proc, killed, "*/checkpoints/level_1.npz", 300)
    store = Store(killed)
    resumed = []

    class Watch(plan.Progress):
        def level(self, level, cells, total_steps, start):
            resumed.append((level, start))

    launch.run(loaded, store, data_dir=real_data[1], progress=Watch())
    assert resumed[0] == (1, 600)  # the RigL ticket resumed mid-level, its masks restored
    template = reference.load_weights(reference.init_path(run_id, 0))["params"]
    a, b = (done.read_metrics(run_id, CellKey(0, 1)) for done in (reference, store))
    assert a["curve"] == b["curve"]
    ma, mb = (done.read_mask(run_id, CellKey(0, 1), template) for done in (reference, store))
    assert all(np.array_equal(ma[k]["kernel"], mb[k]["kernel"]) for k in ma)
    ticket = reference.read_metrics(run_id, CellKey(0, 1))
    assert ticket["mask_update_steps"] == list(range(0, 900, 100))
    assert ticket["percent_remaining"] == pytest.approx(10.0, abs=0.01)


@pytest.mark.parametrize(
    "args,field",
    [
        (["--method", "rigl"], "prune.one_shot"),
        (["--method", "rigl", "--one-shot", "10", "--retrain", "finetune"], "prune.retrain"),
        (["--method", "set", "--one-shot", "10", "--controls", "stability:1"], "stability"),
        (["--method", "gmp", "--one-shot", "10", "--controls", "invert:1"], "invert"),
        (["--controls", "rewind:1"], "rewind"),
        (["--set", "prune.distribution=erk"], "prune.distribution"),
        (["--method", "static", "--one-shot", "10", "--set", "prune.strategy=global"], "strategy"),
        (["--method", "gmp", "--one-shot", "10", "--set", "prune.update_end=0.1"], "update_end"),
    ],
)
def test_bad_sparse_training_input_exits_2_and_writes_nothing(
    args, field, write_spec, tmp_path, real_data
):
    assert_refused(write_spec(), args, field, tmp_path / "store", real_data[1])


@pytest.mark.integration
def test_grouped_cells_update_their_masks_as_a_lone_cell_does(data):
    """Two cells under vmap and one after another (serial) end with the same masks: the
    update condition is the group's iteration, a real branch under vmap."""
    results = {}
    for grouping in ("vmap", "serial"):
        engine, lone, table, _ = _cell_and_table("rigl")
        engine = dataclasses.replace(engine, grouping=grouping)
        cells = [jax.device_get(lone), jax.device_get(lone)]
        group = engine.start(
            [c.params for c in cells],
            [c.batch_stats for c in cells],
            [c.mask for c in cells],
            [jax.random.PRNGKey(7), jax.random.PRNGKey(8)],
            schedules=[table, table],
        )
        group, _ = engine.segment(group, 0, 1, data)
        results[grouping] = jax.device_get(group)
    a, b = results["vmap"], results["serial"]
    for x, y in zip(jax.tree.leaves(a.mask), jax.tree.leaves(b.mask), strict=True):
        assert np.array_equal(x, y)
    assert not np.array_equal(a.mask["fc1"]["kernel"][0], a.mask["fc1"]["kernel"][1])
    for x, y in zip(jax.tree.leaves(a.params), jax.tree.leaves(b.params), strict=True):
        np.testing.assert_allclose(x, y, atol=1e-5)


@pytest.mark.integration
def test_set_updates_masks_alike_on_the_device_streamed_and_in_the_host_loop(
    class_folder, tmp_path
):
    """Every feeder calls the engine's step, where the mask updates live: streamed data
    gives the on-device cells bit for bit (deterministic), the host loop the same masks."""
    table = {
        "data": {"dataset": f"folder:{class_folder}", "validation": 50},
        "model": {"name": "lenet300"},
        "train": {"iterations": "100it", "eval_every": "50it", "batch_size": 20},
        "prune": {"method": "set", "one_shot": 20, "update_every": "20it"},
        "run": {"deterministic": True},
    }
    loaded = spec.from_mapping("sparse", table)
    stores = {way: Store(tmp_path / way) for way in ("device", "stream", "host")}
    run_id = launch.run(loaded, stores["device"])
    as_stream = spec.apply_overrides(loaded, {"data.placement": "stream"})
    assert launch.run(as_stream, stores["stream"]) == run_id
    assert launch.run(loaded, stores["host"], grouping="host") == run_id
    template = stores["device"].load_weights(stores["device"].init_path(run_id, 0))["params"]
    for cell in (CellKey(0, 0), CellKey(0, 1)):
        device = stores["device"].read_metrics(run_id, cell)
        assert device["curve"] == stores["stream"].read_metrics(run_id, cell)["curve"]
        masks = [s.read_mask(run_id, cell, template) for s in stores.values()]
        for other in masks[1:]:
            assert all(np.array_equal(masks[0][k]["kernel"], other[k]["kernel"]) for k in other)
    ticket = stores["device"].read_metrics(run_id, CellKey(0, 1))
    assert ticket["mask_update_steps"] == [0, 20, 40, 60]


@pytest.mark.integration
def test_controls_of_a_gmp_ticket_train_its_final_mask_rewound_to_theta_k(class_folder, tmp_path):
    table = {
        "data": {"dataset": f"folder:{class_folder}", "validation": 50},
        "model": {"name": "lenet300"},
        "train": {"iterations": "300it", "eval_every": "100it", "batch_size": 20},
        "prune": {"method": "gmp", "one_shot": 20, "update_every": "50it", "rewind_iter": "100it"},
        "run": {"controls": "rewind:1,reinit:1,random:1"},
    }
    store = Store(tmp_path)
    run_id = launch.run(spec.from_mapping("gmp", table), store)
    template = store.load_weights(store.init_path(run_id, 0))["params"]
    theta_k = store.load_weights(store.rewind_path(run_id, 0))["params"]
    final = store.read_mask(run_id, CellKey(0, 1), template)
    ticket = store.read_metrics(run_id, CellKey(0, 1))
    assert ticket["mask_update_steps"] == [50, 100, 150, 200]
    assert ticket["percent_remaining"] == pytest.approx(20.0, abs=0.01)
    assert ticket["curve"]["iteration"] == [100, 200, 300]  # trained from θ0 at 0
    assert {n: kept[-1] for n, kept in ticket["update_layers"].items()} == {
        n: kept for n, (kept, _) in ticket["layers"].items()
    }
    for member in ("rewind-0", "reinit-0", "random-0"):
        cell = CellKey(0, 1, member)
        mask = store.read_mask(run_id, cell, template)
        assert pruning.counts(mask) == pruning.counts(final)
        same = all(np.array_equal(mask[k]["kernel"], final[k]["kernel"]) for k in final)
        assert same == (member != "random-0")
        metrics = store.read_metrics(run_id, cell)
        assert metrics["curve"]["iteration"] == [200, 300] and metrics["schedule_step"] == 100
    rewound = store.read_metrics(run_id, CellKey(0, 1, "rewind-0"))["start_digest"]
    assert rewound == checks.digest(masked(theta_k, final))  # θk under the final mask
