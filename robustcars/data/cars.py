"""Stanford Cars (Krause et al., 3dRR 2013) in the two layouts users have, as lists of samples.

1. Class folders (Kaggle "by classes folder", ``../shared/data/stanford-cars-160``)::

       ROOT/train/<class name>/*.jpg   ROOT/val/<class name>/*.jpg (optional)   ROOT/test/<class name>/*.jpg

   Class names are the sorted folder names of ``train/`` (torchvision ``ImageFolder`` order).
2. The original devkit layout read by ``torchvision.datasets.StanfordCars``::

       ROOT/cars_train/*.jpg  ROOT/cars_test/*.jpg  ROOT/devkit/cars_meta.mat
       ROOT/devkit/cars_train_annos.mat  ROOT/cars_test_annos_withlabels.mat

   (``ROOT/stanford_cars/...`` is accepted too.) Class names come from ``cars_meta.mat`` in devkit
   class-id order; each image may be cropped to its annotated bounding box.

When there is no validation split, ``train`` is split 2:1 into train/val, stratified by class, with a
fixed seed. Decoding and resizing the images is :mod:`robustcars.data.images`.
"""

from __future__ import annotations

import hashlib
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from robustcars.errors import DataError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class Sample:
    """One image: its path, 0-based class index and optional devkit box ``(x1, y1, x2, y2)`` in pixels."""

    path: str
    label: int
    bbox: tuple[int, int, int, int] | None = None


@dataclass
class CarsData:
    """The discovered dataset: class names and the samples of each split."""

    root: Path
    layout: str  # "folders" or "devkit"
    classes: list[str]
    splits: dict[str, list[Sample]] = field(default_factory=dict)
    val_from_train: bool = False

    def counts(self) -> dict[str, int]:
        return {name: len(s) for name, s in self.splits.items()}

    def split(self, name: str) -> list[Sample]:
        if name not in self.splits:
            raise DataError(f"split {name!r} not found in {self.root}; available: {', '.join(self.splits)}")
        return self.splits[name]


def load_cars(
    root: str | Path,
    *,
    seed: int = 0,
    val_fraction: float = 1 / 3,
    crop_to_bbox: bool = True,
) -> CarsData:
    """Find the layout under ``root`` and list every split's samples (no image is decoded here).

    Args:
        root: dataset folder (either layout).
        seed: seed of the stratified train/val split used when the data has no ``val`` split.
        val_fraction: share of ``train`` moved to ``val`` in that case (default 1/3, i.e. 2:1).
        crop_to_bbox: devkit layout only: crop each image to its annotated box.

    Raises:
        DataError: missing or empty folder, unknown layout, test classes absent from train, a class too
            small to split.
    """
    root = Path(root).expanduser()
    if not root.exists():
        raise DataError(f"data folder not found: {root}")
    if not root.is_dir():
        raise DataError(f"data path is not a folder: {root}")
    if (root / "train").is_dir():
        data = _load_folders(root)
    elif (root / "devkit" / "cars_meta.mat").is_file():
        data = _load_devkit(root, crop_to_bbox)
    elif (root / "stanford_cars" / "devkit" / "cars_meta.mat").is_file():
        data = _load_devkit(root / "stanford_cars", crop_to_bbox)
    else:
        raise DataError(
            f"no Stanford Cars layout found in {root}: expected {root}/train/<class>/*.jpg "
            f"or {root}/devkit/cars_meta.mat with cars_train/ and cars_test/"
        )
    if "val" not in data.splits:
        data.splits["train"], data.splits["val"] = stratified_split(data.splits["train"], val_fraction, seed)
        data.val_from_train = True
    return data


def _list_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)


def _load_folders(root: Path) -> CarsData:
    classes = sorted(p.name for p in (root / "train").iterdir() if p.is_dir())
    if not classes:
        raise DataError(f"no class folders in {root / 'train'}")
    index = {name: i for i, name in enumerate(classes)}
    splits: dict[str, list[Sample]] = {}
    for split in SPLITS:
        folder = root / split
        if not folder.is_dir():
            continue
        samples = []
        for cls_dir in sorted(p for p in folder.iterdir() if p.is_dir()):
            if cls_dir.name not in index:
                raise DataError(f"class folder {cls_dir} has no counterpart in {root / 'train'}")
            images = _list_images(cls_dir)
            if split == "train" and not images:
                what = "a link to another folder" if cls_dir.is_symlink() else "empty"
                raise DataError(f"class folder {cls_dir} holds no images ({what}): a class needs training images; "
                                "remove the folder or add images")
            samples += [Sample(str(p), index[cls_dir.name]) for p in images]
        if not samples:
            raise DataError(f"no images found in {folder} (expected {folder}/<class>/*.jpg)")
        splits[split] = samples
    return CarsData(root=root, layout="folders", classes=classes, splits=splits)


