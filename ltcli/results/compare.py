"""``lt compare``: runs side by side, level by level, with deltas against the first run.

Runs align by level index (level 0 is the dense network), whatever sparsity each reached
there, so every run's row shows its own percent of weights remaining. Means leave out
diverged cells (see `ltcli.results.report`); every number says how many cells it covers, how many
diverged cells it left out and how many collapsed ones (a layer emptied) it kept.

With ``masks`` (``lt compare --masks``), each run's ticket masks are also compared with the
first run's (`mask_overlap`): the Jaccard index of the weights they keep, per prunable layer
and over all of them (`ltcli.science.mask_overlap`), for each replicate both runs have and
each pair of their tickets at the same percent of weights remaining (rounded to 0.1).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import numpy as np

from ltcli.core.errors import UsageError
from ltcli.experiment import sweep
from ltcli.results import diff, listing, report
from ltcli.science import mask_overlap as overlaps
from ltcli.science import pruning
from ltcli.storage.store import CellKey, Store

KINDS = ("ticket", "reinit", "random")
"""Member kinds in the order the table lists them (any other kind follows, sorted)."""


def compare(store: Store, run_ids: list[str], masks: bool = False) -> dict[str, Any]:
    """The per-level summaries of `run_ids`, with deltas against the first run.

    Args:
      store: the store holding the runs.
      run_ids: two or more run ids; the first is the reference (the same id may repeat).
      masks: also compare each run's ticket masks with the first run's (`mask_overlap`).

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
      With `masks`, every run after the first also has ``"mask_overlap"``: `mask_overlap`
      of the first run and it.

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
    if masks:
        for run in runs[1:]:
            run["mask_overlap"] = mask_overlap(store, run_ids[0], run["run_id"])
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


# -- mask overlap ---------------------------------------------------------------------------

PERCENT_DIGITS = 1
"""Tickets pair where their percents of weights remaining agree rounded to this many digits."""
POOLED = "all"
"""How tables name the overlap pooled over every prunable layer."""
NOT_COMPARABLE = "masks are not comparable"
THETA0_NOTE = (
    "note: θ0 differs where marked: those tickets grew from different initial networks "
    "(another seed, or another stored θ0), so their masks are of different networks"
)
OVERLAP_ABOUT = (
    "Jaccard: weights both tickets keep / weights either keeps (a layer both empty: 1); "
    "chance: the same for random masks of the same per-layer counts"
)
THETA0_UNKNOWN = "note: θ0 unknown where marked: a run's stored θ0 (init.npz) is missing"


def _tickets(store: Store, run_id: str) -> dict[int, list[tuple[CellKey, float]]]:
    """``{replicate: [(cell, percent_remaining), ...]}`` of a run's finished tickets."""
    found: dict[int, list[tuple[CellKey, float]]] = {}
    for cell in store.finished_cells(run_id):
        if cell.member.is_ticket:
            percent = store.read_metrics(run_id, cell)["percent_remaining"]
            found.setdefault(cell.replicate, []).append((cell, percent))
    return found


def _mask_shapes(store: Store, run_id: str, cell: CellKey) -> dict[str, tuple[int, ...]]:
    """``{layer: shape}`` of a finished cell's stored mask (`ltcli.storage.store.pack_mask`
    keeps each prunable layer's shape beside its bits as ``LAYER#shape``)."""
    with np.load(store.cell_dir(run_id, cell) / "mask.npz") as npz:
        return {
            name.removesuffix("#shape"): tuple(int(d) for d in npz[name])
            for name in npz.files
            if name.endswith("#shape")
        }


def _stored_mask(store: Store, run_id: str, cell: CellKey) -> dict[str, np.ndarray]:
    """A finished cell's mask, ``{layer: 0/1 array}`` of its prunable layers, read as
    `Store.read_mask` reads it (checked against the cell's manifest)."""
    shapes = _mask_shapes(store, run_id, cell)
    template = pruning.unflatten({n: np.broadcast_to(np.float32(0), s) for n, s in shapes.items()})
    return pruning.flatten(store.read_mask(run_id, cell, template))


def theta0_digest(store: Store, run_id: str, replicate: int) -> str | None:
    """sha256 of a replicate's stored θ0 (every array of ``init.npz`` by name, with its dtype
    and shape; the file's own bytes hold a time stamp), or None where it is missing."""
    path = store.init_path(run_id, replicate)
    if not path.is_file():
        return None
    digest = hashlib.sha256()
    for name, array in sorted(pruning.flatten(store.load_weights(path)).items()):
        digest.update(f"{name}\0{array.dtype.str}\0{array.shape}\0".encode())
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def _overlap_json(found: overlaps.Overlap) -> dict[str, Any]:
    return {
        "jaccard": found.jaccard,
        "chance": found.chance,
        "intersection": found.intersection,
        "union": found.union,
        "kept": found.kept_b,
        "against_kept": found.kept_a,
        "weights": found.weights,
    }


def _model(store: Store, run_id: str) -> str:
    return str(store.descriptor(run_id)["full"].get("model", {}).get("name", "?"))


