"""Streamed data (``data.placement = "stream"``): batches read on the host give the cells
on-device data gives, bit for bit under --deterministic, and a killed streaming level
resumes to the same cells."""

from __future__ import annotations

import json
import os
import subprocess

import numpy as np
import pytest

from ltcli.data import stream
from ltcli.experiment import spec
from ltcli.storage.store import CellKey, Store
from ltcli.train import launch

from helpers import kill_when, lt_process, runtime_env

pytestmark = pytest.mark.integration


def _cells_equal(a: Store, b: Store, run_id: str) -> None:
    cells = list(a.finished_cells(run_id))
    assert cells == list(b.finished_cells(run_id)) and cells
    for cell in cells:
        da, db = a.cell_dir(run_id, cell), b.cell_dir(run_id, cell)
        for name in ("mask.npz", "weights.npz"):
            if (da / name).exists():
                assert (da / name).read_bytes() == (db / name).read_bytes(), (cell, name)
        ma, mb = a.read_metrics(run_id, cell), b.read_metrics(run_id, cell)
        assert ma["curve"] == mb["curve"], cell
        assert ma["first_batch"] == mb["first_batch"], cell


def test_streamed_mnist_is_on_device_mnist_bit_for_bit(write_spec, tmp_path, real_data):
    path = write_spec(
        train={"iterations": "200it", "augment": True},
        prune={"rewind_iter": "100it"},
        run={"rounds": 1, "controls": "reinit:1,random:1", "deterministic": True},
    )
    device, streamed = Store(tmp_path / "device"), Store(tmp_path / "stream")
    loaded = spec.load(str(path))
    run_id = launch.run(loaded, device, data_dir=real_data[1])
    as_stream = spec.apply_overrides(loaded, {"data.placement": "stream"})
    assert launch.run(as_stream, streamed, data_dir=real_data[1]) == run_id  # not in the id
    _cells_equal(device, streamed, run_id)


def test_streamed_copies_and_their_paths_are_on_device_ones_bit_for_bit(class_folder, tmp_path):
    """A stability copy's other data order, and the error paths of copies and of successive
    levels, streamed as on the device (a small folder data set: every path point reads the
    whole test split)."""
    table = {
        "data": {"dataset": f"folder:{class_folder}", "validation": 50},
        "model": {"name": "lenet300"},
        "train": {"iterations": "200it", "eval_every": "100it", "batch_size": 20},
        "prune": {"rate": 0.5, "rewind_iter": "100it"},
        "run": {"rounds": 1, "controls": "stability:1", "deterministic": True, "barriers": True},
    }
    loaded = spec.from_mapping("copies", table)
    device, streamed = Store(tmp_path / "device"), Store(tmp_path / "stream")
    run_id = launch.run(loaded, device)
    as_stream = spec.apply_overrides(loaded, {"data.placement": "stream"})
    assert launch.run(as_stream, streamed) == run_id
    _cells_equal(device, streamed, run_id)
    for cell in (CellKey(0, 1, "stability-0"), CellKey(0, 1)):
        ma, mb = device.read_metrics(run_id, cell), streamed.read_metrics(run_id, cell)
        key = "instability" if cell.member.kind == "stability" else "level_barrier"
        assert ma[key]["test_error"] == mb[key]["test_error"], cell


def test_batches_come_in_the_order_asked_whatever_the_workers():
    images = np.arange(20 * 2 * 2, dtype=np.uint8).reshape(20, 2, 2, 1)
    examples = stream.ArrayExamples(images, np.arange(20, dtype=np.int32) % 7)
    ids = np.asarray([[3, 19, 0], [5, 5, stream.PAD]])
    records = np.stack([ids, np.zeros_like(ids)], -1)
    for workers in (0, 2):
        got = list(stream.batches(examples, records, (2, 2, 1), workers))
        assert len(got) == 2
        np.testing.assert_array_equal(got[0][0], images[[3, 19, 0]])
        np.testing.assert_array_equal(got[0][1], [3, 5, 0])
        np.testing.assert_array_equal(got[1][0][:2], images[[5, 5]])
        assert not got[1][0][2].any() and got[1][1][2] == 0  # padding reads as zeros


