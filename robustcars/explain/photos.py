"""Top-k predictions for any photo (``robustcars predict``): reading photos safely, the softmax top-k with its
entropy in nats, and, when asked, an attack on each photo with its Grad-CAM figure.

Models take float32 ``(N, 3, H, W)`` images in [0, 1] (normalization is their first layer). None of these
functions changes a model's train/eval mode, its weights' ``requires_grad`` or ``.grad``, or its buffers
(:func:`untouched`).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from PIL import Image, UnidentifiedImageError
from torch import nn

from robustcars.attacks import get_attack
from robustcars.attacks.base import Attack
from robustcars.data.images import build_transform, check_regular_file, to_rgb
from robustcars.errors import ConfigError, DataError
from robustcars.explain.gradcam import attention_records, cam_layer, grad_cam, overlay, untouched
from robustcars.explain.prefilter import CarPrefilter, PrefilterResult
from robustcars.metrics import entropy, ranks_of
from robustcars.models.checkpoint import model_from_checkpoint, read_checkpoint
from robustcars.registry import check_attack_classes, fit_to_classes
from robustcars.reporting.figures import cam_panel

MAX_PIXELS = 100_000_000  # a photo larger than this is refused (decompression-bomb guard)


MAX_ASPECT = 20.0  # a photo longer than 20:1 is refused: its crop-resize would be 20x the model's input or more


def read_photo(source: str | Path | bytes, *, name: str | None = None, max_pixels: int = MAX_PIXELS,
               max_aspect: float = MAX_ASPECT) -> Image.Image:
    """Decode any photo (a path, or the bytes of an upload) as 8-bit RGB (:func:`robustcars.data.images.to_rgb`:
    grayscale, palette, CMYK, 16-bit and float images by their range; transparency laid on white). The size and
    aspect ratio are checked from the header, before the pixels are decoded; a path that is not a regular file
    (a FIFO, a device) is refused without opening it.

    Raises:
        DataError: not a regular file, not an image, truncated, more than ``max_pixels`` pixels, or an aspect
            ratio above ``max_aspect`` (one line each, starting with ``name`` or the path).
    """
    import io


    path = name or (str(source) if not isinstance(source, bytes) else "upload")
    opened = io.BytesIO(source) if isinstance(source, bytes) else Path(source)
    if not isinstance(source, bytes):
        check_regular_file(source)
    try:
        with warnings.catch_warnings():  # PIL warns above its own limit; ours is checked right below
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(opened)
        with im:
            if im.width * im.height > max_pixels:
                raise DataError(f"{path}: {im.width}x{im.height} pixels is more than the {max_pixels:,} accepted")
            if max(im.width, im.height) > max_aspect * max(1, min(im.width, im.height)):
                raise DataError(f"{path}: {im.width}x{im.height} pixels, an aspect ratio above {max_aspect:g}:1 "
                                "(not a photo; resizing it would cost memory out of all proportion)")
            im.load()
            try:
                return to_rgb(im)
            except DataError as exc:
                raise DataError(f"{path}: {exc}") from None
    except DataError:
        raise
    except Image.DecompressionBombError:
        raise DataError(f"{path}: refused, too many pixels (decompression bomb)") from None
    except UnidentifiedImageError:
        raise DataError(f"{path}: not an image") from None
    except IsADirectoryError:
        raise DataError(f"{path}: a folder, not an image") from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise DataError(f"{path}: cannot read image ({exc})") from None


def expand_inputs(paths: Sequence[str | Path]) -> list[Path]:
    """Files as given and, for each folder, its non-hidden files in sorted order (not recursive).

    Raises:
        DataError: a path that does not exist, or nothing to read at all.
    """
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            files += sorted(f for f in p.iterdir() if f.is_file() and not f.name.startswith("."))
        elif p.exists():
            files.append(p)
        else:
            raise DataError(f"{p} not found")
    if not files:
        raise DataError(f"no files in {', '.join(map(str, paths))}")
    return files


@dataclass
class Photos:
    """Images that decoded (``x`` float32 ``(N, 3, S, S)`` in [0, 1], ``paths``) and the ones that did not;
    ``extra``: the same images through a second transform (None without one)."""

    x: torch.Tensor
    paths: list[Path]
    rejected: list[tuple[Path, str]] = field(default_factory=list)
    extra: torch.Tensor | None = None


def load_photos(paths: Sequence[str | Path], transform, extra=None) -> Photos:
    """Read every file (see :func:`expand_inputs`) once, through ``transform`` (a PIL image -> (3, S, S) tensor)
    and ``extra`` if given; the ones that fail are listed in ``rejected`` with their one-line reason instead of
    stopping the rest."""
    good, tensors, extras, bad = [], [], [], []
    for f in expand_inputs(paths):
        try:
            photo = read_photo(f)
        except DataError as exc:
            bad.append((f, str(exc).removeprefix(f"{f}: ")))
            continue
        tensors.append(transform(photo))
        if extra is not None:
            extras.append(extra(photo))
        good.append(f)
    x = torch.stack(tensors) if tensors else torch.zeros(0, 3, 1, 1)
    return Photos(x, good, bad, torch.stack(extras) if extras else None)


@dataclass
class Prediction:
    """Top-k of one image: class indices, names and softmax probabilities (descending), entropy in nats."""

    classes: list[int]
    names: list[str]
    probs: list[float]
    entropy: float




def predict(model: nn.Module, x: torch.Tensor, class_names: Sequence[str], top_k: int = 15) -> list[Prediction]:
    """Top-k predictions of ``model`` for images ``x`` (float32 ``(N, 3, H, W)`` in [0, 1]).

    Raises:
        ConfigError: ``top_k`` outside [1, number of classes].
    """
    k = len(class_names)
    if not 1 <= top_k <= k:
        raise ConfigError(f"--top-k must be in [1, {k}], got {top_k}")
    with untouched(model), torch.inference_mode():
        model.eval()
        logits = model(x).float()

    p = torch.softmax(logits, dim=1)
    prob, idx = p.topk(top_k, dim=1)
    ent = entropy(logits)
    return [Prediction(i.tolist(), [class_names[c] for c in i.tolist()], pr.tolist(), float(e))
            for i, pr, e in zip(idx, prob, ent)]


@dataclass
class PhotoResult:
    """One photo through ``robustcars predict``: clean top-k, and when attacked, adversarial top-k and the
    adversarial ranks of the clean top-3; ``is_car`` from the prefilter when asked (None otherwise)."""

    path: str
    clean: Prediction
    adv: Prediction | None = None
    clean_top3_adv_rank: list[int] | None = None
    prefilter: PrefilterResult | None = None
    attention: dict | None = None
    figure: str | None = None


TOP_K = 15  # classes listed per photo by default (fewer when the model has fewer classes)


def default_top_k(num_classes: int, top_k: int | None = None) -> int:
    """``top_k`` as given, else ``min(15, num_classes)``.

    Raises:
        ConfigError: a given ``top_k`` outside [1, num_classes].
    """
    if top_k is None:
        return min(TOP_K, num_classes)
    if not 1 <= top_k <= num_classes:
        raise ConfigError(f"--top-k must be in [1, {num_classes}], got {top_k}")
    return top_k


def photo_attack(attack: str, params: dict | None, num_classes: int) -> tuple[Attack, dict]:
    """The attack of ``robustcars predict --attack`` and the web app's attack on a photo, with its parameters
    fitted to the model's classes (e.g. APGD-T's target count), before any model is loaded.

    Raises:
        ConfigError: an unknown attack or parameter, or an attack the number of classes cannot take.
    """

    params = fit_to_classes(attack, params or {}, num_classes)
    check_attack_classes(attack, params, num_classes)
    return get_attack(attack, **params), params


def attack_photos(model: nn.Module, atk: Attack, x: torch.Tensor, clean: list[Prediction], eps: float,
                  class_names: Sequence[str], top_k: int, attacked: nn.Module | None = None
                  ) -> tuple[torch.Tensor, list[Prediction], list[list[int]]]:
    """Attack photos untargeted with their clean top-1 as the label (a photo has no ground truth): the one path
    of the CLI and the web app. ``attacked`` is the model the attack queries (default ``model``; the web app
    passes one with a time limit).

    Returns:
        ``(x_adv (N, 3, H, W) in [0, 1], adversarial top-k per photo, adversarial ranks of each clean top-3)``.
    """
    y = torch.tensor([c.classes[0] for c in clean])
    x_adv = atk(attacked if attacked is not None else model, x, y, [eps]).adv[0]
    adv = predict(model, x_adv, class_names, top_k)
    with torch.inference_mode():
        ranks = ranks_of(model(x_adv), torch.tensor([c.classes[:3] for c in clean])).tolist()
    return x_adv, adv, ranks


def predict_photos(run: str | Path, inputs: Sequence[str | Path], *, top_k: int | None = None,
                   attack: str | None = None,
                   eps: float = 0.01, params: dict | None = None, cam_dir: Path | None = None,
                   prefilter: CarPrefilter | None = None) -> tuple[list[PhotoResult], list[tuple[Path, str]]]:
    """Predict every photo with the run's own eval transform; optionally attack it (untargeted, with the clean
    top-1 as the label: a photo has no ground truth), draw its Grad-CAM figure into ``cam_dir``, and skip it
    when ``prefilter`` says it is not a car.

    Returns:
        ``(results, skipped)``: skipped photos with their one-line reason (unreadable, or not a car).
    Raises:
        CheckpointError, ConfigError (top_k, attack, eps), DataError (no input found).
    """

    ckpt = read_checkpoint(run)
    names = ckpt["class_names"]
    top_k = default_top_k(len(names), top_k)
    atk = photo_attack(attack, params, len(names))[0] if attack else None
    model = model_from_checkpoint(ckpt)
    photos = load_photos(inputs, build_transform(ckpt["img_size"], train=False, resize=ckpt.get("resize", "crop")),
                         prefilter.transform if prefilter is not None else None)
    skipped = list(photos.rejected)
    keep = list(range(len(photos.paths)))
    verdicts: dict[int, PrefilterResult] = {}
    if prefilter is not None and keep:
        for i, v in enumerate(prefilter(photos.extra)):
            verdicts[i] = v
        skipped += [(photos.paths[i], f"not a car (car probability {verdicts[i].car_probability:.3f} < "
                     f"{prefilter.threshold:g}; ImageNet top-5: "
                     + ", ".join(f"{n} {p:.2f}" for n, p in verdicts[i].top5) + ")")
                    for i in keep if not verdicts[i].is_car]
        keep = [i for i in keep if verdicts[i].is_car]
    if not keep:
        return [], skipped
    x = photos.x[keep]
    clean = predict(model, x, names, top_k)
    results = [PhotoResult(str(photos.paths[i]), c, prefilter=verdicts.get(i)) for i, c in zip(keep, clean)]
    if atk is not None:
        x_adv, adv, ranks = attack_photos(model, atk, x, clean, eps, names, top_k)
        for r, a, rk in zip(results, adv, ranks):
            r.adv, r.clean_top3_adv_rank = a, rk
    if cam_dir is not None:
        _photo_figures(model, ckpt["arch"], x, x_adv if atk is not None else None, results, cam_dir,
                       f"{attack} eps = {eps:g}" if atk is not None else "")
    return results, skipped


def _photo_figures(model: nn.Module, arch: str, x: torch.Tensor, x_adv: torch.Tensor | None,
                   results: list[PhotoResult], folder: Path, attack_label: str) -> None:
    """One figure per photo: original, Grad-CAM, (adversarial, its Grad-CAM,) top-k bars."""

    layer = cam_layer(model, arch)
    clean_maps = grad_cam(model, x, [r.clean.classes[0] for r in results], layer)
    adv_maps = stats = None
    if x_adv is not None:
        stats, _, adv_maps = attention_records(model, layer, x, x_adv, [r.clean.classes[0] for r in results],
                                               [r.adv.classes[0] for r in results])
    used: set[str] = set()
    for i, r in enumerate(results):
        img = x[i].numpy()
        row = {"image": img, "cam": overlay(img, clean_maps[i]), "cam_map": clean_maps[i], "label": None,
               "top": list(zip(r.clean.names, r.clean.probs))}
        if adv_maps is not None:
            a = x_adv[i].numpy()
            row.update(adv=a, adv_cam=overlay(a, adv_maps[i]), adv_cam_map=adv_maps[i],
                       adv_top=list(zip(r.adv.names, r.adv.probs)),
                       shift=stats[i])
            r.attention = stats[i]
        stem = Path(r.path).stem
        name = stem if stem not in used else f"{stem}-{i}"
        used.add(name)
        title = f"{Path(r.path).name}" + (f" — {attack_label}" if attack_label else "")
        r.figure = str(cam_panel([row], title, folder / f"{name}.png"))


def photo_json(r: PhotoResult) -> dict:
    """A :class:`PhotoResult` as plain JSON types."""
    def pred(p: Prediction | None) -> dict | None:
        return None if p is None else {"top_k": [{"class": c, "name": n, "probability": round(q, 6)}
                                                 for c, n, q in zip(p.classes, p.names, p.probs)],
                                       "entropy_nats": round(p.entropy, 6)}

    out = {"path": r.path, "clean": pred(r.clean), "adversarial": pred(r.adv),
           "clean_top3_adversarial_rank": r.clean_top3_adv_rank, "attention_shift": r.attention, "figure": r.figure}
    if r.prefilter is not None:
        out["prefilter"] = {"is_car": r.prefilter.is_car, "car_probability": round(r.prefilter.car_probability, 6),
                            "imagenet_top5": [[n, round(q, 6)] for n, q in r.prefilter.top5]}
    return out
