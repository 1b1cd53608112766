"""The spec check of the methods that train to each one-shot target: sparse training
(``prune.method`` gmp, static, set, rigl) and masks learned by gradient (ste, edge-popup,
supermask): which of their fields apply to which method, and what they refuse (exit 2,
before anything runs)."""

from __future__ import annotations

from ltcli.core.errors import UsageError
from ltcli.experiment.fields import FIELDS as SPEC_FIELDS
from ltcli.experiment.spec import Spec
from ltcli.science import pruning
from ltcli.science.methods import FROZEN_WEIGHTS, MASK_UPDATING, TRAINS_TO_TARGET

FIELDS = {
    "distribution": TRAINS_TO_TARGET,
    "update_every": MASK_UPDATING,
    "update_start": MASK_UPDATING,
    "update_end": MASK_UPDATING,
    "drop_fraction": ("set", "rigl"),
    "drop_anneal": ("set", "rigl"),
    "frozen_init": FROZEN_WEIGHTS,
    "srste_decay": ("ste",),
}
"""The ``prune`` fields of these methods and the methods each applies to."""

REFUSED_ELSEWHERE = ("distribution", "frozen_init", "srste_decay")
"""The fields of `FIELDS` that a spec of another method may not set (the others are left
out of its run id, as they always were)."""


def not_applying(method: str) -> list[str]:
    """The fields of `FIELDS` that cannot change a run of `method` (left out of its
    descriptor, so their values never re-identify it)."""
    return [name for name, methods in FIELDS.items() if method not in methods]


def check(spec: Spec, iterations: int, every: int) -> None:
    """Refuses what these methods cannot do: their fields with another method
    (`REFUSED_ELSEWHERE`), a global strategy, N:M but with ste, and mask updates that do not
    fit in the training (GMP needs one pruning step after its start).

    Raises:
      UsageError: naming the field.
    """
    method = spec["prune.method"]
    for name in REFUSED_ELSEWHERE:
        field, methods = f"prune.{name}", FIELDS[name]
        if method not in methods and spec[field] != SPEC_FIELDS[field].default:
            raise UsageError(
                f"{field} applies to prune.method {', '.join(methods)}; {method} prunes by "
                "its own rule"
            )
    if method not in TRAINS_TO_TARGET:
        return
    if spec["prune.strategy"] != "layerwise":
        raise UsageError(
            f"prune.strategy: {method} keeps each layer at its budget (prune.distribution); "
            'set it to "layerwise"'
        )
    if spec["prune.pattern"] != pruning.UNSTRUCTURED and method != "ste":
        raise UsageError(
            f"prune.pattern: {method} trains unstructured masks only (ste learns N:M masks)"
        )
    if method == "supermask" and spec["prune.distribution"] != "uniform":
        raise UsageError(
            "prune.distribution: a supermask starts every layer at one density (Zhou et al. "
            'start every score at one constant); use "uniform"'
        )
    learned_n_m = method == "ste" and spec["prune.pattern"] != pruning.UNSTRUCTURED
    if learned_n_m and (spec["prune.distribution"] != "uniform" or spec["prune.exclude"]):
        raise UsageError(
            "prune.pattern: an N:M ste mask keeps N of every M in each learned layer; a layer "
            "budget (prune.distribution, prune.exclude) cannot change that"
        )
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
