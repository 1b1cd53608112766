"""`lt diff` and the differences `lt compare` shows: the hyperparameters two runs differ in,
field by field, from their stored descriptors. The runs here are resolved from real specs
and recorded in a store without training (`launch.prepare`, `Store.save_run`); cells are
written by hand where a table needs some."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from ltcli.cli.main import cli, load_spec
from ltcli.data import fetch
from ltcli.results import diff
from ltcli.storage.store import CellKey, Store
from ltcli.train import launch

pytestmark = pytest.mark.unit

FULL = {
    "data": {"content": "abc", "dataset": "mnist", "validation": 1000},
    "model": {"dropout": 0.0, "name": "lenet300"},
    "train": {"lr": 0.0012, "seed": 0, "augment": False, "lr_drops": []},
    "prune": {"one_shot": None, "rates": {"fc": 0.5, "output": 0.25}},
    "schema": 1,
}


def changed(**fields) -> dict:
    """A copy of `FULL` with dotted `fields` (``train__lr=...``) set; `diff.MISSING` drops."""
    full = json.loads(json.dumps(FULL))
    for dotted, value in fields.items():
        *path, last = dotted.split("__")
        section = full
        for key in path:
            section = section[key]
        if value is diff.MISSING:
            del section[last]
        else:
            section[last] = value
    return full


def test_identical_full_forms_have_no_differences():
    assert diff.differences(FULL, changed()) == []
    assert diff.text([]) == "same: no differences"


def test_each_differing_field_is_listed_once_and_nothing_else():
    other = changed(train__lr=0.003, train__seed=1, data__content="def", schema=2)
    found = diff.differences(FULL, other)
    assert found == [
        diff.Difference("data.content", "abc", "def"),
        diff.Difference("train.lr", 0.0012, 0.003),
        diff.Difference("train.seed", 0, 1),
        diff.Difference("schema", 1, 2),
    ]
    assert diff.text(found).splitlines() == [
        "data.content  abc -> def",
        "train.lr      0.0012 -> 0.003",
        "train.seed    0 -> 1",
        "schema        1 -> 2",
    ]


def test_nested_mappings_differ_by_their_own_fields():
    found = diff.differences(FULL, changed(prune__rates={"fc": 0.2, "output": 0.25}))
    assert found == [diff.Difference("prune.rates.fc", 0.5, 0.2)]
    global_rates = diff.differences(FULL, changed(prune__rates={"global": 0.2}))
    assert [(d.field, d.a, d.b) for d in global_rates] == [
        ("prune.rates.fc", 0.5, diff.MISSING),
        ("prune.rates.output", 0.25, diff.MISSING),
        ("prune.rates.global", diff.MISSING, 0.2),
    ]


def test_a_field_only_one_run_has_shows_a_dash_and_says_so_in_json():
    older = changed(train__augment=diff.MISSING)
    found = diff.differences(older, FULL)
    assert found == [diff.Difference("train.augment", diff.MISSING, False)]
    assert diff.text(found) == "train.augment  - -> False"
    assert diff.to_json(found) == [
        {"field": "train.augment", "a": None, "b": False, "missing": "a"}
    ]
    # null is also a value: a field that is None on one side is not "missing".
    one_shot = diff.differences(FULL, changed(prune__one_shot=20.0))
    assert diff.to_json(one_shot) == [{"field": "prune.one_shot", "a": None, "b": 20.0}]
    dropped = diff.differences(FULL, changed(train__seed=diff.MISSING))
    for each in (found, one_shot, dropped):
        assert diff.from_json(json.loads(json.dumps(diff.to_json(each)))) == each


def test_values_differ_by_kind_not_just_by_equality():
    assert diff.differences(FULL, changed(schema=1.0)) == []  # JSON may write 1 as 1.0
    assert diff.differences(FULL, changed(train__augment=0)) == [
        diff.Difference("train.augment", False, 0)
    ]
    assert diff.differences(FULL, changed(train__lr_drops=[100])) == [
        diff.Difference("train.lr_drops", [], [100])
    ]


# -- the commands, on runs resolved from real specs ------------------------------------------


def record(store: Path, data_dir: Path, name: str, settings=(), **flags) -> str:
    """Records the smoke run with `flags` (no training) as `name`; its id."""
    desc, _ = launch.prepare(load_spec("smoke", tuple(settings), **flags), data_dir)
    Store(store).save_run(desc, "smoke", name)
    return desc.run_id


def write_cell(store: Path, run_id: str, acc: float) -> None:
    """A finished level-0 ticket of `run_id` with test accuracy `acc`."""
    metrics = {
        "replicate": 0,
        "level": 0,
        "member": "ticket",
        "percent_remaining": 100.0,
        "early_stop_iter": 100,
        "early_stop_test_acc": acc,
        "final_test_acc": acc,
        "diverged": False,
    }
    mask = {"fc1": {"kernel": np.ones((4, 3), np.float32)}}
    Store(store).write_cell(run_id, CellKey(0, 0), mask, metrics)


@pytest.fixture(scope="module")
def store(tmp_path_factory, real_data) -> Path:
    folder = tmp_path_factory.mktemp("diff") / "store"
    dataset = [f"data.dataset={real_data[0]}"]
    alpha = record(folder, real_data[1], "alpha", dataset, seed=0)
    beta = record(folder, real_data[1], "beta", dataset, seed=1, lr=0.003)
    write_cell(folder, alpha, 0.9)
    write_cell(folder, beta, 0.8)
    return folder


def lt(store: Path, *args: str):
    return CliRunner().invoke(cli, [*args, "--store", str(store)])


def test_diff_lists_exactly_the_seed_and_the_learning_rate(store):
    result = lt(store, "diff", "alpha", "beta")
    assert result.exit_code == 0, result.output
    assert [line.split() for line in result.stdout.splitlines()] == [
        ["train.lr", "0.0012", "->", "0.003"],
        ["train.seed", "0", "->", "1"],
    ]
    backwards = lt(store, "diff", "beta", "alpha").stdout
    assert backwards.splitlines()[0].split() == ["train.lr", "0.003", "->", "0.0012"]


def test_diff_json_names_both_runs(store):
    s = Store(store)
    result = lt(store, "diff", "alpha", s.resolve("beta")[:10], "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {
        "a": s.resolve("alpha"),
        "b": s.resolve("beta"),
        "differences": [
            {"field": "train.lr", "a": 0.0012, "b": 0.003},
            {"field": "train.seed", "a": 0, "b": 1},
        ],
    }


def test_a_run_diffed_with_itself_has_no_differences(store):
    result = lt(store, "diff", "alpha", "alpha")
    assert result.exit_code == 0 and result.stdout == "same: no differences\n"
    as_json = json.loads(lt(store, "diff", "alpha", "alpha", "--json").stdout)
    assert as_json["differences"] == [] and as_json["a"] == as_json["b"]


def test_diff_of_an_unknown_run_exits_2(store):
    result = lt(store, "diff", "alpha", "zzzz")
    assert result.exit_code == 2 and "run 'zzzz': no such run" in result.stderr
    assert result.stdout == ""


def test_runs_on_other_data_differ_in_the_content_id(tmp_path):
    sources = {i.name: i for i in fetch.list_datasets() if i.content_id}
    if not {"mnist", "fashion-mnist"} <= set(sources):
        pytest.skip("needs both MNIST and Fashion-MNIST")
    for name in ("mnist", "fashion-mnist"):
        record(tmp_path, Path(sources[name].origin).parent, name, [f"data.dataset={name}"])
    result = lt(tmp_path, "diff", "mnist", "fashion-mnist")
    assert result.exit_code == 0, result.output
    mnist, fashion = sources["mnist"].content_id, sources["fashion-mnist"].content_id
    assert [line.split() for line in result.stdout.splitlines()] == [
        ["data.content", mnist, "->", fashion],
        ["data.dataset", "mnist", "->", "fashion-mnist"],
    ]


def test_compare_shows_the_differences_above_its_table(store):
    result = lt(store, "compare", "alpha", "beta", "alpha")
    assert result.exit_code == 0, result.output
    # Above the table (on stderr, so that stdout stays the table alone).
    lines = result.output.splitlines()
    head = lines.index(next(line for line in lines if line.startswith("level")))
    assert [line.split() for line in lines[:head] if line] == [
        ["alpha", "->", "beta"],
        ["train.lr", "0.0012", "->", "0.003"],
        ["train.seed", "0", "->", "1"],
        ["alpha", "->", "alpha"],
        ["same:", "no", "differences"],
    ]
    assert result.stdout.startswith("level") and "train.lr" not in result.stdout
    assert [line.split()[1] for line in lines[head + 1 :]] == ["alpha", "beta", "alpha"]


def test_compare_json_gives_each_run_its_differences_from_the_first(store):
    result = lt(store, "compare", "alpha", "beta", "--json")
    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    runs = json.loads(result.stdout)["runs"]
    assert [r["differences"] for r in runs] == [
        [],
        [
            {"field": "train.lr", "a": 0.0012, "b": 0.003},
            {"field": "train.seed", "a": 0, "b": 1},
        ],
    ]
