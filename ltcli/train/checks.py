"""Run-time checks of the lottery-ticket invariants, run after every level before storing.

Every lottery-ticket codebase has shipped a bug in one of these, so they run on every real
run, not only in tests. Each raises `InvariantError` naming the layer and the cell.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ltcli.core.errors import InvariantError
from ltcli.core.pytrees import Mask, Params
from ltcli.science import pruning


def _param_shaped(opt_state: Any, params: Params) -> list[Any]:
    """The parts of an optimizer state shaped like `params` (momenta, Adam's moments)."""
    structure = jax.tree.structure(params)
    parts = jax.tree.leaves(opt_state, is_leaf=lambda x: jax.tree.structure(x) == structure)
    return [part for part in parts if jax.tree.structure(part) == structure]


@jax.jit
def pruned_nonzero(params: Params, opt_state: Any, mask: Mask) -> jax.Array:
    """Per cell of a stacked group, how many pruned entries of its weights and of the
    parameter-shaped parts of its optimizer state are not zero: the checks of
    `pruned_are_zero` and `optimizer_state_masked` in one program on the device, so a level
    pays for no transfer of optimizer state. Nonzero counts are then named on the host."""
    total = 0
    for tree in (params, *_param_shaped(opt_state, params)):
        for leaf, m in zip(jax.tree.leaves(tree), jax.tree.leaves(mask), strict=True):
            axes = tuple(range(1, leaf.ndim))
            total = total + jnp.sum((leaf != 0) & (m == 0), axis=axes)
    return total


def pruned_are_zero(tree: Params, mask: Mask, what: str) -> None:
    """Every entry of `tree` where `mask` is 0 is exactly zero."""
    flat_m = pruning.flatten(mask)
    for name, leaf in pruning.flatten(tree).items():
        bad = int(np.count_nonzero(leaf[flat_m[name] == 0]))
        if bad:
            raise InvariantError(f"{what}: {bad} pruned weights of {name} are not zero")


def optimizer_state_masked(opt_state: Any, params: Params, mask: Mask, what: str) -> None:
    """Every parameter-shaped part of the optimizer state (momenta, Adam moments) is zero at
    pruned weights, so no update can revive them."""
    for part in _param_shaped(opt_state, params):
        pruned_are_zero(part, mask, f"{what} optimizer state")


def rewound(start: Params, rewind_point: Params, mask: Mask | None, what: str) -> None:
    """`start` equals `rewind_point` bit for bit at survivors and is zero elsewhere (with no
    `mask`, everywhere)."""
    flat_s, flat_r = pruning.flatten(start), pruning.flatten(rewind_point)
    flat_m = pruning.flatten(mask) if mask is not None else {}
    if flat_s.keys() != flat_r.keys():
        raise InvariantError(f"{what}: starts with other parameters than the rewind point")
    for name, s in flat_s.items():
        keep = flat_m.get(name, np.ones(s.shape)) > 0
        expected = np.where(keep, flat_r[name], np.zeros_like(s))
        if s.dtype != expected.dtype or s.tobytes() != expected.astype(s.dtype).tobytes():
            raise InvariantError(f"{what}: {name} is not the rewind point under the mask")


def counts(actual: Mapping[str, int], expected: Mapping[str, int], what: str) -> None:
    """Each layer (or the pooled total) keeps exactly the documented number of weights."""
    for name, want in expected.items():
        if actual.get(name) != want:
            raise InvariantError(
                f"{what}: {name} keeps {actual.get(name)} weights, the rounding rule gives {want}"
            )


def pattern(strategy: pruning.Strategy, params: Params, mask: Mask, level: int, what: str) -> None:
    """Every group of M weights of each pruned layer keeps exactly what an N:M strategy
    keeps at `level` (`pruning.Strategy.group_keep`)."""
    n_m = strategy.pattern
    assert n_m is not None
    keep = strategy.group_keep(level)
    if not pruning.holds_pattern(mask, list(strategy.targets(params)), keep, n_m[1]):
        raise InvariantError(
            f"{what}: does not keep exactly {keep} of every {n_m[1]} weights of each group"
        )


def digest(tree: Any, into: Any = None) -> str:
    """sha256 (hex) of a pytree's leaves, leaf by leaf in path order, names and bytes: what
    a cell records of the weights it started from. With `into` (a hashlib object), the
    leaves are added to it as well."""
    hasher = into if into is not None else hashlib.sha256()
    for name, leaf in sorted(pruning.flatten(tree).items()):
        hasher.update(name.encode())
        hasher.update(np.ascontiguousarray(leaf).tobytes())
    return hasher.hexdigest()
