"""The report page's sections, in order: the paper's claims (runs `lt reproduce` made, or any
run with a figure named), the charts against weights remaining, the training curves, the
instability charts, pruning at initialization (where a run prunes there), the weights
remaining per layer, the mask overlap with IMP (several runs, one of them IMP), each run's
tables and the hyperparameters with the runs' differences.

Each section's charts are registered on a `Page` with the data sets they read; its tables are
rows made here and written by the macros of ``templates/parts.html.j2``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from markupsafe import Markup

from ltcli.experiment.descriptor import outdated
from ltcli.results import compare as comparing
from ltcli.results import diff, report
from ltcli.results.page import charts, data, render
from ltcli.results.page.data import Columns, Run

PM_ABOUT = (
    "Mean over replicates (and control indices) with a band of ± one sample std or min to max. "
    "Red crosses at the top: levels with diverged cells (left out of every mean); magenta rings: "
    "means that include collapsed cells (a layer emptied). Click a legend entry to show one "
    "series (shift-click for more, double-click to reset); drag to pan, wheel to zoom. "
    "Stability and spawned copies are in the instability charts."
)
ACCURACY_CHOICES = list(charts.ACCURACY_FIELDS.items())
NO_INSTABILITY = (
    "no instability data: run with --controls stability:1 (tickets) or --spawn 0,500,... "
    "(the dense network)"
)
LAYERS_ABOUT = (
    "Percent of each prunable layer's weights the level's tickets keep (their mean); a red "
    "outline marks a layer some ticket empties."
)
OVERLAP_ABOUT = (
    "How far each run's ticket masks agree with those of an IMP run of the same model (the "
    "first on the page): the Jaccard index, weights both tickets keep / weights either keeps "
    "(1: the same mask, 0: no weight in common; a layer both empty: 1), per prunable layer and "
    "over all of them (all). Tickets pair within a replicate both runs have, where their "
    "percents of weights remaining are equal to 0.1 (dense levels left out); chance: the "
    "index of random masks with the same per-layer counts. As lt compare --masks prints it."
)


class Page:
    """The page being built: its sections (anchor, title, HTML), its charts' specs with the
    data sets each reads, and those data sets (columns)."""

    def __init__(self, validate: bool) -> None:
        self.validate = validate
        self.sections: list[tuple[str, str, Markup]] = []
        self.charts: list[dict[str, Any]] = []
        self.data: dict[str, dict[str, list[Any]]] = {}

    def chart(self, name: str, chart: Any, datasets: Sequence[str], about: str = "") -> Markup:
        """Registers `chart` (drawn in the element ``chart-NAME``) and returns its box."""
        spec = chart.to_dict(validate=self.validate)
        self.charts.append({"name": name, "spec": spec, "data": list(datasets)})
        return render.parts().chart(name, about)

    def section(self, anchor: str, title: str, body: Markup) -> None:
        self.sections.append((anchor, title, body))


def build(runs: list[Run], figure: str | None, validate: bool) -> str:
    """The page of `runs` (see `ltcli.results.page.build`); `validate` checks each chart
    against the Vega-Lite schema."""
    page = Page(validate)
    summary = data.summary_data(runs)
    page.data["summary"] = summary.columns
    ticks = charts.pm_ticks([row["percent_remaining"] for run in runs for row in run.summary])
    claims = [c for run in runs if (c := claims_html(run, figure))]
    if claims:  # first: what a reproduction is for
        page.section("claims", "The paper's claims", Markup("").join(claims))
    _pm_section(page, summary, ticks)
    _curve_section(page, runs)
    _instability_section(page, runs, summary, ticks)
    if any(run.method != "magnitude" for run in runs):
        _at_init_section(page, summary, ticks)
    _layer_section(page, runs)
    if len(runs) > 1:
        _overlap_section(page, runs)
    for run in runs:
        page.section(f"run-{run.run_id[:12]}", f"Run {run.label}", run_html(run))
    page.section("hyperparameters", "Hyperparameters", hyperparameters_html(runs))
    labels = ", ".join(run.label for run in runs)
    return render.document(labels, len(runs), page.sections, page.data, page.charts)


def _ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def _pm_section(page: Page, summary: Columns, ticks: list[float]) -> None:
    accuracy = charts.stat_chart(
        "summary",
        title="Test accuracy against weights remaining",
        y_title="test accuracy (%)",
        fmt=".2f",
        metric=ACCURACY_CHOICES,
        ticks=ticks,
        order=data.order(summary),
        **data.flags(summary, list(charts.ACCURACY_FIELDS)),
    )
    early = charts.stat_chart(
        "summary",
        title="Early-stop iteration against weights remaining",
        subtitle="the iteration of minimum validation loss",
        y_title="early-stop iteration",
        fmt=",.0f",
        metric="early_stop_iter",
        ticks=ticks,
        order=data.order(summary),
        **data.flags(summary, ["early_stop_iter"]),
    )
    boxes = [
        page.chart("accuracy", accuracy, ["summary"]),
        page.chart("early_stop", early, ["summary"]),
    ]
    parts = render.parts()
    page.section("pm", "Against weights remaining", parts.notes([PM_ABOUT]) + parts.charts(boxes))


def _curve_section(page: Page, runs: list[Run]) -> None:
    curves, stride = data.curve_data(runs)
    page.data["curves"] = curves.columns
    levels = {row["level"]: row["percent_remaining"] for run in runs[::-1] for row in run.summary}
    shown = "every evaluation" if stride == 1 else f"every {_ordinal(stride)} evaluation"
    subtitle = f"mean over the level's cells of each kind, ± std; {shown}"
    page.section(
        "curves",
        "Training curves",
        page.chart(
            "curves",
            charts.curve_chart(levels, subtitle, data.order(curves)),
            ["curves"],
            "Pick a level; hover for the evaluation nearest the pointer.",
        ),
    )


def _instability_section(page: Page, runs: list[Run], summary: Columns, ticks: list[float]) -> None:
    boxes = []
    if "instability" in summary.columns["metric"]:
        chart = charts.stat_chart(
            "summary",
            title="Instability of tickets against weights remaining",
            subtitle="stability copies: highest test error on the linear path minus the mean "
            "of the ends' errors (Frankle et al. 2020)",
            y_title="instability (points)",
            fmt=".2f",
            metric="instability",
            ticks=ticks,
            rule=charts.STABLE_POINTS,
            order=data.order(summary),
            **data.flags(summary, ["instability"]),
        )
        boxes.append(page.chart("instability_pm", chart, ["summary"]))
    spawn = data.spawn_data(runs)
    if len(spawn):
        page.data["spawn"] = spawn.columns
        ks = sorted(set(spawn.columns["k"]))
        wide = ks[-1] >= 100 * max(ks[1] if ks[0] == 0 and len(ks) > 1 else ks[0], 1)
        chart = charts.stat_chart(
            "spawn",
            title="Instability of the dense network against the spawn iteration",
            subtitle="spawned copies of level 0",
            y_title="instability (points)",
            fmt=".2f",
            metric=None,
            x_field="k",
            x_title="spawn iteration k",
            x_scale="symlog" if wide else "linear",
            rule=charts.STABLE_POINTS,
            order=data.order(spawn),
            **data.flags(spawn),
        )
        boxes.append(page.chart("instability_k", chart, ["spawn"]))
    for measure, (title, subtitle, y_title) in data.LEVEL_MEASURES.items():
        metric = f"level_{measure}"
        if metric in summary.columns["metric"]:
            chart = charts.stat_chart(
                "summary",
                title=title,
                subtitle=subtitle,
                y_title=y_title,
                fmt=".2f",
                metric=metric,
                ticks=ticks,
                order=data.order(summary),
                **data.flags(summary, [metric]),
            )
            boxes.append(page.chart(metric, chart, ["summary"]))
    parts = render.parts()
    body = parts.charts(boxes) if boxes else parts.notes([NO_INSTABILITY])
    page.section("instability", "Instability", body)


def _at_init_section(page: Page, summary: Columns, ticks: list[float]) -> None:
    by_method = "(datum.method == 'magnitude' ? 'IMP' : datum.method) + ': ' + datum.run"
    chart = charts.stat_chart(
        "summary",
        title="Pruning at initialization against IMP",
        subtitle="tickets of each run, by its method",
        y_title="test accuracy (%)",
        fmt=".2f",
        metric=ACCURACY_CHOICES,
        ticks=ticks,
        series="by_method",
        transforms=[
            {"filter": "datum.kind == 'ticket'"},
            {"calculate": by_method, "as": "by_method"},
        ],
        **data.flags(summary, list(charts.ACCURACY_FIELDS), ["ticket"]),
    )
    page.section("at-init", "Pruning at initialization", page.chart("at_init", chart, ["summary"]))


def _layer_section(page: Page, runs: list[Run]) -> None:
    layers = data.layer_data(runs)
    page.data["layers"] = layers.columns
    kept = [v for v in layers.columns["shade"] if v]
    chart = charts.layer_chart(
        len(runs),
        max(len(run.summary) for run in runs),
        len(set(layers.columns["layer"])),
        min(kept, default=100),
    )
    box = page.chart("layers", chart, ["layers"], LAYERS_ABOUT)
    page.section("layers", "Weights remaining per layer", box)


def _overlap_section(page: Page, runs: list[Run]) -> None:
    """The mask overlap of each run's tickets with an IMP run's (`data.overlaps`), where a
    run has one: a table per run."""
    found = data.overlaps(runs)
    if not found:
        return
    body = render.parts().notes([OVERLAP_ABOUT])
    for reference, run, result in found:
        body += overlap_html(reference, run, result)
    page.section("overlap", "Mask overlap with IMP", body)


# -- tables ---------------------------------------------------------------------------------


def overlap_html(reference: Run, run: Run, result: dict[str, Any]) -> Markup:
    """One run's mask overlap with its IMP run as a table: a row per paired ticket (replicate,
    levels, % remaining, θ0), the pooled Jaccard index and its chance value, then each
    layer's index (4 digits); θ0 that differ marked, and noted."""
    parts = render.parts()
    title = f"{run.label} against {reference.label}"
    pairs = result["pairs"]
    if not pairs:
        return parts.overlap(title, Markup(""), ["no pair of tickets at the same % remaining"])
    names = list(pairs[0]["layers"])
    headers = ["replicate", "level", f"{reference.label} level", "remaining %", "θ0"]
    headers += [comparing.POOLED, "chance", *map(comparing.layer_label, names)]
    rows, classes = [], []
    for pair in pairs:
        row = [str(pair["replicate"]), str(pair["level"]), str(pair["against_level"])]
        row += [f"{pair['percent_remaining']:.1f}", pair["theta0"]]
        row += [f"{pair['overall']['jaccard']:.4f}", f"{pair['overall']['chance']:.4f}"]
        row += [f"{pair['layers'][n]['jaccard']:.4f}" for n in names]
        rows.append(row)
        mark = "differs" if pair["theta0"] != "same" else ""
        classes.append(["", "", "", "", mark, *[""] * (2 + len(names))])
    states = {pair["theta0"] for pair in pairs}
    notes = [comparing.THETA0_NOTE] * ("differs" in states)
    notes += [comparing.THETA0_UNKNOWN] * ("unknown" in states)
    return parts.overlap(title, parts.table(headers, rows, classes), notes)


