"""Iterative magnitude pruning over a store: train, prune, rewind, repeat, skipping every
cell that is already finished.

Level 0 trains the dense network from θ0. Level L's ticket mask is pruned from level L-1's
trained ticket, and its survivors are rewound to θ0 (or to θk, captured at iteration k of
level 0, with late rewinding). Controls branch off a level and feed nothing later:
``reinit-i`` keeps the ticket's mask with fresh weights, ``random-i`` draws a random mask
with the ticket's per-layer counts and starts from θ0 (θk). All unfinished cells of a level
train together as one group.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import Any

import jax
import numpy as np

from ltcli import atomic, checks, data, models, pruning
from ltcli.descriptor import Descriptor
from ltcli.engine import (
    METRICS,
    DeviceData,
    Engine,
    Group,
    TrainConfig,
    summarize,
    to_device,
    unstack,
)
from ltcli.grouping import pick as pick_grouping
from ltcli.launch import Plan, Progress
from ltcli.store import CellKey, Store

SEGMENT_ITERATIONS = 1000
"""About this many iterations run per jitted call; progress and checkpoints come between."""


def train_config(full: dict[str, Any]) -> TrainConfig:
    """The engine's configuration from a descriptor's full form."""
    train = full["train"]
    return TrainConfig(
        optimizer=train["optimizer"],
        lr=train["lr"],
        batch_size=train["batch_size"],
        iterations=train["iterations"],
        eval_every=train["eval_every"],
        momentum=train["momentum"],
        weight_decay=train["weight_decay"],
        warmup=train["warmup"],
        lr_drops=tuple(train["lr_drops"]),
        lr_drop_factor=train.get("lr_drop_factor", 0.1),
        augment=train["augment"],
    )


def strategy(full: dict[str, Any]) -> pruning.Strategy:
    prune = full["prune"]
    return pruning.Strategy(
        prune["strategy"], prune["rates"], tuple(prune["exclude"]), prune["one_shot"]
    )


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
    ):
        self.store, self.desc, self.source = store, desc, source
        self.run_id = desc.run_id
        self.progress = progress or Progress()
        self.checkpoint_seconds = checkpoint_seconds
        self.grouping = grouping
        self.cfg = train_config(desc.full)
        self.strategy = strategy(desc.full)
        self.model = models.create(desc["model.name"], source.num_classes, desc["model.dropout"])
        self._engine: Engine | None = None
        self._data: DeviceData | None = None
        self._tickets: dict[tuple[int, int], Any] = {}

    # -- lazily built: a run with nothing to train loads no data and compiles nothing --------

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            evals = self.cfg.iterations // self.cfg.eval_every
            per_call = max(1, SEGMENT_ITERATIONS // self.cfg.eval_every)
            segment = max(d for d in range(1, min(evals, per_call) + 1) if evals % d == 0)
            self._engine = Engine(self.model, self.cfg, "vmap", segment)
        return self._engine

    @property
    def data(self) -> DeviceData:
        if self._data is None:
            self._data = to_device(self.source.load(), self.desc["data.validation"])
        return self._data

    def _key(self, stream: int, replicate: int) -> jax.Array:
        """The key of a replicate's initialization (stream 0) or data order (stream 1)."""
        root = jax.random.PRNGKey(self.desc["train.seed"])
        return jax.random.fold_in(jax.random.fold_in(root, stream), replicate)

    # -- starting points ----------------------------------------------------------------------

    def _fresh(self, key: jax.Array) -> dict[str, Any]:
        params, stats = self.engine.init(key, self.source.image_shape)
        return jax.device_get({"params": params, "batch_stats": stats})

    def init_point(self, replicate: int) -> dict[str, Any]:
        """θ0 of a replicate (params and batch-norm state), created and stored once."""
        path = self.store.init_path(self.run_id, replicate)
        if path.exists():
            return self.store.load_weights(path)
        variables = self._fresh(self._key(0, replicate))
        self.store.save_weights(path, variables)
        return self.store.load_weights(path)

    def rewind_point(self, replicate: int, level: int) -> dict[str, Any]:
        """Where a level's survivors start: θ0 at level 0, later θ0 or θk (late rewinding)."""
        if level > 0 and self.desc["prune.rewind_iter"]:
            return self.store.load_weights(self.store.rewind_path(self.run_id, replicate))
        return self.init_point(replicate)

    def _control_rng(self, cell: CellKey) -> np.random.Generator:
        kind, index = cell.member.split("-")
        return np.random.default_rng(
            [
                int(self.run_id[:16], 16),
                cell.replicate,
                cell.level,
                int(index),
                ["reinit", "random"].index(kind),
            ]
        )

    def ticket_mask(self, replicate: int, level: int) -> Any:
        """The ticket's mask at `level`: stored if that cell is finished, else pruned from the
        trained ticket of the level before. All cells of a replicate's level share one
        (read-only) copy while the level is set up."""
        if (replicate, level) not in self._tickets:
            mask = self._ticket_mask(replicate, level)
            for leaf in pruning.leaves(mask).values():
                leaf.setflags(write=False)
            self._tickets[replicate, level] = mask
        return self._tickets[replicate, level]

    def _ticket_mask(self, replicate: int, level: int) -> Any:
        template = self.init_point(replicate)["params"]
        if level == 0:
            return pruning.dense_mask(template)
        cell = CellKey(replicate, level)
        if self.store.is_finished(self.run_id, cell):
            return self.store.read_mask(self.run_id, cell, template)
        previous = CellKey(replicate, level - 1)
        trained = self.store.read_trained(self.run_id, previous)["params"]
        mask = self.store.read_mask(self.run_id, previous, template)
        return self.strategy.prune(trained, mask)

    def cell_inputs(self, cell: CellKey) -> tuple[dict[str, Any], Any, dict[str, Any]]:
        """(start variables, mask, rewind variables) of a cell; start = rewind under mask."""
        mask = self.ticket_mask(cell.replicate, cell.level)
        point = self.rewind_point(cell.replicate, cell.level)
        if cell.member.startswith("reinit"):
            key = jax.random.PRNGKey(int(self._control_rng(cell).integers(2**31)))
            point = self._fresh(key)
        elif cell.member.startswith("random"):
            mask = pruning.random_like(mask, self._control_rng(cell))
        start = dict(point, params=masked(point["params"], mask))
        return start, mask, point

    # -- training ----------------------------------------------------------------------------

    def run(self, plan: Plan) -> None:
        """Trains every unfinished cell of `plan`, level by level."""
        for level in range(plan.rounds + 1):
            if todo := plan.unfinished(self.store, self.run_id, level):
                self.train_level(level, todo)

    def train_level(self, level: int, cells: list[CellKey]) -> None:
        """Trains `cells` of `level` as one group, checks every invariant, then stores them.

        Raises:
          InvariantError: a check failed; no cell of the group is stored.
        """
        inputs = [self.cell_inputs(c) for c in cells]
        self._tickets.clear()  # the next level prunes from what this one stores
        labels = [f"run {self.run_id[:12]} level {level} r{c.replicate} {c.member}" for c in cells]
        for label, (start, mask, _) in zip(labels, inputs, strict=True):
            expected = self.strategy.expected_counts(start["params"], level)
            checks.counts(self.strategy.actual_counts(start["params"], mask), expected, label)
        capture = self.desc["prune.rewind_iter"] if level == 0 else 0
        keys = [self._key(1, c.replicate) for c in cells]

        def fresh_group() -> Group:
            return self.engine.start(
                [s["params"] for s, _, _ in inputs],
                [s["batch_stats"] for s, _, _ in inputs],
                [m for _, m, _ in inputs],
                keys,
                capture_rewind=bool(capture),
            )

        engine = self._grouped_engine(len(cells), fresh_group)
        group = fresh_group()
        # What the engine really starts from must be the rewind point under the mask.
        for label, row, (_, mask, point) in zip(
            labels, unstack(group, len(cells)), inputs, strict=True
        ):
            checks.rewound(row.params, point["params"], mask, label)
            checks.rewound(row.batch_stats, point["batch_stats"], None, label)
        started = time.perf_counter()
        group, curves = self._train_group(level, cells, engine, group, capture)
        wall = (time.perf_counter() - started) / len(cells)
        rows = unstack(group, len(cells))
        for label, row, (_, mask, _) in zip(labels, rows, inputs, strict=True):
            checks.pruned_are_zero(row.params, mask, f"{label} trained weights")
            checks.optimizer_state_masked(row.opt_state, row.params, mask, label)
        for cell, row, curve, (_, mask, _) in zip(cells, rows, curves, inputs, strict=True):
            self._store_cell(cell, row, mask, curve, wall, engine.grouping)
        self.store.clear_checkpoint(self.run_id, level)

    def _store_cell(
        self, cell: CellKey, row: Group, mask: Any, curve: np.ndarray, wall: float, grouping: str
    ) -> None:
        if cell.member == "ticket" and row.rewind is not None:
            self.store.save_weights(self.store.rewind_path(self.run_id, cell.replicate), row.rewind)
        weights = None
        if cell.member == "ticket":
            weights = {"params": row.params, "batch_stats": row.batch_stats}
        per_layer = pruning.counts(mask)
        metrics = {
            "replicate": cell.replicate,
            "level": cell.level,
            "member": cell.member,
            "percent_remaining": pruning.percent_remaining(mask),
            "layers": {name: list(c) for name, c in per_layer.items()},
            "curve": {
                "iteration": [(i + 1) * self.cfg.eval_every for i in range(len(curve))],
                **{name: curve[:, j].tolist() for j, name in enumerate(METRICS)},
            },
            **summarize(curve, self.cfg.eval_every),
            "wall_seconds": wall,
            "grouping": grouping,
        }
        self.store.write_cell(self.run_id, cell, mask, metrics, weights)

    def _train_group(
        self, level: int, cells: list[CellKey], engine: Engine, group: Group, capture: int
    ) -> tuple[Group, np.ndarray]:
        """Trains `group` to the end, resuming from and saving checkpoints on the way."""
        cfg = self.cfg
        step, curves = 0, np.zeros((len(cells), 0, len(METRICS)), np.float32)
        restored = self._load_checkpoint(level, cells, group)
        if restored is not None:
            group, step, curves = restored
        self.progress.level(level, cells, cfg.iterations, step)
        last_save = time.monotonic()
        data_on_device = self.data
        while step < cfg.iterations:
            group, metrics = engine.segment(
                group, step, engine.segment_evals, data_on_device, capture
            )
            curves = np.concatenate([curves, np.asarray(metrics)], axis=1)
            step += engine.segment_evals * cfg.eval_every
            if step < cfg.iterations and time.monotonic() - last_save >= self.checkpoint_seconds:
                self._save_checkpoint(level, cells, group, step, curves)
                last_save = time.monotonic()
            self.progress.advance(engine.segment_evals * cfg.eval_every)
        self.progress.finish()
        return group, curves

    def _grouped_engine(self, cells: int, fresh_group: Callable[[], Group]) -> Engine:
        """The engine with this runner's grouping; ``auto`` picks it (see `ltcli.grouping`)."""
        choice = self.grouping
        if choice == "auto":
            model_name, shape = self.desc["model.name"], self.source.image_shape
            choice = pick_grouping(model_name, self.engine, cells, shape, fresh_group, self.data)
        return dataclasses.replace(self.engine, grouping=choice)

    # -- mid-level checkpoints ----------------------------------------------------------------

    def _save_checkpoint(
        self, level: int, cells: list[CellKey], group: Group, step: int, curves: np.ndarray
    ) -> None:
        leaves = jax.device_get(jax.tree.leaves(group))
        arrays = {f"leaf_{i}": np.asarray(x) for i, x in enumerate(leaves)}
        arrays.update(
            step=np.asarray(step), curves=curves, cells=np.asarray([str(c.relpath) for c in cells])
        )
        atomic.write_npz(self.store.checkpoint_path(self.run_id, level), arrays)

    def _load_checkpoint(
        self, level: int, cells: list[CellKey], like: Group
    ) -> tuple[Group, int, np.ndarray] | None:
        """The saved state of this level's group, or None if there is none that fits `like`
        (another set of cells, or a state of another shape): that level starts afresh."""
        path = self.store.checkpoint_path(self.run_id, level)
        if not path.exists():
            return None
        leaves, structure = jax.tree.flatten(like)
        with np.load(path) as saved:
            names = [f"leaf_{i}" for i in range(len(leaves))]
            fits = list(saved.get("cells", [])) == [str(c.relpath) for c in cells] and all(
                name in saved and saved[name].shape == leaf.shape
                for name, leaf in zip(names, leaves, strict=True)
            )
            if not fits:
                return None
            restored = [jax.numpy.asarray(saved[name]) for name in names]
            return (jax.tree.unflatten(structure, restored), int(saved["step"]), saved["curves"])


def masked(params: Any, mask: Any) -> Any:
    """`params` with pruned entries exactly +0.0 (not -0.0, as multiplying would give)."""
    return jax.tree.map(lambda p, m: np.where(m > 0, p, np.zeros_like(p)), params, mask)
