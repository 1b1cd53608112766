"""A figure's protocol: the spec lt runs for it, as overrides of a spec shipped with lt, at
the paper's budget or a ``small`` one that cuts it down (every cut listed by `cuts`); and the
cells of a run that the protocol asks for. Nothing here knows a paper: each paper's module
(`ltcli.results.reproduce.frankle2019`) holds its figures' protocols."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from ltcli.experiment.fields import FIELDS
from ltcli.experiment.member import parse_controls
from ltcli.experiment.spec import Spec

BUDGETS = ("paper", "small")


@dataclasses.dataclass(frozen=True)
class FigureProtocol:
    """How lt runs one of the paper's figures.

    Attributes:
      experiment: the spec shipped with lt it starts from.
      paper: overrides that make it the paper's protocol (the whole protocol, so an edited
        shipped spec cannot change what "paper" means).
      small: overrides of ``--budget small`` on top of `paper`.
    """

    experiment: str
    paper: Mapping[str, Any]
    small: Mapping[str, Any]


@dataclasses.dataclass(frozen=True)
class Protocol:
    """A figure's protocol at a budget: the spec to run and how it differs from the paper's."""

    figure: str
    budget: str
    spec: Spec
    cuts: tuple[str, ...]
    """One line per spec field whose value is not the paper's: ``key: paper -> this``."""
    settings: tuple[str, ...] = ()
    """The ``--set`` assignments it includes."""


def show(value: Any) -> str:
    if isinstance(value, tuple | list):
        return "[" + ", ".join(map(str, value)) + "]"
    if value == "":
        return "(none)"
    return str(value)


def cuts(paper: Spec, chosen: Spec) -> tuple[str, ...]:
    """``key: paper value -> chosen value`` for each field where `chosen` differs."""
    return tuple(
        f"{key}: {show(paper[key])} -> {show(chosen[key])}"
        for key in FIELDS
        if paper[key] != chosen[key]
    )


def protocol_cells(cells: list[dict[str, Any]], s: Spec) -> list[dict[str, Any]]:
    """The cells of `cells` that `s`'s ``[run]`` section asks for (a run can hold more: a
    longer `lt run` of the same spec); the claims and the figure use exactly these."""
    counts = parse_controls(s["run.controls"])

    def asked(cell: dict[str, Any]) -> bool:
        if cell["replicate"] >= s["run.replicates"] or cell["level"] > s["run.rounds"]:
            return False
        kind, _, index = cell["member"].partition("-")
        if kind == "ticket":
            return True
        return cell["level"] > 0 and index.isdigit() and int(index) < counts.get(kind, 0)

    return [c for c in cells if asked(c)]
