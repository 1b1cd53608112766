"""Convolutional networks' rows: Conv-2 and ResNet-20 by grouping, lt's masked step against
the same step written in plain Flax and optax, and ResNet-50 on a GPU."""

from __future__ import annotations

import dataclasses
import time
from functools import partial

import click
import flax.linen as nn
import jax

from benchmarks.common import OPEN_LTH_RESNET_GPU, Row, dense_group, synthetic, throughput
from ltcli import models
from ltcli.train.device_data import DeviceData, standardized, to_device
from ltcli.train.engine import Engine
from ltcli.train.feeders import OnDevice
from ltcli.train.grouping import pick
from ltcli.train.recipes import TrainConfig


def conv_rows(quick: bool) -> list[Row]:
    """Training steps/s of Conv-2 and ResNet-20 at the paper's batch sizes: one cell alone,
    then each of two cells with the grouping the engine picks and with the other. The
    evaluation sets are tiny (100 images), so the figures are training speed
    (no evaluation)."""
    on_gpu = jax.default_backend() == "gpu"
    data = to_device(synthetic((32, 32, 3), 6100, 100), 100)
    resnet_target = 3.5 * OPEN_LTH_RESNET_GPU if on_gpu else None
    rows = []
    setups = {
        "conv2": TrainConfig("adam", 2e-4, 60, 20000, 1),
        "resnet20": TrainConfig(
            "sgd", 0.1, 128, 30000, 1, momentum=0.9, weight_decay=1e-4, augment=True
        ),
    }
    for name, cfg in setups.items():
        engine = Engine(models.create(name, 10), cfg, "vmap", 1)
        lone = pick(
            name,
            engine,
            1,
            (32, 32, 3),
            partial(dense_group, engine, (32, 32, 3), 1),
            OnDevice(data),
        )
        period = dataclasses.replace(cfg, eval_every=1000 if on_gpu else 5)
        _, rate = throughput(name, period, data, (32, 32, 3), 1, lone, 1, repeats=1)
        target = resnet_target if name == "resnet20" else None
        rows.append(Row(f"{name}, 1 cell", rate, "steps/s", target))
        picked = pick(
            name,
            engine,
            2,
            (32, 32, 3),
            partial(dense_group, engine, (32, 32, 3), 2),
            OnDevice(data),
        )
        other = "vmap" if picked == "serial" else "serial"
        for grouping, label in ((picked, "picked"), (other, "other")):
            # On a CPU the other grouping runs convolutions in a loop, at seconds a step.
            steps = 10 if grouping == picked and not quick else 2
            period = dataclasses.replace(cfg, eval_every=100 * steps if on_gpu else steps // 2)
            _, rate = throughput(name, period, data, (32, 32, 3), 2, grouping, 1, repeats=1)
            figure = f"{name}, 2 cells, {grouping} ({label}), per cell"
            rows.append(Row(figure, rate / 2, "steps/s"))
    return rows


class _PlainConv2(nn.Module):
    """Conv-2 as a plain Flax user writes it (flax's layers, initializers and max pool)."""

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        x = nn.relu(nn.Conv(64, (3, 3))(x))
        x = nn.relu(nn.Conv(64, (3, 3))(x))
        x = nn.max_pool(x, (2, 2), strides=(2, 2)).reshape((x.shape[0], -1))
        x = nn.relu(nn.Dense(256)(x))
        return nn.Dense(10)(nn.relu(nn.Dense(256)(x)))


class _PlainBlock(nn.Module):
    features: int
    stride: int

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        norm = partial(nn.BatchNorm, use_running_average=not train, momentum=0.9)
        strides = (self.stride, self.stride)
        y = nn.Conv(self.features, (3, 3), strides, use_bias=False)(x)
        y = norm()(nn.Conv(self.features, (3, 3), use_bias=False)(nn.relu(norm()(y))))
        if x.shape != y.shape:
            x = norm()(nn.Conv(self.features, (1, 1), strides, use_bias=False)(x))
        return nn.relu(x + y)


class _PlainResNet20(nn.Module):
    """ResNet-20 as a plain Flax user writes it."""

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        x = nn.Conv(16, (3, 3), use_bias=False)(x)
        x = nn.relu(nn.BatchNorm(use_running_average=not train, momentum=0.9)(x))
        for s, width in enumerate((16, 32, 64)):
            for b in range(3):
                x = _PlainBlock(width, 2 if s and not b else 1)(x, train)
        return nn.Dense(10)(x.mean(axis=(1, 2)))


def plain_jax_conv_step(name: str, cfg: TrainConfig, data: DeviceData, steps: int) -> float:
    """Steps/s of a plain JAX masked training step of Conv-2 or ResNet-20 (`_PlainConv2`,
    `_PlainResNet20`, plain optax, half of every weight pruned, gradients and weights
    masked): on a CPU one jitted step per call (in `lax.scan` XLA:CPU's convolutions run
    many times slower), elsewhere `steps` steps in one scanned call; the fastest of two
    timed runs of `steps` steps after a warm-up. It runs under the process's XLA flags, as
    lt does, so lt is compared with what plain JAX does on the same machine and setup."""
    import jax.numpy as jnp
    import optax

    model = {"conv2": _PlainConv2, "resnet20": _PlainResNet20}[name]()
    if cfg.optimizer == "adam":
        tx = optax.adam(cfg.lr)
    else:
        sgd = optax.sgd(cfg.lr, momentum=cfg.momentum)
        tx = optax.chain(optax.add_decayed_weights(cfg.weight_decay), sgd)
    variables = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3)))
    params, stats = variables["params"], variables.get("batch_stats", {})
    keys = iter(jax.random.split(jax.random.PRNGKey(1), len(jax.tree.leaves(params))))
    mask = jax.tree.map(lambda p: jax.random.bernoulli(next(keys), 0.5, p.shape) * 1.0, params)
    params = jax.tree.map(jnp.multiply, params, mask)
    n = data.y_train.shape[0]

    def loss(params, stats, x, y):
        if not stats:
            logits = model.apply({"params": params}, x, train=True)
        else:
            logits, new = model.apply(
                {"params": params, "batch_stats": stats}, x, train=True, mutable=["batch_stats"]
            )
            stats = new["batch_stats"]
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(), stats

    def step(state, key):
        params, stats, opt_state = state
        ids = jax.random.randint(key, (cfg.batch_size,), 0, n)
        x = standardized(data.x_train[ids], data)
        grads, stats = jax.grad(loss, has_aux=True)(params, stats, x, data.y_train[ids])
        grads = jax.tree.map(jnp.multiply, grads, mask)
        updates, opt_state = tx.update(grads, opt_state, params)
        params = jax.tree.map(jnp.multiply, optax.apply_updates(params, updates), mask)
        return (params, stats, opt_state), None

    if jax.default_backend() == "cpu":
        one = jax.jit(lambda state, key: step(state, key)[0], donate_argnums=(0,))

        def run(state, key):
            for k in jax.random.split(key, steps):
                state = one(state, k)
            return state
    else:

        @partial(jax.jit, donate_argnums=(0,))
        def run(state, key):
            return jax.lax.scan(step, state, jax.random.split(key, steps))[0]

    state = run((params, stats, tx.init(params)), jax.random.PRNGKey(2))
    jax.block_until_ready(state)
    fastest = float("inf")
    for repeat in range(2):
        started = time.perf_counter()
        state = run(state, jax.random.PRNGKey(3 + repeat))
        jax.block_until_ready(state)
        fastest = min(fastest, time.perf_counter() - started)
    return steps / fastest


