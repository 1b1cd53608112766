"""Training on data streamed from the host (``data.placement = "stream"``): a data set that
does not fit the device is read batch by batch from disk by worker processes
(`ltcli.data.stream`) while the device trains.

The batch at iteration t of a cell is the one on-device training would draw: the same
`ltcli.train.device_data.batch_indices` of the cell's data-order stream, computed on the device
and read on the host; augmentation that needs the original image (ImageNet's random-resized
crop) runs on the host with a generator seeded from the cell's step key and the example's
slot, and the rest (flips and crops of fixed-size images, normalization) on the device as
before. A batch is thus a pure function of (seed, replicate, data-order stream, t): resuming
mid-level, late rewinding and stability copies mean what they mean on the device, and under
``--deterministic`` a streamed cell is bit for bit the on-device cell (a test checks it).

Steps run in chunks of whole steps (`chunk_steps`) whose raw images fit `CHUNK_BYTES`, each
one jitted call of a `lax.scan` of the engine's step (`_train_steps`); evaluation streams
validation and test the same way (`_eval_sums`). `StreamData` is the run's
`ltcli.train.feeders.Feeder`.
"""

from __future__ import annotations

import dataclasses
import math
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from ltcli.core.pytrees import Mask, Params
from ltcli.data import DataSource
from ltcli.data import stream as host
from ltcli.data.sources import StreamSplits
from ltcli.models.layers import BN_MOMENTUM
from ltcli.science import interpolation
from ltcli.train.device_data import (
    DeviceData,
    eval_size,
    pixel_stats,
    standardized,
    step_key_of,
    validation_split,
)
from ltcli.train.engine import Engine, Group
from ltcli.train.feeders import Feeder

CHUNK_BYTES = 256 * 2**20
"""At most this many bytes of raw images go to the device per call."""


