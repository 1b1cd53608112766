"""Run descriptors: a spec fully resolved, canonically serialized, and hashed into a run id.

The descriptor holds only what changes results: the data by content, the model, the
training and pruning hyperparameters (durations in iterations), and the schema version. How
many rounds, replicates or controls were asked for, the store, the alias, the device and
verbosity stay out, so asking for more rounds extends the same run.

Schema evolution: a field whose value means "the behaviour from before this field existed"
(`NEUTRAL`) is left out of the hashed form, so adding a field never orphans stored runs. A
field that does not apply to a run is left out of the descriptor altogether
(``train.lr_drop_factor`` without drops, ``prune.score_mode`` for methods that score no
data), so its value never re-identifies a run it cannot change.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from collections.abc import Callable
from typing import Any

import orjson

from ltcli import models
from ltcli.core.errors import UsageError
from ltcli.data import DataSource
from ltcli.experiment import combinations, criterion_spec, sparse_spec
from ltcli.experiment.field_types import ALWAYS_HASHED
from ltcli.experiment.fields import FIELDS, UNHASHED_SECTIONS
from ltcli.experiment.spec import Spec
from ltcli.science import pruning
from ltcli.science.methods import DATA_METHODS, TRAINS_TO_TARGET

SCHEMA = 6
"""The newest schema. A run's descriptor carries the oldest schema whose behaviour it shares
(`schema_of`), so a change of behaviour re-identifies only the runs it affects."""

BEHAVIOUR_CHANGES: dict[int, tuple[str, Callable[[dict[str, Any]], bool]]] = {
    2: (
        "a cell rewound to θk restarted at step 0 and trained T more steps (now it resumes "
        "the schedule, data order and curves at k), and augmentation padded normalized "
        "images with the mean colour (now raw images with black)",
        lambda full: full["prune"]["rewind_iter"] > 0 or full["train"]["augment"],
    ),
    3: (
        "SNIP and GraSP scored in training mode (now eval by default)",
        # Only snip and grasp runs carry the field; a stored one without it scored in
        # training mode, as a run with prune.score_mode = "train" still does.
        lambda full: full["prune"].get("score_mode", "train") == "eval",
    ),
    4: (
        "pruning at initialization with late rewinding scored θ0 and trained from θk (now it "
        "scores θk, the network it trains), and one-shot levels after the first retrained "
        "by lr-rewind or finetune from the previous level's weights (now from level 0's, "
        "the network their mask was pruned from)",
        lambda full: (
            (
                # random scores ignore the weights: θ0 and θk give it the same masks
                (full["prune"].get("method", "magnitude") not in ("magnitude", "random"))
                and full["prune"]["rewind_iter"] > 0
            )
            or (
                len(one_shot_targets(full)) > 1
                and full["prune"].get("retrain", "rewind") != "rewind"
            )
        ),
    ),
    5: (
        "text evaluation scored the first data.validation windows of each of validation and "
        "test (now as many spread evenly over the whole split)",
        # Only text runs carry data.tokens (a text data set's token unit). Conservative: a
        # text run whose splits hold no more windows than data.validation scored them all
        # before too, but the descriptor does not record the splits' sizes to tell.
        lambda full: "tokens" in full["data"],
    ),
    6: (
        "vit's MLP used the exact GELU and dropout fell on the attention probabilities "
        "instead of the MLP's hidden units (now vit_jax's tanh GELU and dropout sites)",
        lambda full: full["model"]["name"] == "vit",
    ),
}
"""Schema version -> (what changed, which descriptors it affects)."""

NEUTRAL: dict[str, Any] = {
    key: field.neutral for key, field in FIELDS.items() if field.neutral is not ALWAYS_HASHED
}
"""Values that reproduce the behaviour from before the field existed: omitted when hashed."""


def one_shot_targets(full: dict[str, Any]) -> tuple[float, ...]:
    """A descriptor's one-shot targets, largest first; empty for iterative pruning. (A
    single target is stored as a number, as before lists existed, so its id is unchanged.)"""
    stored = full["prune"]["one_shot"]
    if stored is None:
        return ()
    return tuple(float(t) for t in (stored if isinstance(stored, list) else [stored]))


def schema_of(full: dict[str, Any]) -> int:
    """The newest schema whose behaviour change affects this run, else 1."""
    return max([1, *(v for v, (_, affected) in BEHAVIOUR_CHANGES.items() if affected(full))])


def outdated(record: dict[str, Any]) -> str | None:
    """Why a stored descriptor record was made under an older behaviour that lt no longer
    runs (its id can no longer be reached from a spec), or None."""
    full = record["full"]
    try:
        current = schema_of(full)
    except KeyError:  # not a descriptor lt wrote
        return None
    stored = full.get("schema", 1)
    if stored >= current:
        return None
    return (
        f"made by an older lt (schema {stored}): before schema {current}, "
        + (BEHAVIOUR_CHANGES[current][0])
    )


@dataclasses.dataclass(frozen=True)
class Descriptor:
    """A resolved run: `full` (every field, readable) and `hashed` (what the id covers)."""

    full: dict[str, Any]
    hashed: dict[str, Any]

    @property
    def run_id(self) -> str:
        return run_id(self.hashed)

    def __getitem__(self, key: str) -> Any:
        section, _, name = key.partition(".")
        return self.full[section][name]

    def get(self, key: str, default: Any = None) -> Any:
        """The field `key`, or `default` where the descriptor leaves it out because it does
        not apply (``train.lr_drop_factor`` without drops, ``prune.score_mode`` for a method
        other than snip and grasp)."""
        section, _, name = key.partition(".")
        return self.full.get(section, {}).get(name, default)


def id_at_neutral(full: dict[str, Any], key: str) -> str:
    """The run id `full` would have with field `key` at its `NEUTRAL` value (the behaviour
    from before the field existed): what a draw that must not depend on the field is keyed
    by (SNIP's and GraSP's examples are the same in both scoring modes)."""
    section, name = key.split(".")
    other = {s: dict(v) if isinstance(v, dict) else v for s, v in full.items()}
    if name in other.get(section, {}):
        other[section][name] = NEUTRAL[key]
    other["schema"] = schema_of(other)
    return run_id(hashed_form(other))


def canonical(value: Any) -> bytes:
    """Canonical JSON: sorted keys, no whitespace, shortest round-trip floats (orjson)."""
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


def run_id(hashed: dict[str, Any]) -> str:
    """The sha256 (hex) of the canonical hashed form."""
    return hashlib.sha256(canonical(hashed)).hexdigest()


def _rates(spec: Spec, kinds: tuple[str, ...]) -> dict[str, float]:
    rate = spec["prune.rate"]
    if spec["prune.strategy"] == "global":
        return {"global": rate}
    defaults = {
        "fc": rate,
        "conv": spec["prune.conv_rate"] or rate,
        "output": spec["prune.output_rate"] or rate / 2,
        "attn": spec["prune.attn_rate"] or rate,
        "mlp": spec["prune.mlp_rate"] or rate,
    }
    return {kind: defaults[kind] for kind in kinds}


def _checked_exclude(
    spec: Spec, model_name: str, source: DataSource, arch: dict[str, Any]
) -> list[str]:
    """The exclusion patterns, sorted, each checked to match a prunable layer of the model,
    and at least one prunable layer left to prune."""
    patterns = sorted(set(spec["prune.exclude"]))
    if not patterns:
        return []
    kernels = models.get(model_name).kernels
    if arch:  # a transformer's layers depend on its depth: trace the one the spec builds
        traced = models.abstract_variables(model_name, source.image_shape, source.num_classes, arch)
        kernels = tuple(pruning.leaves(traced["params"]))
    every = pruning.prunable_names(kernels)
    for pattern in patterns:
        _check(
            bool(set(every) - set(pruning.prunable_names(kernels, [pattern]))),
            f"prune.exclude: {pattern!r} matches no prunable layer of {model_name}; its "
            f"layers: {', '.join(sorted(n.rsplit('/', 1)[0] for n in every))}",
        )
    _check(
        bool(pruning.prunable_names(kernels, patterns)),
        f"prune.exclude: {patterns} leaves no layer of {model_name} to prune",
    )
    return patterns


def _check_one_shot_reachable(
    percent: float,
    model_name: str,
    source: DataSource,
    exclude: list[str],
    arch: dict[str, Any],
) -> None:
    """One-shot keeps `percent` of all prunable weights, the excluded layers' included: it
    must leave at least one weight to the layers it prunes. (Shapes come from
    `models.abstract_variables`, which traces the model without computing anything.)"""
    params = models.abstract_variables(model_name, source.image_shape, source.num_classes, arch)
    sizes = {
        name: math.prod(leaf.shape)
        for name, leaf in pruning.leaves(params["params"]).items()
        if pruning.layer_kind(name)
    }
    pruned = pruning.prunable_names(sizes, exclude)
    total, excluded = sum(sizes.values()), sum(n for k, n in sizes.items() if k not in pruned)
    lowest = 100 * (excluded + 1) / total
    _check(
        round(percent / 100 * total) - excluded >= 1,
        f"prune.one_shot: {percent} is below what the excluded layers ({', '.join(exclude)}) "
        f"keep on their own ({100 * excluded / total:.4g}% of the prunable weights); the "
        f"lowest reachable is {lowest:.4g}",
    )


ARCH_FIELDS = ("depth", "width", "heads", "mlp_ratio", "patch_size", "context", "pool", "tied")
"""The ``model.*`` architecture fields; a model takes those its `ModelDef.arch` lists."""


def _architecture(spec: Spec, model_name: str, source: DataSource) -> dict[str, Any]:
    """The model's architecture options, defaults filled in (all enter the run id: only
    the transformers have any), checked against the model and the data's kind."""
    model = models.get(model_name)
    given = {name: spec[f"model.{name}"] for name in ARCH_FIELDS}
    taken = [k for k, _ in model.arch]
    for name, value in given.items():
        _check(
            value is None or name in taken,
            f"model.{name}: {model_name} takes no {name} (its architecture fields: "
            f"{', '.join(f'model.{k}' for k in taken) or 'none'})",
        )
    arch = model.architecture(given)
    if model.tokens != source.text:
        reads = "text (text:PATH, python-stdlib)" if model.tokens else "images"
        raise UsageError(f"data.dataset: {model_name} reads {reads}; {source.name} is not")
    if "heads" in arch:
        _check(
            arch["width"] % arch["heads"] == 0,
            f"model.heads: must divide model.width ({arch['width']}); got {arch['heads']}",
        )
    if "patch_size" in arch:
        side = source.image_shape[0]
        _check(
            side % arch["patch_size"] == 0 and source.image_shape[1] % arch["patch_size"] == 0,
            f"model.patch_size: must divide the {source.image_shape[0]}x"
            f"{source.image_shape[1]} images of {source.name}; got {arch['patch_size']}",
        )
    return arch


