"""Instability analysis of trained cells: the error path between a copy and its ticket, as
`ltcli.science.interpolation` computes it, evaluated by the engine on the run's data.

Batch norm on the path uses the statistics of a fixed, class-balanced sample of the training
split (`ltcli.science.interpolation.bn_sample`), normalized as training normalizes it.
"""

from __future__ import annotations

from typing import Any

import jax

from ltcli.core.pytrees import Mask
from ltcli.experiment.member import PAIRED_KINDS, CellKey
from ltcli.science import interpolation
from ltcli.train.context import RunContext
from ltcli.train.engine import Engine, Group
from ltcli.train.feeders import Feeder


def bn_inputs(feeder: Feeder) -> Any:
    """The normalized training images of `interpolation.bn_sample` of the feeder's labels."""
    return feeder.images(interpolation.bn_sample(feeder.labels))


def path(
    engine: Engine,
    a: dict[str, Any],
    b: dict[str, Any],
    mask: Mask,
    feeder: Feeder,
    points: int = interpolation.POINTS,
    bn_x: Any = None,
) -> dict[str, Any]:
    """Test loss and error from network `a` to network `b` under `mask` (see
    `ltcli.science.interpolation.path`) on the examples of `feeder`; `bn_x` defaults to
    `bn_inputs` for a network with batch norm (the others, transformers on text among them,
    need no sample)."""
    if bn_x is None and jax.tree.leaves(a["batch_stats"]):
        bn_x = bn_inputs(feeder)
    return feeder.test_path(engine, a, b, mask, bn_x, points)


def _paths(
    engine: Engine, pairs: list[tuple[CellKey, dict, dict, Mask]], run: RunContext
) -> dict[CellKey, dict[str, Any]]:
    """`path` from `a` to `b` under `mask` for each ``(cell, a, b, mask)`` of `pairs`, on one
    batch-norm sample (drawn only when there is a pair)."""
    has_stats = any(jax.tree.leaves(a["batch_stats"]) for _, a, _, _ in pairs)
    bn_x = bn_inputs(run.feeder) if has_stats else None
    return {cell: path(engine, a, b, mask, run.feeder, bn_x=bn_x) for cell, a, b, mask in pairs}


def level_barriers(
    engine: Engine, cells: list[CellKey], rows: list[Group], run: RunContext
) -> dict[CellKey, dict[str, Any]]:
    """The error path from each IMP ticket's level-before ticket to it, both trained, with its
    `interpolation.instability` and `interpolation.barrier_above_line` (Paul et al., ICLR
    2023: successive IMP solutions are linearly connected exactly when they are matching),
    for the trained `rows` of `cells`. The path lies in the level before's sparsity pattern
    (its mask contains this level's), so it is evaluated under that mask."""
    pairs = []
    for cell, row in zip(cells, rows, strict=True):
        if cell.member.is_ticket and cell.level > 0:
            trained = {"params": row.params, "batch_stats": row.batch_stats}
            pairs.append(_level_pair(cell, trained, run))
    return _level_records(engine, pairs, run)


def stored_level_barrier(engine: Engine, cell: CellKey, run: RunContext) -> dict[str, Any]:
    """`level_barriers` of the stored IMP ticket `cell` (level 1 or more), from the store's
    trained tickets alone: the same path as if it had been measured as the level trained."""
    pair = _level_pair(cell, run.view.read_trained(cell), run)
    return _level_records(engine, [pair], run)[cell]


def _level_records(
    engine: Engine, pairs: list[tuple[CellKey, dict, dict, Mask]], run: RunContext
) -> dict[CellKey, dict[str, Any]]:
    """The level-barrier record of each ``(ticket, before, ticket's weights, mask)``: stored as
    a ticket's ``level_barrier`` (the key kept from before the path had two measures), it
    holds the whole path with both its instability and its barrier above the line."""
    return {c: {"from_level": c.level - 1, **p} for c, p in _paths(engine, pairs, run).items()}


def _level_pair(
    cell: CellKey, trained: dict[str, Any], run: RunContext
) -> tuple[CellKey, dict, dict, Mask]:
    """The path's ends and mask for ticket `cell` with weights `trained`: the level before's
    stored trained ticket, `trained`, and the level before's mask."""
    before = CellKey(cell.replicate, cell.level - 1)
    mask = run.view.read_mask(before, trained["params"])
    return cell, run.view.read_trained(before), trained, mask


def instabilities(
    engine: Engine, cells: list[CellKey], rows: list[Group], masks: list[Mask], run: RunContext
) -> dict[CellKey, dict[str, Any]]:
    """The error path from each stability or spawned copy's ticket to the copy, for the
    trained `rows` of `cells`; the ticket is in this group or already stored."""
    trained = {
        cell: {"params": row.params, "batch_stats": row.batch_stats}
        for cell, row in zip(cells, rows, strict=True)
    }
    pairs = []
    for cell, mask in zip(cells, masks, strict=True):
        if cell.member.kind in PAIRED_KINDS:
            ticket = CellKey(cell.replicate, cell.level)
            partner = trained.get(ticket) or run.view.read_trained(ticket)
            pairs.append((cell, partner, trained[cell], mask))
    return {c: {"partner": "ticket", **p} for c, p in _paths(engine, pairs, run).items()}
