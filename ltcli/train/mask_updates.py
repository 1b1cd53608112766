"""Mask updates inside the training step: GMP, SET and RigL (``prune.method``), on the
schedule a cell carries in its state (`ltcli.engine.Group.sparse`: per pruned layer, one
count per update step, `ltcli.science.sparse_training.schedule_table`).

`MaskUpdates.step` runs in the engine's step, wherever that step runs (the scan on the
device, the host loop, streamed data), as a `lax.cond` on "is iteration t an update step":
no return to Python. The iteration is the same for every cell of a group, so under `vmap`
the condition stays a real branch, and the selections run only at update steps. On the
device only the first step of every `MaskUpdates.stride` carries the branch
(`ltcli.train.engine.Engine._period_steps`).

At an update step:
- ``gmp``: the optimizer step as usual, then each layer keeps its `prune_to` count of largest
  |w| (Zhu & Gupta 2017: training goes on while the mask shrinks).
- ``set`` and ``rigl``: the mask update instead of the optimizer step (Evci et al. 2020,
  Algorithm 1: ``if t mod ΔT == 0 ... UpdateConnections else θ ← θ - α∇``; rigl's
  ``SparseRigLOptimizerBase.apply_gradients`` and jaxpruner's ``skip_gradients = True`` for
  both). Drop and grow use the weights before the step and, for RigL, the dense gradient of
  this step's batch (lt's backward pass is dense already: the gradient is masked only after
  it). The learning-rate schedule's counter still advances, so every step reads lt's
  training clock; Adam's moments and bias-correction count stay as they were.
In both, weights and the parameter-shaped optimizer state (Adam's mu and nu, SGD's momentum)
are multiplied by the new mask: dropped weights and their moments become exactly zero, and a
grown weight, inactive (so zero, with zero moments) until then, starts at zero with zero
moments (rigl's ``grow_init='zeros'`` and ``reset_momentum``; jaxpruner's
``restart_inner_state``). A weight dropped and grown again at the same update keeps its
value and moments, as in both references (neither counts it as a new connection).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from ltcli.science import pruning
from ltcli.science.sparse_training import drop_and_grow, drop_bounds, prune_to


def masked_state(opt_state: Any, params: Any, mask: Any) -> Any:
    """`opt_state` with every part shaped like `params` multiplied by `mask`."""
    structure = jax.tree.structure(params)

    def is_part(x: Any) -> bool:
        return jax.tree.structure(x) == structure

    def mask_part(x: Any) -> Any:
        return jax.tree.map(jnp.multiply, x, mask) if is_part(x) else x

    return jax.tree.map(mask_part, opt_state, is_leaf=is_part)


def advanced_schedule(opt_state: Any) -> Any:
    """`opt_state` with the learning-rate schedule's counter one step on (nothing else)."""

    def advance(state: Any) -> Any:
        if isinstance(state, optax.ScaleByScheduleState):
            return state._replace(count=state.count + 1)
        return state

    return jax.tree.map(
        advance, opt_state, is_leaf=lambda x: isinstance(x, optax.ScaleByScheduleState)
    )


@dataclasses.dataclass(frozen=True)
class MaskUpdates:
    """When and how a group's masks change (static: part of the engine's program).

    Attributes:
      method: ``gmp``, ``set`` or ``rigl``.
      first: the first update step; the others follow every `every` iterations.
      every: Δt in iterations.
      count: how many update steps there are (the length of each cell's table).
      bounds: per pruned layer, the most weights one update drops (`drop_bounds`).
    """

    @classmethod
    def of(
        cls,
        method: str,
        steps: np.ndarray,
        every: int,
        sizes: dict[str, int],
        tables: list[dict[str, Any]],
    ) -> MaskUpdates:
        """The updates at `steps` (every `every` iterations) of cells with these `tables`."""
        bounds = tuple(sorted(drop_bounds(method, sizes, tables).items()))
        return cls(method, int(steps[0]), every, len(steps), bounds)

    method: str
    first: int
    every: int
    count: int
    bounds: tuple[tuple[str, int], ...]

    def stride(self, period: int) -> int:
        """The longest stretch, dividing a `period` of iterations, whose steps after the first
        never update: every update step is a multiple of it, so with periods starting at
        multiples of `period` an update can only fall on a stretch's first step."""
        return math.gcd(period, self.every, self.first)

    def index(self, t: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Whether iteration `t` updates the mask, and which update (row of the table) it is."""
        offset = t - self.first
        j = offset // self.every
        due = (offset >= 0) & (offset % self.every == 0) & (j < self.count)
        return due, jnp.clip(j, 0, self.count - 1)

    def step(
        self, before: Any, after: Any, t: jax.Array, dense_grads: Any, step_key: jax.Array
    ) -> Any:
        """The cell after iteration `t`: `after` (the optimizer step's result), or at an
        update step the cell with its mask updated (see the module docstring). `before` is
        the cell at the start of the step, `dense_grads` its unmasked gradient."""
        due, j = self.index(t)
        return jax.lax.cond(
            due, lambda: self._update(before, after, j, dense_grads, step_key), lambda: after
        )

    def _update(self, before: Any, after: Any, j: jax.Array, grads: Any, step_key: jax.Array):
        base = after if self.method == "gmp" else before
        masks = pruning.leaves(base.mask)
        weights, gradients = pruning.leaves(base.params), pruning.leaves(grads)
        grow_key = jax.random.fold_in(step_key, 3)
        bounds = dict(self.bounds)
        for i, (name, counts) in enumerate(sorted(base.sparse.items())):
            if self.method == "gmp":
                masks[name] = prune_to(masks[name], weights[name], counts[j], bounds[name])
                continue
            if self.method == "rigl":
                score = jnp.abs(gradients[name])
            else:
                score = jax.random.uniform(jax.random.fold_in(grow_key, i), masks[name].shape)
            masks[name] = drop_and_grow(masks[name], weights[name], score, counts[j], bounds[name])
        mask = pruning.unflatten(masks)
        params = jax.tree.map(jnp.multiply, base.params, mask)
        opt_state = masked_state(base.opt_state, params, mask)
        if self.method != "gmp":
            opt_state = advanced_schedule(opt_state)
        return after._replace(params=params, opt_state=opt_state, mask=mask)
