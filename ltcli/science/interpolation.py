"""Instability analysis: test error along the straight line between two trained networks.

Frankle, Dziugaite, Roy & Carbin, "Linear Mode Connectivity and the Lottery Ticket
Hypothesis" (ICML 2020): two copies of a network, trained from the same state with different
SGD noise (data order, augmentation, dropout), are *stable* when the error does not rise on
the line between them. Instability is the highest test error on the path minus the mean of
the two ends' errors; the paper counts a network stable when that is within 2 points.
(open_lth's public code has no instability analysis; this follows the paper's definition.)
Every path also records `barrier_above_line`, the rise above the straight line between the
ends' errors: the two agree when the ends' errors are equal (a ticket and its copy nearly),
and can differ widely between successive IMP levels, whose ends differ (on a LeNet run,
instability 0.13 points against a barrier above the line of 0.005).

Every point of the path is evaluated in one jitted program, vmapped over the points. The two
networks share a mask (a ticket and its copy), and every interpolated network is masked.
Batch norm: running statistics do not interpolate meaningfully, so at each point they are
recomputed from `BN_EXAMPLES` training examples in one forward pass in training mode (the
statistics of that batch), as is usual for mode-connectivity evaluations. The examples are
a fixed, class-balanced random sample of the training split (`bn_sample`): the first ones
of a folder data set sorted by class would all be of one class.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from ltcli.core.pytrees import Mask, Params

POINTS = 31
"""Evenly spaced points on the path, both ends included (the paper evaluates 30)."""
BN_EXAMPLES = 1000
"""Training examples whose statistics a batch-normalized network uses at each point."""


def interpolate(a: Params, b: Params, mask: Mask, alpha: jax.Array) -> Params:
    """``mask * ((1 - alpha) a + alpha b)``: the network at `alpha` of the path from a to b."""
    return jax.tree.map(lambda x, y, m: m * ((1 - alpha) * x + alpha * y), a, b, mask)


def instability(errors: np.ndarray) -> float:
    """The instability of a path (Frankle, Dziugaite, Roy & Carbin, "Linear Mode
    Connectivity and the Lottery Ticket Hypothesis", ICML 2020): the highest error on it
    minus the mean of its two ends' errors, ``max_a err(a) - (err(0) + err(1)) / 2``, from
    `errors` at evenly spaced points from one end (first) to the other (last)."""
    errors = np.asarray(errors, np.float64)
    return float(errors.max() - (errors[0] + errors[-1]) / 2)


def barrier_above_line(alphas: np.ndarray, errors: np.ndarray) -> float:
    """The largest rise of a path's error above the straight line between its two ends'
    errors, ``max_a [err(a) - ((1 - a) err(0) + a err(1))]``, from `errors` at `alphas` (0
    at the first end, 1 at the other): zero exactly when the error never rises above that
    line. It differs from `instability` only where the ends' errors differ.

    Paul et al., ICLR 2023 ("Unmasking the Lottery Ticket Hypothesis") call successive IMP
    levels linearly connected when the path between them has zero error barrier. Their code
    (mansheej/lth_diet) evaluates the midpoint of successive levels
    (``ipynbs/220502_CF10_RN20_Successive_IMP_Optima_LMC.ipynb``), and its ``ipynbs/LMC.ipynb``
    takes a midpoint's loss minus the mean of the ends' losses: at a = 1/2 the straight line
    is that mean, so the code does not tell the two apart. lt records both."""
    alphas, errors = np.asarray(alphas, np.float64), np.asarray(errors, np.float64)
    line = (1 - alphas) * errors[0] + alphas * errors[-1]
    return float(np.max(errors - line))


def bn_sample(labels: np.ndarray, count: int = BN_EXAMPLES) -> np.ndarray:
    """Indices (sorted) of a fixed random sample of about `count` training examples with
    the same number of every class in `labels` (``count // classes`` each, or all of a
    class that has fewer), drawn by a fixed seed: the same for every run on these labels."""
    labels = np.asarray(labels)
    classes = np.unique(labels)
    order = np.random.default_rng(0).permutation(len(labels))
    per_class = max(1, count // len(classes))
    chosen = [order[labels[order] == c][:per_class] for c in classes]
    return np.sort(np.concatenate(chosen))


def _batch_statistics(
    model: nn.Module, params: Params, stats: Any, x: jax.Array, momentum: float
) -> Any:
    """The batch-norm statistics of `params` on the (normalized) images `x`.

    Flax updates running statistics as ``m * old + (1 - m) * batch`` (m = `momentum`); from
    zeros, one training-mode pass gives ``(1 - m) * batch``, rescaled to the batch's own."""
    zeros = jax.tree.map(jnp.zeros_like, stats)
    _, updates = model.apply(
        {"params": params, "batch_stats": zeros}, x, train=True, mutable=["batch_stats"]
    )
    return jax.tree.map(lambda s: s / (1 - momentum), updates["batch_stats"])


@partial(jax.jit, static_argnums=(0, 1, 9, 10))
def _path(evaluate, model, params_a, stats_a, params_b, stats_b, mask, data, bn_x, points, m):
    alphas = jnp.linspace(0.0, 1.0, points)

    def at(alpha):
        params = interpolate(params_a, params_b, mask, alpha)
        stats = stats_a
        if jax.tree.leaves(stats_a):
            stats = _batch_statistics(model, params, stats_a, bn_x, m)
        return evaluate(params, stats, data)

    return alphas, jax.vmap(at)(alphas)


def path(
    evaluate: Callable[[Params, Any, Any], jax.Array],
    model: nn.Module,
    a: dict[str, Any],
    b: dict[str, Any],
    mask: Mask,
    data: Any,
    bn_x: jax.Array,
    *,
    bn_momentum: float,
    points: int = POINTS,
) -> dict[str, Any]:
    """Test loss and error at `points` evenly spaced points from network `a` to network `b`
    (each ``{"params", "batch_stats"}``, host or device arrays) under `mask`.

    Args:
      evaluate: ``evaluate(params, batch_stats, data)`` -> (test loss, test accuracy) of one
        network (hashable: a bound method of a frozen engine, so programs are reused).
      model: the Flax module, for batch-norm statistics at each point.
      data: what `evaluate` reads.
      bn_x: the normalized training images (`bn_sample`) whose statistics a batch-normed
        network uses at each point; unused without batch norm.
      bn_momentum: the model's batch-norm momentum.
      points: points on the path, both ends included.

    Returns:
      ``{"alpha", "test_loss", "test_error", "instability", "barrier_above_line"}``: lists
      over the points, then the path's `instability` and `barrier_above_line` (errors are
      fractions in [0, 1]).
    """
    alphas, metrics = _path(
        evaluate,
        model,
        a["params"],
        a["batch_stats"],
        b["params"],
        b["batch_stats"],
        mask,
        data,
        bn_x,
        points,
        bn_momentum,
    )
    return summarize_path(np.asarray(alphas), np.asarray(metrics))


@partial(jax.jit, static_argnums=(0, 7))
def network_at(
    model: nn.Module,
    a: dict[str, Any],
    b: dict[str, Any],
    mask: Mask,
    alpha: jax.Array,
    bn_x: Any,
    bn_momentum: float,
    has_stats: bool,
) -> tuple[Params, Any]:
    """The network at `alpha` on the path `path` evaluates (its batch-norm statistics
    recomputed on `bn_x`), for a caller that evaluates each point itself (streamed data)."""
    params = interpolate(a["params"], b["params"], mask, alpha)
    if not has_stats:
        return params, a["batch_stats"]
    return params, _batch_statistics(model, params, a["batch_stats"], bn_x, bn_momentum)


def summarize_path(alphas: np.ndarray, metrics: np.ndarray) -> dict[str, Any]:
    """`path`'s result from the test (loss, accuracy) at each of `alphas`. (Paths stored
    before `barrier_above_line` had its name hold it as ``"barrier"``.)"""
    metrics = np.asarray(metrics, np.float64)
    error = 1.0 - metrics[:, 1]
    return {
        "alpha": np.asarray(alphas, np.float64).tolist(),
        "test_loss": metrics[:, 0].tolist(),
        "test_error": error.tolist(),
        "instability": instability(error),
        "barrier_above_line": barrier_above_line(np.asarray(alphas), error),
    }
