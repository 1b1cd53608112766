"""Training one group of cells: from their inputs to stored results, every invariant checked.

`LevelTrainer.train` takes a level's unfinished cells (or deferred controls of several
levels that start at the same iteration), derives their inputs (`ltcli.train.starts`),
checks the documented counts and that copies start as their tickets, trains them as one
group through the engine (resuming from and saving `ltcli.train.checkpoints`), branches
spawned copies off their ticket at k, checks that pruned weights and their optimizer state
stayed zero, measures instabilities and stores each cell with what it really started from.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import jax
import numpy as np

from ltcli.core.errors import InvariantError
from ltcli.experiment.member import PAIRED_KINDS, SPAWN
from ltcli.experiment.plan import Progress
from ltcli.science import flops, pruning
from ltcli.storage.store import CellKey
from ltcli.train import checkpoints, checks, cost, learned_cells, sparse_cells
from ltcli.train.context import RunContext
from ltcli.train.engine import Engine, Group, unstack
from ltcli.train.grouping import pick as pick_grouping
from ltcli.train.instability import instabilities, level_barriers
from ltcli.train.keys import Keys
from ltcli.train.learned_cells import LearnedGroup
from ltcli.train.recipes import learning_rate, schedule_steps
from ltcli.train.sparse_cells import SparseGroup
from ltcli.train.starts import Starts
from ltcli.train.summary import METRICS, TextScored, summarize

Inputs = tuple[dict[str, Any], Any, dict[str, Any]]
"""A cell's (start variables, mask, starting point), as `Starts.cell_inputs` gives them."""


def label(cell: CellKey, run_id: str) -> str:
    """How errors and warnings name a cell."""
    return f"run {run_id[:12]} level {cell.level} r{cell.replicate} {cell.member}"


def branch(group: Group, copy: int, ticket: int, key: jax.Array, what: str) -> Group:
    """`group` with row `copy` set to row `ticket`'s whole state (weights, batch norm,
    optimizer state) and its data order switched to `key`: a spawned copy leaves its
    ticket at k bit for bit, checked here as the stability copies' starts are. (Its row
    follows the ticket from θ0 until then; only what it trains from k on is its own.)"""
    state = group._replace(data_key=None)
    state = jax.tree.map(lambda x: x.at[copy].set(x[ticket]), state)
    # The copy's first own step records its batch (its own data order at position k).
    state = state._replace(first_batch=state.first_batch.at[copy].set(-1))
    for a, b in zip(
        jax.tree.leaves((state.params, state.batch_stats, state.opt_state)),
        jax.tree.leaves((group.params, group.batch_stats, group.opt_state)),
        strict=True,
    ):
        if np.asarray(a[copy]).tobytes() != np.asarray(b[ticket]).tobytes():
            raise InvariantError(f"{what}: does not branch from its ticket's state bit for bit")
    return state._replace(data_key=group.data_key.at[copy].set(key))


def collapsed_layers(mask: Any) -> list[str]:
    """The prunable layers `mask` empties (the network then outputs a constant)."""
    return sorted(name for name, (kept, _) in pruning.counts(mask).items() if kept == 0)


def cell_metrics(
    cell: CellKey,
    mask: Any,
    curve: np.ndarray,
    start: int,
    every: int,
    facts: dict[str, Any],
    scored: TextScored | None = None,
) -> dict[str, Any]:
    """A trained cell's ``metrics.json``: its sparsity, its curve on the run's 0..T axis, the
    paper's summary of it (with bits per byte on text), and `facts` of how it trained."""
    return {
        "replicate": cell.replicate,
        "level": cell.level,
        "member": str(cell.member),
        "percent_remaining": pruning.percent_remaining(mask),
        "layers": {name: list(c) for name, c in pruning.counts(mask).items()},
        "curve": {
            "iteration": [start + (i + 1) * every for i in range(len(curve))],
            **{name: curve[:, j].tolist() for j, name in enumerate(METRICS)},
        },
        **summarize(curve, every, start, scored),
        **facts,
    }


def check_start(
    group: Group, labels: list[str], inputs: list[Inputs]
) -> tuple[list[str], np.ndarray]:
    """Checks that the engine starts from each starting point under its mask; returns
    the digests of the start weights and the schedule steps the optimizer starts at."""
    digests = []
    for what, row, (_, mask, point) in zip(
        labels, unstack(group, len(labels)), inputs, strict=True
    ):
        checks.rewound(row.params, point["params"], mask, what)
        checks.rewound(row.batch_stats, point["batch_stats"], None, what)
        digests.append(checks.digest(row.params))
    return digests, schedule_steps(group.opt_state)


