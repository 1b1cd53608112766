"""What every cell starts from: the one table of lt's feature combinations.

Features multiply: pruning method x retraining mode x rewind point (0 or k) x pruning
schedule (IMP, one one-shot target, several) x member (ticket, reinit, random, shuffle,
invert, stability, spawn, rewind, sign, signed_reinit). `inputs` says, for each combination,
where a cell's weights start, where its mask comes from, at which schedule step and data
position it starts, and in which data order; `refusal` names the combinations no paper
defines, which the spec check refuses (exit 2). The runner materializes these answers and
nothing else. The documentation's Combinations table (docs/combinations.md) is generated
from this module when the site is built (docs/hooks.py puts every combination to `refusal`,
`member_refusal` and `inputs`), so it states the same, row for row; tests/test_docs.py
checks that every combination is in exactly one row. No JAX here: the spec check uses it.

Sources (their meaning in the papers):
- weights: ``theta0`` (the replicate's initialization), ``theta_k`` (its dense network at
  iteration k, captured while level 0 trained: late rewinding, Frankle et al. 2020),
  ``fresh`` (a new initialization: the 2019 reinit control), ``trained_previous`` /
  ``trained_dense`` (the trained ticket of level L-1 / of level 0: learning-rate rewinding
  and fine-tuning, Renda et al. 2020, which one-shot retraining takes from the network its
  mask was pruned from), ``ticket_at_k`` (a spawned copy: the dense ticket's whole state at
  iteration k, bit for bit), ``signed_constant`` (θ0's, or θk's, signs times each layer's
  standard deviation there: Zhou et al. 2019's "constant, init sign", the sign control),
  ``fresh_signed`` (a new initialization's magnitudes with θ0's, or θk's, signs: their
  "reinit, init sign", the signed_reinit control; `ltcli.science.criteria`).
- masks: ``dense``; ``imp`` (magnitude of level L-1's trained ticket, IMP, or the score
  ``prune.criterion`` names, Zhou et al. 2019); ``one_shot`` (the same of level 0's trained
  ticket); ``scores`` (a pruning-at-initialization method's
  scores of the network the level trains from: θ0, or θk, "pruning early in training",
  Frankle et al. 2021); ``ticket`` (the level's ticket mask); ``random`` (a random mask with
  the ticket's per-layer counts: random and shuffle); ``inverted`` (the method's lowest
  scores of the same network, same total); for sparse training (`SPARSE_TRAINING`, one
  training job per one-shot target), the ticket's own mask as it starts: ``gmp`` (dense,
  pruned by magnitude to the target while it trains), ``budget`` (random at the layer
  budget, fixed: static), ``drop_grow`` (random at the layer budget, then dropped and
  regrown while it trains: SET, RigL); for masks learned by gradient (`LEARNED_MASKS`, one
  training job per one-shot target too), ``learned`` (dense at the start; each step's
  forward keeps the mask the method computes: `ltcli.science.learned_masks`); and ``final``
  (the mask the level's ticket ended with: its lottery controls, which train after it).
"""

from __future__ import annotations

import dataclasses

from ltcli.experiment.member import SPAWN, Member
from ltcli.science.methods import LEARNED_MASKS, MASK_UPDATING, TRAINS_TO_TARGET

SCHEDULES = ("imp", "one-shot", "several")
"""IMP (``prune.one_shot`` unset), one one-shot target, several one-shot targets."""


@dataclasses.dataclass(frozen=True)
class Inputs:
    """Where a cell of a level starts.

    Attributes:
      weights: the weights' source (see the module docstring); the cell starts from them
        under `mask`.
      mask: the mask's source.
      schedule_step: the learning-rate schedule's step at the cell's first iteration.
      data_position: the iteration whose batch the cell trains on first (its data stream
        continues from position ``data_position x batch``).
      data_order: ``replicate`` (the replicate's data order), ``own`` (a stability copy's
        from its first step), or ``own_after_k`` (a spawned copy: the replicate's until k).
    """

    weights: str
    mask: str
    schedule_step: int
    data_position: int
    data_order: str = "replicate"


def schedule_of(one_shot_targets: tuple[float, ...]) -> str:
    """The pruning schedule of a run with these one-shot targets (none: IMP)."""
    return (
        "imp" if not one_shot_targets else "one-shot" if len(one_shot_targets) == 1 else "several"
    )


def refusal(method: str, retrain: str, schedule: str) -> str | None:
    """Why a combination of method, retraining mode and schedule is refused, or None.

    Pruning at initialization prunes once (it needs one-shot targets) and its cells train
    from the network it scored; retraining trained weights under such a mask is no longer
    pruning at initialization.
    """
    if method == "magnitude":
        return None
    if method in TRAINS_TO_TARGET:
        if schedule == "imp":
            return (
                f"prune.method: {method} trains once to each target sparsity: give its "
                "targets with prune.one_shot (--one-shot 10,2)"
            )
        if retrain != "rewind":
            return (
                f"prune.retrain: {retrain} would retrain trained weights, but {method} "
                "trains each level from θ0 to its target; train its final mask again with "
                'the rewind control (run.controls rewind:1) and prune.retrain = "rewind"'
            )
        return None
    if schedule == "imp":
        return (
            f"prune.method: {method} prunes at initialization, once: give its targets with "
            "prune.one_shot (--one-shot 50,20,5)"
        )
    if retrain != "rewind":
        return (
            f"prune.retrain: {retrain} would start each level from trained weights under the "
            f"mask prune.method {method} scored on the network before training, which is no "
            'longer pruning at initialization; with that method use prune.retrain = "rewind"'
        )
    return None


