"""LeNet-300-100's rows: lt's training speed against a bare JAX loop doing the same work,
by evaluation period and by number of vmapped cells, and what ``--deterministic`` costs."""

from __future__ import annotations

import time

import jax

from benchmarks.common import OPEN_LTH_CPU, Row, synthetic, throughput
from ltcli import models
from ltcli.train.device_data import DeviceData, to_device
from ltcli.train.recipes import TrainConfig


def plain_jax_lenet(data: DeviceData, eval_every: int, periods: int) -> float:
    """Steps/s of a bare JAX LeNet-300-100 loop, the reference lt is held to: data on the
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
