"""benchmarks/agreement.py: robust counts and per-image verdict agreement of two attack folders."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "agreement.py"


def _module():
    spec = importlib.util.spec_from_file_location("agreement", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _folder(path: Path, preds: list[list[int]], labels: list[int], clean: list[int], passes: float) -> Path:
    path.mkdir()
    lines = [{"index": i, "path": f"img{i}.jpg", "label": labels[i], "clean_pred": clean[i],
              "adv": [{"eps": e, "pred": p[i]} for e, p in zip((0.001, 0.002), preds, strict=True)]}
             for i in range(len(labels))]
    (path / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    (path / "attack.json").write_text(json.dumps({"cost": {"forward_backward_passes_per_image": passes}}))
    return path


def test_agreement_counts_robust_images_and_disagreements(tmp_path):
    labels, clean = [0, 1, 2, 3], [0, 1, 2, 0]  # image 3 misclassified clean: never robust
    ref = _folder(tmp_path / "ref", [[0, 1, 9, 3], [0, 9, 9, 3]], labels, clean, 100.0)
    other = _folder(tmp_path / "other", [[0, 9, 9, 3], [0, 9, 9, 3]], labels, clean, 10.0)
    out = _module().compare(ref, other)
    assert out["clean_correct"] == 3
    assert [(r["robust_reference"], r["robust_other"], r["agreement"]) for r in out["eps"]] == [(2, 1, 0.75),
                                                                                                 (1, 1, 1.0)]
    assert out["cost"]["reference"]["forward_backward_passes_per_image"] == 100.0


def test_agreement_refuses_folders_of_different_images(tmp_path):
    ref = _folder(tmp_path / "ref", [[0], [0]], [0], [0], 1.0)
    other = _folder(tmp_path / "other", [[0, 1], [0, 1]], [0, 1], [0, 1], 1.0)
    with pytest.raises(SystemExit, match="different images"):
        _module().compare(ref, other)
