"""What every cell starts from: the one table of lt's feature combinations.

Features multiply: pruning method x retraining mode x rewind point (0 or k) x pruning
schedule (IMP, one one-shot target, several) x member (ticket, reinit, random, shuffle,
invert, stability, spawn). `inputs` says, for each combination, where a cell's weights
start, where its mask comes from, at which schedule step and data position it starts, and
in which data order; `refusal` names the combinations no paper defines, which the spec check
refuses (exit 2). The runner materializes these answers and nothing else. The
documentation's Combinations table (docs/combinations.md) is generated from this module when
the site is built (docs/hooks.py puts every combination to `refusal`, `member_refusal` and
`inputs`), so it states the same, row for row; tests/test_docs.py checks that every
combination is in exactly one row. No JAX here: the spec check uses it.

Sources (their meaning in the papers):
- weights: ``theta0`` (the replicate's initialization), ``theta_k`` (its dense network at
  iteration k, captured while level 0 trained: late rewinding, Frankle et al. 2020),
  ``fresh`` (a new initialization: the 2019 reinit control), ``trained_previous`` /
  ``trained_dense`` (the trained ticket of level L-1 / of level 0: learning-rate rewinding
  and fine-tuning, Renda et al. 2020, which one-shot retraining takes from the network its
  mask was pruned from), ``ticket_at_k`` (a spawned copy: the dense ticket's whole state at
  iteration k, bit for bit).
- masks: ``dense``; ``imp`` (magnitude of level L-1's trained ticket, IMP); ``one_shot``
  (magnitude of level 0's trained ticket); ``scores`` (a pruning-at-initialization method's
  scores of the network the level trains from: θ0, or θk, "pruning early in training",
  Frankle et al. 2021); ``ticket`` (the level's ticket mask); ``random`` (a random mask with
  the ticket's per-layer counts: random and shuffle); ``inverted`` (the method's lowest
  scores of the same network, same total).
"""

from __future__ import annotations

import dataclasses

from ltcli.experiment.member import SPAWN, Member

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
    if member_kind == "invert" and method == "magnitude":
        return (
            "run.controls: invert keeps the lowest-scored weights of a pruning-at-"
            "initialization method (prune.method snip, grasp, synflow, ...)"
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
    weights = "fresh" if kind == "reinit" else rewound
    return Inputs(weights, masks[kind], rewind, rewind)
