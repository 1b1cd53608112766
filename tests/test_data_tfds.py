"""``tfds:NAME``: only the paths that need no prepared TFDS data (tensorflow-datasets is
optional, and lt must never let it download)."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest

from ltcli import data
from ltcli.errors import UsageError


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
