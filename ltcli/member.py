"""The members of a level: the ticket and its controls, as one typed value parsed once.

A member's name (``ticket``, ``reinit-0``, ``random-2``) is its folder in the store and its
``member`` field in ``metrics.json``; everything else uses `Member`.
"""

from __future__ import annotations

import dataclasses

CONTROL_KINDS = ("reinit", "random")
"""Control kinds, in the order a level lists them. ``reinit``: the ticket's mask with a fresh
initialization; ``random``: a random mask with the ticket's per-layer counts, from θ0 (θk)."""


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
        if not sep or kind not in CONTROL_KINDS or not index.isdigit():
            raise ValueError(f"not a member name: {name!r}")
        return cls(kind, int(index))

    @property
    def is_ticket(self) -> bool:
        return self.kind == "ticket"

    def __str__(self) -> str:
        return "ticket" if self.is_ticket else f"{self.kind}-{self.index}"


TICKET = Member()


def parse_controls(text: str) -> dict[str, int]:
    """``"reinit:3,random:1"`` -> ``{"reinit": 3, "random": 1}``.

    Raises:
      ValueError: an unknown kind, a count that is not a whole number, or a kind twice.
    """
    counts: dict[str, int] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        kind, sep, count = item.partition(":")
        if not sep or kind not in CONTROL_KINDS or not count.isdigit() or kind in counts:
            raise ValueError(f"not a control: {item!r}")
        counts[kind] = int(count)
    return counts


def level_members(controls: str, level: int) -> list[Member]:
    """The ticket, then each control asked for (none at the dense level 0)."""
    if level == 0:
        return [TICKET]
    counts = parse_controls(controls)
    return [TICKET, *(Member(k, i) for k in CONTROL_KINDS for i in range(counts.get(k, 0)))]
