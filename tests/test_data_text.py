"""``text:PATH`` and ``python-stdlib`` text data sets: small corpora written here."""

from __future__ import annotations

import shutil
import sysconfig
from pathlib import Path

import numpy as np
import pytest

from ltcli import data
from ltcli.core.errors import UsageError
from ltcli.data import text

pytestmark = pytest.mark.unit


@pytest.fixture(autouse=True)
def _cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("LT_CACHE_DIR", str(tmp_path / "cache"))


def _words(n: int, seed: int = 0) -> str:
    """`n` characters of ASCII text: words of varied letters, spaces and newlines."""
    rng = np.random.default_rng(seed)
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz \n"))
    return "".join(rng.choice(letters, n))


def _write(path: Path, content: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, str):
        path.write_text(content, encoding="utf-8", newline="")
    else:
        path.write_bytes(content)
    return path


def _corpus(root: Path) -> dict[str, str]:
    """A folder of three files, written out of sorted order; returns {relative path: text}."""
    files = {"sub/c.txt": _words(700, 3) + "naïve €\n", "b.txt": _words(700, 2), "A.txt": "Zz"}
    files["a.txt"] = _words(700, 1)
    for rel, content in files.items():
        _write(root / rel, content)
    return files


def _joined(files: dict[str, str]) -> str:
    return "".join(files[rel] for rel in sorted(files))


def test_split_is_90_5_5_by_position_and_covers_the_corpus(tmp_path: Path) -> None:
    corpus = _words(2001)
    path = _write(tmp_path / "corpus.txt", corpus)

    source = data.locate(f"text:{path}")
    arrays = source.load()

    assert isinstance(arrays, data.TextArrays)
    # floor(0.9 * 2001) = 1800, floor(0.95 * 2001) = 1900
    assert (len(arrays.train), len(arrays.validation), len(arrays.test)) == (1800, 100, 101)
    assert arrays.train.dtype == arrays.validation.dtype == arrays.test.dtype == np.uint8
    stream = np.concatenate([arrays.train, arrays.validation, arrays.test])
    np.testing.assert_array_equal(stream, np.frombuffer(corpus.encode(), np.uint8))
    assert arrays.validation.tobytes() == corpus[1800:1900].encode()
    assert source.text and source.train_size == 1800
    assert (source.image_shape, source.num_classes) == ((), 256)
    assert source.name == f"text:{path}" and source.origin == str(path)
    assert text.split_points(2001) == (1800, 1900)
    assert not (tmp_path / "cache").exists()  # nothing cached on disk


def bytes_per_token(arrays) -> tuple[float, float]:
    """UTF-8 bytes per token of the whole validation and test splits, from `arrays.widths`."""
    return tuple(float(arrays.widths[s].sum() / len(s)) for s in (arrays.validation, arrays.test))


def test_bytes_round_trip_files_in_sorted_relative_order(tmp_path: Path) -> None:
    files = _corpus(tmp_path / "corpus")
    arrays = data.locate(f"text:{tmp_path / 'corpus'}").load()

    stream = np.concatenate([arrays.train, arrays.validation, arrays.test])
    assert stream.tobytes().decode("utf-8") == _joined(files)
    assert _joined(files).startswith("Zz" + files["a.txt"] + files["b.txt"])
    assert bytes_per_token(arrays) == (1.0, 1.0)


def test_chars_ids_index_the_sorted_distinct_characters(tmp_path: Path) -> None:
    files = _corpus(tmp_path / "corpus")
    corpus = _joined(files)
    source = data.locate(f"text:{tmp_path / 'corpus'}", tokens="chars")
    arrays = source.load()

    vocabulary = sorted(set(corpus))
    assert source.num_classes == len(vocabulary) == 31  # a-z, space, newline, Z, ï, €
    stream = np.concatenate([arrays.train, arrays.validation, arrays.test])
    assert stream.dtype == np.int32
    np.testing.assert_array_equal(stream, [vocabulary.index(c) for c in corpus])
    assert "".join(vocabulary[i] for i in stream) == corpus
    assert source.train_size == len(arrays.train) == 9 * len(corpus) // 10
    assert len(corpus) < len(corpus.encode())  # chars count characters, not bytes


def test_bytes_per_token_of_multi_byte_text(tmp_path: Path) -> None:
    corpus = "a" * 1800 + "é" * 100 + "€" * 100  # validation: 2-byte, test: 3-byte characters
    path = _write(tmp_path / "corpus.txt", corpus)

    chars = data.locate(f"text:{path}", tokens="chars").load()
    assert bytes_per_token(chars) == (2.0, 3.0)
    assert (len(chars.validation), len(chars.test)) == (100, 100)

    mixed = _words(1800) + "é€x" * 70  # both splits mix 1, 2 and 3-byte characters
    path = _write(tmp_path / "mixed.txt", mixed)
    arrays = data.locate(f"text:{path}", tokens="chars").load()
    a, b = text.split_points(len(mixed))
    expected = tuple(len(s.encode()) / len(s) for s in (mixed[a:b], mixed[b:]))
    assert bytes_per_token(arrays) == pytest.approx(expected, rel=1e-12)
    assert 1.0 < expected[0] < 3.0

    assert bytes_per_token(data.locate(f"text:{path}").load()) == (1.0, 1.0)


