"""``lt data fetch`` and ``lt data ls``: download data sets' original files and check them.

Files are downloaded with urllib to a hidden ``.part`` name in the target folder, resumed with
an HTTP Range request where the server allows, checked against the md5 of their decoded content
and only then renamed into place, so a bad or partial file never appears under its real name.
Mirrors are tried in order; one that cannot be reached is not tried again for the next files,
so an offline machine fails within a few connect timeouts.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import http.client
import os
import ssl
import urllib.error
import urllib.request
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

import ltcli
from ltcli import data
from ltcli.core import paths
from ltcli.core.errors import LtError, UsageError
from ltcli.core.meter import Meter
from ltcli.data import imagenet

_IDX = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte")
_IDX_TEST = ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")

CHECKSUMS: dict[str, dict[str, str]] = {
    "mnist": {
        "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
        "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
        "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
        "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
    },
    "fashion-mnist": {
        "train-images-idx3-ubyte": "f4a8712d7a061bf5bd6d2ca38dc4d50a",
        "train-labels-idx1-ubyte": "9018921c3c673c538a1fc5bad174d6f9",
        "t10k-images-idx3-ubyte": "8181f5470baa50b63fa0f6fddb340f0a",
        "t10k-labels-idx1-ubyte": "15d484375f8d13e6eb1aabb0c3f46965",
    },
    "cifar10": {
        "cifar-10-python.tar.gz": "c58f30108f718f92721af3b95e74349a",
        "cifar-10-binary.tar.gz": "c32a1d4ab5d03f1284b67883e8d87530",
        "data_batch_1": "c99cafc152244af753f735de768cd75f",
        "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
        "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
        "data_batch_4": "634d18415352ddfa80567beed471001a",
        "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
        "test_batch": "40351d587109b95175f43aff81a1287e",
    },
}
"""Per data set, file name -> md5 of the file's decoded content: a ``.gz`` that is not a
``.tar.gz`` is checked decompressed (so a re-gzipped copy verifies), anything else as is."""

FILES: dict[str, tuple[str, ...]] = {
    "mnist": tuple(f"{stem}.gz" for stem in _IDX + _IDX_TEST),
    "fashion-mnist": tuple(f"{stem}.gz" for stem in _IDX + _IDX_TEST),
    "cifar10": ("cifar-10-python.tar.gz",),
}
"""The files ``lt data fetch`` downloads, as named on the mirrors."""

BY_HAND: dict[str, str] = {
    "imagenet": "lt cannot download it: put train/<wnid>/ and val/<wnid>/ in DIR/imagenet/ "
    "(DIR: --data-dir or $LT_DATA_DIR), or name the folder as imagenet:PATH",
}
"""Data sets lt cannot download, and where ``lt data ls`` says to put them."""

MIRRORS: dict[str, tuple[str, ...]] = {
    "mnist": (
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "https://storage.googleapis.com/cvdf-datasets/mnist/",
    ),
    "fashion-mnist": ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
    "cifar10": ("https://www.cs.toronto.edu/~kriz/",),
}
"""Base URLs tried in order; ``$LT_MIRRORS_<NAME>`` (``LT_MIRRORS_FASHION_MNIST``), a list
separated by spaces or commas, replaces them."""

TIMEOUT = 5.0
"""Seconds a connect, or a read that receives nothing, may take before a mirror is given up."""
RETRIES = 3
"""Times one download is resumed after the connection drops, while each try makes progress."""
_CHUNK = 1 << 16


def _checksum_name(filename: str) -> str:
    if filename.endswith(".gz") and not filename.endswith(".tar.gz"):
        return filename.removesuffix(".gz")
    return filename


def _decoded_md5(path: Path, filename: str) -> str | None:
    """md5 of `path`'s decoded content: decompressed if `filename` (its name, or the name it
    is downloaded for) is a ``.gz`` but not a ``.tar.gz``. None if it cannot be decompressed."""
    digest = hashlib.md5()
    compressed = _checksum_name(filename) != filename
    try:
        with gzip.open(path, "rb") if compressed else open(path, "rb") as handle:
            while piece := handle.read(1 << 20):
                digest.update(piece)
    except (EOFError, zlib.error, gzip.BadGzipFile):
        return None
    return digest.hexdigest()


def _verified(name: str, path: Path, filename: str) -> bool:
    """Whether `path` holds data set `name`'s file `filename`."""
    return _decoded_md5(path, filename) == CHECKSUMS[name][_checksum_name(filename)]


def _mirrors(name: str, mirrors: Sequence[str] | None = None) -> list[str]:
    """`mirrors` if given, else ``$LT_MIRRORS_<NAME>`` if set, else the built-in list."""
    if mirrors:
        return list(mirrors)
    env = os.environ.get("LT_MIRRORS_" + name.upper().replace("-", "_"), "")
    return env.replace(",", " ").split() or list(MIRRORS[name])


