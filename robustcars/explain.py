"""Look inside a classifier: top-k predictions for any photo, Grad-CAM of clean vs adversarial images, and a
non-car prefilter.

* :func:`predict`: top-k classes with softmax probabilities and the entropy (nats) of each image.
* :func:`grad_cam`: Grad-CAM (Selvaraju et al., ICCV 2017, eq. 1-2) through the maintained library
  ``grad-cam`` (``pytorch_grad_cam``), at each architecture's last conv block
  (:data:`robustcars.registry.ARCHITECTURES`); :func:`attention_shift` measures how far it moved under attack.
* :class:`CarPrefilter`: is this a car at all? The summed ImageNet softmax probability of the car classes of
  EfficientNet-Lite0's ImageNet head (the weights that install offline) against a threshold, as the
  reference car-classification project does before training.

Models take float32 ``(N, 3, H, W)`` images in [0, 1] (normalization is their first layer). None of these
functions changes a model's train/eval mode, its weights' ``requires_grad`` or ``.grad``, or its buffers.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import nn

from .errors import ConfigError, DataError
from .registry import ARCHITECTURES

# ImageNet-1k classes that are road cars (torchvision's category names). The reference project's list
# also had 705 "passenger car", which in ImageNet is a railway carriage: left out.
CAR_CLASSES = (436, 468, 511, 609, 627, 654, 656, 675, 717, 734, 751, 757, 817, 864)
MAX_PIXELS = 100_000_000  # a photo larger than this is refused (decompression-bomb guard)
MAX_ASPECT = 20.0  # a photo longer than 20:1 is refused: its crop-resize would be 20x the model's input or more


# --- images ------------------------------------------------------------------------------------------

def read_photo(source: str | Path | bytes, *, name: str | None = None, max_pixels: int = MAX_PIXELS,
               max_aspect: float = MAX_ASPECT) -> Image.Image:
    """Decode any photo (a path, or the bytes of an upload) as 8-bit RGB (:func:`robustcars.data.to_rgb`:
    grayscale, palette, CMYK, 16-bit and float images by their range; transparency laid on white). The size and
    aspect ratio are checked from the header, before the pixels are decoded; a path that is not a regular file
    (a FIFO, a device) is refused without opening it.

    Raises:
        DataError: not a regular file, not an image, truncated, more than ``max_pixels`` pixels, or an aspect
            ratio above ``max_aspect`` (one line each, starting with ``name`` or the path).
    """
    import io

    from .data import check_regular_file, to_rgb

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


# --- predictions -------------------------------------------------------------------------------------

@dataclass
class Prediction:
    """Top-k of one image: class indices, names and softmax probabilities (descending), entropy in nats."""

    classes: list[int]
    names: list[str]
    probs: list[float]
    entropy: float


@contextlib.contextmanager
def untouched(model: nn.Module) -> Iterator[nn.Module]:
    """Run a block that may call ``eval()``, ``zero_grad()`` or ``backward()`` on ``model`` and restore its
    mode, its weights' ``requires_grad`` and ``.grad`` afterwards (weights are frozen inside, so no weight
    gradient is even computed)."""
    from .attacks.base import frozen_weights

    mode = model.training
    grads = [(p, p.grad) for p in model.parameters()]
    try:
        with frozen_weights(model):
            yield model
    finally:
        model.train(mode)
        for p, g in grads:
            p.grad = g


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
    from .metrics import entropy

    p = torch.softmax(logits, dim=1)
    prob, idx = p.topk(top_k, dim=1)
    ent = entropy(logits)
    return [Prediction(i.tolist(), [class_names[c] for c in i.tolist()], pr.tolist(), float(e))
            for i, pr, e in zip(idx, prob, ent)]


# --- Grad-CAM ----------------------------------------------------------------------------------------

def cam_layer(model: nn.Module, arch: str) -> nn.Module:
    """The submodule Grad-CAM reads for ``arch`` (``model`` is ``Sequential(normalize, model)``).

    Raises:
        ConfigError: an architecture without a known layer.
    """
    if arch not in ARCHITECTURES:
        raise ConfigError(f"no Grad-CAM layer known for architecture {arch!r}")
    return model.model.get_submodule(ARCHITECTURES[arch].cam_layer)


def grad_cam(model: nn.Module, x: torch.Tensor, classes: Sequence[int], layer: nn.Module) -> np.ndarray:
    """Grad-CAM heat maps of ``classes[i]`` for image ``x[i]``.

    Args:
        x: float32 ``(N, 3, H, W)`` in [0, 1]; classes: one class index per image; layer: see :func:`cam_layer`.
    Returns:
        float32 ``(N, H, W)``, each map scaled to [0, 1] (0 where the map is flat).
    """
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    with untouched(model), GradCAM(model=model, target_layers=[layer]) as cam:
        cam.compute_input_gradient = True  # the weights are frozen: the graph starts at the input
        maps = cam(input_tensor=x.detach().clone(), targets=[ClassifierOutputTarget(int(c)) for c in classes])
    return np.asarray(maps, dtype=np.float32)


def attention_shift(clean: np.ndarray, adv: np.ndarray, top: float = 0.1) -> dict[str, np.ndarray]:
    """How far the attention moved, per image, between two stacks of maps ``(N, H, W)``.

    Returns:
        ``pearson``: correlation of the two maps (1 = same place; nan if a map is flat), and ``top_kept``: the
        share of the clean map's ``top`` fraction of pixels that are also in the adversarial map's top fraction.
    """
    a, b = clean.reshape(len(clean), -1).astype(np.float64), adv.reshape(len(adv), -1).astype(np.float64)
    a_c, b_c = a - a.mean(1, keepdims=True), b - b.mean(1, keepdims=True)
    denom = np.sqrt((a_c ** 2).sum(1) * (b_c ** 2).sum(1))
    with np.errstate(invalid="ignore", divide="ignore"):
        pearson = np.where(denom > 0, (a_c * b_c).sum(1) / denom, np.nan)
    n = max(1, int(math.ceil(top * a.shape[1])))
    top_a, top_b = np.argsort(-a, axis=1)[:, :n], np.argsort(-b, axis=1)[:, :n]
    kept = np.array([len(np.intersect1d(i, j)) / n for i, j in zip(top_a, top_b)])
    return {"pearson": pearson, "top_kept": kept}


def overlay(image: np.ndarray, heat: np.ndarray) -> np.ndarray:
    """The heat map on the image (``image`` float (3, H, W) or (H, W, 3) in [0, 1]) as an RGB float array."""
    from pytorch_grad_cam.utils.image import show_cam_on_image

    img = image.transpose(1, 2, 0) if image.shape[0] == 3 else image
    return show_cam_on_image(np.clip(img, 0, 1).astype(np.float32), heat, use_rgb=True).astype(np.float32) / 255


# --- non-car prefilter -------------------------------------------------------------------------------

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
        from .data import build_transform
        from .models import imagenet_classifier

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


def attention_records(model: nn.Module, layer: nn.Module, x: torch.Tensor, x_adv: torch.Tensor,
                      clean_cls: Sequence[int], adv_cls: Sequence[int]) -> tuple[list[dict], np.ndarray, np.ndarray]:
    """Grad-CAM of each clean image for its clean top-1 and of its adversarial image for the adversarial top-1,
    and how far the attention moved (:func:`attention_shift`).

    Returns:
        ``(per-image {"pearson", "top_kept"} with None for a flat map, clean maps, adversarial maps)``.
    """
    clean = grad_cam(model, x, clean_cls, layer)
    adv = grad_cam(model, x_adv, adv_cls, layer)
    s = attention_shift(clean, adv)
    stats = [{"pearson": None if math.isnan(p) else round(float(p), 6), "top_kept": round(float(k), 6)}
             for p, k in zip(s["pearson"], s["top_kept"])]
    return stats, clean, adv


# --- the two commands' library functions ---------------------------------------------------------------

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
    from .attacks import get_attack
    from .checkpoint import model_from_checkpoint, read_checkpoint
    from .data import build_transform
    from .metrics import ranks_of
    from .registry import check_attack_classes, fit_to_classes

    ckpt = read_checkpoint(run)
    names = ckpt["class_names"]
    top_k = default_top_k(len(names), top_k)
    if attack:
        params = fit_to_classes(attack, params or {}, len(names))
        check_attack_classes(attack, params, len(names))
    atk = get_attack(attack, **(params or {})) if attack else None
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
        y = torch.tensor([c.classes[0] for c in clean])
        x_adv = atk(model, x, y, [eps]).adv[0]
        adv = predict(model, x_adv, names, top_k)
        with torch.inference_mode():
            ranks = ranks_of(model(x_adv), torch.tensor([c.classes[:3] for c in clean])).tolist()
        for r, a, rk in zip(results, adv, ranks):
            r.adv, r.clean_top3_adv_rank = a, rk
    if cam_dir is not None:
        _photo_figures(model, ckpt["arch"], x, x_adv if atk is not None else None, results, cam_dir,
                       f"{attack} eps = {eps:g}" if atk is not None else "")
    return results, skipped


def _photo_figures(model: nn.Module, arch: str, x: torch.Tensor, x_adv: torch.Tensor | None,
                   results: list[PhotoResult], folder: Path, attack_label: str) -> None:
    """One figure per photo: original, Grad-CAM, (adversarial, its Grad-CAM,) top-k bars."""
    from .figures import cam_panel

    layer = cam_layer(model, arch)
    clean_maps = grad_cam(model, x, [r.clean.classes[0] for r in results], layer)
    adv_maps = stats = None
    if x_adv is not None:
        stats, _, adv_maps = attention_records(model, layer, x, x_adv, [r.clean.classes[0] for r in results],
                                               [r.adv.classes[0] for r in results])
    used: set[str] = set()
    for i, r in enumerate(results):
        img = x[i].numpy()
        row = {"image": img, "cam": overlay(img, clean_maps[i]), "label": None,
               "top": list(zip(r.clean.names, r.clean.probs))}
        if adv_maps is not None:
            a = x_adv[i].numpy()
            row.update(adv=a, adv_cam=overlay(a, adv_maps[i]), adv_top=list(zip(r.adv.names, r.adv.probs)),
                       shift=stats[i])
            r.attention = stats[i]
        stem = Path(r.path).stem
        name = stem if stem not in used else f"{stem}-{i}"
        used.add(name)
        title = f"{Path(r.path).name}" + (f" — {attack_label}" if attack_label else "")
        r.figure = str(cam_panel([row], title, folder / f"{name}.png"))


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

    from .data import CarsDataset, load_cars

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