def member_refusal(method: str, member_kind: str) -> str | None:
    """Why a control kind is refused for a method, or None."""
    if member_kind == "invert" and (method == "magnitude" or method in TRAINS_TO_TARGET):
        return (
            "run.controls: invert keeps the lowest-scored weights of a pruning-at-"
            "initialization method (prune.method snip, grasp, synflow, ...)"
        )
    if member_kind == "rewind" and method not in TRAINS_TO_TARGET:
        return (
            "run.controls: rewind trains a sparse-training or learned ticket's final mask "
            "from θ0 (θk) (prune.method gmp, static, set, rigl, ste, edge-popup, supermask); "
            f"with {method} the ticket is that already"
        )
    if member_kind == "stability" and (method in MASK_UPDATING or method in LEARNED_MASKS):
        return (
            f"run.controls: stability compares two networks under one mask; {method}'s "
            "mask changes as the ticket trains, so a copy with another data order ends "
            "under another mask"
        )
    if member_kind in SIGN_CONTROLS and method != "magnitude":
        return (
            f"run.controls: {member_kind} is Zhou et al. 2019's control of an IMP ticket "
            f"(prune.method magnitude); a {method} ticket has none such"
        )
    return None


def inputs(
    *,
    method: str,
    retrain: str,
    rewind: int,
    iterations: int,
    schedule: str,
    member: Member,
    level: int,
) -> Inputs:
    """The inputs of `member` at `level` under a combination that `refusal` accepts.

    Args:
      method: ``prune.method``.
      retrain: ``prune.retrain``.
      rewind: ``prune.rewind_iter`` k in iterations (0: rewind to θ0).
      iterations: T.
      schedule: one of `SCHEDULES`.
      member: the cell's member (spawned copies at level 0, every other control at L >= 1).
      level: the cell's level.
    """
    if level == 0:
        if member.kind == SPAWN:
            k = member.index
            return Inputs("ticket_at_k", "dense", k, k, "own_after_k")
        return Inputs("theta0", "dense", 0, 0)
    rewound = "theta_k" if rewind else "theta0"
    if method in TRAINS_TO_TARGET:
        return _sparse_training(method, rewound, rewind, member)
    if method != "magnitude":
        ticket_mask = "scores"
    elif schedule == "imp":
        ticket_mask = "imp"
    else:
        ticket_mask = "one_shot"
    kind = member.kind
    if kind in ("ticket", "stability"):
        weights = rewound
        if retrain != "rewind":
            weights = "trained_previous" if schedule == "imp" else "trained_dense"
        step = iterations if retrain == "finetune" else rewind
        order = "own" if kind == "stability" else "replicate"
        return Inputs(weights, ticket_mask, step, rewind, order)
    masks = {"reinit": "ticket", "random": "random", "shuffle": "random", "invert": "inverted"}
    masks |= dict.fromkeys(SIGN_CONTROLS, "ticket")
    weights = {"reinit": "fresh", **SIGN_CONTROLS}.get(kind, rewound)
    return Inputs(weights, masks[kind], rewind, rewind)


SIGN_CONTROLS = {"sign": "signed_constant", "signed_reinit": "fresh_signed"}
"""Zhou et al. 2019's controls of an IMP ticket and their weight sources: the ticket's mask
from its rewind point's signs (`ltcli.science.criteria`)."""


TICKET_MASKS = {
    "gmp": "gmp",
    "static": "budget",
    "set": "drop_grow",
    "rigl": "drop_grow",
    **dict.fromkeys(LEARNED_MASKS, "learned"),
}
"""The mask a sparse-training or learned-mask ticket starts with, by method."""


def _sparse_training(method: str, rewound: str, rewind: int, member: Member) -> Inputs:
    """A sparse-training or learned-mask level's cells: the ticket trains from θ0 at step 0
    to its target (its mask `TICKET_MASKS`); the controls train the mask it ended with
    (``final``) from θ_r (``rewind``: a lottery ticket of it), a fresh initialization
    (``reinit``), or a random mask of its per-layer counts from θ_r (``random``,
    ``shuffle``), all at k."""
    kind = member.kind
    if kind in ("ticket", "stability"):
        order = "own" if kind == "stability" else "replicate"
        return Inputs("theta0", TICKET_MASKS[method], 0, 0, order)
    masks = {"reinit": "final", "rewind": "final", "random": "random", "shuffle": "random"}
    weights = "fresh" if kind == "reinit" else rewound
    return Inputs(weights, masks[kind], rewind, rewind)
