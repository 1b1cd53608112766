"""Running an experiment: resolve the spec, record the run, and train what is missing.

This module loads no JAX: a rerun whose cells are all finished answers from the store
alone. `ltcli.runner` (the IMP loop, JAX and the engine) is imported only when a level has
cells left to train.
"""

from __future__ import annotations

from pathlib import Path

from ltcli import combinations, data, descriptor, paths
from ltcli.descriptor import Descriptor
from ltcli.errors import UsageError
from ltcli.member import parse_controls
from ltcli.plan import Plan, Progress
from ltcli.spec import Spec
from ltcli.store import Store


def prepare(spec: Spec, data_dir: Path | None = None) -> tuple[Descriptor, data.DataSource]:
    """Locates the data and resolves the descriptor."""
    source = data.locate(spec["data.dataset"], data_dir)
    return descriptor.resolve(spec, source), source


def plan_of(spec: Spec, desc: Descriptor, source: data.DataSource) -> Plan:
    """The cells `spec`'s ``[run]`` section asks for, spawn points in iterations. A one-shot
    run has one level per target (``run.rounds`` does not apply to it).

    Raises:
      UsageError: a spawn point that is not a multiple of the evaluation period below T, or
        an ``invert`` control without pruning at initialization.
    """
    train_size = source.train_size - desc["data.validation"]
    batch, every, end = desc["train.batch_size"], desc["train.eval_every"], desc["train.iterations"]
    spawn = sorted({d.iterations(train_size, batch) for d in spec["run.spawn"]})
    bad = [k for k in spawn if k >= end or k % every]
    if bad:
        raise UsageError(
            f"run.spawn: each must be a multiple of train.eval_every ({every}) below "
            f"train.iterations ({end}); got {bad}"
        )
    controls = spec["run.controls"]
    for kind in parse_controls(controls):
        if refused := combinations.member_refusal(desc["prune.method"], kind):
            raise UsageError(refused)
    targets = descriptor.one_shot_targets(desc.full)
    rounds = len(targets) if targets else spec["run.rounds"]
    return Plan(rounds, spec["run.replicates"], controls, tuple(spawn))


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
) -> str:
    """Runs (or resumes, or extends) the experiment `spec` in `store`; returns the run id.

    With cells to train, JAX's persistent compilation cache is switched on (in lt's cache
    directory), so a later process reuses what this one compiles. With
    ``run.deterministic``, every cell trains as the same one-cell program whatever its group
    (`ltcli.engine.Engine`), and XLA's GPU kernels are asked to be deterministic. With
    ``executor="ray"`` the cells train as tasks on the Ray cluster at `address`
    (`ltcli.executor_ray`).
    """
    if executor == "ray":
        from ltcli import executor_ray

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
    desc, source = prepare(spec, data_dir)
    plan = plan_of(spec, desc, source)
    store.save_run(desc, spec.experiment, name)
    with store.lock(desc.run_id):
        if plan.anything_left(store, desc.run_id):
            if deterministic:
                paths.request_deterministic_gpu_ops()
            paths.enable_compile_cache()
            from ltcli.runner import Runner

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
            )
            runner.run(plan)
    return desc.run_id
