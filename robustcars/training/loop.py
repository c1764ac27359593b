"""Fine-tuning: AdamW + cosine LR, cross-entropy, early stopping on validation macro-F1, resumable.

Functions follow torchvision's reference ``train_one_epoch`` / ``evaluate`` / ``main`` split:
:func:`train_one_epoch` and :func:`evaluate` are loop bodies, :func:`fit` owns the run folder::

    RUN_DIR/config.json   resolved TrainConfig           RUN_DIR/best.pt   best model (val macro-F1)
    RUN_DIR/last.pt       resumable state, every epoch   RUN_DIR/history.csv  per-epoch metrics
    RUN_DIR/learning_curves.png                          RUN_DIR/metrics.json test metrics of best.pt
    RUN_DIR/val_batches.csv  validation loss and macro-F1 of every batch, every epoch (the spread in history.csv)
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from robustcars import distributed as D
from robustcars import storage as rio
from robustcars.config import TrainConfig
from robustcars.data.cars import CarsData, limit_per_class, load_cars, subsample
from robustcars.data.images import CarsDataset, build_transform
from robustcars.errors import CheckpointError, ConfigError, DataError
from robustcars.lock import process_lock
from robustcars.metrics import accuracy, macro_f1, mean_std
from robustcars.models.checkpoint import read_checkpoint, save_checkpoint
from robustcars.models.source import from_run
from robustcars.models.zoo import build_model, count_parameters, freeze, set_train_mode
from robustcars.reporting.figures import learning_curves
from robustcars.runtime import library_versions, resolve_device
from robustcars.training.defences import (
    BatchLoss,
    adversarial_batch_loss,
    collapsed,
    describe,
    distill_batch_loss,
    robust_accuracy,
    warmup_eps,
)

Callback = Callable[[int], None]  # called with the number of images just processed


def make_loader(dataset: CarsDataset, batch_size: int, *, shuffle: bool, workers: int, device: torch.device,
                seed: int = 0) -> DataLoader:
    """A loader over this process's share: all of ``dataset`` in one process; under torchrun a
    ``DistributedSampler`` share when shuffling (training), else a contiguous shard (evaluation: every
    image exactly once across ranks)."""
    from torch.utils.data import DistributedSampler, Subset

    d = D.current()
    sampler = None
    share = len(dataset) // d.world
    if d.enabled and shuffle:
        sampler = DistributedSampler(dataset, num_replicas=d.world, rank=d.rank, shuffle=True, seed=seed)
    elif d.enabled:
        dataset = Subset(dataset, list(D.shard(len(dataset), d)))
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle and sampler is None,
        sampler=sampler,
        num_workers=workers,
        pin_memory=device.type == "cuda",
        # Training workers start afresh each epoch: their seeds (hence every augmentation) then come from the
        # loader's generator, which fit() reseeds from (seed, epoch) — so a resumed run is bit-identical to an
        # uninterrupted one. Persistent workers would carry their RNG state across epochs instead.
        persistent_workers=workers > 0 and not shuffle,
        generator=torch.Generator().manual_seed(seed) if shuffle and sampler is None else None,
        # training drops an incomplete last batch (a batch of one breaks BatchNorm); evaluation keeps all
        drop_last=shuffle and share >= batch_size,
    )


def images_per_epoch(loader: DataLoader) -> int:
    """Images this process's loader yields in one epoch (an incomplete last batch dropped, if it is)."""
    n = len(loader.sampler)
    return n - n % loader.batch_size if loader.drop_last else n


def _autocast(device: torch.device):
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.float16)
    return contextlib.nullcontext()


