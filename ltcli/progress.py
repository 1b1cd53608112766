"""Progress of a run on stderr, for a person at a terminal or a log file."""

from __future__ import annotations

import sys
import time

import click

from ltcli.plan import Progress
from ltcli.store import CellKey


def _clock(seconds: float) -> str:
    """``"4:05"`` or ``"1:02:03"``."""
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class CliProgress(Progress):
    """Progress on stderr: a live line on a terminal, one line per level otherwise."""

    def __init__(self, total_levels: int, every: float = 60.0):
        self.total_levels, self.every = total_levels, every
        self.live = sys.stderr.isatty()

    def level(self, level: int, cells: list[CellKey], total_steps: int, start: int) -> None:
        self.current, self.cells, self.total = level, len(cells), total_steps
        self.done = self.resumed_at = start
        self.started, self.last_draw = time.monotonic(), 0.0

    def advance(self, steps: int) -> None:
        self.done += steps
        now = time.monotonic()
        if self.live and (now - self.last_draw > 0.2 or self.done >= self.total):
            self.last_draw = now
            rate = (self.done - self.resumed_at) / max(now - self.started, 1e-9)
            eta_text = _clock((self.total - self.done) / rate) if rate > 0 else "--:--"
            click.echo(
                f"\rlevel {self.current}/{self.total_levels}  {self.cells} cells  "
                f"iteration {self.done}/{self.total}  {rate:,.0f} it/s  ETA {eta_text}   ",
                err=True,
                nl=False,
            )

    def finish(self) -> None:
        seconds = time.monotonic() - self.started
        if self.live:
            click.echo("", err=True)
        click.echo(
            f"level {self.current}: {self.cells} cells x {self.total} iterations "
            f"in {seconds:.1f} s",
            err=True,
        )

    def note(self, text: str) -> None:
        if self.live:
            click.echo("", err=True)
        click.echo(text, err=True)
