"""Pruning at initialization: score functions, global ranking and the mask ablations of
Frankle, Dziugaite, Roy & Carbin, "Pruning Neural Networks at Initialization: Why are We
Missing the Mark?" (ICLR 2021).

(Longer than 500 lines on purpose: the five methods are a few lines each of one harness, the
forward pass in either mode, the global ranking with exclusions, N:M groups and the
ablations, which every method shares; split by method, each file would import the others.)

Every function here is pure: it takes parameter, variable and mask pytrees (nested dicts,
names like ``fc1/kernel``, see `ltcli.science.pruning`) and returns new ones. Scores are pytrees
shaped like the parameters; only the prunable kernels' entries are ever read.

Methods (the `METHODS` registry, one call signature, see `score`):

- ``snip``: ``|g ⊙ w|`` (Lee et al. 2019), `snip`.
- ``grasp``: ``w ⊙ Hg`` (Wang et al. 2020, sign flipped so that keeping the largest is
  GraSP's rule), `grasp`.
- ``synflow``: ``|∂R/∂w ⊙ w|`` of the network with absolute parameters on an all-ones input
  (Tanaka et al. 2020), iterated 100 times by `synflow_mask`, `synflow`.
- ``magnitude-init``: ``|w|`` at initialization, `magnitude_init`.
- ``random``: uniform random scores, `random`.

The choices the papers leave open (the ranking's scope, N:M patterns, the scoring batch, the
forward pass's mode, SynFlow's precision) and the reference code each follows are set out in
the docs, "Pruning at initialization: choices the papers leave open"
(``docs/notes/pruning-at-init.md``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from ltcli.core.pytrees import Mask, Params
from ltcli.science import pruning
from ltcli.science.methods import DATA_METHODS, SCORE_MODES

SYNFLOW_ROUNDS = 100
GRASP_TEMPERATURE = 200.0
SAMPLES_PER_CLASS = 10

# -- helpers ----------------------------------------------------------------------------------


def _plain(tree: Mapping) -> dict:
    """`tree` (a dict or FrozenDict) as plain nested dicts, so derived trees match it."""
    return pruning.unflatten(pruning.leaves(tree))


def _split(variables: Mapping) -> tuple[dict, dict]:
    """(params, batch_stats) of a model's variables; batch_stats is ``{}`` if it has none."""
    return _plain(variables["params"]), _plain(variables.get("batch_stats") or {})


def _shapes(params: Params) -> dict:
    """A tree like `params` of zero-stride numpy arrays: sizes without device transfers."""
    return pruning.unflatten(
        {
            name: np.broadcast_to(np.zeros((), np.float32), np.shape(leaf))
            for name, leaf in pruning.leaves(params).items()
        }
    )


def _dtype(params: Params) -> Any:
    """The dtype of the first leaf of `params` (all leaves share it here)."""
    return next(iter(pruning.leaves(params).values())).dtype


def _logits(model: nn.Module, params, batch_stats, x, key, train: bool) -> jax.Array:
    """The training forward pass (``train=True``; batch-norm updates are discarded, dropout
    draws from `key`) or the eval one (``train=False``; `key` is not used)."""
    variables = (
        {"params": params, "batch_stats": batch_stats} if batch_stats else {"params": params}
    )
    if not train:
        return model.apply(variables, x, train=False)
    rngs = {"dropout": key}
    if batch_stats:
        logits, _ = model.apply(variables, x, train=True, rngs=rngs, mutable=["batch_stats"])
        return logits
    return model.apply(variables, x, train=True, rngs=rngs)


def _loss(params, model, batch_stats, x, y, key, train: bool, temperature=1.0) -> jax.Array:
    """Mean cross-entropy of the logits divided by `temperature`."""
    logits = _logits(model, params, batch_stats, x, key, train) / temperature
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()


def _default_key(key: jax.Array | None) -> jax.Array:
    return jax.random.key(0) if key is None else key


def _is_train(mode: str) -> bool:
    """Whether `mode` (one of `SCORE_MODES`) is the training forward pass.

    Raises:
      ValueError: an unknown mode.
    """
    if mode not in SCORE_MODES:
        raise ValueError(f"unknown score mode {mode!r}; known: {', '.join(SCORE_MODES)}")
    return mode == "train"


# -- score functions ----------------------------------------------------------------------------


