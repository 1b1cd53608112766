"""The training recipe of a run: its hyperparameters (`TrainConfig`), the optimizer and
learning-rate schedule they define, and the precision a step computes in."""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from ltcli.core.pytrees import Params
from ltcli.experiment.fields import FIELDS, Duration


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
