"""Pruning at initialization: hand-computed SNIP, GraSP and SynFlow scores on a 2-layer
network (with dropout or batch norm for the scoring modes), exact global counts with
exclusions, the shuffle and inversion ablations."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from ltcli.models.layers import BatchNorm, Dense
from ltcli.models.lenet import MLP
from ltcli.models.vgg import VGG
from ltcli.science import pruning, scoring

pytestmark = pytest.mark.unit

TINY = MLP(hidden=(3,), num_classes=2)  # 2x2x1 images: fc1 4x3, out 3x2
SHAPE = (2, 2, 1)


def tiny_params(seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    f32 = np.float32
    return {
        "fc1": {
            "kernel": rng.normal(size=(4, 3)).astype(f32),
            "bias": np.array([-0.3, 0.2, -0.1], f32),  # negative: SynFlow must take |b|
        },
        "out": {
            "kernel": rng.normal(size=(3, 2)).astype(f32),
            "bias": np.array([0.1, -0.2], f32),
        },
    }


def tiny_batch(seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(6, *SHAPE)).astype(np.float32), np.array([0, 1, 1, 0, 1, 0])


# -- the network by hand, in float64 numpy ------------------------------------------------


def _unpack(p):
    f = np.float64
    return (
        p["fc1"]["kernel"].astype(f),
        p["fc1"]["bias"].astype(f),
        p["out"]["kernel"].astype(f),
        p["out"]["bias"].astype(f),
    )


def hand_grad(p, x, y, temperature=1.0):
    """(dL/dW1, dL/dW2) of L = mean CE(softmax(z / T)), z = relu(x W1 + b1) W2 + b2,
    plus the intermediates the Hessian-vector product needs."""
    w1, b1, w2, b2 = _unpack(p)
    x = x.reshape(len(x), -1).astype(np.float64)
    a1 = x @ w1 + b1
    on = (a1 > 0).astype(np.float64)
    h = a1 * on
    s = (h @ w2 + b2) / temperature
    prob = np.exp(s - s.max(1, keepdims=True))
    prob /= prob.sum(1, keepdims=True)
    onehot = np.eye(w2.shape[1])[y]
    dz = (prob - onehot) / (len(x) * temperature)  # dL/dz
    g2 = h.T @ dz
    g1 = x.T @ ((dz @ w2.T) * on)
    return (g1, g2), (x, on, h, prob, dz)


def hand_hvp(p, x, y, v1, v2, temperature=1.0):
    """H (v1, v2) for the kernels (bias tangents 0): the directional derivative of
    `hand_grad` along (v1, v2), written out by the chain rule."""
    _, _, w2, _ = _unpack(p)
    _, (x, on, h, prob, dz) = hand_grad(p, x, y, temperature)
    dh = (x @ v1) * on  # relu' is constant almost everywhere
    ds = (dh @ w2 + h @ v2) / temperature
    dprob = prob * ds - prob * np.sum(prob * ds, 1, keepdims=True)  # (diag p - p p^T) ds
    ddz = dprob / (len(x) * temperature)
    hv2 = dh.T @ dz + h.T @ ddz
    hv1 = x.T @ ((ddz @ w2.T + dz @ v2.T) * on)
    return hv1, hv2


def close(a, b, rtol=2e-4):
    np.testing.assert_allclose(np.asarray(a, np.float64), b, rtol=rtol, atol=1e-12)


# -- scores ------------------------------------------------------------------------------------


def test_snip_is_abs_gradient_times_weight():
    p, (x, y) = tiny_params(), tiny_batch()
    (g1, g2), _ = hand_grad(p, x, y)
    got = scoring.snip(TINY, {"params": p}, x, y)
    close(got["fc1"]["kernel"], np.abs(g1 * p["fc1"]["kernel"]))
    close(got["out"]["kernel"], np.abs(g2 * p["out"]["kernel"]))


def test_hand_hessian_vector_product_matches_finite_differences():
    """Checks the test's own formula, so the GraSP check below does not rest on it alone."""
    p, (x, y) = tiny_params(), tiny_batch()
    (g1, g2), _ = hand_grad(p, x, y, 3.0)
    eps = 1e-6

    def shifted(sign):
        q = {k: dict(v) for k, v in p.items()}
        q["fc1"]["kernel"] = p["fc1"]["kernel"].astype(np.float64) + sign * eps * g1
        q["out"]["kernel"] = p["out"]["kernel"].astype(np.float64) + sign * eps * g2
        return hand_grad(q, x, y, 3.0)[0]

    plus, minus = shifted(1), shifted(-1)
    hv1, hv2 = hand_hvp(p, x, y, g1, g2, 3.0)
    np.testing.assert_allclose(hv1, (plus[0] - minus[0]) / (2 * eps), rtol=1e-5, atol=1e-12)
    np.testing.assert_allclose(hv2, (plus[1] - minus[1]) / (2 * eps), rtol=1e-5, atol=1e-12)


