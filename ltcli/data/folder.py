"""``folder:PATH`` image-folder data sets (the torchvision / Keras layout), decoded with Pillow.

PATH holds ``train/<class>/<image>`` and ``test/<class>/<image>``, or is a tar archive
(``.tar.gz``) of that layout, optionally inside one top-level folder. Labels are the indices of
the sorted class names. The images are decoded once and cached as ``.npz`` under lt's cache,
named by the content id: a sha256 over the sorted relative paths and each file's sha256, so a
folder and its archive share both the id and the cache.
"""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from ltcli.core import atomic, paths
from ltcli.core.errors import UsageError
from ltcli.data import content, sources

SPLITS = ("train", "test")
EXTENSIONS = frozenset(
    {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".ppm", ".pgm", ".tif", ".tiff", ".webp"}
)
CHANNELS = {"L": 1, "RGB": 3, "RGBA": 4}
"""Pillow image modes accepted, and the channels each becomes."""


def _relative(name: str) -> tuple[str, str] | None:
    """Splits an archive member name into (top-level folder or "", ``split/class/file``).

    Returns None for anything that is not an image of the layout (a README, a hidden file).
    """
    parts = [p for p in name.split("/") if p not in ("", ".")]
    top = parts.pop(0) if len(parts) == 4 else ""
    if len(parts) != 3 or parts[0] not in SPLITS or any(p.startswith(".") for p in parts):
        return None
    if Path(parts[2]).suffix.lower() not in EXTENSIONS:
        return None
    return top, "/".join(parts)


def _manifest_line(rel: str, data: bytes) -> bytes:
    return f"{rel}\0{hashlib.sha256(data).hexdigest()}\n".encode()


class _Tree:
    """An image folder on disk."""

    def __init__(self, root: Path) -> None:
        self.root = root
        found = []
        for split in SPLITS:
            if not (root / split).is_dir():
                continue
            for cls in os.scandir(root / split):
                if cls.is_dir():
                    names = [f.name for f in os.scandir(cls) if f.is_file()]
                    found += [f"{split}/{cls.name}/{name}" for name in names]
        self.rels = sorted(rel for rel in found if _relative(rel))

    def content_id(self) -> str:
        return content.tree_content_id(self.root, self.rels, self._manifest)

    def _manifest(self, path: Path) -> Iterator[bytes]:
        yield _manifest_line(path.relative_to(self.root).as_posix(), path.read_bytes())

    def entries(self) -> Iterator[tuple[str, bytes]]:
        for rel in self.rels:
            yield rel, (self.root / rel).read_bytes()


class _Archive:
    """An image folder packed in a tar archive, read as a stream (never extracted)."""

    def __init__(self, path: Path) -> None:
        self.root = path

    def content_id(self) -> str:
        return content.content_id([self.root], self._manifest)

    def _manifest(self, path: Path) -> Iterator[bytes]:
        lines = {rel: _manifest_line(rel, data) for rel, data in self.entries()}
        for rel in sorted(lines):
            yield lines[rel]

    def entries(self) -> Iterator[tuple[str, bytes]]:
        tops: set[str] = set()
        try:
            with tarfile.open(self.root, "r|*") as tar:
                for member in tar:
                    found = _relative(member.name) if member.isfile() else None
                    if found is None:
                        continue
                    tops.add(found[0])
                    if len(tops) > 1:
                        raise UsageError(
                            f"{self.root}: images under more than one top folder "
                            f"({', '.join(sorted(t or '.' for t in tops))})"
                        )
                    yield found[1], tar.extractfile(member).read()  # a regular file: never None
        except (OSError, EOFError, tarfile.TarError) as err:
            raise UsageError(f"{self.root}: unreadable archive ({err})") from err


def _decode(where: Path, rel: str, data: bytes) -> np.ndarray:
    try:
        with Image.open(io.BytesIO(data)) as image:
            if image.mode not in CHANNELS:
                raise UsageError(
                    f"{where}/{rel}: image mode {image.mode} is not supported "
                    f"(use {', '.join(CHANNELS)})"
                )
            pixels = np.asarray(image, dtype=np.uint8)
    except (UnidentifiedImageError, OSError) as err:
        raise UsageError(f"{where}/{rel}: not a readable image ({err})") from err
    return pixels.reshape(*pixels.shape[:2], -1)


