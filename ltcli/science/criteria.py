"""Zhou, Lan, Liu & Yosinski 2019, "Deconstructing Lottery Tickets: Zeros, Signs, and the
Supermask" (NeurIPS 2019), as pure functions over parameter and mask pytrees: the mask
criteria that replace IMP's "keep the largest trained |w|" (``prune.criterion``), and the
start weights of the two sign controls (``run.controls sign:1,signed_reinit:1``).

Compared with the authors' code, github.com/uber-research/deconstructing-lottery-tickets
(``get_weight_init.py``: the criteria; ``get_init_loss_train_lottery.py``: the controls).

A criterion scores the SURVIVORS of the level's previous mask from two networks: ``init``
(the network the level's survivors are rewound to: θ0, or θk with late rewinding) and
``final`` (the trained ticket the mask is pruned from: level L-1's for IMP, level 0's for
one-shot levels), and keeps the survivors of highest score with exactly the counts IMP's
magnitude rule keeps (`ltcli.science.pruning.Strategy`: per layer, pooled over the layers
with a global strategy, or per group of M with an N:M pattern). Ties go to the earlier
position, as `ltcli.science.pruning` breaks them. The scores, with wi = init and wf = final
(``get_weight_init.py`` lines 129-333):

- ``large_final``: |wf| (IMP itself; line 130), ``small_final``: -|wf| (line 186);
- ``large_init``: |wi| (line 208), ``small_init``: -|wi| (line 218);
- ``magnitude_increase``: |wf| - |wi| (line 287); ``movement``: |wf - wi| (line 326);
- ``random``: uniform random scores (line 196: a shuffled ``arange``), from the run's
  criterion stream (`ltcli.train.keys`);
- ``large_init_large_final`` / ``small_init_small_final``: the weights in the top m of the
  survivors by |wi| AND in the top m by |wf| (by -|wi| and -|wf| for small), with m chosen
  so that exactly the kept count remains: the authors' ``bsearch_quadrant_threshold``
  (lines 60-77, 228-284) searches one percentile that thresholds both, which is this rule
  with the count met approximately. lt keeps the count exactly: the score of a survivor is
  the smaller of its two ranks (0 the lowest), so keeping the top by score keeps exactly the
  weights above both thresholds, ties of the two ranks to the earlier position. Ranked per
  layer, or over the pooled layers with a global strategy; undefined for N:M groups
  (refused: the authors' threshold is a percentile of a whole layer).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from ltcli.core.pytrees import Mask, Params
from ltcli.science import pruning

DEFAULT = "large_final"
"""IMP's own criterion: the behaviour from before ``prune.criterion`` existed."""

QUADRANT = ("large_init_large_final", "small_init_small_final")
"""The criteria that threshold two rankings at once (percentiles of a layer)."""

CRITERIA = (
    DEFAULT,
    "small_final",
    "large_init",
    "small_init",
    *QUADRANT,
    "magnitude_increase",
    "movement",
    "random",
)
"""Zhou et al. 2019's mask criteria (their Figure 2), IMP's first."""


def refusal(criterion: str, pattern: pruning.Pattern | None) -> str | None:
    """Why `criterion` cannot prune under an N:M `pattern` (None: it can)."""
    if criterion in QUADRANT and pattern is not None:
        return (
            f"prune.criterion: {criterion} thresholds each layer at one percentile of two "
            "rankings (Zhou et al. 2019); an N:M pattern fixes the count of every group of "
            "M instead: use another criterion, or prune.pattern unstructured"
        )
    return None


def raw_scores(
    criterion: str,
    init: Mapping[str, np.ndarray],
    final: Mapping[str, np.ndarray],
    names: list[str],
    rng: np.random.Generator | None = None,
) -> dict[str, np.ndarray]:
    """The float64 score of every weight of the layers `names` (flat ``{name: kernel}``
    maps `init` and `final`), shaped like the layer, for a criterion that scores each weight
    alone (not `QUADRANT`). ``random`` draws `rng`'s uniforms layer by layer, in `names`'
    order.

    Raises:
      ValueError: a `QUADRANT` or unknown criterion, or ``random`` without `rng`.
    """
    out = {}
    for name in names:
        wi = np.asarray(init[name], np.float64)
        wf = np.asarray(final[name], np.float64)
        if criterion == "large_final":
            score = np.abs(wf)
        elif criterion == "small_final":
            score = -np.abs(wf)
        elif criterion == "large_init":
            score = np.abs(wi)
        elif criterion == "small_init":
            score = -np.abs(wi)
        elif criterion == "magnitude_increase":
            score = np.abs(wf) - np.abs(wi)
        elif criterion == "movement":
            score = np.abs(wf - wi)
        elif criterion == "random" and rng is not None:
            score = rng.random(wf.shape)
        else:
            raise ValueError(f"no per-weight score for criterion {criterion!r}")
        out[name] = score
    return out


def _descending_ranks(values: np.ndarray) -> np.ndarray:
    """Each entry's rank, 0 the lowest, ties ranked higher the earlier they come."""
    order = np.argsort(-values, kind="stable")
    ranks = np.empty(values.size, np.float64)
    ranks[order] = np.arange(values.size - 1, -1, -1)
    return ranks


