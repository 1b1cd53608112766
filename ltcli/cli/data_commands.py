"""``lt data``: download data sets (``fetch``) and list what lt finds (``ls``)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import click

from ltcli.cli.options import LtGroup
from ltcli.core.errors import UsageError
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


def _row(item: fetching.Listing) -> dict:
    row = dataclasses.asdict(item)
    if row["note"] is None:
        del row["note"]  # only the data sets that have one (imagenet) carry the key
    return row


def _indented(text: str) -> str:
    return "\n".join(f"{'':<14} {line}" for line in text.splitlines())


@data.command(name="ls")
@_DATA_DIR
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print a JSON array of {name, origin, content_id, verified, problem} instead "
    "(origin and content_id null where not found; verified null where no checksum is known; "
    "imagenet adds a note: whether its content id was cached or computed now).",
)
@click.option(
    "--verify",
    is_flag=True,
    help="Also decode every image of the data sets read from disk as they train (imagenet) "
    "once, naming the files that fail; exit 2 if any data set has a problem.",
)
def ls(data_dir: Path | None, as_json: bool, verify: bool) -> None:
    """List known data sets: where found, content id, checksum status.

    ImageNet's content id is computed once (a full read) and cached beside a fingerprint of
    its file list (names, sizes, mtimes); the listing says which it was.
    """
    listings = fetching.list_datasets(data_dir, verify=verify)
    if as_json:
        click.echo(json.dumps([_row(item) for item in listings], indent=2))
    else:
        for item in listings:
            if item.origin is None:
                by_hand = fetching.BY_HAND.get(item.name)
                detail = item.problem or by_hand or f"get it with `lt data fetch {item.name}`"
                status = "unusable" if by_hand and item.problem else "not found"
                click.echo(f"{item.name:<14} {status:<12} {detail}")
                continue
            status = {True: "verified", False: "MISMATCH", None: "unverified"}[item.verified]
            click.echo(f"{item.name:<14} {status:<12} {item.content_id}  {item.origin}")
            for extra in (item.note, item.problem):
                if extra:
                    click.echo(_indented(extra))
    failed = [item.name for item in listings if item.problem]
    if verify and failed:
        raise UsageError(f"lt data ls --verify: problems in {', '.join(failed)} (listed above)")
