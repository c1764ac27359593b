"""Adversarial examples kept as artefacts (``attack --save-adv``): float tensors in shards, a manifest, 8-bit PNGs.

Layout, inside an attack folder::

    adv/batch-000000.safetensors   one shard per attacked batch: index (B,) int64, label (B,) int64,
                                   clean (B, 3, H, W) float32 and adv (E, B, 3, H, W) float32 in [0, 1]
    adv/manifest.csv               one row per image and eps: index, path, label, eps, clean_pred, adv_pred,
                                   adv_pred_8bit, shard, position (written when the attack finishes)
    adv/png/clean/000000.png       --save-png: the clean and the adversarial images as 8-bit RGB PNGs (the
    adv/png/eps-0.01/000000.png    image rounded to the 8-bit grid, :func:`robustcars.attacks.to_8bit_grid`)

The tensors are the very ones the records scored (the run's resize included), so they reload bit-identically
(:func:`load_saved`) and re-score to the records' predictions. A shard is written atomically *before* its batch's
records, so every recorded image has its shard; on a resume :func:`repair` keeps of a half-recorded shard only
the recorded images and drops shards with none. Cost: 4·3·H·W bytes per image and per (1 + number of eps) —
0.31 MB at 160 px, so 1,000 images × (clean + 3 eps) take 1.2 GB (``--help`` says so).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from robustcars import storage as rio
from robustcars.errors import DataError

ADV_DIR = "adv"
MANIFEST = "manifest.csv"


def shard_path(out: Path, first: int) -> Path:
    return out / ADV_DIR / f"batch-{first:06d}.safetensors"


def _encode(tensors: dict[str, torch.Tensor], eps: list[float]) -> bytes:
    from safetensors.torch import save

    return save({k: v.detach().to("cpu", copy=True).contiguous() for k, v in tensors.items()},
                metadata={"eps": json.dumps(eps)})


def save_batch(out: Path, index: list[int], y: torch.Tensor, x: torch.Tensor, adv: list[torch.Tensor],
               eps: list[float], *, png: bool = False) -> Path:
    """Write one batch's shard atomically (and its PNGs with ``png``); returns the shard's path.

    Args:
        index: the images' indices in the attack's image order, ``len == B``.
        y: labels ``(B,)``; x: clean images float32 ``(B, 3, H, W)`` in [0, 1]; adv: one ``(B, 3, H, W)`` per eps.
    Raises:
        StorageError: the shard or a PNG cannot be written.
    """
    tensors = {"index": torch.tensor(index, dtype=torch.int64), "label": y.to(torch.int64), "clean": x.float(),
               "adv": torch.stack([a.float() for a in adv])}
    path = rio.write_bytes(shard_path(out, index[0]), _encode(tensors, eps))
    if png:
        _save_pngs(out / ADV_DIR / "png", index, x, adv, eps)
    return path


def _png_bytes(image: torch.Tensor) -> bytes:
    import io

    from PIL import Image

    arr = torch.round(image.detach().clamp(0, 1) * 255).to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    buf = io.BytesIO()
    Image.fromarray(arr, "RGB").save(buf, format="PNG")
    return buf.getvalue()


def png_folder(eps: float | None) -> str:
    """``clean`` or ``eps-<eps>`` (the eps as written in the records)."""
    return "clean" if eps is None else f"eps-{eps!r}"


def _save_pngs(root: Path, index: list[int], x: torch.Tensor, adv: list[torch.Tensor], eps: list[float]) -> None:
    for b, i in enumerate(index):
        rio.write_bytes(root / png_folder(None) / f"{i:06d}.png", _png_bytes(x[b]))
        for e, a in zip(eps, adv):
            rio.write_bytes(root / png_folder(e) / f"{i:06d}.png", _png_bytes(a[b]))


def _shard_indices(path: Path) -> list[int]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return f.get_tensor("index").tolist()


def repair(out: Path, done: set[int]) -> None:
    """Before a resume: a shard whose batch was only partly recorded (a torn last line) keeps its recorded
    images only; a shard with no recorded image is removed (it is written again)."""
    from safetensors.torch import load_file

    for path in sorted((out / ADV_DIR).glob("batch-*.safetensors")):
        index = _shard_indices(path)
        keep = [j for j, i in enumerate(index) if i in done]
        if len(keep) == len(index):
            continue
        if not keep:
            path.unlink()
            continue
        t = load_file(str(path))
        k = torch.tensor(keep)
        part = {"index": t["index"][k], "label": t["label"][k], "clean": t["clean"][k], "adv": t["adv"][:, k]}
        rio.write_bytes(path, _encode(part, _eps_of(path)))  # the recorded images are the batch's first ones


def _eps_of(path: Path) -> list[float]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return json.loads(f.metadata()["eps"])


def write_manifest(out: Path, records: list[dict[str, Any]]) -> Path:
    """``adv/manifest.csv`` from the records and the shards (one row per image and eps).

    Raises:
        DataError: an image of the records has no shard (the folder was edited by hand).
    """
    where: dict[int, tuple[str, int]] = {}
    for path in sorted((out / ADV_DIR).glob("batch-*.safetensors")):
        where.update({i: (path.name, j) for j, i in enumerate(_shard_indices(path))})
    missing = [r["index"] for r in records if r["index"] not in where]
    if missing:
        raise DataError(f"{out / ADV_DIR} has no saved example of image {missing[0]} ({len(missing)} missing)")
    rows = [{"index": r["index"], "path": r["path"], "label": r["label"], "eps": a["eps"],
             "clean_pred": r["clean_pred"], "adv_pred": a["pred"], "adv_pred_8bit": a.get("pred_8bit"),
             "shard": where[r["index"]][0], "position": where[r["index"]][1]} for r in records for a in r["adv"]]
    return rio.write_csv(out / ADV_DIR / MANIFEST, rows)


@dataclass(frozen=True)
class SavedExamples:
    """An attack folder's saved examples, in image-index order.

    ``index``, ``label``: int64 ``(N,)``; ``clean``: float32 ``(N, 3, H, W)``; ``adv``: float32 ``(E, N, 3, H, W)``,
    all in [0, 1]; ``eps``: the E budgets; ``paths``: each image's id (its path relative to the data root).
    """

    index: torch.Tensor
    label: torch.Tensor
    clean: torch.Tensor
    adv: torch.Tensor
    eps: list[float]
    paths: list[str]


def load_saved(folder: str | Path) -> SavedExamples:
    """The saved examples of a finished ``attack --save-adv`` folder.

    Raises:
        DataError: no ``adv/manifest.csv`` (attacked without ``--save-adv``, or not finished) or a shard missing.
    """
    import csv

    from safetensors.torch import load_file

    folder = Path(folder)
    manifest = folder / ADV_DIR / MANIFEST
    if not manifest.is_file():
        raise DataError(f"{folder} holds no saved adversarial examples ({ADV_DIR}/{MANIFEST}); attack with "
                        "--save-adv and let it finish")
    with open(manifest, newline="") as fh:
        rows = list(csv.DictReader(fh))
    shards: dict[str, dict[str, torch.Tensor]] = {}
    for name in sorted({r["shard"] for r in rows}):
        path = folder / ADV_DIR / name
        if not path.is_file():
            raise DataError(f"{path} is missing: the saved examples are incomplete")
        shards[name] = load_file(str(path))
    eps = sorted({float(r["eps"]) for r in rows})
    first = {int(r["index"]): r for r in rows}
    order = sorted(first)
    pick = [(first[i]["shard"], int(first[i]["position"])) for i in order]
    cat = {k: [shards[s][k][p] if k != "adv" else shards[s][k][:, p] for s, p in pick]
           for k in ("index", "label", "clean", "adv")}
    return SavedExamples(torch.stack(cat["index"]), torch.stack(cat["label"]), torch.stack(cat["clean"]),
                         torch.stack(cat["adv"], dim=1), eps, [first[i]["path"] for i in order])


__all__ = ["ADV_DIR", "MANIFEST", "SavedExamples", "load_saved", "repair", "save_batch", "write_manifest"]
