"""The spec check of sparse training (``prune.method`` gmp, static, set, rigl): which of its
fields apply to which method, and what it refuses (exit 2, before anything runs)."""

from __future__ import annotations

from ltcli.core.errors import UsageError
from ltcli.experiment.spec import Spec
from ltcli.science import pruning
from ltcli.science.methods import MASK_UPDATING, SPARSE_TRAINING

FIELDS = {
    "distribution": SPARSE_TRAINING,
    "update_every": MASK_UPDATING,
    "update_start": MASK_UPDATING,
    "update_end": MASK_UPDATING,
    "drop_fraction": ("set", "rigl"),
    "drop_anneal": ("set", "rigl"),
}
"""The ``prune`` fields of sparse training and the methods each applies to."""


def not_applying(method: str) -> list[str]:
    """The sparse-training fields that cannot change a run of `method` (left out of its
    descriptor, so their values never re-identify it)."""
    return [name for name, methods in FIELDS.items() if method not in methods]


def check(spec: Spec, iterations: int, every: int) -> None:
    """Refuses what sparse training cannot do: a layer budget with another method, a global
    or N:M strategy, and mask updates that do not fit in the training (GMP needs one
    pruning step after its start).

    Raises:
      UsageError: naming the field.
    """
    method = spec["prune.method"]
    if method not in SPARSE_TRAINING:
        if spec["prune.distribution"] != "uniform":
            raise UsageError(
                "prune.distribution: the layer budget of sparse training (prune.method gmp, "
                f"static, set, rigl); {method} prunes by its own rule"
            )
        return
    if spec["prune.strategy"] != "layerwise":
        raise UsageError(
            f"prune.strategy: {method} keeps each layer at its budget (prune.distribution); "
            'set it to "layerwise"'
        )
    if spec["prune.pattern"] != pruning.UNSTRUCTURED:
        raise UsageError(f"prune.pattern: {method} trains unstructured masks only")
    if method not in MASK_UPDATING:
        return
    start = round(spec["prune.update_start"] * iterations)
    end = round(spec["prune.update_end"] * iterations)
    if end - start < (every if method == "gmp" else 1):
        raise UsageError(
            f"prune.update_end: iteration {end} must come at least prune.update_every "
            f"({every}) after prune.update_start's {start}"
            + (", so that gmp prunes at least once" if method == "gmp" else "")
        )


def update_range(desc: dict, iterations: int) -> tuple[int, int]:
    """The iterations where a descriptor's mask updates start and end."""
    prune = desc["prune"]
    return round(prune["update_start"] * iterations), round(prune["update_end"] * iterations)
