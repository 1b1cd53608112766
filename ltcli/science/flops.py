"""FLOPs of sparse networks, counted as RigL counts them (Evci et al. 2020, "Rigging the
Lottery: Making All Tickets Winners", ICML 2020, its appendix on FLOPs; code:
google-research/rigl, ``rigl/sparse_utils.py`` ``get_stats``, which counts with
``micronet_challenge/counting.py`` of google-research/google-research, and the colab
``rigl/imagenet_resnet/colabs/Resnet_50_Param_Flops_Counting.ipynb``).

Pure functions over numbers: a network is a mapping ``{layer: dense forward FLOPs for one
example}`` (`ltcli.models.flop_trace.layer_flops` derives it from a model), a mask's state is a
mapping ``{layer: density}`` (its active fraction of weights; a layer not named is dense).

Conventions (compared with ``counting.count_ops`` as ``get_stats`` calls it):

- A weight layer (a dense or convolutional kernel) costs, per example, 2 FLOPs per
  multiply-add: one multiplication and one addition per weight and output position, as
  ``count_ops`` counts a dot product of n terms (n multiplications, n - 1 additions, plus
  the bias addition). Its sparse cost scales with its density (``count_ops``'s
  ``vector_length * (1 - sparsity)``): only active weights multiply.
- Not counted: biases, batch norm, activations, pooling, softmax, LayerNorm, embedding
  lookups, the loss. ``count_ops`` adds one operation per output unit for the ReLU (and
  the bias addition that completes the dot product's n - 1 additions to n); we leave the
  activation out, a share of 1 / (2 x fan-in) of a layer's count (LeNet-300-100: 410 of
  532,400 FLOPs, under 0.1%).
- A product of two activations (a transformer's attention scores and their weighted sum of
  values) has no weights to prune, so it costs its dense FLOPs at every density (a layer
  of `layer_flops` that no mask names). RigL's networks have none.

Training (the paper's appendix): a step of a network at forward cost f costs 3 f: the
forward pass, the gradient with respect to the activations and the gradient with respect to
the weights, each as costly as the forward pass. Sparse (static, SET, a pruned ticket): 3
f_S per step; dense: 3 f_D. At a RigL update step the weight gradient is dense: 2 f_S + f_D,
so RigL averages (3 f_S ΔT + 2 f_S + f_D) / (ΔT + 1) per step. Dense-to-sparse methods (GMP)
pay each step at the density in force then. Counted per layer, so layers of different
densities (ERK) are exact. The mask update's own selection (ranking magnitudes or gradients
once every ΔT steps, of the order of the weights' count) is not counted: the colab's pruning
count averages ``get_stats`` over the density schedule and adds nothing for the updates.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import NamedTuple

PASSES = 3
"""Forward, gradient to the activations, gradient to the weights (each costs a forward)."""


class Segment(NamedTuple):
    """`steps` training steps at one mask state: each layer's `density` (a layer not named
    is dense) and how many of those steps compute the dense weight gradient (RigL's update
    steps; 0 for every other method)."""

    steps: int
    density: Mapping[str, float]
    dense_grad_steps: int = 0


def densities(counts: Mapping[str, Sequence[int]]) -> dict[str, float]:
    """``{layer: kept / total}`` from a mask's counts (`ltcli.science.pruning.counts`, or a
    stored cell's ``layers``: ``{"fc1/kernel": [kept, total]}``)."""
    return {name: kept / total for name, (kept, total) in counts.items()}


def forward_flops(
    layer_flops: Mapping[str, float], density: Mapping[str, float] | None = None
) -> float:
    """FLOPs of one example's forward pass with each layer at its `density` (None: dense).

    Raises:
      ValueError: `density` names a layer that `layer_flops` lacks.
    """
    density = density or {}
    if unknown := sorted(set(density) - set(layer_flops)):
        raise ValueError(f"densities of layers the network lacks: {', '.join(unknown)}")
    return float(sum(f * density.get(name, 1.0) for name, f in layer_flops.items()))


def inference_flops(layer_flops: Mapping[str, float], density: Mapping[str, float]) -> float:
    """The forward FLOPs at `density` as a multiple of the dense network's (RigL's
    "inference FLOPs", e.g. 0.42x for its 80% sparse ERK ResNet-50)."""
    return forward_flops(layer_flops, density) / forward_flops(layer_flops)


def step_flops(
    layer_flops: Mapping[str, float], density: Mapping[str, float], dense_grad: bool = False
) -> float:
    """FLOPs of one training step for one example: 3 f_S, or with `dense_grad` (a RigL
    update step) 2 f_S + f_D."""
    sparse = forward_flops(layer_flops, density)
    if dense_grad:
        return (PASSES - 1) * sparse + forward_flops(layer_flops)
    return PASSES * sparse


def training_flops(layer_flops: Mapping[str, float], segments: Sequence[Segment]) -> float:
    """A training run's FLOPs as a multiple of dense training over the same steps (and
    batch, which cancels): the sum over `segments` of their steps' FLOPs, over 3 f_D per
    step. A fixed mask is one segment (the ratio is then its `inference_flops`); RigL at a
    fixed density is one segment with ``dense_grad_steps`` = its number of updates; GMP is
    one segment per interval between pruning steps.

    Raises:
      ValueError: no steps, a negative count, or more dense-gradient steps than steps.
    """
    total = sum(s.steps for s in segments)
    if total <= 0 or any(s.steps < 0 or not 0 <= s.dense_grad_steps <= s.steps for s in segments):
        raise ValueError(
            "training_flops: segments need steps >= 0 (in all > 0) and 0 <= dense_grad_steps "
            "<= steps"
        )
    spent = sum(
        (s.steps - s.dense_grad_steps) * step_flops(layer_flops, s.density)
        + s.dense_grad_steps * step_flops(layer_flops, s.density, dense_grad=True)
        for s in segments
    )
    return spent / (total * PASSES * forward_flops(layer_flops))


def dense_training_flops(layer_flops: Mapping[str, float], steps: int, batch: int) -> float:
    """Absolute FLOPs of `steps` dense training steps of `batch` examples: 3 f_D per example.
    A cell's absolute training FLOPs are this times its `training_flops`; runs of different
    lengths (RigL's "5x" runs, a `--iterations` multiple) compare on these."""
    return PASSES * forward_flops(layer_flops) * steps * batch
