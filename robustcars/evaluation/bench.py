"""Throughput benchmarks: robustcars' attacks against the physical floor and peer libraries, training
against the model-only step rate. Everything runs in ONE process on the same model, batch and inputs.

Protocol: build all contenders, warm each up, then ``reps`` rounds in which every contender runs
``batches`` batches, in alternating order (A B C, C B A, ...) so slow drift of the machine cancels; report
the median images/s and the spread (min-max) over rounds. Ratios to the floor and to each peer are PAIRED:
the two contenders' times of the same round are divided (they ran next to each other) and the median of
those per-round ratios is reported, which cancels drift and noisy neighbours far better than a ratio of
medians. The real training epoch runs after the rounds; its ratio to the training step is one of medians.

The floor of an attack is a bare PyTorch loop of exactly the passes it needs: FGSM = one forward + one
input-backward (the clean prediction comes from the same forward) + one forward on the adversarial batch;
PGD-k = k forward+backward passes + one forward. A sweep of m eps needs 1 forward+backward + m forwards.

How close to the hardware: each contender's FLOPs per round are counted once, after the rounds, by
``torch.utils.flop_counter.FlopCounterMode`` (forward and input-backward alike); its achieved GFLOP/s is that
count times its median rounds per second, and its share of the peak divides by the machine's float32 matrix
product rate (``sgemm_peak``: 2n^3 / t of a 2048 x 2048 ``torch.mm``, best of 5, measured before and after the
rounds on the same threads).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from robustcars.attacks import FGSM, PGDL2, PGDLinf
from robustcars.attacks.base import frozen_weights
from robustcars.data.cars import load_cars
from robustcars.data.images import CarsDataset, build_transform
from robustcars.errors import ConfigError
from robustcars.models.zoo import build_model
from robustcars.runtime import library_versions, resolve_device, set_threads
from robustcars.training.loop import make_loader, train_one_epoch


@dataclass
class BenchConfig:
    arch: str = "resnet34"
    img_size: int = 160
    batch_size: int = 32
    batches: int = 2  # batches per timed call
    reps: int = 5
    warmup: int = 1
    eps: float = 0.01
    sweep: list[float] = field(default_factory=lambda: [0.001, 0.002, 0.005, 0.01, 0.02])
    steps: int = 10
    device: str = "cpu"
    threads: int | None = None
    peers: bool = True  # foolbox (and torchattacks if installed)
    train: bool = True
    channels_last: bool = False
    seed: int = 0
    data: str | None = None  # time a real training epoch on this dataset's train split
    epoch_images: int = 256  # images of that epoch (first of each class, round-robin)
    groups: list[str] | None = None  # time only these groups (clean, fgsm, sweep, pgd, pgd_l2, train); None = all
    workers: int = 2


Step = Callable[[torch.Tensor, torch.Tensor], None]


def _floor_fgsm(model: nn.Module, eps_list: list[float]) -> Step:
    def step(x, y):
        xg = x.detach().requires_grad_(True)
        logits = model(xg)
        (g,) = torch.autograd.grad(nn.functional.cross_entropy(logits, y, reduction="sum"), xg)
        with torch.inference_mode():
            for e in eps_list:
                model((x + e * g.sign()).clamp(0, 1))

    return step


def _floor_pgd(model: nn.Module, eps: float, steps: int, norm: str) -> Step:
    alpha = 2.5 * eps / steps

    def step(x, y):
        x_adv = x.clone()
        for _ in range(steps):
            xg = x_adv.detach().requires_grad_(True)
            (g,) = torch.autograd.grad(nn.functional.cross_entropy(model(xg), y, reduction="sum"), xg)
            if norm == "linf":
                x_adv = torch.min(torch.max(x_adv + alpha * g.sign(), x - eps), x + eps).clamp(0, 1)
            else:
                g = g / g.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
                d = x_adv + alpha * g - x
                d = d * (eps / d.flatten(1).norm(dim=1).clamp_min(1e-12)).clamp(max=1).view(-1, 1, 1, 1)
                x_adv = (x + d).clamp(0, 1)
        with torch.inference_mode():
            model(x_adv)

    return step


def _ours(model: nn.Module, attack, eps_list: list[float]) -> Step:
    def step(x, y):
        out = attack(model, x, y, eps_list)
        with torch.inference_mode():
            for a in out.adv:
                model(a)

    return step


def _clean(model: nn.Module) -> Step:
    def step(x, y):
        with torch.inference_mode():
            model(x)

    return step


def _foolbox(model: nn.Module, kind: str, eps_list: list[float], steps: int) -> Step | None:
    try:
        import foolbox as fb
    except ImportError:
        return None
    fmodel = fb.PyTorchModel(model, bounds=(0, 1))
    if kind == "fgsm":
        attack = fb.attacks.FGSM()
    elif kind == "pgd":
        attack = fb.attacks.LinfPGD(steps=steps, abs_stepsize=2.5 * eps_list[0] / steps, random_start=False)
    else:
        attack = fb.attacks.L2PGD(steps=steps, abs_stepsize=2.5 * eps_list[0] / steps, random_start=False)

    def step(x, y):
        # foolbox's call already runs a forward pass on each adversarial batch (to report success)
        attack(fmodel, x, y, epsilons=eps_list)

    return step


def _torchattacks(model: nn.Module, kind: str, eps: float, steps: int) -> Step | None:
    try:
        import torchattacks
    except ImportError:
        return None
    attack = (torchattacks.FGSM(model, eps=eps) if kind == "fgsm"
              else torchattacks.PGD(model, eps=eps, alpha=2.5 * eps / steps, steps=steps, random_start=False))

    def step(x, y):
        adv = attack(x, y)
        with torch.inference_mode():
            model(adv)

    return step


def _train_step(model: nn.Module) -> Step:
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)

    def step(x, y):
        model.train()
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        model.eval()

    return step


def contenders(cfg: BenchConfig, model: nn.Module, train_model: nn.Module | None) -> dict[str, tuple[str, Step]]:
    """name -> (group, step). Groups are compared with their ``floor`` member."""
    e, s = cfg.eps, cfg.steps
    c: dict[str, tuple[str, Step | None]] = {
        "clean eval": ("clean", _clean(model)),
        "floor FGSM": ("fgsm", _floor_fgsm(model, [e])),
        "robustcars FGSM": ("fgsm", _ours(model, FGSM(), [e])),
        "floor FGSM sweep": ("sweep", _floor_fgsm(model, cfg.sweep)),
        "robustcars FGSM sweep": ("sweep", _ours(model, FGSM(), cfg.sweep)),
        f"floor PGD-{s} Linf": ("pgd", _floor_pgd(model, e, s, "linf")),
        f"robustcars PGD-{s} Linf": ("pgd", _ours(model, PGDLinf(steps=s, random_start=False), [e])),
        f"floor PGD-{s} L2": ("pgd_l2", _floor_pgd(model, 0.5, s, "l2")),
        f"robustcars PGD-{s} L2": ("pgd_l2", _ours(model, PGDL2(steps=s, random_start=False), [0.5])),
    }
    if cfg.peers:
        c["foolbox FGSM"] = ("fgsm", _foolbox(model, "fgsm", [e], s))
        c["foolbox FGSM sweep"] = ("sweep", _foolbox(model, "fgsm", cfg.sweep, s))
        c[f"foolbox PGD-{s} Linf"] = ("pgd", _foolbox(model, "pgd", [e], s))
        c[f"foolbox PGD-{s} L2"] = ("pgd_l2", _foolbox(model, "pgd_l2", [0.5], s))
        c["torchattacks FGSM"] = ("fgsm", _torchattacks(model, "fgsm", e, s))
        c[f"torchattacks PGD-{s} Linf"] = ("pgd", _torchattacks(model, "pgd", e, s))
    if train_model is not None:
        c["train step (in-memory tensors)"] = ("train", _train_step(train_model))
    keep = set(cfg.groups) if cfg.groups else None
    return {k: v for k, v in c.items() if v[1] is not None and (keep is None or v[0] in keep)}  # type: ignore[misc]


def _real_epoch(cfg: BenchConfig, model: nn.Module, device: torch.device) -> Callable[[], float]:
    """A training epoch over ``epoch_images`` real images; returns seconds per image."""

    samples = load_cars(cfg.data).split("train")
    per = max(1, cfg.epoch_images // 196 + 1)
    by_class: dict[int, list] = {}
    for smp in samples:
        by_class.setdefault(smp.label, []).append(smp)
    picked = [s for k in sorted(by_class) for s in by_class[k][:per]][: cfg.epoch_images]
    loader = make_loader(CarsDataset(picked, build_transform(cfg.img_size, train=True)), cfg.batch_size, shuffle=True,
                         workers=cfg.workers, device=device, seed=cfg.seed)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def epoch() -> float:
        t0 = time.perf_counter()
        train_one_epoch(model, loader, opt, nn.CrossEntropyLoss(), device)
        model.eval()
        return (time.perf_counter() - t0) / len(picked)

    return epoch


GROUPS = ("clean", "fgsm", "sweep", "pgd", "pgd_l2", "train")


def run_bench(cfg: BenchConfig, progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Measure every contender; returns rows with median/min/max images/s and ratios.

    Raises:
        ConfigError: an unknown group in ``cfg.groups``.
    """
    bad = sorted(set(cfg.groups or []) - set(GROUPS))
    if bad:
        raise ConfigError(f"unknown bench group {', '.join(bad)}; choose from {', '.join(GROUPS)}")
    set_threads(cfg.threads)
    device = resolve_device(cfg.device)
    g = torch.Generator().manual_seed(cfg.seed)
    model = build_model(cfg.arch, 196, "none").eval().to(device)
    train_model = build_model(cfg.arch, 196, "none").to(device) if cfg.train else None
    fmt = torch.channels_last if cfg.channels_last else torch.contiguous_format
    if cfg.channels_last:
        model = model.to(memory_format=fmt)
    xs = [torch.rand(cfg.batch_size, 3, cfg.img_size, cfg.img_size, generator=g).to(device, memory_format=fmt)
          for _ in range(cfg.batches)]
    ys = [torch.randint(0, 196, (cfg.batch_size,), generator=g).to(device) for _ in range(cfg.batches)]
    cs = contenders(cfg, model, train_model)
    names = list(cs)
    call = _caller(cs, model, xs, ys, device)
    peak = sgemm_peak() if device.type == "cpu" else None
    times = _alternating_rounds(cfg, names, call, progress)
    flops = {n: count_flops(lambda n=n: call(n)) for n in names}
    if peak is not None:
        peak = max(peak, sgemm_peak())  # before and after the rounds: the machine's better moment
    images = cfg.batch_size * cfg.batches
    extra: set[str] = set()  # contenders timed outside the alternating rounds
    if cfg.data and train_model is not None and (not cfg.groups or "train" in cfg.groups):
        name = f"train epoch (real data, {cfg.workers} workers)"
        epoch = _real_epoch(cfg, train_model, device)
        epoch()  # warm-up: starts workers, fills the page cache
        times[name] = []
        for r in range(cfg.reps):
            if progress:
                progress(f"round {r + 1}/{cfg.reps}: {name}")
            times[name].append(epoch() * images)  # seconds per `images` images, comparable with the rest
        cs[name] = ("train", None)
        names.append(name)
        extra.add(name)
    rows = _rows(names, cs, times, images, extra)
    _add_flop_rates(rows, flops, images, peak)
    return {"kind": "robustcars-bench", "config": asdict(cfg), "device": str(device),
            "threads": torch.get_num_threads(), "versions": library_versions(), "sgemm_gflop_s": peak,
            "rows": rows, "seconds": {n: times[n] for n in names}}