def quadrant_scores(
    init: Mapping[str, np.ndarray], final: Mapping[str, np.ndarray], alive: Mapping[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """For the layers of `alive` (flat boolean survivors), ranked together: each survivor's
    smaller rank among the survivors by `init` and by `final` (0 the lowest), -inf for the
    others; flat. A weight in the top m of both rankings scores at least n - m."""
    names = list(alive)
    keep = np.concatenate([alive[n] for n in names])
    pooled = [np.concatenate([np.reshape(t[n], -1) for n in names])[keep] for t in (init, final)]
    both = np.full(keep.size, -np.inf)
    both[keep] = np.minimum(*(_descending_ranks(np.asarray(p, np.float64)) for p in pooled))
    sizes = np.cumsum([alive[n].size for n in names])[:-1]
    return dict(zip(names, np.split(both, sizes), strict=True))


def prune(
    strategy: pruning.Strategy,
    criterion: str,
    init: Params,
    final: Params,
    mask: Mask,
    level: int = 1,
    rng: np.random.Generator | None = None,
) -> Mask:
    """Level `level`'s mask by `criterion` (the module docstring): the survivors of `mask` of
    highest score, as many per layer (per group of M, or in all with a global strategy) as
    `strategy.prune` keeps by trained magnitude. Zhou et al. 2019; compared with
    ``get_weight_init.py`` of uber-research/deconstructing-lottery-tickets.

    Args:
      strategy: the run's pruning strategy (its counts, exclusions and pattern).
      criterion: one of `CRITERIA`; ``large_final`` is `strategy.prune` itself.
      init: the parameters the level's survivors are rewound to (θ0, or θk).
      final: the trained parameters the level prunes from.
      mask: the mask of the network `final` trained under.
      level: the level the mask is for.
      rng: the generator of ``random``'s scores.

    Raises:
      ValueError: an unknown criterion, a `QUADRANT` one with a pattern, or what
        `strategy.prune` raises.
    """
    if criterion not in CRITERIA:
        raise ValueError(f"unknown criterion {criterion!r}; known: {', '.join(CRITERIA)}")
    if criterion == DEFAULT:
        return strategy.prune(final, mask, level)
    if refused := refusal(criterion, strategy.pattern):
        raise ValueError(refused)
    kinds = strategy.targets(final)
    names = list(kinds)
    flat_i, flat_f, flat_m = pruning.flatten(init), pruning.flatten(final), pruning.flatten(mask)
    if strategy.pattern is not None:
        pruning.check_pattern(final, strategy.exclude, strategy.pattern)
        keep, m = strategy.group_keep(level), strategy.pattern[1]
        scores = raw_scores(criterion, flat_i, flat_f, names, rng)
        out = dict(flat_m)
        for name in names:
            out[name] = pruning.keep_per_group(scores[name], flat_m[name], keep, m)
        return pruning.unflatten(out)
    alive = {name: flat_m[name].reshape(-1) > 0 for name in names}
    survivors = {name: int(alive[name].sum()) for name in names}
    counts = strategy.step(
        survivors, kinds, strategy.excluded_weights(final), strategy.target(level)
    )
    if criterion in QUADRANT:
        sign = 1.0 if criterion == "large_init_large_final" else -1.0
        wi = {n: sign * np.abs(np.asarray(flat_i[n], np.float64)) for n in names}
        wf = {n: sign * np.abs(np.asarray(flat_f[n], np.float64)) for n in names}
        groups = [names] if strategy.kind == "global" else [[n] for n in names]
        flat_scores: dict[str, np.ndarray] = {}
        for group in groups:
            flat_scores |= quadrant_scores(wi, wf, {n: alive[n] for n in group})
    else:
        raw = raw_scores(criterion, flat_i, flat_f, names, rng)
        flat_scores = {n: np.where(alive[n], raw[n].reshape(-1), -np.inf) for n in names}
    if strategy.kind == "global":
        return pruning.keep_pooled(flat_scores, mask, counts["*"])
    out = dict(flat_m)
    for name in names:
        out[name] = pruning.flatten(
            pruning.keep_pooled({name: flat_scores[name]}, mask, counts[name])
        )[name]
    return pruning.unflatten(out)


def signed_constant(point: Params) -> Params:
    """Zhou et al. 2019's "constant, init sign" start (``--exp signed_constant`` of
    ``get_init_loss_train_lottery.py``, lines 349-358): every kernel of a prunable kind
    (`pruning.layer_kind`) set to its sign in `point` times one constant per layer, the
    standard deviation of that whole kernel in `point` (``np.std(initial_weights[i])``,
    pruned weights included, as there); the mask then zeroes what it prunes. Biases,
    normalization and embeddings stay as in `point` (the authors' biases start at zero,
    which their rule leaves at zero)."""
    flat = pruning.flatten(point)
    out = dict(flat)
    for name, w in flat.items():
        if pruning.layer_kind(name) is not None:
            out[name] = signed_std(w)
    return pruning.unflatten(out)


def signed_std(kernel: np.ndarray) -> np.ndarray:
    """`kernel`'s signs times the standard deviation of the whole kernel (float64), in its
    dtype: Zhou et al. 2019's signed constant of one layer."""
    kernel = np.asarray(kernel)
    return (np.sign(kernel) * np.std(kernel, dtype=np.float64)).astype(kernel.dtype)


def signed_reinit(fresh: Params, point: Params) -> Params:
    """Zhou et al. 2019's "reinit, init sign" start (``--exp signed_reinit`` of
    ``get_init_loss_train_lottery.py``, lines 318-325): every kernel of a prunable kind
    takes its magnitudes from a new initialization `fresh` and its signs from `point` (θ0,
    or θk), ``|fresh| * sign(point)``; everything else is `fresh`'s, as the reinit control's.
    The authors draw the magnitudes by shuffling the layer's initial values (the same
    distribution); lt draws a fresh initialization, as its reinit control does."""
    flat_f, flat_p = pruning.flatten(fresh), pruning.flatten(point)
    out = dict(flat_f)
    for name, w in flat_f.items():
        if pruning.layer_kind(name) is not None:
            out[name] = (np.abs(w) * np.sign(flat_p[name])).astype(w.dtype)
    return pruning.unflatten(out)
