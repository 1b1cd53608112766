"""The streaming loader's rows: images/s by worker count over ImageNet-sized JPEGs written
here, against a plain PIL loop doing the same work."""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.common import Row


def _jpeg_folder(root: Path, count: int) -> Path:
    """An ImageNet-layout folder of `count` JPEGs of ImageNet's typical size (about 500x375,
    quality 90), 2 classes."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, n in (("train", count), ("val", 2)):
        for c in range(2):
            folder = root / split / f"n{c:08d}"
            folder.mkdir(parents=True)
            for i in range(n // 2):
                h, w = int(rng.integers(330, 420)), int(rng.integers(450, 550))
                smooth = rng.integers(0, 255, (h // 8 + 1, w // 8 + 1, 3)).astype(np.uint8)
                pixels = np.kron(smooth, np.ones((8, 8, 1), np.uint8))[:h, :w]
                Image.fromarray(pixels).save(folder / f"{i}.JPEG", quality=90)
    return root


def stream_rows(quick: bool) -> list[Row]:
    """Images/s of lt's streaming loader (decode, random-resized crop to 224 and flip, in
    grain worker processes) by worker count, against the floor: a plain PIL loop over the
    same files doing the same work in one process."""
    from ltcli.data import imagenet
    from ltcli.data import stream as host

    count = 256 if quick else 1024
    with tempfile.TemporaryDirectory() as tmp:
        os.environ.setdefault("LT_CACHE_DIR", str(Path(tmp) / "cache"))
        root = _jpeg_folder(Path(tmp) / "imagenet", count)
        splits = imagenet.locate(str(root), None).streamed()
        transform = splits.train_transform
        started = time.perf_counter()
        for i in range(len(splits.train)):
            image, _ = splits.train[i]
            transform(image, np.random.default_rng(i))
        rows = [
            Row(
                "JPEG decode + crop, plain PIL loop",
                count / (time.perf_counter() - started),
                "images/s",
            )
        ]
        batch = 32
        ids = np.arange(count - count % batch).reshape(-1, batch)
        records = np.stack([ids, ids], -1)
        for workers in (0, 1, 2, 4):
            read = host.batches(splits.train, records, (224, 224, 3), workers, transform, True)
            next(read)  # the workers are up: what follows is the steady state
            started = time.perf_counter()
            images = sum(len(x) for x, _ in read)
            rate = images / (time.perf_counter() - started)
            rows.append(Row(f"lt streaming, {workers} workers", rate, "images/s"))
    return rows
