"""Transformers through the whole product: tiny ViT and GPT runs with IMP and controls,
text batching, N:M masks in the store, and the spec checks of the new fields."""

from __future__ import annotations

import math
import re
import sysconfig
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ltcli.core.errors import UsageError
from ltcli.experiment import spec
from ltcli.experiment.member import CellKey, Member
from ltcli.science import pruning
from ltcli.storage.store import Store
from ltcli.train import device_data, engine, launch
from ltcli.train.context import RunContext
from ltcli.train.summary import summarize

pytestmark = pytest.mark.unit

TINY_GPT = {"name": "gpt", "depth": 1, "width": 16, "heads": 2, "context": 8}
TINY_VIT = {"name": "vit", "depth": 1, "width": 16, "heads": 2, "patch_size": 4}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """About 12 KB of real text: the start of the standard library's textwrap.py."""
    source = Path(sysconfig.get_paths()["stdlib"]) / "textwrap.py"
    path = tmp_path_factory.mktemp("text") / "corpus.txt"
    path.write_text(source.read_text()[:12000])
    return path


def _train(iterations: int = 40) -> dict:
    return {
        "optimizer": "adamw",
        "lr": 3e-3,
        "weight_decay": 0.1,
        "batch_size": 8,
        "iterations": f"{iterations}it",
        "eval_every": "20it",
        "warmup": "10it",
        "schedule": "cosine",
        "clip_norm": 1.0,
    }


def gpt_spec(corpus: Path, **prune) -> spec.Spec:
    table = {
        "data": {"dataset": f"text:{corpus}", "validation": 8, "tokens": "chars"},
        "model": TINY_GPT,
        "train": _train(),
        "prune": {"rate": 0.5, **prune},
        "run": {"rounds": 2, "controls": "reinit:1,random:1"},
    }
    return spec.from_mapping("gpt", table)


def vit_spec(folder: Path, **prune) -> spec.Spec:
    table = {
        "data": {"dataset": f"folder:{folder}", "validation": 50},
        "model": TINY_VIT,
        "train": _train() | {"label_smoothing": 0.1},
        "prune": {"rate": 0.5, **prune},
        "run": {"rounds": 2, "controls": "reinit:1,random:1"},
    }
    return spec.from_mapping("vit", table)


def _only_documented_kernels_pruned(store: Store, run_id: str, level: int, kept: float) -> None:
    theta0 = store.load_weights(store.init_path(run_id, 0))["params"]
    for member in ("ticket", "reinit-0", "random-0"):
        key = CellKey(0, level, Member.parse(member))
        mask = pruning.flatten(store.read_mask(run_id, key, theta0))
        for name, m in mask.items():
            layer = name.split("/")[-2] if "/" in name else name
            if name.endswith("/kernel") and layer.startswith(("attn_", "mlp_")):
                assert m.sum() == pruning.kept_count(m.size, 0.5, level), (member, name)
            else:
                assert m.all(), f"{member}: {name} is pruned but is not a documented kernel"
        metrics = store.read_metrics(run_id, key)
        assert abs(metrics["percent_remaining"] - kept) < 1.0
        assert np.isfinite(metrics["min_val_loss"])


