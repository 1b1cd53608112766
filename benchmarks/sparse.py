"""Sparse training's mask updates against a fixed mask: one cell of SET or RigL (an update
every 100 steps, inside the compiled loop) and one static cell of the same network and
density, trained by lt's engine for the same steps; the update's cost is the difference."""

from __future__ import annotations

import time

import jax
import numpy as np

from benchmarks.common import Row, synthetic
from ltcli import models
from ltcli.science import pruning, sparse_training
from ltcli.train.device_data import to_device
from ltcli.train.engine import Engine
from ltcli.train.feeders import HostLoop, OnDevice
from ltcli.train.grouping import needs_host_loop
from ltcli.train.mask_updates import MaskUpdates
from ltcli.train.recipes import TrainConfig

EVERY = 100
"""Δt: steps between mask updates (the RigL paper's and lt's default)."""
DENSITY = 10.0
"""Percent of weights the cells keep."""
OVERHEAD_TARGET = 10.0
"""An update every 100 steps may cost at most this percent of the step time (issue 33)."""


def _trainer(name: str, shape: tuple, cfg: TrainConfig, method: str | None, periods: int):
    """A function that trains one cell at `DENSITY` for `periods` x `EVERY` more steps and
    returns the seconds it took: fixed mask (`method` None), or `method`'s updates at the
    first step of every period. Compiled (one warm-up segment) before it returns."""
    model = models.create(name, 10)
    data = to_device(synthetic(shape, 2000, 100), 100)
    host = needs_host_loop(models.get(name).kinds, jax.default_backend())
    feeder = (HostLoop if host else OnDevice)(data)
    params, stats = Engine(model, cfg).init(jax.random.PRNGKey(0), shape)
    flat = pruning.flatten(params)
    shapes = {n: np.shape(v) for n, v in flat.items() if pruning.layer_kind(n)}
    budget = sparse_training.budget_counts(shapes, list(shapes), DENSITY, "uniform")
    rng = np.random.default_rng(0)
    mask = pruning.flatten(pruning.dense_mask(params))
    for layer, keep in budget.items():
        mask[layer] = sparse_training.random_mask(shapes[layer], keep, rng)
    mask = pruning.unflatten(mask)
    masked = jax.tree.map(lambda p, m: np.asarray(p) * m, params, mask)
    updates, schedules = None, None
    if method is not None:
        end = cfg.iterations
        steps = sparse_training.update_steps(method, 0, end, EVERY)
        sizes = {n: int(np.prod(s)) for n, s in shapes.items()}
        options = {"alpha": 0.3, "start": 0, "end": end, "anneal": "cosine"}
        schedules = [sparse_training.schedule_table(method, sizes, budget, steps, **options)]
        updates = MaskUpdates.of(method, steps, EVERY, sizes, schedules)
    engine = Engine(model, cfg, "host" if host else "vmap", periods, updates=updates)
    state = {
        "group": engine.start(
            [masked], [stats], [mask], [jax.random.PRNGKey(1)], schedules=schedules
        ),
        "step": 0,
    }

    def train() -> float:
        started = time.perf_counter()
        group, metrics = feeder.segment(engine, state["group"], state["step"], periods)
        metrics.block_until_ready()
        state["group"], state["step"] = group, state["step"] + periods * EVERY
        return time.perf_counter() - started

    train()
    return train


def sparse_rows(quick: bool) -> list[Row]:
    """Per network, SET's and RigL's extra time over a static cell of the same density, as a
    percent of its time: the three trained in turn, the fastest of each kept (a shared
    machine's noise only ever slows a call down)."""
    setups = {
        "lenet300": ((28, 28, 1), TrainConfig("adam", 1.2e-3, 60, 100_000, EVERY), 5),
        "conv2": ((32, 32, 3), TrainConfig("adam", 2e-4, 60, 100_000, EVERY), 1),
    }
    rows = []
    for name, (shape, cfg, periods) in setups.items():
        trainers = {m: _trainer(name, shape, cfg, m, periods) for m in (None, "set", "rigl")}
        fastest = dict.fromkeys(trainers, float("inf"))
        for _ in range(2 if quick else 4):
            for method, train in trainers.items():
                fastest[method] = min(fastest[method], train())
        static = fastest.pop(None)
        per_step = 1e3 * static / (periods * EVERY)
        rows.append(Row(f"{name}, static {DENSITY:g}%, per step", per_step, "ms"))
        for method, seconds in fastest.items():
            figure = f"{name}, {method} update every {EVERY} steps: extra step time"
            extra = 100 * (seconds / static - 1)
            rows.append(Row(figure, extra, "%", OVERHEAD_TARGET, higher_is_better=False))
    return rows
