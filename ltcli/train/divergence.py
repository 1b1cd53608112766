"""The error of a replicate whose ticket diverged (its loss went NaN or infinite): nothing
starts from it. Kept free of JAX, so drivers that only schedule (`ltcli.train.cluster_schedule`)
load none."""

from __future__ import annotations

from ltcli.core.errors import LtError


class DivergedError(LtError):
    """A ticket diverged, so its replicate cannot be pruned further (exit 1)."""


def diverged(run_id: str, replicate: int, level: int) -> DivergedError:
    """The error for a replicate whose ticket at `level` diverged: nothing starts from it (it
    is not pruned from, and its final mask seeds no control)."""
    return DivergedError(
        f"run {run_id[:12]} replicate {replicate} level {level} ticket diverged (its loss "
        "went NaN or infinite), so no later level or control can start from its weights or "
        "mask; try a lower learning rate (--lr) or a warmup (--set train.warmup=...)"
    )