def _target_dir(name: str, data_dir: Path | None) -> Path:
    """DIR/name/, DIR being `data_dir`, else ``$LT_DATA_DIR``, else lt's data cache."""
    root = data_dir or os.environ.get("LT_DATA_DIR") or paths.data_cache_dir()
    return Path(root) / name


def _progress(label: str, done: int, total: int | None, **options: Any) -> Meter:
    """The meter of one file's bytes: a live line on a terminal, else a line when the download
    starts, then every minute, then one at the end. `options` go to `Meter` (a test's clock)."""
    return Meter(label, total, done, unit="MB", scale=1e6, **options)


class _Unreachable(Exception):
    """The mirror could not be reached, or did not answer within TIMEOUT."""


class _Dropped(Exception):
    """The connection broke during a transfer, and resuming it stopped making progress."""


def _download(url: str, part: Path, label: str) -> None:
    """Continues `part` from its current size, or starts it over when the server ignores the
    Range request.

    Raises:
      urllib.error.HTTPError: the server answered with an error status.
      _Unreachable: no connection, or no answer in TIMEOUT seconds.
      http.client.HTTPException, ConnectionError, TimeoutError, ssl.SSLError: the transfer
        broke off.
    """
    offset = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"User-Agent": f"lt/{ltcli.__version__}"})
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    try:
        response = urllib.request.urlopen(request, timeout=TIMEOUT)
    except urllib.error.HTTPError as err:
        if err.code != 416 or not offset:  # 416: the part is complete or longer than the file
            raise
        part.unlink()
        return _download(url, part, label)
    except (urllib.error.URLError, http.client.HTTPException, OSError) as err:
        raise _Unreachable(str(getattr(err, "reason", err)) or repr(err)) from err
    with response:
        content_range = response.headers.get("Content-Range", "")
        resumed = response.status == 206 and content_range.startswith(f"bytes {offset}-")
        if not resumed:
            offset = 0
        length = response.headers.get("Content-Length")
        progress = _progress(label, offset, offset + int(length) if length else None)
        try:
            with open(part, "ab" if resumed else "wb") as out:
                while piece := response.read(_CHUNK):
                    out.write(piece)
                    progress.add(len(piece))
        finally:
            progress.close()
        received = int(progress.added)
        if length and received < int(length):  # http.client ends quietly on EOF
            raise http.client.IncompleteRead(b"", int(length) - received)


def _transfer(url: str, part: Path, label: str) -> None:
    """`_download`, resumed up to RETRIES times while each try adds bytes.

    Raises:
      _Dropped: the transfer broke off again without progress, or more than RETRIES times.
    """
    attempt = 0
    while True:
        before = part.stat().st_size if part.exists() else 0
        try:
            return _download(url, part, label)
        except (http.client.HTTPException, ConnectionError, TimeoutError, ssl.SSLError) as err:
            attempt += 1
            grew = part.exists() and part.stat().st_size > before
            if not grew or attempt > RETRIES:
                raise _Dropped(f"transfer broke off ({err!r})") from err
            click.echo(f"{label}: transfer broke off, resuming", err=True)


def _fetch_file(name: str, filename: str, folder: Path, mirrors: list[str], dead: set[str]) -> None:
    """Downloads one file into `folder`, trying `mirrors` in order.

    A part left by an earlier run is resumed; if the result does not verify, it is fetched
    once more from the start before the next mirror is tried.

    Raises:
      LtError: no mirror gave a file that verified; the message lists each mirror's failure.
    """
    final, part = folder / filename, folder / f".{filename}.part"
    failures = []
    for base_url in mirrors:
        if base_url in dead:
            failures.append(f"{base_url}: skipped (unreachable before)")
            continue
        url = base_url.rstrip("/") + "/" + filename
        for _ in range(2 if part.exists() else 1):
            try:
                _transfer(url, part, f"{name}: {filename}")
            except urllib.error.HTTPError as err:
                failures.append(f"{url}: HTTP {err.code} {err.reason}")
                break
            except _Unreachable as err:
                failures.append(f"{url}: {err}")
                dead.add(base_url)
                break
            except _Dropped as err:
                failures.append(f"{url}: {err}")
                break
            if _verified(name, part, filename):
                os.replace(part, final)
                return
            part.unlink()
            failures.append(f"{url}: checksum mismatch")
    raise LtError("; ".join(failures))


