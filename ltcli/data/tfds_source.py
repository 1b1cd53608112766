"""``tfds:NAME``: an image-classification data set that TensorFlow Datasets has already prepared.

Read with ``tfds.data_source`` (random access over ArrayRecord files; no TensorFlow needed).
tensorflow-datasets is optional (``pip install 'lt[tfds]'``) and imported only here, and lt
never lets it download: an unprepared data set is a usage error.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import orjson

from ltcli.core.errors import UsageError
from ltcli.data import base

READ_CHUNK = 4096
"""Examples read per `__getitems__` call."""


def _import_tfds() -> ModuleType:
    try:
        import tensorflow_datasets
    except ImportError as err:
        raise UsageError(
            "tfds: data sets need tensorflow-datasets, which is not installed: "
            "pip install 'lt[tfds]'"
        ) from err
    return tensorflow_datasets


def _prepared_builder(
    tfds: ModuleType, name: str, data_dir: Path | None
) -> tuple[Any, Path | None]:
    """The builder of `name` and its data folder: the first of `data_dir`, then TFDS's default
    (None: ``$TFDS_DATA_DIR`` or ``~/tensorflow_datasets``), that holds it prepared."""
    looked = []
    for folder in (data_dir, None) if data_dir else (None,):
        try:
            builder = tfds.builder(name, data_dir=folder, try_gcs=False)
        except ValueError as err:  # DatasetNotFoundError, a bad config or version
            raise UsageError(f"tfds:{name}: {str(err).splitlines()[0]}") from err
        if builder.is_prepared():
            return builder, folder
        looked.append(str(builder.data_dir))
    raise UsageError(
        f"tfds:{name}: not prepared (looked in {', '.join(looked)}); lt never downloads it. "
        f"Prepare it first, e.g. `tfds build {name} --file_format=array_record`"
    )


def _content_id(info: Any) -> str:
    """sha256 of what identifies the prepared files: name, version, per-split shard lengths
    and sizes, and the checksums of the files they were built from."""
    record = {
        "full_name": info.full_name,
        "version": str(info.version),
        "splits": {
            name: {"shard_lengths": list(split.shard_lengths), "num_bytes": split.num_bytes}
            for name, split in info.splits.items()
        },
        "download_checksums": dict(info.as_proto.download_checksums),
    }
    return hashlib.sha256(orjson.dumps(record, option=orjson.OPT_SORT_KEYS)).hexdigest()


def _read_split(
    tfds: ModuleType,
    name: str,
    folder: Path | None,
    split: str,
    keys: tuple[str, str],
    shape: tuple[int, ...],
) -> tuple[np.ndarray, np.ndarray]:
    """The images (uint8, `shape` each) and int32 labels of one prepared split, in order."""
    try:
        source = tfds.data_source(name, split=split, data_dir=folder, download=False)
    except NotImplementedError as err:  # prepared as TFRecord: no random access
        raise UsageError(
            f"tfds:{name}: the prepared files are not in a random-access format; prepare it "
            f"again with `tfds build {name} --file_format=array_record`"
        ) from err
    image_key, label_key = keys
    count = len(source)
    images = np.empty((count, *shape), np.uint8)
    labels = np.empty(count, np.int32)
    # One `__getitems__` per chunk reads its records in one ArrayRecord call, several times
    # faster than `source[i]` example by example; chunks bound the decoded dicts held at once.
    for start in range(0, count, READ_CHUNK):
        stop = min(start + READ_CHUNK, count)
        for i, example in enumerate(source.__getitems__(range(start, stop)), start):
            images[i] = example[image_key]
            labels[i] = example[label_key]
    return images, labels


def locate(name: str, data_dir: Path | None) -> base.DataSource:
    """Finds a prepared TFDS image-classification data set.

    Args:
      name: NAME of ``tfds:NAME`` (``mnist``, ``cifar10``, ``oxford_flowers102/...:2.1.1``).
      data_dir: ``--data-dir``, searched before TFDS's default folder.

    Raises:
      UsageError: tensorflow-datasets is not installed, the data set is unknown or not
        prepared, or it is not image classification with a fixed image size.
    """
    tfds = _import_tfds()
    builder, folder = _prepared_builder(tfds, name, data_dir)
    info = builder.info
    image_key, label_key = info.supervised_keys or ("image", "label")
    image, label = info.features[image_key], info.features[label_key]
    shape = tuple(image.shape)
    fixed = len(shape) == 3 and None not in shape and np.dtype(image.np_dtype) == np.uint8
    if not fixed or not hasattr(label, "num_classes"):
        raise UsageError(
            f"tfds:{name}: not image classification with one uint8 image size "
            f"({image_key} {shape}, {label_key} {label})"
        )
    test_split = next((s for s in ("test", "validation") if s in info.splits), None)
    if "train" not in info.splits or test_split is None:
        raise UsageError(f"tfds:{name}: needs a train and a test (or validation) split")

    def load() -> base.Arrays:
        keys = (image_key, label_key)
        x_train, y_train = _read_split(tfds, name, folder, "train", keys, shape)
        x_test, y_test = _read_split(tfds, name, folder, test_split, keys, shape)
        return base.Arrays(x_train, y_train, x_test, y_test)

    return base.DataSource(
        name=f"tfds:{name}",
        content_id=_content_id(info),
        train_size=info.splits["train"].num_examples,
        image_shape=shape,
        num_classes=label.num_classes,
        origin=str(builder.data_dir),
        loader=load,
    )
