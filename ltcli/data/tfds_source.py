"""``tfds:NAME``: an image-classification data set that TensorFlow Datasets has already prepared.

Read with ``tfds.data_source`` (random access over ArrayRecord files; no TensorFlow needed).
tensorflow-datasets is optional (``pip install 'lt[tfds]'``) and imported only here, and lt
never lets it download: an unprepared data set is a usage error.

A data set of one image size loads whole as arrays. One whose images differ in size
(``tfds:imagenet2012``) streams from its files as an ImageNet folder does
(`ltcli.data.imagenet`): the same random-resized crops and flips for training, resize and
centre crop for evaluation, ImageNet's normalization, and its ``validation`` split as the
test split.
"""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import orjson

from ltcli.core.errors import UsageError
from ltcli.data import imagenet, imagenet_images, sources

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
    source = _data_source(tfds, name, folder, split)
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


class Examples:
    """One split of a prepared TFDS data set read example by example (`sources.Examples`):
    the decoded image as uint8 RGB (H, W, 3) and its label. Picklable for worker processes:
    it holds names and the folder, and opens its random-access source on first read.

    Raises (on reading):
      UsageError: the record cannot be decoded (it names the split and the example).
    """

    def __init__(
        self, name: str, folder: Path | None, split: str, keys: tuple[str, str], count: int
    ) -> None:
        self.name, self.folder, self.split, self.keys, self.count = name, folder, split, keys, count
        self._source: Any = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_source": None}

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int) -> tuple[np.ndarray, int]:
        if not -self.count <= index < self.count:
            raise IndexError(f"example {index} of {self.count}")
        if self._source is None:
            self._source = _data_source(_import_tfds(), self.name, self.folder, self.split)
        try:
            example = self._source[index]
            image = np.asarray(example[self.keys[0]], np.uint8)
        except Exception as err:  # the decoder's own errors differ by codec
            raise UsageError(
                f"tfds:{self.name}: example {index} of the {self.split} split cannot be "
                f"decoded ({type(err).__name__}: {err})"
            ) from err
        if image.ndim == 2 or image.shape[-1] == 1:  # greyscale
            image = np.repeat(image.reshape(*image.shape[:2], 1), 3, axis=-1)
        return image, int(example[self.keys[1]])


def _data_source(tfds: ModuleType, name: str, folder: Path | None, split: str) -> Any:
    try:
        return tfds.data_source(name, split=split, data_dir=folder, download=False)
    except NotImplementedError as err:  # prepared as TFRecord: no random access
        raise UsageError(
            f"tfds:{name}: the prepared files are not in a random-access format; prepare it "
            f"again with `tfds build {name} --file_format=array_record`"
        ) from err


def locate(name: str, data_dir: Path | None, image_size: int | None = None) -> sources.DataSource:
    """Finds a prepared TFDS image-classification data set.

    Args:
      name: NAME of ``tfds:NAME`` (``mnist``, ``cifar10``, ``imagenet2012``,
        ``oxford_flowers102/...:2.1.1``).
      data_dir: ``--data-dir``, searched before TFDS's default folder.
      image_size: for a data set of images of many sizes (streamed), the side of the
        square images the model sees (None: 224); refused for one of one size.

    Raises:
      UsageError: tensorflow-datasets is not installed, the data set is unknown or not
        prepared, it is not image classification of uint8 RGB or greyscale images, or
        `image_size` was given for images of one size.
    """
    tfds = _import_tfds()
    builder, folder = _prepared_builder(tfds, name, data_dir)
    info = builder.info
    image_key, label_key = info.supervised_keys or ("image", "label")
    image, label = info.features[image_key], info.features[label_key]
    shape = tuple(image.shape)
    images = len(shape) == 3 and np.dtype(image.np_dtype) == np.uint8
    if not images or not hasattr(label, "num_classes"):
        raise UsageError(
            f"tfds:{name}: not image classification of uint8 images "
            f"({image_key} {shape}, {label_key} {label})"
        )
    test_split = next((s for s in ("test", "validation") if s in info.splits), None)
    if "train" not in info.splits or test_split is None:
        raise UsageError(f"tfds:{name}: needs a train and a test (or validation) split")
    keys = (image_key, label_key)
    if None in shape:
        return _streamed(name, folder, info, keys, test_split, image_size or 224)
    if image_size is not None:
        raise UsageError(
            f"data.image_size: tfds:{name} has images of one size {shape[:2]}; leave "
            "data.image_size unset"
        )

    def load() -> sources.Arrays:
        x_train, y_train = _read_split(tfds, name, folder, "train", keys, shape)
        x_test, y_test = _read_split(tfds, name, folder, test_split, keys, shape)
        return sources.Arrays(x_train, y_train, x_test, y_test)

    return sources.DataSource(
        name=f"tfds:{name}",
        content_id=_content_id(info),
        train_size=info.splits["train"].num_examples,
        image_shape=shape,
        num_classes=label.num_classes,
        origin=str(builder.data_dir),
        loader=load,
    )


def _streamed(
    name: str, folder: Path | None, info: Any, keys: tuple[str, str], test: str, size: int
) -> sources.DataSource:
    """A prepared data set of images of many sizes, streamed as an ImageNet folder is."""
    if size < 8:
        raise UsageError(f"data.image_size: at least 8, not {size}")
    splits = sources.StreamSplits(
        train=Examples(name, folder, "train", keys, info.splits["train"].num_examples),
        test=Examples(name, folder, test, keys, info.splits[test].num_examples),
        train_transform=imagenet_images.TrainTransform(size),
        eval_transform=imagenet_images.EvalTransform(size),
        mean=imagenet_images.MEAN.copy(),
        std=imagenet_images.STD.copy(),
    )
    return sources.DataSource(
        name=f"tfds:{name}",
        content_id=_content_id(info),
        train_size=info.splits["train"].num_examples,
        image_shape=(size, size, 3),
        num_classes=info.features[keys[1]].num_classes,
        origin=str(Path(info.data_dir)),
        loader=functools.partial(imagenet.no_arrays, f"tfds:{name}"),
        streamed=functools.partial(_given, splits),
        resized=True,
    )


def _given(splits: sources.StreamSplits) -> sources.StreamSplits:
    return splits