def _by_hand(name: str, folder: Path, missing: list[str], mirrors: list[str]) -> str:
    lines = []
    for filename in missing:
        what = "md5 once gunzipped" if _checksum_name(filename) != filename else "md5"
        lines.append(f"  {filename}  ({what}: {CHECKSUMS[name][_checksum_name(filename)]})")
    return "\n".join(
        [
            f"To fetch them by hand, download these files (from {' or '.join(mirrors)}, "
            "or any copy) and put them in",
            f"  {folder}/",
            *lines,
            f"then check them with `lt data ls`. Mirrors can be set with "
            f"$LT_MIRRORS_{name.upper().replace('-', '_')}.",
        ]
    )


def fetch(name: str, data_dir: Path | None = None, mirrors: Sequence[str] | None = None) -> Path:
    """Downloads data set `name` into DIR/name/ unless its files are there and verify.

    Args:
      name: ``mnist``, ``fashion-mnist`` or ``cifar10``.
      data_dir: DIR (default ``$LT_DATA_DIR``, else lt's data cache).
      mirrors: base URLs to try in order instead of ``$LT_MIRRORS_<NAME>`` or the built-in ones.

    Returns:
      The folder that holds the verified files.

    Raises:
      UsageError: an unknown name.
      LtError: a file could not be downloaded or did not verify from any mirror; the message
        says which and how to fetch them by hand.
    """
    if name not in FILES:
        raise UsageError(f"unknown data set {name!r}; lt can fetch {', '.join(FILES)}")
    folder, urls = _target_dir(name, data_dir), _mirrors(name, mirrors)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise LtError(f"cannot create {folder}: {err}") from err
    dead: set[str] = set()
    failed: dict[str, str] = {}
    for filename in FILES[name]:
        if (folder / filename).is_file():
            if _verified(name, folder / filename, filename):
                click.echo(f"{name}: {filename} already present and verified", err=True)
                continue
            click.echo(f"{name}: {filename} is present but does not verify; replacing", err=True)
        try:
            _fetch_file(name, filename, folder, urls, dead)
        except LtError as err:
            failed[filename] = str(err)
        except OSError as err:  # writing the file, not the network
            raise LtError(f"cannot write {folder / filename}: {err}") from err
    if failed:
        reasons = "\n".join(f"  {f}: {why}" for f, why in failed.items())
        raise LtError(
            f"could not download {name}:\n{reasons}\n{_by_hand(name, folder, list(failed), urls)}"
        )
    return folder


@dataclasses.dataclass(frozen=True)
class Listing:
    """What ``lt data ls`` reports on one data set.

    Attributes:
      name: the data set.
      origin: where it was found; None when it was not.
      content_id: the id its DataSource gives; None when not found.
      verified: whether the files found match the known checksums; None when none are known
        for that form (or it was not found).
      problem: why files that are there could not be used (with ``verify``: the images that
        do not decode, named); None when there are none.
      note: more on a data set found (``imagenet``: whether its content id came from the
        cache or was computed now); None for the others.
    """

    name: str
    origin: str | None
    content_id: str | None
    verified: bool | None
    problem: str | None = None
    note: str | None = None


def _verify_origin(name: str, origin: Path) -> bool | None:
    """Checks the known files at `origin` (a file, or a folder of files) against CHECKSUMS."""
    known = CHECKSUMS.get(name, {})
    files = [origin] if origin.is_file() else sorted(origin.iterdir())
    checked = [f for f in files if f.is_file() and _checksum_name(f.name) in known]
    if not checked:
        return None
    return all(_verified(name, f, f.name) for f in checked)


def _decode_all(source: data.DataSource) -> tuple[str | None, str | None]:
    """Decodes every image of a streamed data set once: (its problems or None, a note)."""
    if source.streamed is None:
        return None, None
    splits = source.streamed()
    total = len(splits.train) + len(splits.test)
    problems = imagenet.verify(splits)
    if problems:
        return imagenet.problems_message(source.origin, problems, total), None
    return None, f"all {total} images decode"


def list_datasets(data_dir: Path | None = None, verify: bool = False) -> list[Listing]:
    """Locates every named data set lt knows and checks it against the known checksums.

    Args:
      verify: also decode every image of each data set found that streams from disk
        (``imagenet``), once; those that fail are named in `Listing.problem`.
    """
    listings = []
    for name in data.DATASETS:
        try:
            source = data.locate(name, data_dir)
        except UsageError as err:
            missing = str(err).startswith(f"data set {name}: files not found")
            listings.append(Listing(name, None, None, None, None if missing else str(err)))
            continue
        verified = _verify_origin(name, Path(source.origin))
        problem, note = None, imagenet.describe(source)
        if verify:
            problem, decoded = _decode_all(source)
            note = "; ".join(n for n in (note, decoded) if n) or None
        listings.append(Listing(name, source.origin, source.content_id, verified, problem, note))
    return listings
