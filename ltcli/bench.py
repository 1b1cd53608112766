"""``make bench``: throughput and compile figures of this machine, against PERFORMANCE.md.

Prints one table (figure, lt's value, target, met?) and writes it to ``results/bench.json``.
Models train on synthetic data of the real shapes (speed does not depend on pixel values),
so the bench needs no data set; the ``lt run smoke`` rows need Fashion-MNIST and are
skipped without it. Run as ``python -m ltcli.bench [--quick] [--only SECTION]``, SECTION
one of lenet, deterministic, levels, conv, convstep, smoke, stream, resnet50.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import click
import flax.linen as nn
import jax
import numpy as np

from ltcli import models
from ltcli.core import atomic, paths
from ltcli.data import Arrays, DataSource
from ltcli.experiment import descriptor, spec
from ltcli.experiment.plan import Plan, Progress
from ltcli.results.report import format_table
from ltcli.science import pruning
from ltcli.storage.store import Store
from ltcli.train import runner
from ltcli.train.device_data import DeviceData, standardized, to_device
from ltcli.train.engine import Engine, Group
from ltcli.train.feeders import OnDevice
from ltcli.train.grouping import pick
from ltcli.train.recipes import TrainConfig

OPEN_LTH_CPU = 130.0
"""open_lth's LeNet steps/s on the 2-core CPU, evaluation once per epoch (PERFORMANCE.md)."""
OPEN_LTH_RESNET_GPU = 108.0
"""open_lth's best ResNet-20 steps/s on one H200, 8 loader workers (PERFORMANCE.md)."""


@dataclasses.dataclass
class Row:
    figure: str
    value: float | None
    unit: str
    target: float | None = None
    higher_is_better: bool = True

    @property
    def met(self) -> str:
        if self.target is None or self.value is None:
            return "-"
        ok = self.value >= self.target if self.higher_is_better else self.value <= self.target
        return "yes" if ok else "NO"


def synthetic(shape: tuple[int, int, int], train: int, test: int) -> Arrays:
    rng = np.random.default_rng(0)
    return Arrays(
        rng.integers(0, 255, (train, *shape), dtype=np.uint8),
        rng.integers(0, 10, train, dtype=np.int32),
        rng.integers(0, 255, (test, *shape), dtype=np.uint8),
        rng.integers(0, 10, test, dtype=np.int32),
    )


def dense_group(engine: Engine, shape: tuple[int, int, int], cells: int) -> Group:
    """`cells` dense cells of one initialization, each with its own data order."""
    params, stats = engine.init(jax.random.PRNGKey(0), shape)
    mask = pruning.dense_mask(params)
    keys = [jax.random.PRNGKey(i) for i in range(cells)]
    return engine.start([params] * cells, [stats] * cells, [mask] * cells, keys)


def throughput(
    model_name: str,
    cfg: TrainConfig,
    data: DeviceData,
    shape: tuple[int, int, int],
    cells: int,
    grouping: str,
    evals: int,
    repeats: int = 3,
    deterministic: bool = False,
) -> tuple[float, float]:
    """(compile-and-first-call seconds, cell-steps per second) of `cells` cells trained
    together for `evals` evaluation periods per call: the fastest of `repeats` timed calls
    after a warm-up call (a shared machine's noise only ever slows a call down)."""
    engine = Engine(models.create(model_name, 10), cfg, grouping, evals, deterministic)
    group = dense_group(engine, shape, cells)
    started = time.perf_counter()
    group, metrics = engine.segment(group, 0, evals, data)
    metrics.block_until_ready()
    first = time.perf_counter() - started
    step, fastest = evals * cfg.eval_every, float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        group, metrics = engine.segment(group, step, evals, data)
        metrics.block_until_ready()
        fastest = min(fastest, time.perf_counter() - started)
        step += evals * cfg.eval_every
    return first, cells * evals * cfg.eval_every / fastest


