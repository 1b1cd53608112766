"""The overlap of two runs' ticket masks (Jaccard per prunable layer and pooled): the pure
function against a float64 numpy recomputation, and `lt compare --masks` and `lt report` on
small stores written by hand (no training), their numbers recomputed from the stored masks."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from test_report import cell

from ltcli.cli.options import LtGroup
from ltcli.cli.results_commands import compare
from ltcli.core import atomic
from ltcli.results import compare as comparing
from ltcli.results import page
from ltcli.science import mask_overlap, pruning
from ltcli.storage.store import CellKey, Store

pytestmark = pytest.mark.unit

results = LtGroup(commands={"compare": compare})
LENET = {"fc1": (30, 12), "fc2": (12, 8), "out": (8, 4)}
CONV = {"conv1": (3, 3, 1, 4), "fc1": (36, 10), "out": (10, 4)}


# -- the function ----------------------------------------------------------------------------


def numpy_jaccard(a: np.ndarray, b: np.ndarray) -> float:
    """|A ∩ B| / |A ∪ B| in float64, 1 where both are empty (the documented convention)."""
    a, b = a.astype(bool).ravel(), b.astype(bool).ravel()
    union = np.float64(np.logical_or(a, b).sum())
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum(dtype=np.float64) / union)


def numpy_chance(a: list[np.ndarray], b: list[np.ndarray]) -> float:
    """E|A ∩ B| / E|A ∪ B| over layers for random masks of the same per-layer counts."""
    inter = sum(
        np.float64(x.sum()) * np.float64(y.sum()) / x.size for x, y in zip(a, b, strict=True)
    )
    union = (
        sum(np.float64(x.sum()) + np.float64(y.sum()) for x, y in zip(a, b, strict=True)) - inter
    )
    return 1.0 if union == 0 else float(inter / union)


def random_mask(rng: np.random.Generator, shape: tuple[int, ...], keep: float) -> np.ndarray:
    return (rng.random(shape) < keep).astype(np.float32)


def test_jaccard_per_layer_and_pooled_equal_a_numpy_recomputation():
    rng = np.random.default_rng(7)
    shapes = {"fc1/kernel": (50, 20), "fc2/kernel": (20, 9), "out/kernel": (9, 3)}
    a = {n: random_mask(rng, s, 0.3) for n, s in shapes.items()}
    b = {n: random_mask(rng, s, 0.6) for n, s in shapes.items()}
    a["out/kernel"][:] = 0  # an empty layer in one mask: J = 0 there
    a["fc1/bias"] = b["fc1/bias"] = np.ones(20, np.float32)  # not prunable: ignored
    found = mask_overlap.overlap(pruning.unflatten(a), b)  # a pytree against a flat dict
    assert list(found) == list(shapes)
    for name in shapes:
        assert found[name].jaccard == pytest.approx(numpy_jaccard(a[name], b[name]), abs=1e-15)
        assert found[name].chance == pytest.approx(numpy_chance([a[name]], [b[name]]), abs=1e-15)
    assert found["out/kernel"].jaccard == 0.0 and found["out/kernel"].kept_a == 0
    pooled = mask_overlap.pooled(found.values())
    flat_a = np.concatenate([a[n].ravel() for n in shapes])
    flat_b = np.concatenate([b[n].ravel() for n in shapes])
    assert pooled.jaccard == pytest.approx(numpy_jaccard(flat_a, flat_b), abs=1e-15)
    layers_a, layers_b = [a[n] for n in shapes], [b[n] for n in shapes]
    assert pooled.chance == pytest.approx(numpy_chance(layers_a, layers_b), abs=1e-15)
    assert pooled.jaccard != pytest.approx(np.mean([o.jaccard for o in found.values()]))
    assert pooled.weights == sum(int(np.prod(s)) for s in shapes.values())


def test_both_empty_agree_and_other_shapes_are_refused():
    empty = np.zeros((3, 4))
    assert mask_overlap.layer_overlap(empty, empty).jaccard == 1.0
    assert mask_overlap.layer_overlap(empty, empty).chance == 1.0
    assert mask_overlap.layer_overlap(np.ones((3, 4)), np.ones((3, 4))).jaccard == 1.0
    with pytest.raises(ValueError, match="shapes"):
        mask_overlap.layer_overlap(empty, np.zeros((4, 3)))
    with pytest.raises(ValueError, match="prunable layers differ"):
        mask_overlap.overlap({"fc1/kernel": empty}, {"fc1/kernel": empty, "out/kernel": empty})


# -- stores written by hand ------------------------------------------------------------------


def params(shapes: dict[str, tuple[int, ...]], seed: int) -> dict:
    rng = np.random.default_rng(seed)
    return {
        layer: {"kernel": rng.normal(size=s).astype(np.float32), "bias": np.zeros(s[-1])}
        for layer, s in shapes.items()
    }


def exact_mask(rng: np.random.Generator, shapes: dict, fractions: dict) -> dict:
    """A mask keeping round(fraction x size) weights of each layer, at random positions."""
    mask = {}
    for layer, shape in shapes.items():
        size = int(np.prod(shape))
        kept = np.zeros(size, np.float32)
        kept[rng.permutation(size)[: round(fractions[layer] * size)]] = 1
        mask[layer] = {"kernel": kept.reshape(shape), "bias": np.ones(shape[-1], np.float32)}
    return mask


def make_run(root: Path, name: str, shapes: dict, method: str, tickets: dict, seeds: dict) -> str:
    """A run `name` whose tickets are `tickets` ({(replicate, level): mask}) and whose θ0 of
    replicate r is `params(shapes, seeds[r])`; its id."""
    run_id = hashlib.sha256(name.encode()).hexdigest()
    full = {
        "data": {"dataset": "mnist"},
        "model": {"name": "conv2" if shapes is CONV else "lenet300"},
        "train": {"lr": 0.0012},
        "prune": {"method": method, "rate": 0.5, "one_shot": None},
    }
    atomic.write_json(
        root / run_id / "descriptor.json", {"run_id": run_id, "hashed": full, "full": full}
    )
    atomic.write_json(root / run_id / "meta.json", {"experiment": "hand", "names": [name]})
    store = Store(root)
    for replicate, seed in seeds.items():
        store.save_weights(store.init_path(run_id, replicate), {"params": params(shapes, seed)})
    for (replicate, level), mask in tickets.items():
        pm = pruning.percent_remaining(mask)
        metrics = cell(replicate, level, percent_remaining=pm, layers=pruning.counts(mask))
        store.write_cell(run_id, CellKey(replicate, level), mask, metrics)
    return run_id


DENSE = {layer: 1.0 for layer in LENET}
HALF = {"fc1": 0.5, "fc2": 0.5, "out": 0.75}
QUARTER = {"fc1": 0.25, "fc2": 0.25, "out": 0.0}  # `out` emptied
OTHER = {"fc1": 0.4, "fc2": 0.4, "out": 0.75}


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    """ "imp": replicates 0 and 1, levels 0-2 (100%, ~51%, ~27%). "learned" (method snip):
    replicates 0-2; level 1 at imp's level 1 sparsity, level 2 at none of imp's, level 3 at
    imp's level 2; θ0 equal to imp's for replicate 0, another for 1. "conv": another model.
    "no-init": one ticket at imp's level 1 sparsity, and no stored θ0."""
    root = tmp_path_factory.mktemp("overlap-store")
    rng = np.random.default_rng(0)
    imp = {}
    for r in (0, 1):
        imp[r, 0] = exact_mask(rng, LENET, DENSE)
        imp[r, 1] = exact_mask(rng, LENET, HALF)
        imp[r, 2] = exact_mask(rng, LENET, QUARTER)
    learned = {}
    for r in (0, 1, 2):
        learned[r, 0] = exact_mask(rng, LENET, DENSE)
        learned[r, 1] = exact_mask(rng, LENET, HALF)
        learned[r, 2] = exact_mask(rng, LENET, OTHER)
        learned[r, 3] = exact_mask(rng, LENET, QUARTER)
    learned[0, 1]["fc2"]["kernel"] = imp[0, 1]["fc2"]["kernel"].copy()  # fc2 agrees: J = 1
    conv = {(0, 0): exact_mask(rng, CONV, {layer: 1.0 for layer in CONV})}
    conv[0, 1] = exact_mask(rng, CONV, {"conv1": 0.5, "fc1": 0.5, "out": 0.75})
    make_run(root, "imp", LENET, "magnitude", imp, {0: 0, 1: 1})
    make_run(root, "learned", LENET, "snip", learned, {0: 0, 1: 5, 2: 2})
    make_run(root, "conv", CONV, "magnitude", conv, {0: 0})
    make_run(root, "no-init", LENET, "snip", {(0, 1): exact_mask(rng, LENET, HALF)}, {})
    return Store(root)


