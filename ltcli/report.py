"""Tables from the store: per-level summaries of a run, and the list of runs.

Pure functions from stored metrics to rows, and from rows to text; the CLI prints them.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from typing import Any

import numpy as np

from ltcli.store import Store

SUMMARY_FIELDS = ("early_stop_iter", "early_stop_test_acc", "final_test_acc")


@dataclasses.dataclass(frozen=True)
class Stat:
    """Mean and standard deviation (population) over `n` cells."""

    mean: float
    std: float
    n: int

    @classmethod
    def of(cls, values: list[float]) -> Stat:
        return cls(float(np.mean(values)), float(np.std(values)), len(values))


def member_kind(member: str) -> str:
    """``ticket``, ``reinit`` or ``random`` for a member name like ``reinit-2``."""
    return member.split("-")[0]


def cell_metrics(store: Store, run_id: str) -> list[dict[str, Any]]:
    """The metrics of every finished cell of a run."""
    return [store.read_metrics(run_id, cell) for cell in store.finished_cells(run_id)]


def level_summary(cells: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per level: the ticket's percent of weights remaining and, per member kind, a `Stat`
    of each summary field over replicates (and control indices)."""
    grouped: dict[int, dict[str, list[dict[str, Any]]]] = defaultdict(lambda: defaultdict(list))
    for cell in cells:
        grouped[cell["level"]][member_kind(cell["member"])].append(cell)
    rows = []
    for level in sorted(grouped):
        kinds = grouped[level]
        reference = kinds.get("ticket") or next(iter(kinds.values()))
        rows.append(
            {
                "level": level,
                "percent_remaining": reference[0]["percent_remaining"],
                "members": {
                    kind: {f: Stat.of([c[f] for c in group]) for f in SUMMARY_FIELDS}
                    for kind, group in sorted(kinds.items(), key=lambda kv: kv[0] != "ticket")
                },
            }
        )
    return rows


def format_stat(stat: Stat | None, scale: float = 1.0, digits: int = 2) -> str:
    """``mean ± std`` of `stat` times `scale` (just the mean for one cell; ``-`` for None)."""
    if stat is None:
        return "-"
    if stat.n == 1:
        return f"{stat.mean * scale:.{digits}f}"
    return f"{stat.mean * scale:.{digits}f} ± {stat.std * scale:.{digits}f}"


def format_table(headers: list[str], rows: list[list[str]]) -> str:
    """Columns padded to their widest cell; the first column left-aligned, the rest right."""
    widths = [max(len(r[i]) for r in [headers, *rows]) for i in range(len(headers))]

    def line(cells: list[str]) -> str:
        parts = [
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ]
        return "  ".join(parts).rstrip()

    return "\n".join([line(headers), *(line(r) for r in rows)])


def levels_table(summary: list[dict[str, Any]]) -> str:
    """The per-level table `lt run` and `lt show` print: % of weights remaining, and for the
    ticket early-stop iteration, test accuracy there and at the end (mean ± std over
    replicates); for each control kind its early-stop iteration and test accuracy there."""
    controls = sorted({k for row in summary for k in row["members"] if k != "ticket"})
    headers = ["level", "remaining %", "early-stop it", "test acc @ES %", "final test acc %"]
    for kind in controls:
        headers += [f"{kind} early-stop it", f"{kind} acc @ES %"]
    lines = []
    for row in summary:
        ticket = row["members"].get("ticket", {})
        cells = [
            str(row["level"]),
            f"{row['percent_remaining']:.1f}",
            format_stat(ticket.get("early_stop_iter"), digits=0),
            format_stat(ticket.get("early_stop_test_acc"), 100),
            format_stat(ticket.get("final_test_acc"), 100),
        ]
        for kind in controls:
            control = row["members"].get(kind, {})
            cells += [
                format_stat(control.get("early_stop_iter"), digits=0),
                format_stat(control.get("early_stop_test_acc"), 100),
            ]
        lines.append(cells)
    return format_table(headers, lines)


def run_label(store: Store, run_id: str) -> str:
    """How tables and figures name a run: its first alias, else its id's first 12 digits."""
    names = store.meta(run_id).get("names", [])
    return names[0] if names else run_id[:12]


def run_overview(store: Store, run_id: str) -> dict[str, Any]:
    """One line of `lt ls`: what a run is and how far it got."""
    record = store.descriptor(run_id)
    meta = store.meta(run_id)
    cells = cell_metrics(store, run_id)
    tickets = [c for c in cells if c["member"] == "ticket"]
    summary = level_summary(tickets)
    best = max((r["members"]["ticket"]["early_stop_test_acc"].mean for r in summary), default=None)
    return {
        "run_id": run_id,
        "names": meta.get("names", []),
        "experiment": meta.get("experiment", "?"),
        "dataset": record["full"]["data"]["dataset"],
        "model": record["full"]["model"]["name"],
        "levels": len(summary),
        "replicates": len({c["replicate"] for c in tickets}),
        "cells": len(cells),
        "best_test_acc": best,
        "bytes": store.size_bytes(run_id),
    }


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError


def runs_table(overviews: list[dict[str, Any]]) -> str:
    headers = [
        "run",
        "name",
        "experiment",
        "dataset",
        "levels",
        "replicates",
        "cells",
        "best acc %",
        "size",
    ]
    rows = [
        [
            o["run_id"][:12],
            ",".join(o["names"]) or "-",
            o["experiment"],
            o["dataset"],
            str(o["levels"]),
            str(o["replicates"]),
            str(o["cells"]),
            "-" if o["best_test_acc"] is None else f"{100 * o['best_test_acc']:.2f}",
            _size(o["bytes"]),
        ]
        for o in overviews
    ]
    return format_table(headers, rows)
