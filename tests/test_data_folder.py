"""``folder:PATH`` image folders: small PNG folders (and tar archives of them) written here."""

from __future__ import annotations

import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ltcli import data
from ltcli.core.errors import UsageError
from ltcli.data import folder

pytestmark = pytest.mark.unit

CLASSES = ["dog", "ant", "cat"]  # sorted: ant 0, cat 1, dog 2


@pytest.fixture(autouse=True)
def _cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("LT_CACHE_DIR", str(tmp_path / "cache"))


def _pixels(seed: int, mode: str = "RGB", size: tuple[int, int] = (5, 3)) -> np.ndarray:
    width, height = size
    shape = (height, width) if mode == "L" else (height, width, len(mode))
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def _save(path: Path, pixels: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)


def _make(root: Path, mode: str = "RGB", per_class: dict[str, int] | None = None) -> dict:
    """Writes train/<class>/<i>.png and test/<class>/<i>.png; returns {relative path: pixels}."""
    per_class = per_class or {"train": 2, "test": 1}
    written = {}
    for split, count in per_class.items():
        for name in CLASSES:
            for i in range(count):
                rel = f"{split}/{name}/{i}.png"
                written[rel] = _pixels(len(written), mode)
                _save(root / rel, written[rel])
    return written


def _tar(folder_path: Path, archive: Path, top: str | None) -> Path:
    with tarfile.open(archive, "w:gz") as tar:
        for path in sorted(folder_path.rglob("*"), reverse=True):  # any member order
            name = path.relative_to(folder_path).as_posix()
            tar.add(path, arcname=f"{top}/{name}" if top else name, recursive=False)
    return archive


def test_arrays_labels_and_class_order(tmp_path: Path) -> None:
    written = _make(tmp_path / "pets")

    source = data.locate(f"folder:{tmp_path / 'pets'}")
    arrays = source.load()

    train = [f"train/{c}/{i}.png" for c in ("ant", "cat", "dog") for i in range(2)]
    test = [f"test/{c}/0.png" for c in ("ant", "cat", "dog")]
    np.testing.assert_array_equal(arrays.x_train, np.stack([written[r] for r in train]))
    np.testing.assert_array_equal(arrays.x_test, np.stack([written[r] for r in test]))
    np.testing.assert_array_equal(arrays.y_train, [0, 0, 1, 1, 2, 2])
    np.testing.assert_array_equal(arrays.y_test, [0, 1, 2])
    assert arrays.x_train.dtype == np.uint8 and arrays.y_train.dtype == np.int32
    assert (source.train_size, source.image_shape, source.num_classes) == (6, (3, 5, 3), 3)
    assert source.name == f"folder:{tmp_path / 'pets'}"
    cached = tmp_path / "cache" / "folders" / f"{source.content_id}.npz"
    assert cached.is_file()


def test_grayscale_images_get_one_channel(tmp_path: Path) -> None:
    written = _make(tmp_path / "gray", mode="L")
    arrays = data.locate(f"folder:{tmp_path / 'gray'}").load()
    assert arrays.x_train.shape == (6, 3, 5, 1)
    np.testing.assert_array_equal(arrays.x_test[2, :, :, 0], written["test/dog/0.png"])


