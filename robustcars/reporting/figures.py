"""Matplotlib figures (Agg backend, files only). Each function writes one PNG atomically."""

from __future__ import annotations

import io
import textwrap
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from robustcars import storage as rio


def _save(fig: plt.Figure, path: str | Path) -> Path:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return rio.write_bytes(path, buf.getvalue())


def best_epoch(history: list[dict[str, float]]) -> int | None:
    """The epoch the run kept as best: highest validation robust accuracy in adversarial runs, else highest
    validation macro-F1 (the first such epoch, as training keeps it)."""
    if not history:
        return None
    key = "val_robust_acc" if "val_robust_acc" in history[0] else "val_f1"
    return int(max(history, key=lambda h: (h[key], -h["epoch"]))["epoch"])


def learning_curves_figure(history: list[dict[str, float]]) -> plt.Figure:
    """Loss and macro-F1 per epoch, train vs val, best epoch marked; with adversarial training a third panel:
    validation clean vs PGD robust accuracy (robust overfitting, Rice et al. 2020, shows there) and the
    held-batch guard."""
    from matplotlib.ticker import MaxNLocator

    robust = bool(history) and "val_robust_acc" in history[0]
    fig, axes = plt.subplots(1, 3 if robust else 2, figsize=(15 if robust else 10, 3.8))
    ep = [h["epoch"] for h in history]
    for ax, key, label in ((axes[0], "loss", "cross-entropy loss"), (axes[1], "f1", "macro-F1")):
        ax.plot(ep, [h[f"train_{key}"] for h in history], "o-", label="train")
        ax.plot(ep, [h[f"val_{key}"] for h in history], "s-", label="val")
        ax.set_ylabel(label)
    if robust:
        ax = axes[2]
        ax.plot(ep, [h["val_acc"] for h in history], "s-", label="val clean accuracy")
        ax.plot(ep, [h["val_robust_acc"] for h in history], "d-", label="val PGD robust accuracy")
        if "guard_robust_acc" in history[0]:
            ax.plot(ep, [h["guard_robust_acc"] for h in history], "x--", label="held-batch PGD accuracy (guard)")
        ax.set_ylabel("accuracy")
    best = best_epoch(history)
    for ax in axes:
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if ep:
            ax.set_xlim(min(ep) - 0.5, max(ep) + 0.5)
        if best is not None:
            ax.axvline(best, color="grey", linestyle=":", linewidth=1.2, label=f"best epoch ({best})")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("Learning curves")
    return fig


def learning_curves(history: list[dict[str, float]], path: str | Path) -> Path:
    """:func:`learning_curves_figure`, written to ``path`` (PNG)."""
    return _save(learning_curves_figure(history), path)


def entropy_figure(clean: np.ndarray, adversarial: dict[str, np.ndarray], max_entropy: float) -> plt.Figure:
    """Histogram of softmax entropy (nats), clean vs each adversarial setting, with the maximum ln K marked."""
    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(figsize=(7, 4))
    bins = np.linspace(0, max_entropy, 40)
    ax.hist(clean, bins=bins, alpha=0.6, label=f"clean (mean {np.mean(clean):.2f})", color="tab:blue")
    colors = plt.cm.autumn(np.linspace(0, 0.8, max(1, len(adversarial))))
    for (name, h), c in zip(adversarial.items(), colors):
        ax.hist(h, bins=bins, histtype="step", linewidth=2, label=f"{name} (mean {np.mean(h):.2f})", color=c)
    ax.axvline(max_entropy, color="black", linestyle="--", linewidth=1, label=f"maximum ln K = {max_entropy:.2f}")
    ax.set_xlim(0, max_entropy * 1.03)
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("softmax entropy (nats)")
    ax.set_ylabel("images")
    ax.set_title("Prediction uncertainty, clean vs adversarial")
    ax.legend(fontsize=8)
    return fig


def entropy_histograms(clean: np.ndarray, adversarial: dict[str, np.ndarray], max_entropy: float,
                       path: str | Path) -> Path:
    """:func:`entropy_figure`, written to ``path`` (PNG)."""
    return _save(entropy_figure(clean, adversarial, max_entropy), path)


def _short(name: str, n: int = 26) -> str:
    return name if len(name) <= n else name[: n - 1] + "…"


