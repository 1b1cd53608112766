"""N:M structured sparsity (``prune.pattern``): N of every M along a kernel's input axis,
against brute-force loops, for IMP, one-shot, the random control and pruning at init; and
without a pattern, the masks of before (golden digests from the code before patterns)."""

from __future__ import annotations

import hashlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ltcli.models.lenet import MLP
from ltcli.science import pruning, scoring
from ltcli.science.pruning import Strategy

pytestmark = pytest.mark.unit

# Dense kernels are (in, out), conv kernels (kh, kw, cin, cout): the input axis is -2.
LAYERS = {"fc1": (16, 6), "conv1": (3, 3, 8, 5), "out": (12, 3)}
RATES = {"fc": 0.2, "conv": 0.2, "output": 0.1}
NAMES = [f"{n}/kernel" for n in LAYERS]


def params(rng: np.random.Generator, layers=LAYERS) -> dict:
    return {
        name: {
            "kernel": rng.normal(size=shape).astype(np.float32),
            "bias": rng.normal(size=shape[-1:]).astype(np.float32),
        }
        for name, shape in layers.items()
    }


def group_counts(layer: np.ndarray, m: int) -> np.ndarray:
    """Survivors of every group, by an explicit loop over the input axis (axis -2)."""
    shape = layer.shape
    counts = []
    for index in np.ndindex(*shape[:-2], shape[-1]):
        for g in range(shape[-2] // m):
            counts.append(sum(layer[(*index[:-1], g * m + j, index[-1])] > 0 for j in range(m)))
    return np.array(counts)


def brute_keep(scores: np.ndarray, mask: np.ndarray, keep: int, m: int) -> np.ndarray:
    """`keep_per_group` by a loop: per group, the survivors of highest score, ties to the
    earlier position along the input axis."""
    out = np.zeros(mask.shape, np.float32)
    shape = mask.shape
    for index in np.ndindex(*shape[:-2], shape[-1]):
        for g in range(shape[-2] // m):
            at = [(*index[:-1], g * m + j, index[-1]) for j in range(m)]
            alive = [(-float(scores[a]), j) for j, a in enumerate(at) if mask[a] > 0]
            for _, j in sorted(alive)[:keep]:
                out[at[j]] = 1.0
    return out


def digest(tree) -> str:
    h = hashlib.sha256()
    for name, leaf in sorted(pruning.flatten(tree).items()):
        h.update(name.encode())
        h.update(np.ascontiguousarray(leaf, np.float32).tobytes())
    return h.hexdigest()[:16]


# -- parsing and checks ------------------------------------------------------------------------


def test_parse_pattern():
    assert pruning.parse_pattern("unstructured") is None
    assert pruning.parse_pattern("2:4") == (2, 4)
    assert pruning.parse_pattern("1:8") == (1, 8)
    for bad in ("4:4", "0:4", "5:4", "2/4", " 2:4", "2:4:8", "-1:4", "a:b", "", "2:", "N:M"):
        with pytest.raises(ValueError, match="N:M"):
            pruning.parse_pattern(bad)


def test_check_pattern_names_a_layer_whose_input_is_not_a_multiple_of_m():
    shapes = {
        "fc1": {"kernel": jax.ShapeDtypeStruct((8, 3), jnp.float32)},
        "fc2": {"kernel": jax.ShapeDtypeStruct((3, 4), jnp.float32)},  # input 3
        "out": {"kernel": jax.ShapeDtypeStruct((4, 2), jnp.float32)},
    }
    with pytest.raises(ValueError, match=r"fc2/kernel.*input size 3"):
        pruning.check_pattern(shapes, (), (2, 4))
    pruning.check_pattern(shapes, ("fc2",), (2, 4))  # excluded: nothing to hold
    pruning.check_pattern(shapes, (), None)
    # fc1's input, 8, is not a multiple of 3 either: the first pruned layer is named
    with pytest.raises(ValueError, match="fc1/kernel"):
        pruning.check_pattern(shapes, (), (2, 3))
    p = {"fc2": {"kernel": np.zeros((3, 4), np.float32)}}
    with pytest.raises(ValueError, match="fc2/kernel"):
        Strategy("layerwise", RATES, pattern=(2, 4)).prune(p, pruning.dense_mask(p), 1)


def test_strategy_refuses_what_a_pattern_cannot_do():
    with pytest.raises(ValueError):
        Strategy("global", {"global": 0.2}, pattern=(2, 4))
    with pytest.raises(ValueError, match="one level"):
        Strategy("layerwise", RATES, one_shot=(50.0, 25.0), pattern=(2, 4))
    with pytest.raises(ValueError):
        Strategy("layerwise", RATES, pattern=(4, 4))


# -- keep_per_group ---------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(16, 6), (3, 3, 8, 5), (2, 24, 3)])
@pytest.mark.parametrize("keep, m", [(2, 4), (1, 4), (3, 4), (1, 2), (5, 8)])
def test_keep_per_group_matches_a_brute_force_loop(shape, keep, m):
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 4, size=shape).astype(np.float64)  # many ties
    mask = brute_keep(rng.random(shape), np.ones(shape), keep + 1, m)  # keep + 1 per group
    got = pruning.keep_per_group(scores, mask, keep, m)
    assert got.dtype == np.float32 and got.shape == shape
    np.testing.assert_array_equal(got, brute_keep(scores, mask, keep, m))
    assert np.all(got <= mask)
    assert np.all(group_counts(got, m) == keep)


def test_groups_run_along_the_input_axis_and_ties_go_to_the_earlier_position():
    got = pruning.keep_per_group(np.ones((8, 3)), np.ones((8, 3)), 2, 4)
    # rows (inputs) 0, 1 and 4, 5 of every column (output): not columns, not flat order
    np.testing.assert_array_equal(got, np.repeat([[1], [1], [0], [0], [1], [1], [0], [0]], 3, 1))
    conv = pruning.keep_per_group(np.ones((2, 2, 4, 3)), np.ones((2, 2, 4, 3)), 1, 4)
    assert np.all(conv[:, :, 0, :] == 1) and np.all(conv[:, :, 1:, :] == 0)


def test_keep_per_group_refuses_a_group_with_too_few_survivors():
    mask = np.ones((8, 2), np.float32)
    mask[0:3, 0] = 0  # the first group of column 0 has one survivor
    with pytest.raises(ValueError, match="fewer than 2"):
        pruning.keep_per_group(np.ones((8, 2)), mask, 2, 4)
    with pytest.raises(ValueError):
        pruning.keep_per_group(np.ones((6, 2)), np.ones((6, 2)), 2, 4)


# -- IMP and one-shot ------------------------------------------------------------------------


def test_imp_reaches_2_4_in_two_rounds_each_inside_the_last():
    rng = np.random.default_rng(1)
    strategy = Strategy("layerwise", RATES, pattern=(2, 4))
    p = params(rng)
    mask = pruning.dense_mask(p)
    assert strategy.expected_counts(p, 0) == {n: int(np.prod(LAYERS[n[:-7]])) for n in NAMES}
    for level, keep in ((1, 3), (2, 2)):
        trained = params(rng)  # fresh "trained" weights each round
        new = strategy.prune(trained, mask, level)
        assert strategy.group_keep(level) == keep
        assert pruning.holds_pattern(new, NAMES, keep, 4)
        assert not pruning.holds_pattern(new, NAMES, keep + 1, 4)
        for name in NAMES:
            old, got = pruning.flatten(mask)[name], pruning.flatten(new)[name]
            assert np.all(got <= old)  # inside the last mask
            assert np.all(group_counts(got, 4) == keep)
            w = np.abs(pruning.flatten(trained)[name])
            np.testing.assert_array_equal(got, brute_keep(w, old, keep, 4))
        assert all(np.all(m["bias"] == 1) for m in new.values())
        expected = {n: int(np.prod(LAYERS[n[:-7]])) * keep // 4 for n in NAMES}
        assert strategy.actual_counts(p, new) == strategy.expected_counts(p, level) == expected
        mask = new
    with pytest.raises(ValueError, match="more rounds than N:M allows"):
        strategy.prune(params(rng), mask, 3)
    with pytest.raises(ValueError, match="more rounds than N:M allows"):
        strategy.expected_counts(p, 3)


def test_one_shot_goes_straight_to_n_m_and_exclusions_stay_dense():
    rng = np.random.default_rng(2)
    strategy = Strategy("layerwise", RATES, ("out",), one_shot=(60.0,), pattern=(1, 4))
    p = params(rng)
    mask = strategy.prune(p, pruning.dense_mask(p), 1)
    pruned = ["fc1/kernel", "conv1/kernel"]
    assert pruning.holds_pattern(mask, pruned, 1, 4)
    for name in pruned:
        w = np.abs(pruning.flatten(p)[name])
        want = brute_keep(w, np.ones(w.shape), 1, 4)
        np.testing.assert_array_equal(pruning.flatten(mask)[name], want)
    assert np.all(mask["out"]["kernel"] == 1)
    assert strategy.actual_counts(p, mask) == strategy.expected_counts(p, 1)
    assert strategy.expected_counts(p, 1) == {"fc1/kernel": 24, "conv1/kernel": 90}
    with pytest.raises(ValueError, match="one level"):
        strategy.prune(p, mask, 2)


# -- the random control and the shuffle ---------------------------------------------------------


def test_random_like_with_a_pattern_keeps_every_groups_count():
    rng = np.random.default_rng(3)
    p = params(rng)
    strategy = Strategy("layerwise", RATES, ("out",), pattern=(2, 4))
    ticket = strategy.prune(p, strategy.prune(p, pruning.dense_mask(p), 1), 2)
    for control in (
        pruning.random_like(ticket, np.random.default_rng(4), (2, 4)),
        scoring.shuffle(ticket, np.random.default_rng(4), (2, 4)),
    ):
        assert pruning.holds_pattern(control, ["fc1/kernel", "conv1/kernel"], 2, 4)
        for name in ("fc1/kernel", "conv1/kernel"):
            a, b = pruning.flatten(ticket)[name], pruning.flatten(control)[name]
            np.testing.assert_array_equal(group_counts(a, 4), group_counts(b, 4))
            assert not np.array_equal(a, b)
        assert np.all(control["out"]["kernel"] == 1)
        assert pruning.counts(control) == pruning.counts(ticket)
    # a mask with uneven groups keeps its uneven counts
    uneven = pruning.flatten(pruning.dense_mask(p))
    uneven["fc1/kernel"][:3, 0] = 0
    fresh = pruning.random_like(pruning.unflatten(uneven), np.random.default_rng(5), (2, 4))
    np.testing.assert_array_equal(
        group_counts(fresh["fc1"]["kernel"], 4), group_counts(uneven["fc1/kernel"], 4)
    )
    # without the pattern the control ignores the groups
    plain = pruning.random_like(ticket, np.random.default_rng(4))
    assert not pruning.holds_pattern(plain, ["fc1/kernel"], 2, 4)


# -- pruning at initialization ----------------------------------------------------------------

NET = MLP(hidden=(8,), num_classes=3)  # 2x2x2 images: fc1 8x8, out 8x3
NET_SHAPE = (2, 2, 2)
AT_INIT = ["fc1/kernel", "out/kernel"]


@pytest.fixture(scope="module")
def net():
    variables = NET.init(jax.random.key(0), jnp.zeros((1, *NET_SHAPE)))
    rng = np.random.default_rng(1)
    x = rng.normal(size=(6, *NET_SHAPE)).astype(np.float32)
    return {"params": jax.device_get(variables["params"])}, x, np.arange(6) % 3


def layer(tree, name):
    return np.asarray(pruning.flatten(tree)[name], np.float64)


@pytest.mark.parametrize("method", ["snip", "magnitude-init", "grasp", "random"])
def test_at_init_with_a_pattern_keeps_the_top_scored_per_group(net, method):
    variables, x, y = net
    key = jax.random.key(3)
    (mask, again) = scoring.masks_at_init(
        method,
        NET,
        variables,
        [None, 50.0],
        image_shape=NET_SHAPE,
        batch_x=x,
        batch_y=y,
        key=key,
        pattern=(2, 4),
    )
    assert digest(mask) == digest(again)  # the pattern fixes the counts
    assert pruning.holds_pattern(mask, AT_INIT, 2, 4)
    scores = jax.device_get(scoring.score(method, NET, variables, x, y, key, image_shape=NET_SHAPE))
    for name in AT_INIT:
        s = layer(scores, name)
        np.testing.assert_array_equal(layer(mask, name), brute_keep(s, np.ones(s.shape), 2, 4))
    assert all(np.all(m == 1) for n, m in pruning.flatten(mask).items() if "bias" in n)


@pytest.mark.parametrize("method", ["snip", "magnitude-init", "synflow"])
def test_invert_with_a_pattern_keeps_the_lowest_per_group(net, method):
    variables, x, y = net
    kwargs = dict(image_shape=NET_SHAPE, batch_x=x, batch_y=y, exclude=("out",))
    (mask,) = scoring.masks_at_init(method, NET, variables, [None], pattern=(1, 4), **kwargs)
    (low,) = scoring.masks_at_init(
        method, NET, variables, [None], pattern=(1, 4), invert=True, **kwargs
    )
    scores = jax.device_get(scoring.score(method, NET, variables, x, y, image_shape=NET_SHAPE))
    s = layer(scores, "fc1/kernel")
    assert pruning.holds_pattern(mask, ["fc1/kernel"], 1, 4)
    assert pruning.holds_pattern(low, ["fc1/kernel"], 1, 4)
    np.testing.assert_array_equal(layer(mask, "fc1/kernel"), brute_keep(s, np.ones(s.shape), 1, 4))
    np.testing.assert_array_equal(layer(low, "fc1/kernel"), brute_keep(-s, np.ones(s.shape), 1, 4))
    assert np.all(low["out"]["kernel"] == 1)
    # the ablation function gives the same mask from the scores and the ticket
    inverted = scoring.invert(scores, mask, ("out",), (1, 4))
    assert digest(inverted) == digest(low)
    # every group's kept weight of `low` scores no more than every other in its group
    rows = np.moveaxis(s, -2, -1).reshape(-1, 4)
    kept = np.moveaxis(layer(low, "fc1/kernel"), -2, -1).reshape(-1, 4) > 0
    assert np.all(rows[kept] <= rows.min(axis=1))


def test_synflow_with_a_pattern_is_one_round_on_the_dense_network(net):
    variables, _, _ = net
    (mask,) = scoring.masks_at_init(
        "synflow", NET, variables, [None], image_shape=NET_SHAPE, pattern=(2, 4)
    )
    scores = scoring.synflow(NET, variables, NET_SHAPE)
    assert pruning.holds_pattern(mask, AT_INIT, 2, 4)
    for name in AT_INIT:
        s = layer(scores, name)
        np.testing.assert_array_equal(layer(mask, name), brute_keep(s, np.ones(s.shape), 2, 4))


def test_at_init_refuses_a_layer_that_cannot_hold_the_pattern_before_scoring(net):
    _, x, y = net
    odd = MLP(hidden=(3,), num_classes=2)  # out's input is 3
    odd_vars = {"params": odd.init(jax.random.key(0), jnp.zeros((1, *NET_SHAPE)))["params"]}
    for method in ("snip", "synflow"):
        with pytest.raises(ValueError, match="out/kernel"):
            scoring.masks_at_init(
                method,
                odd,
                odd_vars,
                [None],
                image_shape=NET_SHAPE,
                batch_x=x,
                batch_y=y,
                pattern=(2, 4),
            )


# -- without a pattern nothing changes ---------------------------------------------------------

# Digests of the masks the code before patterns gave for these calls (ltcli/science at
# 48da4f3), all from numpy draws: IMP, one-shot and global magnitude pruning, the random
# control, magnitude at init with its inversion and shuffle.
GOLDEN = {
    "imp": "d6cc0970e0da7f0e",
    "one_shot": "c9ed4617a2cdcb94",
    "global": "80ddefa58babe610",
    "random": "7b56f9af8ee9109c",
    "magnitude": "aa8beb661a2b8f17",
    "magnitude_35": "7461a96e25e72e1b",
    "invert": "03085e1d464585ed",
    "shuffle": "ca292e8f72afd694",
}


def no_pattern_masks() -> dict[str, str]:
    rng = np.random.default_rng(10)
    p = params(rng)
    imp = Strategy("layerwise", RATES)
    mask = pruning.dense_mask(p)
    for level in (1, 2, 3):
        mask = imp.prune(params(rng), mask, level)
    one_shot = Strategy("layerwise", RATES, one_shot=(30.0,)).prune(p, pruning.dense_mask(p), 1)
    glob = Strategy("global", {"global": 0.3}, ("out",)).prune(p, pruning.dense_mask(p), 1)
    variables = {"params": params(rng, {"fc1": (8, 8), "out": (8, 3)})}  # NET's shapes
    masks = scoring.masks_at_init(
        "magnitude-init", NET, variables, [50.0, 35.0], image_shape=NET_SHAPE, exclude=("out",)
    )
    scores = scoring.magnitude_init(variables["params"])
    return {
        "imp": digest(mask),
        "one_shot": digest(one_shot),
        "global": digest(glob),
        "random": digest(pruning.random_like(mask, np.random.default_rng(11))),
        "magnitude": digest(masks[0]),
        "magnitude_35": digest(masks[1]),
        "invert": digest(scoring.invert(scores, masks[1], ("out",))),
        "shuffle": digest(scoring.shuffle(masks[1], np.random.default_rng(12))),
    }


def test_without_a_pattern_masks_are_those_of_before():
    assert no_pattern_masks() == GOLDEN


def test_pattern_none_is_the_default(net):
    rng = np.random.default_rng(13)
    p = params(rng)
    a = Strategy("layerwise", RATES).prune(p, pruning.dense_mask(p), 1)
    b = Strategy("layerwise", RATES, pattern=None).prune(p, pruning.dense_mask(p), 1)
    assert digest(a) == digest(b)
    assert not pruning.holds_pattern(a, NAMES, 3, 4)  # unstructured: groups are uneven
    ticket = pruning.random_like(a, np.random.default_rng(0))
    assert digest(ticket) == digest(pruning.random_like(a, np.random.default_rng(0), None))