def train_one_epoch(model: nn.Sequential, loader: DataLoader, optimizer: torch.optim.Optimizer,
                    criterion: nn.Module, device: torch.device, *, frozen: list[str] = (),
                    scaler: torch.amp.GradScaler | None = None, on_batch: Callback | None = None,
                    batch_loss: BatchLoss | None = None) -> dict[str, float]:
    """One pass over ``loader``; returns mean loss, accuracy and macro-F1 of the training predictions.

    ``batch_loss(model, x, y, batch_index) -> (loss, logits)`` replaces ``criterion(model(x), y)``: adversarial
    training and distillation (:mod:`robustcars.training.defences`); the metrics are then of the logits it returns."""
    set_train_mode(model, frozen)
    total_loss = torch.zeros((), device=device)
    preds, labels = [], []
    n = 0
    for i, (x, y) in enumerate(loader):
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        with _autocast(device):
            if batch_loss is not None:
                loss, logits = batch_loss(model, x, y, i)
            else:
                logits = model(x)
                loss = criterion(logits, y)
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
        total_loss += loss.detach() * len(y)
        n += len(y)
        preds.append(logits.detach().argmax(1))
        labels.append(y)
        if on_batch:
            on_batch(len(y))
    p, t = torch.cat(preds).cpu().numpy(), torch.cat(labels).cpu().numpy()
    p, t, loss_sum = _gather_predictions(p, t, float(total_loss))
    return {"loss": loss_sum / len(t), "acc": accuracy(t, p), "f1": macro_f1(t, p)}


@torch.inference_mode()
def evaluate(model: nn.Module, loader: DataLoader, device: torch.device, *, criterion: nn.Module | None = None,
             on_batch: Callback | None = None) -> dict[str, Any]:
    """Clean evaluation in eval mode (the mode is restored afterwards).

    Returns:
        ``loss``, ``acc``, ``f1`` (floats over all images; loss in nats, mean over images), ``pred``/``label``
        int64 arrays ``(N,)``, and per batch ``batch_loss`` (mean cross-entropy of the batch, nats) and
        ``batch_f1`` (macro-F1 of the batch over its own classes, :func:`robustcars.metrics.macro_f1`), float64
        arrays ``(B,)`` in loader order (every rank's batches, rank by rank, under torchrun): the spread over
        batches that the study figures draw as ±1 standard deviation.
    """
    was_training = model.training
    model.eval()
    criterion = criterion or nn.CrossEntropyLoss()
    total_loss, batch_losses, preds, labels = torch.zeros((), device=device), [], [], []
    try:
        for x, y in loader:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            with _autocast(device):
                logits = model(x)
            loss = criterion(logits.float(), y)
            total_loss += loss * len(y)  # stays on the device: no per-batch sync
            batch_losses.append(loss)
            preds.append(logits.argmax(1).cpu())
            labels.append(y.cpu())
            if on_batch:
                on_batch(len(y))
    finally:
        model.train(was_training)
    batch_loss = torch.stack(batch_losses).double().cpu().numpy() if batch_losses else np.zeros(0)
    batch_f1 = np.array([macro_f1(t.numpy(), p.numpy()) for p, t in zip(preds, labels)], dtype=np.float64)
    p = torch.cat(preds).numpy() if preds else np.zeros(0, dtype=np.int64)
    t = torch.cat(labels).numpy() if labels else np.zeros(0, dtype=np.int64)
    p, t, loss_sum = _gather_predictions(p, t, float(total_loss))
    batch_loss, batch_f1 = _gather_batches(batch_loss, batch_f1)
    return {"loss": loss_sum / len(t), "acc": accuracy(t, p), "f1": macro_f1(t, p), "pred": p, "label": t,
            "batch_loss": batch_loss, "batch_f1": batch_f1}


