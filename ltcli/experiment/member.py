"""The members of a level: the ticket and its controls, as one typed value parsed once.

A member's name (``ticket``, ``reinit-0``, ``random-2``) is its folder in the store and its
``member`` field in ``metrics.json``; everything else uses `Member`.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from ltcli.core.commas import comma_list

CONTROL_KINDS = (
    "reinit",
    "random",
    "stability",
    "shuffle",
    "invert",
    "rewind",
    "sign",
    "signed_reinit",
)
"""Control kinds of a pruned level, in the order it lists them. ``reinit``: the ticket's mask
with a fresh initialization; ``random``: a random mask with the ticket's per-layer counts,
from θ0 (θk); ``stability``: a copy of the ticket (same start, same mask) trained with
another data order, for instability analysis (Frankle et al. 2020); ``shuffle``: each
layer's mask permuted within the layer, from θ0 (the 2021 paper's name for what ``random``
draws); ``invert``: pruning at initialization keeping the lowest-scored weights instead
(Frankle et al. 2021); ``rewind``: a sparse-training ticket's final mask trained again from
θ0 (θk), as a lottery ticket (`ltcli.experiment.combinations`); ``sign``: the ticket's
mask, each kept weight its rewind point's sign times its layer's standard deviation there
(Zhou et al. 2019's "constant, init sign"); ``signed_reinit``: the ticket's mask, each
kept weight a fresh initialization's magnitude with its rewind point's sign ("reinit, init
sign"; `ltcli.science.criteria`). New kinds go last: a control's random stream is seeded by
its kind's place here (`ltcli.train.keys`)."""

SPAWN = "spawn"
"""The dense level's copies for instability analysis: ``spawn-<k>`` follows the dense
ticket's data order to iteration k, then another one to T."""

PAIRED_KINDS = ("stability", SPAWN)
"""Members whose instability against the level's ticket is measured."""


@dataclasses.dataclass(frozen=True, order=True)
class Member:
    """The ticket (``Member("ticket")``) or the `index`-th control of a kind."""

    kind: str = "ticket"
    index: int = 0

    @classmethod
    def parse(cls, name: str) -> Member:
        """``"ticket"`` or ``"<kind>-<index>"``.

        Raises:
          ValueError: anything else.
        """
        if name == "ticket":
            return cls()
        kind, sep, index = name.rpartition("-")
        if not sep or kind not in (*CONTROL_KINDS, SPAWN) or not index.isdigit():
            raise ValueError(f"not a member name: {name!r}")
        return cls(kind, int(index))

    @property
    def is_ticket(self) -> bool:
        return self.kind == "ticket"

    def __str__(self) -> str:
        return "ticket" if self.is_ticket else f"{self.kind}-{self.index}"


TICKET = Member()


@dataclasses.dataclass(frozen=True, order=True)
class CellKey:
    """One training job of a run: replicate, level and member. A member given by its name
    (``"reinit-0"``) is parsed once, here."""

    replicate: int
    level: int
    member: Member = TICKET

    def __post_init__(self) -> None:
        if isinstance(self.member, str):
            object.__setattr__(self, "member", Member.parse(self.member))

    @property
    def relpath(self) -> Path:
        return Path(f"replicate_{self.replicate}", f"level_{self.level}", str(self.member))

    @classmethod
    def from_relpath(cls, relpath: str | Path) -> CellKey:
        """The cell whose folder in its run is `relpath` (``replicate_R/level_L/MEMBER``)."""
        replicate, level, member = Path(relpath).parts[-3:]
        return cls(int(replicate.split("_")[1]), int(level.split("_")[1]), member)


def parse_controls(text: str) -> dict[str, int]:
    """``"reinit:3,random:1"`` -> ``{"reinit": 3, "random": 1}``.

    Raises:
      ValueError: an unknown kind, a count that is not a whole number, a kind twice, or an
        empty item.
    """
    counts: dict[str, int] = {}
    for item in comma_list(text):
        kind, sep, count = item.partition(":")
        if not sep or kind not in CONTROL_KINDS or not count.isdigit() or kind in counts:
            raise ValueError(f"not a control: {item!r}")
        counts[kind] = int(count)
    return counts


def level_members(controls: str, level: int, spawn: tuple[int, ...] = ()) -> list[Member]:
    """The ticket, then each control asked for at a pruned level, or each spawn point's copy
    at the dense level 0."""
    if level == 0:
        return [TICKET, *(Member(SPAWN, k) for k in sorted(set(spawn)))]
    counts = parse_controls(controls)
    return [TICKET, *(Member(k, i) for k in CONTROL_KINDS for i in range(counts.get(k, 0)))]
