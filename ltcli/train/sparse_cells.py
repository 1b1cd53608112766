"""A group of sparse-training tickets whose masks change while they train (GMP, SET,
RigL): the engine's `MaskUpdates`, each cell's schedule table, and the facts of that
schedule that each cell's metrics record (for FLOPs counting and reports).

Recorded facts (``metrics.json``):
- ``mask_updates``: how many steps updated the mask (RigL: the steps whose dense gradient
  chose the grown weights; SET and RigL skip the optimizer update at them);
- ``mask_update_steps``: those iterations;
- ``update_percent_remaining`` (gmp): percent of prunable weights remaining after each
  pruning step (the excluded layers counted, as ``percent_remaining``);
- ``update_layers`` (gmp): per pruned layer, the weights it keeps after each pruning step
  (SET and RigL keep their final ``layers`` counts throughout);
- ``drop_fractions`` (set, rigl): the fraction of active weights dropped at each update.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from ltcli.experiment import sparse_spec
from ltcli.science import pruning, sparse_training
from ltcli.science.methods import MASK_UPDATING
from ltcli.storage.store import CellKey
from ltcli.train.mask_updates import MaskUpdates
from ltcli.train.starts import Starts

UPDATING_MASKS = ("gmp", "drop_grow")
"""The combination table's sources of a mask that changes while its cell trains."""


@dataclasses.dataclass(frozen=True)
class SparseGroup:
    """What a group of mask-updating tickets adds to an ordinary group."""

    updates: MaskUpdates
    tables: list[dict[str, np.ndarray]]
    facts: list[dict[str, Any]]
    budgets: list[dict[str, int]]


def of(starts: Starts, cells: list[CellKey]) -> SparseGroup | None:
    """The mask updates of `cells`, or None for cells whose masks stay fixed.

    Raises:
      ValueError: cells that update their masks grouped with cells that do not (the runner
        trains a sparse-training level's tickets before their controls).
    """
    run = starts.run
    method = run.desc["prune.method"]
    updating = [method in MASK_UPDATING and starts.sources(c).mask in UPDATING_MASKS for c in cells]
    if not any(updating):
        return None
    if not all(updating):
        raise ValueError("cells whose masks change while they train group only together")
    iterations = run.cfg.iterations
    start, end = sparse_spec.update_range(run.desc.full, iterations)
    every = run.desc["prune.update_every"]
    steps = sparse_training.update_steps(method, start, end, every)
    template = starts.init_point(0)["params"]
    flat = pruning.flatten(template)
    sizes = {n: int(np.size(v)) for n, v in flat.items() if pruning.layer_kind(n)}
    tables, facts, budgets = [], [], []
    for cell in cells:
        budget = starts.budget(cell.level)
        options = {"start": start, "end": end, "alpha": 0.0, "anneal": "constant"}
        if method != "gmp":
            options.update(alpha=run.desc["prune.drop_fraction"])
            options.update(anneal=run.desc["prune.drop_anneal"])
        table = sparse_training.schedule_table(method, sizes, budget, steps, **options)
        fact: dict[str, Any] = {"mask_updates": len(steps), "mask_update_steps": steps.tolist()}
        if method == "gmp":
            dense = sum(sizes.values()) - sum(sizes[n] for n in budget)
            kept = dense + np.sum([table[n] for n in budget], axis=0)
            fact["update_percent_remaining"] = (100 * kept / sum(sizes.values())).tolist()
            fact["update_layers"] = {n: table[n].tolist() for n in sorted(budget)}
        else:
            fractions = sparse_training.drop_fraction(steps, **_drop(options))
            fact["drop_fractions"] = fractions.tolist()
        tables.append(table)
        facts.append(fact)
        budgets.append(budget)
    updates = MaskUpdates.of(method, steps, every, sizes, tables)
    return SparseGroup(updates, tables, facts, budgets)


def _drop(options: dict[str, Any]) -> dict[str, Any]:
    return {k: options[k] for k in ("alpha", "start", "end", "anneal")}


def final_counts_differ(mask: Any, budget: dict[str, int]) -> str | None:
    """Which layer of a trained cell's final `mask` does not keep its budget, or None."""
    counts = pruning.counts(mask)
    for name, want in budget.items():
        if counts[name][0] != want:
            return f"{name} keeps {counts[name][0]} weights, its budget is {want}"
    return None
