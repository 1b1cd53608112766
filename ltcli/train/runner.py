"""Iterative magnitude pruning over a store: train, prune, rewind, repeat, skipping every
cell that is already finished.

Level 0 trains the dense network from θ0. Level L's ticket mask is pruned from level L-1's
trained ticket (IMP), from level 0's (one-shot targets), or from θ0's scores (pruning at
initialization, `ltcli.science.scoring`). Its survivors restart from θ0, or from θk captured at
iteration k of level 0 with late rewinding (then every cell of a pruned level starts *at*
iteration k and trains to T, on the same clock as level 0), or, with ``lr-rewind`` and
``finetune``, from the previous level's trained ticket. Controls branch off a level and feed
nothing later (`ltcli.experiment.member`). All unfinished cells of a level train together as one group,
sharded over the local devices; a replicate whose ticket diverged is not pruned further.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ltcli import data, models
from ltcli.core import atomic
from ltcli.core.errors import InvariantError, LtError
from ltcli.experiment import combinations
from ltcli.experiment.descriptor import Descriptor, one_shot_targets
from ltcli.experiment.member import CONTROL_KINDS, PAIRED_KINDS, SPAWN
from ltcli.experiment.plan import Plan, Progress
from ltcli.science import pruning, scoring
from ltcli.storage.store import CellKey, Store
from ltcli.storage.writer import RunStore
from ltcli.train import checks
from ltcli.train.engine import (
    METRICS,
    DeviceData,
    Engine,
    Group,
    TrainConfig,
    learning_rate,
    schedule_steps,
    summarize,
    to_device,
    unstack,
)
from ltcli.train.grouping import needs_host_loop
from ltcli.train.grouping import pick as pick_grouping
from ltcli.train.instability import path

SEGMENT_ITERATIONS = 1000
"""About this many iterations run per jitted call; progress and checkpoints come between."""
MAX_GROUP = 625
"""At most this many deferred controls train as one group (625 LeNet cells ran fastest of
the sizes measured on an H200; a group's memory grows linearly with it)."""


def local_devices(requested: int, grouping: str, model_name: str) -> int:
    """How many local devices a run's groups are sharded over: `requested` (0: all that JAX
    sees), at most as many as there are, and one where groups train in the ``host`` loop
    (convolutions on a CPU), which steps one cell at a time."""
    host = grouping == "host" or (
        grouping == "auto" and needs_host_loop(models.get(model_name).kinds, jax.default_backend())
    )
    available = jax.local_device_count()
    return 1 if host else min(requested or available, available)


class DivergedError(LtError):
    """A ticket diverged, so its replicate cannot be pruned further (exit 1)."""


def diverged(run_id: str, replicate: int, level: int) -> DivergedError:
    """The error for a replicate whose ticket at `level` diverged: it is not pruned from."""
    return DivergedError(
        f"run {run_id[:12]} replicate {replicate} level {level} ticket diverged (its loss "
        "went NaN or infinite), so it cannot be pruned by magnitude; try a lower learning "
        "rate (--lr) or a warmup (--set train.warmup=...)"
    )


def strategy(full: dict[str, Any]) -> pruning.Strategy:
    """The pruning strategy of a descriptor's full form (one-shot targets largest first)."""
    prune = full["prune"]
    targets = one_shot_targets(full)
    return pruning.Strategy(prune["strategy"], prune["rates"], tuple(prune["exclude"]), targets)


class Runner:
    """Runs a plan for one descriptor against a store."""

    def __init__(
        self,
        store: Store,
        desc: Descriptor,
        source: data.DataSource,
        progress: Progress | None = None,
        checkpoint_seconds: float = 60.0,
        grouping: str = "auto",
        deterministic: bool = False,
        controls_at: str = "level",
        devices: int = 0,
    ):
        self.store, self.desc, self.source = store, desc, source
        self.run_id = desc.run_id
        self.view = RunStore(store, desc.run_id)
        self.controls_at = controls_at
        self.progress = progress or Progress()
        self.checkpoint_seconds = checkpoint_seconds
        self.grouping = grouping
        self.deterministic = deterministic
        self.cfg = TrainConfig.of(desc.full["train"])
        self.strategy = strategy(desc.full)
        self.model = models.create(desc["model.name"], source.num_classes, desc["model.dropout"])
        self.devices = local_devices(devices, grouping, desc["model.name"])
        self._engine: Engine | None = None
        self._data: DeviceData | None = None
        self._tickets: dict[tuple[int, int], Any] = {}
        self.spawn: tuple[int, ...] = ()
        self._keys: dict[tuple[int, int], jax.Array] = {}
        self._points: dict[Any, dict[str, Any]] = {}

    # -- lazily built: a run with nothing to train loads no data and compiles nothing --------

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            segment = self._segment_evals((self.start_step(1),))
            self._engine = Engine(
                self.model, self.cfg, "vmap", segment, self.deterministic, self.devices
            )
        return self._engine

    def _segment_evals(self, boundaries: tuple[int, ...]) -> int:
        """Evaluation periods per jitted call: at most `SEGMENT_ITERATIONS` iterations, and a
        divisor of every stretch between T and the iterations in `boundaries` (a level's
        start k, spawn points), so every level runs one compiled program and every spawn
        point falls between two calls."""
        every = self.cfg.eval_every
        evals = math.gcd(self.cfg.iterations // every, *(b // every for b in boundaries))
        per_call = max(1, SEGMENT_ITERATIONS // every)
        return max(d for d in range(1, min(evals, per_call) + 1) if evals % d == 0)

    @property
    def data(self) -> DeviceData:
        if self._data is None:
            data = to_device(self.source.load(), self.desc["data.validation"])
            self._data = self.engine.place_data(data)
        return self._data

    def _key(self, stream: int, replicate: int) -> jax.Array:
        """The key of a replicate's initialization (stream 0), data order (stream 1), or the
        other data orders of its stability copies (2) and spawned copies (3), or its
        pruning-at-initialization scores (4)."""
        if (stream, replicate) not in self._keys:  # eager fold_ins cost ms: once each
            root = jax.random.PRNGKey(self.desc["train.seed"])
            key = jax.random.fold_in(jax.random.fold_in(root, stream), replicate)
            self._keys[stream, replicate] = key
        return self._keys[stream, replicate]

    def data_key(self, cell: CellKey) -> jax.Array:
        """The key of a cell's data order and per-step noise: the replicate's, except for a
        stability copy (its own from the start). A spawned copy starts with the replicate's
        and switches at its spawn point (`key_switch`)."""
        if cell.member.kind == "stability":
            return jax.random.fold_in(self._key(2, cell.replicate), cell.member.index)
        return self._key(1, cell.replicate)

    def key_switch(self, cell: CellKey) -> tuple[int, jax.Array] | None:
        """(iteration, key) at which a spawned copy leaves the dense ticket's data order."""
        if cell.member.kind != SPAWN:
            return None
        k = cell.member.index
        return k, jax.random.fold_in(self._key(3, cell.replicate), k)

    # -- starting points: `ltcli.experiment.combinations` says which, this materializes it -------------

    def start_step(self, level: int) -> int:
        """The iteration a level's cells start at: 0 for the dense level, else the rewind
        iteration k (0 without late rewinding). Every cell trains to T."""
        return self.desc["prune.rewind_iter"] if level > 0 else 0

    def sources(self, cell: CellKey) -> combinations.Inputs:
        """Where `cell` starts: its row of the combination table."""
        return combinations.inputs(
            method=self.desc["prune.method"],
            retrain=self.desc["prune.retrain"],
            rewind=self.desc["prune.rewind_iter"],
            iterations=self.cfg.iterations,
            schedule=combinations.schedule_of(self.strategy.one_shot),
            member=cell.member,
            level=cell.level,
        )

    def schedule_step(self, cell: CellKey) -> int:
        """Where a cell's learning-rate schedule starts (`combinations.Inputs`)."""
        return self.sources(cell).schedule_step

    def _fresh(self, key: jax.Array) -> dict[str, Any]:
        params, stats = self.engine.init(key, self.source.image_shape)
        return jax.device_get({"params": params, "batch_stats": stats})

    def init_point(self, replicate: int) -> dict[str, Any]:
        """θ0 of a replicate (params and batch-norm state), created and stored once, read
        from disk once per runner (read-only)."""
        path = self.store.init_path(self.run_id, replicate)
        if path not in self._points:
            if not path.exists():
                self.store.save_weights(path, self._fresh(self._key(0, replicate)))
            self._points[path] = _read_only(self.store.load_weights(path))
        return self._points[path]

    def rewind_point(self, replicate: int, level: int) -> dict[str, Any]:
        """Where a level's survivors are rewound to: θ0 at level 0, later θ0 or θk (late
        rewinding)."""
        if level > 0 and self.desc["prune.rewind_iter"]:
            path = self.store.rewind_path(self.run_id, replicate)
            if path not in self._points:
                self._points[path] = _read_only(self.view.load_weights(path))
            return self._points[path]
        return self.init_point(replicate)

    def _weights(self, cell: CellKey, source: str) -> dict[str, Any]:
        """The variables a `combinations` weight source names, for `cell`."""
        replicate = cell.replicate
        if source in ("theta0", "ticket_at_k"):  # a spawned copy follows the ticket from θ0
            return self.init_point(replicate)
        if source == "theta_k":
            return self.rewind_point(replicate, cell.level)
        if source == "fresh":
            return self._fresh(jax.random.PRNGKey(int(self._control_rng(cell).integers(2**31))))
        previous = 0 if source == "trained_dense" else cell.level - 1
        return self.view.read_trained(CellKey(replicate, previous))

    def _control_rng(self, cell: CellKey) -> np.random.Generator:
        return np.random.default_rng(
            [
                int(self.run_id[:16], 16),
                cell.replicate,
                cell.level,
                cell.member.index,
                CONTROL_KINDS.index(cell.member.kind),
            ]
        )

    def ticket_mask(self, replicate: int, level: int) -> Any:
        """The ticket's mask at `level`: stored if that cell is finished, else made from its
        source (`combinations`). All cells of a replicate's level share one (read-only) copy
        while the level is set up."""
        if (replicate, level) not in self._tickets:
            mask = self._ticket_mask(CellKey(replicate, level))
            for leaf in pruning.leaves(mask).values():
                leaf.setflags(write=False)
            self._tickets[replicate, level] = mask
        return self._tickets[replicate, level]

    def _ticket_mask(self, cell: CellKey) -> Any:
        template = self.init_point(cell.replicate)["params"]
        source = self.sources(cell).mask
        if source == "dense":
            return pruning.dense_mask(template)
        if self.view.is_finished(cell):
            return self.view.read_mask(cell, template)
        if source == "scores":
            return self.at_init_mask(cell.replicate, cell.level)
        # IMP prunes the level before; one-shot levels all prune the dense level's network.
        previous = CellKey(cell.replicate, cell.level - 1 if source == "imp" else 0)
        if self.view.read_metrics(previous)["diverged"]:
            raise diverged(self.run_id, cell.replicate, previous.level)
        trained = self.view.read_trained(previous)["params"]
        mask = self.view.read_mask(previous, template)
        return self.strategy.prune(trained, mask, cell.level)

    def score_examples(self, replicate: int) -> np.ndarray | None:
        """The training examples SNIP and GraSP score a replicate's network on: 10 per class
        (`scoring.balanced_indices`), drawn per replicate; None for data-free methods."""
        if not scoring.needs_data(self.desc["prune.method"]):
            return None
        rng = np.random.default_rng([int(self.run_id[:16], 16), replicate, 4])
        return scoring.balanced_indices(np.asarray(self.data.y_train), rng)

    def at_init_mask(self, replicate: int, level: int, invert: bool = False) -> Any:
        """The mask that the run's pruning-at-initialization method gives the network
        `level` trains from (θ0, or θk with late rewinding: "pruning early in training",
        Frankle et al. 2021) at `level`'s one-shot target (`ltcli.science.scoring`), or with
        `invert` the lowest-scored weights.

        SNIP and GraSP score on `score_examples`, normalized as training normalizes them,
        without augmentation.
        """
        x = y = None
        ids = self.score_examples(replicate)
        if ids is not None:
            x = (self.data.x_train[ids].astype(jnp.float32) - self.data.mean) / self.data.std
            y = self.data.y_train[ids]
        (mask,) = scoring.masks_at_init(
            self.desc["prune.method"],
            self.model,
            self.rewind_point(replicate, level),
            [self.strategy.target(level)],
            image_shape=self.source.image_shape,
            exclude=self.strategy.exclude,
            batch_x=x,
            batch_y=y,
            key=self._key(4, replicate),
            invert=invert,
            mode=self.desc.get("prune.score_mode", "train"),
        )
        return mask

    def cell_inputs(self, cell: CellKey) -> tuple[dict[str, Any], Any, dict[str, Any]]:
        """(start variables, mask, starting point) of a cell; start = point under mask. What
        they are is the cell's row of the combination table (`ltcli.experiment.combinations`)."""
        sources = self.sources(cell)
        ticket = self.ticket_mask(cell.replicate, cell.level)
        if sources.mask == "random":
            mask = pruning.random_like(ticket, self._control_rng(cell))
        elif sources.mask == "inverted":
            mask = self.at_init_mask(cell.replicate, cell.level, invert=True)
        else:
            mask = ticket
        point = self._weights(cell, sources.weights)
        start = dict(point, params=masked(point["params"], mask))
        return start, mask, point

    def _scored(self, cell: CellKey) -> dict[str, Any]:
        """What a mask made from scores saw: the iteration of the network scored and, for
        SNIP and GraSP, the indices of the training examples."""
        if self.sources(cell).mask not in ("scores", "inverted"):
            return {}
        ids = self.score_examples(cell.replicate)
        scored = {"scored_at": self.start_step(cell.level)}
        return scored | ({"scored_on": ids.tolist()} if ids is not None else {})

    # -- training ----------------------------------------------------------------------------

    def run(self, plan: Plan) -> None:
        """Trains every unfinished cell of `plan`, level by level (spawned copies of the dense
        network with level 0).

        Raises:
          DivergedError: after everything else trained, when a replicate's ticket diverged
            and later levels of it were asked for (they are left untrained).
        """
        self.spawn = plan.spawn
        self.progress.start(plan)
        try:
            self._run(plan)
        finally:
            self.view.close()  # what finished is on disk, whatever happened

    def _run(self, plan: Plan) -> None:
        stopped: dict[int, DivergedError] = {}
        deferred: list[CellKey] = []
        for level in range(plan.rounds + 1):
            todo = [
                c
                for c in plan.cells(level)
                if c.replicate not in stopped and not self.view.is_finished(c)
            ]
            for replicate in sorted({c.replicate for c in todo}):
                try:
                    self.ticket_mask(replicate, level)
                except DivergedError as err:
                    stopped[replicate] = err
            todo = [c for c in todo if c.replicate not in stopped]
            deferred += [c for c in todo if self._deferred(c)]
            if now := [c for c in todo if not self._deferred(c)]:
                self.train_level(level, now)
        for start in range(0, len(deferred), MAX_GROUP):
            group = deferred[start : start + MAX_GROUP]
            self.train_level(min(c.level for c in group), group)
        if stopped:
            raise DivergedError("; ".join(str(err) for err in stopped.values()))

    def _deferred(self, cell: CellKey) -> bool:
        """Whether `cell` waits for the end of the run (``controls_at="end"``): the controls
        of pruned levels, which feed nothing later, then train together in large groups."""
        return self.controls_at == "end" and cell.level > 0 and not cell.member.is_ticket

    def train_level(self, level: int, cells: list[CellKey]) -> None:
        """Trains `cells` as one group, checks every invariant, then stores them. The cells
        are of `level`, or (deferred controls) of pruned levels from `level` on: all start
        at the same iteration. A spawned copy whose dense ticket is already stored trains
        beside a replay of that ticket (not stored again), from which it branches at k.

        Raises:
          InvariantError: a check failed; no cell of the group is stored.
        """
        stored = len(cells)
        cells = cells + self._replayed_tickets(cells)
        inputs = [self.cell_inputs(c) for c in cells]
        self._tickets.clear()  # the next level prunes from what this one stores
        labels = [labels_of(c, self.run_id) for c in cells]
        for cell, label, (start, mask, _) in zip(cells, labels, inputs, strict=True):
            expected = self.strategy.expected_counts(start["params"], cell.level)
            checks.counts(self.strategy.actual_counts(start["params"], mask), expected, label)
        self._check_copies_start_as_their_tickets(dict(zip(cells, inputs, strict=True)), labels)
        collapsed = [
            self._collapsed(c, mask, label)
            for c, label, (_, mask, _) in zip(cells, labels, inputs, strict=True)
        ]
        capture = self.desc["prune.rewind_iter"] if level == 0 else 0
        start_step = self.start_step(level)
        keys = [self.data_key(c) for c in cells]
        schedule = [self.schedule_step(c) for c in cells]

        def fresh_group() -> Group:
            return self.engine.start(
                [s["params"] for s, _, _ in inputs],
                [s["batch_stats"] for s, _, _ in inputs],
                [m for _, m, _ in inputs],
                keys,
                capture_rewind=bool(capture),
                start_step=schedule,
            )

        engine = self._grouped_engine(len(cells), fresh_group)
        if level == 0 and self.spawn:
            segment = self._segment_evals((self.start_step(1), *self.spawn))
            engine = dataclasses.replace(engine, segment_evals=segment)
        group = fresh_group()
        # What the engine really starts from must be the starting point under the mask.
        digests = []
        for label, row, (_, mask, point) in zip(
            labels, unstack(group, len(cells)), inputs, strict=True
        ):
            checks.rewound(row.params, point["params"], mask, label)
            checks.rewound(row.batch_stats, point["batch_stats"], None, label)
            digests.append(checks.digest(row.params))
        steps = schedule_steps(group.opt_state)
        fingerprint = _fingerprint(inputs)
        started = time.perf_counter()
        group, curves = self._train_group(level, cells, engine, group, capture, fingerprint)
        wall = (time.perf_counter() - started) / len(cells)
        bad = np.asarray(checks.pruned_nonzero(group.params, group.opt_state, group.mask))
        if bad.any():  # the host checks name the layer (and raise)
            everything = unstack(group, len(cells))
            for label, row, (_, mask, _) in zip(labels, everything, inputs, strict=True):
                checks.pruned_are_zero(row.params, mask, f"{label} trained weights")
                checks.optimizer_state_masked(row.opt_state, row.params, mask, label)
            raise InvariantError(f"{labels[int(bad.argmax())]}: pruned weights revived")
        rows = unstack(group._replace(opt_state=None), len(cells))
        recorded = {
            "wall_seconds": wall,
            "grouping": engine.recorded_grouping(len(cells)),
            "deterministic": engine.deterministic,
            "devices": engine.devices,
        }
        paths = self._instabilities(engine, cells, rows, inputs)
        # The cells this group was built from were written while it trained; now they are
        # on disk before any cell derived from them is (and memory holds one level's cells).
        self.view.flush()
        for i in range(stored):
            cell, row, (_, mask, _) = cells[i], rows[i], inputs[i]
            facts = {
                **recorded,
                # What the training loop itself started from and consumed:
                "start_digest": digests[i],
                "schedule_step": int(steps[i]),
                "first_learning_rate": float(learning_rate(self.cfg)(int(steps[i]))),
                "first_batch": np.asarray(row.first_batch).tolist(),
                "collapsed": collapsed[i],
                **self._scored(cell),
                **({"instability": paths[cell]} if cell in paths else {}),
                **({"spawn_iteration": cell.member.index} if cell.member.kind == SPAWN else {}),
            }
            self._store_cell(cell, row, mask, curves[i], start_step, facts)
        self.view.clear_checkpoint(_checkpoint_name(cells))

    def _replayed_tickets(self, cells: list[CellKey]) -> list[CellKey]:
        """The stored dense tickets that spawned copies in `cells` branch from: they train
        again beside the copies (to the copies' branch points, bit for bit)."""
        present = set(cells)
        tickets = {CellKey(c.replicate, 0) for c in cells if c.member.kind == SPAWN}
        return sorted(tickets - present)

    def _collapsed(self, cell: CellKey, mask: Any, label: str) -> list[str]:
        """The prunable layers `mask` empties (the network then outputs a constant), with a
        warning at the level it happens."""
        empty = sorted(name for name, (kept, _) in pruning.counts(mask).items() if kept == 0)
        if empty and cell.member.is_ticket:
            self.progress.note(
                f"warning: {label}: the mask keeps no weight of {', '.join(empty)}, so the "
                "network outputs a constant (layer collapse)"
            )
        return empty

    def _check_copies_start_as_their_tickets(
        self, inputs: dict[CellKey, tuple], labels: list[str]
    ) -> None:
        """A stability or spawned copy must start bit-identical to its ticket (same weights,
        same mask); only its data order may differ. The ticket's inputs are the group's when
        it trains alongside, else derived again."""
        for (cell, (start, mask, _)), label in zip(inputs.items(), labels, strict=True):
            if cell.member.kind in PAIRED_KINDS:
                ticket = CellKey(cell.replicate, cell.level)
                ticket_start, ticket_mask, _ = inputs.get(ticket) or self.cell_inputs(ticket)
                checks.rewound(start["params"], ticket_start["params"], ticket_mask, label)
                checks.rewound(mask, ticket_mask, None, f"{label} mask")

    def _instabilities(
        self, engine: Engine, cells: list[CellKey], rows: list[Group], inputs: list[tuple]
    ) -> dict[CellKey, dict[str, Any]]:
        """The error path from each stability or spawned copy's ticket to the copy (see
        `ltcli.science.interpolation`); the ticket is in this group or already stored."""
        trained = {
            cell: {"params": row.params, "batch_stats": row.batch_stats}
            for cell, row in zip(cells, rows, strict=True)
        }
        out = {}
        for cell, (_, mask, _) in zip(cells, inputs, strict=True):
            if cell.member.kind not in PAIRED_KINDS:
                continue
            ticket = CellKey(cell.replicate, cell.level)
            partner = trained.get(ticket) or self.view.read_trained(ticket)
            out[cell] = {
                "partner": "ticket",
                **path(engine, partner, trained[cell], mask, self.data),
            }
        return out

    def _store_cell(
        self,
        cell: CellKey,
        row: Group,
        mask: Any,
        curve: np.ndarray,
        start: int,
        facts: dict[str, Any],
    ) -> None:
        """Stores a trained cell: its mask, metrics (curve on the run's 0..T axis, summary,
        and `facts` of how it trained) and, for a ticket, its weights (and θk at level 0)."""
        if cell.member.is_ticket and row.rewind is not None:
            self.view.save_weights(self.store.rewind_path(self.run_id, cell.replicate), row.rewind)
        weights = None
        if cell.member.is_ticket or cell.member.kind in PAIRED_KINDS:  # copies keep theirs
            weights = {"params": row.params, "batch_stats": row.batch_stats}
        per_layer = pruning.counts(mask)
        every = self.cfg.eval_every
        metrics = {
            "replicate": cell.replicate,
            "level": cell.level,
            "member": str(cell.member),
            "percent_remaining": pruning.percent_remaining(mask),
            "layers": {name: list(c) for name, c in per_layer.items()},
            "curve": {
                "iteration": [start + (i + 1) * every for i in range(len(curve))],
                **{name: curve[:, j].tolist() for j, name in enumerate(METRICS)},
            },
            **summarize(curve, every, start),
            **facts,
        }
        self.view.write_cell(cell, mask, metrics, weights)

    def _train_group(
        self,
        level: int,
        cells: list[CellKey],
        engine: Engine,
        group: Group,
        capture: int,
        fingerprint: str,
    ) -> tuple[Group, np.ndarray]:
        """Trains `group` from its level's start to T, resuming from and saving checkpoints
        on the way."""
        cfg = self.cfg
        step, curves = self.start_step(level), np.zeros((len(cells), 0, len(METRICS)), np.float32)
        restored = self._load_checkpoint(cells, group, fingerprint)
        if restored is not None:
            group, step, curves = restored
        self.progress.level(level, cells, cfg.iterations, step)
        last_save = time.monotonic()
        data_on_device = self.data
        switches = [(i, s) for i, c in enumerate(cells) if (s := self.key_switch(c))]
        while step < cfg.iterations:
            for i, (at, key) in switches:
                if step == at:  # a spawned copy branches off its ticket here
                    ticket = cells.index(CellKey(cells[i].replicate, 0))
                    group = _branch(group, i, ticket, key, labels_of(cells[i], self.run_id))
            group, metrics = engine.segment(
                group, step, engine.segment_evals, data_on_device, capture
            )
            curves = np.concatenate([curves, np.asarray(metrics)[: len(cells)]], axis=1)
            step += engine.segment_evals * cfg.eval_every
            if step < cfg.iterations and time.monotonic() - last_save >= self.checkpoint_seconds:
                self._save_checkpoint(cells, group, step, curves, fingerprint)
                last_save = time.monotonic()
            self.progress.advance(engine.segment_evals * cfg.eval_every)
        self.progress.finish()
        return group, curves

    def _grouped_engine(self, cells: int, fresh_group: Callable[[], Group]) -> Engine:
        """The engine with this runner's grouping; ``auto`` picks it (see `ltcli.train.grouping`)."""
        choice = self.grouping
        if choice == "auto":
            model_name, shape = self.desc["model.name"], self.source.image_shape
            choice = pick_grouping(model_name, self.engine, cells, shape, fresh_group, self.data)
        return dataclasses.replace(self.engine, grouping=choice)

    # -- mid-level checkpoints ----------------------------------------------------------------

    def _save_checkpoint(
        self,
        cells: list[CellKey],
        group: Group,
        step: int,
        curves: np.ndarray,
        fingerprint: str,
    ) -> None:
        """Saves the group's state, each leaf under its pytree path (Adam's mu and nu have
        equal shapes: positions could swap them unnoticed), with what it started from."""
        leaves = jax.tree_util.tree_flatten_with_path(jax.device_get(group))[0]
        arrays = {f"state{jax.tree_util.keystr(path)}": np.asarray(x) for path, x in leaves}
        arrays.update(
            step=np.asarray(step),
            curves=curves,
            cells=np.asarray([str(c.relpath) for c in cells]),
            inputs=np.asarray(fingerprint),
        )
        atomic.write_npz(self.store.checkpoint_path(self.run_id, _checkpoint_name(cells)), arrays)

    def _load_checkpoint(
        self, cells: list[CellKey], like: Group, fingerprint: str
    ) -> tuple[Group, int, np.ndarray] | None:
        """The saved state of this level's group, or None to start the level afresh.

        A checkpoint is used only if it holds these cells, every leaf of `like` under its
        path with its shape and dtype, was saved from these masks and start points (the
        inputs' `fingerprint`), and its masks equal `like`'s bit for bit with every pruned
        weight zero. Anything else is stale (the run changed under it, or the file is not
        lt's): it is discarded with a note.
        """
        path = self.store.checkpoint_path(self.run_id, _checkpoint_name(cells))
        if not path.exists():
            return None
        paths_leaves, structure = jax.tree_util.tree_flatten_with_path(like)
        names = [f"state{jax.tree_util.keystr(p)}" for p, _ in paths_leaves]
        try:
            with np.load(path) as saved:
                stored = {k: saved[k] for k in saved.files}
        except (OSError, ValueError) as err:
            return self._discard(path, f"unreadable ({err})")
        if [str(x) for x in stored.get("cells", [])] != [str(c.relpath) for c in cells]:
            return self._discard(path, "it holds other cells")
        if str(stored.get("inputs", "")) != fingerprint:
            return self._discard(path, "its cells started from other masks or weights")
        for name, (_, leaf) in zip(names, paths_leaves, strict=True):
            saved_leaf = stored.get(name)
            if (
                saved_leaf is None
                or saved_leaf.shape != leaf.shape
                or saved_leaf.dtype != leaf.dtype
            ):
                return self._discard(path, f"{name} is missing or of another shape")
        restored = jax.tree.unflatten(structure, [stored[name] for name in names])
        fresh_masks = jax.device_get(jax.tree.leaves(like.mask))
        masks = zip(jax.tree.leaves(restored.mask), fresh_masks, strict=True)
        if not all(np.array_equal(saved, fresh) for saved, fresh in masks):
            return self._discard(path, "its masks differ from the level's")
        try:
            checks.pruned_are_zero(restored.params, restored.mask, "checkpoint")
        except LtError:
            return self._discard(path, "pruned weights in it are not zero")
        group = jax.tree.map(jax.numpy.asarray, restored)
        return group, int(stored["step"]), stored["curves"]

    def _discard(self, path: Any, why: str) -> None:
        self.progress.note(f"note: discarded the checkpoint {path}: {why}; the level starts over")
        path.unlink(missing_ok=True)
        return None


def labels_of(cell: CellKey, run_id: str) -> str:
    """How errors and warnings name a cell."""
    return f"run {run_id[:12]} level {cell.level} r{cell.replicate} {cell.member}"


def _branch(group: Group, copy: int, ticket: int, key: jax.Array, label: str) -> Group:
    """`group` with row `copy` set to row `ticket`'s whole state (weights, batch norm,
    optimizer state) and its data order switched to `key`: a spawned copy leaves its
    ticket at k bit for bit, checked here as the stability copies' starts are."""
    state = group._replace(data_key=None)
    state = jax.tree.map(lambda x: x.at[copy].set(x[ticket]), state)
    for a, b in zip(
        jax.tree.leaves((state.params, state.batch_stats, state.opt_state)),
        jax.tree.leaves((group.params, group.batch_stats, group.opt_state)),
        strict=True,
    ):
        if np.asarray(a[copy]).tobytes() != np.asarray(b[ticket]).tobytes():
            raise InvariantError(f"{label}: does not branch from its ticket's state bit for bit")
    return state._replace(data_key=group.data_key.at[copy].set(key))


def _checkpoint_name(cells: list[CellKey]) -> str:
    """A group's checkpoint: ``level_<L>`` for one level's cells, else (deferred controls)
    named by the cells it holds."""
    levels = {c.level for c in cells}
    if len(levels) == 1:
        return f"level_{levels.pop()}"
    digest = hashlib.sha256(" ".join(str(c.relpath) for c in cells).encode()).hexdigest()
    return f"controls_{digest[:12]}"


def _read_only(variables: dict[str, Any]) -> dict[str, Any]:
    """`variables` with every array read-only: shared starting points cannot be changed."""
    for leaf in pruning.leaves(variables).values():
        leaf.setflags(write=False)
    return variables


def _fingerprint(inputs: list[tuple[dict[str, Any], Any, dict[str, Any]]]) -> str:
    """sha256 of a group's masks and start points, cell by cell, leaf by leaf in path order."""
    hasher = hashlib.sha256()
    for start, mask, _ in inputs:
        for tree in (start, mask):
            checks.digest(tree, into=hasher)
    return hasher.hexdigest()


def masked(params: Any, mask: Any) -> Any:
    """`params` with pruned entries exactly +0.0 (not -0.0, as multiplying would give)."""
    return jax.tree.map(lambda p, m: np.where(m > 0, p, np.zeros_like(p)), params, mask)
