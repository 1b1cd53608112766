"""Text data sets for a byte- or character-level language model: ``text:PATH`` and
``python-stdlib``.

PATH is a UTF-8 file, a folder (every regular file under it, recursively, except names that
start with ``.`` and anything under a ``.`` folder or ``__pycache__``), or a glob pattern
(``**`` allowed) whose matches are filtered the same way. The files are read in sorted order
of their path relative to the root (a folder, a file's parent, or a pattern's non-glob prefix)
and concatenated, with nothing between them, into one token stream:

- ``tokens = "bytes"``: the UTF-8 bytes (uint8, vocabulary 256);
- ``tokens = "chars"``: the index of each character in the sorted list of the corpus's
  distinct characters (int32; vocabulary their count), as char-level nanoGPT does.

The split is by position: of N tokens, train is ``[0, floor(0.9 N))``, validation
``[floor(0.9 N), floor(0.95 N))`` and test ``[floor(0.95 N), N)``; each must hold at least
`MIN_SPLIT_TOKENS` tokens. Evaluation scores windows spread evenly over the whole of
validation and of test (`eval_starts`).

The content id is a sha256 over the token unit and, for each file in order, its relative path
and bytes: the same wherever the files lie, different when a byte, a file name or the unit
changes. The files are read once, when the data set is located; nothing is cached on disk.
"""

from __future__ import annotations

import glob
import hashlib
import os
import sysconfig
from pathlib import Path

import numpy as np

from ltcli.core.errors import UsageError
from ltcli.data import sources

TOKENS = ("bytes", "chars")
"""The token units."""

MIN_SPLIT_TOKENS = 64
"""The fewest tokens each of train, validation and test may hold."""

_MAGIC = frozenset("*?[")


def split_points(n: int) -> tuple[int, int]:
    """Where validation and test begin in a stream of `n` tokens: floor(0.9 n), floor(0.95 n)."""
    return 9 * n // 10, 19 * n // 20


def eval_starts(length: int, count: int, context: int) -> np.ndarray:
    """Where the windows that evaluation scores begin in a split of `length` tokens: `count`
    windows of ``context + 1`` tokens (at most as many as the split holds), spread evenly over
    the whole split.

    The split holds ``(length - 1) // context`` windows, one every `context` tokens (each
    window's last token is the next one's first, so together they score every token after
    the split's first once, up to the end of the last whole window: the last
    ``(length - 1) % context`` tokens are in none). Cut into `count` runs of equal length,
    evaluation takes the middle window of each: a systematic sample with one fixed draw, the
    same for every seed, replicate, level and member, which reaches every part of the split.
    (Taking the first
    `count` windows, as lt did, scored the opening of one file of ``python-stdlib``.) With
    `count` at least the windows the split holds it takes all of them: the whole split, up
    to its last whole window.

    Raises:
      ValueError: the split holds no window.
    """
    available = (length - 1) // context
    if available < 1:
        raise ValueError(f"a split of {length} tokens holds no window of {context + 1}")
    n = min(count, available)
    return (2 * np.arange(n, dtype=np.int64) + 1) * available // (2 * n) * context


def _min_tokens() -> int:
    """The shortest stream whose three splits each hold `MIN_SPLIT_TOKENS` tokens."""
    n = 3 * MIN_SPLIT_TOKENS
    while True:
        a, b = split_points(n)
        if min(a, b - a, n - b) >= MIN_SPLIT_TOKENS:
            return n
        n += 1


def _skipped(rel: str) -> bool:
    parts = rel.split("/")
    return any(p.startswith(".") for p in parts) or "__pycache__" in parts[:-1]


def _walk(root: Path) -> list[str]:
    """Relative paths of the regular files under `root`, less dot names and __pycache__."""
    rels = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if not d.startswith(".") and d != "__pycache__"]
        for name in files:
            path = Path(folder, name)
            if not name.startswith(".") and path.is_file():
                rels.append(path.relative_to(root).as_posix())
    return sorted(rels)


def _split_pattern(pattern: str) -> tuple[Path, str]:
    """(the pattern's non-glob prefix, the rest), or (the path, "") for no glob at all."""
    parts = Path(pattern).parts
    for i, part in enumerate(parts):
        if _MAGIC & set(part):
            return Path(*parts[:i]) if i else Path(), "/".join(parts[i:])
    return Path(pattern), ""


def _matches(root: Path, rest: str) -> list[str]:
    found = glob.glob(rest, root_dir=root, recursive=True)
    rels = {Path(rel).as_posix() for rel in found if (root / rel).is_file()}
    return sorted(rel for rel in rels if not _skipped(rel))


def _resolve(arg: str, data_dir: Path | None) -> tuple[Path, str]:
    """(root, glob rest) of `arg`, against `data_dir` when it is there, else the working
    directory."""
    prefix, rest = _split_pattern(os.path.expanduser(arg))
    if data_dir is not None and not prefix.is_absolute():
        there = data_dir / prefix
        found = (there.is_dir() and bool(_matches(there, rest))) if rest else there.exists()
        if found:
            return there, rest
    return prefix, rest