@partial(jax.jit, static_argnums=(0, 6))
def _snip(model, params, batch_stats, x, y, key, train):
    grads = jax.grad(_loss)(params, model, batch_stats, x, y, key, train)
    return jax.tree.map(lambda g, w: jnp.abs(g * w), grads, params)


def snip(
    model: nn.Module,
    variables: Mapping,
    batch_x: jax.Array,
    batch_y: jax.Array,
    key: jax.Array | None = None,
    *,
    mode: str = "eval",
) -> Params:
    """SNIP's connection sensitivity ``|g ⊙ w|``, ``g`` the gradient of the mean
    cross-entropy on the batch at the given (initial) parameters, through the forward pass
    `mode` names.

    Lee, Ajanthan & Torr, "SNIP: Single-shot Network Pruning based on Connection
    Sensitivity" (ICLR 2019). Compared with namhoonlee/snip-public ``snip/model.py``
    (``get_sparse_mask``: ``|∂L/∂c|`` for a multiplicative mask ``c = 1``, which is
    ``|g ⊙ w|``; ``snip/prune.py`` runs it with ``is_train: False``, eval mode) and
    ganguli-lab/Synaptic-Flow ``Pruners/pruners.py`` (``SNIP``, scored after
    ``model.eval()`` unless ``--prune-train-mode``). Both divide the scores by their sum;
    that does not change a ranking and is left out.

    Args:
      model: the Flax module.
      variables: ``{"params": θ0, "batch_stats": ...}`` (batch_stats optional).
      batch_x: normalized float32 NHWC images (see the module docstring on the batch).
      batch_y: their integer labels.
      key: dropout randomness for the training-mode forward pass (default ``key(0)``;
        unused in eval mode).
      mode: ``"eval"`` (the default: dropout off, batch norm by its running statistics, as
        both references) or ``"train"`` (batch norm by the batch, dropout on), see the
        module docstring.

    Returns:
      Scores shaped like the parameters (every leaf scored; only kernels are ranked).

    Raises:
      ValueError: an unknown mode.
    """
    train = _is_train(mode)
    params, stats = _split(variables)
    return _snip(model, params, stats, batch_x, batch_y, _default_key(key), train)


@partial(jax.jit, static_argnums=(0, 7))
def _grasp(model, params, batch_stats, x, y, key, temperature, train):
    def loss(p):
        return _loss(p, model, batch_stats, x, y, key, train, temperature)

    grads = jax.grad(loss)(params)
    # The Hessian acts on g restricted to the kernels, as in both references, which take
    # gradients of the conv/linear weights only: biases and batch norm get tangent 0.
    flat = pruning.leaves(grads)
    tangent = pruning.unflatten(
        {n: g if pruning.layer_kind(n) else jnp.zeros_like(g) for n, g in flat.items()}
    )
    _, hg = jax.jvp(jax.grad(loss), (params,), (tangent,))  # forward-over-reverse H g
    return jax.tree.map(jnp.multiply, params, hg)


def grasp(
    model: nn.Module,
    variables: Mapping,
    batch_x: jax.Array,
    batch_y: jax.Array,
    key: jax.Array | None = None,
    temperature: float = GRASP_TEMPERATURE,
    *,
    mode: str = "eval",
) -> Params:
    """GraSP's scores with the sign flipped, ``w ⊙ (H g)``, so that keeping the LARGEST
    scores is GraSP's rule, through the forward pass `mode` names.

    Wang, Zhang & Grosse, "Picking Winning Tickets Before Training by Preserving Gradient
    Flow" (ICLR 2020), define ``S(-w) = -w ⊙ Hg`` and REMOVE the weights of highest
    ``S``, keeping the lowest. This returns ``-S = w ⊙ Hg``: its largest entries are the
    lowest ``S``, so `prune_once` (keep largest) keeps what GraSP keeps, and
    ``invert``/``lowest=True`` keeps GraSP's highest ``S`` (the 2021 paper's inversion).
    Compared with alecwangcq/GraSP ``pruner/GraSP.py`` (``-layer.weight.data *
    layer.weight.grad``, masks ``score <= threshold`` of the top-k; its network is in
    training mode, ``mode="train"`` here) and ganguli-lab/Synaptic-Flow
    ``Pruners/pruners.py`` (``GraSP``: ``p.grad * p.data``, the same sign as here, then
    keeps the largest; scored after ``model.eval()`` unless ``--prune-train-mode``, the
    default ``mode="eval"`` here).

    ``g`` is the gradient of the mean cross-entropy of ``logits / temperature`` on the
    batch (both references use temperature 200) with respect to the kernels of prunable
    kinds (biases and batch norm have tangent 0, as the references differentiate the
    conv/linear weights only); ``H g`` is the Hessian of the same loss times ``g``, by
    ``jax.jvp`` of ``jax.grad`` (forward over reverse), on the same batch. The references
    split the batch into two halves and sum; one batch differs only by a constant factor
    and, in training mode, through batch norm's batch statistics. The references' normalization by
    ``|sum(scores)|`` does not change a ranking and is left out. GraSP's ``reinit`` (new
    Xavier weights for linear layers before scoring) is not reproduced: the scores are of
    the θ0 that will be trained.

    Args:
      model, variables, batch_x, batch_y, key, mode: as for `snip`.
      temperature: the logits' divisor.

    Returns:
      Scores shaped like the parameters.

    Raises:
      ValueError: an unknown mode.
    """
    train = _is_train(mode)
    params, stats = _split(variables)
    return _grasp(model, params, stats, batch_x, batch_y, _default_key(key), temperature, train)


