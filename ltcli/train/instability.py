"""Instability analysis of trained cells: the error path between a copy and its ticket, as
`ltcli.science.interpolation` computes it, evaluated by the engine on the run's data.

Batch norm on the path uses the statistics of a fixed, class-balanced sample of the training
split (`ltcli.science.interpolation.bn_sample`), normalized as training normalizes it.
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
import numpy as np

from ltcli.core.base import Mask
from ltcli.experiment.member import PAIRED_KINDS, CellKey
from ltcli.models.layers import BN_MOMENTUM
from ltcli.science import interpolation
from ltcli.train.context import RunContext
from ltcli.train.engine import DeviceData, Engine, Group


def bn_inputs(data: DeviceData) -> Any:
    """The normalized training images of `interpolation.bn_sample` of `data`'s labels."""
    ids = jnp.asarray(interpolation.bn_sample(np.asarray(data.y_train)))
    return (data.x_train[ids].astype(jnp.float32) - data.mean) / data.std


def path(
    engine: Engine,
    a: dict[str, Any],
    b: dict[str, Any],
    mask: Mask,
    data: DeviceData,
    points: int = interpolation.POINTS,
    bn_x: Any = None,
) -> dict[str, Any]:
    """Test loss and error from network `a` to network `b` under `mask` (see
    `ltcli.science.interpolation.path`); `bn_x` defaults to `bn_inputs(data)`."""
    return interpolation.path(
        engine.evaluate_test,
        engine.model,
        a,
        b,
        mask,
        data,
        bn_inputs(data) if bn_x is None else bn_x,
        bn_momentum=BN_MOMENTUM,
        points=points,
    )


def level_barriers(
    engine: Engine, cells: list[CellKey], rows: list[Group], run: RunContext
) -> dict[CellKey, dict[str, Any]]:
    """The error path from each IMP ticket's level-before ticket to it, both trained, and
    its error barrier (Paul et al., ICLR 2023: successive IMP solutions are linearly
    connected exactly when they are matching). The path lies in the level before's sparsity
    pattern (its mask contains this level's), so it is evaluated under that mask."""
    out, bn_x = {}, None
    for cell, row in zip(cells, rows, strict=True):
        if not cell.member.is_ticket or cell.level == 0:
            continue
        before = CellKey(cell.replicate, cell.level - 1)
        template = row.params
        mask = run.view.read_mask(before, template)
        bn_x = bn_inputs(run.data) if bn_x is None else bn_x
        trained = {"params": row.params, "batch_stats": row.batch_stats}
        found = path(engine, run.view.read_trained(before), trained, mask, run.data, bn_x=bn_x)
        out[cell] = {"from_level": before.level, **found}
    return out


def instabilities(
    engine: Engine, cells: list[CellKey], rows: list[Group], masks: list[Mask], run: RunContext
) -> dict[CellKey, dict[str, Any]]:
    """The error path from each stability or spawned copy's ticket to the copy, for the
    trained `rows` of `cells`; the ticket is in this group or already stored."""
    trained = {
        cell: {"params": row.params, "batch_stats": row.batch_stats}
        for cell, row in zip(cells, rows, strict=True)
    }
    out = {}
    bn_x = None
    for cell, mask in zip(cells, masks, strict=True):
        if cell.member.kind in PAIRED_KINDS:
            ticket = CellKey(cell.replicate, cell.level)
            partner = trained.get(ticket) or run.view.read_trained(ticket)
            bn_x = bn_inputs(run.data) if bn_x is None else bn_x
            found = path(engine, partner, trained[cell], mask, run.data, bn_x=bn_x)
            out[cell] = {"partner": "ticket", **found}
    return out
