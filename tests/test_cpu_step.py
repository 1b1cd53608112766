"""The CPU's faster convolutional training step against the plain one, on tiny
networks: `ltcli.models.cpu_ops` (pooling, materialized block outputs, convolutions whose
weight gradient reads its input from memory and whose strided input gradient goes by
phases, batch norm) and the host loop's unrolled steps. Both paths are forced, so the tests
mean the same on any backend."""

from __future__ import annotations

from functools import partial

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from ltcli.data import Arrays
from ltcli.models import cpu_ops
from ltcli.models.conv import ConvNet
from ltcli.models.resnet import ResNet
from ltcli.science import pruning, scoring
from ltcli.train.device_data import to_device
from ltcli.train.engine import Engine, Group, unstack
from ltcli.train.feeders import HostLoop
from ltcli.train.recipes import TrainConfig

from helpers import assert_trained_under_mask

pytestmark = pytest.mark.unit

EVERY = 6
"""Steps per evaluation period: one unrolled call of four steps, then one of two."""
TINY = {
    "conv": (
        ConvNet(stages=((4, 4),), num_classes=4, hidden=(8,)),
        TrainConfig("adam", 3e-3, 8, 60, EVERY),
    ),
    "resnet": (
        ResNet(num_classes=4, widths=(4, 8), blocks_per_stage=1),
        TrainConfig("sgd", 0.1, 8, 60, EVERY, momentum=0.9, weight_decay=1e-4, augment=True),
    ),
}
TOLERANCE = {"rtol": 1e-5, "atol": 1e-6}
"""Float rounding: the paths may sum in other orders (in practice they agree exactly)."""


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 255, size=(120, 8, 8, 3), dtype=np.uint8)
    y = (x.reshape(120, -1)[:, :4].argmax(1)).astype(np.int32)
    return to_device(Arrays(x[:100], y[:100], x[100:], y[100:]), validation=10)


def start(engine: Engine) -> Group:
    params, stats = engine.init(jax.random.PRNGKey(0), (8, 8, 3))
    rng = np.random.default_rng(0)
    mask = jax.tree.map(lambda p: (rng.random(p.shape) > 0.5).astype(np.float32), params)
    params = jax.tree.map(lambda p, m: np.asarray(p) * m, params, mask)
    return engine.start([params], [stats], [mask], [jax.random.PRNGKey(1)])


def one_step_per_call(engine: Engine, group: Group, data, evals: int):
    """The host loop as it was before unrolling: each step its own jitted call."""
    step = jax.jit(Engine._step, static_argnums=(0,))
    cell = jax.tree.map(lambda x: x[0], group)._replace(rewind=None)
    ids = engine.period_indices(cell, jnp.asarray(0, jnp.int32), data, evals)
    rows = []
    for period in range(evals):
        for k in range(EVERY):
            cell = step(
                engine, cell, jnp.asarray(period * EVERY + k, jnp.int32), ids[period, k], data
            )
        end = jnp.asarray((period + 1) * EVERY, jnp.int32)
        cell, row = engine.end_of_period(cell, end, data, 0)
        rows.append(row)
    return jax.tree.map(lambda x: x[None], cell), jnp.stack(rows)[None]


def trained(name: str, data, fast: bool, unrolled: bool, monkeypatch):
    """A tiny network after one period in the host loop, the CPU layers on or off."""
    monkeypatch.setattr(cpu_ops, "on_cpu", lambda: fast)
    jax.clear_caches()  # equal engines share jitted programs, traced with the other layers
    model, cfg = TINY[name]
    engine = Engine(model, cfg, "host")
    group = start(engine)
    if unrolled:
        return HostLoop(data).segment(engine, group, 0, 1)
    return one_step_per_call(engine, group, data, 1)


def assert_same(a, b) -> float:
    """Asserts two (group, metrics) results agree to `TOLERANCE`; their largest difference."""
    worst = 0.0
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        x, y = np.asarray(x), np.asarray(y)
        np.testing.assert_allclose(x, y, **TOLERANCE)
        if x.dtype.kind == "f":
            worst = max(worst, float(np.max(np.abs(x - y), initial=0.0)))
    return worst


