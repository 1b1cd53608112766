"""`lt ticket`: a ticket file holds the stored mask, the level's rewind point and honest
counts, reads back without lt, and bad input writes nothing."""

from __future__ import annotations

import json
import math
from pathlib import Path

import click
import jax
import numpy as np
import pytest
from click.testing import CliRunner

from ltcli import data, models
from ltcli.cli.options import LtGroup
from ltcli.cli.ticket_command import ticket as ticket_command
from ltcli.experiment import spec
from ltcli.results import ticket
from ltcli.science import pruning
from ltcli.storage.store import CellKey, Store
from ltcli.train import device_data, launch, runner

pytestmark = pytest.mark.integration

LENET_PARAMS = 784 * 300 + 300 + 300 * 100 + 100 + 100 * 10 + 10


@click.group(cls=LtGroup)
def cli() -> None:
    """lt with only the command under test (cli.py registers it for real)."""


cli.add_command(ticket_command)


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory: pytest.TempPathFactory, real_data: tuple[str, Path]):
    """A tiny LeNet run with late rewinding (levels 0 and 1): (store, spec, data folder)."""
    folder = tmp_path_factory.mktemp("ticket")
    path = folder / "tiny.toml"
    path.write_text(
        f'[data]\ndataset = "{real_data[0]}"\nvalidation = 1000\n'
        '[model]\nname = "lenet300"\n'
        '[train]\niterations = "200it"\neval_every = "100it"\nbatch_size = 60\n'
        '[prune]\nrate = 0.5\nrewind_iter = "100it"\n'
        "[run]\nrounds = 1\nreplicates = 1\n"
    )
    loaded = spec.load(str(path))
    store = Store(folder / "store")
    launch.run(loaded, store, data_dir=real_data[1], name="tiny")
    return store, loaded, real_data[1]


def invoke(store: Store, data_dir: Path, *args: str):
    extra = ["--store", str(store.root), "--data-dir", str(data_dir)]
    return CliRunner().invoke(cli, ["ticket", "tiny", *args, *extra])


def bits(tree) -> dict[str, bytes]:
    """Each leaf's raw bytes, dtype and shape: equal means equal bit for bit (-0.0 != +0.0)."""
    return {
        name: (leaf.dtype.str, leaf.shape, leaf.tobytes())
        for name, leaf in pruning.flatten(tree).items()
    }


def test_a_safetensors_ticket_is_the_levels_starting_point(trained_run, tmp_path):
    store, loaded, data_dir = trained_run
    out = tmp_path / "t.safetensors"
    result = invoke(store, data_dir, "--level", "1", "-o", str(out))
    assert result.exit_code == 0, result.output
    assert f"wrote {out}" in result.stdout

    loaded_ticket = ticket.load(out)
    desc, source = launch.prepare(loaded, data_dir)
    start, _, point = runner.Runner(store, desc, source).starts.cell_inputs(CellKey(0, 1))
    stored = store.read_mask(desc.run_id, CellKey(0, 1), point["params"])
    flat_mask = pruning.flatten(loaded_ticket.mask)
    assert all(m.dtype == np.bool_ for m in flat_mask.values())
    assert bits({k: m.astype(np.float32) for k, m in flat_mask.items()}) == bits(stored)
    # Late rewinding: level 1 starts from θk, which is not θ0.
    theta_k = store.load_weights(store.rewind_path(desc.run_id, 0))
    assert bits(loaded_ticket.rewind["params"]) == bits(theta_k["params"])
    theta_0 = store.load_weights(store.init_path(desc.run_id, 0))
    assert bits(loaded_ticket.rewind["params"]) != bits(theta_0["params"])
    assert bits(loaded_ticket.start()["params"]) == bits(start["params"])
    assert loaded_ticket.trained is None

    meta = loaded_ticket.metadata
    assert meta["run_id"] == desc.run_id and (meta["replicate"], meta["level"]) == (0, 1)
    assert meta["rewind"] == {"from": "rewind", "iteration": 100}
    assert meta["model"] == "lenet300" and meta["num_classes"] == 10
    assert meta["image_shape"] == [28, 28, 1] and meta["validation"] == 1000
    metrics = store.read_metrics(desc.run_id, CellKey(0, 1))
    assert meta["percent_remaining"] == pytest.approx(metrics["percent_remaining"])
    counts = pruning.counts(stored)
    assert {n: (v["kept"], v["total"]) for n, v in meta["layers"].items()} == counts
    assert counts["fc1/kernel"] == (117600, 235200)
    kept = sum(k for k, _ in counts.values())
    pruned = sum(t - k for k, t in counts.values())
    assert meta["parameters"] == {"total": LENET_PARAMS, "remaining": LENET_PARAMS - pruned}
    assert meta["flops"] == {"dense": 2 * (235200 + 30000 + 1000), "sparse": 2 * kept}
    biases = 300 + 100 + 10
    csr = 8 * kept + 4 * (785 + 301 + 101) + 4 * biases
    assert meta["bytes"] == {"dense_float32": 4 * LENET_PARAMS, "csr": csr}
    assert meta["metrics"]["final_test_acc"] == metrics["final_test_acc"]

    # Any safetensors reader sees the flat names and the metadata.
    from safetensors import safe_open

    with safe_open(str(out), framework="numpy") as handle:
        names = set(handle.keys())
        assert json.loads(handle.metadata()["metadata"]) == meta
    assert "mask/fc1/kernel" in names and "rewind/params/fc1/kernel" in names
    assert not any(n.startswith("trained/") for n in names)


