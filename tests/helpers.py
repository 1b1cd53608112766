"""Helpers several test modules share (fixtures live in conftest.py): a tiny learnable data
set, a trained cell's masking checked, bad input refused, and runs killed on purpose, in
this process or in another."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from ltcli.experiment import plan, spec

FAST_COMPILE_FLAG = "--xla_backend_optimization_level=0"
"""The tests' programs are tiny and each compiled once: XLA:CPU compiles them at LLVM's lowest
optimization level (conftest.py adds this to ``XLA_FLAGS`` before any JAX backend starts),
which takes a quarter less time for every test that trains and changes no result a test
reads: every process of a test inherits it, so what is bit-identical stays bit-identical.
`make bench` and lt itself keep XLA's default."""


def runtime_env(env: Mapping[str, str]) -> dict[str, str]:
    """`env` without `FAST_COMPILE_FLAG`: for the processes of a test whose time goes into
    running its programs rather than compiling them (every process whose numbers it
    compares must then run with it)."""
    flags = env.get("XLA_FLAGS", "").replace(FAST_COMPILE_FLAG, "").strip()
    return dict(env, XLA_FLAGS=flags)


def learnable_data():
    """A tiny data set on the device (6x6 grey images, 4 classes: the brightest of the first
    four pixels), 250 training examples, 30 for validation and 50 for test."""
    from ltcli.data import Arrays
    from ltcli.train.device_data import to_device

    rng = np.random.default_rng(0)
    x = rng.integers(0, 255, size=(330, 6, 6, 1), dtype=np.uint8)
    y = (x.reshape(330, -1)[:, :4].argmax(1)).astype(np.int32)
    return to_device(Arrays(x[:280], y[:280], x[280:], y[280:]), validation=30)


def assert_refused(spec: Path, args: list[str], field: str, store: Path, data_dir: Path) -> None:
    """`lt run SPEC ARGS` exits 2 naming `field` on stderr, and writes no `store`."""
    from click.testing import CliRunner

    from ltcli.cli.main import cli

    command = ["run", str(spec), *args, "--store", str(store), "--data-dir", str(data_dir)]
    result = CliRunner().invoke(cli, command)
    assert result.exit_code == 2, result.output
    assert field in result.stderr
    assert not store.exists()


def assert_trained_under_mask(row, first, layer: str) -> None:
    """A trained cell `row` against its start `first`: pruned weights and their optimizer
    state exactly zero, and most survivors of `layer`'s kernel moved (it did train)."""
    from ltcli.train import checks

    checks.pruned_are_zero(row.params, first.mask, "test")
    checks.optimizer_state_masked(row.opt_state, row.params, first.mask, "test")
    kept = first.mask[layer]["kernel"] == 1
    kernel, initial = row.params[layer]["kernel"], first.params[layer]["kernel"]
    assert np.all(kernel[~kept] == 0)
    assert np.mean(kernel[kept] != initial[kept]) > 0.5


class Killed(Exception):
    """Raised by `KillAfter`: the run stops there as a killed process would."""


class KillAfter(plan.Progress):
    """A progress receiver that kills the run in this process once `steps` iterations
    have been trained."""

    def __init__(self, steps: int):
        self.steps, self.limit = 0, steps

    def advance(self, steps):
        self.steps += steps
        if self.steps >= self.limit:
            raise Killed


def lt_process(spec_path: Path, store: Path, data_dir: Path, *flags: str) -> list[str]:
    """The command line of `lt run` in a process of its own."""
    where = ["--store", str(store), "--data-dir", str(data_dir)]
    return [sys.executable, "-m", "ltcli", "run", str(spec_path), *where, *flags]


def kill_when(proc: subprocess.Popen, folder: Path, pattern: str, timeout: float) -> None:
    """SIGKILLs `proc` as soon as a file matching `pattern` appears under `folder`, and
    reaps it; fails if `proc` ends first or nothing appears within `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not any(folder.glob(pattern)):
        assert proc.poll() is None and time.monotonic() < deadline, "the run ended too soon"
        time.sleep(0.05)
    proc.kill()
    proc.wait()


LOGGED_LR = 1.2e-3
LOGGED_RUN = {
    "model": {"name": "lenet300"},
    "train": {
        "iterations": "200it",
        "eval_every": "100it",
        "batch_size": 20,
        "lr": LOGGED_LR,
        "warmup": "200it",  # the schedule moves: lr/2 at 100, lr at 200
    },
    "prune": {"rate": 0.5, "retrain": "finetune"},  # level 1 trains at the final rate
    "run": {"rounds": 1, "controls": "reinit:1"},
}
"""The tiny run the trackers' tests log (TensorBoard, W&B, MLflow), less its data."""


def logged_spec(folder: Path, log: str) -> spec.Spec:
    """`LOGGED_RUN` on the ``folder:`` data set `folder`, followed by the tracker `log`."""
    table = {"data": {"dataset": f"folder:{folder}", "validation": 50}, **LOGGED_RUN}
    table["run"] = {**LOGGED_RUN["run"], "log": log}
    return spec.from_mapping("logged", table)


def logged_toml(folder: Path, path: Path) -> Path:
    """`LOGGED_RUN` on `folder` written to `path` as a spec file (no tracker)."""
    lines = [f'[data]\ndataset = "folder:{folder}"\nvalidation = 50']
    for section, fields in LOGGED_RUN.items():
        lines.append(f"[{section}]")
        lines += [f"{k} = {json.dumps(v)}" for k, v in fields.items()]
    path.write_text("\n".join(lines) + "\n")
    return path
