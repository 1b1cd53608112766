"""Weights & Biases and MLflow: ``lt run --log wandb|mlflow`` (``run.log``) logs each cell as
its group is stored, ``lt export --wandb|--mlflow`` logs runs made before, and both hold what
TensorBoard's event files hold for the same run, scalar for scalar and field for field. Read
back with each tracker's own code: W&B's offline ``.wandb`` file as W&B's protobuf records
(its LevelDB-log framing, which W&B no longer reads in Python, undone here), MLflow through
``MlflowClient``, TensorBoard with tbparse."""

from __future__ import annotations

import json
import shutil
import struct
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from tbparse import SummaryReader

from ltcli.cli.main import cli
from ltcli.core.errors import UsageError
from ltcli.experiment import spec
from ltcli.experiment.plan import Fanout, Progress
from ltcli.results import cell_scalars, mlflow_log, session, tensorboard, wandb_log
from ltcli.storage.store import Store
from ltcli.train import launch

from helpers import logged_spec, logged_toml

NAMES = {"r0/level_00/ticket", "r0/level_01/ticket", "r0/level_01/reinit-0"}
TAGS = {
    *cell_scalars.SCALARS,
    cell_scalars.LEARNING_RATE,
    *(f"summary/{name}" for name in cell_scalars.SUMMARY),
}
ENVIRONMENT = (
    "WANDB_DIR",
    "WANDB_PROJECT",
    "WANDB_ENTITY",
    "MLFLOW_TRACKING_URI",
    "MLFLOW_EXPERIMENT_NAME",
)
"""What would send the runs elsewhere than the tests look."""
pytestmark = [
    pytest.mark.integration,
    pytest.mark.filterwarnings("ignore:The inplace keyword"),  # tbparse on pandas 3
    pytest.mark.filterwarnings("ignore:The ``noload`` loader"),  # MLflow on SQLAlchemy 2.1
]


@pytest.fixture(autouse=True)
def offline(tmp_path, monkeypatch):
    """W&B offline, its settings and caches in the test's folder; no tracker chosen by the
    environment."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    for name in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(name, str(tmp_path / "wandb-home"))
    for name in ENVIRONMENT:
        monkeypatch.delenv(name, raising=False)


def _spec(folder: Path, log: str = "") -> spec.Spec:
    return logged_spec(folder, log)


def _records(path: Path) -> list:
    """The W&B records of a ``.wandb`` file: a LevelDB log (a 7-byte header, then 32 KiB
    blocks of chunks, each with its CRC-32, length and type: whole, first, middle or last)
    of `wandb_internal_pb2.Record` messages."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:7] == struct.pack("<4sHB", b":W&B", 0xBEE1, 0)
    records, parts, at = [], [], 7
    while at < len(data):
        if 32768 - at % 32768 < 7:  # a block's tail too short for a chunk: zeros
            assert not any(data[at : at + 32768 - at % 32768])
            at += 32768 - at % 32768
            continue
        crc, length, kind = struct.unpack("<IHB", data[at : at + 7])
        chunk = data[at + 7 : at + 7 + length]
        assert zlib.crc32(chunk, zlib.crc32(bytes([kind]))) == crc
        parts.append(chunk)
        at += 7 + length
        if kind in (1, 4):  # whole, or last: a record is complete
            records.append(wandb_internal_pb2.Record.FromString(b"".join(parts)))
            parts = []
    assert not parts
    return records


def _wandb_runs(folder: Path) -> dict[str, dict]:
    """Each W&B run under `folder` (``.../wandb``), by name: its run record's fields, config,
    scalars ((name, step) -> value) and exit code."""
    runs = {}
    for path in sorted(folder.glob("offline-run-*/run-*.wandb")):
        found = {"scalars": {}, "config": {}, "exit": None, "path": path}
        for record in _records(path):
            kind = record.WhichOneof("record_type")
            if kind == "run":
                found.update(
                    id=record.run.run_id,
                    project=record.run.project,
                    group=record.run.run_group,
                    name=record.run.display_name,
                )
                for item in record.run.config.update:
                    found["config"][item.key] = json.loads(item.value_json)
            elif kind == "history":
                for item in record.history.item:
                    key = item.key or ".".join(item.nested_key)
                    if not key.startswith("_"):
                        found["scalars"][key, record.history.step.num] = json.loads(item.value_json)
            elif kind == "exit":
                found["exit"] = record.exit.exit_code
        found["config"].pop("_wandb")
        assert found["name"] not in runs, "a cell logged twice"
        runs[found["name"]] = found
    return runs