def _gather_batches(loss: np.ndarray, f1: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every rank's per-batch values, rank by rank (identity in one process)."""
    d = D.current()
    if not d.enabled:
        return loss, f1
    parts = D.gather((loss, f1), d)
    return np.concatenate([a for a, _ in parts]), np.concatenate([b for _, b in parts])


def _gather_predictions(p: np.ndarray, t: np.ndarray, loss_sum: float) -> tuple[np.ndarray, np.ndarray, float]:
    """Concatenate every rank's predictions in rank order (identity in one process)."""
    d = D.current()
    if not d.enabled:
        return p, t, loss_sum
    parts = D.gather((p, t, loss_sum), d)
    return (np.concatenate([a for a, _, _ in parts]), np.concatenate([b for _, b, _ in parts]),
            sum(c for _, _, c in parts))


@dataclass
class FitResult:
    run_dir: Path
    history: list[dict[str, float]]
    best_epoch: int
    best_val_f1: float
    test: dict[str, float] | None
    stopped_early: bool
    seconds: float


class Reporter:
    """What :func:`fit` tells the outside world; the CLI passes a rich implementation."""

    def start(self, info: dict[str, Any]) -> None: ...
    def phase(self, name: str, total: int, **where: Any) -> Callback: return lambda n: None
    def end_phase(self) -> None: ...
    def epoch(self, row: dict[str, float], improved: bool) -> None: ...
    def end(self) -> None: ...


def _checkpoint_payload(cfg: TrainConfig, data: CarsData, model: nn.Module, frozen: list[str], epoch: int,
                        metrics: dict[str, Any]) -> dict[str, Any]:
    return {
        "arch": cfg.arch,
        "num_classes": len(data.classes),
        "class_names": list(data.classes),
        "img_size": cfg.img_size,
        "resize": cfg.resize,
        "mean": model.normalize.mean.flatten().tolist(),
        "std": model.normalize.std.flatten().tolist(),
        "weights_origin": cfg.weights,
        "frozen": list(frozen),
        "config": cfg.to_dict(),
        "defence": describe(cfg),  # adversarial training / distillation settings (None: standard training)
        "data": {"root": str(data.root), "layout": data.layout, "counts": data.counts(),
                 "val_from_train": data.val_from_train},
        "epoch": epoch,
        "metrics": metrics,
        "versions": library_versions(),
        "state_dict": model.state_dict(),
    }


def fit(cfg: TrainConfig, *, resume: bool = False, reporter: Reporter | None = None, command: str = "") -> FitResult:
    """Train ``cfg.arch`` on ``cfg.data`` into ``cfg.out``; see the module docstring for the files.

    With ``resume=True`` the run continues from ``cfg.out/last.pt`` (its saved config is used; only the
    device may change). Without it, a folder that already holds a run is refused, so nothing is overwritten.

    Raises:
        ConfigError, DataError, CheckpointError, StorageError: as their messages say.
    """
    out = Path(cfg.out)
    state = _resume_state(out, resume)
    if state:
        device_name = cfg.device
        cfg = TrainConfig.from_dict(state["config"])
        cfg.device = device_name
    cfg.validate()
    data = load_cars(cfg.data, seed=cfg.seed, val_fraction=cfg.val_fraction, crop_to_bbox=cfg.crop_to_bbox)
    teacher = _teacher(cfg, data)
    torch.manual_seed(cfg.seed)
    model = build_model(cfg.arch, len(data.classes), weights="none" if state else cfg.weights)
    frozen = freeze(model, cfg.freeze)  # --freeze out of range is refused before the folder exists
    d, device = D.init(resolve_device(cfg.device))
    with process_lock(out, d):  # only now is anything written
        if not resume:
            _resume_state(out, False)  # again under the lock: another run may have started meanwhile
        return _fit(cfg, state, data, model, frozen, d, device, reporter or Reporter(), command, teacher)


def _teacher(cfg: TrainConfig, data: CarsData):
    """The run to distil from (``--distill-from``), checked against the data's classes; None without one.

    Raises:
        CheckpointError: the run cannot be read; DataError: its classes are not the data's.
    """
    if not cfg.distill_from:
        return None

    src = from_run(cfg.distill_from)
    if src.class_names != list(data.classes):
        raise DataError(f"--distill-from {cfg.distill_from} was trained on other classes than {cfg.data} "
                        f"({src.num_classes} vs {len(data.classes)} classes, or another order)")
    return src


def _resume_state(out: Path, resume: bool) -> dict[str, Any] | None:
    """The state to continue from (``resume``), or None for a new run; refuses what would lose data.

    Raises:
        ConfigError: a new run into a folder that holds one, or a resume with nothing resumable (the
            message says what is there and what to do).
        CheckpointError: last.pt is unreadable.
    """
    last_path, best_path = out / "last.pt", out / "best.pt"
    if last_path.is_file():
        if not resume:
            raise ConfigError(f"{out} already holds a run; pass --resume to continue it or choose another --out")
        return read_checkpoint(last_path)
    if best_path.exists():
        raise ConfigError(f"{out} holds best.pt but no resumable state (last.pt is missing: its write failed or the "
                          "run was stopped before it); it cannot be continued — choose another --out or delete it")
    if resume:
        raise CheckpointError(f"nothing to resume: {last_path} does not exist (no epoch of this run finished)")
    return None


def _robust_batches(cfg: TrainConfig, samples: list, eval_tf, count: int, device: torch.device
                    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """A fixed, seeded set of ``count`` images (0 = all) in batches on ``device``, for PGD robust accuracy."""

    if count and count < len(samples):
        samples = subsample(samples, count, cfg.seed)
    loader = DataLoader(CarsDataset(samples, eval_tf), batch_size=cfg.batch_size, shuffle=False, num_workers=0)
    return [(x.to(device), y.to(device)) for x, y in loader]


def _epoch_loss(cfg: TrainConfig, epoch: int, batches: int, criterion: nn.Module, frozen: list[str],
                teacher: tuple[nn.Module, int] | None) -> BatchLoss | None:
    """This epoch's per-batch loss: adversarial (eps warmed up batch by batch), distillation, or None."""

    if cfg.adversarial:
        def eps_of(batch: int) -> float:
            return warmup_eps(cfg.train_eps, epoch, batch / max(batches, 1), cfg.eps_warmup)
        return adversarial_batch_loss(cfg.adversarial, eps_of, cfg.train_steps, cfg.trades_beta, cfg.seed, epoch,
                                      criterion, frozen)
    if teacher is not None:
        return distill_batch_loss(teacher[0], cfg.temperature, cfg.alpha, criterion, size=teacher[1],
                                  defensive=cfg.defensive)
    return None


@dataclass
class _Selection:
    """Where model selection and early stopping stand after the epochs so far (saved in ``last.pt``).

    ``best_score`` is the selection score: validation macro-F1, or validation robust accuracy when training
    adversarially (the checkpoint key stays ``best_f1`` so that runs of 0.2 resume).
    """

    history: list[dict[str, float]] = field(default_factory=list)
    best_score: float = -1.0
    best_epoch: int = 0
    bad_epochs: int = 0
    start_epoch: int = 1
    collapse: dict[str, Any] | None = None  # FGSM-RS catastrophic overfitting, once detected
    val_batches: list[dict[str, float]] = field(default_factory=list)  # per validation batch, every epoch so far

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> _Selection:
        return cls(list(state["history"]), state["best_f1"], state["best_epoch"], state["bad_epochs"],
                   state["epoch"] + 1, state.get("collapse"), list(state.get("val_batches", [])))

    def stopped(self, patience: int) -> bool:
        return self.bad_epochs >= patience or self.collapse is not None

    def update(self, row: dict[str, Any], score: float) -> bool:
        """Append ``row``; True when its epoch is the new best (a collapsed epoch never is)."""
        self.history.append(row)
        improved = score > self.best_score and not row.get("collapsed")
        if improved:
            self.best_score, self.best_epoch, self.bad_epochs = score, row["epoch"], 0
        else:
            self.bad_epochs += 1
        return improved


@dataclass
class _Optimization:
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler | None
    criterion: nn.Module


def _optimization(cfg: TrainConfig, model: nn.Module, device: torch.device) -> _Optimization:
    """AdamW over the trainable weights, cosine LR over ``cfg.epochs``, cross-entropy with label smoothing."""
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return _Optimization(optimizer, torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg.epochs),
                         torch.amp.GradScaler("cuda") if device.type == "cuda" else None,
                         nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing))