def test_a_second_locate_reads_the_cache_without_decoding(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _make(tmp_path / "pets")
    first = data.locate(f"folder:{tmp_path / 'pets'}")

    def no_decoding(tree):
        raise AssertionError("decoded again")

    monkeypatch.setattr(folder, "_decode_all", no_decoding)
    again = data.locate(f"folder:{tmp_path / 'pets'}")
    assert again.content_id == first.content_id
    np.testing.assert_array_equal(again.load().x_train, first.load().x_train)


def test_content_id_follows_file_bytes_and_names_not_clutter(tmp_path: Path) -> None:
    root = tmp_path / "pets"
    _make(root)
    before = data.locate(f"folder:{root}").content_id

    (root / "train" / "ant" / ".DS_Store").write_bytes(b"junk")
    (root / "README.txt").write_text("notes")
    assert data.locate(f"folder:{root}").content_id == before

    _save(root / "train" / "ant" / "1.png", _pixels(999))
    changed = data.locate(f"folder:{root}").content_id
    assert changed != before

    (root / "train" / "ant" / "1.png").rename(root / "train" / "ant" / "2.png")
    assert data.locate(f"folder:{root}").content_id not in (before, changed)


@pytest.mark.parametrize("top", [None, "pets"])
def test_tar_gz_gives_the_folder_content_id_and_arrays(tmp_path: Path, top: str | None) -> None:
    root = tmp_path / "pets"
    _make(root)
    archive = _tar(root, tmp_path / "pets.tar.gz", top)

    from_folder = data.locate(f"folder:{root}")
    from_archive = data.locate(f"folder:{archive}")

    assert from_archive.content_id == from_folder.content_id
    assert from_archive.origin == str(archive)
    a, b = from_folder.load(), from_archive.load()
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)


def test_tar_gz_decodes_on_its_own(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "pets"
    written = _make(root)
    archive = _tar(root, tmp_path / "pets.tar.gz", "pets")
    monkeypatch.setenv("LT_CACHE_DIR", str(tmp_path / "fresh-cache"))
    arrays = data.locate(f"folder:{archive}").load()
    np.testing.assert_array_equal(arrays.x_test[1], written["test/cat/0.png"])
    np.testing.assert_array_equal(arrays.y_train, [0, 0, 1, 1, 2, 2])


def test_two_top_folders_in_an_archive_are_rejected(tmp_path: Path) -> None:
    _make(tmp_path / "a")
    _make(tmp_path / "b")
    archive = tmp_path / "two.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tmp_path / "a", arcname="a")
        tar.add(tmp_path / "b", arcname="b")
    with pytest.raises(UsageError, match="more than one top folder"):
        data.locate(f"folder:{archive}")


def test_an_image_of_another_size_is_named_and_nothing_is_cached(tmp_path: Path) -> None:
    root = tmp_path / "mixed"
    _make(root)
    _save(root / "train" / "cat" / "1.png", _pixels(1, size=(6, 3)))
    _save(root / "train" / "dog" / "0.png", _pixels(2, size=(4, 4)))
    with pytest.raises(UsageError) as err:
        data.locate(f"folder:{root}")
    assert f"{root}/train/cat/1.png: a 6x3 RGB image" in str(err.value)
    assert "test/ant/0.png is 5x3 RGB" in str(err.value)
    assert not list((tmp_path / "cache").glob("folders/*.npz"))


def test_an_image_of_another_mode_is_named(tmp_path: Path) -> None:
    root = tmp_path / "mixed"
    _make(root)
    _save(root / "train" / "dog" / "1.png", _pixels(3, mode="L"))
    with pytest.raises(UsageError, match=r"train/dog/1\.png: a 5x3 L image"):
        data.locate(f"folder:{root}")


def test_train_and_test_need_the_same_classes(tmp_path: Path) -> None:
    root = tmp_path / "pets"
    _make(root)
    _save(root / "test" / "eel" / "0.png", _pixels(4))
    with pytest.raises(UsageError, match="same class folders; only in one of them: eel"):
        data.locate(f"folder:{root}")


def test_a_file_that_is_not_an_image_is_named(tmp_path: Path) -> None:
    root = tmp_path / "pets"
    _make(root)
    (root / "train" / "cat" / "0.png").write_bytes(b"not a png")
    with pytest.raises(UsageError, match=r"train/cat/0\.png: not a readable image"):
        data.locate(f"folder:{root}")


def test_a_missing_path_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="is not a folder or tar archive"):
        data.locate(f"folder:{tmp_path / 'nowhere'}")


def test_a_folder_without_the_layout_is_a_usage_error(tmp_path: Path) -> None:
    _save(tmp_path / "flat" / "0.png", _pixels(5))
    with pytest.raises(UsageError, match="no images under"):
        data.locate(f"folder:{tmp_path / 'flat'}")