def check_trained(group: Group, labels: list[str], sparse: SparseGroup | None = None) -> None:
    """Pruned weights and their optimizer state are still exactly zero (under the masks in
    force at the end), and each mask-updating cell keeps exactly its layer budget."""
    bad = np.asarray(checks.pruned_nonzero(group.params, group.opt_state, group.mask))
    if bad.any():  # the host checks name the layer (and raise)
        rows = unstack(group, len(labels))
        for what, row in zip(labels, rows, strict=True):  # the masks in force at the end
            checks.pruned_are_zero(row.params, row.mask, f"{what} trained weights")
            checks.optimizer_state_masked(row.opt_state, row.params, row.mask, what)
        raise InvariantError(f"{labels[int(bad.argmax())]}: pruned weights revived")
    if sparse is not None:
        masks = unstack(group.mask, len(labels))
        for what, row, budget in zip(labels, masks, sparse.budgets, strict=True):
            if why := sparse_cells.final_counts_differ(row, budget):
                raise InvariantError(f"{what}: after its mask updates {why}")


def _masks_kind(engine: Engine) -> str:
    """How a group's masks behave while it trains (`checkpoints.load`): ``fixed``,
    ``updated`` (GMP, SET, RigL) or ``learned`` (ste, edge-popup, supermask)."""
    if engine.learned is not None:
        return "learned"
    return "fixed" if engine.updates is None else "updated"


