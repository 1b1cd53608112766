"""``lt run --executor slurm``: a run's cells trained as Slurm jobs, submitted through submitit.

The ready cells of each level (`ltcli.train.cluster_schedule`) are packed into at most
``slurm.tasks`` groups and submitted together as one job array, a task per group
(`submit_ready`): the driver submits what is ready when it starts, and each task what its own
cells made ready when it ends (the next level of its replicates). The cells are claimed
first and their claims handed to the task's job (`Claims.assign`): they hold while Slurm
queues or runs it, so no other driver (Slurm, Ray or local) trains them, and they are free as
soon as it leaves the queue unfinished.

A task trains its group exactly as the local executor would (`ltcli.train.cluster_task`), so
a run goes on with no driver: ``--detach`` submits and exits. Without it the driver stays,
shows the cells stored, running, queued and failed with an ETA, submits what no task did,
shows each task that ended with its cells unfinished as soon as it sees it (its job and its
log's tail), and fails once nothing else runs or waits in the queue. A task reaching its time
limit is signalled ``SIGNAL_DELAY_SECONDS`` before (``SIGUSR2``, as a preempted task is where
the cluster sends it one) and requeued by submitit (`SlurmGroup` is checkpointable); a task
the cluster requeues itself on preemption keeps its job id too. Either way it resumes each
cell from its level's last checkpoint. A task cancelled, failed or killed leaves its cells
unfinished and unclaimed: the next ``lt run`` resubmits them.

The store must be a folder every node sees at the same path (each task checks a token the
driver wrote into it); the data and lt's cache are found through ``$LT_DATA_DIR`` and
``$LT_CACHE_DIR``, which reach the tasks with the driver's environment (docs/slurm.md).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import signal
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from ltcli.core import atomic, extras
from ltcli.core.errors import LtError, UsageError
from ltcli.core.meter import Meter
from ltcli.experiment.field_types import slurm_minutes
from ltcli.experiment.plan import Plan, plan_of, prepare
from ltcli.experiment.spec import Spec
from ltcli.storage.store import CellKey, Store
from ltcli.train import slurm_queue
from ltcli.train.claims import Claims
from ltcli.train.cluster_schedule import Schedule
from ltcli.train.divergence import DivergedError

SIGNAL_DELAY_SECONDS = 120
"""How long before its time limit a task is signalled to checkpoint and requeue (a quarter of
the limit where that is shorter)."""
DEFAULT_MINUTES = 60
"""A task's time limit when neither ``slurm.time`` nor ``$SBATCH_TIMELIMIT`` gives one."""
MAX_TIMEOUTS = 100
"""How often submitit requeues a task that reached its time limit (each time it resumes from
its checkpoint); a preempted task is requeued however often."""
POLL_SECONDS = 5.0
"""How often an attached driver looks at the store and the queue."""
LOG_TAIL_LINES = 20
"""Lines of a failed task's log shown."""
FOLDER = "slurm"
"""In the run's folder: the tasks' records (``tasks/``) and submitit's files and logs."""
TOKEN = ".lt-slurm-token"
"""In the store: a random token each task reads before it trains (`_check_visible`)."""
_ENV_DEFAULTS = {
    "partition": "SBATCH_PARTITION",
    "time": "SBATCH_TIMELIMIT",
    "gpus_per_task": "SBATCH_GPUS_PER_TASK",
    "mem": "SBATCH_MEM_PER_NODE",
    "account": "SBATCH_ACCOUNT",
    "qos": "SBATCH_QOS",
}
"""submitit's parameter -> the variable sbatch itself reads for it: its default here."""


def _submitit() -> Any:
    return extras.require(
        "submitit",
        "--executor slurm",
        "pip install 'lt[slurm]' (from a clone: pip install -e '.[slurm]')",
    )


