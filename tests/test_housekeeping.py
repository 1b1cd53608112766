"""``lt rm`` and ``lt gc`` on stores written by hand: they remove exactly what they say, print
the bytes freed, never touch another run, and leave alone a run another process trains."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from ltcli.cli.options import LtGroup
from ltcli.cli.store_commands import gc, rm
from ltcli.core import atomic
from ltcli.core.errors import LtError
from ltcli.results import listing
from ltcli.storage import housekeeping
from ltcli.storage.store import CellKey, Store

pytestmark = pytest.mark.unit

group = LtGroup(commands={"rm": rm, "gc": gc})
MASK = {"fc1": {"kernel": np.ones((4, 3), np.float32)}}


def make_run(root: Path, name: str, cells: list[tuple[int, int]] = ()) -> str:
    """A run named `name` holding finished ticket cells (replicate, level), with θ0; its id."""
    run_id = hashlib.sha256(name.encode()).hexdigest()
    full = {"data": {"dataset": "mnist"}, "model": {"name": "lenet300"}}
    store = Store(root)
    atomic.write_json(
        root / run_id / "descriptor.json", {"run_id": run_id, "hashed": full, "full": full}
    )
    atomic.write_json(root / run_id / "meta.json", {"experiment": "hand", "names": [name]})
    atomic.write_npz(store.init_path(run_id, 0), {"params/fc1/kernel": np.ones((4, 3))})
    for replicate, level in cells:
        metrics = {"replicate": replicate, "level": level, "member": "ticket"}
        store.write_cell(run_id, CellKey(replicate, level), MASK, metrics, weights=MASK)
    return run_id


def checkpoint(store: Store, run_id: str, level: int, replicates: int) -> Path:
    """A level checkpoint holding that level's ticket cells, as the runner writes one."""
    path = store.checkpoint_path(run_id, f"level_{level}")
    cells = [str(CellKey(r, level).relpath) for r in range(replicates)]
    atomic.write_npz(path, {"step": np.asarray(100), "cells": np.asarray(cells)})
    return path


def snapshot(folder: Path) -> dict[Path, bytes]:
    return {p.relative_to(folder): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def size(*paths: Path) -> str:
    total = 0
    for path in paths:
        files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
        total += sum(p.stat().st_size for p in files)
    return listing.format_size(total)


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "results")


def test_rm_removes_exactly_the_run(store: Store) -> None:
    gone, kept = make_run(store.root, "gone", [(0, 0)]), make_run(store.root, "kept", [(0, 0)])
    before, freed = snapshot(store.run_dir(kept)), size(store.run_dir(gone))
    result = CliRunner().invoke(group, ["rm", "gone", "--yes", "--store", str(store.root)])
    assert result.exit_code == 0, result.output
    assert not store.run_dir(gone).exists()
    assert store.run_ids() == [kept] and snapshot(store.run_dir(kept)) == before
    assert f"removed {store.run_dir(gone)}" in result.stdout
    assert result.stdout.splitlines()[-1] == f"freed {freed}"


def test_rm_asks_first(store: Store) -> None:
    run_id = make_run(store.root, "asked", [(0, 0)])
    args = ["rm", run_id[:8], "--store", str(store.root)]
    kept = CliRunner().invoke(group, args, input="n\n")
    assert kept.exit_code == 1 and "Remove 1 run?" in kept.stderr
    assert "asked" in kept.stderr  # the run is shown before the question
    assert store.run_ids() == [run_id]
    removed = CliRunner().invoke(group, args, input="y\n")
    assert removed.exit_code == 0, removed.output
    assert store.run_ids() == [] and not store.run_dir(run_id).exists()


def test_rm_refuses_a_run_being_trained(store: Store) -> None:
    busy, idle = make_run(store.root, "busy", [(0, 0)]), make_run(store.root, "idle")
    with store.lock(busy):
        before = snapshot(store.root)
        result = CliRunner().invoke(
            group, ["rm", "idle", "busy", "--yes", "--store", str(store.root)]
        )
        assert result.exit_code == 1
        assert f"run {busy[:12]} is being trained" in result.stderr
        assert snapshot(store.root) == before  # neither run is removed
        with pytest.raises(LtError):  # nor by the library, holding the locks
            housekeeping.remove_runs(store, [idle, busy])
        assert snapshot(store.root) == before
    result = CliRunner().invoke(group, ["rm", "busy", "--yes", "--store", str(store.root)])
    assert result.exit_code == 0 and store.run_ids() == [idle]


