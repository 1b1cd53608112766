"""MNIST and Fashion-MNIST from their original IDX files (``.gz`` or unpacked), with numpy."""

from __future__ import annotations

import gzip
import struct
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from ltcli.core.errors import UsageError
from ltcli.data import content, sources

FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
_SHAPES = ((60000, 28, 28), (60000,), (10000, 28, 28), (10000,))
_MAGIC = {3: 0x00000803, 1: 0x00000801}
SYSTEM_DIRS = {"fashion-mnist": Path("/usr/share/datasets/fashion-mnist")}
KNOWN_CONTENT = {
    "b2d8f5bf39174ee5ffeefa97e42d673c35432b411bb5d1f74fbbeddae7f1690a": "mnist",
    "14410854cf7a289477dcfc7df3f8ec24741e281cdcc425ede0d9a748ca630214": "fashion-mnist",
}
"""Content ids of the original releases: the two share a format, and must not be confused."""
_CHUNK = 1 << 20


def _open(path: Path):
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


def _pieces(path: Path) -> Iterator[bytes]:
    with _open(path) as handle:
        while piece := handle.read(_CHUNK):
            yield piece


def _header(path: Path) -> tuple[int, ...]:
    """Checks the magic number and returns the shape stored in an IDX header."""
    try:
        with _open(path) as handle:
            (magic,) = struct.unpack(">I", handle.read(4))
            ndim = magic & 0xFF
            if _MAGIC.get(ndim) != magic:
                raise UsageError(f"{path}: not an IDX file of unsigned bytes (magic {magic:#x})")
            return struct.unpack(f">{ndim}I", handle.read(4 * ndim))
    except (OSError, EOFError, struct.error) as err:
        raise UsageError(f"{path}: unreadable IDX file ({err})") from err


def _read(path: Path) -> np.ndarray:
    shape = _header(path)
    with _open(path) as handle:
        raw = handle.read()
    offset = 4 + 4 * len(shape)
    data = np.frombuffer(raw, dtype=np.uint8, offset=offset)
    if data.size != int(np.prod(shape)):
        raise UsageError(f"{path}: truncated ({data.size} of {int(np.prod(shape))} bytes)")
    return data.reshape(shape)


def _find_files(folder: Path) -> list[Path] | None:
    found = []
    for stem in FILES:
        options = [folder / f"{stem}.gz", folder / stem]
        hit = next((p for p in options if p.is_file()), None)
        if hit is None:
            return None
        found.append(hit)
    return found


def missing_message(name: str, dirs: list[Path]) -> str:
    where = ", ".join(str(d) for d in dirs)
    return (
        f"data set {name}: files not found. Put {', '.join(f + '.gz' for f in FILES)} "
        f"in one of: {where} (a {name}/ subfolder works too), or run `lt data fetch {name}`, "
        "or pass --data-dir"
    )


def locate(name: str, data_dir: Path | None) -> sources.DataSource:
    """Finds an IDX data set (`name` is ``mnist`` or ``fashion-mnist``) and checks its headers.

    Raises:
      UsageError: no folder holds all four files, or a file's magic number or shape is wrong.
    """
    dirs = sources.search_dirs(data_dir, SYSTEM_DIRS.get(name))
    for folder in sources.candidate_dirs(name, dirs):
        files = _find_files(folder)
        if files is None:
            continue
        for path, shape in zip(files, _SHAPES, strict=True):
            if _header(path) != shape:
                raise UsageError(f"{path}: expected shape {shape}, found {_header(path)}")

        def load(files: list[Path] = files) -> sources.Arrays:
            x_train, y_train, x_test, y_test = (_read(p) for p in files)
            return sources.Arrays(
                x_train[..., None],
                y_train.astype(np.int32),
                x_test[..., None],
                y_test.astype(np.int32),
            )

        content_id = content.content_id(files, _pieces)
        actually = KNOWN_CONTENT.get(content_id, name)
        if actually != name:
            raise UsageError(f"data set {name}: the files in {folder} are {actually}, not {name}")
        return sources.DataSource(
            name=name,
            content_id=content_id,
            train_size=_SHAPES[0][0],
            image_shape=(28, 28, 1),
            num_classes=10,
            origin=str(folder),
            loader=load,
        )
    raise UsageError(missing_message(name, dirs))
