"""robustcars study: a grid of tiny training configurations, its resume after kill -9, its report, the per-batch
spread of validation, and the check of the study's claim."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.metrics import f1_score
from torch import nn

from robustcars.errors import ConfigError, DataError
from robustcars.evaluation.study import load_study
from robustcars.reporting.study_report import StudyRow, check_claim
from robustcars.training.loop import batch_spread, evaluate
from tests.conftest import cli_process, invoke_cli, kill_9_after, make_folder_dataset

GRID = """
title = "tiny grid"
claim = "a ≈ b ≫ c"

[base]
arch = "resnet18"
weights = "none"
img_size = 32
batch_size = 4
workers = 0
epochs = 2

[[config]]
name = "a"

[[config]]
name = "b"
epochs = 4
lr = 0.002

[[config]]
name = "c"
freeze = 8

[attack]
attack = "fgsm"
eps = [0.01, 0.03]
"""


def _history(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _strip_seconds(rows):
    return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]


# --- the per-batch spread of validation -----------------------------------------------------------


def test_batch_spread_equals_numpy_on_a_hand_made_loader():
    """Batch losses, batch macro-F1 and their mean and std are numpy's and scikit-learn's on the same logits."""
    torch.manual_seed(3)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 4))
    xs = [torch.rand(n, 3, 2, 2) for n in (5, 5, 3)]  # an incomplete last batch
    ys = [torch.tensor(y) for y in ([0, 1, 2, 3, 0], [1, 1, 2, 0, 3], [2, 0, 1])]
    loader = list(zip(xs, ys))
    va = evaluate(model, loader, torch.device("cpu"))
    losses, f1s = [], []
    with torch.no_grad():
        for x, y in loader:
            z = model(x).double().numpy()
            logp = z - z.max(1, keepdims=True) - np.log(np.exp(z - z.max(1, keepdims=True)).sum(1, keepdims=True))
            losses.append(-logp[np.arange(len(y)), y.numpy()].mean())
            f1s.append(f1_score(y.numpy(), z.argmax(1), labels=np.unique(y.numpy()), average="macro", zero_division=0))
    np.testing.assert_allclose(va["batch_loss"], losses, rtol=1e-5)
    np.testing.assert_allclose(va["batch_f1"], f1s, rtol=1e-12)
    spread = batch_spread(va)
    assert spread["val_loss_batch_mean"] == pytest.approx(np.mean(losses), rel=1e-5)
    assert spread["val_loss_batch_std"] == pytest.approx(np.std(losses), rel=1e-4)
    assert spread["val_f1_batch_mean"] == pytest.approx(np.mean(f1s), rel=1e-12)
    assert spread["val_f1_batch_std"] == pytest.approx(np.std(f1s), rel=1e-12)
    assert np.std(f1s) > 0  # the batches differ: a std of 0 would not tell a broken spread from a right one
    # the pooled numbers stay over all images (the batch mean of the loss weighs the short batch like the others)
    assert va["loss"] == pytest.approx(np.average(losses, weights=[5, 5, 3]), rel=1e-5)


# --- the study file ----------------------------------------------------------------------------------


@pytest.mark.parametrize("text, message", [
    ("[[config]]\nname = 'a'\nepochz = 3\n", "unknown train option(s) epochz"),
    ("[[config]]\nname = 'a'\n[[config]]\nname = 'a'\n", "used twice"),
    ("[[config]]\nname = '../x'\n", "folder name"),
    ("title = 'no configurations'\n", "at least one [[config]]"),
    ("[[config]]\nname = 'a'\n[attack]\neps = 'big'\n", "eps must be a number"),
    ("claim = 'a ≫ z'\n[[config]]\nname = 'a'\n", "names z"),
    ("[[config]\n", "not a readable TOML"),
    ("[bases]\n[[config]]\nname = 'a'\n", "unknown key(s) bases"),
])
def test_load_study_refuses_bad_files(tmp_path, text, message):
    path = tmp_path / "s.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        load_study(path)


def test_study_with_a_refused_option_writes_nothing(tmp_path):
    """Every configuration is validated before anything is written: the third one's bad freeze stops the study
    with one error line and exit 2, and --out is not created."""
    data = make_folder_dataset(tmp_path / "cars")
    path = tmp_path / "s.toml"
    path.write_text(GRID.replace("freeze = 8", "freeze = 10"))
    r = invoke_cli("study", path, "--data", data, "--out", tmp_path / "out")
    assert r.exit_code == 2, r.output
    assert r.output.strip().startswith("error:") and "configuration c" in r.output and "--freeze" in r.output
    assert not (tmp_path / "out").exists()


# --- a study of three tiny configurations ------------------------------------------------------------


def test_study_resumes_after_kill_9_without_retraining_and_reports(tmp_path):
    data = make_folder_dataset(tmp_path / "cars")
    path = tmp_path / "grid.toml"
    path.write_text(GRID)
    out = tmp_path / "out"
    proc = cli_process("study", path, "--data", data, "--out", out, "--threads", 1)
    kill_9_after(proc, out / "b" / "history.csv", lines=3)  # header + 2 of b's 4 epochs: a is finished
    a_files = {p.name: p.read_bytes() for p in (out / "a").iterdir() if p.is_file()}
    assert "metrics.json" in a_files and (out / "a" / "fgsm" / "attack.json").is_file()
    b_before = _strip_seconds(_history(out / "b" / "history.csv"))
    assert not (out / "b" / "metrics.json").exists() and not (out / "c").exists()

    again = invoke_cli("study", path, "--data", data, "--out", out)
    assert again.exit_code == 2 and "--resume" in again.output  # a study folder is never overwritten
    r = invoke_cli("study", path, "--data", data, "--out", out, "--threads", 1, "--resume")
    assert r.exit_code == 0, r.output
    assert "configuration 1/3: a (done)" in r.output and "configuration 2/3: b (resumed)" in r.output
    assert {p.name: p.read_bytes() for p in (out / "a").iterdir() if p.is_file()} == a_files  # a not retrained
    b = _history(out / "b" / "history.csv")
    assert [int(h["epoch"]) for h in b] == [1, 2, 3, 4] and _strip_seconds(b)[: len(b_before)] == b_before
    assert len(_history(out / "c" / "history.csv")) == 2
    batches = _history(out / "b" / "val_batches.csv")
    assert len(batches) == 4 * 3  # 4 epochs x 3 validation batches of <= 4 of the 9 images
    for h in b:  # history's spread is the spread of the side file's batches
        rows = [r for r in batches if r["epoch"] == h["epoch"]]
        assert float(h["val_f1_batch_std"]) == pytest.approx(np.std([float(r["f1"]) for r in rows]), abs=1e-12)
    meta = json.loads((out / "study.json").read_text())
    assert meta["configs"]["b"]["epochs"] == 4 and meta["configs"]["b"]["lr"] == 0.002
    assert meta["configs"]["c"]["freeze"] == 8 and meta["threads"] == 1

    changed = tmp_path / "changed.toml"
    changed.write_text(GRID.replace("lr = 0.002", "lr = 0.003"))
    r = invoke_cli("study", changed, "--data", data, "--out", out, "--threads", 1, "--resume")
    assert r.exit_code == 2 and "different study" in r.output

    rep = tmp_path / "rep"
    r = invoke_cli("report", out, "--out", rep)
    assert r.exit_code == 0, r.output
    report = json.loads((rep / "report.json").read_text())
    assert report["title"] == "tiny grid"
    titles = [t["title"] for t in report["tables"]]
    assert titles[0].startswith("Training") and titles[1].startswith("Test split")
    table2, table3 = report["tables"][0], report["tables"][1]
    assert [r[0] for r in table2["rows"]] == ["a", "b", "c"]
    assert table3["head"][:4] == ["configuration", "clean acc", "clean F1", "clean entropy"]
    assert "fgsm 0.01 acc" in table3["head"] and "fgsm 0.03 acc" in table3["head"]
    attack = json.loads((out / "b" / "fgsm" / "attack.json").read_text())
    eps01 = next(r for r in attack["rows"] if r["eps"] == 0.01)
    b_row = next(r for r in table3["rows"] if r[0] == "b")
    assert b_row[table3["head"].index("fgsm 0.01 acc")] == f"{eps01['accuracy']:.4f}"
    for key in ("val_loss", "val_f1"):
        png = rep / report["figures"][key]
        assert Image.open(png).size[0] > 300
    assert report["claim"]["claim"] == "a ≈ b ≫ c" and isinstance(report["claim"]["holds"], bool)
    html = (rep / "index.html").read_text()
    assert "Validation curves" in html and "study_val_f1.png" in html and "The study" in html


def test_banded_figure_draws_mean_and_plus_minus_one_std(tmp_path):
    from matplotlib.collections import PolyCollection

    import robustcars.reporting.figures as F

    seen = {}
    real_save = F._save

    def keep(fig, path):
        seen["fig"] = fig
        return real_save(fig, path)

    F._save = keep
    try:
        F.banded_curves({"x": ([1, 2, 3], [0.2, 0.5, 0.6], [0.1, 0.05, 0.0])}, tmp_path / "f.png", ylabel="F1",
                        title="t")
    finally:
        F._save = real_save
    ax = seen["fig"].axes[0]
    assert list(ax.lines[0].get_ydata()) == [0.2, 0.5, 0.6]
    band = next(c for c in ax.collections if isinstance(c, PolyCollection))
    ys = band.get_paths()[0].vertices[:, 1]
    assert min(ys) == pytest.approx(0.1) and max(ys) == pytest.approx(0.6)
    assert (tmp_path / "f.png").stat().st_size > 1000


# --- the claim -----------------------------------------------------------------------------------


def _row(name: str, f1: float | None) -> StudyRow:
    return StudyRow(name, "imagenet", 0, None, None, 1, 1, None, None, None, None, None, f1, None, {}, 0.0, True)


@pytest.mark.parametrize("f1s, holds", [
    ({"p": 0.80, "f": 0.79, "s": 0.10, "l": 0.12}, True),
    ({"p": 0.80, "f": 0.70, "s": 0.10, "l": 0.12}, False),  # p and f 0.10 apart: not ≈
    ({"p": 0.80, "f": 0.79, "s": 0.10, "l": 0.72}, False),  # l within 0.07 of f: not ≫, and s, l not ≈
    ({"p": 0.80, "f": 0.79, "s": None, "l": 0.12}, None),  # s not finished yet
])
def test_claim_is_judged_on_test_macro_f1(f1s, holds):
    result = check_claim("p ≈ f ≫ s ~ l", [_row(n, v) for n, v in f1s.items()])
    assert result["holds"] is holds
    if holds is not None:
        gaps = {s["relation"]: s["gap"] for s in result["steps"]}
        assert gaps["p ≈ f ≫ s ≈ l"] == pytest.approx(min(f1s["p"], f1s["f"]) - max(f1s["s"], f1s["l"]))
        assert not math.isnan(gaps["p ≈ f"])


def test_claim_naming_an_unknown_configuration_is_refused():
    with pytest.raises(DataError, match="names q"):
        check_claim("p ≫ q", [_row("p", 0.5)])
