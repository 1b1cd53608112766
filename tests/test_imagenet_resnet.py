"""ResNet-50 v1.5 for ImageNet (`ltcli.models.imagenet_resnet`), against torchvision's and
open_lth's: names, shapes, parameter count, strides, padding, wiring and initialization.

Everything at the full size is traced with `jax.eval_shape` (no compute); what runs does so
on tiny networks (one block per stage, a few filters, small images, batch 2).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util
from jax import lax

from ltcli import models
from ltcli.models import imagenet_resnet
from ltcli.models.imagenet_resnet import ImageNetResNet
from ltcli.science import pruning

pytestmark = pytest.mark.system

IMAGENET = (224, 224, 3)
TORCHVISION_RESNET50_PARAMS = 25_557_032
"""``sum(p.numel() for p in torchvision.models.resnet50().parameters())``."""
TINY = {"stages": (1, 1, 1, 1), "width": 8}


def flat(tree) -> dict:
    return traverse_util.flatten_dict(tree, sep=pruning.SEP)


def count(tree) -> int:
    return sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(tree))


@pytest.fixture(scope="module")
def full():
    """ResNet-50's variables at 224x224x3 and 1000 classes, as shapes."""
    return models.abstract_variables("resnet50", IMAGENET, 1000)


@pytest.fixture(scope="module")
def tiny():
    """A tiny network, 10 classes, and its variables initialized on a 64x64 batch."""
    model = ImageNetResNet(num_classes=10, **TINY)
    x = jnp.zeros((2, 64, 64, 3), jnp.float32)
    return model, model.init(jax.random.key(0), x, train=False)


@pytest.mark.unit
def test_the_registry_names_exactly_the_traced_kernels(full):
    kernels = {p for p in flat(full["params"]) if p.endswith(f"{pruning.SEP}kernel")}
    definition = models.get("resnet50")
    assert sorted(definition.kernels) == sorted(kernels)
    assert set(pruning.prunable_layers(full["params"])) == kernels
    # torchvision's resnet50 has 53 Conv2d (4 of them downsample projections) and one Linear.
    assert len(kernels) == 54
    assert sum(k.split(pruning.SEP)[-2] == "shortcut" for k in kernels) == 4
    assert definition.kinds == ("conv", "output")
    assert definition.has_batch_norm and not definition.has_dropout


@pytest.mark.unit
def test_parameter_count_is_torchvisions(full):
    assert count(full["params"]) == TORCHVISION_RESNET50_PARAMS
    # Running mean and variance of every batch norm (26,560 channels).
    assert count(full["batch_stats"]) == 53_120
    counts = models.weight_counts("resnet50", IMAGENET, 1000)
    assert counts == {"conv": 23_454_912, "output": 2_048_000}


@pytest.mark.unit
def test_layer_shapes_follow_torchvision(full):
    shapes = {k: v.shape for k, v in flat(full["params"]).items()}
    assert shapes["conv1/kernel"] == (7, 7, 3, 64)
    assert shapes["bn1/scale"] == (64,)
    # Stage 1's first block projects 64 to 256 channels without striding.
    assert shapes["stage1_block0/conv1/kernel"] == (1, 1, 64, 64)
    assert shapes["stage1_block0/shortcut/kernel"] == (1, 1, 64, 256)
    assert shapes["stage1_block1/conv1/kernel"] == (1, 1, 256, 64)
    assert shapes["stage2_block0/conv1/kernel"] == (1, 1, 256, 128)
    assert shapes["stage3_block5/conv2/kernel"] == (3, 3, 256, 256)
    assert shapes["stage4_block0/conv2/kernel"] == (3, 3, 512, 512)
    assert shapes["stage4_block0/shortcut/kernel"] == (1, 1, 1024, 2048)
    assert shapes["stage4_block2/conv3/kernel"] == (1, 1, 512, 2048)
    assert shapes["stage4_block2/bn3/bias"] == (2048,)
    assert shapes["out/kernel"] == (2048, 1000)
    assert shapes["out/bias"] == (1000,)
    assert "stage4_block3/conv1/kernel" not in shapes
    assert not any(k.startswith("stage1_block1/shortcut") for k in shapes)
    assert not any(k.endswith("conv1/bias") for k in shapes)


@pytest.mark.unit
def test_strides_at_imagenet_size(full):
    """112 after the stem, 56 after the pool, then 56, 28, 14, 7 = 224 / 32."""
    model = models.create("resnet50", 1000)
    x = jax.ShapeDtypeStruct((1, *IMAGENET), jnp.float32)
    _, state = jax.eval_shape(
        lambda v, x: model.apply(v, x, capture_intermediates=True, mutable=["intermediates"]),
        full,
        x,
    )
    out = {k: v[0].shape for k, v in flat(state["intermediates"]).items()}
    assert out["conv1/__call__"] == (1, 112, 112, 64)
    assert out["stage1_block0/conv1/__call__"] == (1, 56, 56, 64)
    for stage, (size, blocks) in enumerate(
        zip((56, 28, 14, 7), (3, 4, 6, 3), strict=True), start=1
    ):
        assert out[f"stage{stage}_block{blocks - 1}/__call__"] == (1, size, size, 256 << stage - 1)
    assert out["__call__"] == (1, 1000)


