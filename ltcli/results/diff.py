"""``lt diff``: the hyperparameters two runs differ in, field by field.

Pure functions on descriptor full forms (``Store.descriptor(run_id)["full"]``): nested
sections (``data``, ``model``, ``train``, ``prune``, and mappings inside them such as
``prune.rates``) are flattened to dotted field names; the data set's content id is the field
``data.content``, and the top-level ``schema`` is a field of its own.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any


class _Missing:
    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()
"""The value of a field on the side of a run whose descriptor lacks it (say one made before
the field existed)."""


@dataclasses.dataclass(frozen=True)
class Difference:
    """One field whose value differs: `a` in the first run, `b` in the second (`MISSING`
    where that run's descriptor has no such field)."""

    field: str
    a: Any
    b: Any


def flatten(full: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """`full` with nested mappings flattened to dotted names, in the descriptor's order:
    ``{"train": {"lr": 0.1}, "schema": 2}`` -> ``{"train.lr": 0.1, "schema": 2}``. An empty
    mapping stays a value of its own (so it still differs from a missing one)."""
    flat: dict[str, Any] = {}
    for key, value in full.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def _same(a: Any, b: Any) -> bool:
    """Equal values of one type family (so ``True`` differs from ``1``; ``1`` equals ``1.0``)."""
    return a == b and isinstance(a, bool) == isinstance(b, bool)


def differences(a: Mapping[str, Any], b: Mapping[str, Any]) -> list[Difference]:
    """The fields whose values differ between the full forms `a` and `b`, fields only one of
    them has included (`MISSING` on the other side).

    Fields come in the descriptors' order: by section (as first seen in `a`, then `b`), and
    within a section `a`'s fields, then those only `b` has.
    """
    flat_a, flat_b = flatten(a), flatten(b)
    names = list(dict.fromkeys([*flat_a, *flat_b]))
    sections = list(dict.fromkeys(n.split(".")[0] for n in names))
    names.sort(key=lambda n: sections.index(n.split(".")[0]))  # stable: keeps a's order
    found = []
    for name in names:
        va, vb = flat_a.get(name, MISSING), flat_b.get(name, MISSING)
        if va is MISSING or vb is MISSING or not _same(va, vb):
            found.append(Difference(name, va, vb))
    return found


def _value(value: Any) -> str:
    """A value as `lt show` writes it; ``-`` for a missing one."""
    return "-" if value is MISSING else str(value)


def text(found: list[Difference]) -> str:
    """One line per difference, fields aligned: ``train.lr  0.0012 -> 0.003``; the line
    ``same: no differences`` when there are none."""
    if not found:
        return "same: no differences"
    width = max(len(d.field) for d in found)
    return "\n".join(f"{d.field:<{width}}  {_value(d.a)} -> {_value(d.b)}" for d in found)


def to_json(found: list[Difference]) -> list[dict[str, Any]]:
    """`found` as JSON-ready objects ``{"field", "a", "b"}``. A field one run lacks is null
    on that side, and its object says which with ``"missing": "a"`` (or ``"b"``), since null
    is also a value some fields hold (``prune.one_shot``)."""
    rows = []
    for d in found:
        row = {"field": d.field, "a": None if d.a is MISSING else d.a}
        row["b"] = None if d.b is MISSING else d.b
        if d.a is MISSING or d.b is MISSING:
            row["missing"] = "a" if d.a is MISSING else "b"
        rows.append(row)
    return rows


def from_json(rows: list[dict[str, Any]]) -> list[Difference]:
    """The differences `to_json` wrote as `rows`."""
    return [
        Difference(
            row["field"],
            MISSING if row.get("missing") == "a" else row["a"],
            MISSING if row.get("missing") == "b" else row["b"],
        )
        for row in rows
    ]
