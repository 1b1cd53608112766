"""A cell's numbers from its evaluation curve: early stopping, final accuracy and, for
text, bits per byte."""

from __future__ import annotations

import math

import numpy as np

METRICS = ("val_loss", "val_acc", "test_loss", "test_acc")


def summarize(
    metrics: np.ndarray,
    eval_every: int,
    start: int = 0,
    bytes_per_token: tuple[float, float] | None = None,
) -> dict[str, float | int]:
    """The paper's per-cell numbers from its eval curve (rows = evaluations, cols = METRICS)
    of a cell that trained from iteration `start`: iterations are on the run's 0..T axis.

    Early stopping is the evaluation of minimum validation loss (the first one on ties);
    evaluations whose loss is not finite (a diverged cell) never count as the minimum, and
    `diverged` says whether any occurred. A text data set's `bytes_per_token` (validation,
    test) adds bits per byte: the loss in bits divided by the UTF-8 bytes a token spans.
    """
    curve = np.asarray(metrics, np.float64)
    finite = np.isfinite(curve[:, 0])
    best = int(np.argmin(np.where(finite, curve[:, 0], np.inf))) if finite.any() else 0
    return {
        "early_stop_iter": start + (best + 1) * eval_every,
        "early_stop_test_acc": float(curve[best, 3]),
        "early_stop_test_loss": float(curve[best, 2]),
        "min_val_loss": float(curve[best, 0]),
        "final_test_acc": float(curve[-1, 3]),
        "final_test_loss": float(curve[-1, 2]),
        "start_iteration": start,
        "iterations": start + len(curve) * eval_every,
        "diverged": bool(not np.isfinite(curve).all()),
        **(bits_per_byte(curve, best, bytes_per_token) if bytes_per_token else {}),
    }


def bits_per_byte(
    curve: np.ndarray, best: int, bytes_per_token: tuple[float, float]
) -> dict[str, float]:
    """Validation and test bits per byte at early stopping and test's at the end."""
    val, test = (math.log(2) * b for b in bytes_per_token)
    return {
        "min_val_bpb": float(curve[best, 0] / val),
        "early_stop_test_bpb": float(curve[best, 2] / test),
        "final_test_bpb": float(curve[-1, 2] / test),
    }