def parameters(spec: Spec) -> dict[str, Any]:
    """submitit's Slurm parameters of `spec`'s tasks: each ``slurm.*`` field, else the
    variable sbatch reads for it (``$SBATCH_PARTITION``, ...), else the cluster's default;
    the time limit else `DEFAULT_MINUTES` (submitit always sets one), and the requeue signal
    `SIGNAL_DELAY_SECONDS` before it, or a quarter of it where that is shorter.

    Raises:
      UsageError: the time limit is not one of sbatch's forms.
    """
    given = {
        "partition": spec["slurm.partition"],
        "time": spec["slurm.time"],
        "gpus_per_task": spec["slurm.gpus"] or None,
        "cpus_per_task": spec["slurm.cpus"] or None,
        "mem": f"{spec['slurm.mem']}GB" if spec["slurm.mem"] else None,
        "account": spec["slurm.account"],
        "qos": spec["slurm.qos"],
    }
    found: dict[str, Any] = {}
    for name, value in given.items():
        value = value or os.environ.get(_ENV_DEFAULTS.get(name, ""), "") or None
        if value is not None:
            found[name] = value
    limit = found.get("time", DEFAULT_MINUTES)
    try:
        found["time"] = math.ceil(slurm_minutes(str(limit)))  # submitit counts in minutes
    except ValueError as err:
        raise UsageError(
            f"slurm time limit {limit!r} (--slurm-time or $SBATCH_TIMELIMIT): not MINUTES or "
            "D-HH:MM:SS"
        ) from err
    found["signal_delay_s"] = min(SIGNAL_DELAY_SECONDS, 60 * found["time"] // 4)
    return found


# -- the task --------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Submission:
    """What every task of a run is submitted with, resolved once by the driver, so that a
    task submitting the next level submits it as the driver would (the ``$SBATCH_*``
    defaults are read on the driver's host, not in a job, which does not see them).

    Attributes:
      spec: the experiment.
      store_root: the store, as an absolute path.
      data_dir: the data folder given to ``lt run``, absolute, or None.
      token: the store's token (`_check_visible`).
      checkpoint_seconds: how often a task saves its level's state.
      parameters: submitit's Slurm parameters (`parameters`).
    """

    spec: Spec
    store_root: str
    data_dir: str | None
    token: str
    checkpoint_seconds: float
    parameters: dict[str, Any]

    @property
    def store(self) -> Store:
        return Store(Path(self.store_root))


class SlurmGroup:
    """A Slurm task: checks that it sees the store, trains one group of a level's cells,
    submits what they made ready, then releases their claims. Preempted with a signal or at
    its time limit, submitit requeues it with the same arguments (`checkpoint`): the group
    resumes from its cells' checkpoints."""

    def __call__(self, submission: Submission, cells: list[str]) -> list[str]:
        from ltcli.train import cluster_task  # JAX: only in the task

        submitit = _submitit()
        _check_visible(submission.store.root, submission.token)
        spec, data_dir = submission.spec, submission.data_dir
        desc, source = prepare(spec, Path(data_dir) if data_dir else None)
        plan = plan_of(spec, desc, source)
        trained = cluster_task.train_group(
            spec, submission.store_root, data_dir, plan.spawn, cells, submission.checkpoint_seconds
        )
        try:  # before our claims go, so a driver never sees a moment with nothing queued
            submit_ready(submission, desc.run_id, plan)
        except Exception as err:  # its cells are stored: a driver submits what follows
            print(
                f"lt: could not submit the next cells from this node ({err}); the next lt run "
                "submits them",
                file=sys.stderr,
            )
        job = submitit.JobEnvironment().job_id
        Claims(submission.store, desc.run_id, owner=f"slurm:{job}").release(
            CellKey.from_relpath(path) for path in cells
        )
        return trained

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        """What submitit requeues when Slurm signals the task: the same call."""
        return _submitit().helpers.DelayedSubmission(self, *args, **kwargs)


def _check_visible(root: Path, token: str) -> None:
    """The driver wrote `token` into the store's `TOKEN` file; a node that cannot read it
    does not see the store the driver writes."""
    probe = root / TOKEN
    try:
        seen = probe.read_text()
    except OSError:
        seen = None
    if seen != token:
        raise UsageError(
            f"--store {root}: this node ({os.uname().nodename}) does not see the store the "
            "driver wrote; the store must be a folder every node mounts at the same path"
        )


# -- submitting ------------------------------------------------------------------------------


def submit_ready(
    submission: Submission, run_id: str, plan: Plan, *, again: bool = False
) -> list[str]:
    """Claims the run's ready cells and submits those of each level as one job array (at
    most ``slurm.tasks`` tasks); returns the job ids submitted. Cells a task was given before
    and left unfinished (cancelled, failed) only `again`: a driver starting resubmits them,
    but neither a task nor a driver following the tasks does, so a cancelled task stays
    cancelled until the next ``lt run``. Claims nothing while a local driver holds the run.
    Slurm's requeue signal waits while jobs are submitted and their claims handed over."""
    submitit = _submitit()
    spec, store = submission.spec, submission.store
    _ask_queue(store, run_id)
    claims = Claims(store, run_id)
    schedule = Schedule(spec, store, run_id, plan, claims)
    done = set(store.finished_cells(run_id))
    ready = schedule.ready(done)
    if not again:
        given = {cell for task in tasks(store, run_id) for cell in task["cells"]}
        ready = [c for c in ready if str(c.relpath) not in given]
    groups = schedule.claim_groups(ready, spec["slurm.tasks"])
    submitted = []
    for level, level_groups in sorted(groups.items()):
        folder = store.run_dir(run_id) / FOLDER
        executor = submitit.SlurmExecutor(folder=folder, max_num_timeout=MAX_TIMEOUTS)
        executor.update_parameters(job_name=f"lt-{run_id[:8]}-L{level}", **submission.parameters)
        paths = [[str(c.relpath) for c in group] for group in level_groups]
        with _held(signal.SIGUSR2):
            try:
                with _submission_env():
                    jobs = executor.map_array(SlurmGroup(), [submission] * len(paths), paths)
            except Exception:
                claims.release(c for group in level_groups for c in group)
                raise
            for job, group in zip(jobs, level_groups, strict=True):
                claims.assign(group, job.job_id)
                _record_task(store, run_id, job.job_id, group)
                submitted.append(job.job_id)
    return submitted


@contextlib.contextmanager
def _held(signum: int) -> Iterator[None]:
    """Delivers `signum` only after the block (in a task: submitit's requeue), so that what
    is submitted is handed its claims before the task may stop."""
    signal.pthread_sigmask(signal.SIG_BLOCK, {signum})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signum})


