"""The random keys and generators of a run, each a pure function of the run and the cell.

A replicate's keys are ``fold_in(fold_in(PRNGKey(seed), stream), replicate)`` with stream 0
for its initialization, 1 for its data order, 2 and 3 for the data orders of its stability
and spawned copies (folded with the copy's index, or its spawn iteration) and 4 for its
pruning-at-initialization scores. Controls draw their masks and fresh initializations from a
NumPy generator seeded by (run id, replicate, level, index, kind), a sparse-training
ticket's first mask from one seeded by (run id, replicate, level, 5), and the scores of the
``random`` mask criterion (``prune.criterion``, Zhou et al. 2019) from one seeded by (run id,
replicate, level, 6); an edge-popup ticket's first scores from one seeded by (run id,
replicate, level, 8).
"""

from __future__ import annotations

import jax
import numpy as np

from ltcli.experiment.member import CONTROL_KINDS, SPAWN, CellKey


class Keys:
    """The keys of one run (seed `seed`, id `run_id`), each derived once; the examples SNIP
    and GraSP score on are drawn by `scoring_id` (the id without the scoring mode, so both
    modes score the same examples)."""

    def __init__(self, seed: int, run_id: str, scoring_id: str | None = None):
        self.seed, self.run_id = seed, run_id
        self.scoring_id = scoring_id or run_id
        self._keys: dict[tuple[int, int], jax.Array] = {}

    def stream(self, stream: int, replicate: int) -> jax.Array:
        """The key of `stream` (see the module docstring) of a replicate."""
        if (stream, replicate) not in self._keys:  # eager fold_ins cost ms: once each
            root = jax.random.PRNGKey(self.seed)
            key = jax.random.fold_in(jax.random.fold_in(root, stream), replicate)
            self._keys[stream, replicate] = key
        return self._keys[stream, replicate]

    def data(self, cell: CellKey) -> jax.Array:
        """The key of a cell's data order and per-step noise: the replicate's, except for a
        stability copy (its own from the start). A spawned copy starts with the replicate's
        and switches at its spawn point (`switch`)."""
        if cell.member.kind == "stability":
            return jax.random.fold_in(self.stream(2, cell.replicate), cell.member.index)
        return self.stream(1, cell.replicate)

    def switch(self, cell: CellKey) -> tuple[int, jax.Array] | None:
        """(iteration, key) at which a spawned copy leaves the dense ticket's data order."""
        if cell.member.kind != SPAWN:
            return None
        k = cell.member.index
        return k, jax.random.fold_in(self.stream(3, cell.replicate), k)

    def control(self, cell: CellKey) -> np.random.Generator:
        """The generator of a control's random mask or fresh initialization."""
        kind = CONTROL_KINDS.index(cell.member.kind)
        parts = [int(self.run_id[:16], 16), cell.replicate, cell.level, cell.member.index, kind]
        return np.random.default_rng(parts)

    def budget(self, replicate: int, level: int) -> np.random.Generator:
        """The generator of a sparse-training ticket's first random mask (static, SET,
        RigL) at `level`."""
        return np.random.default_rng([int(self.run_id[:16], 16), replicate, level, 5])

    def criterion(self, replicate: int, level: int) -> np.random.Generator:
        """The generator of the ``random`` mask criterion's scores of `level`'s ticket
        (`ltcli.science.criteria`)."""
        return np.random.default_rng([int(self.run_id[:16], 16), replicate, level, 6])

    def scores(self, replicate: int, level: int) -> np.random.Generator:
        """The generator of an edge-popup ticket's first scores at `level`."""
        return np.random.default_rng([int(self.run_id[:16], 16), replicate, level, 8])

    def scored_examples(self, replicate: int) -> np.random.Generator:
        """The generator of the training examples SNIP and GraSP score a replicate on."""
        return np.random.default_rng([int(self.scoring_id[:16], 16), replicate, 4])