def _mlflow_runs(uri: str, experiment: str, run_id: str) -> dict[str, dict]:
    """Each active MLflow run of lt run `run_id`, by its cell: name, status, tags, params
    and scalars ((name, step) -> value)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    found = client.get_experiment_by_name(experiment)
    runs = {}
    for run in client.search_runs([found.experiment_id], f"tags.`lt.run_id` = '{run_id}'"):
        scalars = {
            (key, point.step): point.value
            for key in run.data.metrics
            for point in client.get_metric_history(run.info.run_id, key)
        }
        cell = run.data.tags["lt.cell"]
        assert cell not in runs, "a cell logged twice"
        runs[cell] = dict(
            name=run.info.run_name,
            status=run.info.status,
            tags=run.data.tags,
            params=run.data.params,
            scalars=scalars,
        )
    return runs


def _tensorboard(folder: Path) -> dict[str, dict]:
    """Each cell's TensorBoard run under `folder`: its scalars and hyperparameters."""
    reader = SummaryReader(str(folder), extra_columns={"dir_name"})
    scalars, hparams = reader.scalars, reader.hparams
    cells = {}
    for name in set(scalars.dir_name):
        rows, hp = scalars[scalars.dir_name == name], hparams[hparams.dir_name == name]
        cells[name] = dict(
            scalars={(r.tag, int(r.step)): r.value for r in rows.itertuples()},
            params=dict(zip(hp.tag, hp.value, strict=True)),
        )
    return cells


def _same_scalars(expected: dict, got: dict) -> None:
    assert set(got) == set(expected)
    keys = sorted(expected)
    want = np.float32([expected[k] for k in keys])
    assert np.array_equal(want, np.float32([got[k] for k in keys]), equal_nan=True)


def _same_param(tb: object, other: object) -> bool:
    """A TensorBoard hyperparameter (a bool, a float for every number, or a string) and
    the same one in W&B (its JSON value) or MLflow (a string)."""
    if isinstance(tb, bool):
        return other == str(tb) or (isinstance(other, bool) and other == tb)
    if isinstance(tb, float):
        return not isinstance(other, bool) and float(other) == tb
    return other == tb


def _check_like_tensorboard(tb: dict, wandb: dict, mlflow: dict, run_id: str) -> None:
    """W&B's and MLflow's runs hold every scalar and field of TensorBoard's, cell by cell,
    named and grouped by the lt run."""
    assert set(tb) == set(wandb) == set(mlflow) == NAMES
    for name, cell in tb.items():
        assert {tag for tag, _ in cell["scalars"]} == TAGS
        assert {step for _, step in cell["scalars"]} == {100, 200}
        assert cell["params"]["run"] == run_id[:12] and cell["params"]["member"] in name
        for other, params in ((wandb[name], "config"), (mlflow[name], "params")):
            _same_scalars(cell["scalars"], other["scalars"])
            assert set(other[params]) == set(cell["params"]), name
            for key, value in cell["params"].items():
                assert _same_param(value, other[params][key]), (name, key, other[params][key])
        assert wandb[name]["group"] == run_id and wandb[name]["exit"] == 0
        assert mlflow[name]["status"] == "FINISHED"
        assert mlflow[name]["name"] == f"{run_id[:12]}/{name}"
        assert mlflow[name]["tags"]["lt.run_id"] == run_id


