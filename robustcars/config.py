"""Dataclass configs; each is saved, resolved, beside its outputs (``config.json``) and in checkpoints."""

from __future__ import annotations

import hashlib
import json
import os
import shlex
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from robustcars.errors import ConfigError
from robustcars.registry import attack_spec, check_eps, check_normalization, check_seed, validate_params

DATA_ENV = "ROBUSTCARS_DATA"
DEFAULT_DATA = "data/stanford-cars"


def default_data() -> str:
    """The data root when ``--data`` is not given: ``$ROBUSTCARS_DATA``, else ``data/stanford-cars``."""
    return os.environ.get(DATA_ENV) or DEFAULT_DATA


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
    # adversarial fine-tuning (robustcars.training.defences): None = standard training
    adversarial: str | None = None  # fgsm-rs | pgd | trades
    train_eps: float = 0.004  # L∞ budget in [0, 1] pixel scale
    train_steps: int = 5  # PGD-AT / TRADES inner steps
    trades_beta: float = 6.0
    eps_warmup: float = 1.0  # epochs over which eps ramps linearly from 0
    robust_val_images: int = 256  # seeded validation subset for PGD robust accuracy (0 = all)
    robust_val_steps: int = 10
    # knowledge distillation from a trained run (Hinton et al. 2015)
    distill_from: str | None = None
    temperature: float = 4.0
    alpha: float = 0.5  # weight of the soft (teacher) term
    defensive: bool = False  # defensive distillation (Papernot et al. 2016): targets softmax(t), student at T

    def validate(self) -> TrainConfig:
        from robustcars.registry import ADVERSARIAL_TRAINING, ARCHITECTURES

        checks = [
            (self.adversarial is None or self.adversarial in ADVERSARIAL_TRAINING,
             f"--adversarial must be one of {', '.join(ADVERSARIAL_TRAINING)}, got {self.adversarial!r}"),
            (0 < self.train_eps <= 1, f"--train-eps must be in (0, 1] (L∞, pixel scale), got {self.train_eps}"),
            (self.train_steps >= 1, f"--train-steps must be >= 1, got {self.train_steps}"),
            (self.trades_beta >= 0, f"--trades-beta must be >= 0, got {self.trades_beta}"),
            (self.eps_warmup >= 0, f"--eps-warmup must be >= 0 epochs, got {self.eps_warmup}"),
            (self.robust_val_images >= 0, f"--robust-val-images must be >= 0, got {self.robust_val_images}"),
            (self.robust_val_steps >= 1, f"--robust-val-steps must be >= 1, got {self.robust_val_steps}"),
            (self.temperature > 0, f"--temperature must be > 0, got {self.temperature}"),
            (0 <= self.alpha <= 1, f"--alpha must be in [0, 1], got {self.alpha}"),
            (not (self.adversarial and self.distill_from), "--adversarial and --distill-from cannot be combined"),
            (self.distill_from is not None or not self.defensive, "--defensive goes with --distill-from"),
            (self.epochs >= 1, f"--epochs must be >= 1, got {self.epochs}"),
            (self.patience >= 1, f"--patience must be >= 1, got {self.patience}"),
            (16 <= self.img_size <= 1024, f"--img-size must be in [16, 1024] pixels, got {self.img_size}"),
            (self.batch_size >= 1, f"--batch-size must be >= 1, got {self.batch_size}"),
            (0 < self.lr < 1, f"--lr must be in (0, 1), got {self.lr}"),
            (self.weight_decay >= 0, f"--weight-decay must be >= 0, got {self.weight_decay}"),
            (0 <= self.label_smoothing < 1, f"--label-smoothing must be in [0, 1), got {self.label_smoothing}"),
            (self.arch in ARCHITECTURES, f"--arch must be one of {', '.join(ARCHITECTURES)}, got {self.arch!r}"),
            (self.arch not in ARCHITECTURES or 0 <= self.freeze < ARCHITECTURES[self.arch].children,
             f"--freeze must be in [0, {ARCHITECTURES[self.arch].children - 1 if self.arch in ARCHITECTURES else 0}] "
             f"for {self.arch}, got {self.freeze}"),
            (self.workers >= 0, f"--workers must be >= 0, got {self.workers}"),
            (0 < self.val_fraction < 1, f"val fraction must be in (0, 1), got {self.val_fraction}"),
            (self.limit_per_class is None or self.limit_per_class >= 1,
             f"--limit-per-class must be >= 1, got {self.limit_per_class}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)
        check_seed(self.seed)
        return self

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def command(self) -> str:
        """The ``robustcars train`` command that reproduces this run from scratch: every option that decides
        its result, and none that does not apply (no adversarial options without ``--adversarial``, no
        distillation options without ``--distill-from``)."""
        d = TrainConfig(data="", out="")
        opts: list[tuple[str, Any]] = [("--data", self.data), ("--out", self.out), ("--arch", self.arch),
                                       ("--weights", self.weights)]
        for name in ("freeze", "epochs", "patience", "img_size", "resize", "batch_size", "lr", "weight_decay",
                     "label_smoothing", "seed", "workers"):
            opts.append((f"--{name.replace('_', '-')}", getattr(self, name)))
        if self.device != d.device:
            opts.append(("--device", self.device))
        if self.limit_per_class is not None:
            opts.append(("--limit-per-class", self.limit_per_class))
        if self.adversarial:
            opts += [("--adversarial", self.adversarial), ("--train-eps", self.train_eps),
                     ("--eps-warmup", self.eps_warmup), ("--robust-val-images", self.robust_val_images),
                     ("--robust-val-steps", self.robust_val_steps)]
            if self.adversarial in ("pgd", "trades"):
                opts.append(("--train-steps", self.train_steps))
            if self.adversarial == "trades":
                opts.append(("--trades-beta", self.trades_beta))
        if self.distill_from:
            opts += [("--distill-from", self.distill_from), ("--temperature", self.temperature),
                     ("--alpha", self.alpha)]
        flags = ["--defensive"] if self.distill_from and self.defensive else []
        return _join("train", opts, flags)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


@dataclass
class AttackConfig:
    """Everything ``robustcars attack`` needs (torch-free; validated before anything is imported or written)."""

    run: str
    out: str
    eps: list[float] = field(default_factory=lambda: [0.01])
    attack: str = "fgsm"
    params: dict[str, Any] = field(default_factory=dict)  # attack parameters as given (steps, alpha, target, ...)
    split: str = "test"
    batch_size: int = 32
    device: str = "auto"
    data: str | None = None  # overrides the data root saved in the run
    max_images: int | None = None  # a seeded random subset of the split
    examples: int = 4  # images shown in the panel figures
    seed: int = 0
    workers: int = 2
    cam: int = 0  # images whose Grad-CAM attention shift (clean vs largest eps) is measured
    save_adv: bool = False  # keep every adversarial example (robustcars.evaluation.saved)
    save_png: bool = False  # ... and write them as 8-bit PNGs (implies save_adv)
    # a model robustcars did not train (instead of `run`): spec, weights, class names, preprocessing
    model: str | None = None  # torchvision:NAME | timm:NAME | package.module:factory
    checkpoint: str | None = None
    classes: str | None = None  # file with one class name a line (default: the data's class folders)
    mean: list[float] | None = None
    std: list[float] | None = None
    img_size: int | None = None  # for --model (default 224); a run's own size is filled in by the runner
    resize: str | None = None  # for --model (default crop); likewise

    def validate(self) -> AttackConfig:
        """Check every field and the attack's parameters (registry). Raises ConfigError."""
        self.save_adv = self.save_adv or self.save_png
        if self.model is not None:
            self.img_size = 224 if self.img_size is None else self.img_size
            self.resize = "crop" if self.resize is None else self.resize
        spec = attack_spec(self.attack)
        self.eps = sorted(set(check_eps(self.eps)))
        values = validate_params(self.attack, self.params)
        self.params = {k: values[k] for k in self.params}  # normalized: "3" -> 3 for a target, 10.0 -> 10
        checks = [
            (self.split in ("train", "val", "test"), f"--split must be one of train, val, test, got {self.split!r}"),
            (self.batch_size >= 1, f"--batch-size must be >= 1, got {self.batch_size}"),
            (self.max_images is None or self.max_images >= 1, f"--max-images must be >= 1, got {self.max_images}"),
            (self.examples >= 0, f"--examples must be >= 0, got {self.examples}"),
            (self.workers >= 0, f"--workers must be >= 0, got {self.workers}"),
            (self.cam >= 0, f"--cam must be >= 0, got {self.cam}"),
            (self.img_size is None or 16 <= self.img_size <= 1024,
             f"--img-size must be in [16, 1024] pixels, got {self.img_size}"),
            (self.resize in (None, "crop", "squash"), f"--resize must be crop or squash, got {self.resize!r}"),
            (self.model is None or self.run in ("", None), "give --run (a robustcars run) or --model, not both"),
            (self.model is not None or bool(self.run), "give --run (a robustcars run) or --model (any model)"),
            (spec.kind != "single-step" or "target" not in self.params, f"{self.attack} cannot be targeted"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)
        check_seed(self.seed)
        check_normalization(self.mean, self.std)
        return self

    def command(self, suite: str | None = None) -> str:
        """The ``robustcars attack`` command that reproduces these records (``suite``: the suite file that
        defined the attacks): every option that decides them, and none that does not apply (a run's own
        image size and resize mode are not options)."""
        opts: list[tuple[str, Any]] = [("--model", self.model)] if self.model else [("--run", self.run)]
        if self.model:
            opts += [("--checkpoint", self.checkpoint), ("--classes", self.classes),
                     ("--mean", _csv(self.mean)), ("--std", _csv(self.std)), ("--img-size", self.img_size),
                     ("--resize", self.resize)]
        if suite:
            opts.append(("--suite", suite))
        else:
            opts += [("--attack", self.attack), *(("--eps", repr(float(e))) for e in self.eps),
                     *(("--param", f"{k}={_value(v)}") for k, v in sorted(self.params.items()))]
        opts += [("--data", self.data), ("--split", self.split), ("--batch-size", self.batch_size),
                 ("--max-images", self.max_images), ("--seed", self.seed), ("--examples", self.examples),
                 ("--cam", self.cam or None), ("--out", self.out)]
        flags = ["--save-png"] if self.save_png else ["--save-adv"] if self.save_adv else []
        return _join("attack", opts, flags)

    @property
    def norm(self) -> str:
        return attack_spec(self.attack).norm

    def fingerprint(self) -> str:
        """Hash of everything that changes the records (not the output folder, device, workers or panels)."""
        keys = {k: v for k, v in asdict(self).items() if k not in ("out", "device", "workers", "examples")}
        for k in ("save_adv", "save_png"):  # saved only when asked: the fingerprints of 0.2 folders stay valid
            if not keys[k]:
                del keys[k]
        return hashlib.sha256(json.dumps(keys, sort_keys=True).encode()).hexdigest()[:16]


def _csv(values: list[float] | None) -> str | None:
    return None if values is None else ",".join(repr(float(v)) for v in values)


def _value(v: Any) -> str:
    """A parameter value as ``--param`` reads it back (JSON-ish: true/false, numbers, strings)."""
    return json.dumps(v) if isinstance(v, bool) else str(v)


def _join(command: str, opts: list[tuple[str, Any]], flags: list[str] | None = None) -> str:
    """``robustcars COMMAND --opt value ...`` shell-quoted; options whose value is None are left out."""
    parts = ["robustcars", command]
    for opt, value in opts:
        if value is not None:
            parts += [opt, str(value)]
    return shlex.join(parts + (flags or []))
