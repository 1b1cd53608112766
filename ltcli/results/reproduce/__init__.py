"""``lt reproduce``: a paper's figure rerun through `ltcli.train.launch`, its claims checked
against the store, and the figure drawn with the paper's own points over it.

One module per paper (`frankle2019`: Frankle & Carbin, ICLR 2019) holds its figures'
protocols and its claims as data; `evci2020` checks sparse training against lottery tickets
(Evci et al. 2020, Gale et al. 2019), one run per method; `zhou2019` (a learned supermask
and the mask criteria, Zhou et al. 2019) and `ramanujan2020` (edge-popup against dense
training) likewise run one run per arm (`ARM_CHECKS`); the parts every paper shares are
kept apart so each can be read and tested alone: `protocols` (a figure's spec at a budget,
and every cut from the paper's), `measures` (a run's cells as numbers per level and
replicate, and what a claim measures), `verdicts` (a claim checked against a run, and the
table of them). `run` ties them together.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ltcli.experiment.plan import Progress
from ltcli.results import report
from ltcli.results.reproduce import evci2020, ramanujan2020, zhou2019
from ltcli.results.reproduce.evci2020 import CHECKS as SPARSE_CHECKS
from ltcli.results.reproduce.evci2020 import describe as describe_sparse
from ltcli.results.reproduce.evci2020 import protocols as sparse_protocols
from ltcli.results.reproduce.evci2020 import run as check_sparse
from ltcli.results.reproduce.frankle2019 import (
    FIGURES,
    accuracy_field,
    claims_table,
    curve_levels,
    describe,
    evaluate,
    overlay_points,
    paper_data,
    protocol,
)
from ltcli.results.reproduce.measures import MEASURES, Measurements
from ltcli.results.reproduce.protocols import BUDGETS, Protocol, protocol_cells
from ltcli.results.reproduce.verdicts import (
    ACCURACY,
    HELD,
    NOT_HELD,
    ClaimResult,
    claim_rows,
    evaluate_claim,
)
from ltcli.storage.store import Store
from ltcli.train import launch

__all__ = [
    "ACCURACY",
    "ARM_CHECKS",
    "BUDGETS",
    "FIGURES",
    "HELD",
    "MEASURES",
    "NOT_HELD",
    "SPARSE_CHECKS",
    "Measurements",
    "Protocol",
    "Reproduction",
    "check_sparse",
    "claim_rows",
    "claims_table",
    "describe",
    "describe_sparse",
    "evaluate",
    "evaluate_claim",
    "overlay_points",
    "paper_data",
    "protocol",
    "protocol_cells",
    "reproduce",
    "run",
    "sparse_protocols",
]

ARM_CHECKS = {
    name: module for module in (evci2020, zhou2019, ramanujan2020) for name in module.CHECKS
}
"""The checks that run one run per arm and draw no figure, each to its paper's module: its
``protocols(check, budget, settings)``, ``describe(check, budget, specs)`` (stderr lines) and
``run(check, budget, store, ...)`` (whose ``text`` is the tables)."""

SIZE, DPI = (1500, 500), 100
"""The figure's size in pixels, and its resolution."""


@dataclasses.dataclass(frozen=True)
class Reproduction:
    """What `reproduce` did: the protocol, the run, the claims and the figure it wrote."""

    protocol: Protocol
    run_id: str
    results: list[ClaimResult]
    text: str
    """The per-level table and the claims table, as `lt reproduce` prints them."""
    figure: Path


def run(
    proto: Protocol,
    store: Store,
    *,
    data_dir: Path | None = None,
    output: Path | None = None,
    progress: Progress | None = None,
) -> Reproduction:
    """Runs `proto` through `launch.run` (finished cells are reused), checks the figure's
    claims on its cells and writes the figure to `output` (default
    ``reproduce-<figure>.png``).

    Raises:
      UsageError: the data set is missing, or as `launch.run`.
    """
    from ltcli.results import plot

    # An alias only for the protocol as shipped: --set makes other runs, which must not share it.
    name = None if proto.settings else f"reproduce-{proto.figure}-{proto.budget}"
    run_id = launch.run(proto.spec, store, data_dir=data_dir, name=name, progress=progress)
    cells = protocol_cells(report.cell_metrics(store, run_id), proto.spec)
    t = Measurements(cells)
    results = evaluate(proto.figure, cells)
    path = Path(output or f"reproduce-{proto.figure}.png")
    plot.plot(
        store,
        [run_id],
        path,
        SIZE,
        DPI,
        curve_levels(proto.figure, t),
        "minmax",
        overlay=overlay_points(proto.figure, t),
        accuracy_field=accuracy_field(proto.figure),
        cells={run_id: cells},
    )
    levels = report.levels_table(report.level_summary(cells))
    text = "\n\n".join([levels, claims_table(proto.figure, results, t)])
    return Reproduction(proto, run_id, results, text, path)


def reproduce(
    figure: str,
    budget: str,
    store: Store,
    *,
    settings: Iterable[str] = (),
    **options: Any,
) -> Reproduction:
    """`run` of `protocol(figure, budget, settings)`; `options` are `run`'s."""
    return run(protocol(figure, budget, settings), store, **options)
