"""Issue 24: one cell over many hosts. Two local processes joined by `jax.distributed`
(gloo collectives on the CPU) train the cells one process trains alone, up to the order of
float additions; process 0 alone writes the store; a killed process fails the job, and a
rerun resumes what the job had stored."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from ltcli.science import pruning
from ltcli.storage.store import Store

from helpers import kill_when

pytestmark = pytest.mark.system


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _command(spec: Path, store: Path, data_dir: Path, *flags: str) -> list[str]:
    command = [sys.executable, "-m", "ltcli", "run", str(spec), "--store", str(store)]
    return [*command, "--data-dir", str(data_dir), *flags]


def _job(command: list[str], processes: int = 2) -> list[subprocess.Popen]:
    """The processes of one jax.distributed job on this machine, one CPU device each."""
    address = f"127.0.0.1:{_free_port()}"
    started = []
    for rank in range(processes):
        env = dict(
            os.environ,
            JAX_COORDINATOR_ADDRESS=address,
            JAX_NUM_PROCESSES=str(processes),
            JAX_PROCESS_ID=str(rank),
            XLA_FLAGS="--xla_force_host_platform_device_count=1",
        )
        out = subprocess.PIPE
        started.append(subprocess.Popen(command, env=env, stdout=out, stderr=out, text=True))
    return started


def _finish(job: list[subprocess.Popen]) -> list[tuple[int, str, str]]:
    outputs = [p.communicate(timeout=600) for p in job]
    return [(p.returncode, *out) for p, out in zip(job, outputs, strict=True)]


def _agree(a: Store, b: Store, run_id: str) -> None:
    """Masks agree on at least 99.9% of positions; weights and curves within float noise."""
    found = list(a.finished_cells(run_id))
    assert found == list(b.finished_cells(run_id)) and len(found) == 2
    template = b.load_weights(b.init_path(run_id, 0))["params"]
    for cell in found:
        ma, mb = a.read_metrics(run_id, cell), b.read_metrics(run_id, cell)
        assert (ma["devices"], ma["parallel"], mb["devices"]) == (2, "batch", 1)
        masks = [pruning.flatten(s.read_mask(run_id, cell, template)) for s in (a, b)]
        agree = sum(int((masks[0][n] == masks[1][n]).sum()) for n in masks[0])
        assert agree / sum(m.size for m in masks[0].values()) >= 0.999
        wa, wb = (pruning.flatten(s.read_trained(run_id, cell)["params"]) for s in (a, b))
        for name in wa:
            np.testing.assert_allclose(wa[name], wb[name], atol=1e-4, err_msg=name)
        np.testing.assert_allclose(ma["curve"]["val_loss"], mb["curve"]["val_loss"], rtol=1e-4)


def test_two_processes_train_the_cells_one_process_trains(write_spec, tmp_path, real_data):
    """The job streams its batches, each process reading its half of every batch; the
    process alone trains on data on its device."""
    train = {"iterations": "200it", "optimizer": "sgd", "lr": 0.05}  # see test_devices
    spec = write_spec(train=train, run={"rounds": 1})
    job, alone = tmp_path / "job", tmp_path / "alone"
    streamed = _command(spec, job, real_data[1], "--distributed", "--set", "data.placement=stream")
    results = _finish(_job(streamed))
    assert [code for code, _, _ in results] == [0, 0], results[0][2][-3000:] + results[1][2]
    (_, table, _), (_, follower_out, follower_err) = results
    assert "level" in table and follower_out == ""  # process 0 alone prints the table
    assert "level 1" not in follower_err  # ... and the progress
    done = subprocess.run(
        _command(spec, alone, real_data[1], "--devices", "1"), capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    (run_id,) = Store(job).run_ids()
    _agree(Store(job), Store(alone), run_id)


def test_a_killed_process_fails_the_job_and_a_rerun_resumes_it(write_spec, tmp_path, real_data):
    train = {"iterations": "600it", "optimizer": "sgd", "lr": 0.05}
    # A rewind point at 100 makes every jitted call (and checkpoint) 100 iterations long.
    spec = write_spec(train=train, prune={"rewind_iter": "100it"}, run={"rounds": 0})
    store, whole = tmp_path / "job", tmp_path / "whole"
    command = _command(spec, store, real_data[1], "--distributed", "--checkpoint-every", "0")
    job = _job(command)
    # the follower dies mid-level, after the writer saved a checkpoint
    kill_when(job[1], store, "*/checkpoints/*.npz", 300)
    started = time.monotonic()
    job[0].communicate(timeout=120)
    assert job[0].returncode != 0, "the writer must fail when a process of its job dies"
    assert time.monotonic() - started < 60
    job[1].communicate()
    (run_id,) = Store(store).run_ids()
    assert not list(Store(store).finished_cells(run_id))  # nothing of the level was stored
    results = _finish(_job(command))
    assert [c for c, _, _ in results] == [0, 0], results[0][2][-3000:]
    resumed_at = re.search(r"level 0/0 +1 cells +([\d,]+)/600 it", results[0][2])
    assert resumed_at and int(resumed_at.group(1)) >= 100, results[0][2]
    uninterrupted = _command(spec, whole, real_data[1], "--distributed")
    assert [c for c, _, _ in _finish(_job(uninterrupted))] == [0, 0]
    (cell,) = Store(store).finished_cells(run_id)
    a, b = (Store(s).cell_dir(run_id, cell) for s in (store, whole))
    for name in ("mask.npz", "weights.npz"):  # the same programs: the same bits
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    curves = [Store(s).read_metrics(run_id, cell)["curve"] for s in (store, whole)]
    assert curves[0] == curves[1]


def test_a_job_that_cannot_form_or_mixes_executors_exits_2_writing_nothing(tmp_path, real_data):
    from click.testing import CliRunner

    from ltcli.cli.main import cli

    store = tmp_path / "store"
    base = ["run", "smoke", "--distributed", "--store", str(store), "--data-dir", str(real_data[1])]
    for extra, says in (
        (["--executor", "ray"], "--executor ray"),
        (["--sweep", "train.lr=0.1,0.2"], "drop --sweep"),
    ):
        result = CliRunner().invoke(cli, [*base, *extra])
        assert result.exit_code == 2 and says in result.output, result.output
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JAX_", "SLURM_"))}
    alone = subprocess.run(
        [sys.executable, "-m", "ltcli", *base], env=env, capture_output=True, text=True
    )
    assert alone.returncode == 2 and "JAX_COORDINATOR_ADDRESS" in alone.stderr, alone.stderr
    assert not store.exists()
