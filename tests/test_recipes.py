"""The transformer training recipes: AdamW's decoupled decay, the cosine schedule, gradient
clipping and label smoothing, each checked against its definition; and the pixel
normalization of data kept whole."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from ltcli.train import device_data, engine, recipes

pytestmark = pytest.mark.unit

BASE = {"optimizer": "adamw", "lr": 0.1, "batch_size": 4, "iterations": 100, "eval_every": 10}


def cfg(**fields) -> recipes.TrainConfig:
    return recipes.TrainConfig(**(BASE | fields))


def test_cosine_decays_to_zero_at_the_end_after_a_linear_warmup():
    schedule = recipes.learning_rate(cfg(schedule="cosine", warmup=20))
    assert float(schedule(10)) == pytest.approx(0.05)
    assert float(schedule(20)) == pytest.approx(0.1)
    # halfway through the 80 decaying steps: half the peak
    assert float(schedule(60)) == pytest.approx(0.05, rel=1e-5)
    assert float(schedule(100)) == pytest.approx(0.0, abs=1e-7)
    t = 35
    expected = 0.1 * 0.5 * (1 + math.cos(math.pi * (t - 20) / 80))
    assert float(schedule(t)) == pytest.approx(expected, rel=1e-5)


def test_adamw_decays_kernels_and_embeddings_not_biases_decoupled_from_the_gradient():
    params = {"dense": {"kernel": jnp.ones((2, 3)), "bias": jnp.ones(3)}}
    zeros = jax.tree.map(jnp.zeros_like, params)
    tx = recipes.optimizer(cfg(weight_decay=0.5))
    updates, _ = tx.update(zeros, tx.init(params), params)
    # zero gradient: Adam's step is zero, so only the decay moves a weight, by lr * wd * w
    np.testing.assert_allclose(updates["dense"]["kernel"], -0.1 * 0.5 * np.ones((2, 3)))
    np.testing.assert_array_equal(updates["dense"]["bias"], np.zeros(3))


def test_adamw_without_decay_is_adam():
    params = {"w": jnp.arange(4.0).reshape(2, 2)}
    grads = {"w": jnp.asarray([[0.5, -1.0], [2.0, 0.1]])}
    ours = recipes.optimizer(cfg(weight_decay=0.0))
    adam = optax.adam(0.1)
    a, _ = ours.update(grads, ours.init(params), params)
    b, _ = adam.update(grads, adam.init(params), params)
    np.testing.assert_allclose(a["w"], b["w"], rtol=1e-6)


def test_clipping_scales_the_gradient_to_the_global_norm():
    params = {"w": jnp.zeros(2)}
    grads = {"w": jnp.asarray([3.0, 4.0])}  # norm 5
    sgd = cfg(optimizer="sgd", lr=1.0, clip_norm=1.0)
    tx = recipes.optimizer(sgd)
    updates, _ = tx.update(grads, tx.init(params), params)
    np.testing.assert_allclose(updates["w"], [-0.6, -0.8], rtol=1e-6)
    unclipped = recipes.optimizer(cfg(optimizer="sgd", lr=1.0))
    updates, _ = unclipped.update(grads, unclipped.init(params), params)
    np.testing.assert_allclose(updates["w"], [-3.0, -4.0])


class _Logits:
    """A stand-in model whose logits are its one parameter, for any input."""

    def apply(self, variables, x, train=False, rngs=None):
        return jnp.broadcast_to(variables["params"]["logits"], (x.shape[0], 3))


def test_label_smoothing_changes_the_training_loss_only():
    logits = jnp.asarray([2.0, 0.0, -1.0])
    params = {"logits": logits}
    smooth = engine.Engine(_Logits(), cfg(label_smoothing=0.3))
    plain = engine.Engine(_Logits(), cfg())
    x, y = jnp.zeros((2, 1)), jnp.asarray([0, 0])
    loss, _ = smooth._loss(params, {}, x, y, jax.random.PRNGKey(0))
    log_p = jax.nn.log_softmax(logits)
    target = np.asarray([0.8, 0.1, 0.1])  # 1 - 0.3 + 0.3 / 3, and 0.3 / 3
    assert float(loss) == pytest.approx(float(-(target * log_p).sum()), rel=1e-6)
    plain_loss, _ = plain._loss(params, {}, x, y, jax.random.PRNGKey(0))
    assert float(plain_loss) == pytest.approx(float(-log_p[0]), rel=1e-6)


def test_evaluation_reports_the_plain_loss_under_label_smoothing():
    logits = jnp.asarray([2.0, 0.0, -1.0])
    params = {"logits": logits}
    smooth = engine.Engine(_Logits(), cfg(label_smoothing=0.3))
    x, y, w = jnp.zeros((1, 2, 1)), jnp.zeros((1, 2), jnp.int32), jnp.ones((1, 2))
    data = device_data.DeviceData(*(jnp.zeros(0),) * 8, jnp.zeros(()), jnp.ones(()))
    loss, accuracy = smooth._evaluate(params, {}, data, x, y, w)
    assert float(loss) == pytest.approx(float(-jax.nn.log_softmax(logits)[0]), rel=1e-6)
    assert float(accuracy) == 1.0


@pytest.mark.parametrize("optimizer", ["adam", "adamw"])
def test_adam_betas_are_the_moment_decays_of_every_step(optimizer):
    """Three Adam steps with beta1 0.8 and beta2 0.99 (nanoGPT's shakespeare-char beta2)
    against Kingma & Ba's update recomputed in float64 numpy."""
    b1, b2, lr, eps = 0.8, 0.99, 0.1, 1e-8
    tx = recipes.optimizer(cfg(optimizer=optimizer, beta1=b1, beta2=b2, weight_decay=0.0))
    params = {"w": jnp.zeros(3)}
    state = tx.init(params)
    grads = np.asarray([[0.5, -1.0, 2.0], [0.1, 0.3, -0.2], [-1.5, 0.0, 0.7]])
    m, v = np.zeros(3), np.zeros(3)
    for t, g in enumerate(grads, start=1):
        updates, state = tx.update({"w": jnp.asarray(g, jnp.float32)}, state, params)
        m, v = b1 * m + (1 - b1) * g, b2 * v + (1 - b2) * g * g
        expected = -lr * (m / (1 - b1**t)) / (np.sqrt(v / (1 - b2**t)) + eps)
        np.testing.assert_allclose(updates["w"], expected, rtol=2e-5, atol=1e-7)


@pytest.mark.parametrize("channels", [1, 3])
def test_pixel_stats_are_float64_numpys_mean_and_std(channels):
    """The normalization of data kept whole, from histograms, against a float64 pass over
    every pixel: the same float32 numbers, uniform and clipped-normal pixels alike."""
    rng = np.random.default_rng(channels)
    for spread in (None, 3, 40):
        shape = (500, 28, 28, channels)
        if spread is None:
            images = rng.integers(0, 256, shape, dtype=np.uint8)
        else:
            images = rng.normal(100, spread, shape).clip(0, 255).astype(np.uint8)
        pixels = images.reshape(-1, channels).astype(np.float64)
        mean, std = device_data.pixel_stats(images)
        np.testing.assert_array_equal(mean, pixels.mean(0).astype(np.float32))
        np.testing.assert_array_equal(std, (pixels.std(0) + 1e-8).astype(np.float32))
