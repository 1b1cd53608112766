"""In runs: several one-shot targets as levels, pruning at initialization, and the
shuffle and invert ablations as controls."""

from __future__ import annotations

import numpy as np
import pytest

from ltcli.core.errors import UsageError
from ltcli.data import DataSource
from ltcli.experiment import descriptor, spec
from ltcli.science import pruning
from ltcli.storage.store import CellKey, Store
from ltcli.train import launch, runner

from helpers import assert_refused

pytestmark = pytest.mark.integration


def same_mask(a, b) -> bool:
    flat_a, flat_b = pruning.flatten(a), pruning.flatten(b)
    return flat_a.keys() == flat_b.keys() and all(
        np.array_equal(flat_a[k], flat_b[k]) for k in flat_a
    )


AT_INIT = {"strategy": "global", "method": "snip", "one_shot": [50.0, 10.0]}
GLOBAL = ("--set", "prune.strategy=global")


def test_one_shot_targets_are_levels_pruned_from_the_dense_network(write_spec, tmp_path, real_data):
    loaded = spec.load(str(write_spec(prune={"one_shot": [5.0, 50.0]}, run={"rounds": 7})))
    store = Store(tmp_path)
    run_id = launch.run(loaded, store, data_dir=real_data[1])
    levels = sorted({c.level for c in store.finished_cells(run_id)})
    assert levels == [0, 1, 2]  # one level per target, largest first; rounds do not apply
    remaining = [store.read_metrics(run_id, CellKey(0, lv))["percent_remaining"] for lv in (1, 2)]
    assert remaining == pytest.approx([50.0, 5.0], abs=0.01)
    # Level 2 prunes level 0's trained weights (not level 1's): the magnitude ranking of
    # the dense network's weights gives its mask.
    desc, source = launch.prepare(loaded, real_data[1])
    run = runner.Runner(store, desc, source)
    dense = store.read_trained(run_id, CellKey(0, 0))["params"]
    expected = run.context.strategy.prune(dense, pruning.dense_mask(dense), 2)
    template = store.load_weights(store.init_path(run_id, 0))["params"]
    stored = store.read_mask(run_id, CellKey(0, 2), template)
    assert same_mask(expected, stored)


def test_snip_levels_shuffle_and_invert(write_spec, tmp_path, real_data):
    loaded = spec.load(
        str(write_spec(prune=AT_INIT, run={"controls": "shuffle:1,invert:1,reinit:1"}))
    )
    store = Store(tmp_path)
    run_id = launch.run(loaded, store, data_dir=real_data[1])
    desc, source = launch.prepare(loaded, real_data[1])
    run = runner.Runner(store, desc, source)
    template = store.load_weights(store.init_path(run_id, 0))["params"]
    for level, target in ((1, 50.0), (2, 10.0)):
        ticket = store.read_mask(run_id, CellKey(0, level), template)
        assert pruning.percent_remaining(ticket) == pytest.approx(target, abs=0.01)
        # The stored mask is what SNIP gives θ0 for this target, computed here again.
        again = run.starts.at_init_mask(0, level)
        assert same_mask(ticket, again)
        shuffled = store.read_mask(run_id, CellKey(0, level, "shuffle-0"), template)
        assert pruning.counts(shuffled) == pruning.counts(ticket)
        assert not np.array_equal(shuffled["fc1"]["kernel"], ticket["fc1"]["kernel"])
        inverted = store.read_mask(run_id, CellKey(0, level, "invert-0"), template)
        kept = sum(k for k, _ in pruning.counts(inverted).values())
        assert kept == sum(k for k, _ in pruning.counts(ticket).values())
        # At most half kept: the inverted mask keeps none of the ticket's weights.
        for name, m in pruning.flatten(inverted).items():
            if pruning.layer_kind(name):
                assert not np.any((m == 1) & (pruning.flatten(ticket)[name] == 1))


@pytest.mark.unit
@pytest.mark.parametrize(
    "args, field",
    [
        (["--method", "snip"], "prune.method"),  # no one-shot targets
        (["--method", "snip", "--one-shot", "20"], "prune.strategy"),  # tiny is layer-wise
        (["--controls", "invert:1"], "run.controls"),  # invert needs an at-init method
        (["--one-shot", "20,20"], "prune.one_shot"),
        (["--one-shot", "120"], "prune.one_shot"),
        (["--set", "prune.score_mode=foo"], "prune.score_mode: must be eval or train"),
        (
            [*("--method", "snip", "--one-shot", "20", "--retrain", "lr-rewind"), *GLOBAL],
            "prune.retrain",
        ),
    ],
)
def test_bad_at_init_input_exits_2_and_writes_nothing(args, field, write_spec, tmp_path, real_data):
    # A spec on the real data found here (the smoke preset needs Fashion-MNIST itself).
    assert_refused(write_spec(), args, field, tmp_path / "store", real_data[1])


CIFAR = DataSource("cifar10", "0" * 64, 50000, (32, 32, 3), 10, "x", loader=lambda: None)


@pytest.mark.unit
@pytest.mark.parametrize("retrain", ["lr-rewind", "finetune"])
@pytest.mark.parametrize("method", ["snip", "grasp", "synflow", "magnitude-init", "random"])
def test_pruning_at_init_refuses_to_retrain_from_trained_weights(method, retrain):
    """lr-rewind and finetune start a level from the previous level's trained network: under
    a mask of θ0 that is no longer pruning at initialization."""
    at_init = spec.load("cifar10-resnet20-at-init")
    bad = spec.apply_overrides(at_init, {"prune.method": method, "prune.retrain": retrain})
    match = rf"prune\.retrain: {retrain} .*prune\.method {method}"
    with pytest.raises(UsageError, match=match) as err:
        descriptor.resolve(bad, CIFAR)
    assert "\n" not in str(err.value)  # one line
    rewind = spec.apply_overrides(at_init, {"prune.method": method, "prune.retrain": "rewind"})
    assert descriptor.resolve(rewind, CIFAR)["prune.retrain"] == "rewind"
    # IMP (magnitude of the trained weights) is what lr-rewind and finetune are for.
    imp = spec.apply_overrides(spec.load("cifar10-resnet20"), {"prune.retrain": retrain})
    assert descriptor.resolve(imp, CIFAR)["prune.retrain"] == retrain
