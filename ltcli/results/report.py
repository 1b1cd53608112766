"""Tables from the store: per-level summaries of a run (the list of runs is
`ltcli.results.listing`).

Pure functions from stored metrics to rows, and from rows to text; the CLI prints them.

A cell whose loss became NaN or infinite (``diverged`` in its metrics) is left out of every
mean and standard deviation, so one blown-up replicate cannot drag a level's numbers; the
tables count such cells beside the means instead, so they are not silently dropped either.

A cell whose mask keeps no weight of some prunable layer (``collapsed`` in its metrics, or
derived from its per-layer counts) is a network that outputs a constant: its numbers are real
results, so they stay in the means, but the tables count such cells beside them and name the
emptied layers in a note, as the figures mark them.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections import Counter, defaultdict
from typing import Any

import numpy as np

from ltcli.experiment.descriptor import outdated
from ltcli.storage.store import Store

SUMMARY_FIELDS = ("early_stop_iter", "early_stop_test_acc", "final_test_acc")
BPB_FIELD = "early_stop_test_bpb"
"""A language model's test bits per byte at early stopping, summarized beside the others."""
COST_FIELDS = ("training_flops", "inference_flops")
"""A cell's training and inference FLOPs as multiples of the dense network's
(`ltcli.science.flops`), summarized beside the others where the cells recorded them."""
DIVERGED_NOTE = "diverged: cells whose loss became NaN or inf; not in the means"
"""The legend under a table that shows diverged cells."""
COLLAPSED_NOTE = (
    "collapsed: cells whose mask empties a prunable layer (the network outputs a constant); "
    "kept in the means"
)
"""The legend under a table that shows collapsed cells."""


@dataclasses.dataclass(frozen=True)
class Stat:
    """Mean and sample standard deviation (ddof=1, as pandas' ``.std()`` on the exported
    CSV gives) over the `n` cells that did not diverge; `diverged` more cells were left out,
    and `collapsed` of the `n` cells are in the means though their mask empties a layer.

    ``std`` is 0 for one cell; ``mean`` and ``std`` are None when every cell diverged.
    """

    mean: float | None
    std: float | None
    n: int
    diverged: int = 0
    collapsed: int = 0

    @classmethod
    def of(cls, values: list[float], diverged: int = 0, collapsed: int = 0) -> Stat:
        """The `Stat` of `values` (those of the cells that did not diverge, `collapsed` of
        them collapsed)."""
        if not values:
            return cls(None, None, 0, diverged)
        std = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
        return cls(float(np.mean(values)), std, len(values), diverged, collapsed)


def member_kind(member: str) -> str:
    """``ticket``, ``reinit`` or ``random`` for a member name like ``reinit-2``."""
    return member.split("-")[0]


def is_diverged(cell: dict[str, Any]) -> bool:
    """Whether a cell's loss went non-finite: its ``diverged`` flag, or (cells stored before
    the flag existed) a summary number that is not finite."""
    return bool(cell.get("diverged")) or not all(math.isfinite(cell[f]) for f in SUMMARY_FIELDS)


def collapsed_layers(cell: dict[str, Any]) -> list[str]:
    """The prunable layers (``fc1/kernel``) whose mask keeps no weight in a cell, sorted: its
    ``collapsed`` list, or (cells stored before it was recorded) those its ``layers`` counts
    give 0 kept; [] for a cell that has neither."""
    recorded = cell.get("collapsed")
    if recorded is not None:
        return sorted(recorded)
    layers = cell.get("layers", {})
    return sorted(name for name, (kept, total) in layers.items() if kept == 0 < total)


def is_collapsed(cell: dict[str, Any]) -> bool:
    """Whether a cell's mask empties a prunable layer (so the network outputs a constant)."""
    return bool(collapsed_layers(cell))


def path_measures(path: dict[str, Any] | None) -> dict[str, float | None]:
    """The two measures of a stored error path (`ltcli.science.interpolation`), as
    fractions of error: ``instability`` (the highest error minus the mean of the ends',
    Frankle et al. 2020) and ``barrier_above_line`` (the highest rise above the straight line
    between the ends' errors), read from ``"barrier"`` in paths stored before it had that
    name; None for a cell without the path."""
    path = path or {}
    return {
        "instability": path.get("instability"),
        "barrier_above_line": path.get("barrier_above_line", path.get("barrier")),
    }