class LevelTrainer:
    """Trains groups of one run's cells and stores them.

    Attributes:
      spawn: the run's spawn points (the dense level's copies).
      barriers: whether each IMP ticket's error barrier to the level before is measured.
      checkpoints_by_cells: name each group's checkpoint by its cells
        (`ltcli.train.checkpoints.name`), for cluster tasks that train several groups of one
        level at once.
    """

    def __init__(
        self,
        run: RunContext,
        starts: Starts,
        keys: Keys,
        progress: Progress,
        checkpoint_seconds: float = 60.0,
    ):
        self.run, self.starts, self.keys, self.progress = run, starts, keys, progress
        self.checkpoint_seconds = checkpoint_seconds
        self.spawn: tuple[int, ...] = ()
        self.barriers = False
        self.checkpoints_by_cells = False

    def train(self, level: int, cells: list[CellKey]) -> None:
        """Trains `cells` as one group, checks every invariant, then stores them. A spawned
        copy whose dense ticket is already stored trains beside a replay of that ticket (not
        stored again), from which it branches at k.

        Raises:
          InvariantError: a check failed; no cell of the group is stored.
        """
        stored = len(cells)
        cells = cells + self._replayed_tickets(cells)
        inputs = [self.starts.cell_inputs(c) for c in cells]
        self.starts.clear()
        labels = [label(c, self.run.run_id) for c in cells]
        self._check_inputs(cells, labels, inputs)
        sparse = sparse_cells.of(self.starts, cells)
        learned = learned_cells.of(self.starts, cells)
        engine, fresh_group = self._engine_for(level, cells, inputs, sparse, learned)
        group = fresh_group()
        digests, steps = check_start(group, labels, inputs)
        started = time.perf_counter()
        first_step = self.starts.group_start(level, cells)
        group, curves, branched = self._train_group(
            level, first_step, cells, labels, engine, group, inputs
        )
        wall = (time.perf_counter() - started) / len(cells)
        if learned:  # each cell under its learned mask, its invariants checked
            group = learned_cells.finished(group, labels, digests, learned)
        check_trained(group, labels, sparse)
        rows = unstack(group._replace(opt_state=None), len(cells))
        paths = instabilities(engine, cells, rows, [m for _, m, _ in inputs], self.run)
        barriers = self._barriers(engine, cells[:stored], rows[:stored])
        # The cells this group was built from were written while it trained; now they are
        # on disk before any cell derived from them is (and memory holds one level's cells).
        self.run.view.sync()
        recorded = {
            "wall_seconds": wall,
            "grouping": engine.recorded_grouping(len(cells)),
            "deterministic": engine.deterministic,
            "devices": engine.devices,
            "parallel": engine.parallel,
        }
        written = 0
        for i, cell in enumerate(cells[:stored]):
            start = branched.get(i, {"digest": digests[i], "step": int(steps[i])})
            facts = {
                **recorded,
                # What the training loop itself started from and consumed:
                "start_digest": start["digest"],
                "schedule_step": start["step"],
                "first_learning_rate": float(learning_rate(self.run.cfg)(start["step"])),
                "first_batch": np.asarray(rows[i].first_batch).tolist(),
                "collapsed": collapsed_layers(rows[i].mask),
                **self.starts.scored(cell),
                **({"instability": paths[cell]} if cell in paths else {}),
                **({"level_barrier": barriers[cell]} if cell in barriers else {}),
                **({"spawn_iteration": cell.member.index} if cell.member.kind == SPAWN else {}),
                **(sparse.facts[i] if sparse else {}),
                **(learned.facts if learned else {}),
            }
            written += self._store_cell(cell, rows[i], curves[i], first_step, facts)
        self.run.view.clear_checkpoint(checkpoints.name(cells, self.checkpoints_by_cells))
        self.progress.stored(cells[:stored], self.run.view.flush)
        self.progress.note(
            f"level {level}: {stored} cells stored, {written / 2**20:,.1f} MiB of masks and weights"
        )

    def _barriers(
        self, engine: Engine, cells: list[CellKey], rows: list[Group]
    ) -> dict[CellKey, dict[str, Any]]:
        """Level barriers of the IMP tickets among `cells`, when the run asks for them
        (``run.barriers``; `ltcli.experiment.plan.plan_of` refuses them for one-shot
        levels, which are not successive prunings of each other)."""
        if not self.barriers:
            return {}
        return level_barriers(engine, cells, rows, self.run)

    def _replayed_tickets(self, cells: list[CellKey]) -> list[CellKey]:
        """The stored dense tickets that spawned copies in `cells` branch from: they train
        again beside the copies (to the copies' branch points, bit for bit)."""
        tickets = {CellKey(c.replicate, 0) for c in cells if c.member.kind == SPAWN}
        return sorted(tickets - set(cells))

    def _check_inputs(self, cells: list[CellKey], labels: list[str], inputs: list[Inputs]) -> None:
        """Each cell keeps exactly the documented counts; copies start as their tickets; a
        ticket whose mask empties a layer is warned about (layer collapse)."""
        by_cell = dict(zip(cells, inputs, strict=True))
        for cell, what, (start, mask, _) in zip(cells, labels, inputs, strict=True):
            strategy = self.run.strategy
            expected = self.starts.expected_counts(cell, start["params"])
            checks.counts(strategy.actual_counts(start["params"], mask), expected, what)
            if strategy.pattern and self.starts.sources(cell).mask != "learned":
                checks.pattern(strategy, start["params"], mask, cell.level, what)
            if cell.member.kind in PAIRED_KINDS:  # same weights, same mask; other data order
                ticket = CellKey(cell.replicate, cell.level)
                ticket_start, ticket_mask, _ = by_cell.get(ticket) or self.starts.cell_inputs(
                    ticket
                )
                checks.rewound(start["params"], ticket_start["params"], ticket_mask, what)
                checks.rewound(mask, ticket_mask, None, f"{what} mask")
            if cell.member.is_ticket and (empty := collapsed_layers(mask)):
                self.progress.note(
                    f"warning: {what}: the mask keeps no weight of {', '.join(empty)}, so the "
                    "network outputs a constant (layer collapse)"
                )

    def _engine_for(
        self,
        level: int,
        cells: list[CellKey],
        inputs: list[Inputs],
        sparse: SparseGroup | None,
        learned: LearnedGroup | None,
    ) -> tuple[Engine, Callable[[], Group]]:
        """The engine that trains this group (its grouping picked, its mask updates if
        `sparse`, its learned masks if `learned`), and how to start it."""
        keys = [self.keys.data(c) for c in cells]
        # A spawned copy's row follows its ticket from step 0 until it branches at k.
        schedule = [0 if c.member.kind == SPAWN else self.starts.schedule_step(c) for c in cells]
        base = dataclasses.replace(
            self.run.engine,
            parallel=self.run.parallel_for(len(cells)),
            updates=sparse.updates if sparse else None,
            learned=learned.learned if learned else None,
        )

        def fresh_group() -> Group:
            return base.start(
                [s["params"] for s, _, _ in inputs],
                [s["batch_stats"] for s, _, _ in inputs],
                [m for _, m, _ in inputs],
                keys,
                capture_rewind=bool(self._capture(level)),
                start_step=schedule,
                schedules=sparse.tables if sparse else None,
                scores=learned.scores if learned else None,
            )

        engine = self._grouped_engine(base, len(cells), fresh_group)
        if level == 0 and self.spawn:
            segment = self.run.segment_evals((self.run.start_step(1), *self.spawn))
            engine = dataclasses.replace(engine, segment_evals=segment)
        return engine, fresh_group

    def _capture(self, level: int) -> int:
        """The iteration whose weights level 0 keeps as θk (0: none)."""
        return self.run.desc["prune.rewind_iter"] if level == 0 else 0

    def _train_group(
        self,
        level: int,
        start: int,
        cells: list[CellKey],
        labels: list[str],
        engine: Engine,
        group: Group,
        inputs: list[Inputs],
    ) -> tuple[Group, np.ndarray, dict[int, dict[str, Any]]]:
        """Trains `group` from iteration `start` to T, resuming from and saving checkpoints
        on the way, branching spawned copies off their ticket at their spawn points.

        Returns:
          The trained group, its curves, and where each spawned copy (by row) started: the
          digest of its weights and its schedule step just after it branched.
        """
        cfg, run = self.run.cfg, self.run
        name = checkpoints.name(cells, self.checkpoints_by_cells)
        where = run.store.checkpoint_path(run.run_id, name)
        fingerprint = checkpoints.fingerprint(inputs)
        step, curves = start, np.zeros((len(cells), 0, len(METRICS)), np.float32)
        branched: dict[str, Any] = {}  # a spawned copy's start, recorded as it branches
        discard = partial(run.store.clear_checkpoint, run.run_id, name)
        restored = checkpoints.load(
            where, cells, group, fingerprint, self.progress.note, discard, _masks_kind(engine)
        )
        if restored is not None:
            group, step, curves, branched = restored
            group = engine.place_group(group)
        self.progress.level(level, cells, cfg.iterations, step)
        last_save, stride = time.monotonic(), engine.segment_evals * cfg.eval_every
        switches = [(i, s) for i, c in enumerate(cells) if (s := self.keys.switch(c))]
        while step < cfg.iterations:
            for i, (at, key) in switches:
                if step == at:  # a spawned copy branches off its ticket here
                    ticket = cells.index(CellKey(cells[i].replicate, 0))
                    group = branch(group, i, ticket, key, labels[i])
                    row = jax.device_get(jax.tree.map(lambda x, i=i: x[i], group))
                    count = int(schedule_steps(row.opt_state)[0])
                    branched[str(i)] = {"digest": checks.digest(row.params), "step": count}
            group, metrics = run.feeder.segment(
                engine, group, step, engine.segment_evals, self._capture(level)
            )
            curves = np.concatenate([curves, np.asarray(metrics)[: len(cells)]], axis=1)
            step += stride
            due = time.monotonic() - last_save >= self.checkpoint_seconds
            if step < cfg.iterations and due and run.store.writer:
                checkpoints.save(where, cells, group, step, curves, fingerprint, branched)
                last_save = time.monotonic()
            self.progress.advance(stride)
        self.progress.finish()
        return group, curves, {int(i): b for i, b in branched.items()}

    def _grouped_engine(
        self, engine: Engine, cells: int, fresh_group: Callable[[], Group]
    ) -> Engine:
        """`engine` with the run's grouping; ``auto`` picks it (`ltcli.train.grouping`)."""
        run = self.run
        choice = run.grouping
        if choice == "auto":
            model_name, shape = run.desc["model.name"], run.input_shape
            choice = pick_grouping(model_name, engine, cells, shape, fresh_group, run.feeder)
        return dataclasses.replace(engine, grouping=choice)

    def _store_cell(
        self, cell: CellKey, row: Group, curve: np.ndarray, start: int, facts: dict
    ) -> int:
        """Stores a trained cell: its mask (the one in force at the end), metrics and, for a
        ticket or a copy, its weights (and θk at level 0); its curve starts at `start`.
        Returns the bytes of the arrays it stores."""
        view, run = self.run.view, self.run
        mask = row.mask
        arrays = [mask]
        if cell.member.is_ticket and row.rewind is not None:
            view.save_weights(run.store.rewind_path(run.run_id, cell.replicate), row.rewind)
            arrays.append(row.rewind)
        weights = None
        if cell.member.is_ticket or cell.member.kind in PAIRED_KINDS:  # copies keep theirs
            weights = {"params": row.params, "batch_stats": row.batch_stats}
            arrays.append(weights)
        every = run.cfg.eval_every
        if cell.member.kind == SPAWN:  # its own training starts where it branched
            start, curve = cell.member.index, curve[(cell.member.index - start) // every :]
        segments = cost.segments(run.desc["prune.method"], mask, facts, start, run.cfg.iterations)
        final = flops.densities(pruning.counts(mask))
        facts = facts | cost.cost_facts(run.layer_flops, final, segments, run.cfg.batch_size)
        metrics = cell_metrics(cell, mask, curve, start, every, facts, run.scored)
        view.write_cell(cell, mask, metrics, weights)
        return sum(np.asarray(leaf).nbytes for leaf in jax.tree.leaves(arrays))