def _describe(pixels: np.ndarray) -> str:
    mode = {n: m for m, n in CHANNELS.items()}[pixels.shape[2]]
    return f"{pixels.shape[1]}x{pixels.shape[0]} {mode}"


def _split_arrays(
    images: dict[str, np.ndarray], split: str, classes: list[str]
) -> tuple[np.ndarray, np.ndarray]:
    rels = sorted(rel for rel in images if rel.startswith(f"{split}/"))
    index = {name: i for i, name in enumerate(classes)}
    labels = [index[rel.split("/")[1]] for rel in rels]
    return np.stack([images[rel] for rel in rels]), np.asarray(labels, dtype=np.int32)


def _decode_all(tree: _Tree | _Archive) -> dict[str, np.ndarray]:
    """Decodes every image of `tree` and checks the layout, sizes and modes.

    Raises:
      UsageError: a split or class is missing, or an image differs in size or mode from the
        first (in sorted order); the message names the first odd file.
    """
    images = {rel: _decode(tree.root, rel, data) for rel, data in tree.entries()}
    rels = sorted(images)
    classes = {
        split: sorted({rel.split("/")[1] for rel in rels if rel.startswith(f"{split}/")})
        for split in SPLITS
    }
    for split, names in classes.items():
        if not names:
            raise UsageError(f"{tree.root}: no images under {split}/<class>/")
    if classes["train"] != classes["test"]:
        differ = sorted(set(classes["train"]) ^ set(classes["test"]))
        raise UsageError(
            f"{tree.root}: train/ and test/ must have the same class folders; "
            f"only in one of them: {', '.join(differ)}"
        )
    shape = images[rels[0]].shape
    odd = [rel for rel in rels if images[rel].shape != shape]
    if odd:
        raise UsageError(
            f"{tree.root}/{odd[0]}: a {_describe(images[odd[0]])} image, but {rels[0]} is "
            f"{_describe(images[rels[0]])}; all images must have one size and mode "
            f"({len(odd)} of {len(rels)} differ)"
        )
    x_train, y_train = _split_arrays(images, "train", classes["train"])
    x_test, y_test = _split_arrays(images, "test", classes["train"])
    return {
        "x_train": x_train,
        "y_train": y_train,
        "x_test": x_test,
        "y_test": y_test,
        "classes": np.asarray(classes["train"]),
        "image_shape": np.asarray(shape),
    }


def _cached(tree: _Tree | _Archive, content_id: str) -> Path:
    """The ``.npz`` of `tree`'s decoded arrays, written on first use."""
    path = paths.cache_dir() / "folders" / f"{content_id}.npz"
    if not path.is_file():
        atomic.write_npz(path, _decode_all(tree))
    return path


def _load(tree: _Tree | _Archive, content_id: str) -> sources.Arrays:
    with np.load(_cached(tree, content_id)) as arrays:
        return sources.Arrays(
            arrays["x_train"], arrays["y_train"], arrays["x_test"], arrays["y_test"]
        )


def locate(arg: str, data_dir: Path | None) -> sources.DataSource:
    """Finds the image folder or archive `arg` (relative to the working directory), decoding it
    into lt's cache unless an identical one is there already.

    Args:
      arg: PATH of ``folder:PATH``.
      data_dir: unused: PATH names the data itself.

    Raises:
      UsageError: PATH does not exist or is neither a folder nor a tar archive, or its layout,
        an image, or the images' sizes and modes are wrong.
    """
    del data_dir
    root = Path(arg).expanduser()
    if root.is_dir():
        tree: _Tree | _Archive = _Tree(root)
        if not tree.rels:
            raise UsageError(f"folder:{arg}: no images under {root}/train/<class>/")
    elif root.is_file() and tarfile.is_tarfile(root):
        tree = _Archive(root)
    else:
        raise UsageError(
            f"folder:{arg}: {root} is not a folder or tar archive; expected "
            "PATH/train/<class>/<image> and PATH/test/<class>/<image>, or a .tar.gz of them"
        )
    content_id = tree.content_id()
    with np.load(_cached(tree, content_id)) as arrays:
        y_train, classes = arrays["y_train"], arrays["classes"]
        image_shape = tuple(int(n) for n in arrays["image_shape"])
    return sources.DataSource(
        name=f"folder:{arg}",
        content_id=content_id,
        train_size=len(y_train),
        image_shape=image_shape,
        num_classes=len(classes),
        origin=str(root),
        loader=lambda: _load(tree, content_id),
    )
