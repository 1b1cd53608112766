"""``lt data``: download data sets (``fetch``) and list what lt finds (``ls``)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import click

from ltcli.cli.base import LtGroup
from ltcli.data import fetch as fetching

_DATA_DIR = click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder that holds (or receives) data sets; default $LT_DATA_DIR, else lt's cache.",
)


@click.group(cls=LtGroup)
def data() -> None:
    """Download data sets and list the ones lt can find."""


@data.command()
@click.argument("name", type=click.Choice(list(fetching.FILES)))
@_DATA_DIR
def fetch(name: str, data_dir: Path | None) -> None:
    """Download NAME's original files into DIR/NAME/ and verify them.

    Mirrors are tried in order; $LT_MIRRORS_<NAME> (e.g. LT_MIRRORS_FASHION_MNIST) replaces
    them. Files already there and verified are skipped.
    """
    folder = fetching.fetch(name, data_dir)
    click.echo(f"{name}: verified in {folder}")


@data.command(name="ls")
@_DATA_DIR
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print a JSON array of {name, origin, content_id, verified, problem} instead "
    "(origin and content_id null where not found; verified null where no checksum is known).",
)
def ls(data_dir: Path | None, as_json: bool) -> None:
    """List known data sets: where found, content id, checksum status."""
    listings = fetching.list_datasets(data_dir)
    if as_json:
        click.echo(json.dumps([dataclasses.asdict(item) for item in listings], indent=2))
        return
    for item in listings:
        if item.origin is None:
            detail = item.problem or f"get it with `lt data fetch {item.name}`"
            click.echo(f"{item.name:<14} {'not found':<12} {detail}")
            continue
        status = {True: "verified", False: "MISMATCH", None: "unverified"}[item.verified]
        click.echo(f"{item.name:<14} {status:<12} {item.content_id}  {item.origin}")
