"""``imagenet`` and ``imagenet:PATH``: ImageNet (ILSVRC-2012) in the layout most clusters hold,
torchvision's ImageFolder layout ``train/<wnid>/*.JPEG`` and ``val/<wnid>/*.JPEG``, read from
disk as it trains: 150 GB never fits in memory as arrays, so the `DataSource` has no arrays to
load and gives its splits through `DataSource.streamed` (`sources.StreamSplits`).

Files and labels: the classes are the sorted folder names of ``train/`` (``val/`` must hold the
same set); a class's files are the regular files directly in its folder whose names end in
``.jpeg``, ``.jpg`` or ``.png`` (any case; hidden names skipped), sorted by relative path. The
label of a file is the index of its folder's name among the classes.

Preprocessing follows torchvision's ImageNet recipe with open_lth's crop scale and ratio
(``datasets/imagenet.py`` of facebookresearch/open_lth), in `ltcli.data.imagenet_images`:
`TrainTransform` (random-resized crop and flip), `EvalTransform` (resize and centre crop),
`MEAN` and `STD`. How the content id is
computed and cached, how bad images are found, and every departure from open_lth are in the
docs, "ImageNet on disk" (``docs/notes/imagenet.md``).
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import hashlib
import io
import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

import numpy as np
from PIL import Image

from ltcli.core import atomic, paths
from ltcli.core.errors import UsageError
from ltcli.core.meter import Meter
from ltcli.data import sources
from ltcli.data.imagenet_images import (
    MEAN,
    STD,
    EvalTransform,
    TrainTransform,
    decode,
    rgb,
    unreadable,
)

NAME = "imagenet"
SPLITS = ("train", "val")
EXTENSIONS = frozenset({".jpeg", ".jpg", ".png"})
_VERSION = 1
"""Of the content id and its cache entries; a new one recomputes every id."""
_WINDOW = 1024
"""Files queued for the reading threads at most (bounds the futures in flight)."""
_METER_FILES = 1000
"""A pass over fewer files shows no progress meter."""
_SHOWN = 10
"""Bad files named in one message; the rest are counted."""

_T = TypeVar("_T")
_R = TypeVar("_R")


def _examine(path: Path) -> tuple[int, str, str | None]:
    """Reads `path` once: (size, sha256 of its bytes, why it is not a usable image or None).

    A JPEG is decoded at 1/8 scale (its DCT scaling): all its data is still read, so a
    truncated file fails, at a fraction of a full decode's cost.
    """
    try:
        data = path.read_bytes()
    except OSError as err:
        return 0, "", str(unreadable(path, err, "cannot be read"))
    digest = hashlib.sha256(data).hexdigest()
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.draft(image.mode, (max(1, image.width // 8), max(1, image.height // 8)))
            rgb(image)
    except Exception as err:  # see `decode`
        return len(data), digest, str(unreadable(path, err))
    return len(data), digest, None


def problems_message(where: str, problems: list[str], total: int) -> str:
    """One message for `problems` (a line per bad file, from `verify`) of `total` images:
    the first few named, the rest counted."""
    shown = "\n  ".join(problems[:_SHOWN])
    more = f"\n  ... and {len(problems) - _SHOWN} more" if len(problems) > _SHOWN else ""
    return (
        f"{where}: {len(problems)} of {total} images cannot be decoded (fix or remove them):"
        f"\n  {shown}{more}"
    )


def _threaded(fn: Callable[[_T], _R], items: Sequence[_T], label: str) -> Iterator[_R]:
    """`fn` over `items` on a pool of threads (reading and decoding release the GIL), in
    order, with a progress meter on stderr when there are many."""
    meter = Meter(label, len(items), unit="files") if len(items) >= _METER_FILES else None
    with ThreadPoolExecutor(max_workers=min(32, (os.cpu_count() or 1) + 4)) as pool:
        pending: collections.deque[Future[_R]] = collections.deque()
        for item in items:
            pending.append(pool.submit(fn, item))
            if len(pending) >= _WINDOW:
                yield _counted(pending.popleft().result(), meter)
        while pending:
            yield _counted(pending.popleft().result(), meter)
    if meter:
        meter.close()


def _counted(result: _R, meter: Meter | None) -> _R:
    if meter:
        meter.add(1)
    return result


# The file list.


@dataclasses.dataclass(frozen=True)
class Tree:
    """An ImageNet folder's classes and files, from one scan (a stat per file, no reads).

    Attributes:
      root: the folder that holds ``train/`` and ``val/``.
      classes: the sorted class folder names (wnids).
      rels: every image's path relative to `root` (``train/<wnid>/<name>``), sorted.
      fingerprint: sha256 of the classes and each file's (relative path, size, mtime in ns).
    """

    root: Path
    classes: tuple[str, ...]
    rels: tuple[str, ...]
    fingerprint: str

    def split(self, split: str) -> Examples:
        rels = [rel for rel in self.rels if rel.startswith(f"{split}/")]
        index = {name: i for i, name in enumerate(self.classes)}
        labels = [index[rel.split("/", 2)[1]] for rel in rels]
        return Examples(self.root, rels, labels)


def _names(items: Sequence[str]) -> str:
    more = f" and {len(items) - _SHOWN} more" if len(items) > _SHOWN else ""
    return ", ".join(items[:_SHOWN]) + more


def _class_dirs(root: Path, split: str) -> list[str]:
    try:
        return sorted(e.name for e in os.scandir(root / split) if e.is_dir() and e.name[0] != ".")
    except OSError as err:
        raise unreadable(root / split, err, "cannot be listed") from err


def _is_image(entry: os.DirEntry[str]) -> bool:
    name = entry.name
    return name[0] != "." and os.path.splitext(name)[1].lower() in EXTENSIONS and entry.is_file()


def scan(root: Path) -> Tree:
    """Lists the classes and images of the ImageNet folder `root`.

    Raises:
      UsageError: ``train/`` or ``val/`` is missing or holds no images in class folders, or
        their class folders differ.
    """
    for split in SPLITS:
        if not (root / split).is_dir():
            raise UsageError(
                f"{root}: no {split}/ folder; expected {root}/train/<wnid>/*.JPEG and "
                f"{root}/val/<wnid>/*.JPEG (torchvision's ImageFolder layout)"
            )
    classes = {split: _class_dirs(root, split) for split in SPLITS}
    if classes["train"] != classes["val"]:
        only = {
            split: sorted(set(classes[split]) - set(classes[other]))
            for split, other in (("train", "val"), ("val", "train"))
        }
        loose = [e.name for e in os.scandir(root / "val") if _is_image(e)]
        hint = (
            f"; val/ holds {len(loose)} images directly: sort them into val/<wnid>/ folders"
            if loose
            else ""
        )
        raise UsageError(
            f"{root}: train/ and val/ must hold the same class folders; "
            + "; ".join(f"only in {s}/: {_names(only[s])}" for s in SPLITS if only[s])
            + hint
        )
    fingerprint = hashlib.sha256(f"lt-imagenet-files {_VERSION}\n".encode())
    fingerprint.update(("\0".join(classes["train"]) + "\n").encode())
    found: list[tuple[str, int, int]] = []
    for split in SPLITS:
        before = len(found)
        for name in classes[split]:
            try:
                entries = [e for e in os.scandir(root / split / name) if _is_image(e)]
                for entry in entries:
                    st = entry.stat()
                    found.append((f"{split}/{name}/{entry.name}", st.st_size, st.st_mtime_ns))
            except OSError as err:
                raise unreadable(root / split / name, err, "cannot be listed") from err
        if len(found) == before:
            raise UsageError(
                f"{root}: no images under {split}/<wnid>/ "
                f"({', '.join(sorted(EXTENSIONS))}, any case)"
            )
    found.sort()
    for rel, size, mtime in found:
        fingerprint.update(f"{rel}\0{size}\0{mtime}\n".encode())
    return Tree(
        root, tuple(classes["train"]), tuple(r for r, _, _ in found), fingerprint.hexdigest()
    )


# The content id and its cache.


@dataclasses.dataclass(frozen=True)
class Index:
    """An indexed ImageNet folder: its file list and content id, and how the id was had.

    Attributes:
      tree: the classes and files.
      content_id: see the module's docstring.
      cached: the id came from lt's cache (the fingerprint was unchanged), nothing was read.
      cache_problem: why the id could not be written to the cache; None when it was (or it
        came from there).
    """

    tree: Tree
    content_id: str
    cached: bool
    cache_problem: str | None = None

    def describe(self) -> str:
        """What ``lt data ls`` says of the id."""
        files = len(self.tree.rels)
        if self.cached:
            return f"content id cached; fingerprint of {files} files unchanged"
        text = f"content id computed now (none cached for this file list): read {files} files"
        return text + (f"; not cached: {self.cache_problem}" if self.cache_problem else "")


def _ids_file(root: Path) -> Path:
    key = hashlib.sha256(str(root.resolve()).encode()).hexdigest()
    return paths.cache_dir() / "imagenet-ids" / f"{key}.json"


def _cached_id(root: Path, tree: Tree) -> str | None:
    try:
        entry = atomic.read_json(_ids_file(root))
    except (OSError, ValueError):
        return None
    if not isinstance(entry, dict):
        return None
    same = (entry.get("version"), entry.get("fingerprint")) == (_VERSION, tree.fingerprint)
    content_id = entry.get("content_id")
    return content_id if same and isinstance(content_id, str) else None


def _compute_id(tree: Tree) -> str:
    """Reads and decodes every file of `tree` once; returns the content id.

    Raises:
      UsageError: files that cannot be read or decoded; the message names them.
    """
    digest = hashlib.sha256(f"lt-imagenet {_VERSION}\n".encode())
    digest.update(("\0".join(tree.classes) + "\n").encode())
    problems = []
    files = [tree.root / rel for rel in tree.rels]
    label = f"{NAME}: indexing {tree.root}"
    for rel, (size, sha, problem) in zip(tree.rels, _threaded(_examine, files, label), strict=True):
        if problem:
            problems.append(problem)
        digest.update(f"{rel}\0{size}\0{sha}\n".encode())
    if problems:
        raise UsageError(problems_message(str(tree.root), problems, len(files)))
    return digest.hexdigest()


def index(root: Path) -> Index:
    """Scans the ImageNet folder `root` and finds its content id: from lt's cache when the
    fingerprint of its file list is unchanged, else by reading every file once (then cached).

    Raises:
      UsageError: the layout is wrong (see `scan`), or files cannot be read or decoded.
    """
    tree = scan(root)
    cached = _cached_id(root, tree)
    if cached is not None:
        return Index(tree, cached, cached=True)
    content_id = _compute_id(tree)
    entry = {
        "version": _VERSION,
        "root": str(root.resolve()),
        "fingerprint": tree.fingerprint,
        "content_id": content_id,
        "files": len(tree.rels),
    }
    try:
        atomic.write_json(_ids_file(root), entry)
    except OSError as err:  # a read-only cache costs a full read next time, nothing else
        return Index(tree, content_id, cached=False, cache_problem=str(err))
    return Index(tree, content_id, cached=False)


# Examples and transforms: plain objects, pickled to worker processes.


class Examples:
    """One split, read from disk example by example: the image as decoded (uint8 (H, W, 3)
    RGB, its own size) and its label. Holds only the root, relative paths and labels (numpy
    arrays, quick to pickle), no open files.

    Raises (on reading):
      UsageError: the file cannot be decoded now (it changed since it was indexed).
    """

    def __init__(self, root: Path | str, rels: Sequence[str], labels: Sequence[int]) -> None:
        if len(rels) != len(labels):
            raise ValueError(f"{len(rels)} paths but {len(labels)} labels")
        self.root = str(root)
        self.rels = np.array([rel.encode() for rel in rels], dtype=bytes)
        self.labels = np.asarray(labels, dtype=np.int32)

    def __len__(self) -> int:
        return len(self.labels)

    def path(self, index: int) -> Path:
        return Path(self.root) / self.rels[index].decode()

    def __getitem__(self, index: int) -> tuple[np.ndarray, int]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"example {index} of {len(self)}")
        path = self.path(index)
        try:
            image = decode(path)
        except UsageError as err:
            raise UsageError(f"{err}; it changed after lt indexed {self.root}?") from err
        return image, int(self.labels[index])


class Streams:
    """`DataSource.streamed` of an ImageNet folder: returns its `sources.StreamSplits`.

    Attributes:
      index: the folder's `Index` (for ``lt data ls``).
      image_size: the side of the square images the transforms make.
    """

    def __init__(self, index: Index, image_size: int) -> None:
        self.index = index
        self.image_size = image_size
        self._splits: sources.StreamSplits | None = None

    def __call__(self) -> sources.StreamSplits:
        if self._splits is None:  # a million paths: built once
            self._splits = sources.StreamSplits(
                train=self.index.tree.split("train"),
                test=self.index.tree.split("val"),
                train_transform=TrainTransform(self.image_size),
                eval_transform=EvalTransform(self.image_size),
                mean=MEAN.copy(),
                std=STD.copy(),
            )
        return self._splits


def no_arrays(name: str) -> sources.Arrays:
    raise UsageError(
        f"{name} streams from disk; it does not fit in memory as arrays, so it cannot be "
        "loaded whole (read it through DataSource.streamed)"
    )


def missing_message(dirs: list[Path]) -> str:
    where = ", ".join(str(d) for d in dirs)
    return (
        f"data set {NAME}: files not found. Put ImageNet in torchvision's ImageFolder layout, "
        f"{NAME}/train/<wnid>/*.JPEG and {NAME}/val/<wnid>/*.JPEG, in one of: {where}, or "
        f"pass --data-dir, or name the folder: {NAME}:PATH (lt cannot download ImageNet)"
    )


def _find(data_dir: Path | None) -> Path:
    dirs = sources.search_dirs(data_dir)
    for folder in sources.candidate_dirs(NAME, dirs):
        if all((folder / split).is_dir() for split in SPLITS):
            return folder
    raise UsageError(missing_message(dirs))


def locate(arg: str, data_dir: Path | None, image_size: int = 224) -> sources.DataSource:
    """Finds ImageNet and identifies it by content (a full read only when its file list
    changed since the last time, see the module's docstring).

    Args:
      arg: "" to search for an ``imagenet/`` folder (or a folder) holding ``train/`` and
        ``val/`` in `data_dir`, ``$LT_DATA_DIR`` and lt's data cache (the name ``imagenet``);
        else PATH of ``imagenet:PATH``, the folder holding them.
      data_dir: searched first when `arg` names no folder.
      image_size: the side of the square images the model sees (224).

    Raises:
      UsageError: not found, the layout is wrong, or images cannot be decoded (named).
    """
    if image_size < 1:
        raise UsageError(f"{NAME}: image size must be positive, not {image_size}")
    if not arg:
        root, name = _find(data_dir), NAME
    else:
        root, name = Path(arg).expanduser(), f"{NAME}:{arg}"
        if not root.is_dir():
            raise UsageError(
                f"{name}: {root} is not a folder; expected PATH/train/<wnid>/*.JPEG and "
                "PATH/val/<wnid>/*.JPEG"
            )
    found = index(root)
    return sources.DataSource(
        name=name,
        content_id=found.content_id,
        train_size=sum(rel.startswith("train/") for rel in found.tree.rels),
        image_shape=(image_size, image_size, 3),
        num_classes=len(found.tree.classes),
        origin=str(root),
        loader=functools.partial(no_arrays, name),
        streamed=Streams(found, image_size),
        resized=True,
    )


def describe(source: sources.DataSource) -> str | None:
    """How `source`'s content id was had (cached or computed now), for ``lt data ls``; None
    for a data set that is not an ImageNet folder."""
    streams = source.streamed
    return streams.index.describe() if isinstance(streams, Streams) else None


def _problem(item: tuple[sources.Examples, int]) -> str | None:
    examples, i = item
    try:
        if isinstance(examples, Examples):
            decode(examples.path(i))
        else:
            examples[i]
    except UsageError as err:
        return str(err)
    return None


def verify(target: sources.DataSource | sources.StreamSplits | Path | str) -> list[str]:
    """Decodes every image of `target` fully once (``lt data ls --verify``).

    Args:
      target: a `DataSource` with `streamed`, or the `StreamSplits` it gives (their train and
        test files), or an ImageNet folder.

    Returns:
      One line per file that cannot be decoded, naming it and why; empty when all decode.

    Raises:
      UsageError: a folder's layout is wrong (see `scan`).
    """
    parts: list[sources.Examples]
    if isinstance(target, sources.DataSource):
        if target.streamed is None:
            raise UsageError(f"{target.name}: loads as arrays; there are no files to verify")
        splits = target.streamed()
        parts, where = [splits.train, splits.test], target.origin
    elif isinstance(target, sources.StreamSplits):
        parts = [target.train, target.test]
        where = getattr(target.train, "root", "the streamed splits")
    else:
        tree = scan(Path(target))
        parts, where = [tree.split(s) for s in SPLITS], str(tree.root)
    items = [(examples, i) for examples in parts for i in range(len(examples))]
    found = _threaded(_problem, items, f"{NAME}: decoding {where}")
    return [problem for problem in found if problem]