@pytest.mark.parametrize("temperature", [1.0, scoring.GRASP_TEMPERATURE])
def test_grasp_is_weight_times_hessian_gradient(temperature):
    p, (x, y) = tiny_params(), tiny_batch()
    (g1, g2), _ = hand_grad(p, x, y, temperature)
    hv1, hv2 = hand_hvp(p, x, y, g1, g2, temperature)
    got = scoring.grasp(TINY, {"params": p}, x, y, temperature=temperature)
    close(got["fc1"]["kernel"], p["fc1"]["kernel"] * hv1, rtol=1e-3)
    close(got["out"]["kernel"], p["out"]["kernel"] * hv2, rtol=1e-3)


def test_grasp_keeps_what_grasp_keeps():
    """GraSP removes the highest -w*Hg; keeping the largest w*Hg is the same mask."""
    p, (x, y) = tiny_params(), tiny_batch()
    scores = scoring.grasp(TINY, {"params": p}, x, y)
    mask = scoring.prune_once(scores, p, 50)
    own = {n: -np.asarray(s) for n, s in pruning.flatten(scores).items()}  # GraSP's S(-w)
    names = ["fc1/kernel", "out/kernel"]
    flat_m = pruning.flatten(mask)
    kept = np.concatenate([own[n][flat_m[n] > 0] for n in names])
    removed = np.concatenate([own[n][flat_m[n] == 0] for n in names])
    assert kept.size == 9 and kept.max() <= removed.min()


def test_synflow_scores_the_absolute_network_on_ones():
    p = tiny_params()
    w1, b1, w2, _ = (np.abs(a) for a in _unpack(p))
    h = np.ones(4) @ w1 + b1  # all-ones input, |biases|: every unit is active
    # R = sum_k (h W2 + b2)_k: dR/dW2[j, k] = h_j, dR/dW1[i, j] = x_i * sum_k W2[j, k].
    got = scoring.synflow(TINY, {"params": p}, SHAPE)
    close(got["out"]["kernel"], h[:, None] * w2)
    close(got["fc1"]["kernel"], w1 * w2.sum(1)[None, :])
    assert got["out"]["kernel"].dtype == np.float64


def test_synflow_scores_the_masked_network():
    p = tiny_params()
    mask = pruning.dense_mask(p)
    mask["out"]["kernel"][1, :] = 0  # hidden unit 1 no longer reaches the output
    mask["fc1"]["kernel"][0, 2] = 0
    w1, b1, w2, _ = (np.abs(a) for a in _unpack(p))
    w1, w2 = w1 * mask["fc1"]["kernel"], w2 * mask["out"]["kernel"]
    h = np.ones(4) @ w1 + b1
    got = scoring.synflow(TINY, {"params": p}, SHAPE, mask)
    close(got["out"]["kernel"], h[:, None] * w2)
    close(got["fc1"]["kernel"], w1 * w2.sum(1)[None, :])
    assert got["fc1"]["kernel"][0, 2] == 0 and np.all(got["fc1"]["kernel"][:, 1] == 0)


