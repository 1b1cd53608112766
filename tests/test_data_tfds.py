"""``tfds:NAME``: the error paths with a fake tensorflow-datasets (it is optional, and lt must
never let it download), then a small data set really prepared as ArrayRecord in a temporary
folder, read and trained on (skipped without the ``tfds`` extra)."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from ltcli import data
from ltcli.cli.main import cli
from ltcli.core.errors import UsageError
from ltcli.data import tfds_source
from ltcli.storage.store import CellKey, Store


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


@pytest.fixture(scope="module")
def tiny_tfds(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data dir holding `TINY` prepared as ArrayRecord by a builder that is not registered
    (so lt reads it from its files alone, as it would a data set prepared elsewhere)."""
    tfds = pytest.importorskip("tensorflow_datasets")
    data_dir = tmp_path_factory.mktemp("tfds")

    with tfds.core.registered.skip_registration():

        class LtTinyDigits(tfds.core.GeneratorBasedBuilder):
            VERSION = tfds.core.Version("1.0.0")

            def _info(self) -> tfds.core.DatasetInfo:
                return tfds.core.DatasetInfo(
                    builder=self,
                    features=tfds.features.FeaturesDict(
                        {
                            "image": tfds.features.Tensor(shape=(28, 28, 1), dtype=np.uint8),
                            "label": tfds.features.ClassLabel(num_classes=10),
                        }
                    ),
                    supervised_keys=("image", "label"),
                    disable_shuffling=True,
                )

            def _split_generators(self, dl_manager: object) -> dict:
                return {split: self._generate_examples(split) for split in TINY_SIZES}

            def _generate_examples(self, split: str):
                for i, (image, label) in enumerate(zip(*tiny_examples(split), strict=True)):
                    yield i, {"image": image, "label": int(label)}

    builder = LtTinyDigits(data_dir=str(data_dir), file_format="array_record")
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(try_download_gcs=False)
    )
    return data_dir


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


def test_lt_run_trains_on_a_tfds_data_set(tiny_tfds: Path, tmp_path: Path) -> None:
    spec_path = tmp_path / "tiny-tfds.toml"
    spec_path.write_text(
        f'[data]\ndataset = "tfds:{TINY}"\nvalidation = 50\n'
        '[model]\nname = "lenet300"\n'
        '[train]\niterations = "40it"\neval_every = "20it"\nbatch_size = 25\n'
        "[prune]\nrate = 0.5\n[run]\nrounds = 1\nreplicates = 1\n"
    )
    store = tmp_path / "store"
    result = CliRunner().invoke(
        cli, ["run", str(spec_path), "--store", str(store), "--data-dir", str(tiny_tfds)]
    )
    assert result.exit_code == 0, result.output
    (run_id,) = Store(store).run_ids()
    cells = list(Store(store).finished_cells(run_id))
    assert cells == [CellKey(0, 0), CellKey(0, 1)]
    first = Store(store).read_metrics(run_id, CellKey(0, 0))
    assert first["final_test_acc"] > 0.5  # chance is 0.1
    assert Store(store).descriptor(run_id)["full"]["data"]["dataset"] == f"tfds:{TINY}"
