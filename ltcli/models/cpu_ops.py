"""Layers whose training step runs faster on XLA:CPU; elsewhere the usual ones.

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
  Inside a block the same happens to the second convolution's input, the first's batch
  norm and ReLU: `conv_general_dilated`'s weight gradient reads its input from memory;
- a strided convolution's input gradient as a convolution over the output gradient with
  zeros inserted between its elements; `conv_general_dilated` convolves by phases instead;
- batch norm's centred input ``x - mean``, written to memory as a pass of its own;
  `BatchNorm` scales and shifts ``x`` itself.

All compute what the plain layers compute, up to the order of float sums. Which runs is
decided at trace time by `jax.default_backend()`: on a GPU or TPU the plain layers run
unchanged.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from functools import partial
from typing import Any, NamedTuple

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


@jax.custom_jvp
def _opaque(x: jax.Array) -> jax.Array:
    """The identity as a conditional XLA cannot see through. The optimization barrier,
    which would say this directly, is dropped by XLA:CPU before fusion, and a conditional
    whose branches are the same is folded away; so the other branch negates, and the
    predicate (is the first element a float, of any value?) always takes the identity."""
    first = x.reshape(-1)[0]
    always = jnp.isfinite(first) | jnp.isnan(first) | jnp.isinf(first)
    return lax.cond(always, lambda x: x, lambda x: -x, x)


@_opaque.defjvp
def _opaque_jvp(
    primals: tuple[jax.Array], tangents: tuple[jax.Array]
) -> tuple[jax.Array, jax.Array]:
    """The tangent passes unchanged: linear, so reverse mode transposes it, and any order of
    derivative (GraSP's Hessian-vector products) goes through."""
    return _opaque(*primals), tangents[0]


class BatchNorm(nn.BatchNorm):
    """Flax's `nn.BatchNorm`. On the CPU, for the float32 batch norm over the last axis with
    scale and bias that lt's networks use, it normalizes as ``x * a + b`` with per-channel
    ``a = scale / sqrt(var + epsilon)`` and ``b = bias - mean * a``, where Flax computes
    ``(x - mean) * a + bias``: XLA:CPU writes Flax's ``x - mean`` to memory as a pass of its
    own, since the normalization and its gradient both read it; without it ResNet-20's
    step ran faster in 7 of 8 interleaved rounds, by up to 15%. Statistics, their
    running averages and variables are Flax's; the output differs by float rounding."""

    @nn.compact
    def __call__(
        self, x: jax.Array, use_running_average: bool | None = None, *, mask: Any = None
    ) -> jax.Array:
        if not (
            on_cpu()
            and mask is None
            and self.axis == -1
            and self.axis_name is None
            and self.use_bias
            and self.use_scale
            and self.use_fast_variance
            and self.dtype is None
            and x.dtype == jnp.float32
        ):
            return super().__call__(x, use_running_average, mask=mask)
        frozen = nn.merge_param(
            "use_running_average", self.use_running_average, use_running_average
        )
        features = (x.shape[-1],)
        axes = tuple(range(x.ndim - 1))
        ra_mean = self.variable("batch_stats", "mean", jnp.zeros, features, jnp.float32)
        ra_var = self.variable("batch_stats", "var", jnp.ones, features, jnp.float32)
        if frozen:
            mean, var = ra_mean.value, ra_var.value
        else:
            mean = x.mean(axes)
            var = jnp.maximum(0.0, (x * x).mean(axes) - mean * mean)  # Flax's fast variance
            if not self.is_initializing():
                ra_mean.value = self.momentum * ra_mean.value + (1 - self.momentum) * mean
                ra_var.value = self.momentum * ra_var.value + (1 - self.momentum) * var
        scale = self.param("scale", self.scale_init, features, self.param_dtype)
        bias = self.param("bias", self.bias_init, features, self.param_dtype)
        a = lax.rsqrt(var + self.epsilon) * scale
        return x * a + (bias - mean * a)


_NHWC = lax.ConvDimensionNumbers((0, 3, 1, 2), (3, 2, 0, 1), (0, 3, 1, 2))
"""Flax's layout: NHWC inputs and outputs, HWIO kernels."""


def conv_general_dilated(
    lhs: jax.Array,
    rhs: jax.Array,
    window_strides: Sequence[int],
    padding: str | Sequence[tuple[int, int]],
    lhs_dilation: Sequence[int] | None = None,
    rhs_dilation: Sequence[int] | None = None,
    dimension_numbers: Any = None,
    feature_group_count: int = 1,
    precision: Any = None,
) -> jax.Array:
    """`lax.conv_general_dilated`, as Flax's `nn.Conv` calls it; on the CPU, for a plain
    NHWC convolution, one whose weight gradient transposes its input as stored rather than
    recomputing it and whose strided input gradient goes by phases (see the module). Every
    convolution is XLA's own."""
    if (
        not on_cpu()
        or lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers) != _NHWC
        or feature_group_count != 1
        or any(d != 1 for d in lhs_dilation or ())
    ):
        return lax.conv_general_dilated(
            lhs,
            rhs,
            window_strides,
            padding,
            lhs_dilation=lhs_dilation,
            rhs_dilation=rhs_dilation,
            dimension_numbers=dimension_numbers,
            feature_group_count=feature_group_count,
            precision=precision,
        )
    pads = padding if isinstance(padding, str) else tuple(tuple(pair) for pair in padding)
    dilation = tuple(rhs_dilation) if rhs_dilation else None
    return _conv(_Window(tuple(window_strides), pads, dilation, precision), lhs, rhs)


