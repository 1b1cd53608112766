"""CIFAR-10 reader: small batches written in the real on-disk formats (pickle and binary, as an
archive and extracted) must decode to the same NHWC arrays and the same content id."""

from __future__ import annotations

import io
import os
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest

from ltcli import data
from ltcli.core.errors import UsageError
from ltcli.data import cifar

pytestmark = pytest.mark.unit

N = 4  # images per batch file in these tests (10000 in the real data)
BATCHES = [*cifar.TRAIN_BATCHES, cifar.TEST_BATCH]


@pytest.fixture(autouse=True)
def _small(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(cifar, "BATCH_SIZE", N)
    monkeypatch.setenv("LT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("LT_DATA_DIR", raising=False)


@pytest.fixture
def batches() -> dict[str, tuple[np.ndarray, list[int]]]:
    """Rows of 3072 bytes in CHW order, and labels, per batch file."""
    rng = np.random.default_rng(7)
    return {
        name: (rng.integers(0, 256, (N, 3072), dtype=np.uint8), rng.integers(0, 10, N).tolist())
        for name in BATCHES
    }


def _pickled(rows: np.ndarray, labels: list[int], name: str) -> bytes:
    batch = {
        b"batch_label": f"{name} of 6".encode(),
        b"labels": labels,
        b"data": rows,
        b"filenames": [f"img_{i}.png".encode() for i in range(len(labels))],
    }
    return pickle.dumps(batch, protocol=2)


def _binary(rows: np.ndarray, labels: list[int]) -> bytes:
    return np.concatenate([np.asarray(labels, np.uint8)[:, None], rows], axis=1).tobytes()


def _write_tar(path: Path, members: dict[str, bytes]) -> None:
    with tarfile.open(path, "w:gz") as tar:
        for name, payload in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))


def _write(form: str, root: Path, batches: dict) -> Path:
    """Writes `batches` in one of the four distributed forms under `root`; returns `root`."""
    if form.startswith("py"):
        folder, files = "cifar-10-batches-py", {n: _pickled(*b, n) for n, b in batches.items()}
        extra = {"batches.meta": pickle.dumps({b"label_names": [b"airplane"]}, protocol=2)}
    else:
        folder, files = (
            "cifar-10-batches-bin",
            {f"{n}.bin": _binary(*b) for n, b in batches.items()},
        )
        extra = {"batches.meta.txt": b"airplane\n"}
    files = {**extra, **files, "readme.html": b"<html></html>"}
    root.mkdir(parents=True, exist_ok=True)
    if form.endswith("archive"):
        archive = "cifar-10-python.tar.gz" if form.startswith("py") else "cifar-10-binary.tar.gz"
        # Members out of order, as in the real archive.
        _write_tar(root / archive, {f"{folder}/{n}": files[n] for n in sorted(files, reverse=True)})
    else:
        (root / folder).mkdir()
        for name, payload in files.items():
            (root / folder / name).write_bytes(payload)
    return root


FORMS = ["py-folder", "py-archive", "bin-folder", "bin-archive"]


def _expected(batches: dict, names: list[str]) -> tuple[np.ndarray, np.ndarray]:
    images = np.zeros((N * len(names), 32, 32, 3), np.uint8)
    labels = []
    for b, name in enumerate(names):
        rows, batch_labels = batches[name]
        labels += batch_labels
        for i in range(N):  # pixel (row r, column c) of channel ch is byte ch*1024 + r*32 + c
            for ch in range(3):
                images[b * N + i, :, :, ch] = rows[i, ch * 1024 : (ch + 1) * 1024].reshape(32, 32)
    return images, np.asarray(labels, np.int32)


@pytest.mark.parametrize("form", FORMS)
def test_each_form_round_trips_to_nhwc_arrays(form: str, tmp_path: Path, batches: dict) -> None:
    root = _write(form, tmp_path / "data", batches)

    source = data.locate("cifar10", root)
    arrays = source.load()

    x_train, y_train = _expected(batches, list(cifar.TRAIN_BATCHES))
    x_test, y_test = _expected(batches, [cifar.TEST_BATCH])
    np.testing.assert_array_equal(arrays.x_train, x_train)
    np.testing.assert_array_equal(arrays.y_train, y_train)
    np.testing.assert_array_equal(arrays.x_test, x_test)
    np.testing.assert_array_equal(arrays.y_test, y_test)
    assert arrays.x_train.dtype == np.uint8 and arrays.y_train.dtype == np.int32
    assert (source.train_size, source.image_shape, source.num_classes) == (5 * N, (32, 32, 3), 10)
    assert Path(source.origin).parent == root


