"""The training engine: masked training of a group of cells.

A *group* is several cells of equal shapes (replicates, controls) stacked along a leading
axis (`Group`). The engine's parts, in reading order:

- the step (`Engine._step`): one optimizer step of one cell, where the masks apply;
- the loop (`Engine.segment`): a whole number of evaluation periods in one jitted call;
  inside, `lax.scan` runs the steps of each period and evaluates validation and test after
  it, so Python never sits in the inner loop. The group runs under `vmap` or one cell after
  another (`lax.map`) in the same program; which is the `grouping` the caller picks, and the
  numbers do not depend on it (the host loop, `ltcli.train.feeders.HostLoop`, calls `steps`
  from Python instead);
- evaluation (`Engine._evaluate`): loss and accuracy over whole evaluation batches.

How batches reach the step (data on the device, or read from the host) is the run's
`ltcli.train.feeders.Feeder`; the data on the device is `ltcli.train.device_data`, the
optimizer and schedule `ltcli.train.recipes`.

Pruned weights are exactly zero at every step: gradients are masked before the optimizer
(so Adam's moments and SGD's momentum of pruned weights stay zero) and the updated
parameters are multiplied by the mask. A mask learned by gradient (ste, edge-popup,
supermask) is the exception: its step (`ltcli.train.mask_learning`) keeps the weights dense
and applies the mask it computes in the forward pass.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from functools import partial
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import PartitionSpec as P

from ltcli.core.pytrees import Mask, Params
from ltcli.train.device_data import (
    DeviceData,
    augment,
    batch_indices,
    standardized,
    step_key_of,
    window_starts,
)
from ltcli.train.mask_learning import EVALUATED, LearnedMasks
from ltcli.train.mask_updates import MaskUpdates
from ltcli.train.placement import Placement
from ltcli.train.recipes import TrainConfig, at_step, in_precision, optimizer


class Group(NamedTuple):
    """The state of a group of cells, each leaf stacked along axis 0 (one row per cell).

    `rewind` holds ``{"params", "batch_stats"}`` captured at the late-rewinding iteration, or
    is None. `first_batch` holds the example indices of the first step each cell trained
    (-1 until it trains): written by the training step itself, so what a cell records as
    its first batch is what it consumed. `sparse` holds, for a cell whose mask changes while
    it trains (`ltcli.train.mask_updates`), its schedule: per pruned layer one count per
    update step; None otherwise. `scores` holds, for an edge-popup or supermask ticket
    (`ltcli.train.mask_learning`), the scores it trains over its frozen `params` (shaped
    like them, 0 in the layers it does not learn); None otherwise.
    """

    params: Params
    batch_stats: Any
    opt_state: Any
    mask: Mask
    data_key: jax.Array
    rewind: Any = None
    first_batch: Any = None
    sparse: Any = None
    scores: Any = None


def stack(trees: list[Any]) -> Any:
    """One pytree whose leaves stack those of `trees` along a new axis 0 (the inverse of
    `unstack`)."""
    return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)


def stack_host(trees: list[Any]) -> Any:
    """`stack` for host pytrees: stacked by numpy, then one transfer per leaf."""
    return jax.tree.map(lambda *xs: jnp.asarray(np.stack(xs)), *trees)


def unstack(tree: Any, count: int) -> list[Any]:
    """Splits a stacked pytree into `count` host (numpy) pytrees."""
    host = jax.device_get(tree)
    return [jax.tree.map(lambda x, i=i: np.asarray(x[i]), host) for i in range(count)]


def _variables(params: Params, batch_stats: Any) -> dict:
    return {"params": params, "batch_stats": batch_stats} if batch_stats else {"params": params}


@dataclasses.dataclass(frozen=True)
class Engine(Placement):
    """Trains groups of cells of one model on one data set.

    Attributes:
      model: the Flax module.
      cfg: training hyperparameters.
      grouping: ``"vmap"`` (cells side by side) or ``"serial"`` (one after another, in the
        same program); ``"host"`` where the run's feeder is the host loop
        (`ltcli.train.feeders.HostLoop`), which then never calls `segment`.
      segment_evals: evaluation periods per jitted call (progress and checkpoints happen
        between calls).
      deterministic: every cell runs the same one-cell program whatever its group: a lone
        cell too goes through the loop of ``serial`` (never its own unbatched program), and
        ``vmap`` is not used. A cell's numbers are then bit-identical alone or in any group.
      devices: the local devices a group is sharded over along its cell axis (`start` pads
        it to a multiple with copies of its last cell, which `unstack` never returns); each
        device trains its share with the grouping, as one device trains a whole group.
      context: 0 for images; for a language model on text
        (`ltcli.train.device_data.to_device_text`), its context length: an example is then
        a window of context + 1 tokens of the training stream, which the model reads and
        predicts shifted by one.
      parallel: ``cells`` (a group's cells split over the devices) or ``batch`` (every cell
        on all of them, each device computing a share of its batch; `_split_batch`), for a
        cell too big or too slow for one device. The batch size must divide by `devices`.
      updates: how the step changes masks while cells train (GMP, SET, RigL), or None: the
        masks are fixed.
      learned: how the step learns masks by gradient (ste, edge-popup, supermask), or None.
    """

    model: nn.Module
    cfg: TrainConfig
    grouping: str = "vmap"
    segment_evals: int = 10
    deterministic: bool = False
    devices: int = 1
    context: int = 0
    parallel: str = "cells"
    updates: MaskUpdates | None = None
    learned: LearnedMasks | None = None

    @property
    def tx(self) -> optax.GradientTransformation:
        return optimizer(self.cfg)

    @partial(jax.jit, static_argnums=(0, 2))  # eager init would dispatch op by op
    def init(self, key: jax.Array, image_shape: tuple[int, ...]) -> tuple[Params, Any]:
        """Fresh parameters and batch-norm statistics (empty dict if none) from `key`; a
        language model ignores `image_shape` and reads `context` tokens."""
        shape = (self.context,) if self.context else image_shape
        dummy = jnp.zeros((1, *shape), jnp.float32)
        variables = self.model.init({"params": key, "dropout": key}, dummy, train=False)
        return variables["params"], variables.get("batch_stats", {})

    def start(
        self,
        params: list[Params],
        batch_stats: list[Any],
        masks: list[Mask],
        keys: list,
        capture_rewind: bool = False,
        start_step: int | Sequence[int] = 0,
        schedules: list[dict[str, np.ndarray]] | None = None,
        scores: list[Params] | None = None,
    ) -> Group:
        """Stacks the starting points of cells into a group, with fresh optimizer state whose
        schedule is at `start_step` (one for all cells or one per cell: the iteration a cell
        starts at, or T for one that fine-tunes at the final learning rate; see `at_step`).

        `params` must already be masked (pruned weights zero). With `capture_rewind`, the
        group gets a `rewind` slot for `segment(..., rewind_at=k)` to fill. `schedules`: each
        cell's mask-update table (`Group.sparse`), for an engine with `updates`. `scores`:
        each cell's first scores (`Group.scores`), for an engine that learns masks over
        frozen weights; the optimizer then trains them instead of the weights.
        """
        stacked = stack_host(params)
        steps = np.broadcast_to(np.asarray(start_step, np.int32), (len(params),))
        stacked_scores = stack_host(scores) if scores else None
        trained = stacked if stacked_scores is None else stacked_scores
        opt_state = self._init_opt_state(trained, jnp.asarray(steps))
        stats = stack_host(batch_stats)
        rewind = None
        if capture_rewind:
            rewind = jax.tree.map(jnp.copy, {"params": stacked, "batch_stats": stats})
        group = Group(
            stacked,
            stats,
            opt_state,
            stack_host(masks),
            jnp.stack([jnp.asarray(k) for k in keys]),
            rewind,
            jnp.full((len(params), self.cfg.batch_size), -1, jnp.int32),
            stack_host(schedules) if schedules else None,
            stacked_scores,
        )
        return self.place_group(group)

    @partial(jax.jit, static_argnums=(0,))  # eagerly, each leaf's init is its own dispatch
    def _init_opt_state(self, stacked: Params, start_step: jax.Array) -> Any:
        return at_step(jax.vmap(self.tx.init)(stacked), start_step)

    # -- the step: a batch, the loss, one masked update ----------------------------------------

    def train_inputs(self, data: DeviceData, ids: jax.Array, step_key: jax.Array) -> jax.Array:
        """The normalized training images `ids`, augmented (on raw pixels) if configured."""
        return self.normalized(data.x_train[ids], step_key, data)

    def normalized(self, raw: jax.Array, step_key: jax.Array, data: DeviceData) -> jax.Array:
        """Raw training images augmented (if configured) and normalized, as a step sees them."""
        if self.cfg.augment:
            raw = augment(raw, jax.random.fold_in(step_key, 1))
        return standardized(raw, data)

    def train_batch(
        self, data: DeviceData, ids: jax.Array, step_key: jax.Array
    ) -> tuple[jax.Array, jax.Array]:
        """Inputs and labels of training examples `ids`: images (`train_inputs`) and their
        labels, or for text the windows starting at `ids` and their next tokens."""
        if self.context:
            windows = data.x_train[ids[:, None] + jnp.arange(self.context + 1)]
            return windows[:, :-1], windows[:, 1:]
        return self.train_inputs(data, ids, step_key), data.y_train[ids]

    def examples(self, data: DeviceData) -> int:
        """Training examples to draw from: images, or the start positions of text windows."""
        if self.context:
            return data.x_train.shape[0] - self.context
        return data.y_train.shape[0]

    def _loss(self, params, batch_stats, x, y, key):
        precision = self.cfg.precision
        variables = _variables(in_precision(params, precision), batch_stats)
        x = in_precision(x, precision)
        if batch_stats:
            logits, updates = self.model.apply(
                variables, x, train=True, rngs={"dropout": key}, mutable=["batch_stats"]
            )
            new_stats = jax.tree.map(
                lambda new, old: new.astype(old.dtype), updates["batch_stats"], batch_stats
            )
        else:
            logits = self.model.apply(variables, x, train=True, rngs={"dropout": key})
            new_stats = batch_stats
        logits = logits.astype(jnp.float32)  # the loss in float32
        if self.cfg.label_smoothing:  # Szegedy et al. 2016; evaluation keeps the plain loss
            targets = jax.nn.one_hot(y, logits.shape[-1], dtype=logits.dtype)
            smoothed = optax.smooth_labels(targets, self.cfg.label_smoothing)
            return optax.softmax_cross_entropy(logits, smoothed).mean(), new_stats
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
        return loss, new_stats

    def _step(
        self,
        cell: Group,
        t: jax.Array,
        ids: jax.Array,
        data: DeviceData,
        streamed: Any = None,
        may_update: bool = True,
    ) -> Group:
        """One masked optimizer step of one (unstacked) cell on the examples `ids`, read from
        `data` on the device or given as `streamed` (their raw images and labels). With
        `updates`, a step that `may_update` changes the mask where iteration `t` is an update
        step (`MaskUpdates.step`); the caller passes False only where `t` is known not to be
        one."""
        step_key = step_key_of(cell.data_key, t)
        if streamed is None:
            batch = self.train_batch(data, ids, step_key)
        else:
            batch = (self.normalized(streamed[0], step_key, data), streamed[1])
        x, y = self._split_batch(batch)
        first = cell.first_batch
        if first is not None:  # the first step a cell trains records what it trained on
            first = jnp.where(first[0] < 0, ids.astype(first.dtype), first)
        if self.learned is not None:  # the mask is learned: `ltcli.train.mask_learning`
            after = self.learned.step(self._loss, self.tx, cell, x, y, step_key)
            return after._replace(first_batch=first)
        grad_fn = jax.grad(self._loss, has_aux=True)
        dense_grads, stats = grad_fn(cell.params, cell.batch_stats, x, y, step_key)
        grads = jax.tree.map(jnp.multiply, dense_grads, cell.mask)
        updates, opt_state = self.tx.update(grads, cell.opt_state, cell.params)
        params = jax.tree.map(jnp.multiply, optax.apply_updates(cell.params, updates), cell.mask)
        after = cell._replace(
            params=params, batch_stats=stats, opt_state=opt_state, first_batch=first
        )
        if self.updates is None or not may_update:
            return after
        return self.updates.step(cell, after, t, dense_grads, step_key)

    # -- the loop: evaluation periods in one program (`lax.scan`) ------------------------------

    def _end_of_period(
        self, cell: Group, step: jax.Array, data: DeviceData, rewind_at: int
    ) -> tuple[Group, jax.Array]:
        """Captures θk if `step` is the rewind iteration; evaluates validation and test (a
        learned mask: under the mask of the state reached, `LearnedMasks.evaluated`)."""
        if rewind_at:
            now = {"params": cell.params, "batch_stats": cell.batch_stats}
            rewind = jax.tree.map(lambda p, r: jnp.where(step == rewind_at, p, r), now, cell.rewind)
            cell = cell._replace(rewind=rewind)
        params = cell.params
        if self.learned is not None:
            key = jax.random.fold_in(step_key_of(cell.data_key, step), EVALUATED)
            cell, params = self.learned.evaluated(cell, key)
        val = self._evaluate(params, cell.batch_stats, data, data.x_val, data.y_val, data.w_val)
        test = self._evaluate(params, cell.batch_stats, data, data.x_test, data.y_test, data.w_test)
        return cell, jnp.stack([*val, *test])

    def _indices(self, cell: Group, step0: jax.Array, data: DeviceData, evals: int) -> jax.Array:
        """The batches of `evals` periods from `step0`: one table, a few permutations (text:
        `window_starts`)."""
        return self._draw(cell.data_key, step0, evals, self.examples(data))

    def _draw(self, data_key: jax.Array, step0: jax.Array, evals: int, n: int) -> jax.Array:
        """(evals, every, batch) example indices of a cell's data-order stream from `step0`
        over `n` training examples (text: window starts)."""
        cfg = self.cfg
        order_key = jax.random.fold_in(data_key, 0)
        draw = window_starts if self.context else batch_indices
        ids = draw(order_key, step0, evals * cfg.eval_every, cfg.batch_size, n)
        return ids.reshape(evals, cfg.eval_every, cfg.batch_size)

    def _cell_segment(
        self, cell: Group, step0: jax.Array, data: DeviceData, evals: int, rewind_at: int
    ):
        """Advances one (unstacked) cell by `evals` evaluation periods from `step0`."""
        every = self.cfg.eval_every
        if not rewind_at:
            cell = cell._replace(rewind=None)

        def period(cell, inputs):
            index, ids = inputs
            first = step0 + index * every
            cell = self._period_steps(cell, first + jnp.arange(every), ids, data)
            return self._end_of_period(cell, first + every, data, rewind_at)

        periods = (jnp.arange(evals), self._indices(cell, step0, data, evals))
        return jax.lax.scan(period, cell, periods)

    def _period_steps(self, cell: Group, t: jax.Array, ids: jax.Array, data: DeviceData):
        """The steps of one period (iterations `t`, batches `ids`) as a `lax.scan`. With mask
        updates, a scan over stretches of `MaskUpdates.stride` steps whose first step alone
        may update the mask: the update's `lax.cond` runs once a stretch, not at every step
        (on LeNet it cost a tenth of the step time, update or not)."""

        def plain(cell, inputs):
            return self._step(cell, *inputs, data, may_update=False), None

        if self.updates is None:
            return jax.lax.scan(plain, cell, (t, ids))[0]

        def stretch(cell, inputs):
            t, ids = inputs
            cell = self._step(cell, t[0], ids[0], data)
            return jax.lax.scan(plain, cell, (t[1:], ids[1:]))[0], None

        stride = self.updates.stride(self.cfg.eval_every)
        stretches = jax.tree.map(lambda x: x.reshape(-1, stride, *x.shape[1:]), (t, ids))
        return jax.lax.scan(stretch, cell, stretches)[0]

    @partial(jax.jit, static_argnums=(0, 4, 5), donate_argnums=(1,))
    def _segment(
        self, group: Group, step0: jax.Array, data: DeviceData, evals: int, rewind_at: int
    ):
        if self.devices == 1 or self.parallel == "batch":
            return self._replicated(self._local_segment(group, step0, data, evals, rewind_at))
        cells = P("cells")
        local = partial(self._local_segment, evals=evals, rewind_at=rewind_at)
        sharded = jax.shard_map(
            local, mesh=self.mesh(), in_specs=(cells, P(), P()), out_specs=(cells, cells)
        )
        return sharded(group, step0, data)

    def _local_segment(
        self, group: Group, step0: jax.Array, data: DeviceData, evals: int, rewind_at: int
    ):
        """`_segment` of the cells on one device."""
        one = partial(self._cell_segment, step0=step0, data=data, evals=evals, rewind_at=rewind_at)
        if self.deterministic:
            return jax.lax.map(one, group)
        if group.data_key.shape[0] == 1:  # a lone cell needs neither batching nor a loop
            cell, metrics = one(jax.tree.map(lambda x: x[0], group))
            return jax.tree.map(lambda x: x[None], (cell, metrics))
        if self.grouping == "vmap":
            return jax.vmap(one)(group)
        return jax.lax.map(one, group)

    def recorded_grouping(self, cells: int) -> str:
        """How a group of `cells` cells really trains, as each cell's metrics record it:
        ``single`` for a lone cell's own program, else the grouping."""
        if cells == 1 and self.grouping != "host" and not self.deterministic:
            return "single"
        return self.grouping

    # -- the step outside a program: for the host loop (`ltcli.train.feeders.HostLoop`) ----

    def _steps(self, cell: Group, t: jax.Array, ids: jax.Array, data: DeviceData) -> Group:
        """`_step` at iterations t, t + 1, ... on the batches `ids` (steps, batch), unrolled:
        no loop around the convolutions."""
        for k in range(ids.shape[0]):
            cell = self._step(cell, t + k, ids[k], data)
        return cell

    steps = jax.jit(_steps, static_argnums=(0,), donate_argnums=(1,))
    """`_steps` as its own call: one dispatch for a few consecutive steps of one cell."""
    end_of_period = jax.jit(_end_of_period, static_argnums=(0, 4))
    """`_end_of_period` as its own call."""
    period_indices = jax.jit(_indices, static_argnums=(0, 4))
    """`_indices` as its own call."""

    def segment(
        self, group: Group, step0: int, evals: int, data: DeviceData, rewind_at: int = 0
    ) -> tuple[Group, jax.Array]:
        """Trains `group` for `evals` evaluation periods starting at iteration `step0`.

        Args:
          group: the cells' state; its buffers are donated (do not reuse the argument).
          step0: the iteration the group is at (a multiple of ``cfg.eval_every``).
          evals: evaluation periods to run.
          data: the data set on the device.
          rewind_at: if > 0, ``group.rewind`` (see `start`) receives the parameters at this
            iteration.

        Returns:
          The advanced group and metrics of shape (cells, evals, 4), columns
          `ltcli.train.summary.METRICS`.
        """
        if self.updates is not None and step0 % self.cfg.eval_every:  # see `_period_steps`
            raise ValueError(f"segments start at multiples of {self.cfg.eval_every}, not {step0}")
        return self._segment(group, jnp.asarray(step0, jnp.int32), data, evals, rewind_at)

    # -- evaluation: whole batches, weighted by the real examples ------------------------------

    def evaluate_test(self, params: Params, batch_stats: Any, data: DeviceData) -> jax.Array:
        """Test loss and accuracy of one (unstacked) network."""
        return jnp.stack(
            self._evaluate(params, batch_stats, data, data.x_test, data.y_test, data.w_test)
        )

    def _evaluate(self, params, batch_stats, data: DeviceData, x, y, w):
        def one(batch):
            xb, yb, wb = batch
            if self.context:  # windows: mean next-token loss and accuracy of each
                xb, yb = xb[:, :-1], xb[:, 1:]
            else:
                xb = standardized(xb, data)
            return self._batch_sums(params, batch_stats, xb, yb, wb)

        losses, corrects = jax.lax.map(one, (x, y, w))
        count = jnp.sum(w)
        return jnp.sum(losses) / count, jnp.sum(corrects) / count

    def _batch_sums(self, params, batch_stats, x, y, w) -> tuple[jax.Array, jax.Array]:
        """The summed loss and correct predictions of one evaluation batch (weights `w`)."""
        if w.shape[0] % self.devices == 0:
            x, y, w = self._split_batch((x, y, w))
        precision = self.cfg.precision
        variables = _variables(in_precision(params, precision), batch_stats)
        logits = self.model.apply(variables, in_precision(x, precision), train=False)
        logits = logits.astype(jnp.float32)
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, y)
        correct = (jnp.argmax(logits, -1) == y).astype(jnp.float32)
        if self.context:
            loss, correct = loss.mean(-1), correct.mean(-1)
        return jnp.sum(jnp.where(w > 0, loss, 0.0)), jnp.sum(correct * w)