def _train_examples(spec: Spec, source: DataSource, context: int) -> int:
    """Training examples after the validation hold-out: images, or for text the train
    split's tokens in windows of `context` (what an epoch covers; validation and test are
    their own splits)."""
    validation = spec["data.validation"]
    if source.text:
        windows = source.train_size // context
        _check(
            source.train_size // 18 > context,  # the validation and test splits are 5%
            f"model.context: {context} is too long for {source.name}: its validation and "
            f"test splits (5% each, about {source.train_size // 18} tokens) must hold a "
            "window of context + 1 tokens",
        )
        return windows
    train_size = source.train_size - validation
    _check(
        train_size > 0,
        f"data.validation: must be below the {source.train_size} "
        f"training examples of {source.name} (got {validation})",
    )
    return train_size


def _check_pattern(
    spec: Spec,
    pattern: tuple[int, int],
    targets: list[float],
    model_name: str,
    source: DataSource,
    arch: dict[str, Any],
    exclude: list[str],
) -> None:
    """N:M holds in layer-wise groups, every pruned layer's input a multiple of M, and a
    one-shot schedule prunes straight to N/M."""
    n, m = pattern
    _check(
        spec["prune.strategy"] == "layerwise",
        f"prune.strategy: prune.pattern {n}:{m} keeps {n} of every {m} weights in each "
        'layer; a global ranking cannot change that: use "layerwise"',
    )
    density = 100 * n / m
    _check(
        not targets or targets == [density],
        f"prune.one_shot: with prune.pattern {n}:{m} the one target is {density:g} (percent "
        f"of weights remaining); got {', '.join(f'{t:g}' for t in targets)}",
    )
    params = models.abstract_variables(model_name, source.image_shape, source.num_classes, arch)
    try:
        pruning.check_pattern(params["params"], exclude, pattern)
    except ValueError as err:
        raise UsageError(f"prune.pattern: {err}; exclude it with prune.exclude") from err


