"""Attack a whole split of a trained run: per-image records, the summary and the figures.

Writes into ``OUT`` (one writer at a time: :func:`robustcars.lock.output_lock`)::

    attack.json        config, class names, clean and per-eps summary, sanity checks, cost, versions
    attack.csv         the summary table (one row for clean, one per attack/eps)
    model_card.json    the evaluation as RobustBench records one (:mod:`robustcars.evaluation.model_card`)
    records.jsonl      one JSON object per image, appended batch by batch (resumable)
    attack_state.json  fingerprint of the configuration, image count, finished flag
    kept.pt            images the figures show, taken from the scoring pass (removed when finished)
    cost_state.json    the cost counters of every batch recorded so far, over all invocations (removed when finished)
    figures/           entropy_hist.png, panel_<attack>_eps<eps>.png, panel_<attack>_extremes_eps<eps>.png

Per-image record: ``index, path, label, clean_pred, clean_top3, clean_top3_prob, clean_entropy, clean_pred_8bit``
and ``adv``: for each eps ``{eps, pred, top3, top3_prob, entropy, clean_top3_rank, linf, l2, pred_8bit,
grey_levels_8bit}``, where ``clean_top3_rank[j]`` is the 1-based adversarial rank of the clean rank-(j+1) class,
``*_8bit`` score the image rounded to the 8-bit grid (:func:`robustcars.attacks.to_8bit_grid`: what a PNG keeps)
and ``grey_levels_8bit`` is the L∞ distance, in grey levels, between the rounded adversarial and the rounded clean
image (0: the perturbation vanished in rounding). Records of robustcars 0.2 have no ``*_8bit`` fields.

The steps, each a function: :func:`prepare` resolves and validates everything (no write);
:func:`open_folder` applies the resume rules; :func:`score_batch` and :func:`batch_records` turn one batch
into records; :func:`finish` writes the summary, checks and figures.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from robustcars import distributed as D
from robustcars import storage as rio
from robustcars.attacks import Attack, get_attack, perturbation_norms, to_8bit_grid
from robustcars.config import AttackConfig
from robustcars.data.cars import CarsData, fingerprint, load_cars, subsample
from robustcars.data.images import CarsDataset, build_transform
from robustcars.errors import ConfigError, DataError, StorageError
from robustcars.evaluation import saved
from robustcars.evaluation.checks import sanity_checks
from robustcars.evaluation.model_card import CARD_NAME, attack_card
from robustcars.evaluation.panels import attack_figures
from robustcars.evaluation.resume import KEPT_NAME, KeptImages, ResumeState
from robustcars.evaluation.summary import TOPK, summarize
from robustcars.explain.gradcam import attention_records, cam_layer
from robustcars.lock import process_lock
from robustcars.metrics import entropy, ranks_of
from robustcars.models.source import ModelSource, check_image_item, check_logits, from_run, from_spec, read_class_names
from robustcars.registry import ATTACK_KIND, check_attack_classes, fit_to_classes
from robustcars.reporting.results import load_attack, read_json_file, read_records
from robustcars.runtime import library_versions, resolve_device

SCHEMA_VERSION = 2  # 2: data.class_names and data.fingerprint in attack.json

__all__ = ["SCHEMA_VERSION", "AttackConfig", "AttackReporter", "run_attack", "summarize"]


class AttackReporter:
    """What :func:`run_attack` tells the outside world; the CLI passes a rich / plain-log implementation."""

    def start(self, info: dict[str, Any]) -> None: ...
    def note(self, message: str) -> None: ...
    def progress(self, total: int, done: int) -> Callable[[int], None]: return lambda n: None
    def end(self) -> None: ...


@dataclass
class ImageSet:
    """The images to attack, in a fixed order: an id per image (its path relative to the data root, or ``#i``)
    and ``subset(positions)``, a Dataset of ``(image (3, H, W) float32 in [0, 1], label)`` for those positions."""

    ids: list[str]
    subset: Callable[[list[int]], Any]
    info: dict[str, Any]  # attack.json "data" section (root, layout, classes, class names, fingerprint)

    def __len__(self) -> int:
        return len(self.ids)


@dataclass
class Prepared:
    """Everything resolved and validated before the first write."""

    cfg: AttackConfig
    source: ModelSource
    images: ImageSet
    attack: Attack
    model: nn.Module  # built once; its outputs checked on the first image

    @property
    def out(self) -> Path:
        return Path(self.cfg.out)


def _folder_images(root: str | Path, source_options: dict[str, Any], cfg: AttackConfig, img_size: int,
                   resize: str) -> tuple[ImageSet, CarsData]:
    data = load_cars(root, **source_options)
    samples = data.split(cfg.split)
    if cfg.max_images:
        samples = subsample(samples, cfg.max_images, cfg.seed)
    tf = build_transform(img_size, train=False, resize=resize)
    info = {"root": str(data.root), "layout": data.layout, "split": cfg.split, "images": len(samples),
            "classes": len(data.classes), "class_names": list(data.classes), "fingerprint": fingerprint(data)}
    return ImageSet([os.path.relpath(s.path, data.root) for s in samples],
                    lambda pos: CarsDataset([samples[i] for i in pos], tf), info), data


class _CheckedItems(torch.utils.data.Dataset):
    """The items of a user's Dataset at ``indices``, each checked as it is read (:func:`check_image_item`)."""

    def __init__(self, dataset: Any, indices: list[int], num_classes: int, size: tuple[int, ...]) -> None:
        self.dataset, self.indices, self.k, self.size = dataset, indices, num_classes, size

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> Any:

        j = self.indices[i]
        item = self.dataset[j]
        check_image_item(item, self.k, f"dataset item {j}", self.size)
        return item


def dataset_images(dataset: Any, class_names: list[str], cfg: AttackConfig) -> ImageSet:
    """Any map-style Dataset of ``(image in [0, 1], label)`` (a seeded subset with ``cfg.max_images``).

    Every item is checked here, before anything is written (float ``(3, H, W)`` in [0, 1], all of one size, label
    in [0, K)): a TensorDataset at once, any other Dataset item by item (one extra read of each; cheap next to
    attacking it), and again as the attack reads it.

    Raises:
        DataError: an empty dataset or a bad item (named by its index).
    """

    k = len(class_names)
    order = list(range(len(dataset)))
    if not order:
        raise DataError("the dataset holds no images")
    if cfg.max_images and cfg.max_images < len(order):
        order = sorted(np.random.default_rng(cfg.seed).choice(len(order), size=cfg.max_images, replace=False).tolist())
    size = check_image_item(dataset[order[0]], k, f"dataset item {order[0]}")
    if isinstance(dataset, torch.utils.data.TensorDataset) and len(dataset.tensors) == 2:
        _check_tensors(*dataset.tensors, k, size)
    else:
        for i in order[1:]:
            check_image_item(dataset[i], k, f"dataset item {i}", size)
    info = {"root": None, "layout": type(dataset).__name__, "split": cfg.split, "images": len(order),
            "classes": k, "class_names": list(class_names)}
    return ImageSet([f"#{i}" for i in order], lambda pos: _CheckedItems(dataset, [order[i] for i in pos], k, size),
                    info)


def _check_tensors(x: torch.Tensor, y: torch.Tensor, k: int, size: tuple[int, ...]) -> None:
    """A whole TensorDataset at once (the same rules as :func:`robustcars.models.source.check_image_item`)."""
    if tuple(x.shape[1:]) != size or not x.is_floating_point():
        raise DataError(f"the dataset's images are {tuple(x.shape)} {x.dtype}; expected float "
                        f"(N, {', '.join(map(str, size))})")
    bad = torch.nonzero(~((x >= 0) & (x <= 1)).flatten(1).all(1)).flatten()
    if len(bad):
        i = int(bad[0])
        raise DataError(f"dataset item {i}: pixel values in [{float(x[i].min()):g}, {float(x[i].max()):g}]; images "
                        "must be in [0, 1] (divide 8-bit images by 255; normalization belongs in the model)")
    if y.is_floating_point() or y.dim() != 1:
        raise DataError(f"the dataset's labels are {tuple(y.shape)} {y.dtype}; expected integer class indices (N,)")
    bad = torch.nonzero((y < 0) | (y >= k)).flatten()
    if len(bad):
        i = int(bad[0])
        raise DataError(f"dataset item {i}: label {int(y[i])} is not a class index in [0, {k})")


def prepare(cfg: AttackConfig, source: ModelSource | None = None,
            images: ImageSet | Callable[[AttackConfig], ImageSet] | None = None) -> Prepared:
    """Validate the configuration, the model, the data and the attack against each other; write nothing.

    ``source``/``images`` come from :func:`robustcars.evaluate`; otherwise the model is ``cfg.run`` (a
    robustcars run) or ``cfg.model`` (a spec with ``cfg.checkpoint``), and the images a class-folder dataset.

    Raises:
        ConfigError: a bad option, an ``--out`` that is a file, a target class outside the class count.
        CheckpointError, DataError: as their messages say (a class count or class names that do not match).
    """

    cfg.validate()
    out = Path(cfg.out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file; choose a folder")
    if source is None and cfg.model is None:
        source = from_run(cfg.run)
    if callable(images):  # a factory: this configuration's images (its split, subset and seed)
        images = images(cfg)
    if images is None:
        root = cfg.data or (source.data_root if source else None)
        if not root:
            raise ConfigError("--data is needed: the images to attack (a class-folder dataset)")
        opts = source.data_options if source else {}
        img_size, resize = (source.img_size, source.resize) if source else (cfg.img_size, cfg.resize)
        images, data = _folder_images(root, opts, cfg, img_size, resize)
        if source is None:  # --model: class names from --classes, else the data's class folders
            names = read_class_names(cfg.classes) if cfg.classes else list(data.classes)
            source = from_spec(cfg.model, class_names=names, checkpoint=cfg.checkpoint, mean=cfg.mean, std=cfg.std,
                               img_size=cfg.img_size, resize=cfg.resize)
        if len(data.classes) != source.num_classes:
            raise DataError(f"the model has {source.num_classes} classes but {root} has {len(data.classes)}")
        if list(data.classes) != source.class_names:
            raise DataError(f"class names in {root} differ from the model's (another dataset or class order)")
    if source.num_classes < TOPK:
        raise ConfigError(f"the model has {source.num_classes} classes; the records keep its top-{TOPK} classes, so "
                          f"at least {TOPK} are needed")
    cfg.img_size, cfg.resize = source.img_size, source.resize  # what runs, recorded (a run decides them)
    cfg.params = fit_to_classes(cfg.attack, cfg.params, source.num_classes)  # recorded as it runs
    check_attack_classes(cfg.attack, cfg.params, source.num_classes)
    if len(images) == 0:
        raise DataError(f"no images to attack in the {cfg.split} split")
    model = source.make()
    _check_model(model, source, images)
    return Prepared(cfg, source, images, get_attack(cfg.attack, **cfg.params), model)


def _check_model(model: nn.Module, source: ModelSource, images: ImageSet) -> None:
    """One forward pass on the first image: the model must return finite (1, K) float logits.

    Raises:
        ConfigError: see :func:`robustcars.models.source.check_logits`; DataError: the first image cannot be read.
    """

    x, _ = images.subset([0])[0]
    try:
        with torch.inference_mode():
            logits = model(x[None])
    except (RuntimeError, ValueError, TypeError, IndexError) as exc:  # a model that cannot take the images
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise ConfigError(f"{source.arch} fails on an input of shape {tuple(x[None].shape)}: "
                          f"{exc.__class__.__name__}: {first[:200]}") from None
    check_logits(logits, source.num_classes, source.arch)


def open_folder(out: Path, cfg, total: int, *, resume: bool, what: str = "attack",
                complete: Callable[[Path], bool] | None = None) -> tuple[set[int], bool]:
    """Apply the resume rules to ``out``; returns ``(indices already scored, finished)``.

    * records without ``--resume``: refused (nothing is overwritten);
    * records of another configuration (``cfg.fingerprint()``): refused;
    * a finished run (state says so and ``complete(out)``; default: a loadable attack folder): ``finished=True``;
    * otherwise the complete records count as done (a torn last line is dropped by the caller).
    """
    shards = sorted(out.glob("records.rank*.jsonl"))
    records = out / "records.jsonl"  # an empty one (stopped before its first batch) holds nothing to keep
    existing = (records.exists() and records.stat().st_size > 0) or bool(shards)
    if not existing:
        return set(), False
    if not resume:
        raise ConfigError(f"{out} already holds {what} records; pass --resume to continue or choose another --out")
    state = ResumeState.load(out)
    if state is None or state.fingerprint != cfg.fingerprint():
        raise ConfigError(f"{out} holds records of a different {what} configuration; use another --out")
    if state.finished and (complete or _attack_complete)(out):
        return set(range(total)), True
    return recorded(out), False


def _attack_complete(out: Path) -> bool:
    if not (out / "attack.json").is_file():
        return False
    try:
        load_attack(out)
    except DataError:
        return False
    return True


def recorded(out: Path) -> set[int]:
    """Indices of the images with a complete record in ``out`` (records.jsonl and torchrun shards)."""
    done: set[int] = set()
    for path in [out / "records.jsonl", *sorted(out.glob("records.rank*.jsonl"))]:
        if path.is_file():
            done |= {r["index"] for r in read_records(path, allow_torn=True).records}
    return done


def truncate_torn(path: Path) -> None:
    if path.is_file():
        f = read_records(path, allow_torn=True)
        if f.torn:
            with open(path, "r+b") as fh:
                fh.truncate(f.intact_bytes)


def top_classes(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    prob, idx = torch.softmax(logits.float(), dim=1).topk(TOPK, dim=1)
    return idx, prob


def score_batch(model: nn.Module, attack: Attack, x: torch.Tensor, y: torch.Tensor, eps: list[float]
                ) -> tuple[dict[str, Any], list[torch.Tensor], Any]:
    """Attack one batch and score clean and adversarial predictions (:func:`score_examples`).

    Returns ``(scored, adv, output)``: ``scored`` as :func:`score_examples` gives it plus optionally
    ``targets``/``min_norms``/``fooled_by``; ``adv`` the adversarial tensors; ``output`` the attack's
    :class:`~robustcars.attacks.AttackOutput`.
    """
    res = attack(model, x, y, eps)
    scored = score_examples(model, x, y, res.adv, res.clean_logits)
    scored.update({"targets": res.targets.tolist() if res.targets is not None else None,
                   "min_norms": res.min_norms.tolist() if res.min_norms is not None else None,
                   "fooled_by": res.fooled_by})
    return scored, res.adv, res


def score_examples(model: nn.Module, x: torch.Tensor, y: torch.Tensor, adv: list[torch.Tensor],
                   clean_logits: torch.Tensor | None = None) -> dict[str, Any]:
    """Score clean images ``x`` (float32 ``(B, 3, H, W)`` in [0, 1], labels ``y``) and their adversarial
    images ``adv`` (one batch per eps) on ``model``, in float and rounded to the 8-bit grid.

    Returns plain Python lists (one host transfer per batch): ``label, c_idx, c_prob, c_ent, c_8bit`` and per eps
    ``[pred, top3, top3_prob, entropy, ranks, linf, l2, pred_8bit, linf_8bit]``; ``targets``/``min_norms`` None.
    """
    with torch.inference_mode():
        clean_logits = clean_logits if clean_logits is not None else model(x)
        c_idx, c_prob = top_classes(clean_logits)
        x_8 = to_8bit_grid(x)
        per_eps = []
        for x_adv in adv:
            a_logits = model(x_adv)
            a_idx, a_prob = top_classes(a_logits)
            linf, l2 = perturbation_norms(x, x_adv)
            a_8 = to_8bit_grid(x_adv)
            per_eps.append([a_logits.argmax(1), a_idx, a_prob, entropy(a_logits), ranks_of(a_logits, c_idx), linf, l2,
                            model(a_8).argmax(1), (a_8 - x_8).flatten(1).abs().amax(1)])
        # folder images are resized as 8-bit images, so they lie on the grid already: no second clean pass
        c_8 = c_idx[:, 0] if torch.equal(x_8, x) else model(x_8).argmax(1)
    return {"label": y.tolist(), "c_idx": c_idx.tolist(), "c_prob": c_prob.tolist(),
            "c_ent": entropy(clean_logits).tolist(), "c_8bit": c_8.tolist(),
            "per_eps": [[t.tolist() for t in item] for item in per_eps], "targets": None, "min_norms": None}


def _r(values: list[float]) -> list[float]:
    return [round(v, 6) for v in values]


def batch_records(scored: dict[str, Any], indices: list[int], paths: list[str], eps: list[float],
                  attention: dict[int, dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """One record per image of a scored batch (pure; the format is in the module docstring). ``attention``
    maps a position in the batch to its Grad-CAM shift at the largest eps (``--cam``)."""
    out = []
    for i, (index, path) in enumerate(zip(indices, paths)):
        c_idx = scored["c_idx"][i]
        rec = {"index": index, "path": path, "label": scored["label"][i], "clean_pred": c_idx[0], "clean_top3": c_idx,
               "clean_top3_prob": _r(scored["c_prob"][i]), "clean_entropy": round(scored["c_ent"][i], 6),
               "clean_pred_8bit": scored["c_8bit"][i], "adv": []}
        if scored["targets"] is not None:
            rec["target"] = scored["targets"][i]
        if scored["min_norms"] is not None:
            m = scored["min_norms"][i]
            rec["min_norm"] = None if m == float("inf") else round(m, 7)
        for j, (e, per_eps) in enumerate(zip(eps, scored["per_eps"])):
            pred, a_idx, a_prob, a_ent, rk, linf, l2, pred_8, linf_8 = per_eps
            rec["adv"].append({"eps": e, "pred": pred[i], "top3": a_idx[i], "top3_prob": _r(a_prob[i]),
                               "entropy": round(a_ent[i], 6), "clean_top3_rank": rk[i], "linf": round(linf[i], 7),
                               "l2": round(l2[i], 6), "pred_8bit": pred_8[i],
                               "grey_levels_8bit": round(linf_8[i] * 255)})
            if scored.get("fooled_by") is not None:  # cascades: the attack whose example this is
                rec["adv"][-1]["fooled_by"] = scored["fooled_by"][j][i]
        if attention and i in attention:
            rec["attention"] = {"eps": eps[-1], **attention[i]}
        out.append(rec)
    return out


def run_attack(cfg: AttackConfig, *, resume: bool = False, reporter: AttackReporter | None = None,
               command: str = "", source: ModelSource | None = None,
               images: ImageSet | Callable[[AttackConfig], ImageSet] | None = None,
               reproduce: str | None = None) -> dict[str, Any]:
    """Attack every image of ``cfg.split`` and write the files listed in the module docstring.

    ``command`` is recorded as typed; ``reproduce`` (default: :meth:`AttackConfig.command` of the resolved
    configuration) is the command that gives the same records again.

    Returns the ``attack.json`` content (``{}`` on a non-zero torchrun rank). A finished attack resumed again
    is left untouched: its ``attack.json`` is returned with ``"unchanged": True``.

    Raises:
        ConfigError, DataError, CheckpointError, StorageError: as their messages say; nothing already
        written is lost (records are appended batch by batch, every other file is written atomically).
    """
    rep = reporter or AttackReporter()
    p = prepare(cfg, source, images)
    out = p.out
    d, device = D.init(resolve_device(cfg.device))
    with process_lock(out, d):
        done, finished = open_folder(out, cfg, len(p.images), resume=resume)
        if D.broadcast(finished, d):
            if not d.is_main:
                return {}
            rep.note(f"nothing to do: {out} already holds this finished attack; its results are left unchanged")
            return {**load_attack(out).meta, "unchanged": True}
        return _attack_and_finish(p, d, device, done, resume, rep, (command, reproduce or cfg.command()))


COST_STATE = "cost_state.json"


@dataclass
class _Tally:
    """Cost counters of the batches one process recorded, over every invocation: images, attack seconds,
    forward+backward passes, zero input gradients, per-attack passes/queries and budget counters. Saved
    atomically after each batch's records (``cost_state.json``), so a resumed attack's cost covers the images
    of its earlier invocations too; a kill between the two writes leaves one batch uncounted (``images``
    then falls short of the records, and the cost says so)."""

    passes: float = 0.0
    grad_zero: int | None = None  # known only for attacks that report it (FGSM)
    by: dict[str, dict[str, int]] = field(default_factory=lambda: {"passes": {}, "queries": {}, "counters": {}})
    images: int = 0
    seconds: float = 0.0

    def save(self, path: Path) -> None:
        rio.write_json(path, asdict(self))

    @classmethod
    def load(cls, paths: list[Path]) -> _Tally:
        """The sum of the saved tallies (one per rank that wrote); empty when there are none. Raises DataError."""
        total = cls()
        for path in paths:
            d = read_json_file(path, "attack cost state")
            try:
                part = cls(float(d["passes"]), d["grad_zero"], d["by"], int(d["images"]), float(d["seconds"]))
            except (KeyError, TypeError, ValueError):
                raise DataError(f"{path} is damaged; remove it and rerun with --resume (the cost then covers "
                                "only the images attacked from now on)") from None
            total.merge(part)
        return total

    def merge(self, other: _Tally) -> None:
        self.passes += other.passes
        self.images += other.images
        self.seconds += other.seconds
        if other.grad_zero is not None:
            self.grad_zero = (self.grad_zero or 0) + other.grad_zero
        for kind, counts in other.by.items():
            for k, v in counts.items():
                self.by[kind][k] = self.by[kind].get(k, 0) + v

    def add(self, res, batch: int) -> None:
        self.passes += res.passes * batch
        for kind, counts in (("passes", res.passes_by), ("queries", res.queries_by), ("counters", res.counters)):
            for label, n_passes in (counts or {}).items():
                self.by[kind][label] = self.by[kind].get(label, 0) + n_passes
        if res.grad_zero is not None:
            self.grad_zero = (self.grad_zero or 0) + int(res.grad_zero.sum())


def _open_folder_for_writing(p: Prepared, d, resume: bool) -> tuple[Path, Path, KeptImages]:
    """Repair what a kill left (a torn record line, saved shards past the records), load the kept images and
    write the resume state; returns this process's records and kept-images paths and the kept images."""
    cfg, out, n = p.cfg, p.out, len(p.images)
    my_path = out / ("records.jsonl" if not d.enabled else f"records.rank{d.rank}.jsonl")
    kept_path = out / (KEPT_NAME if not d.enabled else f"kept.rank{d.rank}.pt")
    D.barrier(d)
    truncate_torn(my_path)
    if cfg.save_adv and resume and d.is_main:  # a shard is written before its records: keep what they hold
        saved.repair(out, recorded(out))
    rng = np.random.default_rng(cfg.seed)
    kept = KeptImages(set(rng.choice(n, size=min(cfg.examples, n), replace=False).tolist()),
                      k=2 if cfg.examples else 0)
    if resume:
        kept.load(sorted(out.glob("kept*.pt")))
    if d.is_main:
        ResumeState(cfg.fingerprint(), asdict(cfg), n).save(out)
    D.barrier(d)
    return my_path, kept_path, kept


def _cost_path(out: Path, d) -> Path:
    return out / (COST_STATE if not d.enabled else COST_STATE.replace(".json", f".rank{d.rank}.json"))


def _attack_and_finish(p: Prepared, d, device: torch.device, done: set[int], resume: bool, rep: AttackReporter,
                       command: tuple[str, str]) -> dict[str, Any]:
    cfg, out, n = p.cfg, p.out, len(p.images)
    my_path, kept_path, kept = _open_folder_for_writing(p, d, resume)
    model = p.model.to(device)  # eval mode; checked in prepare
    mine = D.shard(n, d, block=cfg.batch_size)
    todo_idx = [i for i in mine if i not in done]
    rep.start({"arch": p.source.arch, "attack": cfg.attack, "eps": cfg.eps, "norm": p.attack.norm,
               "split": cfg.split, "images": n, "resumed": len(done), "device": str(device),
               "img_size": p.source.img_size, "world": d.world})
    t0 = time.perf_counter()
    advance = rep.progress(len(mine), len(mine) - len(todo_idx))
    cost_path = _cost_path(out, d)
    mine_before = _Tally.load([cost_path] if resume and cost_path.is_file() else [])
    _attack_images(p, model, device, todo_idx, (my_path, kept_path, kept, cost_path, mine_before), advance)
    rep.end()
    seconds = time.perf_counter() - t0

    attacked, seconds = sum(D.gather(len(todo_idx), d)), max(D.gather(seconds, d))
    D.barrier(d)
    if not d.is_main:
        return {}
    if d.enabled:
        _merge_shards(out)
        kept.load(sorted(out.glob("kept.rank*.pt")))
    tally = _Tally.load(sorted(out.glob("cost_state*.json")))
    result = finish(p, kept, _cost(tally, attacked, seconds, n, d.world), tally.grad_zero, tally.images,
                    str(device), command, model)
    for path in [*out.glob("kept*.pt"), *out.glob("cost_state*.json")]:
        path.unlink()
    return result


def _attack_images(p: Prepared, model: nn.Module, device: torch.device, todo_idx: list[int], files,
                   advance: Callable[[int], None]) -> _Tally:
    """Attack and score ``todo_idx`` batch by batch; each batch's records are appended (after its saved
    examples, when kept) before the next batch starts, so a kill loses at most one batch; the cost tally
    (``files[4]``, what earlier invocations counted) is saved after each batch's records."""
    cfg, out = p.cfg, p.out
    my_path, kept_path, kept, cost_path, tally = files
    cam_idx = _cam_indices(len(p.images), cfg)
    cam_layer_ = cam_layer(model, p.source.arch, p.source.cam_layer) if cam_idx else None
    loader = DataLoader(p.images.subset(todo_idx), batch_size=cfg.batch_size, shuffle=False,
                        num_workers=cfg.workers, pin_memory=device.type == "cuda")
    position = 0
    try:  # unbuffered: a failed write (full disk) leaves nothing to flush on close; a torn line is repaired on resume
        fh = open(my_path, "ab", buffering=0)  # noqa: SIM115 - closed by the with block below
    except OSError as exc:
        raise StorageError(f"cannot write {my_path}: {exc.strerror or exc}") from None
    with fh:
        for x, y in loader:
            t0 = time.perf_counter()
            x, y = x.to(device), y.to(device)
            scored, adv, res = score_batch(model, p.attack, x, y, cfg.eps)
            tally.add(res, len(y))
            idx = todo_idx[position:position + len(y)]
            measured = [j for j, i in enumerate(idx) if i in cam_idx]
            attention = _attention(model, cam_layer_, x, adv[-1], scored, measured)
            tally.passes += 2 * len(attention)  # Grad-CAM: one forward+backward each for clean and adversarial
            recs = batch_records(scored, idx, [p.images.ids[i] for i in idx], cfg.eps, attention)
            if cfg.save_adv:  # before the records: every recorded image has its saved example
                saved.save_batch(out, idx, y, x, adv, cfg.eps, png=cfg.save_png)
            try:
                _write_all(fh, "".join(json.dumps(r) + "\n" for r in recs).encode())
            except OSError as exc:
                raise StorageError(f"cannot append to {my_path}: {exc.strerror or exc}; the records written so far "
                                   "are kept — free space and rerun with --resume") from None
            if kept.update(recs, x, adv):
                kept.save(kept_path)
            tally.images, tally.seconds = tally.images + len(y), tally.seconds + time.perf_counter() - t0
            tally.save(cost_path)
            position += len(y)
            advance(len(y))
    return tally


def _cost(tally: _Tally, attacked: int, seconds: float, n: int, world: int) -> dict[str, Any]:
    """The ``cost`` block of attack.json. ``seconds`` and ``images_per_second``: the wall time and throughput of
    THIS invocation (``resumed_images`` were attacked by earlier ones). Passes and queries per image, and
    ``attack_seconds_per_image``: over every image whose batch cost was counted, in any invocation
    (``images_costed``; short of the images only when a kill fell between a batch's records and its cost)."""
    costed = tally.images
    cost = {"seconds": round(seconds, 2),
            "images_per_second": round(attacked / seconds, 4) if seconds and attacked else None,
            "forward_backward_passes_per_image": (round(tally.passes / costed, 3)
                                                  if costed and tally.passes else None),
            "resumed_images": n - attacked, "processes": world,
            "images_costed": costed,
            "attack_seconds_per_image": round(tally.seconds / costed, 4) if costed else None}
    if tally.by["passes"] and costed:  # cascades: gradient passes and gradient-free queries, per attack
        cost["passes_per_image_by_attack"] = {k: round(v / costed, 3) for k, v in tally.by["passes"].items()}
        cost["queries_per_image_by_attack"] = {k: round(v / costed, 3) for k, v in tally.by["queries"].items()}
    if tally.by["counters"]:  # budget decisions (converged, discarded images; passes saved), summed over images
        cost["counters"] = dict(sorted(tally.by["counters"].items()))
    return cost


def _cam_indices(n: int, cfg: AttackConfig) -> set[int]:
    """A seeded set of ``cfg.cam`` image indices whose Grad-CAM attention shift is measured."""
    rng = np.random.default_rng(cfg.seed + 1)
    return set(rng.choice(n, size=min(cfg.cam, n), replace=False).tolist()) if cfg.cam else set()


def _attention(model: nn.Module, layer: nn.Module | None, x: torch.Tensor, x_adv: torch.Tensor,
               scored: dict[str, Any], positions: list[int]) -> dict[int, dict[str, Any]]:
    """Grad-CAM attention shift at the largest eps for the given batch positions (2 forward+backward each)."""
    if not positions or layer is None:
        return {}

    clean_cls = [scored["c_idx"][j][0] for j in positions]
    adv_cls = [scored["per_eps"][-1][0][j] for j in positions]
    stats, _, _ = attention_records(model, layer, x[positions], x_adv[positions], clean_cls, adv_cls)
    return dict(zip(positions, stats))


def _write_all(fh, data: bytes) -> None:
    """Write every byte to an unbuffered file: a short write (disk full) is retried, so it ends in an OSError."""
    view = memoryview(data)
    while view:
        view = view[fh.write(view):]


def _merge_shards(out: Path) -> None:
    """torchrun: records.jsonl (earlier runs) + every rank's shard file, by image index, into records.jsonl."""
    merged: dict[int, dict[str, Any]] = {}
    for path in [out / "records.jsonl", *sorted(out.glob("records.rank*.jsonl"))]:
        if path.is_file():
            merged.update({r["index"]: r for r in read_records(path, allow_torn=True).records})
    rio.write_text(out / "records.jsonl", "".join(json.dumps(merged[i]) + "\n" for i in sorted(merged)))
    for path in out.glob("records.rank*.jsonl"):
        path.unlink()


def finish(p: Prepared, kept: KeptImages, cost: dict[str, Any], grad_zero: int | None, attacked: int, device: str,
           command: tuple[str, str], model: nn.Module) -> dict[str, Any]:
    """Summary, checks, attack.json / attack.csv and the figures (from the kept images), then mark finished.
    ``command``: (as typed, the reproducing command)."""
    cfg, out, n, names = p.cfg, p.out, len(p.images), p.source.class_names
    records = read_records(out / "records.jsonl").records
    if len(records) != n or [r["index"] for r in records] != list(range(n)):
        raise DataError(f"{out / 'records.jsonl'} holds {len(records)} records for {n} images; rerun with --resume")
    summary = summarize(records, cfg.eps, p.attack.name, p.attack.norm, num_classes=len(names))
    summary["checks"] = sanity_checks(summary["rows"], records, cfg.eps, grad_zero, attacked, p.attack.norm)
    result = {
        "schema_version": SCHEMA_VERSION,
        "kind": ATTACK_KIND,
        "command": command[0],
        "reproduce": command[1],
        "config": asdict(cfg),
        "run": p.source.info,
        "data": p.images.info,
        "threat_model": {"norm": p.attack.norm, "eps": cfg.eps, "pixel_scale": "[0, 1]",
                         "targeted": getattr(p.attack, "targeted", False), "params": cfg.params},
        # wall time of THIS invocation; passes per image over every invocation (see _cost)
        "cost": cost,
        "device": device,
        "versions": library_versions(),
        **summary,
    }

    cam = None  # Grad-CAM panels of the scoring model
    if cfg.cam and kept.examples:
        cam = (model, cam_layer(model, p.source.arch, p.source.cam_layer))
    figs = attack_figures(records, kept, cfg, p.attack.name, p.attack.norm, names, out / "figures",
                          summary.get("min_norms"), cam)
    result["figures"] = [os.path.relpath(f, out) for f in figs]  # relative to the attack folder
    if cfg.save_adv:
        result["saved_examples"] = os.path.relpath(saved.write_manifest(out, records), out)
    rio.write_csv(out / "attack.csv", summary["rows"])
    rio.write_json(out / CARD_NAME, attack_card(result))
    rio.write_json(out / "attack.json", result)
    ResumeState(cfg.fingerprint(), asdict(cfg), n, finished=True).save(out)
    return result
