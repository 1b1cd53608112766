"""The spec's field table is the one source of each field's doc, choices and default: the
flags of `lt run` and the engine's defaults are generated from it."""

from __future__ import annotations

import dataclasses

import click
import pytest
from click.testing import CliRunner

from ltcli.cli.main import FIELD_FLAGS, cli
from ltcli.cli.main import run as run_command
from ltcli.experiment import spec
from ltcli.experiment.fields import FIELDS, Duration
from ltcli.train.recipes import TrainConfig

pytestmark = pytest.mark.unit


def _help() -> str:
    result = CliRunner().invoke(cli, ["run", "--help"], terminal_width=10_000)
    assert result.exit_code == 0
    return " ".join(result.output.split())


def test_every_field_says_what_it_means():
    assert all(field.doc.strip() for field in FIELDS.values()), [
        key for key, field in FIELDS.items() if not field.doc.strip()
    ]


@pytest.mark.parametrize("flag", list(FIELD_FLAGS))
def test_a_flags_help_is_its_fields_doc(flag):
    key = FIELD_FLAGS[flag]
    text = _help()
    doc = " ".join(FIELDS[key].doc.split())
    assert f"{doc} [spec field {key}" in text
    option = next(p for p in run_command.params if flag in p.opts)
    if FIELDS[key].choices:
        assert isinstance(option.type, click.Choice)
        assert tuple(option.type.choices) == FIELDS[key].choices


def test_a_choice_field_accepts_exactly_its_choices():
    for key, field in FIELDS.items():
        for value in field.choices:
            assert spec.check_field(key, value) == value
        if field.choices:
            with pytest.raises(spec.UsageError, match=key):
                spec.check_field(key, "none-of-these")


def test_the_engines_defaults_are_the_fields_defaults():
    defaults = {
        f.name: f.default
        for f in dataclasses.fields(TrainConfig)
        if f.default is not dataclasses.MISSING
    }
    assert defaults  # the optional hyperparameters
    for name, value in defaults.items():
        field = FIELDS[f"train.{name}"].default
        resolved = field.iterations(0, 1) if isinstance(field, Duration) else field
        assert value == resolved, name
