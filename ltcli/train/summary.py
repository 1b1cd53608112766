"""A cell's numbers from its evaluation curve: early stopping, final accuracy and, for
text, bits per byte."""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

METRICS = ("val_loss", "val_acc", "test_loss", "test_acc")


class TextScored(NamedTuple):
    """The next-token targets evaluation scores in a text data set's validation and test
    splits (the tokens after the first of each of their windows): how many, and their UTF-8
    bytes, which turn a mean loss per token into bits per byte."""

    tokens: tuple[int, int]
    bytes: tuple[int, int]


def summarize(
    metrics: np.ndarray,
    eval_every: int,
    start: int = 0,
    scored: TextScored | None = None,
) -> dict[str, float | int]:
    """The paper's per-cell numbers from its eval curve (rows = evaluations, cols = METRICS)
    of a cell that trained from iteration `start`: iterations are on the run's 0..T axis.

    Early stopping is the evaluation of minimum validation loss (the first one on ties);
    evaluations whose loss is not finite (a diverged cell) never count as the minimum, and
    `diverged` says whether any occurred. A text data set's `scored` tokens add bits per
    byte (`bits_per_byte`).
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
        **(bits_per_byte(curve, best, scored) if scored else {}),
    }


def bits_per_byte(curve: np.ndarray, best: int, scored: TextScored) -> dict[str, float | int]:
    """Validation and test bits per byte at early stopping (evaluation `best`) and test's at
    the end: a split's mean loss per token (nats) times its scored tokens over their UTF-8
    bytes, over ln 2; and how many tokens (and bytes) each split scored."""
    val, test = (b * math.log(2) / t for t, b in zip(scored.tokens, scored.bytes, strict=True))
    return {
        "min_val_bpb": float(curve[best, 0] / val),
        "early_stop_test_bpb": float(curve[best, 2] / test),
        "final_test_bpb": float(curve[-1, 2] / test),
        "val_tokens": scored.tokens[0],
        "test_tokens": scored.tokens[1],
        "val_bytes": scored.bytes[0],
        "test_bytes": scored.bytes[1],
    }
