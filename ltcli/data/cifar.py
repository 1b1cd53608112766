"""CIFAR-10 from its original distribution, read with numpy; nothing is extracted to disk.

Four forms are accepted, in this order of preference: the python version's extracted
``cifar-10-batches-py/`` or its archive ``cifar-10-python.tar.gz``, then the binary version's
``cifar-10-batches-bin/`` or ``cifar-10-binary.tar.gz``. All four decode to the same arrays and
so give the same content id.
"""

from __future__ import annotations

import dataclasses
import functools
import io
import pickle
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from ltcli.core.errors import UsageError
from ltcli.data import content, sources

TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCH = "test_batch"
BATCH_SIZE = 10000
"""Images in each batch file (so 50000 for training, 10000 for test)."""
IMAGE_SHAPE = (32, 32, 3)
NUM_CLASSES = 10
_PIXELS = 3 * 32 * 32

Batch = tuple[np.ndarray, np.ndarray]
"""Images (N, 32, 32, 3) uint8 and labels (N,) uint8 of one batch file."""


class _Unpickler(pickle.Unpickler):
    """Builds only what a CIFAR batch holds (dicts, lists, bytes, numpy arrays).

    A pickle can run any callable it names; refusing all others keeps a hostile file from
    executing code.
    """

    _ALLOWED = frozenset(
        {
            ("numpy.core.multiarray", "_reconstruct"),
            ("numpy._core.multiarray", "_reconstruct"),
            ("numpy", "ndarray"),
            ("numpy", "dtype"),
            ("_codecs", "encode"),
        }
    )

    def find_class(self, module: str, name: str) -> object:
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"unexpected object {module}.{name}")
        return super().find_class(module, name)


def _check(where: str, images: np.ndarray, labels: np.ndarray) -> Batch:
    """Checks one batch's counts and label range and turns CHW rows into NHWC images."""
    if images.shape != (BATCH_SIZE, _PIXELS) or labels.shape != (BATCH_SIZE,):
        raise UsageError(
            f"{where}: expected {BATCH_SIZE} images of {_PIXELS} bytes, found images "
            f"{images.shape} and {labels.shape[0]} labels"
        )
    low, high = int(labels.min()), int(labels.max())
    if low < 0 or high >= NUM_CLASSES:
        bad = low if low < 0 else high
        raise UsageError(f"{where}: label {bad} out of range 0..{NUM_CLASSES - 1}")
    nhwc = images.reshape(BATCH_SIZE, 3, 32, 32).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(nhwc), labels.astype(np.uint8)


def _decode_pickle(raw: bytes, where: str) -> Batch:
    try:
        batch = _Unpickler(io.BytesIO(raw), encoding="bytes").load()
        images, labels = batch[b"data"], np.asarray(batch[b"labels"])
    except (pickle.UnpicklingError, EOFError, KeyError, TypeError, ValueError) as err:
        raise UsageError(f"{where}: not a CIFAR-10 python batch ({err})") from err
    if not isinstance(images, np.ndarray) or images.dtype != np.uint8:
        raise UsageError(f"{where}: b'data' is not a uint8 array")
    if labels.dtype.kind not in "iu":
        raise UsageError(f"{where}: b'labels' are not integers")
    return _check(where, images, labels)


def _decode_binary(raw: bytes, where: str) -> Batch:
    if len(raw) != BATCH_SIZE * (1 + _PIXELS):
        raise UsageError(
            f"{where}: {len(raw)} bytes, expected {BATCH_SIZE} records of {1 + _PIXELS} bytes"
        )
    records = np.frombuffer(raw, dtype=np.uint8).reshape(BATCH_SIZE, 1 + _PIXELS)
    return _check(where, records[:, 1:], records[:, 0])


@dataclasses.dataclass(frozen=True)
class _Layout:
    """One version of the distribution: its extracted folder, archive and batch decoder."""

    folder: str
    archive: str
    suffix: str
    decode: Callable[[bytes, str], Batch]

    def batch_files(self) -> list[str]:
        return [b + self.suffix for b in (*TRAIN_BATCHES, TEST_BATCH)]