def _mark(stat: report.Stat | None) -> str:
    if stat is None:
        return ""
    return "diverged" if stat.diverged else "collapsed" if stat.collapsed else ""


def levels_html(run: Run) -> Markup:
    """A run's per-level table as `lt show` prints it (`report.format_stat`,
    `report.format_count`), with the cells whose numbers leave out diverged cells (red) or
    include collapsed ones (magenta) marked, then the legend and notes. Where the cells
    counted FLOPs, the level's training and inference FLOPs (x dense; its ticket's, or its
    first member's) follow the percent remaining."""
    summary = run.summary
    kinds = list(dict.fromkeys(k for row in summary for k in row["members"]))
    unstable = {k for k in kinds if any("instability" in r["members"].get(k, {}) for r in summary)}
    costly = [
        f for f in report.COST_FIELDS if any(f in m for r in summary for m in r["members"].values())
    ]
    headers = ["level", "remaining %", *(f"{f.split('_')[0]} FLOPs x" for f in costly)]
    for kind in kinds:
        headers += [f"{kind} n", f"{kind} early-stop it", f"{kind} acc @ES %", f"{kind} final %"]
        headers += [f"{kind} instability pts"] if kind in unstable else []
    rows, classes, stats = [], [], []
    for row in summary:
        cells, marks = [str(row["level"]), f"{row['percent_remaining']:.1f}"], ["", ""]
        reference = next(iter(row["members"].values()))  # the ticket where there is one
        cells += [report.format_stat(reference.get(f), 1, 3) for f in costly]
        marks += [""] * len(costly)
        for kind in kinds:
            member = row["members"].get(kind, {})
            count = member.get("early_stop_iter")
            stats.append(count)
            cells += [
                report.format_count(count),
                report.format_stat(count, digits=0),
                report.format_stat(member.get("early_stop_test_acc"), 100),
                report.format_stat(member.get("final_test_acc"), 100),
            ]
            marks += [_mark(count)] * 4
            if kind in unstable:
                cells.append(report.format_stat(member.get("instability"), 100))
                marks.append(_mark(member.get("instability")))
        rows.append(cells)
        classes.append(marks)
    notes = [
        *report.legend(stats),
        *report.grouping_notes(run.cells),
        *report.collapse_notes(run.cells),
    ]
    parts = render.parts()
    return parts.table(headers, rows, classes) + parts.notes(notes)


