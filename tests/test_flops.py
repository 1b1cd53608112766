"""FLOPs counted as RigL counts them (`ltcli.science.flops`, `ltcli.models.flop_trace`,
`ltcli.train.cost`): each model's dense forward FLOPs against hand-written sums, sparse ones
at a mask, and training FLOPs against the paper's formulas computed by hand."""

from __future__ import annotations

import numpy as np
import pytest

from ltcli import models
from ltcli.models.flop_trace import layer_flops
from ltcli.results import report
from ltcli.science import flops, pruning
from ltcli.science.flops import Segment
from ltcli.train import cost

pytestmark = pytest.mark.unit

# One example's multiply-adds, written out by hand; a multiply-add is 2 FLOPs.
LENET = {"fc1/kernel": 784 * 300, "fc2/kernel": 300 * 100, "out/kernel": 100 * 10}


def conv2(side: int, channels: int) -> dict[str, int]:
    """Conv-2 on side x side x channels: two 3x3 SAME convolutions of 64 at full size, a
    2x2 pool, then 256, 256, 10."""
    return {
        "conv1/kernel": side * side * 64 * (3 * 3 * channels),
        "conv2/kernel": side * side * 64 * (3 * 3 * 64),
        "fc1/kernel": (side // 2) * (side // 2) * 64 * 256,
        "fc2/kernel": 256 * 256,
        "out/kernel": 256 * 10,
    }


@pytest.mark.parametrize(
    ("name", "shape", "macs"),
    [
        ("lenet300", (28, 28, 1), LENET),
        ("conv2", (32, 32, 3), conv2(32, 3)),
        ("conv2", (28, 28, 1), conv2(28, 1)),
    ],
)
def test_dense_forward_flops_are_twice_the_hand_counted_multiply_adds(name, shape, macs):
    got = layer_flops(name, shape, 10)
    assert got == {layer: 2.0 * m for layer, m in macs.items()}
    assert flops.forward_flops(got) == 2.0 * sum(macs.values())


def test_lenet_and_conv2_totals():
    assert flops.forward_flops(layer_flops("lenet300", (28, 28, 1), 10)) == 532_400
    assert flops.forward_flops(layer_flops("conv2", (32, 32, 3), 10)) == 87_561_216


def test_resnet50_matches_rigls_dense_count():
    """RigL's README gives dense ResNet-50 8.2e9 inference FLOPs (224 x 224, 1000 classes):
    the strides, the pooling and the bottleneck shapes come out of the trace."""
    total = flops.forward_flops(layer_flops("resnet50", (224, 224, 3), 1000))
    assert total == pytest.approx(8.2e9, rel=0.01)


@pytest.mark.parametrize("name", sorted(models.MODELS))
def test_every_prunable_kernel_of_every_model_is_counted(name):
    shape = (224, 224, 3) if name == "resnet50" else (32, 32, 3)
    got = layer_flops(name, shape, 10)
    assert set(models.get(name).kernels) <= set(got)
    assert all(f > 0 for f in got.values())


def test_a_transformer_counts_its_attention_products_and_tied_head():
    width, context, vocab = 384, 256, 65
    got = layer_flops("gpt", (1,), vocab)
    assert got["block0/attention"] == 2 * 2 * context * context * width  # q k^T, probs v
    assert got["embed/embedding"] == 2 * width * vocab * context  # embed.attend
    assert got["block0/mlp_fc1/kernel"] == 2 * width * 4 * width * context
    # Nothing prunes the attention products: a mask of density 0 leaves them.
    zero = {name: 0.0 for name in models.get("gpt").kernels}
    rest = got["embed/embedding"] + sum(got[f"block{i}/attention"] for i in range(6))
    assert flops.forward_flops(got, zero) == pytest.approx(rest)


def test_a_sparse_layer_costs_its_density():
    got = layer_flops("lenet300", (28, 28, 1), 10)
    density = {"fc1/kernel": 0.2, "fc2/kernel": 0.2, "out/kernel": 0.6}
    sparse = 2 * (0.2 * 784 * 300 + 0.2 * 300 * 100 + 0.6 * 100 * 10)
    assert flops.forward_flops(got, density) == pytest.approx(sparse)
    assert flops.inference_flops(got, density) == pytest.approx(sparse / 532_400)
    # A layer the mask does not name (the conv nets' unpruned layers) stays dense.
    assert flops.forward_flops(got, {"fc1/kernel": 0.0}) == 2 * (300 * 100 + 100 * 10)


def test_densities_from_a_mask_and_from_stored_counts():
    mask = {"fc1": {"kernel": np.zeros((4, 5), np.float32), "bias": np.ones(5, np.float32)}}
    mask["fc1"]["kernel"][:2, :] = 1  # 10 of 20
    assert flops.densities(pruning.counts(mask)) == {"fc1/kernel": 0.5}
    assert flops.densities({"fc1/kernel": [30, 40]}) == {"fc1/kernel": 0.75}


def test_rigl_training_flops_follow_the_papers_formula():
    """Evci et al. 2020, the appendix on FLOPs: (3 f_S ΔT + 2 f_S + f_D) / (ΔT + 1) per step, over
    3 f_D per step of dense training; per layer, so layers of different densities count."""
    layers = {"a": 100.0, "b": 300.0, "c": 50.0}
    density = {"a": 0.5, "b": 0.1, "c": 1.0}
    f_d = 450.0
    f_s = 0.5 * 100 + 0.1 * 300 + 50  # 130
    delta_t, updates = 100, 7
    by_hand = (3 * f_s * delta_t + 2 * f_s + f_d) / (delta_t + 1) / (3 * f_d)
    steps = (delta_t + 1) * updates
    got = flops.training_flops(layers, [Segment(steps, density, dense_grad_steps=updates)])
    assert got == pytest.approx(by_hand, rel=1e-12)
    # Static sparse and SET: 3 f_S a step, the inference ratio.
    assert flops.training_flops(layers, [Segment(steps, density)]) == pytest.approx(f_s / f_d)
    # SNFS (a dense gradient every step): 2 f_S + f_D.
    snfs = flops.training_flops(layers, [Segment(10, density, 10)])
    assert snfs == pytest.approx((2 * f_s + f_d) / (3 * f_d))


def test_a_density_schedule_averages_its_steps():
    """GMP pays each step at the density in force then: two segments weigh by steps."""
    layers = {"a": 10.0, "b": 30.0}
    segments = [Segment(100, {}), Segment(300, {"a": 0.5, "b": 0.25})]
    by_hand = (100 * 3 * 40 + 300 * 3 * (5 + 7.5)) / (400 * 3 * 40)
    assert flops.training_flops(layers, segments) == pytest.approx(by_hand)
    total = flops.dense_training_flops(layers, 400, 8)
    assert total == 3 * 40 * 400 * 8


@pytest.mark.parametrize(
    "segments",
    [[], [Segment(0, {})], [Segment(5, {}, 6)], [Segment(-1, {}), Segment(3, {})]],
)
def test_bad_segments_are_refused(segments):
    with pytest.raises(ValueError, match="segments need"):
        flops.training_flops({"a": 1.0}, segments)


def test_a_density_of_a_layer_the_network_lacks_is_refused():
    with pytest.raises(ValueError, match="lacks: fc9/kernel"):
        flops.forward_flops({"fc1/kernel": 1.0}, {"fc9/kernel": 0.5})


def test_a_cell_records_its_cost():
    layers = {"fc1/kernel": 80.0, "out/kernel": 20.0}
    mask = {
        "fc1": {"kernel": np.array([[1, 0], [0, 0]], np.float32)},  # 1 of 4
        "out": {"kernel": np.ones((2, 1), np.float32)},
    }
    final = flops.densities(pruning.counts(mask))
    facts = cost.cost_facts(layers, final, cost.fixed_mask(mask, 50), batch=4)
    assert facts["inference_flops"] == facts["training_flops"] == pytest.approx(40 / 100)
    assert facts["training_flops_total"] == pytest.approx(3 * 40 * 50 * 4)
    idle = cost.cost_facts(layers, final, cost.fixed_mask(mask, 0), batch=4)
    assert idle["training_flops"] is idle["training_flops_total"] is None


def test_cells_stored_before_flops_were_counted_summarize_without_them():
    fields = {"early_stop_iter": 100, "early_stop_test_acc": 0.9, "final_test_acc": 0.9}
    old = {**fields, "layers": {"fc1/kernel": [1, 2]}}
    new = {**old, "training_flops": 0.5, "inference_flops": 0.25}
    assert not set(report.COST_FIELDS) & set(report.summarize_cells([old]))
    stats = report.summarize_cells([old, new])
    assert stats["training_flops"].mean == 0.5 and stats["training_flops"].n == 1


def _lenet_mask(keep: dict[str, int]) -> dict:
    """A LeNet-300-100 mask keeping the first `keep[layer]` weights of each named layer."""
    shapes = {"fc1": (784, 300), "fc2": (300, 100), "out": (100, 10)}
    mask = {}
    for layer, shape in shapes.items():
        flat = np.zeros(int(np.prod(shape)), np.float32)
        flat[: keep.get(layer, flat.size)] = 1
        mask[layer] = {"kernel": flat.reshape(shape), "bias": np.ones(shape[1], np.float32)}
    return mask


def test_a_rigl_ticket_pays_its_dense_gradients_and_a_set_ticket_none():
    mask = _lenet_mask({"fc1": 23520, "fc2": 3000})
    facts = {"mask_updates": 4, "mask_update_steps": [0, 100, 200, 300]}
    (rigl,) = cost.segments("rigl", mask, facts, 0, 1000)
    (set_,) = cost.segments("set", mask, facts, 0, 1000)
    assert (rigl.steps, rigl.dense_grad_steps, set_.dense_grad_steps) == (1000, 4, 0)
    assert rigl.density == {"fc1/kernel": 0.1, "fc2/kernel": 0.1, "out/kernel": 1.0}
    (fixed,) = cost.segments("magnitude", mask, {}, 200, 1000)
    assert (fixed.steps, fixed.dense_grad_steps) == (800, 0)


def test_a_gmp_ticket_trains_each_stretch_at_the_density_then_in_force():
    """Pruning after the optimizer step at t: step t still at the density before it."""
    mask = _lenet_mask({"fc1": 100, "fc2": 30})
    facts = {
        "mask_updates": 2,
        "mask_update_steps": [100, 200],
        "update_layers": {"fc1/kernel": [1000, 100], "fc2/kernel": [300, 30]},
    }
    got = cost.segments("gmp", mask, facts, 0, 500)
    assert [s.steps for s in got] == [101, 100, 299]
    assert got[0].density == {}  # dense
    assert got[1].density == pytest.approx({"fc1/kernel": 1000 / 235200, "fc2/kernel": 0.01})
    assert got[2].density == pytest.approx({"fc1/kernel": 100 / 235200, "fc2/kernel": 0.001})
    lenet = {"fc1/kernel": 2 * 235200, "fc2/kernel": 2 * 30000, "out/kernel": 2 * 1000}
    by_hand = sum(
        steps * (lenet["fc1/kernel"] * d1 + lenet["fc2/kernel"] * d2 + lenet["out/kernel"])
        for steps, d1, d2 in ((101, 1, 1), (100, 1000 / 235200, 0.01), (299, 100 / 235200, 0.001))
    ) / (500 * sum(lenet.values()))
    assert flops.training_flops(lenet, got) == pytest.approx(by_hand, rel=1e-12)
