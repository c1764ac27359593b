"""Inference and live attacks on one uploaded photo, with the same library functions the CLI uses."""

from __future__ import annotations

import base64
import contextlib
import copy
import io
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from robustcars.attacks import Attack
from robustcars.data.images import build_transform
from robustcars.errors import DataError, RobustcarsError
from robustcars.explain.gradcam import attention_records, cam_layer, grad_cam, overlay
from robustcars.explain.photos import attack_photos, default_top_k, photo_attack, predict, read_photo
from robustcars.explain.prefilter import CarPrefilter
from robustcars.models.checkpoint import model_from_checkpoint, read_checkpoint
from robustcars.models.source import check_logits
from robustcars.web.attack_jobs import AttackJob


class OverBudget(RobustcarsError):
    """A web request's computation ran past the server's time limit (it was stopped; nothing is kept)."""


class ModelBusy(RobustcarsError):
    """The model stayed busy with another request for longer than a request may wait."""


class Deadline(nn.Module):
    """``model`` with a time limit: every forward pass after ``deadline`` (``time.monotonic()``) or after
    ``stop`` is set raises :class:`OverBudget`. Every attack — robustcars', foolbox's, AutoAttack's — calls the
    model at each step, so any of them stops within one step of the limit and releases the model lock."""

    def __init__(self, model: nn.Module, deadline: float, stop: threading.Event, seconds: float,
                 job: AttackJob | None = None) -> None:
        super().__init__()
        self.model, self.deadline, self.stop, self.seconds, self.job = model, deadline, stop, seconds, job
        self.train(model.training)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.job is not None:
            self.job.calls += 1
        if self.stop.is_set():
            raise OverBudget("the attack was cancelled" if self.job is not None else
                             "the server is shutting down; the attack was stopped")
        if time.monotonic() > self.deadline:
            option = "--attack-job-seconds" if self.job is not None else "--attack-seconds"
            raise OverBudget(f"the attack ran past the server's limit of {self.seconds:g} s "
                             f"(serve {option}) and was stopped; choose fewer steps or queries")
        return self.model(x)


def png_data_url(rgb: np.ndarray) -> str:
    """``rgb`` float (H, W, 3) in [0, 1] or (3, H, W) -> a ``data:image/png;base64,...`` URL."""
    a = rgb.transpose(1, 2, 0) if rgb.shape[0] == 3 and rgb.ndim == 3 else rgb
    buf = io.BytesIO()
    Image.fromarray((np.clip(a, 0, 1) * 255).round().astype(np.uint8)).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


class Models:
    """Loaded runs (by checkpoint path and modification time) and the car prefilter, shared by requests;
    a lock serializes the computations (2 CPU cores: one at a time is the fastest anyway)."""

    def __init__(self, seconds: float = 60.0) -> None:
        self.cache: dict[tuple[str, float], tuple[Any, dict, Any]] = {}
        self.prefilter: CarPrefilter | None = None
        self.lock = threading.Lock()
        self.seconds = seconds  # the longest a request computes, and so the longest another one waits
        self.stop = threading.Event()  # set when the server stops: running attacks end at their next step

    @contextlib.contextmanager
    def computing(self) -> Iterator[None]:
        """Hold the model lock for one request, waiting at most ``seconds`` for it.

        Raises:
            ModelBusy: another request kept it longer.
        """
        if not self.lock.acquire(timeout=self.seconds + 5):
            raise ModelBusy("the model is busy with another request; try again in a moment")
        try:
            yield
        finally:
            self.lock.release()

    def bounded(self, model: nn.Module) -> Deadline:
        """``model`` stopping once this request has computed for ``seconds``."""
        return Deadline(model, time.monotonic() + self.seconds, self.stop, self.seconds)

    def load(self, run: Path):
        path = run / "best.pt"
        key = (str(path), path.stat().st_mtime)
        if key not in self.cache:
            ckpt = read_checkpoint(path)
            tf = build_transform(ckpt["img_size"], train=False, resize=ckpt.get("resize", "crop"))
            model = model_from_checkpoint(ckpt)
            with torch.inference_mode():  # what it returns is checked once, when it is loaded
                check_logits(model(torch.zeros(1, 3, ckpt["img_size"], ckpt["img_size"])), len(ckpt["class_names"]),
                             f"run {run.name}")
            self.cache = {key: (model, ckpt, tf)}  # one run in memory at a time
        return self.cache[key]

    def car_prefilter(self, threshold: float) -> CarPrefilter:
        if self.prefilter is None:
            self.prefilter = CarPrefilter(threshold)
        self.prefilter.threshold = threshold
        return self.prefilter


def check_resized(photo: Image.Image, img_size: int, resize: str, max_pixels: int, name: str) -> None:
    """Refuse a photo whose resize for the model (``crop``: shorter side to ``img_size`` first) would hold more
    than ``max_pixels`` pixels; its decoded size was checked already.

    Raises:
        DataError: naming the photo, its size and what the resize would cost.
    """

    w, h = photo.size
    pixels = img_size * img_size if resize == "squash" else img_size * int(img_size * max(w, h) / max(1, min(w, h)))
    if pixels > max_pixels:
        raise DataError(f"{name}: {w}x{h} pixels would be resized to {pixels:,} pixels for the model, more than the "
                        f"{max_pixels:,} accepted")


def _topk(p) -> list[dict[str, Any]]:
    return [{"class": c, "name": n, "probability": round(q, 6)} for c, n, q in zip(p.classes, p.names, p.probs)]


