"""Magnitude pruning as pure functions over parameter and mask pytrees.

Masks are pytrees shaped like the parameters with float32 leaves of 0 and 1; biases,
batch-norm scales and anything else that is not a prunable kernel stay all ones.

Rounding rule (every strategy): a pruning step at rate ``p`` over ``s`` surviving weights
removes ``round(p * s)`` of them (Python's round, half to even) and keeps the rest, so a
layer of ``n`` weights pruned ``k`` times keeps ``kept_count(n, p, k)``. The weights removed
are the survivors of smallest ``|w|``; ties are broken by position (the earlier goes first).
"""

from __future__ import annotations

import dataclasses
import fnmatch
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from ltcli.core.base import Mask, Params

SEP = "/"
_KIND_PREFIXES = (("shortcut", "conv"), ("conv", "conv"), ("fc", "fc"), ("out", "output"))


def layer_kind(name: str) -> str | None:
    """The prunable kind of the parameter at `name` (``"fc1/kernel"``), or None.

    Only kernels are prunable; their kind comes from the name of the layer holding them:
    ``conv*`` and ``shortcut*`` are ``conv``, ``fc*`` is ``fc``, ``out`` is ``output``.
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
    """

    kind: str
    rates: Mapping[str, float]
    exclude: tuple[str, ...] = ()
    one_shot: tuple[float, ...] = ()

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
        before, or a one-shot level's target from the dense level."""
        kinds = self.targets(params)
        flat_m = flatten(mask)
        survivors = {name: int(flat_m[name].sum()) for name in kinds}
        keep = self.step(survivors, kinds, self.excluded_weights(params), self.target(level))
        if self.kind == "global":
            return prune_global(params, mask, keep["*"], list(kinds))
        return prune_to_counts(params, mask, keep)

    def expected_counts(self, params: Params, level: int) -> dict[str, int]:
        """Survivors at `level` of a network shaped like `params`: per layer, or the total
        under ``"*"`` for a global strategy."""
        kinds = self.targets(params)
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


def random_like(mask: Mask, rng: np.random.Generator) -> Mask:
    """A random mask with the same number of survivors as `mask` in every prunable layer."""
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