def stored(store: Store, name: str, replicate: int, level: int) -> dict[str, np.ndarray]:
    """A ticket's prunable layers as stored, read independently of the code under test."""
    path = store.cell_dir(store.resolve(name), CellKey(replicate, level)) / "mask.npz"
    with np.load(path) as npz:
        return {
            k: np.unpackbits(npz[k], count=int(np.prod(npz[f"{k}#shape"]))).astype(bool)
            for k in npz.files
            if not k.endswith("#shape")
        }


EXPECTED_PAIRS = [  # (replicate, learned level, imp level, θ0)
    (0, 1, 1, "same"),
    (1, 1, 1, "differs"),
    (0, 3, 2, "same"),
    (1, 3, 2, "differs"),
]


def lt(store: Store, *args: str):
    result = CliRunner().invoke(results, [*args, "--store", str(store.root)])
    assert result.exit_code == 0, result.output
    return result


def test_compare_masks_prints_the_jaccard_of_each_pair_recomputed_from_the_stored_masks(store):
    result = lt(store, "compare", "imp", "learned", "--masks")
    text = result.stdout.split("\n\nmask overlap of learned's tickets with imp's:\n", 1)[1]
    table = text.split("\nnote:")[0].splitlines()
    assert table[0].split() == [
        "run", "replicate", "level", "imp", "level", "remaining", "%", "θ0", "layer",
        "Jaccard", "chance",
    ]  # fmt: skip
    rows = [line.split() for line in table[1:]]
    expected = []
    for replicate, level, imp_level, theta0 in EXPECTED_PAIRS:
        a = stored(store, "imp", replicate, imp_level)
        b = stored(store, "learned", replicate, level)
        pm = 100 * sum(m.sum() for m in b.values()) / sum(m.size for m in b.values())
        start = ["learned", str(replicate), str(level), str(imp_level), f"{pm:.1f}", theta0]
        whole = [np.concatenate([m[n] for n in sorted(a)]) for m in (a, b)]
        chance = numpy_chance([a[n] for n in sorted(a)], [b[n] for n in sorted(a)])
        expected.append([*start, "all", f"{numpy_jaccard(*whole):.4f}", f"{chance:.4f}"])
        for name in a:
            j, c = numpy_jaccard(a[name], b[name]), numpy_chance([a[name]], [b[name]])
            expected.append([*start, name.removesuffix("/kernel"), f"{j:.4f}", f"{c:.4f}"])
    assert rows == expected
    assert rows[2][:3] + rows[2][5:8] == ["learned", "0", "1", "same", "fc2", "1.0000"]
    assert rows[-1][-3:] == ["out", "1.0000", "1.0000"]  # `out` empty in both: they agree
    assert comparing.THETA0_NOTE in result.stdout  # replicate 1's θ0 differ
    assert {row[1] for row in rows} == {"0", "1"}  # imp has no replicate 2
    assert {row[2] for row in rows} == {"1", "3"}  # learned's level 2 pairs with nothing


