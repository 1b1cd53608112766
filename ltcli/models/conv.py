"""Conv-2, Conv-4 and Conv-6, the paper's CIFAR-10 VGG-style networks.

Stages of 3x3 convolutions (``conv1``, ``conv2``, ...), each stage followed by 2x2 max
pooling, then fully connected ``fc1``, ``fc2`` (256 each) and ``out``; ReLU throughout and
optional dropout after each hidden fully connected layer.

- Conv-2: 64, 64, pool.
- Conv-4: 64, 64, pool, 128, 128, pool.
- Conv-6: 64, 64, pool, 128, 128, pool, 256, 256, pool.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

import flax.linen as nn
import jax

from ltcli.models.cpu_ops import max_pool_2x2
from ltcli.models.layers import Conv, Dense


class ConvNet(nn.Module):
    """Stages of 3x3 convolutions with max pooling, then a fully connected classifier."""

    stages: Sequence[Sequence[int]]
    num_classes: int
    hidden: Sequence[int] = (256, 256)
    dropout: float = 0.0

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        layer = 0
        for stage in self.stages:
            for width in stage:
                layer += 1
                x = nn.relu(Conv(width, name=f"conv{layer}")(x))
            x = max_pool_2x2(x)
        x = x.reshape((x.shape[0], -1))
        for i, width in enumerate(self.hidden, start=1):
            x = nn.relu(Dense(width, name=f"fc{i}")(x))
            if self.dropout:
                x = nn.Dropout(self.dropout, deterministic=not train)(x)
        return Dense(self.num_classes, name="out")(x)


Conv2 = partial(ConvNet, stages=((64, 64),))
Conv4 = partial(ConvNet, stages=((64, 64), (128, 128)))
Conv6 = partial(ConvNet, stages=((64, 64), (128, 128), (256, 256)))