def _restore(state: dict[str, Any] | None, model: nn.Module, opt: _Optimization) -> _Selection:
    """The selection state of a resumed run (weights, optimizer, scheduler and RNG restored), or a fresh one."""
    if not state:
        return _Selection()
    model.load_state_dict(state["state_dict"])
    opt.optimizer.load_state_dict(state["optimizer"])
    opt.scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["rng"])
    return _Selection.from_state(state)


def _fit(cfg: TrainConfig, state: dict[str, Any] | None, data: CarsData, model: nn.Sequential, frozen: list[str],
         d, device: torch.device, rep: Reporter, command: str, teacher_source=None) -> FitResult:
    out = Path(cfg.out)
    train_samples = data.split("train")
    if cfg.limit_per_class:
        train_samples = limit_per_class(train_samples, cfg.limit_per_class)
    model.to(device)
    opt = _optimization(cfg, model, device)
    sel = _restore(state, model, opt)
    if not state and d.is_main:
        rio.write_json(out / "config.json", cfg.to_dict())
    net: nn.Module = model
    if d.enabled:
        net = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)

    train_loader = make_loader(CarsDataset(train_samples, build_transform(cfg.img_size, train=True,
                                                                          augment=cfg.augment)),
                               cfg.batch_size, shuffle=True, workers=cfg.workers, device=device, seed=cfg.seed)
    eval_tf = build_transform(cfg.img_size, train=False, resize=cfg.resize)
    val_loader = make_loader(CarsDataset(data.split("val"), eval_tf), cfg.batch_size, shuffle=False,
                             workers=cfg.workers, device=device)
    defence = _defence_inputs(cfg, data, train_samples, eval_tf, device, teacher_source)
    commands = (list(state.get("commands", [])) if state else []) + ([command] if command else [])
    trainable, total = count_parameters(model)
    rep.start({"arch": cfg.arch, "weights": cfg.weights, "frozen": frozen, "device": str(device),
               "classes": len(data.classes), "train": len(train_samples), "val": len(data.split("val")),
               "trainable": trainable, "params": total, "start_epoch": sel.start_epoch, "epochs": cfg.epochs,
               "layout": data.layout, "defence": describe(cfg)})

    t0 = time.perf_counter()
    for epoch in range(sel.start_epoch, cfg.epochs + 1):
        if sel.stopped(cfg.patience):
            break
        loaders = (train_loader, val_loader, len(data.split("val")))
        row = _one_epoch(cfg, epoch, net, model, device, loaders, opt, frozen, defence, sel, rep)
        sel.val_batches += row.pop("_batches")
        improved = sel.update(row, row.pop("_score"))  # every rank saw the same gathered metrics: they agree
        if d.is_main:
            _save_epoch(cfg, data, model, frozen, row, improved, opt, sel, commands)
        D.barrier(d)
        rep.epoch(row, improved)

    seconds = time.perf_counter() - t0 + (sum(h["seconds"] for h in sel.history[: sel.start_epoch - 1])
                                          if state else 0.0)
    stopped_early = sel.stopped(cfg.patience)
    summary = _run_summary(cfg, sel.history, commands, frozen, sel.best_epoch, sel.best_score, stopped_early,
                           sel.collapse)
    summary.update(trainable_parameters=trainable, parameters=total)
    test = _finish_run(cfg, data, model, sel.history, summary, eval_tf, d, device, rep)
    rep.end()
    return FitResult(out, sel.history, sel.best_epoch, sel.best_score, test, stopped_early, seconds)


