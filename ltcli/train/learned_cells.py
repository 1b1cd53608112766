"""A group of learned-mask tickets (``prune.method`` ste, edge-popup, supermask): the engine's
`LearnedMasks`, each cell's first scores, the invariants checked after training, and the
facts each cell's metrics record.

Recorded facts (``metrics.json``): ``learned_mask`` (the method) and ``mask_evaluated``
(which mask each evaluation measured: the top-k of the state reached, or for the supermask
one Bernoulli draw from sigmoid(scores), the last of which is the stored mask).

Checked after training (a failure stores nothing): ste and edge-popup keep exactly their
layer budget (or N:M) in every learned layer; edge-popup's and the supermask's weights are
their frozen start bit for bit.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ltcli.core.errors import InvariantError
from ltcli.science import learned_masks, pruning
from ltcli.science.methods import FROZEN_WEIGHTS, LEARNED_MASKS
from ltcli.storage.store import CellKey
from ltcli.train import checks
from ltcli.train.engine import Group, unstack
from ltcli.train.mask_learning import LearnedMasks
from ltcli.train.starts import Starts

EVALUATED_MASK = {
    "ste": "top-k of |w| of the weights reached",
    "edge-popup": "top-k of |scores| reached",
    "supermask": "one Bernoulli draw from sigmoid(scores) (the last is the stored mask)",
}
"""What each evaluation of a learned ticket measured (``mask_evaluated``). Zhou et al. 2019
evaluate a supermask by Bernoulli draws (``train_supermask.py``: the mean of 10 at the end);
lt stores one mask per cell, so each evaluation draws one and the last draw is the ticket."""


@dataclasses.dataclass(frozen=True)
class LearnedGroup:
    """What a group of learned-mask tickets adds to an ordinary group."""

    learned: LearnedMasks
    scores: list[Any] | None
    budgets: list[dict[str, int]]

    @property
    def facts(self) -> dict[str, Any]:
        method = self.learned.method
        return {"learned_mask": method, "mask_evaluated": EVALUATED_MASK[method]}


def of(starts: Starts, cells: list[CellKey]) -> LearnedGroup | None:
    """The learned masks of `cells`, or None for cells whose masks are fixed.

    Raises:
      ValueError: learned tickets grouped with other cells, or of several levels (the
        runner trains a level's tickets before their controls).
    """
    run = starts.run
    method = run.desc["prune.method"]
    learning = [method in LEARNED_MASKS and starts.sources(c).mask == "learned" for c in cells]
    if not any(learning):
        return None
    if not all(learning) or len({c.level for c in cells}) != 1:
        raise ValueError("learned-mask tickets group only with tickets of their level")
    level = cells[0].level
    budget = starts.budget(level)
    pattern = run.strategy.pattern if method == "ste" else None
    decay = float(run.desc.get("prune.srste_decay", 0.0)) if method == "ste" else 0.0
    learned = LearnedMasks(method, tuple(sorted(budget.items())), pattern, decay)
    scores = None
    if method in FROZEN_WEIGHTS:
        scores = [_first_scores(starts, c, budget) for c in cells]
    return LearnedGroup(learned, scores, [budget] * len(cells))


def _first_scores(starts: Starts, cell: CellKey, budget: dict[str, int]) -> Any:
    """A ticket's first scores, shaped like its weights (0 in the layers it does not learn):
    edge-popup's uniform draw, or the supermask's logit of each layer's budget density."""
    flat = pruning.flatten(starts.init_point(cell.replicate)["params"])
    scores = {name: np.zeros_like(leaf) for name, leaf in flat.items()}
    rng = starts.keys.scores(cell.replicate, cell.level)
    for name, keep in sorted(budget.items()):
        shape = flat[name].shape
        if starts.run.desc["prune.method"] == "edge-popup":
            scores[name] = learned_masks.edge_popup_scores(shape, rng)
        else:
            scores[name] = learned_masks.supermask_scores(shape, keep / flat[name].size)
    return pruning.unflatten(scores)


def finished(group: Group, labels: list[str], digests: list[str], learned: LearnedGroup) -> Group:
    """The trained group as its cells are stored: each cell's weights under the mask of its
    last evaluation (pruned weights exactly +0.0), without scores or optimizer state, after
    checking that ste and edge-popup keep exactly their budget (or N:M) in every learned
    layer and that frozen weights are their start bit for bit (`digests`: of each cell's
    start weights, `checks.digest`).

    Raises:
      InvariantError: naming the cell and the layer.
    """
    method = learned.learned.method
    rows = unstack(group._replace(opt_state=None), len(labels))
    n_m = learned.learned.pattern
    for what, row, first, budget in zip(labels, rows, digests, learned.budgets, strict=True):
        if method in FROZEN_WEIGHTS and checks.digest(row.params) != first:
            raise InvariantError(f"{what}: its frozen weights changed while it trained")
        if n_m and not pruning.holds_pattern(row.mask, list(budget), n_m[0], n_m[1]):
            raise InvariantError(f"{what}: its mask does not keep {n_m[0]} of every {n_m[1]}")
        if method != "supermask" and not n_m:
            counts = pruning.counts(row.mask)
            for name, want in budget.items():
                if counts[name][0] != want:
                    raise InvariantError(f"{what}: {name} keeps {counts[name][0]}, not {want}")
    params = jax.tree.map(
        lambda w, m: jnp.where(m > 0, w, jnp.zeros_like(w)), group.params, group.mask
    )
    return group._replace(params=params, opt_state=None, scores=None)
