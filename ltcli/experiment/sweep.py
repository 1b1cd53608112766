"""Sweeps: one experiment over the product of a few fields' values, each point its own run.

``--sweep key=v1,v2,...`` names a field and its alternatives; several ``--sweep`` flags
give the product, in the order the flags were given (the first varies slowest), values in
the order written. Each value reads like a ``--set`` value (TOML, else a string) and is
checked by the field table (`ltcli.experiment.spec.check_field`), so a bad value is refused
at once, before anything resolves, trains or is written.

Alternatives are separated by commas outside brackets and quotes, so a list-valued field
takes one TOML list per alternative: ``--sweep prune.one_shot=[50,20],[10]`` is two points
(targets 50 and 20; target 10), ``--sweep train.lr_drops=[],["80ep","120ep"]`` two more,
while ``--sweep prune.one_shot=50,20`` is two one-target points.

Refused (`UsageError`, exit 2): an unknown field, a bad value, a field swept twice, a field
both swept and set (``--set`` or its flag), a value given twice, and ``run.*`` fields: they
say what to run (rounds, replicates, controls), not what a run is, so every point would be
the same run. Pure: no data, no store.

A sweep is identified by `sweep_id`: the sha256 of its fields, their values and the run id
of every point, so the same sweep asked again (even with more rounds) is the same sweep, and
its readable name (`default_name`, or ``--name``) names it in `lt compare`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from ltcli.core.errors import UsageError
from ltcli.experiment import descriptor
from ltcli.experiment.fields import FIELDS, UNHASHED_SECTIONS, Duration
from ltcli.experiment.spec import Spec, apply_overrides, check_field, parse_assignment

_OPENING = {"[": "]", "{": "}"}


@dataclasses.dataclass(frozen=True)
class Axis:
    """One swept field and its alternatives, each checked (the field's own type)."""

    field: str
    values: tuple[Any, ...]


@dataclasses.dataclass(frozen=True)
class Point:
    """One point of a sweep: its position in the product, its spec, and each swept field's
    value in JSON form (`json_value`), in the order of the axes."""

    index: int
    spec: Spec
    axes: tuple[tuple[str, Any], ...]

    @property
    def label(self) -> str:
        """``train.lr=0.001 train.seed=0``."""
        return label(self.axes)


def split_values(text: str) -> list[str]:
    """The alternatives of one ``--sweep`` value list: split at commas outside brackets,
    braces and quotes, each stripped (``"[50,20],[10]"`` -> ``["[50,20]", "[10]"]``)."""
    parts, current, closers, quote = [], [], [], ""
    for char in text:
        if quote:
            quote = "" if char == quote else quote
        elif char in "\"'":
            quote = char
        elif char in _OPENING:
            closers.append(_OPENING[char])
        elif closers and char == closers[-1]:
            closers.pop()
        elif char == "," and not closers:
            parts.append("".join(current).strip())
            current = []
            continue
        current.append(char)
    parts.append("".join(current).strip())
    return parts


def json_value(value: Any) -> Any:
    """A checked field value as JSON: a duration as ``"500it"``, a list as a list."""
    if isinstance(value, Duration):
        return str(value)
    if isinstance(value, list | tuple):
        return [json_value(v) for v in value]
    return value


def format_value(value: Any) -> str:
    """A JSON field value as labels show it: ``0.001``, ``true``, ``500it``, ``[50.0,20.0]``."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ",".join(format_value(v) for v in value) + "]"
    return str(value)


def label(axes: Iterable[tuple[str, Any]]) -> str:
    """``field=value`` for each swept field, joined by spaces."""
    return " ".join(f"{field}={format_value(value)}" for field, value in axes)


def parse_axis(text: str) -> Axis:
    """One ``--sweep key=v1,v2,...``.

    Raises:
      UsageError: no ``=``, an unknown, ``run.*`` or ``slurm.*`` field, an empty or bad
        value, or a value given twice; the message names the field.
    """
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key or not raw.strip():
        raise UsageError(f"--sweep {text}: must look like section.field=value,value,...")
    if key not in FIELDS:
        check_field(key, None)  # raises: an unknown field, named with the known ones
    if key.split(".")[0] in UNHASHED_SECTIONS:
        raise UsageError(
            f"--sweep {key}: run.* and slurm.* fields say how to run, not what a run is, so every "
            "point would be the same run; give it once (--set or its flag)"
        )
    values, seen = [], []
    for piece in split_values(raw):
        if not piece:
            raise UsageError(f"--sweep {text}: {key}: an empty value")
        checked = check_field(key, parse_assignment(f"{key}={piece}")[1])
        if json_value(checked) in seen:
            raise UsageError(f"--sweep {text}: {key}: {piece} is given twice")
        seen.append(json_value(checked))
        values.append(checked)
    return Axis(key, tuple(values))


def parse_axes(texts: Sequence[str], fixed: Iterable[str] = ()) -> list[Axis]:
    """The axes of ``--sweep`` flags `texts`, in their order.

    Args:
      texts: each ``key=v1,v2,...``.
      fixed: the fields set otherwise (``--set``, named flags): they cannot be swept too.

    Raises:
      UsageError: a bad flag (see `parse_axis`), a field swept twice, or swept and set.
    """
    axes: list[Axis] = []
    fixed = set(fixed)
    for text in texts:
        axis = parse_axis(text)
        if any(a.field == axis.field for a in axes):
            raise UsageError(f"--sweep {axis.field}: swept twice; give its values in one --sweep")
        if axis.field in fixed:
            raise UsageError(
                f"--sweep {axis.field}: also set by --set or a flag; sweep it or set it"
            )
        axes.append(axis)
    return axes


def expand(base: Spec, axes: Sequence[Axis]) -> list[Point]:
    """Every point of the product of `axes` over `base`: the first axis varies slowest,
    each axis's values in their order. Each point's spec is `base` with its values applied
    (`apply_overrides`, which checks them again)."""
    points = []
    for index, values in enumerate(itertools.product(*(a.values for a in axes))):
        overrides = {a.field: v for a, v in zip(axes, values, strict=True)}
        pairs = tuple((a.field, json_value(v)) for a, v in zip(axes, values, strict=True))
        points.append(Point(index, apply_overrides(base, overrides), pairs))
    return points


def sweep_id(axes: Sequence[Axis], run_ids: Sequence[str]) -> str:
    """The sha256 of the swept fields with their values (in order) and each point's run id:
    what the sweep is, whatever its ``[run]`` section asks or what it is called."""
    content = {
        "axes": [[a.field, [json_value(v) for v in a.values]] for a in axes],
        "runs": list(run_ids),
    }
    return hashlib.sha256(descriptor.canonical(content)).hexdigest()


def default_name(experiment: str, axes: Sequence[Axis]) -> str:
    """``mnist-lenet:train.lr,train.seed``: the experiment and the swept fields."""
    return f"{experiment}:{','.join(a.field for a in axes)}"


def entry(identity: str, name: str, point: Point, points: int) -> dict[str, Any]:
    """What a run's ``meta.json`` records of its membership of a sweep (under ``"sweeps"``):
    ``{"id", "name", "index", "points", "axes": [{"field", "value"}, ...]}``, the axes in the
    sweep's order (a list: the store writes JSON objects with sorted keys)."""
    return {
        "id": identity,
        "name": name,
        "index": point.index,
        "points": points,
        "axes": [{"field": f, "value": v} for f, v in point.axes],
    }


def entry_axes(record: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """The ``(field, value)`` pairs of a stored sweep entry, in the sweep's order."""
    return [(a["field"], a["value"]) for a in record["axes"]]
