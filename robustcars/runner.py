"""Attack a whole split of a trained run: per-image records, the summary and the figures.

Writes into ``OUT``::

    attack.json     config, clean and per-eps summary, sanity checks, versions
    attack.csv      the summary table (one row for clean, one per attack/eps)
    records.jsonl   one JSON object per image, appended batch by batch (resumable)
    figures/        entropy_hist.png, panel_<attack>_eps<eps>.png

Per-image record: ``index, path, label, clean_pred, clean_top3, clean_top3_prob, clean_entropy`` and
``adv``: for each eps ``{eps, pred, top3, top3_prob, entropy, clean_top3_rank, linf, l2}``, where
``clean_top3_rank[j]`` is the 1-based adversarial rank of the clean rank-(j+1) class.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from . import io as rio
from .attacks import check_eps, get_attack, perturbation_norms
from .checkpoint import model_from_checkpoint, read_checkpoint
from .data import CarsDataset, build_transform, load_cars, subsample
from .errors import ConfigError, DataError
from .metrics import (accuracy, attack_success_rate, entropy, macro_f1, mean_std, min_norm_summary, rank_shift_summary,
                      ranks_of)
from .runtime import library_versions, resolve_device

TOPK = 3
SCHEMA_VERSION = 1


@dataclass
class AttackConfig:
    run: str
    out: str
    eps: list[float] = field(default_factory=lambda: [0.01])
    attack: str = "fgsm"
    params: dict[str, Any] = field(default_factory=dict)  # attack parameters (steps, alpha, restarts, target, ...)
    split: str = "test"
    batch_size: int = 32
    device: str = "auto"
    data: str | None = None  # overrides the data root saved in the run
    max_images: int | None = None  # a seeded random subset of the split
    examples: int = 4  # images shown in the panel figures
    seed: int = 0
    workers: int = 2

    def validate(self) -> AttackConfig:
        self.eps = sorted(set(check_eps(self.eps)))
        if self.batch_size < 1:
            raise ConfigError(f"--batch-size must be >= 1, got {self.batch_size}")
        if self.max_images is not None and self.max_images < 1:
            raise ConfigError(f"--max-images must be >= 1, got {self.max_images}")
        if self.examples < 0:
            raise ConfigError(f"--examples must be >= 0, got {self.examples}")
        get_attack(self.attack, **self.params)  # unknown names and bad parameters fail before any work
        return self

    def fingerprint(self) -> str:
        """Hash of everything that changes the records (not the output folder or device)."""
        keys = {k: v for k, v in asdict(self).items() if k not in ("out", "device", "workers", "examples")}
        return hashlib.sha256(json.dumps(keys, sort_keys=True).encode()).hexdigest()[:16]


class AttackReporter:
    def start(self, info: dict[str, Any]) -> None: ...
    def progress(self, total: int, done: int) -> Callable[[int], None]: return lambda n: None
    def end(self) -> None: ...


def _top(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    p = torch.softmax(logits.float(), dim=1)
    prob, idx = p.topk(TOPK, dim=1)
    return idx, prob


def _read_records(path: Path) -> list[dict[str, Any]]:
    """Complete lines of a records file (a line cut by a crash is dropped)."""
    records = []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            if not line.endswith("\n"):
                break
            records.append(json.loads(line))
    return records


def run_attack(cfg: AttackConfig, *, resume: bool = False, reporter: AttackReporter | None = None,
               command: str = "") -> dict[str, Any]:
    """Attack every image of ``cfg.split`` and write the files listed in the module docstring.

    Returns the ``attack.json`` content. Raises ConfigError, DataError, CheckpointError, StorageError.
    """
    rep = reporter or AttackReporter()
    cfg.validate()
    out = Path(cfg.out)
    ckpt = read_checkpoint(cfg.run)
    tcfg = ckpt["config"]
    root = cfg.data or tcfg["data"]
    data = load_cars(root, seed=tcfg.get("seed", 0), val_fraction=tcfg.get("val_fraction", 1 / 3),
                     crop_to_bbox=tcfg.get("crop_to_bbox", True))
    if len(data.classes) != ckpt["num_classes"]:
        raise DataError(f"the run was trained on {ckpt['num_classes']} classes but {root} has {len(data.classes)}")
    if list(data.classes) != list(ckpt["class_names"]):
        raise DataError(f"class names in {root} differ from the run's (another dataset or class order)")
    samples = data.split(cfg.split)
    if cfg.max_images:
        samples = subsample(samples, cfg.max_images, cfg.seed)
    from . import distributed as D

    d, device = D.init(resolve_device(cfg.device))
    model = model_from_checkpoint(ckpt).to(device)  # eval mode; the runner owns this model
    attack = get_attack(cfg.attack, **cfg.params)

    records_path = out / "records.jsonl"
    state_path = out / "attack_state.json"
    # One process appends to records.jsonl; under torchrun each rank appends to its own shard file and
    # rank 0 merges them (by image index) at the end.
    my_path = records_path if not d.enabled else out / f"records.rank{d.rank}.jsonl"
    existing = D.broadcast(records_path.exists() or any(out.glob("records.rank*.jsonl")), d)
    if existing and not resume:
        raise ConfigError(f"{out} already holds attack records; pass --resume to continue or choose another --out")
    if existing:
        state = rio.read_json(state_path) if state_path.is_file() else {}
        if state.get("fingerprint") != cfg.fingerprint():
            raise ConfigError(f"{out} holds records of a different attack configuration; use another --out")
    D.barrier(d)
    done_idx: set[int] = set()
    for path in [records_path, *sorted(out.glob("records.rank*.jsonl"))] if existing else []:
        if path.is_file():
            done_idx |= {r["index"] for r in _read_records(path)}
    if my_path.is_file():  # drop a torn last line of the file this process appends to
        kept = _read_records(my_path)
        with open(my_path, "r+", encoding="utf-8") as fh:
            fh.truncate(sum(len(json.dumps(r)) + 1 for r in kept))
    D.barrier(d)
    if d.is_main:
        out.mkdir(parents=True, exist_ok=True)
        rio.write_json(state_path, {"fingerprint": cfg.fingerprint(), "config": asdict(cfg), "total": len(samples)})
    D.barrier(d)
    my_path.touch()

    rng = np.random.default_rng(cfg.seed)
    example_idx = set(rng.choice(len(samples), size=min(cfg.examples, len(samples)), replace=False).tolist())
    examples: list[dict[str, Any]] = []

    mine = D.shard(len(samples), d, block=cfg.batch_size)
    todo_idx = [i for i in mine if i not in done_idx]
    todo = [samples[i] for i in todo_idx]
    tf = build_transform(ckpt["img_size"], train=False, resize=ckpt.get("resize", "crop"))
    loader = DataLoader(CarsDataset(todo, tf), batch_size=cfg.batch_size, shuffle=False,
                        num_workers=cfg.workers, pin_memory=device.type == "cuda")
    rep.start({"arch": ckpt["arch"], "attack": cfg.attack, "eps": cfg.eps, "norm": attack.norm, "split": cfg.split,
               "images": len(samples),
               "resumed": len(done_idx), "device": str(device), "img_size": ckpt["img_size"], "world": d.world})
    t0 = time.perf_counter()
    advance = rep.progress(len(mine), len(mine) - len(todo))
    position = 0
    grad_zero: int | None = None  # known only for attacks that report it (FGSM)
    pass_total = 0.0  # forward+backward passes summed over the images attacked by this process
    with open(my_path, "a", encoding="utf-8") as fh:
        for x, y in loader:
            x, y = x.to(device), y.to(device)
            res = attack(model, x, y, cfg.eps)
            pass_total += res.passes * len(y)
            with torch.inference_mode():
                clean_logits = res.clean_logits if res.clean_logits is not None else model(x)
                c_idx, c_prob = _top(clean_logits)
                c_ent = entropy(clean_logits)
                per_eps = []
                for x_adv in res.adv:
                    a_logits = model(x_adv)
                    a_idx, a_prob = _top(a_logits)
                    linf, l2 = perturbation_norms(x, x_adv)
                    per_eps.append((a_logits.argmax(1), a_idx, a_prob, entropy(a_logits), ranks_of(a_logits, c_idx),
                                    linf, l2))
            if res.grad_zero is not None:
                grad_zero = (grad_zero or 0) + int(res.grad_zero.sum())
            targets_l = res.targets.tolist() if res.targets is not None else None
            min_norms_l = res.min_norms.tolist() if res.min_norms is not None else None
            # one host transfer per batch, then plain Python for the records
            c_idx_l, c_prob_l, c_ent_l = c_idx.tolist(), c_prob.tolist(), c_ent.tolist()
            per_eps_l = [[t.tolist() for t in item] for item in per_eps]
            y_l = y.tolist()
            lines = []
            for i in range(len(y_l)):
                index = todo_idx[position]
                s = samples[index]
                rec = {"index": index, "path": os.path.relpath(s.path, data.root), "label": y_l[i],
                       "clean_pred": c_idx_l[i][0], "clean_top3": c_idx_l[i], "clean_top3_prob": _r(c_prob_l[i]),
                       "clean_entropy": round(c_ent_l[i], 6), "adv": []}
                if targets_l is not None:
                    rec["target"] = targets_l[i]
                if min_norms_l is not None:
                    rec["min_norm"] = None if min_norms_l[i] == float("inf") else round(min_norms_l[i], 7)
                for e, (pred, a_idx, a_prob, a_ent, rk, linf, l2) in zip(cfg.eps, per_eps_l):
                    rec["adv"].append({"eps": e, "pred": pred[i], "top3": a_idx[i], "top3_prob": _r(a_prob[i]),
                                       "entropy": round(a_ent[i], 6), "clean_top3_rank": rk[i],
                                       "linf": round(linf[i], 7), "l2": round(l2[i], 6)})
                lines.append(json.dumps(rec))
                if index in example_idx:
                    examples.append({"index": index, "label": y_l[i], "image": x[i].cpu(),
                                     "adv": [a[i].cpu() for a in res.adv], "record": rec})
                position += 1
            fh.write("\n".join(lines) + "\n")
            fh.flush()
            advance(len(y_l))
    rep.end()
    seconds = time.perf_counter() - t0

    # gather what rank 0 needs; every image was attacked by exactly one rank
    pass_total = sum(D.gather(pass_total, d))
    zeros = D.gather(grad_zero, d)
    grad_zero = None if all(z is None for z in zeros) else sum(z or 0 for z in zeros)
    examples = [ex for part in D.gather(examples, d) for ex in part]
    attacked = sum(D.gather(len(todo), d))
    seconds = max(D.gather(seconds, d))
    D.barrier(d)
    if not d.is_main:
        return {}
    if d.enabled:  # merge: records.jsonl (earlier runs) + every shard file, by image index
        merged: dict[int, dict[str, Any]] = {}
        for path in [records_path, *sorted(out.glob("records.rank*.jsonl"))]:
            if path.is_file():
                merged.update({r["index"]: r for r in _read_records(path)})
        rio.write_text(records_path, "".join(json.dumps(merged[i]) + "\n" for i in sorted(merged)))
        for path in out.glob("records.rank*.jsonl"):
            path.unlink()
    records = _read_records(records_path)
    if len(records) != len(samples) or [r["index"] for r in records] != list(range(len(samples))):
        raise DataError(f"{records_path} holds {len(records)} records for {len(samples)} images; rerun with --resume")
    summary = summarize(records, cfg.eps, attack.name, attack.norm, num_classes=ckpt["num_classes"])
    summary["checks"] = sanity_checks(summary["rows"], records, cfg.eps, grad_zero, attacked, attack.norm)
    result = {
        "schema_version": SCHEMA_VERSION,
        "kind": "robustcars-attack",
        "command": command,
        "config": asdict(cfg),
        "run": {"checkpoint": ckpt["path"], "arch": ckpt["arch"], "weights_origin": ckpt["weights_origin"],
                "img_size": ckpt["img_size"], "resize": ckpt.get("resize", "crop"), "mean": ckpt["mean"],
                "std": ckpt["std"], "epoch": ckpt["epoch"], "train_config": tcfg},
        "data": {"root": str(data.root), "layout": data.layout, "split": cfg.split, "images": len(samples),
                 "classes": len(data.classes)},
        "threat_model": {"norm": attack.norm, "eps": cfg.eps, "pixel_scale": "[0, 1]",
                         "targeted": getattr(attack, "targeted", False), "params": cfg.params},
        # cost of THIS invocation: images attacked by an earlier, interrupted one are `resumed_images`
        "cost": {"seconds": round(seconds, 2), "images_per_second": round(attacked / seconds, 2) if seconds and attacked else None,
                 "forward_backward_passes_per_image": round(pass_total / attacked, 3) if attacked and pass_total else None, "resumed_images": len(samples) - attacked,
                 "processes": d.world},
        "device": str(device),
        "versions": library_versions(),
        **summary,
    }
    rio.write_json(out / "attack.json", result)
    rio.write_csv(out / "attack.csv", summary["rows"])
    figs = make_figures(records, examples, cfg, attack.name, ckpt["class_names"], out / "figures", attack.norm,
                        summary.get("min_norms"))
    figs += extreme_panels(records, samples, cfg, attack, model, tf, device, ckpt["class_names"], out / "figures")
    result["figures"] = [os.path.relpath(p, out) for p in figs]  # relative to the attack folder
    rio.write_json(out / "attack.json", result)
    return result


def _r(values: list[float]) -> list[float]:
    return [round(v, 6) for v in values]


def summarize(records: list[dict[str, Any]], eps: list[float], attack: str, norm: str, *, num_classes: int
              ) -> dict[str, Any]:
    """Clean and per-eps metrics from per-image records (pure; see :mod:`robustcars.metrics`)."""
    y = np.array([r["label"] for r in records])
    clean_pred = np.array([r["clean_pred"] for r in records])
    clean_ent = np.array([r["clean_entropy"] for r in records])
    m, s = mean_std(clean_ent)
    clean = {"attack": "clean", "norm": "", "eps": 0.0, "images": len(y), "accuracy": accuracy(y, clean_pred),
             "macro_f1": macro_f1(y, clean_pred), "entropy_mean": m, "entropy_std": s}
    rows = [clean]
    for j, e in enumerate(eps):
        adv = [r["adv"][j] for r in records]
        pred = np.array([a["pred"] for a in adv])
        ent = np.array([a["entropy"] for a in adv])
        ranks = np.array([a["clean_top3_rank"] for a in adv])
        m, s = mean_std(ent)
        rows.append({
            "attack": attack, "norm": norm, "eps": e, "images": len(y),
            "accuracy": accuracy(y, pred), "macro_f1": macro_f1(y, pred), "entropy_mean": m, "entropy_std": s,
            "success_rate": attack_success_rate(y, clean_pred, pred),
            **rank_shift_summary(ranks, top=TOPK),
            "linf_max": float(max(a["linf"] for a in adv)), "l2_mean": float(np.mean([a["l2"] for a in adv])),
            "l2_max": float(max(a["l2"] for a in adv)),
        })
        if "min_norm" in records[0]:
            found = [r["min_norm"] for r in records if r["min_norm"] is not None]
            rows[-1]["min_norm_median"] = float(np.median(found)) if found else math.nan
            rows[-1]["min_norm_found"] = len(found) / len(records)
        if "target" in records[0]:
            rows[-1]["target_hit_rate"] = float(np.mean([a["pred"] == r["target"] for a, r in zip(adv, records)]))
    out = {"clean": clean, "rows": rows, "max_entropy_nats": math.log(num_classes)}
    if records and "min_norm" in records[0]:
        found = np.array([math.inf if r["min_norm"] is None else r["min_norm"] for r in records])
        out["min_norms"] = {"norm": norm, **min_norm_summary(found, clean_pred == y)}
    return out


def sanity_checks(rows: list[dict[str, Any]], records: list[dict[str, Any]], eps: list[float], grad_zero: int | None,
                  attacked: int, norm: str = "linf") -> list[dict[str, Any]]:
    """Flags that make a result suspicious, each with what a failure suggests (AutoAttack ``checks.py``)."""
    checks = []
    accs = [r["accuracy"] for r in rows[1:]]
    checks.append({"name": "accuracy_non_increasing_in_eps", "ok": all(b <= a + 1e-12 for a, b in zip(accs, accs[1:])),
                   "explain": "robust accuracy rose with a larger budget: a weak attack or gradient masking"})
    checks.append({"name": "robust_not_above_clean", "ok": all(a <= rows[0]["accuracy"] + 0.01 for a in accs),
                   "explain": "an attack raised accuracy by more than 1 point: likely a bug in the attack"})
    key = "linf" if norm == "linf" else "l2"
    inside = all(a[key] <= e * (1 + 1e-5) + 1e-6 for r in records for a, e in zip(r["adv"], eps))
    checks.append({"name": "inside_eps_ball", "ok": inside,
                   "explain": f"an adversarial image is outside the {norm} eps ball: the projection failed"})
    if attacked and grad_zero is not None:
        share = grad_zero / attacked
        checks.append({"name": "zero_gradient_share", "ok": share < 0.01, "value": share,
                       "explain": "share of images with an all-zero input gradient; above 1% suggests saturated "
                                  "softmax or gradient masking (FGSM cannot move those images)"})
    return checks


def extreme_panels(records, samples, cfg: AttackConfig, attack, model, tf, device, class_names, folder: Path,
                   k: int = 2) -> list[Path]:
    """Panel of the ``k`` most and ``k`` least affected images at the largest eps: those few images are
    loaded and attacked again (the attacks are deterministic for a fixed seed) to draw them."""
    from .aggregate import extreme_images
    from .figures import attack_panel

    j = len(cfg.eps) - 1
    most, least = extreme_images(records, j, k)
    chosen = most + least
    if not chosen or cfg.examples == 0:
        return []
    ds = CarsDataset([samples[i] for i in chosen], tf)
    x = torch.stack([ds[i][0] for i in range(len(chosen))]).to(device)
    y = torch.tensor([records[i]["label"] for i in chosen], device=device)
    adv = attack(model, x, y, [cfg.eps[j]]).adv[0].cpu()
    panel = []
    for n, i in enumerate(chosen):
        rec, a = records[i], records[i]["adv"][j]
        panel.append({"image": x[n].cpu().numpy(), "adv": adv[n].numpy(), "label": rec["label"],
                      "clean_top": list(zip(rec["clean_top3"], rec["clean_top3_prob"])),
                      "adv_top": list(zip(a["top3"], a["top3_prob"])), "ranks": a["clean_top3_rank"]})
    title = (f"{attack.name.upper()} eps = {cfg.eps[j]:g}: the {len(most)} most affected (top rows) and "
             f"{len(least)} least affected test images")
    return [attack_panel(panel, class_names, title, folder / f"panel_{attack.name}_extremes_eps{cfg.eps[j]:g}.png")]


def make_figures(records: list[dict[str, Any]], examples: list[dict[str, Any]], cfg: AttackConfig, attack: str,
                 class_names: list[str], folder: Path, norm: str = "linf",
                 min_norms: dict[str, Any] | None = None) -> list[str]:
    from .figures import attack_panel, entropy_histograms, robustness_curves

    paths = []
    if min_norms:  # robust accuracy at every eps, from the per-image minimal norms (see summarize)
        unit = "L∞" if norm == "linf" else "L2"
        paths.append(robustness_curves({f"{attack} (from minimal {unit} norms)": [tuple(p) for p in min_norms["curve"]]},
                                       folder / "min_norm_curve.png",
                                       f"{attack}: robust accuracy vs {unit} eps, {len(records)} images"))
    clean = np.array([r["clean_entropy"] for r in records])
    adv = {f"{attack} eps={e:g}": np.array([r["adv"][j]["entropy"] for r in records]) for j, e in enumerate(cfg.eps)}
    paths.append(entropy_histograms(clean, adv, math.log(len(class_names)), folder / "entropy_hist.png"))
    if examples:
        examples.sort(key=lambda ex: ex["index"])
        for j, e in enumerate(cfg.eps):
            panel = []
            for ex in examples:
                rec = ex["record"]
                a = rec["adv"][j]
                panel.append({"image": ex["image"].numpy(), "adv": ex["adv"][j].numpy(), "label": ex["label"],
                              "clean_top": list(zip(rec["clean_top3"], rec["clean_top3_prob"])),
                              "adv_top": list(zip(a["top3"], a["top3_prob"])), "ranks": a["clean_top3_rank"]})
            paths.append(attack_panel(panel, class_names, f"{attack.upper()} eps = {e:g} ({norm}, pixel scale)",
                                      folder / f"panel_{attack}_eps{e:g}.png"))
    return [str(p) for p in paths]