@pytest.mark.system
def test_a_killed_streaming_level_resumes_to_the_uninterrupted_cells(
    write_spec, tmp_path, real_data
):
    path = write_spec(  # a checkpoint after the first call, then killed
        train={"iterations": "500it", "eval_every": "100it"},
        prune={"rewind_iter": "100it"},  # a rewind point at 100: each call is 100 iterations
        data={"placement": "stream"},
        run={"rounds": 0},
    )
    reference = Store(tmp_path / "reference")
    run_id = launch.run(spec.load(str(path)), reference, data_dir=real_data[1])
    killed = tmp_path / "killed"
    command = lt_process(path, killed, real_data[1], "--checkpoint-every", "0")
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    proc = subprocess.Popen(command, **quiet)
    kill_when(proc, killed, "*/checkpoints/level_0.npz", 300)
    assert not Store(killed).is_finished(run_id, CellKey(0, 0))
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    a = reference.read_metrics(run_id, CellKey(0, 0))
    b = Store(killed).read_metrics(run_id, CellKey(0, 0))
    assert a["curve"] == b["curve"] and len(a["curve"]["val_loss"]) == 5


def _imagenet_folder(root):
    """A tiny ImageNet layout: 3 classes, JPEGs and PNGs of mixed sizes and modes."""
    from PIL import Image

    rng = np.random.default_rng(0)
    sizes = [(40, 30), (64, 80), (33, 47), (50, 50)]
    modes = ["RGB", "L", "CMYK", "RGB"]
    for split, count in (("train", 8), ("val", 2)):
        for c, wnid in enumerate(("n01440764", "n01443537", "n01484850")):
            folder = root / split / wnid
            folder.mkdir(parents=True)
            for i in range(count):
                w, h = sizes[i % 4]
                pixels = (rng.integers(0, 60, (h, w, 3)) + 60 * c).astype(np.uint8)
                image = Image.fromarray(pixels, "RGB").convert(modes[i % 4])
                image.save(folder / f"{wnid}_{i}.JPEG", format="JPEG")
    return root


@pytest.mark.system
def test_resnet50_streams_two_levels_from_an_imagenet_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("LT_CACHE_DIR", str(tmp_path / "cache"))
    root = _imagenet_folder(tmp_path / "imagenet")
    table = {
        "data": {"dataset": f"imagenet:{root}", "validation": 4, "image_size": 32},
        "model": {"name": "resnet50"},
        "train": {
            "optimizer": "sgd",
            "lr": 0.01,
            "momentum": 0.9,
            "batch_size": 4,
            "iterations": "4it",
            "eval_every": "2it",
        },
        "prune": {"strategy": "global", "rate": 0.2},
        "run": {"rounds": 1},
    }
    path = tmp_path / "resnet50.toml"  # run as lt runs it, at XLA's default optimization:
    path.write_text(  # this test's time is in running ResNet-50, not in compiling it
        "".join(
            f"[{section}]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in fields.items())
            for section, fields in table.items()
        )
    )
    store = Store(tmp_path / "store")
    command = lt_process(path, store.root, tmp_path)
    done = subprocess.run(command, env=runtime_env(os.environ), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    (run_id,) = store.run_ids()
    for cell, kept in ((CellKey(0, 0), 100.0), (CellKey(0, 1), 80.0)):
        metrics = store.read_metrics(run_id, cell)
        assert abs(metrics["percent_remaining"] - kept) < 0.01
        assert len(metrics["curve"]["val_loss"]) == 2
        assert all(np.isfinite(metrics["curve"]["test_loss"]))
        assert len(metrics["first_batch"]) == 4
