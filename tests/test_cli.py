"""The command line: bad input exits 2 with one line naming the field and writes nothing."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import click
import pytest
from click.shell_completion import ShellComplete
from click.testing import CliRunner

from ltcli.cli.main import cli
from ltcli.cli.results_commands import complete_runs
from ltcli.experiment import spec
from ltcli.storage.store import Store

pytestmark = pytest.mark.unit


def invoke(*args: str):
    return CliRunner().invoke(cli, list(args))


@pytest.mark.parametrize(
    "args, field",
    [
        (["--prune-rate", "0"], "prune.rate"),
        (["--prune-rate", "1.5"], "prune.rate"),
        (["--rounds", "-1"], "run.rounds"),
        (["--replicates", "0"], "run.replicates"),
        (["--lr", "-0.1"], "train.lr"),
        (["--iterations", "ten"], "train.iterations"),
        (["--rewind-iter", "99999it"], "prune.rewind_iter"),
        (["--eval-every", "70"], "train.eval_every"),
        (["--controls", "reinit3"], "run.controls"),
        (["--set", "model.name=lenet5"], "model.name"),
        (["--set", "data.dataset=imagenet21k"], "data.dataset"),
        (["--set", "train.lrate=0.1"], "train.lrate"),
        (["--set", "train.batch_size=abc"], "train.batch_size"),
        (["--set", "nonsense"], "--set nonsense"),
        # non-finite numbers and empty list items: each trained (or dropped a value) before
        (["--lr", "inf"], "train.lr"),
        (["--lr", "1e309"], "train.lr"),  # parses to inf
        (["--lr", "nan"], "train.lr"),
        (["--set", "train.weight_decay=inf"], "train.weight_decay"),
        (["--set", "train.clip_norm=inf"], "train.clip_norm"),
        (["--set", "train.lr_drop_factor=nan"], "train.lr_drop_factor"),
        (["--one-shot", "50,,20"], "prune.one_shot"),
        (["--one-shot", "50,20,"], "prune.one_shot"),
        (["--one-shot", "50,inf"], "prune.one_shot"),
        (["--spawn", "0,,500"], "run.spawn"),
        (["--controls", "reinit:1,,random:1"], "run.controls"),
        (["--set", "prune.exclude=fc1,,fc2"], "prune.exclude"),
        (["--set", 'prune.exclude=["fc1", ""]'], "prune.exclude"),
    ],
)
def test_bad_input_exits_2_naming_the_field_and_writes_nothing(args, field, tmp_path, real_data):
    store = tmp_path / "store"
    result = invoke("run", "smoke", *args, "--store", str(store), "--data-dir", str(real_data[1]))
    assert result.exit_code == 2, result.output
    message = result.stderr.strip().splitlines()
    assert len(message) == 1 and field in message[0] and message[0].startswith("Error:")
    assert not store.exists()


@pytest.mark.parametrize(
    "flag, value",
    [
        ("--checkpoint-every", "nan"),
        ("--checkpoint-every", "inf"),
        ("--progress-every", "nan"),
        ("--progress-every", "1e309"),
    ],
)
def test_non_finite_seconds_are_refused_before_anything_is_written(flag, value, tmp_path):
    store = tmp_path / "store"
    result = invoke("run", "smoke", flag, value, "--store", str(store))
    assert result.exit_code == 2, result.output
    assert f"Invalid value for '{flag}'" in result.stderr and "not a finite number" in result.stderr
    assert not store.exists()


def test_an_unknown_field_in_a_spec_file_is_rejected(tmp_path, write_spec):
    path = write_spec(train={"learning_rate": 0.1})
    result = invoke("run", str(path), "--store", str(tmp_path / "s"))
    assert result.exit_code == 2
    assert "train.learning_rate: unknown field" in result.stderr
    assert "train.lr" in result.stderr  # the known fields are listed


def test_an_unknown_experiment_lists_the_known_ones(tmp_path):
    result = invoke("run", "mnist-lenet5", "--store", str(tmp_path))
    assert result.exit_code == 2
    assert "mnist-lenet" in result.stderr and "smoke" in result.stderr


def test_missing_data_says_where_to_put_it_at_once(tmp_path, monkeypatch):
    monkeypatch.setenv("LT_DATA_DIR", str(tmp_path / "empty"))
    started = time.monotonic()
    result = invoke("run", "mnist-lenet", "--store", str(tmp_path / "s"))
    assert time.monotonic() - started < 10
    assert result.exit_code == 2
    assert "train-images-idx3-ubyte.gz" in result.stderr and "lt data fetch mnist" in result.stderr
    assert not (tmp_path / "s").exists()


def test_a_malformed_data_file_is_rejected(tmp_path):
    folder = tmp_path / "mnist"
    folder.mkdir()
    for name in (
        "train-images-idx3-ubyte",
        "train-labels-idx1-ubyte",
        "t10k-images-idx3-ubyte",
        "t10k-labels-idx1-ubyte",
    ):
        (folder / name).write_bytes(b"\x00\x00\x08\x03" + b"\x00" * 12)
    result = invoke(
        "run", "mnist-lenet", "--data-dir", str(tmp_path), "--store", str(tmp_path / "s")
    )
    assert result.exit_code == 2 and "expected shape" in result.stderr


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory, real_data) -> Path:
    store = tmp_path_factory.mktemp("runs")
    for seed, name in ((0, "alpha"), (1, "beta")):
        result = invoke(
            "run",
            "smoke",
            "--rounds",
            "0",
            "--replicates",
            "1",
            "--iterations",
            "100",
            "--seed",
            str(seed),
            "--name",
            name,
            "--store",
            str(store),
            "--data-dir",
            str(real_data[1]),
        )
        assert result.exit_code == 0, result.output
    return store


@pytest.mark.system
def test_a_rerun_with_nothing_to_train_loads_no_jax(two_runs, real_data):
    """What keeps a finished rerun fast: it answers from the store without importing JAX."""
    args = ["run", "smoke", "--rounds", "0", "--replicates", "1", "--iterations", "100"]
    args += ["--name", "alpha", "--store", str(two_runs), "--data-dir", str(real_data[1])]
    code = (
        "import sys\n"
        "from click.testing import CliRunner\n"
        "from ltcli.cli.main import cli\n"
        f"result = CliRunner().invoke(cli, {args!r})\n"
        "print(result.output, result.exception, file=sys.stderr)\n"
        "print(result.exit_code, 'level' in result.stdout)\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'jax', 'flax', 'optax'}))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.stdout.splitlines() == ["0 True", "[]"], done.stderr


@pytest.mark.integration
def test_ls_lists_every_run(two_runs):
    result = invoke("ls", "--store", str(two_runs))
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert lines[0].split()[:3] == ["run", "name", "experiment"]
    assert sorted(line.split()[1] for line in lines[1:]) == ["alpha", "beta"]
    for run_id in Store(two_runs).run_ids():
        assert any(line.startswith(run_id[:12]) for line in lines)


@pytest.mark.integration
def test_show_finds_a_run_by_name_or_prefix(two_runs):
    run_id = Store(two_runs).resolve("beta")
    by_name = invoke("show", "beta", "--store", str(two_runs))
    by_prefix = invoke("show", run_id[:6], "--store", str(two_runs))
    assert by_name.exit_code == 0 and by_name.stdout == by_prefix.stdout
    assert f"run {run_id}" in by_name.stdout and "seed=1" in by_name.stdout


@pytest.mark.integration
def test_an_unknown_or_ambiguous_run_exits_2(two_runs):
    missing = invoke("show", "zzzz", "--store", str(two_runs))
    assert missing.exit_code == 2 and "no such run" in missing.stderr
    ids = Store(two_runs).run_ids()
    common = next(n for n in range(12, -1, -1) if ids[0][:n] == ids[1][:n])
    ambiguous = invoke("show", ids[0][:common], "--store", str(two_runs))
    assert ambiguous.exit_code == 2
    assert ids[0][:12] in ambiguous.stderr and ids[1][:12] in ambiguous.stderr
    two_of_one_experiment = invoke("show", "smoke", "--store", str(two_runs))
    assert two_of_one_experiment.exit_code == 2 and ids[1][:12] in two_of_one_experiment.stderr


@pytest.mark.integration
def test_show_finds_the_only_run_of_an_experiment(two_runs, tmp_path):
    run_id = Store(two_runs).resolve("alpha")
    shutil.copytree(Store(two_runs).run_dir(run_id), tmp_path / run_id)
    by_experiment = invoke("show", "smoke", "--store", str(tmp_path))
    assert by_experiment.exit_code == 0 and f"run {run_id}" in by_experiment.stdout


def test_help_explains_the_flags():
    result = invoke("run", "--help")
    assert result.exit_code == 0
    for flag in ("--rounds", "--prune-rate", "--rewind-iter", "--store", "--data-dir", "--set"):
        assert flag in result.stdout


def test_one_data_set_is_never_taken_for_another(real_data, tmp_path):
    other = {"fashion-mnist": "mnist", "mnist": "fashion-mnist"}[real_data[0]]
    result = invoke(
        "run",
        "smoke",
        "--set",
        f"data.dataset={other}",
        "--data-dir",
        str(real_data[1]),
        "--store",
        str(tmp_path / "s"),
    )
    assert result.exit_code == 2
    assert f"are {real_data[0]}, not {other}" in result.stderr


@pytest.mark.integration
def test_path_prints_the_runs_existing_folder(two_runs):
    store = Store(two_runs)
    result = invoke("path", "beta", "--store", str(two_runs))
    assert result.exit_code == 0, result.output
    folder = Path(result.stdout.strip())
    assert result.stdout.count("\n") == 1 and folder.is_absolute() and folder.is_dir()
    assert folder == store.run_dir(store.resolve("beta")).absolute()
    assert (folder / "descriptor.json").is_file()
    missing = invoke("path", "zzzz", "--store", str(two_runs))
    assert missing.exit_code == 2 and missing.stdout == ""


def completions(args: list[str], incomplete: str) -> list[str]:
    """What `lt ARGS INCOMPLETE<TAB>` offers, through Click's completion machinery."""
    complete = ShellComplete(cli, {}, "lt", "_LT_COMPLETE")
    return [item.value for item in complete.get_completions(args, incomplete)]


