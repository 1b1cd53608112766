"""Experiment specs: TOML files with flat ``[data]``, ``[model]``, ``[train]``, ``[prune]`` and
``[run]`` sections, validated field by field against one table
(`ltcli.experiment.fields.FIELDS`).

A spec is a flat mapping from dotted keys (``"train.lr"``) to checked values. Flags and
``--set key=value`` overrides are applied with `apply_overrides` and checked by the same
rules, so a bad flag and a bad file line give the same one-line error (exit code 2).
The ``[run]`` section says what to run (rounds, replicates, controls); it never enters the
run id (see `ltcli.experiment.descriptor`).
"""

from __future__ import annotations

import dataclasses
import importlib.resources
import math
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ltcli.core.commas import comma_list
from ltcli.core.errors import UsageError
from ltcli.experiment.field_types import parse_duration
from ltcli.experiment.fields import FIELDS, SECTIONS


def _finite(value: Any) -> float:
    """`value` as a float; raises ValueError for nan and infinities (``1e309`` reads as inf),
    which no float field gives a meaning."""
    number = float(value)
    if not math.isfinite(number):
        raise ValueError
    return number


def _coerce(kind: str, value: Any) -> Any:
    """Converts a TOML or flag value to the field's type; raises ValueError when it cannot."""
    if kind == "str":
        if not isinstance(value, str):
            raise ValueError
        return value
    if kind == "bool":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        raise ValueError
    if kind == "int":
        if isinstance(value, bool):
            raise ValueError
        if isinstance(value, float) and value.is_integer():
            return int(value)
        return int(value) if isinstance(value, int) else int(str(value), 10)
    if kind == "float":
        if isinstance(value, bool):
            raise ValueError
        return _finite(value)
    if kind == "duration":
        return parse_duration(value)
    if kind == "durations":
        if isinstance(value, str):
            value = comma_list(value)
        if not isinstance(value, list | tuple):
            raise ValueError
        return tuple(parse_duration(v) for v in value)
    if kind == "percents":
        if isinstance(value, str):
            value = comma_list(value)
        if not isinstance(value, list | tuple):
            value = [value]
        if any(isinstance(v, bool) for v in value):
            raise ValueError
        return tuple(_finite(v) for v in value)
    if kind == "strs":
        if isinstance(value, str):
            value = comma_list(value)
        if not isinstance(value, list | tuple) or not all(isinstance(v, str) and v for v in value):
            raise ValueError
        return tuple(value)
    raise AssertionError(kind)


def check_field(key: str, value: Any) -> Any:
    """Returns `value` converted to the type of field `key`.

    Raises:
      UsageError: the key is unknown or the value is of the wrong type or out of range; the
        message names the field and the allowed values.
    """
    field = FIELDS.get(key)
    if field is None:
        section = key.split(".")[0]
        known = [k for k in FIELDS if k.startswith(section + ".")] or list(FIELDS)
        raise UsageError(f"{key}: unknown field; known fields: {', '.join(known)}")
    if value is None and field.default is None:
        return None
    try:
        converted = _coerce(field.kind, value)
        ok = field.check(converted)
    except (ValueError, TypeError):
        ok = False
    if not ok:
        raise UsageError(f"{key}: must be {field.allowed} (got {value!r})")
    return converted


@dataclasses.dataclass(frozen=True)
class Spec:
    """A checked experiment spec: its name and every field, defaults filled in."""

    experiment: str
    values: Mapping[str, Any]

    def __getitem__(self, key: str) -> Any:
        return self.values[key]


def from_mapping(experiment: str, table: Mapping[str, Any]) -> Spec:
    """Checks a parsed TOML table (sections of fields) and fills in defaults."""
    values = {key: field.default for key, field in FIELDS.items()}
    for section, fields in table.items():
        if section not in SECTIONS or not isinstance(fields, Mapping):
            raise UsageError(f"{section}: unknown section; known sections: {', '.join(SECTIONS)}")
        for name, value in fields.items():
            key = f"{section}.{name}"
            values[key] = check_field(key, value)
    for key in ("data.dataset", "model.name"):
        if not values[key]:
            raise UsageError(f"{key}: missing; must be {FIELDS[key].allowed}")
    return Spec(experiment, values)


def parse_assignment(text: str) -> tuple[str, Any]:
    """Parses one ``--set key=value``; the value is read as TOML, else taken as a string."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise UsageError(f"--set {text}: must look like section.field=value")
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()
    return key, value


def apply_overrides(spec: Spec, overrides: Mapping[str, Any]) -> Spec:
    """Returns `spec` with each dotted-key override checked and applied; None means unset."""
    values = dict(spec.values)
    for key, value in overrides.items():
        if value is not None:
            values[key] = check_field(key, value)
    return Spec(spec.experiment, values)


def shipped_specs() -> dict[str, Path]:
    """The experiment specs installed with the package, by name."""
    root = importlib.resources.files("ltcli.presets")
    return {
        Path(entry.name).stem: Path(str(entry))
        for entry in root.iterdir()
        if entry.name.endswith(".toml")
    }


def find(name: str, cwd: Path | None = None) -> Path:
    """Finds a spec: a path to a .toml, else ``experiments/NAME.toml`` in `cwd`, else the
    copy installed with lt.

    Raises:
      UsageError: nothing matches; the message lists the names that would.
    """
    cwd = cwd or Path.cwd()
    as_path = Path(name)
    if name.endswith(".toml"):
        if as_path.is_file():
            return as_path
        raise UsageError(f"experiment {name}: no such file")
    local = cwd / "experiments" / f"{name}.toml"
    if local.is_file():
        return local
    shipped = shipped_specs()
    if name in shipped:
        return shipped[name]
    local_names = {p.stem for p in (cwd / "experiments").glob("*.toml")}
    names = ", ".join(sorted(local_names | set(shipped)))
    raise UsageError(f"experiment {name}: not found; known experiments: {names}")


def load(name: str, cwd: Path | None = None) -> Spec:
    """Finds and checks the spec named `name` (see `find`)."""
    path = find(name, cwd)
    try:
        table = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as err:
        raise UsageError(f"{path}: not valid TOML: {err}") from err
    return from_mapping(path.stem, table)
