"""The grouping of a level's cells is measured once per machine and key, then remembered."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from ltcli.data import Arrays
from ltcli.models.lenet import MLP
from ltcli.science import pruning
from ltcli.train import grouping
from ltcli.train.device_data import to_device
from ltcli.train.engine import Engine
from ltcli.train.recipes import TrainConfig

pytestmark = pytest.mark.unit


def _two_cells():
    """A tiny MLP engine, its data, and a function giving a fresh group of two cells."""
    engine = Engine(MLP(hidden=(8,), num_classes=3), TrainConfig("adam", 1e-3, 4, 40, 20))
    rng = np.random.default_rng(0)
    x = rng.integers(0, 255, (60, 4, 4, 1), dtype=np.uint8)
    y = rng.integers(0, 3, 60).astype(np.int32)
    data = to_device(Arrays(x[:50], y[:50], x[50:], y[50:]), validation=10)
    params, stats = engine.init(jax.random.PRNGKey(0), (4, 4, 1))
    mask = pruning.dense_mask(params)

    def fresh():
        keys = [jax.random.PRNGKey(1), jax.random.PRNGKey(2)]
        return engine.start([params] * 2, [stats] * 2, [mask] * 2, keys)

    return engine, data, fresh


@pytest.mark.integration
def test_the_faster_grouping_is_chosen_and_remembered(monkeypatch):
    engine, data, fresh = _two_cells()

    measured: list[tuple[str, int]] = []
    real = grouping.seconds_per_period

    def fake(probe, group, data):
        measured.append((probe.grouping, probe.cfg.eval_every))
        real(probe, group, data)  # the probe really runs
        return {"vmap": 2.0, "serial": 1.0}[probe.grouping]

    monkeypatch.setattr(grouping, "seconds_per_period", fake)
    key = grouping.machine_key("tiny", engine, 2, (4, 4, 1))
    assert "tiny" in key and "batch 4" in key and "2 cells" in key
    assert grouping.choose(key, engine, fresh, data) == "serial"
    assert measured == [("vmap", grouping.PROBE_STEPS), ("serial", grouping.PROBE_STEPS)]
    assert grouping.choose(key, engine, fresh, data) == "serial"
    assert len(measured) == 2  # remembered, not measured again


def test_the_host_loop_is_never_measured(monkeypatch):
    """Only programs are timed: the host loop is a feeder, chosen once for the run."""
    engine, data, fresh = _two_cells()
    timed: list[str] = []

    def fake(probe, group, data):
        timed.append(probe.grouping)
        return {"vmap": 2.0, "serial": 3.0}[probe.grouping]

    monkeypatch.setattr(grouping, "seconds_per_period", fake)
    key = grouping.machine_key("tiny-transformer", engine, 2, (8,))
    assert grouping.choose(key, engine, fresh, data) == "vmap"
    assert timed == ["vmap", "serial"]