def marked_cells_html(run: Run) -> Markup:
    """Every diverged or collapsed cell of a run, one row each (a note where there is none)."""
    rows, classes = [], []
    for c in sorted(run.cells, key=lambda c: (c["level"], c["replicate"], c["member"])):
        diverged, emptied = report.is_diverged(c), report.collapsed_layers(c)
        if diverged or emptied:
            what = "diverged" if diverged else "collapsed"
            rows.append(
                [str(c["level"]), str(c["replicate"]), c["member"], what, "; ".join(emptied) or "-"]
            )
            classes.append([what] * 5)
    parts = render.parts()
    if not rows:
        return parts.notes(["no diverged or collapsed cells"])
    return parts.table(["level", "replicate", "member", "state", "emptied layers"], rows, classes)


def _shown(value: Any) -> str:
    return "-" if value is diff.MISSING else value if isinstance(value, str) else json.dumps(value)


def _differs(value: Any, base: Any) -> bool:
    return (value is diff.MISSING) != (base is diff.MISSING) or not diff._same(value, base)


def hyperparameters_html(runs: Sequence[Run]) -> Markup:
    """Every run's hyperparameters (`diff.flatten` of the stored descriptor) side by side,
    fields that differ from the first run marked, then each run's differences as `lt diff`
    writes them."""
    flats = [diff.flatten(run.full) for run in runs]
    fields = list(dict.fromkeys(f for flat in flats for f in flat))
    rows, classes = [], []
    for f in fields:
        values = [flat.get(f, diff.MISSING) for flat in flats]
        rows.append([f, *map(_shown, values)])
        classes.append(["", "", *("differs" if _differs(v, values[0]) else "" for v in values[1:])])
    parts = render.parts()
    html = parts.table(["field", *(r.label for r in runs)], rows, classes)
    for run in runs[1:]:
        found = diff.differences(runs[0].full, run.full)
        html += parts.differences(runs[0].label, run.label, diff.text(found))
    return html


