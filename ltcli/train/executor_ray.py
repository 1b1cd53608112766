"""``lt run --executor ray``: a run's cells trained as Ray tasks on a standing Ray cluster.

The driver plans what is left, packs each level's ready cells into groups (one group per
worker slot: a GPU, or a CPU where the cluster has no GPU), claims them (`ltcli.train.claims`) and
submits each group as a task that trains it and writes its cells to the store, exactly as the
local executor would (`Runner.train_level`). A replicate's next level is submitted as soon as
its ticket is stored: there is no barrier between replicates. Ray retries a task whose worker
or node died (`MAX_RETRIES`); a killed driver leaves finished cells finished (manifests are
written last) and a rerun resumes; a second driver on the same run trains only what the
first has not claimed, and waits for the rest.

The store must be one folder every node sees (a shared filesystem): the driver checks that at
start with a file it writes and a task on every node reads. Ray is an optional extra: without
it, ``--executor ray`` says how to install it.
"""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path
from typing import Any

from ltcli.core import extras
from ltcli.core.errors import LtError, UsageError
from ltcli.core.meter import Meter
from ltcli.experiment.plan import Plan, plan_of, prepare
from ltcli.experiment.spec import Spec
from ltcli.storage.store import CellKey, Store
from ltcli.train.claims import Claims
from ltcli.train.cluster_schedule import Schedule
from ltcli.train.cluster_task import measure_barriers, train_group
from ltcli.train.divergence import DivergedError

MAX_RETRIES = 3
"""Times Ray retries a group whose worker or node died."""
POLL_SECONDS = 2.0
"""How often the driver looks at the store for cells another driver is training."""
FORWARDED_ENV = ("LT_DATA_DIR", "LT_CACHE_DIR", "XLA_FLAGS")
"""Environment variables of the driver that its tasks see."""
LEASE_RENEWAL = 60.0
"""Seconds between renewals of the claims of cells in flight (well inside their lease)."""


def _ray() -> Any:
    return extras.require(
        "ray", "--executor ray", "pip install 'lt[ray]' (from a clone: pip install -e '.[ray]')"
    )


def _read_probe(path: str, token: str) -> bool:
    try:
        return Path(path).read_text() == token
    except OSError:
        return False


# -- the driver -----------------------------------------------------------------------------


def run(
    spec: Spec,
    store: Store,
    *,
    address: str | None = None,
    data_dir: Path | None = None,
    name: str | None = None,
    progress_every: float = 60.0,
) -> str:
    """Runs (or resumes, or joins) the experiment `spec` on the Ray cluster at `address`
    (default: ``$RAY_ADDRESS``, else a cluster started on this machine with ``ray start``);
    returns the run id.

    Raises:
      UsageError: Ray is missing, or the store is not visible from every node.
      DivergedError: as the local executor.
      LtError: a group failed on every retry.
    """
    ray = _ray()
    desc, source = prepare(spec, data_dir)
    plan = plan_of(spec, desc, source)
    root = store.root.resolve()  # workers start elsewhere: never a relative path
    Store(root).save_run(desc, spec.experiment, name)
    env = {k: os.environ[k] for k in FORWARDED_ENV if k in os.environ}
    if not ray.is_initialized():
        ray.init(
            address=address or "auto",
            runtime_env={"env_vars": env},
            log_to_driver=False,
            logging_level="ERROR",
        )
    _check_shared(ray, root)
    driver = _Driver(ray, spec, Store(root), desc.run_id, plan, data_dir, progress_every)
    driver.run()
    return desc.run_id