def perturbation_caption(delta: np.ndarray, norm: str) -> str:
    """How a panel names a perturbation ``delta`` (any shape): its magnification and its norm in the attack's
    own norm (``linf``/``l2``), or "no perturbation" when it is all zeros."""
    peak = float(np.abs(delta).max())
    if peak == 0:
        return "no perturbation"
    size = f"L∞ = {peak:.4f}" if norm == "linf" else f"L2 = {float(np.linalg.norm(delta)):.4f}"
    return f"perturbation (×{0.5 / peak:.0f})\n{size}"


def _wrap(name: str, width: int = 24) -> str:
    """A class name on at most two lines of ``width`` characters (Stanford Cars names run to 45)."""
    lines = textwrap.wrap(name, width) or [""]
    return "\n".join(lines[:2]) + ("…" if len(lines) > 2 else "")


RANK_NOTE = "rank change of the clean top-3\n(+n: n places lower under attack)"


def attack_panel_figure(examples: list[dict[str, Any]], class_names: list[str], title: str,
                        norm: str = "linf") -> plt.Figure:
    """One row per image: original, perturbation (magnified), adversarial, top-3 bars clean and
    adversarial, and the adversarial ranks of the clean top-3 classes (``+n``: n places lower).

    Each example: ``image``/``adv`` float (3, H, W) in [0, 1], ``label`` int, ``clean_top`` / ``adv_top``
    lists of (class, prob) for the top 3, ``ranks`` list of 3 adversarial ranks of the clean top-3.
    """
    n = len(examples)
    fig, axes = plt.subplots(n, 6, figsize=(21, 3.6 * n), squeeze=False, layout="constrained",
                             gridspec_kw={"width_ratios": [1, 1, 1, 1.4, 1.4, 1.6]})
    for row, ex in zip(axes, examples):
        img, adv = np.asarray(ex["image"]).transpose(1, 2, 0), np.asarray(ex["adv"]).transpose(1, 2, 0)
        delta = adv - img
        scale = max(float(np.abs(delta).max()), 1e-12)
        row[0].imshow(img)
        row[0].set_title(f"original, true:\n{_wrap(class_names[ex['label']], 30)}", fontsize=8)
        row[1].imshow(np.clip(delta / (2 * scale) + 0.5, 0, 1))
        row[1].set_title(perturbation_caption(delta, norm), fontsize=8)
        row[2].imshow(np.clip(adv, 0, 1))
        row[2].set_title("adversarial", fontsize=8)
        for ax in row[:3]:
            ax.axis("off")
        for ax, key, color, name in ((row[3], "clean_top", "tab:blue", "clean"),
                                     (row[4], "adv_top", "tab:red", "adversarial")):
            _topk_bars(ax, [(class_names[c], p) for c, p in ex[key]], color, f"{name} top-3 (softmax probability)")
        row[5].axis("off")
        cells = [[_wrap(class_names[c], 28), str(j + 1), str(r), f"{r - (j + 1):+d}"]
                 for j, ((c, _), r) in enumerate(zip(ex["clean_top"], ex["ranks"]))]
        table = row[5].table(cellText=cells, colLabels=["clean top-3 class", "clean", "adv", "change"],
                             loc="center", cellLoc="left", colWidths=[0.58, 0.14, 0.14, 0.14])
        table.auto_set_font_size(False)
        table.set_fontsize(7)
        table.scale(1, 2.3)
        row[5].set_title(RANK_NOTE, fontsize=8)
    fig.suptitle(title)
    return fig


def attack_panel(examples: list[dict[str, Any]], class_names: list[str], title: str, path: str | Path,
                 norm: str = "linf") -> Path:
    """:func:`attack_panel_figure`, written to ``path`` (PNG)."""
    return _save(attack_panel_figure(examples, class_names, title, norm), path)


