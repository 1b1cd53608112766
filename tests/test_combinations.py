"""The combination table: every method x retraining mode x rewind point x
pruning schedule x member either has a definition of its cell's first inputs or is refused.

The table is stated here on its own (`expected`), apart from `ltcli.experiment.combinations`.
The first test compares the two over the whole product. The second trains each accepted combination
on a tiny budget and checks what every cell of it really started from, against files in the
store: the digest of the weights the engine started with (θ0, θk, a trained ticket, or a
fresh draw), its mask (recomputed here from its source), the schedule step of its optimizer
and the batch its training loop consumed first.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import jax
import numpy as np
import pytest

from ltcli import models
from ltcli.core.errors import UsageError
from ltcli.experiment import combinations, spec
from ltcli.experiment.member import CONTROL_KINDS, SPAWN, Member
from ltcli.science import pruning, scoring
from ltcli.storage.store import CellKey, Store
from ltcli.train import checks, device_data, launch, runner

pytestmark = pytest.mark.unit

METHODS = ("magnitude", "snip", "grasp", "synflow", "magnitude-init", "random")
SPARSE = ("gmp", "static", "set", "rigl")
LEARNED = ("ste", "edge-popup", "supermask")
RETRAINS = ("rewind", "lr-rewind", "finetune")
SCHEDULES = ("imp", "one-shot", "several")
T, K = 200, 100
SIGNED = {"sign": "signed_constant", "signed_reinit": "fresh_signed"}
"""Zhou et al. 2019's controls of an IMP ticket, and the weights each starts from."""


def expected(method, retrain, rewind, schedule, kind, level):
    """The README's combination table: (weights, mask, schedule step, data position, data
    order) of a cell, or "refused"."""
    if method in SPARSE + LEARNED:
        return expected_sparse(method, retrain, rewind, schedule, kind, level)
    at_init = method != "magnitude"
    if at_init and (schedule == "imp" or retrain != "rewind"):
        return "refused"
    if (kind == "invert" and not at_init) or kind == "rewind" or (kind in SIGNED and at_init):
        return "refused"
    if level == 0:
        if kind == SPAWN:  # spawn-k, here k = K
            return ("ticket_at_k", "dense", K, K, "own_after_k")
        return ("theta0", "dense", 0, 0, "replicate")
    rewound = "theta_k" if rewind else "theta0"
    if kind in ("ticket", "stability"):
        if retrain == "rewind":
            weights = rewound
        elif schedule == "imp":
            weights = "trained_previous"  # IMP: the level before's trained ticket
        else:
            weights = "trained_dense"  # one-shot: the network the mask was pruned from
        mask = "scores" if at_init else "imp" if schedule == "imp" else "one_shot"
        step = T if retrain == "finetune" else rewind
        return (weights, mask, step, rewind, "own" if kind == "stability" else "replicate")
    weights = "fresh" if kind == "reinit" else SIGNED.get(kind, rewound)
    mask = {"reinit": "ticket", "random": "random", "shuffle": "random", "invert": "inverted"}
    mask |= {"sign": "ticket", "signed_reinit": "ticket"}
    return (weights, mask[kind], rewind, rewind, "replicate")


def expected_sparse(method, retrain, rewind, schedule, kind, level):
    """Sparse training (issue 33) and learned masks (issue 35): one job per one-shot target
    from θ0 at step 0; its lottery controls train the mask the ticket ended with, at k."""
    if schedule == "imp" or retrain != "rewind" or kind == "invert" or kind in SIGNED:
        return "refused"
    if kind == "stability" and method != "static":  # the mask changes (or is learned)
        return "refused"
    if level == 0:
        if kind == SPAWN:
            return ("ticket_at_k", "dense", K, K, "own_after_k")
        return ("theta0", "dense", 0, 0, "replicate")
    if kind in ("ticket", "stability"):
        start = {"gmp": "gmp", "static": "budget"} | dict.fromkeys(LEARNED, "learned")
        start = start.get(method, "drop_grow")
        return ("theta0", start, 0, 0, "own" if kind == "stability" else "replicate")
    weights = "fresh" if kind == "reinit" else "theta_k" if rewind else "theta0"
    mask = {"reinit": "final", "rewind": "final", "random": "random", "shuffle": "random"}
    return (weights, mask[kind], rewind, rewind, "replicate")


def _refused(method, retrain, schedule, kind):
    return combinations.refusal(method, retrain, schedule) or combinations.member_refusal(
        method, kind
    )


