"""`lt run --executor slurm` on a real one-node Slurm that the tests start (slurmctld and
slurmd as root, munge for authentication, a configuration in a temporary folder), stopped at
the end; plus the unit tier of the Slurm executor (its parameters, claims held by jobs).
The cluster tests are skipped, saying why, where Slurm cannot start (not installed, not root,
no munge); `make test` installs it where apt works. `make test` sends a test file to one
pytest worker, so one cluster runs at a time."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from ltcli.cli.main import cli
from ltcli.core.errors import LtError
from ltcli.experiment import spec
from ltcli.experiment.plan import plan_of, prepare
from ltcli.storage.store import CellKey, Store
from ltcli.train import checkpoints, executor_slurm, launch, slurm_queue
from ltcli.train.claims import Claims
from ltcli.train.cluster_schedule import Schedule

from helpers import lt_process, runtime_env

DAEMONS = ("slurmctld", "slurmd", "munged", "sbatch", "squeue", "scancel")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _munge_works() -> bool:
    try:
        token = subprocess.run(["munge", "-n"], capture_output=True, timeout=10, check=True)
        subprocess.run(["unmunge"], input=token.stdout, capture_output=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return False
    return True


def _start_munge() -> subprocess.Popen | None:
    """munged as the munge user (Debian makes its key when installed); None if it runs."""
    if _munge_works():
        return None
    Path("/run/munge").mkdir(parents=True, exist_ok=True)
    shutil.chown("/run/munge", "munge", "munge")
    key = Path("/etc/munge/munge.key")
    if not key.exists():
        key.write_bytes(os.urandom(1024))
        shutil.chown(key, "munge", "munge")
        key.chmod(0o400)
    subprocess.run(["runuser", "-u", "munge", "--", "munged"], capture_output=True)
    for _ in range(50):
        if _munge_works():
            return True  # type: ignore[return-value]
        time.sleep(0.1)
    pytest.skip("Slurm: munged did not start (munge -n | unmunge fails)")


def _configuration(folder: Path) -> str:
    host = socket.gethostname().split(".")[0]
    memory = int(Path("/proc/meminfo").read_text().split()[1]) // 1024 * 3 // 4
    return f"""ClusterName=lt-tests
