"""Checks of an output path, made before a command trains, loads or draws anything.

`check_output` refuses, with a `UsageError` (exit 2) naming the path, a suffix the command
cannot write, a folder that does not exist (lt does not create it), is not a folder or is not
writable, and a path that is a folder or not a regular file. It writes nothing.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from ltcli.core.errors import UsageError

EXPORT = {".csv": "csv", ".json": "json"}
"""`lt export`'s file suffixes and the format each writes."""


def image_suffixes() -> tuple[str, ...]:
    """The image suffixes `ltcli.results.plot.save` writes (vl-convert's file types), sorted."""
    from ltcli.results.drawing import FORMATS  # only the commands that draw

    return tuple(f".{fmt}" for fmt in sorted(FORMATS))


def _choices(suffixes: tuple[str, ...]) -> str:
    if len(suffixes) <= 2:
        return " or ".join(suffixes)
    return "one of " + ", ".join(suffixes)


def check_output(
    path: Path,
    suffixes: Iterable[str],
    *,
    kind: str = "format",
    option: str = "-o",
    exact: bool = False,
) -> Path:
    """`path`, once it is a file the command may write: its suffix is one of `suffixes`
    (compared lower-cased unless `exact`), its folder exists and is writable, and it is not
    a folder or anything but a regular file.

    `kind` names what the suffix picks, and `option` the flag, in the message.

    Raises:
      UsageError: any of those does not hold; nothing is written.
    """
    path = Path(path)
    allowed = tuple(suffixes)
    suffix = path.suffix if exact else path.suffix.lower()
    where = f"{option} {path}"
    if path.is_dir():
        raise UsageError(f"{where}: is a folder; name a file in it")
    if suffix not in {s if exact else s.lower() for s in allowed}:
        got = repr(path.suffix) if path.suffix else "none"
        raise UsageError(
            f"{where}: the suffix picks the {kind}; use {_choices(allowed)} (got {got})"
        )
    folder = path.parent
    if not folder.exists():
        raise UsageError(f"{where}: folder {folder} does not exist (lt does not create it)")
    if not folder.is_dir():
        raise UsageError(f"{where}: {folder} is not a folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise UsageError(f"{where}: folder {folder} is not writable")
    if path.exists() and not path.is_file():
        raise UsageError(f"{where}: exists and is not a regular file")
    return path


def export_format(output: Path | None, as_csv: bool, as_json: bool) -> str:
    """`lt export`'s format, ``"csv"`` or ``"json"``: the flag's, else the suffix of
    `output`'s (``.csv``, ``.json``), else CSV; `output`, if given, passes `check_output`.

    Raises:
      UsageError: both flags, a flag the suffix contradicts, or a bad `output`.
    """
    if as_csv and as_json:
        raise UsageError("--csv and --json: choose one")
    flag = "json" if as_json else "csv" if as_csv else None
    if output is None:
        return flag or "csv"
    fmt = EXPORT[check_output(output, EXPORT).suffix.lower()]
    if flag is not None and flag != fmt:
        raise UsageError(f"-o {output}: --{flag} writes {flag.upper()}; name a .{flag} file")
    return fmt
