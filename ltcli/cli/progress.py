"""Progress of a run on stderr: `CliProgress` receives the runner's events and draws them
with a `ltcli.core.meter.Meter`."""

from __future__ import annotations

import time
from collections.abc import Callable

import click

from ltcli.core.meter import Meter
from ltcli.experiment.plan import Plan, Progress
from ltcli.storage.store import CellKey


class CliProgress(Progress):
    """A run's progress on stderr, one `Meter` per level: a live line on a terminal;
    otherwise a line when a level starts, then every `every` seconds, then its finish line.

    Args:
      total_levels: the run's last level, shown as ``level L/total_levels``.
      every: seconds between lines when stderr is not a terminal (``--progress-every``).
      clock, live: as for `Meter`.
    """

    def __init__(
        self,
        total_levels: int,
        every: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        live: bool | None = None,
    ):
        self.total_levels, self.every, self.clock, self.live = total_levels, every, clock, live
        self.meter: Meter | None = None

    def start(self, plan: Plan) -> None:
        self.total_levels = plan.rounds  # a one-shot run has a level per target

    def level(self, level: int, cells: list[CellKey], total_steps: int, start: int) -> None:
        self.current, self.cells = level, len(cells)
        label = f"level {level}/{self.total_levels}  {len(cells)} cells"
        self.meter = Meter(
            label, total_steps, start, every=self.every, clock=self.clock, live=self.live
        )

    def advance(self, steps: int) -> None:
        assert self.meter is not None, "advance before level"
        self.meter.add(steps)

    def finish(self) -> None:
        assert self.meter is not None, "finish before level"
        meter, self.meter = self.meter, None
        seconds = meter.elapsed()
        meter.close(
            f"level {self.current}: {self.cells} cells x {meter.total:,} iterations "
            f"in {seconds:.1f} s ({meter.added / max(seconds, 1e-9):,.0f} it/s)"
        )

    def note(self, text: str) -> None:
        if self.meter is not None:
            self.meter.note(text)
        else:
            click.echo(text, err=True)
