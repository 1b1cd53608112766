"""Whole runs: the LeNet protocol through lt's runner (a level's time outside training, and
the protocol end to end) and `lt run smoke` in a fresh process, cold and warm."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import click
import jax
import numpy as np

from benchmarks.common import Row, synthetic
from ltcli.data import DataSource
from ltcli.experiment import descriptor, spec
from ltcli.experiment.plan import Plan, Progress
from ltcli.storage.store import Store
from ltcli.train import runner


def _mnist_like() -> DataSource:
    arrays = synthetic((28, 28, 1), 60000, 10000)
    return DataSource("mnist", "synthetic", 60000, (28, 28, 1), 10, "memory", lambda: arrays)


def _protocol_run(rounds: int, iterations: int, store: Path) -> tuple[list[dict], float]:
    """Runs LeNet's protocol (5 replicates x ticket + reinit:3 + random:1) on synthetic
    MNIST-shaped data; returns each level's wall and training seconds, and the total."""
    overrides = {
        "train.iterations": iterations,
        "run.rounds": rounds,
        "run.replicates": 5,
        "run.controls": "reinit:3,random:1",
    }
    loaded = spec.apply_overrides(spec.load("mnist-lenet"), overrides)
    source = _mnist_like()
    desc = descriptor.resolve(loaded, source)
    Store(store).save_run(desc, "bench", None)
    levels: list[dict] = []

    class Timer(Progress):
        def level(self, level, cells, total_steps, start):
            levels.append({"level": level, "cells": len(cells), "start": time.perf_counter()})

        def finish(self):
            levels[-1]["training"] = time.perf_counter() - levels[-1]["start"]

    run = runner.Runner(Store(store), desc, source, Timer())
    train_level = run.train_level

    def timed(level: int, cells: list) -> None:
        started = time.perf_counter()
        train_level(level, cells)
        levels[-1]["wall"] = time.perf_counter() - started

    run.train_level = timed
    started = time.perf_counter()
    run.run(Plan(rounds, 5, "reinit:3,random:1"))
    return levels, time.perf_counter() - started


def level_rows(quick: bool) -> list[Row]:
    """The time a level of 25 LeNet cells spends outside training
    (pruning, checks, stacking, storing) once its programs are compiled, and the LeNet
    protocol end to end in cell-steps per second, store and metrics included."""
    on_gpu = jax.default_backend() == "gpu"
    with tempfile.TemporaryDirectory() as tmp:
        levels, _ = _protocol_run(2 if quick else 4, 100, Path(tmp) / "overhead")
        later = [lv["wall"] - lv["training"] for lv in levels[2:]]
        rounds, iterations = (20, 50000) if on_gpu and not quick else (1, 2000)
        protocol, seconds = _protocol_run(rounds, iterations, Path(tmp) / "protocol")
    cell_steps = sum(lv["cells"] for lv in protocol) * iterations
    return [
        Row(
            "per-level overhead, 25 LeNet cells, levels 2+", float(np.mean(later)), "s", 0.5, False
        ),
        Row(
            f"LeNet protocol, {rounds + 1} levels at {iterations:,} it, 5 replicates x 5 "
            "members, end to end",
            cell_steps / seconds,
            "cell-steps/s",
        ),
        Row("  its wall time", seconds, "s", 120.0 if on_gpu and not quick else None, False),
    ]


def smoke_rows() -> list[Row]:
    """Wall time of `lt run smoke` in a fresh process: cold (empty store and compile cache)
    and warm (a rerun with nothing to train)."""
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ, LT_CACHE_DIR=str(Path(tmp) / "cache"))
        command = [sys.executable, "-m", "ltcli", "run", "smoke", "--store", str(Path(tmp) / "s")]
        times = []
        for _ in range(2):
            started = time.perf_counter()
            done = subprocess.run(command, env=env, capture_output=True, text=True)
            times.append(time.perf_counter() - started)
            if done.returncode != 0:
                click.echo(f"lt run smoke skipped: {done.stderr.strip()}", err=True)
                return []
    return [
        Row("lt run smoke, cold process", times[0], "s", None, False),
        Row("lt run smoke, rerun (nothing to train)", times[1], "s", 2.0, False),
    ]
