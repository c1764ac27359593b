"""Transfer (black-box) evaluation: adversarial examples saved on one model (``attack --save-adv``), re-scored
on other models, whose weights the attack never saw (Papernot et al. 2016, "Transferability in machine
learning"; Tramèr et al. 2017, "The space of transferable adversarial examples").

Each target gets an ordinary attack folder (``attack.json``, ``records.jsonl``, ``attack.csv``,
``model_card.json``: the same record format, read by the same reader) whose ``transfer`` section names the
source. Forward passes only; the records are written once, atomically, when every image is scored, so an
interrupted transfer leaves nothing half-written and is simply run again.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from robustcars import storage as rio
from robustcars.config import AttackConfig
from robustcars.errors import ConfigError, DataError
from robustcars.evaluation.checks import sanity_checks
from robustcars.evaluation.model_card import CARD_NAME, attack_card
from robustcars.evaluation.runner import batch_records, score_examples
from robustcars.evaluation.saved import SavedExamples, load_saved
from robustcars.evaluation.summary import summarize
from robustcars.lock import output_lock
from robustcars.models.source import ModelSource, check_logits, from_run
from robustcars.registry import ATTACK_KIND
from robustcars.reporting.results import load_attack
from robustcars.runtime import library_versions, resolve_device

SCHEMA_VERSION = 2


def _check_target(target: ModelSource, saved: SavedExamples, source_meta: dict[str, Any], run: str) -> None:
    """The target must classify the same classes, in the same order, at the examples' size.

    Raises:
        ConfigError: another class list or input size.
    """
    names = source_meta["data"].get("class_names") or source_meta.get("class_names")
    if names is not None and list(names) != target.class_names:
        raise ConfigError(f"{run} classifies other classes (or another class order) than the model the examples "
                          "were made on")
    size = tuple(saved.clean.shape[-2:])
    if size != (target.img_size, target.img_size):
        raise ConfigError(f"the saved examples are {size[0]}x{size[1]} px; {run} takes {target.img_size} px "
                          "(transfer between models of one input size)")


def run_transfer(saved_dir: str | Path, runs: list[str | Path], outs: list[str | Path] | None = None, *,
                 batch_size: int = 64, device: str = "auto", command: str = "",
                 progress: Callable[[str, int], Any] | None = None) -> list[dict[str, Any]]:
    """Score the examples saved in ``saved_dir`` on each robustcars run of ``runs``; one attack folder each.

    Every target is checked (readable, same classes, same input size, finite logits, a free output folder)
    before the first is scored. ``outs`` default: :func:`default_out`. ``progress(description, total)``, when
    given, returns an object with ``advance(images)`` and ``stop()`` (e.g. :func:`robustcars.console.progress_bar`).

    Returns each target's ``attack.json`` content (``transfer``: source folder, model, attack and its rows).

    Raises:
        ConfigError: an output folder that already holds results or is a file, a target of other classes or
            input size, two targets writing to one folder.
        DataError, CheckpointError: no saved examples in ``saved_dir``; a run that cannot be read.
    """
    saved_dir = Path(saved_dir).resolve()
    check_saved(saved_dir)
    outs = [Path(o).resolve() for o in (outs or [default_out(saved_dir, r) for r in runs])]
    if len(set(outs)) != len(outs):
        raise ConfigError("two targets would write into one folder; give each its own --out")
    source = load_attack(saved_dir)
    saved = load_saved(saved_dir)
    targets = []
    for run, out in zip(runs, outs):
        target = from_run(str(Path(run).resolve()))  # recorded resolved: the reproduce line works from anywhere
        _check_target(target, saved, source.meta, str(run))
        if out.exists() and not out.is_dir():
            raise ConfigError(f"--out {out} is a file; choose a folder")
        if (out / "attack.json").exists() or (out / "records.jsonl").exists():
            raise ConfigError(f"{out} already holds results; choose another --out")
        model = target.make().to(resolve_device(device))
        with torch.inference_mode():
            check_logits(model(saved.clean[:1].to(_device(model))), target.num_classes, target.arch)
        targets.append((target, model, out))
    results = []
    for target, model, out in targets:
        with output_lock(out):
            bar = progress(f"scoring on {target.arch} ({Path(target.info['checkpoint']).parent.name})",
                           len(saved.index)) if progress else None
            try:
                results.append(_score_and_write(saved, source.meta, target, model, out, batch_size,
                                                (str(saved_dir), command), bar.advance if bar else None))
            finally:
                if bar:
                    bar.stop()
    return results


def _device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def _score_and_write(saved: SavedExamples, source_meta: dict[str, Any], target: ModelSource, model, out: Path,
                     batch_size: int, origin: tuple[str, str], advance: Callable[[int], Any] | None = None
                     ) -> dict[str, Any]:

    dev = _device(model)
    t0 = time.perf_counter()
    records: list[dict[str, Any]] = []
    for start in range(0, len(saved.index), batch_size):
        sl = slice(start, start + batch_size)
        x, y = saved.clean[sl].to(dev), saved.label[sl].to(dev)
        scored = score_examples(model, x, y, [a[sl].to(dev) for a in saved.adv])
        records += batch_records(scored, saved.index[sl].tolist(), saved.paths[sl], saved.eps)
        if advance:
            advance(len(y))
    seconds = time.perf_counter() - t0
    cfg = AttackConfig(**{**source_meta["config"], "run": target.info["checkpoint"], "model": None, "out": str(out)})
    tm = source_meta["threat_model"]
    summary = summarize(records, saved.eps, cfg.attack, tm["norm"], num_classes=target.num_classes)
    summary["checks"] = sanity_checks(summary["rows"], records, saved.eps, None, len(records), tm["norm"])
    reproduce = f"robustcars transfer {origin[0]} --run {target.info['checkpoint']} --out {out}"
    result = {
        "schema_version": SCHEMA_VERSION, "kind": ATTACK_KIND, "command": origin[1] or reproduce,
        "reproduce": reproduce, "config": asdict(cfg), "run": target.info, "data": source_meta["data"],
        "threat_model": tm,
        "transfer": {"source": origin[0], "source_run": source_meta["run"], "source_attack": cfg.attack,
                     "source_rows": source_meta["rows"]},
        "cost": {"seconds": round(seconds, 2), "forward_backward_passes_per_image": None,
                 "forward_passes_per_image": 2 * (1 + len(saved.eps)), "resumed_images": 0, "processes": 1},
        "device": str(dev), "versions": library_versions(), "figures": [], **summary,
    }
    rio.write_text(out / "records.jsonl", "".join(json.dumps(r) + "\n" for r in records))
    rio.write_csv(out / "attack.csv", summary["rows"])
    rio.write_json(out / CARD_NAME, attack_card(result))
    rio.write_json(out / "attack.json", result)
    return result


def default_out(saved_dir: str | Path, run: str | Path) -> Path:
    """``SAVED/transfer/<target run folder name>``."""
    run = Path(run)
    return Path(saved_dir) / "transfer" / (run.name if run.is_dir() else run.parent.name)


def check_saved(saved_dir: str | Path) -> None:
    """Raises DataError when ``saved_dir`` is not a finished attack folder with saved examples."""
    if not (Path(saved_dir) / "attack.json").is_file():
        raise DataError(f"{saved_dir} is not a finished attack folder (no attack.json)")
    if not (Path(saved_dir) / "adv" / "manifest.csv").is_file():
        raise DataError(f"{saved_dir} holds no saved adversarial examples; attack with --save-adv")


__all__ = ["check_saved", "default_out", "run_transfer"]