def _one_epoch(cfg: TrainConfig, epoch: int, net: nn.Module, model: nn.Module, device: torch.device, loaders,
               opt: _Optimization, frozen: list[str], defence, sel: _Selection, rep: Reporter) -> dict[str, Any]:
    """Train and validate one epoch; the history row, with the selection score under ``_score``."""
    train_loader, val_loader, n_val = loaders
    teacher, robust_val, guard = defence
    te = time.perf_counter()
    _seed_epoch(train_loader, cfg.seed, epoch)
    lr = opt.optimizer.param_groups[0]["lr"]
    loss_fn = _epoch_loss(cfg, epoch, len(train_loader), opt.criterion, frozen, teacher)
    tr = train_one_epoch(net, train_loader, opt.optimizer, opt.criterion, device, frozen=frozen,
                         scaler=opt.scaler, batch_loss=loss_fn,
                         on_batch=rep.phase(f"epoch {epoch}/{cfg.epochs} train", images_per_epoch(train_loader),
                                            phase="train", epoch=epoch, epochs=cfg.epochs))
    rep.end_phase()
    va = evaluate(model, val_loader, device, criterion=opt.criterion,
                  on_batch=rep.phase(f"epoch {epoch}/{cfg.epochs} val", n_val, phase="val", epoch=epoch,
                                     epochs=cfg.epochs))
    rep.end_phase()
    opt.scheduler.step()
    row = {"epoch": epoch, "lr": lr, "train_loss": tr["loss"], "train_acc": tr["acc"], "train_f1": tr["f1"],
           "val_loss": va["loss"], "val_acc": va["acc"], "val_f1": va["f1"], **batch_spread(va)}
    score = va["f1"]
    if cfg.adversarial:
        score = _robust_row(cfg, model, epoch, row, robust_val, guard, sel.history)
        if row.get("collapsed"):
            sel.collapse = {"epoch": epoch, "guard_robust_acc_before": sel.history[-1]["guard_robust_acc"],
                            "guard_robust_acc": row["guard_robust_acc"]}
    row["seconds"] = time.perf_counter() - te
    row["_score"] = score
    row["_batches"] = [{"epoch": epoch, "batch": i, "loss": float(loss), "f1": float(f1)}
                       for i, (loss, f1) in enumerate(zip(va["batch_loss"], va["batch_f1"]))]
    return row


