"""Is this a car at all? The summed ImageNet softmax probability of the car classes of EfficientNet-Lite0's
ImageNet head (the weights that install offline) against a threshold, as the reference car-classification
project does before training (``robustcars prefilter``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from robustcars.data.cars import load_cars
from robustcars.data.images import CarsDataset, build_transform
from robustcars.errors import ConfigError
from robustcars.models.zoo import imagenet_classifier

# ImageNet-1k classes that are road cars (torchvision's category names). The reference project's list
# also had 705 "passenger car", which in ImageNet is a railway carriage: left out.
CAR_CLASSES = (436, 468, 511, 609, 627, 654, 656, 675, 717, 734, 751, 757, 817, 864)


def imagenet_categories() -> list[str]:
    """The 1000 ImageNet-1k class names, from torchvision's weights metadata (no download)."""
    from torchvision.models import ResNet18_Weights

    return list(ResNet18_Weights.IMAGENET1K_V1.meta["categories"])


@dataclass
class PrefilterResult:
    is_car: bool
    car_probability: float  # summed ImageNet softmax probability of CAR_CLASSES
    top5: list[tuple[str, float]]


class CarPrefilter:
    """``is_car`` from EfficientNet-Lite0's ImageNet head: car if the summed probability of
    :data:`CAR_CLASSES` reaches ``threshold`` (default 0.1, the reference project's)."""

    def __init__(self, threshold: float = 0.1, img_size: int = 224) -> None:
        if not 0.0 <= threshold <= 1.0:
            raise ConfigError(f"--threshold must be in [0, 1], got {threshold}")

        self.threshold = threshold
        self.model = imagenet_classifier("efficientnet_lite0")
        self.transform = build_transform(img_size, train=False, resize="squash")
        self.names = imagenet_categories()

    @torch.inference_mode()
    def __call__(self, x: torch.Tensor) -> list[PrefilterResult]:
        """Judge images ``x`` float32 ``(N, 3, H, W)`` in [0, 1], ideally at ``img_size`` (see ``transform``)."""
        p = torch.softmax(self.model(x).float(), dim=1)
        car = p[:, list(CAR_CLASSES)].sum(1)
        prob, idx = p.topk(5, dim=1)
        return [PrefilterResult(bool(c >= self.threshold), float(c),
                                [(self.names[i], float(q)) for i, q in zip(ii.tolist(), pp.tolist())])
                for c, ii, pp in zip(car, idx, prob)]


@dataclass
class PrefilterSummary:
    rows: list[dict]
    threshold: float

    @property
    def suspects(self) -> list[dict]:
        return sorted((r for r in self.rows if not r["is_car"]), key=lambda r: r["car_probability"])


def prefilter_dataset(root: str | Path, *, threshold: float = 0.1, batch_size: int = 32, workers: int = 2,
                      progress=None) -> PrefilterSummary:
    """Score every image of every split of a dataset (either layout) with :class:`CarPrefilter`; nothing is
    moved or deleted. ``progress(n)`` is called with the images done after each batch.

    Raises:
        DataError: the data root cannot be read; ConfigError: a threshold outside [0, 1].
    """
    from torch.utils.data import DataLoader


    pf = CarPrefilter(threshold)
    data = load_cars(root)
    rows = []
    for split, samples in data.splits.items():
        loader = DataLoader(CarsDataset(samples, pf.transform), batch_size=batch_size, num_workers=workers)
        done = 0
        for x, _ in loader:
            for s, v in zip(samples[done:done + len(x)], pf(x)):
                rows.append({"path": str(Path(s.path).relative_to(data.root)) if Path(s.path).is_relative_to(data.root)
                             else s.path, "split": split, "class": data.classes[s.label], "is_car": v.is_car,
                             "car_probability": round(v.car_probability, 6),
                             **{f"top{k + 1}": f"{n} ({p:.3f})" for k, (n, p) in enumerate(v.top5)}})
            done += len(x)
            if progress:
                progress(len(x))
    return PrefilterSummary(rows, threshold)
