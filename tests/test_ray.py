"""`lt run --executor ray` on a real local Ray cluster that the tests start: a head and a
second node, one CPU each, in worker processes of their own (no mocks). Skipped where Ray is
not installed; CI installs it (`.[ray]`). `make test` sends a test file to one pytest worker
(`--dist loadfile`), so one cluster runs at a time; it is stopped at the end."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from ltcli.experiment import spec
from ltcli.storage.store import CellKey, Store
from ltcli.train import launch

from helpers import lt_process

pytest.importorskip("ray")
pytestmark = [pytest.mark.system, pytest.mark.ray]

RAY = str(Path(sys.executable).with_name("ray"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def cluster():
    """A head node and a second node on this machine; yields the address."""
    temp = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # short: Ray's sockets live there
    port = _free_port()
    address = f"127.0.0.1:{port}"
    common = ["--num-cpus", "1", "--disable-usage-stats"]
    head = [RAY, "start", "--head", "--port", str(port), "--temp-dir", temp, *common]
    try:
        subprocess.run([*head, "--include-dashboard=false"], check=True, capture_output=True)
        subprocess.run(
            [RAY, "start", "--address", address, *common], check=True, capture_output=True
        )
        yield address
    finally:
        subprocess.run([RAY, "stop", "--force"], capture_output=True)
        shutil.rmtree(temp, ignore_errors=True)


def driver(path: Path, store: Path, data_dir: Path, address: str, *flags: str) -> subprocess.Popen:
    command = lt_process(path, store, data_dir, "--executor", "ray", "--address", address, *flags)
    env = dict(os.environ, LT_DATA_DIR=str(data_dir))
    return subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def finish(proc: subprocess.Popen, timeout: float = 400) -> str:
    _, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err
    return err


def trained_by(stderr: str) -> int:
    return int(re.search(r"this driver trained (\d+) of", stderr).group(1))


def test_ray_stores_the_same_cells_and_numbers_as_the_local_executor(
    write_spec, tmp_path, real_data, cluster
):
    path = write_spec(run={"rounds": 1, "controls": "reinit:1"})
    local = Store(tmp_path / "local")
    loaded = spec.apply_overrides(spec.load(str(path)), {"run.deterministic": True})
    run_id = launch.run(loaded, local, data_dir=real_data[1])
    err = finish(driver(path, tmp_path / "ray", real_data[1], cluster, "--deterministic"))
    assert trained_by(err) == 3
    remote = Store(tmp_path / "ray")
    cells = list(local.finished_cells(run_id))
    assert cells == list(remote.finished_cells(run_id)) and len(cells) == 3
    for cell in cells:
        for name in ("mask.npz", "weights.npz"):
            a, b = (s.cell_dir(run_id, cell) / name for s in (local, remote))
            assert a.exists() == b.exists()
            if a.exists():
                assert a.read_bytes() == b.read_bytes(), (cell, name)
        assert (
            local.read_metrics(run_id, cell)["curve"] == remote.read_metrics(run_id, cell)["curve"]
        )
    assert not list((tmp_path / "ray" / run_id / "claims").glob("*.json"))  # all released


def test_ray_measures_the_barriers_of_stored_levels_as_the_local_executor(
    write_spec, tmp_path, real_data, cluster
):
    path = write_spec(run={"rounds": 2, "deterministic": True})
    loaded = spec.load(str(path))
    run_id = launch.run(loaded, Store(tmp_path / "later"), data_dir=real_data[1])
    start = Store(tmp_path / "start")
    launch.run(spec.apply_overrides(loaded, {"run.barriers": True}), start, data_dir=real_data[1])
    err = finish(driver(path, tmp_path / "later", real_data[1], cluster, "--barriers"))
    assert trained_by(err) == 0
    assert "measuring the level barriers of 2 stored tickets" in err
    later = Store(tmp_path / "later")
    for level in (1, 2):
        ticket = CellKey(0, level)
        recorded = later.read_metrics(run_id, ticket)["level_barrier"]
        assert recorded == start.read_metrics(run_id, ticket)["level_barrier"]


def test_two_drivers_train_each_cell_once_and_a_killed_worker_is_retried(
    write_spec, tmp_path, real_data, cluster
):
    path = write_spec(train={"iterations": "1000it"}, run={"rounds": 2, "replicates": 2})
    first = driver(path, tmp_path, real_data[1], cluster)
    deadline = time.monotonic() + 300
    while not list(tmp_path.glob("*/claims/*.json")):
        assert first.poll() is None and time.monotonic() < deadline, "no claim seen"
        time.sleep(0.1)
    second = driver(path, tmp_path, real_data[1], cluster)
    victim = None
    while victim is None:  # a worker training a group, killed mid-way: Ray retries the group
        assert first.poll() is None and time.monotonic() < deadline, "no worker seen training"
        found = subprocess.run(["pgrep", "-f", "ray::train_group"], capture_output=True, text=True)
        victim = int(found.stdout.split()[0]) if found.stdout.split() else None
        time.sleep(0.2)
    time.sleep(1.0)  # well inside its training
    os.kill(victim, signal.SIGKILL)
    counts = [trained_by(finish(first)), trained_by(finish(second))]
    (run_id,) = Store(tmp_path).run_ids()
    assert len(list(Store(tmp_path).finished_cells(run_id))) == 6
    assert sum(counts) == 6, counts  # every cell trained, none twice
