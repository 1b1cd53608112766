"""Training on data streamed from the host (``data.placement = "stream"``): a data set that
does not fit the device is read batch by batch from disk by worker processes
(`ltcli.data.stream`) while the device trains.

The batch at iteration t of a cell is the one on-device training would draw: the same
`ltcli.train.engine.batch_indices` of the cell's data-order stream, computed on the device
and read on the host; augmentation that needs the original image (ImageNet's random-resized
crop) runs on the host with a generator seeded from the cell's step key and the example's
slot, and the rest (flips and crops of fixed-size images, normalization) on the device as
before. A batch is thus a pure function of (seed, replicate, data-order stream, t): resuming
mid-level, late rewinding and stability copies mean what they mean on the device, and under
``--deterministic`` a streamed cell is bit for bit the on-device cell (a test checks it).

Steps run in chunks of whole steps (`chunk_steps`) whose raw images fit `CHUNK_BYTES`, each
one jitted call of a `lax.scan`; evaluation streams validation and test the same way.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ltcli.data import DataSource
from ltcli.data import stream as host
from ltcli.data.base import StreamSplits
from ltcli.train.engine import (
    DeviceData,
    Engine,
    Group,
    eval_size,
    pixel_stats,
    standardized,
    step_key_of,
    validation_split,
)

CHUNK_BYTES = 256 * 2**20
"""At most this many bytes of raw images go to the device per call."""


@dataclasses.dataclass
class StreamData:
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
    streamed: bool = True

    @property
    def y_train(self) -> np.ndarray:
        """The training examples' labels (class-balanced samples draw from them)."""
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
        self, engine: Engine, group: Group, step0: int, evals: int, rewind_at: int
    ) -> tuple[Group, jax.Array]:
        """`Engine.segment` on streamed batches: trains `evals` periods from `step0`. With
        the ``host`` grouping (convolutions on a CPU) the cells train one after another, a
        step per call, as on the device."""
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
        table = engine._indices_of(group, step, len(self.train_ids), evals)
        ids = np.asarray(table).reshape(cells, evals * every, batch)
        keys = np.asarray(jax.device_get(group.data_key))
        records = self._records(ids, keys, step0)
        chunk = 1 if engine.grouping == "host" else self.chunk_steps(every, cells, batch)
        flat = np.swapaxes(records.reshape(cells, -1, chunk, batch, 2), 0, 1)
        rows = engine.fed_rows()  # this process's share of each batch (all, on one host)
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
            x = engine.fed_batch(np.stack(images).reshape(*shape, *self.shape))
            y = engine.fed_batch(np.stack(labels).reshape(shape))
            step_ids = jnp.asarray(ids[:, start : start + chunk])
            t0 = jnp.asarray(step0 + start, jnp.int32)
            group = engine.stream_steps(group, t0, step_ids, x, y, self.stats, rewind_at)
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
        rows its devices evaluate (`Engine.fed_rows`), and the sums are the whole job's."""
        size = eval_size(len(ids))
        padded = np.concatenate([ids, np.full(-len(ids) % size, host.PAD)])
        records = np.stack([padded, np.zeros_like(padded)], -1).reshape(-1, size, 2)
        weights = (padded != host.PAD).astype(np.float32).reshape(-1, size)
        share = records[:, engine.fed_rows(size)]
        read = host.batches(examples, share, self.shape, self.workers, self.splits.eval_transform)
        sums = [
            engine.stream_eval_sums(
                params,
                batch_stats,
                engine.fed_batch(x[None], size, axis=1),
                engine.fed_batch(y[None], size, axis=1),
                jnp.asarray(weights[i : i + 1]),
                self.stats,
            )
            for i, (x, y) in enumerate(read)
        ]
        return _totals(jnp.concatenate(sums, axis=1), jnp.asarray(weights))


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
    device (`ltcli.train.engine.split_validation`), and the normalization: the data set's
    own (ImageNet's), else the training split's per-channel mean and std as `to_device`
    computes them."""
    splits = host.splits(source)
    val_ids, train_ids = validation_split(len(splits.train), validation)
    if splits.mean is not None:
        mean, std = np.asarray(splits.mean, np.float32), np.asarray(splits.std, np.float32)
    else:
        mean, std = pixel_stats(splits.train.images[train_ids])
    empty = np.zeros((0,), np.uint8)
    stats = DeviceData(*(jax.device_put(a) for a in ((empty,) * 8 + (mean, std))))
    return StreamData(splits, train_ids, val_ids, tuple(source.image_shape), stats, workers)
