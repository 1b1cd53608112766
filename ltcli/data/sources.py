"""What every data set reader returns: a `DataSource` (found, identified) that loads `Arrays`
(images) or `TextArrays` (a token stream, for a language model)."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple, Protocol

import numpy as np

from ltcli.core import paths


class Arrays(NamedTuple):
    """A data set in memory: uint8 images (N, H, W, C) and int32 labels."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


class TextArrays(NamedTuple):
    """A text data set in memory: three consecutive pieces of one token stream.

    Attributes:
      train, validation, test: 1-D token ids, in corpus order (uint8 for bytes, int32 for
        characters).
      widths: UTF-8 bytes of each token id, to turn a loss per token over the tokens
        evaluation reads into bits per byte.
    """

    train: np.ndarray
    validation: np.ndarray
    test: np.ndarray
    widths: np.ndarray


class Examples(Protocol):
    """One split of a streamed data set, read from disk one example at a time. Picklable (it
    holds paths and labels, no open files), so worker processes can read it."""

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> tuple[np.ndarray, int]:
        """The image as decoded (uint8, (H, W, 3), its own size) and its label."""
        ...


class StreamSplits(NamedTuple):
    """A data set read from disk as it trains (`DataSource.streamed`), and its preprocessing.

    Attributes:
      train, test: the splits (`Examples`); the validation hold-out comes from `train`.
      train_transform: (image, rng) -> the uint8 (size, size, 3) image the model trains on,
        its randomness (crop, flip) drawn from `rng` only.
      eval_transform: image -> the uint8 (size, size, 3) image the model is evaluated on.
      mean, std: float32 (3,) per-channel values in pixel units (0..255) that inputs are
        normalized with: ``(image - mean) / std``.

    The transforms, mean and std are None for a data set that loads as arrays, wrapped as
    examples (its images are augmented and normalized as when they live on the device).
    """

    train: Examples
    test: Examples
    train_transform: Callable[[np.ndarray, np.random.Generator], np.ndarray] | None
    eval_transform: Callable[[np.ndarray], np.ndarray] | None
    mean: np.ndarray | None
    std: np.ndarray | None


@dataclasses.dataclass(frozen=True)
class DataSource:
    """A data set that was found on disk, identified by its content, not yet loaded.

    Attributes:
      name: the name the spec used (``mnist``, ``folder:/data/pets``).
      content_id: sha256 of the decoded content, the same wherever the files lie.
      train_size: examples in the training split, before the validation hold-out (text:
        tokens in the train split).
      image_shape: (H, W, C) of one image; () for text.
      num_classes: number of labels (text: the vocabulary size).
      origin: where the files were found, for messages.
      loader: reads the arrays.
      text: a text data set, whose `load` returns `TextArrays`.
      streamed: for a data set too large for memory (``imagenet``), returns its splits as
        `StreamSplits`, read from disk example by example; its `load` then raises. None for
        the data sets that load as arrays.
      resized: its images, of many sizes, are resized to `image_shape` (``data.image_size``,
        in the run id).
    """

    name: str
    content_id: str
    train_size: int
    image_shape: tuple[int, ...]
    num_classes: int
    origin: str
    loader: Callable[[], Arrays | TextArrays] = dataclasses.field(repr=False, compare=False)
    text: bool = False
    streamed: Callable[[], StreamSplits] | None = dataclasses.field(
        default=None, repr=False, compare=False
    )
    resized: bool = False

    def load(self) -> Arrays | TextArrays:
        return self.loader()


def search_dirs(data_dir: Path | None, system: Path | None = None) -> list[Path]:
    """The folders searched for data, in order: `data_dir` (``--data-dir``), ``$LT_DATA_DIR``,
    the data set's system location, then lt's own data cache."""
    dirs = [data_dir] if data_dir else []
    if os.environ.get("LT_DATA_DIR"):
        dirs.append(Path(os.environ["LT_DATA_DIR"]))
    if system:
        dirs.append(system)
    dirs.append(paths.data_cache_dir())
    return dirs


def candidate_dirs(name: str, dirs: list[Path]) -> list[Path]:
    """For each search folder, its ``NAME/`` subfolder, then the folder itself."""
    out: list[Path] = []
    for folder in dirs:
        out += [folder / name, folder]
    return out
