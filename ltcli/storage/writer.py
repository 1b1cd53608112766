"""The store as a run sees it while it trains: cells it just finished are written in the
background, and read back from memory until they are on disk.

Storing a level's cells (checksums, fsyncs) would otherwise sit between two levels, on the
critical path. Here one writer thread stores them, in order, while the next level trains;
the next level's inputs (the ticket it prunes from, θk) come from memory. Every write is
still `ltcli.storage.store`'s own: atomic, manifest last. `flush` waits for them: the runner
calls it before storing the next level's cells, so a level is on disk before any cell that derives
from it is, and at the end of the run (also when it fails), so nothing finished is lost.
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ltcli.core import hosts
from ltcli.storage.store import CellKey, Store


class RunStore:
    """One run's view of a store: writes queued on one thread, recent cells in memory."""

    def __init__(self, store: Store, run_id: str):
        self.store, self.run_id = store, run_id
        self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="lt-store")
        self._pending: list[concurrent.futures.Future] = []
        self._cells: dict[CellKey, tuple[Any, dict[str, Any], dict[str, Any] | None]] = {}
        self._weights: dict[Path, dict[str, Any]] = {}

    def _submit(self, fn: Callable[..., None], *args: Any) -> None:
        self._pending.append(self._pool.submit(fn, *args))

    # -- writes (queued) ---------------------------------------------------------------------

    def write_cell(
        self, cell: CellKey, mask: Any, metrics: dict[str, Any], weights: dict[str, Any] | None
    ) -> None:
        self._cells[cell] = (mask, metrics, weights)
        self._submit(self.store.write_cell, self.run_id, cell, mask, metrics, weights)

    def save_weights(self, path: Path, variables: dict[str, Any]) -> None:
        self._weights[path] = variables
        self._submit(self.store.save_weights, path, variables)

    def add_to_metrics(self, cell: CellKey, fields: dict[str, Any]) -> None:
        """Adds `fields` to a cell stored before this run (`Store.add_to_metrics`), now."""
        self.flush()
        self.store.add_to_metrics(self.run_id, cell, fields)

    def clear_checkpoint(self, name: str) -> None:
        """Removes a group's checkpoint once the cells queued before it are stored."""
        self._submit(self.store.clear_checkpoint, self.run_id, name)

    def flush(self) -> None:
        """Waits until every queued write is on disk; raises the first one that failed."""
        pending, self._pending = self._pending, []
        for future in pending:
            future.result()
        self._cells.clear()
        self._weights.clear()

    def sync(self) -> None:
        """`flush`, then in a multi-host job waits for every process (`hosts.barrier`): what
        any process reads from disk next, the writer has written. Every process must call
        it at the same points (the trainer does, once a level and at the end)."""
        self.flush()
        hosts.barrier("lt-store-sync")

    def close(self) -> None:
        """Syncs, then stops the writer thread."""
        try:
            self.sync()
        finally:
            self._pool.shutdown()

    # -- reads: memory first ----------------------------------------------------------------

    def is_finished(self, cell: CellKey) -> bool:
        return cell in self._cells or self.store.is_finished(self.run_id, cell)

    def read_metrics(self, cell: CellKey) -> dict[str, Any]:
        if cell in self._cells:
            return self._cells[cell][1]
        return self.store.read_metrics(self.run_id, cell)

    def read_mask(self, cell: CellKey, template: Any) -> Any:
        if cell in self._cells:
            return self._cells[cell][0]
        return self.store.read_mask(self.run_id, cell, template)

    def read_trained(self, cell: CellKey) -> dict[str, Any]:
        if cell in self._cells and self._cells[cell][2] is not None:
            return self._cells[cell][2]
        return self.store.read_trained(self.run_id, cell)

    def load_weights(self, path: Path) -> dict[str, Any]:
        if path in self._weights:
            return self._weights[path]
        return self.store.load_weights(path)
