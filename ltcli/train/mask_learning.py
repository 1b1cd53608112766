"""The training step of a learned-mask ticket (``prune.method`` ste, edge-popup, supermask):
what the engine's step does instead of its masked optimizer step.

At every step the forward computes each learned layer's mask from the cell's state
(`LearnedMasks.masks`): ``ste`` the top-|w| of its weights (or the N:M top of every group),
``edge-popup`` the top-|s| of its scores, ``supermask`` a Bernoulli draw from
sigmoid(scores). The network is the weights times that mask, and the gradient passes the
mask straight through (`ltcli.science.learned_masks`): to every weight (``ste``, which then
updates all of them; with SR-STE's λ_W the pruned ones also decay), or to the scores
(edge-popup, supermask: the optimizer updates the scores, never the weights). The cell's
``mask`` is the mask its last step used; each evaluation measures the mask of the state
reached (`LearnedMasks.evaluated`: a fresh draw for the supermask), and the mask of the last
evaluation is the one the cell stores.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

from ltcli.science import learned_masks, pruning

SAMPLE = 6
"""The tag folded into a step's key for its supermask draw (evaluations fold `EVALUATED`)."""
EVALUATED = 7


@dataclasses.dataclass(frozen=True)
class LearnedMasks:
    """How a group's masks are learned (static: part of the engine's program).

    Attributes:
      method: ``ste``, ``edge-popup`` or ``supermask``.
      keep: per learned layer (its flat name), the weights its mask keeps (ste,
        edge-popup; the supermask learns its own density: the count is its start budget).
      pattern: ``(n, m)`` for an N:M ``ste`` mask, else None.
      decay: SR-STE's λ_W (``ste``; 0: plain straight-through).
    """

    method: str
    keep: tuple[tuple[str, int], ...]
    pattern: tuple[int, int] | None = None
    decay: float = 0.0

    @property
    def trains_weights(self) -> bool:
        """Whether the optimizer trains the weights (ste), not scores over frozen ones."""
        return self.method == "ste"

    def masks(self, params: Any, scores: Any, key: jax.Array) -> dict[str, jax.Array]:
        """Each learned layer's forward mask for the state (`params`, `scores`); `key` draws
        the supermask's."""
        weights = pruning.leaves(params)
        learned = pruning.leaves(scores) if scores is not None else {}
        out = {}
        for i, (name, keep) in enumerate(self.keep):
            if self.method == "ste":
                magnitude = jnp.abs(weights[name])
                n_m = self.pattern
                out[name] = (
                    learned_masks.n_of_m(magnitude, *n_m)
                    if n_m
                    else learned_masks.top_k(magnitude, keep)
                )
            elif self.method == "edge-popup":
                out[name] = learned_masks.top_k(jnp.abs(learned[name]), keep)
            else:
                out[name] = learned_masks.bernoulli(jax.random.fold_in(key, i), learned[name])
        return out

    def forward(self, params: Any, scores: Any, masks: dict[str, jax.Array]) -> Any:
        """The network the forward runs: each learned layer's weights times its mask, with
        the straight-through gradient (to the weights, or to `scores`)."""
        flat = pruning.leaves(params)
        learned = pruning.leaves(scores) if scores is not None else {}
        for name, mask in masks.items():
            if self.method == "ste":
                flat[name] = learned_masks.ste_weights(flat[name], mask)
            elif self.method == "edge-popup":
                flat[name] = learned_masks.edge_popup_weights(flat[name], learned[name], mask)
            else:
                flat[name] = learned_masks.supermask_weights(flat[name], learned[name], mask)
        return pruning.unflatten(flat)

    def step(
        self,
        loss: Callable[..., tuple[jax.Array, Any]],
        tx: optax.GradientTransformation,
        cell: Any,
        x: jax.Array,
        y: jax.Array,
        key: jax.Array,
    ) -> Any:
        """One step of one cell (`ltcli.train.engine.Group`, unstacked) on the batch (`x`,
        `y`): the forward under this step's masks, the straight-through gradient of
        `loss(params, batch_stats, x, y, key)`, and the optimizer's update of the weights
        (ste) or the scores."""
        masks = self.masks(cell.params, cell.scores, jax.random.fold_in(key, SAMPLE))

        def objective(trained: Any) -> tuple[jax.Array, Any]:
            params, scores = (trained, None) if self.trains_weights else (cell.params, trained)
            return loss(self.forward(params, scores, masks), cell.batch_stats, x, y, key)

        trained = cell.params if self.trains_weights else cell.scores
        grads, stats = jax.grad(objective, has_aux=True)(trained)
        if self.decay:
            grads = self._decayed(grads, cell.params, masks)
        updates, opt_state = tx.update(grads, cell.opt_state, trained)
        trained = optax.apply_updates(trained, updates)
        slot = "params" if self.trains_weights else "scores"
        mask = self._whole(cell.mask, masks)
        return cell._replace(batch_stats=stats, opt_state=opt_state, mask=mask, **{slot: trained})

    def _decayed(self, grads: Any, params: Any, masks: dict[str, jax.Array]) -> Any:
        """SR-STE's sparse-refined term (Zhou et al. 2021, "Learning N:M Fine-grained Structured
        Sparse Neural Networks From Scratch"): λ_W w added to the gradient of each weight the
        forward pruned (``(1 - mask) * w``), none to the kept ones."""
        flat, weights = pruning.leaves(grads), pruning.leaves(params)
        for name, mask in masks.items():
            flat[name] = flat[name] + self.decay * (1.0 - mask) * weights[name]
        return pruning.unflatten(flat)

    @staticmethod
    def _whole(mask: Any, masks: dict[str, jax.Array]) -> Any:
        """The whole mask tree: the learned layers' `masks`, the others as they are (1)."""
        flat = pruning.leaves(mask)
        flat.update(masks)
        return pruning.unflatten(flat)

    def evaluated(self, cell: Any, key: jax.Array) -> tuple[Any, Any]:
        """The cell with the mask of the state it reached (a supermask's drawn with `key`)
        and the network that mask keeps (pruned weights exactly +0.0), which evaluation
        measures."""
        mask = self._whole(cell.mask, self.masks(cell.params, cell.scores, key))
        kept = jax.tree.map(lambda w, m: jnp.where(m > 0, w, jnp.zeros_like(w)), cell.params, mask)
        return cell._replace(mask=mask), kept
