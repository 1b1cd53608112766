"""TensorBoard event files: ``lt run --log tensorboard`` (``run.log``)
writes each cell's curve, learning rate and hyperparameters as its group is stored; ``lt
export --tensorboard`` writes them for runs made before. Read back with tbparse, the reader
TensorBoard's own event loader sits under, never by hand."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from tbparse import SummaryReader

from ltcli.cli.main import cli
from ltcli.core.errors import UsageError
from ltcli.experiment import spec
from ltcli.experiment.member import Member
from ltcli.experiment.plan import Fanout, Progress
from ltcli.results import session, tensorboard
from ltcli.storage.store import CellKey, Store
from ltcli.train import launch, recipes

from helpers import LOGGED_LR, logged_spec, logged_toml

LR = LOGGED_LR
CELLS = [CellKey(0, 0), CellKey(0, 1), CellKey(0, 1, Member("reinit", 0))]
pytestmark = [
    pytest.mark.integration,
    pytest.mark.filterwarnings("ignore:The inplace keyword"),  # tbparse on pandas 3
]


def _spec(folder: Path, log: str = "tensorboard") -> spec.Spec:
    return logged_spec(folder, log)


def _read(root: Path) -> tuple:
    reader = SummaryReader(str(root), extra_columns={"dir_name"})
    return reader.scalars, reader.hparams


def _event_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if "tfevents" in p.name)


class LevelSpy(Progress):
    """Records, when each level starts, which cells already have an event file."""

    def __init__(self, store: Store, run_id: str):
        self.store, self.run_id, self.seen = store, run_id, {}

    def level(self, level, cells, total_steps, start):
        root = tensorboard.folder(self.store, self.run_id)
        self.seen[level] = sorted(str(p.parent.relative_to(root)) for p in _event_files(root))


@pytest.fixture(scope="module")
def logged(class_folder, tmp_path_factory):
    """A tiny run trained with the live logger: (store, run id, what the spy saw)."""
    store = Store(tmp_path_factory.mktemp("tb") / "store")
    loaded = _spec(class_folder)
    prepared = launch.prepare(loaded)
    run_id = prepared[0].run_id
    spy = LevelSpy(store, run_id)
    progress = Fanout(session.TRACKERS["tensorboard"].logger(store, run_id), spy)
    assert launch.run(loaded, store, progress=progress, prepared=prepared) == run_id
    return store, run_id, spy.seen


def _check_cell(store: Store, run_id: str, cell: CellKey, scalars, hparams) -> None:
    metrics = store.read_metrics(run_id, cell)
    curve = metrics["curve"]
    rows = scalars[scalars.dir_name == tensorboard.run_name(cell)]
    for tag, field in tensorboard.SCALARS.items():
        points = rows[rows.tag == tag].sort_values("step")
        assert points.step.tolist() == curve["iteration"]
        assert np.array_equal(np.float32(points.value.to_numpy()), np.float32(curve[field])), (
            cell,
            tag,
        )
    schedule = recipes.learning_rate(
        recipes.TrainConfig.of(store.descriptor(run_id)["full"]["train"])
    )
    start = metrics["start_iteration"]
    expected = [float(schedule(metrics["schedule_step"] + t - start)) for t in curve["iteration"]]
    rates = rows[rows.tag == tensorboard.LEARNING_RATE].sort_values("step")
    assert rates.step.tolist() == curve["iteration"]
    assert np.array_equal(np.float32(rates.value.to_numpy()), np.float32(expected))
    final = rows[rows.tag == "summary/final_test_acc"]
    assert final.step.tolist() == [200]
    assert np.float32(final.value.iloc[0]) == np.float32(metrics["final_test_acc"])
    mine = hparams[hparams.dir_name == tensorboard.run_name(cell)]
    hp = dict(zip(mine.tag, mine.value, strict=True))
    assert hp["train.lr"] == pytest.approx(LR)
    assert hp["prune.retrain"] == "finetune"
    assert hp["train.warmup"] == 200
    assert hp["level"] == cell.level and hp["member"] == str(cell.member)
    assert hp["run"] == run_id[:12]
    assert hp["percent_remaining"] == pytest.approx(metrics["percent_remaining"])


def test_a_logged_run_writes_each_cells_curve_schedule_and_hparams(logged):
    store, run_id, _ = logged
    root = tensorboard.folder(store, run_id)
    assert root == store.run_dir(run_id) / "tensorboard"
    scalars, hparams = _read(root)
    names = {tensorboard.run_name(c) for c in CELLS}
    assert (
        set(scalars.dir_name)
        == names
        == {"r0/level_00/ticket", "r0/level_01/ticket", "r0/level_01/reinit-0"}
    )
    for cell in CELLS:
        _check_cell(store, run_id, cell, scalars, hparams)
    # The schedule, literally: warmup to lr over 200 iterations at level 0; the fine-tuned
    # level 1 trains at the final rate throughout (its schedule starts at T).
    lr = scalars[scalars.tag == tensorboard.LEARNING_RATE]
    dense = lr[lr.dir_name == "r0/level_00/ticket"].sort_values("step").value.to_numpy()
    tuned = lr[lr.dir_name == "r0/level_01/ticket"].sort_values("step").value.to_numpy()
    assert np.array_equal(np.float32(dense), np.float32([LR / 2, LR]))
    assert np.array_equal(np.float32(tuned), np.float32([LR, LR]))


def test_the_logger_writes_each_group_as_it_is_stored(logged):
    _, _, seen = logged
    assert seen[0] == []  # nothing before level 0 trains
    assert seen[1] == ["r0/level_00/ticket"]  # level 0 was there before level 1 trained


def test_writing_again_duplicates_nothing(logged, class_folder, tmp_path):
    store, run_id, _ = logged
    copy = Store(tmp_path / "store")
    shutil.copytree(store.root, copy.root)
    root = tensorboard.folder(copy, run_id)
    before = {p: p.stat().st_mtime_ns for p in _event_files(root)}
    assert len(before) == len(CELLS)
    scalars, _ = _read(root)
    # A rerun with nothing to train, then the end-of-run write: nothing is rewritten.
    assert launch.run(_spec(class_folder), copy) == run_id
    assert tensorboard.write_cells(copy, run_id, CELLS) == []
    assert {p: p.stat().st_mtime_ns for p in _event_files(root)} == before
    # A cell written from anything else is replaced by one whole file, not appended to.
    marker = tensorboard.cell_folder(copy, run_id, CELLS[1]) / tensorboard.MARKER
    marker.write_text('{"format": 0, "fingerprint": "other"}')
    assert tensorboard.write_cells(copy, run_id, CELLS) == [marker.parent]
    files = _event_files(root)
    assert len(files) == len(CELLS) and set(files) != set(before)
    again, _ = _read(root)
    key = ["dir_name", "tag", "step"]
    assert (
        again.sort_values(key)
        .reset_index(drop=True)
        .equals(scalars.sort_values(key).reset_index(drop=True))
    )
    assert not list(root.rglob("*.tmp"))


def test_export_writes_the_event_files_of_a_run_made_without_log(class_folder, tmp_path):
    path = logged_toml(class_folder, tmp_path / "tb.toml")
    store = tmp_path / "store"
    made = CliRunner().invoke(cli, ["run", str(path), "--store", str(store), "--name", "old"])
    assert made.exit_code == 0, made.output
    target = Store(store)
    (run_id,) = target.run_ids()
    root = tensorboard.folder(target, run_id)
    assert not root.exists()  # no --log, no event files
    result = CliRunner().invoke(cli, ["export", "--tensorboard", "old", "--store", str(store)])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == str(root)
    scalars, hparams = _read(root)
    for cell in CELLS:
        _check_cell(target, run_id, cell, scalars, hparams)
    # `lt run --log tensorboard` over the finished run trains nothing and rewrites nothing.
    files = _event_files(root)
    rerun = CliRunner().invoke(
        cli, ["run", str(path), "--store", str(store), "--log", "tensorboard"]
    )
    assert rerun.exit_code == 0, rerun.output
    assert f"tensorboard: {root.absolute()}" in rerun.stderr
    assert _event_files(root) == files


def test_lt_run_log_writes_the_event_files(class_folder, tmp_path):
    path = logged_toml(class_folder, tmp_path / "tb.toml")
    store = tmp_path / "store"
    result = CliRunner().invoke(
        cli, ["run", str(path), "--store", str(store), "--log", "tensorboard", "--rounds", "0"]
    )
    assert result.exit_code == 0, result.output
    target = Store(store)
    (run_id,) = target.run_ids()
    scalars, hparams = _read(tensorboard.folder(target, run_id))
    assert set(scalars.dir_name) == {"r0/level_00/ticket"}
    _check_cell(target, run_id, CellKey(0, 0), scalars, hparams)


@pytest.mark.unit
def test_without_tensorboardx_log_exits_2_saying_how_to_install(
    class_folder, tmp_path, monkeypatch
):
    monkeypatch.setitem(sys.modules, "tensorboardX", None)  # `import tensorboardX` fails
    path = logged_toml(class_folder, tmp_path / "tb.toml")
    store = tmp_path / "store"
    result = CliRunner().invoke(
        cli, ["run", str(path), "--store", str(store), "--log", "tensorboard"]
    )
    assert result.exit_code == 2, result.output
    assert "--log tensorboard: tensorboardX is not installed" in result.stderr
    assert "pip install tensorboardX" in result.stderr
    assert not store.exists()  # refused before anything was written
    exported = CliRunner().invoke(cli, ["export", "--tensorboard", "--store", str(store)])
    assert exported.exit_code == 2 and "--tensorboard: tensorboardX" in exported.stderr
    with pytest.raises(UsageError, match="pip install tensorboardX"):
        session.TRACKERS["tensorboard"].logger(Store(store), "0" * 64)


@pytest.mark.unit
def test_run_log_is_a_checked_run_field_outside_the_run_id(class_folder):
    assert _spec(class_folder)["run.log"] == "tensorboard"
    assert _spec(class_folder, log="")["run.log"] == ""
    with pytest.raises(UsageError, match=r"run\.log"):
        _spec(class_folder, log="comet")
    with_log, _ = launch.prepare(_spec(class_folder))
    without, _ = launch.prepare(_spec(class_folder, log=""))
    assert with_log.run_id == without.run_id


@pytest.mark.unit
def test_export_tensorboard_refuses_row_options(tmp_path):
    result = CliRunner().invoke(
        cli, ["export", "--tensorboard", "--csv", "--store", str(tmp_path / "s")]
    )
    assert result.exit_code == 2 and "--tensorboard" in result.stderr


def test_a_diverged_cells_nan_stays_nan(logged, tmp_path):
    store, run_id, _ = logged
    copy = Store(tmp_path / "store")
    shutil.copytree(store.root, copy.root)
    metrics = copy.read_metrics(run_id, CellKey(0, 0))
    nan = float("nan")
    metrics["curve"]["val_loss"] = [nan, nan]  # stored as null, as a diverged cell's are
    metrics.update(diverged=True, final_test_acc=nan, replicate=1)
    diverged = CellKey(1, 0)
    copy.write_cell(run_id, diverged, {"fc1": {"kernel": np.ones((2, 2))}}, metrics)
    assert copy.read_metrics(run_id, diverged)["curve"]["val_loss"] == [None, None]
    assert tensorboard.write_cells(copy, run_id, [diverged]) == [
        tensorboard.cell_folder(copy, run_id, diverged)
    ]
    scalars, _ = _read(tensorboard.cell_folder(copy, run_id, diverged))
    assert scalars[scalars.tag == "loss/val"].value.isna().all()
    assert scalars[scalars.tag == "summary/final_test_acc"].value.isna().all()
    assert scalars[scalars.tag == "accuracy/test"].value.notna().all()
