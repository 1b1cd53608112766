"""A progress meter on stderr, for a person at a terminal or a log file: it draws both a
run's levels (`ltcli.cli.progress`) and ``lt data fetch``'s downloads."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

import click

REDRAW = 0.2
"""Seconds between redraws of the live line on a terminal."""


def _clock(seconds: float) -> str:
    """``"4:05"`` or ``"1:02:03"``."""
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class Meter:
    """Work done towards a total, shown on stderr as
    ``LABEL  DONE/TOTAL UNIT  RATE UNIT/s  ETA H:MM:SS``.

    On a terminal the line is redrawn in place, at most every REDRAW seconds. Elsewhere (a log
    file, a batch scheduler) it is printed when the meter starts, then at most every `every`
    seconds as work is added, so a long job is never silent. `close` ends it with a last line.

    Args:
      label: what is measured; starts the line.
      total: the amount when done; None if unknown (then there is no ETA).
      done: the amount already done when the meter starts (a resumed job); not in the rate.
      unit: the amount's unit as printed (``it``, ``MB``).
      scale: amounts are divided by it when printed (1e6 shows bytes as MB, with one decimal).
      every: seconds between lines when stderr is not a terminal.
      clock: monotonic seconds; tests pass a fake one.
      live: redraw one line in place; default: whether stderr is a terminal.
    """

    def __init__(
        self,
        label: str,
        total: float | None,
        done: float = 0,
        *,
        unit: str = "it",
        scale: float = 1.0,
        every: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        live: bool | None = None,
    ) -> None:
        self.label, self.total, self.done, self.first = label, total, done, done
        self.unit, self.scale, self.every, self.clock = unit, scale, every, clock
        self.live = sys.stderr.isatty() if live is None else live
        self.started = clock()
        self.open = False  # a live line is on screen, not yet ended by a newline
        self._draw(self.started)

    @property
    def added(self) -> float:
        """The amount added since the meter started."""
        return self.done - self.first

    def elapsed(self) -> float:
        return self.clock() - self.started

    def add(self, amount: float) -> None:
        """Counts `amount` more done; draws the line if it is due (and not complete: `close`
        draws the last line)."""
        self.done += amount
        now = self.clock()
        complete = self.total is not None and self.done >= self.total
        if not complete and now - self.drawn >= (REDRAW if self.live else self.every):
            self._draw(now)

    def _number(self, amount: float) -> str:
        return f"{amount / self.scale:,.{0 if self.scale == 1 else 1}f}"

    def line(self, now: float) -> str:
        """The status line at time `now`."""
        rate = self.added / max(now - self.started, 1e-9)
        amount = self._number(self.done) + (f"/{self._number(self.total)}" if self.total else "")
        left = (self.total or 0) - self.done
        eta = _clock(left / rate) if self.total and rate > 0 else "--:--"
        return f"{self.label}  {amount} {self.unit}  {self._number(rate)} {self.unit}/s  ETA {eta}"

    def _draw(self, now: float) -> None:
        self.drawn = now
        if self.live:
            click.echo(f"\r{self.line(now)}\033[K", nl=False, err=True)
            self.open = True
        else:
            click.echo(self.line(now), err=True)

    def note(self, text: str) -> None:
        """Prints `text` on a line of its own; a live line is redrawn below it when due."""
        if self.open:
            click.echo("", err=True)
            self.open = False
        click.echo(text, err=True)

    def close(self, text: str | None = None) -> None:
        """Ends the meter with `text`, by default ``LABEL  DONE UNIT in SECONDS s  RATE``."""
        if text is None:
            seconds = self.elapsed()
            rate = self._number(self.added / max(seconds, 1e-9))
            text = f"{self.label}  {self._number(self.done)} {self.unit} in {seconds:.1f} s  "
            text += f"{rate} {self.unit}/s"
        click.echo(f"\r{text}\033[K" if self.open else text, err=True)
        self.open = False