@contextlib.contextmanager
def _submission_env() -> Iterator[None]:
    """sbatch's environment for lt's tasks: without the variables of the job it may be
    submitted from (``SLURM_*`` but the configuration's path, ``SUBMITIT_*``), which the new
    job would inherit, and without the ``SBATCH_*`` defaults that `parameters` already
    resolved (sbatch prefers them to the script's lines, so a field would lose to them)."""
    hidden = {
        name: os.environ.pop(name)
        for name in list(os.environ)
        if (name.startswith(("SLURM_", "SUBMITIT_")) and name != "SLURM_CONF")
        or name in _ENV_DEFAULTS.values()
    }
    try:
        yield
    finally:
        os.environ.update(hidden)


def _record_task(store: Store, run_id: str, job: str, cells: list[CellKey]) -> None:
    record = {"job": job, "cells": [str(c.relpath) for c in cells], "submitted": time.time()}
    path = store.run_dir(run_id) / FOLDER / "tasks" / f"{job}.json"
    atomic.write_bytes(path, orjson.dumps(record))


# -- what the tasks did ----------------------------------------------------------------------


def tasks(store: Store, run_id: str) -> list[dict[str, Any]]:
    """The run's submitted tasks, oldest first: job id, cells (relative paths), submitted."""
    folder = store.run_dir(run_id) / FOLDER / "tasks"
    records = []
    for path in folder.glob("*.json") if folder.is_dir() else ():
        try:
            records.append(orjson.loads(path.read_bytes()))
        except orjson.JSONDecodeError:
            continue
    return sorted(records, key=lambda r: r["submitted"])