def test_rm_of_an_unknown_run_exits_2(store: Store) -> None:
    make_run(store.root, "there")
    result = CliRunner().invoke(group, ["rm", "nothere", "--yes", "--store", str(store.root)])
    assert result.exit_code == 2 and "no such run" in result.stderr


@pytest.fixture
def messy(store: Store) -> dict[str, Path]:
    """A store with garbage in it: the garbage, the live checkpoint, and the runs' folders."""
    done = make_run(store.root, "done", [(r, level) for r in range(2) for level in (0, 1)])
    empty = make_run(store.root, "empty")  # a descriptor and θ0: never finished a cell
    resumable = make_run(store.root, "resumable")  # killed in level 0: its checkpoint counts
    other = make_run(store.root, "other", [(0, 0)])  # nothing to collect
    checkpoint(store, resumable, 0, replicates=2)
    live = checkpoint(store, done, 2, replicates=2)  # level 2 is not finished
    stale = checkpoint(store, done, 1, replicates=2)
    temporary = store.cell_dir(done, CellKey(1, 1)) / ".metrics.json.k3j2l1.tmp"
    temporary.write_bytes(b"half a file")
    return {
        "stale": stale,
        "temporary": temporary,
        "empty": store.run_dir(empty),
        "live": live,
        **{name: store.run_dir(i) for name, i in [("done", done), ("resumable", resumable)]},
        "other": store.run_dir(other),
    }


def test_gc_removes_garbage_and_keeps_cells_and_other_runs(
    store: Store, messy: dict[str, Path]
) -> None:
    kept = {k: snapshot(messy[k]) for k in ("resumable", "other")}
    done = messy["done"]
    done_cells = {p for p in snapshot(done) if p.parts[0].startswith("replicate_")}
    freed = size(messy["stale"], messy["temporary"], messy["empty"])
    result = CliRunner().invoke(group, ["gc", "--store", str(store.root)])
    assert result.exit_code == 0, result.output
    removed = [line.split()[1] for line in result.stdout.splitlines()[:-1]]
    assert sorted(removed) == sorted(str(messy[k]) for k in ("stale", "temporary", "empty"))
    assert "(stale checkpoint," in result.stdout and "(temporary file," in result.stdout
    assert result.stdout.splitlines()[-1] == f"freed {freed}"
    assert not any(messy[k].exists() for k in ("stale", "temporary", "empty"))
    assert messy["live"].is_file()
    assert done_cells - {messy["temporary"].relative_to(done)} <= set(snapshot(done))
    assert len(list(store.finished_cells(done.name))) == 4
    assert {k: snapshot(messy[k]) for k in kept} == kept
    again = CliRunner().invoke(group, ["gc", "--store", str(store.root)])
    assert again.stdout == "freed 0 B\n"


def test_gc_dry_run_deletes_nothing(store: Store, messy: dict[str, Path]) -> None:
    before = snapshot(store.root)
    result = CliRunner().invoke(group, ["gc", "--dry-run", "--store", str(store.root)])
    assert result.exit_code == 0, result.output
    assert snapshot(store.root) == before
    listed = [line.split()[2] for line in result.stdout.splitlines()[:-1]]
    assert sorted(listed) == sorted(str(messy[k]) for k in ("stale", "temporary", "empty"))
    freed = size(messy["stale"], messy["temporary"], messy["empty"])
    assert result.stdout.splitlines()[-1] == f"would free {freed}"


def test_gc_skips_a_run_being_trained(store: Store, messy: dict[str, Path]) -> None:
    done, empty = messy["done"].name, messy["empty"].name
    with store.lock(done), store.lock(empty):
        before = snapshot(store.root)
        result = CliRunner().invoke(group, ["gc", "--store", str(store.root)])
        assert result.exit_code == 0, result.output
        assert result.stdout == "freed 0 B\n"
        assert snapshot(store.root) == before
        assert f"skipped run {done[:12]}" in result.stderr
        assert f"skipped run {empty[:12]}" in result.stderr