def test_synflow_uses_no_data():
    p, (x, y) = tiny_params(), tiny_batch()
    variables = {"params": p}
    without = scoring.score("synflow", TINY, variables, None, None, image_shape=SHAPE)
    other = np.random.default_rng(5).normal(size=x.shape).astype(np.float32)
    for batch_x in (x, other):
        with_data = scoring.score("synflow", TINY, variables, batch_x, y, image_shape=SHAPE)
        for a, b in zip(jax.tree.leaves(without), jax.tree.leaves(with_data), strict=True):
            np.testing.assert_array_equal(a, b)
    assert not scoring.needs_data("synflow") and scoring.needs_data("snip")


def test_float64_avoids_synflow_overflow():
    """Seven layers whose absolute weights sum to ~1e7 per unit: R ~ 1e44 > float32's max."""
    deep = MLP(hidden=(8,) * 6, num_classes=2)
    params = deep.init(jax.random.key(0), jnp.zeros((1, *SHAPE)))["params"]
    big = {"params": jax.tree.map(lambda w: w * 1e6, params)}
    with pytest.raises(FloatingPointError):
        scoring.synflow(deep, big, SHAPE, x64=False)
    scores = scoring.synflow(deep, big, SHAPE)
    assert all(np.all(np.isfinite(s)) for s in jax.tree.leaves(scores))
    mask = scoring.synflow_mask(deep, big, 10, SHAPE)
    assert sum(k for k, _ in pruning.counts(mask).values()) == scoring.keep_count(params, 10)


def test_magnitude_and_random_scores():
    p = tiny_params()
    got = scoring.magnitude_init(p)
    close(got["fc1"]["kernel"], np.abs(p["fc1"]["kernel"]))
    key = jax.random.key(3)
    a, b = scoring.random(p, key), scoring.random(p, key)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(x, y)
    r = np.asarray(a["fc1"]["kernel"])
    assert r.shape == (4, 3) and np.all((r >= 0) & (r < 1)) and len(np.unique(r)) == 12


def test_registry_rejects_what_it_cannot_score():
    p, (x, y) = tiny_params(), tiny_batch()
    assert set(scoring.METHODS) == {"snip", "grasp", "synflow", "magnitude-init", "random"}
    with pytest.raises(ValueError, match="unknown scoring method"):
        scoring.score("snap", TINY, {"params": p})
    with pytest.raises(ValueError, match="batch"):
        scoring.score("grasp", TINY, {"params": p})
    with pytest.raises(ValueError, match="image_shape"):
        scoring.score("synflow", TINY, {"params": p})
    with pytest.raises(ValueError, match="key"):
        scoring.score("random", TINY, {"params": p})
    snip = scoring.score("snip", TINY, {"params": p}, x, y)
    close(snip["out"]["kernel"], scoring.snip(TINY, {"params": p}, x, y)["out"]["kernel"])


# -- counts ----------------------------------------------------------------------------------

WIDE = MLP(hidden=(64, 32), num_classes=10)  # 8x8x1: fc1 4096, fc2 2048, out 320
WIDE_SHAPE = (8, 8, 1)
TOTAL = 4096 + 2048 + 320


@pytest.fixture(scope="module")
def wide():
    params = WIDE.init(jax.random.key(1), jnp.zeros((1, *WIDE_SHAPE)))["params"]
    rng = np.random.default_rng(2)
    x = rng.normal(size=(20, *WIDE_SHAPE)).astype(np.float32)
    return {"params": params}, x, np.arange(20) % 10


def kept(mask, names=("fc1/kernel", "fc2/kernel", "out/kernel")) -> int:
    counted = pruning.counts(mask)
    return sum(counted[n][0] for n in names)


@pytest.mark.parametrize("method", ["snip", "grasp", "magnitude-init", "random"])
@pytest.mark.parametrize("target", [50, 20, 5, 1.4])
def test_one_shot_counts_are_exact(wide, method, target):
    variables, x, y = wide
    scores = scoring.score(method, WIDE, variables, x, y, jax.random.key(0))
    mask = scoring.prune_once(scores, variables["params"], target)
    assert kept(mask) == round(target / 100 * TOTAL)
    assert all(np.all(m == 1) for n, m in pruning.flatten(mask).items() if "bias" in n)


