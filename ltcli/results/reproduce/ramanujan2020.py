"""Ramanujan, Wortsman, Kembhavi, Farhadi & Rastegari 2020 ("What's Hidden in a Randomly
Weighted Neural Network?", CVPR 2020, arXiv:1911.13299) at laptop scale: edge-popup finds a
subnetwork of a random LeNet-300-100 on MNIST, checked against the same network trained
dense with the same optimizer.

The optimizer is that of the authors' ``simple_mnist_example.py`` (allenai/hidden-networks):
SGD, lr 0.1, momentum 0.9, weight decay 5e-4, cosine over 14 epochs, batch 64, each layer
keeping the top k = 50% of its scores (``--sparsity 0.5``). Every arm (`ARMS`) is a run of
its own from the shipped ``mnist-lenet`` spec:

- ``edge-popup``: ``prune.method = "edge-popup"`` to `K` over the paper's signed Kaiming
  constant weights (``prune.frozen_init`` auto); its level 0 is the same network trained
  dense under the same spec and optimizer, and is the dense arm of the claims;
- ``edge-popup-kn``: the same over Kaiming normal weights (``prune.frozen_init =
  "kaiming-normal"``, as ``simple_mnist_example.py`` draws them).

The paper's claim is about width and depth: a random network contains a subnetwork that
matches the dense trained one once the network is wide and deep enough (a Wide ResNet-50's
subnetwork matching a trained ResNet-34 on ImageNet, in its abstract), the gap closing as
networks grow; at LeNet-300-100's size lt expects edge-popup to fall short of dense
training, and says by how much. The generic parts are `zhou2019`'s.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from ltcli.experiment.spec import Spec
from ltcli.results.reproduce.arms import (
    CHANCE,
    DENSE,
    Arm,
    Claim,
    arm_specs,
    describe_arms,
    runner,
)

CHECKS = {"edge-popup-lenet": "mnist-lenet"}
"""Each claim check and the shipped spec its arms start from."""

K = 50.0
"""Percent of each layer's weights edge-popup keeps (``--sparsity 0.5``)."""

PAPER = {
    "data.validation": 5000,
    "train.optimizer": "sgd",
    "train.lr": 0.1,
    "train.momentum": 0.9,
    "train.weight_decay": 5e-4,
    "train.schedule": "cosine",
    "train.batch_size": 64,
    "train.iterations": "14ep",
    "train.eval_every": "1ep",
    "prune.strategy": "layerwise",
    "prune.method": "edge-popup",
    "prune.one_shot": [K],
    "run.replicates": 5,
    "run.controls": "",
}
"""``simple_mnist_example.py``'s defaults (``--lr 0.1 --momentum 0.9 --wd 0.0005
--epochs 14 --batch-size 64 --sparsity 0.5``, ``CosineAnnealingLR``), tested every epoch."""

SMALL = {"train.iterations": "2000it", "train.eval_every": "100it", "run.replicates": 1}
"""``--budget small``: 2,000 iterations (the cosine over them) and one replicate."""

ARMS = (
    Arm("edge-popup", "edge-popup, signed Kaiming constant", PAPER, SMALL, (DENSE, K)),
    Arm(
        "edge-popup-kn",
        "edge-popup, Kaiming normal",
        {**PAPER, "prune.frozen_init": "kaiming-normal"},
        SMALL,
        (K,),
    ),
)

_README = "Ramanujan et al. 2020, abstract; hidden-networks README (ImageNet)"
CLAIMS = (
    Claim(
        "edge-popup on random weights matches dense training",
        _README,
        "WRN-50 at 30%: 73.3 vs a trained ResNet-34",
        ("edge-popup", K),
        ("edge-popup", DENSE),
        or_equal=True,
    ),
    Claim(
        "edge-popup on random weights far above chance",
        "Ramanujan et al. 2020, abstract",
        f"above chance ({CHANCE:g}%)",
        ("edge-popup", K),
        floor=CHANCE,
    ),
    Claim(
        "signed Kaiming constant above Kaiming normal",
        _README,
        "ResNet-50 at 30%: 68.6 vs 61.7",
        ("edge-popup", K),
        ("edge-popup-kn", K),
    ),
)
"""The hidden-networks README's ImageNet table (30% of weights remaining, top-1 %): ResNet-50
61.7 (Kaiming normal) and 68.6 (signed Kaiming constant), Wide ResNet-50 67.9 and 73.3; the
abstract: the Wide ResNet-50's subnetwork "matches the performance of a ResNet-34 trained on
ImageNet"."""


def protocols(check: str, budget: str, settings: Iterable[str] = ()) -> dict[str, Spec]:
    """Each arm's spec for `lt reproduce CHECK --budget BUDGET --set ...`.

    Raises:
      UsageError: an unknown check or budget, or a bad assignment.
    """
    return arm_specs(check, budget, settings, CHECKS, ARMS)


def describe(check: str, budget: str, specs: Mapping[str, Spec]) -> list[str]:
    """What `run` runs, for stderr: the arms, and how the budget differs from the paper's."""
    return [
        f"checking Ramanujan et al. 2020 ({check}): edge-popup keeping {K:g}% of each layer "
        "of a random LeNet-300-100, against the same network trained dense (level 0)",
        *describe_arms(check, budget, specs, CHECKS, ARMS),
    ]


run = runner(protocols, ARMS, CLAIMS)
"""Runs every arm of a check through `launch.run` (finished cells are reused) and checks the
claims on their cells (`ltcli.results.reproduce.arms.runner`)."""