def _check_shared(ray: Any, root: Path) -> None:
    """Every node of the cluster must see the store: a task pinned to each reads a file the
    driver wrote."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    token = uuid.uuid4().hex
    probe = root / f".lt-shared-{token}"
    probe.write_text(token)
    try:
        reader = ray.remote(num_cpus=0)(_read_probe)
        nodes = [n for n in ray.nodes() if n.get("Alive")]
        checks = [
            reader.options(
                scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)
            ).remote(str(probe), token)
            for n in nodes
        ]
        seen = ray.get(checks)
        blind = [n["NodeManagerAddress"] for n, ok in zip(nodes, seen, strict=True) if not ok]
    finally:
        probe.unlink(missing_ok=True)
    if blind:
        raise UsageError(
            f"--store {root}: not visible from the Ray node(s) {', '.join(blind)}; the store "
            "must be a folder every node mounts at the same path (a shared filesystem)"
        )


class _Driver:
    """Schedules a run's cells on the cluster level by level per replicate."""

    def __init__(
        self,
        ray: Any,
        spec: Spec,
        store: Store,
        run_id: str,
        plan: Plan,
        data_dir: Path | None,
        progress_every: float,
    ):
        self.ray, self.spec, self.store, self.run_id, self.plan = ray, spec, store, run_id, plan
        self.data_dir = str(data_dir.resolve()) if data_dir else None
        self.claims = Claims(store, run_id)
        self.schedule = Schedule(spec, store, run_id, plan, self.claims)
        self.cells = self.schedule.cells
        self.running: dict[Any, list[CellKey]] = {}
        self.trained: list[CellKey] = []
        resources = ray.cluster_resources()
        self.gpus = int(resources.get("GPU", 0))
        self.slots = max(1, self.gpus or int(resources.get("CPU", 1)))
        options = {"num_gpus": 1} if self.gpus else {"num_cpus": 1}
        self.task = ray.remote(max_retries=MAX_RETRIES, **options)(train_group)
        self.barrier_task = ray.remote(max_retries=MAX_RETRIES, **options)(measure_barriers)
        self.meter = Meter("cells", len(self.cells), unit="cells", every=progress_every)

    def run(self) -> None:
        self._measure_stored_barriers()
        done = {c for c in self.cells if self.schedule.finished(c)}
        self.meter.add(len(done))
        last_renewal = time.monotonic()
        while True:
            self._submit(done)
            if not self.running and self.schedule.settled(done):
                break
            if self.running:
                finished, _ = self.ray.wait(list(self.running), num_returns=1, timeout=POLL_SECONDS)
                for ref in finished:
                    self._collect(ref)
            else:  # what is left is another driver's, or waits for its tickets
                time.sleep(POLL_SECONDS)
            if time.monotonic() - last_renewal >= LEASE_RENEWAL:
                self.claims.renew(c for cells in self.running.values() for c in cells)
                last_renewal = time.monotonic()
            new = {c for c in self.cells if c not in done and self.schedule.finished(c)}
            self.meter.add(len(new))
            done |= new
            self._label(done)
        mine = len(self.trained)
        self.meter.close()
        self.meter.note(
            f"this driver trained {mine} of {len(self.cells)} cells"
            + (f"; {len(self.cells) - mine} were stored already or by another driver")
        )
        if self.schedule.stopped:
            raise DivergedError("; ".join(self.schedule.stopped.values()))

    def _measure_stored_barriers(self) -> None:
        """Measures, in one task, the level barriers of the stored tickets that lack one
        (`Plan.barriers_missing`): their levels were stored by a run without barriers."""
        missing = self.plan.barriers_missing(self.store, self.run_id)
        if missing:
            self.meter.note(f"measuring the level barriers of {len(missing)} stored tickets")
            paths = [str(c.relpath) for c in missing]
            root = str(self.store.root)
            self.ray.get(self.barrier_task.remote(self.spec, root, self.data_dir, paths))

    def _label(self, done: set[CellKey]) -> None:
        running = sum(len(cells) for cells in self.running.values())
        queued = len(self.cells) - len(done) - running
        self.meter.label = f"cells ({running} running, {queued} queued)"

    def _submit(self, done: set[CellKey]) -> None:
        """Submits each level's ready cells as at most one group per free slot, those this
        driver could claim."""
        in_flight = [c for cells in self.running.values() for c in cells]
        ready = self.schedule.ready(done, in_flight)
        free = max(1, self.slots - len(self.running))
        for groups in self.schedule.claim_groups(ready, free).values():
            for group in groups:
                ref = self.task.remote(
                    self.spec,
                    str(self.store.root),
                    self.data_dir,
                    self.plan.spawn,
                    [str(c.relpath) for c in group],
                )
                self.running[ref] = group

    def _collect(self, ref: Any) -> None:
        group = self.running.pop(ref)
        try:
            trained = self.ray.get(ref)
        except self.ray.exceptions.RayError as err:
            self.claims.release(group)
            cause = err.cause if isinstance(getattr(err, "cause", None), LtError) else None
            if cause is not None:
                raise cause from err
            raise LtError(
                f"a group of {len(group)} cells failed {MAX_RETRIES + 1} times on the cluster: "
                f"{str(err).splitlines()[0]}"
            ) from err
        self.trained += [CellKey.from_relpath(path) for path in trained]
        self.claims.release(group)
