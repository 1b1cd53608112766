"""A cell's cost, recorded in its metrics: its inference and training FLOPs as multiples of
the dense network's (`ltcli.science.flops`, RigL's counting), and its training FLOPs in all.

A cell trains from its start iteration to T under the mask it holds, so its schedule is one
`flops.Segment` (`fixed_mask`); a method whose mask changes while it trains passes its own
segments (one per mask state, with its dense-gradient update steps) to `cost_facts`.
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
