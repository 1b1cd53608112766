"""The data set on the device and the batches read from it: the validation hold-out and
normalization (`to_device`), text windows (`to_device_text`), each cell's order of batches
(`batch_indices`, `window_starts`), its per-step randomness (`step_key_of`) and
augmentation.
"""

from __future__ import annotations

import math
from fractions import Fraction
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ltcli.data import Arrays, TextArrays, text
from ltcli.train.summary import TextScored

EVAL_BATCH = 1000


class DeviceData(NamedTuple):
    """A data set on the device. Eval sets are padded to whole batches; `*_w` marks the real
    examples with 1.

    Text (`to_device_text`): `x_train` is the training split's token stream, `x_val` and
    `x_test` are batches of windows of context + 1 tokens (input and next-token targets),
    the labels are unused zeros and `mean`, `std` are 0 and 1.
    """

    x_train: jax.Array
    y_train: jax.Array
    x_val: jax.Array
    y_val: jax.Array
    w_val: jax.Array
    x_test: jax.Array
    y_test: jax.Array
    w_test: jax.Array
    mean: jax.Array
    std: jax.Array


def eval_size(examples: int) -> int:
    """Examples per evaluation batch of a set of `examples`: all of them, at most
    `EVAL_BATCH`; in a multi-host job (`ltcli.core.hosts`) rounded up to a multiple of its
    devices, so that each device, and so each process, evaluates an equal share of every
    batch (`ltcli.train.streaming.fed_rows`; the padding weighs nothing)."""
    return _shared(min(EVAL_BATCH, max(examples, 1)))


def _shared(size: int) -> int:
    """`size` examples a batch, rounded up in a multi-host job to a multiple of its devices."""
    return size + (-size % jax.device_count() if jax.process_count() > 1 else 0)