def robustness_figure(curves: dict[str, list[tuple[float, float]]], title: str,
                      norms: dict[str, str] | None = None, clean: dict[str, float] | None = None) -> plt.Figure:
    """Robust accuracy against eps (log x axis), one line per attack (or model · attack), one panel per norm
    (``norms``: curve name -> ``linf``/``l2``; an L∞ and an L2 budget never share an axis); ``clean``: clean
    accuracy per curve name, drawn as a dotted level line (eps 0 lies off a log axis)."""
    norms = norms or {}
    groups: dict[str, list[str]] = {}
    for name in curves:
        groups.setdefault(norms.get(name, ""), []).append(name)
    crowded = len(curves) > 3  # with more lines the legend goes beside the axes, never over the curves
    fig, axes = plt.subplots(1, len(groups), figsize=((11.5 if crowded else 7.5) * len(groups), 4.2), squeeze=False)
    drawn: set[tuple[float, str]] = set()
    for ax, (norm, names) in zip(axes[0], groups.items()):
        for name in names:
            pts = sorted(p for p in curves[name] if p[0] > 0)
            if pts:
                line, = ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", label=name)
                c = (clean or {}).get(name)
                if c is not None and (c, norm) not in drawn:
                    drawn.add((c, norm))
                    whose = f" ({name.split(' · ')[0]})" if " · " in name else ""
                    ax.axhline(c, color=line.get_color(), linestyle=":", linewidth=1.2,
                               label=f"clean accuracy {c:.3f}{whose}")
        ax.set_xscale("log")
        unit = {"linf": "L∞", "l2": "L2"}.get(norm)
        ax.set_xlabel(f"eps, {unit} budget in [0, 1] pixel scale" if unit else "eps (pixel scale)")
        ax.set_ylabel("robust accuracy")
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3, which="both")
        if crowded:
            ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
        else:
            ax.legend(fontsize=7)
        ax.set_title(f"{title} — {unit}" if unit and len(groups) > 1 else title, fontsize=10)
    fig.tight_layout()
    return fig


def robustness_curves(curves: dict[str, list[tuple[float, float]]], path: str | Path, title: str,
                      norms: dict[str, str] | None = None, clean: dict[str, float] | None = None) -> Path:
    """:func:`robustness_figure`, written to ``path`` (PNG)."""
    return _save(robustness_figure(curves, title, norms, clean), path)


def rank_histogram(ranks: dict[str, list[int]], path: str | Path, title: str) -> Path:
    """Distribution of the adversarial rank of the clean top-1 class, one step histogram per eps."""
    fig, ax = plt.subplots(figsize=(7, 4))
    top = max(max(r) for r in ranks.values()) if ranks else 1
    bins = np.unique(np.round(np.logspace(0, np.log10(max(top, 2)) + 0.01, 30))) - 0.5
    for eps, r in ranks.items():
        ax.hist(r, bins=bins, histtype="step", linewidth=2, label=f"eps={float(eps):g}")
    ax.set_xscale("log")
    ax.axvline(3.5, color="grey", linestyle="--", linewidth=1)
    ax.text(3.6, ax.get_ylim()[1] * 0.9, "top-3", fontsize=8, color="grey")
    ax.set_xlabel("adversarial rank of the clean top-1 class (1 = still top)")
    ax.set_ylabel("images")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    return _save(fig, path)


def _make_blocks(ax, makes: list[str]) -> None:
    """Thin lines between the makes of consecutive class indices (classes sorted by name group each make)."""
    for i in range(1, len(makes)):
        if makes[i] != makes[i - 1]:
            ax.axhline(i - 0.5, color="white", linewidth=0.25, alpha=0.6)
            ax.axvline(i - 0.5, color="white", linewidth=0.25, alpha=0.6)


def confusion_figure(matrices: list[tuple[str, np.ndarray]], clip: int = 3, makes: list[str] | None = None
                     ) -> plt.Figure:
    """Confusion matrices side by side (e.g. clean and adversarial predictions of the same images), entries
    clipped at ``clip`` so off-diagonal structure shows; ``makes`` (one per class) draws the make blocks, so a
    flip within a make lands inside a block on the diagonal."""
    fig, axes = plt.subplots(1, len(matrices), figsize=(6.2 * len(matrices), 5.8), squeeze=False)
    for ax, (title, cm) in zip(axes[0], matrices):
        im = ax.imshow(np.minimum(cm, clip), cmap="viridis", interpolation="nearest", vmin=0, vmax=clip)
        if makes:
            _make_blocks(ax, makes)
        ax.set_xlabel("predicted class index")
        ax.set_ylabel("true class index")
        ax.set_title(f"{title}\n(entries clipped at {clip})", fontsize=9)
        fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    return fig