@pytest.mark.integration
@pytest.mark.parametrize("command", ["show", "compare", "export", "plot", "diff", "path"])
def test_run_arguments_complete_to_ids_and_aliases(two_runs, command):
    ids = Store(two_runs).run_ids()
    offered = completions([command, "--store", str(two_runs)], "")
    assert sorted(offered) == sorted([*(i[:12] for i in ids), "alpha", "beta"])
    assert completions([command, "--store", str(two_runs)], "al") == ["alpha"]
    assert completions([command, "--store", str(two_runs)], ids[0][:3]) == [ids[0][:12]]


@pytest.mark.integration
def test_run_completion_finds_the_store_from_the_environment(two_runs, monkeypatch, tmp_path):
    monkeypatch.setenv("LT_STORE", str(two_runs))
    assert sorted(completions(["diff", "alpha"], "b")) == ["beta"]
    monkeypatch.delenv("LT_STORE")
    monkeypatch.chdir(tmp_path)  # no ./results here
    assert completions(["show"], "") == []


@pytest.mark.integration
def test_run_completion_never_fails(two_runs, tmp_path):
    broken = tmp_path / "store"
    shutil.copytree(two_runs, broken)
    run_id = Store(broken).run_ids()[0]
    (broken / run_id / "meta.json").write_text("{not json")
    show = click.Context(cli.commands["show"])
    show.params["store"] = broken
    assert complete_runs(show, show.command.params[0], "") == []
    assert completions(["show", "--store", str(broken)], "") == []


def test_experiments_complete_to_shipped_and_local_specs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    shipped = sorted(spec.shipped_specs())
    assert completions(["run"], "mnist") == [n for n in shipped if n.startswith("mnist")]
    assert "mnist-lenet" in shipped and "fashion-lenet" not in completions(["run"], "mnist")
    (tmp_path / "experiments").mkdir()
    (tmp_path / "experiments" / "mine.toml").write_text("")
    offered = completions(["run"], "")
    assert "mine" in offered and "smoke" in offered and "fashion-lenet" in offered
    assert offered == sorted(offered)
    complete = ShellComplete(cli, {}, "lt", "_LT_COMPLETE")
    (item,) = complete.get_completions(["run"], "specs/my")
    assert (item.value, item.type) == ("specs/my", "file")  # a path: the shell completes it