def ended_unfinished(store: Store, run_id: str) -> list[tuple[dict[str, Any], list[CellKey], str]]:
    """Tasks that left Slurm's queue with cells of theirs unfinished (cells not handed to a
    later task): each with those cells and why (its error and log tail, or that it was
    cancelled or killed)."""
    records = tasks(store, run_id)
    latest = {cell: i for i, task in enumerate(records) for cell in task["cells"]}
    finished = set(store.finished_cells(run_id))
    found = []
    for i, task in enumerate(records):
        mine = [CellKey.from_relpath(c) for c in task["cells"] if latest[c] == i]
        mine = [c for c in mine if c not in finished]
        if not mine or slurm_queue.state(task["job"]) is not None:
            continue
        mine = [c for c in mine if not store.is_finished(run_id, c)]  # stored as it left
        if mine:
            found.append((task, mine, _why_ended(store.run_dir(run_id) / FOLDER, task["job"])))
    return found


def _why_ended(folder: Path, job: str) -> str:
    result = folder / f"{job}_0_result.pkl"
    log = folder / f"{job}_0_log.err"
    tail = ""
    if log.is_file():
        lines = log.read_text(errors="replace").splitlines()[-LOG_TAIL_LINES:]
        tail = "\n".join(f"    {line}" for line in lines)
    if result.is_file():
        return f"task {job} failed; the end of its log ({log}):\n{tail}"
    return (
        f"task {job} ended before its cells finished (cancelled, or killed by Slurm); "
        f"lt run resubmits them. The end of its log ({log}):\n{tail}"
    )


def counts(store: Store, run_id: str, cells: list[CellKey]) -> dict[str, int]:
    """How many of `cells` are stored, running, queued, or neither (unclaimed: waiting for
    their tickets, or for a driver to submit them)."""
    finished = set(store.finished_cells(run_id))
    holders = Claims(store, run_id).holders()
    found = {"stored": 0, "running": 0, "queued": 0, "waiting": 0}
    for cell in cells:
        if cell in finished:
            found["stored"] += 1
        elif cell in holders and "job" in holders[cell]:
            state = slurm_queue.state(holders[cell]["job"])
            found["running" if state == "RUNNING" else "queued"] += 1
        else:
            found["waiting"] += 1
    return found


# -- the driver ------------------------------------------------------------------------------


def run(
    spec: Spec,
    store: Store,
    *,
    data_dir: Path | None = None,
    name: str | None = None,
    progress_every: float = 60.0,
    checkpoint_seconds: float = 60.0,
    detach: bool = False,
) -> str:
    """Runs (or resumes, or follows) the experiment `spec` as Slurm jobs; returns the run id.
    With `detach`, returns once the ready cells are submitted.

    Raises:
      UsageError: submitit is missing, or stored tickets lack the level barriers asked for.
      DivergedError: as the local executor.
      LtError: tasks ended with their cells unfinished (failed, cancelled or killed), and
        nothing else runs or is queued.
    """
    _submitit()
    desc, source = prepare(spec, data_dir)
    plan = plan_of(spec, desc, source)
    root = store.root.resolve()  # tasks start elsewhere: never a relative path
    store = Store(root)
    if missing := plan.barriers_missing(store, desc.run_id):
        raise UsageError(
            f"--executor slurm --barriers: {len(missing)} stored tickets of this run lack their "
            "level barrier (their levels trained without --barriers); measure them from the "
            "store first with the same lt run without --executor (nothing trains), then "
            "submit"
        )
    store.save_run(desc, spec.experiment, name)
    run_id = desc.run_id
    data = str(data_dir.resolve()) if data_dir else None
    submission = Submission(
        spec, str(root), data, _token(store), checkpoint_seconds, parameters(spec)
    )
    schedule = Schedule(spec, store, run_id, plan, Claims(store, run_id))
    meter = Meter("cells", len(schedule.cells), unit="cells", every=progress_every)
    _ask_queue(store, run_id)
    stale = ended_unfinished(store, run_id)
    if stale:
        jobs = ", ".join(task["job"] for task, _, _ in stale)
        meter.note(f"resubmitting the unfinished cells of task(s) {jobs}")
    jobs = submit_ready(submission, run_id, plan, again=True)
    if jobs:
        meter.note(f"submitted Slurm job(s) {', '.join(sorted({j.split('_')[0] for j in jobs}))}")
    if detach:
        now = counts(store, run_id, schedule.cells)
        meter.close(
            f"detached: {now['stored']} of {len(schedule.cells)} cells stored, "
            f"{now['running']} running, {now['queued']} queued; the tasks submit the next "
            "levels themselves: follow with lt status RUN, or the same lt run"
        )
        return run_id
    _follow(submission, run_id, plan, schedule, meter)
    return run_id


