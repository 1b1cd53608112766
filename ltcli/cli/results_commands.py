"""``lt compare``, ``lt diff``, ``lt export``, ``lt plot``: tables, differences, data files
and figures from the store.

Thin Click commands; each calls one library function (`ltcli.results.compare`,
`ltcli.results.diff`, `ltcli.results.export`, `ltcli.results.plot`). A RUN is a run's name,
an id prefix or its experiment; an unknown or ambiguous one exits 2. RUN arguments complete
(`complete_runs`) to the ids and aliases of the runs in the store.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
from click.shell_completion import CompletionItem

from ltcli.cli import outputs
from ltcli.cli.options import STORE_OPTION
from ltcli.core import atomic
from ltcli.core.errors import UsageError
from ltcli.core.paths import default_store
from ltcli.results import compare as comparing
from ltcli.results import diff as diffing
from ltcli.results import export as exporting
from ltcli.results import session
from ltcli.storage.store import Store

DPI = 100
SIZE = (1500, 500)
"""Default image size in pixels (width, height)."""


def parse_size(text: str) -> tuple[int, int]:
    """``"1200x500"`` -> ``(1200, 500)``: width and height in pixels.

    Raises:
      UsageError: not two positive integers joined by ``x``.
    """
    parts = text.lower().split("x")
    if len(parts) != 2 or not all(p.strip().isdigit() and int(p) > 0 for p in parts):
        raise UsageError(f"--size {text}: expected WIDTHxHEIGHT in pixels, like 1500x500")
    return int(parts[0]), int(parts[1])


def parse_levels(text: str) -> list[int]:
    """``"0,3,7"`` -> ``[0, 3, 7]``.

    Raises:
      UsageError: not a comma-separated list of non-negative integers.
    """
    items = [t.strip() for t in text.split(",")]
    if not all(t.isdigit() for t in items):
        raise UsageError(f"--levels {text}: expected level numbers like 0,3,7")
    return sorted({int(t) for t in items})


def complete_runs(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[Any]:
    """Shell completion of a RUN: the first 12 digits of each run id in the store (``--store``
    if given before it, else $LT_STORE, else ./results) and each alias, those that start
    with `incomplete`. Never fails: a missing or unreadable store completes to nothing."""
    try:
        target = Store(ctx.params.get("store") or default_store())
        items: dict[str, CompletionItem] = {}
        for run_id in target.run_ids():
            meta = target.meta(run_id)
            names = meta.get("names", [])
            about = ", ".join(names) or meta.get("experiment")
            items.setdefault(run_id[:12], CompletionItem(run_id[:12], help=about))
            for name in names:
                items.setdefault(name, CompletionItem(name, help=run_id[:12]))
        return [item for value, item in items.items() if value.startswith(incomplete)]
    except Exception:  # completion must never print a traceback into the shell
        return []


def _resolve(store: Path | None, refs: tuple[str, ...]) -> tuple[Store, list[str]]:
    """The store and the run id of each of `refs` (every run in the store if there are none)."""
    target = Store(store or default_store())
    return target, [target.resolve(ref) for ref in refs] if refs else target.run_ids()


@click.command()
@click.argument(
    "run_refs",
    metavar="RUN RUN [RUN...] | SWEEP",
    nargs=-1,
    required=True,
    shell_complete=complete_runs,
)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print JSON instead of the table: the same numbers, accuracies as fractions, and "
    "each run's differences from the first.",
)
@click.option(
    "--masks",
    is_flag=True,
    help="Also compare each RUN's ticket masks with the first RUN's: the Jaccard index per "
    "prunable layer and over all of them, for each replicate both have and each pair of "
    "tickets at the same % of weights remaining (to 0.1), under the table (in JSON: each "
    'run\'s "mask_overlap").',
)
@STORE_OPTION
def compare(run_refs: tuple[str, ...], as_json: bool, masks: bool, store: Path | None) -> None:
    """Compare runs level by level, with deltas against the first RUN.

    For each level (by index; each run shows its own % of weights remaining), member kind
    (ticket, reinit, random) and run: the number of cells n, early-stop iteration, test
    accuracy there and at the end (mean ± sample std over replicates, in percent), and each
    one's delta against the first RUN. Diverged cells (loss NaN or inf) are left out of the
    means and counted beside n; a group whose cells all diverged reads "diverged".

    Above the table, on stderr (so stdout stays the table), the hyperparameters each RUN
    differs in from the first, as `lt diff` prints them.

    One SWEEP (its name or a prefix of its id, as `lt ls` shows them) compares its runs in
    the sweep's order. Runs of one sweep are labelled by their swept values
    (train.lr=0.001 train.seed=0), and in JSON have "axes".

    With --masks, under the table: how far each RUN's ticket masks agree with the first
    RUN's, whatever their methods (Jaccard = weights both keep / weights either keeps, and
    what random masks of the same per-layer counts give), each pair marked where the two
    tickets' θ0 differ (then they are masks of different networks). Runs of different
    models say their masks are not comparable.
    """
    if len(run_refs) == 1 and (found := Store(store or default_store()).resolve_sweep(run_refs[0])):
        run_refs = tuple(found["runs"])
    target, run_ids = _resolve(store, run_refs)
    result = comparing.compare(target, run_ids, masks=masks)
    if as_json:
        click.echo(comparing.to_json(result))
        return
    click.echo(comparing.differences_text(result) + "\n", err=True)
    click.echo(comparing.table(result))
    if masks:
        click.echo("\n" + comparing.overlap_text(result))


@click.command(name="diff")
@click.argument("run_a", metavar="RUN-A", shell_complete=complete_runs)
@click.argument("run_b", metavar="RUN-B", shell_complete=complete_runs)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help='Print {"a": id, "b": id, "differences": [{"field", "a", "b"}, ...]} instead.',
)
@STORE_OPTION
def diff(run_a: str, run_b: str, as_json: bool, store: Path | None) -> None:
    """Show the hyperparameters in which RUN-B differs from RUN-A, one field a line.

    \b
    Fields of the runs' descriptors, like train.lr or prune.rates.fc, with data.content
    (the data set's content id) and schema among them:
      train.lr  0.0012 -> 0.003
    A field one run lacks shows - on that side (in JSON: null, and "missing": "a" or "b").
    Identical runs print "same: no differences".
    """
    target, (a, b) = _resolve(store, (run_a, run_b))
    found = diffing.differences(target.descriptor(a)["full"], target.descriptor(b)["full"])
    if as_json:
        document = {"a": a, "b": b, "differences": diffing.to_json(found)}
        click.echo(json.dumps(document, indent=2))
    else:
        click.echo(diffing.text(found))


@click.command()
@click.argument("run_refs", metavar="[RUN...]", nargs=-1, shell_complete=complete_runs)
@click.option(
    "--csv", "as_csv", is_flag=True, help="Write CSV (the default, unless -o names a .json file)."
)
@click.option("--json", "as_json", is_flag=True, help="Write a JSON array of row objects.")
@click.option("--curves", is_flag=True, help="One row per evaluation of each cell instead.")
@click.option(
    "--tensorboard",
    "as_tensorboard",
    is_flag=True,
    help="Write TensorBoard event files of every finished cell into each run's folder "
    "instead (as lt run --log tensorboard does) and print the folders.",
)
@click.option(
    "--wandb",
    "as_wandb",
    is_flag=True,
    help="Log every finished cell to Weights & Biases instead, one W&B run per cell grouped "
    "by run id (as lt run --log wandb does; offline without an API key or WANDB_MODE), and "
    "print where each run's cells went.",
)
@click.option(
    "--mlflow",
    "as_mlflow",
    is_flag=True,
    help="Log every finished cell to MLflow instead, one MLflow run per cell tagged "
    "lt.run_id (as lt run --log mlflow does; MLFLOW_TRACKING_URI, else "
    "sqlite:///STORE/mlflow.db), and print where each run's cells went.",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write to FILE, a .csv or .json file in an existing folder (default: stdout).",
)
@STORE_OPTION
def export(
    run_refs: tuple[str, ...],
    as_csv: bool,
    as_json: bool,
    curves: bool,
    as_tensorboard: bool,
    as_wandb: bool,
    as_mlflow: bool,
    output: Path | None,
    store: Path | None,
) -> None:
    """Export tidy rows, one per finished cell, of RUNs (default: every run in the store).

    \b
    Columns: run_id, name, experiment, dataset, model, replicate, level, member,
    percent_remaining, remaining_<layer> (% of each prunable layer), early_stop_iter,
    early_stop_test_acc, early_stop_test_loss, final_test_acc, final_test_loss,
    min_val_loss, start_iteration (k for a cell rewound to iteration k, else 0),
    iterations (where training ended, T), wall_seconds, diverged (the loss became NaN or
    inf: leave such rows out of means), grouping (single, vmap, serial, host: how the
    cell's group trained), deterministic. Accuracies are fractions, percentages 0-100;
    iterations are on the run's 0..T axis. NaN is null in JSON.
    With --curves: run_id, replicate, level, member, percent_remaining, iteration,
    val_loss, val_acc, test_loss, test_acc.
    With --tensorboard: each run's event files (one per cell, in RUN_DIR/tensorboard/,
    cells already written skipped), for `tensorboard --logdir`; prints each folder.
    With --wandb or --mlflow: each run's cells logged to that tracker (cells logged before
    skipped); prints where each run's cells went.
    """
    chosen = {"tensorboard": as_tensorboard, "wandb": as_wandb, "mlflow": as_mlflow}
    trackers = [name for name, wanted in chosen.items() if wanted]
    if trackers:
        rows = as_csv or as_json or curves or output is not None
        _export_to_tracker(trackers, store, run_refs, rows)
        return
    fmt = outputs.export_format(output, as_csv, as_json)
    target, run_ids = _resolve(store, run_refs)
    text = exporting.export(target, run_ids, fmt, curves)
    if output is None:
        click.echo(text, nl=False)
    else:
        atomic.write_bytes(output, text.encode())


def _export_to_tracker(
    trackers: list[str], store: Path | None, run_refs: tuple[str, ...], rows: bool
) -> None:
    """``lt export --tensorboard|--wandb|--mlflow``: writes each run's finished cells to the
    tracker and prints, one line per run, where they went."""
    flag = f"--{trackers[0]}"
    if len(trackers) > 1:
        raise UsageError("--tensorboard, --wandb and --mlflow: pick one")
    if rows:
        raise UsageError(f"{flag} logs to a tracker, not rows; drop --csv, --json, --curves and -o")
    tracker = session.TRACKERS[trackers[0]]
    tracker.require(flag)
    target, run_ids = _resolve(store, run_refs)
    for run_id in run_ids:
        click.echo(tracker.write_run(target, run_id))


@click.command()
@click.argument("run_refs", metavar="RUN...", nargs=-1, required=True, shell_complete=complete_runs)
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="Image file in an existing folder; its suffix picks the format (.png, .svg, .pdf, "
    ".jpg or .jpeg).",
)
@click.option(
    "--levels",
    metavar="LIST",
    help="Levels of the training-curve panel, like 0,3,7 (default: 5 spread out).",
)
@click.option(
    "--size",
    default="{}x{}".format(*SIZE),
    show_default=True,
    help="Image size WIDTHxHEIGHT in pixels.",
)
@click.option(
    "--dpi",
    type=click.IntRange(min=10),
    default=DPI,
    show_default=True,
    help="Pixels per inch: scales text and lines, not the image size.",
)
@click.option(
    "--error-bars",
    type=click.Choice(["std", "minmax"]),
    default="std",
    show_default=True,
    help="Error bars: ± one sample standard deviation, or the min-max range over replicates "
    "(as the paper's Figure 4).",
)
@click.option(
    "--instability",
    is_flag=True,
    help="Draw the instability analysis (runs with stability or spawned copies) instead.",
)
@STORE_OPTION
def plot(
    run_refs: tuple[str, ...],
    output: Path,
    levels: str | None,
    size: str,
    dpi: int,
    error_bars: str,
    instability: bool,
    store: Path | None,
) -> None:
    """Draw the paper's figures for RUNs into an image.

    With --instability, the instability analysis instead (Frankle et al. 2020): test error
    along the linear path between each ticket and its stability or spawned copy, and
    instability against % of weights remaining (IMP tickets) and against the spawn iteration
    (the dense network). Runs with different --retrain modes side by side compare them.

    Left: the ticket's test accuracy over training at a few levels (mean over replicates).
    Middle and right: early-stop iteration and test accuracy at early stop against % of
    weights remaining (log axis, 100 on the left), with --error-bars over replicates;
    controls dashed. Diverged cells are left out of means and bars and marked by a red x at
    the top. Several runs are told apart by colour.
    """
    outputs.check_output(output, outputs.image_suffixes(), kind="image type")
    target, run_ids = _resolve(store, run_refs)
    from ltcli.results import (
        plot as plotting,  # only `lt plot` pays for drawing
    )

    chosen = None if levels is None else parse_levels(levels)
    if instability:
        from ltcli.results import plot_instability

        pixels = parse_size(size)
        plotting.save(lambda: plot_instability.figure(target, run_ids, pixels, dpi), output, dpi)
    else:
        plotting.plot(target, run_ids, output, parse_size(size), dpi, chosen, error_bars)
    click.echo(f"wrote {output}", err=True)