def _figure_of(run: Run) -> tuple[str, str | None] | None:
    """(figure, budget) for a run `lt reproduce` made (its alias ``reproduce-FIGURE-BUDGET``)."""
    from ltcli.results import reproduce

    for name in run.meta.get("names", []):
        for figure in reproduce.FIGURES:
            for budget in reproduce.BUDGETS:
                if name == f"reproduce-{figure}-{budget}":
                    return figure, budget
    return None


def claims_html(run: Run, figure: str | None) -> Markup | None:
    """The paper's claims checked on a run, as `lt reproduce` prints them
    (`ltcli.results.reproduce`): for a run `lt reproduce` made, or any run with `figure`
    named; None for other runs."""
    from ltcli.results import reproduce

    found = _figure_of(run)
    if figure is None and found is None:
        return None
    name = figure or found[0]
    cells = run.cells
    if found is not None and found[0] == name:
        cells = reproduce.protocol_cells(cells, reproduce.protocol(name, found[1]).spec)
    t = reproduce.Measurements(cells)
    results = reproduce.evaluate(name, cells)
    headers, rows = reproduce.claim_rows(results)
    verdicts = {reproduce.HELD: "held", reproduce.NOT_HELD: "not-held"}
    classes = [[""] * 5 + [verdicts.get(r.verdict, "not-reached")] for r in results]
    meta = reproduce.paper_data()["paper"]
    where = reproduce.paper_data()["figures"][name]["source"]["where"]
    notes = reproduce.claims_table(name, results, t).split("\n\n")[-1].splitlines()
    parts = render.parts()
    return parts.claims(
        meta["short"],
        meta["arxiv"],
        where,
        run.label,
        [r.claim["text"] for r in results],
        parts.table(headers, rows, classes),
        notes,
    )


def run_html(run: Run) -> Markup:
    """A run's section: what it is, its per-level table and its diverged and collapsed cells."""
    names = ", ".join(run.meta.get("names", [])) or "-"
    experiment = run.meta.get("experiment", "?")
    lines = [f"run {run.run_id} · experiment {experiment} · names {names} · {len(run.cells)} cells"]
    if why := outdated(run.record):
        lines.append(f"note: {why}; a spec now makes a new run")
    return render.parts().run(lines, levels_html(run), marked_cells_html(run))
