"""``lt report RUN... -o report.html``: one self-contained, interactive HTML page of runs. A
thin Click command over `ltcli.results.page`; `check_report_path` also checks ``lt run
--report PATH`` (whose page `ltcli.results.session` rewrites after every level)."""

from __future__ import annotations

from pathlib import Path

import click

from ltcli.cli import outputs
from ltcli.cli.options import STORE_OPTION
from ltcli.cli.results_commands import complete_runs
from ltcli.core.paths import default_store
from ltcli.results import page
from ltcli.storage.store import Store

SUFFIXES = (".html", ".htm")


def check_report_path(path: Path, option: str = "-o") -> Path:
    """`path` once `lt report` may write it (`outputs.check_output` for an HTML suffix)."""
    return outputs.check_output(path, SUFFIXES, kind="format", option=option)


@click.command()
@click.argument(
    "run_refs", metavar="RUN [RUN...]", nargs=-1, required=True, shell_complete=complete_runs
)
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("report.html"),
    show_default=True,
    help="The HTML file, in an existing folder. Checked before anything is read.",
)
@click.option(
    "--figure",
    metavar="FIGURE",
    help="Check the claims of this `lt reproduce` figure (lenet, conv2, resnet20-warmup) on "
    "every run; runs that `lt reproduce` made get their figure's claims anyway.",
)
@STORE_OPTION
def report(run_refs: tuple[str, ...], output: Path, figure: str | None, store: Path | None) -> None:
    """Write one self-contained HTML report of RUN (several: drawn together; one SWEEP, by
    its name or id prefix: its runs, labelled by their swept values).

    \b
    The page opens offline (every library and number is inside it) and has interactive
    charts: hover a point for its mean, std and n; click a legend entry to toggle a series;
    drag to pan and scroll to zoom. It shows test accuracy and the early-stop iteration
    against % of weights remaining with bands (± std or min to max) for tickets and each
    control, training curves per level, instability against % remaining and against k,
    level barriers, pruning at initialization against IMP, weights remaining per layer as a
    level x layer heat map, the paper's claims for a `lt reproduce` run, and each run's
    per-level table (diverged and collapsed cells marked), hyperparameters and differences
    from the first RUN.
    """
    path = check_report_path(output)
    page.check_figure(figure)
    target = Store(store or default_store())
    found = len(run_refs) == 1 and target.resolve_sweep(run_refs[0])
    run_ids = found["runs"] if found else [target.resolve(ref) for ref in run_refs]
    page.write(target, run_ids, path, figure=figure)
    click.echo(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB)", err=True)