class Spy(Progress):
    """Records, when each level starts, which cells W&B and MLflow hold."""

    def __init__(self, store: Store, run_id: str):
        self.store, self.run_id, self.seen = store, run_id, {}

    def level(self, level, cells, total_steps, start):
        marker = self.store.run_dir(self.run_id) / "wandb" / wandb_log.MARKER
        logged = json.loads(marker.read_text())["offline:/lt"] if marker.exists() else {}
        uri = mlflow_log.tracking_uri(self.store)
        database = self.store.root / "mlflow.db"
        held = _mlflow_runs(uri, "lt", self.run_id) if database.exists() else {}
        self.seen[level] = (sorted(logged), sorted(held))


@pytest.fixture(scope="module")
def logged(class_folder, tmp_path_factory):
    """A tiny run trained with the three loggers: (store, run id, what the spy saw)."""
    with pytest.MonkeyPatch.context() as patch:  # before `offline`, a test's fixture
        patch.setenv("WANDB_MODE", "offline")
        home = tmp_path_factory.mktemp("wandb-home")
        for name in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
            patch.setenv(name, str(home))
        for name in ENVIRONMENT:
            patch.delenv(name, raising=False)
        store = Store(tmp_path_factory.mktemp("trackers") / "store")
        loaded = _spec(class_folder)
        prepared = launch.prepare(loaded)
        run_id = prepared[0].run_id
        spy = Spy(store, run_id)
        loggers = [session.TRACKERS[name].logger(store, run_id) for name in session.TRACKERS]
        progress = Fanout(*loggers, spy)
        assert launch.run(loaded, store, progress=progress, prepared=prepared) == run_id
    return store, run_id, spy.seen


def test_wandb_and_mlflow_hold_what_tensorboard_holds(logged):
    store, run_id, _ = logged
    folder = store.run_dir(run_id) / "wandb"  # no WANDB_DIR: in the run's folder
    wandb = _wandb_runs(folder)
    uri = f"sqlite:///{store.root.absolute()}/mlflow.db"  # no MLFLOW_TRACKING_URI: the store's
    assert mlflow_log.tracking_uri(store) == uri
    mlflow = _mlflow_runs(uri, "lt", run_id)
    tb = _tensorboard(tensorboard.folder(store, run_id))
    _check_like_tensorboard(tb, wandb, mlflow, run_id)
    marker = json.loads((folder / wandb_log.MARKER).read_text())
    assert marker == {"offline:/lt": {name: run["id"] for name, run in wandb.items()}}
    for run in wandb.values():
        assert run["project"] == "lt" and run["path"].name == f"run-{run['id']}.wandb"
    # The learning rate, literally: lr/2 then lr at level 0; lr throughout when fine-tuned.
    rates = {n: [r["scalars"]["learning_rate", s] for s in (100, 200)] for n, r in mlflow.items()}
    assert np.array_equal(np.float32(rates["r0/level_00/ticket"]), np.float32([6e-4, 12e-4]))
    assert np.array_equal(np.float32(rates["r0/level_01/ticket"]), np.float32([1.2e-3] * 2))


def test_each_group_is_logged_as_it_is_stored(logged):
    _, _, seen = logged
    assert seen[0] == ([], [])  # nothing before level 0 trains
    assert seen[1] == (["r0/level_00/ticket"], ["r0/level_00/ticket"])