def _check_augmentation(spec: Spec, source: DataSource) -> None:
    """``train.augment`` (flips and 4-pixel crops of fixed-size images, on the device) means
    nothing for text, and ImageNet brings its own (random-resized crops and flips)."""
    if not spec["train.augment"]:
        return
    _check(not source.text, f"train.augment: {source.name} is text; there is nothing to flip")
    _check(
        not source.resized,
        f"train.augment: {source.name} is always augmented as its papers train it (random-"
        "resized crops and flips, on the host); leave train.augment unset",
    )


def _check_recipe(spec: Spec, drops: list[int]) -> None:
    """Training-recipe fields that only mean something together."""
    for beta in ("train.beta1", "train.beta2"):
        _check(
            spec["train.optimizer"] != "sgd" or spec[beta] == FIELDS[beta].default,
            f"{beta}: a decay rate of Adam's moments; train.optimizer sgd has none (its "
            "momentum is train.momentum)",
        )
    _check(
        spec["train.optimizer"] == "sgd" or not spec["train.momentum"],
        f"train.momentum: SGD's momentum; {spec['train.optimizer']} has none (its moment "
        "decays are train.beta1 and train.beta2)",
    )
    _check(
        spec["train.schedule"] != "cosine" or not drops,
        "train.lr_drops: a cosine schedule has no drops; use one or the other",
    )
    _check(
        spec["train.schedule"] != "cosine" or spec["prune.retrain"] != "finetune",
        "prune.retrain: finetune trains at the schedule's final learning rate, which a cosine "
        'schedule ends at 0: nothing would train; use "lr-rewind" or a step schedule',
    )


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise UsageError(message)


