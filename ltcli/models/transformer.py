"""Pre-LayerNorm transformer blocks (Vaswani et al., 2017, "Attention Is All You Need"), as
GPT-2 (Radford et al., 2019) and the Vision Transformer (Dosovitskiy et al., 2021) use them.

A `Block` is ``x + attn(ln1(x))`` then ``x + mlp(ln2(x))``. Its parameters sit directly
under the block, so that pruning can tell them apart by name (`ltcli.science.pruning`):
``attn_q``, ``attn_k``, ``attn_v``, ``attn_out`` (kind ``attn``), ``mlp_fc1``, ``mlp_fc2``
(kind ``mlp``), and the LayerNorms ``ln1``, ``ln2`` (never pruned). Every attention kernel
is a plain 2-D ``(width, width)`` matrix whose input axis is axis 0; the heads are a
reshape of its output axis (of ``attn_out``'s input axis), so head ``h`` owns columns
``h * width // heads`` to ``(h + 1) * width // heads`` of ``attn_q``, ``attn_k`` and
``attn_v`` and the same rows of ``attn_out``.

Attention stays finite when pruning zeroes a whole head: its scores are then all equal and
softmax (computed in float32) spreads it uniformly. Masked scores are set to the most
negative finite float rather than -inf, so even a fully masked row gives a uniform, finite
distribution and finite gradients.

Initializers are fields, so each model passes its paper's.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax.linen.initializers import Initializer

XAVIER = nn.initializers.xavier_uniform()
ZEROS = nn.initializers.zeros


class SelfAttention(nn.Module):
    """Multi-head scaled dot-product self-attention over ``(batch, time, width)``.

    Attributes:
      heads: the number of heads; must divide the width.
      dropout: the rate on the output, and on the attention probabilities with
        `probs_dropout` (when training, with the ``dropout`` rng).
      probs_dropout: drop attention probabilities too (nanoGPT's ``attn_dropout``).
      causal: position t attends only to positions up to t.
      kernel_init: for ``attn_q``, ``attn_k`` and ``attn_v``.
      out_kernel_init: for ``attn_out`` (None: `kernel_init`).
      bias_init: for every bias.
    """

    heads: int
    dropout: float = 0.0
    probs_dropout: bool = True
    causal: bool = False
    kernel_init: Initializer = XAVIER
    out_kernel_init: Initializer | None = None
    bias_init: Initializer = ZEROS

    @nn.compact
    def __call__(
        self, x: jax.Array, train: bool = False, mask: jax.Array | None = None
    ) -> jax.Array:
        """`mask`: optional, broadcastable to ``(batch, heads, time, time)``; True attends."""
        batch, time, width = x.shape
        if width % self.heads:
            raise ValueError(f"width {width} is not divisible by heads {self.heads}")
        head_dim = width // self.heads

        def dense(name: str, init: Initializer) -> nn.Dense:
            return nn.Dense(width, kernel_init=init, bias_init=self.bias_init, name=name)

        def split(y: jax.Array) -> jax.Array:
            return y.reshape(batch, time, self.heads, head_dim)

        q = split(dense("attn_q", self.kernel_init)(x))
        k = split(dense("attn_k", self.kernel_init)(x))
        v = split(dense("attn_v", self.kernel_init)(x))
        scores = jnp.einsum("bqhd,bkhd->bhqk", q, k, preferred_element_type=jnp.float32)
        scores = scores / math.sqrt(head_dim)
        if self.causal:
            causal = jnp.tril(jnp.ones((time, time), bool))
            mask = causal if mask is None else jnp.logical_and(mask, causal)
        if mask is not None:
            scores = jnp.where(mask, scores, jnp.finfo(jnp.float32).min)
        probs = jax.nn.softmax(scores, axis=-1)
        if self.probs_dropout:
            probs = nn.Dropout(self.dropout, deterministic=not train, name="attn_drop")(probs)
        y = jnp.einsum("bhqk,bkhd->bqhd", probs.astype(v.dtype), v).reshape(x.shape)
        y = dense("attn_out", self.out_kernel_init or self.kernel_init)(y)
        return nn.Dropout(self.dropout, deterministic=not train, name="attn_out_drop")(y)


class MLP(nn.Module):
    """``mlp_fc1`` (width to ``mlp_ratio * width``), GELU, ``mlp_fc2`` back, dropout.

    Attributes:
      mlp_ratio: the hidden width over the input width.
      dropout: the rate on the output, and on the hidden units with `hidden_dropout` (when
        training).
      hidden_dropout: drop the hidden units after the GELU too (vit_jax's ``MlpBlock``).
      kernel_init: for ``mlp_fc1``.
      out_kernel_init: for ``mlp_fc2`` (None: `kernel_init`).
      bias_init: for both biases.
      approximate_gelu: the tanh approximation of GELU (GPT-2's and vit_jax's, Flax's
        default) rather than the exact one.
    """

    mlp_ratio: int = 4
    dropout: float = 0.0
    hidden_dropout: bool = False
    kernel_init: Initializer = XAVIER
    out_kernel_init: Initializer | None = None
    bias_init: Initializer = ZEROS
    approximate_gelu: bool = False

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        width = x.shape[-1]
        y = nn.Dense(
            self.mlp_ratio * width,
            kernel_init=self.kernel_init,
            bias_init=self.bias_init,
            name="mlp_fc1",
        )(x)
        y = nn.gelu(y, approximate=self.approximate_gelu)
        if self.hidden_dropout:
            y = nn.Dropout(self.dropout, deterministic=not train, name="mlp_hidden_drop")(y)
        y = nn.Dense(
            width,
            kernel_init=self.out_kernel_init or self.kernel_init,
            bias_init=self.bias_init,
            name="mlp_fc2",
        )(y)
        return nn.Dropout(self.dropout, deterministic=not train, name="mlp_drop")(y)


class Block(nn.Module):
    """A pre-LayerNorm block: ``x + attn(ln1(x))``, then ``x + mlp(ln2(x))``.

    The attention and MLP share the block's scope, so their layers are named
    ``block0/attn_q``, not ``block0/attn/attn_q``.

    Attributes:
      heads, causal, probs_dropout: as `SelfAttention`.
      mlp_ratio, approximate_gelu, hidden_dropout: as `MLP`.
      dropout: the rate of both (when training).
      kernel_init, out_kernel_init: for the input and the residual (output) projections,
        ``attn_q/k/v`` and ``mlp_fc1``, then ``attn_out`` and ``mlp_fc2``.
      attn_bias_init, mlp_bias_init: for the attention's and the MLP's biases.
      epsilon: the LayerNorms'.
    """

    heads: int
    mlp_ratio: int = 4
    dropout: float = 0.0
    probs_dropout: bool = True
    hidden_dropout: bool = False
    causal: bool = False
    kernel_init: Initializer = XAVIER
    out_kernel_init: Initializer | None = None
    attn_bias_init: Initializer = ZEROS
    mlp_bias_init: Initializer = ZEROS
    approximate_gelu: bool = False
    epsilon: float = 1e-6

    def setup(self) -> None:
        self.ln1 = nn.LayerNorm(epsilon=self.epsilon)
        self.ln2 = nn.LayerNorm(epsilon=self.epsilon)
        self.attn = SelfAttention(
            self.heads,
            self.dropout,
            self.probs_dropout,
            self.causal,
            self.kernel_init,
            self.out_kernel_init,
            self.attn_bias_init,
        )
        self.mlp = MLP(
            self.mlp_ratio,
            self.dropout,
            self.hidden_dropout,
            self.kernel_init,
            self.out_kernel_init,
            self.mlp_bias_init,
            self.approximate_gelu,
        )
        nn.share_scope(self, self.attn)
        nn.share_scope(self, self.mlp)

    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        x = x + self.attn(self.ln1(x), train)
        return x + self.mlp(self.ln2(x), train)
