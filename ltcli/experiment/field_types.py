"""The types of the spec's field table (`ltcli.experiment.fields.FIELDS`): a field
(`Field`, `choice`), a training length (`Duration`), and the marker of fields that are always
in the run id (`ALWAYS_HASHED`)."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from typing import Any

_DURATION = re.compile(r"^\s*(\d+)\s*(it|ep)?\s*$")


@dataclasses.dataclass(frozen=True)
class Duration:
    """A training length in iterations (``"500it"`` or a bare integer) or epochs (``"40ep"``)."""

    amount: int
    unit: str = "it"

    def iterations(self, train_size: int, batch_size: int) -> int:
        """Iterations it spans. An epoch is ``round(train_size / batch_size)`` whole steps, so
        durations in epochs stay multiples of one another (``160ep`` and ``1ep``)."""
        if self.unit == "it":
            return self.amount
        return self.amount * round(train_size / batch_size)

    def __str__(self) -> str:
        return f"{self.amount}{self.unit}"


def parse_duration(value: Any) -> Duration:
    """Parses ``500``, ``"500it"`` or ``"40ep"``; raises ValueError otherwise."""
    if isinstance(value, bool):
        raise ValueError
    if isinstance(value, int):
        if value < 0:
            raise ValueError
        return Duration(value)
    if isinstance(value, Duration):
        return value
    match = _DURATION.match(str(value))
    if not match:
        raise ValueError
    return Duration(int(match.group(1)), match.group(2) or "it")


def slurm_minutes(limit: str) -> float:
    """A Slurm time limit in minutes, in any of sbatch's forms: ``M``, ``M:S``, ``H:M:S``,
    ``D-H``, ``D-H:M`` or ``D-H:M:S``; raises ValueError otherwise."""
    days, dash, clock = limit.strip().rpartition("-")
    fields = [int(part) for part in clock.split(":")]  # ValueError if not whole numbers
    whole_days = int(days) if dash else 0
    if dash and len(fields) <= 3:
        hours, mins, secs = (*fields, 0, 0)[:3]
    elif not dash and len(fields) <= 3:
        hours, mins, secs = fields if len(fields) == 3 else (0, *fields, 0)[:3]
    else:
        raise ValueError(limit)
    if min(whole_days, hours, mins, secs) < 0:
        raise ValueError(limit)
    return whole_days * 1440 + hours * 60 + mins + secs / 60


ALWAYS_HASHED = object()
"""`Field.neutral` of a field that existed from the first schema: always in the run id."""


@dataclasses.dataclass(frozen=True)
class Field:
    """One spec field: its type, default, the rule its value must satisfy, and how it enters
    the run descriptor.

    Attributes:
      neutral: the field's resolved value (durations in iterations, lists as lists) that
        gives the behaviour from before the field existed; the hashed descriptor leaves the
        field out at that value, so adding a field never changes stored runs' ids.
      described: whether the field enters the descriptor as itself (the per-kind prune rates
        enter as one derived ``rates`` table instead; `ltcli.experiment.descriptor`).
      doc: what the field means, in one paragraph: the one text that its ``lt run`` flag's
        help (`ltcli.cli.main`) and the docs' field reference show.
      choices: the values a string field takes, where it takes a fixed few.
    """

    kind: str
    default: Any
    allowed: str
    check: Callable[[Any], bool] = lambda _: True
    neutral: Any = ALWAYS_HASHED
    described: bool = True
    doc: str = ""
    choices: tuple[str, ...] = ()


def choice(
    default: str | None,
    choices: tuple[str, ...],
    doc: str,
    *,
    neutral: Any = ALWAYS_HASHED,
    described: bool = True,
) -> Field:
    """A string field that takes one of `choices` (the CLI's flag for it offers them)."""
    allowed = " or ".join([", ".join(choices[:-1]), choices[-1]])
    return Field("str", default, allowed, lambda v: v in choices, neutral, described, doc, choices)


def integer(default: int | None, least: int, doc: str) -> Field:
    """An integer field of at least `least`."""
    return Field("int", default, f"an integer >= {least}", lambda v: v >= least, doc=doc)


def text(allowed: str, doc: str, check: Callable[[Any], bool] = lambda _: True) -> Field:
    """A string field that is empty unless given (its default is then found elsewhere)."""
    return Field("str", "", allowed, check, doc=doc)


def between(lo: float, hi: float) -> Callable[[Any], bool]:
    return lambda v: lo < v < hi
