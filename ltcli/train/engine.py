"""The training engine: masked training of a group of cells as one XLA program.

Everything here is a pure function of pytrees. A *group* is several cells of equal shapes
(replicates, controls) stacked along a leading axis. `Engine.segment` advances a group by a
whole number of evaluation periods in one jitted call: inside, `lax.scan` runs the steps of
each period and evaluates validation and test after it, so Python never sits in the inner
loop. The group runs under `vmap` or one cell after another (`lax.map`) in the same program;
which is the `grouping` the caller picks, and the numbers do not depend on it.

Pruned weights are exactly zero at every step: gradients are masked before the optimizer
(so Adam's moments and SGD's momentum of pruned weights stay zero) and the updated
parameters are multiplied by the mask.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from functools import partial
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from ltcli.core.base import Mask, Params
from ltcli.data import Arrays, TextArrays, text
from ltcli.experiment.fields import FIELDS, Duration

EVAL_BATCH = 1000
METRICS = ("val_loss", "val_acc", "test_loss", "test_acc")


def _default(name: str) -> Any:
    """The default of the spec field ``train.NAME`` (`ltcli.experiment.fields.FIELDS`, the one
    place it is defined), a duration in iterations."""
    value = FIELDS[f"train.{name}"].default
    return value.iterations(0, 1) if isinstance(value, Duration) else value


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """The training hyperparameters of a run, with durations already in iterations; the
    optional ones default to their spec field's default."""

    optimizer: str
    lr: float
    batch_size: int
    iterations: int
    eval_every: int
    momentum: float = _default("momentum")
    beta1: float = _default("beta1")
    beta2: float = _default("beta2")
    weight_decay: float = _default("weight_decay")
    warmup: int = _default("warmup")
    lr_drops: tuple[int, ...] = _default("lr_drops")
    lr_drop_factor: float = _default("lr_drop_factor")
    augment: bool = _default("augment")
    schedule: str = _default("schedule")
    clip_norm: float = _default("clip_norm")
    label_smoothing: float = _default("label_smoothing")
    precision: str = _default("precision")

    @classmethod
    def of(cls, train: dict[str, Any]) -> TrainConfig:
        """The configuration in a descriptor's ``train`` section (fields it lacks keep their
        defaults; fields this class does not know, like the seed, are not the engine's)."""
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in train.items()}
        return cls(**{k: v for k, v in values.items() if k in known})


def learning_rate(cfg: TrainConfig) -> optax.Schedule:
    """Linear warmup from 0 over `cfg.warmup` steps, then `cfg.lr` times the drop factor
    once per drop boundary passed, or (``schedule = "cosine"``) a cosine decay from `cfg.lr`
    to 0 at T (Loshchilov & Hutter 2017, without restarts; the ViT and GPT recipes)."""
    if cfg.schedule == "cosine":  # `decay` reads the run's iteration, the cosine its own
        cosine = optax.cosine_decay_schedule(cfg.lr, max(cfg.iterations - cfg.warmup, 1))

        def decay(t: jax.Array) -> jax.Array:
            return cosine(t - cfg.warmup)
    else:
        boundaries = {step: cfg.lr_drop_factor for step in cfg.lr_drops}
        decay = optax.piecewise_constant_schedule(cfg.lr, boundaries)
    if not cfg.warmup:
        return decay
    warm = optax.linear_schedule(0.0, cfg.lr, cfg.warmup)
    return optax.join_schedules([warm, lambda t: decay(t + cfg.warmup)], [cfg.warmup])


def _matrices(params: Params) -> Any:
    """True for the leaves AdamW decays: kernels and embeddings, not biases or LayerNorm
    (GPT-2's and nanoGPT's rule: parameters of two or more dimensions)."""
    return jax.tree.map(lambda p: p.ndim >= 2, params)


