"""Click plumbing shared by lt's command modules: error mapping and common options."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import click

from ltcli.core.errors import LtError, UsageError


class _Failure(click.ClickException):
    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


class LtGroup(click.Group):
    """A command group that maps library errors to exit codes: `UsageError` 2, any other
    `LtError` 1 (Click prints ``Error: message`` on stderr)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except UsageError as err:
            raise _Failure(str(err), 2) from err
        except LtError as err:
            raise _Failure(str(err), 1) from err


class FiniteFloatRange(click.FloatRange):
    """`click.FloatRange` that also refuses nan and the infinities (``1e309`` parses to inf):
    a bound compared with nan is never crossed, so Click alone accepts it."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number.", param, ctx)
        return number


STORE_OPTION = click.option(
    "--store",
    type=click.Path(file_okay=False, path_type=Path),
    envvar="LT_STORE",
    default=None,
    help="Store folder (default: $LT_STORE, else ./results).",
)

DATA_DIR_OPTION = click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Where data sets are; searched before $LT_DATA_DIR, the system location, lt's cache.",
)
