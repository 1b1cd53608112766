"""The store on disk: finished means manifest, files verify, masks are bit-packed, and a
run's size follows the documented footprint formula."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from ltcli.core.errors import LtError
from ltcli.experiment import spec
from ltcli.science import pruning
from ltcli.storage.store import CellKey, Store, pack_mask, unpack_mask
from ltcli.train import launch

pytestmark = pytest.mark.unit


def test_masks_round_trip_bit_packed():
    rng = np.random.default_rng(0)
    template = {
        "fc1": {"kernel": np.zeros((13, 7)), "bias": np.zeros(7)},
        "out": {"kernel": np.zeros((7, 3))},
    }
    mask = {
        "fc1": {
            "kernel": (rng.random((13, 7)) > 0.5).astype(np.float32),
            "bias": np.ones(7, np.float32),
        },
        "out": {"kernel": (rng.random((7, 3)) > 0.5).astype(np.float32)},
    }
    packed = pack_mask(mask)
    assert packed["fc1/kernel"].nbytes == -(-13 * 7 // 8) and "fc1/bias" not in packed
    restored = unpack_mask(packed, template)
    for name, leaf in pruning.flatten(mask).items():
        assert np.array_equal(pruning.flatten(restored)[name], leaf)


def test_a_cell_is_finished_only_with_its_manifest_and_files_must_verify(tmp_path: Path):
    store = Store(tmp_path)
    cell = CellKey(0, 1)
    mask = {"fc1": {"kernel": np.ones((4, 4), np.float32)}}
    weights = {"params": {"fc1": {"kernel": np.arange(16.0).reshape(4, 4)}}}
    store.write_cell("r" * 64, cell, mask, {"level": 1}, weights)
    folder = store.cell_dir("r" * 64, cell)
    assert store.is_finished("r" * 64, cell)
    assert not list(folder.glob(".*.tmp"))  # no temporary files left behind
    mode = (folder / "weights.npz").stat().st_mode & 0o777
    umask = os.umask(0)
    os.umask(umask)
    assert mode == 0o666 & ~umask
    (folder / "weights.npz").write_bytes(b"tampered")
    with pytest.raises(LtError, match="does not match its manifest"):
        store.read_trained("r" * 64, cell)
    (folder / "manifest.json").unlink()
    assert not store.is_finished("r" * 64, cell)


@pytest.mark.integration
def test_the_store_size_follows_the_footprint_formula(write_spec, tmp_path, real_data):
    loaded = spec.load(str(write_spec(run={"rounds": 2, "controls": "reinit:1,random:1"})))
    store = Store(tmp_path / "s")
    run_id = launch.run(loaded, store, data_dir=real_data[1])
    theta0 = store.load_weights(store.init_path(run_id, 0))
    params = sum(np.size(x) for x in pruning.flatten(theta0).values())  # P
    mask_bytes = sum(
        -(-np.size(x) // 8)
        for n, x in pruning.flatten(theta0["params"]).items()
        if pruning.layer_kind(n)
    )  # M
    assert (params, mask_bytes) == (266610, 33275)
    cells = list(store.finished_cells(run_id))
    tickets = [c for c in cells if c.member.is_ticket]
    assert (len(tickets), len(cells) - len(tickets)) == (3, 4)
    evals = 2
    header = 1024  # zip and JSON framing per file, at most
    for cell in cells:
        folder = store.cell_dir(run_id, cell)
        assert (folder / "mask.npz").stat().st_size <= mask_bytes + 3 * header
        assert (folder / "metrics.json").stat().st_size <= 200 * evals + 3 * header
        has_weights = (folder / "weights.npz").exists()
        assert has_weights == cell.member.is_ticket
        if has_weights:
            size = (folder / "weights.npz").stat().st_size
            assert 4 * params <= size <= 4 * params + 6 * header
    formula = 4 * params + len(tickets) * 4 * params + len(cells) * mask_bytes
    total = store.size_bytes(run_id)
    assert formula <= total <= formula + len(cells) * (200 * evals + 12 * header) + 4 * header
