"""Claims on cells, with leases, so that several drivers on one run (on any hosts sharing the
store) never train a cell twice.

File locks are per host and unreliable on network filesystems, so a claim is a file created
by hard-linking a fully written temporary file to the claim's name: ``link`` either creates
the name or fails if it exists, atomically, on local disks and on NFS alike. A claim names its
owner and an expiry; the owner renews it while it trains, and a claim past its expiry (its
driver was killed) may be taken over. A claim handed to a Slurm job (`Claims.assign`) holds
instead while Slurm still queues or runs that job (`ltcli.train.slurm_queue`), whatever its
expiry: the job may wait in the queue for days with no driver to renew it, be requeued, and
once cancelled its cells are free at once. A cell is finished only by its manifest, never by a
claim: claims only decide who trains.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import orjson

from ltcli.core import atomic
from ltcli.storage.store import CellKey, Store
from ltcli.train import slurm_queue

LEASE_SECONDS = 300.0
"""How long a claim holds without renewal; the driver renews every third of it."""


class Claims:
    """One driver's claims on the cells of one run."""

    def __init__(
        self,
        store: Store,
        run_id: str,
        lease: float = LEASE_SECONDS,
        clock: Callable[[], float] = time.time,
        owner: str | None = None,
    ):
        self.store, self.run_id, self.lease, self.clock = store, run_id, lease, clock
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.folder = store.run_dir(run_id) / "claims"

    def path(self, cell: CellKey) -> Path:
        return self.folder / f"{str(cell.relpath).replace(os.sep, '.')}.json"

    def _record(self) -> bytes:
        return orjson.dumps({"owner": self.owner, "expires": self.clock() + self.lease})

    def holder(self, cell: CellKey) -> dict[str, Any] | None:
        """The live claim on `cell` (owner and expiry, and the Slurm job holding it), or None
        if there is none, it expired, or its Slurm job left the queue."""
        record = _read(self.path(cell))
        return record if record is not None and self._live(record) else None

    def holders(self) -> dict[CellKey, dict[str, Any]]:
        """Every live claim on a cell of the run, ours included (Slurm asked of all their
        jobs at once)."""
        records = {}
        for path in sorted(self.folder.glob("*.json")) if self.folder.is_dir() else ():
            if (record := _read(path)) is not None:
                records[CellKey.from_relpath(Path(*path.stem.split(".", 2)))] = record
        slurm_queue.states(r["job"] for r in records.values() if "job" in r)
        return {cell: record for cell, record in records.items() if self._live(record)}

    def _live(self, record: dict[str, Any]) -> bool:
        if "job" in record:
            return slurm_queue.state(record["job"]) is not None
        return record["expires"] >= self.clock()

    def claim(self, cell: CellKey) -> bool:
        """Claims `cell` for this driver: True if it is now ours (also if it already was),
        False if another driver holds a live claim."""
        path = self.path(cell)
        self.folder.mkdir(parents=True, exist_ok=True)
        for _ in range(3):
            if _link(path, self._record()):
                return True
            current = _read(path)
            if current is None:
                continue  # released meanwhile: try again
            if current["owner"] == self.owner:
                self.renew([cell])
                return True
            if self._live(current):
                return False
            if not _take_over(path, current, self.owner):
                return False
        return False

    def renew(self, cells: Iterable[CellKey]) -> None:
        """Pushes the expiry of our claims on `cells` a lease ahead."""
        for cell in cells:
            atomic.write_bytes(self.path(cell), self._record())

    def assign(self, cells: Iterable[CellKey], job: str) -> None:
        """Hands our claims on `cells` to the Slurm job `job`: they now hold while Slurm
        queues or runs it, and no longer count as ours. A claim no longer ours is left."""
        for cell in cells:
            current = _read(self.path(cell))
            if current is not None and current["owner"] == self.owner:
                record = {"owner": f"slurm:{job}", "job": job, "expires": self.clock() + self.lease}
                atomic.write_bytes(self.path(cell), orjson.dumps(record))

    def release(self, cells: Iterable[CellKey]) -> None:
        """Drops our claims on `cells` (a finished cell needs none)."""
        for cell in cells:
            path = self.path(cell)
            record = _read(path)
            if record is not None and record["owner"] == self.owner:
                path.unlink(missing_ok=True)


def _read(path: Path) -> dict[str, Any] | None:
    try:
        return orjson.loads(path.read_bytes())
    except (FileNotFoundError, orjson.JSONDecodeError):
        return None


def _link(path: Path, content: bytes) -> bool:
    """Creates `path` with `content` if it does not exist (atomically); False if it does."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    atomic.write_bytes(tmp, content)
    try:
        os.link(tmp, path)
        return True
    except FileExistsError:
        return False
    finally:
        tmp.unlink(missing_ok=True)


def _take_over(path: Path, stale: dict[str, Any], owner: str) -> bool:
    """Moves an expired claim aside (a rename: one driver wins) and checks that what moved
    is the claim that was judged expired; a fresh claim moved by mistake goes back."""
    aside = path.with_name(f".{path.name}.{owner}.stale")
    try:
        os.rename(path, aside)
    except FileNotFoundError:
        return True  # gone already: the next link decides
    moved = _read(aside)
    if moved == stale:
        aside.unlink(missing_ok=True)
        return True
    with contextlib.suppress(FileExistsError):
        os.link(aside, path)
    aside.unlink(missing_ok=True)
    return False
