"""Zhou, Lan, Liu & Yosinski 2019 ("Deconstructing Lottery Tickets: Zeros, Signs, and the
Supermask", NeurIPS 2019, arXiv:1905.01067) at laptop scale: a supermask learned over θ0 of
LeNet-300-100 on MNIST, and their ranking of mask criteria, each checked by lt.

Every arm (`ARMS`) is a run of its own from the same shipped spec (``mnist-lenet``):

- ``supermask``: ``prune.method = "supermask"`` over θ0 (``prune.frozen_init`` auto: the
  model's own initialization), with the optimizer of the authors' ``train_supermask.py``
  README command (uber-research/deconstructing-lottery-tickets: ``--opt sgd --lr 100``,
  momentum 0.9 and batch 250 by its defaults, ``--num_epochs 2000``); its one-shot target
  (`SUPERMASK_START`) only sets the start density, sigmoid(scores) = 0.5 as their
  ``--sigmoid_bias 0``; the mask learns its own. The run's level 0 trains the dense network
  with that learning rate of 100 and diverges: nothing reads it (a learned mask starts from
  θ0, not from level 0), so the supermask is read at level 1 and the dense network comes
  from the criterion arms, trained with their own optimizer.
- one arm per mask criterion (`CRITERIA`): one-shot magnitude pruning of the trained dense
  network (level 0) to each of `TARGETS`, keeping the survivors the criterion ranks first,
  rewound to θ0 (``prune.criterion``), with the FC protocol of their ``print_train_command.sh``
  (Adam, lr 0.0012, batch 60, 55 epochs; Frankle & Carbin's). The paper's criteria figure
  prunes iteratively; lt checks the ranking one-shot (every criterion's level prunes the
  same trained network, so the ranking is of the criteria alone).

A claim (`CLAIMS`) is held, not held, or not reached (an arm has no level at its target, or
every cell there diverged); `ltcli.results.reproduce.arms` reads, checks and prints them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from ltcli.experiment.spec import Spec
from ltcli.results.reproduce.arms import (
    DENSE,
    Arm,
    Claim,
    arm_specs,
    describe_arms,
    runner,
)

CHECKS = {"supermask-lenet": "mnist-lenet"}
"""Each claim check and the shipped spec its arms start from."""

TARGETS = (20.0, 5.0)
"""Percents of weights remaining the criteria are compared at (one-shot levels 1 and 2)."""

SUPERMASK_START = 50.0
"""The supermask's start density: scores start at logit(0.5) = 0, as their
``--sigmoid_bias`` default of 0."""

CRITERIA = ("large_final", "magnitude_increase", "large_init", "small_final", "random")
"""The mask criteria the ranking claims name (``prune.criterion``)."""

PAPER_SUPERMASK = 86.0
"""Test accuracy (%) of a supermask on MNIST in the paper's abstract: "masks that can be
applied to an untrained, randomly initialized network to produce a model with performance far
better than chance (86% on MNIST, 41% on CIFAR-10)". That number is of a mask derived from
the trained network (large_final, θ0's signs), not learned; it is the bar a learned supermask
is checked against. The paper's table value for the learned supermask on FC could not be
confirmed from the sources at hand, so lt does not print one."""

_FC = {
    "data.validation": 5000,
    "train.optimizer": "adam",
    "train.lr": 1.2e-3,
    "train.batch_size": 60,
    "train.iterations": "55ep",
    "train.eval_every": "1ep",
    "prune.strategy": "layerwise",
    "run.replicates": 5,
    "run.controls": "",
}
"""The FC protocol of the authors' ``print_train_command.sh`` (``fc``: Adam, lr 0.0012,
55 epochs; ``train.py``'s batch 60), evaluated every epoch as their ``--eval_every 1``."""

_SUPERMASK = {
    **_FC,
    "train.optimizer": "sgd",
    "train.lr": 100.0,
    "train.momentum": 0.9,
    "train.batch_size": 250,
    "train.iterations": "2000ep",
    "prune.method": "supermask",
    "prune.one_shot": [SUPERMASK_START],
}
"""``train_supermask.py`` as its README runs it: ``--opt sgd --lr 100 --num_epochs 2000``,
momentum 0.9 and batch 250 by default (``--mom``, ``--train_batch_size``)."""

SMALL = {"train.iterations": "2000it", "train.eval_every": "100it", "run.replicates": 1}
"""``--budget small``: 2,000 iterations and one replicate per arm (every cut is printed)."""


ARMS = (
    Arm("supermask", "supermask over θ0", _SUPERMASK, SMALL, (SUPERMASK_START,), learned=True),
    *(
        Arm(
            c,
            f"one-shot, {c}",
            {**_FC, "prune.one_shot": list(TARGETS), "prune.criterion": c},
            SMALL,
            (DENSE, *TARGETS) if c == "large_final" else TARGETS,
        )
        for c in CRITERIA
    ),
)


_FIG = "Zhou et al. 2019, §3 and Figure 2 (FC, MNIST)"
_RANKING = (
    ("large_final", "random", "large_final above random", "above"),
    ("magnitude_increase", "random", "magnitude_increase above random", "above"),
    ("large_final", "large_init", "large_final above large_init", "above"),
    ("random", "small_final", "small_final below random", "below"),
)
CLAIMS = (
    Claim(
        "learned supermask over θ0 far above chance",
        "Zhou et al. 2019, abstract",
        f"{PAPER_SUPERMASK:g}% (a derived supermask)",
        ("supermask", SUPERMASK_START),
        floor=PAPER_SUPERMASK,
    ),
    *(
        Claim(f"{says} at {t:g}%", _FIG, direction, (a, t), (b, t))
        for a, b, says, direction in _RANKING
        for t in TARGETS
    ),
)


def protocols(check: str, budget: str, settings: Iterable[str] = ()) -> dict[str, Spec]:
    """Each arm's spec for `lt reproduce CHECK --budget BUDGET --set ...`.

    Raises:
      UsageError: an unknown check or budget, or a bad assignment.
    """
    return arm_specs(check, budget, settings, CHECKS, ARMS)


def describe(check: str, budget: str, specs: Mapping[str, Spec]) -> list[str]:
    """What `run` runs, for stderr: the arms, and how the budget differs from the paper's."""
    return [
        f"checking Zhou et al. 2019 ({check}): a supermask learned over θ0 (start density "
        f"{SUPERMASK_START:g}%); one-shot pruning to {', '.join(f'{t:g}%' for t in TARGETS)} "
        f"by the criteria {', '.join(CRITERIA)}, rewound to θ0",
        *describe_arms(check, budget, specs, CHECKS, ARMS),
    ]


run = runner(protocols, ARMS, CLAIMS)
"""Runs every arm of a check through `launch.run` (finished cells are reused) and checks the
claims on their cells (`ltcli.results.reproduce.arms.runner`)."""
