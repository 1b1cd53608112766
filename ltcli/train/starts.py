"""What each cell starts from: its start weights, its mask and the point it was rewound to,
materialized from its row of the combination table (`ltcli.experiment.combinations`).

Level 0 starts from θ0 with a dense mask. A pruned level's ticket mask comes from level
L-1's trained ticket (IMP), from level 0's (one-shot targets) or from a method's scores of
the network the level trains from (pruning at initialization, `ltcli.science.scoring`); its
weights from θ0, θk, or a trained ticket (``lr-rewind`` and ``finetune``). A replicate whose
ticket diverged cannot be pruned from (`ltcli.train.divergence`).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ltcli.core.errors import LtError
from ltcli.experiment import combinations
from ltcli.science import criteria, learned_masks, pruning, scoring, sparse_training
from ltcli.science.methods import FROZEN_WEIGHTS, TRAINS_TO_TARGET
from ltcli.science.pruning import layer_kind
from ltcli.storage.store import CellKey
from ltcli.train.context import RunContext
from ltcli.train.device_data import standardized
from ltcli.train.divergence import diverged
from ltcli.train.keys import Keys


def masked(params: Any, mask: Any) -> Any:
    """`params` with pruned entries exactly +0.0 (not -0.0, as multiplying would give)."""
    return jax.tree.map(lambda p, m: np.where(m > 0, p, np.zeros_like(p)), params, mask)


def _read_only(tree: Any) -> Any:
    """`tree` with every array read-only: shared starting points cannot be changed."""
    for leaf in pruning.leaves(tree).values():
        leaf.setflags(write=False)
    return tree


class Starts:
    """The inputs of a run's cells; θ0, θk and each replicate's ticket mask are read or made
    once and shared read-only (`clear` forgets the masks once a level is set up)."""

    def __init__(self, run: RunContext, keys: Keys):
        self.run, self.keys = run, keys
        self._points: dict[Any, dict[str, Any]] = {}
        self._tickets: dict[tuple[int, int], Any] = {}

    def clear(self) -> None:
        """Forgets the ticket masks: the next level prunes from what this one stores."""
        self._tickets.clear()

    def sources(self, cell: CellKey) -> combinations.Inputs:
        """Where `cell` starts: its row of the combination table."""
        desc = self.run.desc
        return combinations.inputs(
            method=desc["prune.method"],
            retrain=desc["prune.retrain"],
            rewind=desc["prune.rewind_iter"],
            iterations=self.run.cfg.iterations,
            schedule=combinations.schedule_of(self.run.strategy.one_shot),
            member=cell.member,
            level=cell.level,
        )

    def group_start(self, level: int, cells: list[CellKey]) -> int:
        """The iteration a group of `cells` starts training at: 0 at level 0 (a spawned
        copy's row follows its ticket from 0), else their data position (k, or 0 for
        sparse-training tickets, which train from θ0)."""
        if level == 0:
            return 0
        (start,) = {self.sources(c).data_position for c in cells}
        return start

    def schedule_step(self, cell: CellKey) -> int:
        """Where a cell's learning-rate schedule starts (`combinations.Inputs`)."""
        return self.sources(cell).schedule_step

    def fresh(self, key: jax.Array) -> dict[str, Any]:
        """A new initialization (params and batch-norm state) from `key`; for edge-popup and
        the supermask, with the frozen weights ``prune.frozen_init`` names in every layer
        they learn a mask of (`learned_masks.frozen_weights`, drawn from `key` too)."""
        params, stats = self.run.engine.init(key, self.run.input_shape)
        point = jax.device_get({"params": params, "batch_stats": stats})
        method = self.run.desc["prune.method"]
        if method not in FROZEN_WEIGHTS:
            return point
        kind = learned_masks.frozen_kind(method, self.run.desc["prune.frozen_init"])
        flat = pruning.flatten(point["params"])
        for i, name in enumerate(sorted(self.run.strategy.targets(point["params"]))):
            flat[name] = learned_masks.frozen_weights(kind, flat[name], jax.random.fold_in(key, i))
        return dict(point, params=pruning.unflatten(flat))

    def init_point(self, replicate: int) -> dict[str, Any]:
        """θ0 of a replicate, created and stored once, read from disk once (read-only). A
        process that does not write the store (`ltcli.core.hosts`) keeps what it created,
        which is what the writer stores."""
        store = self.run.store
        path = store.init_path(self.run.run_id, replicate)
        if path not in self._points:
            point = None
            if not path.exists():
                point = self.fresh(self.keys.stream(0, replicate))
                store.save_weights(path, point)
            if store.writer or point is None:
                point = store.load_weights(path)
            self._points[path] = _read_only(point)
        return self._points[path]

    def rewind_point(self, replicate: int, level: int) -> dict[str, Any]:
        """Where a level's survivors are rewound to: θ0 at level 0, later θ0 or θk (late
        rewinding)."""
        if level > 0 and self.run.desc["prune.rewind_iter"]:
            path = self.run.store.rewind_path(self.run.run_id, replicate)
            if path not in self._points:
                self._points[path] = _read_only(self.run.view.load_weights(path))
            return self._points[path]
        return self.init_point(replicate)

    def _weights(self, cell: CellKey, source: str) -> dict[str, Any]:
        """The variables a `combinations` weight source names, for `cell`."""
        replicate = cell.replicate
        if source in ("theta0", "ticket_at_k"):  # a spawned copy follows the ticket from θ0
            return self.init_point(replicate)
        if source == "theta_k":
            return self.rewind_point(replicate, cell.level)
        if source in ("fresh", "fresh_signed"):  # the control's own stream, as reinit's
            fresh = self.fresh(jax.random.PRNGKey(int(self.keys.control(cell).integers(2**31))))
            if source == "fresh":
                return fresh
            signs = self.rewind_point(replicate, cell.level)["params"]
            return dict(fresh, params=criteria.signed_reinit(fresh["params"], signs))
        if source == "signed_constant":
            point = self.rewind_point(replicate, cell.level)
            return dict(point, params=criteria.signed_constant(point["params"]))
        previous = 0 if source == "trained_dense" else cell.level - 1
        return self.run.view.read_trained(CellKey(replicate, previous))

    def ticket_mask(self, replicate: int, level: int) -> Any:
        """The ticket's mask at `level`: stored if that cell is finished, else made from its
        source (`combinations`); one read-only copy per replicate and level."""
        if (replicate, level) not in self._tickets:
            self._tickets[replicate, level] = _read_only(
                self._ticket_mask(CellKey(replicate, level))
            )
        return self._tickets[replicate, level]

    def _ticket_mask(self, cell: CellKey) -> Any:
        view = self.run.view
        template = self.init_point(cell.replicate)["params"]
        source = self.sources(cell).mask
        if source == "dense":
            return pruning.dense_mask(template)
        if view.is_finished(cell):  # sparse training: the mask its ticket ended with
            return view.read_mask(cell, template)
        if source in ("gmp", "learned"):  # dense until the ticket trains
            return pruning.dense_mask(template)
        if source in ("budget", "drop_grow"):
            return self.budget_mask(cell.replicate, cell.level)
        if source == "scores":
            return self.at_init_mask(cell.replicate, cell.level)
        # IMP prunes the level before; one-shot levels all prune the dense level's network.
        previous = CellKey(cell.replicate, cell.level - 1 if source == "imp" else 0)
        if view.read_metrics(previous)["diverged"]:
            raise diverged(self.run.run_id, cell.replicate, previous.level)
        trained = view.read_trained(previous)["params"]
        mask = view.read_mask(previous, template)
        criterion = self.run.desc.get("prune.criterion", criteria.DEFAULT)
        if criterion == criteria.DEFAULT:  # IMP: the survivors of largest trained |w|
            return self.run.strategy.prune(trained, mask, cell.level)
        # Zhou et al. 2019: scored by θ0 (θk), the network the survivors are rewound to
        init = self.rewind_point(cell.replicate, cell.level)["params"]
        rng = self.keys.criterion(cell.replicate, cell.level)
        return criteria.prune(self.run.strategy, criterion, init, trained, mask, cell.level, rng)

    def budget(self, level: int) -> dict[str, int]:
        """Sparse training: weights each pruned layer keeps at `level`'s target, by the
        run's layer budget (``prune.distribution``; `sparse_training.budget_counts`)."""
        template = self.init_point(0)["params"]
        shapes = {n: np.shape(v) for n, v in pruning.leaves(template).items() if layer_kind(n)}
        pruned = list(self.run.strategy.targets(template))
        target = self.run.strategy.target(level)
        assert target is not None
        return sparse_training.budget_counts(
            shapes, pruned, target, self.run.desc["prune.distribution"]
        )

    def budget_mask(self, replicate: int, level: int) -> Any:
        """A random mask keeping `budget` in each pruned layer (the static, SET and RigL
        tickets' first mask; rigl's ``get_mask_random``), drawn per replicate and level."""
        flat = pruning.flatten(pruning.dense_mask(self.init_point(replicate)["params"]))
        rng = self.keys.budget(replicate, level)
        for name, keep in sorted(self.budget(level).items()):
            flat[name] = sparse_training.random_mask(flat[name].shape, keep, rng)
        return pruning.unflatten(flat)

    def expected_counts(self, cell: CellKey, params: Any) -> dict[str, int]:
        """What each layer of `cell`'s first mask keeps (`checks.counts`): the strategy's
        counts, or with sparse training and learned masks its budget (a GMP or learned
        ticket starts dense; a supermask learns its own counts, which its controls keep)."""
        method = self.run.desc["prune.method"]
        if method not in TRAINS_TO_TARGET or cell.level == 0:
            return self.run.strategy.expected_counts(params, cell.level)
        if self.sources(cell).mask in ("gmp", "learned"):
            return {
                n: int(np.size(leaf))
                for n, leaf in pruning.flatten(params).items()
                if n in self.run.strategy.targets(params)
            }
        if method == "supermask":
            counts = pruning.counts(self.ticket_mask(cell.replicate, cell.level))
            return {name: counts[name][0] for name in self.budget(cell.level)}
        return self.budget(cell.level)

    def score_examples(self, replicate: int) -> np.ndarray | None:
        """The training examples SNIP and GraSP score a replicate's network on: 10 per class
        (`scoring.balanced_indices`), drawn per replicate; None for data-free methods. Text
        has no classes: one training batch of windows, their starts drawn without
        replacement."""
        if not scoring.needs_data(self.run.desc["prune.method"]):
            return None
        rng = self.keys.scored_examples(replicate)
        if self.run.context:
            n = self.run.engine.examples(self.run.data)
            return np.sort(rng.choice(n, size=min(self.run.cfg.batch_size, n), replace=False))
        labels = np.asarray(self.run.data.y_train)
        return scoring.balanced_indices(labels, rng)

    def at_init_mask(self, replicate: int, level: int, invert: bool = False) -> Any:
        """The mask that the run's pruning-at-initialization method gives the network
        `level` trains from (θ0, or θk with late rewinding: "pruning early in training",
        Frankle et al. 2021) at `level`'s one-shot target, or with `invert` the
        lowest-scored weights. SNIP and GraSP score on `score_examples`, normalized as
        training normalizes them, without augmentation."""
        run, x, y = self.run, None, None
        ids = self.score_examples(replicate)
        if ids is not None and run.context:
            x, y = run.engine.train_batch(run.data, jnp.asarray(ids), None)
        elif ids is not None:
            x = standardized(run.data.x_train[ids], run.data)
            y = run.data.y_train[ids]
        (mask,) = scoring.masks_at_init(
            run.desc["prune.method"],
            run.model,
            self.rewind_point(replicate, level),
            [run.strategy.target(level)],
            image_shape=run.input_shape,
            exclude=run.strategy.exclude,
            batch_x=x,
            batch_y=y,
            key=self.keys.stream(4, replicate),
            invert=invert,
            mode=run.desc.get("prune.score_mode", "train"),
            pattern=run.strategy.pattern,
        )
        return mask

    def cell_inputs(self, cell: CellKey) -> tuple[dict[str, Any], Any, dict[str, Any]]:
        """(start variables, mask, starting point) of a cell; start = point under mask."""
        sources = self.sources(cell)
        mask = self.ticket_mask(cell.replicate, cell.level)
        ticket = CellKey(cell.replicate, cell.level)
        if sources.mask == "final" or (
            sources.mask == "random" and self.run.desc["prune.method"] in TRAINS_TO_TARGET
        ):
            if not self.run.view.is_finished(ticket):
                raise LtError(f"{ticket}: its controls need its final mask; train it first")
            if self.run.view.read_metrics(ticket)["diverged"]:
                raise diverged(self.run.run_id, cell.replicate, cell.level)
        if sources.mask == "random":
            mask = pruning.random_like(mask, self.keys.control(cell), self.run.strategy.pattern)
        elif sources.mask == "inverted":
            mask = self.at_init_mask(cell.replicate, cell.level, invert=True)
        point = self._weights(cell, sources.weights)
        return dict(point, params=masked(point["params"], mask)), mask, point

    def scored(self, cell: CellKey) -> dict[str, Any]:
        """What a mask made from scores saw: the iteration of the network scored and, for
        SNIP and GraSP, the indices of the training examples."""
        if self.sources(cell).mask not in ("scores", "inverted"):
            return {}
        ids = self.score_examples(cell.replicate)
        scored = {"scored_at": self.run.start_step(cell.level)}
        return scored | ({"scored_on": ids.tolist()} if ids is not None else {})