def optimizer(cfg: TrainConfig) -> optax.GradientTransformation:
    """Adam (moment decays `cfg.beta1`, `cfg.beta2`) or SGD (with momentum) on the schedule,
    with L2 weight decay added to gradients, or AdamW with decoupled weight decay (Loshchilov
    & Hutter 2019; optax's form, decay scaled by the learning rate as in PyTorch) of
    `_matrices`. With `cfg.clip_norm`, the
    (masked) gradients are first clipped to that global norm (Pascanu et al. 2013).

    The schedule reads its own step counter (`optax.ScaleByScheduleState`), which
    `Engine.start` sets to the iteration a cell starts at (`at_step`)."""
    schedule = learning_rate(cfg)
    if cfg.optimizer == "adamw":
        base = optax.adamw(
            schedule, cfg.beta1, cfg.beta2, weight_decay=cfg.weight_decay, mask=_matrices
        )
    elif cfg.optimizer == "adam":
        base = optax.adam(schedule, cfg.beta1, cfg.beta2)
    else:
        base = optax.sgd(schedule, momentum=cfg.momentum or None)
    if cfg.weight_decay and cfg.optimizer != "adamw":
        base = optax.chain(optax.add_decayed_weights(cfg.weight_decay), base)
    if cfg.clip_norm:
        return optax.chain(optax.clip_by_global_norm(cfg.clip_norm), base)
    return base


def schedule_steps(opt_state: Any) -> np.ndarray:
    """The learning-rate schedule's step counter of each cell of a stacked group's optimizer
    state (what its next step's learning rate is read at)."""
    counts = [
        np.asarray(jax.device_get(s.count)).reshape(-1)
        for s in jax.tree.leaves(
            opt_state, is_leaf=lambda x: isinstance(x, optax.ScaleByScheduleState)
        )
        if isinstance(s, optax.ScaleByScheduleState)
    ]
    return counts[0]


def at_step(opt_state: Any, step: jax.Array) -> Any:
    """`opt_state` with the schedule's step counter at `step` and everything else as it is.

    A cell that starts from the state of iteration k (late rewinding) resumes the schedule at
    k with fresh moments, as open_lth does (training/train.py: a fresh optimizer, then
    ``lr_schedule.step()`` k times; lottery/desc.py ``train_start_step``) and Frankle et al.
    2020 ("Linear Mode Connectivity and the Lottery Ticket Hypothesis") describe: Adam's
    bias correction starts over, the learning rate does not.
    """

    def reset(state: Any) -> Any:
        if isinstance(state, optax.ScaleByScheduleState):
            return state._replace(count=jnp.full_like(state.count, step))
        return state

    return jax.tree.map(
        reset, opt_state, is_leaf=lambda x: isinstance(x, optax.ScaleByScheduleState)
    )


class DeviceData(NamedTuple):
    """A data set on the device. Eval sets are padded to whole batches; `*_w` marks the real
    examples with 1.

    Text (`to_device_text`): `x_train` is the training split's token stream, `x_val` and
    `x_test` are batches of windows of context + 1 tokens (input and next-token targets),
    the labels are unused zeros and `mean`, `std` are 0 and 1.
    """

    x_train: jax.Array
    y_train: jax.Array
    x_val: jax.Array
    y_val: jax.Array
    w_val: jax.Array
    x_test: jax.Array
    y_test: jax.Array
    w_test: jax.Array
    mean: jax.Array
    std: jax.Array


def eval_size(examples: int) -> int:
    """Examples per evaluation batch of a set of `examples`: all of them, at most
    `EVAL_BATCH`; in a multi-host job (`ltcli.core.hosts`) rounded up to a multiple of its
    devices, so that each device, and so each process, evaluates an equal share of every
    batch (`Engine.fed_rows`; the padding weighs nothing)."""
    size = min(EVAL_BATCH, max(examples, 1))
    return size + (-size % jax.device_count() if jax.process_count() > 1 else 0)


