"""Images as the model sees them: decoded to 8-bit RGB, resized, float32 ``(3, H, W)`` in [0, 1].

Normalization is the model's first layer (see :mod:`robustcars.models.zoo`), so attack budgets are in pixel
scale. Every path is checked to be a regular file before it is opened.
"""

from __future__ import annotations

import os

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset
from torchvision import transforms as T

from robustcars.config import AUGMENTATIONS
from robustcars.data.cars import Sample
from robustcars.errors import DataError

RESIZE_MODES = ("crop", "squash")


def build_resize(img_size: int, resize: str = "crop") -> T.Compose:
    """The evaluation resize alone, PIL image -> PIL image (8-bit) of ``img_size x img_size``: what
    :func:`build_transform` does before ``ToTensor``, and where natural corruptions are applied.

    ``resize="crop"`` resizes the shorter side to ``img_size`` then center-crops; ``"squash"`` resizes to
    ``img_size x img_size`` ignoring the aspect ratio (keeps the whole car).

    Raises:
        DataError: an unknown resize mode.
    """
    if resize not in RESIZE_MODES:
        raise DataError(f"unknown resize mode {resize!r}; choose one of: {', '.join(RESIZE_MODES)}")
    if resize == "squash":
        return T.Compose([T.Resize((img_size, img_size), antialias=True)])
    return T.Compose([T.Resize(img_size, antialias=True), T.CenterCrop(img_size)])


def build_transform(img_size: int, *, train: bool, resize: str = "crop", augment: str = "standard") -> T.Compose:
    """Image -> float32 ``(3, img_size, img_size)`` tensor in [0, 1] (no normalization).

    Train: random resized crop (scale 0.35-1), horizontal flip, then ``augment``: ``"standard"`` colour jitter
    (0.2), ``"trivialaugment"`` torchvision's ``TrivialAugmentWide`` (Müller & Hutter 2021), ``"randaugment"``
    ``RandAugment(2, 9)`` (Cubuk et al. 2020); all on the 8-bit PIL image.
    Eval: :func:`build_resize` then ``ToTensor``.
    Resizing happens on the 8-bit PIL image, so every eval pixel is exactly k/255: the clean inputs lie on the
    8-bit grid, and a perturbation below half a grey level (eps < 0.5/255 ≈ 0.00196) rounds back to the clean
    image when the adversarial example is saved as an 8-bit image (see the attacks' 8-bit accuracy).
    """
    if resize not in RESIZE_MODES:
        raise DataError(f"unknown resize mode {resize!r}; choose one of: {', '.join(RESIZE_MODES)}")
    if train:
        policy = {"standard": lambda: T.ColorJitter(0.2, 0.2, 0.2), "trivialaugment": T.TrivialAugmentWide,
                  "randaugment": lambda: T.RandAugment(num_ops=2, magnitude=9)}.get(augment)
        if policy is None:
            raise DataError(f"unknown augmentation {augment!r}; choose one of: {', '.join(AUGMENTATIONS)}")
        return T.Compose([
            T.RandomResizedCrop(img_size, scale=(0.35, 1.0), antialias=True),
            T.RandomHorizontalFlip(),
            policy(),
            T.ToTensor(),
        ])
    return T.Compose([*build_resize(img_size, resize).transforms, T.ToTensor()])


_HIGH_BIT = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")  # PIL modes of 16-bit, 32-bit integer and float images


def check_regular_file(path: str | os.PathLike) -> None:
    """Refuse a path that is not a regular file (a FIFO, a device, a socket) before anything opens it for reading:
    opening a FIFO blocks until a writer appears, reading a device may never end.

    Raises:
        DataError: missing, or not a regular file.
    """
    import stat

    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        raise DataError(f"cannot read image {path}: {exc.strerror or exc}") from None
    if stat.S_ISDIR(mode):
        raise DataError(f"{path}: a folder, not an image")
    if not stat.S_ISREG(mode):
        kind = "a FIFO" if stat.S_ISFIFO(mode) else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else \
            "not a regular file"
        raise DataError(f"{path}: {kind}, not an image file; refused without reading it")


def to_rgb(im: Image.Image) -> Image.Image:
    """Any decoded PIL image as 8-bit RGB, by what its values mean.

    * 16-bit modes (``I;16*``): value / 65535 of full scale (so a 16-bit copy of an 8-bit image, value · 257,
      gives back the 8-bit picture; PIL's own ``convert`` would clip every value above 255 to white);
    * ``I`` (32-bit integer) and ``F`` (float): the range is read off the pixels — at most 1 (``F`` only) is
      [0, 1], at most 255 is 8-bit, at most 65535 is 16-bit, anything larger is scaled by its maximum;
      negative values are clipped to 0;
    * transparency (RGBA, LA, PA, palette with a transparent colour) is laid on white;
    * everything else (L, P, CMYK, YCbCr, 1, RGB) through PIL's ``convert("RGB")``.

    Raises:
        DataError: a float image with NaN or inf pixels.
    """
    if im.mode in _HIGH_BIT:
        a = np.asarray(im, dtype=np.float64)
        if not np.isfinite(a).all():
            raise DataError("the image holds NaN or infinite pixel values")
        top = float(a.max()) if a.size else 0.0
        if im.mode.startswith("I;16"):
            full = 65535.0
        else:
            full = next(v for v in (1.0, 255.0, 65535.0, max(top, 1.0)) if top <= v and (v > 1 or im.mode == "F"))
        grey = np.clip(np.round(a / full * 255.0), 0, 255).astype(np.uint8)
        return Image.fromarray(grey, "L").convert("RGB")
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return im.convert("RGB")


def read_image(sample: Sample) -> Image.Image:
    """Decode one image as 8-bit RGB (see :func:`to_rgb`), cropped to its box if it has one.

    Raises:
        DataError: the file is missing, not a regular file, unreadable or not an image.
    """
    check_regular_file(sample.path)
    try:
        with Image.open(sample.path) as im:
            im.load()
            im = to_rgb(im)
    except DataError as exc:
        raise DataError(f"cannot read image {sample.path}: {exc}") from None
    except Image.DecompressionBombError as exc:
        raise DataError(f"refusing image {sample.path}: {exc}") from None
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as exc:
        raise DataError(f"cannot read image {sample.path}: {exc}") from None
    if sample.bbox is not None:
        x1, y1, x2, y2 = sample.bbox
        im = im.crop((max(0, x1 - 1), max(0, y1 - 1), min(im.width, x2), min(im.height, y2)))
    return im


class CarsDataset(Dataset):
    """``(image, label)`` pairs: image float32 ``(3, H, W)`` in [0, 1], label int (0-based)."""

    def __init__(self, samples: list[Sample], transform: T.Compose) -> None:
        self.samples = samples
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        s = self.samples[i]
        return self.transform(read_image(s)), s.label
