"""ResNet-20 for CIFAR-10 (He et al., 2016), which the paper calls "ResNet-18".

A 3x3 convolution ``conv1`` of 16 filters with batch norm ``bn1`` and ReLU; three stages of
three basic blocks (``stage1_block0`` ... ``stage3_block2``) with 16, 32 and 64 filters, the
first block of stages 2 and 3 striding by 2; global average pooling; the output layer ``out``.
A block whose shape changes adds a 1x1 convolution ``shortcut`` with batch norm
``bn_shortcut`` to its residual path.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

import flax.linen as nn
import jax

from ltcli.models.cpu_ops import materialize
from ltcli.models.layers import BatchNorm, Conv, Dense


class BasicBlock(nn.Module):
    """conv-BN-ReLU, conv-BN, plus the (projected) input, then ReLU."""

    features: int
    stride: int = 1

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        norm = partial(BatchNorm, use_running_average=not train)
        strides = (self.stride, self.stride)
        y = Conv(self.features, strides=strides, use_bias=False, name="conv1")(x)
        y = nn.relu(norm(name="bn1")(y))
        y = Conv(self.features, use_bias=False, name="conv2")(y)
        y = norm(name="bn2")(y)
        if x.shape != y.shape:
            x = Conv(
                self.features, kernel_size=(1, 1), strides=strides, use_bias=False, name="shortcut"
            )(x)
            x = norm(name="bn_shortcut")(x)
        return materialize(nn.relu(x + y))


class ResNet(nn.Module):
    """A CIFAR ResNet: stem, stages of basic blocks, global average pool, ``out``."""

    num_classes: int
    widths: Sequence[int] = (16, 32, 64)
    blocks_per_stage: int = 3

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        x = Conv(self.widths[0], use_bias=False, name="conv1")(x)
        x = materialize(nn.relu(BatchNorm(use_running_average=not train, name="bn1")(x)))
        for s, width in enumerate(self.widths, start=1):
            for b in range(self.blocks_per_stage):
                stride = 2 if s > 1 and b == 0 else 1
                x = BasicBlock(width, stride, name=f"stage{s}_block{b}")(x, train)
        x = x.mean(axis=(1, 2))
        return Dense(self.num_classes, name="out")(x)
