"""Nothing recompiles between levels of the same shapes, and controls trained at
the end in large groups store the same cells and numbers as controls trained with their
level."""

from __future__ import annotations

import jax
import pytest

from ltcli.experiment import plan, spec
from ltcli.storage.store import CellKey, Store
from ltcli.train import launch, runner

pytestmark = pytest.mark.integration


_TRACED: list[str] | None = None
"""While a level is watched: the programs JAX traced (and compiled) for it."""


def _count_compiles(event: str, seconds: float, **_: object) -> None:
    if _TRACED is not None and event.startswith("/jax/core/compile/"):
        _TRACED.append(event)


jax.monitoring.register_event_duration_secs_listener(_count_compiles)


def test_no_level_after_the_first_pruned_one_compiles_anything(write_spec, tmp_path, real_data):
    """JAX's own compile events (tracing, lowering, compiling; whether or not the persistent
    cache then holds the program), not its log lines, which other tests' logging can hide."""
    # A batch size no other test uses: this process has not compiled these shapes yet.
    sections = {"train": {"batch_size": 37}, "run": {"rounds": 3, "controls": "reinit:1,random:1"}}
    loaded = spec.load(str(write_spec(**sections)))
    desc, source = launch.prepare(loaded, real_data[1])
    store = Store(tmp_path)
    store.save_run(desc, "tiny", None)
    run = runner.Runner(store, desc, source, grouping="vmap")
    compiled: dict[int, list[str]] = {}
    train_level = run.train_level

    def watched(level, cells):
        global _TRACED
        _TRACED = []
        try:
            train_level(level, cells)
        finally:
            compiled[level], _TRACED = _TRACED, None

    run.train_level = watched
    run.run(plan.Plan(3, 1, "reinit:1,random:1"))
    assert compiled[1], "the first pruned level compiles its group's programs"
    assert compiled[2] == [] and compiled[3] == []


def test_controls_at_the_end_store_the_same_cells_and_numbers(write_spec, tmp_path, real_data):
    """Bit for bit under --deterministic: a cell's numbers do not depend on its group."""
    path = str(write_spec(run={"rounds": 2, "replicates": 1, "controls": "reinit:1,random:1"}))
    stores = {}
    for when in ("level", "end"):
        loaded = spec.apply_overrides(
            spec.load(path), {"run.controls_at": when, "run.deterministic": True}
        )
        stores[when] = Store(tmp_path / when)
        run_id = launch.run(loaded, stores[when], data_dir=real_data[1])
    by_level, at_end = (list(stores[w].finished_cells(run_id)) for w in ("level", "end"))
    assert by_level == at_end and len(at_end) == 1 + 3 + 3
    for cell in at_end:
        a, b = (stores[w].read_metrics(run_id, cell) for w in ("level", "end"))
        assert a["curve"] == b["curve"], cell
        assert a["first_batch"] == b["first_batch"]
    ticket = CellKey(0, 2)
    weights = [(stores[w].cell_dir(run_id, ticket) / "weights.npz").read_bytes() for w in stores]
    assert weights[0] == weights[1]
