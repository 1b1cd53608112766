"""Content ids: sha256 over decoded file contents, cached by (path, size, mtime).

Hashing the decoded bytes (not the ``.gz``) makes a re-gzipped or unpacked copy of the same
data give the same id; the cache keeps a rerun from decompressing 50 MB just to find its id.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Callable, Iterable
from pathlib import Path

from ltcli.core import atomic, paths


def _cache_file() -> Path:
    return paths.cache_dir() / "content-ids.json"


def _key(files: Iterable[Path]) -> str:
    parts = []
    for f in files:
        st = f.stat()
        parts.append(f"{f.resolve()}|{st.st_size}|{st.st_mtime_ns}")
    return "\n".join(parts)


def _memoized(key: str, files: list[Path], read: Callable[[Path], Iterable[bytes]]) -> str:
    cache = _cache_file()
    try:
        known = atomic.read_json(cache)
    except (OSError, ValueError):
        known = {}
    if key in known:
        return known[key]
    digest = hashlib.sha256()
    for f in files:
        for piece in read(f):
            digest.update(piece)
    value = digest.hexdigest()
    known[key] = value
    with contextlib.suppress(OSError):  # a read-only cache only costs speed
        atomic.write_json(cache, known)
    return value


def content_id(files: list[Path], read: Callable[[Path], Iterable[bytes]]) -> str:
    """sha256 of the concatenated decoded contents of `files`, in order.

    Args:
      files: the files that make up a data set, in a fixed order.
      read: yields the decoded bytes of one file in pieces.
    """
    return _memoized(_key(files), files, read)


def tree_content_id(root: Path, rels: list[str], read: Callable[[Path], Iterable[bytes]]) -> str:
    """`content_id` of the files `rels` (paths relative to `root`, in order), for folders of
    thousands of files (an image folder).

    The id is the same as `content_id` would give, but it is memoized under a sha256 of the
    resolved root and each file's (relative path, size, mtime): one stat per file and no
    path resolution, and a cache entry of constant size.
    """
    key = hashlib.sha256(str(root.resolve()).encode())
    for rel in rels:
        st = (root / rel).stat()
        key.update(f"\n{rel}|{st.st_size}|{st.st_mtime_ns}".encode())
    return _memoized("tree:" + key.hexdigest(), [root / rel for rel in rels], read)
