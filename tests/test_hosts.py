"""One cell over many hosts. Two local processes joined by `jax.distributed`
(gloo collectives on the CPU) train the cells one process trains alone, up to the order of
float additions; process 0 alone writes the store; a killed process fails the job, and a
rerun resumes what the job had stored."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from ltcli.experiment.member import CellKey
from ltcli.science import pruning
from ltcli.storage.store import Store

from helpers import kill_when, lt_process

pytestmark = pytest.mark.system

ONE_DEVICE = f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count=1"
"""The XLA flags of each process of a job: the test session's, one CPU device each."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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
            XLA_FLAGS=ONE_DEVICE,
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


_COUNTING_LT = """
import json, os
from ltcli.cli.main import main
from ltcli.data import stream

def counted(batches):
    def read(examples, records, *args, randomized=False, **options):
        if not randomized:  # an evaluation batch's examples, as this process reads them
            ids = records[..., 0].ravel()
            with open(os.environ["LT_READS"] + os.environ["JAX_PROCESS_ID"], "a") as out:
                out.write(json.dumps([len(examples), ids[ids != stream.PAD].tolist()]) + "\\n")
        return batches(examples, records, *args, randomized=randomized, **options)
    return read

stream.batches = counted(stream.batches)
main()
"""
"""`lt`, each process writing down the examples of every evaluation it reads
(``$LT_READS`` + its rank: a line per call, the split's size and the examples)."""


def _evaluation_reads(prefix: Path, rank: int) -> list[tuple[int, list[int]]]:
    lines = Path(f"{prefix}{rank}").read_text().splitlines()
    return [tuple(json.loads(line)) for line in lines]


