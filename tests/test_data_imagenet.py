"""``imagenet`` / ``imagenet:PATH``: a tiny ImageNet-layout folder (3 wnids, a few images of
mixed sizes, modes and formats) written here; its content id, bad images, preprocessing and
``lt data ls --verify``."""

from __future__ import annotations

import builtins
import io
import json
import os
import pickle
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from ltcli import data
from ltcli.cli.data_commands import data as data_group
from ltcli.core.errors import UsageError
from ltcli.data import imagenet, imagenet_images, sources

pytestmark = pytest.mark.unit

WNIDS = ["n01484850", "n01440764", "n01443537"]  # sorted: n01440764 0, n01443537 1, n01484850 2
SORTED = sorted(WNIDS)


@pytest.fixture(autouse=True)
def _cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("LT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("LT_DATA_DIR", raising=False)


def _rgb(seed: int, width: int, height: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def _write(path: Path, image: Image.Image, **options) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, **options)


def _make(root: Path) -> dict[str, tuple[int, int]]:
    """Writes train/<wnid>/ (4 images each) and val/<wnid>/ (1 each), plus files that are not
    images of the layout; returns {relative path: (height, width)} of the images."""
    shapes = {}
    specs = [  # (name, mode, (width, height), format)
        ("a.JPEG", "RGB", (40, 30), "JPEG"),
        ("b.jpeg", "L", (64, 80), "JPEG"),
        ("c.jpg", "CMYK", (50, 50), "JPEG"),
        ("d.PNG", "RGBA", (30, 40), "PNG"),
        ("e.png", "P", (36, 24), "PNG"),
    ]
    seed = 0
    for k, wnid in enumerate(WNIDS):
        for j, (name, mode, (w, h), fmt) in enumerate(specs):
            if j == (k + 1) % len(specs):  # 4 of the 5 kinds per class, a different one missing
                continue
            seed += 1
            image = Image.fromarray(_rgb(seed, w, h)).convert(mode)
            rel = f"train/{wnid}/{wnid}_{name}"
            _write(root / rel, image, format=fmt)
            shapes[rel] = (h, w)
        seed += 1
        rel = f"val/{wnid}/ILSVRC2012_val_{k:08d}.JPEG"
        _write(root / rel, Image.fromarray(_rgb(seed, 48, 36)), format="JPEG")
        shapes[rel] = (36, 48)
    (root / "train" / WNIDS[0] / "README.txt").write_text("not an image")
    (root / "train" / WNIDS[0] / "._hidden.JPEG").write_bytes(b"AppleDouble junk")
    (root / "LICENSE").write_text("no")
    return shapes


@pytest.fixture
def folder(tmp_path: Path) -> tuple[Path, dict[str, tuple[int, int]]]:
    root = tmp_path / "data" / "imagenet"
    return root, _make(root)


def _locate(root: Path, image_size: int = 224) -> sources.DataSource:
    return imagenet.locate(str(root), None, image_size)


def test_classes_labels_sizes_and_shape(folder) -> None:
    root, shapes = folder
    source = data.locate(f"imagenet:{root}")
    assert source.name == f"imagenet:{root}" and source.origin == str(root)
    assert (source.num_classes, source.train_size) == (3, 12)
    assert source.image_shape == (224, 224, 3)
    splits = source.streamed()
    assert (len(splits.train), len(splits.test)) == (12, 3)
    train_rels = sorted(rel for rel in shapes if rel.startswith("train/"))
    assert [splits.train.path(i) for i in range(12)] == [root / rel for rel in train_rels]
    assert [splits.train[i][1] for i in range(12)] == [
        SORTED.index(rel.split("/")[1]) for rel in train_rels
    ]
    assert [splits.test[i][1] for i in range(3)] == [0, 1, 2]
    assert splits.mean.dtype == np.float32 and splits.std.shape == (3,)
    np.testing.assert_allclose(splits.mean, [123.675, 116.28, 103.53], rtol=1e-6)
    np.testing.assert_allclose(splits.std, [58.395, 57.12, 57.375], rtol=1e-6)
    with pytest.raises(UsageError, match="streams from disk"):
        source.load()
    assert _locate(root, 32).image_shape == (32, 32, 3)


def test_found_by_name_under_the_data_dir(folder, tmp_path: Path) -> None:
    root, _ = folder
    source = data.locate("imagenet", tmp_path / "data")
    assert (source.name, source.origin) == ("imagenet", str(root))
    with pytest.raises(UsageError, match=r"^data set imagenet: files not found"):
        data.locate("imagenet", tmp_path / "elsewhere")


def test_decoded_examples_are_rgb_uint8_as_pillow_converts_them(folder) -> None:
    root, shapes = folder
    splits = _locate(root).streamed()
    for examples in (splits.train, splits.test):
        for i in range(len(examples)):
            image, _ = examples[i]
            rel = examples.path(i).relative_to(root).as_posix()
            assert image.dtype == np.uint8 and image.shape == (*shapes[rel], 3), rel
            with Image.open(examples.path(i)) as pil:
                assert np.array_equal(image, np.asarray(pil.convert("RGB"))), rel
    modes = set()
    for i in range(len(splits.train)):
        with Image.open(splits.train.path(i)) as pil:
            modes.add(pil.mode)
    assert modes == {"RGB", "L", "CMYK", "RGBA", "P"}


def test_16_bit_and_transparent_palette_images_decode_without_warnings(tmp_path: Path) -> None:
    deep = np.arange(12, dtype=np.uint16).reshape(3, 4) * 5000
    Image.fromarray(deep).save(tmp_path / "deep.png")
    with Image.open(tmp_path / "deep.png") as pil:
        assert pil.mode.startswith("I")
    Image.fromarray(_rgb(1, 5, 4)).convert("P").save(tmp_path / "clear.png", transparency=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        image = imagenet_images.decode(tmp_path / "deep.png")
        clear = imagenet_images.decode(tmp_path / "clear.png")
    assert np.array_equal(image, np.repeat((deep >> 8).astype(np.uint8)[..., None], 3, axis=2))
    assert clear.shape == (4, 5, 3) and clear.dtype == np.uint8


def test_train_transform_is_a_function_of_the_seed(folder) -> None:
    splits = _locate(folder[0], 32).streamed()
    image, _ = splits.train[1]
    out = [splits.train_transform(image, np.random.default_rng(seed)) for seed in range(8)]
    assert all(o.shape == (32, 32, 3) and o.dtype == np.uint8 for o in out)
    again = splits.train_transform(image, np.random.default_rng(3))
    assert np.array_equal(again, out[3])
    assert len({o.tobytes() for o in out}) == 8
    big = imagenet_images.TrainTransform(224)(image, np.random.default_rng(0))
    assert big.shape == (224, 224, 3) and big.flags.c_contiguous


def test_train_transform_crops_resizes_and_flips_as_drawn(folder) -> None:
    image, _ = _locate(folder[0]).streamed().train[0]
    flips = set()
    for seed in range(12):
        rng = np.random.default_rng(seed)
        top, left, h, w = imagenet_images.crop_box(*image.shape[:2], rng)
        flip = rng.random() < 0.5
        crop = Image.fromarray(image).crop((left, top, left + w, top + h))
        expected = np.asarray(crop.resize((24, 24), Image.Resampling.BILINEAR))
        expected = expected[:, ::-1] if flip else expected
        got = imagenet_images.TrainTransform(24)(image, np.random.default_rng(seed))
        assert np.array_equal(got, expected)
        flips.add(flip)
    assert flips == {True, False}


def test_crop_boxes_follow_open_lths_scale_ratio_and_torchvisions_fallback() -> None:
    rng = np.random.default_rng(0)
    fractions, ratios = [], []
    for _ in range(400):
        top, left, h, w = imagenet_images.crop_box(200, 200, rng)
        assert 0 <= top <= 200 - h and 0 <= left <= 200 - w and h > 0 and w > 0
        fractions.append(h * w / (200 * 200))
        ratios.append(w / h)
    # open_lth: area scale (0.1, 1), aspect ratio (0.8, 1.25)
    assert 0.09 < min(fractions) < 0.2 and max(fractions) > 0.8
    assert min(ratios) > 0.78 and max(ratios) < 1.28
    assert min(ratios) < 0.85 and max(ratios) > 1.2
    # no random crop fits a strip: the central fallback at the nearest ratio, a wide one
    # w = round(1 * 1.25) = 1 at left (100 - 1) // 2 = 49; a tall one h = round(2 / 0.8) = 2
    # at top (100 - 2) // 2 = 49
    assert imagenet_images.crop_box(1, 100, np.random.default_rng(0)) == (0, 49, 1, 1)
    assert imagenet_images.crop_box(100, 2, np.random.default_rng(0)) == (49, 0, 2, 2)
    assert imagenet_images.crop_box(1, 1, np.random.default_rng(0)) == (0, 0, 1, 1)


def test_eval_transform_resizes_then_crops_the_centre(folder) -> None:
    splits = _locate(folder[0], 32).streamed()
    image, _ = splits.train[0]  # 40x30 (width x height)
    assert image.shape == (30, 40, 3)
    # shorter side 30 -> round(32 * 256 / 224) = 37, longer int(37 * 40 / 30) = 49; the
    # centre 32 square starts at round(8.5) = 8 across and round(2.5) = 2 down
    resized = Image.fromarray(image).resize((49, 37), Image.Resampling.BILINEAR)
    expected = np.asarray(resized.crop((8, 2, 40, 34)))
    assert np.array_equal(splits.eval_transform(image), expected)

    tall = _rgb(5, 200, 300)  # 200 wide, 300 high -> 256 x 384, crop at (16, 80)
    resized = Image.fromarray(tall).resize((256, 384), Image.Resampling.BILINEAR)
    expected = np.asarray(resized.crop((16, 80, 240, 304)))
    assert np.array_equal(imagenet_images.EvalTransform(224)(tall), expected)
    square = _rgb(6, 256, 256)  # already 256: only cropped
    assert np.array_equal(imagenet_images.EvalTransform(224)(square), square[16:240, 16:240])


def _reads_under(root: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Records every file opened or read under `root` from now on."""
    seen: list[str] = []
    real_open, real_read = builtins.open, Path.read_bytes

    def note(file) -> None:
        if isinstance(file, str | os.PathLike) and str(file).startswith(str(root)):
            seen.append(str(file))

    def spy_open(file, *args, **kwargs):
        note(file)
        return real_open(file, *args, **kwargs)

    def spy_read(self: Path) -> bytes:
        note(self)
        return real_read(self)

    monkeypatch.setattr(builtins, "open", spy_open)
    monkeypatch.setattr(io, "open", spy_open)
    monkeypatch.setattr(Path, "read_bytes", spy_read)
    return seen


def test_content_id_is_cached_by_fingerprint_and_not_read_again(folder, monkeypatch) -> None:
    root, _ = folder
    spied = _reads_under(root, monkeypatch)
    first = _locate(root)
    assert len(set(spied)) == 15  # the first locate reads every image
    assert imagenet.describe(first).startswith("content id computed now")
    spied.clear()
    second = _locate(root)
    assert second.content_id == first.content_id and len(first.content_id) == 64
    assert spied == []
    assert imagenet.describe(second) == "content id cached; fingerprint of 15 files unchanged"


def test_content_id_follows_the_bytes(folder) -> None:
    root, shapes = folder
    first = _locate(root).content_id
    target = root / min(rel for rel in shapes if rel.startswith("val/"))

    os.utime(target, ns=(1, 1))  # touched: read again, same content, same id
    touched = _locate(root)
    assert imagenet.describe(touched).startswith("content id computed now")
    assert touched.content_id == first

    Image.fromarray(_rgb(99, 48, 36)).save(target, format="JPEG")
    changed = _locate(root).content_id
    assert changed != first
    assert _locate(root).content_id == changed

    (root / "train" / SORTED[1] / "extra.JPEG").write_bytes(target.read_bytes())
    assert _locate(root).content_id not in (first, changed)


def test_a_copy_elsewhere_has_the_same_id(folder, tmp_path: Path) -> None:
    root, _ = folder
    copy = tmp_path / "other" / "place"
    shutil.copytree(root, copy)
    original, copied = _locate(root), _locate(copy)
    assert copied.content_id == original.content_id
    assert imagenet.describe(copied).startswith("content id computed now")  # its own entry
    (copy / "train" / SORTED[0]).rename(copy / "train" / "n09999999")
    (copy / "val" / SORTED[0]).rename(copy / "val" / "n09999999")
    assert _locate(copy).content_id != original.content_id  # a class name is content


def test_a_truncated_jpeg_is_named_at_locate(folder, monkeypatch) -> None:
    root, _ = folder
    bad = root / "train" / WNIDS[0] / f"{WNIDS[0]}_a.JPEG"
    whole = bad.read_bytes()
    bad.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(UsageError, match="truncated") as caught:
        data.locate(f"imagenet:{root}")
    assert str(bad) in str(caught.value) and "1 of 15 images" in str(caught.value)
    assert not (Path(os.environ["LT_CACHE_DIR"]) / "imagenet-ids").exists()  # nothing cached
    bad.write_bytes(whole)
    assert imagenet.describe(_locate(root)).startswith("content id computed now")


def test_a_file_that_is_not_an_image_is_named_at_locate(folder) -> None:
    root, _ = folder
    bad = root / "val" / WNIDS[2] / "notes.jpg"
    bad.write_text("hello")
    with pytest.raises(UsageError, match="not a readable image") as caught:
        _locate(root)
    assert str(bad) in str(caught.value)


def test_val_classes_must_be_the_train_classes(folder) -> None:
    root, _ = folder
    (root / "val" / "n07777777").mkdir()
    with pytest.raises(UsageError, match=r"only in val/: n07777777"):
        _locate(root)
    shutil.rmtree(root / "val")
    (root / "val").mkdir()
    Image.fromarray(_rgb(1, 8, 8)).save(root / "val" / "ILSVRC2012_val_00000001.JPEG")
    with pytest.raises(UsageError, match=r"only in train/: n01440764.*holds 1 images directly"):
        _locate(root)
    shutil.rmtree(root / "val")
    with pytest.raises(UsageError, match="no val/ folder"):
        _locate(root)


def test_splits_pickle_and_still_read(folder) -> None:
    root, _ = folder
    splits = _locate(root, 32).streamed()
    copy = pickle.loads(pickle.dumps(splits))
    assert isinstance(copy, sources.StreamSplits) and len(copy.train) == 12
    for i in (0, 5, 11):
        assert np.array_equal(copy.train[i][0], splits.train[i][0])
        assert copy.train[i][1] == splits.train[i][1]
    image = splits.test[2][0]
    rng = np.random.default_rng(4)
    assert np.array_equal(
        copy.train_transform(image, np.random.default_rng(4)), splits.train_transform(image, rng)
    )
    assert np.array_equal(copy.eval_transform(image), splits.eval_transform(image))
    with pytest.raises(IndexError):
        splits.train[12]


def test_a_file_broken_after_indexing_is_named_when_read(folder) -> None:
    root, _ = folder
    splits = _locate(root).streamed()
    path = splits.test.path(1)
    path.write_bytes(b"\xff\xd8 no longer a JPEG")
    with pytest.raises(UsageError, match="changed after lt indexed") as caught:
        splits.test[1]
    assert str(path) in str(caught.value)
    assert splits.test[0][0].shape == (36, 48, 3)  # the others still read


def _ls(tmp_path: Path, *args: str):
    return CliRunner().invoke(data_group, ["ls", "--data-dir", str(tmp_path / "data"), *args])


def _corrupt_in_place(path: Path) -> None:
    """Overwrites `path` with garbage of the same size and restores its mtime: the
    fingerprint cannot tell, only decoding can."""
    st = path.stat()
    path.write_bytes(b"\xff\xd8" + b"\x00" * (st.st_size - 2))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def test_ls_says_whether_the_id_was_cached_and_verify_names_bad_files(folder, tmp_path) -> None:
    root, _ = folder
    first = _ls(tmp_path)
    assert first.exit_code == 0, first.output
    lines = first.output.splitlines()
    (row,) = [i for i, line in enumerate(lines) if line.startswith("imagenet ")]
    content_id = _locate(root).content_id
    assert lines[row].split()[1:4] == ["unverified", content_id, str(root)]
    assert "content id computed now" in lines[row + 1]

    second = _ls(tmp_path, "--json")
    rows = {r["name"]: r for r in json.loads(second.output)}
    assert rows["imagenet"]["note"] == "content id cached; fingerprint of 15 files unchanged"
    assert rows["imagenet"]["content_id"] == content_id
    assert all("note" not in r for name, r in rows.items() if name != "imagenet")

    clean = _ls(tmp_path, "--verify")
    assert clean.exit_code == 0, clean.output
    assert "all 15 images decode" in clean.output

    bad = root / "train" / WNIDS[1] / f"{WNIDS[1]}_b.jpeg"
    _corrupt_in_place(bad)
    unverified = _ls(tmp_path)
    assert unverified.exit_code == 0 and "content id cached" in unverified.output
    verified = _ls(tmp_path, "--verify")
    assert verified.exit_code == 2, verified.output
    assert str(bad) in verified.output and "1 of 15 images" in verified.output
    assert "problems in imagenet" in verified.output


def test_ls_verify_exits_2_on_a_truncated_file_found_while_indexing(folder, tmp_path) -> None:
    root, _ = folder
    bad = root / "val" / WNIDS[0] / "ILSVRC2012_val_00000000.JPEG"
    bad.write_bytes(bad.read_bytes()[:300])
    plain = _ls(tmp_path)
    assert plain.exit_code == 0
    (line,) = [x for x in plain.output.splitlines() if x.startswith("imagenet ")]
    assert line.split()[1] == "unusable" and str(bad) in plain.output
    verified = _ls(tmp_path, "--verify")
    assert verified.exit_code == 2 and str(bad) in verified.output


def test_ls_says_how_to_get_imagenet_when_missing(tmp_path: Path) -> None:
    result = _ls(tmp_path)
    (line,) = [x for x in result.output.splitlines() if x.startswith("imagenet ")]
    assert line.split()[1:3] == ["not", "found"] and "cannot download it" in line


def test_verify_decodes_every_file_fully(folder) -> None:
    root, shapes = folder
    source = _locate(root)
    assert imagenet.verify(root) == [] and imagenet.verify(source) == []
    bad = root / min(rel for rel in shapes if rel.endswith(".PNG"))
    _corrupt_in_place(bad)
    (problem,) = imagenet.verify(root)
    assert problem.startswith(f"{bad}: not a readable image")
    cached = _locate(root)  # the fingerprint cannot tell: the id comes from the cache
    assert cached.content_id == source.content_id
    assert imagenet.verify(cached) == [problem] == imagenet.verify(cached.streamed())