@pytest.mark.parametrize("target", [50, 20, 5])
def test_exclusions_stay_dense_and_count_towards_the_target(wide, target):
    variables, _, _ = wide
    params = variables["params"]
    mask = scoring.prune_once(scoring.magnitude_init(params), params, target, ("out",))
    assert pruning.counts(mask)["out/kernel"] == (320, 320)
    assert kept(mask, ("fc1/kernel", "fc2/kernel")) == round(target / 100 * TOTAL) - 320
    assert 100 * kept(mask) / TOTAL == pytest.approx(target, abs=100 / TOTAL)


def test_a_target_below_the_excluded_share_is_rejected(wide):
    params = wide[0]["params"]
    with pytest.raises(ValueError, match="excluded"):
        scoring.keep_count(params, 1.4, ("out",))
    with pytest.raises(ValueError, match="target"):
        scoring.keep_count(params, 0)


def test_magnitude_at_init_is_lts_global_magnitude_pruning(wide):
    params = wide[0]["params"]
    mask = scoring.prune_once(scoring.magnitude_init(params), params, 20, ("out",))
    keep = scoring.keep_count(params, 20, ("out",))
    expected = pruning.prune_global(
        params, pruning.dense_mask(params), keep, ["fc1/kernel", "fc2/kernel"]
    )
    for a, b in zip(jax.tree.leaves(mask), jax.tree.leaves(expected), strict=True):
        np.testing.assert_array_equal(a, b)


def test_device_ranking_matches_lts_tie_rule():
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 5, size=200).astype(np.float64)  # many ties
    scores[rng.choice(200, 30, replace=False)] = -np.inf
    for keep in (0, 1, 17, 100, 170):
        np.testing.assert_array_equal(
            scoring._keep_top(jnp.asarray(scores, jnp.float32), keep),
            pruning._keep_largest(scores, keep),
        )


# -- scoring modes (prune.score_mode) --------------------------------------------------------

TINY_DROPOUT = MLP(hidden=(3,), num_classes=2, dropout=0.5)  # TINY's parameters, dropout


class TinyBN(nn.Module):
    """TINY with batch norm between fc1 and its ReLU."""

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = x.reshape((x.shape[0], -1))
        x = Dense(3, name="fc1")(x)
        x = nn.relu(BatchNorm(use_running_average=not train, name="bn1")(x))
        return Dense(2, name="out")(x)


TINY_BN = TinyBN()
BN_EPS = 1e-5


def tiny_bn_variables(mean=(0.0, 0.0, 0.0), var=(1.0, 1.0, 1.0)) -> dict:
    """TINY's parameters with batch norm's scale and offset; running statistics 0 and 1
    (θ0's) unless given."""
    f32 = np.float32
    params = tiny_params()
    params["bn1"] = {
        "scale": np.array([1.5, 0.7, 1.2], f32),
        "bias": np.array([0.1, -0.2, 0.3], f32),
    }
    stats = {"bn1": {"mean": np.array(mean, f32), "var": np.array(var, f32)}}
    return {"params": params, "batch_stats": stats}


def folded(variables: dict) -> tuple[dict, np.ndarray]:
    """Eval-mode batch norm folded into fc1, ``relu(s (x W1 + b1) + t)``: TINY's parameters
    with ``W1 s`` and ``b1 s + t``, and the per-unit factor ``s = scale / sqrt(var + eps)``."""
    p, bn, st = variables["params"], variables["params"]["bn1"], variables["batch_stats"]["bn1"]
    s = bn["scale"].astype(np.float64) / np.sqrt(st["var"].astype(np.float64) + BN_EPS)
    t = bn["bias"] - st["mean"] * s
    return {
        "fc1": {"kernel": p["fc1"]["kernel"] * s, "bias": p["fc1"]["bias"] * s + t},
        "out": p["out"],
    }, s


