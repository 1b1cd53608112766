"""``lt compare``: runs side by side, level by level, with deltas against the first run.

Runs align by level index (level 0 is the dense network), whatever sparsity each reached
there, so every run's row shows its own percent of weights remaining. Means leave out
diverged cells (see `ltcli.results.report`); every number says how many cells it covers, how many
diverged cells it left out and how many collapsed ones (a layer emptied) it kept.
"""

from __future__ import annotations

import json
from typing import Any

from ltcli.core.errors import UsageError
from ltcli.experiment import sweep
from ltcli.results import diff, listing, report
from ltcli.storage.store import Store

KINDS = ("ticket", "reinit", "random")
"""Member kinds in the order the table lists them (any other kind follows, sorted)."""


def compare(store: Store, run_ids: list[str]) -> dict[str, Any]:
    """The per-level summaries of `run_ids`, with deltas against the first run.

    Args:
      store: the store holding the runs.
      run_ids: two or more run ids; the first is the reference (the same id may repeat).

    Returns:
      ``{"runs": [{"run_id", "label", "differences"}, ...], "levels": [{"level", "runs":
      [entry, ...]}]}`` where ``runs[i]["differences"]`` are the hyperparameters in which
      run i differs from the first (`diff.to_json` of `diff.differences`; [] for the first
      run), and ``levels[i]["runs"]`` is parallel to ``runs``; an entry is None where that
      run has no finished cell at the level, else ``{"percent_remaining", "members": {kind:
      {field: {"mean", "std", "n", "diverged", "delta"}}}}`` for the fields of
      `report.SUMMARY_FIELDS`: mean and sample std over the `n` cells that did not diverge
      (both None when every cell diverged), and how many `diverged` cells were left out;
      `report.COST_FIELDS` (FLOPs x dense) are fields too where the cells recorded them;
      a field whose cells include collapsed ones (`report.is_collapsed`) also has
      ``"collapsed"``, how many of the `n` did (after ``diverged``; absent means 0).
      Accuracies are fractions, as stored; ``delta`` is the mean minus the first run's mean
      (None for the first run, or where it or the first run lacks that level or kind or has
      no mean). Where two or more of the runs are points of one sweep
      (`listing.sweep_members`), the document starts with ``"sweep": {"id", "name"}``, and
      each of its runs has ``"axes"`` (``{field: value}``, its swept values) and is labelled
      by them (`listing.sweep_labels`); otherwise it reads as before sweeps existed.

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
    fulls = [store.descriptor(run_id)["full"] for run_id in run_ids]
    labels, members = listing.sweep_labels(store, run_ids), listing.sweep_members(store, run_ids)
    runs = [
        {
            "run_id": run_id,
            "label": labels[run_id],
            "differences": diff.to_json(diff.differences(fulls[0], full)),
            **({"axes": dict(sweep.entry_axes(members[run_id]))} if run_id in members else {}),
        }
        for run_id, full in zip(run_ids, fulls, strict=True)
    ]
    if not members:
        return {"runs": runs, "levels": levels}
    first = next(iter(members.values()))
    return {"sweep": {"id": first["id"], "name": first["name"]}, "runs": runs, "levels": levels}


def _entry(row: dict[str, Any], reference: dict[str, Any] | None) -> dict[str, Any]:
    """One run at one level, with deltas against `reference` (the first run's row)."""
    members = {}
    for kind, stats in row["members"].items():
        base = reference["members"].get(kind) if reference else None
        members[kind] = {
            field: {
                **report.stat_json(stat),
                "delta": _difference(stat, None if base is None else base.get(field)),
            }
            for field, stat in stats.items()
        }
    return {"percent_remaining": row["percent_remaining"], "members": members}


def _difference(stat: report.Stat, base: report.Stat | None) -> float | None:
    """`stat`'s mean minus `base`'s; None where either has no mean (all cells diverged)."""
    if base is None or stat.mean is None or base.mean is None:
        return None
    return stat.mean - base.mean


def to_json(result: dict[str, Any]) -> str:
    """`result` of `compare` as indented JSON."""
    return json.dumps(result, indent=2)


def differences_text(result: dict[str, Any]) -> str:
    """The hyperparameters each run of `result` differs in from the first, as `lt diff`
    writes them: a line ``first -> other`` per other run, then its differences indented."""
    first, *others = result["runs"]
    lines = []
    for run in others:
        lines.append(f"{first['label']} -> {run['label']}")
        found = diff.from_json(run["differences"])
        lines += [f"  {line}" for line in diff.text(found).splitlines()]
    return "\n".join(lines)


def _kinds(entries: list[dict[str, Any] | None]) -> list[str]:
    present = {kind for entry in entries if entry for kind in entry["members"]}
    return [k for k in KINDS if k in present] + sorted(present - set(KINDS))


def _delta(value: float | None, scale: float, digits: int) -> str:
    if value is None:
        return "-"
    return f"{round(value * scale, digits) + 0.0:+.{digits}f}"  # + 0.0: no "-0.00"


def _stat(field: dict[str, Any] | None) -> report.Stat | None:
    """The `report.Stat` of one field of a `compare` entry (None where there is none)."""
    if field is None:
        return None
    return report.Stat(
        field["mean"], field["std"], field["n"], field["diverged"], field.get("collapsed", 0)
    )


def _cells(field: dict[str, Any] | None, scale: float, digits: int) -> list[str]:
    if field is None:
        return ["-", "-"]
    return [report.format_stat(_stat(field), scale, digits), _delta(field["delta"], scale, digits)]


def table(result: dict[str, Any]) -> str:
    """`result` of `compare` as text: one line per level, member kind and run (in that order
    of nesting), with how many cells the means cover (``n``; diverged and collapsed cells
    are counted there and explained by legend lines under the table), early-stop iteration,
    test accuracy there and at the end (mean ± std over replicates; accuracies in percent)
    and each one's delta against the first run, then the training and inference FLOPs as
    multiples of the dense network's (``-`` for cells stored before lt counted them)."""
    headers = ["level", "run", "remaining %", "member", "n", "early-stop it", "Δ it"]
    headers += ["test acc @ES %", "Δ @ES", "final test acc %", "Δ final"]
    headers += ["train FLOPs x", "infer FLOPs x"]
    labels = [run["label"] for run in result["runs"]]
    lines, stats = [], []
    for level in result["levels"]:
        for kind in _kinds(level["runs"]):
            for label, entry in zip(labels, level["runs"], strict=True):
                fields = entry["members"].get(kind, {}) if entry else {}
                remaining = "-" if entry is None else f"{entry['percent_remaining']:.1f}"
                count = _stat(fields.get("early_stop_iter"))
                cells = [str(level["level"]), label, remaining, kind, report.format_count(count)]
                stats.append(count)
                cells += _cells(fields.get("early_stop_iter"), 1, 0)
                cells += _cells(fields.get("early_stop_test_acc"), 100, 2)
                cells += _cells(fields.get("final_test_acc"), 100, 2)
                cells += [
                    report.format_stat(_stat(fields.get(f)), 1, 3) for f in report.COST_FIELDS
                ]
                lines.append(cells)
    return "\n".join([report.format_table(headers, lines), *report.legend(stats)])