def _files(arg: str, data_dir: Path | None) -> tuple[Path, list[str], str]:
    """(root, sorted relative paths, origin) of ``text:ARG``."""
    root, rest = _resolve(arg, data_dir)
    also = f" (nor under {data_dir})" if data_dir is not None and not root.is_absolute() else ""
    if rest:
        rels = _matches(root, rest) if root.is_dir() else []
        if not rels:
            where = root.resolve() if root.is_dir() else f"{root.resolve()}, no such folder"
            raise UsageError(f"text:{arg}: no files match {rest!r} under {where}{also}")
        return root, rels, str(root / rest)
    if root.is_dir():
        rels = _walk(root)
        if not rels:
            raise UsageError(
                f"text:{arg}: no files under {root} (dot files and __pycache__ are skipped)"
            )
        return root, rels, str(root)
    if root.is_file():
        return root.parent, [root.name], str(root)
    if root.exists():
        raise UsageError(f"text:{arg}: {root} is not a regular file or folder")
    raise UsageError(f"text:{arg}: no such file or folder: {root.resolve()}{also}")


def _source(name: str, root: Path, rels: list[str], origin: str, tokens: str) -> sources.DataSource:
    """Reads, checks and hashes the files once; the source keeps the token stream."""
    digest = hashlib.sha256(f"lt-text\0{tokens}\0".encode())
    pieces: list[bytes] = []  # bytes: the files' bytes; chars: nothing
    texts: list[str] = []  # chars: the files' text; bytes: nothing
    for rel in rels:
        path = root / rel
        try:
            raw = path.read_bytes()
        except OSError as err:
            raise UsageError(f"{name}: cannot read {path} ({err.strerror or err})") from err
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as err:
            raise UsageError(
                f"{name}: {path} is not UTF-8 text (byte 0x{raw[err.start]:02x} at offset "
                f"{err.start}: {err.reason})"
            ) from err
        digest.update(f"{rel}\0{len(raw)}\0".encode())
        digest.update(raw)
        if tokens == "bytes":
            pieces.append(raw)
        else:
            texts.append(text)

    if tokens == "bytes":
        stream = np.frombuffer(b"".join(pieces), dtype=np.uint8)
        vocabulary = 256
        widths = None
    else:
        points = np.frombuffer("".join(texts).encode("utf-32-le"), dtype=np.uint32)
        del texts
        present = np.bincount(points, minlength=1) > 0
        chars = np.flatnonzero(present)  # sorted code points: sorted(set(text))
        stream = (np.cumsum(present) - 1)[points].astype(np.int32)
        vocabulary = len(chars)
        widths = 1 + (chars >= 0x80) + (chars >= 0x800) + (chars >= 0x10000)

    n = len(stream)
    a, b = split_points(n)
    if min(a, b - a, n - b) < MIN_SPLIT_TOKENS:
        raise UsageError(
            f"{name if origin in name else f'{name} ({origin})'}: {n} {tokens}, split "
            f"{a}/{b - a}/{n - b} "
            f"(train/validation/test, 90/5/5 by position); each split needs at least "
            f"{MIN_SPLIT_TOKENS} tokens, so at least {_min_tokens()} {tokens} in all"
        )
    stream.flags.writeable = False

    def load() -> sources.TextArrays:
        validation, test = stream[a:b], stream[b:]
        return sources.TextArrays(
            stream[:a].copy(),
            validation.copy(),
            test.copy(),
            np.ones(256, np.int64) if widths is None else widths.astype(np.int64),
        )

    return sources.DataSource(
        name=name,
        content_id=digest.hexdigest(),
        train_size=a,
        image_shape=(),
        num_classes=vocabulary,
        origin=origin,
        loader=load,
        text=True,
    )


def _check_tokens(name: str, tokens: str) -> None:
    if tokens not in TOKENS:
        raise UsageError(f"{name}: data.tokens must be one of {', '.join(TOKENS)}, not {tokens!r}")


def locate(arg: str, data_dir: Path | None, tokens: str = "bytes") -> sources.DataSource:
    """Finds and reads ``text:ARG``.

    Args:
      arg: PATH of ``text:PATH``: a UTF-8 file, a folder, or a glob pattern.
      data_dir: a relative PATH is looked up here first (when it is found there), then in the
        working directory.
      tokens: ``bytes`` or ``chars``.

    Raises:
      UsageError: an unknown `tokens`, no such path, no files, a file that is not UTF-8 (named
        with the byte offset), or a split shorter than `MIN_SPLIT_TOKENS`.
    """
    name = f"text:{arg}"
    _check_tokens(name, tokens)
    root, rels, origin = _files(arg, data_dir)
    return _source(name, root, rels, origin, tokens)


def stdlib(tokens: str = "bytes") -> sources.DataSource:
    """``python-stdlib``: the top-level ``*.py`` files of this interpreter's standard library,
    as ``text:<stdlib>/*.py`` (real text on every machine with Python).

    Raises:
      UsageError: an unknown `tokens`, or no ``*.py`` files there.
    """
    _check_tokens("python-stdlib", tokens)
    folder = Path(sysconfig.get_paths()["stdlib"])
    rels = _matches(folder, "*.py") if folder.is_dir() else []
    if not rels:
        raise UsageError(f"python-stdlib: no *.py files in {folder}")
    return _source("python-stdlib", folder, rels, str(folder), tokens)
