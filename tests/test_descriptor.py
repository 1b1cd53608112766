"""Run ids: content hashes of the resolved descriptor, stable across processes and edits
that do not change results."""

from __future__ import annotations

import gzip
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ltcli.core.errors import UsageError
from ltcli.data import DataSource, idx
from ltcli.experiment import descriptor, spec

pytestmark = pytest.mark.unit

FAKE = DataSource("mnist", "0" * 64, 60000, (28, 28, 1), 10, "nowhere", loader=lambda: None)


def resolve(name: str = "mnist-lenet", **overrides) -> descriptor.Descriptor:
    return descriptor.resolve(spec.apply_overrides(spec.load(name), overrides), FAKE)


def test_mnist_lenet_hash_is_pinned():
    # Changing this hash orphans every stored run: only do it with a schema change.
    desc = resolve()
    assert desc.hashed == {
        "schema": 1,
        "data": {"content": "0" * 64, "validation": 5000},
        "model": {"name": "lenet300"},
        "train": {
            "optimizer": "adam",
            "lr": 0.0012,
            "batch_size": 60,
            "iterations": 50000,
            "eval_every": 100,
            "seed": 0,
        },
        "prune": {"strategy": "layerwise", "rates": {"fc": 0.2, "output": 0.1}},
    }
    assert desc.run_id == "e4646d69479ec75865212848a3d5b9506331471a1267e54cc547fc56671c8789"