def confusion_heatmap(matrices: list[tuple[str, np.ndarray]], path: str | Path, clip: int = 3,
                      makes: list[str] | None = None) -> Path:
    """:func:`confusion_figure`, written to ``path`` (PNG)."""
    return _save(confusion_figure(matrices, clip, makes), path)


def _topk_bars(ax, top: list[tuple[str, float]], color: str, title: str) -> None:
    ys = np.arange(len(top))[::-1]
    ax.barh(ys, [p for _, p in top], color=color, alpha=0.35)
    for yy, (name, p) in zip(ys, top):
        ax.text(0.02, yy, f"{_short(name, 46)}  {p:.2f}", va="center", fontsize=7)
    ax.set_yticks([])
    ax.set_xlim(0, 1)
    ax.set_title(title, fontsize=8)


FLAT_NOTE = "flat map: no gradient reaches this layer"


def _cam_title(head: str, cls: str, heat: np.ndarray | None, extra: str = "") -> str:
    flat = heat is not None and float(np.ptp(heat)) < 1e-6
    return f"{head}\n{_wrap(cls, 32)}{extra}" + (f"\n({FLAT_NOTE})" if flat else "")


def cam_panel_figure(rows: list[dict[str, Any]], title: str) -> plt.Figure:
    """One row per image: the image and its Grad-CAM overlay, and when attacked the adversarial image and
    its overlay, then the top-k bars (clean, and adversarial when attacked); a colour bar of the map's scale.

    Each row: ``image`` float (3, H, W) in [0, 1], ``cam`` its overlay (H, W, 3), ``label`` (str or None),
    ``top`` list of (class name, prob); optionally ``cam_map`` the map itself (H, W) in [0, 1] (a flat one
    is said so), ``adv``, ``adv_cam``, ``adv_cam_map``, ``adv_top`` and ``shift`` (``pearson``, ``top_kept``).
    """
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    attacked = any("adv" in r for r in rows)
    cols = 6 if attacked else 3
    ratios = [1, 1, 1, 1, 1.4, 1.4] if attacked else [1, 1, 1.4]
    fig, axes = plt.subplots(len(rows), cols, figsize=(3.2 * cols + 0.8, 3.4 * len(rows)), squeeze=False,
                             layout="constrained", gridspec_kw={"width_ratios": ratios})
    for row, r in zip(axes, rows):  # images drawn pixel for pixel as they were scored (no smoothing: a small PNG)
        head = f", true:\n{_wrap(r['label'], 32)}" if r.get("label") else ""
        row[0].imshow(np.asarray(r["image"]).transpose(1, 2, 0), interpolation="nearest")
        row[0].set_title("original" + head, fontsize=8)
        row[1].imshow(r["cam"], interpolation="nearest")
        row[1].set_title(_cam_title("Grad-CAM of the clean top-1", r["top"][0][0], r.get("cam_map")), fontsize=8)
        if attacked:
            row[2].imshow(np.clip(np.asarray(r["adv"]).transpose(1, 2, 0), 0, 1), interpolation="nearest")
            row[2].set_title("adversarial", fontsize=8)
            row[3].imshow(r["adv_cam"], interpolation="nearest")
            s = r.get("shift") or {}
            shift = (f"\nr = {s['pearson']:.2f}, top-10% kept {s['top_kept']:.2f}"
                     if s and s.get("pearson") is not None and np.isfinite(s["pearson"]) else "")
            row[3].set_title(_cam_title("Grad-CAM of the adversarial top-1", r["adv_top"][0][0],
                                        r.get("adv_cam_map"), shift), fontsize=8)
            _topk_bars(row[4], r["top"], "tab:blue", "clean top-k (softmax)")
            _topk_bars(row[5], r["adv_top"], "tab:red", "adversarial top-k (softmax)")
        else:
            _topk_bars(row[2], r["top"], "tab:blue", "top-k (softmax probability)")
        for ax in row[: 4 if attacked else 2]:
            ax.axis("off")
    bar = fig.colorbar(ScalarMappable(Normalize(0, 1), cmap="jet"), ax=axes[:, 3 if attacked else 1],
                       shrink=0.8, location="right")  # the overlays' colour map (pytorch-grad-cam: OpenCV's jet)
    bar.set_label("Grad-CAM weight (0 = none, 1 = the map's peak)", fontsize=8)
    fig.suptitle(title)
    return fig