def test_max_pool_matches_flax_with_ties_and_odd_sizes(monkeypatch):
    monkeypatch.setattr(cpu_ops, "on_cpu", lambda: True)
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.integers(0, 3, (2, 6, 7, 3)), jnp.float32)  # ties in most windows
    g = jnp.asarray(rng.normal(size=(2, 3, 3, 3)), jnp.float32)
    y, back = jax.vjp(lambda x: nn.max_pool(x, (2, 2), strides=(2, 2)), x)
    fast_y, fast_back = jax.vjp(cpu_ops.max_pool_2x2, x)
    np.testing.assert_array_equal(fast_y, y)
    np.testing.assert_array_equal(fast_back(g)[0], back(g)[0])


def test_materialize_is_the_identity_both_ways(monkeypatch):
    monkeypatch.setattr(cpu_ops, "on_cpu", lambda: True)
    x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 3, 3, 4)), jnp.float32)
    x = x.at[0, 0, 0, 0].set(jnp.nan)
    y, back = jax.vjp(cpu_ops.materialize, x)
    np.testing.assert_array_equal(y, x)
    np.testing.assert_array_equal(back(2 * x)[0], 2 * x)


@pytest.mark.parametrize(
    ("kernel", "strides", "padding", "dilation", "groups"),
    [
        (3, 1, "SAME", 1, 1),
        (3, 2, "SAME", 1, 1),
        (1, 2, "VALID", 1, 1),
        (3, 2, "VALID", 1, 1),
        (3, 3, ((1, 0), (0, 2)), 1, 1),  # a phase whose stride-1 padding is negative
        (3, 1, ((2, 0), (1, 1)), 2, 1),
        (3, 1, "SAME", 1, 2),  # grouped: left to lax as it is
    ],
)
def test_conv_matches_lax_in_value_and_both_gradients(
    kernel, strides, padding, dilation, groups, monkeypatch
):
    monkeypatch.setattr(cpu_ops, "on_cpu", lambda: True)
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(3, 9, 7, 4)), jnp.float32)
    w = jnp.asarray(rng.normal(size=(kernel, kernel, 4 // groups, 5 * groups)), jnp.float32)
    finite = x
    x = x.at[0, 0, 0, 0].set(-jnp.inf)  # `_opaque`'s conditional must pass it on too

    def conv(op):
        def apply(x, w):
            return op(
                x,
                w,
                (strides, strides),
                padding,
                rhs_dilation=(dilation, dilation),
                dimension_numbers=("NHWC", "HWIO", "NHWC"),
                feature_group_count=groups,
            )

        return apply

    def kernel_loss(w):
        return conv(cpu_ops.conv_general_dilated)(x, w).sum()

    # the kernel's gradient goes through `_opaque`, a conditional, exactly where it should
    assert ("cond" in str(jax.make_jaxpr(jax.grad(kernel_loss))(w))) == (groups == 1)
    y, back = jax.vjp(conv(lax.conv_general_dilated), finite, w)
    fast_y, fast_back = jax.vjp(conv(cpu_ops.conv_general_dilated), finite, w)
    g = jnp.asarray(rng.normal(size=y.shape), jnp.float32)
    np.testing.assert_allclose(fast_y, y, **TOLERANCE)
    for fast, plain in zip(fast_back(g), back(g), strict=True):
        np.testing.assert_allclose(fast, plain, **TOLERANCE)
    kernel_grad = jax.vjp(conv(cpu_ops.conv_general_dilated), x, w)[1](g)[1]
    plain_grad = jax.vjp(conv(lax.conv_general_dilated), x, w)[1](g)[1]
    np.testing.assert_array_equal(kernel_grad, plain_grad)


@pytest.mark.parametrize("fast", [True, False])
def test_a_strided_input_gradient_convolves_without_dilating_the_gradient(fast, monkeypatch):
    """On the CPU the input gradient of a strided convolution is stride-1 convolutions, one
    per phase, not one convolution over the output gradient with zeros inserted."""
    monkeypatch.setattr(cpu_ops, "on_cpu", lambda: True)
    op = cpu_ops.conv_general_dilated if fast else lax.conv_general_dilated
    x = jnp.ones((2, 8, 8, 3))
    w = jnp.ones((3, 3, 3, 4))

    def input_loss(x):
        return op(x, w, (2, 2), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")).sum()

    assert ("lhs_dilation=(2, 2)" in str(jax.make_jaxpr(jax.grad(input_loss))(x))) != fast


@pytest.mark.parametrize("cpu", [True, False])
@pytest.mark.parametrize("kwargs", [{}, {"use_bias": False}])  # the second is left to Flax
def test_batch_norm_is_flaxs_in_variables_statistics_output_and_gradients(cpu, kwargs, monkeypatch):
    monkeypatch.setattr(cpu_ops, "on_cpu", lambda: cpu)
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(2.0, 3.0, size=(6, 5, 5, 7)), jnp.float32)
    r = jnp.asarray(rng.normal(size=x.shape), jnp.float32)
    ours = cpu_ops.BatchNorm(momentum=0.9, epsilon=1e-5, **kwargs)
    flax = nn.BatchNorm(momentum=0.9, epsilon=1e-5, **kwargs)
    variables = flax.init(jax.random.key(0), x, use_running_average=False)
    assert jax.tree.map(jnp.shape, ours.init(jax.random.key(0), x, use_running_average=False)) == (
        jax.tree.map(jnp.shape, variables)
    )
    variables = jax.tree.map(lambda v: v + rng.uniform(0.5, 1.5, v.shape), variables)

    def loss(module, variables, x):
        y, stats = module.apply(variables, x, use_running_average=False, mutable=["batch_stats"])
        return (y * r).sum(), (y, stats)

    for module_grads, flax_grads in zip(
        jax.grad(partial(loss, ours), (0, 1), has_aux=True)(variables, x),
        jax.grad(partial(loss, flax), (0, 1), has_aux=True)(variables, x),
        strict=True,
    ):
        for a, b in zip(jax.tree.leaves(module_grads), jax.tree.leaves(flax_grads), strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(
        ours.apply(variables, x, use_running_average=True),
        flax.apply(variables, x, use_running_average=True),
        rtol=1e-5,
        atol=1e-5,
    )


def test_second_derivatives_go_through_the_cpu_layers(monkeypatch):
    """GraSP takes Hessian-vector products: forward mode over the gradient."""
    monkeypatch.setattr(cpu_ops, "on_cpu", lambda: True)
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(2, 6, 6, 3)), jnp.float32)
    w = jnp.asarray(rng.normal(size=(3, 3, 3, 4)), jnp.float32)
    v = jnp.asarray(rng.normal(size=w.shape), jnp.float32)

    def hvp(conv, keep):
        def loss(w):
            y = conv(x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
            return (jnp.tanh(keep(y)) ** 2).sum()

        return jax.jvp(jax.grad(loss), (w,), (v,))[1]

    fast = hvp(cpu_ops.conv_general_dilated, cpu_ops.materialize)
    np.testing.assert_allclose(fast, hvp(lax.conv_general_dilated, lambda y: y), **TOLERANCE)


@pytest.mark.system
def test_grasp_scores_a_resnet_through_the_cpu_layers(monkeypatch):
    """Before the CPU layers had custom JVPs, forward mode refused them, and GraSP with it."""
    monkeypatch.setattr(cpu_ops, "on_cpu", lambda: True)
    model, _ = TINY["resnet"]
    variables = model.init(jax.random.key(0), jnp.zeros((1, 8, 8, 3)), train=False)
    x = np.random.default_rng(0).normal(size=(6, 8, 8, 3)).astype(np.float32)
    (mask,) = scoring.masks_at_init(
        "grasp",
        model,
        variables,
        [50],
        image_shape=(8, 8, 3),
        batch_x=x,
        batch_y=np.arange(6) % 4,
        key=jax.random.key(1),
        mode="train",
    )
    kept, total = np.sum([[k, t] for k, t in pruning.counts(mask).values()], axis=0)
    assert kept == round(0.5 * total)


@pytest.mark.integration
@pytest.mark.parametrize("name", sorted(TINY))
def test_the_cpu_step_matches_the_plain_one_and_keeps_pruned_weights_zero(data, name, monkeypatch):
    plain = trained(name, data, fast=False, unrolled=False, monkeypatch=monkeypatch)
    fast = trained(name, data, fast=True, unrolled=True, monkeypatch=monkeypatch)
    assert assert_same(fast, plain) <= 1e-5
    first = unstack(start(Engine(*TINY[name], "host")), 1)[0]
    assert_trained_under_mask(unstack(fast[0], 1)[0], first, "conv1")
