"""What the Runs page shows: run folders with their metrics and attack results, and report folders. Only
small JSON files are read (results.read_json_file); no checkpoint or dataset is loaded."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from robustcars.errors import DataError
from robustcars.reporting.results import attack_dirs, read_json_file, split_rows


def _json(path: Path) -> dict[str, Any]:
    try:
        return read_json_file(path, path.name) if path.is_file() else {}
    except DataError:
        return {}


def _inside(root: Path) -> list[Path]:
    """The entries of ``root`` that resolve inside it: a link to a folder elsewhere is not listed (the files
    behind it are refused too, by :func:`robustcars.web.paths.inside`)."""
    base = root.resolve()
    return [p for p in root.iterdir() if p.resolve().parent == base]


def list_runs(root: Path, jobs) -> list[dict[str, Any]]:
    """One entry per folder of ``root`` holding a run (best.pt) or a job, newest first."""
    out = []
    for run in sorted((p for p in _inside(root) if p.is_dir()), key=lambda p: p.stat().st_mtime, reverse=True):
        job = jobs.jobs.get(run.name)
        if not (run / "best.pt").is_file() and job is None:
            continue
        config, metrics = _json(run / "config.json"), _json(run / "metrics.json")
        attacks = []
        for d in attack_dirs(run):
            meta = _json(d / "attack.json")
            if not meta.get("rows"):
                continue
            attacks.append({"label": str(d.relative_to(run)), "attack": meta["config"]["attack"],
                            "norm": meta["threat_model"]["norm"], "images": meta["data"]["images"],
                            "clean_accuracy": split_rows(meta["rows"])[0]["accuracy"],
                            "robust_accuracy": {f"{r['eps']:g}": r["accuracy"] for r in split_rows(meta["rows"])[1]}})
        out.append({"name": run.name, "arch": config.get("arch"), "img_size": config.get("img_size"),
                    "weights": config.get("weights"), "trained": (run / "best.pt").is_file(),
                    "test_accuracy": metrics.get("test_acc"), "test_macro_f1": metrics.get("test_f1"),
                    "best_epoch": metrics.get("best_epoch"), "epochs_run": metrics.get("epochs_run"),
                    "job": None if job is None else {"state": job.state, "id": job.id}, "attacks": attacks})
    return out


def list_reports(root: Path) -> list[dict[str, Any]]:
    """Report folders of ``root`` (report.json + index.html) with their title and date."""
    out = []
    for d in sorted(p for p in _inside(root) if (p / "report.json").is_file()):
        rep = _json(d / "report.json")
        out.append({"name": d.name, "title": rep.get("title", d.name), "created": rep.get("created"),
                    "models": len(rep.get("models", [])), "url": f"/reports/{d.name}/index.html"})
    return out


def list_datasets(root: Path) -> list[str]:
    """Class-folder datasets the training form offers: ``.`` when ``root`` itself holds ``train/``, and every
    folder under it (one or two levels down) that does, relative to ``root``; sorted."""
    if not root.is_dir():
        return []
    found = ["."] if (root / "train").is_dir() else []
    for pattern in ("*/train", "*/*/train"):
        found += sorted(str(p.parent.relative_to(root)) for p in root.glob(pattern) if p.is_dir())
    return found
