"""``make bench``: throughput and compile figures of this machine, against lt's targets.

Prints one table (figure, lt's value, target, met?) and writes it to ``results/bench.json``.
Models train on synthetic data of the real shapes (speed does not depend on pixel values),
so the bench needs no data set; the ``lt run smoke`` rows need Fashion-MNIST and are
skipped without it. Run from the repository root as ``python -m benchmarks [--quick]
[--only SECTION]``, SECTION one of lenet, deterministic, levels, conv, convstep, smoke,
stream, resnet50, sparse. A development tool: it is not part of the installed package.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from pathlib import Path

import click
import jax

from benchmarks.common import Row
from benchmarks.conv import conv_rows, conv_step_rows, resnet50_rows
from benchmarks.lenet import deterministic_rows, lenet_rows
from benchmarks.runs import level_rows, smoke_rows
from benchmarks.sparse import sparse_rows
from benchmarks.stream import stream_rows
from ltcli.core import atomic, paths
from ltcli.results.report import format_table


def _number(value: float | None) -> str:
    """Three significant digits, thousands separated: 18,000, 535, 2.41, 0.0412."""
    if value is None:
        return "-"
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"


SECTIONS: dict[str, Callable[[bool], list[Row]]] = {
    "lenet": lenet_rows,
    "deterministic": deterministic_rows,
    "levels": level_rows,
    "conv": conv_rows,
    "convstep": conv_step_rows,
    "smoke": lambda quick: smoke_rows(),
    "stream": stream_rows,
    "resnet50": resnet50_rows,
    "sparse": sparse_rows,
}


@click.command()
@click.option("--quick", is_flag=True, help="Fewer and shorter measurements.")
@click.option(
    "--only",
    type=click.Choice(sorted(SECTIONS)),
    multiple=True,
    help="Measure only these sections (repeatable); all by default.",
)
@click.option(
    "--json-out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("results/bench.json"),
    show_default=True,
)
def main(quick: bool, only: tuple[str, ...], json_out: Path) -> None:
    """Measure lt's speed on this machine and compare it with the targets."""
    paths.request_fast_cpu_convolutions()  # as lt run does; before JAX starts its backend
    device = f"{jax.default_backend()}: {jax.devices()[0].device_kind}"
    click.echo(f"device {device}, {os.cpu_count()} CPU cores", err=True)
    rows = [row for name in dict.fromkeys(only or SECTIONS) for row in SECTIONS[name](quick)]
    table = [
        [
            r.figure,
            _number(r.value),
            r.unit,
            _number(r.target),
            r.met,
        ]
        for r in rows
    ]
    click.echo(format_table(["figure", "lt", "unit", "target", "met"], table))
    atomic.write_json(json_out, {"device": device, "rows": [dataclasses.asdict(r) for r in rows]})
    click.echo(f"wrote {json_out}", err=True)


if __name__ == "__main__":
    main()
