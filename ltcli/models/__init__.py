"""Models by name. Each is a Flax module called as ``model.apply(vars, x, train=...)`` on
float32 NHWC images; `ModelDef.kinds` lists the prunable layer kinds it has.

The registry names each model's module and class rather than importing them: Flax (and
JAX under it) load only when a model is built, so a command that trains nothing starts fast.

The package may import science (which layers are prunable, `ltcli.science.pruning`) and
core; never data, experiment or anything above.
"""

from __future__ import annotations

import dataclasses
import importlib
import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ltcli.core.errors import UsageError
from ltcli.science import pruning

if TYPE_CHECKING:
    import flax.linen as nn


@dataclasses.dataclass(frozen=True)
class ModelDef:
    """Where a model's class is (``module:Class``), the names of its prunable kernels, its
    fixed arguments, whether it takes a dropout rate and whether it has batch norm.

    `kernels` lets a spec's exclusion patterns be checked without building the model; a
    test checks them against the built model's parameters (at the default `arch`).

    Attributes:
      arch: the architecture options a spec may set (``model.depth = 4``), with their
        defaults; a spec setting one the model does not list is refused.
      tokens: the model reads token ids (batch, time) and predicts the next token at every
        position, rather than classifying images; its input shape is ``(context,)``.
    """

    target: str
    kernels: tuple[str, ...]
    options: tuple[tuple[str, Any], ...] = ()
    has_dropout: bool = True
    has_batch_norm: bool = False
    note: str = ""
    arch: tuple[tuple[str, Any], ...] = ()
    tokens: bool = False

    def architecture(self, arch: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The model's `arch` defaults overridden by `arch` (None values keep the default).

        Raises:
          ValueError: an option the model does not take.
        """
        given = {k: v for k, v in (arch or {}).items() if v is not None}
        unknown = sorted(set(given) - {k for k, _ in self.arch})
        if unknown:
            raise ValueError(f"takes no {', '.join(unknown)}")
        return dict(self.arch) | given

    def input_shape(self, data_shape: tuple[int, ...], arch: Mapping[str, Any] | None = None):
        """The shape of one input: the data set's image shape, or ``(context,)`` tokens."""
        return (self.architecture(arch)["context"],) if self.tokens else tuple(data_shape)

    @property
    def kinds(self) -> tuple[str, ...]:
        """The prunable layer kinds it has, in the order of `pruning.KINDS`."""
        present = set(pruning.prunable_names(self.kernels).values())
        return tuple(k for k in pruning.KINDS if k in present)

    def build(
        self, num_classes: int, dropout: float = 0.0, arch: Mapping[str, Any] | None = None
    ) -> nn.Module:
        """The Flax module for `num_classes` labels (a token model: its vocabulary size).

        Raises:
          ValueError: a nonzero `dropout` for a model without dropout, or an `arch` option
            the model does not take.
        """
        module, name = self.target.split(":")
        cls = getattr(importlib.import_module(module), name)
        options = dict(self.options) | self.architecture(arch)
        if not self.has_dropout:
            if dropout:
                raise ValueError(f"{name} has no dropout; got dropout={dropout}")
            return cls(num_classes=num_classes, **options)
        return cls(num_classes=num_classes, dropout=dropout, **options)


def _kernels(*layers: str) -> tuple[str, ...]:
    return tuple(f"{layer}{pruning.SEP}kernel" for layer in layers)


def _convs(count: int) -> tuple[str, ...]:
    return tuple(f"conv{i}" for i in range(1, count + 1))


_RESNET20_BLOCKS = tuple(
    f"stage{stage}_block{block}{pruning.SEP}{layer}"
    for stage in (1, 2, 3)
    for block in (0, 1, 2)
    for layer in ("conv1", "conv2", "shortcut")
    if layer != "shortcut" or (block == 0 and stage > 1)
)


def _bottleneck_blocks(stages: tuple[int, ...]) -> tuple[str, ...]:
    """The prunable layers of `ltcli.models.imagenet_resnet`'s bottleneck blocks: three
    convolutions each, and a projection ``shortcut`` in the first block of every stage."""
    return tuple(
        f"stage{stage}_block{block}{pruning.SEP}{layer}"
        for stage, blocks in enumerate(stages, start=1)
        for block in range(blocks)
        for layer in ("conv1", "conv2", "conv3", "shortcut")
        if layer != "shortcut" or block == 0
    )


def _transformer_kernels(depth: int) -> tuple[str, ...]:
    """The prunable kernels of `depth` blocks (`ltcli.models.transformer.Block`)."""
    layers = ("attn_q", "attn_k", "attn_v", "attn_out", "mlp_fc1", "mlp_fc2")
    return _kernels(*(f"block{i}{pruning.SEP}{layer}" for i in range(depth) for layer in layers))


MODELS: dict[str, ModelDef] = {
    "lenet300": ModelDef(
        "ltcli.models.lenet:MLP", _kernels("fc1", "fc2", "out"), (("hidden", (300, 100)),)
    ),
    "conv2": ModelDef("ltcli.models.conv:Conv2", _kernels(*_convs(2), "fc1", "fc2", "out")),
    "conv4": ModelDef("ltcli.models.conv:Conv4", _kernels(*_convs(4), "fc1", "fc2", "out")),
    "conv6": ModelDef("ltcli.models.conv:Conv6", _kernels(*_convs(6), "fc1", "fc2", "out")),
    "vgg19": ModelDef(
        "ltcli.models.vgg:VGG",
        _kernels(*_convs(16), "out"),
        has_dropout=False,
        has_batch_norm=True,
    ),
    "resnet20": ModelDef(
        "ltcli.models.resnet:ResNet",
        _kernels("conv1", *_RESNET20_BLOCKS, "out"),
        has_dropout=False,
        has_batch_norm=True,
        note="resnet18 is the paper's name for this 20-layer CIFAR ResNet; using resnet20",
    ),
    "resnet50": ModelDef(
        "ltcli.models.imagenet_resnet:ImageNetResNet",
        _kernels("conv1", *_bottleneck_blocks((3, 4, 6, 3)), "out"),
        has_dropout=False,
        has_batch_norm=True,
        note="ResNet-50 v1.5 for ImageNet (torchvision's, as open_lth's imagenet_resnet_50)",
    ),
    "vit": ModelDef(
        "ltcli.models.vit:ViT",
        _transformer_kernels(6),
        arch=(
            ("depth", 6),
            ("width", 192),
            ("heads", 3),
            ("mlp_ratio", 4),
            ("patch_size", 4),
            ("pool", "cls"),
        ),
        note="a small Vision Transformer (Dosovitskiy et al., 2021) for 32x32 images",
    ),
    "gpt": ModelDef(
        "ltcli.models.gpt:GPT",
        _transformer_kernels(6),
        arch=(
            ("depth", 6),
            ("width", 384),
            ("heads", 6),
            ("mlp_ratio", 4),
            ("context", 256),
            ("tied", True),
        ),
        tokens=True,
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


def create(
    name: str, num_classes: int, dropout: float = 0.0, arch: Mapping[str, Any] | None = None
) -> nn.Module:
    """Builds model `name` for `num_classes` labels, with `arch` options (`ModelDef.arch`)."""
    return get(name).build(num_classes=num_classes, dropout=dropout, arch=arch)


def abstract_variables(
    name: str,
    image_shape: tuple[int, ...] = (32, 32, 3),
    num_classes: int = 10,
    arch: Mapping[str, Any] | None = None,
) -> dict:
    """Model `name`'s variables (``params``, maybe ``batch_stats``) as shapes, not arrays.

    Traced with `jax.eval_shape`, so nothing is initialized or computed. `image_shape` is
    the data's; a token model reads ``(context,)`` instead (`ModelDef.input_shape`).
    """
    import jax
    import jax.numpy as jnp

    model = create(name, num_classes, arch=arch)
    x = jax.ShapeDtypeStruct((1, *get(name).input_shape(image_shape, arch)), jnp.float32)
    key = jax.random.key(0)
    return jax.eval_shape(
        lambda k, v: model.init(k, v, train=False), {"params": key, "dropout": key}, x
    )


def weight_counts(
    name: str,
    image_shape: tuple[int, ...] = (32, 32, 3),
    num_classes: int = 10,
    arch: Mapping[str, Any] | None = None,
) -> dict[str, int]:
    """Prunable weights of model `name` per layer kind (``{"conv": ..., "output": ...}``)."""
    params = abstract_variables(name, image_shape, num_classes, arch)["params"]
    counts = dict.fromkeys(get(name).kinds, 0)
    for path, leaf in pruning.leaves(params).items():
        if kind := pruning.layer_kind(path):
            counts[kind] += math.prod(leaf.shape)
    return counts
