"""Running an experiment: resolve the spec, record the run, and train what is missing.

This module loads no JAX: a rerun whose cells are all finished answers from the store
alone. `ltcli.train.runner` (the IMP loop, JAX and the engine) is imported only when a level has
cells left to train.
"""

from __future__ import annotations

from pathlib import Path

from ltcli.core import hosts, paths
from ltcli.core.errors import UsageError
from ltcli.data import DataSource
from ltcli.experiment.descriptor import Descriptor
from ltcli.experiment.plan import Progress, plan_of, prepare
from ltcli.experiment.spec import Spec
from ltcli.storage.store import Store

__all__ = ["plan_of", "prepare", "run"]


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
) -> str:
    """Runs (or resumes, or extends) the experiment `spec` in `store`; returns the run id.

    With cells to train, JAX's persistent compilation cache is switched on (in lt's cache
    directory), so a later process reuses what this one compiles. With
    ``run.deterministic``, every cell trains as the same one-cell program whatever its group
    (`ltcli.train.engine.Engine`), and XLA's GPU kernels are asked to be deterministic. With
    ``executor="ray"`` the cells train as tasks on the Ray cluster at `address`
    (`ltcli.train.executor_ray`). `prepared` is what `prepare` gave for `spec`, for a caller
    that needed the run id first (the local executor then does not locate the data again).
    On a CPU, XLA is asked for its faster convolutions
    (`paths.request_fast_cpu_convolutions`; Ray's workers inherit the flag). With
    `distributed`, this process is one of a multi-host job (`ltcli.core.hosts`) that trains
    each cell over every device of every process; only process 0 writes `store` and
    reports `progress`.
    """
    paths.request_fast_cpu_convolutions()  # before anything starts JAX's backend
    if distributed:
        if executor == "ray":
            raise UsageError(
                "--distributed trains one cell over many hosts; --executor ray spreads many "
                "cells over a cluster: use one of them"
            )
        hosts.start()
        if not hosts.writer():
            store, progress = store.follower(), None
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