def _abs_variables(variables: Mapping, dtype: Any) -> tuple[dict, dict]:
    params, stats = _split(variables)
    cast = partial(jax.tree.map, lambda v: jnp.abs(jnp.asarray(v, dtype)))
    return cast(params), cast(stats)


def _synflow_flat(model, params, stats, masks: Mapping[str, jax.Array], image_shape):
    """``{name: |∂R/∂w ⊙ w|}`` for every leaf; `masks` multiply the named kernels first."""
    flat = pruning.leaves(params)
    effective = pruning.unflatten({n: v * masks[n] if n in masks else v for n, v in flat.items()})
    ones = jnp.ones((1, *image_shape), _dtype(params))

    def flow(p):
        variables = {"params": p, "batch_stats": stats} if stats else {"params": p}
        return jnp.sum(model.apply(variables, ones, train=False))

    grads = jax.grad(flow)(effective)
    return {
        n: jnp.abs(g * w)
        for (n, g), w in zip(
            pruning.leaves(grads).items(), pruning.leaves(effective).values(), strict=True
        )
    }


@partial(jax.jit, static_argnums=(0, 4))
def _synflow(model, params, stats, masks, image_shape):
    flat = _synflow_flat(model, params, stats, masks, image_shape)
    finite = jnp.all(jnp.stack([jnp.all(jnp.isfinite(s)) for s in flat.values()]))
    return pruning.unflatten(flat), finite


def _x64(enabled: bool):
    return jax.enable_x64(True) if enabled else contextlib.nullcontext()


def synflow(
    model: nn.Module,
    variables: Mapping,
    image_shape: Sequence[int],
    mask: Mask | None = None,
    x64: bool = True,
) -> Params:
    """One round of SynFlow's synaptic saliency ``|∂R/∂w ⊙ w|``, no data.

    Tanaka, Kunin, Yamins & Ganguli, "Pruning neural networks without any data by
    iteratively conserving synaptic flow" (NeurIPS 2020). Compared with
    ganguli-lab/Synaptic-Flow ``Pruners/pruners.py`` (``SynFlow.score``) and ``prune.py``
    (``prune_loop``). Every variable is replaced by its absolute value (kernels, biases,
    batch-norm scales, offsets and running statistics: the reference's ``linearize``), the
    mask multiplies the kernels it names, and ``R`` is the sum of the network's outputs on
    one all-ones image in eval mode (batch norm uses its running statistics). The score of
    a weight is ``|∂R/∂w_eff ⊙ w_eff|`` with ``w_eff = |w| ⊙ m``, so a pruned weight scores
    0. A round of the iterative algorithm is `synflow_mask`; this is one score. The
    reference scores in float32; float64 is lt's choice (the module docstring says why).

    Args:
      model: the Flax module.
      variables: ``{"params": ..., "batch_stats": ...}``; only their values' magnitudes
        matter.
      image_shape: one image's shape (H, W, C).
      mask: multiplies the parameters first (a partial mask is fine: leaves it lacks are
        treated as dense). None: dense.
      x64: compute in float64 (the default; float32 can overflow in deep networks).

    Returns:
      Scores shaped like the parameters, as float64 (or float32) numpy arrays.

    Raises:
      FloatingPointError: a score is not finite (overflow; use ``x64=True``).
    """
    masks = {} if mask is None else pruning.flatten(mask)
    with _x64(x64):
        params, stats = _abs_variables(variables, jnp.float64 if x64 else jnp.float32)
        names = pruning.leaves(params)
        masks = {n: jnp.asarray(m, _dtype(params)) for n, m in masks.items() if n in names}
        scores, finite = _synflow(model, params, stats, masks, tuple(image_shape))
        if not bool(finite):
            raise FloatingPointError("SynFlow scores overflowed; score in float64 (x64=True)")
        return jax.tree.map(np.asarray, jax.device_get(scores))


