"""Pure aggregations over per-image attack records (``records.jsonl``): per class, per make, flips.

A record has ``label``, ``clean_pred`` and ``adv`` (a list, one entry per eps, each with ``pred``).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any

# Stanford Cars makes whose name has more than one word; every other make is the first word.
MULTIWORD_MAKES = ("AM General", "Aston Martin", "Land Rover")


def make_of(class_name: str) -> str:
    """The manufacturer in a Stanford Cars class name:
    ``"Aston Martin V8 Vantage Coupe 2012"`` -> ``"Aston Martin"``."""
    for make in MULTIWORD_MAKES:
        if class_name.startswith(make + " "):
            return make
    return class_name.split(" ", 1)[0]


def group_robustness(records: list[dict[str, Any]], groups: list[str], eps_index: int) -> list[dict[str, Any]]:
    """Clean and robust accuracy per group.

    Args:
        records: per-image records; groups: group name of every class index (class name or make);
        eps_index: which entry of ``adv`` is the robust prediction.
    Returns:
        one dict per group: ``group, images, clean_acc, robust_acc, drop`` (= clean - robust), most fragile
        first: largest drop, then lowest robust accuracy.
    """
    count: Counter[str] = Counter()
    clean: Counter[str] = Counter()
    robust: Counter[str] = Counter()
    for r in records:
        g = groups[r["label"]]
        count[g] += 1
        clean[g] += r["clean_pred"] == r["label"]
        robust[g] += r["adv"][eps_index]["pred"] == r["label"]
    rows = [{"group": g, "images": n, "clean_acc": clean[g] / n, "robust_acc": robust[g] / n,
             "drop": (clean[g] - robust[g]) / n} for g, n in count.items()]
    return sorted(rows, key=lambda row: (-row["drop"], row["robust_acc"], row["group"]))


def flips(records: list[dict[str, Any]], class_names: list[str], eps_index: int, top: int = 15) -> dict[str, Any]:
    """The most frequent (true class -> adversarial class) changes among clean-correct images that the
    attack fooled, and the share of those flips that stay within the same make."""
    pairs: Counter[tuple[int, int]] = Counter()
    for r in records:
        pred = r["adv"][eps_index]["pred"]
        if r["clean_pred"] == r["label"] and pred != r["label"]:
            pairs[(r["label"], pred)] += 1
    total = sum(pairs.values())
    same = sum(n for (a, b), n in pairs.items() if make_of(class_names[a]) == make_of(class_names[b]))
    return {
        "fooled": total,
        "same_make_share": same / total if total else float("nan"),
        "top": [{"true": class_names[a], "adversarial": class_names[b], "count": n,
                 "same_make": make_of(class_names[a]) == make_of(class_names[b])}
                for (a, b), n in pairs.most_common(top)],
    }


def confusion(records: list[dict[str, Any]], num_classes: int, eps_index: int | None = None):
    """Confusion matrix (scikit-learn) of clean predictions, or of adversarial ones at ``eps_index``."""
    from sklearn.metrics import confusion_matrix

    y = [r["label"] for r in records]
    p = [r["clean_pred"] if eps_index is None else r["adv"][eps_index]["pred"] for r in records]
    return confusion_matrix(y, p, labels=list(range(num_classes)))


def top1_rank_distribution(records: list[dict[str, Any]], eps_index: int) -> list[int]:
    """Adversarial rank of each image's clean top-1 class."""
    return [r["adv"][eps_index]["clean_top3_rank"][0] for r in records]


def by_class_index(names: list[str]) -> dict[str, list[int]]:
    out: dict[str, list[int]] = defaultdict(list)
    for i, n in enumerate(names):
        out[make_of(n)].append(i)
    return dict(out)


def _fall(r: dict[str, Any], j: int) -> tuple:
    a = r["adv"][j]
    return (a["clean_top3_rank"][0], a["entropy"] - r["clean_entropy"], -r["index"])  # ties: lower index first


def _prob_drop(r: dict[str, Any], j: int) -> tuple:
    a = r["adv"][j]
    p_adv = a["top3_prob"][0] if a["top3"][0] == r["clean_top3"][0] else 0.0
    return (r["clean_top3_prob"][0] - p_adv, r["index"])


def extreme_images(records: list[dict[str, Any]], eps_index: int, k: int = 2) -> tuple[list[int], list[int]]:
    """Indices of the ``k`` most and ``k`` least affected clean-correct images at ``eps_index``.

    Most affected: the clean top-1 class fell furthest in the adversarial ranking (ties: larger entropy
    rise, then lower index). Least affected: still ranked first, with the smallest drop of the top-1
    probability (ties: lower index). The order is total, so the answer does not depend on the order of
    ``records`` and can be computed batch by batch from :func:`extreme_candidates`.
    """
    correct = [r for r in records if r["clean_pred"] == r["label"]]
    most = sorted(correct, key=lambda r: _fall(r, eps_index), reverse=True)[:k]
    chosen = {r["index"] for r in most}
    kept = [r for r in correct if r["adv"][eps_index]["clean_top3_rank"][0] == 1 and r["index"] not in chosen]
    least = sorted(kept, key=lambda r: _prob_drop(r, eps_index))[:k]
    return [r["index"] for r in most], [r["index"] for r in least]


def extreme_candidates(records: list[dict[str, Any]], eps_index: int, k: int = 2) -> set[int]:
    """The indices that can still be chosen by :func:`extreme_images` once more records arrive: the ``k`` most
    affected and the ``2k`` least affected still-first images (``k`` of those may be taken by the most
    affected). Keeping only these while streaming gives the same final choice as keeping every record."""
    correct = [r for r in records if r["clean_pred"] == r["label"]]
    most = sorted(correct, key=lambda r: _fall(r, eps_index), reverse=True)[:k]
    first = [r for r in correct if r["adv"][eps_index]["clean_top3_rank"][0] == 1]
    least = sorted(first, key=lambda r: _prob_drop(r, eps_index))[:2 * k]
    return {r["index"] for r in most + least}