def conv_step_rows(quick: bool) -> list[Row]:
    """One masked training step of Conv-2 (batch 60, Adam) and of
    ResNet-20 (batch 128, SGD with momentum, no augmentation so that both do the same
    work) in lt's engine, one cell in the grouping lt picks (on a CPU its host loop),
    against `plain_jax_conv_step` on the same machine. PyTorch on 2 CPU threads did
    5.6-9.9 (Conv-2) and 2.8-4.3 (ResNet-20) steps/s on the 2-core development machine."""
    on_gpu = jax.default_backend() == "gpu"
    data = to_device(synthetic((32, 32, 3), 6100, 100), 100)
    steps = (200 if on_gpu else 8) if quick else (1000 if on_gpu else 20)
    setups = {
        "conv2": ("Conv-2, batch 60, Adam", TrainConfig("adam", 2e-4, 60, 20000, steps)),
        "resnet20": (
            "ResNet-20, batch 128, SGD momentum",
            TrainConfig("sgd", 0.1, 128, 30000, steps, momentum=0.9, weight_decay=1e-4),
        ),
    }
    rows = []
    for name, (label, cfg) in setups.items():
        engine = Engine(models.create(name, 10), cfg, "vmap", 1)
        fresh = partial(dense_group, engine, (32, 32, 3), 1)
        grouping = pick(name, engine, 1, (32, 32, 3), fresh, OnDevice(data))
        _, rate = throughput(name, cfg, data, (32, 32, 3), 1, grouping, 1, repeats=2)
        plain = plain_jax_conv_step(name, cfg, data, steps)
        rows += [
            Row(f"{label}, lt engine step ({grouping})", rate, "steps/s"),
            Row("  plain JAX step, same work, this machine", plain, "steps/s"),
            Row("  lt / plain JAX", rate / plain, "x", 1.0),
        ]
    return rows


def resnet50_rows(quick: bool) -> list[Row]:
    """ResNet-50 training images/s at batch 256 on 224x224 images already on the device,
    fp32 and bf16 (one cell, synthetic data): on a GPU only (seconds a step on a CPU)."""
    if jax.default_backend() != "gpu":
        click.echo("resnet50 rows: skipped (no GPU)", err=True)
        return []
    data = to_device(synthetic((224, 224, 3), 2560, 10), 10)
    rows = []
    for precision in ("fp32", "bf16"):
        cfg = TrainConfig(
            "sgd", 0.1, 256, 100000, 10 if quick else 50, momentum=0.9, precision=precision
        )
        _, rate = throughput("resnet50", cfg, data, (224, 224, 3), 1, "vmap", 1, repeats=1)
        rows.append(Row(f"resnet50 training, batch 256, {precision}", rate * 256, "images/s"))
    return rows
