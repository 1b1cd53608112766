"""ResNet-50 for ImageNet (He et al., 2016, "Deep Residual Learning for Image Recognition"),
in its torchvision form, ResNet "v1.5": the stride of a downsampling bottleneck is on its 3x3
convolution ``conv2``, not on the first 1x1 ``conv1`` as in the paper (v1).

This is the network open_lth builds for ``imagenet_resnet_50`` (open_lth's
``models/imagenet_resnet.py``, which subclasses ``torchvision.models.ResNet`` with
``torchvision.models.resnet.Bottleneck`` and ``[3, 4, 6, 3]`` blocks):

- stem: a 7x7 convolution ``conv1`` of `width` filters, stride 2, padding 3, batch norm
  ``bn1``, ReLU, then a 3x3 max pool with stride 2 and padding 1;
- four stages ``stage1`` ... ``stage4`` of `stages` bottleneck blocks
  (``stage{s}_block{b}``, b from 0), of ``width * 2**(s - 1)`` inner filters and four times
  as many outputs: 1x1 ``conv1``/``bn1``, 3x3 ``conv2``/``bn2`` (which strides by 2 in the
  first block of stages 2-4), 1x1 ``conv3``/``bn3``, plus the input, then ReLU. The first
  block of every stage changes the shape (stage 1 the channels only), so it projects its
  input with a strided 1x1 convolution ``shortcut`` and batch norm ``bn_shortcut``
  (torchvision's ``downsample``);
- global average pooling and the output layer ``out`` (torchvision's ``fc``).

Convolutions have no bias; padding is symmetric as in PyTorch (``k // 2`` on each side), not
Flax's ``SAME``, which pads a strided convolution of an even input one more at the end. At
the defaults the model has torchvision's 25,557,032 parameters, batch-norm running
statistics aside.

Initialization, `initializer`:

- ``"open_lth"`` (the default), what open_lth's default ``imagenet_resnet_50`` ends up with:
  torchvision's constructor draws the convolutions Kaiming-normal with ``fan_out``, but
  open_lth's ``Model`` then applies its ``model_init='kaiming_normal'``, PyTorch's
  ``kaiming_normal_`` at its defaults, to every convolution *and* the output layer:
  N(0, 2 / fan_in), untruncated; and its ``batchnorm_init='uniform'``: every batch-norm
  scale U[0, 1), every offset 0. The output bias keeps PyTorch's ``Linear`` default,
  U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
- ``"torchvision"``, torchvision's own: convolutions N(0, 2 / fan_out), untruncated;
  batch-norm scales 1 and offsets 0 (no zero-init of the last batch norm of a block, which
  torchvision does only when asked and open_lth never does); the output layer PyTorch's
  ``Linear`` default, weights and bias U(-1/sqrt(fan_in), 1/sqrt(fan_in)).

Batch norm is `ltcli.models.layers.BatchNorm` (PyTorch's momentum and epsilon).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import partial
from typing import Literal

import flax.linen as nn
import jax
import jax.numpy as jnp

from ltcli.models.layers import BatchNorm

EXPANSION = 4
"""A bottleneck block's outputs per inner filter."""

Scheme = Literal["open_lth", "torchvision"]

_CONV_INIT = {
    "open_lth": nn.initializers.variance_scaling(2.0, "fan_in", "normal"),
    "torchvision": nn.initializers.variance_scaling(2.0, "fan_out", "normal"),
}
_BN_SCALE_INIT = {
    "open_lth": nn.initializers.uniform(1.0),
    "torchvision": nn.initializers.ones,
}
_DENSE_INIT = {
    "open_lth": nn.initializers.variance_scaling(2.0, "fan_in", "normal"),
    # PyTorch's Linear default, kaiming_uniform_(a=sqrt(5)): U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
    "torchvision": nn.initializers.variance_scaling(1 / 3, "fan_in", "uniform"),
}


def _symmetric_uniform(bound: float) -> nn.initializers.Initializer:
    """U(-bound, bound), as PyTorch draws a Linear layer's bias."""

    def init(key: jax.Array, shape: Sequence[int], dtype=jnp.float32) -> jax.Array:
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


def _conv(features: int, size: int, stride: int, initializer: Scheme, name: str) -> nn.Conv:
    """A bias-free ``size`` x ``size`` convolution padded as PyTorch pads it."""
    pad = size // 2
    return nn.Conv(
        features,
        kernel_size=(size, size),
        strides=(stride, stride),
        padding=((pad, pad), (pad, pad)),
        use_bias=False,
        kernel_init=_CONV_INIT[initializer],
        name=name,
    )


class Bottleneck(nn.Module):
    """1x1, 3x3 (strided), 1x1 convolutions with batch norm, plus the (projected) input."""

    features: int
    stride: int = 1
    initializer: Scheme = "open_lth"

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        norm = partial(
            BatchNorm, use_running_average=not train, scale_init=_BN_SCALE_INIT[self.initializer]
        )
        outputs = self.features * EXPANSION
        y = _conv(self.features, 1, 1, self.initializer, "conv1")(x)
        y = nn.relu(norm(name="bn1")(y))
        y = _conv(self.features, 3, self.stride, self.initializer, "conv2")(y)
        y = nn.relu(norm(name="bn2")(y))
        y = _conv(outputs, 1, 1, self.initializer, "conv3")(y)
        y = norm(name="bn3")(y)
        if self.stride != 1 or x.shape[-1] != outputs:
            x = _conv(outputs, 1, self.stride, self.initializer, "shortcut")(x)
            x = norm(name="bn_shortcut")(x)
        return nn.relu(x + y)


class ImageNetResNet(nn.Module):
    """A bottleneck ResNet for ImageNet, ResNet-50 v1.5 at the defaults.

    Attributes:
      num_classes: outputs of ``out``.
      stages: bottleneck blocks per stage; (3, 4, 6, 3) is ResNet-50, (3, 4, 23, 3) ResNet-101.
      width: filters of the stem and of the first stage's blocks (open_lth's
        ``imagenet_resnet_50_W``); each later stage doubles it.
      initializer: ``"open_lth"`` or ``"torchvision"`` initialization (see the module docstring).
    """

    num_classes: int
    stages: Sequence[int] = (3, 4, 6, 3)
    width: int = 64
    initializer: Scheme = "open_lth"

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        if self.initializer not in _CONV_INIT:
            raise ValueError(
                f"initializer must be one of {', '.join(_CONV_INIT)}; got {self.initializer!r}"
            )
        x = _conv(self.width, 7, 2, self.initializer, "conv1")(x)
        x = BatchNorm(
            use_running_average=not train, scale_init=_BN_SCALE_INIT[self.initializer], name="bn1"
        )(x)
        x = nn.relu(x)
        x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
        for s, blocks in enumerate(self.stages, start=1):
            for b in range(blocks):
                stride = 2 if s > 1 and b == 0 else 1
                features = self.width * 2 ** (s - 1)
                x = Bottleneck(features, stride, self.initializer, name=f"stage{s}_block{b}")(
                    x, train
                )
        x = x.mean(axis=(1, 2))
        return nn.Dense(
            self.num_classes,
            kernel_init=_DENSE_INIT[self.initializer],
            bias_init=_symmetric_uniform(1 / math.sqrt(x.shape[-1])),
            name="out",
        )(x)
