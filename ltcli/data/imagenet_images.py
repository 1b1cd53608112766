"""ImageNet's images: a file decoded to RGB (`decode`), and the training and evaluation
transforms of torchvision's ImageNet recipe with open_lth's crop scale and ratio
(`TrainTransform`, `EvalTransform`; ``torchvision/transforms/transforms.py`` of pytorch/vision,
``datasets/imagenet.py`` of facebookresearch/open_lth; the docs' "ImageNet on disk" says
where lt follows them and where not). Plain picklable objects, for the host's workers."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from PIL import Image

from ltcli.core.errors import UsageError

MEAN = np.array((0.485, 0.456, 0.406), dtype=np.float32) * np.float32(255)
"""Per-channel mean of ImageNet's training images in pixel units (0..255), RGB."""
STD = np.array((0.229, 0.224, 0.225), dtype=np.float32) * np.float32(255)
"""Per-channel standard deviation of ImageNet's training images in pixel units, RGB."""
SCALE = (0.1, 1.0)
"""The range of a training crop's area, as a fraction of the image's."""
RATIO = (0.8, 1.25)
"""The range of a training crop's aspect ratio (width / height)."""
ATTEMPTS = 10
"""Random crops tried before the central fallback."""
RESIZE = 256 / 224
"""Evaluation resizes the shorter side to ``round(image_size * RESIZE)``, then crops."""


def rgb(image: Image.Image) -> np.ndarray:
    """`image` (any mode) as uint8 (H, W, 3) RGB; decodes it if it is not yet loaded."""
    mode = image.mode
    if mode in ("I", "F") or mode.startswith("I;16"):  # a 16-bit (or float) greyscale PNG
        values = np.asarray(image)
        if mode != "F":
            values = values.astype(np.int64) >> 8
        grey = np.clip(values, 0, 255).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=2)
    if mode in ("P", "PA") and "transparency" in image.info:
        image = image.convert("RGBA")  # Pillow warns when a palette's transparency is dropped
    if image.mode != "RGB":
        image = image.convert("RGB")
    return np.array(image, dtype=np.uint8)


def unreadable(path: Path, err: Exception, why: str = "not a readable image") -> UsageError:
    """The error that names the image file `path` and why it cannot be used."""
    return UsageError(f"{path}: {why} ({type(err).__name__}: {err})")


def decode(path: Path | str) -> np.ndarray:
    """Reads the image at `path` fully, as uint8 (H, W, 3) RGB at its own size.

    Raises:
      UsageError: the file cannot be read or decoded (truncated, not an image, an unknown
        mode); the message names it.
    """
    path = Path(path)
    try:
        with Image.open(path) as image:
            return rgb(image)
    except UsageError:
        raise
    except Exception as err:  # a decoder can raise anything on a bad file: it is bad input
        raise unreadable(path, err) from err


def crop_box(height: int, width: int, rng: np.random.Generator) -> tuple[int, int, int, int]:
    """A random-resized crop's (top, left, height, width), as torchvision's
    ``RandomResizedCrop.get_params`` with open_lth's `SCALE` and `RATIO`, drawing from `rng`."""
    area = height * width
    log_ratio = (math.log(RATIO[0]), math.log(RATIO[1]))
    for _ in range(ATTEMPTS):
        target_area = area * rng.uniform(*SCALE)
        aspect_ratio = math.exp(rng.uniform(*log_ratio))
        w = round(math.sqrt(target_area * aspect_ratio))
        h = round(math.sqrt(target_area / aspect_ratio))
        if 0 < w <= width and 0 < h <= height:
            top = int(rng.integers(0, height - h + 1))
            left = int(rng.integers(0, width - w + 1))
            return top, left, h, w
    in_ratio = width / height  # the central fallback
    if in_ratio < min(RATIO):
        w, h = width, round(width / min(RATIO))
    elif in_ratio > max(RATIO):
        w, h = round(height * max(RATIO)), height
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def _pil(image: np.ndarray) -> Image.Image:
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected a uint8 (H, W, 3) image, got {image.dtype} {image.shape}")
    return Image.fromarray(image)


class TrainTransform:
    """Random-resized crop to `size` and a horizontal flip with probability 1/2 (torchvision's
    ``RandomResizedCrop(size)`` and ``RandomHorizontalFlip()``): (image, rng) -> uint8
    (size, size, 3); a function of the image and `rng`'s state only."""

    def __init__(self, size: int) -> None:
        self.size = size

    def __call__(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        top, left, h, w = crop_box(image.shape[0], image.shape[1], rng)
        crop = _pil(image).crop((left, top, left + w, top + h))
        out = np.asarray(crop.resize((self.size, self.size), Image.Resampling.BILINEAR))
        if rng.random() < 0.5:
            out = out[:, ::-1]
        return np.ascontiguousarray(out, dtype=np.uint8)

    def __repr__(self) -> str:
        return f"TrainTransform({self.size})"


class EvalTransform:
    """The shorter side resized to `resize` (bilinear; torchvision's ``Resize``: the longer
    side ``int(resize * long / short)``), then the centre `size` square (``CenterCrop``):
    image -> uint8 (size, size, 3)."""

    def __init__(self, size: int, resize: int | None = None) -> None:
        self.size = size
        self.resize = resize if resize is not None else round(size * RESIZE)
        if self.resize < size:
            raise ValueError(f"resize {self.resize} is below the crop {size}")

    def __call__(self, image: np.ndarray) -> np.ndarray:
        pil = _pil(image)
        width, height = pil.size
        short, long = min(width, height), max(width, height)
        if short != self.resize:
            new_long = int(self.resize * long / short)
            new = (self.resize, new_long) if width <= height else (new_long, self.resize)
            pil = pil.resize(new, Image.Resampling.BILINEAR)
        width, height = pil.size
        top = round((height - self.size) / 2)
        left = round((width - self.size) / 2)
        crop = pil.crop((left, top, left + self.size, top + self.size))
        return np.ascontiguousarray(np.asarray(crop), dtype=np.uint8)

    def __repr__(self) -> str:
        return f"EvalTransform({self.size}, resize={self.resize})"