def test_content_id_follows_bytes_names_and_unit_not_location(tmp_path: Path) -> None:
    root = tmp_path / "corpus"
    _corpus(root)
    before = data.locate(f"text:{root}").content_id

    copy = tmp_path / "elsewhere" / "deeper"
    shutil.copytree(root, copy)
    assert data.locate(f"text:{copy}").content_id == before

    assert data.locate(f"text:{root}", tokens="chars").content_id != before

    raw = bytearray((copy / "b.txt").read_bytes())
    raw[500] = ord("#")
    (copy / "b.txt").write_bytes(bytes(raw))
    one_byte = data.locate(f"text:{copy}").content_id
    assert one_byte != before

    (root / "b.txt").rename(root / "b2.txt")  # same bytes, same order, another name
    renamed = data.locate(f"text:{root}").content_id
    assert renamed not in (before, one_byte)


def test_load_returns_what_was_read_and_hashed_at_locate(tmp_path: Path) -> None:
    corpus = _words(2000)
    path = _write(tmp_path / "corpus.txt", corpus)
    source = data.locate(f"text:{path}")
    _write(path, "x" * 2000)

    arrays = source.load()
    assert arrays.train.tobytes() == corpus[:1800].encode()
    arrays.train[0] = 0  # a copy: the next load is unchanged
    assert source.load().train[0] == ord(corpus[0])


def test_folder_walk_skips_dot_files_and_pycache(tmp_path: Path) -> None:
    root = tmp_path / "corpus"
    files = _corpus(root)
    clean = data.locate(f"text:{root}")

    bad = b"\xff\xfe not text"  # read by mistake, these would fail or change the id
    _write(root / ".hidden", bad)
    _write(root / "sub" / ".swp", bad)
    _write(root / ".git" / "objects" / "pack", bad)
    _write(root / "sub" / "__pycache__" / "c.cpython-311.pyc", bad)
    _write(root / "__pycache__" / "notes.txt", "skipped too")

    source = data.locate(f"text:{root}")
    assert source.content_id == clean.content_id
    arrays = source.load()
    stream = np.concatenate([arrays.train, arrays.validation, arrays.test])
    assert stream.tobytes().decode() == _joined(files)


def test_glob_pattern_reads_the_matches_relative_to_its_prefix(tmp_path: Path) -> None:
    root = tmp_path / "src"
    top, deep = _words(1300, 1), _words(900, 2)
    _write(root / "b.py", top)
    _write(root / "pkg" / "a.py", deep)
    _write(root / "notes.md", _words(900, 3))
    _write(root / ".hidden.py", "x" * 900)
    _write(root / "pkg" / "__pycache__" / "a.py", "x" * 900)

    flat = data.locate(f"text:{root}/*.py")
    assert flat.origin == f"{root}/*.py"
    recursive = data.locate(f"text:{root}/**/*.py")
    arrays = recursive.load()
    stream = np.concatenate([arrays.train, arrays.validation, arrays.test])
    assert stream.tobytes().decode() == top + deep  # b.py, then pkg/a.py
    assert flat.train_size == 9 * 1300 // 10 and recursive.train_size == 9 * 2200 // 10
    assert flat.content_id == data.locate(f"text:{root}/b.py").content_id

    only_py = tmp_path / "only"
    _write(only_py / "b.py", top)
    _write(only_py / "pkg" / "a.py", deep)
    assert data.locate(f"text:{only_py}").content_id == recursive.content_id


def test_relative_paths_try_data_dir_then_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    in_data = _write(tmp_path / "data" / "corpus.txt", _words(2000, 1))
    in_cwd = _write(tmp_path / "cwd" / "corpus.txt", _words(2000, 2))
    _write(tmp_path / "cwd" / "other.txt", _words(2000, 3))
    monkeypatch.chdir(tmp_path / "cwd")

    assert data.locate("text:corpus.txt", tmp_path / "data").origin == str(
        tmp_path / "data" / "corpus.txt"
    )
    first = data.locate("text:corpus.txt", tmp_path / "data").load()
    assert first.train.tobytes() == in_data.read_bytes()[:1800]
    assert data.locate("text:corpus.txt").load().train.tobytes() == in_cwd.read_bytes()[:1800]
    other = data.locate("text:other.txt", tmp_path / "data")  # not in data_dir: the cwd
    assert other.origin == "other.txt"
    assert data.locate("text:*.txt", tmp_path / "data").origin == str(tmp_path / "data" / "*.txt")