def test_the_stride_is_on_the_3x3_convolution(tiny):
    """v1.5: a downsampling block's conv1 keeps the size, conv2 and the shortcut halve it."""
    model, variables = tiny
    x = jnp.ones((2, 64, 64, 3), jnp.float32)
    y, state = model.apply(variables, x, capture_intermediates=True, mutable=["intermediates"])
    out = {k: v[0].shape for k, v in flat(state["intermediates"]).items()}
    assert y.shape == (2, 10)
    assert out["stage1_block0/__call__"] == (2, 16, 16, 32)
    for stage, size in ((2, 16), (3, 8), (4, 4)):
        block, features = f"stage{stage}_block0", 8 << stage - 1
        assert out[f"{block}/conv1/__call__"] == (2, size, size, features)
        assert out[f"{block}/conv2/__call__"] == (2, size // 2, size // 2, features)
        assert out[f"{block}/shortcut/__call__"] == (2, size // 2, size // 2, 4 * features)
    # Before pooling: 64 / 32.
    assert out["stage4_block0/__call__"] == (2, 2, 2, 256)


def test_train_and_eval(tiny):
    model, variables = tiny
    x = jax.random.normal(jax.random.key(1), (2, 32, 32, 3))
    y, updated = model.apply(variables, x, train=True, mutable=["batch_stats"])
    assert y.shape == (2, 10) and y.dtype == jnp.float32
    before, after = flat(variables["batch_stats"]), flat(updated["batch_stats"])
    assert before.keys() == after.keys()
    assert "stage3_block0/bn_shortcut/mean" in after
    assert all(not np.allclose(before[k], after[k]) for k in after)
    # PyTorch's momentum: 0.9 of the old mean, 0.1 of the batch's.
    stem = model.apply(variables, x, capture_intermediates=True, mutable=["intermediates"])[1]
    conv1 = stem["intermediates"]["conv1"]["__call__"][0]
    np.testing.assert_allclose(
        after["bn1/mean"], 0.1 * conv1.mean(axis=(0, 1, 2)), rtol=1e-4, atol=1e-6
    )
    # Eval uses the running statistics: an example's output does not depend on its batch.
    alone = model.apply(variables, x[:1], train=False)
    together = model.apply(variables, x, train=False)
    np.testing.assert_allclose(alone[0], together[0], rtol=1e-5, atol=1e-5)
    trained = model.apply(variables, x[:1].repeat(2, axis=0), train=True, mutable=["batch_stats"])
    assert not np.allclose(trained[0][0], y[0], atol=1e-3)


def _reference(variables: dict, x: jax.Array) -> jax.Array:
    """torchvision's ResNet.forward and Bottleneck.forward in eval mode, written with lax."""
    params, stats = variables["params"], variables["batch_stats"]

    def conv(p, x, stride, padding):
        return lax.conv_general_dilated(
            x, p["kernel"], (stride, stride), [(padding, padding)] * 2, (1, 1), (1, 1),
            ("NHWC", "HWIO", "NHWC"),
        )  # fmt: skip

    def bn(p, s, x):
        return (x - s["mean"]) / jnp.sqrt(s["var"] + 1e-5) * p["scale"] + p["bias"]

    x = jax.nn.relu(bn(params["bn1"], stats["bn1"], conv(params["conv1"], x, 2, 3)))
    x = lax.reduce_window(
        x, -jnp.inf, lax.max, (1, 3, 3, 1), (1, 2, 2, 1), [(0, 0), (1, 1), (1, 1), (0, 0)]
    )
    for name in sorted(k for k in params if k.startswith("stage")):
        p, s = params[name], stats[name]
        stride = 2 if name.endswith("block0") and not name.startswith("stage1") else 1
        out = jax.nn.relu(bn(p["bn1"], s["bn1"], conv(p["conv1"], x, 1, 0)))
        out = jax.nn.relu(bn(p["bn2"], s["bn2"], conv(p["conv2"], out, stride, 1)))
        out = bn(p["bn3"], s["bn3"], conv(p["conv3"], out, 1, 0))
        identity = x
        if "shortcut" in p:
            identity = bn(p["bn_shortcut"], s["bn_shortcut"], conv(p["shortcut"], x, stride, 0))
        x = jax.nn.relu(out + identity)
    x = x.mean(axis=(1, 2))
    return x @ params["out"]["kernel"] + params["out"]["bias"]


def test_forward_matches_torchvision_wiring():
    """With random batch norms, on 36x36 images, whose even sizes (36, 18) Flax's SAME would
    pad one more at the end than PyTorch's symmetric padding."""
    model = ImageNetResNet(num_classes=5, stages=(2, 1, 1, 1), width=4)
    x = jax.random.normal(jax.random.key(2), (2, 36, 36, 3))
    variables = model.init(jax.random.key(0), x, train=False)
    rng = np.random.default_rng(0)

    def randomize(path, leaf):
        shape, key = leaf.shape, path[-1].key
        if key == "var":
            return jnp.asarray(rng.uniform(0.5, 2.0, shape), jnp.float32)
        if key in ("mean", "bias"):
            return jnp.asarray(rng.normal(0.0, 0.5, shape), jnp.float32)
        return leaf

    variables = jax.tree_util.tree_map_with_path(randomize, variables)
    y = model.apply(variables, x, train=False)
    np.testing.assert_allclose(y, _reference(variables, x), rtol=1e-4, atol=1e-4)


@pytest.fixture(scope="module")
def initialized():
    """Both schemes' variables for a network of 16 filters (512 at the last stage)."""
    x = jnp.zeros((1, 32, 32, 3), jnp.float32)
    out = {}
    for scheme in ("open_lth", "torchvision"):
        model = ImageNetResNet(num_classes=1000, initializer=scheme, stages=(1, 1, 1, 1), width=16)
        out[scheme] = flat(model.init(jax.random.key(3), x, train=False)["params"])
    return out


def _kernel_std(params: dict, layer: str) -> tuple[float, int, int]:
    kernel = np.asarray(params[f"{layer}/kernel"])
    return (
        kernel.std(),
        math.prod(kernel.shape[:-1]),
        math.prod(kernel.shape[:-2]) * kernel.shape[-1],
    )


@pytest.mark.parametrize(
    "layer", ["stage4_block0/conv2", "stage4_block0/conv3", "stage4_block0/shortcut"]
)
def test_open_lth_init_is_kaiming_normal_fan_in(initialized, layer):
    """open_lth's model_init='kaiming_normal' redraws every conv N(0, 2 / fan_in)."""
    params = initialized["open_lth"]
    std, fan_in, fan_out = _kernel_std(params, layer)
    assert std == pytest.approx(math.sqrt(2 / fan_in), rel=0.02)
    if fan_in != fan_out:
        assert std != pytest.approx(math.sqrt(2 / fan_out), rel=0.2)
    # Untruncated: about 4.55% of a normal lies beyond two standard deviations.
    kernel = np.asarray(params[f"{layer}/kernel"])
    assert np.mean(np.abs(kernel) > 2 * std) == pytest.approx(0.0455, abs=0.01)


@pytest.mark.parametrize("layer", ["stage4_block0/conv1", "stage4_block0/conv3"])
def test_torchvision_init_is_kaiming_normal_fan_out(initialized, layer):
    std, fan_in, fan_out = _kernel_std(initialized["torchvision"], layer)
    assert fan_in != fan_out
    assert std == pytest.approx(math.sqrt(2 / fan_out), rel=0.02)


def test_batch_norm_init(initialized):
    for scheme, params in initialized.items():
        norms = {k: v for k, v in params.items() if k.split("/")[-2].startswith("bn")}
        scales = np.concatenate([v for k, v in norms.items() if k.endswith("/scale")])
        biases = np.concatenate([v for k, v in norms.items() if k.endswith("/bias")])
        # 16 in the stem; 1 + 1 + 4 + 4 times 16, 32, 64, 128 in the stages.
        assert scales.size == biases.size == 16 + 10 * (16 + 32 + 64 + 128)
        assert not biases.any(), scheme
        if scheme == "torchvision":
            assert (scales == 1).all()
        else:  # batchnorm_init='uniform': U[0, 1)
            assert scales.min() >= 0 and scales.max() < 1
            assert scales.mean() == pytest.approx(0.5, abs=0.03)
            assert scales.std() == pytest.approx(math.sqrt(1 / 12), abs=0.02)


def test_output_layer_init(initialized):
    bound = 1 / math.sqrt(512)
    for scheme, params in initialized.items():
        kernel, bias = np.asarray(params["out/kernel"]), np.asarray(params["out/bias"])
        assert kernel.shape == (512, 1000)
        # PyTorch's Linear bias: U(-1/sqrt(fan_in), 1/sqrt(fan_in)); open_lth keeps it.
        assert np.abs(bias).max() <= bound and bias.std() == pytest.approx(bound / 3**0.5, rel=0.1)
        if scheme == "open_lth":  # kaiming_normal_ on the Linear too
            assert kernel.std() == pytest.approx(math.sqrt(2 / 512), rel=0.02)
        else:  # PyTorch's Linear default
            assert np.abs(kernel).max() <= bound
            assert kernel.std() == pytest.approx(bound / 3**0.5, rel=0.02)


@pytest.mark.unit
def test_unknown_initializer_is_refused():
    model = ImageNetResNet(num_classes=10, initializer="glorot", **TINY)
    with pytest.raises(ValueError, match="open_lth, torchvision"):
        model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)), train=False)


@pytest.mark.unit
def test_no_dropout():
    with pytest.raises(ValueError, match="no dropout"):
        models.create("resnet50", 1000, dropout=0.1)
    assert imagenet_resnet.EXPANSION == 4
