"""The list of runs in a store (``lt ls``) and of a sweep's runs (``lt run --sweep``): one
overview row per run, grouped by sweep, as text or JSON."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from ltcli.experiment import sweep
from ltcli.results import report
from ltcli.storage.store import Store


def run_label(store: Store, run_id: str) -> str:
    """How tables and figures name a run: its first alias, else its id's first 12 digits."""
    names = store.meta(run_id).get("names", [])
    return names[0] if names else run_id[:12]


def run_overview(store: Store, run_id: str) -> dict[str, Any]:
    """One line of `lt ls`: what a run is and how far it got."""
    record = store.descriptor(run_id)
    meta = store.meta(run_id)
    cells = report.cell_metrics(store, run_id)
    tickets = [c for c in cells if c["member"] == "ticket"]
    summary = report.level_summary(tickets)
    means = [r["members"]["ticket"]["early_stop_test_acc"].mean for r in summary]
    overview = {
        "run_id": run_id,
        "names": meta.get("names", []),
        "experiment": meta.get("experiment", "?"),
        "dataset": record["full"]["data"]["dataset"],
        "model": record["full"]["model"]["name"],
        "levels": len(summary),
        "replicates": len({c["replicate"] for c in tickets}),
        "cells": len(cells),
        "best_test_acc": max((m for m in means if m is not None), default=None),
        "bytes": store.size_bytes(run_id),
    }
    if meta.get("sweeps"):  # only then: other runs' lines read as before sweeps existed
        overview["sweeps"] = meta["sweeps"]
    return overview


def format_size(n: int) -> str:
    """Bytes as `lt ls` and `lt gc` print them: ``512 B``, ``12.3 MB`` (1024-based)."""
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError


def runs_table(
    overviews: list[dict[str, Any]],
    swept: Sequence[str] = (),
    axes: Sequence[Mapping[str, Any]] = (),
) -> str:
    """The table of `lt ls`; with `swept` fields, a column for each after ``run``, from
    `axes` (one ``{field: value}`` per overview)."""
    headers = [
        "run",
        *swept,
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
            *(sweep.format_value(axes[i][f]) if f in axes[i] else "-" for f in swept),
            ",".join(o["names"]) or "-",
            o["experiment"],
            o["dataset"],
            str(o["levels"]),
            str(o["replicates"]),
            str(o["cells"]),
            "-" if o["best_test_acc"] is None else f"{100 * o['best_test_acc']:.2f}",
            format_size(o["bytes"]),
        ]
        for i, o in enumerate(overviews)
    ]
    return report.format_table(headers, rows)


def _sweep_block(overviews: list[dict[str, Any]], sweep_id: str) -> str:
    """One sweep of `lt ls`: a header line (id, name, points stored of points asked), then
    its runs in the sweep's order with a column per swept field."""
    members = []
    for o in overviews:
        for record in o.get("sweeps", []):
            if record["id"] == sweep_id:
                members.append((record["index"], record, o))
    members.sort(key=lambda m: m[0])
    first = members[0][1]
    swept = [field for field, _ in sweep.entry_axes(first)]
    header = f"sweep {sweep_id[:12]}  {first['name']}  {len(members)}/{first['points']} runs"
    rows = [o for _, _, o in members]
    axes = [dict(sweep.entry_axes(record)) for _, record, _ in members]
    return header + "\n" + runs_table(rows, swept, axes)


def runs_listing(overviews: list[dict[str, Any]]) -> str:
    """The text of `lt ls`: the runs outside any sweep in one `runs_table` (all of it,
    unchanged, when no run is in a sweep), then each sweep under its own header, by name,
    with a column per swept field (a run of several sweeps is listed under each)."""
    loose = [o for o in overviews if not o.get("sweeps")]
    names = {r["id"]: r["name"] for o in overviews for r in o.get("sweeps", [])}
    blocks = [runs_table(loose)] if loose else []
    blocks += [_sweep_block(overviews, i) for i in sorted(names, key=lambda i: (names[i], i))]
    return "\n\n".join(blocks)


def sweep_members(store: Store, run_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
    """The sweep that holds the most of `run_ids` (the first such in their order), as
    ``{run_id: its sweep entry}`` for those of them it holds; empty when no sweep holds two
    of them (one run of a sweep among others is named as any run is)."""
    records = {i: store.meta(i).get("sweeps", []) for i in dict.fromkeys(run_ids)}
    counts = Counter(r["id"] for i in records for r in records[i])
    best = max(counts.values(), default=0)
    if best < 2:
        return {}
    order = [r["id"] for i in records for r in records[i]]
    chosen = next(s for s in order if counts[s] == best)
    return {i: r for i in records for r in records[i] if r["id"] == chosen}


def sweep_labels(store: Store, run_ids: Sequence[str]) -> dict[str, str]:
    """How tables and figures name runs drawn together: ``{run_id: "train.lr=0.001
    train.seed=1"}`` (its swept values) for the runs of the sweep that holds the most of
    them (`sweep_members`), `run_label` for the others (every one, when no sweep holds two
    of them)."""
    members = sweep_members(store, run_ids)
    return {
        i: sweep.label(sweep.entry_axes(members[i])) if i in members else run_label(store, i)
        for i in run_ids
    }


def sweep_text(store: Store, sweep_id: str) -> str:
    """What `lt run --sweep` prints: the sweep's block of `lt ls` (`runs_listing`)."""
    found = next(s for s in store.sweeps() if s["id"] == sweep_id)
    return _sweep_block([run_overview(store, i) for i in found["runs"]], sweep_id)


def sweep_json(store: Store, sweep_id: str) -> dict[str, Any]:
    """What `lt run --sweep --json` prints: ``{"sweep_id", "name", "fields", "points",
    "runs": [{"axes": {field: value}, **report.run_json}]}``, the runs in the sweep's order."""
    found = next(s for s in store.sweeps() if s["id"] == sweep_id)
    runs = []
    for run_id in found["runs"]:
        record = next(r for r in store.meta(run_id)["sweeps"] if r["id"] == sweep_id)
        runs.append({"axes": dict(sweep.entry_axes(record)), **report.run_json(store, run_id)})
    return {
        "sweep_id": sweep_id,
        "name": found["name"],
        "fields": found["fields"],
        "points": found["points"],
        "runs": runs,
    }