@pytest.mark.parametrize(
    "method,retrain,rewind,schedule",
    list(itertools.product(METHODS + SPARSE + LEARNED, RETRAINS, (0, K), SCHEDULES)),
)
def test_the_table_in_the_code_is_the_readme_table(method, retrain, rewind, schedule):
    for kind, level in [("ticket", 0), (SPAWN, 0)] + [
        (k, lv) for k in ("ticket", *CONTROL_KINDS) for lv in (1, 2)
    ]:
        want = expected(method, retrain, rewind, schedule, kind, level)
        if _refused(method, retrain, schedule, kind):
            assert want == "refused", (kind, level)
            continue
        assert want != "refused", (kind, level)
        member = Member(kind, K if kind == SPAWN else 0)
        got = combinations.inputs(
            method=method,
            retrain=retrain,
            rewind=rewind,
            iterations=T,
            schedule=schedule,
            member=member,
            level=level,
        )
        assert (
            got.weights,
            got.mask,
            got.schedule_step,
            got.data_position,
            got.data_order,
        ) == want, (kind, level)


def _run_through(method: str, rewind: int, schedule: str) -> bool:
    """Which accepted combinations run end to end below. The pruning-at-initialization
    methods share every row of the table (their masks differ only by their scores, which
    tests/test_scoring.py and tests/test_at_init.py check against their references): snip
    runs through every row, synflow (data-free, in float64) through θk with one target and
    θ0 with several, the others through θ0 with several."""
    if method in ("magnitude", "snip"):
        return True
    if method == "synflow":
        return (rewind, schedule) in ((K, "one-shot"), (0, "several"))
    return (rewind, schedule) == (0, "several")


ACCEPTED = [
    (m, r, k, s)
    for m, r, k, s in itertools.product(METHODS, RETRAINS, (0, K), SCHEDULES)
    if not combinations.refusal(m, r, s) and _run_through(m, k, s)
]
TARGETS = {"imp": None, "one-shot": [50.0], "several": [50.0, 20.0]}


BATCH = 20


def _spec(folder: Path, tmp_path: Path, method, retrain, rewind, schedule):
    controls = "reinit:1,random:1,stability:1,shuffle:1"
    prune = {"rate": 0.5, "retrain": retrain, "rewind_iter": f"{rewind}it"}
    if method == "magnitude":
        controls += ",sign:1,signed_reinit:1"
    else:
        controls += ",invert:1"
        prune.update(method=method, strategy="global")
    if TARGETS[schedule]:
        prune["one_shot"] = TARGETS[schedule]
    table = {
        "data": {"dataset": f"folder:{folder}", "validation": 50},
        "model": {"name": "lenet300"},
        "train": {
            "iterations": f"{T}it",
            "eval_every": "100it",
            "batch_size": BATCH,
            "warmup": f"{T}it",
            "lr": 1e-3,
        },
        "prune": prune,
        "run": {"rounds": 2, "controls": controls, "spawn": [f"{K}it"]},
    }
    return spec.from_mapping("combination", table)


def _order_key(seed, replicate, order, member):
    """A cell's data-order key as lt derives it (README: Data order)."""
    root = jax.random.PRNGKey(seed)
    stream = {"replicate": 1, "own": 2, "own_after_k": 3}[order]
    key = jax.random.fold_in(jax.random.fold_in(root, stream), replicate)
    if order != "replicate":
        key = jax.random.fold_in(key, member.index)
    return jax.random.fold_in(key, 0)