@dataclasses.dataclass
class StreamData(Feeder):
    """A data set read from the host as training asks for it.

    Attributes:
      splits: the training and test splits, readable one example at a time.
      train_ids: the examples of `splits.train` that train, in on-device order (after the
        validation hold-out).
      val_ids: the held-out examples of `splits.train` that validate.
      shape: one image's shape as the model reads it.
      stats: the normalization (mean, std) on the device, in a `DeviceData` otherwise empty.
      workers: decoding processes.
    """

    splits: StreamSplits
    train_ids: np.ndarray
    val_ids: np.ndarray
    shape: tuple[int, ...]
    stats: DeviceData
    workers: int = 0

    @property
    def labels(self) -> np.ndarray:
        return np.asarray(self.splits.train.labels, np.int32)[self.train_ids]

    def chunk_steps(self, every: int, cells: int, batch: int) -> int:
        """Steps per call: the largest divisor of `every` whose raw images fit."""
        per_step = max(1, cells * batch * math.prod(self.shape))
        fits = max(1, CHUNK_BYTES // per_step)
        return max(d for d in range(1, min(every, fits) + 1) if every % d == 0)

    def _records(self, ids: np.ndarray, keys: np.ndarray, step0: int) -> np.ndarray:
        """(cells, steps, batch, 2) records: the source index of each example and the seed
        of its host-side augmentation (from the cell's step key and the example's slot)."""
        cells, steps, batch = ids.shape
        seeds = np.zeros(ids.shape, np.int64)
        if self.splits.train_transform is not None:
            words = np.asarray(_step_keys(jnp.asarray(keys), step0 + jnp.arange(steps)))
            for c, s in np.ndindex(cells, steps):  # one Philox stream per cell and step
                key = int(words[c, s, 0]) << 32 | int(words[c, s, 1])
                generator = np.random.Generator(np.random.Philox(key=key))
                seeds[c, s] = generator.integers(0, 2**62, batch)
        return np.stack([self.train_ids[ids], seeds], axis=-1)

    def segment(
        self, engine: Engine, group: Group, step0: int, evals: int, rewind_at: int = 0
    ) -> tuple[Group, jax.Array]:
        """Trains `evals` periods from `step0` on streamed batches. With the ``host``
        grouping (convolutions on a CPU) the cells train one after another, a step per call,
        as on the device."""
        if engine.grouping == "host" and group.data_key.shape[0] > 1:
            parts = [
                self.segment(
                    engine,
                    jax.tree.map(lambda x, i=i: x[i : i + 1], group),
                    step0,
                    evals,
                    rewind_at,
                )
                for i in range(group.data_key.shape[0])
            ]
            cells, curves = zip(*parts, strict=True)
            merged = jax.tree.map(lambda *xs: jnp.concatenate(xs), *cells)
            return merged, jnp.concatenate(curves)
        cfg, cells = engine.cfg, group.data_key.shape[0]
        every, batch = cfg.eval_every, cfg.batch_size
        step = jnp.asarray(step0, jnp.int32)
        table = _indices_of(engine, group, step, len(self.train_ids), evals)
        ids = np.asarray(table).reshape(cells, evals * every, batch)
        keys = np.asarray(jax.device_get(group.data_key))
        records = self._records(ids, keys, step0)
        chunk = 1 if engine.grouping == "host" else self.chunk_steps(every, cells, batch)
        flat = np.swapaxes(records.reshape(cells, -1, chunk, batch, 2), 0, 1)
        rows = fed_rows(engine)  # this process's share of each batch (all, on one host)
        batches = host.batches(
            self.splits.train,
            flat.reshape(-1, batch, 2)[:, rows],
            self.shape,
            self.workers,
            self.splits.train_transform,
            randomized=True,
        )
        metrics = []
        for start in range(0, evals * every, chunk):
            images, labels = zip(*(next(batches) for _ in range(cells * chunk)), strict=True)
            shape = (cells, chunk, len(range(batch)[rows]))
            x = fed_batch(engine, np.stack(images).reshape(*shape, *self.shape))
            y = fed_batch(engine, np.stack(labels).reshape(shape))
            step_ids = jnp.asarray(ids[:, start : start + chunk])
            t0 = jnp.asarray(step0 + start, jnp.int32)
            group = _train_steps(engine, group, t0, step_ids, x, y, self.stats, rewind_at)
            if (start + chunk) % every == 0:
                metrics.append(self.evaluate(engine, group))
        return group, jnp.stack(metrics, axis=1)

    def evaluate(self, engine: Engine, group: Group) -> jax.Array:
        """(cells, 4) validation and test loss and accuracy, as on the device: the sums of
        whole evaluation batches, then their totals over the real examples."""
        test = np.arange(len(self.splits.test))
        return jnp.concatenate(
            [
                self._split_metrics(engine, group.params, group.batch_stats, examples, ids)
                for examples, ids in ((self.splits.train, self.val_ids), (self.splits.test, test))
            ],
            axis=-1,
        )

    def test_path(
        self,
        engine: Engine,
        a: dict[str, Any],
        b: dict[str, Any],
        mask: Mask,
        bn_x: Any,
        points: int,
    ) -> dict[str, Any]:
        """Each point's network computed on the device (`interpolation.network_at`), its
        test error read from the host (`evaluate_test`)."""
        has_stats = bool(jax.tree.leaves(a["batch_stats"]))
        alphas = np.linspace(0.0, 1.0, points, dtype=np.float32)
        rows = [
            self.evaluate_test(
                engine,
                *interpolation.network_at(
                    engine.model, a, b, mask, alpha, bn_x, BN_MOMENTUM, has_stats
                ),
            )
            for alpha in alphas
        ]
        return interpolation.summarize_path(alphas, np.stack(rows))

    def evaluate_test(self, engine: Engine, params: Any, batch_stats: Any) -> np.ndarray:
        """Test loss and accuracy of one (unstacked) network."""
        stacked = jax.tree.map(lambda x: jnp.asarray(x)[None], (params, batch_stats))
        test = np.arange(len(self.splits.test))
        return np.asarray(self._split_metrics(engine, *stacked, self.splits.test, test))[0]

    def images(self, ids: np.ndarray) -> jax.Array:
        """The normalized training examples `ids` (batch-norm samples), as evaluation reads
        them (no augmentation)."""
        records = np.stack([self.train_ids[ids], np.zeros_like(ids)], -1)[None]
        ((x, _),) = host.batches(
            self.splits.train, records, self.shape, self.workers, self.splits.eval_transform
        )
        return standardized(jnp.asarray(x), self.stats)

    def _split_metrics(
        self, engine: Engine, params: Any, batch_stats: Any, examples: Any, ids: np.ndarray
    ) -> jax.Array:
        """(cells, 2) loss and accuracy of stacked networks on the examples `ids`. In a
        multi-host job each process reads only its share of every evaluation batch, the
        rows its devices evaluate (`fed_rows`), and the sums are the whole job's."""
        size = eval_size(len(ids))
        padded = np.concatenate([ids, np.full(-len(ids) % size, host.PAD)])
        records = np.stack([padded, np.zeros_like(padded)], -1).reshape(-1, size, 2)
        weights = (padded != host.PAD).astype(np.float32).reshape(-1, size)
        share = records[:, fed_rows(engine, size)]
        read = host.batches(examples, share, self.shape, self.workers, self.splits.eval_transform)
        sums = [
            _eval_sums(
                engine,
                params,
                batch_stats,
                fed_batch(engine, x[None], size, axis=1),
                fed_batch(engine, y[None], size, axis=1),
                jnp.asarray(weights[i : i + 1]),
                self.stats,
            )
            for i, (x, y) in enumerate(read)
        ]
        return _totals(jnp.concatenate(sums, axis=1), jnp.asarray(weights))


def _fed_sharding(engine: Engine, axis: int = 2) -> NamedSharding:
    """Streamed examples split along their batch `axis` over the mesh: training batches
    (cells, steps, batch, ...), evaluation batches (batches, size, ...) along axis 1."""
    return NamedSharding(engine.mesh(), P(*(None,) * axis, "batch"))


def fed_rows(engine: Engine, size: int = 0) -> slice:
    """The rows of each streamed batch of `size` examples (0: a training batch) this
    process reads: every row, or in a multi-host job (`ltcli.core.hosts`) the rows its
    own devices train on or evaluate."""
    if jax.process_count() == 1:
        return slice(None)
    rows = range(size or engine.cfg.batch_size)
    spans = _fed_sharding(engine, 0).addressable_devices_indices_map((len(rows),)).values()
    return slice(min(rows[s[0]][0] for s in spans), max(rows[s[0]][-1] for s in spans) + 1)


def fed_batch(engine: Engine, local: np.ndarray, size: int = 0, axis: int = 2) -> jax.Array:
    """Streamed examples of this process's `fed_rows` of batches of `size` (0: a
    training batch) along `axis`, as one array of whole batches over the mesh (as they
    are, on one host)."""
    if jax.process_count() == 1:
        return jnp.asarray(local)
    shape = list(local.shape)
    shape[axis] = size or engine.cfg.batch_size
    sharding = _fed_sharding(engine, axis)
    return jax.make_array_from_process_local_data(sharding, local, tuple(shape))


def _over_cells(engine: Engine, fn: Any, *stacked: Any) -> Any:
    """`fn` applied to each cell of stacked arguments as `Engine._local_segment` applies a
    cell's segment: in a loop when deterministic or serial, else a lone cell alone, or
    vmap. With ``host`` the caller passes one cell at a time, which runs in no loop at all."""
    if engine.grouping == "host":
        assert jax.tree.leaves(stacked[0])[0].shape[0] == 1, "host: one cell at a time"
        out = fn(*jax.tree.map(lambda x: x[0], stacked))
        return jax.tree.map(lambda x: x[None], out)
    if engine.deterministic or engine.grouping == "serial":
        return jax.lax.map(lambda args: fn(*args), stacked)
    if jax.tree.leaves(stacked[0])[0].shape[0] == 1:
        out = fn(*jax.tree.map(lambda x: x[0], stacked))
        return jax.tree.map(lambda x: x[None], out)
    return jax.vmap(fn)(*stacked)


@partial(jax.jit, static_argnums=(0, 3, 4))
def _indices_of(engine: Engine, group: Group, step0: jax.Array, n: int, evals: int) -> jax.Array:
    """`Engine._indices` of every cell of `group` over `n` training examples: (cells, evals,
    every, batch), the batches on-device training would draw."""
    return jax.lax.map(lambda key: engine._draw(key, step0, evals, n), group.data_key)


@partial(jax.jit, static_argnums=(0, 7), donate_argnums=(1,))
def _train_steps(
    engine: Engine,
    group: Group,
    step0: jax.Array,
    ids: jax.Array,
    images: jax.Array,
    labels: jax.Array,
    data: DeviceData,
    rewind_at: int,
) -> Group:
    """Trains every cell of `group` on its streamed batches from iteration `step0`:
    `ids` (cells, steps, batch) and their raw `images` and `labels`; captures θk when the
    last step reaches `rewind_at`."""

    def one(cell: Group, ids: jax.Array, images: jax.Array, labels: jax.Array) -> Group:
        def train_step(cell: Group, inputs: Any) -> tuple[Group, None]:
            t, i, x, y = inputs
            return engine._step(cell, t, i, data, (x, y)), None

        steps = step0 + jnp.arange(ids.shape[0])
        unroll = engine.grouping == "host"  # no loop around XLA:CPU's convolutions
        cell, _ = jax.lax.scan(train_step, cell, (steps, ids, images, labels), unroll=unroll)
        if rewind_at:
            now = {"params": cell.params, "batch_stats": cell.batch_stats}
            done = step0 + ids.shape[0] == rewind_at
            rewind = jax.tree.map(lambda p, r: jnp.where(done, p, r), now, cell.rewind)
            cell = cell._replace(rewind=rewind)
        return cell

    rewind = group.rewind
    if not rewind_at:
        group = group._replace(rewind=None)
    out = engine._replicated(_over_cells(engine, one, group, ids, images, labels))
    return out if rewind_at else out._replace(rewind=rewind)


@partial(jax.jit, static_argnums=(0,))
def _eval_sums(
    engine: Engine,
    params: Params,
    batch_stats: Any,
    x: jax.Array,
    y: jax.Array,
    w: jax.Array,
    data: DeviceData,
) -> jax.Array:
    """Per cell of stacked networks and per evaluation batch, the summed loss and
    correct count of the streamed batches `x`, `y`, `w` (batches, size, ...): shape
    (cells, batches, 2), on every device (in a multi-host job, the sums of each
    process's share: `fed_batch`)."""

    def one(params: Any, batch_stats: Any) -> jax.Array:
        def batch(b: Any) -> tuple[jax.Array, jax.Array]:
            xb, yb, wb = b
            xb = standardized(xb, data)
            return engine._batch_sums(params, batch_stats, xb, yb, wb)

        return jnp.stack(jax.lax.map(batch, (x, y, w)), -1)

    return engine._replicated(_over_cells(engine, one, params, batch_stats))


@jax.jit
def _step_keys(keys: jax.Array, steps: jax.Array) -> np.ndarray:
    """(cells, steps, 2) uint32: each cell's step key at each of `steps`."""
    return jax.vmap(lambda k: jax.vmap(lambda t: step_key_of(k, t))(steps))(keys)


@jax.jit
def _totals(sums: jax.Array, weights: jax.Array) -> jax.Array:
    """(cells, 2) mean loss and accuracy from per-batch sums (cells, batches, 2)."""
    count = jnp.sum(weights)
    return jnp.stack([jnp.sum(sums[..., 0], -1) / count, jnp.sum(sums[..., 1], -1) / count], -1)


def put(source: DataSource, validation: int, workers: int = 0) -> StreamData:
    """A data set for streaming: its splits, the validation hold-out chosen as on the
    device (`ltcli.train.device_data.split_validation`), and the normalization: the data
    set's own (ImageNet's), else the training split's per-channel mean and std as
    `ltcli.train.device_data.to_device` computes them."""
    splits = host.splits(source)
    val_ids, train_ids = validation_split(len(splits.train), validation)
    if splits.mean is not None:
        mean, std = np.asarray(splits.mean, np.float32), np.asarray(splits.std, np.float32)
    else:
        mean, std = pixel_stats(splits.train.images[train_ids])
    empty = np.zeros((0,), np.uint8)
    stats = DeviceData(*(jax.device_put(a) for a in ((empty,) * 8 + (mean, std))))
    return StreamData(splits, train_ids, val_ids, tuple(source.image_shape), stats, workers)
