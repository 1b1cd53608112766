"""Every shipped experiment resolves, and a two-level run of each network completes and
resumes on tiny synthetic CIFAR-shaped data."""

from __future__ import annotations

import numpy as np
import pytest

from ltcli import data
from ltcli.data import Arrays, DataSource
from ltcli.experiment import descriptor, plan, spec
from ltcli.storage.store import CellKey, Store
from ltcli.train import runner

pytestmark = pytest.mark.unit

CIFAR_PRESETS = [  # each network once: the -warmup presets differ only in the schedule
    "cifar10-conv2",
    "cifar10-conv4",
    "cifar10-conv6",
    pytest.param("cifar10-vgg19", marks=pytest.mark.system),
    pytest.param("cifar10-resnet20", marks=pytest.mark.system),
]


def synthetic(name: str, train: int, test: int, shape=(32, 32, 3)) -> DataSource:
    rng = np.random.default_rng(0)
    arrays = Arrays(
        rng.integers(0, 255, (train, *shape), dtype=np.uint8),
        rng.integers(0, 10, train, dtype=np.int32),
        rng.integers(0, 255, (test, *shape), dtype=np.uint8),
        rng.integers(0, 10, test, dtype=np.int32),
    )
    return DataSource(
        name, f"synthetic-{train}-{test}", train, shape, 10, "memory", loader=lambda: arrays
    )


@pytest.mark.parametrize("name", sorted(spec.shipped_specs()))
def test_every_shipped_spec_resolves(name: str):
    loaded = spec.load(name)
    if loaded["data.dataset"] == "python-stdlib":  # real text, on every machine
        source = data.locate("python-stdlib", tokens=loaded["data.tokens"])
    else:
        real_size = {"cifar10": 50000}.get(loaded["data.dataset"], 60000)
        source = synthetic(loaded["data.dataset"], real_size, 10)
    desc = descriptor.resolve(loaded, source)
    assert desc["train.iterations"] % desc["train.eval_every"] == 0


def test_the_paper_budgets_are_in_the_specs():
    source = synthetic("cifar10", 50000, 10)
    vgg = descriptor.resolve(spec.load("cifar10-vgg19"), source)
    assert vgg["train.iterations"] == 112500 and vgg["train.lr_drops"] == [56250, 84375]
    resnet = descriptor.resolve(spec.load("cifar10-resnet20-warmup"), source)
    assert (resnet["train.lr"], resnet["train.warmup"]) == (0.03, 20000)
    conv6 = descriptor.resolve(spec.load("cifar10-conv6"), source)
    assert conv6["prune.rates"] == {"conv": 0.15, "fc": 0.2, "output": 0.1}


@pytest.mark.integration
@pytest.mark.parametrize("name", CIFAR_PRESETS)
def test_two_levels_of_each_preset_complete_and_resume(name: str, tmp_path):
    tiny = {
        "train.iterations": 2,
        "train.eval_every": 1,
        "train.batch_size": 2,
        "data.validation": 4,
        "train.lr_drops": [],
        "train.warmup": 0,
    }
    loaded = spec.apply_overrides(spec.load(name), tiny)
    source = synthetic("cifar10", 12, 4)
    desc = descriptor.resolve(loaded, source)
    store = Store(tmp_path)
    store.save_run(desc, name, None)
    runner.Runner(store, desc, source).run(plan.Plan(rounds=1, replicates=1))
    first = store.read_metrics(desc.run_id, CellKey(0, 1))["curve"]
    runner.Runner(store, desc, source).run(plan.Plan(rounds=2, replicates=1))
    assert store.read_metrics(desc.run_id, CellKey(0, 1))["curve"] == first  # not retrained
    metrics = store.read_metrics(desc.run_id, CellKey(0, 2))
    assert len(metrics["curve"]["iteration"]) == 2
    assert all(np.isfinite(metrics["curve"]["test_loss"]))
    layers = metrics["layers"]
    strategy = runner.strategy(desc.full)
    template = store.load_weights(store.init_path(desc.run_id, 0))["params"]
    expected = strategy.expected_counts(template, 2)
    targets = strategy.targets(template)
    if strategy.kind == "global":
        assert sum(layers[n][0] for n in targets) == expected["*"]
        untouched = [n for n in layers if n not in targets]
        assert untouched and all(layers[n][0] == layers[n][1] for n in untouched)
    else:
        assert {n: layers[n][0] for n in targets} == expected
