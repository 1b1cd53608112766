"""Mixed precision (``train.precision = "bf16"``): bfloat16 products, float32 master weights,
optimizer state, statistics and loss; pruned weights exactly zero; the id only when not fp32."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ltcli.experiment import spec
from ltcli.experiment.member import CellKey, Member
from ltcli.science import pruning
from ltcli.storage.store import Store
from ltcli.train import engine, launch, recipes

pytestmark = pytest.mark.unit


def _spec(folder, **train) -> spec.Spec:
    table = {
        "data": {"dataset": f"folder:{folder}", "validation": 50},
        "model": {"name": "lenet300"},
        "train": {"iterations": "200it", "eval_every": "100it", "batch_size": 20, **train},
        "prune": {"rate": 0.5},
        "run": {"rounds": 1, "controls": "random:1"},
    }
    return spec.from_mapping("precision", table)


def test_fp32_keeps_every_earlier_run_id_and_bf16_is_its_own_run(class_folder):
    plain, _ = launch.prepare(_spec(class_folder))
    fp32, _ = launch.prepare(_spec(class_folder, precision="fp32"))
    bf16, _ = launch.prepare(_spec(class_folder, precision="bf16"))
    assert plain.run_id == fp32.run_id
    assert "precision" not in plain.hashed["train"]
    assert bf16.run_id != fp32.run_id and bf16.hashed["train"]["precision"] == "bf16"


def test_the_products_run_in_bfloat16_and_the_loss_in_float32():
    from ltcli.models.lenet import MLP

    cfg = recipes.TrainConfig("adam", 1e-3, 4, 10, 10, precision="bf16")
    eng = engine.Engine(MLP(num_classes=3, hidden=(8,)), cfg)
    params, stats = eng.init(jax.random.PRNGKey(0), (4, 4, 1))
    x, y = jnp.ones((4, 4, 4, 1)), jnp.zeros(4, jnp.int32)
    closed = jax.make_jaxpr(eng._loss)(params, stats, x, y, jax.random.PRNGKey(1))

    def dots(jaxpr):
        for eqn in jaxpr.eqns:
            if eqn.primitive.name == "dot_general":
                yield eqn
            for value in eqn.params.values():
                if hasattr(value, "jaxpr"):
                    yield from dots(getattr(value.jaxpr, "jaxpr", value.jaxpr))

    products = list(dots(closed.jaxpr))
    assert products
    assert all(v.aval.dtype == jnp.bfloat16 for eqn in products for v in eqn.invars)
    loss, _ = eng._loss(params, stats, x, y, jax.random.PRNGKey(1))
    grads = jax.grad(lambda p: eng._loss(p, stats, x, y, jax.random.PRNGKey(1))[0])(params)
    assert loss.dtype == jnp.float32
    assert all(g.dtype == jnp.float32 for g in jax.tree.leaves(grads))


@pytest.mark.integration
def test_bf16_training_keeps_float32_weights_and_pruned_weights_exactly_zero(
    class_folder, tmp_path
):
    store = Store(tmp_path / "store")
    run_id = launch.run(_spec(class_folder, precision="bf16"), store)
    for member in ("ticket", "random-0"):
        key = CellKey(0, 1, Member.parse(member))
        trained = store.read_trained(run_id, key)["params"] if member == "ticket" else None
        mask = store.read_mask(
            run_id, key, store.load_weights(store.init_path(run_id, 0))["params"]
        )
        if trained is not None:
            flat_w, flat_m = pruning.flatten(trained), pruning.flatten(mask)
            for name, w in flat_w.items():
                assert w.dtype == np.float32, name
                assert (w[flat_m[name] == 0] == 0).all(), name
        # Ten classes: chance is 0.1; fp32 reaches 0.52 (ticket) and 0.61 (random) here.
        assert store.read_metrics(run_id, key)["final_test_acc"] > 0.3
