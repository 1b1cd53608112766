"""What Slurm says of lt's jobs: whether a job (or array task) is still queued or running
(`squeue`), and how it ended (`sacct`, where accounting is on).

Asked through Slurm's own commands, so it works from any host with Slurm's client and needs
no Python package. Answers are kept a few seconds: a driver asks of many cells in one poll.
"""

from __future__ import annotations

import shutil
import subprocess
import time

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
    holds it (``PENDING``, ``RUNNING``, ...), or None once it left the queue (ended).
    A pending array's tasks are reported with the array's state.

    Raises:
      UsageError: this host has no Slurm client.
    """
    now = time.monotonic()
    cached = _SEEN.get(job)
    if cached is not None and now - cached[0] < FRESH_SECONDS:
        return cached[1]
    if shutil.which("squeue") is None:
        raise UsageError(
            f"cells of this run are claimed by Slurm job {job}, and this host has no Slurm "
            "client (squeue) to ask whether it still runs: run lt from a host of the cluster"
        )
    try:
        found = subprocess.run(
            ["squeue", "--noheader", "--array", "--jobs", job, "--format=%i %T"],
            capture_output=True,
            text=True,
            check=False,
            timeout=SQUEUE_SECONDS,
        )
    except subprocess.TimeoutExpired:
        found = subprocess.CompletedProcess([], 1, "", "timed out")
    answer: str | None = None
    if found.returncode != 0 and "Invalid job id" not in found.stderr:
        answer = "UNKNOWN"  # Slurm did not answer: count the job as alive, train nothing twice
    for line in found.stdout.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1] in ACTIVE:
            answer = parts[1]
    _SEEN[job] = (now, answer)
    return answer


def forget() -> None:
    """Drops the answers kept so far (after a submission or a cancellation here)."""
    _SEEN.clear()
