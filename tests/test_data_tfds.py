"""``tfds:NAME``: the error paths with a fake tensorflow-datasets (it is optional, and lt must
never let it download), then a small data set really prepared as ArrayRecord in a temporary
folder, read and trained on (skipped without the ``tfds`` extra)."""

from __future__ import annotations

import io
import sys
import types
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
from click.testing import CliRunner

from ltcli import data
from ltcli.cli.main import cli
from ltcli.core.errors import UsageError
from ltcli.data import tfds_source
from ltcli.storage.store import CellKey, Store

pytestmark = pytest.mark.unit


def test_missing_tensorflow_datasets_says_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)  # makes the import fail
    with pytest.raises(UsageError, match=r"pip install 'lt\[tfds\]'"):
        data.locate("tfds:mnist")


class _UnpreparedBuilder:
    def __init__(self, name: str, data_dir: Path | None) -> None:
        root = data_dir or Path("/home/me/tensorflow_datasets")
        self.data_dir = root / name / "3.0.1"

    def is_prepared(self) -> bool:
        return False

    def download_and_prepare(self, *args: object, **kwargs: object) -> None:
        raise AssertionError("lt must never download")


def _fake_tfds(calls: list) -> types.ModuleType:
    module = types.ModuleType("tensorflow_datasets")

    def builder(name: str, data_dir: Path | None = None, try_gcs: bool = True) -> object:
        calls.append(("builder", name, data_dir, try_gcs))
        if name == "nope":
            raise ValueError("Dataset nope not found.\nAvailable datasets: ...")
        return _UnpreparedBuilder(name, data_dir)

    def data_source(*args: object, **kwargs: object) -> None:
        raise AssertionError("an unprepared data set must not be read (nor downloaded)")

    module.builder = builder
    module.data_source = data_source
    return module


def test_unprepared_data_is_a_usage_error_that_never_downloads(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    calls: list = []
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", _fake_tfds(calls))
    with pytest.raises(UsageError) as err:
        data.locate("tfds:mnist", tmp_path)
    message = str(err.value)
    assert "not prepared" in message and "never downloads" in message
    assert str(tmp_path / "mnist" / "3.0.1") in message  # --data-dir was searched
    assert "/home/me/tensorflow_datasets/mnist/3.0.1" in message  # then TFDS's default
    assert "tfds build mnist" in message
    assert calls == [("builder", "mnist", tmp_path, False), ("builder", "mnist", None, False)]


def test_an_unknown_tfds_name_is_a_usage_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", _fake_tfds([]))
    with pytest.raises(UsageError, match=r"^tfds:nope: Dataset nope not found\.$"):
        data.locate("tfds:nope")


# -- a real prepared data set -------------------------------------------------------------------

TINY = "lt_tiny_digits"
TINY_SIZES = {"train": 300, "test": 100}


def tiny_examples(split: str) -> tuple[np.ndarray, np.ndarray]:
    """Images whose label is where a bright band lies, over noise: learnable in a few steps."""
    rng = np.random.default_rng(TINY_SIZES[split])
    count = TINY_SIZES[split]
    labels = np.arange(count, dtype=np.int32) % 10
    images = rng.integers(0, 60, (count, 28, 28, 1), dtype=np.uint8)
    for image, label in zip(images, labels, strict=True):
        image[2 + 2 * label : 4 + 2 * label] = 255
    return images, labels


def prepare(
    tfds: types.ModuleType,
    data_dir: Path,
    class_name: str,
    features: dict,
    examples: Callable[[str], Iterator[dict]],
    splits: Iterable[str],
) -> Path:
    """Prepares a data set as ArrayRecord in `data_dir` with a builder that is not
    registered (so lt reads it from its files alone, as it would one prepared elsewhere);
    its name is `class_name` in snake case. `examples(split)` yields its examples."""

    def info(self: tfds.core.GeneratorBasedBuilder) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            features=tfds.features.FeaturesDict(features),
            supervised_keys=("image", "label"),
            disable_shuffling=True,
        )

    def split_generators(self: tfds.core.GeneratorBasedBuilder, dl_manager: object) -> dict:
        return {split: self._generate_examples(split) for split in splits}

    def generate_examples(self: object, split: str) -> Iterator[tuple[int, dict]]:
        yield from enumerate(examples(split))

    methods = {"_info": info, "_split_generators": split_generators}
    methods["_generate_examples"] = generate_examples
    with tfds.core.registered.skip_registration():  # the builder's name: the class name's
        builder_class = type(
            class_name,
            (tfds.core.GeneratorBasedBuilder,),
            {"VERSION": tfds.core.Version("1.0.0"), **methods},
        )
    builder = builder_class(data_dir=str(data_dir), file_format="array_record")
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(try_download_gcs=False)
    )
    return data_dir