@jax.jit
def _magnitude(params):
    return jax.tree.map(jnp.abs, params)


def magnitude_init(params: Params) -> Params:
    """``|w|`` at initialization (the 2021 paper's "magnitude at initialization"), ranked
    globally by `prune_once` like the other methods.

    Frankle et al. 2021, Section 3; the SynFlow code's ``Mag`` pruner
    (ganguli-lab/Synaptic-Flow ``Pruners/pruners.py``) is the same score.
    """
    return _magnitude(_plain(params))


def random(params: Params, key: jax.Array) -> Params:
    """Independent uniform [0, 1) scores for every parameter, from the JAX `key`.

    Ranked globally, they prune every layer to the same density in expectation (not
    exactly; for exact per-layer counts use ``pruning.random_like`` on a mask). The SynFlow
    code's ``Rand`` draws normal scores; any continuous i.i.d. distribution gives the same
    random ranking.
    """
    return _random(_plain(params), key)


@jax.jit
def _random(params, key):
    flat = pruning.leaves(params)
    keys = jax.random.split(key, len(flat))
    return pruning.unflatten(
        {
            name: jax.random.uniform(k, jnp.shape(leaf), jnp.float32)
            for k, (name, leaf) in zip(keys, flat.items(), strict=True)
        }
    )


# -- the registry -------------------------------------------------------------------------------

ScoreFn = Callable[..., Params]


def _snip_method(model, variables, batch_x, batch_y, key, image_shape, mode):
    del image_shape
    return snip(model, variables, batch_x, batch_y, key, mode=mode)


def _grasp_method(model, variables, batch_x, batch_y, key, image_shape, mode):
    del image_shape
    return grasp(model, variables, batch_x, batch_y, key, mode=mode)


def _synflow_method(model, variables, batch_x, batch_y, key, image_shape, mode):
    del batch_x, batch_y, key, mode  # data-free, always eval mode
    if image_shape is None:
        raise ValueError("synflow needs image_shape (it scores an all-ones image)")
    return synflow(model, variables, image_shape)


def _magnitude_method(model, variables, batch_x, batch_y, key, image_shape, mode):
    del model, batch_x, batch_y, key, image_shape, mode
    return magnitude_init(variables["params"])


def _random_method(model, variables, batch_x, batch_y, key, image_shape, mode):
    del model, batch_x, batch_y, image_shape, mode
    if key is None:
        raise ValueError("random scores need a key")
    return random(variables["params"], key)


METHODS: dict[str, ScoreFn] = {
    "snip": _snip_method,
    "grasp": _grasp_method,
    "synflow": _synflow_method,
    "magnitude-init": _magnitude_method,
    "random": _random_method,
}
"""Score functions by name, each ``fn(model, variables, batch_x, batch_y, key,
image_shape, mode) -> scores`` (`mode`, one of `SCORE_MODES`, is read by snip and grasp
only). ``synflow`` here is ONE round on the dense network; its masks come from
`synflow_mask` (which `masks_at_init` calls)."""

_DATA_METHODS = frozenset(DATA_METHODS)


def _check_method(method: str) -> None:
    if method not in METHODS:
        raise ValueError(f"unknown scoring method {method!r}; known: {', '.join(METHODS)}")


def needs_data(method: str) -> bool:
    """Whether `method` scores on a batch of training data (SNIP, GraSP)."""
    _check_method(method)
    return method in _DATA_METHODS


