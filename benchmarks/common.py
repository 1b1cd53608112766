"""What every bench section shares: a row of the table, synthetic data of a real shape, and
the throughput of a group of dense cells trained together by lt's engine."""

from __future__ import annotations

import dataclasses
import time

import jax
import numpy as np

from ltcli import models
from ltcli.data import Arrays
from ltcli.science import pruning
from ltcli.train.device_data import DeviceData
from ltcli.train.engine import Engine, Group
from ltcli.train.feeders import HostLoop, OnDevice
from ltcli.train.recipes import TrainConfig

OPEN_LTH_CPU = 130.0
"""open_lth's LeNet steps/s on the 2-core CPU, evaluation once per epoch."""
OPEN_LTH_RESNET_GPU = 108.0
"""open_lth's best ResNet-20 steps/s on one H200, 8 loader workers."""


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
    feeder = (HostLoop if grouping == "host" else OnDevice)(data)
    group = dense_group(engine, shape, cells)
    started = time.perf_counter()
    group, metrics = feeder.segment(engine, group, 0, evals)
    metrics.block_until_ready()
    first = time.perf_counter() - started
    step, fastest = evals * cfg.eval_every, float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        group, metrics = feeder.segment(engine, group, step, evals)
        metrics.block_until_ready()
        fastest = min(fastest, time.perf_counter() - started)
        step += evals * cfg.eval_every
    return first, cells * evals * cfg.eval_every / fastest
