"""Weights & Biases runs of a run's cells: ``lt run --log wandb`` logs each group of cells as
it is stored (`write_cells`, through `ltcli.results.session`'s progress receiver), ``lt
export --wandb`` logs them for runs made before (`write_run`).

One W&B run per cell, in the project `project` (``WANDB_PROJECT``, else ``lt``), grouped
by the lt run id (W&B's ``group``), named by `ltcli.results.cell_scalars.run_name`
(``r0/level_03/ticket``). It holds what every tracker shows of a cell
(`ltcli.results.cell_scalars`): its history has, at each evaluation with the iteration as
W&B's step, the validation and test loss and accuracy and ``learning_rate``, then the
``summary/`` scalars at the cell's last iteration; its config is the cell's parameters.

The mode (`mode`) is ``WANDB_MODE`` when set; else online when an API key is configured
(``WANDB_API_KEY``, or the one ``wandb login`` keeps in ~/.netrc), else offline: nothing
goes over the network, and ``wandb sync`` uploads the runs later. W&B's files go under
``WANDB_DIR`` when set, else into the run's folder (`files`)::

    <store>/<run id>/wandb/offline-run-<time>-<W&B id>/run-<W&B id>.wandb

Logging a cell is idempotent. Its W&B run id is the fingerprint of what it holds
(`ltcli.results.cell_scalars.Cell.fingerprint`), and the run's `MARKER` lists, for each
destination (mode, entity and project), the W&B id of every cell logged there: a cell
listed with its id is skipped, so a rerun logs nothing twice. A cell whose metrics changed
since is logged again as a new W&B run (the old one stays).
"""

from __future__ import annotations

import netrc
import os
import urllib.parse
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ltcli.core import atomic, extras
from ltcli.results import cell_scalars
from ltcli.storage.store import CellKey, Store

FOLDER = "wandb"
"""In the run's folder: `MARKER`, and W&B's files unless ``WANDB_DIR`` is set."""
FORMAT = 1
"""What a W&B run holds; a change logs every cell again, as new W&B runs."""
MARKER = ".lt-logged.json"
"""In the run's `FOLDER`: destination -> cell name -> the W&B id it was logged under."""
PROJECT = "lt"
"""The W&B project when ``WANDB_PROJECT`` is not set."""


def require(flag: str) -> Any:
    """The wandb package.

    Raises:
      UsageError: it is not installed; the message, for `flag`, says how to install it.
    """
    return extras.require(
        "wandb", flag, "pip install wandb (from a clone: pip install -e '.[wandb]')"
    )


def _has_api_key() -> bool:
    """Whether W&B would find an API key: ``WANDB_API_KEY``, or a ~/.netrc (``NETRC``)
    entry for the host of ``WANDB_BASE_URL`` (api.wandb.ai)."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    base = os.environ.get("WANDB_BASE_URL") or "https://api.wandb.ai"
    try:
        entries = netrc.netrc(os.environ.get("NETRC"))
    except (OSError, netrc.NetrcParseError):
        return False
    return entries.authenticators(urllib.parse.urlparse(base).hostname or "") is not None


def mode() -> str:
    """``WANDB_MODE`` when set; else ``online`` with an API key, ``offline`` without."""
    return os.environ.get("WANDB_MODE") or ("online" if _has_api_key() else "offline")


def project() -> str:
    return os.environ.get("WANDB_PROJECT") or PROJECT


def files(store: Store, run_id: str) -> Path:
    """Where W&B writes the run's files: ``$WANDB_DIR/wandb``, else ``<run dir>/wandb``."""
    root = os.environ.get("WANDB_DIR")
    return (Path(root) if root else store.run_dir(run_id)) / "wandb"


def wandb_id(cell: cell_scalars.Cell) -> str:
    """The cell's W&B run id: its fingerprint's first 32 hex digits."""
    return cell.fingerprint(FORMAT)[:32]


def _log_cell(
    wandb: Any, cell: cell_scalars.Cell, scalars: cell_scalars.Scalars, **init: Any
) -> None:
    run = wandb.init(
        name=cell.name,
        id=wandb_id(cell),
        config=cell.params,
        resume="allow",
        reinit="create_new",  # beside a W&B run of the caller's, if any
        settings=wandb.Settings(console="off", silent=True, disable_git=True, save_code=False),
        **init,
    )
    try:
        for step, point in scalars.points:
            run.log(point, step=step)
        if scalars.summary:
            run.log(scalars.summary, step=scalars.last)
    except BaseException:
        run.finish(exit_code=1)
        raise
    run.finish()


def write_cells(store: Store, run_id: str, cells: Iterable[CellKey]) -> list[str]:
    """Logs each of `cells` (finished cells of run `run_id`) not logged before to this
    destination; returns the names of the cells logged.

    Raises:
      UsageError: wandb is not installed.
      LtError: a cell's metrics do not match its manifest.
    """
    wandb = require("W&B runs")
    run = cell_scalars.RunCells(store, run_id)
    chosen = mode()
    destination = f"{chosen}:{os.environ.get('WANDB_ENTITY', '')}/{project()}"
    init = dict(project=project(), group=run_id, mode=chosen, dir=str(files(store, run_id).parent))
    marker = store.run_dir(run_id) / FOLDER / MARKER
    logged = []
    with cell_scalars.locked(marker.with_name(".lock")):
        done = atomic.read_json(marker) if marker.is_file() else {}
        for key in cells:
            cell = run.read(key)
            if done.get(destination, {}).get(cell.name) == wandb_id(cell):
                continue
            _log_cell(wandb, cell, run.scalars(cell), **init)
            done.setdefault(destination, {})[cell.name] = wandb_id(cell)
            atomic.write_json(marker, done)
            logged.append(cell.name)
    return logged


def write_run(store: Store, run_id: str) -> str:
    """Logs every finished cell of run `run_id` not logged before; returns where the runs
    went, in words."""
    write_cells(store, run_id, list(store.finished_cells(run_id)))
    where = files(store, run_id).absolute()
    if mode() == "offline":
        return f"{where} (offline; to upload: wandb sync {where}/offline-run-*)"
    return f"{where} ({mode()}, project {project()}, group {run_id})"