def cam_panel(rows: list[dict[str, Any]], title: str, path: str | Path) -> Path:
    """:func:`cam_panel_figure`, written to ``path`` (PNG)."""
    return _save(cam_panel_figure(rows, title), path)


def transfer_heatmap(matrices: list[dict[str, Any]], path: str | Path) -> Path:
    """One heatmap per set of saved examples: accuracy of each model scoring them (rows; the first is the source
    model itself, white-box) on the clean images and at each eps of the source attack (columns)."""
    import textwrap

    height = sum(0.8 + 0.6 * len(t["rows"]) for t in matrices)
    fig, axes = plt.subplots(len(matrices), 1, figsize=(9, 0.8 + height), squeeze=False)
    for ax, t in zip(axes[:, 0], matrices):
        acc = np.array([[r["clean"], *r["accuracy"]] for r in t["rows"]], dtype=float)
        im = ax.imshow(acc, vmin=0, vmax=1, cmap="viridis", aspect="auto")
        ax.set_xticks(range(acc.shape[1]), ["clean", *[f"eps {e:g}" for e in t["eps"]]])
        ax.set_yticks(range(len(t["rows"])), [textwrap.fill(r["target"], 44) for r in t["rows"]], fontsize=7)
        ax.axvline(0.5, color="white", linewidth=2)
        for i in range(acc.shape[0]):
            for j in range(acc.shape[1]):
                ax.text(j, i, f"{acc[i, j]:.3f}", ha="center", va="center", color="w" if acc[i, j] < 0.6 else "k",
                        fontsize=8)
        ax.set_xlabel("the source attack's budgets (its norm, [0, 1] pixel scale)")
        ax.set_title(textwrap.fill(f"examples of {t['source']}, scored by each model", 90), fontsize=9)
        fig.colorbar(im, ax=ax, label="accuracy")
    return _save(fig, path)


def corruption_heatmap_figure(summary: dict[str, Any], title: str) -> plt.Figure:
    """Accuracy per corruption (rows, in ImageNet-C's order) and severity (columns), the clean accuracy in the
    title; each cell labelled with its accuracy."""
    rows = summary["rows"]
    names = list(dict.fromkeys(r["corruption"] for r in rows))
    sevs = sorted({r["severity"] for r in rows})
    acc = np.full((len(names), len(sevs)), np.nan)
    for r in rows:
        acc[names.index(r["corruption"]), sevs.index(r["severity"])] = r["accuracy"]
    fig, ax = plt.subplots(figsize=(1.1 * len(sevs) + 3.2, 0.36 * len(names) + 1.6))
    im = ax.imshow(acc, vmin=0, vmax=1, cmap="viridis", aspect="auto")
    ax.set_xticks(range(len(sevs)), [str(s) for s in sevs])
    ax.set_yticks(range(len(names)), [n.replace("_", " ") for n in names])
    ax.set_xlabel("severity")
    for (i, j), v in np.ndenumerate(acc):
        if not np.isnan(v):
            ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=7, color="white" if v < 0.6 else "black")
    fig.colorbar(im, ax=ax, label="accuracy")
    ax.set_title(f"{title}\nclean accuracy {summary['clean']['accuracy']:.3f}", fontsize=9)
    return fig


