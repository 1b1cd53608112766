"""Magnitude pruning as pure functions over parameter and mask pytrees.

(Longer than 500 lines on purpose: IMP's strategies, the N:M groups and the random controls
all rest on one layer-naming and one rounding rule, which a split would scatter; every other
module of lt reads them from here.)

Masks are pytrees shaped like the parameters with float32 leaves of 0 and 1; biases,
batch-norm scales and anything else that is not a prunable kernel stay all ones.

Rounding rule (every strategy): a pruning step at rate ``p`` over ``s`` surviving weights
removes ``round(p * s)`` of them (Python's round, half to even) and keeps the rest, so a
layer of ``n`` weights pruned ``k`` times keeps ``kept_count(n, p, k)``. The weights removed
are the survivors of smallest ``|w|``; ties are broken by position (the earlier goes first).

N:M patterns (``prune.pattern = "N:M"``, `parse_pattern`): in every group of M consecutive
weights along a kernel's INPUT axis (axis -2: axis 0 of a Dense kernel ``(in, out)``, the
input-channel axis of a conv kernel ``(kh, kw, cin, cout)``), for each fixed position of the
other axes, keep the N of largest score: the fine-grained structured sparsity of Mishra et
al. 2021, "Accelerating Sparse Deep Neural Networks" (NVIDIA's 2:4 on Ampere sparse tensor
cores, which groups along the reduction dimension, a GEMM's K = a layer's inputs), and of
Zhou et al. 2021, "Learning N:M Fine-grained Structured Sparse Neural Networks From
Scratch" (ICLR 2021). Counts are then fixed per group, not by a rate: a layer of ``s``
weights keeps ``s * keep / M``; IMP removes one weight per group per level (`Strategy`).
Ties within a group go to the earlier position along the input axis (`keep_per_group`).
jaxpruner's ``NByM`` (``jaxpruner/mask_calculator.py``, ``topk_n_by_m_mask_calculator``)
groups along the LAST axis by default, a Flax kernel's output axis: its masks differ.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from ltcli.core.pytrees import Mask, Params

SEP = "/"
_KIND_PREFIXES = (
    ("shortcut", "conv"),
    ("conv", "conv"),
    ("fc", "fc"),
    ("out", "output"),
    ("attn", "attn"),
    ("mlp", "mlp"),
)
KINDS = ("conv", "fc", "output", "attn", "mlp")
"""Every prunable layer kind, in the order rates and counts list them."""


def layer_kind(name: str) -> str | None:
    """The prunable kind of the parameter at `name` (``"fc1/kernel"``), or None.

    Only kernels are prunable; their kind comes from the name of the layer holding them:
    ``conv*`` and ``shortcut*`` are ``conv``, ``fc*`` is ``fc``, ``out`` is ``output``;
    in transformers ``attn_q``, ``attn_k``, ``attn_v`` and ``attn_out`` are ``attn`` and
    ``mlp_fc1``, ``mlp_fc2`` are ``mlp``. Embeddings, LayerNorm and the transformers' output
    ``head`` match no prefix and are never pruned.
    """
    parts = name.split(SEP)
    if parts[-1] != "kernel" or len(parts) < 2:
        return None
    layer = parts[-2]
    return next((kind for prefix, kind in _KIND_PREFIXES if layer.startswith(prefix)), None)


def leaves(tree: Mapping, prefix: str = "") -> dict[str, Any]:
    """``{"fc1/kernel": leaf, ...}`` for a nested dict; empty dicts leave no entry.

    Hand-written rather than `flax.traverse_util`: importing Flax imports JAX, and the
    store and the pruning rules must load without them (a rerun that trains nothing).
    """
    flat = {}
    for key, value in tree.items():
        if isinstance(value, Mapping):
            flat.update(leaves(value, f"{prefix}{key}{SEP}"))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def flatten(tree: Mapping) -> dict[str, np.ndarray]:
    """`leaves` of a nested dict of arrays, as numpy arrays."""
    return {name: np.asarray(leaf) for name, leaf in leaves(tree).items()}


def unflatten(flat: Mapping[str, np.ndarray]) -> dict:
    """The nested dict that `flatten` flattened."""
    tree: dict = {}
    for name, value in flat.items():
        *path, leaf = name.split(SEP)
        node = tree
        for part in path:
            node = node.setdefault(part, {})
        node[leaf] = value
    return tree


def prunable_layers(params: Params, exclude: Sequence[str] = ()) -> dict[str, str]:
    """``{name: kind}`` for every prunable kernel of `params` not matched by a pattern in
    `exclude` (see `prunable_names`)."""
    return prunable_names(leaves(params), exclude)


def prunable_names(names: Iterable[str], exclude: Sequence[str] = ()) -> dict[str, str]:
    """``{name: kind}`` for every prunable kernel among parameter `names` not matched by a
    pattern in `exclude`.

    A pattern matches a kernel's name (``"fc1/kernel"``) or its layer's (``"fc1"``), with
    shell wildcards (``"shortcut*"``, ``"*/shortcut*"``).
    """
    out = {}
    for name in names:
        kind = layer_kind(name)
        layer = name.rsplit(SEP, 1)[0]
        if kind and not any(fnmatch.fnmatchcase(n, pat) for pat in exclude for n in (name, layer)):
            out[name] = kind
    return out


def dense_mask(params: Params) -> Mask:
    """A mask that keeps every weight."""
    return unflatten({k: np.ones(v.shape, np.float32) for k, v in flatten(params).items()})


def surviving(n: int, rate: float) -> int:
    """Weights left of `n` survivors after one pruning step at `rate` (the module's rule)."""
    return n - round(rate * n)


def kept_count(n: int, rate: float, rounds: int) -> int:
    """Weights a layer of `n` keeps after `rounds` pruning steps at `rate`."""
    for _ in range(rounds):
        n = surviving(n, rate)
    return n


def _keep_largest(scores: np.ndarray, keep: int) -> np.ndarray:
    """A 0/1 float32 array, 1 at the `keep` largest entries of the flat `scores`."""
    order = np.argsort(-scores, kind="stable")
    out = np.zeros(scores.size, np.float32)
    out[order[:keep]] = 1.0
    return out


def _survivor_scores(weights: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """|w| for survivors and -inf for pruned weights, flattened."""
    return np.where(mask.reshape(-1) > 0, np.abs(weights.reshape(-1)), -np.inf)


def prune_to_counts(params: Params, mask: Mask, keep: Mapping[str, int]) -> Mask:
    """Keeps, in each layer named in `keep`, that many of its survivors of largest |w|."""
    flat_p, flat_m = flatten(params), flatten(mask)
    out = dict(flat_m)
    for name, count in keep.items():
        scores = _survivor_scores(flat_p[name], flat_m[name])
        out[name] = _keep_largest(scores, count).reshape(flat_m[name].shape)
    return unflatten(out)


def prune_global(params: Params, mask: Mask, keep: int, names: Sequence[str]) -> Mask:
    """Keeps the `keep` survivors of largest raw |w| pooled over the layers `names`."""
    flat_p, flat_m = flatten(params), flatten(mask)
    return keep_pooled({n: _survivor_scores(flat_p[n], flat_m[n]) for n in names}, mask, keep)


def keep_pooled(scores: Mapping[str, np.ndarray], mask: Mask, keep: int) -> Mask:
    """`mask` keeping, in the layers named in `scores` (flat scores, -inf for weights out
    of the running), only the `keep` highest-scored weights pooled over them; ties go to the
    earlier layer in `scores`' order, then the earlier position."""
    flat_m = flatten(mask)
    kept = _keep_largest(np.concatenate(list(scores.values())), keep)
    out = dict(flat_m)
    offset = 0
    for name in scores:
        size = flat_m[name].size
        out[name] = kept[offset : offset + size].reshape(flat_m[name].shape)
        offset += size
    return unflatten(out)


Pattern = tuple[int, int]
"""An N:M pattern as ``(n, m)``: keep N of every M consecutive weights along the input axis."""

UNSTRUCTURED = "unstructured"


def parse_pattern(text: str) -> Pattern | None:
    """``prune.pattern`` as `Strategy` and the scoring functions take it: None for
    ``"unstructured"``, ``(n, m)`` for ``"N:M"`` (``"2:4"``) with integers ``0 < N < M``.

    Mishra et al. 2021 (NVIDIA's 2:4) and Zhou et al. 2021 (N:M fine-grained sparsity);
    see the module docstring for the grouped axis.

    Raises:
      ValueError: anything else (``"4:4"``, ``"0:4"``, ``"2/4"``, ``" 2:4"``).
    """
    if text == UNSTRUCTURED:
        return None
    match = re.fullmatch(r"([0-9]+):([0-9]+)", text)
    if match:
        n, m = int(match[1]), int(match[2])
        if 0 < n < m:
            return n, m
    raise ValueError(
        f"pattern must be {UNSTRUCTURED!r} or 'N:M' with integers 0 < N < M (like '2:4'), "
        f"got {text!r}"
    )


def _check_pair(pattern: Pattern) -> tuple[int, int]:
    """`pattern` as two ints ``0 < n < m``, or ValueError."""
    n, m = pattern
    if not (isinstance(n, int) and isinstance(m, int) and 0 < n < m):
        raise ValueError(f"an N:M pattern needs integers 0 < N < M, got {pattern!r}")
    return n, m


def _groups(a: np.ndarray, m: int) -> np.ndarray:
    """`a` (a kernel, input axis -2) as rows of `m` consecutive weights along the input axis,
    one row per group: shape ``(groups, m)``, in order along the input axis within a row."""
    if a.ndim < 2 or a.shape[-2] % m:
        raise ValueError(f"a kernel of shape {a.shape} has no input axis divisible by {m}")
    return np.moveaxis(a, -2, -1).reshape(-1, m)


def _ungroup(rows: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """The inverse of `_groups` for a kernel of `shape`."""
    moved = (*shape[:-2], shape[-1], shape[-2])
    return np.ascontiguousarray(np.moveaxis(rows.reshape(moved), -1, -2))


def check_pattern(params: Params, exclude: Sequence[str], pattern: Pattern | None) -> None:
    """Checks that every layer `prunable_layers(params, exclude)` prunes can hold `pattern`:
    its input size (axis -2, see the module docstring) is a multiple of M. `params` may hold
    any leaves with a ``.shape``. No pattern (None): nothing to check.

    Raises:
      ValueError: naming the first layer that cannot (exclude it, or choose another M).
    """
    if pattern is None:
        return
    n, m = _check_pair(pattern)
    flat = leaves(params)
    for name in prunable_layers(params, exclude):
        shape = tuple(flat[name].shape)
        if len(shape) < 2 or shape[-2] % m:
            size = shape[-2] if len(shape) >= 2 else None
            raise ValueError(
                f"{name} (shape {shape}) has input size {size}, not a multiple of {m}: it "
                f"cannot hold the {n}:{m} pattern (exclude it with prune.exclude)"
            )


def keep_per_group(scores: np.ndarray, mask: np.ndarray, keep: int, m: int) -> np.ndarray:
    """A 0/1 float32 mask shaped like `mask` keeping, in every group of `m` consecutive
    weights along the input axis (axis -2; Mishra et al. 2021, Zhou et al. 2021), the `keep`
    survivors of `mask` of highest score. Only survivors can be kept, so the result lies
    inside `mask`; ties go to the earlier position in the group.

    open_lth has no N:M pruning; compared with jaxpruner's
    ``mask_calculator.topk_n_by_m_mask_calculator``, which groups along an axis it is told
    and keeps the later position on ties. lt groups along the reduction axis of ``x @ W``
    (what sparse tensor cores accelerate) and keeps the earlier, its rule everywhere else.

    Raises:
      ValueError: the input axis is not a multiple of `m`, a survivor's score is NaN, or a
        group has fewer than `keep` survivors.
    """
    mask = np.asarray(mask)
    s = _groups(np.asarray(scores, np.float64).reshape(mask.shape), m)
    alive = _groups(mask, m) > 0
    if not 0 <= keep <= m:
        raise ValueError(f"cannot keep {keep} of every {m}")
    if np.any(alive.sum(1) < keep):
        raise ValueError(f"a group of {m} has fewer than {keep} survivors to keep")
    if np.any(np.isnan(s[alive])):
        raise ValueError("a survivor's score is NaN")
    # Survivors first, then highest score, then earliest position (lexsort is stable).
    order = np.lexsort((-np.where(alive, s, 0.0), ~alive), axis=-1)
    ranks = np.empty_like(order)
    np.put_along_axis(ranks, order, np.broadcast_to(np.arange(m), order.shape), axis=-1)
    return _ungroup((ranks < keep).astype(np.float32), mask.shape)


def holds_pattern(mask: Mask, names: Iterable[str], keep: int, m: int) -> bool:
    """Whether every group of `m` along the input axis of each layer `names` of `mask`
    holds exactly `keep` survivors (False too for a layer whose input size is not a
    multiple of `m`)."""
    flat = flatten(mask)
    for name in names:
        layer = flat[name]
        if layer.ndim < 2 or layer.shape[-2] % m:
            return False
        if not np.all((_groups(layer, m) > 0).sum(1) == keep):
            return False
    return True


def _one_shot_fractions(
    sizes: Mapping[str, int], rates: Mapping[str, float], kinds: Mapping[str, str], target: float
) -> dict[str, float]:
    """Per-layer kept fractions ``(1 - rate) ** k`` with the real `k` at which the layers
    together keep the fraction `target` (so one-shot keeps IMP's ratios between kinds)."""
    total = sum(sizes.values())

    def kept(k: float) -> float:
        return sum(n * (1 - rates[kinds[name]]) ** k for name, n in sizes.items()) / total

    lo, hi = 0.0, 1.0
    while kept(hi) > target:
        hi *= 2
    for _ in range(100):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if kept(mid) > target else (lo, mid)
    return {name: (1 - rates[kinds[name]]) ** hi for name in sizes}


@dataclasses.dataclass(frozen=True)
class Strategy:
    """How a run prunes between levels.

    Attributes:
      kind: ``layerwise`` (each layer at the rate of its kind) or ``global`` (one ranking
        over all prunable layers at ``rates["global"]``).
      rates: fraction of survivors removed per step, by kind (``fc``, ``conv``, ``output``)
        or ``global``.
      exclude: layer name patterns never pruned.
      one_shot: one-shot targets: level i prunes the dense level's network straight to
        ``one_shot[i - 1]`` percent of weights remaining (empty: iterative pruning).
      pattern: an N:M pattern ``(n, m)`` (`parse_pattern`), or None: unstructured. With a
        pattern (layer-wise only) counts are fixed per group of M along each kernel's input
        axis (Mishra et al. 2021; Zhou et al. 2021; the module docstring), not by the
        rates: IMP level ``l`` keeps ``M - l`` per group, ranked by the trained |w| among
        the previous mask's survivors, up to level ``M - N`` (more rounds are refused);
        one-shot has exactly one level, which keeps N per group of the dense level's
        network (its percent is not read: the pattern fixes the count).

    Raises:
      ValueError: a pattern that is not ``0 < N < M``, with a global strategy, or with
        more than one one-shot level.
    """

    kind: str
    rates: Mapping[str, float]
    exclude: tuple[str, ...] = ()
    one_shot: tuple[float, ...] = ()
    pattern: Pattern | None = None

    def __post_init__(self) -> None:
        if self.pattern is None:
            return
        _check_pair(self.pattern)
        if self.kind == "global":
            raise ValueError("an N:M pattern is layer-wise: it fixes the count of every group")
        if len(self.one_shot) > 1:
            raise ValueError(
                f"one-shot with an N:M pattern has exactly one level, got {len(self.one_shot)} "
                "targets"
            )

    def group_keep(self, level: int) -> int | None:
        """Weights each group of M keeps at `level` with a pattern (None without): M at
        level 0; ``M - level`` in IMP; N at one-shot's level 1.

        Raises:
          ValueError: a level past the pattern (IMP: more rounds than N:M allows).
        """
        if self.pattern is None:
            return None
        n, m = self.pattern
        if level == 0:
            return m
        if self.one_shot:
            if level != 1:
                raise ValueError(f"one-shot with the {n}:{m} pattern has one level, not {level}")
            return n
        if not 0 < level <= m - n:
            raise ValueError(
                f"level {level}: more rounds than N:M allows ({n}:{m} is reached at level "
                f"{m - n}, one weight per group of {m} per round)"
            )
        return m - level

    def targets(self, params: Params) -> dict[str, str]:
        """``{name: kind}`` of the layers this strategy prunes."""
        return prunable_layers(params, self.exclude)

    def step(
        self,
        survivors: Mapping[str, int],
        kinds: Mapping[str, str],
        excluded: int = 0,
        target: float | None = None,
    ) -> dict[str, int]:
        """Survivors after one pruning step (the module's rounding rule).

        Args:
          survivors: surviving weights per pruned layer, or, for a global strategy, their
            total under ``"*"`` (which is also accepted per layer and then summed).
          kinds: the kind of each layer.
          excluded: weights of prunable kinds in excluded layers. One-shot's target is a
            percent of all of them (the reported Pm), which these count towards.
          target: a one-shot step's percent of weights remaining (None: one IMP step).

        Returns:
          Survivors per layer (layer-wise) or their total under ``"*"`` (global).
        """
        total = sum(survivors.values())
        if target is not None:
            wanted = round(target / 100 * (total + excluded)) - excluded
            if self.kind == "global":
                return {"*": wanted}
            fractions = _one_shot_fractions(survivors, self.rates, kinds, wanted / total)
            return {name: round(n * fractions[name]) for name, n in survivors.items()}
        if self.kind == "global":
            return {"*": surviving(total, self.rates["global"])}
        return {name: surviving(n, self.rates[kinds[name]]) for name, n in survivors.items()}

    def excluded_weights(self, params: Params) -> int:
        """Weights of prunable kinds that this strategy's exclusions keep dense."""
        targets = self.targets(params)
        return sum(
            int(np.size(leaf))
            for name, leaf in flatten(params).items()
            if layer_kind(name) and name not in targets
        )

    def target(self, level: int) -> float | None:
        """Level `level`'s one-shot percent of weights remaining, or None (IMP)."""
        return self.one_shot[level - 1] if self.one_shot and level > 0 else None

    def prune(self, params: Params, mask: Mask, level: int = 1) -> Mask:
        """Level `level`'s mask from trained `params` and `mask`: one IMP step from the level
        before, or a one-shot level's target from the dense level.

        With a pattern, each pruned layer keeps `group_keep(level)` of every group: the
        survivors of `mask` of largest trained |w| (`keep_per_group`).

        Raises:
          ValueError: (with a pattern) a layer that cannot hold it (`check_pattern`), or a
            level past it (`group_keep`).
        """
        kinds = self.targets(params)
        flat_m = flatten(mask)
        if self.pattern is not None:
            check_pattern(params, self.exclude, self.pattern)
            keep, m = self.group_keep(level), self.pattern[1]
            flat_p = flatten(params)
            out = dict(flat_m)
            for name in kinds:
                out[name] = keep_per_group(np.abs(flat_p[name]), flat_m[name], keep, m)
            return unflatten(out)
        survivors = {name: int(flat_m[name].sum()) for name in kinds}
        keep = self.step(survivors, kinds, self.excluded_weights(params), self.target(level))
        if self.kind == "global":
            return prune_global(params, mask, keep["*"], list(kinds))
        return prune_to_counts(params, mask, keep)

    def expected_counts(self, params: Params, level: int) -> dict[str, int]:
        """Survivors at `level` of a network shaped like `params`: per layer, or the total
        under ``"*"`` for a global strategy. With a pattern, ``size * group_keep(level) /
        M`` per layer (`holds_pattern` checks the groups themselves).

        Raises:
          ValueError: (with a pattern) as `prune`.
        """
        kinds = self.targets(params)
        if self.pattern is not None:
            check_pattern(params, self.exclude, self.pattern)
            keep, m = self.group_keep(level), self.pattern[1]
            flat = leaves(params)
            return {name: int(np.prod(flat[name].shape)) * keep // m for name in kinds}
        survivors = {
            name: int(np.size(leaf)) for name, leaf in flatten(params).items() if name in kinds
        }
        if self.kind == "global":
            survivors = {"*": sum(survivors.values())}
        excluded = self.excluded_weights(params)
        if self.one_shot:
            return self.step(survivors, kinds, excluded, self.target(level)) if level else survivors
        for _ in range(level):
            survivors = self.step(survivors, kinds, excluded)
        return survivors

    def actual_counts(self, params: Params, mask: Mask) -> dict[str, int]:
        """Survivors in `mask`, in the form `expected_counts` gives."""
        flat_m = flatten(mask)
        counted = {name: int(flat_m[name].sum()) for name in self.targets(params)}
        return {"*": sum(counted.values())} if self.kind == "global" else counted


def random_like(mask: Mask, rng: np.random.Generator, pattern: Pattern | None = None) -> Mask:
    """A random mask with the same number of survivors as `mask` in every prunable layer.

    With a pattern ``(n, m)``, the same number of survivors as `mask` in EVERY GROUP of `m`
    along each prunable kernel's input axis (Mishra et al. 2021; Zhou et al. 2021), at
    uniformly random positions within the group, so the random control keeps the N:M
    structure. Fully dense layers (excluded ones) stay dense; without a pattern the draws
    are exactly those of before patterns existed.

    Raises:
      ValueError: (with a pattern) a layer that is not fully dense and whose input size
        is not a multiple of `m`.
    """
    if pattern is not None:
        return _random_groups(mask, rng, _check_pair(pattern)[1])
    flat_m = flatten(mask)
    out = dict(flat_m)
    for name in flat_m:
        if layer_kind(name) is None:
            continue
        m = flat_m[name]
        keep = int(m.sum())
        fresh = np.zeros(m.size, np.float32)
        fresh[rng.permutation(m.size)[:keep]] = 1.0
        out[name] = fresh.reshape(m.shape)
    return unflatten(out)


def _random_groups(mask: Mask, rng: np.random.Generator, m: int) -> Mask:
    """`random_like` with a pattern: each group's survivors at random positions in it."""
    flat_m = flatten(mask)
    out = dict(flat_m)
    for name, layer in flat_m.items():
        if layer_kind(name) is None or np.all(layer > 0):
            continue
        if layer.ndim < 2 or layer.shape[-2] % m:
            raise ValueError(f"{name} (shape {layer.shape}) cannot hold groups of {m}")
        rows = _groups(layer, m)
        keep = (rows > 0).sum(1, keepdims=True)
        ranks = np.argsort(np.argsort(rng.random(rows.shape), axis=1), axis=1)
        out[name] = _ungroup((ranks < keep).astype(np.float32), layer.shape)
    return unflatten(out)


def counts(mask: Mask) -> dict[str, tuple[int, int]]:
    """``{name: (kept, total)}`` for every prunable kernel of `mask`."""
    return {
        name: (int(m.sum()), int(m.size))
        for name, m in flatten(mask).items()
        if layer_kind(name) is not None
    }


def percent_remaining(mask: Mask) -> float:
    """Percent of prunable weights that survive (the paper's Pm)."""
    kept, total = np.sum(list(counts(mask).values()), axis=0)
    return 100.0 * kept / total
