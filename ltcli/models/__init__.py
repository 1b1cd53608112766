"""Models by name. Each is a Flax module called as ``model.apply(vars, x, train=...)`` on
float32 NHWC images; `ModelDef.kinds` lists the prunable layer kinds it has."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from functools import partial

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import traverse_util

from ltcli import pruning
from ltcli.errors import UsageError
from ltcli.models.conv import Conv2, Conv4, Conv6
from ltcli.models.lenet import MLP
from ltcli.models.resnet import ResNet
from ltcli.models.vgg import VGG


@dataclasses.dataclass(frozen=True)
class ModelDef:
    """How to build a model and which prunable layer kinds (conv, fc, output) it has."""

    build: Callable[..., nn.Module]
    kinds: tuple[str, ...]
    note: str = ""


def _without_dropout(module: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """A build function for a model that has no dropout: a nonzero rate is an error."""

    def build(num_classes: int, dropout: float = 0.0) -> nn.Module:
        if dropout:
            raise ValueError(f"{module.__name__} has no dropout; got dropout={dropout}")
        return module(num_classes=num_classes)

    return build


MODELS: dict[str, ModelDef] = {
    "lenet300": ModelDef(partial(MLP, hidden=(300, 100)), ("fc", "output")),
    "conv2": ModelDef(Conv2, ("conv", "fc", "output")),
    "conv4": ModelDef(Conv4, ("conv", "fc", "output")),
    "conv6": ModelDef(Conv6, ("conv", "fc", "output")),
    "vgg19": ModelDef(_without_dropout(VGG), ("conv", "output")),
    "resnet20": ModelDef(
        _without_dropout(ResNet),
        ("conv", "output"),
        note="resnet18 is the paper's name for this 20-layer CIFAR ResNet; using resnet20",
    ),
}
ALIASES: dict[str, str] = {"resnet18": "resnet20"}


def get(name: str) -> ModelDef:
    """The model called `name` (or an alias of it).

    Raises:
      UsageError: no such model; the message lists the known names.
    """
    name = ALIASES.get(name, name)
    if name not in MODELS:
        raise UsageError(f"model.name: unknown model {name!r}; known: {', '.join(sorted(MODELS))}")
    return MODELS[name]


def create(name: str, num_classes: int, dropout: float = 0.0) -> nn.Module:
    """Builds model `name` for `num_classes` labels."""
    model = get(name)
    return model.build(num_classes=num_classes, dropout=dropout)


def abstract_variables(
    name: str, image_shape: tuple[int, ...] = (32, 32, 3), num_classes: int = 10
) -> dict:
    """Model `name`'s variables (``params``, maybe ``batch_stats``) as shapes, not arrays.

    Traced with `jax.eval_shape`, so nothing is initialized or computed.
    """
    model = create(name, num_classes)
    x = jax.ShapeDtypeStruct((1, *image_shape), jnp.float32)
    key = jax.random.key(0)
    return jax.eval_shape(partial(model.init, train=False), {"params": key, "dropout": key}, x)


def weight_counts(
    name: str, image_shape: tuple[int, ...] = (32, 32, 3), num_classes: int = 10
) -> dict[str, int]:
    """Prunable weights of model `name` per layer kind (``{"conv": ..., "output": ...}``)."""
    params = abstract_variables(name, image_shape, num_classes)["params"]
    counts = dict.fromkeys(get(name).kinds, 0)
    for path, leaf in traverse_util.flatten_dict(params, sep=pruning.SEP).items():
        if kind := pruning.layer_kind(path):
            counts[kind] += math.prod(leaf.shape)
    return counts