def corruption_examples_figure(images: dict[str, np.ndarray], severity: int) -> plt.Figure:
    """One image clean and under every corruption at ``severity`` (uint8 ``(H, W, 3)`` each, as scored)."""
    n = len(images)
    cols = min(n, 6)
    fig, axes = plt.subplots((n + cols - 1) // cols, cols, figsize=(1.9 * cols, 2.1 * ((n + cols - 1) // cols)),
                             squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, (name, img) in zip(axes.flat, images.items()):
        ax.imshow(img)
        ax.set_title(name.replace("_", " ") if name == "clean" else f"{name.replace('_', ' ')} ({severity})",
                     fontsize=8)
    fig.suptitle(f"the images as scored: every corruption at severity {severity}", fontsize=9)
    return fig


def corruption_family_figure(summary: dict[str, Any]) -> plt.Figure:
    """Mean accuracy over severities per corruption, grouped and coloured by family, the clean accuracy a line."""
    rows = summary["rows"]
    names = list(dict.fromkeys(r["corruption"] for r in rows))
    family = {r["corruption"]: r["family"] for r in rows}
    mean = [float(np.mean([r["accuracy"] for r in rows if r["corruption"] == c])) for c in names]
    colors = _FAMILY_COLORS
    fig, ax = plt.subplots(figsize=(max(5.0, 0.5 * len(names) + 1.5), 3.4))
    ax.bar(range(len(names)), mean, color=[colors.get(family[c], "#6b7280") for c in names])
    ax.axhline(summary["clean"]["accuracy"], color="black", lw=1, ls="--", label="clean")
    ax.set_xticks(range(len(names)), [c.replace("_", " ") for c in names], rotation=60, ha="right", fontsize=8)
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy, mean over severities")
    handles = [plt.Rectangle((0, 0), 1, 1, color=colors[f]) for f in dict.fromkeys(family.values()) if f in colors]
    ax.legend([*handles, ax.lines[0]], [*[f for f in dict.fromkeys(family.values()) if f in colors], "clean"],
              fontsize=7, ncol=3)
    return fig


_FAMILY_COLORS = {"noise": "#2563eb", "blur": "#16a34a", "weather": "#ea580c", "digital": "#9333ea", "extra": "#6b7280"}


def corruption_change_figure(summary: dict[str, Any], errors: dict[str, Any], reference: str) -> plt.Figure:
    """Per corruption, this model's accuracy minus the reference's (mean over severities, points), coloured by
    family; the dashed line is the change on clean images, so a bar above it is a corruption the model holds
    up under better than its clean accuracy alone would say."""
    change = errors["accuracy_change"]
    family = {r["corruption"]: r["family"] for r in summary["rows"]}
    names = list(change)
    fig, ax = plt.subplots(figsize=(max(5.0, 0.5 * len(names) + 1.5), 3.6))
    ax.bar(range(len(names)), [100 * change[c] for c in names],
           color=[_FAMILY_COLORS.get(family[c], "#6b7280") for c in names])
    ax.axhline(100 * errors["clean_accuracy_change"], color="black", lw=1, ls="--", label="clean")
    ax.axhline(0, color="#6b7280", lw=0.6)
    ax.set_xticks(range(len(names)), [c.replace("_", " ") for c in names], rotation=60, ha="right", fontsize=8)
    ax.set_ylabel("accuracy change, points\n(mean over severities)")
    ax.set_title(f"change against the reference {reference}", fontsize=9)
    ax.legend(fontsize=7)
    return fig


def corruption_figures(summary: dict[str, Any], images: dict[str, np.ndarray], severity: int, folder: str | Path,
                       title: str, errors: dict[str, Any] | None = None, reference: str | None = None) -> list[Path]:
    """The figures of a corruption folder: heatmap, example grid, per-family bars, and with a reference the
    change per corruption (PNG, atomic)."""
    folder = Path(folder)
    paths = [_save(corruption_heatmap_figure(summary, title), folder / "corruption_heatmap.png"),
             _save(corruption_examples_figure(images, severity), folder / "corruption_examples.png"),
             _save(corruption_family_figure(summary), folder / "corruption_families.png")]
    if errors and "accuracy_change" in errors:
        paths.append(_save(corruption_change_figure(summary, errors, reference or "run"),
                           folder / "corruption_change.png"))
    return paths


def banded_curves(curves: dict[str, tuple[list[float], list[float], list[float]]], path: str | Path, *,
                  ylabel: str, title: str) -> Path:
    """One line per name through ``(epochs, mean)`` with a band ``mean ± std`` (the reference study's Figures 3
    and 4: validation loss / macro-F1 per epoch, mean over batches ± 1 standard deviation), written to ``path``."""
    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    for (name, (epochs, mean, std)), color in zip(curves.items(), plt.cm.tab10.colors * 3):
        m, s = np.asarray(mean, dtype=float), np.asarray(std, dtype=float)
        ax.plot(epochs, m, "o-", color=color, label=name, markersize=4)
        ax.fill_between(epochs, m - s, m + s, color=color, alpha=0.18, linewidth=0)
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title, fontsize=10)
    return _save(fig, path)
