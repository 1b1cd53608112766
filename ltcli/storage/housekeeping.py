"""Removing runs from a store (``lt rm``) and what runs leave behind (``lt gc``).

A run another process holds (its ``.lock``, see `Store.lock`) is never touched: `remove_runs`
refuses it and `collect` skips it. While this process removes or cleans a run it holds that
lock itself, so an ``lt run`` of the run started meanwhile fails at once rather than writing
into a folder being deleted.
"""

from __future__ import annotations

import contextlib
import dataclasses
import shutil
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ltcli.core.errors import LtError
from ltcli.storage.store import MANIFEST, Store


@dataclasses.dataclass(frozen=True)
class Removal:
    """A file or folder of a store to remove, its size in bytes, and why it goes."""

    path: Path
    size: int
    why: str


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def hold(store: Store, run_id: str) -> contextlib.AbstractContextManager[bool]:
    """Holds run `run_id` unless another process does; yields whether this process holds it.
    A run without a ``.lock`` file was never trained: nothing holds it, and no file is made."""
    return store.try_lock(run_id, create=False)


def busy(store: Store, run_id: str) -> bool:
    """Whether another process holds run `run_id` (is training it)."""
    with hold(store, run_id) as held:
        return not held


def _refuse(run_id: str) -> LtError:
    return LtError(
        f"run {run_id[:12]} is being trained by another lt process; "
        "wait for it to finish (or stop it), then remove it"
    )


def check_free(store: Store, run_ids: Sequence[str]) -> None:
    """Raises LtError if another process holds one of `run_ids`."""
    for run_id in run_ids:
        if busy(store, run_id):
            raise _refuse(run_id)


def remove_runs(store: Store, run_ids: Sequence[str]) -> list[Removal]:
    """Removes whole runs, each folder with everything in it.

    Returns:
      What was removed: one `Removal` per run.

    Raises:
      LtError: another process holds one of the runs; then nothing is removed.
    """
    with contextlib.ExitStack() as stack:
        for run_id in run_ids:
            if not stack.enter_context(hold(store, run_id)):
                raise _refuse(run_id)
        removals = [Removal(store.run_dir(r), store.size_bytes(r), "run") for r in run_ids]
        for removal in removals:
            shutil.rmtree(removal.path)
    return removals


def _stale(store: Store, run_id: str, checkpoint: Path) -> bool:
    """Whether every cell the level checkpoint holds is finished (or it cannot be read, so the
    runner would discard it anyway): resuming from it would train nothing."""
    try:
        with np.load(checkpoint) as saved:
            cells = [str(c) for c in saved["cells"]]
    except (OSError, ValueError, KeyError, zipfile.BadZipFile):
        return True
    return all((store.run_dir(run_id) / c / MANIFEST).is_file() for c in cells)


def garbage(store: Store, run_id: str) -> list[Removal]:
    """What ``lt gc`` removes from run `run_id` (which the caller holds):

    - the whole run folder if it has no finished cell and no checkpoint worth resuming
      (a descriptor, perhaps θ0, of a run that never finished a cell);
    - else each stale checkpoint (``checkpoints/*.npz`` whose cells are all finished)
      and each temporary file (``.<name>.<random>.tmp``, left by a write that was killed).
    """
    folder = store.run_dir(run_id)
    checkpoints = sorted(folder.glob("checkpoints/*.npz"))
    stale = [p for p in checkpoints if _stale(store, run_id, p)]
    if next(store.finished_cells(run_id), None) is None and len(stale) == len(checkpoints):
        return [Removal(folder, _size(folder), "run without a finished cell")]
    temporary = sorted(p for p in folder.rglob(".*.tmp") if p.is_file())
    return [Removal(p, _size(p), "stale checkpoint") for p in stale] + [
        Removal(p, _size(p), "temporary file") for p in temporary
    ]


def collect(store: Store, dry_run: bool = False) -> tuple[list[Removal], list[str]]:
    """Removes the `garbage` of every run of `store` that no other process holds.

    Args:
      dry_run: find what would be removed, and remove nothing.

    Returns:
      What was (or would be) removed, and the ids of the runs skipped because another
      process holds them.
    """
    removals, skipped = [], []
    for run_id in store.run_ids():
        with hold(store, run_id) as held:
            if not held:
                skipped.append(run_id)
                continue
            found = garbage(store, run_id)
            for removal in [] if dry_run else found:
                if removal.path.is_dir():
                    shutil.rmtree(removal.path)
                else:
                    removal.path.unlink(missing_ok=True)
            removals += found
    return removals, skipped