def score(
    method: str,
    model: nn.Module,
    variables: Mapping,
    batch_x: jax.Array | None = None,
    batch_y: jax.Array | None = None,
    key: jax.Array | None = None,
    *,
    image_shape: Sequence[int] | None = None,
    mode: str = "eval",
) -> Params:
    """The scores of `method` (a `METHODS` name) for the network at `variables`.

    Args:
      method: ``snip``, ``grasp``, ``synflow``, ``magnitude-init`` or ``random``.
      model: the Flax module.
      variables: ``{"params": θ0, "batch_stats": ...}``.
      batch_x, batch_y: the scoring batch (normalized images, labels); required when
        `needs_data`, ignored otherwise (may be None).
      key: randomness: the random scores, or SNIP's/GraSP's dropout (default ``key(0)``).
      image_shape: one image's shape; required for ``synflow``.
      mode: SNIP's and GraSP's forward pass, ``"eval"`` (the default) or ``"train"`` (see
        the module docstring); checked for every method, read by those two only.

    Raises:
      ValueError: an unknown method or mode, or a missing batch, key or image shape.
    """
    _check_method(method)
    _is_train(mode)
    if method in _DATA_METHODS and (batch_x is None or batch_y is None):
        raise ValueError(f"{method} scores on data: pass batch_x and batch_y")
    return METHODS[method](model, variables, batch_x, batch_y, key, image_shape, mode)


# -- scores to masks ------------------------------------------------------------------------------


def keep_count(params: Params, target_percent: float, exclude: Sequence[str] = ()) -> int:
    """Weights the pruned layers keep at `target_percent` percent remaining: lt's one-shot
    global rule (``pruning.Strategy.step``), ``round(P / 100 * (pruned + excluded)) -
    excluded``.

    Raises:
      ValueError: the target is not in (0, 100], or the excluded layers alone exceed it.
    """
    if not 0 < target_percent <= 100:
        raise ValueError(f"target percent must be in (0, 100], got {target_percent}")
    shapes = _shapes(params)
    strategy = pruning.Strategy("global", {"global": 0.0}, tuple(exclude))
    kinds = strategy.targets(shapes)
    total = sum(int(np.size(leaf)) for n, leaf in pruning.leaves(shapes).items() if n in kinds)
    excluded = strategy.excluded_weights(shapes)
    keep = strategy.step({"*": total}, kinds, excluded, target_percent)["*"]
    if keep < 0:
        raise ValueError(
            f"the excluded layers alone hold more than {target_percent}% of the prunable weights"
        )
    return keep


def _global_keep(
    scores: Params, mask: Mask, keep: int, names: Sequence[str], lowest: bool = False
) -> Mask:
    """`mask` with only the `keep` survivors of highest (or lowest) score, pooled over the
    layers `names`, kept (ties: the earlier position wins; ``pruning._keep_largest``)."""
    flat_s, flat_m = pruning.flatten(scores), pruning.flatten(mask)
    sign = -1.0 if lowest else 1.0
    pooled = {}
    for name in names:
        s = flat_s[name].reshape(-1).astype(np.float64)
        alive = flat_m[name].reshape(-1) > 0
        if not np.all(np.isfinite(s[alive])):
            raise FloatingPointError(f"scores of {name} are not all finite")
        pooled[name] = np.where(alive, sign * s, -np.inf)
    return pruning.keep_pooled(pooled, mask, keep)


def _pattern_keep(
    scores: Params,
    params: Params,
    exclude: Sequence[str],
    pattern: pruning.Pattern,
    lowest: bool = False,
) -> Mask:
    """A mask shaped like `params` keeping, in every pruned layer, the N highest- (or
    lowest-) scored of every group of M along the input axis (``pruning.keep_per_group``,
    Mishra et al. 2021, Zhou et al. 2021); other leaves stay dense.

    Raises:
      ValueError: a pruned layer cannot hold the pattern (``pruning.check_pattern``).
      FloatingPointError: a score of a pruned layer is not finite.
    """
    pruning.check_pattern(params, exclude, pattern)
    n, m = pattern
    flat_s = pruning.flatten(scores)
    out = pruning.flatten(pruning.dense_mask(_shapes(params)))
    for name in pruning.prunable_layers(params, exclude):
        s = flat_s[name].astype(np.float64)
        if not np.all(np.isfinite(s)):
            raise FloatingPointError(f"scores of {name} are not all finite")
        out[name] = pruning.keep_per_group(-s if lowest else s, out[name], n, m)
    return pruning.unflatten(out)