@pytest.mark.integration
@pytest.mark.parametrize("method,retrain,rewind,schedule", ACCEPTED)
def test_every_cell_starts_where_the_table_says(
    class_folder, tmp_path, method, retrain, rewind, schedule
):
    loaded = _spec(class_folder, tmp_path, method, retrain, rewind, schedule)
    store = Store(tmp_path / "store")
    run_id = launch.run(loaded, store)
    desc, source = launch.prepare(loaded)
    strategy = runner.strategy(desc.full)
    data = device_data.to_device(source.load(), desc["data.validation"])
    n = int(data.y_train.shape[0])
    theta0 = store.load_weights(store.init_path(run_id, 0))
    template = theta0["params"]
    dense = pruning.dense_mask(template)

    def weights_of(name, level):
        if name == "theta0":
            return theta0
        if name == "theta_k" or name == "ticket_at_k":  # θk: the dense ticket at k = K
            return store.load_weights(store.rewind_path(run_id, 0))
        previous = 0 if name == "trained_dense" else level - 1
        return store.read_trained(run_id, CellKey(0, previous))

    def scores_mask(level, metrics, invert=False):
        scored = theta0 if not rewind else store.load_weights(store.rewind_path(run_id, 0))
        assert metrics["scored_at"] == rewind
        x = y = None
        if scoring.needs_data(method):
            ids = np.asarray(metrics["scored_on"])
            x = (data.x_train[ids].astype(np.float32) - data.mean) / data.std
            y = data.y_train[ids]
        (mask,) = scoring.masks_at_init(
            method,
            models.create(desc["model.name"], source.num_classes),
            scored,
            [strategy.target(level)],
            image_shape=source.image_shape,
            exclude=strategy.exclude,
            batch_x=x,
            batch_y=y,
            key=jax.random.fold_in(jax.random.fold_in(jax.random.PRNGKey(0), 4), 0),
            invert=invert,
            mode="eval",  # the default score mode (SNIP and GraSP read it)
        )
        return mask

    levels = len(TARGETS[schedule] or [0, 0]) + 1
    for level in range(levels):
        kinds = ["ticket", SPAWN] if level == 0 else ["ticket", *CONTROL_KINDS]
        for kind in kinds:
            if (kind == "invert" and method == "magnitude") or kind == "rewind":
                continue  # refused (the rewind control is sparse training's)
            if kind in SIGNED and method != "magnitude":
                continue  # refused (Zhou et al. 2019's controls of an IMP ticket)
            member = Member(kind, K if kind == SPAWN else 0)
            cell = CellKey(0, level, member)
            want = expected(method, retrain, rewind, schedule, kind, level)
            w_name, m_name, step, position, order = want
            metrics = store.read_metrics(run_id, cell)
            mask = store.read_mask(run_id, cell, template)
            ticket_mask = store.read_mask(run_id, CellKey(0, level), template)
            label = f"{kind} at level {level}"
            # The mask, recomputed from its source.
            if m_name == "dense":
                source_mask = dense
            elif m_name == "imp":
                before = CellKey(0, level - 1)
                trained = store.read_trained(run_id, before)["params"]
                source_mask = strategy.prune(
                    trained, store.read_mask(run_id, before, template), level
                )
            elif m_name == "one_shot":
                trained = store.read_trained(run_id, CellKey(0, 0))["params"]
                source_mask = strategy.prune(trained, dense, level)
            elif m_name == "scores":
                source_mask = scores_mask(level, metrics)
            elif m_name == "inverted":
                source_mask = scores_mask(level, metrics, invert=True)
            elif m_name == "ticket":
                source_mask = ticket_mask
            if m_name == "random":
                assert pruning.counts(mask) == pruning.counts(ticket_mask), label
                assert not tree_equal(mask, ticket_mask), label
            else:
                assert tree_equal(mask, source_mask), label
            # The weights the engine started from: the source under the cell's mask.
            if w_name == "ticket_at_k" and not rewind:  # θk is stored only when k = K
                under = runner.masked(theta0["params"], mask)
                assert metrics["start_digest"] != checks.digest(under), label
            elif w_name == "signed_constant":  # θ_r's signs times each kernel's std in θ_r
                point = pruning.flatten(weights_of("theta_k" if rewind else "theta0", level))
                signed = {
                    n: (np.sign(w) * np.std(w.astype(np.float64))).astype(w.dtype)
                    if n.endswith("kernel")
                    else w
                    for n, w in point.items()
                }
                under = runner.masked(pruning.unflatten(signed)["params"], mask)
                assert metrics["start_digest"] == checks.digest(under), label
            elif w_name in ("fresh", "fresh_signed"):
                for other in ("theta0", "theta_k"):
                    if other == "theta_k" and not rewind:
                        continue
                    under = runner.masked(weights_of(other, level)["params"], mask)
                    assert metrics["start_digest"] != checks.digest(under), label
            else:
                under = runner.masked(weights_of(w_name, level)["params"], mask)
                assert metrics["start_digest"] == checks.digest(under), label
            # The schedule step its optimizer started at, and the batch it trained first.
            assert metrics["schedule_step"] == step, label
            assert metrics["first_learning_rate"] == pytest.approx(1e-3 * min(step, T) / T)
            key = _order_key(0, 0, order, member)
            batch = device_data.batch_indices(key, position, 1, BATCH, n)[0]
            assert metrics["first_batch"] == np.asarray(batch).tolist(), label
            assert metrics["start_iteration"] == position, label
            assert metrics["curve"]["iteration"][0] == position + 100, label


def tree_equal(a, b) -> bool:
    fa, fb = pruning.flatten(a), pruning.flatten(b)
    return fa.keys() == fb.keys() and all(np.array_equal(fa[k], fb[k]) for k in fa)


@pytest.mark.parametrize(
    "method,retrain", [("snip", "lr-rewind"), ("synflow", "finetune"), ("random", "lr-rewind")]
)
def test_pruning_at_initialization_with_a_retraining_mode_is_refused(
    class_folder, tmp_path, method, retrain
):
    loaded = _spec(class_folder, tmp_path, method, "rewind", 0, "one-shot")
    loaded = spec.apply_overrides(loaded, {"prune.retrain": retrain})
    with pytest.raises(UsageError, match=r"prune\.retrain"):
        launch.prepare(loaded)
