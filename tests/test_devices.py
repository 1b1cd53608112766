"""A level's cells sharded over several local devices store the same cells and
numbers as on one device. JAX reads the device count when it starts, so each run is a
process of its own with four CPU devices."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ltcli.storage.store import Store

from helpers import lt_process

pytestmark = pytest.mark.system


def lt_run(spec_path: Path, store: Path, data_dir: Path, *flags: str) -> None:
    xla = f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count=4"
    env = dict(os.environ, XLA_FLAGS=xla)
    command = lt_process(spec_path, store, data_dir, *flags)
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr


def test_five_cells_over_four_devices_match_one_device(write_spec, tmp_path, real_data):
    path = write_spec(train={"iterations": "100it"}, run={"rounds": 1, "replicates": 5})
    four, one = tmp_path / "four", tmp_path / "one"
    lt_run(path, four, real_data[1], "--deterministic")
    lt_run(path, one, real_data[1], "--deterministic", "--devices", "1")
    (run_id,) = Store(four).run_ids()
    cells = list(Store(four).finished_cells(run_id))
    assert cells == list(Store(one).finished_cells(run_id)) and len(cells) == 10
    for cell in cells:
        a, b = (Store(s).cell_dir(run_id, cell) for s in (four, one))
        for name in ("mask.npz", "weights.npz"):
            assert (a / name).read_bytes() == (b / name).read_bytes(), (cell, name)
        ma, mb = (json.loads((d / "metrics.json").read_text()) for d in (a, b))
        assert ma["curve"] == mb["curve"]
        assert (ma["devices"], mb["devices"]) == (4, 1)
    # Five cells over four devices: three padding cells trained and were never stored.
    assert sorted(p.name for p in (four / run_id).glob("replicate_*")) == [
        f"replicate_{r}" for r in range(5)
    ]


def test_the_ray_executor_without_ray_says_how_to_install_it(tmp_path, real_data, monkeypatch):
    from click.testing import CliRunner

    from ltcli.cli.main import cli

    monkeypatch.setitem(sys.modules, "ray", None)  # as if not installed: import fails
    store = tmp_path / "store"
    args = ["run", "smoke", "--executor", "ray", "--store", str(store)]
    result = CliRunner().invoke(cli, [*args, "--data-dir", str(real_data[1])])
    assert result.exit_code == 2
    assert "pip install 'lt[ray]'" in result.stderr
    assert not store.exists()


def test_one_cell_with_its_batch_over_four_devices_matches_one_device(
    write_spec, tmp_path, real_data
):
    """--parallel batch: each cell's batch split over 4 devices gives the one-device cells up
    to the order of float additions (README: One cell over all local devices). SGD, since
    Adam turns the rounding of a near-zero gradient into a step of the learning rate's size
    (LeNet's validation loss drifts 0.5% apart in 200 iterations, against 3e-7 with SGD)."""
    import numpy as np

    from ltcli.science import pruning

    train = {"iterations": "200it", "optimizer": "sgd", "lr": 0.05}
    path = write_spec(train=train, run={"rounds": 1, "replicates": 1})
    four, one = tmp_path / "four", tmp_path / "one"
    lt_run(path, four, real_data[1], "--parallel", "batch")
    lt_run(path, one, real_data[1], "--devices", "1")
    (run_id,) = Store(four).run_ids()
    cells = list(Store(four).finished_cells(run_id))
    assert cells == list(Store(one).finished_cells(run_id)) and len(cells) == 2
    template = Store(one).load_weights(Store(one).init_path(run_id, 0))["params"]
    for cell in cells:
        stores = Store(four), Store(one)
        ma, mb = (s.read_metrics(run_id, cell) for s in stores)
        assert (ma["devices"], ma["parallel"]) == (4, "batch")
        assert (mb["devices"], mb["parallel"]) == (1, "cells")
        masks = [pruning.flatten(s.read_mask(run_id, cell, template)) for s in stores]
        agree = sum(int((masks[0][n] == masks[1][n]).sum()) for n in masks[0])
        assert agree / sum(m.size for m in masks[0].values()) >= 0.999
        wa, wb = (pruning.flatten(s.read_trained(run_id, cell)["params"]) for s in stores)
        for name in wa:
            np.testing.assert_allclose(wa[name], wb[name], atol=1e-4, err_msg=name)
        np.testing.assert_allclose(ma["curve"]["val_loss"], mb["curve"]["val_loss"], rtol=1e-4)
