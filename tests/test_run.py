"""`lt run` end to end on real data with tiny budgets: the store caches, resumes, extends."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from ltcli.cli.main import cli
from ltcli.core.errors import InvariantError
from ltcli.experiment import plan, spec
from ltcli.science import pruning
from ltcli.storage.store import CellKey, Store
from ltcli.train import checks, context, engine, launch, runner

from helpers import KillAfter, Killed, kill_when, lt_process

pytestmark = pytest.mark.integration


def lt(*args: str, store: Path, data_dir: Path | None = None):
    extra = ["--store", str(store)] if args[0] in ("run", "ls", "show") else []
    if data_dir and args[0] == "run":
        extra += ["--data-dir", str(data_dir)]
    return CliRunner().invoke(cli, [*args, *extra])


def manifests(store: Path) -> dict[str, float]:
    return {str(p.relative_to(store)): p.stat().st_mtime_ns for p in store.rglob("manifest.json")}


@pytest.fixture
def no_training(monkeypatch):
    def refuse(*_, **__):
        raise AssertionError("training was started")

    monkeypatch.setattr(engine.Engine, "segment", refuse)


@pytest.fixture
def segment_calls(monkeypatch) -> list[int]:
    calls: list[int] = []
    original = engine.Engine.segment

    def counting(self, group, step0, evals, data, rewind_at=0):
        calls.append(group.data_key.shape[0])  # cells in the group
        return original(self, group, step0, evals, data, rewind_at)

    monkeypatch.setattr(engine.Engine, "segment", counting)
    return calls


def test_a_tiny_real_run_learns_and_prints_the_table(write_spec, tmp_path, real_data):
    path = write_spec(run={"rounds": 1, "replicates": 1})
    result = lt("run", str(path), "--name", "first", store=tmp_path / "s", data_dir=real_data[1])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("level"))
    level0, level1 = lines[header + 1].split(), lines[header + 2].split()
    assert level0[:2] == ["0", "100.0"] and level1[0] == "1"
    assert float(level0[3]) > 60  # test accuracy at early stop, chance is 10
    store = Store(tmp_path / "s")
    (run_id,) = store.run_ids()
    assert store.resolve("first") == run_id
    metrics = store.read_metrics(run_id, CellKey(0, 1))
    assert metrics["percent_remaining"] == pytest.approx(100 * (117600 + 15000 + 750) / 266200)


def test_a_rerun_trains_nothing_and_prints_the_same(write_spec, tmp_path, real_data, monkeypatch):
    path = write_spec()
    first = lt("run", str(path), store=tmp_path, data_dir=real_data[1])
    before = manifests(tmp_path)
    monkeypatch.setattr(engine.Engine, "segment", lambda *a, **k: pytest.fail("trained"))
    again = lt("run", str(path), store=tmp_path, data_dir=real_data[1])
    assert again.exit_code == 0, again.output
    assert again.stdout == first.stdout
    assert manifests(tmp_path) == before


def test_more_rounds_and_replicates_train_only_the_new_cells(
    write_spec, tmp_path, real_data, segment_calls
):
    path = write_spec()
    assert lt("run", str(path), store=tmp_path, data_dir=real_data[1]).exit_code == 0
    before = manifests(tmp_path)
    segment_calls.clear()
    result = lt(
        "run",
        str(path),
        "--rounds",
        "2",
        "--replicates",
        "2",
        "--grouping",
        "vmap",  # no timing probe, whose calls would count too
        store=tmp_path,
        data_dir=real_data[1],
    )
    assert result.exit_code == 0, result.output
    after = manifests(tmp_path)
    assert {k: after[k] for k in before} == before  # old cells untouched
    new = sorted(set(after) - set(before))
    assert [Path(k).parts[1:3] for k in new] == [
        ("replicate_0", "level_2"),
        ("replicate_1", "level_0"),
        ("replicate_1", "level_1"),
        ("replicate_1", "level_2"),
    ]
    # level 0: replicate 1 alone; level 1: replicate 1 alone; level 2: both replicates.
    assert segment_calls == [1, 1, 2]


def test_rewound_survivors_equal_theta_0(write_spec, tmp_path, real_data):
    loaded = spec.load(str(write_spec()))
    store = Store(tmp_path)
    launch.run(loaded, store, data_dir=real_data[1])
    desc, source = launch.prepare(loaded, real_data[1])
    run = runner.Runner(store, desc, source)
    start, mask, _ = run.starts.cell_inputs(CellKey(0, 1))
    theta0 = store.load_weights(store.init_path(desc.run_id, 0))["params"]
    for name, value in pruning.flatten(start["params"]).items():
        m = pruning.flatten(mask)[name]
        assert np.array_equal(value[m == 1], pruning.flatten(theta0)[name][m == 1])
        assert np.all(value[m == 0] == 0)
    assert store.read_mask(desc.run_id, CellKey(0, 1), theta0)["fc1"]["kernel"].sum() == 117600


def test_late_rewinding_rewinds_to_theta_k(write_spec, tmp_path, real_data):
    loaded = spec.load(str(write_spec(prune={"rewind_iter": "100it"})))
    store = Store(tmp_path)
    run_id = launch.run(loaded, store, data_dir=real_data[1])
    theta0 = store.load_weights(store.init_path(run_id, 0))["params"]
    theta_k = store.load_weights(store.rewind_path(run_id, 0))["params"]
    trained = store.read_trained(run_id, CellKey(0, 0))["params"]
    assert not np.array_equal(theta_k["fc1"]["kernel"], theta0["fc1"]["kernel"])
    assert not np.array_equal(theta_k["fc1"]["kernel"], trained["fc1"]["kernel"])
    desc, source = launch.prepare(loaded, real_data[1])
    start, mask, _ = runner.Runner(store, desc, source).starts.cell_inputs(CellKey(0, 1))
    kept = mask["fc1"]["kernel"] == 1
    assert np.array_equal(start["params"]["fc1"]["kernel"][kept], theta_k["fc1"]["kernel"][kept])


def test_controls_share_the_level_and_feed_nothing_later(write_spec, tmp_path, real_data):
    loaded = spec.load(str(write_spec(run={"controls": "reinit:1,random:1"})))
    store = Store(tmp_path)
    run_id = launch.run(loaded, store, data_dir=real_data[1])
    template = store.load_weights(store.init_path(run_id, 0))["params"]
    ticket = store.read_mask(run_id, CellKey(0, 1), template)
    reinit = store.read_mask(run_id, CellKey(0, 1, "reinit-0"), template)
    random = store.read_mask(run_id, CellKey(0, 1, "random-0"), template)
    assert pruning.counts(random) == pruning.counts(ticket)
    assert not np.array_equal(random["fc1"]["kernel"], ticket["fc1"]["kernel"])
    assert np.array_equal(reinit["fc1"]["kernel"], ticket["fc1"]["kernel"])
    desc, source = launch.prepare(loaded, real_data[1])
    run = runner.Runner(store, desc, source)
    start_reinit, _, _ = run.starts.cell_inputs(CellKey(0, 1, "reinit-0"))
    start_ticket, _, _ = run.starts.cell_inputs(CellKey(0, 1))
    assert not np.array_equal(
        start_reinit["params"]["fc1"]["kernel"], start_ticket["params"]["fc1"]["kernel"]
    )
    assert not (store.cell_dir(run_id, CellKey(0, 0, "reinit-0"))).exists()  # dense level
    assert not (store.cell_dir(run_id, CellKey(0, 1, "random-0")) / "weights.npz").exists()


def test_a_checkpointed_cell_resumes_to_the_same_numbers(
    write_spec, tmp_path, real_data, monkeypatch
):
    monkeypatch.setattr(context, "SEGMENT_ITERATIONS", 100)
    loaded = spec.load(str(write_spec(train={"iterations": "300it"})))
    reference = Store(tmp_path / "reference")
    run_id = launch.run(loaded, reference, data_dir=real_data[1])

    store = Store(tmp_path / "killed")
    with pytest.raises(Killed):
        launch.run(
            loaded, store, data_dir=real_data[1], progress=KillAfter(200), checkpoint_seconds=0
        )
    assert store.checkpoint_path(run_id, "level_0").exists()
    assert not store.is_finished(run_id, CellKey(0, 0))
    resumed = []

    class Watch(plan.Progress):
        def level(self, level, cells, total_steps, start):
            resumed.append(start)

    launch.run(loaded, store, data_dir=real_data[1], progress=Watch())
    assert resumed[0] == 200  # level 0 picked up at iteration 200
    assert not store.checkpoint_path(run_id, "level_0").exists()
    for level in (0, 1):
        a = reference.read_metrics(run_id, CellKey(0, level))
        b = store.read_metrics(run_id, CellKey(0, level))
        assert a["curve"] == b["curve"]


@pytest.mark.system
def test_a_killed_run_resumes_at_the_first_unfinished_cell(write_spec, tmp_path, real_data):
    path = write_spec(train={"iterations": "500it"}, run={"rounds": 4})
    command = lt_process(path, tmp_path, real_data[1])
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    kill_when(proc, tmp_path, "*/replicate_0/level_1/ticket/manifest.json", 120)
    before = manifests(tmp_path)
    assert 2 <= len(before) < 5
    result = lt("run", str(path), store=tmp_path, data_dir=real_data[1])
    assert result.exit_code == 0, result.output
    after = manifests(tmp_path)
    assert {k: after[k] for k in before} == before
    assert len(after) == 5


@pytest.mark.system
def test_a_second_process_reuses_compiled_programs(write_spec, tmp_path, real_data):
    path = write_spec(run={"rounds": 0})
    cache = tmp_path / "cache"
    env = dict(os.environ, LT_CACHE_DIR=str(cache))
    command = lt_process(path, tmp_path / "s", real_data[1])
    subprocess.run(command, env=env, check=True, capture_output=True)
    compiled = {p.name for p in (cache / "jax").iterdir()}
    assert any(name.startswith("jit__segment") for name in compiled)
    subprocess.run([*command, "--rounds", "1"], env=env, check=True, capture_output=True)
    assert {p.name for p in (cache / "jax").iterdir()} == compiled  # nothing compiled anew
    assert len(manifests(tmp_path / "s")) == 2


def test_a_failed_check_stores_no_cell_of_the_level(write_spec, tmp_path, real_data, monkeypatch):
    loaded = spec.load(str(write_spec(run={"rounds": 0, "replicates": 2})))
    store = Store(tmp_path)
    real = checks.optimizer_state_masked
    seen = []

    def fail_second(opt_state, params, mask, what):
        seen.append(what)
        if len(seen) == 2:
            raise InvariantError(f"{what}: momentum revived a pruned weight")
        real(opt_state, params, mask, what)

    # The device check reports a revived weight; the host checks then name it.
    monkeypatch.setattr(checks, "pruned_nonzero", lambda *_: np.asarray([0, 3]))
    monkeypatch.setattr(checks, "optimizer_state_masked", fail_second)
    with pytest.raises(InvariantError, match="momentum revived"):
        launch.run(loaded, store, data_dir=real_data[1], grouping="vmap")
    assert manifests(tmp_path) == {}


def test_the_device_check_alone_stops_the_level(write_spec, tmp_path, real_data, monkeypatch):
    loaded = spec.load(str(write_spec(run={"rounds": 0, "replicates": 2})))
    monkeypatch.setattr(checks, "pruned_nonzero", lambda *_: np.asarray([0, 3]))
    with pytest.raises(InvariantError, match="r1 ticket: pruned weights revived"):
        launch.run(loaded, Store(tmp_path), data_dir=real_data[1], grouping="vmap")
    assert manifests(tmp_path) == {}


def test_the_engine_start_is_checked_against_theta_0_on_disk(
    write_spec, tmp_path, real_data, monkeypatch
):
    loaded = spec.load(str(write_spec(run={"rounds": 0})))
    real_start = engine.Engine.start

    def nudged(self, params, *args, **kwargs):
        group = real_start(self, params, *args, **kwargs)
        kernel = group.params["fc1"]["kernel"]
        return group._replace(
            params={**group.params, "fc1": {**group.params["fc1"], "kernel": kernel * 1.0001}}
        )

    monkeypatch.setattr(engine.Engine, "start", nudged)
    with pytest.raises(InvariantError, match="fc1/kernel is not the rewind point"):
        launch.run(loaded, Store(tmp_path), data_dir=real_data[1])
    assert manifests(tmp_path) == {}


@pytest.mark.unit
def test_a_second_process_cannot_train_the_same_run(write_spec, tmp_path, real_data):
    path = write_spec(run={"rounds": 0})
    desc, _ = launch.prepare(spec.load(str(path)), real_data[1])
    with Store(tmp_path).lock(desc.run_id):
        result = lt("run", str(path), store=tmp_path, data_dir=real_data[1])
    assert result.exit_code == 1
    assert "being trained by another lt process" in result.stderr
    assert manifests(tmp_path) == {}