def test_compare_masks_json_holds_the_exact_values(store):
    document = json.loads(lt(store, "compare", "imp", "learned", "--masks", "--json").stdout)
    first, second = document["runs"]
    assert "mask_overlap" not in first
    found = second["mask_overlap"]
    assert found["comparable"] and found["against"] == store.resolve("imp")
    got = [(p["replicate"], p["level"], p["against_level"], p["theta0"]) for p in found["pairs"]]
    assert got == EXPECTED_PAIRS
    for pair in found["pairs"]:
        a = stored(store, "imp", pair["replicate"], pair["against_level"])
        b = stored(store, "learned", pair["replicate"], pair["level"])
        assert list(pair["layers"]) == list(a)
        for name, layer in pair["layers"].items():
            assert layer["jaccard"] == pytest.approx(numpy_jaccard(a[name], b[name]), abs=1e-15)
            assert layer["intersection"] == int(np.sum(a[name] & b[name]))
            assert (layer["kept"], layer["against_kept"]) == (b[name].sum(), a[name].sum())
        whole = [np.concatenate(list(m.values())) for m in (a, b)]
        assert pair["overall"]["jaccard"] == pytest.approx(numpy_jaccard(*whole), abs=1e-15)
        assert round(pair["percent_remaining"], 1) == round(pair["against_percent_remaining"], 1)
    plain = json.loads(lt(store, "compare", "imp", "learned", "--json").stdout)
    assert "mask_overlap" not in plain["runs"][1]  # without --masks, as before


