"""``lt report``: stored runs as one self-contained, interactive HTML page.

`build` is a pure function from a store's runs to an HTML string; `write` writes it
atomically. The page opens offline: the Vega, Vega-Lite and vega-embed libraries are inlined
(vl-convert's bundle, `render.javascript_bundle`), and so is every number, so nothing is
fetched when it is viewed. The charts are Vega-Lite specs built with altair (validated against
the schema of the Vega-Lite version the bundle carries) and drawn as SVG:

* test accuracy (at early stop, or at the end: a picker) and the early-stop iteration against
  the percent of weights remaining, on a log axis, for tickets and each control kind, with a
  band of ± one sample std or min to max over replicates (a toggle); diverged cells are red
  crosses at the top of the chart (they are in no mean), collapsed ones magenta rings;
* the mean test-accuracy curve during training at one level (a picker), ± std;
* instability against % remaining (stability copies) and against the spawn iteration k
  (spawned dense copies), and each ticket's barrier above the line and instability on the path
  from the level before against % remaining (`data.LEVEL_MEASURES`), where the runs have them;
* pruning at initialization against IMP, where any run prunes at initialization;
* per-layer weights remaining as a level x layer heat map;
* where several runs include an IMP run, the mask overlap of each other run's tickets with
  those of the first IMP run of its model (per-layer and pooled Jaccard at equal % remaining,
  `ltcli.results.compare.mask_overlap`, as ``lt compare --masks`` prints it);
* the paper's claims table when a run is a `lt reproduce` figure, each run's per-level table
  with diverged and collapsed cells marked, its hyperparameters and its differences from the
  first run.

Several runs (a sweep, or runs to compare) are drawn together, each series labelled by its
run's alias (`ltcli.results.listing.run_label`).

The package: `data` (the runs' numbers as the tables the charts read), `charts` (the Vega-Lite
specs), `sections` (what the page shows, in order), `render` (the Jinja2 templates of
``templates/`` with the CSS and script of ``static/``, package files).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from ltcli.core import atomic
from ltcli.core.errors import UsageError
from ltcli.experiment.plan import Progress
from ltcli.results.page.data import MAX_CURVE_POINTS, SCALE, Run, labels
from ltcli.storage.store import CellKey, Store

__all__ = ["MAX_CURVE_POINTS", "SCALE", "VALIDATE_SPECS", "Rewrite", "build", "check_figure"]
__all__ += ["write"]

VALIDATE_SPECS = False
"""Whether altair checks each chart against the Vega-Lite schema as the page is built: seconds
per page, so off; the tests switch it on."""


def check_figure(figure: str | None) -> None:
    """Refuses a `figure` that `lt reproduce` does not know.

    Raises:
      UsageError: `figure` is not None and not in `ltcli.results.reproduce.FIGURES`.
    """
    from ltcli.results import reproduce

    if figure is not None and figure not in reproduce.FIGURES:
        known = ", ".join(reproduce.FIGURES)
        raise UsageError(f"--figure {figure}: unknown; known figures: {known}")


def build(store: Store, run_ids: Sequence[str], *, figure: str | None = None) -> str:
    """The report page of `run_ids` (each once, in order; the first is the reference of the
    differences) as one HTML document with everything inlined.

    Args:
      store: the store holding the runs.
      run_ids: one or more run ids.
      figure: a figure of `ltcli.results.reproduce.FIGURES` whose claims to check on every
        run; by default only runs `lt reproduce` made (by their alias) get a claims table.

    Raises:
      UsageError: no runs, a run without finished cells, or an unknown figure.
    """
    check_figure(figure)
    ids = list(dict.fromkeys(run_ids))
    if not ids:
        raise UsageError("report: name at least one run")
    runs = [Run(store, r, label) for r, label in zip(ids, labels(store, ids), strict=True)]
    for run in runs:
        if not run.cells:
            raise UsageError(f"run {run.label}: no finished cells to report")
    from ltcli.results.page import sections  # Jinja2 loads when a page is built, not with lt run

    return sections.build(runs, figure, VALIDATE_SPECS)


def write(store: Store, run_ids: Sequence[str], path: Path, *, figure: str | None = None) -> Path:
    """Writes `build`'s page to `path` atomically (readers see the old page or the new one)."""
    atomic.write_bytes(Path(path), build(store, run_ids, figure=figure).encode("utf-8"))
    return Path(path)


class Rewrite(Progress):
    """A progress receiver that rewrites the report of `run_ids` at `path` each time the run
    stores a group of cells (after every level), once they are on disk.

    A report that cannot be written (a full disk, a run without cells yet) does not stop the
    training: `note` is told why, and the next level tries again.
    """

    def __init__(
        self,
        store: Store,
        run_ids: Sequence[str],
        path: Path,
        note: Callable[[str], None] = lambda text: None,
        figure: str | None = None,
    ):
        self.store, self.run_ids, self.path, self.note = store, list(run_ids), Path(path), note
        self.figure = figure
        self.writes = 0

    def stored(self, cells: list[CellKey], flush: Callable[[], None]) -> None:
        flush()
        self.rewrite()

    def rewrite(self) -> None:
        """Writes the report now."""
        try:
            write(self.store, self.run_ids, self.path, figure=self.figure)
            self.writes += 1
        except (OSError, UsageError) as err:
            self.note(f"note: report {self.path} not written: {err}")