def prune_once(
    scores: Params,
    params: Params,
    target_percent: float | None,
    exclude: Sequence[str] = (),
    lowest: bool = False,
    pattern: pruning.Pattern | None = None,
) -> Mask:
    """A mask keeping the `keep_count` highest-scored weights, ranked globally over the
    prunable kernels not matched by `exclude` (``pruning.prunable_layers``).

    Excluded layers, biases and batch norm stay dense. Ties are broken by position, in
    the order of ``pruning.prunable_layers`` and then row-major within a layer.

    Args:
      scores: a pytree shaped like `params` (only the pruned kernels are read).
      params: the network's parameters (for names and shapes).
      target_percent: percent of all prunable-kind weights remaining, excluded ones
        included (the paper's Pm).
      exclude: layer patterns never pruned (``pruning.prunable_names``).
      lowest: keep the LOWEST scores instead (the 2021 paper's inversion).
      pattern: an N:M pattern ``(n, m)``: each pruned layer keeps the N highest- (or
        lowest-) scored of every group of M along its input axis instead (the module
        docstring); `target_percent` is then not read (it may be None).

    Returns:
      A float32 0/1 numpy mask pytree shaped like `params`.

    Raises:
      ValueError: (with a pattern) a pruned layer that cannot hold it.
    """
    if pattern is not None:
        return _pattern_keep(scores, params, exclude, pattern, lowest)
    names = list(pruning.prunable_layers(params, exclude))
    keep = keep_count(params, target_percent, exclude)
    return _global_keep(scores, pruning.dense_mask(_shapes(params)), keep, names, lowest)


# -- iterative SynFlow ----------------------------------------------------------------------------


def _keep_top(scores: jax.Array, keep: jax.Array) -> jax.Array:
    """``pruning._keep_largest`` on the device with a traced `keep`: 1 at the `keep`
    largest entries, ties to the earlier position."""
    order = jnp.argsort(-scores, stable=True)
    ranks = (
        jnp.zeros(scores.shape, jnp.int32).at[order].set(jnp.arange(scores.size, dtype=jnp.int32))
    )
    return (ranks < keep).astype(jnp.float32)


@partial(jax.jit, static_argnums=(0, 4, 5, 6))
def _synflow_loop(model, params, stats, keeps, image_shape, names, invert):
    dtype = _dtype(params)
    flat_p = pruning.leaves(params)
    masks = {n: jnp.ones(flat_p[n].shape, dtype) for n in names}

    def one_round(i, carry):
        masks, finite = carry
        flat = _synflow_flat(model, params, stats, masks, image_shape)
        pooled = []
        for n in names:
            alive = masks[n].reshape(-1) > 0
            s = flat[n].reshape(-1)
            finite = finite & jnp.all(jnp.isfinite(jnp.where(alive, s, 0)))
            pooled.append(jnp.where(alive, -s if invert else s, -jnp.inf))
        kept = _keep_top(jnp.concatenate(pooled), keeps[i])
        out, offset = {}, 0
        for n in names:
            size = masks[n].size
            out[n] = kept[offset : offset + size].reshape(masks[n].shape).astype(dtype)
            offset += size
        return out, finite

    return jax.lax.fori_loop(0, keeps.shape[0], one_round, (masks, jnp.asarray(True)))


def synflow_schedule(target_percent: float, rounds: int = SYNFLOW_ROUNDS) -> list[float]:
    """Percent remaining after each of `rounds` rounds: ``100 * (P / 100) ** (i / rounds)``
    for i = 1 .. rounds (the exponential schedule of the SynFlow code's ``prune_loop``),
    the last exactly `target_percent`."""
    fractions = [100 * (target_percent / 100) ** (i / rounds) for i in range(1, rounds)]
    return [*fractions, target_percent]


