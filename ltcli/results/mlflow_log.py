"""MLflow runs of a run's cells: ``lt run --log mlflow`` logs each group of cells as it is
stored (`write_cells`, through `ltcli.results.session`'s progress receiver), ``lt export
--mlflow`` logs them for runs made before (`write_run`).

The tracking server is ``MLFLOW_TRACKING_URI`` when set, else an SQLite file in the store,
one for all its runs (`tracking_uri`)::

    sqlite:///<store>/mlflow.db     (mlflow ui --backend-store-uri sqlite:///<store>/mlflow.db)

One MLflow run per cell, in the experiment `experiment` (``MLFLOW_EXPERIMENT_NAME``, else
``lt``), named ``<run id's first 12 digits>/r0/level_03/ticket`` and tagged with the lt run
id (`TAG_RUN`: filter or group by it) and the cell (`TAG_CELL`,
`ltcli.results.cell_scalars.run_name`). It holds what every tracker shows of a cell
(`ltcli.results.cell_scalars`): at each evaluation, with the iteration as the step, the
validation and test loss and accuracy and ``learning_rate``; the ``summary/`` scalars at the
cell's last iteration; and the cell's parameters (as strings, as MLflow keeps them).

Logging a cell is idempotent: before creating its run, lt searches the experiment for the
cell's runs (by `TAG_RUN` and `TAG_CELL`). A finished one logged from the same content
(`TAG_SOURCE`, `ltcli.results.cell_scalars.Cell.fingerprint`) means the cell is skipped, so
a rerun logs nothing twice; any other (a write that was killed, or older metrics) is
deleted and the cell logged again.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from typing import Any

from ltcli.core import extras
from ltcli.results import cell_scalars
from ltcli.storage.store import CellKey, Store

DATABASE = "mlflow.db"
"""The SQLite file, in the store, when ``MLFLOW_TRACKING_URI`` is not set."""
EXPERIMENT = "lt"
"""The MLflow experiment when ``MLFLOW_EXPERIMENT_NAME`` is not set."""
FORMAT = 1
"""What an MLflow run holds; a change logs every cell again (replacing its runs)."""
TAG_RUN, TAG_CELL, TAG_SOURCE = "lt.run_id", "lt.cell", "lt.source"
_SQL = ("sqlite", "postgresql", "mysql", "mssql")
"""Schemes of a tracking URI that MLflow's SQLAlchemy store serves."""
_PARAMS_PER_BATCH, _METRICS_PER_BATCH = 100, 1000
"""What MLflow takes in one ``log_batch``."""


def tracking_uri(store: Store) -> str:
    """``MLFLOW_TRACKING_URI``, else ``sqlite:///<store>/mlflow.db``."""
    database = (store.root / DATABASE).absolute()
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{database}"


def experiment() -> str:
    return os.environ.get("MLFLOW_EXPERIMENT_NAME") or EXPERIMENT


def require(flag: str) -> None:
    """Checks that mlflow is installed, with SQLAlchemy and Alembic where the tracking URI
    is a database (the default: SQLite).

    Raises:
      UsageError: one is not installed; the message, for `flag`, says how to install them.
    """
    scheme = (os.environ.get("MLFLOW_TRACKING_URI") or "sqlite:").split(":")[0]
    needed = ["mlflow"] + (["sqlalchemy", "alembic"] if scheme.split("+")[0] in _SQL else [])
    for name in needed:
        extras.require(
            name,
            flag,
            "pip install mlflow-skinny sqlalchemy alembic (from a clone: pip install -e "
            "'.[mlflow]')",
        )


def _batches(items: list[Any], size: int) -> Iterable[list[Any]]:
    return (items[i : i + size] for i in range(0, len(items), size))


def _log_cell(
    client: Any,
    experiment_id: str,
    run_id: str,
    run: cell_scalars.RunCells,
    cell: cell_scalars.Cell,
) -> bool:
    """Logs `cell` unless the experiment holds it, logged from the same content; says
    whether it logged it."""
    from mlflow.entities import Metric, Param, ViewType

    source = cell.fingerprint(FORMAT)
    found = client.search_runs(
        [experiment_id],
        f"tags.`{TAG_RUN}` = '{run_id}' and tags.`{TAG_CELL}` = '{cell.name}'",
        run_view_type=ViewType.ACTIVE_ONLY,
    )
    if any(r.info.status == "FINISHED" and r.data.tags.get(TAG_SOURCE) == source for r in found):
        return False
    for stale in found:
        client.delete_run(stale.info.run_id)
    tags = {TAG_RUN: run_id, TAG_CELL: cell.name, TAG_SOURCE: source}
    made = client.create_run(experiment_id, run_name=f"{run_id[:12]}/{cell.name}", tags=tags)
    scalars, now = run.scalars(cell), int(time.time() * 1000)
    points = [*scalars.points, (scalars.last, scalars.summary)]
    metrics = [Metric(k, v, now, step) for step, point in points for k, v in point.items()]
    params = [Param(key, str(value)) for key, value in cell.params.items()]
    for chunk in _batches(params, _PARAMS_PER_BATCH):
        client.log_batch(made.info.run_id, params=chunk)
    for chunk in _batches(metrics, _METRICS_PER_BATCH):
        client.log_batch(made.info.run_id, metrics=chunk)
    client.set_terminated(made.info.run_id)
    return True


def write_cells(store: Store, run_id: str, cells: Iterable[CellKey]) -> list[str]:
    """Logs each of `cells` (finished cells of run `run_id`) that the experiment does not
    hold yet; returns the names of the cells logged.

    Raises:
      UsageError: mlflow (or SQLAlchemy for a database) is not installed.
      LtError: a cell's metrics do not match its manifest.
    """
    require("MLflow runs")
    from mlflow.tracking import MlflowClient

    run = cell_scalars.RunCells(store, run_id)
    client = MlflowClient(tracking_uri=tracking_uri(store))
    found = client.get_experiment_by_name(experiment())
    experiment_id = found.experiment_id if found else client.create_experiment(experiment())
    logged = []
    with cell_scalars.locked(store.run_dir(run_id) / ".mlflow.lock"):
        for key in cells:
            cell = run.read(key)
            if _log_cell(client, experiment_id, run_id, run, cell):
                logged.append(cell.name)
    return logged


def write_run(store: Store, run_id: str) -> str:
    """Logs every finished cell of run `run_id` that the experiment does not hold yet;
    returns where the runs went, in words."""
    write_cells(store, run_id, list(store.finished_cells(run_id)))
    return f"{tracking_uri(store)} (experiment {experiment()}, tag {TAG_RUN}={run_id})"
