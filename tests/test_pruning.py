"""Magnitude pruning: exact counts by the documented rounding rule, largest survivors kept."""

from __future__ import annotations

import numpy as np
import pytest

from ltcli.science import pruning
from ltcli.science.pruning import Strategy

pytestmark = pytest.mark.unit

LENET = {"fc1": (784, 300), "fc2": (300, 100), "out": (100, 10)}
RESNET_LIKE = {
    "conv1": (3, 3, 3, 16),
    "conv2": (3, 3, 16, 32),
    "shortcut": (1, 1, 16, 32),
    "out": (32, 10),
}


def params(rng: np.random.Generator, layers=LENET) -> dict:
    return {
        name: {
            "kernel": rng.normal(size=shape).astype(np.float32),
            "bias": rng.normal(size=shape[-1:]).astype(np.float32),
        }
        for name, shape in layers.items()
    }


def test_kept_count_follows_the_rounding_rule():
    # 235,200 -> 188,160 -> 150,528 -> 120,422 (30,105.6 rounds to 30,106) -> ...
    assert [pruning.kept_count(235200, 0.2, k) for k in range(4)] == [
        235200,
        188160,
        150528,
        120422,
    ]
    assert pruning.kept_count(1000, 0.1, 3) == 729
    assert pruning.kept_count(25, 0.5, 1) == 13  # removes round(12.5) = 12: half to even


def test_layerwise_counts_after_several_rounds_match_the_rule():
    rng = np.random.default_rng(0)
    strategy = Strategy("layerwise", {"fc": 0.2, "output": 0.1})
    p = params(rng)
    mask = pruning.dense_mask(p)
    for level in range(1, 6):
        mask = strategy.prune(params(rng), mask)  # fresh "trained" weights each round
        got = pruning.counts(mask)
        for name, shape in LENET.items():
            rate = 0.1 if name == "out" else 0.2
            assert got[f"{name}/kernel"] == (
                pruning.kept_count(np.prod(shape), rate, level),
                np.prod(shape),
            )
        assert strategy.actual_counts(p, mask) == strategy.expected_counts(p, level)
    # Biases are never pruned.
    assert all(np.all(m["bias"] == 1) for m in mask.values())


def test_kept_weights_are_the_largest_magnitude_survivors():
    rng = np.random.default_rng(1)
    strategy = Strategy("layerwise", {"fc": 0.5, "output": 0.5})
    mask = strategy.prune(params(rng), pruning.dense_mask(params(rng)))
    trained = params(rng)
    new = strategy.prune(trained, mask)
    for name in LENET:
        w, old, kept = (np.abs(trained[name]["kernel"]), mask[name]["kernel"], new[name]["kernel"])
        assert np.all(kept <= old)  # pruned weights stay pruned
        dropped = (old == 1) & (kept == 0)
        assert w[kept == 1].min() >= w[dropped].max()


def test_ties_are_broken_by_position_and_counts_stay_exact():
    p = {"fc1": {"kernel": np.ones((4, 5), np.float32)}}
    mask = Strategy("layerwise", {"fc": 0.5}).prune(p, pruning.dense_mask(p))
    assert mask["fc1"]["kernel"].reshape(-1).tolist() == [1.0] * 10 + [0.0] * 10


def test_global_pruning_removes_the_fraction_of_the_pool_and_skips_excluded_layers():
    p = params(np.random.default_rng(2), RESNET_LIKE)
    strategy = Strategy("global", {"global": 0.2}, exclude=("shortcut", "out"))
    mask = strategy.prune(p, pruning.dense_mask(p))
    pool = 3 * 3 * 3 * 16 + 3 * 3 * 16 * 32
    kept = mask["conv1"]["kernel"].sum() + mask["conv2"]["kernel"].sum()
    assert kept == pool - round(0.2 * pool)
    assert mask["shortcut"]["kernel"].all() and mask["out"]["kernel"].all()
    # One ranking over raw magnitudes: every kept weight beats every pruned one.
    w = np.concatenate([np.abs(p[n]["kernel"]).ravel() for n in ("conv1", "conv2")])
    m = np.concatenate([mask[n]["kernel"].ravel() for n in ("conv1", "conv2")])
    assert w[m == 1].min() >= w[m == 0].max()
    assert strategy.actual_counts(p, mask) == strategy.expected_counts(p, 1) == {"*": kept}


def test_random_mask_keeps_the_per_layer_counts():
    rng = np.random.default_rng(3)
    p = params(rng)
    strategy = Strategy("layerwise", {"fc": 0.6, "output": 0.3})
    ticket = strategy.prune(p, pruning.dense_mask(p))
    random = pruning.random_like(ticket, np.random.default_rng(4))
    assert pruning.counts(random) == pruning.counts(ticket)
    assert not np.array_equal(random["fc1"]["kernel"], ticket["fc1"]["kernel"])


@pytest.mark.parametrize(
    "kind, target", [("layerwise", 17.6), ("layerwise", 5.17), ("global", 10.0)]
)
def test_one_shot_reaches_the_requested_percent(kind: str, target: float):
    rng = np.random.default_rng(5)
    p = params(rng)
    rates = {"fc": 0.2, "output": 0.1} if kind == "layerwise" else {"global": 0.2}
    mask = Strategy(kind, rates, one_shot=(target,)).prune(p, pruning.dense_mask(p))
    assert pruning.percent_remaining(mask) == pytest.approx(target, abs=0.01)
    if kind == "layerwise":  # the output layer keeps more, as IMP's half rate would
        fractions = {n: k / t for n, (k, t) in pruning.counts(mask).items()}
        assert fractions["out/kernel"] > fractions["fc1/kernel"]


def test_flatten_and_unflatten_agree_with_flax():
    from flax import traverse_util
    from flax.core import FrozenDict

    tree = {
        "params": FrozenDict({"fc1": {"kernel": np.ones((2, 3)), "bias": np.zeros(3)}}),
        "batch_stats": {},
        "out": {"kernel": np.arange(4.0)},
    }
    flat = pruning.flatten(tree)
    reference = traverse_util.flatten_dict(tree, sep="/")
    assert list(flat) == list(reference) == ["params/fc1/kernel", "params/fc1/bias", "out/kernel"]
    assert all(isinstance(v, np.ndarray) for v in flat.values())
    assert pruning.unflatten(flat) == traverse_util.unflatten_dict(dict(flat), sep="/")


def test_layer_kinds_come_from_layer_names():
    assert pruning.layer_kind("fc1/kernel") == "fc"
    assert pruning.layer_kind("out/kernel") == "output"
    assert pruning.layer_kind("stage1/conv2/kernel") == "conv"
    assert pruning.layer_kind("block/shortcut/kernel") == "conv"
    assert pruning.layer_kind("fc1/bias") is None
    assert pruning.layer_kind("bn1/scale") is None


def test_one_shot_counts_excluded_layers_towards_the_percent_remaining():
    p = params(np.random.default_rng(6), RESNET_LIKE)
    strategy = Strategy("global", {"global": 0.2}, exclude=("shortcut", "out"), one_shot=(27.1,))
    mask = strategy.prune(p, pruning.dense_mask(p))
    assert pruning.percent_remaining(mask) == pytest.approx(27.1, abs=0.01)
    assert mask["shortcut"]["kernel"].all() and mask["out"]["kernel"].all()
    assert strategy.actual_counts(p, mask) == strategy.expected_counts(p, 1)
