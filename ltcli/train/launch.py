"""Running an experiment: resolve the spec, record the run, and train what is missing.

This module loads no JAX: a rerun whose cells are all finished answers from the store
alone. `ltcli.train.runner` (the IMP loop, JAX and the engine) is imported only when a level has
cells left to train.
"""

from __future__ import annotations

from pathlib import Path

from ltcli.core import hosts, paths
from ltcli.core.errors import LtError, UsageError
from ltcli.data import DataSource
from ltcli.experiment.descriptor import Descriptor
from ltcli.experiment.plan import Progress, plan_of, prepare
from ltcli.experiment.spec import Spec
from ltcli.storage.store import Store
from ltcli.train.claims import Claims

__all__ = ["join", "plan_of", "prepare", "run"]


def job_refusal(spec: Spec, grouping: str, executor: str) -> str | None:
    """Why a multi-host job (``--distributed``, `ltcli.core.hosts`) cannot run `spec` this
    way, whatever its size, or None: what the spec and the flags alone decide."""
    if executor != "local":
        return (
            f"--distributed trains one cell over many hosts; --executor {executor} spreads "
            "many cells over a cluster: use one of them"
        )
    if spec["run.deterministic"]:
        return (
            "--distributed: a deterministic cell trains the same one-device program in any "
            "group; splitting its batch over devices changes its additions"
        )
    if spec["run.parallel"] == "cells":
        return (
            "--distributed: a multi-host job splits each cell's batch over every device "
            "(--parallel batch or auto); --parallel cells shards cells on one host"
        )
    if grouping == "host":
        return (
            "--distributed: --grouping host trains one step per call on one device; a "
            "multi-host job splits each step's batch over every device"
        )
    if spec["run.devices"]:
        return (
            "--distributed: a multi-host job trains each cell over every device of every "
            "process; --devices picks local devices for a run on one host: drop it"
        )
    return None


def join(
    spec: Spec,
    data_dir: Path | None,
    grouping: str,
    executor: str,
    prepared: tuple[Descriptor, DataSource] | None = None,
) -> tuple[Descriptor, DataSource]:
    """Joins this process to its multi-host job (`hosts.start`) once the spec, the flags and
    the data are checked (`job_refusal`, `prepare`, `plan_of`, and streamed data where the
    spec decides it); returns `prepare`'s answer.

    Every process refuses these alone, before JAX's rendezvous, so a refused job exits 2
    at once instead of waiting there for processes that may never come. What needs the
    job's devices (convolutions on a CPU, a batch that must divide over every device,
    streaming chosen by the device's memory) is only known after it: every process refuses
    that together (`ltcli.train.context.execution_refusal`).

    Raises:
      UsageError: the job cannot run `spec` this way, or the spec or data are wrong.
    """
    if refused := job_refusal(spec, grouping, executor):
        raise UsageError(refused)
    desc, source = prepared or prepare(spec, data_dir)
    plan_of(spec, desc, source)
    from ltcli.train.context import known_streams, stream_refusal  # JAX, not yet started

    if known_streams(source, spec["data.placement"]) and (refused := stream_refusal(desc, source)):
        raise UsageError(refused)
    hosts.start()
    return desc, source