@pytest.mark.parametrize(
    ("mean", "var"), [((0.0,) * 3, (1.0,) * 3), ((0.2, -0.1, 0.4), (0.5, 2.0, 1.3))]
)
def test_eval_mode_snip_and_grasp_use_batch_norms_running_statistics(mean, var):
    """By hand: eval-mode batch norm is an affine map per unit, folded into fc1. With
    ``W1' = W1 s``, dL/dW1 = s dL/dW1', so SNIP's ``|g1 W1| = |g1' W1'|``; GraSP's
    ``H g`` for W1 is ``s^2`` times the folded network's (tangent g1 = s g1')."""
    variables, (x, y) = tiny_bn_variables(mean, var), tiny_batch()
    q, s = folded(variables)
    (g1, g2), _ = hand_grad(q, x, y)
    got = scoring.snip(TINY_BN, variables, x, y, mode="eval")
    close(got["fc1"]["kernel"], np.abs(g1 * q["fc1"]["kernel"]))
    close(got["out"]["kernel"], np.abs(g2 * q["out"]["kernel"]))
    default = scoring.snip(TINY_BN, variables, x, y)
    for a, b in zip(jax.tree.leaves(default), jax.tree.leaves(got), strict=True):
        np.testing.assert_array_equal(a, b)  # eval is the default
    (g1, g2), _ = hand_grad(q, x, y, scoring.GRASP_TEMPERATURE)
    hv1, hv2 = hand_hvp(q, x, y, s * g1 * s, g2, scoring.GRASP_TEMPERATURE)
    got = scoring.grasp(TINY_BN, variables, x, y, mode="eval")
    w1 = variables["params"]["fc1"]["kernel"]
    close(got["fc1"]["kernel"], w1 * s * hv1, rtol=1e-3)
    close(got["out"]["kernel"], q["out"]["kernel"] * hv2, rtol=1e-3)


def _direct_snip(model, variables, x, y, train: bool) -> dict:
    """``|g ⊙ w|`` from a loss on ``model.apply(..., train=train)``, by `jax.grad` here."""

    def loss(params):
        v = dict(variables, params=params)
        if train:
            logits, _ = model.apply(v, x, train=True, mutable=["batch_stats"])
        else:
            logits = model.apply(v, x, train=False)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    grads = jax.grad(loss)(variables["params"])
    return jax.tree.map(lambda g, w: np.abs(g * w), grads, variables["params"])


def test_train_mode_normalizes_by_the_batch_and_eval_mode_does_not():
    variables, (x, y) = tiny_bn_variables(), tiny_batch()
    for mode in scoring.SCORE_MODES:
        got = scoring.snip(TINY_BN, variables, x, y, mode=mode)
        want = _direct_snip(TINY_BN, variables, x, y, train=mode == "train")
        for name in ("fc1/kernel", "out/kernel"):
            close(pruning.flatten(got)[name], pruning.flatten(want)[name])
    train = pruning.flatten(scoring.snip(TINY_BN, variables, x, y, mode="train"))
    evaluated = pruning.flatten(scoring.snip(TINY_BN, variables, x, y, mode="eval"))
    for name in ("fc1/kernel", "out/kernel"):
        assert not np.allclose(train[name], evaluated[name], rtol=1e-2)


def test_eval_mode_turns_dropout_off():
    """TINY with dropout scores as TINY in eval mode (the hand computation above), and
    differently in train mode, where dropout draws from the key."""
    p, (x, y) = tiny_params(), tiny_batch()
    (g1, g2), _ = hand_grad(p, x, y)
    key = jax.random.key(7)
    got = scoring.score("snip", TINY_DROPOUT, {"params": p}, x, y, key, mode="eval")
    close(got["fc1"]["kernel"], np.abs(g1 * p["fc1"]["kernel"]))
    close(got["out"]["kernel"], np.abs(g2 * p["out"]["kernel"]))
    (g1, g2), _ = hand_grad(p, x, y, scoring.GRASP_TEMPERATURE)
    hv1, hv2 = hand_hvp(p, x, y, g1, g2, scoring.GRASP_TEMPERATURE)
    got = scoring.score("grasp", TINY_DROPOUT, {"params": p}, x, y, key, mode="eval")
    close(got["fc1"]["kernel"], p["fc1"]["kernel"] * hv1, rtol=1e-3)
    close(got["out"]["kernel"], p["out"]["kernel"] * hv2, rtol=1e-3)
    for method in ("snip", "grasp"):
        train = scoring.score(method, TINY_DROPOUT, {"params": p}, x, y, key, mode="train")
        evaluated = scoring.score(method, TINY_DROPOUT, {"params": p}, x, y, key, mode="eval")
        assert not np.allclose(train["fc1"]["kernel"], evaluated["fc1"]["kernel"], rtol=1e-2)