@pytest.mark.integration
def test_a_tiny_gpt_trains_imp_levels_with_controls_late_rewinding_and_copies(corpus, tmp_path):
    """One run for several members (each compile of a transformer costs seconds): IMP levels
    rewound to iteration 20 with reinit and random controls, stability copies and a copy
    spawned at 20."""
    loaded = spec.apply_overrides(
        gpt_spec(corpus, rewind_iter="20it"),
        {"run.controls": "reinit:1,random:1,stability:1", "run.spawn": ["20it"]},
    )
    store = Store(tmp_path / "store")
    run_id = launch.run(loaded, store)
    for level, kept in ((1, 50.0), (2, 25.0)):
        _only_documented_kernels_pruned(store, run_id, level, kept)
    dense = store.read_metrics(run_id, CellKey(0, 0, Member()))
    # bits per byte: the loss in bits over the bytes a character spans (ASCII here: 1)
    assert dense["min_val_bpb"] == pytest.approx(dense["min_val_loss"] / np.log(2), rel=1e-3)
    # 8 windows of context 8 of each split's 74 (600 characters), 8 targets each
    assert (dense["val_tokens"], dense["test_tokens"]) == (64, 64)
    # 66-symbol text: a model that learned anything beats the uniform log2(vocab) bits
    _, source = launch.prepare(gpt_spec(corpus))
    assert dense["min_val_bpb"] < np.log2(source.num_classes)
    ticket = store.read_metrics(run_id, CellKey(0, 1, Member()))
    copy = store.read_metrics(run_id, CellKey(0, 1, Member.parse("stability-0")))
    spawned = store.read_metrics(run_id, CellKey(0, 0, Member.parse("spawn-20")))
    assert ticket["start_iteration"] == 20 and copy["start_iteration"] == 20
    for metrics in (copy, spawned):
        assert np.isfinite(metrics["instability"]["instability"])


@pytest.mark.integration
def test_a_tiny_vit_trains_two_imp_levels_with_controls(class_folder, tmp_path):
    store = Store(tmp_path / "store")
    run_id = launch.run(vit_spec(class_folder), store)
    for level, kept in ((1, 50.0), (2, 25.0)):
        _only_documented_kernels_pruned(store, run_id, level, kept)


@pytest.mark.integration
def test_an_n_m_pattern_holds_in_every_stored_mask(corpus, tmp_path):
    store = Store(tmp_path / "store")
    run_id = launch.run(gpt_spec(corpus, pattern="2:4"), store)
    theta0 = store.load_weights(store.init_path(run_id, 0))["params"]
    previous = None
    for level, keep in ((1, 3), (2, 2)):
        for member in ("ticket", "reinit-0", "random-0"):
            key = CellKey(0, level, Member.parse(member))
            flat = pruning.flatten(store.read_mask(run_id, key, theta0))
            for name, m in flat.items():
                if pruning.layer_kind(name):
                    groups = np.moveaxis(m, -2, -1).reshape(*m.shape[:-2], m.shape[-1], -1, 4)
                    assert (groups.sum(-1) == keep).all(), (level, member, name)
            if member == "ticket":
                if previous is not None:  # each mask inside the last
                    assert all((flat[n] <= previous[n]).all() for n in flat)
                previous = flat


def _text_engine(corpus: Path) -> tuple[engine.Engine, device_data.DeviceData, RunContext]:
    loaded = gpt_spec(corpus)
    desc, source = launch.prepare(loaded)
    run = RunContext(Store(corpus.parent / "unused"), desc, source)
    return run.engine, run.data, run


def test_text_batches_are_a_pure_function_of_the_stream_and_t(corpus):
    key = jax.random.key(3)
    whole = device_data.window_starts(key, jnp.asarray(0), 10, 8, 1000)
    later = device_data.window_starts(key, jnp.asarray(6), 4, 8, 1000)
    np.testing.assert_array_equal(whole[6:], later)
    other = device_data.window_starts(jax.random.key(4), jnp.asarray(0), 10, 8, 1000)
    assert not np.array_equal(whole, other)
    assert int(whole.max()) < 1000 and int(whole.min()) >= 0


@pytest.mark.integration
def test_text_training_resumed_at_t_is_the_uninterrupted_training(corpus):
    eng, data, run = _text_engine(corpus)
    eng = eng.__class__(**{**eng.__dict__, "grouping": "serial", "deterministic": True})

    def fresh():
        params, stats = eng.init(jax.random.key(0), run.input_shape)
        mask = pruning.dense_mask(params)
        return eng.start([params], [stats], [mask], [jax.random.PRNGKey(1)])

    straight, curve = eng.segment(fresh(), 0, 2, data)
    first, a = eng.segment(fresh(), 0, 1, data)
    # what a checkpoint at t = 20 holds, back on the device as a restored run puts it
    restored = jax.tree.map(jnp.asarray, jax.device_get(first))
    second, b = eng.segment(restored, 20, 1, data)
    np.testing.assert_array_equal(np.asarray(curve), np.concatenate([a, b], axis=1))
    for x, y in zip(jax.tree.leaves(straight.params), jax.tree.leaves(second.params), strict=True):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(np.asarray(a), np.asarray(b))  # it did train on