def test_runs_of_different_models_are_not_comparable(store):
    result = lt(store, "compare", "imp", "conv", "--masks")
    assert (
        "mask overlap of conv's tickets with imp's: masks are not comparable: their prunable "
        "layers differ (lenet300 and conv2)" in result.stdout
    )
    assert "Jaccard" not in result.stdout.split("mask overlap")[1].split("\n")[0]
    document = json.loads(lt(store, "compare", "imp", "conv", "--masks", "--json").stdout)
    found = document["runs"][1]["mask_overlap"]
    assert found["comparable"] is False and found["pairs"] == []


def test_the_report_holds_the_overlap_table_against_the_imp_run(store):
    ids = [store.resolve(name) for name in ("learned", "imp", "conv")]
    html = page.build(store, ids)
    assert '<a href="#overlap">Mask overlap with IMP</a>' in html
    section = html.split('<section id="overlap">', 1)[1].split("</section>", 1)[0]
    assert "<h4>learned against imp</h4>" in section
    assert "conv against" not in section  # its model's only IMP run: no reference
    head, *body = re.findall(r"<tr>(.*?)</tr>", section)
    assert re.findall(r"<th>([^<]*)</th>", head) == [
        "replicate", "level", "imp level", "remaining %", "θ0", "all", "chance",
        "fc1", "fc2", "out",
    ]  # fmt: skip
    rows = [re.findall(r"<td[^>]*>([^<]*)</td>", row) for row in body]
    expected = []
    for replicate, level, imp_level, theta0 in EXPECTED_PAIRS:
        a = stored(store, "imp", replicate, imp_level)
        b = stored(store, "learned", replicate, level)
        pm = 100 * sum(m.sum() for m in b.values()) / sum(m.size for m in b.values())
        whole = [np.concatenate([m[n] for n in a]) for m in (a, b)]
        chance = numpy_chance(list(a.values()), [b[n] for n in a])
        row = [str(replicate), str(level), str(imp_level), f"{pm:.1f}", theta0]
        row += [f"{numpy_jaccard(*whole):.4f}", f"{chance:.4f}"]
        expected.append(row + [f"{numpy_jaccard(a[n], b[n]):.4f}" for n in a])
    assert rows == expected
    assert section.count('<td class="differs">differs</td>') == 2
    assert comparing.THETA0_NOTE in section
    alone = page.build(store, ids[1:2])  # one run: nothing to compare
    assert 'id="overlap"' not in alone


def test_a_missing_theta0_is_unknown_and_said_so(store):
    result = lt(store, "compare", "imp", "no-init", "--masks")
    lines = result.stdout.split("mask overlap of no-init's tickets with imp's:\n", 1)[1]
    assert [line.split()[:6] for line in lines.splitlines()[1:5]] == [
        ["no-init", "0", "1", "1", "51.6", "unknown"]
    ] * 4
    assert comparing.THETA0_UNKNOWN in result.stdout and comparing.THETA0_NOTE not in result.stdout