def synflow_mask(
    model: nn.Module,
    variables: Mapping,
    target_percent: float | None,
    image_shape: Sequence[int],
    exclude: Sequence[str] = (),
    rounds: int = SYNFLOW_ROUNDS,
    invert: bool = False,
    x64: bool = True,
    pattern: pruning.Pattern | None = None,
) -> Mask:
    """Iterative SynFlow: `rounds` rounds of scoring the masked network (`synflow`) and
    keeping the highest-scored survivors, globally, down the exponential schedule
    (`synflow_schedule`).

    Tanaka et al. 2020, Algorithm 1; compared with ganguli-lab/Synaptic-Flow ``prune.py``
    (``prune_loop``: ``sparsity ** ((epoch + 1) / epochs)``, 100 epochs in the paper).
    Each round's count follows lt's rule (`keep_count` at that round's percent), so the
    last round keeps exactly `keep_count(params, target_percent, exclude)`. Survivors only
    compete (pruned weights never come back: the reference's masked weights score 0 and
    are pruned again; here they are excluded from the ranking outright), and the whole
    loop is one jitted ``lax.fori_loop`` on the device.

    Args:
      model, variables, image_shape, x64: as for `synflow`.
      target_percent: percent of prunable-kind weights remaining at the end (excluded
        ones included).
      exclude: layer patterns never pruned (dense, and not masked while scoring).
      rounds: pruning rounds (the paper: 100).
      invert: keep the LOWEST-scored survivors in every round (the reference's
        ``invert`` flag applies to every round's scores too).
      pattern: an N:M pattern ``(n, m)``: ONE round instead, scored on the dense network,
        keeping the N highest- (with `invert`, lowest-) scored of every group of M along
        each pruned kernel's input axis (Mishra et al. 2021; Zhou et al. 2021). The
        iterative schedule exists to approach a global count gradually, re-scoring as the
        pool shrinks; N:M fixes the count of every group, so it is reached at once, and
        `target_percent` and `rounds` are not read.

    Returns:
      A float32 0/1 numpy mask pytree shaped like the parameters.

    Raises:
      FloatingPointError: a survivor's score overflowed in some round.
      ValueError: (with a pattern) a pruned layer that cannot hold it.
    """
    params, _ = _split(variables)
    if pattern is not None:
        pruning.check_pattern(params, exclude, pattern)  # before the device work
        scores = synflow(model, variables, image_shape, x64=x64)
        return _pattern_keep(scores, params, exclude, pattern, lowest=invert)
    names = tuple(pruning.prunable_layers(params, exclude))
    keeps = [keep_count(params, p, exclude) for p in synflow_schedule(target_percent, rounds)]
    with _x64(x64):
        abs_params, stats = _abs_variables(variables, jnp.float64 if x64 else jnp.float32)
        masks, finite = _synflow_loop(
            model,
            abs_params,
            stats,
            jnp.asarray(keeps, jnp.int32),
            tuple(image_shape),
            names,
            invert,
        )
        if not bool(finite):
            raise FloatingPointError("SynFlow scores overflowed; score in float64 (x64=True)")
        masks = {n: np.asarray(m, np.float32) for n, m in jax.device_get(masks).items()}
    out = pruning.flatten(pruning.dense_mask(_shapes(params)))
    out.update(masks)
    return pruning.unflatten(out)


# -- one call for a runner --------------------------------------------------------------------


def masks_at_init(
    method: str,
    model: nn.Module,
    variables: Mapping,
    targets: Sequence[float | None],
    *,
    image_shape: Sequence[int],
    exclude: Sequence[str] = (),
    batch_x: jax.Array | None = None,
    batch_y: jax.Array | None = None,
    key: jax.Array | None = None,
    invert: bool = False,
    rounds: int = SYNFLOW_ROUNDS,
    mode: str = "eval",
    pattern: pruning.Pattern | None = None,
) -> list[Mask]:
    """The masks `method` prunes `variables` to, one per percent in `targets`.

    One-shot methods score once and rank once per target (`prune_once`); SynFlow runs its
    iterative schedule for each target (`synflow_mask`). With `invert`, the lowest scores
    are kept (same counts). `mode` is SNIP's and GraSP's forward pass (``"eval"``, the
    default, or ``"train"``: a run's ``prune.score_mode``); the other methods ignore it.

    With a `pattern` ``(n, m)`` (``pruning.parse_pattern``), every method scores once and
    each pruned layer keeps the N highest-scored (with `invert`, lowest-scored) of every
    group of M along its input axis, at once (Mishra et al. 2021; Zhou et al. 2021; the
    module docstring); SynFlow too scores one round on the dense network. The pattern
    fixes the counts, so each entry of `targets` gives the same mask (their values are not
    read and may be None).

    Raises:
      ValueError: an unknown method or mode, a pruned layer that cannot hold `pattern`
        (``pruning.check_pattern``, checked before scoring), and `score`'s errors.
    """
    _check_method(method)
    _is_train(mode)
    if pattern is not None:
        pruning.check_pattern(_plain(variables["params"]), exclude, pattern)
    if method == "synflow" and pattern is not None:
        mask = synflow_mask(
            model, variables, None, image_shape, exclude, invert=invert, pattern=pattern
        )
        return [mask for _ in targets]
    if method == "synflow":
        return [
            synflow_mask(model, variables, t, image_shape, exclude, rounds, invert) for t in targets
        ]
    scores = score(
        method, model, variables, batch_x, batch_y, key, image_shape=image_shape, mode=mode
    )
    scores = jax.device_get(scores)
    params = variables["params"]
    return [prune_once(scores, params, t, exclude, lowest=invert, pattern=pattern) for t in targets]


