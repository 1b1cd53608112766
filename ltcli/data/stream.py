"""Examples streamed from the host, a batch at a time, decoded and transformed by worker
processes (grain), for data sets too large for the device.

What a batch holds is decided by the caller (`ltcli.train.streaming`): a table of example
indices and, per example, a seed for its host-side augmentation. This module only reads
them, in exactly that order, so a batch is a pure function of its row of the table and
resuming, rewinding and copying keep their meaning. grain (Google's deterministic data
loader for JAX) runs the reads in `workers` processes and prefetches ahead of the consumer;
a hand-written pool would have to rebuild its ordering, error propagation and shutdown.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from ltcli.data.sources import Arrays, DataSource, Examples, StreamSplits

PAD = -1
"""An index that reads as an all-zero image with label 0 (padding of evaluation batches)."""


@dataclasses.dataclass(frozen=True)
class ArrayExamples:
    """A split of an in-memory data set as `Examples` (`ltcli.data.sources`)."""

    images: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[np.ndarray, int]:
        return self.images[index], int(self.labels[index])


def splits(source: DataSource) -> StreamSplits:
    """A data set's splits as `Examples`: its own streaming reader, or its arrays (images
    of one size, augmented on the device as when they live there)."""
    if source.streamed is not None:
        return source.streamed()
    arrays: Arrays = source.load()
    return StreamSplits(
        ArrayExamples(arrays.x_train, arrays.y_train),
        ArrayExamples(arrays.x_test, arrays.y_test),
        None,
        None,
        None,
        None,
    )


@dataclasses.dataclass(frozen=True)
class _Read:
    """Reads one record ``(index, seed)``: the example, transformed with a generator seeded
    by `seed` (training) or deterministically (evaluation); `PAD` reads as zeros."""

    examples: Any
    transform: Callable[..., np.ndarray] | None
    randomized: bool
    shape: tuple[int, ...]

    def __call__(self, record: np.ndarray) -> tuple[np.ndarray, np.int32]:
        index, seed = int(record[0]), int(record[1])
        if index == PAD:
            return np.zeros(self.shape, np.uint8), np.int32(0)
        image, label = self.examples[index]
        if self.transform is not None:
            if self.randomized:
                image = self.transform(image, np.random.default_rng(seed))
            else:
                image = self.transform(image)
        return np.asarray(image, np.uint8), np.int32(label)


def batches(
    examples: Examples,
    records: np.ndarray,
    shape: tuple[int, ...],
    workers: int = 0,
    transform: Callable[..., np.ndarray] | None = None,
    randomized: bool = False,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """The batches of `records` (shape (batches, batch, 2): example index and augmentation
    seed), in order: uint8 images (batch, *shape) and int32 labels.

    Args:
      examples: the split to read.
      records: what each batch reads; an index of `PAD` reads as zeros.
      shape: one (transformed) image's shape.
      workers: processes decoding ahead of the consumer (0: in this process).
      transform: a host-side transform of each image (random-resized crop, resize and crop),
        called as ``transform(image, rng)`` when `randomized`, else ``transform(image)``.
    """
    import grain

    n, size = records.shape[:2]
    flat = grain.MapDataset.source(records.reshape(n * size, 2))
    reader = _Read(examples, transform, randomized, tuple(shape))
    read = flat.map(reader).to_iter_dataset(_read_options(examples, size))
    if workers:
        from absl import flags

        if not flags.FLAGS.is_parsed():  # grain's workers read absl flags; lt parses none
            flags.FLAGS.mark_as_parsed()
        read = read.mp_prefetch(grain.MultiprocessingOptions(num_workers=workers))
    for images, labels in read.batch(size):  # batched here: no shared memory to leak
        yield np.asarray(images), np.asarray(labels)


def _read_options(examples: Examples, batch: int) -> Any:
    """How this process's threads read ahead: not at all for arrays in memory (grain's own
    advice: threads only contend for the GIL), else two batches ahead (grain's 16 threads,
    fewer for a buffer smaller than that). grain's default buffer of 500 costs a scan of
    every buffered element at each element read (its prefetch depth statistic): 0.8 ms an
    element here, most of a streamed MNIST run's time."""
    import grain

    if isinstance(examples, ArrayExamples):
        return grain.ReadOptions(num_threads=0, prefetch_buffer_size=0)
    ahead = min(500, 2 * batch)
    return grain.ReadOptions(num_threads=min(16, ahead), prefetch_buffer_size=ahead)