def plain_jax_lenet(data: DeviceData, eval_every: int, periods: int) -> float:
    """Steps/s of a bare JAX LeNet-300-100 loop, the PERFORMANCE.md reference: data on the
    device, a permutation per period, `lax.scan` over steps, 15K-example evaluation after
    each period, no masks, no store; the fastest of three calls. Measured here so lt is
    compared on the same machine."""
    import jax.numpy as jnp
    import optax

    model = models.create("lenet300", 10)
    tx = optax.adam(1.2e-3)
    n = data.y_train.shape[0]
    x_eval = (
        jnp.concatenate(
            [data.x_val.reshape(-1, 28, 28, 1), data.x_test.reshape(-1, 28, 28, 1)]
        ).astype(jnp.float32)
        / 255
    )
    y_eval = jnp.concatenate([data.y_val.reshape(-1), data.y_test.reshape(-1)])

    def loss(params, x, y):
        logits = model.apply({"params": params}, x)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    @jax.jit
    def run(params, opt_state, key):
        def period(carry, i):
            ids = jnp.tile(jax.random.permutation(jax.random.fold_in(key, i), n), 2)
            ids = ids[: eval_every * 60].reshape(eval_every, 60)

            def step(carry, idx):
                params, opt_state = carry
                x = data.x_train[idx].astype(jnp.float32) / 255
                grads = jax.grad(loss)(params, x, data.y_train[idx])
                updates, opt_state = tx.update(grads, opt_state, params)
                return (optax.apply_updates(params, updates), opt_state), None

            carry, _ = jax.lax.scan(step, carry, ids)
            logits = model.apply({"params": carry[0]}, x_eval)
            return carry, jnp.mean(jnp.argmax(logits, -1) == y_eval)

        return jax.lax.scan(period, (params, opt_state), jnp.arange(periods))

    params = model.init(jax.random.PRNGKey(0), x_eval[:1])["params"]
    carry, acc = run(params, tx.init(params), jax.random.PRNGKey(1))
    acc.block_until_ready()
    fastest = float("inf")
    for repeat in range(3):
        started = time.perf_counter()
        carry, acc = run(*carry, jax.random.PRNGKey(2 + repeat))
        acc.block_until_ready()
        fastest = min(fastest, time.perf_counter() - started)
    return periods * eval_every / fastest


