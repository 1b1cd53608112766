"""Zhou, Lan, Liu & Yosinski 2019's ablations of IMP (``prune.criterion``, the ``sign`` and
``signed_reinit`` controls): each criterion's mask against a float64 numpy recomputation of
the authors' rule (uber-research/deconstructing-lottery-tickets, ``get_weight_init.py``),
written here apart from `ltcli.science.criteria`; the controls' start weights against
``get_init_loss_train_lottery.py``'s; the refusals (exit 2) and the run ids; and one tiny
run that stores cells whose masks and starts are the criterion's and the controls'."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ltcli import models
from ltcli.core.errors import UsageError
from ltcli.data import DataSource
from ltcli.experiment import descriptor, spec
from ltcli.science import criteria, pruning
from ltcli.storage.store import CellKey, Store
from ltcli.train import checks, launch
from ltcli.train.keys import Keys
from ltcli.train.starts import masked

from helpers import assert_refused

pytestmark = pytest.mark.unit

SHAPES = {"fc1": (24, 16), "fc2": (16, 8), "out": (8, 4)}
RATES = {"fc": 0.2, "output": 0.1}

PER_WEIGHT = {  # get_weight_init.py, lines 129-333: the score of each weight, float64
    "large_final": lambda i, f: np.abs(f),
    "small_final": lambda i, f: -np.abs(f),
    "large_init": lambda i, f: np.abs(i),
    "small_init": lambda i, f: -np.abs(i),
    "magnitude_increase": lambda i, f: np.abs(f) - np.abs(i),
    "movement": lambda i, f: np.abs(f - i),
}


def _network(seed: int) -> dict:
    rng = np.random.default_rng(seed)
    return {
        name: {
            "kernel": rng.normal(0, 0.1, shape).astype(np.float32),
            "bias": rng.normal(0, 0.1, shape[1]).astype(np.float32),
        }
        for name, shape in SHAPES.items()
    }


def _prior_mask(seed: int) -> dict:
    """A level-1 mask: about 70% of each kernel kept, biases dense."""
    rng = np.random.default_rng(seed)
    return {
        name: {
            "kernel": (rng.random(shape) < 0.7).astype(np.float32),
            "bias": np.ones(shape[1], np.float32),
        }
        for name, shape in SHAPES.items()
    }


def _kernels(tree: dict) -> dict[str, np.ndarray]:
    return {name: np.asarray(tree[name]["kernel"], np.float64).reshape(-1) for name in SHAPES}


def _keep(scores: np.ndarray, keep: int) -> np.ndarray:
    """0/1 over `scores` (-inf: not a survivor): the `keep` highest."""
    out = np.zeros(scores.size)
    out[np.argsort(-scores, kind="stable")[:keep]] = 1
    return out


def _quadrant(wi: np.ndarray, wf: np.ndarray, alive: np.ndarray, keep: int) -> np.ndarray:
    """Zhou et al.'s bsearch_quadrant_threshold, with the count met exactly: the survivors
    in the top m by `wi` and the top m by `wf`, m the least for which at least `keep`
    remain. Growing m by one can add two weights at once (one through each ranking); then
    the one earlier in the layer is kept (lt's tie rule)."""
    idx = np.flatnonzero(alive)
    before: set[int] = set()
    for m in range(1, idx.size + 1):
        both = set(idx[np.argsort(-wi[idx])[:m]]) & set(idx[np.argsort(-wf[idx])[:m]])
        if len(both) >= keep:
            chosen = before | set(sorted(both - before)[: keep - len(before)])
            out = np.zeros(wi.size)
            out[sorted(chosen)] = 1
            return out
        before = both
    raise AssertionError("unreachable")


def reference_mask(criterion, init, final, prior, kind, rng=None, rates=RATES) -> dict:
    """The criterion's mask of `final` under `prior`, by numpy in float64: IMP's counts
    (survivors minus round(rate x survivors), per layer or pooled), top scores kept."""
    wi, wf = _kernels(init), _kernels(final)
    alive = {n: np.asarray(prior[n]["kernel"]).reshape(-1) > 0 for n in SHAPES}
    if criterion == "random":
        scores = {n: rng.random(SHAPES[n]).reshape(-1) for n in SHAPES}
    elif criterion in PER_WEIGHT:
        scores = {n: PER_WEIGHT[criterion](wi[n], wf[n]) for n in SHAPES}
    groups = [list(SHAPES)] if kind == "global" else [[n] for n in SHAPES]
    kept = {}
    for group in groups:
        rate = (
            rates["global"] if kind == "global" else rates["output" if group[0] == "out" else "fc"]
        )
        live = np.concatenate([alive[n] for n in group])
        keep = int(live.sum()) - round(rate * int(live.sum()))
        if criterion in criteria.QUADRANT:
            sign = 1 if criterion.startswith("large") else -1
            pick = _quadrant(
                *(sign * np.abs(np.concatenate([w[n] for n in group])) for w in (wi, wf)),
                live,
                keep,
            )
        else:
            pooled = np.concatenate([scores[n] for n in group])
            pick = _keep(np.where(live, pooled, -np.inf), keep)
        splits = np.cumsum([alive[n].size for n in group])[:-1]
        for n, part in zip(group, np.split(pick, splits), strict=True):
            kept[n] = part.reshape(SHAPES[n])
    return kept


def _mask_kernels(mask) -> dict[str, np.ndarray]:
    return {n: np.asarray(mask[n]["kernel"]) for n in SHAPES}


@pytest.mark.parametrize("kind", ["layerwise", "global"])
@pytest.mark.parametrize("criterion", criteria.CRITERIA)
def test_each_criterion_keeps_the_top_survivors_by_its_score_at_imps_counts(criterion, kind):
    init, final, prior = _network(0), _network(1), _prior_mask(2)
    rates = RATES if kind == "layerwise" else {"global": 0.3}
    strategy = pruning.Strategy(kind, rates)
    got = criteria.prune(strategy, criterion, init, final, prior, 2, np.random.default_rng(7))
    want = reference_mask(criterion, init, final, prior, kind, np.random.default_rng(7), rates)
    for name in SHAPES:
        assert np.array_equal(got[name]["kernel"], want[name]), name
        assert np.all(got[name]["kernel"] <= prior[name]["kernel"])  # survivors only
        assert np.array_equal(got[name]["bias"], prior[name]["bias"])
    assert strategy.actual_counts(final, got) == strategy.actual_counts(
        final, strategy.prune(final, prior, 2)
    )  # IMP's own counts


@pytest.mark.parametrize("criterion", ["large_init", "magnitude_increase", "movement"])
def test_criteria_differ_from_imp_and_one_shot_scores_level_0s_network(criterion):
    init, final = _network(0), _network(1)
    dense = pruning.dense_mask(final)
    strategy = pruning.Strategy("layerwise", RATES, one_shot=(30.0,))
    got = criteria.prune(strategy, criterion, init, final, dense, 1)
    imp = strategy.prune(final, dense, 1)
    assert pruning.counts(got) == pruning.counts(imp)
    assert any(not np.array_equal(got[n]["kernel"], imp[n]["kernel"]) for n in SHAPES)
    scores = {n: PER_WEIGHT[criterion](*(_kernels(t)[n] for t in (init, final))) for n in SHAPES}
    for name in SHAPES:
        keep = int(imp[name]["kernel"].sum())
        assert np.array_equal(got[name]["kernel"].reshape(-1), _keep(scores[name], keep))


@pytest.mark.parametrize("criterion", ["small_final", "large_init", "movement", "random"])
def test_with_an_nm_pattern_each_group_keeps_its_top_n_by_the_criterion(criterion):
    init, final = _network(3), _network(4)
    strategy = pruning.Strategy("layerwise", RATES, one_shot=(50.0,), pattern=(2, 4))
    got = criteria.prune(
        strategy, criterion, init, final, pruning.dense_mask(final), 1, np.random.default_rng(9)
    )
    rng = np.random.default_rng(9)
    for name, shape in SHAPES.items():
        wi, wf = (np.asarray(t[name]["kernel"], np.float64) for t in (init, final))
        score = rng.random(shape) if criterion == "random" else PER_WEIGHT[criterion](wi, wf)
        groups = score.T.reshape(shape[1], shape[0] // 4, 4)  # along the input axis
        top = np.argsort(-groups, axis=-1)[..., :2]
        want = np.zeros_like(groups)
        np.put_along_axis(want, top, 1, axis=-1)
        assert np.array_equal(got[name]["kernel"], want.reshape(shape[1], shape[0]).T), name


def test_a_quadrant_criterion_is_refused_with_an_nm_pattern():
    strategy = pruning.Strategy("layerwise", RATES, one_shot=(50.0,), pattern=(2, 4))
    net = _network(0)
    with pytest.raises(ValueError, match=r"prune\.criterion: large_init_large_final"):
        criteria.prune(strategy, "large_init_large_final", net, net, pruning.dense_mask(net), 1)


def _expected_signed_constant(point: dict) -> dict:
    """get_init_loss_train_lottery.py, lines 349-358: sign(w) * np.std(layer), kernels."""
    return {
        n: (np.sign(point[n]["kernel"]) * np.std(point[n]["kernel"].astype(np.float64))).astype(
            np.float32
        )
        for n in SHAPES
    }


def test_the_sign_control_starts_at_plus_or_minus_each_layers_std_with_theta0s_signs():
    theta0, mask = _network(5), _prior_mask(6)
    start = masked(criteria.signed_constant(theta0), mask)
    for name in SHAPES:
        w, kept = theta0[name]["kernel"], mask[name]["kernel"] > 0
        constant = np.float32(np.std(w.astype(np.float64)))
        got = start[name]["kernel"]
        assert np.array_equal(got[kept], np.sign(w[kept]) * constant)
        assert np.all(np.abs(got[kept]) == constant) and np.all(got[~kept] == 0)
        assert np.array_equal(start[name]["bias"], theta0[name]["bias"])  # not a kernel
    assert len({float(np.abs(start[n]["kernel"]).max()) for n in SHAPES}) == len(SHAPES)


def test_the_signed_reinit_control_has_the_fresh_magnitudes_and_theta0s_signs():
    theta0, fresh, mask = _network(7), _network(8), _prior_mask(9)
    start = masked(criteria.signed_reinit(fresh, theta0), mask)
    for name in SHAPES:
        kept = mask[name]["kernel"] > 0
        got = start[name]["kernel"]
        assert np.array_equal(np.sign(got[kept]), np.sign(theta0[name]["kernel"][kept]))
        assert np.array_equal(np.abs(got[kept]), np.abs(fresh[name]["kernel"][kept]))
        assert np.all(got[~kept] == 0)
        assert np.array_equal(start[name]["bias"], fresh[name]["bias"])  # the fresh draw's
        flipped = np.sign(fresh[name]["kernel"]) != np.sign(theta0[name]["kernel"])
        assert flipped[kept].any()  # the signs really came from θ0


# -- the spec: refusals (exit 2) and run ids ----------------------------------------------

FAKE = DataSource("mnist", "0" * 64, 60000, (28, 28, 1), 10, "x", loader=lambda: None)


def _resolve(name: str = "mnist-lenet", **overrides) -> descriptor.Descriptor:
    return descriptor.resolve(spec.apply_overrides(spec.load(name), overrides), FAKE)


def test_the_default_criterion_keeps_every_run_id_and_another_changes_it():
    default = _resolve()
    assert _resolve(**{"prune.criterion": "large_final"}).run_id == default.run_id
    assert "criterion" not in default.hashed["prune"]
    other = _resolve(**{"prune.criterion": "large_init"})
    assert other.run_id != default.run_id and other.hashed["prune"]["criterion"] == "large_init"
    snip = _resolve(
        "cifar10-resnet20-at-init",
        **{"prune.method": "snip", "prune.one_shot": 20, "prune.strategy": "global"},
    )
    assert "criterion" not in snip.full["prune"]  # does not apply: not in the descriptor


@pytest.mark.parametrize(
    "overrides, message",
    [
        (
            {"prune.method": "snip", "prune.one_shot": 20, "prune.strategy": "global"},
            "prune.criterion: movement ranks",
        ),
        ({"prune.method": "rigl", "prune.one_shot": 20}, "prune.criterion: movement ranks"),
        (
            {"prune.pattern": "2:4", "prune.criterion": "small_init_small_final"},
            "prune.criterion: small_init_small_final thresholds",
        ),
    ],
)
def test_a_criterion_without_a_meaning_is_refused(overrides, message):
    with pytest.raises(UsageError, match=message):
        _resolve(**{"prune.criterion": "movement", **overrides})


def test_the_sign_controls_are_refused_with_other_methods_and_accepted_with_imp():
    from ltcli.experiment import combinations

    assert combinations.member_refusal("magnitude", "sign") is None
    for method in ("snip", "gmp", "rigl"):
        for kind in ("sign", "signed_reinit"):
            assert f"run.controls: {kind}" in combinations.member_refusal(method, kind)


@pytest.mark.integration
def test_a_criterion_with_another_method_exits_2_and_writes_nothing(class_folder, tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text(
        f'[data]\ndataset = "folder:{class_folder}"\nvalidation = 50\n'
        '[model]\nname = "lenet300"\n[train]\niterations = "100it"\n'
    )
    args = ["--criterion", "large_init", "--method", "synflow", "--one-shot", "20"]
    args += ["--set", "prune.strategy=global"]
    assert_refused(path, args, "prune.criterion", tmp_path / "store", tmp_path)


# -- one tiny run --------------------------------------------------------------------------


@pytest.mark.integration
def test_a_large_init_run_stores_its_masks_and_the_sign_controls_starts(class_folder, tmp_path):
    table = {
        "data": {"dataset": f"folder:{class_folder}", "validation": 50},
        "model": {"name": "lenet300"},
        "train": {"iterations": "100it", "eval_every": "100it", "batch_size": 20},
        "prune": {"rate": 0.5, "criterion": "large_init"},
        # deterministic: every cell through one compiled program (cold: 10 s, not 40)
        "run": {"rounds": 1, "controls": "sign:1,signed_reinit:1", "deterministic": True},
    }
    store = Store(tmp_path)
    run_id = launch.run(spec.from_mapping("zhou", table), store)
    theta0 = store.load_weights(store.init_path(run_id, 0))
    template = theta0["params"]
    names = list(pruning.prunable_layers(template))
    weights = pruning.flatten(template)
    rates = {"fc1/kernel": 0.5, "fc2/kernel": 0.5, "out/kernel": 0.25}  # out: prune.rate / 2
    mask = store.read_mask(run_id, CellKey(0, 1), template)
    flat = pruning.flatten(mask)
    for name in names:  # large_init from the dense level: the largest |θ0|, IMP's counts
        keep = weights[name].size - round(rates[name] * weights[name].size)
        score = np.abs(np.asarray(weights[name], np.float64)).reshape(-1)
        assert np.array_equal(flat[name].reshape(-1), _keep(score, keep)), name
    trained = store.read_trained(run_id, CellKey(0, 0))["params"]
    imp = pruning.flatten(
        pruning.Strategy("layerwise", {"fc": 0.5, "output": 0.25}).prune(
            trained, pruning.dense_mask(template), 1
        )
    )
    assert any(not np.array_equal(flat[n], imp[n]) for n in names)  # not IMP's mask
    # sign-0: ±(each kernel's std in θ0) with θ0's signs, zero where pruned
    signed = dict(weights)
    for name in names:
        w = weights[name]
        signed[name] = (np.sign(w) * np.std(w.astype(np.float64))).astype(w.dtype)
    sign = store.read_metrics(run_id, CellKey(0, 1, "sign-0"))
    assert sign["start_digest"] == checks.digest(masked(pruning.unflatten(signed), mask))
    # signed_reinit-0: the fresh draw of the control's own stream, with θ0's signs
    cell = CellKey(0, 1, "signed_reinit-0")
    key = jax.random.PRNGKey(int(Keys(0, run_id).control(cell).integers(2**31)))
    model = models.create("lenet300", 10)
    fresh = model.init({"params": key, "dropout": key}, jnp.zeros((1, 8, 8, 1)), train=False)
    fresh = pruning.flatten(jax.device_get(fresh["params"]))
    for name in names:
        fresh[name] = np.abs(fresh[name]) * np.sign(weights[name])
    start = masked(pruning.unflatten(fresh), mask)
    assert store.read_metrics(run_id, cell)["start_digest"] == checks.digest(start)
    for member in ("sign-0", "signed_reinit-0"):  # both under the ticket's mask, trained
        control = store.read_mask(run_id, CellKey(0, 1, member), template)
        assert all(np.array_equal(flat[n], pruning.flatten(control)[n]) for n in names)
        assert store.read_metrics(run_id, CellKey(0, 1, member))["curve"]["iteration"] == [100]
