"""Sweeps: ``lt run EXP --sweep key=v1,v2 ...`` runs the product as
separate runs, `lt ls` and `lt compare` show them as one sweep, and a bad value or a point
that cannot resolve exits 2 before anything is written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from ltcli.cli.main import cli
from ltcli.core.errors import UsageError
from ltcli.experiment import spec, sweep
from ltcli.experiment.fields import Duration
from ltcli.results import listing
from ltcli.storage.store import Store
from ltcli.train import runner

pytestmark = pytest.mark.integration

LABELS = [
    "train.lr=0.001 train.seed=0",
    "train.lr=0.001 train.seed=1",
    "train.lr=0.003 train.seed=0",
    "train.lr=0.003 train.seed=1",
]


def invoke(*args: str):
    return CliRunner().invoke(cli, list(args))


def _base() -> spec.Spec:
    return spec.from_mapping("tiny", {"data": {"dataset": "mnist"}, "model": {"name": "lenet300"}})


def _write_spec(folder: Path, data: Path, **train: object) -> Path:
    fields = {"iterations": '"100it"', "eval_every": '"100it"', "batch_size": "20", **train}
    lines = [
        "[data]",
        f'dataset = "folder:{data}"',
        "validation = 50",
        "[model]",
        'name = "lenet300"',
        "[train]",
        *(f"{k} = {v}" for k, v in fields.items()),
        "[prune]",
        "rate = 0.5",
        "[run]",
        "rounds = 1",
    ]
    path = folder / "tiny.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


# -- parsing and validation: pure -----------------------------------------------------------


@pytest.mark.unit
def test_values_split_at_commas_outside_brackets_and_quotes():
    assert sweep.split_values("1e-3, 3e-3") == ["1e-3", "3e-3"]
    assert sweep.split_values("[50,20],[10]") == ["[50,20]", "[10]"]
    assert sweep.split_values('[],["80ep","120ep"]') == ["[]", '["80ep","120ep"]']
    assert sweep.split_values('"a,b",c') == ['"a,b"', "c"]


@pytest.mark.unit
def test_an_axis_reads_values_like_set_and_checks_them():
    axis = sweep.parse_axis("train.lr=1e-3,3e-3")
    assert axis == sweep.Axis("train.lr", (0.001, 0.003))
    assert sweep.parse_axis("train.iterations=100,2ep").values == (
        Duration(100),
        Duration(2, "ep"),
    )
    one_shot = sweep.parse_axis("prune.one_shot=[50,20],[10]")
    assert one_shot.values == ((50.0, 20.0), (10.0,))
    assert sweep.parse_axis("prune.one_shot=50,20").values == ((50.0,), (20.0,))
    drops = sweep.parse_axis('train.lr_drops=[],["80ep","120ep"]')
    assert drops.values == ((), (Duration(80, "ep"), Duration(120, "ep")))


@pytest.mark.unit
@pytest.mark.parametrize(
    "flags, message",
    [
        (["train.lr=1e-3,-1"], "train.lr: must be a number > 0"),
        (["train.lrate=1e-3,3e-3"], "train.lrate: unknown field"),
        (["train.lr"], "must look like section.field=value"),
        (["train.lr="], "must look like section.field=value"),
        (["train.lr=1e-3,"], "an empty value"),
        (["train.lr=1e-3,0.001"], "given twice"),
        (["train.seed=0,1", "train.seed=2"], "swept twice"),
        (["run.replicates=1,2"], "run.* and slurm.* fields"),
        (["slurm.tasks=1,2"], "run.* and slurm.* fields"),
        (["prune.one_shot=[50,50]"], "prune.one_shot: must be"),
    ],
)
def test_bad_sweeps_are_refused(flags, message):
    with pytest.raises(UsageError, match=message.replace("*", r"\*").replace(".", r"\.")):
        sweep.parse_axes(flags)


@pytest.mark.unit
def test_a_field_cannot_be_swept_and_set():
    with pytest.raises(UsageError, match="sweep it or set it"):
        sweep.parse_axes(["train.lr=1e-3,3e-3"], fixed={"train.lr"})


@pytest.mark.unit
def test_the_product_is_in_flag_order_the_first_varying_slowest():
    axes = sweep.parse_axes(["train.lr=1e-3,3e-3", "train.seed=0,1"])
    points = sweep.expand(_base(), axes)
    assert [p.label for p in points] == LABELS
    assert [p.index for p in points] == [0, 1, 2, 3]
    assert [(p.spec["train.lr"], p.spec["train.seed"]) for p in points] == [
        (0.001, 0),
        (0.001, 1),
        (0.003, 0),
        (0.003, 1),
    ]
    assert points[0].spec["train.batch_size"] == _base()["train.batch_size"]


@pytest.mark.unit
def test_a_sweep_is_identified_by_its_axes_and_runs():
    axes = sweep.parse_axes(["train.lr=1e-3,3e-3"])
    same = sweep.sweep_id(sweep.parse_axes(["train.lr=0.001,0.003"]), ["a", "b"])
    assert sweep.sweep_id(axes, ["a", "b"]) == same
    assert sweep.sweep_id(axes, ["a", "c"]) != same
    assert sweep.sweep_id(sweep.parse_axes(["train.lr=3e-3,1e-3"]), ["a", "b"]) != same
    assert sweep.default_name("mnist-lenet", axes) == "mnist-lenet:train.lr"


@pytest.mark.unit
def test_without_sweeps_the_listing_is_the_runs_table():
    overview = {
        "run_id": "ab" * 32,
        "names": [],
        "experiment": "e",
        "dataset": "mnist",
        "model": "lenet300",
        "levels": 1,
        "replicates": 1,
        "cells": 1,
        "best_test_acc": 0.5,
        "bytes": 10,
    }
    assert listing.runs_listing([overview]) == listing.runs_table([overview])


# -- CLI: refusals before anything is written -----------------------------------------------


@pytest.mark.unit
@pytest.mark.parametrize(
    "args, message",
    [
        (["--sweep", "train.lr=1e-3,-1"], "train.lr"),
        (["--sweep", "train.lrate=1e-3"], "train.lrate: unknown field"),
        (["--lr", "0.1", "--sweep", "train.lr=1e-3,3e-3"], "sweep it or set it"),
        (["--set", "train.lr=0.1", "--sweep", "train.lr=1e-3,3e-3"], "sweep it or set it"),
        # the second batch size is larger than the data: found resolving point 2 of 2
        (["--sweep", "train.batch_size=20,1000"], "train.batch_size=1000"),
        # no lr drops: the factor is not part of the run id, so both points are one run
        (["--sweep", "train.lr_drop_factor=0.1,0.5"], "are the same run"),
    ],
)
def test_a_bad_sweep_exits_2_with_nothing_written(args, message, class_folder, tmp_path):
    store = tmp_path / "store"
    path = _write_spec(tmp_path, class_folder)
    result = invoke("run", str(path), *args, "--store", str(store))
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and lines[0].startswith("Error:"), lines
    assert not store.exists()


# -- a real 2 x 2 sweep -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def swept(class_folder, tmp_path_factory):
    """A 2 x 2 sweep run twice: the store, the spec, the outputs and Runner.run's calls."""
    folder = tmp_path_factory.mktemp("sweep")
    path = _write_spec(folder, class_folder)
    store = folder / "store"
    args = ["run", str(path), "--sweep", "train.lr=1e-3,3e-3", "--sweep", "train.seed=0,1"]
    args += ["--store", str(store)]
    calls = []
    original = runner.Runner.run

    def counted(self, plan):
        calls.append(self.run_id)
        return original(self, plan)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(runner.Runner, "run", counted)
        first = invoke(*args)
        trained = list(calls)
        metas = {i: Store(store).meta(i) for i in trained}
        second = invoke(*args)
        json_rerun = invoke(*args, "--json")
    assert first.exit_code == 0, first.output
    return {
        "store": store,
        "first": first,
        "second": second,
        "json": json_rerun,
        "trained": trained,
        "metas": metas,
        "retrained": calls[len(trained) :],
    }