def _batched(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    n = len(y)
    size = eval_size(n)
    pad = -n % size
    w = np.concatenate([np.ones(n, np.float32), np.zeros(pad, np.float32)])
    x = np.concatenate([x, np.zeros((pad, *x.shape[1:]), x.dtype)])
    y = np.concatenate([y, np.zeros(pad, y.dtype)])
    batches = len(w) // size
    return (
        x.reshape(batches, size, *x.shape[1:]),
        y.reshape(batches, size),
        w.reshape(batches, size),
    )


EVAL_TOKENS = 32768
"""Tokens per evaluation batch of a text data set (windows of the context length)."""


def text_windows(tokens: np.ndarray, count: int, context: int) -> np.ndarray:
    """The windows of ``context + 1`` tokens of a split that evaluation reads, up to `count`
    spread evenly over the whole split (`text.eval_starts`): inputs and next-token targets."""
    starts = text.eval_starts(len(tokens), count, context)
    return tokens[starts[:, None] + np.arange(context + 1)]


class TextScored(NamedTuple):
    """The next-token targets evaluation scores in a text data set's validation and test
    splits (the tokens after the first of each of their `text_windows`): how many, and
    their UTF-8 bytes, which turn a mean loss per token into bits per byte."""

    tokens: tuple[int, int]
    bytes: tuple[int, int]


def text_scored(arrays: TextArrays, windows: int, context: int) -> TextScored:
    """What evaluation scores of `arrays`' validation and test splits (`TextScored`)."""
    targets = [text_windows(s, windows, context)[:, 1:] for s in (arrays.validation, arrays.test)]
    return TextScored(
        (targets[0].size, targets[1].size),
        (int(arrays.widths[targets[0]].sum()), int(arrays.widths[targets[1]].sum())),
    )


def to_device_text(arrays: TextArrays, windows: int, context: int) -> DeviceData:
    """A text data set on the device: the training stream, and up to `windows` windows of
    the validation and test splits (`text_windows`) in batches of about `EVAL_TOKENS`."""
    size = max(1, min(windows, EVAL_TOKENS // context))

    def batched(split: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        x = text_windows(split, windows, context).astype(np.int32)
        n = len(x)
        pad = -n % min(size, n)
        w = np.concatenate([np.ones(n, np.float32), np.zeros(pad, np.float32)])
        x = np.concatenate([x, np.zeros((pad, *x.shape[1:]), x.dtype)])
        b = len(w) // min(size, n)
        return x.reshape(b, -1, context + 1), np.zeros((b, len(w) // b), np.int32), w.reshape(b, -1)

    host = (
        arrays.train.astype(np.int32),
        np.zeros(0, np.int32),
        *batched(arrays.validation),
        *batched(arrays.test),
        np.zeros((), np.float32),
        np.ones((), np.float32),
    )
    return DeviceData(*(jax.device_put(a) for a in host))


def validation_split(n: int, validation: int) -> tuple[np.ndarray, np.ndarray]:
    """(held-out, training) indices of `n` training examples: `validation` of them chosen
    by a fixed permutation (seed 0), the rest in their order."""
    order = np.random.default_rng(0).permutation(n)
    return order[:validation], np.sort(order[validation:])


def pixel_stats(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and standard deviation (float32) of uint8 images, the
    normalization of every data set lt keeps whole."""
    pixels = images.reshape(-1, images.shape[-1]).astype(np.float64)
    return pixels.mean(0).astype(np.float32), (pixels.std(0) + 1e-8).astype(np.float32)


def split_validation(arrays: Arrays, validation: int) -> tuple[Arrays, np.ndarray, np.ndarray]:
    """Holds `validation` training examples out, chosen by a fixed permutation (seed 0).

    Returns:
      The arrays with the training split reduced, and the held-out images and labels.
    """
    val, train = validation_split(len(arrays.y_train), validation)
    reduced = arrays._replace(x_train=arrays.x_train[train], y_train=arrays.y_train[train])
    return reduced, arrays.x_train[val], arrays.y_train[val]


def to_device(arrays: Arrays, validation: int) -> DeviceData:
    """Splits off the validation set and puts everything on the default device.

    Images stay uint8 on the device and are normalized per batch by the training-split
    per-channel mean and standard deviation.
    """
    arrays, x_val, y_val = split_validation(arrays, validation)
    mean, std = pixel_stats(arrays.x_train)
    val, test = _batched(x_val, y_val), _batched(arrays.x_test, arrays.y_test)
    host = (
        arrays.x_train,
        arrays.y_train,
        *val,
        *test,
        mean,
        std,
    )
    return DeviceData(*(jax.device_put(a) for a in host))


class Group(NamedTuple):
    """The state of a group of cells, each leaf stacked along axis 0 (one row per cell).

    `rewind` holds ``{"params", "batch_stats"}`` captured at the late-rewinding iteration, or
    is None. `first_batch` holds the example indices of the first step each cell trained
    (-1 until it trains): written by the training step itself, so what a cell records as
    its first batch is what it consumed.
    """

    params: Params
    batch_stats: Any
    opt_state: Any
    mask: Mask
    data_key: jax.Array
    rewind: Any = None
    first_batch: Any = None


def batch_indices(key: jax.Array, step0: jax.Array, steps: int, batch: int, n: int) -> jax.Array:
    """Indices of the `steps` batches that start at iteration `step0`, shape (steps, batch).

    The examples are an endless stream of epochs, each an independent permutation of the
    `n` training examples keyed by ``fold_in(key, epoch)`` (`key` is the data-order stream).
    Batch ``t`` is stream positions ``[t * batch, (t + 1) * batch)``, so no example is
    dropped and any iteration can be reached without replaying the ones before it.
    """
    start = step0 * batch
    first_epoch = start // n
    epochs = math.ceil(steps * batch / n) + 1
    perms = [
        jnp.argsort(jax.random.bits(jax.random.fold_in(key, first_epoch + i), (n,)))
        for i in range(epochs)
    ]
    stream = jnp.concatenate(perms)
    window = jax.lax.dynamic_slice(stream, (start - first_epoch * n,), (steps * batch,))
    return window.reshape(steps, batch)


def standardized(images: jax.Array, data: DeviceData) -> jax.Array:
    """Raw uint8 images normalized by the data set's per-channel mean and std."""
    return (images.astype(jnp.float32) - data.mean) / data.std


def step_key_of(data_key: jax.Array, t: jax.Array) -> jax.Array:
    """The key of a cell's per-step randomness at iteration t (dropout, augmentation).

    A cell's key has two independent streams: data order (0, per epoch, see
    `batch_indices`) and per-step randomness (1)."""
    return jax.random.fold_in(jax.random.fold_in(data_key, 1), t)


def window_starts(key: jax.Array, step0: jax.Array, steps: int, batch: int, n: int) -> jax.Array:
    """Start positions of the text windows of the `steps` batches from iteration `step0`,
    shape (steps, batch): batch ``t`` is `batch` positions in [0, n) drawn uniformly with
    replacement by ``fold_in(key, t)`` (as nanoGPT draws random windows), so it is a pure
    function of the data-order stream and t, and a resumed cell draws what it would have."""
    steps_t = step0 + jnp.arange(steps)
    return jax.vmap(lambda t: jax.random.randint(jax.random.fold_in(key, t), (batch,), 0, n))(
        steps_t
    )


def augment(images: jax.Array, key: jax.Array) -> jax.Array:
    """Random horizontal flips and 4-pixel pad-and-crop, one draw per image.

    `images` are the raw pixels, so the padding is black (zeros before normalization), as in
    the paper's and open_lth's ``RandomCrop(32, padding=4)`` on unnormalized images."""
    flip_key, crop_key = jax.random.split(key)
    b, h, w, c = images.shape
    flip = jax.random.bernoulli(flip_key, 0.5, (b,))
    images = jnp.where(flip[:, None, None, None], images[:, :, ::-1], images)
    padded = jnp.pad(images, ((0, 0), (4, 4), (4, 4), (0, 0)))
    offsets = jax.random.randint(crop_key, (b, 2), 0, 9)

    def crop(image: jax.Array, offset: jax.Array) -> jax.Array:
        return jax.lax.dynamic_slice(image, (offset[0], offset[1], 0), (h, w, c))

    return jax.vmap(crop)(padded, offsets)


def _variables(params: Params, batch_stats: Any) -> dict:
    return {"params": params, "batch_stats": batch_stats} if batch_stats else {"params": params}


def compute_dtype(precision: str) -> Any:
    """The dtype the forward and backward passes run in (``train.precision``)."""
    return jnp.bfloat16 if precision == "bf16" else jnp.float32


def in_precision(tree: Any, precision: str) -> Any:
    """`tree`'s float leaves cast to the compute dtype: the network a step computes with.

    Mixed precision as Micikevicius et al. 2018 and Kalamkar et al. 2019 (bf16) define it: the
    master weights, optimizer state, batch-norm statistics and loss stay float32; only the
    products run in bfloat16. Gradients flow back through the cast to the float32 weights,
    so masking them and the update keeps pruned weights exactly zero."""
    if precision == "fp32":
        return tree
    dtype = compute_dtype(precision)
    return jax.tree.map(
        lambda x: x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x, tree
    )


@dataclasses.dataclass(frozen=True)
class Engine:
    """Trains groups of cells of one model on one data set.

    Attributes:
      model: the Flax module.
      cfg: training hyperparameters.
      grouping: ``"vmap"`` (cells side by side), ``"serial"`` (one after another, in the
        same program) or ``"host"`` (one after another, each step its own call: XLA:CPU runs
        convolutions inside loops many times slower than at the top level, jax#12868).
      segment_evals: evaluation periods per jitted call (progress and checkpoints happen
        between calls).
      deterministic: every cell runs the same one-cell program whatever its group: a lone
        cell too goes through the loop of ``serial`` (never its own unbatched program), and
        ``vmap`` is not used. A cell's numbers are then bit-identical alone or in any group.
      devices: the local devices a group is sharded over along its cell axis (`start` pads
        it to a multiple with copies of its last cell, which `unstack` never returns); each
        device trains its share with the grouping, as one device trains a whole group.
      context: 0 for images; for a language model on text (`to_device_text`), its context
        length: an example is then a window of context + 1 tokens of the training stream,
        which the model reads and predicts shifted by one.
      parallel: ``cells`` (a group's cells split over the devices) or ``batch`` (every cell
        on all of them, each device computing a share of its batch; `_split_batch`), for a
        cell too big or too slow for one device. The batch size must divide by `devices`.
    """

    model: nn.Module
    cfg: TrainConfig
    grouping: str = "vmap"
    segment_evals: int = 10
    deterministic: bool = False
    devices: int = 1
    context: int = 0
    parallel: str = "cells"

    def mesh(self) -> Mesh:
        """The first `devices` local devices along one axis: ``cells``, or ``batch`` when
        every cell's batch is split over them (`parallel`). In a multi-host job
        (`ltcli.core.hosts`), every device of every process."""
        devices = jax.devices() if jax.process_count() > 1 else jax.local_devices()
        return Mesh(np.asarray(devices[: self.devices]), (self._axis,))

    @property
    def _axis(self) -> str:
        return "batch" if self.parallel == "batch" else "cells"

    def _split_batch(self, tree: Any) -> Any:
        """`tree` (one cell's examples along axis 0) laid out over the mesh's ``batch`` axis,
        where `parallel` is ``batch``: XLA then computes each device's share of the batch and
        reduces across devices where the cell needs the whole batch (the loss, its gradient,
        batch norm's statistics: over the global batch). The numbers are the one-device
        numbers up to the order of float additions."""
        return self._laid_out(tree, P("batch"))

    def _replicated(self, tree: Any) -> Any:
        """`tree` whole on every device, where `parallel` is ``batch``: what a split batch
        left split (the first batch's ids) is gathered, so that every process of a
        multi-host job can read every result (`ltcli.core.hosts`)."""
        return self._laid_out(tree, P())

    def _laid_out(self, tree: Any, spec: P) -> Any:
        """Every leaf of `tree` constrained to `spec` over the mesh where `parallel` is
        ``batch`` (as it is elsewhere)."""
        if self.parallel != "batch" or self.devices == 1:
            return tree
        sharding = NamedSharding(self.mesh(), spec)
        return jax.tree.map(lambda x: jax.lax.with_sharding_constraint(x, sharding), tree)

    def _fed_sharding(self, axis: int = 2) -> NamedSharding:
        """Streamed examples split along their batch `axis` over the mesh: training batches
        (cells, steps, batch, ...), evaluation batches (batches, size, ...) along axis 1."""
        return NamedSharding(self.mesh(), P(*(None,) * axis, "batch"))

    def fed_rows(self, size: int = 0) -> slice:
        """The rows of each streamed batch of `size` examples (0: a training batch) this
        process reads: every row, or in a multi-host job (`ltcli.core.hosts`) the rows its
        own devices train on or evaluate."""
        if jax.process_count() == 1:
            return slice(None)
        rows = range(size or self.cfg.batch_size)
        spans = self._fed_sharding(0).addressable_devices_indices_map((len(rows),)).values()
        return slice(min(rows[s[0]][0] for s in spans), max(rows[s[0]][-1] for s in spans) + 1)

    def fed_batch(self, local: np.ndarray, size: int = 0, axis: int = 2) -> jax.Array:
        """Streamed examples of this process's `fed_rows` of batches of `size` (0: a
        training batch) along `axis`, as one array of whole batches over the mesh (as they
        are, on one host)."""
        if jax.process_count() == 1:
            return jnp.asarray(local)
        shape = list(local.shape)
        shape[axis] = size or self.cfg.batch_size
        sharding = self._fed_sharding(axis)
        return jax.make_array_from_process_local_data(sharding, local, tuple(shape))

    def place_data(self, data: DeviceData) -> DeviceData:
        """`data` replicated on every device of the mesh (as is with one device)."""
        if self.devices == 1:
            return data
        return jax.device_put(data, NamedSharding(self.mesh(), P()))

    def place_group(self, group: Group) -> Group:
        """`group` padded to a multiple of `devices` cells (copies of its last cell) and
        split along the cell axis over the mesh."""
        if self.devices == 1:
            return group
        if self.parallel == "batch":  # every device holds every cell: parameters replicated
            return jax.device_put(group, NamedSharding(self.mesh(), P()))
        cells = group.data_key.shape[0]
        pad = -cells % self.devices

        def padded(x: jax.Array) -> jax.Array:
            return jnp.concatenate([x, jnp.repeat(x[-1:], pad, axis=0)]) if pad else x

        return jax.device_put(jax.tree.map(padded, group), NamedSharding(self.mesh(), P("cells")))

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
    ) -> Group:
        """Stacks the starting points of cells into a group, with fresh optimizer state whose
        schedule is at `start_step` (one for all cells or one per cell: the iteration a cell
        starts at, or T for one that fine-tunes at the final learning rate; see `at_step`).

        `params` must already be masked (pruned weights zero). With `capture_rewind`, the
        group gets a `rewind` slot for `segment(..., rewind_at=k)` to fill.
        """
        stacked = stack_host(params)
        steps = np.broadcast_to(np.asarray(start_step, np.int32), (len(params),))
        opt_state = self._init_opt_state(stacked, jnp.asarray(steps))
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
        )
        return self.place_group(group)

    @partial(jax.jit, static_argnums=(0,))  # eagerly, each leaf's init is its own dispatch
    def _init_opt_state(self, stacked: Params, start_step: jax.Array) -> Any:
        return at_step(jax.vmap(self.tx.init)(stacked), start_step)

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

    def _step(
        self, cell: Group, t: jax.Array, ids: jax.Array, data: DeviceData, streamed: Any = None
    ) -> Group:
        """One masked optimizer step of one (unstacked) cell on the examples `ids`, read from
        `data` on the device or given as `streamed` (their raw images and labels)."""
        step_key = step_key_of(cell.data_key, t)
        if streamed is None:
            batch = self.train_batch(data, ids, step_key)
        else:
            batch = (self.normalized(streamed[0], step_key, data), streamed[1])
        x, y = self._split_batch(batch)
        grad_fn = jax.grad(self._loss, has_aux=True)
        grads, stats = grad_fn(cell.params, cell.batch_stats, x, y, step_key)
        grads = jax.tree.map(jnp.multiply, grads, cell.mask)
        updates, opt_state = self.tx.update(grads, cell.opt_state, cell.params)
        params = jax.tree.map(jnp.multiply, optax.apply_updates(cell.params, updates), cell.mask)
        first = cell.first_batch
        if first is not None:  # the first step a cell trains records what it trained on
            first = jnp.where(first[0] < 0, ids.astype(first.dtype), first)
        return cell._replace(
            params=params, batch_stats=stats, opt_state=opt_state, first_batch=first
        )

    def _end_of_period(
        self, cell: Group, step: jax.Array, data: DeviceData, rewind_at: int
    ) -> tuple[Group, jax.Array]:
        """Captures θk if `step` is the rewind iteration; evaluates validation and test."""
        if rewind_at:
            now = {"params": cell.params, "batch_stats": cell.batch_stats}
            rewind = jax.tree.map(lambda p, r: jnp.where(step == rewind_at, p, r), now, cell.rewind)
            cell = cell._replace(rewind=rewind)
        val = self._evaluate(
            cell.params, cell.batch_stats, data, data.x_val, data.y_val, data.w_val
        )
        test = self._evaluate(
            cell.params, cell.batch_stats, data, data.x_test, data.y_test, data.w_test
        )
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

        def train_step(cell, inputs):
            t, ids = inputs
            return self._step(cell, t, ids, data), None

        def period(cell, inputs):
            index, ids = inputs
            first = step0 + index * every
            cell, _ = jax.lax.scan(train_step, cell, (first + jnp.arange(every), ids))
            return self._end_of_period(cell, first + every, data, rewind_at)

        periods = (jnp.arange(evals), self._indices(cell, step0, data, evals))
        return jax.lax.scan(period, cell, periods)

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

    # -- streamed data: batches read on the host (`ltcli.train.streaming`) -----------------

    def _over_cells(self, fn: Any, *stacked: Any) -> Any:
        """`fn` applied to each cell of stacked arguments as `_local_segment` applies a cell's
        segment: in a loop when deterministic or serial, else a lone cell alone, or vmap.
        With ``host`` the caller passes one cell at a time, which runs in no loop at all."""
        if self.grouping == "host":
            assert jax.tree.leaves(stacked[0])[0].shape[0] == 1, "host: one cell at a time"
            out = fn(*jax.tree.map(lambda x: x[0], stacked))
            return jax.tree.map(lambda x: x[None], out)
        if self.deterministic or self.grouping == "serial":
            return jax.lax.map(lambda args: fn(*args), stacked)
        if jax.tree.leaves(stacked[0])[0].shape[0] == 1:
            out = fn(*jax.tree.map(lambda x: x[0], stacked))
            return jax.tree.map(lambda x: x[None], out)
        return jax.vmap(fn)(*stacked)

    @partial(jax.jit, static_argnums=(0, 3, 4))
    def _indices_of(self, group: Group, step0: jax.Array, n: int, evals: int) -> jax.Array:
        """`_indices` of every cell of `group` over `n` training examples: (cells, evals,
        every, batch), the batches on-device training would draw."""
        return jax.lax.map(lambda key: self._draw(key, step0, evals, n), group.data_key)

    @partial(jax.jit, static_argnums=(0, 7), donate_argnums=(1,))
    def stream_steps(
        self,
        group: Group,
        step0: jax.Array,
        ids: jax.Array,
        images: jax.Array,
        labels: jax.Array,
        data: DeviceData,
        rewind_at: int,
    ) -> Group:
        """Trains every cell of `group` on its streamed batches from iteration `step0`:
        `ids` (cells, steps, batch) and their raw `images` and `labels`; captures θk when the
        last step reaches `rewind_at`."""

        def one(cell: Group, ids: jax.Array, images: jax.Array, labels: jax.Array) -> Group:
            def train_step(cell: Group, inputs: Any) -> tuple[Group, None]:
                t, i, x, y = inputs
                return self._step(cell, t, i, data, (x, y)), None

            steps = step0 + jnp.arange(ids.shape[0])
            unroll = self.grouping == "host"  # no loop around XLA:CPU's convolutions
            cell, _ = jax.lax.scan(train_step, cell, (steps, ids, images, labels), unroll=unroll)
            if rewind_at:
                now = {"params": cell.params, "batch_stats": cell.batch_stats}
                done = step0 + ids.shape[0] == rewind_at
                rewind = jax.tree.map(lambda p, r: jnp.where(done, p, r), now, cell.rewind)
                cell = cell._replace(rewind=rewind)
            return cell

        rewind = group.rewind
        if not rewind_at:
            group = group._replace(rewind=None)
        out = self._replicated(self._over_cells(one, group, ids, images, labels))
        return out if rewind_at else out._replace(rewind=rewind)

    @partial(jax.jit, static_argnums=(0,))
    def stream_eval_sums(
        self,
        params: Params,
        batch_stats: Any,
        x: jax.Array,
        y: jax.Array,
        w: jax.Array,
        data: DeviceData,
    ) -> jax.Array:
        """Per cell of stacked networks and per evaluation batch, the summed loss and
        correct count of the streamed batches `x`, `y`, `w` (batches, size, ...): shape
        (cells, batches, 2), on every device (in a multi-host job, the sums of each
        process's share: `fed_batch`)."""

        def one(params: Any, batch_stats: Any) -> jax.Array:
            def batch(b: Any) -> tuple[jax.Array, jax.Array]:
                xb, yb, wb = b
                xb = standardized(xb, data)
                return self._batch_sums(params, batch_stats, xb, yb, wb)

            return jnp.stack(jax.lax.map(batch, (x, y, w)), -1)

        return self._replicated(self._over_cells(one, params, batch_stats))

    # -- the host loop: a few steps a call, for XLA:CPU's slow convolutions in loops --------

    _HOST_UNROLL = 4
    """Steps per call of the host loop. Unrolled in one program, consecutive steps cost
    one dispatch and XLA overlaps one step's optimizer update with the next step's work:
    Conv-2 and ResNet-20 trained 15-20% faster on a 2-core CPU than at one step a call."""

    def _steps(self, cell: Group, t: jax.Array, ids: jax.Array, data: DeviceData) -> Group:
        """`_step` at iterations t, t + 1, ... on the batches `ids` (steps, batch), unrolled:
        no loop around the convolutions."""
        for k in range(ids.shape[0]):
            cell = self._step(cell, t + k, ids[k], data)
        return cell

    _host_step = jax.jit(_steps, static_argnums=(0,), donate_argnums=(1,))
    _host_end = jax.jit(_end_of_period, static_argnums=(0, 4))
    _host_indices = jax.jit(_indices, static_argnums=(0, 4))

    def _host_segment(
        self, group: Group, step0: int, evals: int, data: DeviceData, rewind_at: int
    ) -> tuple[Group, jax.Array]:
        every = self.cfg.eval_every
        cells, curves = [], []
        for i in range(group.data_key.shape[0]):
            cell = jax.tree.map(lambda x, i=i: x[i], group)
            if not rewind_at:
                cell = cell._replace(rewind=None)
            ids = self._host_indices(cell, jnp.asarray(step0, jnp.int32), data, evals)
            metrics = []
            for period in range(evals):
                for k in range(0, every, self._HOST_UNROLL):
                    t = jnp.asarray(step0 + period * every + k, jnp.int32)
                    batches = ids[period, k : k + self._HOST_UNROLL]
                    cell = self._host_step(cell, t, batches, data)
                step = jnp.asarray(step0 + (period + 1) * every, jnp.int32)
                cell, row = self._host_end(cell, step, data, rewind_at)
                metrics.append(row)
            cells.append(cell)
            curves.append(jnp.stack(metrics))
        return stack(cells), jnp.stack(curves)

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
          The advanced group and metrics of shape (cells, evals, 4), columns `METRICS`.
        """
        if getattr(data, "streamed", False):  # batches come from the host
            return data.segment(self, group, step0, evals, rewind_at)
        if self.grouping == "host":
            return self._host_segment(group, step0, evals, data, rewind_at)
        return self._segment(group, jnp.asarray(step0, jnp.int32), data, evals, rewind_at)


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


def summarize(
    metrics: np.ndarray,
    eval_every: int,
    start: int = 0,
    scored: TextScored | None = None,
) -> dict[str, float | int]:
    """The paper's per-cell numbers from its eval curve (rows = evaluations, cols = METRICS)
    of a cell that trained from iteration `start`: iterations are on the run's 0..T axis.

    Early stopping is the evaluation of minimum validation loss (the first one on ties);
    evaluations whose loss is not finite (a diverged cell) never count as the minimum, and
    `diverged` says whether any occurred. A text data set's `scored` tokens add bits per
    byte (`bits_per_byte`).
    """
    curve = np.asarray(metrics, np.float64)
    finite = np.isfinite(curve[:, 0])
    best = int(np.argmin(np.where(finite, curve[:, 0], np.inf))) if finite.any() else 0
    return {
        "early_stop_iter": start + (best + 1) * eval_every,
        "early_stop_test_acc": float(curve[best, 3]),
        "early_stop_test_loss": float(curve[best, 2]),
        "min_val_loss": float(curve[best, 0]),
        "final_test_acc": float(curve[-1, 3]),
        "final_test_loss": float(curve[-1, 2]),
        "start_iteration": start,
        "iterations": start + len(curve) * eval_every,
        "diverged": bool(not np.isfinite(curve).all()),
        **(bits_per_byte(curve, best, scored) if scored else {}),
    }


def bits_per_byte(curve: np.ndarray, best: int, scored: TextScored) -> dict[str, float | int]:
    """Validation and test bits per byte at early stopping (evaluation `best`) and test's at
    the end: a split's mean loss per token (nats) times its scored tokens over their UTF-8
    bytes, over ln 2; and how many tokens (and bytes) each split scored."""
    val, test = (b * math.log(2) / t for t, b in zip(scored.tokens, scored.bytes, strict=True))
    return {
        "min_val_bpb": float(curve[best, 0] / val),
        "early_stop_test_bpb": float(curve[best, 2] / test),
        "final_test_bpb": float(curve[-1, 2] / test),
        "val_tokens": scored.tokens[0],
        "test_tokens": scored.tokens[1],
        "val_bytes": scored.bytes[0],
        "test_bytes": scored.bytes[1],
    }