def test_text_windows_read_inputs_and_next_tokens(corpus):
    eng, data, _ = _text_engine(corpus)
    ids = jnp.asarray([0, 5, 17])
    x, y = eng.train_batch(data, ids, None)
    stream = np.asarray(data.x_train)
    for row, start in enumerate([0, 5, 17]):
        np.testing.assert_array_equal(x[row], stream[start : start + 8])
        np.testing.assert_array_equal(y[row], stream[start + 1 : start + 9])
    assert eng.examples(data) == len(stream) - 8


@pytest.mark.parametrize(
    "fields,names",
    [
        ({"prune": {"pattern": "2:4", "strategy": "global"}}, "prune.strategy"),
        ({"prune": {"pattern": "2:4", "one_shot": [30]}}, "prune.one_shot"),
        ({"model": {**TINY_GPT, "heads": 3}}, "model.heads"),
        ({"model": {**TINY_GPT, "patch_size": 4}}, "patch_size"),
        ({"model": {"name": "vit"}}, "data.dataset"),
        ({"train": {**_train(), "lr_drops": ["20it"]}}, "train.lr_drops"),
        ({"prune": {"rate": 0.5, "retrain": "finetune"}}, "prune.retrain"),  # cosine ends at 0
        ({"train": {**_train(), "augment": True}}, "train.augment"),
    ],
)
def test_combinations_that_mean_nothing_are_refused(corpus, fields, names):
    table = {
        "data": {"dataset": f"text:{corpus}", "validation": 8},
        "model": TINY_GPT,
        "train": _train(),
        "prune": {"rate": 0.5},
    }
    for section, values in fields.items():
        table[section] = values if section == "model" else {**table[section], **values}
    with pytest.raises(UsageError, match=re.escape(names)):
        launch.prepare(spec.from_mapping("bad", table))


def test_more_imp_rounds_than_the_pattern_allows_are_refused(corpus, tmp_path):
    loaded = spec.apply_overrides(gpt_spec(corpus, pattern="2:4"), {"run.rounds": 3})
    with pytest.raises(UsageError, match=r"run\.rounds"):
        launch.run(loaded, Store(tmp_path / "store"))
    assert not (tmp_path / "store").exists() or not any((tmp_path / "store").rglob("*.json"))


def test_a_cnn_takes_no_transformer_fields(class_folder):
    table = {"data": {"dataset": f"folder:{class_folder}", "validation": 50}}
    table["model"] = {"name": "lenet300", "depth": 3}
    with pytest.raises(UsageError, match=r"model\.depth"):
        launch.prepare(spec.from_mapping("bad", table))


@pytest.mark.integration
def test_a_gpt_takes_pruning_at_initialization_and_its_ablations(corpus, tmp_path):
    loaded = spec.apply_overrides(
        gpt_spec(corpus, method="snip", strategy="global", one_shot=[30.0]),
        {"run.controls": "invert:1,shuffle:1"},
    )
    store = Store(tmp_path / "store")
    run_id = launch.run(loaded, store)
    cells = {
        m: store.read_metrics(run_id, CellKey(0, 1, Member.parse(m)))
        for m in ("ticket", "invert-0", "shuffle-0")
    }
    for metrics in cells.values():
        assert metrics["percent_remaining"] == pytest.approx(30.0, abs=0.1)
        assert np.isfinite(metrics["min_val_loss"])
    assert len(cells["ticket"]["scored_on"]) == 8  # one training batch of windows


@pytest.mark.parametrize(
    "overrides,names",
    [
        ({"data.placement": "stream"}, "data.placement"),
        ({"run.parallel": "batch", "run.deterministic": True}, "--parallel batch"),
    ],
)
def test_ways_of_training_that_cannot_hold_are_refused_before_anything_is_written(
    corpus, tmp_path, overrides, names
):
    store = tmp_path / "store"
    with pytest.raises(UsageError, match=re.escape(names)):
        launch.run(spec.apply_overrides(gpt_spec(corpus), overrides), Store(store))
    assert not list(store.rglob("*.json"))


