"""LeNet-300-100 (fully connected 300, 100, 10), the paper's MNIST network."""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax

from ltcli.models.layers import Dense


class MLP(nn.Module):
    """A fully connected network: hidden layers ``fc1``, ``fc2``, ... with ReLU, then ``out``."""

    hidden: Sequence[int]
    num_classes: int
    dropout: float = 0.0

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        x = x.reshape((x.shape[0], -1))
        for i, width in enumerate(self.hidden, start=1):
            x = nn.relu(Dense(width, name=f"fc{i}")(x))
            if self.dropout:
                x = nn.Dropout(self.dropout, deterministic=not train)(x)
        return Dense(self.num_classes, name="out")(x)