@pytest.mark.system
def test_same_id_in_a_fresh_process():
    code = (
        "from ltcli.experiment import descriptor, spec; from ltcli.data import DataSource;"
        "src = DataSource('mnist', '0'*64, 60000, (28, 28, 1), 10, 'x', loader=None);"
        "print(descriptor.resolve(spec.load('mnist-lenet'), src).run_id)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == resolve().run_id


@pytest.mark.system
def test_resolving_checks_exclusions_without_loading_jax():
    """A rerun resolves its descriptor; for ResNet-20 (which excludes its shortcuts) that
    must not import JAX either."""
    code = (
        "import sys; from ltcli.experiment import descriptor, spec;"
        "from ltcli.data import DataSource;"
        "src = DataSource('cifar10', '0'*64, 50000, (32, 32, 3), 10, 'x', loader=None);"
        "desc = descriptor.resolve(spec.load('cifar10-resnet20'), src);"
        "print(desc['prune.exclude'], 'jax' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "['*shortcut', 'out'] False"


def test_reordered_fields_give_the_same_id(tmp_path: Path):
    original = spec.find("mnist-lenet").read_text()
    sections = original.split("\n[")
    head, body = sections[0], ["[" + s for s in sections[1:]]
    shuffled = "\n".join(
        "\n".join([block.splitlines()[0], *reversed(block.splitlines()[1:])])
        for block in reversed(body)
    )
    path = tmp_path / "mnist-lenet.toml"
    path.write_text(head + "\n" + shuffled)
    assert descriptor.resolve(spec.load(str(path)), FAKE).run_id == resolve().run_id


@pytest.mark.parametrize(
    "key, value", [("run.rounds", 3), ("run.replicates", 9), ("run.controls", "reinit:2")]
)
def test_plan_fields_do_not_change_the_id(key: str, value):
    assert resolve(**{key: value}).run_id == resolve().run_id


@pytest.mark.parametrize(
    "key, value",
    [("train.lr", 1e-3), ("train.seed", 1), ("prune.rate", 0.3), ("train.iterations", "100ep")],
)
def test_result_fields_change_the_id(key: str, value):
    assert resolve(**{key: value}).run_id != resolve().run_id


def test_neutral_values_of_newer_fields_keep_the_id():
    assert resolve(**{"train.weight_decay": 0.0, "train.augment": False}).run_id == resolve().run_id
    assert resolve(**{"train.weight_decay": 1e-4}).run_id != resolve().run_id


def test_epochs_are_normalized_to_iterations():
    # 55,000 training examples / 60 per batch = 916.67: an epoch is 917 whole steps.
    desc = resolve(**{"train.iterations": "60ep", "train.eval_every": "1ep"})
    assert (desc["train.iterations"], desc["train.eval_every"]) == (60 * 917, 917)
    assert desc.run_id == resolve(**{"train.iterations": 55020, "train.eval_every": 917}).run_id
    with pytest.raises(UsageError, match=r"train.eval_every: must divide .*55020.*got 1000"):
        resolve(**{"train.iterations": "60ep", "train.eval_every": 1000})


def test_output_rate_is_half_the_hidden_rate_unless_set():
    assert resolve(**{"prune.rate": 0.4})["prune.rates"] == {"fc": 0.4, "output": 0.2}
    assert resolve(**{"prune.output_rate": 0.3})["prune.rates"] == {"fc": 0.2, "output": 0.3}


@pytest.mark.parametrize(
    "key, value, field",
    [
        ("prune.rewind_iter", "60000it", "prune.rewind_iter"),
        ("prune.rewind_iter", "150it", "prune.rewind_iter"),
        ("train.eval_every", "300it", "train.eval_every"),
        ("data.validation", 60000, "data.validation"),
    ],
)
def test_inconsistent_fields_are_rejected(key: str, value, field: str):
    with pytest.raises(UsageError, match=field):
        resolve(**{key: value})


def test_dropout_is_rejected_only_for_models_without_it():
    assert resolve(**{"model.dropout": 0.5})["model.dropout"] == 0.5
    with pytest.raises(UsageError, match=r"model\.dropout: resnet20 has no dropout"):
        resolve(**{"model.name": "resnet18", "model.dropout": 0.5})


def test_same_files_in_two_places_give_one_content_id(tmp_path: Path, real_data):
    dataset, folder = real_data
    gz, raw = tmp_path / "gz", tmp_path / "raw"
    gz.mkdir(), raw.mkdir()
    for name in idx.FILES:
        shutil.copy(folder / f"{name}.gz", gz / f"{name}.gz")
        with gzip.open(folder / f"{name}.gz") as src, open(raw / name, "wb") as dst:
            shutil.copyfileobj(src, dst)
    assert idx.locate(dataset, gz).content_id == idx.locate(dataset, raw).content_id
    assert idx.locate(dataset, gz).content_id in idx.KNOWN_CONTENT


def test_a_one_shot_target_below_the_excluded_layers_is_bad_input():
    cifar = DataSource("cifar10", "0" * 64, 50000, (32, 32, 3), 10, "x", loader=lambda: None)
    resnet = spec.load("cifar10-resnet20")
    # ResNet-20 keeps its output layer (640) and shortcuts (2,560) of 270,896 dense: 1.18%.
    with pytest.raises(UsageError, match=r"prune.one_shot: 1.0 .* lowest reachable is 1.182"):
        descriptor.resolve(spec.apply_overrides(resnet, {"prune.one_shot": 1.0}), cifar)
    reachable = spec.apply_overrides(resnet, {"prune.one_shot": 1.2})
    assert descriptor.resolve(reachable, cifar)["prune.one_shot"] == 1.2


# -- prune.score_mode: only snip and grasp, new ids only at the new default ----------------

CIFAR = DataSource("cifar10", "0" * 64, 50000, (32, 32, 3), 10, "x", loader=lambda: None)
SNIP = {"prune.method": "snip", "prune.strategy": "global", "prune.one_shot": 20.0}

# Run ids computed before prune.score_mode existed: they must not move.
IDS_BEFORE = {
    ("mnist-lenet", "snip"): "92da5438ec6d964adb775d7dc499a14f3c6f07ae193a019a782e6b0d6a091bd4",
    ("at-init", "snip"): "0c644f1daa30c5274db61e4851999e86466c93bc49976c285fdbff7d43720661",
    ("at-init", "grasp"): "96639d76df03aae7870ddbfda8b0951fe89fb4a24e8838101a2eab770e364355",
    ("at-init", "synflow"): "ce092dcafa1ee826e7db8824c7185ebc8d4ebac70c542516a4658ba7d8bfccd7",
    ("at-init", "magnitude-init"): (
        "31e7a3d1433abe7013e2d93ab35c9a1e4c13fd7e47dc25cc767591be30febd72"
    ),
    ("cifar10-resnet20", "magnitude"): (
        "adbe5da26ac80cc4398c3790d9bcfee473a3be4568bb3a58021d133b9f41f50a"
    ),
}


def resolve_cifar(name: str, **overrides) -> descriptor.Descriptor:
    return descriptor.resolve(spec.apply_overrides(spec.load(name), overrides), CIFAR)


@pytest.mark.parametrize("mode", ["eval", "train"])
@pytest.mark.parametrize(
    "name, method",
    [
        ("cifar10-resnet20", "magnitude"),
        ("cifar10-resnet20-at-init", "synflow"),
        ("cifar10-resnet20-at-init", "magnitude-init"),
        ("cifar10-resnet20-at-init", "random"),
    ],
)
def test_score_mode_leaves_other_methods_ids_alone(name, method, mode):
    desc = resolve_cifar(name, **{"prune.method": method, "prune.score_mode": mode})
    assert "score_mode" not in desc.full["prune"] and "score_mode" not in desc.hashed["prune"]
    assert desc.full["schema"] == 2  # augmentation's change, not the scoring mode's
    assert desc.run_id == resolve_cifar(name, **{"prune.method": method}).run_id
    assert desc.get("prune.score_mode") is None
    key = ("at-init" if name.endswith("at-init") else name, method)
    if key in IDS_BEFORE:
        assert desc.run_id == IDS_BEFORE[key]


def test_magnitude_ignores_score_mode():
    for mode in ("eval", "train"):
        assert resolve(**{"prune.score_mode": mode}).run_id == resolve().run_id
    assert "score_mode" not in resolve().full["prune"]


@pytest.mark.parametrize("method", ["snip", "grasp"])
def test_train_mode_keeps_the_id_from_before_and_eval_mode_is_a_new_run(method):
    train = resolve_cifar(
        "cifar10-resnet20-at-init", **{"prune.method": method, "prune.score_mode": "train"}
    )
    default = resolve_cifar("cifar10-resnet20-at-init", **{"prune.method": method})
    assert train.run_id == IDS_BEFORE["at-init", method]
    assert "score_mode" not in train.hashed["prune"]  # neutral: as before the field
    assert train.full["prune"]["score_mode"] == "train" and train.full["schema"] == 2
    assert default["prune.score_mode"] == "eval" and default.full["schema"] == 3
    assert default.hashed["prune"]["score_mode"] == "eval"
    assert default.run_id != train.run_id
    # The eval run's hashed form is the old one plus the mode and the new schema.
    old = dict(default.hashed, schema=2, prune=dict(default.hashed["prune"]))
    del old["prune"]["score_mode"]
    assert old == train.hashed


def test_schema_3_only_for_snip_and_grasp_in_eval_mode():
    """mnist-lenet has no augmentation: schema 1, unless the new scoring mode applies, which
    it cannot on a network without batch norm and dropout: such runs keep their ids."""
    snip_train = resolve(**SNIP, **{"prune.score_mode": "train"})
    assert snip_train.full["schema"] == 1
    assert snip_train.run_id == IDS_BEFORE["mnist-lenet", "snip"]
    assert resolve(**SNIP).run_id == snip_train.run_id  # LeNet: eval and train score alike
    assert "score_mode" not in resolve(**SNIP).full["prune"]
    dropout = resolve(**SNIP, **{"model.dropout": 0.5})
    assert dropout.full["schema"] == 3 and dropout["prune.score_mode"] == "eval"
    assert (
        dropout.run_id
        != resolve(**SNIP, **{"model.dropout": 0.5, "prune.score_mode": "train"}).run_id
    )
    for method in ("synflow", "magnitude-init", "random"):
        assert resolve(**dict(SNIP, **{"prune.method": method})).full["schema"] == 1
    assert resolve().full["schema"] == 1
    assert descriptor.SCHEMA == 6
    # A stored snip run from before the field (no score_mode: training mode) can still be
    # reached (with prune.score_mode = "train"), so it is not outdated.
    resnet_train = resolve_cifar(
        "cifar10-resnet20-at-init", **{"prune.method": "snip", "prune.score_mode": "train"}
    )
    before = {k: v for k, v in resnet_train.full["prune"].items() if k != "score_mode"}
    assert descriptor.outdated({"full": dict(resnet_train.full, prune=before)}) is None
    resnet_eval = resolve_cifar("cifar10-resnet20-at-init", **{"prune.method": "snip"})
    eval_as_schema_1 = {"full": dict(resnet_eval.full, schema=1)}
    assert "SNIP and GraSP scored in training mode" in descriptor.outdated(eval_as_schema_1)


def test_outdated_reads_descriptors_from_before_method_and_retrain_existed():
    old = resolve(**{"prune.rewind_iter": 500})
    prune = {k: v for k, v in old.full["prune"].items() if k not in ("method", "retrain")}
    record = {"full": dict(old.full, prune=prune, schema=1)}
    assert "restarted at step 0" in descriptor.outdated(record)


def test_late_rewinding_re_identifies_at_init_runs_except_random():
    at_init = {"prune.rewind_iter": 500, "prune.strategy": "global", "prune.one_shot": 20.0}
    for method, changed in (("snip", True), ("synflow", True), ("random", False)):
        desc = resolve(**at_init, **{"prune.method": method})
        assert (desc.full["schema"] == 4) == changed, method


def test_finetuning_with_a_drop_at_the_end_is_refused():
    with pytest.raises(UsageError, match=r"train\.lr_drops: a drop at T"):
        resolve(**{"prune.retrain": "finetune", "train.lr_drops": ["50000it"]})
    resolve(**{"prune.retrain": "finetune", "train.lr_drops": ["40000it"]})
    resolve(**{"train.lr_drops": ["50000it"]})  # rewinding never steps at T


@pytest.mark.parametrize("value", ["foo", "Eval", 1, ""])
def test_a_bad_score_mode_is_bad_input(value):
    with pytest.raises(UsageError, match=r"prune\.score_mode: must be eval or train"):
        resolve(**SNIP, **{"prune.score_mode": value})


def test_score_mode_set_from_the_command_line_syntax():
    key, value = spec.parse_assignment("prune.score_mode=train")
    assert resolve(**SNIP, **{key: value}).run_id == IDS_BEFORE["mnist-lenet", "snip"]
    key, value = spec.parse_assignment("prune.score_mode=foo")
    with pytest.raises(UsageError, match=r"prune\.score_mode"):
        resolve(**SNIP, **{key: value})


def test_both_scoring_modes_draw_their_examples_by_the_same_id():
    train = resolve_cifar(
        "cifar10-resnet20-at-init", **{"prune.method": "snip", "prune.score_mode": "train"}
    )
    default = resolve_cifar("cifar10-resnet20-at-init", **{"prune.method": "snip"})
    assert default.run_id != train.run_id
    key = "prune.score_mode"
    assert descriptor.id_at_neutral(default.full, key) == train.run_id
    assert descriptor.id_at_neutral(train.full, key) == train.run_id
    assert descriptor.id_at_neutral(resolve().full, key) == resolve().run_id


def test_adam_betas_enter_the_id_only_away_from_their_defaults():
    assert resolve(**{"train.beta1": 0.9, "train.beta2": 0.999}).run_id == resolve().run_id
    changed = resolve(**{"train.beta2": 0.99})
    assert changed.run_id != resolve().run_id and changed.hashed["train"]["beta2"] == 0.99


@pytest.mark.parametrize(
    "overrides, field",
    [
        ({"train.optimizer": "sgd", "train.beta2": 0.99}, "train.beta2"),
        ({"train.optimizer": "sgd", "train.beta1": 0.5}, "train.beta1"),
        ({"train.optimizer": "adam", "train.momentum": 0.9}, "train.momentum"),
        ({"train.optimizer": "adamw", "train.momentum": 0.9}, "train.momentum"),
    ],
)
def test_an_optimizer_field_the_optimizer_does_not_have_is_refused(overrides, field):
    with pytest.raises(UsageError, match=field):
        resolve(**overrides)


def test_vit_runs_from_before_vit_jaxs_gelu_and_dropout_sites_are_re_identified():
    cifar = DataSource("cifar10", "1" * 64, 50000, (32, 32, 3), 10, "nowhere", loader=None)
    desc = descriptor.resolve(spec.load("cifar10-vit"), cifar)
    assert desc.hashed["schema"] == 6 == descriptor.SCHEMA
    older = {**desc.full, "schema": 2}
    assert "vit's MLP used the exact GELU" in descriptor.outdated({"full": older})
    assert resolve().hashed["schema"] == 1  # other models keep their ids


def test_schema_5_re_identifies_text_runs_only():
    """Text runs scored the first data.validation windows of each split before schema 5 (now
    windows spread over it): their ids change and stored ones read as outdated; image runs,
    transformers among them, keep their schema and id."""
    stdlib = DataSource("python-stdlib", "1" * 64, 4_000_000, (), 166, "x", lambda: None, text=True)
    gpt = descriptor.resolve(spec.load("text-gpt"), stdlib)
    assert gpt.full["schema"] == 5
    before = dict(gpt.full, schema=1)
    assert gpt.run_id != descriptor.run_id(descriptor.hashed_form(before))
    assert "scored the first data.validation windows" in descriptor.outdated({"full": before})
    assert descriptor.outdated({"full": gpt.full}) is None
    assert resolve_cifar("cifar10-vit").full["schema"] == 6  # vit_jax's GELU, not text


@pytest.mark.parametrize(
    "name, dataset, run_id",
    [
        (
            "cifar10-conv2",
            "cifar10",
            "45e13a78b2594d56987abf305fa489bea3eecb54d0a891533135f5e247f79b4c",
        ),
        (
            "cifar10-resnet20",
            "cifar10",
            "67c6cf3f5d5ddea8846cb24436bb3bcb38fa51974dc766a873db516424d7b04a",
        ),
        (
            "cifar10-vgg19-warmup",
            "cifar10",
            "26e2210089cda8ebd69330994657046f803a91343788059474003f2726fb948c",
        ),
        (
            "mnist-lenet-at-init",
            "mnist",
            "be441061e6c909950eac0eec2cd01824609da84fcc5dfc10666f4e62b02ce158",
        ),
    ],
)
def test_preset_run_ids_are_the_ids_they_had(name, dataset, run_id):
    """Ids computed by lt before the house moved (fields, engine, renames): a preset's
    stored runs stay reachable. Changing one orphans those runs: only with a schema change."""
    shape = (28, 28, 1) if dataset == "mnist" else (32, 32, 3)
    source = DataSource(
        dataset,
        "0" * 64 if dataset == "mnist" else "1" * 64,
        60000 if dataset == "mnist" else 50000,
        shape,
        10,
        "x",
        loader=None,
    )
    assert descriptor.resolve(spec.load(name), source).run_id == run_id