def test_logging_again_logs_nothing_twice(logged, class_folder, tmp_path):
    from mlflow.tracking import MlflowClient

    store, run_id, _ = logged
    copy = Store(tmp_path / "store")
    shutil.copytree(store.root, copy.root)
    folder = copy.run_dir(run_id) / "wandb"
    files = sorted(folder.glob("offline-run-*"))
    uri = mlflow_log.tracking_uri(copy)
    before = _mlflow_runs(uri, "lt", run_id)
    # A rerun with nothing to train, then the end-of-run writes: nothing is logged.
    assert launch.run(_spec(class_folder), copy) == run_id
    cells = list(copy.finished_cells(run_id))
    assert wandb_log.write_cells(copy, run_id, cells) == []
    assert mlflow_log.write_cells(copy, run_id, cells) == []
    assert sorted(folder.glob("offline-run-*")) == files
    assert _mlflow_runs(uri, "lt", run_id) == before
    # A cell the marker lacks is logged again; an unfinished MLflow run (a killed write)
    # is replaced.
    marker = folder / wandb_log.MARKER
    done = json.loads(marker.read_text())
    del done["offline:/lt"]["r0/level_01/ticket"]
    marker.write_text(json.dumps(done))
    assert wandb_log.write_cells(copy, run_id, cells) == ["r0/level_01/ticket"]
    assert len(sorted(folder.glob("offline-run-*"))) == len(files) + 1
    client = MlflowClient(tracking_uri=uri)
    (killed,) = client.search_runs(
        [client.get_experiment_by_name("lt").experiment_id],
        f"tags.`lt.cell` = 'r0/level_00/ticket' and tags.`lt.run_id` = '{run_id}'",
    )
    client.update_run(killed.info.run_id, status="RUNNING")
    assert mlflow_log.write_cells(copy, run_id, cells) == ["r0/level_00/ticket"]
    again = _mlflow_runs(uri, "lt", run_id)
    assert again.keys() == before.keys()
    for name, run in again.items():
        assert run == before[name] or name == "r0/level_00/ticket"
    assert again["r0/level_00/ticket"]["scalars"] == before["r0/level_00/ticket"]["scalars"]
    assert again["r0/level_00/ticket"]["status"] == "FINISHED"
    assert client.get_run(killed.info.run_id).info.lifecycle_stage == "deleted"


def test_export_logs_a_run_made_without_log_the_same(logged, class_folder, tmp_path, monkeypatch):
    path = logged_toml(class_folder, tmp_path / "trackers.toml")
    store = tmp_path / "store"
    made = CliRunner().invoke(cli, ["run", str(path), "--store", str(store), "--name", "old"])
    assert made.exit_code == 0, made.output
    target = Store(store)
    (run_id,) = target.run_ids()
    assert not (target.run_dir(run_id) / "wandb").exists()
    assert not (store / "mlflow.db").exists()  # no --log, nothing logged
    # Elsewhere, as the environment says: W&B's files in WANDB_DIR, MLflow's runs in a
    # copy of the logged run's database, in an experiment of their own.
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb-dir"))
    database = tmp_path / "elsewhere.db"
    shutil.copy(logged[0].root / "mlflow.db", database)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{database}")
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "exported")
    printed = {}
    for flag in ("--tensorboard", "--wandb", "--mlflow"):
        result = CliRunner().invoke(cli, ["export", flag, "old", "--store", str(store)])
        assert result.exit_code == 0, (flag, result.output)
        printed[flag] = result.stdout
    folder = tmp_path / "wandb-dir" / "wandb"
    assert printed["--wandb"].startswith(f"{folder} (offline; to upload: wandb sync {folder}/")
    assert printed["--mlflow"].startswith(f"sqlite:///{database} (experiment exported, ")
    wandb = _wandb_runs(folder)
    mlflow = _mlflow_runs(f"sqlite:///{database}", "exported", run_id)
    tb = _tensorboard(tensorboard.folder(target, run_id))
    _check_like_tensorboard(tb, wandb, mlflow, run_id)
    # `lt run --log wandb|mlflow` over the finished run trains nothing and logs nothing.
    files = sorted(folder.glob("offline-run-*"))
    for log in ("wandb", "mlflow"):
        rerun = CliRunner().invoke(cli, ["run", str(path), "--store", str(store), "--log", log])
        assert rerun.exit_code == 0, rerun.output
        assert f"{log}: " in rerun.stderr
    assert sorted(folder.glob("offline-run-*")) == files
    assert _mlflow_runs(f"sqlite:///{database}", "exported", run_id) == mlflow