@pytest.fixture(scope="module")
def tiny_tfds(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data dir holding `TINY` prepared as ArrayRecord."""
    tfds = pytest.importorskip("tensorflow_datasets")
    features = {
        "image": tfds.features.Tensor(shape=(28, 28, 1), dtype=np.uint8),
        "label": tfds.features.ClassLabel(num_classes=10),
    }

    def examples(split: str) -> Iterator[dict]:
        for image, label in zip(*tiny_examples(split), strict=True):
            yield {"image": image, "label": int(label)}

    folder = tmp_path_factory.mktemp("tfds")
    return prepare(tfds, folder, "LtTinyDigits", features, examples, TINY_SIZES)


def test_a_prepared_array_record_data_set_loads_in_order(
    tiny_tfds: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tfds_source, "READ_CHUNK", 64)  # several chunks, a partial last one
    source = data.locate(f"tfds:{TINY}", tiny_tfds)
    assert source.name == f"tfds:{TINY}"
    assert (source.train_size, source.image_shape, source.num_classes) == (300, (28, 28, 1), 10)
    assert source.content_id == data.locate(f"tfds:{TINY}", tiny_tfds).content_id
    arrays = source.load()
    for got, want in zip(arrays, (*tiny_examples("train"), *tiny_examples("test")), strict=True):
        assert got.dtype == want.dtype and np.array_equal(got, want)


def _lt_run(tmp_path: Path, data_dir: Path, data_fields: str, train: str) -> tuple[Store, str]:
    """`lt run` of LeNet for two levels on a TFDS data set; the store and the run id."""
    spec_path = tmp_path / "tfds.toml"
    spec_path.write_text(
        f'[data]\n{data_fields}[model]\nname = "lenet300"\n[train]\n{train}'
        "[prune]\nrate = 0.5\n[run]\nrounds = 1\nreplicates = 1\n"
    )
    store = tmp_path / "store"
    result = CliRunner().invoke(
        cli, ["run", str(spec_path), "--store", str(store), "--data-dir", str(data_dir)]
    )
    assert result.exit_code == 0, result.output
    (run_id,) = Store(store).run_ids()
    assert list(Store(store).finished_cells(run_id)) == [CellKey(0, 0), CellKey(0, 1)]
    return Store(store), run_id


@pytest.mark.integration
def test_lt_run_trains_on_a_tfds_data_set(tiny_tfds: Path, tmp_path: Path) -> None:
    store, run_id = _lt_run(
        tmp_path,
        tiny_tfds,
        f'dataset = "tfds:{TINY}"\nvalidation = 50\n',
        'iterations = "40it"\neval_every = "20it"\nbatch_size = 25\n',
    )
    first = store.read_metrics(run_id, CellKey(0, 0))
    assert first["final_test_acc"] > 0.5  # chance is 0.1
    assert store.descriptor(run_id)["full"]["data"]["dataset"] == f"tfds:{TINY}"


# -- a prepared data set of images of many sizes (as tfds:imagenet2012 is) ------------------------

SIZED = "lt_tiny_imagenet"
SIZED_COUNTS = {"train": 24, "validation": 9}


def sized_examples(split: str) -> list[tuple[np.ndarray, int]]:
    """RGB images of several sizes whose label is the dominant colour channel."""
    rng = np.random.default_rng(SIZED_COUNTS[split])
    found = []
    for i in range(SIZED_COUNTS[split]):
        height, width = 20 + 7 * (i % 4), 24 + 5 * (i % 3)
        image = rng.integers(0, 60, (height, width, 3), dtype=np.uint8)
        image[..., i % 3] = 230
        found.append((image, i % 3))
    return found


@pytest.fixture(scope="module")
def sized_tfds(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`SIZED` prepared as ArrayRecord with JPEG-encoded images of many sizes, as TFDS
    prepares ImageNet (train and validation splits)."""
    tfds = pytest.importorskip("tensorflow_datasets")
    features = {
        "image": tfds.features.Image(encoding_format="jpeg"),
        "label": tfds.features.ClassLabel(num_classes=3),
    }

    def examples(split: str) -> Iterator[dict]:
        for image, label in sized_examples(split):
            encoded = io.BytesIO()  # TFDS would encode with TensorFlow: PIL does here
            PIL.Image.fromarray(image).save(encoded, format="JPEG", quality=95)
            encoded.seek(0)
            yield {"image": encoded, "label": label}

    folder = tmp_path_factory.mktemp("tfds-sized")
    return prepare(tfds, folder, "LtTinyImagenet", features, examples, SIZED_COUNTS)


def test_images_of_many_sizes_stream_with_imagenets_transforms(
    sized_tfds: Path, tiny_tfds: Path
) -> None:
    import pickle

    source = data.locate(f"tfds:{SIZED}", sized_tfds, image_size=16)
    assert source.streamed is not None and source.resized
    assert (source.train_size, source.image_shape, source.num_classes) == (24, (16, 16, 3), 3)
    splits = pickle.loads(pickle.dumps(source.streamed()))  # as worker processes get them
    assert (len(splits.train), len(splits.test)) == (24, 9)  # validation is the test split
    for split, examples in (("train", splits.train), ("validation", splits.test)):
        for i, (want, label) in enumerate(sized_examples(split)):
            image, got = examples[i]
            assert image.shape == want.shape and image.dtype == np.uint8 and got == label
            assert np.abs(image.astype(int) - want).mean() < 20  # JPEG is lossy
    rng = np.random.default_rng(0)
    assert splits.train_transform(splits.train[0][0], rng).shape == (16, 16, 3)
    assert splits.eval_transform(splits.test[0][0]).shape == (16, 16, 3)
    with pytest.raises(UsageError, match=r"data\.image_size"):  # one size: nothing to resize
        data.locate(f"tfds:{TINY}", tiny_tfds, image_size=16)


@pytest.mark.integration
def test_lt_run_streams_a_tfds_data_set_of_many_sizes(sized_tfds: Path, tmp_path: Path) -> None:
    store, run_id = _lt_run(
        tmp_path,
        sized_tfds,
        f'dataset = "tfds:{SIZED}"\nvalidation = 6\nimage_size = 16\n',
        'iterations = "8it"\neval_every = "4it"\nbatch_size = 6\n',
    )
    full = store.descriptor(run_id)["full"]["data"]
    assert (full["dataset"], full["image_size"]) == (f"tfds:{SIZED}", 16)
