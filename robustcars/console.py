"""Rendering shared by the commands: progress, tables and lines. No computation here, and no torch import
(so bad options are reported before torch loads).

On a terminal progress is a rich bar; without one (a log file, CI, ``nohup``, ``tee``) it is a plain line every
``$ROBUSTCARS_PROGRESS_SECONDS`` (default 30) seconds and at the end, and tables are printed wide instead
of squeezed to 80 columns.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from robustcars.registry import SUITE_KIND

LOG_WIDTH = 160  # columns of tables written to a file or pipe


def _is_tty(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


console = Console(highlight=False, width=None if _is_tty(sys.stdout) else LOG_WIDTH)
err_console = Console(stderr=True, highlight=False, width=None if _is_tty(sys.stderr) else LOG_WIDTH)


def make_progress() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("img"),
        TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(), TextColumn("{task.fields[info]}"),
        console=console, transient=True,
    )


def _hms(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class PlainProgress:
    """Progress as plain lines for logs: at most one line per ``interval`` seconds, and one at the end."""

    def __init__(self, description: str, total: int, done: int = 0, interval: float | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.description, self.total, self.done, self.start_done = description, total, done, done
        self.interval = float(os.environ.get("ROBUSTCARS_PROGRESS_SECONDS", "30")) if interval is None else interval
        self.clock = clock
        self.t0 = self.last = clock()

    def __call__(self, n: int) -> None:
        finishing = self.done < self.total <= self.done + n
        self.done += n
        now = self.clock()
        if finishing or (now - self.last >= self.interval and self.done < self.total):
            self.last = now
            elapsed = now - self.t0
            rate = (self.done - self.start_done) / elapsed if elapsed > 0 else 0.0
            eta = (self.total - self.done) / rate if rate > 0 else 0.0
            share = 100 * self.done / max(self.total, 1)
            console.print(f"{self.description}: {self.done}/{self.total} img ({share:.0f}%), "
                          f"{rate:.2f} img/s, elapsed {_hms(elapsed)}, eta {_hms(eta)}", soft_wrap=True)


class _Bar:
    """A rich bar on a terminal, :class:`PlainProgress` otherwise; ``advance(n)`` and ``stop()``."""

    def __init__(self, description: str, total: int, done: int = 0) -> None:
        self.bar: Progress | None = None
        if console.is_terminal:
            self.bar = make_progress()
            self.bar.start()
            task = self.bar.add_task(description, total=total, completed=done, info="")
            self.advance = lambda n: self.bar.advance(task, n)
        else:
            self.advance = PlainProgress(description, total, done)

    def stop(self) -> None:
        if self.bar:
            self.bar.stop()
            self.bar = None


@contextlib.contextmanager
def status_lines(text: str) -> Iterator[Callable[[str], None]]:
    """Progress of a long step told in messages: a spinner whose message changes on a terminal; in a log or
    pipe, one plain line per message with the time elapsed. Yields ``update(message)``."""
    if console.is_terminal:
        with console.status(text) as status:
            yield status.update
        return
    t0 = time.monotonic()
    console.print(text, soft_wrap=True)
    yield lambda message: console.print(f"{message} (elapsed {_hms(time.monotonic() - t0)})", soft_wrap=True)


def progress_bar(description: str, total: int, done: int = 0) -> _Bar:
    """Progress of a long step: a rich bar on a terminal, plain lines in a log; ``advance(n)`` and ``stop()``."""
    return _Bar(description, total, done)


def fmt(x: Any, digits: int = 4) -> str:
    """A number as a table cell: ``–`` for a value that is not defined (None, NaN — e.g. a success rate when no
    image was classified correctly), else ``digits`` decimals."""
    if x is None:
        return "–"
    if isinstance(x, float):
        return "–" if x != x else f"{x:.{digits}f}"
    return str(x)


class RichTrainReporter:
    """Progress per phase (bar or plain lines) and one line per epoch (duck-types ``train.Reporter``)."""

    def __init__(self) -> None:
        self.bar: _Bar | None = None

    def start(self, info: dict[str, Any]) -> None:
        console.print(
            f"[bold]train[/] {info['arch']} (weights: {info['weights']}, "
            f"frozen: {', '.join(info['frozen']) or 'none'}) "
            f"on {info['device']} — {info['classes']} classes, {info['train']} train / {info['val']} val images, "
            f"{info['trainable']:,} of {info['params']:,} parameters trainable"
            + (f"; resuming at epoch {info['start_epoch']}" if info["start_epoch"] > 1 else ""), soft_wrap=True
        )
        d = info.get("defence")
        if d:
            detail = ", ".join(f"{k} {v}" for k, v in d.items() if k != "method")
            console.print(f"[bold]{d['method']}[/]: {detail}", soft_wrap=True)

    def phase(self, name: str, total: int, **where: Any):
        self.bar = _Bar(name, total)
        return self.bar.advance

    def end_phase(self) -> None:
        if self.bar:
            self.bar.stop()
            self.bar = None

    def end(self) -> None: ...

    def epoch(self, row: dict[str, float], improved: bool) -> None:
        console.print(
            f"epoch {row['epoch']:>3}  lr {row['lr']:.2e}  "
            f"train loss {row['train_loss']:.3f} acc {row['train_acc']:.3f} "
            f"F1 {row['train_f1']:.3f}  │ val loss {row['val_loss']:.3f} acc {row['val_acc']:.3f} "
            f"F1 {row['val_f1']:.3f}" + _robust_part(row) + f"  {row['seconds']:.0f}s"
            + ("  [green]★ best[/]" if improved else "")
        )
        if row.get("collapsed"):
            console.print(f"[bold red]catastrophic overfitting[/] at epoch {row['epoch']}: PGD accuracy on the held "
                          f"training batch fell to {row['guard_robust_acc']:.3f}; training stops, best.pt is the "
                          "best epoch before it", soft_wrap=True)


def _robust_part(row: dict[str, Any]) -> str:
    if "val_robust_acc" not in row:
        return ""
    guard = f" guard {row['guard_robust_acc']:.3f}" if "guard_robust_acc" in row else ""
    return f"  │ eps {row['train_eps']:.4g} val robust acc {row['val_robust_acc']:.3f}{guard}"


def history_table(history: list[dict[str, float]], best_epoch: int) -> Table:
    t = Table(title="Training history")
    robust = bool(history) and "val_robust_acc" in history[0]
    cols = ["epoch", "lr", "train loss", "train acc", "train F1", "val loss", "val acc", "val F1"]
    cols += ["train eps", "val robust acc"] if robust else []
    for col in [*cols, "time (s)"]:
        t.add_column(col, justify="right")
    for h in history:
        style = "bold green" if h["epoch"] == best_epoch else None
        cells = [str(h["epoch"]), f"{h['lr']:.2e}", fmt(h["train_loss"], 3), fmt(h["train_acc"], 3),
                 fmt(h["train_f1"], 3), fmt(h["val_loss"], 3), fmt(h["val_acc"], 3), fmt(h["val_f1"], 3)]
        cells += [f"{h['train_eps']:.4g}", fmt(h["val_robust_acc"], 3)] if robust else []
        t.add_row(*cells, f"{h['seconds']:.0f}", style=style)
    return t


class RichAttackReporter:
    """Progress over the images of the split (bar or plain lines); duck-types ``runner.AttackReporter``."""

    def __init__(self) -> None:
        self.bar: _Bar | None = None

    def start(self, info: dict[str, Any]) -> None:
        eps = ", ".join(f"{e:g}" for e in info["eps"])
        norm = "L2" if info.get("norm") == "l2" else "L∞"
        console.print(f"[bold]attack[/] {info['attack']} (eps {eps}, {norm} in pixel scale) on {info['arch']} at "
                      f"{info['img_size']} px — {info['images']} {info['split']} images on {info['device']}"
                      + (f"; resuming after {info['resumed']}" if info["resumed"] else ""), soft_wrap=True)

    def note(self, message: str) -> None:
        console.print(message, soft_wrap=True)

    def progress(self, total: int, done: int):
        self.bar = _Bar("attacking", total, done)
        return self.bar.advance

    def end(self) -> None:
        if self.bar:
            self.bar.stop()


def attack_rows(rows: list[dict[str, Any]], label: str | None = None) -> tuple[list[str], list[list[str]]]:
    """The one attack table (terminal, Markdown and HTML alike): ``(head, body)`` as text cells.

    A row per clean image set, attack and eps, and per suite worst case; ``label`` names the attack of a single
    attack's rows (suite rows carry their own). The 8-bit column appears when the rows have 8-bit scores
    (results of robustcars 0.2 have none). ``–`` marks what a row does not have.
    """
    rounded = any("accuracy_8bit" in r for r in rows)
    head = ["input", "eps", "accuracy", *["8-bit accuracy"] * rounded, "macro-F1", "entropy (nats) mean ± std",
            "success rate", "clean top-1 rank mean / median", "top-1 left top-3", "L∞ max", "L2 mean"]
    body = []
    for r in rows:
        acc8 = [fmt(r.get("accuracy_8bit"), 4)] * rounded
        if r["attack"] == "worst-case":  # suites: robust only if no attack of the suite fooled the image
            body.append([f"worst case ({r['norm']}, {len(r['attacks'])} attacks, {r['images']} images)",
                         f"{r['eps']:g}", fmt(r["accuracy"], 4), *acc8] + ["–"] * 7)
            continue
        clean = r["attack"] == "clean"
        name = r.get("label", label or r["attack"])
        if clean:
            name = f"clean ({r['images']} images of {r['label']})" if "label" in r else "clean"
        body.append([name, "–" if clean else f"{r['eps']:g}", fmt(r["accuracy"], 4), *acc8, fmt(r["macro_f1"], 4),
                     f"{r['entropy_mean']:.3f} ± {r['entropy_std']:.3f}",
                     "–" if clean else fmt(r.get("success_rate"), 3),
                     "–" if clean else f"{r['top1_rank_mean']:.1f} / {r['top1_rank_median']:.0f}",
                     "–" if clean else fmt(r.get("top1_left_top3"), 3),
                     "–" if clean else fmt(r.get("linf_max"), 4), "–" if clean else fmt(r.get("l2_mean"), 3)])
    return head, body


def attack_table(result: dict[str, Any]) -> Table:
    """:func:`attack_rows` of an attack.json or suite.json as a rich table (worst-case rows in bold)."""
    data = result["data"]
    t = Table(title=f"Robustness of {result['run']['arch']} on {data['images']} {data['split']} images")
    head, body = attack_rows(result["rows"])
    for i, name in enumerate(head):
        t.add_column(name, justify="left" if i == 0 else "right", no_wrap=i == 0)  # row names stay whole
    for row in body:
        t.add_row(*row, style="bold" if row[0].startswith("worst case") else None)
    return t


def _percent(share: float | None) -> str:
    return "–" if share is None or share != share else f"{100 * share:.1f} %"


def _signed(change: float) -> str:
    return f"{100 * change:+.1f}"


def corruption_table(result: dict[str, Any]) -> Table:
    """A corruption.json as a table: per corruption, accuracy at each severity, mean error, and CE / relative CE
    when a reference was given; the last line mCE."""
    rows, err = result["rows"], result["errors"]
    sevs = sorted({r["severity"] for r in rows})
    ref = "ce" in err
    t = Table(title=f"Natural corruptions: {result['run']['arch']} on {result['data']['images']} "
                    f"{result['data']['split']} images (clean accuracy {fmt(result['clean']['accuracy'], 4)})")
    for name in ["corruption", "family", *[f"acc s{s}" for s in sevs], "mean error",
                 *(["CE", "rel. CE", "Δ acc"] * ref)]:
        t.add_column(name, justify="left" if name in ("corruption", "family") else "right")
    acc = {(r["corruption"], r["severity"]): r["accuracy"] for r in rows}
    for c in dict.fromkeys(r["corruption"] for r in rows):
        family = next(r["family"] for r in rows if r["corruption"] == c)
        t.add_row(c, family, *[fmt(acc.get((c, s)), 3) for s in sevs], fmt(err["mean_error"][c], 3),
                  *([fmt(err["ce"][c], 3), fmt(err["relative_ce"][c], 3), _signed(err["accuracy_change"][c])]
                    if ref else []))
    t.add_row("mean (benchmark corruptions)", "", *[""] * len(sevs), fmt(err["mean_corruption_error"], 3),
              *([fmt(err["mce"], 3), fmt(err["relative_mce"], 3), ""] if ref else []), style="bold")
    if ref:
        t.add_row("clean", "", *[""] * len(sevs), fmt(1 - result["clean"]["accuracy"], 3), "", "",
                  _signed(err["clean_accuracy_change"]))
        t.caption = "Δ acc: this model's accuracy minus the reference's, points, mean over severities"
    return t


def min_norm_lines(result: dict[str, Any]) -> list[str]:
    """One line per minimum-norm attack: median (IQR) minimal norm over clean-correct images, share found."""
    blocks = result.get("min_norms") or {}
    if blocks and result.get("kind") != SUITE_KIND:  # one attack's attack.json: one block, not one per entry
        blocks = {result["config"]["attack"]: blocks}
    lines = []
    for label, b in blocks.items():
        norm = "L∞" if b["norm"] == "linf" else "L2"

        def f(v: Any) -> str:
            return "∞" if v is None or v == float("inf") else f"{v:.4g}"
        lines.append(f"{label}: minimal {norm} norm over {b['attacked']} clean-correct images — "
                     f"median {f(b['median'])} "
                     f"(IQR {f(b['q25'])}–{f(b['q75'])}), adversarial found for {_percent(b['found_rate'])} of them")
    return lines


def cascade_lines(result: dict[str, Any]) -> list[str]:
    """A cascade's breakdown, one line per eps: clean-correct images each attack fooled first, still robust;
    then the passes per image each attack spent."""
    blocks = result.get("fooled_by") or {}
    costs = result.get("cost") or {}
    if blocks and result.get("kind") != SUITE_KIND:  # one attack's attack.json: one block, not one per entry
        blocks, costs = {result["config"]["attack"]: blocks}, {result["config"]["attack"]: costs}
    lines = []
    for label, per_eps in blocks.items():
        for b in per_eps:
            parts = ", ".join(f"{k} {v}" for k, v in b["fooled_first_by"].items()) or "none"
            lines.append(f"{label} @ eps {b['eps']:g}: fooled first by {parts}; still robust {b['robust']}")
        for key, what in (("passes_per_image_by_attack", "forward+backward passes"),
                          ("queries_per_image_by_attack", "forward-only queries")):
            by = costs.get(label, {}).get(key)
            if by:
                lines.append(f"{label}: {what} per image — "
                             + ", ".join(f"{k} {v:g}" for k, v in by.items()) + f" (total {sum(by.values()):g})")
    return lines


def checks_lines(checks: list[dict[str, Any]]) -> list[str]:
    return [f"[bold red]check failed:[/] {c['name']}" + (f" ({c['attack']})" if "attack" in c else "")
            + (f" = {c['value']:.3f}" if "value" in c else "")
            + f" — {c['explain']}" for c in checks if not c["ok"]]


def report_summary(report: dict[str, Any]) -> Table:
    t = Table(title=report["title"])
    keys = list(dict.fromkeys(k for r in report["comparison"] for k in r))
    for k in keys:
        t.add_column(k, justify="left" if k == "model" else "right")
    for r in report["comparison"]:
        t.add_row(*[r[k] if k == "model" else fmt(r.get(k)) for k in keys])
    return t


def bench_table(result: dict[str, Any]) -> Table:
    c = result["config"]
    t = Table(title=f"{c['arch']} at {c['img_size']} px, batch {c['batch_size']}, {result['device']}, "
                    f"{result['threads']} threads — median of {c['reps']} rounds; ratios are medians of per-round "
                    f"ratios (train epoch: vs the in-memory train step); sgemm peak "
                    f"{fmt(result.get('sgemm_gflop_s'), 1)} GFLOP/s")
    for col in ("contender", "img/s (median)", "min – max", "vs floor", "vs foolbox", "vs torchattacks",
                "GFLOP/img", "GFLOP/s", "of peak"):
        t.add_column(col, justify="left" if col == "contender" else "right")
    for r in result["rows"]:
        share = r.get("peak_share")
        t.add_row(r["name"], f"{r['median_img_s']:.2f}", f"{r['min_img_s']:.2f} – {r['max_img_s']:.2f}",
                  fmt(r.get("vs_floor") or r.get("vs_train_step"), 2), fmt(r.get("vs_foolbox"), 2),
                  fmt(r.get("vs_torchattacks"), 2), fmt(r.get("gflop_per_image"), 2), fmt(r.get("gflop_s"), 1),
                  "–" if share is None else f"{share:.0%}")
    return t


def prediction_table(r: Any) -> Table:
    """Clean top-k of one photo and, when attacked, the adversarial top-k and the clean top-3's new ranks."""
    title = f"{r.path} — entropy {r.clean.entropy:.3f} nats"
    if r.adv is not None:
        title += f" → {r.adv.entropy:.3f} under attack"
    t = Table(title=title, title_justify="left")
    t.add_column("rank", justify="right")
    t.add_column("clean class")
    t.add_column("prob", justify="right")
    if r.adv is not None:
        t.add_column("adversarial class")
        t.add_column("prob", justify="right")
        t.add_column("clean class → adv rank", justify="right")
    for i, (name, p) in enumerate(zip(r.clean.names, r.clean.probs)):
        row = [str(i + 1), name, f"{p:.3f}"]
        if r.adv is not None:
            moved = f"{r.clean_top3_adv_rank[i]} ({r.clean_top3_adv_rank[i] - i - 1:+d})" if i < 3 else ""
            row += [r.adv.names[i], f"{r.adv.probs[i]:.3f}", moved]
        t.add_row(*row)
    return t


def prefilter_table(summary: Any) -> Table:
    """Pass rate per split and the 10 least car-like images."""
    t = Table(title=f"Car prefilter (summed ImageNet car-class probability >= {summary.threshold:g})")
    for col in ("split", "images", "cars", "pass rate"):
        t.add_column(col, justify="left" if col == "split" else "right")
    for split in dict.fromkeys(r["split"] for r in summary.rows):
        rows = [r for r in summary.rows if r["split"] == split]
        cars = sum(r["is_car"] for r in rows)
        t.add_row(split, str(len(rows)), str(cars), f"{cars / len(rows):.4f}")
    for r in summary.suspects[:10]:
        t.add_row(f"  suspect: {r['path']}", "", f"{r['car_probability']:.3f}", r["top1"])
    return t


def titled_table(title: str, head: list[str], rows: list[list[str]]) -> Table:
    """A rich table of already formatted cells (the first column left-aligned, the rest right)."""
    t = Table(title=title)
    for i, col in enumerate(head):
        t.add_column(col, justify="left" if i == 0 else "right")
    for row in rows:
        t.add_row(*row)
    return t
