"""``lt data fetch`` / ``lt data ls`` against real HTTP servers on 127.0.0.1 (no internet)."""

from __future__ import annotations

import gzip
import hashlib
import http.server
import io
import os
import pickle
import shutil
import socket
import tarfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from ltcli import data
from ltcli.cli.data_commands import data as data_group
from ltcli.core.errors import LtError
from ltcli.data import cifar, fetch

pytestmark = pytest.mark.unit

STEMS = [
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
]
REAL_MNIST = [
    Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist",
    *([Path(os.environ["LT_DATA_DIR"]) / "mnist"] if os.environ.get("LT_DATA_DIR") else []),
]


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("LT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("LT_DATA_DIR", raising=False)
    for name in fetch.MIRRORS:
        monkeypatch.delenv("LT_MIRRORS_" + name.upper().replace("-", "_"), raising=False)


class Mirror:
    """A web server on an ephemeral port serving `files`, with knobs for failures.

    Attributes:
      files: name -> bytes served at /<name>; other names get 404.
      ranges: whether Range requests are honoured (206), else the whole file comes (200).
      cut: name -> bytes after which the next response for it breaks off (once).
      requests: (name, Range header or None) of every request, in order.
    """

    def __init__(self, files: dict[str, bytes], ranges: bool = True) -> None:
        self.files, self.ranges = files, ranges
        self.cut: dict[str, int] = {}
        self.requests: list[tuple[str, str | None]] = []
        mirror = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                mirror.handle(self)

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/mirror/"
        serve = lambda: self.server.serve_forever(poll_interval=0.02)  # noqa: E731
        threading.Thread(target=serve, daemon=True).start()

    def handle(self, request: http.server.BaseHTTPRequestHandler) -> None:
        name = request.path.rsplit("/", 1)[-1]
        wanted = request.headers.get("Range")
        self.requests.append((name, wanted))
        if name not in self.files:
            request.send_error(404)
            return
        body, start = self.files[name], 0
        if wanted and self.ranges:
            start = int(wanted.removeprefix("bytes=").rstrip("-"))
            request.send_response(206)
            request.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            request.send_response(200)
        request.send_header("Content-Length", str(len(body) - start))
        request.end_headers()
        stop = self.cut.pop(name, len(body))
        request.wfile.write(body[start:stop])
        if stop < len(body):
            request.close_connection = True
            request.wfile.flush()
            request.connection.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def serve() -> Iterator[Callable[..., Mirror]]:
    mirrors: list[Mirror] = []

    def start(files: dict[str, bytes], ranges: bool = True) -> Mirror:
        mirrors.append(Mirror(files, ranges))
        return mirrors[-1]

    yield start
    for mirror in mirrors:
        mirror.close()


def _refused_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/"


@pytest.fixture
def small_mnist(monkeypatch: pytest.MonkeyPatch) -> dict[str, bytes]:
    """Four small files under MNIST's names, gzipped, with their checksums patched in."""
    rng = np.random.default_rng(3)
    contents = {stem: rng.bytes(150_000 + 1000 * i) for i, stem in enumerate(STEMS)}
    monkeypatch.setitem(
        fetch.CHECKSUMS, "mnist", {s: hashlib.md5(c).hexdigest() for s, c in contents.items()}
    )
    return {f"{stem}.gz": gzip.compress(c, mtime=0) for stem, c in contents.items()}


def _landed(folder: Path, files: dict[str, bytes]) -> bool:
    names = sorted(p.name for p in folder.iterdir())
    return names == sorted(files) and all((folder / n).read_bytes() == b for n, b in files.items())


def test_fetch_verifies_and_lands_the_files_then_skips_them(
    tmp_path: Path, serve, small_mnist: dict[str, bytes]
) -> None:
    mirror = serve(small_mnist)
    folder = fetch.fetch("mnist", tmp_path / "data", mirrors=[mirror.url])
    assert folder == tmp_path / "data" / "mnist"
    assert _landed(folder, small_mnist)

    served = len(mirror.requests)
    fetch.fetch("mnist", tmp_path / "data", mirrors=[mirror.url])
    assert len(mirror.requests) == served  # all present and verified: nothing downloaded


def test_a_regzipped_copy_verifies_by_its_decompressed_content(
    tmp_path: Path, serve, small_mnist: dict[str, bytes]
) -> None:
    regzipped = {
        n: gzip.compress(gzip.decompress(b), compresslevel=1, mtime=99)
        for n, b in small_mnist.items()
    }
    assert regzipped != small_mnist
    folder = fetch.fetch("mnist", tmp_path, mirrors=[serve(regzipped).url])
    assert _landed(folder, regzipped)


@pytest.mark.parametrize("damage", ["truncated", "corrupted", "not gzip"])
def test_a_bad_download_is_rejected_and_never_appears(
    tmp_path: Path, serve, small_mnist: dict[str, bytes], damage: str
) -> None:
    bad = dict(small_mnist)
    body = bad["t10k-images-idx3-ubyte.gz"]
    bad["t10k-images-idx3-ubyte.gz"] = {
        "truncated": body[: len(body) // 2],
        "corrupted": gzip.compress(b"x" + gzip.decompress(body)[1:]),
        "not gzip": b"<html>login page</html>",
    }[damage]
    with pytest.raises(LtError, match=r"t10k-images-idx3-ubyte\.gz: .*checksum mismatch"):
        fetch.fetch("mnist", tmp_path, mirrors=[serve(bad).url])
    folder = tmp_path / "mnist"
    assert not (folder / "t10k-images-idx3-ubyte.gz").exists()
    assert not any(p.name.startswith(".t10k-images") for p in folder.iterdir())
    assert (folder / "t10k-labels-idx1-ubyte.gz").read_bytes() == small_mnist[
        "t10k-labels-idx1-ubyte.gz"
    ]


def test_a_bad_mirror_falls_through_to_the_next(
    tmp_path: Path, serve, small_mnist: dict[str, bytes]
) -> None:
    empty, good = serve({}), serve(small_mnist)
    corrupt = serve({n: gzip.compress(b"wrong") for n in small_mnist})
    urls = [_refused_url(), empty.url, corrupt.url, good.url]
    folder = fetch.fetch("mnist", tmp_path, mirrors=urls)
    assert _landed(folder, small_mnist)
    assert len(empty.requests) == 4  # a 404 for each file
    assert len(corrupt.requests) == 4  # then a checksum mismatch for each


def test_a_dropped_transfer_resumes_with_a_range_request(
    tmp_path: Path, serve, small_mnist: dict[str, bytes]
) -> None:
    mirror = serve(small_mnist)
    mirror.cut["train-images-idx3-ubyte.gz"] = 40_000
    folder = fetch.fetch("mnist", tmp_path, mirrors=[mirror.url])
    assert _landed(folder, small_mnist)
    asked = [r for n, r in mirror.requests if n == "train-images-idx3-ubyte.gz"]
    assert asked == [None, "bytes=40000-"]


def test_a_dropped_transfer_restarts_where_ranges_are_not_supported(
    tmp_path: Path, serve, small_mnist: dict[str, bytes]
) -> None:
    mirror = serve(small_mnist, ranges=False)
    mirror.cut["train-labels-idx1-ubyte.gz"] = 40_000
    folder = fetch.fetch("mnist", tmp_path, mirrors=[mirror.url])
    assert _landed(folder, small_mnist)
    asked = [r for n, r in mirror.requests if n == "train-labels-idx1-ubyte.gz"]
    assert asked == [None, "bytes=40000-"]  # asked to resume, got the whole file


def test_a_part_left_by_an_earlier_run_is_resumed(
    tmp_path: Path, serve, small_mnist: dict[str, bytes]
) -> None:
    name = "t10k-labels-idx1-ubyte.gz"
    (tmp_path / "mnist").mkdir()
    (tmp_path / "mnist" / f".{name}.part").write_bytes(small_mnist[name][:1000])
    mirror = serve(small_mnist)
    assert _landed(fetch.fetch("mnist", tmp_path, mirrors=[mirror.url]), small_mnist)
    assert [r for n, r in mirror.requests if n == name] == ["bytes=1000-"]


def test_a_stale_part_that_does_not_verify_is_fetched_again_from_the_start(
    tmp_path: Path, serve, small_mnist: dict[str, bytes]
) -> None:
    name = "t10k-labels-idx1-ubyte.gz"
    (tmp_path / "mnist").mkdir()
    (tmp_path / "mnist" / f".{name}.part").write_bytes(b"stale bytes of another file")
    mirror = serve(small_mnist)
    assert _landed(fetch.fetch("mnist", tmp_path, mirrors=[mirror.url]), small_mnist)
    assert [r for n, r in mirror.requests if n == name] == ["bytes=27-", None]


def test_every_mirror_down_exits_1_in_seconds_with_by_hand_steps(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LT_MIRRORS_MNIST", f"{_refused_url()}, {_refused_url()}")
    start = time.monotonic()
    result = CliRunner().invoke(data_group, ["fetch", "mnist", "--data-dir", str(tmp_path)])
    assert time.monotonic() - start < 5
    assert result.exit_code == 1, result.output
    for stem, md5 in fetch.CHECKSUMS["mnist"].items():
        assert f"{stem}.gz  (md5 once gunzipped: {md5})" in result.output
    assert f"put them in\n  {tmp_path / 'mnist'}/" in result.output
    assert "Connection refused" in result.output
    assert list((tmp_path / "mnist").iterdir()) == []


def test_a_mirror_that_never_answers_times_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, small_mnist: dict[str, bytes]
) -> None:
    monkeypatch.setattr(fetch, "TIMEOUT", 0.5)
    with socket.socket() as silent:  # accepts connections (backlog), never replies
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/"
        start = time.monotonic()
        with pytest.raises(LtError, match="timed out"):
            fetch.fetch("mnist", tmp_path, mirrors=[url])
    assert time.monotonic() - start < 3  # once for the mirror, then skipped for the others


def test_unknown_name_exits_2(tmp_path: Path) -> None:
    result = CliRunner().invoke(data_group, ["fetch", "imagenet", "--data-dir", str(tmp_path)])
    assert result.exit_code == 2
    assert "imagenet" in result.output


def test_mirrors_come_from_the_environment(
    tmp_path: Path, serve, small_mnist: dict[str, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    mirror = serve(small_mnist)
    monkeypatch.setenv("LT_MIRRORS_MNIST", mirror.url)
    monkeypatch.setenv("LT_DATA_DIR", str(tmp_path / "env-dir"))
    result = CliRunner().invoke(data_group, ["fetch", "mnist"])
    assert result.exit_code == 0, result.output
    assert _landed(tmp_path / "env-dir" / "mnist", small_mnist)
    assert "train-images-idx3-ubyte.gz" in result.output and "MB/s" in result.output


def _small_cifar_archive(path: Path) -> bytes:
    """A CIFAR python archive of 2 images per batch, in the real layout."""
    rng = np.random.default_rng(5)
    with tarfile.open(path, "w:gz") as tar:
        for name in [*cifar.TRAIN_BATCHES, cifar.TEST_BATCH]:
            batch = {b"data": rng.integers(0, 256, (2, 3072), np.uint8), b"labels": [1, 9]}
            payload = pickle.dumps(batch, protocol=2)
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    return path.read_bytes()


def test_cifar10_fetch_then_ls_reports_it_verified(
    tmp_path: Path, serve, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cifar, "BATCH_SIZE", 2)
    archive = _small_cifar_archive(tmp_path / "source.tar.gz")
    checksums = {**fetch.CHECKSUMS["cifar10"]}
    checksums["cifar-10-python.tar.gz"] = hashlib.md5(archive).hexdigest()
    monkeypatch.setitem(fetch.CHECKSUMS, "cifar10", checksums)
    mirror = serve({"cifar-10-python.tar.gz": archive})
    data_dir = tmp_path / "data"

    runner = CliRunner()
    result = runner.invoke(
        data_group,
        ["fetch", "cifar10", "--data-dir", str(data_dir)],
        env={"LT_MIRRORS_CIFAR10": mirror.url},
    )
    assert result.exit_code == 0, result.output
    assert (data_dir / "cifar10" / "cifar-10-python.tar.gz").read_bytes() == archive

    content_id = data.locate("cifar10", data_dir).content_id
    listing = runner.invoke(data_group, ["ls", "--data-dir", str(data_dir)])
    assert listing.exit_code == 0, listing.output
    lines = {line.split()[0]: line.split() for line in listing.output.splitlines()}
    assert lines["cifar10"][1:3] == ["verified", content_id]
    assert lines["mnist"][1:3] == ["not", "found"]

    checksums["cifar-10-python.tar.gz"] = "0" * 32
    listing = runner.invoke(data_group, ["ls", "--data-dir", str(data_dir)])
    assert f"cifar10        MISMATCH     {content_id}" in listing.output


@pytest.fixture
def real_mnist() -> Path:
    for folder in REAL_MNIST:
        if all((folder / f"{stem}.gz").is_file() for stem in STEMS):
            return folder
    pytest.skip("the real MNIST files are not on this machine")


def test_real_mnist_fetches_verifies_and_has_one_content_id_under_two_paths(
    tmp_path: Path, serve, real_mnist: Path
) -> None:
    files = {f"{stem}.gz": (real_mnist / f"{stem}.gz").read_bytes() for stem in STEMS}
    folder = fetch.fetch("mnist", tmp_path / "a", mirrors=[serve(files).url])
    assert _landed(folder, files)

    unpacked = tmp_path / "b"
    unpacked.mkdir()
    for stem in STEMS:
        with gzip.open(folder / f"{stem}.gz") as src, open(unpacked / stem, "wb") as dst:
            shutil.copyfileobj(src, dst)

    ids = {data.locate("mnist", d).content_id for d in (tmp_path / "a", unpacked, real_mnist)}
    assert len(ids) == 1
    listing = next(x for x in fetch.list_datasets(unpacked) if x.name == "mnist")
    assert (listing.origin, listing.verified, listing.content_id) == (str(unpacked), True, *ids)