def test_python_stdlib_is_the_top_level_py_files_of_the_standard_library() -> None:
    folder = sysconfig.get_paths()["stdlib"]
    source = data.locate("python-stdlib")
    assert (source.name, source.origin, source.text) == ("python-stdlib", folder, True)
    assert source.content_id == data.locate(f"text:{folder}/*.py").content_id
    assert source.train_size > 100_000 and source.num_classes == 256

    chars = data.locate("python-stdlib", tokens="chars")
    assert chars.content_id != source.content_id
    assert 90 < chars.num_classes < 1000 and chars.train_size <= source.train_size
    arrays = source.load()
    head = arrays.train[:20_000].tobytes().decode("utf-8", errors="ignore")
    assert "def " in head and "import " in head


def test_a_file_that_is_not_utf8_is_named_with_the_offset(tmp_path: Path) -> None:
    root = tmp_path / "corpus"
    _write(root / "a.txt", _words(2000))
    bad = _write(root / "b.txt", b"ok " * 100 + b"\xc3\x28 more")
    with pytest.raises(UsageError, match="not UTF-8") as err:
        data.locate(f"text:{root}")
    message = str(err.value)
    assert str(bad) in message and "offset 300" in message and "0xc3" in message
    assert "\n" not in message


def test_a_missing_path_names_it(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "corpus.txt"
    with pytest.raises(UsageError, match="no such file or folder") as err:
        data.locate(f"text:{missing}")
    assert str(missing) in str(err.value)

    with pytest.raises(UsageError, match="no such file or folder") as err:
        data.locate("text:nowhere.txt", tmp_path)
    assert "nowhere.txt" in str(err.value) and str(tmp_path) in str(err.value)


def test_no_files_matched_or_found_is_a_usage_error(tmp_path: Path) -> None:
    _write(tmp_path / "src" / "a.py", _words(2000))
    with pytest.raises(UsageError, match=r"no files match '\*\.md'") as err:
        data.locate(f"text:{tmp_path / 'src'}/*.md")
    assert str(tmp_path / "src") in str(err.value)

    (tmp_path / "empty" / ".git").mkdir(parents=True)
    _write(tmp_path / "empty" / ".gitignore", "x")
    with pytest.raises(UsageError, match="no files under") as err:
        data.locate(f"text:{tmp_path / 'empty'}")
    assert str(tmp_path / "empty") in str(err.value)


def test_a_corpus_too_short_for_three_splits_names_the_minimum(tmp_path: Path) -> None:
    path = _write(tmp_path / "short.txt", _words(1000))  # test split: 50 tokens
    with pytest.raises(UsageError, match="at least 64 tokens") as err:
        data.locate(f"text:{path}")
    message = str(err.value)
    assert str(path) in message and "900/50/50" in message and "1271 bytes in all" in message
    assert message.count(str(path)) == 1

    # the minimum it names is exact: one token fewer fails, that many passes
    _write(path, _words(1270))
    with pytest.raises(UsageError):
        data.locate(f"text:{path}")
    _write(path, _words(1271))
    arrays = data.locate(f"text:{path}").load()
    assert min(len(arrays.train), len(arrays.validation), len(arrays.test)) == 64


def test_an_unknown_token_unit_is_refused(tmp_path: Path) -> None:
    path = _write(tmp_path / "corpus.txt", _words(2000))
    with pytest.raises(UsageError, match=r"data\.tokens must be one of bytes, chars, not 'words'"):
        data.locate(f"text:{path}", tokens="words")
    with pytest.raises(UsageError, match=r"data\.tokens"):
        data.locate("python-stdlib", tokens="words")


def test_an_image_data_set_refuses_tokens(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="only text data sets have tokens; mnist"):
        data.locate("mnist", tokens="chars")
    with pytest.raises(UsageError, match="only text data sets have tokens"):
        data.locate(f"folder:{tmp_path}", tokens="chars")


def test_unknown_names_list_the_text_data_sets() -> None:
    with pytest.raises(UsageError, match="unknown data set") as err:
        data.locate("wikitext")
    assert "python-stdlib" in str(err.value) and "text:..." in str(err.value)


def test_evaluation_windows_spread_over_the_whole_split(tmp_path: Path) -> None:
    """Forty files of 50 characters: validation is files 36 and 37, test 38 and 39. Four
    windows of 8 + 1 tokens are the middle ones of each quarter of a split's 12 (one every 8
    tokens), so they read both its files; more windows than it holds read every window."""
    from ltcli.train import device_data

    for i in range(40):
        _write(tmp_path / f"f{i:02d}.txt", _words(50, i))
    arrays = data.locate(f"text:{tmp_path}").load()
    assert text.split_points(2000) == (1800, 1900)  # 100 tokens each: files 36-37, 38-39
    for split in (arrays.validation, arrays.test):
        starts = (8, 32, 56, 80)  # windows 1, 4, 7 and 10 of 0..11
        expected = np.stack([split[s : s + 9] for s in starts])
        np.testing.assert_array_equal(device_data.text_windows(split, 4, 8), expected)
        assert {s // 50 for s in starts} == {0, 1}  # both files, both halves of the split
        every = np.stack([split[s : s + 9] for s in range(0, 96, 8)])
        np.testing.assert_array_equal(device_data.text_windows(split, 100, 8), every)
        np.testing.assert_array_equal(device_data.text_windows(split, 12, 8), every)
