"""Layers with the paper's initialization: Gaussian Glorot weights, zero biases.

Flax's `glorot_normal`, like TensorFlow's `glorot_normal_initializer` that the paper's code
used, draws from a normal truncated at two standard deviations, rescaled to the Glorot
variance 2 / (fan_in + fan_out).

Prunable layers are recognised by name (see `ltcli.science.pruning.layer_kind`): ``conv*`` and
``shortcut*`` are convolutions, ``fc*`` hidden dense layers, ``out`` the output layer.
"""

from functools import partial

import flax.linen as nn

from ltcli.models import cpu_ops

Dense = partial(nn.Dense, kernel_init=nn.initializers.glorot_normal())
Conv = partial(
    nn.Conv,
    kernel_size=(3, 3),
    padding="SAME",
    kernel_init=nn.initializers.glorot_normal(),
    conv_general_dilated=cpu_ops.conv_general_dilated,
)
BN_MOMENTUM = 0.9
"""Batch norm as in PyTorch (momentum 0.1 there: the share of the new batch statistics)."""
BatchNorm = partial(cpu_ops.BatchNorm, momentum=BN_MOMENTUM, epsilon=1e-5)
