"""VGG-19 for CIFAR-10 with batch normalization (the paper's VGG-19).

Sixteen 3x3 convolutions ``conv1`` ... ``conv16``, each followed by batch norm (``bn1`` ...)
and ReLU: 2x64, pool, 2x128, pool, 4x256, pool, 4x512, pool, 4x512; then global average
pooling and the output layer ``out``.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax

from ltcli.models.layers import BatchNorm, Conv, Dense

VGG19_STAGES = ((64, 64), (128, 128), (256,) * 4, (512,) * 4, (512,) * 4)


class VGG(nn.Module):
    """Stages of conv-BN-ReLU with max pooling between them, global average pool, ``out``."""

    num_classes: int
    stages: Sequence[Sequence[int]] = VGG19_STAGES

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        layer = 0
        for s, stage in enumerate(self.stages):
            if s:
                x = nn.max_pool(x, (2, 2), strides=(2, 2))
            for width in stage:
                layer += 1
                x = Conv(width, use_bias=False, name=f"conv{layer}")(x)
                x = nn.relu(BatchNorm(use_running_average=not train, name=f"bn{layer}")(x))
        x = x.mean(axis=(1, 2))
        return Dense(self.num_classes, name="out")(x)
