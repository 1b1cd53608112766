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

import math
import os
import time
import uuid
from pathlib import Path
from typing import Any

from ltcli.core.errors import LtError, UsageError
from ltcli.core.meter import Meter
from ltcli.experiment.plan import Plan, plan_of, prepare
from ltcli.experiment.spec import Spec
from ltcli.science.methods import SPARSE_TRAINING
from ltcli.storage.store import CellKey, Store
from ltcli.train.claims import Claims
from ltcli.train.runner import Runner
from ltcli.train.starts import DivergedError, diverged

MAX_RETRIES = 3
"""Times Ray retries a group whose worker or node died."""
POLL_SECONDS = 2.0
"""How often the driver looks at the store for cells another driver is training."""
FORWARDED_ENV = ("LT_DATA_DIR", "LT_CACHE_DIR", "XLA_FLAGS")
"""Environment variables of the driver that its tasks see."""
LEASE_RENEWAL = 60.0
"""Seconds between renewals of the claims of cells in flight (well inside their lease)."""


def _ray() -> Any:
    try:
        import ray
    except ImportError as err:
        raise UsageError(
            "--executor ray: Ray is not installed; install lt's extra: pip install 'lt[ray]' "
            "(from a clone: pip install -e '.[ray]')"
        ) from err
    return ray


# -- the worker side ------------------------------------------------------------------------

_RUNNERS: dict[tuple[str, str], Runner] = {}
"""A worker process's runners, by store and run: data and compiled programs stay loaded
between the groups Ray sends it."""


def train_group(
    spec: Spec, store_root: str, data_dir: str | None, spawn: tuple[int, ...], cells: list[str]
) -> list[str]:
    """Trains and stores the cells `cells` (relative paths) of one level; returns those it
    trained (a retried group skips what an earlier attempt stored)."""
    store = Store(Path(store_root))
    keys = [_cell(path) for path in cells]
    runner = _runner(spec, store, data_dir)
    runner.spawn = spawn
    runner.trainer.barriers = spec["run.barriers"]
    todo = [c for c in keys if not store.is_finished(runner.run_id, c)]
    if todo:
        runner.train_level(todo[0].level, todo)
        runner.view.flush()
    return [str(c.relpath) for c in todo]


def measure_barriers(spec: Spec, store_root: str, data_dir: str | None, cells: list[str]) -> None:
    """Measures the level barriers of the stored tickets `cells` (relative paths) from the
    store and adds them to their metrics (`Runner.measure_stored_barriers`)."""
    runner = _runner(spec, Store(Path(store_root)), data_dir)
    runner.measure_stored_barriers([_cell(path) for path in cells])


def _runner(spec: Spec, store: Store, data_dir: str | None) -> Runner:
    """This worker's runner of `spec`'s run in `store`, made on first use."""
    key = (str(store.root), spec.experiment + repr(sorted(spec.values.items())))
    if key not in _RUNNERS:
        desc, source = prepare(spec, Path(data_dir) if data_dir else None)
        _RUNNERS[key] = Runner(
            store,
            desc,
            source,
            deterministic=spec["run.deterministic"],
            devices=spec["run.devices"],
            parallel=spec["run.parallel"],
            placement=spec["data.placement"],
            workers=spec["data.workers"],
        )
    return _RUNNERS[key]


def _cell(relpath: str) -> CellKey:
    replicate, level, member = Path(relpath).parts
    return CellKey(int(replicate.split("_")[1]), int(level.split("_")[1]), member)


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
        self.cells = [c for level in range(plan.rounds + 1) for c in plan.cells(level)]
        self.running: dict[Any, list[CellKey]] = {}
        self.trained: list[CellKey] = []
        self.stopped: dict[int, str] = {}
        self.tickets_diverged: dict[CellKey, bool] = {}
        resources = ray.cluster_resources()
        self.gpus = int(resources.get("GPU", 0))
        self.slots = max(1, self.gpus or int(resources.get("CPU", 1)))
        options = {"num_gpus": 1} if self.gpus else {"num_cpus": 1}
        self.task = ray.remote(max_retries=MAX_RETRIES, **options)(train_group)
        self.barrier_task = ray.remote(max_retries=MAX_RETRIES, **options)(measure_barriers)
        self.meter = Meter("cells", len(self.cells), unit="cells", every=progress_every)

    def finished(self, cell: CellKey) -> bool:
        return self.store.is_finished(self.run_id, cell)

    def run(self) -> None:
        self._measure_stored_barriers()
        done = {c for c in self.cells if self.finished(c)}
        self.meter.add(len(done))
        last_renewal = time.monotonic()
        while True:
            self._submit(self._ready(done))
            if not self.running and all(c in done or self._blocked(c) for c in self.cells):
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
            new = {c for c in self.cells if c not in done and self.finished(c)}
            self.meter.add(len(new))
            done |= new
            self._label(done)
        mine = len(self.trained)
        self.meter.close()
        self.meter.note(
            f"this driver trained {mine} of {len(self.cells)} cells"
            + (f"; {len(self.cells) - mine} were stored already or by another driver")
        )
        if self.stopped:
            raise DivergedError("; ".join(self.stopped.values()))

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

    def _blocked(self, cell: CellKey) -> bool:
        return cell.replicate in self.stopped

    def _diverged(self, ticket: CellKey) -> bool:
        """Whether a stored ticket diverged, read once (the driver polls every cell)."""
        if ticket not in self.tickets_diverged:
            metrics = self.store.read_metrics(self.run_id, ticket)
            self.tickets_diverged[ticket] = bool(metrics["diverged"])
        return self.tickets_diverged[ticket]

    def _ready(self, done: set[CellKey]) -> list[CellKey]:
        """Unfinished cells whose level can start (the replicate's ticket of the level
        before is stored and did not diverge), not in flight here, not claimed elsewhere."""
        in_flight = {c for cells in self.running.values() for c in cells}
        ready = []
        for cell in self.cells:
            if cell in done or cell in in_flight or self._blocked(cell):
                continue
            if cell.level > 0:
                ticket = CellKey(cell.replicate, cell.level - 1)
                if ticket not in done:
                    continue
                own = CellKey(cell.replicate, cell.level)  # sparse training's final mask
                sparse = self.spec["prune.method"] in SPARSE_TRAINING and cell != own
                if sparse and (own not in done or self._diverged(own)):
                    continue
                if self._diverged(ticket):
                    self.stopped[cell.replicate] = str(
                        diverged(self.run_id, ticket.replicate, ticket.level)
                    )
                    continue
            holder = self.claims.holder(cell)
            if holder is None or holder["owner"] == self.claims.owner:
                ready.append(cell)
        return ready

    def _submit(self, ready: list[CellKey]) -> None:
        """Packs each level's ready cells into at most one group per free slot and submits
        the groups whose cells this driver could claim."""
        by_level: dict[int, list[CellKey]] = {}
        for cell in ready:
            by_level.setdefault(cell.level, []).append(cell)
        for level_cells in by_level.values():
            free = max(1, self.slots - len(self.running))
            size = math.ceil(len(level_cells) / free)
            for start in range(0, len(level_cells), size):
                group = [c for c in level_cells[start : start + size] if self.claims.claim(c)]
                if group:
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
        self.trained += [_cell(path) for path in trained]
        self.claims.release(group)
