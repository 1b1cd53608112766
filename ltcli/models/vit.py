"""The Vision Transformer (Dosovitskiy et al., 2021, "An Image is Worth 16x16 Words").

The image is cut into ``patch_size`` squares, each projected to ``width`` by the
dense layer ``patch_embed`` (the paper's convolution of kernel and stride ``patch_size``,
as a matrix over flattened patches); with ``pool="cls"`` a learned class token ``cls`` is
prepended, then a learned position embedding ``pos_embed`` is added to every token, the
class token's too. Then ``depth`` pre-LayerNorm blocks ``block0``, ``block1``, ...
(`ltcli.models.transformer.Block`), the LayerNorm ``ln_f``, and the classifier ``head``
reading the class token (``pool="cls"``) or the mean of the tokens (``pool="mean"``, vit_jax's
``gap``).

Layout and initialization follow the authors' original code, google-research/
vision_transformer's ``vit_jax/models_vit.py`` (compared): the class token prepended before
``AddPositionEmbs`` adds the position embedding, drawn N(0, 0.02) ("from BERT"); dense
kernels Xavier-uniform, MLP biases normal with standard deviation 1e-6 and attention biases
zero (Flax's attention default there); class token zero; the head's kernel and bias zero, so
every class starts at logit 0; ``patch_embed`` keeps Flax's default (LeCun normal, zero
bias), as vit_jax's ``embedding`` convolution does. Its MLP applies Flax's default GELU (the
tanh approximation) and drops its hidden units and its output; the attention drops its
output but not its probabilities (vit_jax's ``attention_dropout_rate`` is 0 in every
configuration of ``vit_jax/configs/models.py``), all at ``dropout``. The authors' later big_vision
(``big_vision/models/vit.py``) differs, and is not followed: it adds the position embedding
(sincos2d, or learned N(0, 1/sqrt(width))) to the patches before prepending the class token.
open_lth has no transformer.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from ltcli.models.transformer import XAVIER, ZEROS, Block

POOLS = ("cls", "mean")


class ViT(nn.Module):
    """A Vision Transformer on float32 NHWC images; returns logits ``(batch, num_classes)``.

    Attributes:
      num_classes: the number of labels.
      dropout: the rate after the embedding and in every block (when training).
      depth: the number of blocks.
      width: the token width; must be divisible by `heads`.
      heads: attention heads per block.
      mlp_ratio: each block's MLP hidden width over `width`.
      patch_size: the side of a patch; must divide the image's sides.
      pool: ``"cls"`` (a class token) or ``"mean"`` (the tokens' average).
    """

    num_classes: int
    dropout: float = 0.0
    depth: int = 6
    width: int = 192
    heads: int = 3
    mlp_ratio: int = 4
    patch_size: int = 4
    pool: str = "cls"

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        batch, height, side, _ = x.shape
        p = self.patch_size
        if height % p or side % p:
            raise ValueError(f"image {height}x{side} is not divisible by patch_size {p}")
        if self.width % self.heads:
            raise ValueError(f"width {self.width} is not divisible by heads {self.heads}")
        if self.pool not in POOLS:
            raise ValueError(f"pool must be one of {', '.join(POOLS)}; got {self.pool!r}")
        # Patches flattened (row, column, channel) through one dense layer: the strided
        # convolution of the paper, written so that XLA:CPU runs no convolution in a loop.
        channels = x.shape[-1]
        x = x.reshape(batch, height // p, p, side // p, p, channels).transpose(0, 1, 3, 2, 4, 5)
        x = nn.Dense(self.width, name="patch_embed")(x.reshape(batch, -1, p * p * channels))
        if self.pool == "cls":
            cls = self.param("cls", ZEROS, (1, 1, self.width))
            x = jnp.concatenate([jnp.broadcast_to(cls, (batch, 1, self.width)), x], axis=1)
        pos = self.param("pos_embed", nn.initializers.normal(0.02), (1, *x.shape[1:]))
        x = nn.Dropout(self.dropout, deterministic=not train)(x + pos)
        for i in range(self.depth):
            x = Block(
                self.heads,
                self.mlp_ratio,
                self.dropout,
                kernel_init=XAVIER,
                attn_bias_init=ZEROS,
                mlp_bias_init=nn.initializers.normal(1e-6),
                approximate_gelu=True,
                probs_dropout=False,
                hidden_dropout=True,
                name=f"block{i}",
            )(x, train)
        x = nn.LayerNorm(epsilon=1e-6, name="ln_f")(x)
        x = x[:, 0] if self.pool == "cls" else x.mean(axis=1)
        return nn.Dense(self.num_classes, kernel_init=ZEROS, name="head")(x)
