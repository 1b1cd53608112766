"""What Slurm says of lt's jobs: whether a job (or array task) is still queued or running,
asked of ``squeue``.

Asked through Slurm's own command, so it works from any host with Slurm's client and needs
no Python package. Answers are kept a few seconds, and `states` asks of many jobs in one
call: a driver polling a run asks once per poll, not once per task or cell.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterable

from ltcli.core.errors import UsageError

ACTIVE = {
    "PENDING",
    "RUNNING",
    "CONFIGURING",
    "COMPLETING",
    "REQUEUED",
    "REQUEUE_HOLD",
    "REQUEUE_FED",
    "RESIZING",
    "SUSPENDED",
    "SIGNALING",
    "STAGE_OUT",
    "STOPPED",
}
"""The states of a job that may still train: it holds its cells' claims."""
FRESH_SECONDS = 5.0
"""How long an answer of squeue is reused."""
SQUEUE_SECONDS = 60.0
"""How long squeue may take before its job counts as alive (``UNKNOWN``)."""

_SEEN: dict[str, tuple[float, str | None]] = {}


def state(job: str) -> str | None:
    """The state of the job or array task `job` (like ``"12"`` or ``"12_3"``) while Slurm
    holds it (``PENDING``, ``RUNNING``, ...; ``UNKNOWN`` when squeue did not answer), or None
    once it left the queue (ended). A pending array's tasks are reported with the array's
    state.

    Raises:
      UsageError: this host has no Slurm client.
    """
    return states([job])[job]


def states(jobs: Iterable[str]) -> dict[str, str | None]:
    """`state` of each of `jobs`, asking squeue once for those not asked in the last
    `FRESH_SECONDS`.

    Raises:
      UsageError: this host has no Slurm client.
    """
    now = time.monotonic()
    wanted = set(jobs)
    stale = sorted(j for j in wanted if j not in _SEEN or now - _SEEN[j][0] >= FRESH_SECONDS)
    if stale:
        for job, answer in _ask(stale).items():
            _SEEN[job] = (now, answer)
    return {job: _SEEN[job][1] for job in wanted}


def _ask(jobs: list[str]) -> dict[str, str | None]:
    if shutil.which("squeue") is None:
        raise UsageError(
            f"cells of this run are claimed by Slurm job {jobs[0]}, and this host has no Slurm "
            "client (squeue) to ask whether it still runs: run lt from a host of the cluster"
        )
    try:
        found = subprocess.run(
            ["squeue", "--noheader", "--array", "--jobs", ",".join(jobs), "--format=%i %T"],
            capture_output=True,
            text=True,
            check=False,
            timeout=SQUEUE_SECONDS,
        )
    except subprocess.TimeoutExpired:
        found = subprocess.CompletedProcess([], 1, "", "timed out")
    if found.returncode != 0 and "Invalid job id" not in found.stderr:
        return dict.fromkeys(jobs, "UNKNOWN")  # no answer: alive, so nothing trains twice
    listed = dict(line.split() for line in found.stdout.splitlines() if len(line.split()) == 2)
    return {job: listed[job] if listed.get(job) in ACTIVE else None for job in jobs}