SlurmctldHost={host}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=cred_expire=5
StateSaveLocation={folder}/state
SlurmdSpoolDir={folder}/spool
SlurmctldPidFile={folder}/slurmctld.pid
SlurmdPidFile={folder}/slurmd.pid
SlurmctldLogFile={folder}/slurmctld.log
SlurmdLogFile={folder}/slurmd.log
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
MpiDefault=none
KillWait=1
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
NodeName={host} CPUs={os.cpu_count()} RealMemory={memory} State=UNKNOWN
PartitionName=tests Nodes=ALL Default=YES MaxTime=INFINITE State=UP
"""


@pytest.fixture(scope="module")
def slurm():
    """A one-node Slurm cluster on this machine; yields the environment that reaches it.
    Requeued jobs wait `cred_expire` seconds before they start again (120 by default)."""
    missing = [name for name in DAEMONS if shutil.which(name) is None]
    if missing:
        pytest.skip(
            f"Slurm is not installed ({', '.join(missing)} missing): apt-get install -y "
            "slurm-wlm munge (make test does where apt works)"
        )
    if os.geteuid() != 0:
        pytest.skip("Slurm: the test cluster's daemons run as root")
    pytest.importorskip("submitit")
    munge = _start_munge()
    folder = Path(tempfile.mkdtemp(prefix="slurm", dir="/tmp"))
    for sub in ("state", "spool"):
        (folder / sub).mkdir()
    conf = folder / "slurm.conf"
    conf.write_text(_configuration(folder))
    env = runtime_env(dict(os.environ, SLURM_CONF=str(conf)))  # its tasks run long levels
    try:
        for daemon in ("slurmctld", "slurmd"):
            subprocess.run([daemon, "-f", str(conf)], env=env, check=True, capture_output=True)
        deadline = time.monotonic() + 30
        while "idle" not in _sinfo(env):
            if time.monotonic() > deadline:
                log = (folder / "slurmctld.log").read_text()[-2000:]
                pytest.skip(f"Slurm: the node did not come up idle in 30 s:\n{log}")
            time.sleep(0.2)
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("SLURM_CONF", str(conf))
            yield env
    finally:
        subprocess.run(["scancel", "--full", "--partition", "tests"], env=env, capture_output=True)
        for pid in ("slurmd.pid", "slurmctld.pid"):
            if (folder / pid).exists():
                _stop(int((folder / pid).read_text()))
        if munge:
            subprocess.run(["pkill", "-x", "munged"], capture_output=True)
        shutil.rmtree(folder, ignore_errors=True)


def _sinfo(env: dict[str, str]) -> str:
    found = subprocess.run(["sinfo", "-h", "-o", "%T"], env=env, capture_output=True, text=True)
    return found.stdout


def _stop(pid: int) -> None:
    try:
        os.kill(pid, 15)
        for _ in range(100):
            os.kill(pid, 0)
            time.sleep(0.05)
    except ProcessLookupError:
        pass


def driver(path: Path, store: Path, data_dir: Path, env: dict, *flags: str) -> subprocess.Popen:
    command = lt_process(path, store, data_dir, "--executor", "slurm", *flags)
    return subprocess.Popen(
        command,
        env=dict(env, LT_DATA_DIR=str(data_dir)),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for_checkpoint(proc: subprocess.Popen, store: Path, level: int) -> str:
    """Waits until the task training replicate 0's ticket of `level` has saved a checkpoint
    (its group's, named by its cells); returns its job id."""
    ticket = CellKey(0, level)
    name = checkpoints.name([ticket], by_cells=True)
    deadline = time.monotonic() + 240
    while not list(store.glob(f"*/checkpoints/{name}.npz")):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, f"no task checkpointed {ticket}"
        time.sleep(0.05)
    for record in store.glob("*/slurm/tasks/*.json"):
        if str(ticket.relpath) in json.loads(record.read_text())["cells"]:
            return record.stem
    raise AssertionError(f"no task of {ticket} on record")


def finish(proc: subprocess.Popen, timeout: float = 300) -> tuple[int, str]:
    _, err = proc.communicate(timeout=timeout)
    return proc.returncode, err


def trained_cells(store: Store, run_id: str) -> list[str]:
    """Every cell a task reported trained (submitit's result files), repeats kept."""
    found = []
    for result in (store.run_dir(run_id) / "slurm").glob("*_result.pkl"):
        outcome, value = pickle.loads(result.read_bytes())
        assert outcome == "success", value
        found += value
    return sorted(found)


# A level long enough to stop its task mid-level: eight jitted calls of one evaluation
# period each (`RunContext.segment_evals`), a checkpoint after each. Once the first is seen,
# the rest takes longer than Slurm's grace between scancel's SIGTERM (which submitit ignores)
# and SIGKILL (KillWait=1, then srun's own wait: about 5 s here).
SLOW = {"iterations": "4800it", "eval_every": "600it", "batch_size": 120}


@pytest.mark.system
def test_through_requeue_cancel_and_a_killed_driver_the_cells_are_the_local_executors(
    write_spec, tmp_path, real_data, slurm
):
    """One run through every fault. Its level-0 task is sent SIGUSR2, what Slurm sends a
    task before its time limit (``--signal``) and when it is preempted: submitit requeues
    it, and it resumes from its checkpoint. The driver is SIGKILLed meanwhile, and a local
    lt run is refused while the job holds the cells. A new driver attaches; level 1's task
    is cancelled mid-level (scancel): the driver names it and fails. A detached rerun
    resubmits its cells, and an attached one follows to the end. The cells are those of an
    uninterrupted local run, bit for bit, each trained by one task once."""
    path = write_spec(train=SLOW, run={"rounds": 1, "deterministic": True})
    local = Store(tmp_path / "local")  # as the tasks run: another process, XLA's default
    command = lt_process(path, local.root, real_data[1])
    subprocess.run(command, env=slurm, check=True, capture_output=True, timeout=600)
    (run_id,) = local.run_ids()
    store = tmp_path / "slurm"
    flags = ("--checkpoint-every", "0", "--progress-every", "1")

    proc = driver(path, store, real_data[1], slurm, *flags)
    first = wait_for_checkpoint(proc, store, 0)
    subprocess.run(["scancel", "--signal=USR2", first], env=slurm, check=True)
    proc.kill()  # the driver, SIGKILLed: the tasks go on
    proc.wait()
    with pytest.raises(LtError, match=f"being trained by Slurm job\\(s\\) {first}"):
        launch.run(spec.load(str(path)), Store(store), data_dir=real_data[1])

    proc = driver(path, store, real_data[1], slurm, *flags)  # attaches
    second = wait_for_checkpoint(proc, store, 1)
    subprocess.run(["scancel", second], env=slurm, check=True)
    code, err = finish(proc)
    assert code == 1 and f"task {second} ended before its cells finished" in err, err
    shown = CliRunner().invoke(cli, ["status", run_id[:12], "--store", str(store)])
    assert shown.exit_code == 0 and f"task {second} ended before" in shown.output, shown.output
    assert "1 cells stored" in shown.output

    code, err = finish(driver(path, store, real_data[1], slurm, *flags, "--detach"))
    assert code == 0 and "detached: 1 of 2 cells stored" in err, err
    assert f"resubmitting the unfinished cells of task(s) {second}" in err
    code, err = finish(driver(path, store, real_data[1], slurm, *flags))  # follows the tasks
    assert code == 0, err

    log = (store / run_id / "slurm" / f"{first}_0_log.out").read_text()
    assert f"Requeued job {first}" in log, log[-2000:]
    remote = Store(store)
    cells = list(local.finished_cells(run_id))
    assert cells == list(remote.finished_cells(run_id)) == [CellKey(0, 0), CellKey(0, 1)]
    for cell in cells:
        for name in ("mask.npz", "weights.npz"):  # a control keeps no weights
            a, b = (s.cell_dir(run_id, cell) / name for s in (local, remote))
            assert a.exists() == b.exists()
            assert not a.exists() or a.read_bytes() == b.read_bytes(), (cell, name)
        curves = [s.read_metrics(run_id, cell)["curve"] for s in (local, remote)]
        assert curves[0] == curves[1]
    assert trained_cells(remote, run_id) == [str(c.relpath) for c in cells]  # once each
    assert not list((store / run_id / "claims").glob("*.json"))  # every claim released


# -- the unit tier ----------------------------------------------------------------------------


@pytest.mark.unit
def test_slurm_parameters_come_from_the_fields_then_sbatch_variables(monkeypatch, write_spec):
    base = spec.load(str(write_spec()))
    for name in ("SBATCH_PARTITION", "SBATCH_TIMELIMIT", "SBATCH_ACCOUNT", "SBATCH_QOS"):
        monkeypatch.delenv(name, raising=False)
    assert executor_slurm.parameters(base) == {"time": 60, "signal_delay_s": 120}
    monkeypatch.setenv("SBATCH_PARTITION", "gpu")
    monkeypatch.setenv("SBATCH_TIMELIMIT", "0:20:00")
    assert executor_slurm.parameters(base) == {
        "partition": "gpu",
        "time": 20,
        "signal_delay_s": 120,
    }
    given = spec.apply_overrides(
        base,
        {
            "slurm.partition": "a100",
            "slurm.time": "8",
            "slurm.gpus": 2,
            "slurm.cpus": 16,
            "slurm.mem": 64,
            "slurm.account": "lab",
            "slurm.qos": "high",
        },
    )
    assert executor_slurm.parameters(given) == {
        "partition": "a100",
        "time": 8,
        "gpus_per_task": 2,
        "cpus_per_task": 16,
        "mem": "64GB",
        "account": "lab",
        "qos": "high",
        "signal_delay_s": 120,  # a quarter of 8 minutes
    }
    assert executor_slurm.parameters(spec.apply_overrides(base, {"slurm.time": "2"})) == {
        "partition": "gpu",
        "time": 2,
        "signal_delay_s": 30,
    }


@pytest.mark.unit
def test_a_slurm_time_limit_is_read_in_every_sbatch_form(write_spec):
    from ltcli.experiment.field_types import slurm_minutes

    forms = {"90": 90, "5:30": 5.5, "1:02:03": 62.05, "2-3": 3060, "2-3:04": 3064}
    assert {k: slurm_minutes(k) for k in forms} == pytest.approx(forms)
    assert slurm_minutes("1-0:0:30") == pytest.approx(1440.5)
    base = spec.load(str(write_spec()))
    for bad in ("1:2:3:4", "soon", "-5", "0"):
        with pytest.raises(Exception, match=r"slurm\.time"):
            spec.apply_overrides(base, {"slurm.time": bad})


@pytest.mark.unit
def test_slurm_fields_are_not_in_the_run_id(write_spec):
    base = spec.load(str(write_spec()))
    moved = spec.apply_overrides(base, {"slurm.partition": "gpu", "slurm.tasks": 9})
    assert prepare(base, None)[0].run_id == prepare(moved, None)[0].run_id


@pytest.mark.unit
def test_squeue_is_asked_once_for_many_jobs_and_its_answers_are_kept(tmp_path, monkeypatch):
    calls = tmp_path / "calls"
    squeue = tmp_path / "squeue"  # a stand-in on PATH that records its arguments
    squeue.write_text(
        f'#!/bin/sh\necho "$@" >> {calls}\n[ -e {tmp_path}/down ] && exit 1\n'
        'echo "12_0 RUNNING"\necho "12_1 PENDING"\necho "13 COMPLETED"\n'
    )
    squeue.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    monkeypatch.setattr(slurm_queue, "_SEEN", {})
    got = slurm_queue.states(["12_0", "12_1", "13", "14"])
    assert got == {"12_0": "RUNNING", "12_1": "PENDING", "13": None, "14": None}
    assert slurm_queue.state("12_1") == "PENDING"  # kept: squeue not asked again
    (asked,) = calls.read_text().splitlines()
    assert "--jobs 12_0,12_1,13,14" in asked
    (tmp_path / "down").touch()  # squeue fails: the job counts as alive
    assert slurm_queue.state("15") == "UNKNOWN"


@pytest.fixture
def claimed(write_spec, tmp_path, monkeypatch):
    """A run whose dense ticket is claimed by Slurm job 7_0, in a state the test sets."""
    loaded = spec.load(str(write_spec()))
    desc, _ = prepare(loaded, None)
    store = Store(tmp_path)
    store.save_run(desc, loaded.experiment, None)
    claims = Claims(store, desc.run_id)
    assert claims.claim(CellKey(0, 0))
    claims.assign([CellKey(0, 0)], "7_0")
    states = {"7_0": "PENDING"}
    monkeypatch.setattr(slurm_queue, "states", lambda jobs: {j: states.get(j) for j in jobs})
    return loaded, store, desc.run_id, states


@pytest.mark.unit
def test_a_claim_handed_to_a_job_holds_while_slurm_holds_the_job(claimed):
    loaded, store, run_id, states = claimed
    other = Claims(store, run_id, lease=0.0)
    assert other.holder(CellKey(0, 0))["job"] == "7_0"
    assert not other.claim(CellKey(0, 0))  # long past its lease, but the job is queued
    with pytest.raises(LtError, match=r"1 of its cells are being trained by Slurm job\(s\) 7_0"):
        launch.run(loaded, store)
    del states["7_0"]  # the job left the queue (cancelled, failed or done)
    assert other.holder(CellKey(0, 0)) is None and other.claim(CellKey(0, 0))


@pytest.mark.unit
def test_a_cluster_driver_claims_nothing_while_a_local_driver_holds_the_run(claimed):
    loaded, store, run_id, states = claimed
    del states["7_0"]
    desc, source = prepare(loaded, None)
    schedule = Schedule(loaded, store, run_id, plan_of(loaded, desc, source), Claims(store, run_id))
    ready = schedule.ready(set())
    assert ready == [CellKey(0, 0)]
    with store.lock(run_id):
        assert schedule.claim_groups(ready, 4) == {}
    assert schedule.claim_groups(ready, 4) == {0: [[CellKey(0, 0)]]}


@pytest.mark.unit
def test_without_submitit_the_slurm_executor_exits_2_saying_how_to_install(
    write_spec, tmp_path, monkeypatch
):
    monkeypatch.setitem(sys.modules, "submitit", None)
    path = write_spec()
    result = CliRunner().invoke(
        cli, ["run", str(path), "--executor", "slurm", "--store", str(tmp_path / "s")]
    )
    assert result.exit_code == 2
    assert "pip install 'lt[slurm]'" in result.output
    assert not (tmp_path / "s").exists()  # nothing written


@pytest.mark.unit
def test_barriers_missing_from_stored_tickets_are_refused_before_anything_is_submitted(
    write_spec, tmp_path, monkeypatch
):
    from ltcli.core.errors import UsageError
    from ltcli.experiment.plan import Plan

    pytest.importorskip("submitit")
    monkeypatch.setattr(Plan, "barriers_missing", lambda self, store, run_id: [CellKey(0, 1)])
    loaded = spec.apply_overrides(spec.load(str(write_spec())), {"run.barriers": True})
    with pytest.raises(UsageError, match="1 stored tickets of this run lack their level"):
        executor_slurm.run(loaded, Store(tmp_path / "s"))
    assert not (tmp_path / "s").exists()  # nothing written, nothing submitted


@pytest.mark.unit
def test_a_levels_groups_go_as_one_job_array_and_their_claims_to_its_tasks(claimed, monkeypatch):
    """submit_ready packs a level's ready cells into at most slurm.tasks groups, submits
    them in one map_array call (one job array), hands each group's claims to its task and
    records the task. sbatch is replaced by a recorder of what it would be given."""
    loaded, store, run_id, states = claimed
    del states["7_0"]  # the fixture's job left the queue: the dense ticket is free
    submitit = pytest.importorskip("submitit")
    arrays = []

    class Recorder:
        def __init__(self, folder, max_num_timeout):
            pass

        def update_parameters(self, **parameters):
            pass

        def map_array(self, fn, submissions, groups):
            arrays.append(groups)
            job = 8 + len(arrays)
            return [type("Job", (), {"job_id": f"{job}_{i}"}) for i in range(len(groups))]

    monkeypatch.setattr(submitit, "SlurmExecutor", Recorder)
    loaded = spec.apply_overrides(loaded, {"run.controls": "reinit:1,random:2"})
    desc, source = prepare(loaded, None)
    plan = plan_of(loaded, desc, source)
    submission = executor_slurm.Submission(loaded, str(store.root), None, "t", 60.0, {})
    assert executor_slurm.submit_ready(submission, run_id, plan) == ["9_0"]
    manifest = store.cell_dir(run_id, CellKey(0, 0)) / "manifest.json"
    manifest.parent.mkdir(parents=True)
    manifest.write_text("{}")  # as if stored: level 1's ticket and its 3 controls are ready
    monkeypatch.setattr(Store, "read_metrics", lambda self, run, cell: {"diverged": False})
    jobs = executor_slurm.submit_ready(submission, run_id, plan)
    assert jobs == ["10_0", "10_1", "10_2", "10_3"]
    assert [[len(group) for group in groups] for groups in arrays] == [[1], [1, 1, 1, 1]]
    states.update({job: "PENDING" for job in jobs})
    held = {cell: record["job"] for cell, record in Claims(store, run_id).holders().items()}
    level_1 = list(plan.cells(1))
    assert sorted(held[c] for c in level_1) == jobs and len(held) == 4
    recorded = {t["job"]: t["cells"] for t in executor_slurm.tasks(store, run_id)}
    assert recorded["9_0"] == ["replicate_0/level_0/ticket"]
    assert sorted(c for job in jobs for c in recorded[job]) == sorted(
        str(c.relpath) for c in level_1
    )


@pytest.mark.unit
def test_detach_without_slurm_is_refused(write_spec, tmp_path):
    result = CliRunner().invoke(
        cli, ["run", str(write_spec()), "--detach", "--store", str(tmp_path)]
    )
    assert result.exit_code == 2 and "--detach" in result.output