def test_an_npz_ticket_with_trained_weights_evaluates_as_stored(trained_run, tmp_path):
    """Level 0 rewinds to θ0; the README's lines rebuild the model and its test accuracy."""
    store, _, data_dir = trained_run
    out = tmp_path / "t.npz"
    result = invoke(store, data_dir, "--level", "0", "--trained", "-o", str(out))
    assert result.exit_code == 0, result.output
    run_id = store.resolve("tiny")
    with np.load(out) as npz:
        meta = json.loads(str(npz["metadata"]))
        flat = {k: npz[k] for k in npz.files if k != "metadata"}
    assert meta["rewind"] == {"from": "init", "iteration": 0} and meta["trained"]
    assert meta["percent_remaining"] == 100.0
    theta_0 = store.load_weights(store.init_path(run_id, 0))
    trained = store.read_trained(run_id, CellKey(0, 0))
    for name, leaf in pruning.flatten(theta_0).items():
        assert np.array_equal(flat[f"rewind/{name}"], leaf)
    for name, leaf in pruning.flatten(trained).items():
        assert np.array_equal(flat[f"trained/{name}"], leaf)
    assert all(flat[f"mask/{n}"].all() for n in pruning.flatten(theta_0["params"]))

    # The README's lines (with the npz's arrays in place of safetensors' load_file).
    from flax.traverse_util import unflatten_dict

    tree = unflatten_dict({tuple(k.split("/")): v for k, v in flat.items()})
    weights = tree["trained"]
    params = jax.tree.map(
        lambda w, m: np.where(m, w, np.float32(0)), weights["params"], tree["mask"]
    )
    variables = {"params": params, "batch_stats": weights.get("batch_stats", {})}
    model = models.create(meta["model"], meta["num_classes"])
    arrays = data.locate(meta["dataset"], data_dir).load()
    train, _, _ = device_data.split_validation(arrays, meta["validation"])
    pixels = train.x_train.reshape(-1, train.x_train.shape[-1]).astype(np.float64)
    mean = pixels.mean(0).astype(np.float32)
    std = (pixels.std(0) + 1e-8).astype(np.float32)
    images = (arrays.x_test.astype(np.float32) - mean) / std
    logits = jax.jit(model.apply, static_argnames="train")(variables, images, train=False)
    accuracy = float(np.mean(np.argmax(logits, -1) == arrays.y_test))
    assert accuracy == pytest.approx(meta["metrics"]["final_test_acc"], abs=2 / len(images))


@pytest.mark.parametrize(
    "args, message",
    [
        (["--level", "2", "-o", "t.npz"], "--level 2: the ticket of run"),
        (["--level", "-1", "-o", "t.npz"], "must be 0 or more"),
        (["--level", "1", "--replicate", "3", "-o", "t.npz"], "--replicate 3"),
        (["--level", "1", "-o", "t.pt"], "the suffix picks the format"),
        (["--level", "1", "-o", "t"], "the suffix picks the format"),
    ],
)
def test_bad_input_exits_2_and_writes_nothing(trained_run, tmp_path, args, message):
    store, _, data_dir = trained_run
    target = tmp_path / "out"
    target.mkdir()
    args = [str(target / a) if a.startswith("t") else a for a in args]
    result = invoke(store, data_dir, *args)
    assert result.exit_code == 2, result.output
    assert message in result.stderr
    assert list(target.iterdir()) == []


def test_an_unknown_run_exits_2(trained_run, tmp_path):
    store = trained_run[0]
    result = CliRunner().invoke(
        cli,
        [
            "ticket",
            "nope",
            "--level",
            "0",
            "-o",
            str(tmp_path / "t.npz"),
            "--store",
            str(store.root),
        ],
    )
    assert result.exit_code == 2 and "no such run" in result.stderr
    assert not (tmp_path / "t.npz").exists()


@pytest.mark.unit
def test_conv_flops_count_output_positions() -> None:
    positions = ticket.output_positions("conv2", (32, 32, 3), 10)
    assert positions == {
        "conv1/kernel": 32 * 32,
        "conv2/kernel": 32 * 32,
        "fc1/kernel": 1,
        "fc2/kernel": 1,
        "out/kernel": 1,
    }
    resnet = ticket.output_positions("resnet20", (32, 32, 3), 10)
    assert resnet["conv1/kernel"] == 1024 and resnet["stage1_block2/conv2/kernel"] == 1024
    assert resnet["stage2_block0/conv1/kernel"] == 256
    assert resnet["stage2_block0/shortcut/kernel"] == 256
    assert resnet["stage3_block2/conv2/kernel"] == 64 and resnet["out/kernel"] == 1
    assert set(resnet) == set(models.get("resnet20").kernels)


@pytest.mark.unit
def test_sizes_of_a_half_pruned_conv_kernel() -> None:
    kernel = np.zeros((3, 3, 2, 4), np.float32)
    kernel.reshape(-1)[::2] = 1  # 36 of 72 survive
    mask = {"conv1": {"kernel": kernel, "bias": np.ones(4, np.float32)}}
    got = ticket.sizes(mask, {"conv1/kernel": 100})
    assert got["parameters"] == {"total": 76, "remaining": 40}
    assert got["flops"] == {"dense": 2 * 72 * 100, "sparse": 2 * 36 * 100}
    assert got["bytes"] == {"dense_float32": 4 * 76, "csr": 8 * 36 + 4 * (18 + 1) + 4 * 4}
    assert ticket.csr_bytes(kernel) == 8 * 36 + 4 * math.prod((3, 3, 2)) + 4