def test_n_m_patterns_are_one_run_however_written(corpus):
    a, _ = launch.prepare(gpt_spec(corpus, pattern="2:4"))
    b, _ = launch.prepare(gpt_spec(corpus, pattern="02:004"))
    assert a.run_id == b.run_id and a["prune.pattern"] == "2:4"


def test_bits_per_byte_count_the_bytes_of_the_tokens_evaluated():
    """Chars of 1 and 3 UTF-8 bytes: only the targets of the evaluated windows count."""
    from ltcli.data.sources import TextArrays

    widths = np.asarray([1, 3])
    validation = np.asarray([0, 0, 0, 1, 1, 1, 1, 1, 1])  # 4 windows of 2 + 1: from 0, 2, 4, 6
    test = np.asarray([1, 1, 1, 0, 0, 0, 0])  # 3 windows: from 0, 2, 4
    arrays = TextArrays(np.zeros(4, np.int32), validation, test, widths)
    # two windows: the middle one of each half; validation from 2 and 6: targets [1, 1] and
    # [1, 1]; test from 0 and 4 (windows 0 and 2 of 3): [1, 1] and [0, 0]
    assert device_data.text_scored(arrays, windows=2, context=2) == ((4, 4), (12, 8))
    # one window, the middle one: validation from 4 ([1, 1]), test from 2 ([0, 0])
    assert device_data.text_scored(arrays, windows=1, context=2) == ((2, 2), (6, 2))


@pytest.mark.integration
def test_bits_per_byte_are_the_scored_windows_loss_in_bits_over_their_bytes(tmp_path):
    """A tiny GPT trained 20 steps on characters of 1, 2 and 3 UTF-8 bytes: its bits per byte
    are the next-token loss (float64, from its logits) summed over the targets of the two
    windows scored, the middle one of each half of the split, in bits, over their bytes."""
    rng = np.random.default_rng(0)
    corpus = "".join(rng.choice(list("ab cé€\n"), 4000))
    path = tmp_path / "corpus.txt"
    path.write_text(corpus, encoding="utf-8", newline="")
    desc, source = launch.prepare(spec.apply_overrides(gpt_spec(path), {"data.validation": 2}))
    run = RunContext(Store(tmp_path / "unused"), desc, source)
    eng, data = run.engine, run.data
    params, stats = eng.init(jax.random.key(0), run.input_shape)
    group = eng.start([params], [stats], [pruning.dense_mask(params)], [jax.random.PRNGKey(1)])
    group, curve = eng.segment(group, 0, 1, data)
    summary = summarize(np.asarray(curve)[0], 20, 0, run.scored)
    trained = jax.tree.map(lambda x: np.asarray(x[0]), group.params)

    ids = {c: i for i, c in enumerate(sorted(set(corpus)))}
    val, test = corpus[3600:3800], corpus[3800:]  # 90/5/5 of 4000
    for name, piece in (("val", val), ("test", test)):
        windows = (len(piece) - 1) // 8  # 24 windows of 8 + 1, one every 8 characters
        chunks = [piece[8 * w : 8 * w + 9] for w in (windows // 4, 3 * windows // 4)]
        x = np.asarray([[ids[c] for c in chunk] for chunk in chunks], np.int32)
        logits = np.asarray(run.model.apply({"params": trained}, x[:, :-1], train=False))
        logits = logits.astype(np.float64)
        log_p = logits - logits.max(-1, keepdims=True)
        log_p -= np.log(np.exp(log_p).sum(-1, keepdims=True))
        nats = -np.take_along_axis(log_p, x[:, 1:, None], -1).sum()
        scored_bytes = sum(len(c.encode()) for chunk in chunks for c in chunk[1:])
        bpb = summary["min_val_bpb" if name == "val" else "final_test_bpb"]
        assert bpb == pytest.approx(nats / math.log(2) / scored_bytes, rel=1e-5), name
        assert (summary[f"{name}_tokens"], summary[f"{name}_bytes"]) == (16, scored_bytes)