# -- ablations ------------------------------------------------------------------------------------


def shuffle(mask: Mask, rng: np.random.Generator, pattern: pruning.Pattern | None = None) -> Mask:
    """Each prunable layer's mask randomly permuted within the layer: the same count per
    layer at new positions (the 2021 paper's "random shuffling" ablation; Synaptic-Flow's
    ``Pruner.shuffle``). Excluded layers are all ones, so they stay dense.

    A uniform random permutation of a 0/1 layer is a uniform random choice of its kept
    positions, which is ``pruning.random_like``; this is that function. With a `pattern`
    ``(n, m)``, survivors are permuted within each group of M along the input axis
    instead, so every group keeps its count (N) and the mask keeps the N:M structure.
    """
    return pruning.random_like(mask, rng, pattern)


def invert(
    scores: Params,
    mask: Mask,
    exclude: Sequence[str] = (),
    pattern: pruning.Pattern | None = None,
) -> Mask:
    """The inversion ablation: keep as many weights as `mask` keeps in its pruned layers,
    but the LOWEST-scored ones, ranked globally as `prune_once` ranks (the 2021 paper
    inverts the scores: "prune the most important weights"; Synaptic-Flow's
    ``Pruner.invert`` replaces each score by its reciprocal before the same global
    ranking). The per-layer counts change; the total does not.

    With ``k`` kept of ``n`` pooled weights, the inverted mask keeps the ``k`` lowest, the
    original the ``k`` highest: disjoint when ``2k <= n``, covering every weight together
    when ``2k >= n``.

    Args:
      scores: the scores `mask` was made from (signed scores are fine: GraSP's lowest
        ``w ⊙ Hg`` is GraSP's highest own score).
      mask: the mask to invert (sets the count).
      exclude: the exclusions `mask` was made with.
      pattern: the N:M pattern `mask` was made with: each pruned layer then keeps the N
        LOWEST-scored of every group of M along its input axis, among all the layer's
        weights (`prune_once` with ``lowest=True`` and the pattern); counts per group, and
        so per layer, are unchanged.

    Raises:
      ValueError: (with a pattern) a pruned layer that cannot hold it.
    """
    if pattern is not None:
        return _pattern_keep(scores, _shapes(mask), exclude, pattern, lowest=True)
    names = list(pruning.prunable_layers(mask, exclude))
    flat = pruning.flatten(mask)
    keep = int(sum(flat[n].sum() for n in names))
    dense = pruning.dense_mask(_shapes(mask))
    return _global_keep(scores, dense, keep, names, lowest=True)


def balanced_indices(
    labels: np.ndarray, rng: np.random.Generator, per_class: int = SAMPLES_PER_CLASS
) -> np.ndarray:
    """Indices of `per_class` random examples of every class in `labels` (GraSP's
    ``GraSP_fetch_data`` draws the first ones of a shuffled loader), grouped by class.

    Raises:
      ValueError: a class has fewer than `per_class` examples.
    """
    labels = np.asarray(labels)
    order = rng.permutation(len(labels))
    chosen = []
    for c in np.unique(labels):
        of_c = order[labels[order] == c][:per_class]
        if len(of_c) < per_class:
            raise ValueError(f"class {c} has {len(of_c)} examples, fewer than {per_class}")
        chosen.append(of_c)
    return np.concatenate(chosen)