def test_without_batch_norm_or_dropout_both_modes_agree():
    p, (x, y) = tiny_params(), tiny_batch()
    for method in ("snip", "grasp"):
        a = scoring.score(method, TINY, {"params": p}, x, y, mode="eval")
        b = scoring.score(method, TINY, {"params": p}, x, y, mode="train")
        for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
            np.testing.assert_allclose(u, v, rtol=1e-6)


def test_an_unknown_mode_is_rejected():
    p, (x, y) = tiny_params(), tiny_batch()
    with pytest.raises(ValueError, match="unknown score mode 'test'"):
        scoring.snip(TINY, {"params": p}, x, y, mode="test")
    with pytest.raises(ValueError, match="unknown score mode"):
        scoring.grasp(TINY, {"params": p}, x, y, mode="Train")
    with pytest.raises(ValueError, match="unknown score mode"):
        scoring.score("magnitude-init", TINY, {"params": p}, mode="foo")
    with pytest.raises(ValueError, match="unknown score mode"):
        scoring.masks_at_init("synflow", TINY, {"params": p}, [50], image_shape=SHAPE, mode="")


# -- SynFlow's iterations ------------------------------------------------------------------


@pytest.mark.parametrize(("target", "exclude"), [(20, ()), (1.4, ()), (5, ("out",))])
def test_iterative_synflow_reaches_the_exact_target(wide, target, exclude):
    variables, _, _ = wide
    mask = scoring.synflow_mask(WIDE, variables, target, WIDE_SHAPE, exclude)
    assert kept(mask) == round(target / 100 * TOTAL)
    if exclude:
        assert pruning.counts(mask)["out/kernel"] == (320, 320)
    inverted = scoring.synflow_mask(WIDE, variables, target, WIDE_SHAPE, exclude, invert=True)
    assert kept(inverted) == kept(mask)


def test_synflow_schedule_is_exponential_and_rounds_are_nested(wide):
    variables, _, _ = wide
    params = variables["params"]
    schedule = scoring.synflow_schedule(1.4)
    assert len(schedule) == 100 and schedule[-1] == 1.4
    assert schedule[49] == pytest.approx(100 * 0.014**0.5)
    dense_scores = scoring.synflow(WIDE, variables, WIDE_SHAPE)
    # One round is one-shot ranking of the dense network's scores.
    one = scoring.synflow_mask(WIDE, variables, 50, WIDE_SHAPE, rounds=1)
    direct = scoring.prune_once(dense_scores, params, 50)
    for a, b in zip(jax.tree.leaves(one), jax.tree.leaves(direct), strict=True):
        np.testing.assert_array_equal(a, b)
    # Two rounds: the second keeps a subset of the first round's survivors.
    two = pruning.flatten(scoring.synflow_mask(WIDE, variables, 4, WIDE_SHAPE, rounds=2))
    first = pruning.flatten(scoring.prune_once(dense_scores, params, 20))
    assert scoring.synflow_schedule(4, 2)[0] == pytest.approx(20)
    for name in ("fc1/kernel", "fc2/kernel", "out/kernel"):
        assert np.all(first[name] >= two[name])
    assert kept(pruning.unflatten(two)) == round(0.04 * TOTAL)


