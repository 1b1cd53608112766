"""How far two masks agree: the Jaccard index of the weights they keep, per prunable layer
and pooled over the layers, beside what two random masks of the same per-layer counts give.

For comparing masks that different methods find for one network at one sparsity (an IMP
ticket and a learned, pruned-at-initialization or sparse-training mask, or two IMP tickets):
the Jaccard index (Jaccard 1901, "Étude comparative de la distribution florale dans une
portion des Alpes et du Jura") of the sets of kept weights A and B is ``|A ∩ B| / |A ∪ B|``:
1 where the masks keep the same weights, 0 where they share none. Two empty sets count as
equal (J = 1), so a layer both masks empty agrees. The pooled index sums intersections and
unions over the layers (weights, not layers, count alike), so it is not the mean of the
per-layer indices.

Chance: two masks drawn at random with the kept counts a and b of a layer of n weights share
a·b/n weights on average (the hypergeometric mean), so a value near the ratio of expectations
``(a·b/n) / (a + b - a·b/n)`` says the masks agree no more than chance does (at 10% kept in
both, about 0.053); it is pooled the same way, from the layers' expectations.

Pure functions of arrays (numpy); no file is read.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

import numpy as np

from ltcli.core.pytrees import Mask
from ltcli.science import pruning


@dataclasses.dataclass(frozen=True)
class Overlap:
    """Two masks' agreement over some weights (one layer, or several pooled).

    Attributes:
      intersection: weights both masks keep, ``|A ∩ B|``.
      kept_a: weights the first mask keeps, ``|A|``.
      kept_b: weights the second mask keeps, ``|B|``.
      weights: weights covered (the layers' sizes).
      chance_intersection: the mean ``|A ∩ B|`` of random masks with the same kept counts in
        each layer (``Σ a·b/n`` over the layers).
    """

    intersection: int
    kept_a: int
    kept_b: int
    weights: int
    chance_intersection: float

    @property
    def union(self) -> int:
        """Weights either mask keeps, ``|A ∪ B|``."""
        return self.kept_a + self.kept_b - self.intersection

    @property
    def jaccard(self) -> float:
        """``|A ∩ B| / |A ∪ B|``; 1.0 where both keep nothing."""
        return 1.0 if self.union == 0 else self.intersection / self.union

    @property
    def chance(self) -> float:
        """The Jaccard index random masks of the same per-layer counts give, as a ratio of
        expectations (see the module docstring); 1.0 where both keep nothing."""
        union = self.kept_a + self.kept_b - self.chance_intersection
        return 1.0 if union == 0 else self.chance_intersection / union


def layer_overlap(a: np.ndarray, b: np.ndarray) -> Overlap:
    """The `Overlap` of two masks of one layer (nonzero = kept).

    Raises:
      ValueError: the masks' shapes differ.
    """
    a, b = np.asarray(a) != 0, np.asarray(b) != 0
    if a.shape != b.shape:
        raise ValueError(f"masks of shapes {a.shape} and {b.shape} cannot be compared")
    kept_a, kept_b, n = int(a.sum()), int(b.sum()), int(a.size)
    return Overlap(
        intersection=int(np.count_nonzero(a & b)),
        kept_a=kept_a,
        kept_b=kept_b,
        weights=n,
        chance_intersection=kept_a * kept_b / n if n else 0.0,
    )


def prunable_shapes(mask: Mask) -> dict[str, tuple[int, ...]]:
    """``{name: shape}`` of the prunable kernels of `mask` (`pruning.layer_kind`): what two
    masks must share to be compared."""
    return {
        name: tuple(np.shape(leaf))
        for name, leaf in pruning.leaves(mask).items()
        if pruning.layer_kind(name) is not None
    }


def overlap(a: Mask, b: Mask) -> dict[str, Overlap]:
    """The `Overlap` of two masks (pytrees, or flat ``{"fc1/kernel": array}`` dicts) in each
    prunable kernel, in `a`'s order; leaves that are not prunable kernels are ignored.

    Raises:
      ValueError: the masks' prunable kernels differ in names or shapes (the masks are not
        of one model).
    """
    if prunable_shapes(a) != prunable_shapes(b):
        raise ValueError("the masks' prunable layers differ in names or shapes")
    flat_a, flat_b = pruning.leaves(a), pruning.leaves(b)
    return {name: layer_overlap(flat_a[name], flat_b[name]) for name in prunable_shapes(a)}


def pooled(layers: Iterable[Overlap]) -> Overlap:
    """The `Overlap` of several layers taken together: counts and expectations summed."""
    found = list(layers)
    return Overlap(
        intersection=sum(o.intersection for o in found),
        kept_a=sum(o.kept_a for o in found),
        kept_b=sum(o.kept_b for o in found),
        weights=sum(o.weights for o in found),
        chance_intersection=float(sum(o.chance_intersection for o in found)),
    )
