"""Layers whose training step runs faster on XLA:CPU (issue 21); elsewhere the usual ones.

XLA:CPU spends much of a convolutional network's training step on work the algorithm does
not need:

- max pooling's gradient as a select-and-scatter over four index arrays; `max_pool_2x2`
  pools by a reshape and sends the gradient to the first maximum of each window, the
  element select-and-scatter picks;
- layout transposes feeding the weight-gradient convolutions (XLA:CPU's convolutions take
  their "batch" dimension major, and a weight gradient contracts over the examples), into
  which XLA fuses, and so recomputes, every elementwise operation that produced the
  convolution's input. In a ResNet stage that is the whole chain of batch norms, ReLUs and
  residual additions back to the stage's start, again for each convolution.
  `materialize` hands XLA a block's output as a value it can only read from memory.

Both compute exactly what the plain layers compute. Which runs is decided at trace time by
`jax.default_backend()`: on a GPU or TPU the plain layers run unchanged.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax


def on_cpu() -> bool:
    """Whether the program being traced runs on XLA:CPU."""
    return jax.default_backend() == "cpu"


def max_pool_2x2(x: jax.Array) -> jax.Array:
    """``nn.max_pool(x, (2, 2), strides=(2, 2))`` of NHWC `x`: odd trailing rows and columns
    are dropped, as there."""
    if not on_cpu():
        return nn.max_pool(x, (2, 2), strides=(2, 2))
    h, w = x.shape[1], x.shape[2]
    return _pool(x[:, : h - h % 2, : w - w % 2])


def _windows(x: jax.Array) -> jax.Array:
    n, h, w, c = x.shape
    return x.reshape(n, h // 2, 2, w // 2, 2, c)


@jax.custom_vjp
def _pool(x: jax.Array) -> jax.Array:
    return _windows(x).max(axis=(2, 4))


def _pool_fwd(x: jax.Array) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
    y = _pool(x)
    return y, (x, y)


def _pool_bwd(res: tuple[jax.Array, jax.Array], g: jax.Array) -> tuple[jax.Array]:
    """The gradient goes to the first maximum of each window in row-major order, as
    select-and-scatter's ``>=`` keeps the earlier of equal elements: ties are common after
    a ReLU."""
    x, y = res
    windows = _windows(x)
    taken = jnp.zeros(y.shape, bool)
    rows = []
    for i in range(2):
        row = []
        for j in range(2):
            hit = (windows[:, :, i, :, j] == y) & ~taken
            taken = taken | hit
            row.append(jnp.where(hit, g, jnp.zeros_like(g)))
        rows.append(jnp.stack(row, axis=3))
    return (jnp.stack(rows, axis=2).reshape(x.shape),)


_pool.defvjp(_pool_fwd, _pool_bwd)


def materialize(x: jax.Array) -> jax.Array:
    """`x` itself, which on the CPU XLA must read from memory rather than recompute from
    its producers inside each consumer (see the module); its gradient passes unchanged."""
    return _opaque(x) if on_cpu() else x


@jax.custom_vjp
def _opaque(x: jax.Array) -> jax.Array:
    """The identity as a conditional XLA cannot see through. The optimization barrier,
    which would say this directly, is dropped by XLA:CPU before fusion, and a conditional
    whose branches are the same is folded away; so the other branch negates, and the
    predicate (is the first element a float, of any value?) always takes the identity."""
    first = x.reshape(-1)[0]
    always = jnp.isfinite(first) | jnp.isnan(first) | jnp.isinf(first)
    return lax.cond(always, lambda x: x, lambda x: -x, x)


def _opaque_fwd(x: jax.Array) -> tuple[jax.Array, None]:
    return _opaque(x), None


def _opaque_bwd(_: None, g: jax.Array) -> tuple[jax.Array]:
    return (g,)


_opaque.defvjp(_opaque_fwd, _opaque_bwd)
