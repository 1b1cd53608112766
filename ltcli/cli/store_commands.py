"""``lt rm`` and ``lt gc``: remove runs, and what runs leave behind, from the store."""

from __future__ import annotations

from pathlib import Path

import click

from ltcli.cli.options import STORE_OPTION
from ltcli.cli.results_commands import complete_runs
from ltcli.core.paths import default_store
from ltcli.results import listing
from ltcli.storage import housekeeping
from ltcli.storage.store import Store


def _echo_removals(removals: list[housekeeping.Removal], dry_run: bool) -> None:
    """One line per removal, then the bytes freed, on stdout."""
    for removal in removals:
        verb = "would remove" if dry_run else "removed"
        click.echo(f"{verb} {removal.path}  ({removal.why}, {listing.format_size(removal.size)})")
    freed = listing.format_size(sum(r.size for r in removals))
    click.echo(f"would free {freed}" if dry_run else f"freed {freed}")


@click.command()
@click.argument("runs", metavar="RUN...", nargs=-1, required=True, shell_complete=complete_runs)
@click.option("--yes", "-y", is_flag=True, help="Remove without asking.")
@STORE_OPTION
def rm(runs: tuple[str, ...], yes: bool, store: Path | None) -> None:
    """Remove the runs RUN... from the store, with all their cells.

    RUN is a run's --name, a prefix of its id, or the experiment it was made from. A run
    that another lt process is training is refused (exit 1).
    """
    target = Store(store or default_store())
    run_ids = list(dict.fromkeys(target.resolve(ref) for ref in runs))
    housekeeping.check_free(target, run_ids)
    if not yes:
        for run_id in run_ids:
            meta = target.meta(run_id)
            about = " ".join([meta.get("experiment", "?"), *meta.get("names", [])])
            click.echo(
                f"  {run_id[:12]}  {about}  {listing.format_size(target.size_bytes(run_id))}",
                err=True,
            )
        plural = "s" if len(run_ids) > 1 else ""
        click.confirm(f"Remove {len(run_ids)} run{plural}?", abort=True, err=True)
    _echo_removals(housekeeping.remove_runs(target, run_ids), dry_run=False)


@click.command()
@click.option("--dry-run", "-n", is_flag=True, help="List what would be removed; remove nothing.")
@STORE_OPTION
def gc(dry_run: bool, store: Path | None) -> None:
    """Remove what runs leave behind: checkpoints of levels whose cells are all finished,
    temporary files of killed writes, and runs that never finished a cell (and hold no
    checkpoint to resume). Finished cells are kept; runs being trained are skipped.
    """
    target = Store(store or default_store())
    removals, skipped = housekeeping.collect(target, dry_run=dry_run)
    for run_id in skipped:
        click.echo(f"skipped run {run_id[:12]}: another lt process is training it", err=True)
    _echo_removals(removals, dry_run)
