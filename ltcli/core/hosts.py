"""One cell over many hosts: JAX's multi-controller runtime (`jax.distributed`).

Every process of a job runs the same `lt run`: the same levels, the same jitted programs,
each on its own devices, with XLA's collectives (NCCL on GPUs, gloo on CPUs) joining them
into one mesh over every device of every host. Process 0 is the store's only writer; the
others read what it wrote after a `barrier`, so every process takes the same decisions
(which cells are finished, where a level resumes). When a process dies, the others' next
collective fails and they stop at once (`failing_together`, `exit_now`); nothing
half-written is left (every store write is atomic), and rerunning the job resumes from the
last checkpoint.

Without `start`, nothing here imports JAX and lt is one process.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator

from ltcli.core import paths
from ltcli.core.errors import LtError, UsageError

_started = False


def start() -> None:
    """Joins this process to its job (`jax.distributed.initialize`), before any JAX
    computation.

    Under Slurm (``srun``), and the other clusters JAX detects, the job's size, this
    process's rank and the coordinator come from the cluster's environment. Elsewhere set
    ``JAX_COORDINATOR_ADDRESS`` (host:port of process 0), ``JAX_NUM_PROCESSES`` and
    ``JAX_PROCESS_ID``. On CPUs the collectives are gloo's.

    Raises:
      UsageError: the job's size or this process's rank is not known.
    """
    global _started
    if _started:
        return
    paths.request_fast_cpu_convolutions()  # the job's first collective starts the backend
    import jax

    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    count, rank = os.environ.get("JAX_NUM_PROCESSES"), os.environ.get("JAX_PROCESS_ID")
    try:
        jax.distributed.initialize(
            num_processes=int(count) if count else None,
            process_id=int(rank) if rank else None,
        )
    except (ValueError, TypeError) as err:
        raise UsageError(
            f"--distributed: {err} (outside Slurm, set JAX_COORDINATOR_ADDRESS, "
            "JAX_NUM_PROCESSES and JAX_PROCESS_ID)"
        ) from err
    _started = True
    _connect()


def _connect() -> None:
    """Opens the job's collectives at once, with standard output sent to standard error:
    gloo announces its connections on standard output, which is `lt run`'s table (or its
    JSON document)."""
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        barrier("lt-start")
    finally:
        os.dup2(saved, 1)
        os.close(saved)


def joined() -> bool:
    """Whether this process is one of a job (`start`), alone in it or not: a job of one
    process is refused and laid out as any job is."""
    return _started


def count() -> int:
    """Processes in this job (1 without `start`)."""
    if not _started:
        return 1
    import jax

    return jax.process_count()


def writer() -> bool:
    """Whether this process writes the store: process 0 (or a process alone)."""
    if not _started:
        return True
    import jax

    return jax.process_index() == 0


def barrier(name: str) -> None:
    """Waits until every process of the job reaches the barrier `name` (alone: at once)."""
    if count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


@contextlib.contextmanager
def failing_together() -> Iterator[None]:
    """In a multi-host job, turns a failed collective (a process of the job died) into an
    `LtError` that says what is kept and how to resume."""
    try:
        yield
    except LtError:
        raise
    except Exception as err:
        if count() == 1:
            raise
        raise LtError(
            f"the multi-host job failed: {str(err).splitlines()[0]} (a process died or "
            "cannot be reached). What finished is stored, and the level's last checkpoint "
            "kept: run the job again to resume it"
        ) from err


def exit_now(code: int) -> None:
    """Ends this process of a multi-host job at once with `code` (standard streams
    flushed). A failed job must not wait at JAX's shutdown barrier for the processes that
    died: it would wait for their heartbeats to time out, minutes later."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
