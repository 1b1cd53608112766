"""The spec's field table (`FIELDS`): every field of an experiment spec, with its type, default,
the rule its value must satisfy, how it enters the run id, and what it means. It is the one
place a field is defined: `ltcli.experiment.spec` checks values against it, the flags of
``lt run`` (`ltcli.cli.main`) and the engine's defaults (`ltcli.train.recipes.TrainConfig`)
are generated from it, and so is the docs' field reference.
"""

from __future__ import annotations

from ltcli.experiment.field_types import (
    Duration,
    Field,
    between,
    choice,
    integer,
)
from ltcli.experiment.member import CONTROL_KINDS, parse_controls
from ltcli.experiment.slurm_fields import SLURM_FIELDS
from ltcli.science import criteria, pruning
from ltcli.science.methods import (
    DISTRIBUTIONS,
    FROZEN_INITS,
    PRUNING_METHODS,
    SCORE_MODES,
)

RETRAIN_MODES = ("rewind", "lr-rewind", "finetune")
"""How a pruned level retrains (Renda, Frankle & Carbin 2020): weights and schedule rewound
to iteration k; the previous level's trained weights with the schedule replayed from k; or
those weights trained T - k more steps at the schedule's final learning rate."""


def _pattern_ok(value: str) -> bool:
    try:
        pruning.parse_pattern(value)
    except ValueError:
        return False
    return True


def _controls_ok(value: str) -> bool:
    try:
        parse_controls(value)
    except ValueError:
        return False
    return True


