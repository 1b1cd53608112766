"""Experiment specs: TOML files with flat ``[data]``, ``[model]``, ``[train]``, ``[prune]`` and
``[run]`` sections, validated field by field against one table (`FIELDS`).

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
import re
import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ltcli.core.commas import comma_list
from ltcli.core.errors import UsageError
from ltcli.experiment.member import CONTROL_KINDS, parse_controls
from ltcli.science import pruning
from ltcli.science.methods import PRUNING_METHODS, SCORE_MODES

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


RETRAIN_MODES = ("rewind", "lr-rewind", "finetune")
"""How a pruned level retrains (Renda, Frankle & Carbin 2020): weights and schedule rewound
to iteration k; the previous level's trained weights with the schedule replayed from k; or
those weights trained T - k more steps at the schedule's final learning rate."""

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
    """

    kind: str
    default: Any
    allowed: str
    check: Callable[[Any], bool] = lambda _: True
    neutral: Any = ALWAYS_HASHED
    described: bool = True


def _between(lo: float, hi: float) -> Callable[[Any], bool]:
    return lambda v: lo < v < hi


def _pattern_ok(value: str) -> bool:
    try:
        pruning.parse_pattern(value)
    except ValueError:
        return False
    return True


def _controls_ok(value: str) -> bool:
    try:
        parse_controls(value)
    except ValueError:
        return False
    return True


FIELDS: dict[str, Field] = {
    "data.dataset": Field(
        "str",
        None,
        "mnist, fashion-mnist, cifar10, imagenet, folder:PATH, imagenet:PATH, tfds:NAME, "
        "text:PATH or python-stdlib",
        bool,
    ),
    "data.validation": Field("int", 5000, "an integer >= 1", lambda v: v >= 1),
    "data.placement": Field(
        "str",
        "auto",
        "auto, device or stream",
        lambda v: v in ("auto", "device", "stream"),
        described=False,  # where the data lives changes no number: never in the run id
    ),
    "data.workers": Field(
        "int",
        -1,
        "an integer >= -1 (-1: chosen by the core count; 0: read in this process)",
        lambda v: v >= -1,
        described=False,  # how streamed data is read changes no number: never in the run id
    ),
    "data.image_size": Field("int", None, "an integer >= 8", lambda v: v >= 8, None),
    "data.tokens": Field(
        "str", "bytes", "bytes or chars", lambda v: v in ("bytes", "chars"), "bytes"
    ),
    "model.name": Field("str", None, "a model name (see `lt run --help`)", bool),
    "model.dropout": Field("float", 0.0, "a number in [0, 1)", lambda v: 0 <= v < 1, 0.0),
    **{
        f"model.{name}": Field("int", None, "an integer >= 1", lambda v: v >= 1, None)
        for name in ("depth", "width", "heads", "mlp_ratio", "patch_size", "context")
    },
    "model.pool": Field("str", None, "cls or mean", lambda v: v in ("cls", "mean"), None),
    "model.tied": Field("bool", None, "true or false", neutral=None),
    "train.optimizer": Field(
        "str", "adam", "adam, adamw or sgd", lambda v: v in ("adam", "adamw", "sgd")
    ),
    "train.lr": Field("float", 1.2e-3, "a number > 0", lambda v: v > 0),
    "train.momentum": Field("float", 0.0, "a number in [0, 1)", lambda v: 0 <= v < 1, 0.0),
    "train.beta1": Field("float", 0.9, "a number in [0, 1)", lambda v: 0 <= v < 1, 0.9),
    "train.beta2": Field("float", 0.999, "a number in [0, 1)", lambda v: 0 <= v < 1, 0.999),
    "train.weight_decay": Field("float", 0.0, "a number >= 0", lambda v: v >= 0, 0.0),
    "train.batch_size": Field("int", 60, "an integer > 0", lambda v: v > 0),
    "train.iterations": Field(
        "duration", Duration(50000), "a duration > 0 like 5000it or 40ep", lambda v: v.amount > 0
    ),
    "train.eval_every": Field(
        "duration", Duration(100), "a duration > 0 like 100it or 1ep", lambda v: v.amount > 0
    ),
    "train.warmup": Field("duration", Duration(0), "a duration >= 0 like 10000it", neutral=0),
    "train.lr_drops": Field(
        "durations", (), 'a list of durations like ["80ep", "120ep"]', neutral=[]
    ),
    "train.lr_drop_factor": Field("float", 0.1, "a number in (0, 1]", lambda v: 0 < v <= 1),
    "train.augment": Field("bool", False, "true or false", neutral=False),
    "train.schedule": Field(
        "str", "step", "step or cosine", lambda v: v in ("step", "cosine"), "step"
    ),
    "train.clip_norm": Field("float", 0.0, "a number >= 0 (0: off)", lambda v: v >= 0, 0.0),
    "train.precision": Field(
        "str", "fp32", "fp32 or bf16", lambda v: v in ("fp32", "bf16"), "fp32"
    ),
    "train.label_smoothing": Field("float", 0.0, "a number in [0, 1)", lambda v: 0 <= v < 1, 0.0),
    "train.seed": Field("int", 0, "an integer >= 0", lambda v: v >= 0),
    "prune.strategy": Field(
        "str", "layerwise", "layerwise or global", lambda v: v in ("layerwise", "global")
    ),
    "prune.rate": Field("float", 0.2, "a fraction in (0, 1)", _between(0, 1), described=False),
    "prune.conv_rate": Field(
        "float", None, "a fraction in (0, 1)", _between(0, 1), described=False
    ),
    "prune.output_rate": Field(
        "float", None, "a fraction in (0, 1)", _between(0, 1), described=False
    ),
    "prune.attn_rate": Field(
        "float", None, "a fraction in (0, 1)", _between(0, 1), described=False
    ),
    "prune.mlp_rate": Field("float", None, "a fraction in (0, 1)", _between(0, 1), described=False),
    "prune.pattern": Field(
        "str",
        "unstructured",
        'unstructured or N:M like "2:4" (0 < N < M)',
        _pattern_ok,
        "unstructured",
    ),
    "prune.exclude": Field(
        "strs", (), 'a list of layer names or patterns like ["fc*"]', neutral=[]
    ),
    "prune.rewind_iter": Field("duration", Duration(0), "a duration >= 0 like 500it", neutral=0),
    "prune.retrain": Field(
        "str",
        "rewind",
        "rewind, lr-rewind or finetune",
        lambda v: v in RETRAIN_MODES,
        "rewind",
    ),
    "prune.one_shot": Field(
        "percents",
        None,
        "a percent of weights remaining in (0, 100), or several like 50,20,5,1.4",
        lambda v: all(0 < p < 100 for p in v) and len(set(v)) == len(v) > 0,
        None,
    ),
    "prune.method": Field(
        "str",
        "magnitude",
        f"one of {', '.join(PRUNING_METHODS)}",
        lambda v: v in PRUNING_METHODS,
        "magnitude",
    ),
    "prune.score_mode": Field(
        "str", "eval", " or ".join(SCORE_MODES), lambda v: v in SCORE_MODES, "train"
    ),
    "run.rounds": Field("int", 1, "an integer >= 0", lambda v: v >= 0),
    "run.replicates": Field("int", 1, "an integer >= 1", lambda v: v >= 1),
    "run.controls": Field(
        "str",
        "",
        f"a list like reinit:3,random:1 (kinds {' and '.join(CONTROL_KINDS)}, each once)",
        _controls_ok,
    ),
    "run.deterministic": Field("bool", False, "true or false"),
    "run.barriers": Field("bool", False, "true or false"),
    "run.controls_at": Field("str", "level", "level or end", lambda v: v in ("level", "end")),
    "run.devices": Field("int", 0, "an integer >= 0 (0: every local device)", lambda v: v >= 0),
    "run.parallel": Field(
        "str", "auto", "cells, batch or auto", lambda v: v in ("cells", "batch", "auto")
    ),
    "run.spawn": Field(
        "durations",
        (),
        'iterations of the dense network to spawn copies at, like ["0it", "500it"]',
    ),
    "run.log": Field("str", "", '"" (none) or "tensorboard"', lambda v: v in ("", "tensorboard")),
}
SECTIONS = sorted({key.split(".")[0] for key in FIELDS})


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
    root = importlib.resources.files("ltcli.experiments")
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