def lenet_rows(quick: bool) -> list[Row]:
    on_gpu = jax.default_backend() == "gpu"
    data = to_device(synthetic((28, 28, 1), 60000, 10000), 5000)
    rows = []

    def lenet(eval_every: int, cells: int, evals: int) -> tuple[float, float]:
        cfg = TrainConfig("adam", 1.2e-3, 60, 50000, eval_every)
        return throughput("lenet300", cfg, data, (28, 28, 1), cells, "vmap", evals)

    periods = 50 if on_gpu else 10
    first, rate = lenet(100, 1, periods)
    plain = plain_jax_lenet(data, 100, periods)
    rows += [
        Row("LeNet, 1 cell, eval every 100 it", rate, "steps/s", 18000 if on_gpu else 550),
        Row("  plain JAX loop, same work, this machine", plain, "steps/s"),
        Row("  lt / plain JAX", rate / plain, "x", 0.85),
        Row("LeNet JIT compile (first call less its steps)", first - periods * 100 / rate, "s"),
    ]
    _, rate = lenet(1000, 1, periods // 10)
    plain = plain_jax_lenet(data, 1000, periods // 10)
    rows += [
        Row(
            "LeNet, 1 cell, eval every 1,000 it (epoch)",
            rate,
            "steps/s",
            None if on_gpu else 8 * OPEN_LTH_CPU,
        ),
        Row("  plain JAX loop, same work, this machine", plain, "steps/s"),
        Row("  lt / plain JAX", rate / plain, "x", 0.85),
    ]
    if on_gpu:
        sizes = (1, 5, 25) if quick else (1, 5, 25, 125)
    else:
        sizes = (1, 2, 5) if quick else (1, 2, 5, 25)
    for cells in sizes:
        _, rate = lenet(100, cells, periods if on_gpu or cells < 5 else 2)
        rows.append(Row(f"LeNet, {cells} cells vmapped, eval every 100 it", rate, "cell-steps/s"))
    return rows


def deterministic_rows(quick: bool) -> list[Row]:
    """What ``--deterministic`` costs for LeNet: each cell as its own one-cell program in a
    loop (``serial``, a lone cell too), against the default (a lone cell's own program;
    groups vmapped)."""
    on_gpu = jax.default_backend() == "gpu"
    data = to_device(synthetic((28, 28, 1), 60000, 10000), 5000)
    cfg = TrainConfig("adam", 1.2e-3, 60, 50000, 100)
    periods = 50 if on_gpu else (2 if quick else 5)
    rows = []
    for cells in (1, 25) if on_gpu else (1, 5):
        shape = (28, 28, 1)
        _, fast = throughput("lenet300", cfg, data, shape, cells, "vmap", periods)
        _, exact = throughput("lenet300", cfg, data, shape, cells, "serial", periods, 3, True)
        rows += [
            Row(f"LeNet, {cells} cells, --deterministic", exact, "cell-steps/s"),
            Row("  default (vmap / lone program), same work", fast, "cell-steps/s"),
            Row("  deterministic / default", exact / fast, "x"),
        ]
    return rows


def _mnist_like() -> DataSource:
    arrays = synthetic((28, 28, 1), 60000, 10000)
    return DataSource("mnist", "synthetic", 60000, (28, 28, 1), 10, "memory", lambda: arrays)


def _protocol_run(rounds: int, iterations: int, store: Path) -> tuple[list[dict], float]:
    """Runs LeNet's protocol (5 replicates x ticket + reinit:3 + random:1) on synthetic
    MNIST-shaped data; returns each level's wall and training seconds, and the total."""
    overrides = {
        "train.iterations": iterations,
        "run.rounds": rounds,
        "run.replicates": 5,
        "run.controls": "reinit:3,random:1",
    }
    loaded = spec.apply_overrides(spec.load("mnist-lenet"), overrides)
    source = _mnist_like()
    desc = descriptor.resolve(loaded, source)
    Store(store).save_run(desc, "bench", None)
    levels: list[dict] = []

    class Timer(Progress):
        def level(self, level, cells, total_steps, start):
            levels.append({"level": level, "cells": len(cells), "start": time.perf_counter()})

        def finish(self):
            levels[-1]["training"] = time.perf_counter() - levels[-1]["start"]

    run = runner.Runner(Store(store), desc, source, Timer())
    train_level = run.train_level

    def timed(level: int, cells: list) -> None:
        started = time.perf_counter()
        train_level(level, cells)
        levels[-1]["wall"] = time.perf_counter() - started

    run.train_level = timed
    started = time.perf_counter()
    run.run(Plan(rounds, 5, "reinit:3,random:1"))
    return levels, time.perf_counter() - started


def level_rows(quick: bool) -> list[Row]:
    """Issue 16's figures: the time a level of 25 LeNet cells spends outside training
    (pruning, checks, stacking, storing) once its programs are compiled, and the LeNet
    protocol end to end in cell-steps per second, store and metrics included."""
    on_gpu = jax.default_backend() == "gpu"
    with tempfile.TemporaryDirectory() as tmp:
        levels, _ = _protocol_run(2 if quick else 4, 100, Path(tmp) / "overhead")
        later = [lv["wall"] - lv["training"] for lv in levels[2:]]
        rounds, iterations = (20, 50000) if on_gpu and not quick else (1, 2000)
        protocol, seconds = _protocol_run(rounds, iterations, Path(tmp) / "protocol")
    cell_steps = sum(lv["cells"] for lv in protocol) * iterations
    return [
        Row(
            "per-level overhead, 25 LeNet cells, levels 2+", float(np.mean(later)), "s", 0.5, False
        ),
        Row(
            f"LeNet protocol, {rounds + 1} levels at {iterations:,} it, 5 replicates x 5 "
            "members, end to end",
            cell_steps / seconds,
            "cell-steps/s",
        ),
        Row("  its wall time", seconds, "s", 120.0 if on_gpu and not quick else None, False),
    ]


def conv_rows(quick: bool) -> list[Row]:
    """Training steps/s of Conv-2 and ResNet-20 at the paper's batch sizes: one cell alone,
    then each of two cells with the grouping the engine picks and with the other. The
    evaluation sets are tiny (100 images), so the figures are training speed, as
    PERFORMANCE.md's "no evaluation" rows."""
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
    """Issue 21's figures: one masked training step of Conv-2 (batch 60, Adam) and of
    ResNet-20 (batch 128, SGD with momentum, no augmentation so that both do the same
    work) in lt's engine, one cell in the grouping lt picks (on a CPU its host loop),
    against `plain_jax_conv_step` on the same machine. PyTorch on 2 CPU threads did
    5.6-9.9 (Conv-2) and 2.8-4.3 (ResNet-20) steps/s on the 2-core machine of the issue."""
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


def smoke_rows() -> list[Row]:
    """Wall time of `lt run smoke` in a fresh process: cold (empty store and compile cache)
    and warm (a rerun with nothing to train)."""
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ, LT_CACHE_DIR=str(Path(tmp) / "cache"))
        command = [sys.executable, "-m", "ltcli", "run", "smoke", "--store", str(Path(tmp) / "s")]
        times = []
        for _ in range(2):
            started = time.perf_counter()
            done = subprocess.run(command, env=env, capture_output=True, text=True)
            times.append(time.perf_counter() - started)
            if done.returncode != 0:
                click.echo(f"lt run smoke skipped: {done.stderr.strip()}", err=True)
                return []
    return [
        Row("lt run smoke, cold process", times[0], "s", None, False),
        Row("lt run smoke, rerun (nothing to train)", times[1], "s", 2.0, False),
    ]


def _jpeg_folder(root: Path, count: int) -> Path:
    """An ImageNet-layout folder of `count` JPEGs of ImageNet's typical size (about 500x375,
    quality 90), 2 classes."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, n in (("train", count), ("val", 2)):
        for c in range(2):
            folder = root / split / f"n{c:08d}"
            folder.mkdir(parents=True)
            for i in range(n // 2):
                h, w = int(rng.integers(330, 420)), int(rng.integers(450, 550))
                smooth = rng.integers(0, 255, (h // 8 + 1, w // 8 + 1, 3)).astype(np.uint8)
                pixels = np.kron(smooth, np.ones((8, 8, 1), np.uint8))[:h, :w]
                Image.fromarray(pixels).save(folder / f"{i}.JPEG", quality=90)
    return root


def stream_rows(quick: bool) -> list[Row]:
    """Images/s of lt's streaming loader (decode, random-resized crop to 224 and flip, in
    grain worker processes) by worker count, against the floor: a plain PIL loop over the
    same files doing the same work in one process."""
    from ltcli.data import imagenet
    from ltcli.data import stream as host

    count = 256 if quick else 1024
    with tempfile.TemporaryDirectory() as tmp:
        os.environ.setdefault("LT_CACHE_DIR", str(Path(tmp) / "cache"))
        root = _jpeg_folder(Path(tmp) / "imagenet", count)
        splits = imagenet.locate(str(root), None).streamed()
        transform = splits.train_transform
        started = time.perf_counter()
        for i in range(len(splits.train)):
            image, _ = splits.train[i]
            transform(image, np.random.default_rng(i))
        rows = [
            Row(
                "JPEG decode + crop, plain PIL loop",
                count / (time.perf_counter() - started),
                "images/s",
            )
        ]
        batch = 32
        ids = np.arange(count - count % batch).reshape(-1, batch)
        records = np.stack([ids, ids], -1)
        for workers in (0, 1, 2, 4):
            read = host.batches(splits.train, records, (224, 224, 3), workers, transform, True)
            next(read)  # the workers are up: what follows is the steady state
            started = time.perf_counter()
            images = sum(len(x) for x, _ in read)
            rate = images / (time.perf_counter() - started)
            rows.append(Row(f"lt streaming, {workers} workers", rate, "images/s"))
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


def _number(value: float | None) -> str:
    """Three significant digits, thousands separated: 18,000, 535, 2.41, 0.0412."""
    if value is None:
        return "-"
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"


SECTIONS: dict[str, Callable[[bool], list[Row]]] = {
    "lenet": lenet_rows,
    "deterministic": deterministic_rows,
    "levels": level_rows,
    "conv": conv_rows,
    "convstep": conv_step_rows,
    "smoke": lambda quick: smoke_rows(),
    "stream": stream_rows,
    "resnet50": resnet50_rows,
}


@click.command()
@click.option("--quick", is_flag=True, help="Fewer and shorter measurements.")
@click.option(
    "--only",
    type=click.Choice(sorted(SECTIONS)),
    multiple=True,
    help="Measure only these sections (repeatable); all by default.",
)
@click.option(
    "--json-out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("results/bench.json"),
    show_default=True,
)
def main(quick: bool, only: tuple[str, ...], json_out: Path) -> None:
    """Measure lt's speed on this machine and compare it with the targets."""
    paths.request_fast_cpu_convolutions()  # as lt run does; before JAX starts its backend
    device = f"{jax.default_backend()}: {jax.devices()[0].device_kind}"
    click.echo(f"device {device}, {os.cpu_count()} CPU cores", err=True)
    rows = [row for name in dict.fromkeys(only or SECTIONS) for row in SECTIONS[name](quick)]
    table = [
        [
            r.figure,
            _number(r.value),
            r.unit,
            _number(r.target),
            r.met,
        ]
        for r in rows
    ]
    click.echo(format_table(["figure", "lt", "unit", "target", "met"], table))
    atomic.write_json(json_out, {"device": device, "rows": [dataclasses.asdict(r) for r in rows]})
    click.echo(f"wrote {json_out}", err=True)


if __name__ == "__main__":
    main()