def predict_upload(models: Models, run: Path, data: bytes, name: str, *, top_k: int | None, cam: bool,
                   prefilter: bool, threshold: float, max_pixels: int) -> dict[str, Any]:
    """Top-k (default ``min(15, classes)``; optionally Grad-CAM and the car verdict) of one uploaded photo."""
    photo = read_photo(data, name=name, max_pixels=max_pixels)
    with models.computing():
        model, ckpt, tf = models.load(run)
        check_resized(photo, ckpt["img_size"], ckpt.get("resize", "crop"), max_pixels, name)
        top_k = default_top_k(len(ckpt["class_names"]), top_k)
        x = tf(photo)[None]
        [p] = predict(model, x, ckpt["class_names"], top_k)
        out: dict[str, Any] = {"run": run.name, "image": png_data_url(x[0].numpy()), "top_k": _topk(p),
                               "entropy_nats": round(p.entropy, 6)}
        if cam:
            [m] = grad_cam(model, x, [p.classes[0]], cam_layer(model, ckpt["arch"]))
            out["cam"] = png_data_url(overlay(x[0].numpy(), m))
        if prefilter:
            pf = models.car_prefilter(threshold)
            [v] = pf(pf.transform(photo)[None])
            out["prefilter"] = {"is_car": v.is_car, "car_probability": round(v.car_probability, 6),
                                "threshold": threshold, "imagenet_top5": [[n, round(q, 6)] for n, q in v.top5]}
    return out


def attack_upload(models: Models, run: Path, data: bytes, name: str, *, attack: str, eps: float,
                  params: dict[str, Any], top_k: int, max_pixels: int) -> dict[str, Any]:
    """Attack one uploaded photo (untargeted, its clean top-1 as the label) and describe what changed.

    The attack runs under the model lock and :meth:`Models.bounded`: past the server's time limit it stops with
    :class:`OverBudget` and the lock is released.
    """
    photo = read_photo(data, name=name, max_pixels=max_pixels)
    with models.computing():
        model, ckpt, tf = models.load(run)
        check_resized(photo, ckpt["img_size"], ckpt.get("resize", "crop"), max_pixels, name)
        atk, params = photo_attack(attack, params, len(ckpt["class_names"]))
        return _attack_photo(model, models.bounded(model), ckpt, tf(photo)[None], run.name, atk, params, eps, top_k)


def attack_job_work(models: Models, run: Path, data: bytes, name: str, *, attack: str, eps: float,
                    params: dict[str, Any], top_k: int, max_pixels: int) -> Callable[[AttackJob], dict[str, Any]]:
    """A long attack (:mod:`robustcars.web.attack_jobs`), checked now (photo, run, parameters against its class
    count: an error here is the request's 4xx) and returned as the job's work: it attacks a private copy of the
    model outside the model lock, so predictions go on meanwhile, and stops at its next model call once
    cancelled or past the job's limit. Same answer as :func:`attack_upload`.
    """
    photo = read_photo(data, name=name, max_pixels=max_pixels)
    with models.computing():  # held only to load the run
        model, ckpt, tf = models.load(run)
        check_resized(photo, ckpt["img_size"], ckpt.get("resize", "crop"), max_pixels, name)
        atk, params = photo_attack(attack, params, len(ckpt["class_names"]))
        model = copy.deepcopy(model)
    x = tf(photo)[None]

    def work(job: AttackJob) -> dict[str, Any]:
        bounded = Deadline(model, time.monotonic() + job.seconds, job.stop, job.seconds, job)
        return _attack_photo(model, bounded, ckpt, x, run.name, atk, params, eps, top_k)

    return work


def _attack_photo(model: nn.Module, bounded: Deadline, ckpt: dict[str, Any], x: torch.Tensor, run: str,
                  atk: Attack, params: dict[str, Any], eps: float, top_k: int | None) -> dict[str, Any]:
    """The attack of :func:`attack_upload` on ``x`` (float32 (1, 3, H, W) in [0, 1]), ``bounded`` the model
    the attack calls."""
    names = ckpt["class_names"]
    top_k = default_top_k(len(names), top_k)
    [clean] = predict(model, x, names, top_k)
    x_adv, [adv], [ranks] = attack_photos(model, atk, x, [clean], eps, names, top_k, bounded)
    [shift], [c_map], [a_map] = attention_records(model, cam_layer(model, ckpt["arch"]), x, x_adv,
                                                  [clean.classes[0]], [adv.classes[0]])
    delta = (x_adv - x)[0].numpy()
    scale = max(float(np.abs(delta).max()), 1e-12)
    return {
        "run": run, "attack": atk.name, "eps": eps, "norm": atk.norm, "params": params,
        "image": png_data_url(x[0].numpy()), "adversarial": png_data_url(x_adv[0].numpy()),
        "perturbation": png_data_url(delta / (2 * scale) + 0.5),
        "magnification": round(0.5 / scale, 1) if np.abs(delta).max() > 0 else None,  # None: no perturbation
        "linf": round(float(np.abs(delta).max()), 7), "l2": round(float(np.linalg.norm(delta)), 6),
        "clean": {"top_k": _topk(clean), "entropy_nats": round(clean.entropy, 6)},
        "adversarial_prediction": {"top_k": _topk(adv), "entropy_nats": round(adv.entropy, 6)},
        "fooled": adv.classes[0] != clean.classes[0],
        "clean_top3_rank_change": [{"name": names[c], "clean_rank": i + 1, "adversarial_rank": r}
                                   for i, (c, r) in enumerate(zip(clean.classes[:3], ranks))],
        "cam": png_data_url(overlay(x[0].numpy(), c_map)),
        "adversarial_cam": png_data_url(overlay(x_adv[0].numpy(), a_map)),
        "attention_shift": shift,
    }