def cell_metrics(store: Store, run_id: str) -> list[dict[str, Any]]:
    """The metrics of every finished cell of a run."""
    return [store.read_metrics(run_id, cell) for cell in store.finished_cells(run_id)]


def by_level_and_kind(cells: list[dict[str, Any]]) -> dict[int, dict[str, list[dict[str, Any]]]]:
    """`cells` grouped by level (ascending), then member kind (the ticket first)."""
    grouped: dict[int, dict[str, list[dict[str, Any]]]] = defaultdict(lambda: defaultdict(list))
    for cell in cells:
        grouped[cell["level"]][member_kind(cell["member"])].append(cell)
    return {
        level: dict(sorted(grouped[level].items(), key=lambda kv: kv[0] != "ticket"))
        for level in sorted(grouped)
    }


def summarize_cells(group: list[dict[str, Any]]) -> dict[str, Stat]:
    """A `Stat` of each summary field over the cells of `group` that did not diverge, and of
    their ``instability`` (a fraction of error) where the cells are stability or spawned
    copies; collapsed cells are in every mean, and counted."""
    kept = [c for c in group if not is_diverged(c)]
    diverged = len(group) - len(kept)
    collapsed = sum(map(is_collapsed, kept))
    stats = {f: Stat.of([c[f] for c in kept], diverged, collapsed) for f in SUMMARY_FIELDS}
    if any("instability" in c for c in group):
        copies = [c for c in kept if "instability" in c]
        values = [c["instability"]["instability"] for c in copies]
        stats["instability"] = Stat.of(values, diverged, sum(map(is_collapsed, copies)))
    if any(BPB_FIELD in c for c in group):
        stats[BPB_FIELD] = Stat.of([c[BPB_FIELD] for c in kept], diverged, collapsed)
    for field in COST_FIELDS:  # cells stored before lt counted FLOPs have none
        if values := [c[field] for c in kept if c.get(field) is not None]:
            stats[field] = Stat.of(values, diverged, collapsed)
    return stats


