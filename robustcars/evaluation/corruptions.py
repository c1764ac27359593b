"""Natural corruptions (Stanford-Cars-C): how a model holds up under ImageNet-C's corruptions, next to its
adversarial robustness (``robustcars corrupt``).

The 15 corruptions of ImageNet-C in four families (noise, blur, weather, digital) at severities 1-5, and its
four held-out ones on request (Hendrycks & Dietterich, "Benchmarking Neural Network Robustness to Common
Corruptions and Perturbations", ICLR 2019), through the maintained fork ``imagecorruptions-imaug`` of the
authors' ``imagecorruptions`` (``pip install 'robustcars[corruptions]'``). As ImageNet-C does at 224 px, every
corruption is applied to the 8-bit image at the model's input size, after the run's own resize, and the model
sees the corrupted 8-bit image; each (image, corruption, severity) has its own seed, so a rerun and a resume give
the very same images.

Writes into ``OUT`` (one writer at a time)::

    records.jsonl      one line per image, appended batch by batch: the attack record format, with one ``adv``
                       entry per (corruption, severity) in place of one per eps
    corruption.json    rows per corruption and severity, the error summary (and CE / mCE against a reference)
    corruption.csv     the rows
    figures/           accuracy heatmap (corruption x severity), one image under every corruption, per family
    attack_state.json  the resume state (configuration fingerprint)

Corruption error, after ImageNet-C (its eq. in Sec. 3): with ``E[s, c]`` the top-1 error of corruption ``c`` at
severity ``s``, ``CE_c = sum_s E[s, c] / sum_s E_ref[s, c]`` against a reference model (ImageNet-C: AlexNet;
here the standard model is the natural reference), ``mCE`` the mean of ``CE_c`` over the 15 benchmark
corruptions, and the relative ``CE_c = sum_s (E[s, c] - E_clean) / sum_s (E_ref[s, c] - E_ref_clean)`` with its
mean, relative mCE. Without a reference, the mean error over severities per corruption and its mean are given.
"""

from __future__ import annotations

import hashlib
import io
import json
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset

from robustcars import storage as rio
from robustcars.config import CorruptConfig
from robustcars.data.cars import CarsData, Sample, load_cars, subsample
from robustcars.data.images import build_resize, read_image
from robustcars.errors import ConfigError, DataError, StorageError
from robustcars.evaluation.resume import ResumeState
from robustcars.evaluation.runner import open_folder, recorded, top_classes, truncate_torn
from robustcars.lock import output_lock
from robustcars.metrics import accuracy, entropy, macro_f1, mean_std, rank_shift_summary, ranks_of
from robustcars.models.source import ModelSource, check_logits, from_run, from_spec, read_class_names
from robustcars.registry import CORRUPTIONS, EXTRA_CORRUPTIONS
from robustcars.reporting.results import (
    CORRUPTION_KIND,
    CORRUPTION_RESULT,
    read_corruption_result,
    read_json_file,
    read_records,
)
from robustcars.runtime import library_versions, resolve_device
from robustcars.version import __version__

RESULT_NAME, KIND = CORRUPTION_RESULT, CORRUPTION_KIND
SCHEMA_VERSION = 1
FAMILIES = {**CORRUPTIONS, **EXTRA_CORRUPTIONS}
_SEEDED = ("impulse_noise", "glass_blur")  # take a seed of their own (skimage / numba draw outside numpy's state)


def _corrupt_fn() -> Callable[..., np.ndarray]:
    try:
        from imagecorruptions import corrupt
    except ImportError as exc:
        raise ConfigError("corruptions need imagecorruptions-imaug and numba: pip install "
                          "'robustcars[corruptions]'") from exc
    return corrupt


def image_seed(seed: int, index: int, corruption: str, severity: int) -> int:
    """The seed of one corrupted image: a function of the run's seed, the image index, the corruption and the
    severity only (so the batch size, the workers and a resume cannot change it), in [0, 2**31)."""
    c = list(FAMILIES).index(corruption)
    return (seed * 1_000_003 + index * 131 + c * 7 + severity) % (2**31 - 1)