def test_a_2x2_sweep_trains_4_runs_and_a_rerun_trains_nothing(swept):
    assert len(swept["trained"]) == 4 and len(set(swept["trained"])) == 4
    store = Store(swept["store"])
    assert sorted(store.run_ids()) == sorted(swept["trained"])
    assert swept["second"].exit_code == 0, swept["second"].output
    assert swept["retrained"] == []
    assert swept["second"].stdout == swept["first"].stdout
    assert {i: store.meta(i) for i in swept["trained"]} == swept["metas"]  # recorded once
    descriptors = [store.descriptor(i)["full"]["train"] for i in swept["trained"]]
    assert [(d["lr"], d["seed"]) for d in descriptors] == [
        (0.001, 0),
        (0.001, 1),
        (0.003, 0),
        (0.003, 1),
    ]


def test_each_run_records_its_place_in_the_sweep(swept):
    store = Store(swept["store"])
    (found,) = store.sweeps()
    assert found["name"] == "tiny:train.lr,train.seed"
    assert found["fields"] == ["train.lr", "train.seed"] and found["points"] == 4
    assert found["runs"] == swept["trained"]
    meta = store.meta(found["runs"][3])
    assert meta["sweeps"] == [
        {
            "id": found["id"],
            "name": found["name"],
            "index": 3,
            "points": 4,
            "axes": [{"field": "train.lr", "value": 0.003}, {"field": "train.seed", "value": 1}],
        }
    ]
    assert store.resolve_sweep(found["name"]) == found
    assert store.resolve_sweep(found["id"][:8]) == found
    assert store.resolve_sweep("nothing") is None