def batch_spread(va: dict[str, Any]) -> dict[str, float]:
    """Mean and population standard deviation (``numpy.std``, ddof 0) over validation batches of the batch loss
    (nats) and the batch macro-F1: the study's learning-curve line and its ±1 std band."""
    loss_mean, loss_std = mean_std(va["batch_loss"])
    f1_mean, f1_std = mean_std(va["batch_f1"])
    return {"val_loss_batch_mean": loss_mean, "val_loss_batch_std": loss_std,
            "val_f1_batch_mean": f1_mean, "val_f1_batch_std": f1_std}


def _save_epoch(cfg: TrainConfig, data: CarsData, model: nn.Module, frozen: list[str], row: dict[str, Any],
                improved: bool, opt: _Optimization, sel: _Selection, commands: list[str]) -> None:
    """best.pt when improved, last.pt (everything a resume needs) and history.csv, atomically (main process)."""
    out = Path(cfg.out)
    payload = _checkpoint_payload(cfg, data, model, frozen, row["epoch"],
                                  {"val_acc": row["val_acc"], "val_f1": row["val_f1"]})
    if improved:
        save_checkpoint(out / "best.pt", payload)
    save_checkpoint(out / "last.pt", {
        **payload, "optimizer": opt.optimizer.state_dict(), "scheduler": opt.scheduler.state_dict(),
        "history": sel.history, "best_f1": sel.best_score, "best_epoch": sel.best_epoch,
        "bad_epochs": sel.bad_epochs, "rng": torch.get_rng_state(), "collapse": sel.collapse, "commands": commands,
        "val_batches": sel.val_batches})
    rio.write_csv(out / "history.csv", sel.history)
    rio.write_csv(out / "val_batches.csv", sel.val_batches)


def _seed_epoch(loader: DataLoader, seed: int, epoch: int) -> None:
    """Seed the shuffle per epoch so a resumed run sees the same order as an uninterrupted one."""
    if loader.generator is not None:
        loader.generator.manual_seed(seed * 1000 + epoch)
    else:  # DistributedSampler
        loader.sampler.set_epoch(epoch)


def _defence_inputs(cfg: TrainConfig, data: CarsData, train_samples: list, eval_tf, device: torch.device,
                    teacher_source) -> tuple[tuple[nn.Module, int] | None, list | None, list | None]:
    """``(teacher (model, img size) or None, robust-validation batches, FGSM-RS held batch)``: the fixed images of
    adversarial training's selection and guard, and the distillation teacher, built once per run."""
    teacher = None
    if teacher_source is not None:
        teacher = (teacher_source.make().to(device).eval(), teacher_source.img_size)
    robust_val = guard = None
    if cfg.adversarial:
        robust_val = _robust_batches(cfg, data.split("val"), eval_tf, cfg.robust_val_images, device)
        if cfg.adversarial == "fgsm-rs":
            guard = _robust_batches(cfg, train_samples, eval_tf, cfg.batch_size, device)[:1]
    return teacher, robust_val, guard