def _add_flop_rates(rows: list[dict[str, Any]], flops: dict[str, int], images: int, peak: float | None) -> None:
    """Per row: ``gflop_per_image`` (FlopCounterMode's count of one round / its images), ``gflop_s`` (that times the
    median images/s) and ``peak_share`` (``gflop_s`` / the sgemm peak); None where not counted."""
    for r in rows:
        f = flops.get(r["name"])
        r["gflop_per_image"] = f / images / 1e9 if f else None
        r["gflop_s"] = r["gflop_per_image"] * r["median_img_s"] if f else None
        r["peak_share"] = r["gflop_s"] / peak if f and peak else None


def _caller(cs: dict, model: nn.Module, xs: list[torch.Tensor], ys: list[torch.Tensor], device: torch.device
            ) -> Callable[[str], float]:
    """``call(name)`` runs contender ``name`` once over all batches and returns its seconds."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def call(name: str) -> float:
        step = cs[name][1]
        sync()
        t0 = time.perf_counter()
        for x, y in zip(xs, ys):
            if cs[name][0] == "train":
                step(x, y)
            else:
                with frozen_weights(model) if name.startswith("floor") else _null():
                    step(x, y)
        sync()
        return time.perf_counter() - t0

    return call


def _alternating_rounds(cfg: BenchConfig, names: list[str], call: Callable[[str], float],
                        progress: Callable[[str], None] | None) -> dict[str, list[float]]:
    """Seconds per round of each contender over all batches: warm-up calls first, then ``cfg.reps`` rounds that
    alternate the order (forward, then reversed), so drift of the machine falls on every contender alike."""
    times: dict[str, list[float]] = {n: [] for n in names}
    for n in names:
        for _ in range(cfg.warmup):
            call(n)
    for r in range(cfg.reps):
        for n in names if r % 2 == 0 else names[::-1]:
            if progress:
                progress(f"round {r + 1}/{cfg.reps}: {n}")
            times[n].append(call(n))
    return times


class _GlobalOnly:
    """Stands in for FlopCounterMode's module tracker, whose backward hooks make ``torch.autograd.grad`` on a leaf
    input fail (RuntimeError "A leaf node was passed to _will_engine_execute_node", torch 2.14) — the way every
    attack here takes its input gradient. The bench needs only the global total, which the tracker's 'Global'
    parent receives."""

    parents = ("Global",)

    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False


def count_flops(call: Callable[[], Any]) -> int:
    """FLOPs of one ``call()`` as :class:`torch.utils.flop_counter.FlopCounterMode` counts them (its shape
    formulas: 2 per multiply-add of convolutions and matrix products, forward and every backward pass run inside,
    the input-backward of an attack included; element-wise operations count 0)."""
    counter = FlopCounterMode(display=False)
    counter.mod_tracker = _GlobalOnly()  # type: ignore[assignment]
    with counter:
        call()
    return counter.get_total_flops()


def sgemm_peak(n: int = 2048, reps: int = 5) -> float:
    """The machine's float32 matrix-product rate in GFLOP/s: ``2 n^3`` FLOPs of ``torch.mm`` on two ``n x n``
    matrices over the best of ``reps`` timed products (after one warm-up), on the threads currently set."""
    g = torch.Generator().manual_seed(0)
    a, b = torch.rand(n, n, generator=g), torch.rand(n, n, generator=g)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best / 1e9


def _rows(names: list[str], cs: dict, times: dict[str, list[float]], images: int, extra: set[str]
          ) -> list[dict[str, Any]]:
    """Median/min/max images/s per contender and its paired ratios to its floor, its peers and the train step."""
    rows = []
    for n in names:
        rates = [images / t for t in times[n]]
        rows.append({"name": n, "group": cs[n][0], "median_img_s": statistics.median(rates), "min_img_s": min(rates),
                     "max_img_s": max(rates)})
    by_name = {r["name"]: r for r in rows}

    def paired(a: str, b: str) -> float:
        """Median over rounds of (images/s of a) / (images/s of b) = t_b / t_a, same round."""
        if a not in extra and b not in extra:  # both timed in the same alternating rounds
            return statistics.median(tb / ta for ta, tb in zip(times[a], times[b]))
        return by_name[a]["median_img_s"] / by_name[b]["median_img_s"]

    for r in rows:
        floor = next((x for x in rows if x["group"] == r["group"] and x["name"].startswith("floor")), None)
        r["vs_floor"] = paired(r["name"], floor["name"]) if floor else None
        if r["name"].startswith("robustcars"):
            for peer in ("foolbox", "torchattacks"):
                other = r["name"].replace("robustcars", peer)
                if other in by_name:
                    r[f"vs_{peer}"] = paired(r["name"], other)
    step = next((x for x in rows if x["name"].startswith("train step")), None)
    for r in rows:
        if r["name"].startswith("train epoch") and step:
            r["vs_train_step"] = r["median_img_s"] / step["median_img_s"]
    return rows


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False