def corrupt_image(image: np.ndarray, corruption: str, severity: int, seed: int) -> np.ndarray:
    """``image`` (uint8 ``(H, W, 3)``, H and W >= 32) under ``corruption`` at ``severity`` (1-5): uint8, same shape.

    Deterministic for a given ``seed``: numpy's global generator is seeded before the call, and the two
    corruptions that draw elsewhere (``impulse_noise``, ``glass_blur``) get the seed themselves.

    Raises:
        ConfigError: an unknown corruption or a severity outside 1-5, or the package is missing.
        DataError: an image that is not uint8 ``(H, W, 3)`` of at least 32 x 32 pixels.
    """
    from robustcars.registry import check_corruptions

    check_corruptions([corruption], [severity])
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3 or min(image.shape[:2]) < 32:
        raise DataError(f"corruptions need uint8 (H, W, 3) images of at least 32x32 pixels, got {image.dtype} "
                        f"{tuple(image.shape)}")
    np.random.seed(seed)
    kwargs = {"seed": seed} if corruption in _SEEDED else {}
    out = _corrupt_fn()(image, corruption_name=corruption, severity=severity, **kwargs)
    return np.asarray(out, dtype=np.uint8).reshape(image.shape)


class CorruptionCache:
    """A folder of corrupted images (8-bit PNG, lossless) shared by runs and models: Stanford-Cars-C written once.

    A corrupted image is a function of its source image, the input size and resize, the corruption, the
    severity and its seed (:func:`image_seed`), and the library's version; ``cache.json`` holds what is the same
    for every file (size, resize, data root, library version) and a folder made for other settings is refused.
    Files are ``<corruption>/<severity>/<sha1 of the image's path>-<seed>.png``, each written atomically, so
    several processes may fill one cache: they write identical bytes.

    Raises:
        ConfigError: ``folder`` holds a cache made for other settings.
        StorageError: the manifest cannot be written.
    """

    def __init__(self, folder: str | Path, img_size: int, resize: str, root: str | Path) -> None:
        self.folder = Path(folder)
        self.manifest = {"kind": "robustcars-corruption-cache", "img_size": img_size, "resize": resize,
                         "data": str(Path(root).resolve()), "imagecorruptions-imaug": _package_version()}
        path = self.folder / "cache.json"
        if path.is_file():
            found = read_json_file(path, "corruption cache manifest")
            if found != self.manifest:
                diff = ", ".join(f"{k} {found.get(k)!r} (here {v!r})" for k, v in self.manifest.items()
                                 if found.get(k) != v)
                raise ConfigError(f"--cache {self.folder} holds corrupted images made with other settings: {diff}; "
                                  "use another folder")
        else:
            rio.write_json(path, self.manifest)

    def path(self, key: str, corruption: str, severity: int, seed: int) -> Path:
        name = hashlib.sha1(key.encode()).hexdigest()[:16]
        return self.folder / corruption / str(severity) / f"{name}-{seed}.png"

    def get(self, key: str, corruption: str, severity: int, seed: int, shape: tuple[int, ...]) -> np.ndarray | None:
        path = self.path(key, corruption, severity, seed)
        if not path.is_file():
            return None
        with Image.open(path) as im:
            image = np.asarray(im.convert("RGB"), dtype=np.uint8)
        return image if image.shape == shape else None  # a file of another shape: made again

    def put(self, key: str, corruption: str, severity: int, seed: int, image: np.ndarray) -> None:
        buf = io.BytesIO()
        Image.fromarray(image).save(buf, format="PNG")
        path = self.path(key, corruption, severity, seed)
        path.parent.mkdir(parents=True, exist_ok=True)
        rio.write_bytes(path, buf.getvalue())