def level_summary(cells: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per level: the ticket's percent of weights remaining and, per member kind, a `Stat`
    of each summary field over replicates (and control indices), diverged cells left out."""
    rows = []
    for level, kinds in by_level_and_kind(cells).items():
        reference = kinds.get("ticket") or next(iter(kinds.values()))
        rows.append(
            {
                "level": level,
                "percent_remaining": reference[0]["percent_remaining"],
                "members": {kind: summarize_cells(group) for kind, group in kinds.items()},
            }
        )
    return rows


def format_stat(stat: Stat | None, scale: float = 1.0, digits: int = 2) -> str:
    """``mean ± std`` of `stat` times `scale` (just the mean for one cell; ``-`` for None;
    ``diverged`` when every cell diverged)."""
    if stat is None:
        return "-"
    if stat.mean is None:
        return "diverged"
    if stat.n == 1:
        return f"{stat.mean * scale:.{digits}f}"
    return f"{stat.mean * scale:.{digits}f} ± {stat.std * scale:.{digits}f}"


def format_count(stat: Stat | None) -> str:
    """How many cells `stat` covers: ``5``; ``4 (+1 diverged)`` when some were left out;
    ``5 (2 collapsed)`` when some of the 5 collapsed; ``4 (+1 diverged, 2 collapsed)``."""
    if stat is None:
        return "-"
    notes = [f"+{stat.diverged} diverged"] if stat.diverged else []
    notes += [f"{stat.collapsed} collapsed"] if stat.collapsed else []
    return f"{stat.n} ({', '.join(notes)})" if notes else str(stat.n)


def any_diverged(stats: list[Stat | None]) -> bool:
    """Whether a table of `stats` needs the `DIVERGED_NOTE` legend."""
    return any(s is not None and s.diverged for s in stats)


def legend(stats: list[Stat | None]) -> list[str]:
    """The legend lines under a table of `stats`: `DIVERGED_NOTE` where a cell diverged,
    `COLLAPSED_NOTE` where one collapsed (none for a table with neither)."""
    lines = [DIVERGED_NOTE] if any_diverged(stats) else []
    return lines + ([COLLAPSED_NOTE] if any(s is not None and s.collapsed for s in stats) else [])


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
    ticket how many cells the means cover (``n``), early-stop iteration, test accuracy there
    and at the end (mean ± std over replicates); for each control kind its ``n``,
    early-stop iteration and test accuracy there, and for stability and spawned copies their
    instability (points of test error); for a language model, test bits per byte at early
    stopping too. Diverged and collapsed cells are counted in ``n`` and explained by legend
    lines under the table."""
    controls = sorted({k for row in summary for k in row["members"] if k != "ticket"})
    paired = {k for row in summary for k, s in row["members"].items() if "instability" in s}
    text = any(BPB_FIELD in s for row in summary for s in row["members"].values())
    headers = ["level", "remaining %", "n", "early-stop it", "test acc @ES %", "final test acc %"]
    headers += ["test bpb @ES"] if text else []
    for kind in controls:
        headers += [f"{kind} n", f"{kind} early-stop it", f"{kind} acc @ES %"]
        headers += [f"{kind} bpb @ES"] if text else []
        headers += [f"{kind} instability pts"] if kind in paired else []
    lines, stats = [], []
    for row in summary:
        ticket = row["members"].get("ticket", {})
        cells = [
            str(row["level"]),
            f"{row['percent_remaining']:.1f}",
            format_count(ticket.get("early_stop_iter")),
            format_stat(ticket.get("early_stop_iter"), digits=0),
            format_stat(ticket.get("early_stop_test_acc"), 100),
            format_stat(ticket.get("final_test_acc"), 100),
        ]
        cells += [format_stat(ticket.get(BPB_FIELD), digits=3)] if text else []
        stats.append(ticket.get("early_stop_iter"))
        for kind in controls:
            control = row["members"].get(kind, {})
            cells += [
                format_count(control.get("early_stop_iter")),
                format_stat(control.get("early_stop_iter"), digits=0),
                format_stat(control.get("early_stop_test_acc"), 100),
            ]
            cells += [format_stat(control.get(BPB_FIELD), digits=3)] if text else []
            if kind in paired:
                cells.append(format_stat(control.get("instability"), 100))
            stats.append(control.get("early_stop_iter"))
        lines.append(cells)
    return "\n".join([format_table(headers, lines), *legend(stats)])


def _grouping(cell: dict[str, Any]) -> str:
    """How a cell trained, as the grouping notes name it: ``vmap``, ``single deterministic``."""
    grouping = cell.get("grouping", "unrecorded")
    return f"{grouping} deterministic" if cell.get("deterministic") else grouping


def grouping_notes(cells: list[dict[str, Any]]) -> list[str]:
    """A note for each level whose cells trained in different ways (groupings, or
    deterministic beside non-deterministic cells): their numbers are comparable only to float
    rounding, which a reader comparing replicates or runs bit for bit needs to know. Levels
    whose cells were all trained deterministically get none: those are bit-identical anyway."""
    levels: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for cell in cells:
        levels[cell["level"]].append(cell)
    notes = []
    for level in sorted(levels):
        group = levels[level]
        counts = Counter(_grouping(c) for c in group)
        if len(counts) < 2 or all(c.get("deterministic") for c in group):
            continue
        listed = ", ".join(
            f"{name}: {k} cell{'s' if k > 1 else ''}" for name, k in sorted(counts.items())
        )
        notes.append(
            f"note: level {level} mixes groupings ({listed}); numbers agree to float rounding "
            "only, rerun with --deterministic for bit-identical cells"
        )
    return notes


def collapse_notes(cells: list[dict[str, Any]]) -> list[str]:
    """A note for each level with collapsed cells: how many, of which member kinds, and the
    layers their masks empty (``note: level 6 has 2 collapsed cells (ticket: 1, reinit: 1);
    emptied: fc3/kernel``). A cell that also diverged counts as diverged only, as in the
    tables."""
    levels: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for cell in cells:
        if is_collapsed(cell) and not is_diverged(cell):
            levels[cell["level"]].append(cell)
    notes = []
    for level in sorted(levels):
        group = levels[level]
        kinds = Counter(member_kind(c["member"]) for c in group)
        listed = ", ".join(
            f"{kind}: {k}" for kind, k in sorted(kinds.items(), key=lambda kv: kv[0] != "ticket")
        )
        emptied = ", ".join(sorted({layer for c in group for layer in collapsed_layers(c)}))
        s = "s" if len(group) > 1 else ""
        notes.append(
            f"note: level {level} has {len(group)} collapsed cell{s} ({listed}); emptied: {emptied}"
        )
    return notes


def scored_notes(cells: list[dict[str, Any]]) -> list[str]:
    """What a language model's bits per byte cover: the next-token targets evaluation scored
    in validation and test (``note: bits per byte over 32,768 validation and 32,768 test
    tokens, in windows spread evenly over each split``); none for cells that record no count
    (images, or text cells stored before lt counted them)."""
    counts = sorted({(c["val_tokens"], c["test_tokens"]) for c in cells if "test_tokens" in c})
    return [
        f"note: bits per byte over {val:,} validation and {test:,} test tokens, in windows "
        "spread evenly over each split"
        for val, test in counts
    ]


def run_text(store: Store, run_id: str) -> str:
    """The text of `lt show`: what the run is, then its per-level table and a note for each
    level whose cells mixed groupings, for each level with collapsed cells, and for text
    what its bits per byte were scored on."""
    record = store.descriptor(run_id)
    meta = store.meta(run_id)
    names = ", ".join(meta.get("names", [])) or "-"
    lines = [f"run {run_id}", f"experiment {meta.get('experiment', '?')}   name {names}"]
    if why := outdated(record):
        lines.append(f"note: {why}; a spec now makes a new run")
    for section, fields in record["full"].items():
        if isinstance(fields, dict):
            text = "  ".join(f"{k}={v}" for k, v in fields.items())
            lines.append(f"{section:<6} {text}")
    cells = cell_metrics(store, run_id)
    summary = level_summary(cells)
    lines += ["", levels_table(summary) if summary else "(no finished cells yet)"]
    return "\n".join([*lines, *grouping_notes(cells), *collapse_notes(cells), *scored_notes(cells)])


def stat_json(stat: Stat) -> dict[str, Any]:
    """`stat` as ``{"mean", "std", "n", "diverged"}``, with ``"collapsed"`` (how many of the
    `n` cells collapsed) after them only where some did: documents of runs without collapsed
    cells read as they did before collapse was counted, so a reader takes a missing
    ``collapsed`` as 0."""
    found = dataclasses.asdict(stat)
    if not stat.collapsed:
        del found["collapsed"]
    return found


def summary_json(summary: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """`level_summary` rows made JSON-ready: each `Stat` as `stat_json` writes it
    (accuracies as fractions; mean and std None when every cell diverged)."""
    return [
        {
            **row,
            "members": {
                kind: {field: stat_json(stat) for field, stat in stats.items()}
                for kind, stats in row["members"].items()
            },
        }
        for row in summary
    ]


def run_json(store: Store, run_id: str) -> dict[str, Any]:
    """What `run_text` shows, as a JSON-ready object (`lt show --json`, `lt run --json`):
    ``{"run_id", "experiment", "names", "outdated", "descriptor", "levels", "notes"}``, where
    ``descriptor`` is the stored full form, ``outdated`` why the run was made under an older
    behaviour (else None), ``levels`` the `summary_json` of every finished cell and
    ``notes`` the `grouping_notes`, `collapse_notes` and `scored_notes`."""
    record = store.descriptor(run_id)
    meta = store.meta(run_id)
    cells = cell_metrics(store, run_id)
    return {
        "run_id": run_id,
        "experiment": meta.get("experiment"),
        "names": meta.get("names", []),
        "outdated": outdated(record),
        "descriptor": record["full"],
        "levels": summary_json(level_summary(cells)),
        "notes": [*grouping_notes(cells), *collapse_notes(cells), *scored_notes(cells)],
    }


def _finite(value: Any) -> Any:
    """`value` with every NaN or infinite float (nested anywhere) replaced by None."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def to_json(value: Any) -> str:
    """`value` as indented strict JSON: a NaN or infinite number is null."""
    return json.dumps(_finite(value), indent=2)