def run(
    spec: Spec,
    store: Store,
    *,
    data_dir: Path | None = None,
    name: str | None = None,
    progress: Progress | None = None,
    checkpoint_seconds: float = 60.0,
    grouping: str = "auto",
    executor: str = "local",
    address: str | None = None,
    progress_every: float = 60.0,
    prepared: tuple[Descriptor, DataSource] | None = None,
    distributed: bool = False,
    detach: bool = False,
) -> str:
    """Runs (or resumes, or extends) the experiment `spec` in `store`; returns the run id.

    With cells to train, JAX's persistent compilation cache is switched on (in lt's cache
    directory), so a later process reuses what this one compiles. With
    ``run.deterministic``, every cell trains as the same one-cell program whatever its group
    (`ltcli.train.engine.Engine`), and XLA's GPU kernels are asked to be deterministic. With
    ``executor="ray"`` the cells train as tasks on the Ray cluster at `address`
    (`ltcli.train.executor_ray`); with ``executor="slurm"`` as Slurm jobs
    (`ltcli.train.executor_slurm`), the driver returning once they are submitted with
    `detach`. `prepared` is what `prepare` gave for `spec`, for a caller
    that needed the run id first (the local executor then does not locate the data again).
    On a CPU, XLA is asked for its faster convolutions
    (`paths.request_fast_cpu_convolutions`; Ray's workers inherit the flag). With
    `distributed`, this process is one of a multi-host job (`ltcli.core.hosts`) that trains
    each cell over every device of every process; only process 0 writes `store` and
    reports `progress`.
    """
    paths.request_fast_cpu_convolutions()  # before anything starts JAX's backend
    if distributed:
        if not hosts.joined():  # `ltcli.results.session.run` joins before its outputs
            prepared = join(spec, data_dir, grouping, executor, prepared)
        if not hosts.writer():
            store, progress = store.follower(), None
    if detach and executor != "slurm":
        raise UsageError("--detach: only --executor slurm runs with no driver; drop --detach")
    if executor == "slurm":
        from ltcli.train import executor_slurm

        return executor_slurm.run(
            spec,
            store,
            data_dir=data_dir,
            name=name,
            progress_every=progress_every,
            checkpoint_seconds=checkpoint_seconds,
            detach=detach,
        )
    if executor == "ray":
        from ltcli.train import executor_ray

        return executor_ray.run(
            spec,
            store,
            address=address,
            data_dir=data_dir,
            name=name,
            progress_every=progress_every,
        )
    deterministic = spec["run.deterministic"]
    if deterministic and grouping == "vmap":
        raise UsageError(
            "--grouping vmap: a deterministic run trains each cell as its own program "
            "(serial or host); drop --grouping or --deterministic"
        )
    desc, source = prepared or prepare(spec, data_dir)
    plan = plan_of(spec, desc, source)
    if plan.anything_left(store, desc.run_id):  # a rerun with nothing to train loads no JAX
        from ltcli.train.context import execution_refusal

        refused = execution_refusal(
            desc,
            source,
            placement=spec["data.placement"],
            parallel=spec["run.parallel"],
            devices=spec["run.devices"],
            grouping=grouping,
            deterministic=deterministic,
        )
        if refused:
            raise UsageError(refused)
    store.save_run(desc, spec.experiment, name)
    with store.lock(desc.run_id):
        if plan.anything_left(store, desc.run_id):
            _refuse_claimed(store, desc.run_id)
            if deterministic:
                paths.request_deterministic_gpu_ops()
            paths.enable_compile_cache()
            from ltcli.train.runner import Runner

            runner = Runner(
                store,
                desc,
                source,
                progress,
                checkpoint_seconds,
                grouping,
                deterministic,
                spec["run.controls_at"],
                spec["run.devices"],
                spec["run.parallel"],
                spec["data.placement"],
                spec["data.workers"],
            )
            with hosts.failing_together():
                runner.run(plan)
    return desc.run_id


def _refuse_claimed(store: Store, run_id: str) -> None:
    """A local driver trains every cell it finds, so it refuses a run whose cells a cluster
    driver or a Slurm job holds (`ltcli.train.claims`); cluster drivers claim nothing while it
    holds the run.

    Raises:
      LtError: live claims exist.
    """
    held = Claims(store, run_id).holders()
    if held:
        jobs = sorted({record["job"] for record in held.values() if "job" in record})
        by = f"Slurm job(s) {', '.join(jobs[:5])}" if jobs else "a Ray or Slurm driver"
        raise LtError(
            f"run {run_id[:12]}: {len(held)} of its cells are being trained by {by}; "
            "wait for them (lt status RUN), or follow them with the same lt run and its "
            "--executor"
        )
