"""Data sets by name. `locate` finds one on disk and identifies it by content.

Plain names (``mnist``) are looked up in `DATASETS`; ``kind:ARG`` names (``folder:PATH``)
in `PREFIXED`. Both registries are plain dicts whose errors list the valid names.

Image data sets load `Arrays`; text data sets (``text:PATH``, ``python-stdlib``, the names in
`TEXT`) have ``DataSource.text`` set and load `TextArrays`, a token stream whose unit is
`locate`'s `tokens` (``bytes`` or ``chars``).

``imagenet`` and ``imagenet:PATH`` are too large for memory: their `DataSource` has
``streamed`` set and gives `StreamSplits`, read from disk as it trains (`imagenet`).

The package may import core only (errors, atomic writes, lt's folders, the progress meter):
a data set knows nothing of runs, models or training.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ltcli.core.errors import UsageError
from ltcli.data import cifar, folder, idx, imagenet, text, tfds_source
from ltcli.data.sources import Arrays, DataSource, StreamSplits, TextArrays

Locator = Callable[[str, Path | None], DataSource]
"""Called with (name or ARG, data_dir); the locators of `TEXT` also take ``tokens=``."""


def _python_stdlib(name: str, data_dir: Path | None, tokens: str = "bytes") -> DataSource:
    del name, data_dir
    return text.stdlib(tokens)


def _imagenet(name: str, data_dir: Path | None, image_size: int = 224) -> DataSource:
    del name
    return imagenet.locate("", data_dir, image_size)


DATASETS: dict[str, Locator] = {
    "mnist": idx.locate,
    "fashion-mnist": idx.locate,
    "cifar10": cifar.locate,
    "python-stdlib": _python_stdlib,
    "imagenet": _imagenet,
}
PREFIXED: dict[str, Locator] = {
    "folder": folder.locate,
    "tfds": tfds_source.locate,
    "text": text.locate,
    "imagenet": imagenet.locate,
}
TEXT = frozenset({"python-stdlib", "text"})
"""The keys of `DATASETS` and `PREFIXED` whose locators read text and take ``tokens=``."""
SIZED = frozenset({"imagenet", "tfds"})
"""The keys whose locators may resize their images and take ``image_size=`` (tfds: a data
set of images of many sizes, such as ``tfds:imagenet2012``)."""

__all__ = [
    "DATASETS",
    "PREFIXED",
    "TEXT",
    "Arrays",
    "DataSource",
    "StreamSplits",
    "TextArrays",
    "locate",
]


def locate(
    name: str, data_dir: Path | None = None, tokens: str = "bytes", image_size: int | None = None
) -> DataSource:
    """Finds data set `name`, searching `data_dir`, ``$LT_DATA_DIR``, its system location and
    lt's data cache (a relative ``text:PATH``: `data_dir`, then the working directory).

    Args:
      tokens: the token unit of a text data set, ``bytes`` or ``chars``; image data sets
        take only the default.
      image_size: the side of the square images a resizing data set (`SIZED`) gives the
        model (None: its default, 224 for imagenet).

    Raises:
      UsageError: an unknown name, `tokens` other than ``bytes`` for an image data set, or the
        files are missing or malformed (never a download).
    """
    kind, sep, arg = name.partition(":")
    if sep and kind in PREFIXED:
        key, locator, arg = kind, PREFIXED[kind], arg
    elif name in DATASETS:
        key, locator, arg = name, DATASETS[name], name
    else:
        known = sorted(DATASETS) + [f"{k}:..." for k in sorted(PREFIXED)]
        raise UsageError(f"data.dataset: unknown data set {name!r}; known: {', '.join(known)}")
    if tokens != "bytes" and key not in TEXT:
        raise UsageError(
            f"data.tokens: only text data sets have tokens; {name} is an image data set "
            f"(leave data.tokens unset, or use a text data set: "
            f"{', '.join(sorted(k if k in DATASETS else f'{k}:PATH' for k in TEXT))})"
        )
    if image_size is not None and key not in SIZED:
        raise UsageError(
            f"data.image_size: only imagenet and tfds data sets of images of many sizes "
            f"resize their images; {name} has its own size (leave data.image_size unset)"
        )
    if key in SIZED and image_size is not None:
        return locator(arg, data_dir, image_size=image_size)  # type: ignore[call-arg]
    if key in TEXT:
        return locator(arg, data_dir, tokens=tokens)  # type: ignore[call-arg]
    return locator(arg, data_dir)