def test_all_forms_give_one_content_id_that_follows_the_pixels(
    tmp_path: Path, batches: dict
) -> None:
    ids = {
        form: data.locate("cifar10", _write(form, tmp_path / form, batches)).content_id
        for form in FORMS
    }
    assert len(set(ids.values())) == 1, ids

    rows, labels = batches["data_batch_3"]
    rows = rows.copy()
    rows[2, 5] ^= 1
    changed = _write("py-folder", tmp_path / "changed", {**batches, "data_batch_3": (rows, labels)})
    assert data.locate("cifar10", changed).content_id != ids["py-folder"]


def test_found_in_a_cifar10_subfolder_of_lt_data_dir(
    tmp_path: Path, batches: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    _write("py-archive", tmp_path / "data" / "cifar10", batches)
    monkeypatch.setenv("LT_DATA_DIR", str(tmp_path / "data"))
    source = data.locate("cifar10")
    assert source.origin == str(tmp_path / "data" / "cifar10" / "cifar-10-python.tar.gz")


def test_missing_files_name_the_archive_and_the_fetch_command(tmp_path: Path) -> None:
    with pytest.raises(UsageError) as err:
        data.locate("cifar10", tmp_path)
    message = str(err.value)
    assert "cifar-10-python.tar.gz" in message and "cifar-10-batches-py" in message
    assert "lt data fetch cifar10" in message and str(tmp_path) in message


def test_wrong_image_count_is_rejected(tmp_path: Path, batches: dict) -> None:
    rows, labels = batches["data_batch_2"]
    short = {**batches, "data_batch_2": (rows[:3], labels[:3])}
    root = _write("py-folder", tmp_path, short)
    with pytest.raises(UsageError, match="data_batch_2: expected 4 images"):
        data.locate("cifar10", root)


def test_label_out_of_range_is_rejected(tmp_path: Path, batches: dict) -> None:
    rows, _ = batches["test_batch"]
    root = _write("bin-folder", tmp_path, {**batches, "test_batch": (rows, [0, 1, 10, 2])})
    with pytest.raises(UsageError, match=r"test_batch\.bin: label 10 out of range"):
        data.locate("cifar10", root)


def test_truncated_binary_batch_is_rejected(tmp_path: Path, batches: dict) -> None:
    root = _write("bin-folder", tmp_path, batches)
    batch = root / "cifar-10-batches-bin" / "data_batch_1.bin"
    batch.write_bytes(batch.read_bytes()[:-1])
    with pytest.raises(UsageError, match=r"data_batch_1\.bin: 12291 bytes"):
        data.locate("cifar10", root)


def test_archive_missing_a_batch_is_rejected(tmp_path: Path, batches: dict) -> None:
    members = {f"cifar-10-batches-py/{n}": _pickled(*b, n) for n, b in batches.items()}
    del members["cifar-10-batches-py/data_batch_5"]
    _write_tar(tmp_path / "cifar-10-python.tar.gz", members)
    with pytest.raises(UsageError, match="missing cifar-10-batches-py/data_batch_5"):
        data.locate("cifar10", tmp_path)


class _Exploit:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (str(self.marker),))


def test_a_pickle_that_calls_code_is_refused_not_run(tmp_path: Path, batches: dict) -> None:
    root = _write("py-folder", tmp_path / "data", batches)
    marker = tmp_path / "pwned"
    (root / "cifar-10-batches-py" / "data_batch_1").write_bytes(
        pickle.dumps({b"data": _Exploit(marker), b"labels": []}, protocol=2)
    )
    with pytest.raises(UsageError, match=r"unexpected object (posix|os)\.mkdir"):
        data.locate("cifar10", root)
    assert not marker.exists()
