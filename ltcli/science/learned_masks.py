"""Masks learned by gradient, as pure JAX functions of one layer: the forward masks of
straight-through pruning, edge-popup and the supermask, the straight-through estimator that
carries a gradient past them, and the frozen weights and first scores edge-popup and the
supermask start from. The engine's step applies them (`ltcli.train.mask_learning`).

Every forward mask is exactly 0 or 1 and the straight-through sums add an exact zero in the
forward pass (``s - stop_gradient(s)``), so a learned mask's network is its weights times a
binary mask bit for bit, as every other cell's is.

Ranking rule (as `ltcli.science.pruning`'s): among equal scores the earlier position (flat,
row-major; in an N:M group, along the input axis) is kept first.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from ltcli.science import criteria


def top_k(score: jax.Array, keep: int) -> jax.Array:
    """1.0 at the `keep` highest entries of `score` (flat, row-major), 0.0 elsewhere: exactly
    `keep` ones, ties to the earlier position (`jax.lax.top_k`'s order)."""
    flat = score.reshape(-1)
    _, kept = jax.lax.top_k(flat, keep)
    return jnp.zeros(flat.shape, jnp.float32).at[kept].set(1.0).reshape(score.shape)


def n_of_m(score: jax.Array, n: int, m: int) -> jax.Array:
    """1.0 at the `n` highest of every `m` consecutive entries along the input axis (-2) of a
    kernel, as `ltcli.science.pruning.keep_per_group` groups them; ties to the earlier."""
    moved = jnp.moveaxis(score, -2, -1)
    rows = moved.reshape(-1, m)
    order = jnp.argsort(-rows, axis=-1, stable=True)
    ranks = jnp.argsort(order, axis=-1)
    kept = (ranks < n).astype(jnp.float32).reshape(moved.shape)
    return jnp.moveaxis(kept, -1, -2)


def bernoulli(key: jax.Array, scores: jax.Array) -> jax.Array:
    """A mask drawn entry by entry with probability sigmoid(scores) of 1 (Zhou et al. 2019's
    supermask sample)."""
    return jax.random.bernoulli(key, jax.nn.sigmoid(scores)).astype(jnp.float32)


def straight_through(forward: jax.Array, surrogate: jax.Array) -> jax.Array:
    """`forward`'s value with `surrogate`'s gradient: ``stop_gradient(forward) + (surrogate -
    stop_gradient(surrogate))``, whose second term is an exact 0 in the forward pass."""
    return jax.lax.stop_gradient(forward) + (surrogate - jax.lax.stop_gradient(surrogate))


def ste_weights(weights: jax.Array, mask: jax.Array) -> jax.Array:
    """The forward's weights of straight-through pruning: ``weights * mask``, with the
    gradient of `weights` passed to every weight, pruned or not (jaxpruner's
    ``magnitude_ste``; Zhou et al. 2021's STE, SR-STE with λ_W = 0)."""
    return straight_through(weights * mask, weights)


def edge_popup_weights(weights: jax.Array, scores: jax.Array, mask: jax.Array) -> jax.Array:
    """``weights * mask`` where `mask` keeps the top |scores| (`top_k` of ``abs(scores)``), the
    gradient reaching the scores straight through the mask: dL/ds = dL/dm * sign(s) with
    dL/dm = dL/dw_eff * w (Ramanujan et al. 2020, section 3; allenai/hidden-networks
    ``utils/conv_type.py``: ``GetSubnet.backward`` returns g unchanged to
    ``self.scores.abs()``)."""
    return weights * straight_through(mask, jnp.abs(scores))


def supermask_weights(weights: jax.Array, scores: jax.Array, mask: jax.Array) -> jax.Array:
    """``weights * mask`` where `mask` is a `bernoulli` draw from sigmoid(scores), the gradient
    reaching the scores through sigmoid: dL/ds = dL/dm * sigmoid'(s) (Zhou et al. 2019;
    uber-research/deconstructing-lottery-tickets ``masked_networks.py``,
    ``get_effective_mask``: ``Bernoulli(sigmoid(m)).sample() + sigmoid(m) -
    stop_gradient(sigmoid(m))``)."""
    return weights * straight_through(mask, jax.nn.sigmoid(scores))


def fan_in(shape: tuple[int, ...]) -> int:
    """Inputs feeding one output of a Flax kernel: every axis but the last (Dense ``(in,
    out)``, Conv ``(h, w, in, out)``), PyTorch's ``fan_in`` of the same layer."""
    return math.prod(shape[:-1])


def frozen_weights(kind: str, kernel: np.ndarray, key: jax.Array) -> np.ndarray:
    """The weights edge-popup or a supermask freezes in one layer, from its θ0 `kernel`:

    - ``signed-kaiming-constant``: sign(θ0) * sqrt(2 / fan_in) (Ramanujan et al. 2020,
      section 4.1; hidden-networks ``utils/builder.py`` ``_init_conv``, ``signed_constant``
      with the ReLU gain and ``mode="fan_in"``);
    - ``kaiming-normal``: a draw of N(0, 2 / fan_in) from `key` (``kaiming_normal``, same
      file);
    - ``signed-constant``: sign(θ0) times the standard deviation of the layer's θ0 (Zhou et
      al. 2019, "signed constant"; deconstructing-lottery-tickets ``masked_networks.py``,
      ``make_signed_consts``);
    - ``model``: θ0 itself.
    """
    kernel = np.asarray(kernel)
    if kind == "model":
        return kernel
    if kind == "signed-constant":
        return criteria.signed_std(kernel)
    std = math.sqrt(2.0 / fan_in(kernel.shape))
    if kind == "signed-kaiming-constant":
        return (np.sign(kernel) * std).astype(kernel.dtype)
    if kind == "kaiming-normal":
        draw = jax.random.normal(key, kernel.shape, jnp.float32)
        return np.asarray(draw * jnp.float32(std)).astype(kernel.dtype)
    raise ValueError(f"not a frozen-weight initialization: {kind!r}")


def frozen_kind(method: str, choice: str) -> str:
    """The frozen weights ``prune.frozen_init`` `choice` gives `method`: ``auto`` is
    edge-popup's paper default, the signed Kaiming constant (Ramanujan et al. 2020, whose
    best results use it), and the supermask's, the model's own initialization (Zhou et al.
    2019's plain supermask)."""
    if choice != "auto":
        return choice
    return "signed-kaiming-constant" if method == "edge-popup" else "model"


def edge_popup_scores(shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """A layer's first scores: U(-1/sqrt(fan_in), 1/sqrt(fan_in)), PyTorch's
    ``kaiming_uniform_(a=sqrt(5))`` that hidden-networks' ``SubnetConv`` gives its scores."""
    bound = 1.0 / math.sqrt(fan_in(shape))
    return rng.uniform(-bound, bound, size=shape).astype(np.float32)


def supermask_scores(shape: tuple[int, ...], density: float) -> np.ndarray:
    """A layer's first scores: the constant logit(density), so that every weight is kept
    with probability `density` at the first step (Zhou et al. 2019 start every mask score at
    one constant, ``--sigmoid_bias``, 0 by default: density 0.5)."""
    logit = math.log(density) - math.log1p(-density)
    return np.full(shape, logit, np.float32)
