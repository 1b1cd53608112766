"""``lt reproduce FIGURE``: rerun a figure of Frankle & Carbin (ICLR 2019), check its claims and
draw it with the paper's points. A thin Click command over `ltcli.results.reproduce`.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from ltcli.cli import outputs
from ltcli.cli.options import DATA_DIR_OPTION, STORE_OPTION, LtGroup
from ltcli.cli.progress import CliProgress
from ltcli.core.paths import default_store
from ltcli.results import reproduce as reproducing
from ltcli.storage.store import Store


@click.command()
@click.argument(
    "figure",
    metavar="FIGURE",
    type=click.Choice([*reproducing.FIGURES, *reproducing.ARM_CHECKS]),
)
@click.option(
    "--budget",
    type=click.Choice(reproducing.BUDGETS),
    default="paper",
    show_default=True,
    help="paper: the paper's protocol. small: a reduced one (fewer rounds, replicates, "
    "controls and iterations; every cut is printed on stderr).",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Figure file in an existing folder; its suffix picks the format, like .png, .pdf, "
    ".svg (default: reproduce-FIGURE.png). Checked before anything trains.",
)
@click.option(
    "--set",
    "settings",
    multiple=True,
    metavar="KEY=VALUE",
    help="Set any spec field on top of the budget, like --set run.replicates=3 "
    "(repeatable; printed as a difference from the paper's protocol).",
)
@STORE_OPTION
@DATA_DIR_OPTION
def reproduce(
    figure: str,
    budget: str,
    output: Path | None,
    settings: tuple[str, ...],
    store: Path | None,
    data_dir: Path | None,
) -> None:
    """Reproduce FIGURE of Frankle & Carbin, "The Lottery Ticket Hypothesis" (ICLR 2019),
    or check sparse training, supermasks or edge-popup against their papers' claims.

    \b
    FIGURE is one of:
      lenet            LeNet-300-100 on MNIST (Figures 3 and 4)
      conv2            Conv-2 on CIFAR-10 (Figure 5)
      resnet20-warmup  ResNet-20 on CIFAR-10, lr 0.03 with warmup (Figure 8)
      sparse-lenet     static, SET, RigL (uniform and ERK), GMP and IMP on LeNet-300-100
                       at 90% and 98% sparsity (Evci et al. 2020; Gale et al. 2019)
      supermask-lenet  a supermask learned over θ0 of LeNet-300-100, and the mask
                       criteria's ranking at 20% and 5% (Zhou et al. 2019)
      edge-popup-lenet edge-popup on a random LeNet-300-100 at k=50% against the same
                       network trained dense (Ramanujan et al. 2020)

    Runs the paper's protocol through the store (finished cells are reused: a rerun trains
    nothing), prints the per-level table and a table of the paper's claims for the figure
    (lt's measure with its spread over replicates, the paper's number, held / not held / not
    reached), and draws the figure with the paper's reported points as black stars.
    sparse-lenet, supermask-lenet and edge-popup-lenet run one run per arm and print each
    arm's accuracy at each target (sparse-lenet: and training FLOPs), then the claims; they
    draw no figure.
    """
    if figure in reproducing.ARM_CHECKS:
        if output is not None:
            raise click.UsageError(f"{figure} draws no figure: drop --output")
        paper = reproducing.ARM_CHECKS[figure]
        for line in paper.describe(figure, budget, paper.protocols(figure, budget, settings)):
            click.echo(line, err=True)
        checked = paper.run(
            figure,
            budget,
            Store(store or default_store()),
            settings=settings,
            data_dir=data_dir,
            progress=lambda s: CliProgress(s["run.rounds"]),
        )
        click.echo(checked.text)
        return
    proto = reproducing.protocol(figure, budget, settings)
    figure_path = outputs.check_output(
        output or Path(f"reproduce-{proto.figure}.png"), outputs.image_suffixes(), kind="image type"
    )
    for line in reproducing.describe(proto):
        click.echo(line, err=True)
    target = Store(store or default_store())
    result = reproducing.run(
        proto,
        target,
        data_dir=data_dir,
        output=figure_path,
        progress=CliProgress(proto.spec["run.rounds"]),
    )
    click.echo(result.text)
    click.echo(f"wrote {result.figure}", err=True)


def main() -> None:
    """``python -m ltcli.cli.reproduce_command FIGURE ...``: the command on its own, with lt's
    exit codes."""
    LtGroup(commands={"reproduce": reproduce})(["reproduce", *sys.argv[1:]], "lt")


if __name__ == "__main__":
    main()
