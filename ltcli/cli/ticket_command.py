"""``lt ticket``: write one ticket (mask, rewind weights, metadata) to a file.

A thin Click command over `ltcli.results.ticket.export`; a bad output path
(`ltcli.cli.outputs`), RUN, level or replicate, or an unfinished cell, exits 2
before anything is written.
"""

from __future__ import annotations

from pathlib import Path

import click

from ltcli.cli import outputs
from ltcli.cli.options import STORE_OPTION
from ltcli.core.paths import default_store
from ltcli.results import ticket as tickets
from ltcli.storage.store import Store


@click.command()
@click.argument("run_ref", metavar="RUN")
@click.option("--level", type=int, required=True, help="The pruning level of the ticket.")
@click.option("--replicate", type=int, default=0, show_default=True, help="The replicate.")
@click.option("--trained", is_flag=True, help="Also write the ticket's trained weights.")
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="Ticket file in an existing folder; its suffix picks the format (.safetensors or .npz).",
)
@STORE_OPTION
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Where the run's data set is (only its image size is read, for the FLOPs); "
    "searched before $LT_DATA_DIR, the system location, lt's cache.",
)
def ticket(
    run_ref: str,
    level: int,
    replicate: int,
    trained: bool,
    output: Path,
    store: Path | None,
    data_dir: Path | None,
) -> None:
    """Write the ticket of RUN at --level (and --replicate) to a file.

    \b
    The file holds the ticket's mask (mask/...), the weights its level started from before
    masking (rewind/params/..., rewind/batch_stats/...: θ0, or θk with late rewinding),
    with --trained its weights after training (trained/...), and metadata as JSON: run,
    level, replicate, model, % of weights remaining per layer and overall, parameters,
    FLOPs of a forward pass and bytes, dense and sparse (CSR).
    """
    outputs.check_output(output, tickets.SUFFIXES, exact=True)
    target = Store(store or default_store())
    run_id = target.resolve(run_ref)
    written = tickets.export(target, run_id, level, output, replicate, trained, data_dir)
    meta = written.metadata
    params, flops, size = meta["parameters"], meta["flops"], meta["bytes"]
    click.echo(
        f"wrote {output}: run {run_id[:12]} replicate {replicate} level {level}, "
        f"{meta['percent_remaining']:.1f}% of prunable weights remaining\n"
        f"  parameters {params['remaining']:,} of {params['total']:,}\n"
        f"  FLOPs      {flops['sparse']:,} with the mask, {flops['dense']:,} dense\n"
        f"  bytes      {size['csr']:,} sparse (CSR), {size['dense_float32']:,} dense float32"
    )