class _Window(NamedTuple):
    """A convolution's static arguments, hashable for `jax.custom_jvp`'s `nondiff_argnums`."""

    strides: tuple[int, ...]
    padding: str | tuple[tuple[int, int], ...]
    dilation: tuple[int, ...] | None
    precision: Any

    def conv(self, lhs: jax.Array, rhs: jax.Array) -> jax.Array:
        return lax.conv_general_dilated(
            lhs,
            rhs,
            self.strides,
            self.padding,
            rhs_dilation=self.dilation,
            dimension_numbers=_NHWC,
            precision=self.precision,
        )

    def conv_by_phases(self, lhs: jax.Array, rhs: jax.Array) -> jax.Array:
        """`conv` as a sum of stride-1 convolutions, one per phase of `lhs` (its elements
        at the same offsets modulo the strides) with the kernel taps that read that phase.
        Its transpose, the input gradient, is then stride-1 convolutions too, not one over
        `lhs` dilated by the strides: XLA:CPU runs that as a dense convolution over the
        inserted zeros, 3x slower for ResNet's 3x3 stride-2 convolution at 32x32 (issue
        21). The products are the same; their sums are grouped by phase."""
        if all(s == 1 for s in self.strides) or any(d != 1 for d in self.dilation or ()):
            return self.conv(lhs, rhs)
        spatial, taps = lhs.shape[1:3], rhs.shape[:2]
        pads = (
            lax.padtype_to_pads(spatial, taps, self.strides, self.padding)
            if isinstance(self.padding, str)
            else self.padding
        )
        out = [
            (n + lo + hi - k) // s + 1
            for n, (lo, hi), k, s in zip(spatial, pads, taps, self.strides, strict=True)
        ]
        total = None
        for phase in itertools.product(*(range(s) for s in self.strides)):
            steps = zip(phase, self.strides, strict=True)
            part = lhs[(slice(None), *(slice(p, None, s) for p, s in steps))]
            slices, phase_pads = [], []
            for p, s, (lo, _), k, n, length in zip(
                phase, self.strides, pads, taps, out, part.shape[1:3], strict=True
            ):
                first = (p + lo) % s  # the first tap that reads this phase
                if first >= k or length == 0:
                    break
                count = len(range(first, k, s))
                offset = (first - lo - p) // s  # where, in the phase, output 0's first tap reads
                phase_pads.append((-offset, n + offset + count - 1 - length))
                slices.append(slice(first, None, s))
            else:
                stride_1 = _Window((1, 1), tuple(phase_pads), None, self.precision)
                term = stride_1.conv(part, rhs[tuple(slices)])
                total = term if total is None else total + term
        return total


@partial(jax.custom_jvp, nondiff_argnums=(0,))
def _conv(window: _Window, x: jax.Array, kernel: jax.Array) -> jax.Array:
    return window.conv(x, kernel)


@_conv.defjvp
def _conv_jvp(
    window: _Window, primals: tuple[jax.Array, jax.Array], tangents: tuple[jax.Array, jax.Array]
) -> tuple[jax.Array, jax.Array]:
    """The convolution's own derivative, linear in the tangents, with the kernel's tangent
    convolved with `x` passed through `_opaque`. Reverse mode transposes that term into the
    weight gradient, which so transposes the stored `x` instead of fusing `x`'s producers (a
    batch norm and a ReLU) into the transpose and recomputing them there. The input's
    tangent is convolved by phases, so that its transpose, the input gradient, is stride-1
    convolutions (`_Window.conv_by_phases`)."""
    x, kernel = primals
    x_dot, kernel_dot = tangents
    tangent = window.conv_by_phases(x_dot, kernel) + window.conv(_opaque(x), kernel_dot)
    return window.conv(x, kernel), tangent