class CorruptedImages(Dataset):
    """Item ``i``: ``(clean uint8 (3, H, W), corrupted uint8 (M, 3, H, W), label)`` with M = corruptions x
    severities in that order; generated in the DataLoader's workers (the costly part: forward passes are cheap),
    or read from ``cache`` where it holds them (and written there where it does not)."""

    def __init__(self, samples: list[Sample], indices: list[int], resize, combos: list[tuple[str, int]],
                 seed: int, keys: list[str] | None = None, cache: CorruptionCache | None = None) -> None:
        self.samples, self.indices, self.resize, self.combos, self.seed = samples, indices, resize, combos, seed
        self.keys, self.cache = keys, cache

    def __len__(self) -> int:
        return len(self.indices)

    def _corrupted(self, i: int, image: np.ndarray, c: str, s: int) -> np.ndarray:
        seed = image_seed(self.seed, i, c, s)
        if self.cache is None:
            return corrupt_image(image, c, s, seed)
        out = self.cache.get(self.keys[i], c, s, seed, image.shape)
        if out is None:
            out = corrupt_image(image, c, s, seed)
            self.cache.put(self.keys[i], c, s, seed, out)
        return out

    def __getitem__(self, j: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        i = self.indices[j]
        image = np.asarray(self.resize(read_image(self.samples[i])), dtype=np.uint8)
        out = [self._corrupted(i, image, c, s) for c, s in self.combos]
        chw = lambda a: torch.from_numpy(np.ascontiguousarray(a.transpose(2, 0, 1)))  # noqa: E731
        return chw(image), torch.stack([chw(a) for a in out]), self.samples[i].label


def _scored(model: nn.Module, x: torch.Tensor, batch_size: int) -> tuple[torch.Tensor, ...]:
    """Top-3 classes and probabilities, entropy (nats) and logits of uint8 images ``x`` (N, 3, H, W)."""
    parts = []
    with torch.inference_mode():
        for k in range(0, len(x), batch_size):
            logits = model(x[k:k + batch_size].float() / 255)
            parts.append(logits.float())
    logits = torch.cat(parts)
    idx, prob = top_classes(logits)
    return idx, prob, entropy(logits), logits


def batch_records(model: nn.Module, clean: torch.Tensor, corrupted: torch.Tensor, labels: torch.Tensor,
                  indices: list[int], paths: list[str], combos: list[tuple[str, int]], batch_size: int
                  ) -> list[dict[str, Any]]:
    """One record per image: its clean top-3 and entropy, and per (corruption, severity) the prediction, top-3,
    entropy (nats) and the corrupted ranks of the clean top-3 classes."""
    c_idx, c_prob, c_ent, _ = _scored(model, clean, batch_size)
    n, m = corrupted.shape[:2]
    a_idx, a_prob, a_ent, a_logits = _scored(model, corrupted.reshape(n * m, *corrupted.shape[2:]), batch_size)
    ranks = ranks_of(a_logits, c_idx.repeat_interleave(m, dim=0)).reshape(n, m, -1)
    out = []
    for i in range(n):
        rec = {"index": indices[i], "path": paths[i], "label": int(labels[i]), "clean_pred": int(c_idx[i, 0]),
               "clean_top3": c_idx[i].tolist(), "clean_top3_prob": [round(float(p), 6) for p in c_prob[i]],
               "clean_entropy": round(float(c_ent[i]), 6), "adv": []}
        for j, (c, s) in enumerate(combos):
            k = i * m + j
            rec["adv"].append({"corruption": c, "severity": s, "pred": int(a_idx[k, 0]), "top3": a_idx[k].tolist(),
                               "top3_prob": [round(float(p), 6) for p in a_prob[k]],
                               "entropy": round(float(a_ent[k]), 6), "clean_top3_rank": ranks[i, j].tolist()})
        out.append(rec)
    return out


def summarize(records: list[dict[str, Any]], combos: list[tuple[str, int]]) -> dict[str, Any]:
    """The clean row and one row per (corruption, severity): accuracy, macro-F1, entropy (nats), rank shifts."""
    y = np.array([r["label"] for r in records])
    clean_pred = np.array([r["clean_pred"] for r in records])
    m, s = mean_std(np.array([r["clean_entropy"] for r in records]))
    clean = {"corruption": "clean", "family": "", "severity": 0, "images": len(y), "accuracy": accuracy(y, clean_pred),
             "macro_f1": macro_f1(y, clean_pred), "entropy_mean": m, "entropy_std": s}
    rows = []
    for j, (c, sev) in enumerate(combos):
        entries = [r["adv"][j] for r in records]
        pred = np.array([a["pred"] for a in entries])
        m, s = mean_std(np.array([a["entropy"] for a in entries]))
        rows.append({"corruption": c, "family": FAMILIES[c], "severity": sev, "images": len(y),
                     "accuracy": accuracy(y, pred), "macro_f1": macro_f1(y, pred), "entropy_mean": m,
                     "entropy_std": s, **rank_shift_summary(np.array([a["clean_top3_rank"] for a in entries]))})
    return {"clean": clean, "rows": rows}


def corruption_errors(rows: list[dict[str, Any]], clean: dict[str, Any],
                      reference: dict[str, Any] | None = None) -> dict[str, Any]:
    """Errors per corruption (mean over its severities) and, with ``reference`` (another corruption.json's
    ``clean`` and ``rows`` on the same images), ImageNet-C's CE, mCE, relative CE and relative mCE, and the
    accuracy change against the reference (this model's minus the reference's; clean, and per corruption the
    mean over its severities).

    mCE and the mean error are over the benchmark corruptions (:data:`robustcars.registry.CORRUPTIONS`) that
    were measured; the held-out ones get a CE but stay out of the means.

    Raises:
        DataError: the reference lacks a corruption or severity measured here, or scored other images.
    """
    err = {(r["corruption"], r["severity"]): 1 - r["accuracy"] for r in rows}
    names = list(dict.fromkeys(r["corruption"] for r in rows))
    sev = {c: [s for (cc, s) in err if cc == c] for c in names}
    bench = [c for c in names if c in CORRUPTIONS]
    out: dict[str, Any] = {"mean_error": {c: float(np.mean([err[c, s] for s in sev[c]])) for c in names}}
    out["mean_corruption_error"] = float(np.mean([out["mean_error"][c] for c in bench])) if bench else None
    if reference is None:
        return out
    ref = {(r["corruption"], r["severity"]): 1 - r["accuracy"] for r in reference["rows"]}
    missing = sorted({k for k in err if k not in ref})
    if missing:
        raise DataError(f"the reference has no {', '.join(f'{c} at severity {s}' for c, s in missing[:3])}; run it "
                        "with the same --corruption and --severity")
    if reference["clean"]["images"] != clean["images"]:
        raise DataError(f"the reference scored {reference['clean']['images']} images, this run {clean['images']}: "
                        "run both on the same images (same --split, --max-images and --seed)")
    e0, r0 = 1 - clean["accuracy"], 1 - reference["clean"]["accuracy"]
    out["clean_accuracy_change"] = r0 - e0
    out["accuracy_change"] = {c: float(np.mean([ref[c, s] - err[c, s] for s in sev[c]])) for c in names}
    ce = {c: _ratio(sum(err[c, s] for s in sev[c]), sum(ref[c, s] for s in sev[c])) for c in names}
    rel = {c: _ratio(sum(err[c, s] - e0 for s in sev[c]), sum(ref[c, s] - r0 for s in sev[c])) for c in names}
    out.update(ce=ce, mce=_mean([ce[c] for c in bench]), relative_ce=rel, relative_mce=_mean([rel[c] for c in bench]))
    return out


def _ratio(a: float, b: float) -> float | None:
    return a / b if b > 0 else None  # a reference without error on a corruption: no ratio


def _mean(values: list[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return float(np.mean(kept)) if kept else None


def run_corruptions(cfg: CorruptConfig, *, resume: bool = False,
                    progress: Callable[[int, int], Callable[[int], None]] | None = None, command: str = ""
                    ) -> dict[str, Any]:
    """Score ``cfg.run``'s model on its split under every corruption and severity; returns corruption.json.

    ``cfg.reference``: a corruption folder (or a run folder with ``corrupt/``) of another model on the same
    images, for CE and mCE. ``progress(total, done)`` returns an ``advance(n)`` callback.

    Raises:
        ConfigError, DataError, CheckpointError, StorageError: as their messages say; nothing already written
        is lost (records are appended batch by batch, every other file is written atomically).
    """
    cfg.validate()
    ref = _read_reference(cfg.reference) if cfg.reference is not None else None
    source, data = _model_and_data(cfg)
    root = data.root
    samples = data.split(cfg.split)
    if cfg.max_images and cfg.max_images < len(samples):
        samples = subsample(samples, cfg.max_images, cfg.seed)
    if not samples:
        raise DataError(f"no images in the {cfg.split} split of {root}")
    if list(data.classes) != source.class_names:
        raise DataError(f"class names in {root} differ from the model's (another dataset or class order)")
    _corrupt_fn()  # the package, before anything is written
    combos = [(c, s) for c in cfg.corruptions for s in cfg.severities]
    device = resolve_device(cfg.device)
    model = source.make().to(device)
    with torch.inference_mode():
        check_logits(model(torch.zeros(1, 3, source.img_size, source.img_size, device=device)), source.num_classes,
                     f"run {cfg.run}")
    cache = CorruptionCache(cfg.cache, source.img_size, source.resize, data.root) if cfg.cache else None
    out = Path(cfg.out)
    with output_lock(out):
        done, finished = open_folder(out, cfg, len(samples), resume=resume, what="corruption",
                                     complete=lambda o: (o / RESULT_NAME).is_file()
                                     and len(recorded(o)) == len(samples))
        if finished:
            return {**read_json_file(out / RESULT_NAME, "corruption result"), "unchanged": True}
        ResumeState(cfg.fingerprint(), asdict(cfg), len(samples)).save(out)
        todo = [i for i in range(len(samples)) if i not in done]
        t0 = time.perf_counter()
        _score_all(model, device, samples, todo, build_resize(source.img_size, source.resize), combos, cfg, out,
                   progress(len(samples), len(done)) if progress else (lambda n: None), data.root, cache)
        seconds = time.perf_counter() - t0
        return _finish(cfg, source, samples, combos, out, ref, seconds, len(todo), command or cfg.command(),
                       _example_grid(cfg, source, samples, data.root, cache))


def _model_and_data(cfg: CorruptConfig) -> tuple[ModelSource, CarsData]:
    """``cfg.run``'s model and its data (or ``--data``), or ``--model`` built for the classes of ``--data``.

    Raises:
        ConfigError, CheckpointError, DataError: as their messages say.
    """
    if not cfg.model:
        source = from_run(cfg.run)
        return source, load_cars(cfg.data or source.data_root, **source.data_options)
    data = load_cars(cfg.data)
    names = read_class_names(cfg.classes) if cfg.classes else list(data.classes)
    source = from_spec(cfg.model, class_names=names, checkpoint=cfg.checkpoint, mean=cfg.mean, std=cfg.std,
                       img_size=cfg.img_size, resize=cfg.resize)
    return source, data


def _relative(path: str | Path, root: str | Path) -> str:
    """An image's path as attack records give it: relative to the data root when inside it."""
    try:
        return str(Path(path).relative_to(root))
    except ValueError:
        return str(path)


def _score_all(model, device, samples, todo, resize, combos, cfg: CorruptConfig, out: Path, advance, root,
               cache: CorruptionCache | None) -> None:
    path = out / "records.jsonl"
    truncate_torn(path)
    keys = [_relative(s.path, root) for s in samples]
    loader = DataLoader(CorruptedImages(samples, todo, resize, combos, cfg.seed, keys, cache),
                        batch_size=cfg.batch_size, shuffle=False, num_workers=cfg.workers)
    position = 0
    for clean, corrupted, labels in loader:
        idx = todo[position:position + len(labels)]
        recs = batch_records(model, clean.to(device), corrupted.to(device), labels, idx,
                             [keys[i] for i in idx], combos, cfg.batch_size)
        try:
            with open(path, "ab") as fh:
                fh.write("".join(json.dumps(r) + "\n" for r in recs).encode())
        except OSError as exc:
            raise StorageError(f"cannot append to {path}: {exc.strerror or exc}; the records written so far are "
                               "kept — free space and rerun with --resume") from None
        position += len(labels)
        advance(len(labels))


def _example_grid(cfg: CorruptConfig, source, samples, root, cache: CorruptionCache | None
                  ) -> tuple[dict[str, np.ndarray], int]:
    """The first scored image, clean and under every corruption at the middle severity (the very images scored)."""
    middle = cfg.severities[len(cfg.severities) // 2]
    keys = [_relative(s.path, root) for s in samples[:1]]
    clean, corrupted, _ = CorruptedImages(samples, [0], build_resize(source.img_size, source.resize),
                                          [(c, middle) for c in cfg.corruptions], cfg.seed, keys, cache)[0]
    hwc = lambda t: t.numpy().transpose(1, 2, 0)  # noqa: E731
    return {"clean": hwc(clean), **{c: hwc(a) for c, a in zip(cfg.corruptions, corrupted)}}, middle


def _finish(cfg, source, samples, combos, out: Path, ref, seconds: float, scored: int, command: str,
            grid: tuple[dict[str, np.ndarray], int]) -> dict[str, Any]:
    from robustcars.reporting.figures import corruption_figures

    records = sorted(read_records(out / "records.jsonl").records, key=lambda r: r["index"])
    if len(records) != len(samples):
        raise DataError(f"{out / 'records.jsonl'} holds {len(records)} records for {len(samples)} images")
    summary = summarize(records, combos)
    errors = corruption_errors(summary["rows"], summary["clean"], ref)
    figures = corruption_figures(summary, grid[0], grid[1], out / "figures",
                                 f"{source.arch} on {len(samples)} {cfg.split} images", errors,
                                 ref["run"].get("checkpoint") if ref else None)
    result = {
        "schema_version": SCHEMA_VERSION, "kind": KIND, "command": command, "reproduce": cfg.command(),
        "config": asdict(cfg), "run": {**source.info, "img_size": source.img_size, "resize": source.resize},
        "data": {"root": str(cfg.data or source.data_root), "split": cfg.split, "images": len(samples)},
        "clean": summary["clean"], "rows": summary["rows"],
        "errors": errors,
        "reference": ref["dir"] if ref else None,
        "cost": {"seconds": round(seconds, 2), "images_per_second": round(scored / seconds, 3) if seconds else None,
                 "corrupted_images_per_image": len(combos), "resumed_images": len(samples) - scored},
        "versions": {**library_versions(), "robustcars": __version__, "imagecorruptions-imaug": _package_version()},
        "figures": [str(p.relative_to(out)) for p in figures],
    }
    rio.write_csv(out / "corruption.csv", [summary["clean"], *summary["rows"]])
    rio.write_json(out / RESULT_NAME, result)
    state = ResumeState.load(out)
    ResumeState(state.fingerprint, state.config, state.total, finished=True).save(out)
    return result


def _package_version() -> str | None:
    import importlib.metadata as md

    try:
        return md.version("imagecorruptions-imaug")
    except md.PackageNotFoundError:
        return None


def _read_reference(path: str | Path) -> dict[str, Any]:
    """A reference corruption.json (a corruption folder, or a run folder holding ``corrupt/``)."""
    return read_corruption_result(path)