def _follow(
    submission: Submission, run_id: str, plan: Plan, schedule: Schedule, meter: Meter
) -> None:
    """Follows the run's tasks to the end: submits what no task did, shows each task that
    ended with cells unfinished once, and fails once nothing else runs or is queued."""
    store = submission.store
    done = set(store.finished_cells(run_id)) & set(schedule.cells)
    meter.add(len(done))
    told: set[str] = set()
    while True:
        _ask_queue(store, run_id)  # the states this poll reads, in one squeue call
        schedule.ready(done)  # notes the replicates stopped by a diverged ticket
        if schedule.settled(done):
            break
        submit_ready(submission, run_id, plan)
        ended = ended_unfinished(store, run_id)
        for task, _, why in ended:
            if task["job"] not in told:  # each shown once, as soon as it is seen
                meter.note(why)
                told.add(task["job"])
        now = counts(store, run_id, schedule.cells)
        failed = sum(len(cells) for _, cells, _ in ended)
        meter.label = f"cells ({now['running']} running, {now['queued']} queued, {failed} failed)"
        if ended and not any(_ask_queue(store, run_id).values()):  # nothing else will change
            meter.close()
            jobs = ", ".join(task["job"] for task, _, _ in ended)
            raise LtError(
                f"run {run_id[:12]}: task(s) {jobs} ended with cells unfinished (above); the "
                "cells that could train are stored; run lt run again to resubmit the rest"
            )
        time.sleep(POLL_SECONDS)
        new = (set(store.finished_cells(run_id)) & set(schedule.cells)) - done
        meter.add(len(new))
        done |= new
    meter.close()
    if schedule.stopped:
        raise DivergedError("; ".join(schedule.stopped.values()))


def _ask_queue(store: Store, run_id: str) -> dict[str, str | None]:
    """The state of every task of the run, in one squeue call; what is asked of a job in the
    next few seconds (its cells' claims, `ended_unfinished`, `counts`) is answered from it."""
    return slurm_queue.states(task["job"] for task in tasks(store, run_id))


def _token(store: Store) -> str:
    """The token tasks check to see that they share the driver's store: made once per store
    (linked into place, so two drivers starting together agree on it), and kept, so that a
    requeued task of an earlier driver still finds it."""
    probe = store.root / TOKEN
    if not probe.is_file():
        store.root.mkdir(parents=True, exist_ok=True)
        draft = store.root / f".{TOKEN}.{uuid.uuid4().hex}"
        atomic.write_bytes(draft, uuid.uuid4().hex.encode())
        with contextlib.suppress(FileExistsError):
            os.link(draft, probe)
        draft.unlink()
    return probe.read_text()


def status(store: Store, run_id: str) -> str:
    """What ``lt status RUN`` prints: the cells stored, those Slurm runs and queues (by job),
    those other drivers hold, and each task that ended with its cells unfinished, with why
    and its log's tail (the next ``lt run`` resubmits them)."""
    stored = sum(1 for _ in store.finished_cells(run_id))
    _ask_queue(store, run_id)
    holders = Claims(store, run_id).holders()
    by_state: dict[str, set[str]] = {}
    counted: dict[str, int] = {}
    others = 0
    for record in holders.values():
        if "job" not in record:
            others += 1
            continue
        state = (slurm_queue.state(record["job"]) or "ENDED").lower()
        by_state.setdefault(state, set()).add(record["job"])
        counted[state] = counted.get(state, 0) + 1
    lines = [f"run {run_id[:12]}: {stored} cells stored"]
    for state in sorted(by_state):
        jobs = sorted(by_state[state])
        shown = ", ".join(jobs[:8]) + (f" and {len(jobs) - 8} more" if len(jobs) > 8 else "")
        lines.append(f"  {counted[state]} cells {state} in Slurm task(s) {shown}")
    if others:
        lines.append(f"  {others} cells claimed by a Ray or Slurm driver")
    lines += [f"  {why}" for _, _, why in ended_unfinished(store, run_id)]
    if len(lines) == 1:
        lines.append("  nothing queued or running")
    return "\n".join(lines)
