"""Dataclass configs; each is saved, resolved, beside its outputs (``config.json``) and in checkpoints."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from .errors import ConfigError


@dataclass
class TrainConfig:
    """Everything ``robustcars train`` needs; plain types only, so it round-trips through JSON."""

    data: str
    out: str
    arch: str = "resnet34"
    weights: str = "imagenet"  # imagenet | none | PATH
    freeze: int = 0
    epochs: int = 15
    patience: int = 5
    img_size: int = 224
    resize: str = "crop"  # eval-time resize: crop | squash
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.01
    label_smoothing: float = 0.0
    device: str = "auto"
    seed: int = 0
    workers: int = 2
    limit_per_class: int | None = None  # train on the first K images of each class (quick runs)
    val_fraction: float = 1 / 3  # used only when the data has no val split
    crop_to_bbox: bool = True  # devkit layout only

    def validate(self) -> TrainConfig:
        checks = [
            (self.epochs >= 1, f"--epochs must be >= 1, got {self.epochs}"),
            (self.patience >= 1, f"--patience must be >= 1, got {self.patience}"),
            (16 <= self.img_size <= 1024, f"--img-size must be in [16, 1024] pixels, got {self.img_size}"),
            (self.batch_size >= 1, f"--batch-size must be >= 1, got {self.batch_size}"),
            (0 < self.lr < 1, f"--lr must be in (0, 1), got {self.lr}"),
            (self.weight_decay >= 0, f"--weight-decay must be >= 0, got {self.weight_decay}"),
            (0 <= self.label_smoothing < 1, f"--label-smoothing must be in [0, 1), got {self.label_smoothing}"),
            (self.freeze >= 0, f"--freeze must be >= 0, got {self.freeze}"),
            (self.workers >= 0, f"--workers must be >= 0, got {self.workers}"),
            (0 < self.val_fraction < 1, f"val fraction must be in (0, 1), got {self.val_fraction}"),
            (self.limit_per_class is None or self.limit_per_class >= 1,
             f"--limit-per-class must be >= 1, got {self.limit_per_class}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)
        return self

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})
