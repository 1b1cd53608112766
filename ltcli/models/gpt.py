"""A causal transformer language model as GPT-2 (Radford et al., 2019, "Language Models are
Unsupervised Multitask Learners") and its minimal re-implementation nanoGPT.

Token ids go through the embedding ``embed`` plus a learned position embedding
``pos_embed`` (one row per position up to ``context``), then ``depth`` pre-LayerNorm causal
blocks ``block0``, ``block1``, ... (`ltcli.models.transformer.Block`) and the LayerNorm
``ln_f``. The logits over the vocabulary (``num_classes`` tokens) at every position are
``embed.attend`` (the embedding matrix, tied as in GPT-2) or, untied, the bias-free dense
layer ``head``.

Initialization as GPT-2: dense kernels and embeddings normal with standard deviation 0.02,
the residual projections ``attn_out`` and ``mlp_fc2`` 0.02 / sqrt(2 * depth) (GPT-2 scales
them by 1 / sqrt(N) for its N residual layers), biases zero, LayerNorm scales one (epsilon
1e-5); GELU is GPT-2's tanh approximation, and every dense layer and LayerNorm has a bias,
as GPT-2's. nanoGPT's ``model.py`` (compared) lays the network out the same way and
initializes it the same, but uses the exact GELU (``nn.GELU()``), and its shakespeare-char
recipe trains without biases (``bias = False``). open_lth has no transformer.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from ltcli.models.transformer import ZEROS, Block

STD = 0.02


class GPT(nn.Module):
    """A decoder-only transformer: ``(batch, time)`` token ids to float32 logits
    ``(batch, time, num_classes)``, position t seeing only positions up to t.

    Attributes:
      num_classes: the vocabulary size.
      dropout: the rate after the embedding and in every block (when training).
      depth: the number of blocks.
      width: the token width; must be divisible by `heads`.
      heads: attention heads per block.
      mlp_ratio: each block's MLP hidden width over `width`.
      context: the most positions an input may have.
      tied: the output reuses the token embedding (no ``head`` parameter).
    """

    num_classes: int
    dropout: float = 0.0
    depth: int = 6
    width: int = 384
    heads: int = 6
    mlp_ratio: int = 4
    context: int = 256
    tied: bool = True

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        """`x`: token ids of any numeric dtype (cast to int32)."""
        tokens = x.astype(jnp.int32)
        time = tokens.shape[-1]
        if time > self.context:
            raise ValueError(f"{time} tokens exceed the context of {self.context}")
        if self.width % self.heads:
            raise ValueError(f"width {self.width} is not divisible by heads {self.heads}")
        init = nn.initializers.normal(STD)
        embed = nn.Embed(self.num_classes, self.width, embedding_init=init, name="embed")
        pos = self.param("pos_embed", init, (self.context, self.width))
        h = nn.Dropout(self.dropout, deterministic=not train)(embed(tokens) + pos[:time])
        for i in range(self.depth):
            h = Block(
                self.heads,
                self.mlp_ratio,
                self.dropout,
                causal=True,
                kernel_init=init,
                out_kernel_init=nn.initializers.normal(STD / math.sqrt(2 * self.depth)),
                attn_bias_init=ZEROS,
                mlp_bias_init=ZEROS,
                approximate_gelu=True,
                epsilon=1e-5,
                name=f"block{i}",
            )(h, train)
        h = nn.LayerNorm(epsilon=1e-5, name="ln_f")(h)
        if self.tied:
            logits = embed.attend(h)
        else:
            logits = nn.Dense(self.num_classes, use_bias=False, kernel_init=init, name="head")(h)
        return logits.astype(jnp.float32)