def mask_overlap(store: Store, against: str, run_id: str) -> dict[str, Any]:
    """How far the ticket masks of run `run_id` agree with those of run `against`.

    Tickets pair within a replicate both runs have, wherever their percents of weights
    remaining (as stored in their metrics) are equal rounded to `PERCENT_DIGITS` digits,
    whatever their levels and methods; other tickets are not paired, and neither are dense
    ones (100.0%: every mask keeps every weight). Each pair's masks are compared layer by
    layer and pooled (`ltcli.science.mask_overlap`). Runs whose stored masks differ in
    prunable layers or shapes (other models) are not comparable: no pairs, and a note.

    Args:
      store: the store holding both runs.
      against: the reference run's id (A in the overlap's counts).
      run_id: the other run's id (B).

    Returns:
      ``{"against": id, "comparable": bool, "note": str | None, "pairs": [pair, ...]}``,
      pairs by level, then replicate, each ``{"replicate", "level", "against_level",
      "percent_remaining", "against_percent_remaining", "theta0", "overall", "layers":
      {layer: overlap}}`` where ``theta0`` is ``"same"`` or ``"differs"`` (the replicate's
      stored θ0 of the two runs, by `theta0_digest`), or ``"unknown"`` (one is missing), and
      an overlap is ``{"jaccard", "chance", "intersection", "union", "kept",
      "against_kept", "weights"}`` (``kept``: weights B keeps; ``chance``: the Jaccard index
      of random masks of the same per-layer counts).
    """
    result: dict[str, Any] = {"against": against, "comparable": False, "note": None, "pairs": []}
    mine, theirs = _tickets(store, run_id), _tickets(store, against)
    if not mine or not theirs:
        lacking = run_id if not mine else against
        result["note"] = f"{NOT_COMPARABLE}: run {lacking[:12]} has no finished ticket"
        return result
    shapes = [
        _mask_shapes(store, r, found[min(found)][0][0])
        for r, found in ((against, theirs), (run_id, mine))
    ]
    if shapes[0] != shapes[1]:
        models = f"{_model(store, against)} and {_model(store, run_id)}"
        result["note"] = f"{NOT_COMPARABLE}: their prunable layers differ ({models})"
        return result
    result["comparable"] = True
    pairs = []
    for replicate in sorted(mine.keys() & theirs.keys()):
        matched = [
            (cell, percent, other, other_percent)
            for cell, percent in mine[replicate]
            for other, other_percent in theirs[replicate]
            if round(percent, PERCENT_DIGITS) == round(other_percent, PERCENT_DIGITS)
            and round(percent, PERCENT_DIGITS) != 100.0
        ]
        if not matched:
            continue
        digests = {r: theta0_digest(store, r, replicate) for r in (against, run_id)}
        same = None if None in digests.values() else digests[against] == digests[run_id]
        for cell, percent, other, other_percent in matched:
            layers = overlaps.overlap(
                _stored_mask(store, against, other), _stored_mask(store, run_id, cell)
            )
            pairs.append(
                {
                    "replicate": replicate,
                    "level": cell.level,
                    "against_level": other.level,
                    "percent_remaining": percent,
                    "against_percent_remaining": other_percent,
                    "theta0": "unknown" if same is None else "same" if same else "differs",
                    "overall": _overlap_json(overlaps.pooled(layers.values())),
                    "layers": {name: _overlap_json(o) for name, o in layers.items()},
                }
            )
    result["pairs"] = sorted(pairs, key=lambda p: (p["level"], p["against_level"], p["replicate"]))
    return result


def layer_label(name: str) -> str:
    """A prunable kernel's name as tables show it: its layer's (``fc1/kernel`` -> ``fc1``)."""
    return name.removesuffix(f"{pruning.SEP}kernel")


def overlap_text(result: dict[str, Any]) -> str:
    """The mask overlaps of `result` (`compare` with ``masks``) as text: per run after the
    first, a heading line, then a table of one line per paired ticket and layer (the pooled
    overlap first, as ``all``) with the Jaccard index and its chance value (4 digits), and
    notes where θ0 differs or is unknown; or a line saying why nothing is shown; then what
    the numbers are (`OVERLAP_ABOUT`) where any table was. Empty where `result` holds no
    overlaps."""
    first, *others = result["runs"]
    blocks = []
    for run in others:
        found = run.get("mask_overlap")
        if found is None:
            continue
        head = f"mask overlap of {run['label']}'s tickets with {first['label']}'s"
        if not found["comparable"]:
            blocks.append(f"{head}: {found['note']}")
            continue
        if not found["pairs"]:
            blocks.append(
                f"{head}: no pair of tickets of one replicate at the same % of weights "
                f"remaining (to {10**-PERCENT_DIGITS:g}%) below 100%"
            )
            continue
        headers = ["run", "replicate", "level", f"{first['label']} level", "remaining %", "θ0"]
        headers += ["layer", "Jaccard", "chance"]
        rows = []
        for pair in found["pairs"]:
            start = [run["label"], str(pair["replicate"]), str(pair["level"])]
            start += [str(pair["against_level"]), f"{pair['percent_remaining']:.1f}"]
            start.append(pair["theta0"])
            named = [(POOLED, pair["overall"]), *pair["layers"].items()]
            for name, o in named:
                label = name if name == POOLED else layer_label(name)
                rows.append([*start, label, f"{o['jaccard']:.4f}", f"{o['chance']:.4f}"])
        states = {pair["theta0"] for pair in found["pairs"]}
        notes = [THETA0_NOTE] * ("differs" in states) + [THETA0_UNKNOWN] * ("unknown" in states)
        blocks.append("\n".join([f"{head}:", report.format_table(headers, rows), *notes]))
    if any(run.get("mask_overlap", {}).get("pairs") for run in others):
        blocks.append(OVERLAP_ABOUT)
    return "\n\n".join(blocks)