LAYOUTS = (
    _Layout("cifar-10-batches-py", "cifar-10-python.tar.gz", "", _decode_pickle),
    _Layout("cifar-10-batches-bin", "cifar-10-binary.tar.gz", ".bin", _decode_binary),
)


def _archive_batches(layout: _Layout, archive: Path) -> list[Batch]:
    """Decodes the six batch members of `archive` in one pass, returned in the fixed order."""
    wanted = {f"{layout.folder}/{name}": name for name in layout.batch_files()}
    found: dict[str, Batch] = {}
    try:
        with tarfile.open(archive, "r|gz") as tar:
            for member in tar:
                name = wanted.get(member.name.removeprefix("./"))
                if name is None or not member.isfile():
                    continue
                raw = tar.extractfile(member).read()  # a regular file: never None
                found[name] = layout.decode(raw, f"{archive}:{member.name}")
    except (OSError, EOFError, tarfile.TarError) as err:
        raise UsageError(f"{archive}: unreadable archive ({err})") from err
    missing = [m for m, name in wanted.items() if name not in found]
    if missing:
        raise UsageError(f"{archive}: missing {', '.join(missing)}")
    return [found[name] for name in layout.batch_files()]


def _batches(layout: _Layout, path: Path) -> list[Batch]:
    """The batches in `path`: all six of an archive, or the one of an extracted batch file."""
    if path.name == layout.archive:
        return _archive_batches(layout, path)
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise UsageError(f"{path}: unreadable ({err})") from err
    return [layout.decode(raw, str(path))]


def _pieces(layout: _Layout, path: Path) -> Iterator[bytes]:
    """The content-id stream: per batch, its labels then its NHWC images, all uint8."""
    for images, labels in _batches(layout, path):
        yield labels.tobytes()
        yield images.tobytes()


def _load(layout: _Layout, files: list[Path]) -> sources.Arrays:
    batches = [b for path in files for b in _batches(layout, path)]
    train, test = batches[: len(TRAIN_BATCHES)], batches[len(TRAIN_BATCHES) :]
    return sources.Arrays(
        np.concatenate([x for x, _ in train]),
        np.concatenate([y for _, y in train]).astype(np.int32),
        np.concatenate([x for x, _ in test]),
        np.concatenate([y for _, y in test]).astype(np.int32),
    )


def _find(folder: Path) -> tuple[_Layout, list[Path], Path] | None:
    """The first form present in `folder`: its layout, its files in order, and its path."""
    for layout in LAYOUTS:
        extracted = folder / layout.folder
        files = [extracted / name for name in layout.batch_files()]
        if all(f.is_file() for f in files):
            return layout, files, extracted
        archive = folder / layout.archive
        if archive.is_file():
            return layout, [archive], archive
    return None


def missing_message(name: str, dirs: list[Path]) -> str:
    where = ", ".join(str(d) for d in dirs)
    return (
        f"data set {name}: files not found. Put cifar-10-python.tar.gz (or its extracted "
        "cifar-10-batches-py/, or the binary version's cifar-10-binary.tar.gz or "
        f"cifar-10-batches-bin/) in one of: {where} (a {name}/ subfolder works too), "
        f"or run `lt data fetch {name}`, or pass --data-dir"
    )


def locate(name: str, data_dir: Path | None) -> sources.DataSource:
    """Finds CIFAR-10 and identifies it by the decoded arrays (decoding it once per file set).

    Args:
      name: the registered name (``cifar10``), also the subfolder searched.
      data_dir: ``--data-dir``, searched first.

    Raises:
      UsageError: no folder holds one of the forms, or a batch is malformed (wrong counts,
        shapes or labels).
    """
    dirs = sources.search_dirs(data_dir)
    for folder in sources.candidate_dirs(name, dirs):
        found = _find(folder)
        if found is None:
            continue
        layout, files, origin = found
        return sources.DataSource(
            name=name,
            content_id=content.content_id(files, functools.partial(_pieces, layout)),
            train_size=len(TRAIN_BATCHES) * BATCH_SIZE,
            image_shape=IMAGE_SHAPE,
            num_classes=NUM_CLASSES,
            origin=str(origin),
            loader=functools.partial(_load, layout, files),
        )
    raise UsageError(missing_message(name, dirs))
