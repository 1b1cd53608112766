"""A cell's cost, recorded in its metrics: its inference and training FLOPs as multiples of
the dense network's (`ltcli.science.flops`, RigL's counting), and its training FLOPs in all.

A cell trains from its start iteration to T under the mask it holds, so its schedule is one
`flops.Segment` (`fixed_mask`); a sparse-training ticket, whose mask changes while it
trains, has the segments its recorded updates give (`segments`: RigL's dense-gradient
steps, GMP's shrinking densities).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ltcli.science import flops, pruning


def fixed_mask(mask: Any, steps: int) -> list[flops.Segment]:
    """The schedule of a cell that trains `steps` steps under one `mask` (IMP, one-shot,
    pruning at initialization, their controls; the dense level)."""
    return [flops.Segment(steps, flops.densities(pruning.counts(mask)))]


def cost_facts(
    layer_flops: Mapping[str, float],
    final: Mapping[str, float],
    segments: Sequence[flops.Segment],
    batch: int,
) -> dict[str, float | None]:
    """``inference_flops`` (the `final` densities' forward FLOPs, x dense),
    ``training_flops`` (the `segments`' training FLOPs, x dense training over the same
    steps) and ``training_flops_total`` (FLOPs, `batch` examples a step); both training
    figures are None for a cell that trains no step."""
    steps = sum(s.steps for s in segments)
    ratio = flops.training_flops(layer_flops, segments) if steps else None
    total = None if ratio is None else ratio * flops.dense_training_flops(layer_flops, steps, batch)
    return {
        "inference_flops": flops.inference_flops(layer_flops, final),
        "training_flops": ratio,
        "training_flops_total": total,
    }


def segments(
    method: str, mask: Any, facts: Mapping[str, Any], start: int, iterations: int
) -> list[flops.Segment]:
    """A cell's training schedule from `start` to `iterations` for FLOPs counting, from its
    final `mask` and the mask-update facts it records (`ltcli.train.sparse_cells`): one
    fixed-mask segment for a cell without updates; for RigL, one at the final densities
    (its counts never change) whose update steps compute the dense gradient; for SET the
    same without dense gradients; for GMP one segment per density, each pruning step's own
    step still at the density before it (the mask shrinks after the optimizer step); for a
    learned mask, one at its final densities whose every step computes the dense gradient
    (straight-through: to every weight, or every score)."""
    if "learned_mask" in facts:  # every step's gradient reaches every weight (or score)
        steps = iterations - start
        return [flops.Segment(steps, flops.densities(pruning.counts(mask)), steps)]
    if "mask_updates" not in facts:
        return fixed_mask(mask, iterations - start)
    if method != "gmp":
        dense_steps = facts["mask_updates"] if method == "rigl" else 0
        final = flops.densities(pruning.counts(mask))
        return [flops.Segment(iterations - start, final, dense_steps)]
    totals = {name: total for name, (_, total) in pruning.counts(mask).items()}
    bounds = [start, *(t + 1 for t in facts["mask_update_steps"]), iterations]
    densities = [{}] + [
        {name: kept[i] / totals[name] for name, kept in facts["update_layers"].items()}
        for i in range(len(facts["mask_update_steps"]))
    ]
    return [
        flops.Segment(end - begin, density)
        for begin, end, density in zip(bounds[:-1], bounds[1:], densities, strict=True)
        if end > begin
    ]