@pytest.mark.parametrize("mode", scoring.SCORE_MODES)
def test_batch_norm_models_score_in_their_documented_modes(mode):
    model = VGG(num_classes=3, stages=((4,), (8,)))
    shape = (8, 8, 3)
    variables = model.init(jax.random.key(0), jnp.zeros((1, *shape)), train=False)
    x = np.random.default_rng(0).normal(size=(6, *shape)).astype(np.float32)
    y = np.arange(6) % 3
    total = 3 * 3 * 3 * 4 + 3 * 3 * 4 * 8 + 8 * 3
    for method in scoring.METHODS:
        masks = scoring.masks_at_init(
            method,
            model,
            variables,
            [50, 10],
            image_shape=shape,
            batch_x=x,
            batch_y=y,
            key=jax.random.key(1),
            mode=mode,
        )
        assert [sum(k for k, _ in pruning.counts(m).values()) for m in masks] == [
            round(0.5 * total),
            round(0.1 * total),
        ]
        # batch norm's scale and offset are never pruned
        assert all(np.all(m["bn1"]["scale"] == 1) for m in masks)
        other = "train" if mode == "eval" else "eval"
        again = scoring.masks_at_init(
            method,
            model,
            variables,
            [50],
            image_shape=shape,
            batch_x=x,
            batch_y=y,
            key=jax.random.key(1),
            mode=other,
        )
        same = all(
            np.array_equal(a, b)
            for a, b in zip(jax.tree.leaves(masks[0]), jax.tree.leaves(again[0]), strict=True)
        )
        # only SNIP's and GraSP's forward pass has a mode; on a batch-normed VGG it matters
        assert same == (not scoring.needs_data(method))


# -- ablations -------------------------------------------------------------------------------


def test_shuffle_keeps_each_layers_count_at_new_positions(wide):
    variables, _, _ = wide
    params = variables["params"]
    mask = scoring.prune_once(scoring.magnitude_init(params), params, 20, ("out",))
    shuffled = scoring.shuffle(mask, np.random.default_rng(0))
    assert pruning.counts(shuffled) == pruning.counts(mask)
    flat_a, flat_b = pruning.flatten(mask), pruning.flatten(shuffled)
    for name in ("fc1/kernel", "fc2/kernel"):
        assert not np.array_equal(flat_a[name], flat_b[name])
    assert np.all(flat_b["out/kernel"] == 1)


@pytest.mark.parametrize("target", [20, 50, 80])
def test_invert_keeps_as_many_of_the_lowest_scores(wide, target):
    variables, x, y = wide
    params = variables["params"]
    names = ["fc1/kernel", "fc2/kernel"]
    scores = scoring.score("snip", WIDE, variables, x, y)
    mask = scoring.prune_once(scores, params, target, ("out",))
    inverted = scoring.invert(scores, mask, ("out",))
    assert kept(inverted) == kept(mask)
    assert pruning.counts(inverted)["out/kernel"] == (320, 320)
    a = np.concatenate([pruning.flatten(mask)[n].ravel() for n in names])
    b = np.concatenate([pruning.flatten(inverted)[n].ravel() for n in names])
    k, n = int(a.sum()), a.size
    if 2 * k <= n:
        assert not np.any((a > 0) & (b > 0))  # disjoint
    if 2 * k >= n:
        assert np.all((a > 0) | (b > 0))  # together they cover every weight
    s = np.concatenate([np.asarray(pruning.flatten(scores)[n]).ravel() for n in names])
    assert s[b > 0].max() <= s[b == 0].min()  # the lowest scores are kept
    assert s[a == 0].max() <= s[a > 0].min()
    # the same as ranking the lowest directly
    lowest = scoring.prune_once(scores, params, target, ("out",), lowest=True)
    for u, v in zip(jax.tree.leaves(lowest), jax.tree.leaves(inverted), strict=True):
        np.testing.assert_array_equal(u, v)


def test_balanced_indices_draws_per_class():
    labels = np.repeat(np.arange(4), 15)
    idx = scoring.balanced_indices(labels, np.random.default_rng(0), per_class=10)
    assert len(idx) == 40 and len(set(idx)) == 40
    assert np.all(np.bincount(labels[idx]) == 10)
    with pytest.raises(ValueError, match="fewer"):
        scoring.balanced_indices(labels, np.random.default_rng(0), per_class=16)