def _read_mat(path: Path) -> dict:
    from scipy.io import loadmat

    try:
        return loadmat(str(path), squeeze_me=True)
    except (OSError, ValueError, TypeError) as exc:
        raise DataError(f"cannot read annotation file {path}: {exc}") from exc


def _devkit_samples(mat: dict, image_dir: Path, path: Path, num_classes: int) -> list[Sample]:
    if "annotations" not in mat:
        raise DataError(f"{path} has no 'annotations' struct")
    annos = np.atleast_1d(mat["annotations"])
    if "class" not in (annos.dtype.names or ()):
        raise DataError(f"{path} has no class labels (use cars_test_annos_withlabels.mat for the test split)")
    samples = []
    for a in annos:
        label = int(a["class"]) - 1
        if not 0 <= label < num_classes:
            raise DataError(f"{path}: class id {label + 1} outside 1..{num_classes}")
        box = tuple(int(a[k]) for k in ("bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2"))
        samples.append(Sample(str(image_dir / str(a["fname"])), label, box))  # type: ignore[arg-type]
    missing = [s.path for s in samples if not Path(s.path).is_file()]
    if missing:
        raise DataError(f"{len(missing)} of {len(samples)} images listed in {path.name} are missing, e.g. {missing[0]}")
    return samples


def _load_devkit(root: Path, crop_to_bbox: bool) -> CarsData:
    meta_path = root / "devkit" / "cars_meta.mat"
    meta = _read_mat(meta_path)
    if "class_names" not in meta:
        raise DataError(f"{meta_path} has no 'class_names'")
    classes = [str(c) for c in np.atleast_1d(meta["class_names"])]
    splits: dict[str, list[Sample]] = {}
    train_annos = root / "devkit" / "cars_train_annos.mat"
    if not (root / "cars_train").is_dir() or not train_annos.is_file():
        raise DataError(f"devkit layout in {root} needs cars_train/ and devkit/cars_train_annos.mat")
    splits["train"] = _devkit_samples(_read_mat(train_annos), root / "cars_train", train_annos, len(classes))
    for test_annos in (root / "cars_test_annos_withlabels.mat", root / "devkit" / "cars_test_annos_withlabels.mat"):
        if test_annos.is_file() and (root / "cars_test").is_dir():
            splits["test"] = _devkit_samples(_read_mat(test_annos), root / "cars_test", test_annos, len(classes))
            break
    if not crop_to_bbox:
        splits = {k: [Sample(s.path, s.label) for s in v] for k, v in splits.items()}
    return CarsData(root=root, layout="devkit", classes=classes, splits=splits)


def stratified_split(samples: list[Sample], fraction: float, seed: int) -> tuple[list[Sample], list[Sample]]:
    """Split ``samples`` into ``(keep, held_out)`` with ``fraction`` of each class held out (sklearn).

    Raises:
        DataError: a class has fewer than two images, so it cannot appear on both sides.
    """
    from sklearn.model_selection import train_test_split

    labels = [s.label for s in samples]
    small = [c for c, n in Counter(labels).items() if n < 2]
    if small:
        raise DataError(f"cannot split train into train/val: class index {small[0]} has fewer than 2 images")
    keep, held = train_test_split(samples, test_size=fraction, stratify=labels, random_state=seed)
    return sorted(keep, key=_sample_order), sorted(held, key=_sample_order)


def _sample_order(s: Sample) -> tuple[int, str]:
    """A stable, human-readable order: by class, then path."""
    return (s.label, s.path)


def fingerprint(data: CarsData) -> dict[str, Any]:
    """Counts per split and a sha256 of each split's sorted relative file list (no image is read)."""
    out: dict[str, Any] = {"root": str(data.root), "available": True, "layout": data.layout,
                           "classes": len(data.classes), "splits": {}}
    for name, samples in data.splits.items():
        rel = sorted(os.path.relpath(s.path, data.root) for s in samples)
        out["splits"][name] = {"images": len(rel), "files_sha256": hashlib.sha256("\n".join(rel).encode()).hexdigest()}
    return out


def limit_per_class(samples: list[Sample], k: int) -> list[Sample]:
    """The first ``k`` samples of each class (samples are in a fixed order, so this is deterministic)."""
    seen: Counter[int] = Counter()
    out = []
    for s in samples:
        if seen[s.label] < k:
            seen[s.label] += 1
            out.append(s)
    return out


def subsample(samples: list[Sample], n: int, seed: int) -> list[Sample]:
    """A seeded random subset of ``n`` samples, kept in their original order."""
    if n >= len(samples):
        return list(samples)
    idx = np.sort(np.random.default_rng(seed).choice(len(samples), size=n, replace=False))
    return [samples[i] for i in idx]
