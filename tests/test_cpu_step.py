"""The CPU's faster convolutional training step (issue 21) against the plain one, on tiny
networks: `ltcli.models.cpu_ops` (pooling, materialized block outputs) and the host loop's
unrolled steps. Both paths are forced, so the tests mean the same on any backend."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import assert_trained_under_mask

from ltcli.data import Arrays
from ltcli.models import cpu_ops
from ltcli.models.conv import ConvNet
from ltcli.models.resnet import ResNet
from ltcli.train.engine import Engine, Group, TrainConfig, to_device, unstack

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
    ids = engine._host_indices(cell, jnp.asarray(0, jnp.int32), data, evals)
    rows = []
    for period in range(evals):
        for k in range(EVERY):
            cell = step(
                engine, cell, jnp.asarray(period * EVERY + k, jnp.int32), ids[period, k], data
            )
        end = jnp.asarray((period + 1) * EVERY, jnp.int32)
        cell, row = engine._host_end(cell, end, data, 0)
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
        return engine.segment(group, 0, 1, data)
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


@pytest.mark.parametrize("name", sorted(TINY))
def test_the_cpu_step_matches_the_plain_one_and_keeps_pruned_weights_zero(data, name, monkeypatch):
    plain = trained(name, data, fast=False, unrolled=False, monkeypatch=monkeypatch)
    fast = trained(name, data, fast=True, unrolled=True, monkeypatch=monkeypatch)
    assert assert_same(fast, plain) <= 1e-5
    first = unstack(start(Engine(*TINY[name], "host")), 1)[0]
    assert_trained_under_mask(unstack(fast[0], 1)[0], first, "conv1")