def _run_summary(cfg: TrainConfig, history: list[dict[str, Any]], commands: list[str], frozen: list[str],
                 best_epoch: int, best_score: float, stopped_early: bool, collapse: dict[str, Any] | None
                 ) -> dict[str, Any]:
    """metrics.json without the test metrics; ``best_score`` is the selection score (macro-F1 or robust accuracy)."""
    best_row = next((h for h in history if h["epoch"] == best_epoch), {})
    # the CPU thread count changes float sums, hence the weights: the reproduce command names the one that ran
    reproduce = cfg.command() + (f" --threads {torch.get_num_threads()}" if cfg.device != "cuda" else "")
    summary = {"commands": commands, "reproduce": reproduce, "arch": cfg.arch, "weights": cfg.weights,
               "frozen": frozen,
               "best_epoch": best_epoch, "best_val_f1": best_row.get("val_f1", best_score),
               "epochs_run": len(history), "stopped_early": stopped_early,
               "train_seconds": round(sum(h["seconds"] for h in history), 1)}
    defence = describe(cfg)
    if defence:
        summary["defence"] = defence
    if cfg.adversarial:
        summary["best_val_robust_acc"] = best_score
        summary["catastrophic_overfitting"] = collapse
    return summary


def _robust_row(cfg: TrainConfig, model: nn.Module, epoch: int, row: dict[str, Any], robust_val, guard,
                history: list[dict[str, Any]]) -> float:
    """Adds ``train_eps``, ``val_robust_acc`` (PGD at the full training eps on the fixed validation images) and,
    for FGSM-RS, ``guard_robust_acc`` on the held training batch and ``collapsed`` to ``row``; returns the
    selection score (the validation robust accuracy)."""

    row["train_eps"] = warmup_eps(cfg.train_eps, epoch, 1.0, cfg.eps_warmup)
    row["val_robust_acc"] = robust_accuracy(model, robust_val, cfg.train_eps, cfg.robust_val_steps, cfg.seed)
    if guard is not None:
        row["guard_robust_acc"] = robust_accuracy(model, guard, cfg.train_eps, cfg.robust_val_steps, cfg.seed + 1)
        previous = history[-1].get("guard_robust_acc") if history else None
        row["collapsed"] = int(collapsed(previous, row["guard_robust_acc"]))  # 0/1: history.csv stays numeric
    return row["val_robust_acc"]


def _finish_run(cfg: TrainConfig, data: CarsData, model: nn.Module, history: list[dict[str, float]],
                summary: dict[str, Any], eval_tf, d, device: torch.device, rep: Reporter) -> dict[str, Any] | None:
    """Learning curves, the test metrics of best.pt, and metrics.json (main process)."""

    out = Path(cfg.out)
    if d.is_main:
        learning_curves(history, out / "learning_curves.png")
    test = None
    if "test" in data.splits:
        best = read_checkpoint(out / "best.pt")
        model.load_state_dict(best["state_dict"])
        test_loader = make_loader(CarsDataset(data.split("test"), eval_tf), cfg.batch_size, shuffle=False,
                                  workers=cfg.workers, device=device)
        te = evaluate(model, test_loader, device, on_batch=rep.phase("test (best model)", len(data.split("test")),
                                                                    phase="test"))
        rep.end_phase()
        test = {"test_acc": te["acc"], "test_f1": te["f1"], "test_loss": te["loss"], "test_images": len(te["label"])}
    if d.is_main:
        rio.write_json(out / "metrics.json", {**summary, **(test or {})})
    return test


def history_arrays(history: list[dict[str, float]]) -> dict[str, np.ndarray]:
    keys = history[0].keys() if history else []
    return {k: np.array([h[k] for h in history]) for k in keys}
