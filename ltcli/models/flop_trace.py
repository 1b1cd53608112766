"""Each weight layer's dense forward FLOPs for one example, read off the model itself.

The model is traced once with `jax.eval_shape` (nothing is computed) under a Flax method
interceptor that records, for every dense and convolutional layer it calls, its kernel's
shape and its output's shape: a layer costs 2 FLOPs (a multiply-add) per weight of its
kernel's fan-in (all axes but the last: ``in``, or ``kh * kw * cin / groups``) per output
element, whatever the model's strides, padding or pooling, so no per-model formula is
written by hand. The conventions (what is counted, and RigL's reference) are
`ltcli.science.flops`'s; also counted here, as layers no mask names: a tied output layer
(``embed.attend``, 2 FLOPs per weight of the embedding per position) and each attention's
two products of activations (scores ``q k^T`` and their weighted sum of values: 2 x 2 x
time^2 x width per example, the full square, which lt computes even when causal).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from typing import Any

from ltcli import models
from ltcli.science import pruning

ATTENTION = "attention"
"""The name (under its block) of an attention's products of activations."""


def layer_flops(
    name: str,
    image_shape: tuple[int, ...],
    num_classes: int,
    arch: Mapping[str, Any] | None = None,
) -> dict[str, float]:
    """``{layer: dense forward FLOPs for one example}`` of model `name` on inputs of the
    data's `image_shape` (a token model reads ``(context,)``), for `num_classes` labels.

    A weight layer's key is its kernel's parameter name (``"fc1/kernel"``, as masks name
    it); the others are ``"embed/embedding"`` (a tied output) and ``"block0/attention"``.
    Cached: the trace is paid once per model, shape and architecture.
    """
    frozen = tuple(sorted((arch or {}).items()))
    return dict(_traced(name, tuple(image_shape), num_classes, frozen))


@functools.cache
def _traced(
    name: str, image_shape: tuple[int, ...], num_classes: int, arch: tuple[tuple[str, Any], ...]
) -> tuple[tuple[str, float], ...]:
    import flax.linen as nn
    import jax
    import jax.numpy as jnp

    definition = models.get(name)
    model = definition.build(num_classes, arch=dict(arch))
    found: dict[str, float] = {}

    def record(next_fun, args, kwargs, context):
        out = next_fun(*args, **kwargs)
        module, method = context.module, context.method_name
        where = pruning.SEP.join(module.path)
        if method == "__call__" and isinstance(module, nn.Dense | nn.Conv):
            kernel = module.variables["params"]["kernel"]
            found[f"{where}{pruning.SEP}kernel"] = 2.0 * math.prod(kernel.shape[:-1]) * out.size
        elif method == "attend" and isinstance(module, nn.Embed):
            found[f"{where}{pruning.SEP}embedding"] = 2.0 * args[0].shape[-1] * out.size
        elif method == "__call__" and type(module).__name__ == "SelfAttention":
            _, time, width = args[0].shape
            found[f"{where}{pruning.SEP}{ATTENTION}"] = 2 * 2.0 * time * time * width
        return out

    dtype = jnp.int32 if definition.tokens else jnp.float32
    x = jax.ShapeDtypeStruct((1, *definition.input_shape(image_shape, dict(arch))), dtype)
    key = jax.random.key(0)

    def init(rngs, inputs):
        with nn.intercept_methods(record):
            return model.init(rngs, inputs, train=False)

    jax.eval_shape(init, {"params": key, "dropout": key}, x)
    return tuple(found.items())
