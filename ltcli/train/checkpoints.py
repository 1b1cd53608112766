"""Mid-level checkpoints of a training group: saved now and then while a level trains, so a
killed run resumes mid-level, and used only when they provably belong to it.

A checkpoint keys every leaf by its pytree path (Adam's mu and nu have equal shapes:
positions could swap them unnoticed) and records which cells it holds and a fingerprint of
what they started from.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import numpy as np

from ltcli.core import atomic
from ltcli.core.errors import LtError
from ltcli.storage.store import CellKey
from ltcli.train import checks
from ltcli.train.engine import Group


def name(cells: list[CellKey], by_cells: bool = False) -> str:
    """A group's checkpoint: ``level_<L>`` for one level's cells, else (deferred controls)
    named by the cells it holds. With `by_cells`, a level's group is named by its cells too
    (``level_<L>_<digest>``): cluster tasks train several groups of one level at once."""
    levels = {c.level for c in cells}
    digest = hashlib.sha256(" ".join(str(c.relpath) for c in cells).encode()).hexdigest()
    if len(levels) == 1:
        return f"level_{levels.pop()}" + (f"_{digest[:12]}" if by_cells else "")
    return f"controls_{digest[:12]}"


def fingerprint(inputs: list[tuple[dict[str, Any], Any, dict[str, Any]]]) -> str:
    """sha256 of a group's masks and start points, cell by cell, leaf by leaf in path order."""
    hasher = hashlib.sha256()
    for start, mask, _ in inputs:
        for tree in (start, mask):
            checks.digest(tree, into=hasher)
    return hasher.hexdigest()


def _leaf_names(group: Any) -> tuple[list[str], Any, list[Any]]:
    paths_leaves, structure = jax.tree_util.tree_flatten_with_path(group)
    names = [f"state{jax.tree_util.keystr(p)}" for p, _ in paths_leaves]
    return names, structure, [leaf for _, leaf in paths_leaves]


def save(
    path: Path,
    cells: list[CellKey],
    group: Group,
    step: int,
    curves: np.ndarray,
    inputs: str,
    notes: dict[str, Any] | None = None,
) -> None:
    """Saves the group's state at iteration `step` with its curves so far, the cells it
    holds, the fingerprint of their `inputs` and `notes` (JSON: what the loop recorded on
    the way, such as where spawned copies branched)."""
    names, _, leaves = _leaf_names(jax.device_get(group))
    arrays = {n: np.asarray(x) for n, x in zip(names, leaves, strict=True)}
    arrays.update(
        step=np.asarray(step),
        curves=curves,
        cells=np.asarray([str(c.relpath) for c in cells]),
        inputs=np.asarray(inputs),
        notes=np.asarray(json.dumps(notes or {})),
    )
    atomic.write_npz(path, arrays)


def load(
    path: Path,
    cells: list[CellKey],
    like: Group,
    inputs: str,
    note: Callable[[str], None],
    discard: Callable[[], None],
    masks: str = "fixed",
) -> tuple[Group, int, np.ndarray, dict[str, Any]] | None:
    """The saved state of this group (state, step, curves, notes), or None to start the
    level afresh.

    A checkpoint is used only if it holds these cells, every leaf of `like` under its path
    with its shape and dtype, was saved from these masks and start points (the `inputs`
    fingerprint), and its masks equal `like`'s bit for bit with every pruned weight zero.
    `masks` says how the group's masks behave: ``fixed``; ``updated`` (they change while it
    trains, so they are part of the state it resumes, pruned weights still zero); or
    ``learned`` (the weights are dense under masks the step computes: neither is checked).
    Anything else is stale (the run changed under it, or the file is not lt's): it is
    deleted by `discard` (the store's, which in a multi-host job only its writer carries
    out), with a `note`.
    """
    if not path.exists():
        return None
    why = None
    try:
        with np.load(path) as saved:
            stored = {k: saved[k] for k in saved.files}
    except (OSError, ValueError) as err:
        stored, why = {}, f"unreadable ({err})"
    why = why or _stale(stored, cells, like, inputs)
    if why is None:
        names, structure, _ = _leaf_names(like)
        restored = jax.tree.unflatten(structure, [stored[n] for n in names])
        why = None if masks == "learned" else _masks_differ(restored, like, masks == "fixed")
    if why is not None:
        note(f"note: discarded the checkpoint {path}: {why}; the level starts over")
        discard()
        return None
    notes = json.loads(str(stored["notes"])) if "notes" in stored else {}
    group = jax.tree.map(jax.numpy.asarray, restored)
    return group, int(stored["step"]), stored["curves"], notes


def _stale(stored: dict[str, Any], cells: list[CellKey], like: Group, inputs: str) -> str | None:
    """Why a loaded checkpoint's contents do not belong to this group, or None."""
    if [str(x) for x in stored.get("cells", [])] != [str(c.relpath) for c in cells]:
        return "it holds other cells"
    if str(stored.get("inputs", "")) != inputs:
        return "its cells started from other masks or weights"
    names, _, leaves = _leaf_names(like)
    for leaf_name, leaf in zip(names, leaves, strict=True):
        saved = stored.get(leaf_name)
        if saved is None or saved.shape != leaf.shape or saved.dtype != leaf.dtype:
            return f"{leaf_name} is missing or of another shape"
    return None


def _masks_differ(restored: Group, like: Group, fixed: bool = True) -> str | None:
    """Why a restored group's masks (when `fixed`) or pruned weights do not match `like`'s,
    or None."""
    fresh = jax.device_get(jax.tree.leaves(like.mask))
    if fixed and not all(
        np.array_equal(a, b) for a, b in zip(jax.tree.leaves(restored.mask), fresh, strict=True)
    ):
        return "its masks differ from the level's"
    try:
        checks.pruned_are_zero(restored.params, restored.mask, "checkpoint")
    except LtError:
        return "pruned weights in it are not zero"
    return None
