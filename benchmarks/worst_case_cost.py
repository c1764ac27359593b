"""The worst case three ways on the same images, in one process, alternating: AutoAttack's standard version once
per eps (``reuse_eps = false``), the full cascade of its attacks (``attacks/cascade-vs-autoattack.toml``) and the
fast worst case (``attacks/fast-worst-case.toml``).

Per contender: forward+backward passes and forward-only queries per image, by attack; attack seconds per image;
robust accuracy per eps; and, per eps, the share of images whose verdict (robust or not) agrees with
AutoAttack's. The order of the contenders rotates from batch to batch so load drift on a shared machine falls on
each alike. Images are the seeded subset ``robustcars attack --max-images N`` takes (same seed, same split).

    python benchmarks/worst_case_cost.py --run RUN --max-images 16 --threads 2 --out worst-case-cost.json

Needs ``pip install 'robustcars[autoattack]'``. Prints a table and writes a JSON file (atomically).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from robustcars import storage as rio
from robustcars.attacks import get_attack
from robustcars.config import AttackConfig
from robustcars.evaluation.runner import prepare
from robustcars.evaluation.suite import load_suite
from robustcars.runtime import library_versions, set_threads

ATTACKS = Path(__file__).resolve().parents[1] / "attacks"


def contenders(eps: list[float]) -> dict[str, object]:
    """Name -> attack object: AutoAttack once per eps, the full cascade, the fast worst case (as shipped)."""
    full = next(e for e in load_suite(ATTACKS / "cascade-vs-autoattack.toml").entries if e.label == "cascade")
    fast = load_suite(ATTACKS / "fast-worst-case.toml").entries[0]
    if fast.eps != eps:
        print(f"note: the fast suite lists eps {fast.eps}; running it at {eps}", file=sys.stderr)
    return {"autoattack": get_attack("autoattack", reuse_eps=False),
            "cascade": get_attack(full.attack, **full.params),
            "fast": get_attack(fast.attack, **fast.params)}


def measure(model, loader, attacks: dict[str, object], eps: list[float]) -> dict[str, dict]:
    """Run every contender on every batch (order rotated per batch); sums of passes, queries, seconds, and
    the per-image robust verdicts (bool ``(N,)`` per eps)."""
    names = list(attacks)
    acc = {n: {"passes": 0.0, "by": {}, "queries": {}, "seconds": 0.0, "robust": [[] for _ in eps]} for n in names}
    for b, (x, y) in enumerate(loader):
        order = names[b % len(names):] + names[:b % len(names)]
        for name in order:
            t0 = time.perf_counter()
            out = attacks[name](model, x, y, eps)
            a = acc[name]
            a["seconds"] += time.perf_counter() - t0
            a["passes"] += out.passes * len(y)
            for key, counts in (("by", out.passes_by), ("queries", out.queries_by)):
                for k, v in (counts or {}).items():
                    a[key][k] = a[key].get(k, 0) + v
            with torch.inference_mode():
                for j, adv in enumerate(out.adv):
                    a["robust"][j] += (model(adv).argmax(1) == y).tolist()
        spent = ", ".join(f"{n} {acc[n]['seconds']:.0f} s" for n in names)
        print(f"batch {b + 1}/{len(loader)} done ({spent})", file=sys.stderr, flush=True)
    return acc


def summarize(acc: dict[str, dict], eps: list[float], n: int) -> dict[str, dict]:
    ref = acc["autoattack"]["robust"]
    result = {}
    for name, a in acc.items():
        result[name] = {
            "forward_backward_passes_per_image": round(a["passes"] / n, 3),
            "passes_per_image_by_attack": {k: round(v / n, 3) for k, v in a["by"].items()},
            "queries_per_image_by_attack": {k: round(v / n, 3) for k, v in a["queries"].items()},
            "attack_seconds_per_image": round(a["seconds"] / n, 3),
            "robust_accuracy": [round(sum(r) / n, 4) for r in a["robust"]],
            "verdict_agreement_with_autoattack": [round(sum(p == q for p, q in zip(r, s, strict=True)) / n, 4)
                                                  for r, s in zip(a["robust"], ref, strict=True)],
            "robust_images": [sum(r) for r in a["robust"]],
        }
    aa = result["autoattack"]
    for r in result.values():
        r["passes_ratio_autoattack_to_this"] = round(aa["forward_backward_passes_per_image"]
                                                     / r["forward_backward_passes_per_image"], 2)
        r["seconds_ratio_autoattack_to_this"] = round(aa["attack_seconds_per_image"]
                                                      / r["attack_seconds_per_image"], 2)
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", required=True, help="a robustcars run folder (best.pt)")
    ap.add_argument("--data", help="data root (default: the run's)")
    ap.add_argument("--max-images", type=int, default=16, help="seeded test images (default 16)")
    ap.add_argument("--eps", type=float, nargs="+", default=[0.0005, 0.001, 0.002, 0.004],
                    help="L∞ budgets in [0, 1] pixel scale (default: the fast suite's)")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", required=True, help="JSON file to write")
    args = ap.parse_args(argv)
    set_threads(args.threads)
    eps = sorted(args.eps)
    cfg = AttackConfig(run=args.run, out=str(Path(args.out).parent), eps=eps, data=args.data,
                       max_images=args.max_images, batch_size=args.batch_size, workers=0).validate()
    p = prepare(cfg)
    model, n = p.model, len(p.images)
    loader = DataLoader(p.images.subset(list(range(n))), batch_size=args.batch_size, shuffle=False)
    t0 = time.perf_counter()
    acc = measure(model, loader, contenders(eps), eps)
    result = {"command": " ".join(["python", "benchmarks/worst_case_cost.py", *sys.argv[1:]]),
              "run": p.source.info, "data": p.images.info, "images": n, "eps": eps, "norm": "linf",
              "threads": args.threads, "batch_size": args.batch_size, "seconds": round(time.perf_counter() - t0, 1),
              "versions": library_versions(), "contenders": summarize(acc, eps, n)}
    rio.write_json(args.out, result)
    print(f"{n} images, eps {eps}, {args.threads} threads — {args.out}")
    print("| contender | passes/img | passes by attack | s/img | robust acc per eps | agreement with AA "
          "| AA passes ÷ |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for name, r in result["contenders"].items():
        by = ", ".join(f"{k} {v:g}" for k, v in r["passes_per_image_by_attack"].items())
        print(f"| {name} | {r['forward_backward_passes_per_image']:g} | {by} | {r['attack_seconds_per_image']:g} | "
              f"{' / '.join(f'{a:.4f}' for a in r['robust_accuracy'])} | "
              f"{' / '.join(f'{a:.1%}' for a in r['verdict_agreement_with_autoattack'])} | "
              f"{r['passes_ratio_autoattack_to_this']:g} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