def test_each_process_of_a_job_evaluates_its_share(class_folder, tmp_path, monkeypatch):
    """Every evaluation of a job's streamed data (validation, test, each point of a level
    barrier's path) is read half by each process, and gives what one process gives alone."""
    spec = tmp_path / "share.toml"
    spec.write_text(
        f'[data]\ndataset = "folder:{class_folder}"\nvalidation = 51\nplacement = "stream"\n'
        '[model]\nname = "lenet300"\n[prune]\nrate = 0.5\n[run]\nrounds = 1\nbarriers = true\n'
        '[train]\niterations = "40it"\neval_every = "20it"\nbatch_size = 10\noptimizer = "sgd"\n'
    )
    job, alone = tmp_path / "job", tmp_path / "alone"
    monkeypatch.setenv("LT_READS", str(tmp_path / "reads"))  # the job's processes read it
    lt = [sys.executable, "-c", _COUNTING_LT, *lt_process(spec, job, class_folder)[3:]]
    results = _finish(_job([*lt, "--distributed"]))
    assert [code for code, _, _ in results] == [0, 0], results[0][2][-3000:] + results[1][2]
    reads = [_evaluation_reads(tmp_path / "reads", rank) for rank in (0, 1)]
    # 2 levels x 2 evaluations x (validation, test), then the 31 points of the barrier's path
    assert len(reads[0]) == len(reads[1]) == 2 * 2 * 2 + 31
    for (split, mine), (other_split, theirs) in zip(*reads, strict=True):
        assert split == other_split and not set(mine) & set(theirs), (mine, theirs)
        assert len(set(mine + theirs)) == {300: 51, 100: 100}[split]  # validation, test
        assert abs(len(mine) - len(theirs)) <= 1  # 51 in batches of 52: a padded row
    done = subprocess.run(lt_process(spec, alone, class_folder), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    (run_id,) = Store(job).run_ids()
    for cell in (CellKey(0, 0), CellKey(0, 1)):
        ours, its = (Store(s).read_metrics(run_id, cell) for s in (job, alone))
        assert (ours["devices"], its["devices"]) == (2, 1)
        for name in ("val_loss", "test_loss", "val_acc", "test_acc"):
            np.testing.assert_allclose(ours["curve"][name], its["curve"][name], rtol=1e-5)
    ours, its = (Store(s).read_metrics(run_id, CellKey(0, 1)) for s in (job, alone))
    ours, its = ours["level_barrier"], its["level_barrier"]
    np.testing.assert_allclose(ours["test_loss"], its["test_loss"], rtol=1e-5)
    assert ours["test_error"] == its["test_error"]


def test_a_job_trains_what_one_process_trains_and_resumes_after_a_killed_process(
    write_spec, tmp_path, real_data
):
    """The job streams its batches, each process reading its half of every batch, and
    trains the cells one process trains alone on data on its device (to float rounding).
    A process killed mid-level fails the job; a rerun resumes from the level's checkpoint
    to the cells of an uninterrupted job, bit for bit."""
    train = {"iterations": "300it", "optimizer": "sgd", "lr": 0.05}  # SGD: see test_devices
    # A rewind point at 100 makes every jitted call (and checkpoint) 100 iterations long.
    spec = write_spec(train=train, prune={"rewind_iter": "100it"}, run={"rounds": 1})
    store, whole, alone = tmp_path / "job", tmp_path / "whole", tmp_path / "alone"
    stream = ("--set", "data.placement=stream")
    uninterrupted = lt_process(spec, whole, real_data[1], "--distributed", *stream)
    results = _finish(_job(uninterrupted))
    assert [code for code, _, _ in results] == [0, 0], results[0][2][-3000:] + results[1][2]
    (_, table, _), (_, follower_out, follower_err) = results
    assert "level" in table and follower_out == ""  # process 0 alone prints the table
    assert "level 1" not in follower_err  # ... and the progress
    done = subprocess.run(
        lt_process(spec, alone, real_data[1], "--devices", "1"), capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    (run_id,) = Store(whole).run_ids()
    _agree(Store(whole), Store(alone), run_id)

    command = lt_process(
        spec, store, real_data[1], "--distributed", *stream, "--checkpoint-every", "0"
    )
    job = _job(command)
    # the follower dies mid-level, after the writer saved a checkpoint
    kill_when(job[1], store, "*/checkpoints/*.npz", 300)
    started = time.monotonic()
    job[0].communicate(timeout=120)
    assert job[0].returncode != 0, "the writer must fail when a process of its job dies"
    assert time.monotonic() - started < 60
    job[1].communicate()
    assert not list(Store(store).finished_cells(run_id))  # nothing of the level was stored
    results = _finish(_job(command))
    assert [c for c, _, _ in results] == [0, 0], results[0][2][-3000:]
    resumed_at = re.search(r"level 0/1 +1 cells +([\d,]+)/300 it", results[0][2])
    assert resumed_at and int(resumed_at.group(1)) >= 100, results[0][2]
    cells = list(Store(store).finished_cells(run_id))
    assert cells == list(Store(whole).finished_cells(run_id)) and len(cells) == 2
    for cell in cells:
        a, b = (Store(s).cell_dir(run_id, cell) for s in (store, whole))
        for name in ("mask.npz", "weights.npz"):  # the same programs: the same bits
            assert (a / name).read_bytes() == (b / name).read_bytes(), (cell, name)
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


def _one_process_of(processes: int) -> dict[str, str]:
    """The environment of process 0 of a job of `processes`, the others never started."""
    return dict(
        os.environ,
        JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{_free_port()}",
        JAX_NUM_PROCESSES=str(processes),
        JAX_PROCESS_ID="0",
        XLA_FLAGS=ONE_DEVICE,
    )


def _settings(*assignments: str) -> list[str]:
    return [word for a in assignments for word in ("--set", a)]


def test_a_refused_job_exits_2_before_its_processes_meet(write_spec, tmp_path, real_data):
    """Process 0 of a job of two whose second process never comes: what the spec, the
    flags and the data decide is refused at once (not after JAX's rendezvous, where it would
    wait for the absent process), exit 2, nothing written."""
    spec, store = write_spec(run={"rounds": 0}), tmp_path / "store"
    snip = ("prune.method=snip", "prune.strategy=global")
    for extra, says in (
        (["--deterministic"], "--distributed: a deterministic cell"),
        (["--parallel", "cells"], "--parallel cells"),
        (["--grouping", "host"], "--grouping host"),
        (_settings(f"data.dataset=folder:{tmp_path / 'nowhere'}"), "is not a folder"),
        (_settings("run.spawn=150it"), "run.spawn: each must be"),
        (["--one-shot", "50", *_settings(*snip, "data.placement=stream")], "snip scores"),
    ):
        command = lt_process(spec, store, real_data[1], "--distributed", *extra)
        started = time.monotonic()
        done = subprocess.run(
            command, env=_one_process_of(2), capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 2 and says in done.stderr, done.stderr
        assert time.monotonic() - started < 30
    assert not store.exists()


def test_a_job_of_one_process_is_a_job(write_spec, tmp_path, real_data):
    """JAX_NUM_PROCESSES=1: the job's refusals hold (the README lists them for any job),
    and what it accepts trains as one process, which writes the store and prints."""
    spec, store = write_spec(train={"iterations": "100it"}, run={"rounds": 0}), tmp_path / "s"
    refused = lt_process(spec, store, real_data[1], "--distributed", "--deterministic")
    done = subprocess.run(refused, env=_one_process_of(1), capture_output=True, text=True)
    assert done.returncode == 2 and "--distributed: a deterministic" in done.stderr, done.stderr
    assert not store.exists()
    command = lt_process(spec, store, real_data[1], "--distributed")
    done = subprocess.run(command, env=_one_process_of(1), capture_output=True, text=True)
    assert done.returncode == 0 and "level" in done.stdout, done.stderr
    (run_id,) = Store(store).run_ids()
    (cell,) = Store(store).finished_cells(run_id)
    assert Store(store).read_metrics(run_id, cell)["parallel"] == "batch"


@pytest.mark.unit
def test_every_flag_a_job_cannot_honour_is_refused_from_the_spec_alone():
    """`launch.job_refusal` decides without JAX: each refusal names its flag."""
    from ltcli.experiment import spec
    from ltcli.train import launch

    base = spec.load("smoke")
    assert launch.job_refusal(base, "auto", "local") is None
    cases = [
        ({"run.deterministic": True}, "auto", "local", "deterministic"),
        ({"run.parallel": "cells"}, "auto", "local", "--parallel cells"),
        ({}, "host", "local", "--grouping host"),
        ({}, "auto", "ray", "--executor ray"),
        ({"run.devices": 2}, "auto", "local", "--devices"),
    ]
    for overrides, grouping, executor, named in cases:
        refused = launch.job_refusal(spec.apply_overrides(base, overrides), grouping, executor)
        assert refused is not None and named in refused, (overrides, refused)
