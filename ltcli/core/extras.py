"""lt's optional extras (Ray, submitit, the trackers' libraries), imported where a flag needs
them: a missing one is a usage error that says how to install it, raised before anything
runs."""

from __future__ import annotations

import importlib
from types import ModuleType

from ltcli.core.errors import UsageError


def require(module: str, flag: str, install: str) -> ModuleType:
    """The package `module`, imported for `flag`.

    Raises:
      UsageError: it is not installed; the message names `flag` and says ``install it:
        <install>``.
    """
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise UsageError(f"{flag}: {module} is not installed; install it: {install}") from err
