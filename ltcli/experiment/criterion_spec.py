"""The spec check of ``prune.criterion`` (Zhou et al. 2019's mask criteria,
`ltcli.science.criteria`): what it refuses (exit 2, before anything runs)."""

from __future__ import annotations

from ltcli.core.errors import UsageError
from ltcli.experiment.spec import Spec
from ltcli.science import criteria, pruning


def check(spec: Spec) -> None:
    """Refuses a criterion other than IMP's own with a method other than magnitude (the
    criteria rank the weights of the trained ticket IMP prunes), and one whose rule has no
    meaning under the run's N:M pattern (`criteria.refusal`).

    Raises:
      UsageError: naming the field.
    """
    criterion, method = spec["prune.criterion"], spec["prune.method"]
    if criterion == criteria.DEFAULT:
        return
    if method != "magnitude":
        raise UsageError(
            f"prune.criterion: {criterion} ranks the weights of the trained ticket IMP prunes "
            f"(Zhou et al. 2019; prune.method magnitude); prune.method {method} prunes by its "
            f"own rule: leave prune.criterion at {criteria.DEFAULT}"
        )
    if refused := criteria.refusal(criterion, pruning.parse_pattern(spec["prune.pattern"])):
        raise UsageError(refused)
