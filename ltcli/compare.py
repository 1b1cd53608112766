"""``lt compare``: runs side by side, level by level, with deltas against the first run.

Runs align by level index (level 0 is the dense network), whatever sparsity each reached
there, so every run's row shows its own percent of weights remaining.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from ltcli import report
from ltcli.errors import UsageError
from ltcli.store import Store

KINDS = ("ticket", "reinit", "random")
"""Member kinds in the order the table lists them (any other kind follows, sorted)."""


def compare(store: Store, run_ids: list[str]) -> dict[str, Any]:
    """The per-level summaries of `run_ids`, with deltas against the first run.

    Args:
      store: the store holding the runs.
      run_ids: two or more run ids; the first is the reference (the same id may repeat).

    Returns:
      ``{"runs": [{"run_id", "label"}, ...], "levels": [{"level", "runs": [entry, ...]}]}``
      where ``levels[i]["runs"]`` is parallel to ``runs``; an entry is None where that run has
      no finished cell at the level, else ``{"percent_remaining", "members": {kind: {field:
      {"mean", "std", "n", "delta"}}}}`` for the fields of `report.SUMMARY_FIELDS`.
      Accuracies are fractions, as stored; ``delta`` is the mean minus the first run's mean
      (None for the first run, or where it lacks that level or kind).

    Raises:
      UsageError: fewer than two runs.
    """
    if len(run_ids) < 2:
        raise UsageError(f"compare needs at least two runs (got {len(run_ids)})")
    summaries = [
        {row["level"]: row for row in report.level_summary(report.cell_metrics(store, run_id))}
        for run_id in run_ids
    ]
    levels = []
    for level in sorted(set().union(*summaries)):
        reference = summaries[0].get(level)
        entries = []
        for i, summary in enumerate(summaries):
            row = summary.get(level)
            entries.append(None if row is None else _entry(row, reference if i else None))
        levels.append({"level": level, "runs": entries})
    runs = [{"run_id": r, "label": report.run_label(store, r)} for r in run_ids]
    return {"runs": runs, "levels": levels}


def _entry(row: dict[str, Any], reference: dict[str, Any] | None) -> dict[str, Any]:
    """One run at one level, with deltas against `reference` (the first run's row)."""
    members = {}
    for kind, stats in row["members"].items():
        base = reference["members"].get(kind) if reference else None
        members[kind] = {
            field: {
                **dataclasses.asdict(stat),
                "delta": None if base is None else stat.mean - base[field].mean,
            }
            for field, stat in stats.items()
        }
    return {"percent_remaining": row["percent_remaining"], "members": members}


def to_json(result: dict[str, Any]) -> str:
    """`result` of `compare` as indented JSON."""
    return json.dumps(result, indent=2)


def _kinds(entries: list[dict[str, Any] | None]) -> list[str]:
    present = {kind for entry in entries if entry for kind in entry["members"]}
    return [k for k in KINDS if k in present] + sorted(present - set(KINDS))


def _delta(value: float | None, scale: float, digits: int) -> str:
    if value is None:
        return "-"
    return f"{round(value * scale, digits) + 0.0:+.{digits}f}"  # + 0.0: no "-0.00"


def _cells(field: dict[str, Any] | None, scale: float, digits: int) -> list[str]:
    if field is None:
        return ["-", "-"]
    stat = report.Stat(field["mean"], field["std"], field["n"])
    return [report.format_stat(stat, scale, digits), _delta(field["delta"], scale, digits)]


def table(result: dict[str, Any]) -> str:
    """`result` of `compare` as text: one line per level, member kind and run (in that order
    of nesting), with early-stop iteration, test accuracy there and at the end (mean ± std
    over replicates; accuracies in percent) and each one's delta against the first run."""
    headers = ["level", "run", "remaining %", "member", "early-stop it", "Δ it"]
    headers += ["test acc @ES %", "Δ @ES", "final test acc %", "Δ final"]
    labels = [run["label"] for run in result["runs"]]
    lines = []
    for level in result["levels"]:
        for kind in _kinds(level["runs"]):
            for label, entry in zip(labels, level["runs"], strict=True):
                fields = entry["members"].get(kind, {}) if entry else {}
                remaining = "-" if entry is None else f"{entry['percent_remaining']:.1f}"
                cells = [str(level["level"]), label, remaining, kind]
                cells += _cells(fields.get("early_stop_iter"), 1, 0)
                cells += _cells(fields.get("early_stop_test_acc"), 100, 2)
                cells += _cells(fields.get("final_test_acc"), 100, 2)
                lines.append(cells)
    return report.format_table(headers, lines)