def _batched(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    n = len(y)
    size = eval_size(n)
    pad = -n % size
    w = np.concatenate([np.ones(n, np.float32), np.zeros(pad, np.float32)])
    x = np.concatenate([x, np.zeros((pad, *x.shape[1:]), x.dtype)])
    y = np.concatenate([y, np.zeros(pad, y.dtype)])
    batches = len(w) // size
    return (
        x.reshape(batches, size, *x.shape[1:]),
        y.reshape(batches, size),
        w.reshape(batches, size),
    )


EVAL_TOKENS = 32768
"""Tokens per evaluation batch of a text data set (windows of the context length)."""


def text_windows(tokens: np.ndarray, count: int, context: int) -> np.ndarray:
    """The windows of ``context + 1`` tokens of a split that evaluation reads, up to `count`
    spread evenly over the whole split (`text.eval_starts`): inputs and next-token targets."""
    starts = text.eval_starts(len(tokens), count, context)
    return tokens[starts[:, None] + np.arange(context + 1)]


def text_scored(arrays: TextArrays, windows: int, context: int) -> TextScored:
    """What evaluation scores of `arrays`' validation and test splits (`TextScored`)."""
    targets = [text_windows(s, windows, context)[:, 1:] for s in (arrays.validation, arrays.test)]
    return TextScored(
        (targets[0].size, targets[1].size),
        (int(arrays.widths[targets[0]].sum()), int(arrays.widths[targets[1]].sum())),
    )


def to_device_text(arrays: TextArrays, windows: int, context: int) -> DeviceData:
    """A text data set on the device: the training stream, and up to `windows` windows of
    the validation and test splits (`text_windows`) in batches of about `EVAL_TOKENS`."""
    size = max(1, min(windows, EVAL_TOKENS // context))

    def batched(split: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        x = text_windows(split, windows, context).astype(np.int32)
        n = len(x)
        per = _shared(min(size, n))  # in a multi-host job, each device its share (`eval_size`)
        pad = -n % per
        w = np.concatenate([np.ones(n, np.float32), np.zeros(pad, np.float32)])
        x = np.concatenate([x, np.zeros((pad, *x.shape[1:]), x.dtype)])
        b = len(w) // per
        return x.reshape(b, -1, context + 1), np.zeros((b, len(w) // b), np.int32), w.reshape(b, -1)

    host = (
        arrays.train.astype(np.int32),
        np.zeros(0, np.int32),
        *batched(arrays.validation),
        *batched(arrays.test),
        np.zeros((), np.float32),
        np.ones((), np.float32),
    )
    return DeviceData(*(jax.device_put(a) for a in host))


def validation_split(n: int, validation: int) -> tuple[np.ndarray, np.ndarray]:
    """(held-out, training) indices of `n` training examples: `validation` of them chosen
    by a fixed permutation (seed 0), the rest in their order."""
    order = np.random.default_rng(0).permutation(n)
    return order[:validation], np.sort(order[validation:])


def pixel_stats(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and standard deviation (float32) of uint8 images, the
    normalization of every data set lt keeps whole.

    Computed from each channel's histogram of the 256 values in exact integer arithmetic,
    then rounded once: the float64 mean and variance are the correctly rounded ones (a
    float64 pass over MNIST's 46M pixels took 2 s a run)."""
    means, stds = [], []
    values = np.arange(256, dtype=np.int64)
    for channel in range(images.shape[-1]):
        counts = np.bincount(images[..., channel].reshape(-1), minlength=256).astype(np.int64)
        n, total, squares = (int(x) for x in (counts.sum(), counts @ values, counts @ values**2))
        means.append(total / n)
        stds.append(math.sqrt(Fraction(n * squares - total * total, n * n)) + 1e-8)
    return np.asarray(means, np.float32), np.asarray(stds, np.float32)


def split_validation(arrays: Arrays, validation: int) -> tuple[Arrays, np.ndarray, np.ndarray]:
    """Holds `validation` training examples out, chosen by a fixed permutation (seed 0).

    Returns:
      The arrays with the training split reduced, and the held-out images and labels.
    """
    val, train = validation_split(len(arrays.y_train), validation)
    reduced = arrays._replace(x_train=arrays.x_train[train], y_train=arrays.y_train[train])
    return reduced, arrays.x_train[val], arrays.y_train[val]


def to_device(arrays: Arrays, validation: int) -> DeviceData:
    """Splits off the validation set and puts everything on the default device.

    Images stay uint8 on the device and are normalized per batch by the training-split
    per-channel mean and standard deviation.
    """
    arrays, x_val, y_val = split_validation(arrays, validation)
    mean, std = pixel_stats(arrays.x_train)
    val, test = _batched(x_val, y_val), _batched(arrays.x_test, arrays.y_test)
    host = (
        arrays.x_train,
        arrays.y_train,
        *val,
        *test,
        mean,
        std,
    )
    return DeviceData(*(jax.device_put(a) for a in host))


def batch_indices(key: jax.Array, step0: jax.Array, steps: int, batch: int, n: int) -> jax.Array:
    """Indices of the `steps` batches that start at iteration `step0`, shape (steps, batch).

    The examples are an endless stream of epochs, each an independent permutation of the
    `n` training examples keyed by ``fold_in(key, epoch)`` (`key` is the data-order stream).
    Batch ``t`` is stream positions ``[t * batch, (t + 1) * batch)``, so no example is
    dropped and any iteration can be reached without replaying the ones before it.
    """
    start = step0 * batch
    first_epoch = start // n
    epochs = math.ceil(steps * batch / n) + 1
    perms = [
        jnp.argsort(jax.random.bits(jax.random.fold_in(key, first_epoch + i), (n,)))
        for i in range(epochs)
    ]
    stream = jnp.concatenate(perms)
    window = jax.lax.dynamic_slice(stream, (start - first_epoch * n,), (steps * batch,))
    return window.reshape(steps, batch)


def standardized(images: jax.Array, data: DeviceData) -> jax.Array:
    """Raw uint8 images normalized by the data set's per-channel mean and std."""
    return (images.astype(jnp.float32) - data.mean) / data.std


def step_key_of(data_key: jax.Array, t: jax.Array) -> jax.Array:
    """The key of a cell's per-step randomness at iteration t (dropout, augmentation).

    A cell's key has two independent streams: data order (0, per epoch, see
    `batch_indices`) and per-step randomness (1)."""
    return jax.random.fold_in(jax.random.fold_in(data_key, 1), t)


def window_starts(key: jax.Array, step0: jax.Array, steps: int, batch: int, n: int) -> jax.Array:
    """Start positions of the text windows of the `steps` batches from iteration `step0`,
    shape (steps, batch): batch ``t`` is `batch` positions in [0, n) drawn uniformly with
    replacement by ``fold_in(key, t)`` (as nanoGPT draws random windows), so it is a pure
    function of the data-order stream and t, and a resumed cell draws what it would have."""
    steps_t = step0 + jnp.arange(steps)
    return jax.vmap(lambda t: jax.random.randint(jax.random.fold_in(key, t), (batch,), 0, n))(
        steps_t
    )


def augment(images: jax.Array, key: jax.Array) -> jax.Array:
    """Random horizontal flips and 4-pixel pad-and-crop, one draw per image.

    `images` are the raw pixels, so the padding is black (zeros before normalization), as in
    the paper's and open_lth's ``RandomCrop(32, padding=4)`` on unnormalized images."""
    flip_key, crop_key = jax.random.split(key)
    b, h, w, c = images.shape
    flip = jax.random.bernoulli(flip_key, 0.5, (b,))
    images = jnp.where(flip[:, None, None, None], images[:, :, ::-1], images)
    padded = jnp.pad(images, ((0, 0), (4, 4), (4, 4), (0, 0)))
    offsets = jax.random.randint(crop_key, (b, 2), 0, 9)

    def crop(image: jax.Array, offset: jax.Array) -> jax.Array:
        return jax.lax.dynamic_slice(image, (offset[0], offset[1], 0), (h, w, c))

    return jax.vmap(crop)(padded, offsets)