def resolve(spec: Spec, source: DataSource) -> Descriptor:
    """Resolves `spec` against the data it names: durations to iterations, per-kind rates.

    Raises:
      UsageError: fields that are valid alone but not together (a rewind iteration beyond
        the training length, an evaluation period that does not divide it, ...).
    """
    model_name = models.ALIASES.get(spec["model.name"], spec["model.name"])
    model = models.get(model_name)
    _check(
        model.has_dropout or not spec["model.dropout"],
        f"model.dropout: {model_name} has no dropout; got dropout={spec['model.dropout']}",
    )
    arch = _architecture(spec, model_name, source)
    _check_augmentation(spec, source)
    train_size = _train_examples(spec, source, arch.get("context", 0))
    batch = spec["train.batch_size"]
    _check(
        source.text or batch <= train_size,
        f"train.batch_size: must be at most the {train_size} training examples (got {batch})",
    )

    def its(key: str) -> int:
        return spec[key].iterations(train_size, batch)

    iterations, eval_every = its("train.iterations"), its("train.eval_every")
    _check(iterations > 0, "train.iterations: must be at least one iteration")
    _check(
        eval_every > 0 and iterations % eval_every == 0,
        f"train.eval_every: must divide train.iterations ({iterations}); got {eval_every}",
    )
    rewind = its("prune.rewind_iter")
    _check(
        rewind <= iterations and rewind % eval_every == 0,
        f"prune.rewind_iter: must be a multiple of train.eval_every ({eval_every}) "
        f"in [0, {iterations}] (got {rewind})",
    )
    warmup = its("train.warmup")
    _check(warmup <= iterations, f"train.warmup: must be in [0, {iterations}] (got {warmup})")
    drops = sorted(d.iterations(train_size, batch) for d in spec["train.lr_drops"])
    _check(
        all(0 < d <= iterations for d in drops),
        f"train.lr_drops: each must be in (0, {iterations}] (got {drops})",
    )

    _check(
        spec["prune.retrain"] != "finetune" or iterations not in drops,
        f"train.lr_drops: a drop at T ({iterations}) would make prune.retrain finetune train "
        "at a learning rate that no step of a full training used; drop it, or move it below T",
    )
    exclude = _checked_exclude(spec, model_name, source, arch)
    targets = sorted(spec["prune.one_shot"] or (), reverse=True)
    if targets and exclude:
        _check_one_shot_reachable(targets[-1], model_name, source, exclude, arch)
    method = spec["prune.method"]
    refused = combinations.refusal(
        method, spec["prune.retrain"], combinations.schedule_of(tuple(targets))
    )
    _check(refused is None, refused or "")
    pattern = pruning.parse_pattern(spec["prune.pattern"])
    sparse_spec.check(spec, iterations, its("prune.update_every"))
    criterion_spec.check(spec)
    if pattern:
        _check_pattern(spec, pattern, targets, model_name, source, arch, exclude)
    elif method not in TRAINS_TO_TARGET:
        _check(
            method == "magnitude" or spec["prune.strategy"] == "global",
            f'prune.strategy: {method} ranks all prunable layers together; set it to "global"',
        )
    _check_recipe(spec, drops)

    full = _described(spec, its)
    full["data"].update(dataset=source.name, content=source.content_id)
    for name in ARCH_FIELDS:  # only the transformers have an architecture to record
        full["model"].pop(name)
    full["model"].update(name=model_name, **arch)
    if not source.text:
        del full["data"]["tokens"]  # images have no tokens: not in the id
    if source.resized:  # the size it was resized to
        full["data"]["image_size"] = source.image_shape[0]
    else:
        del full["data"]["image_size"]
    full["train"].update(iterations=iterations, eval_every=eval_every, lr_drops=drops)
    if not drops:
        del full["train"]["lr_drop_factor"]  # meaningless without drops: not in the id
    if method not in DATA_METHODS or not (model.has_batch_norm or spec["model.dropout"]):
        # no forward pass on data, or one that neither batch norm nor dropout changes: the
        # mode cannot change a result, so it is not in the id
        del full["prune"]["score_mode"]
    for name in sparse_spec.not_applying(method):  # changes no result here: not in the id
        del full["prune"][name]
    if method != "magnitude":  # IMP's mask criterion does not apply: not in the id
        del full["prune"]["criterion"]
    one_shot = targets[0] if len(targets) == 1 else targets or None  # one: as before
    full["prune"].update(rates=_rates(spec, model.kinds), exclude=exclude, one_shot=one_shot)
    if method in TRAINS_TO_TARGET:  # the layer budget sets every count
        del full["prune"]["rates"]
    if pattern:
        # N:M fixes every level's counts per group: no rate or strategy changes a result
        full["prune"].pop("rates", None)
        del full["prune"]["strategy"]
        full["prune"]["pattern"] = f"{pattern[0]}:{pattern[1]}"  # "02:4" is "2:4"
    full["schema"] = schema_of(full)
    return Descriptor(full, hashed_form(full))


def _described(spec: Spec, its: Callable[[str], int]) -> dict[str, Any]:
    """The descriptor's sections from the field table: every described field of the hashed
    sections, durations as iterations and lists as lists."""
    full: dict[str, Any] = {}
    for key, field in FIELDS.items():
        section, name = key.split(".")
        if section in UNHASHED_SECTIONS or not field.described:
            continue
        value = spec[key]
        if field.kind == "duration":
            value = its(key)
        elif field.kind in ("durations", "strs"):
            value = list(value)
        full.setdefault(section, {})[name] = value
    return full


def hashed_form(full: dict[str, Any]) -> dict[str, Any]:
    """`full` without the readable-only dataset name and the fields at their `NEUTRAL` value."""
    hashed: dict[str, Any] = {}
    for section, fields in full.items():
        if not isinstance(fields, dict):
            hashed[section] = fields
            continue
        hashed[section] = {
            name: value
            for name, value in fields.items()
            if not (f"{section}.{name}" in NEUTRAL and NEUTRAL[f"{section}.{name}"] == value)
            and f"{section}.{name}" != "data.dataset"
        }
    return hashed