def test_run_prints_the_sweep_and_json_has_each_points_axes(swept):
    text = swept["first"].stdout
    assert text.startswith("sweep ") and "tiny:train.lr,train.seed  4/4 runs" in text
    document = json.loads(swept["json"].stdout)
    assert document["name"] == "tiny:train.lr,train.seed" and document["points"] == 4
    assert [r["axes"] for r in document["runs"]][1] == {"train.lr": 0.001, "train.seed": 1}
    assert [r["run_id"] for r in document["runs"]] == swept["trained"]
    assert all(len(r["levels"]) == 2 for r in document["runs"])


def test_ls_shows_the_sweep_with_its_swept_columns(swept):
    result = invoke("ls", "--store", str(swept["store"]))
    assert result.exit_code == 0, result.output
    header, columns, *rows = result.stdout.strip().splitlines()
    found = Store(swept["store"]).sweeps()[0]
    assert header == f"sweep {found['id'][:12]}  tiny:train.lr,train.seed  4/4 runs"
    assert columns.split()[:4] == ["run", "train.lr", "train.seed", "name"]
    values = [["0.001", "0"], ["0.001", "1"], ["0.003", "0"], ["0.003", "1"]]
    ids = [[run_id[:12]] for run_id in swept["trained"]]
    assert [row.split()[:3] for row in rows] == [i + v for i, v in zip(ids, values, strict=True)]
    listed = json.loads(invoke("ls", "--json", "--store", str(swept["store"])).stdout)
    assert all(o["sweeps"][0]["id"] == found["id"] for o in listed)


def test_ls_lists_other_runs_as_before_then_the_sweep(swept, class_folder, tmp_path):
    store = tmp_path / "store"
    path = _write_spec(tmp_path, class_folder)
    assert invoke("run", str(path), "--store", str(store)).exit_code == 0
    alone = invoke("ls", "--store", str(store)).stdout
    for run_id in Store(swept["store"]).run_ids():  # the sweep's runs join the store
        source = swept["store"] / run_id
        (store / run_id).mkdir()
        for name in ("descriptor.json", "meta.json"):
            (store / run_id / name).write_bytes((source / name).read_bytes())
    both = invoke("ls", "--store", str(store)).stdout
    assert both.startswith(alone.rstrip("\n") + "\n\nsweep ")


def test_compare_labels_a_sweeps_runs_by_their_swept_values(swept):
    store = str(swept["store"])
    by_name = invoke("compare", "tiny:train.lr,train.seed", "--store", store)
    assert by_name.exit_code == 0, by_name.output
    ids = [i[:12] for i in swept["trained"]]
    by_ids = invoke("compare", *ids, "--store", store)
    assert by_ids.stdout == by_name.stdout
    level_zero = [line for line in by_name.stdout.splitlines() if line.startswith("0 ")]
    assert [label for line in level_zero for label in LABELS if label in line] == LABELS
    assert f"{LABELS[0]} -> {LABELS[1]}" in by_name.stderr
    document = json.loads(invoke("compare", *ids, "--json", "--store", store).stdout)
    assert document["sweep"]["name"] == "tiny:train.lr,train.seed"
    assert [r["axes"]["train.lr"] for r in document["runs"]] == [0.001, 0.001, 0.003, 0.003]
    assert [r["label"] for r in document["runs"]] == LABELS


def test_sweep_labels_name_a_sweeps_runs_for_figures(swept):
    store = Store(swept["store"])
    ids = swept["trained"]
    assert listing.sweep_labels(store, ids) == dict(zip(ids, LABELS, strict=True))
    # one run of a sweep is named as any run is
    assert listing.sweep_labels(store, ids[:1]) == {ids[0]: ids[0][:12]}


def test_report_of_a_sweep_draws_its_runs_labelled_by_their_swept_values(swept, tmp_path):
    page = tmp_path / "sweep.html"
    name = Store(swept["store"]).sweeps()[0]["name"]
    result = invoke("report", name, "-o", str(page), "--store", str(swept["store"]))
    assert result.exit_code == 0, result.output
    html = page.read_text()
    assert all(label in html for label in LABELS)


def test_a_diverged_point_does_not_stop_the_others(class_folder, tmp_path, monkeypatch):
    from ltcli.train import launch
    from ltcli.train import sweep_runner as sweeping
    from ltcli.train.divergence import DivergedError

    original = launch.run

    def diverging(loaded, store, **options):
        run_id = original(loaded, store, **options)
        if loaded["train.lr"] == 1.0:
            raise DivergedError(f"run {run_id[:12]} diverged")
        return run_id

    monkeypatch.setattr(sweeping.launch, "run", diverging)
    store = tmp_path / "store"
    path = _write_spec(tmp_path, class_folder)
    result = invoke("run", str(path), "--sweep", "train.lr=1.0,1e-3", "--store", str(store))
    assert result.exit_code == 1
    assert "train.lr=1.0: run " in result.stderr and "diverged" in result.stderr
    (found,) = Store(store).sweeps()
    assert len(found["runs"]) == 2  # the second point ran, and both are in the sweep