@pytest.mark.unit
@pytest.mark.parametrize(
    "log,module,package",
    [("wandb", wandb_log, "wandb"), ("mlflow", mlflow_log, "mlflow")],
)
def test_without_the_library_lt_exits_2_saying_how_to_install(
    log, module, package, class_folder, tmp_path, monkeypatch
):
    monkeypatch.setitem(sys.modules, package, None)  # `import <package>` fails
    path = logged_toml(class_folder, tmp_path / "trackers.toml")
    store = tmp_path / "store"
    result = CliRunner().invoke(cli, ["run", str(path), "--store", str(store), "--log", log])
    assert result.exit_code == 2, result.output
    assert f"--log {log}: {package} is not installed" in result.stderr
    assert f"pip install -e '.[{log}]'" in result.stderr
    assert not store.exists()  # refused before anything was written
    exported = CliRunner().invoke(cli, ["export", f"--{log}", "--store", str(store)])
    assert exported.exit_code == 2 and f"--{log}: {package} is not installed" in exported.stderr
    with pytest.raises(UsageError, match=f"pip install -e '.\\[{log}\\]'"):
        session.TRACKERS[log].logger(Store(store), "0" * 64)


@pytest.mark.unit
def test_mlflow_needs_sqlalchemy_for_a_database_only(monkeypatch):
    monkeypatch.setitem(sys.modules, "sqlalchemy", None)
    with pytest.raises(UsageError, match="--log mlflow: sqlalchemy is not installed"):
        mlflow_log.require("--log mlflow")  # the default: SQLite in the store
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "postgresql+psycopg2://db/lt")
    with pytest.raises(UsageError, match="sqlalchemy"):
        mlflow_log.require("--log mlflow")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://tracking:5000")
    mlflow_log.require("--log mlflow")  # a tracking server: no SQLAlchemy here


@pytest.mark.unit
def test_wandb_is_offline_unless_a_key_or_wandb_mode_says_otherwise(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_MODE")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_BASE_URL", raising=False)
    netrc = tmp_path / "netrc"
    monkeypatch.setenv("NETRC", str(netrc))
    assert wandb_log.mode() == "offline"  # no ~/.netrc at all
    netrc.write_text("machine example.com login me password secret\n")
    assert wandb_log.mode() == "offline"  # none for W&B's host
    netrc.write_text("machine api.wandb.ai login user password " + "k" * 40 + "\n")
    netrc.chmod(0o600)
    assert wandb_log.mode() == "online"  # what `wandb login` saves
    monkeypatch.setenv("WANDB_BASE_URL", "https://wandb.example.org")
    assert wandb_log.mode() == "offline"  # a key for another host
    monkeypatch.setenv("WANDB_API_KEY", "k" * 40)
    assert wandb_log.mode() == "online"
    monkeypatch.setenv("WANDB_MODE", "offline")
    assert wandb_log.mode() == "offline"  # WANDB_MODE wins


@pytest.mark.unit
def test_run_log_takes_each_tracker_and_stays_out_of_the_run_id(class_folder):
    ids = set()
    for log in ("", "tensorboard", "wandb", "mlflow"):
        loaded = _spec(class_folder, log)
        assert loaded["run.log"] == log
        ids.add(launch.prepare(loaded)[0].run_id)
    assert len(ids) == 1
    with pytest.raises(UsageError, match=r"run\.log"):
        _spec(class_folder, log="comet")


@pytest.mark.unit
@pytest.mark.parametrize("module", [tensorboard, wandb_log, mlflow_log])
def test_lt_run_follows_the_run_with_the_trackers_logger(module, tmp_path):
    log = module.__name__.split(".")[-1].removesuffix("_log")
    (receiver,) = session.LiveOutputs(log=log).receivers(Store(tmp_path), "0" * 64)
    assert receiver.tracker.write_cells is module.write_cells


@pytest.mark.unit
@pytest.mark.parametrize(
    "flags,says",
    [
        (["--wandb", "--csv"], "--wandb logs to a tracker"),
        (["--mlflow", "--curves"], "--mlflow logs to a tracker"),
        (["--wandb", "--mlflow"], "pick one"),
    ],
)
def test_export_to_a_tracker_refuses_row_options_and_a_second_tracker(tmp_path, flags, says):
    result = CliRunner().invoke(cli, ["export", *flags, "--store", str(tmp_path / "s")])
    assert result.exit_code == 2 and says in result.stderr
