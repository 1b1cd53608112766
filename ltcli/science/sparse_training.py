"""Sparse training while training, as pure functions: layer budgets (uniform, ERK), the
schedules of mask updates (GMP's cubic sparsity, RigL's and SET's drop fractions) and the
drop-and-grow and prune steps on one layer. No file I/O; the engine calls the JAX steps
inside its compiled loop (`ltcli.train.mask_updates`).

Counts are computed on the host in float64 (`budget_counts`, `schedule_table`), so a cell's
schedule is a table of integers that its training state carries: nothing is rounded in
float32 inside the loop, and a test can recompute every count in numpy.

Ranking rule (as `ltcli.science.pruning`'s): among equal scores the earlier position (flat,
row-major) ranks higher, so it is kept before, and grown before, a later one.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np


def erk_densities(shapes: Mapping[str, Sequence[int]], density: float) -> dict[str, float]:
    """Per-layer densities whose weighted mean over the layers `shapes` is `density`, each
    proportional to (sum of the layer's dimensions) / (their product), capped at 1: the
    Erdős-Rényi-Kernel budget of Evci et al. 2020 ("Rigging the Lottery", section 3).

    As google-research/rigl's ``rigl/sparse_utils.py`` (``get_sparsities_erdos_renyi``,
    ``include_kernel=True``, power scale 1) computes it: find the scale ε that meets the
    total; while ε times the largest raw density exceeds 1, make the layers of that raw
    density dense (they still count towards the total) and solve again for the rest. rigl
    rounds each layer's zeros down; here the densities are exact and `apportion` makes the
    integer counts meet the total exactly.
    """
    sizes = {name: math.prod(shape) for name, shape in shapes.items()}
    raw = {name: sum(shape) / sizes[name] for name, shape in shapes.items()}
    dense: set[str] = set()
    while True:
        sparse = [n for n in shapes if n not in dense]
        if not sparse:
            return dict.fromkeys(shapes, 1.0)
        rhs = density * sum(sizes.values()) - sum(sizes[n] for n in dense)
        eps = rhs / sum(raw[n] * sizes[n] for n in sparse)
        top = max(raw[n] for n in sparse)
        if eps * top <= 1:
            return {n: 1.0 if n in dense else eps * raw[n] for n in shapes}
        dense |= {n for n in sparse if raw[n] == top}


def apportion(
    sizes: Mapping[str, int], densities: Mapping[str, float], total: int
) -> dict[str, int]:
    """Integer counts, at most each layer's size, summing to `total`: each layer's
    ``floor(density * size)``, then one more to the layers of largest remainder (ties: the
    earlier layer in `sizes`' order) until the total is met (the largest-remainder rule)."""
    exact = {n: densities[n] * sizes[n] for n in sizes}
    counts = {n: min(sizes[n], math.floor(exact[n])) for n in sizes}
    order = sorted(sizes, key=lambda n: -(exact[n] - counts[n]))  # stable: ties keep order
    for name in order * 2:
        if sum(counts.values()) >= total:
            break
        if counts[name] < sizes[name]:
            counts[name] += 1
    if sum(counts.values()) != total:
        raise ValueError(f"cannot keep {total} weights in layers of {dict(sizes)}")
    return counts


def budget_counts(
    shapes: Mapping[str, Sequence[int]],
    pruned: Sequence[str],
    percent: float,
    distribution: str,
) -> dict[str, int]:
    """Weights each layer of `pruned` keeps so that `percent` of all prunable weights
    (`shapes`: every prunable kernel, the excluded layers among them, which stay dense and
    count towards it, as one-shot's target in `ltcli.science.pruning.Strategy.step`)
    remain: the total is ``round(percent / 100 * all)``, spread over `pruned` uniformly (one
    density) or by `erk_densities`, then `apportion`-ed exactly.

    Raises:
      ValueError: the excluded layers alone keep more than the total.
    """
    sizes = {n: math.prod(shapes[n]) for n in pruned}
    excluded = sum(math.prod(s) for n, s in shapes.items() if n not in sizes)
    wanted = round(percent / 100 * (sum(sizes.values()) + excluded)) - excluded
    if wanted < 0:
        raise ValueError(f"the excluded layers alone keep more than {percent}% of the weights")
    density = wanted / sum(sizes.values())
    if distribution == "erk":
        densities = erk_densities({n: shapes[n] for n in pruned}, density)
    else:
        densities = dict.fromkeys(sizes, density)
    return apportion(sizes, densities, wanted)


def random_mask(shape: Sequence[int], keep: int, rng: np.random.Generator) -> np.ndarray:
    """A 0/1 float32 array of `shape` with `keep` ones at uniformly random positions (as
    rigl's ``get_mask_random``: exactly that many, shuffled)."""
    size = math.prod(shape)
    flat = np.zeros(size, np.float32)
    flat[rng.permutation(size)[:keep]] = 1.0
    return flat.reshape(shape)


# -- schedules (host, float64) -----------------------------------------------------------------


def update_steps(method: str, start: int, end: int, every: int) -> np.ndarray:
    """The iterations at which a method's step updates the mask.

    ``rigl`` and ``set``: ``start, start + every, ...`` below `end` (Evci et al. 2020,
    Algorithm 1: ``t mod ΔT == 0 and t < T_end``; rigl's ``is_mask_update_iter`` updates
    from its begin step on, step 0 included). ``gmp``: ``start + j every`` for j = 1..n,
    ``n = floor((end - start) / every)``: Zhu & Gupta 2017's pruning steps t0 + jΔt, whose
    j = 0 step is at the initial sparsity (dense), so prunes nothing."""
    if method == "gmp":
        return start + every * np.arange(1, (end - start) // every + 1)
    return np.arange(start, end, every)


def drop_fraction(t: np.ndarray, alpha: float, start: int, end: int, anneal: str) -> np.ndarray:
    """The fraction of active weights dropped at iterations `t`: α, or with ``cosine``
    α/2 (1 + cos(π (t - start) / (end - start))) (Evci et al. 2020, eq. 1 with T_end = end;
    rigl's ``get_drop_fraction``, ``cosine_decay`` over ``end_step - begin_step``)."""
    t = np.asarray(t, np.float64)
    if anneal == "constant":
        return np.full(t.shape, alpha)
    return alpha / 2 * (1 + np.cos(np.pi * (t - start) / (end - start)))


def gmp_kept(size: int, final: int, j: np.ndarray, n: int) -> np.ndarray:
    """Weights a layer of `size` keeps at GMP's pruning steps `j` (1..n) on its way to
    `final`: Zhu & Gupta 2017, eq. 1, s_t = s_f + (s_i - s_f)(1 - (t - t0)/(nΔt))^3 with
    s_i = 0 (dense) and s_f = (size - final) / size, so the layer prunes
    ``round(s_t * size)`` weights (exactly ``size - final`` at j = n). Compared with
    jaxpruner's ``sparsity_schedules.PolynomialSchedule`` (power 3), which reads the
    progress one step later, ``(step + 1 - start) / (end - start)``: lt uses the paper's t."""
    s_t = (size - final) / size * (1 - (1 - np.asarray(j, np.float64) / n) ** 3)
    return (size - np.round(s_t * size)).astype(np.int32)


def schedule_table(
    method: str,
    sizes: Mapping[str, int],
    budget: Mapping[str, int],
    steps: np.ndarray,
    *,
    alpha: float,
    start: int,
    end: int,
    anneal: str,
) -> dict[str, np.ndarray]:
    """Per layer of `budget`, an int32 count per update step of `steps`: for ``gmp`` the
    weights kept after it (`gmp_kept`); for ``set`` and ``rigl`` the weights dropped (and
    regrown), ``floor(active * drop_fraction)`` of the layer's constant ``active =
    budget[name]`` (rigl's ``_get_update_op``: ``n_prune = int(n_ones * drop_fraction)``)."""
    if method == "gmp":
        j = np.arange(1, len(steps) + 1)
        return {n: gmp_kept(sizes[n], budget[n], j, len(steps)) for n in budget}
    fractions = drop_fraction(steps, alpha, start, end, anneal)
    return {n: np.floor(budget[n] * fractions).astype(np.int32) for n in budget}


# -- one layer's mask update (JAX, inside the compiled loop) ----------------------------------


def _first(score: jax.Array, n: jax.Array, bound: int) -> jax.Array:
    """A bool array, True at the `n` (traced, at most `bound`, static) highest entries of the
    flat `score` (no NaN), ties to the earlier position. On a CPU, for a `bound` large enough
    that its band is less than half of it, `_first_in_band`; elsewhere one `jax.lax.top_k` of
    size `bound`, so no full sort (a stable argsort of LeNet's 235k weights takes 75 ms on a
    CPU)."""
    margin = _band_margin(bound)
    if 4 * margin * STRIDE > bound or score.size // STRIDE <= bound // STRIDE + margin:
        return _next_highest(score, n, bound)
    in_band = partial(_first_in_band, bound=bound, margin=margin)
    by_top_k = partial(_next_highest, k=bound)
    return jax.lax.platform_dependent(score, n, cpu=in_band, default=by_top_k)


STRIDE = 16
"""`_first_in_band`: one entry in `STRIDE` is in its sample (`_sample_positions`)."""


def _band_margin(bound: int) -> int:
    """`_first_in_band`'s band, half its width in sample ranks, for an `n` up to `bound`:
    4.5 standard deviations of the number of sampled entries among the first n (at most
    sqrt(n / STRIDE)), and 8 more."""
    return math.ceil(4.5 * math.sqrt(bound / STRIDE)) + 8


def _ordered(x: jax.Array) -> jax.Array:
    """float32 -> int32 of the same order (-0.0 below +0.0, as XLA's top_k compares)."""
    bits = jax.lax.bitcast_convert_type(x, jnp.int32)
    return jnp.where(bits < 0, bits ^ jnp.int32(0x7FFFFFFF), bits)


def _first_in_band(score: jax.Array, n: jax.Array, bound: int, margin: int) -> jax.Array:
    """`_first`, exactly, with a `top_k` of a band of ``2 margin STRIDE`` entries instead of
    one of `bound`: on a CPU, XLA's `top_k` costs about its k log k (7k of LeNet's 235k
    weights: 4 ms, the bulk of a RigL update; 70: 0.4 ms). `n` is at most the number of
    entries above -inf (the callers' scores put -inf only where nothing may be chosen).

    A random sample's top ranks bracket the n-th entry's value between `lo` and `hi`; every
    entry above `hi` is among the first n (there are at most n of them), and the rest are
    the highest entries of the band [lo, hi] (at least n entries lie at or above `lo`),
    ranked by one `top_k` over the band alone. Where the bracket misses (the counts say
    so), the first n are peeled off a band's width at a time, highest first, in a
    `while_loop` that under `vmap` too runs only while some cell needs it."""
    width = 2 * margin * STRIDE
    key = _ordered(score)
    sample = score[_sample_positions(score.size)]
    size = bound // STRIDE + margin + 1
    top = _ordered(jax.lax.top_k(sample, size)[0])
    rank = n // STRIDE
    highest = jnp.iinfo(jnp.int32).max
    hi = jnp.where(rank < margin, highest, top[jnp.clip(rank - margin, 0, size - 1)])
    lo = top[jnp.clip(rank + margin, 0, size - 1)]
    above = key > hi
    need = n - jnp.sum(above)
    band = (key >= lo) & ~above
    found = (need >= 0) & (jnp.sum(band) >= need) & (need <= width) & (lo > _ordered(-jnp.inf))
    first = above | _next_highest(jnp.where(band, score, -jnp.inf), need, width)

    def peel(state: tuple[jax.Array, jax.Array]) -> tuple[jax.Array, jax.Array]:
        chosen, left = state
        chosen = chosen | _next_highest(jnp.where(chosen, -jnp.inf, score), left, width)
        return chosen, left - jnp.minimum(left, width)

    start = (jnp.where(found, first, False), jnp.where(found, 0, n))
    return jax.lax.while_loop(lambda state: state[1] > 0, peel, start)[0]


def _sample_positions(size: int) -> np.ndarray:
    """One in `STRIDE` of `size` positions, drawn at random once (a fixed stride would alias
    with a layer's width: every 16th weight of LeNet's 784 x 300 lies in a quarter of its
    units)."""
    return np.sort(np.random.default_rng(size).choice(size, size // STRIDE, replace=False))


def _next_highest(score: jax.Array, count: jax.Array, k: int) -> jax.Array:
    """True at the min(`count`, `k`) highest entries of `score`, ties to the earlier."""
    _, index = jax.lax.top_k(score, k)
    return jnp.zeros(score.shape, bool).at[index].set(jnp.arange(k) < count)


def _lowest_active(mask: jax.Array, weights: jax.Array, n: jax.Array, bound: int) -> jax.Array:
    """A bool array (flat), True at the `n` active weights of smallest |w|; among equal |w|
    the later position goes first, so the earlier is kept (`ltcli.science.pruning`'s rule)."""
    active = mask.reshape(-1) > 0
    score = jnp.where(active, -_magnitude(weights), -jnp.inf)
    return _first(score[::-1], n, bound)[::-1]


def _magnitude(weights: jax.Array) -> jax.Array:
    """|w| flat, NaN as 0 (a diverged cell's mask still keeps its exact counts)."""
    return jnp.nan_to_num(jnp.abs(weights.reshape(-1)), nan=0.0)


def drop_and_grow(
    mask: jax.Array, weights: jax.Array, grow_score: jax.Array, n_drop: jax.Array, bound: int
) -> jax.Array:
    """One layer's mask after dropping the `n_drop` (at most `bound`, static) active weights
    of smallest |w| and growing as many of highest `grow_score` among the positions left
    inactive.

    SET (Mocanu et al. 2018) grows at random scores, RigL (Evci et al. 2020, Algorithm 1)
    at the dense gradient's magnitude. As rigl's ``_get_update_op``
    (rigl/sparse_optimizers_base.py) and jaxpruner's ``SET._update_masks``
    (jaxpruner/algorithms/sparse_trainers.py) do, a weight dropped at this update is a
    candidate for growing again (the paper's ``i ∉ θ \\ I_drop``): neither reference keeps
    just-dropped positions out. rigl breaks ties of |w| with noise of std 1e-5; here the
    earlier position is kept and grown first (jaxpruner's ``top_k``), so an update is a pure
    function of its inputs. The active count is unchanged."""
    kept = (mask.reshape(-1) > 0) & ~_lowest_active(mask, weights, n_drop, bound)
    grow = jnp.nan_to_num(grow_score.reshape(-1), nan=0.0)
    grown = _first(jnp.where(kept, -jnp.inf, grow), n_drop, bound) & ~kept
    return (kept | grown).astype(mask.dtype).reshape(mask.shape)


def prune_to(mask: jax.Array, weights: jax.Array, keep: jax.Array, bound: int) -> jax.Array:
    """One layer's mask keeping its `keep` active weights of largest |w|, removing at most
    `bound` (static) (GMP's step; Zhu & Gupta 2017 prune the smallest magnitudes, as
    TensorFlow's model_pruning does)."""
    active = mask.reshape(-1) > 0
    dropped = _lowest_active(mask, weights, jnp.sum(active) - keep, bound)
    return (active & ~dropped).astype(mask.dtype).reshape(mask.shape)


def drop_bounds(
    method: str, sizes: Mapping[str, int], tables: Sequence[Mapping[str, np.ndarray]]
) -> dict[str, int]:
    """The most weights any update of `tables` (`schedule_table`'s, of cells of one group)
    drops in each layer, at least 1: the static size of the update's top-k."""
    bounds = {}
    for name in tables[0]:
        if method == "gmp":
            drops = [np.max(-np.diff(np.concatenate([[sizes[name]], t[name]]))) for t in tables]
        else:
            drops = [np.max(t[name]) for t in tables]
        bounds[name] = max(1, int(max(drops)))
    return bounds