FIELDS: dict[str, Field] = {
    "data.dataset": Field(
        "str",
        None,
        "mnist, fashion-mnist, cifar10, imagenet, folder:PATH, imagenet:PATH, tfds:NAME, "
        "text:PATH or python-stdlib",
        bool,
        doc="The data set: a name, an image folder, a TFDS set, or text (for gpt).",
    ),
    "data.validation": integer(
        5000,
        1,
        "Training examples held out for validation (text: the windows of the context "
        "that evaluation scores in each of validation and test, spread evenly over the "
        "split).",
    ),
    "data.placement": choice(
        "auto",
        ("auto", "device", "stream"),
        "Where the data lives: on the device, streamed from disk as it trains, or auto.",
        described=False,  # where the data lives changes no number: never in the run id
    ),
    "data.workers": Field(
        "int",
        -1,
        "an integer >= -1 (-1: chosen by the core count; 0: read in this process)",
        lambda v: v >= -1,
        described=False,  # how streamed data is read changes no number: never in the run id
        doc="Streamed data: decoding processes (-1: by the core count; 0: threads here).",
    ),
    "data.image_size": Field(
        "int",
        None,
        "an integer >= 8",
        lambda v: v >= 8,
        None,
        doc="ImageNet: the side of the square images the model sees.",
    ),
    "data.tokens": choice(
        "bytes",
        ("bytes", "chars"),
        "Text: UTF-8 bytes (256 tokens) or the corpus's distinct characters.",
        neutral="bytes",
    ),
    "model.name": Field(
        "str", None, "a model name (see `lt run --help`)", bool, doc="The network."
    ),
    "model.dropout": Field(
        "float",
        0.0,
        "a number in [0, 1)",
        lambda v: 0 <= v < 1,
        0.0,
        doc="Dropout rate (lenet300, conv2/4/6, vit, gpt).",
    ),
    **{
        f"model.{name}": Field(
            "int", None, "an integer >= 1", lambda v: v >= 1, None, doc=f"vit, gpt: {doc}."
        )
        for name, doc in (
            ("depth", "blocks"),
            ("width", "embedding width"),
            ("heads", "attention heads (must divide width)"),
            ("mlp_ratio", "MLP hidden width over width"),
            ("patch_size", "patch side, vit only (must divide the image side)"),
            ("context", "context length in tokens, gpt only"),
        )
    },
    "model.pool": choice(
        None,
        ("cls", "mean"),
        "vit: read the class token (cls) or the mean of the tokens.",
        neutral=None,
    ),
    "model.tied": Field(
        "bool",
        None,
        "true or false",
        neutral=None,
        doc="gpt: the output head tied to the token embedding.",
    ),
    "train.optimizer": choice(
        "adam",
        ("adam", "adamw", "sgd"),
        "Adam, AdamW (decoupled weight decay) or SGD (with train.momentum).",
    ),
    "train.lr": Field("float", 1.2e-3, "a number > 0", lambda v: v > 0, doc="Learning rate."),
    "train.momentum": Field(
        "float",
        0.0,
        "a number in [0, 1)",
        lambda v: 0 <= v < 1,
        0.0,
        doc="SGD's momentum (refused with Adam and AdamW).",
    ),
    "train.beta1": Field(
        "float",
        0.9,
        "a number in [0, 1)",
        lambda v: 0 <= v < 1,
        0.9,
        doc="Adam's and AdamW's first-moment decay (refused with SGD).",
    ),
    "train.beta2": Field(
        "float",
        0.999,
        "a number in [0, 1)",
        lambda v: 0 <= v < 1,
        0.999,
        doc="Adam's and AdamW's second-moment decay (refused with SGD).",
    ),
    "train.weight_decay": Field(
        "float",
        0.0,
        "a number >= 0",
        lambda v: v >= 0,
        0.0,
        doc="L2 weight decay added to the gradients; adamw: decoupled, of kernels and "
        "embeddings only.",
    ),
    "train.batch_size": Field("int", 60, "an integer > 0", lambda v: v > 0, doc="Minibatch size."),
    "train.iterations": Field(
        "duration",
        Duration(50000),
        "a duration > 0 like 5000it or 40ep",
        lambda v: v.amount > 0,
        doc="Training length per level, like 5000 or 10ep (an epoch is round(train "
        "examples / batch) steps).",
    ),
    "train.eval_every": Field(
        "duration",
        Duration(100),
        "a duration > 0 like 100it or 1ep",
        lambda v: v.amount > 0,
        doc="Evaluate validation and test every this many iterations (must divide iterations).",
    ),
    "train.warmup": Field(
        "duration",
        Duration(0),
        "a duration >= 0 like 10000it",
        neutral=0,
        doc="Linear learning-rate warmup from 0 over this many iterations.",
    ),
    "train.lr_drops": Field(
        "durations",
        (),
        'a list of durations like ["80ep", "120ep"]',
        neutral=[],
        doc="Multiply the learning rate by lr_drop_factor at each of these iterations.",
    ),
    "train.lr_drop_factor": Field(
        "float",
        0.1,
        "a number in (0, 1]",
        lambda v: 0 < v <= 1,
        doc="The factor of each learning-rate drop.",
    ),
    "train.augment": Field(
        "bool",
        False,
        "true or false",
        neutral=False,
        doc="Random flips and 4-pixel pad-and-crop, on the device.",
    ),
    "train.schedule": choice(
        "step",
        ("step", "cosine"),
        "step (warmup, then drops) or cosine (decay to 0 at the end, after any warmup).",
        neutral="step",
    ),
    "train.clip_norm": Field(
        "float",
        0.0,
        "a number >= 0 (0: off)",
        lambda v: v >= 0,
        0.0,
        doc="Clip the gradients to this global norm (0: off).",
    ),
    "train.precision": choice(
        "fp32",
        ("fp32", "bf16"),
        "fp32, or bf16: bfloat16 products, float32 weights, state and loss.",
        neutral="fp32",
    ),
    "train.label_smoothing": Field(
        "float",
        0.0,
        "a number in [0, 1)",
        lambda v: 0 <= v < 1,
        0.0,
        doc="Label smoothing of the training loss; evaluation reports the plain loss.",
    ),
    "train.seed": integer(0, 0, "Seed of the initializations and data order."),
    "prune.strategy": choice(
        "layerwise",
        ("layerwise", "global"),
        "layerwise (each layer at its kind's rate) or global (one ranking over all "
        "prunable layers).",
    ),
    "prune.rate": Field(
        "float",
        0.2,
        "a fraction in (0, 1)",
        between(0, 1),
        described=False,
        doc="Fraction of surviving weights pruned per round: in fc layers (the output layer "
        "gets half and conv layers this rate unless prune.output_rate or prune.conv_rate "
        "say otherwise), or over the pooled layers with a global strategy.",
    ),
    **{
        f"prune.{kind}_rate": Field(
            "float", None, "a fraction in (0, 1)", between(0, 1), described=False, doc=doc
        )
        for kind, doc in (
            ("conv", "Conv layers' rate per round (default: prune.rate)."),
            ("output", "The output layer's rate per round (default: prune.rate / 2)."),
            ("attn", "Transformers' attention q, k, v, out kernels (default: prune.rate)."),
            ("mlp", "Transformers' MLP kernels (default: prune.rate)."),
        )
    },
    "prune.pattern": Field(
        "str",
        "unstructured",
        'unstructured or N:M like "2:4" (0 < N < M)',
        _pattern_ok,
        "unstructured",
        doc="Structured N:M sparsity, like 2:4: keep N of every M consecutive weights along "
        "each kernel's input axis. IMP reaches it one weight per group a round (3:4, then "
        "2:4; rounds at most M - N); one-shot 100*N/M and at-init methods prune to it at "
        "once.",
    ),
    "prune.exclude": Field(
        "strs",
        (),
        'a list of layer names or patterns like ["fc*"]',
        neutral=[],
        doc="Layers never pruned, like out or *shortcut.",
    ),
    "prune.rewind_iter": Field(
        "duration",
        Duration(0),
        "a duration >= 0 like 500it",
        neutral=0,
        doc="Late rewinding: rewind survivors to iteration k (a multiple of eval_every), not 0.",
    ),
    "prune.retrain": choice(
        "rewind",
        RETRAIN_MODES,
        "How a pruned level retrains (Renda et al. 2020): rewind weights and schedule to "
        "iteration k (the default); lr-rewind: keep the previous level's trained weights and "
        "replay the schedule from k; finetune: keep them and train T - k steps at the "
        "schedule's final learning rate. One-shot levels retrain from level 0's trained "
        "weights. Refused with an at-init method.",
        neutral="rewind",
    ),
    "prune.criterion": choice(
        criteria.DEFAULT,
        criteria.CRITERIA,
        "IMP's mask criterion (Zhou et al. 2019), keeping IMP's counts of the survivors of "
        "highest score by init (θ0, θk) and final (the trained ticket pruned) weights: "
        "large_final (|final|: IMP), small_final, large_init, small_init, large_init_large_final "
        "and small_init_small_final (top in both), magnitude_increase (|final| - |init|), "
        "movement (|final - init|), random. prune.method magnitude only.",
        neutral=criteria.DEFAULT,
    ),
    "prune.one_shot": Field(
        "percents",
        None,
        "a percent of weights remaining in (0, 100), or several like 50,20,5,1.4",
        lambda v: all(0 < p < 100 for p in v) and len(set(v)) == len(v) > 0,
        None,
        doc="One-shot pruning to each percent of weights remaining, like 50,20,5,1.4, each "
        "from the same network (rounds do not apply); level i prunes to the i-th largest.",
    ),
    "prune.method": choice(
        "magnitude",
        PRUNING_METHODS,
        "What to prune by: magnitude of the trained weights (IMP; the default), or a score "
        "at initialization (snip, grasp, synflow, magnitude-init, random; Frankle et al. "
        "2021), pruning θ0 (θk with rewind_iter) once to each one-shot target; or sparse "
        "training, one job per one-shot target reaching it while it trains: gmp (gradual "
        "magnitude pruning, Zhu & Gupta 2017), static (a random mask at the layer budget), "
        "set (Mocanu et al. 2018), rigl (Evci et al. 2020); or a mask learned by gradient, "
        "one job per one-shot target: ste (straight-through top-|w|), edge-popup (Ramanujan "
        "et al. 2020: scores over frozen weights), supermask (Zhou et al. 2019: Bernoulli "
        "masks over frozen weights).",
        neutral="magnitude",
    ),
    "prune.distribution": choice(
        "uniform",
        DISTRIBUTIONS,
        "Sparse training's layer budget: uniform (one density in every pruned layer) or erk "
        "(Erdős-Rényi-Kernel, Evci et al. 2020: density proportional to a layer's sum of "
        "dimensions over their product, capped at 1). Excluded layers stay dense and count "
        "towards the target.",
        neutral="uniform",
    ),
    "prune.update_every": Field(
        "duration",
        Duration(100),
        "a duration > 0 like 100it",
        lambda v: v.amount > 0,
        100,
        doc="gmp, set, rigl: iterations between mask updates (Δt).",
    ),
    "prune.update_start": Field(
        "float",
        0.0,
        "a fraction in [0, 1)",
        lambda v: 0 <= v < 1,
        0.0,
        doc="gmp, set, rigl: the first mask update, as a fraction of train.iterations "
        "(gmp: t0, at which it is still dense).",
    ),
    "prune.update_end": Field(
        "float",
        0.75,
        "a fraction in (0, 1]",
        lambda v: 0 < v <= 1,
        0.75,
        doc="gmp, set, rigl: mask updates end here, as a fraction of train.iterations "
        "(set, rigl: T_end, updates before it; gmp: the target is reached at the last "
        "pruning step at or before it).",
    ),
    "prune.drop_fraction": Field(
        "float",
        0.3,
        "a fraction in (0, 1)",
        between(0, 1),
        0.3,
        doc="set, rigl: the fraction α of active weights dropped (and regrown) per update.",
    ),
    "prune.drop_anneal": choice(
        "cosine",
        ("cosine", "constant"),
        "set, rigl: the drop fraction over the updates, α/2 (1 + cos(π t / T_end)) (Evci et "
        "al. 2020) or constant α (Mocanu et al. 2018's ζ).",
        neutral="cosine",
    ),
    "prune.score_mode": choice(
        "eval",
        SCORE_MODES,
        "The forward pass SNIP and GraSP score with: eval (dropout off, batch norm by its "
        "running statistics, as SNIP's and Synaptic-Flow's code do) or train (batch norm by "
        "the batch, as GraSP's code does).",
        neutral="train",
    ),
    "prune.frozen_init": choice(
        "auto",
        FROZEN_INITS,
        "edge-popup, supermask: the frozen weights: auto (edge-popup: signed-kaiming-constant; "
        "supermask: model), signed-kaiming-constant (θ0's signs times sqrt(2 / fan-in), "
        "Ramanujan et al. 2020), kaiming-normal (a fresh N(0, 2 / fan-in) draw), "
        "signed-constant (θ0's signs times the std of each layer's θ0, Zhou et al. 2019) or "
        "model (θ0 as the model initializes it).",
        neutral="auto",
    ),
    "prune.srste_decay": Field(
        "float",
        0.0,
        "a number >= 0 (0: plain straight-through)",
        lambda v: v >= 0,
        0.0,
        doc="ste: SR-STE's λ_W (Zhou et al. 2021; 2e-4 in the paper): each step adds λ_W w "
        "to the gradient of every weight the forward pruned.",
    ),
    "run.rounds": integer(1, 0, "Pruning rounds (levels after the dense one)."),
    "run.replicates": integer(1, 1, "Independent replicates (seeds) per level."),
    "run.controls": Field(
        "str",
        "",
        f"a list like reinit:3,random:1 (kinds {' and '.join(CONTROL_KINDS)}, each once)",
        _controls_ok,
        doc="Control cells per pruned level, like reinit:3,random:1 (stability: a copy of "
        "the ticket with another data order, for instability analysis; shuffle: each "
        "layer's mask permuted; invert: keep the lowest scores, for pruning at "
        "initialization; sign and signed_reinit: the ticket's mask from θ0's signs with "
        "constant or fresh magnitudes, Zhou et al. 2019).",
    ),
    "run.deterministic": Field(
        "bool",
        False,
        "true or false",
        doc="Bit-identical cells: each cell's weights and metrics are the same whether it "
        "trains alone or in any group (on this device and JAX version); slower on a GPU, "
        "where vmap is given up.",
    ),
    "run.barriers": Field(
        "bool",
        False,
        "true or false",
        doc="Measure the test error along the straight line from each IMP ticket's "
        "level-before ticket to it, both trained (Paul et al. 2023), and two measures of that "
        "path: its barrier above the line between the ends' errors, and its instability "
        "(highest error minus the mean of the ends', Frankle et al. 2020). Levels trained "
        "before are measured from the store, without training. Refused for one-shot levels.",
    ),
    "run.controls_at": choice(
        "level",
        ("level", "end"),
        "When controls train: with their level, or after every ticket, in groups of up to "
        "625 cells (faster on a GPU). The numbers are the same (bit for bit with "
        "deterministic).",
    ),
    "run.devices": Field(
        "int",
        0,
        "an integer >= 0 (0: every local device)",
        lambda v: v >= 0,
        doc="Shard each level's cells over the first N local devices (0: all JAX sees). A "
        "cell's numbers do not depend on N (bit for bit with deterministic).",
    ),
    "run.parallel": choice(
        "auto",
        ("cells", "batch", "auto"),
        "How a group of cells uses the local devices: cells (split among them), batch "
        "(every cell on all, each device computing a share of its batch; batch norm over "
        "the whole batch), or auto (batch when a group has fewer cells than devices). The "
        "numbers agree to float rounding.",
    ),
    "run.spawn": Field(
        "durations",
        (),
        'iterations of the dense network to spawn copies at, like ["0it", "500it"]',
        doc="Instability analysis of the dense network: for each iteration k, like "
        "0,500,2000, a copy that follows level 0 to k, then another data order to the end.",
    ),
    "run.log": Field(
        "str",
        "",
        '"" (none), "tensorboard", "wandb" or "mlflow"',
        lambda v: v in ("", "tensorboard", "wandb", "mlflow"),
        doc="Also log each cell to an experiment tracker, each group of cells as it is "
        "stored (with --executor ray or --sweep: at the end): tensorboard (event files under "
        '"$(lt path RUN)/tensorboard"), wandb (a W&B run per cell grouped by run id; offline '
        "unless WANDB_MODE or an API key says otherwise) or mlflow (an MLflow run per cell, "
        "tagged lt.run_id; MLFLOW_TRACKING_URI, else sqlite:///STORE/mlflow.db).",
    ),
    **SLURM_FIELDS,
}
SECTIONS = sorted({key.split(".")[0] for key in FIELDS})
UNHASHED_SECTIONS = ("run", "slurm")
"""Sections of how and where a run trains, never of what it trains: not in the run id."""
