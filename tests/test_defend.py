"""Adversarial fine-tuning and distillation (robustcars.training.defences, train --adversarial / --distill-from)."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn
from torch.nn import functional as F

import robustcars.training.loop
from robustcars import storage as rio
from robustcars.errors import ConfigError
from robustcars.models.checkpoint import read_checkpoint
from robustcars.training import defences as defend
from robustcars.training.loop import fit

from .conftest import invoke_cli
from .test_train import StopAfter, cfg_for


def test_trades_loss_equals_its_formula_on_hand_made_logits():
    clean = torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.5, 0.0]])
    adv = torch.tensor([[1.0, 1.0, -1.0], [0.0, 2.0, 0.0]])
    y = torch.tensor([0, 1])
    p = [[math.exp(v) / sum(math.exp(u) for u in row) for v in row] for row in clean.tolist()]
    q = [[math.exp(v) / sum(math.exp(u) for u in row) for v in row] for row in adv.tolist()]
    ce = -(math.log(p[0][0]) + math.log(p[1][1])) / 2
    kl = sum(pi * math.log(pi / qi) for pr, qr in zip(p, q) for pi, qi in zip(pr, qr)) / 2
    assert defend.trades_loss(clean, adv, y, beta=6.0).item() == pytest.approx(ce + 6 * kl, rel=1e-6)
    assert defend.trades_loss(clean, clean, y, beta=6.0).item() == pytest.approx(ce, rel=1e-6)  # no gap, no KL


@pytest.mark.parametrize("defensive, scale", [(False, 1.0), (True, 100.0)])
def test_distillation_is_minimized_where_the_paper_says(defensive, scale):
    """Hinton: the soft term is minimal at s = t; defensive (Papernot): at s = T·t — logits T times larger."""
    torch.manual_seed(0)
    t = torch.randn(4, 5, dtype=torch.float64)  # float64: T² = 10⁴ magnifies float32 rounding
    y = t.argmax(1)
    s = (scale * t).requires_grad_(True)
    loss = defend.distillation_loss(s, t, y, temperature=100.0, alpha=1.0, defensive=defensive)
    (grad,) = torch.autograd.grad(loss, s)
    assert loss.item() == pytest.approx(0.0, abs=1e-9) and grad.abs().max().item() < 1e-9
    other = defend.distillation_loss((1.0 if defensive else 100.0) * t, t, y, 100.0, 1.0, defensive=defensive)
    assert other.item() > 1e-4


def test_warmup_collapse_and_generators():
    assert defend.warmup_eps(0.004, 1, 0.0, 1.0) == 0.0
    assert defend.warmup_eps(0.004, 1, 0.5, 1.0) == pytest.approx(0.002)
    assert defend.warmup_eps(0.004, 2, 0.0, 1.0) == 0.004 == defend.warmup_eps(0.004, 1, 0.0, 0.0)
    assert defend.warmup_eps(0.004, 2, 0.5, 2.0) == pytest.approx(0.003)
    assert not defend.collapsed(None, 0.0) and not defend.collapsed(0.5, 0.35) and defend.collapsed(0.5, 0.25)
    a, b = defend.batch_generator(0, 2, 3), defend.batch_generator(0, 2, 3)
    assert torch.equal(torch.rand(4, generator=a), torch.rand(4, generator=b))
    assert not torch.equal(torch.rand(4, generator=defend.batch_generator(0, 2, 4)), torch.rand(4, generator=b))


def _problem(n: int, g: torch.Generator):
    """Two classes: a faint shift of every pixel (easy, not robust) and a strong 2x2 patch (robust at eps 0.08)."""
    y = torch.randint(0, 2, (n,), generator=g)
    s = (2 * y - 1).float().view(-1, 1, 1, 1)
    x = 0.5 + 0.04 * s * torch.ones(n, 3, 8, 8) + 0.1 * torch.randn(n, 3, 8, 8, generator=g)
    x[:, :, :2, :2] = 0.5 + 0.2 * s
    return x.clamp(0, 1), y


def _train(method: str | None, x, y, epochs: int = 15) -> nn.Module:
    torch.manual_seed(1)
    model = nn.Sequential(nn.Flatten(), nn.Linear(192, 32), nn.ReLU(), nn.Linear(32, 2))
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    crit = nn.CrossEntropyLoss()
    for epoch in range(1, epochs + 1):
        loss_fn = defend.adversarial_batch_loss(method, lambda b: 0.08, 3, 6.0, 0, epoch, crit) if method else None
        for b in range(len(y) // 64):
            xb, yb = x[b * 64:(b + 1) * 64], y[b * 64:(b + 1) * 64]
            model.train()
            loss = loss_fn(model, xb, yb, b)[0] if loss_fn else crit(model(xb), yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval()


def test_adversarial_training_raises_pgd_robust_accuracy_on_a_separable_problem():
    g = torch.Generator().manual_seed(0)
    x, y = _problem(512, g)
    xt, yt = _problem(256, g)
    robust = {m: defend.robust_accuracy(_train(m, x, y), [(xt, yt)], 0.08) for m in (None, "pgd")}
    assert robust[None] < 0.8  # the standard model leans on the faint, non-robust shift
    assert robust["pgd"] >= robust[None] + 0.25 and robust["pgd"] > 0.95, robust


def test_adversarial_examples_leave_the_model_as_they_found_it():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(144, 3))
    x, y = torch.rand(6, 3, 8, 8), torch.randint(0, 3, (6,))
    model.train()
    model[0].weight.requires_grad_(False)  # a frozen layer stays frozen
    buffers = [b.clone() for b in model.buffers()]
    for method in ("fgsm-rs", "pgd", "trades"):
        xa = defend.adversarial_examples(model, x, y, method, 0.03, 3, defend.batch_generator(0, 1, 0))
        again = defend.adversarial_examples(model, x, y, method, 0.03, 3, defend.batch_generator(0, 1, 0))
        assert torch.equal(xa, again)  # seeded: a resumed run repeats them
        assert (xa - x).abs().max() <= 0.03 + 1e-6 and xa.min() >= 0 and xa.max() <= 1
        assert not torch.equal(xa, x)
    assert model.training and not model[0].weight.requires_grad and model[4].weight.requires_grad
    assert all(p.grad is None for p in model.parameters())
    assert all(torch.equal(a, b) for a, b in zip(buffers, model.buffers()))


def test_adversarial_run_resumes_exactly_and_records_its_settings(tiny_data, tmp_path):
    kw = dict(adversarial="pgd", train_eps=0.03, train_steps=2, robust_val_images=4, robust_val_steps=2, epochs=2)
    full = fit(cfg_for(tiny_data, tmp_path / "full", **kw))
    with pytest.raises(KeyboardInterrupt):
        fit(cfg_for(tiny_data, tmp_path / "cut", **kw), reporter=StopAfter(1))
    resumed = fit(cfg_for(tiny_data, tmp_path / "cut", **kw), resume=True)
    for a, b in zip(full.history, resumed.history):
        for key in ("train_loss", "val_robust_acc", "val_f1", "train_eps"):
            assert a[key] == pytest.approx(b[key], rel=1e-5), key
    assert [h["train_eps"] for h in full.history] == [0.03, 0.03]  # warmed up over epoch 1
    sa = read_checkpoint(tmp_path / "full" / "last.pt")["state_dict"]
    sb = read_checkpoint(tmp_path / "cut" / "last.pt")["state_dict"]
    assert all(torch.allclose(sa[k].float(), sb[k].float(), atol=1e-5) for k in sa)
    best = read_checkpoint(tmp_path / "full")
    assert best["defence"]["method"] == "pgd" and best["defence"]["eps"] == 0.03
    metrics = json.loads((tmp_path / "full" / "metrics.json").read_text())
    assert metrics["best_val_robust_acc"] == max(h["val_robust_acc"] for h in full.history)
    assert "val_robust_acc" in (tmp_path / "full" / "history.csv").read_text().splitlines()[0]


def test_the_fgsm_rs_guard_stops_on_a_collapse_and_keeps_the_best_epoch(tiny_data, tmp_path, monkeypatch):
    """Catastrophic overfitting: PGD accuracy on the held batch drops by > 0.2 → stop, report, best.pt before."""
    real = defend.robust_accuracy
    guard = iter([0.9, 0.85, 0.1])

    def fake(model, batches, eps, steps=10, seed=0):
        return next(guard) if len(batches) == 1 and len(batches[0][1]) == 8 and seed == 1 else real(
            model, batches, eps, steps, seed)
    monkeypatch.setattr(robustcars.training.loop, "robust_accuracy", fake)  # where the loop calls it
    res = fit(cfg_for(tiny_data, tmp_path / "run", adversarial="fgsm-rs", train_eps=0.03, robust_val_images=4,
                      robust_val_steps=2, epochs=5, eps_warmup=0))
    assert [h["epoch"] for h in res.history] == [1, 2, 3] and res.stopped_early
    assert [h["collapsed"] for h in res.history] == [False, False, True]
    # history.csv stays numeric, so report and the web app read it back (a bool column broke both)
    assert [h["collapsed"] for h in rio.read_history(tmp_path / "run" / "history.csv")] == [0.0, 0.0, 1.0]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["catastrophic_overfitting"] == {"epoch": 3, "guard_robust_acc_before": 0.85,
                                                   "guard_robust_acc": 0.1}
    assert read_checkpoint(tmp_path / "run")["epoch"] in (1, 2)  # never the collapsed epoch


def test_distillation_from_a_run(tiny_data, tmp_path):
    fit(cfg_for(tiny_data, tmp_path / "teacher", epochs=1))
    res = fit(cfg_for(tiny_data, tmp_path / "student", epochs=1, distill_from=str(tmp_path / "teacher"),
                      temperature=4.0, alpha=0.7))
    assert res.history and math.isfinite(res.history[0]["train_loss"])
    ckpt = read_checkpoint(tmp_path / "student")
    assert ckpt["defence"] == {"method": "distillation", "teacher": str(tmp_path / "teacher"), "temperature": 4.0,
                               "alpha": 0.7}


@pytest.mark.parametrize("args, message", [
    (["--adversarial", "pgd", "--train-eps", "2"], "--train-eps must be in (0, 1]"),
    (["--adversarial", "pgd", "--distill-from", "x"], "--adversarial and --distill-from cannot be combined"),
    (["--defensive"], "--defensive goes with --distill-from"),
    (["--distill-from", "nowhere"], "--distill-from nowhere not found"),
    (["--adversarial", "madry"], "Invalid value for '--adversarial'"),
])
def test_bad_defence_options_get_one_line(tmp_path, tiny_data, args, message):
    r = invoke_cli("train", "--data", tiny_data, "--out", tmp_path / "run", *args)
    assert r.exit_code == 2 and message in r.output and "Traceback" not in r.output
    assert not (tmp_path / "run").exists()


def test_kl_sum_is_what_trades_ascends():
    logits = torch.tensor([[1.0, 0.0], [0.0, 3.0]])
    p = F.softmax(torch.tensor([[0.0, 0.0], [0.0, 1.0]]), dim=1)
    q = F.softmax(logits, dim=1)
    assert defend.kl_sum(logits, p).item() == pytest.approx(float((p * (p / q).log()).sum()), rel=1e-6)


def test_config_refuses_bad_values():
    with pytest.raises(ConfigError, match="--alpha must be in"):
        cfg_for("d", "o", distill_from="r", alpha=1.5).validate()


def test_report_puts_standard_and_defended_side_by_side(tiny_data, tmp_path):
    fit(cfg_for(tiny_data, tmp_path / "std", epochs=1))
    fit(cfg_for(tiny_data, tmp_path / "adv", epochs=1, adversarial="trades", train_eps=0.03, train_steps=1,
                robust_val_images=4, robust_val_steps=1))
    for run in ("std", "adv"):
        r = invoke_cli("attack", "--run", tmp_path / run, "--attack", "fgsm", "--eps", 0.01, "--eps", 0.03,
                       "--batch-size", 4, "--workers", 0)
        assert r.exit_code == 0, r.output
    r = invoke_cli("report", tmp_path / "std", tmp_path / "adv", "--out", tmp_path / "rep")
    assert r.exit_code == 0, r.output
    report = json.loads((tmp_path / "rep" / "report.json").read_text())
    table = {row[0]: row[1:] for row in report["defence_comparison"]["rows"]}
    assert table["training"] == ["standard", "trades adversarial training, L∞ eps 0.03, 1 steps, beta 6"]
    accs = [m["metrics"]["test_acc"] for m in report["models"]]
    names = report["defence_comparison"]["head"][1:]
    assert names == ["resnet18 (none, 32 px)", "resnet18 (none, trades eps 0.03, 32 px)"]
    assert table[f"clean-accuracy cost vs {names[0]}"] == ["0.0000", f"{accs[0] - accs[1]:.4f}"]
    robust = [next(r["accuracy"] for r in m["attacks"][0]["rows"][1:] if r["eps"] == 0.03) for m in report["models"]]
    n = report["models"][0]["attacks"][0]["images"]
    assert table[f"fgsm ({n} images) @ 0.03: robust accuracy"] == [f"{a:.4f}" for a in robust]
    assert "Standard vs defended" in (tmp_path / "rep" / "report.md").read_text()


def test_history_files_of_earlier_versions_with_boolean_cells_are_read(tmp_path):
    path = tmp_path / "history.csv"
    path.write_text("epoch,val_acc,collapsed\n1,0.5,False\n2,0.25,True\n")
    assert rio.read_history(path) == [{"epoch": 1.0, "val_acc": 0.5, "collapsed": 0.0},
                                      {"epoch": 2.0, "val_acc": 0.25, "collapsed": 1.0}]
    path.write_text("epoch,val_acc\n1,abc\n")
    with pytest.raises(ValueError):
        rio.read_history(path)


def _model(name, defence, attacks):
    """A report's model entry by hand: attacks as (label, attack, params, image_set, {eps: accuracy})."""
    return {"name": name, "metrics": {"test_acc": 0.7, "defence": defence}, "suites": [],
            "attacks": [{"label": label, "attack": attack, "norm": "linf", "params": params, "image_set": ids,
                         "images": 64, "focus_eps": max(accs),
                         "rows": [{"eps": 0.0, "accuracy": 0.7}, *({"eps": e, "accuracy": a} for e, a in accs.items())]}
                        for label, attack, params, ids, accs in attacks]}


def test_defence_comparison_pairs_only_the_same_attack_on_the_same_images():
    from robustcars.reporting.report import defence_comparison

    fgsmrs = {"method": "fgsm-rs", "eps": 0.004}
    std = _model("std", None, [("pgd", "pgd", {"steps": 10}, "aaa", {0.002: 0.02}),
                               ("cascade", "cascade", {}, "bbb", {0.002: 0.0}),
                               ("pgd5", "pgd", {"steps": 5}, "aaa", {0.002: 0.05})])
    adv = _model("adv", fgsmrs, [("pgd", "pgd", {"steps": 10}, "aaa", {0.002: 0.28, 0.004: 0.08}),
                                 ("cascade", "cascade", {}, "ccc", {0.002: 0.12}),   # other images
                                 ("pgd", "pgd", {"steps": 7}, "aaa", {0.002: 0.3})])  # other parameters
    rows = {r[0]: r[1:] for r in defence_comparison([std, adv])["rows"]}
    assert rows["pgd (64 images) @ 0.002: robust accuracy"] == ["0.0200", "0.2800"]
    assert not any(k.startswith("cascade") for k in rows)  # 64 images each, but not the same ones
    assert not any("0.004" in k or k.startswith("pgd5") for k in rows)  # one model only


def test_comparison_columns_use_an_eps_both_models_have():
    from robustcars.reporting.report import comparison_rows

    std = _model("std", None, [("pgd", "pgd", {}, "a", {0.0005: 0.39, 0.002: 0.02})])
    adv = _model("adv", {"method": "fgsm-rs", "eps": 0.004},
                 [("pgd", "pgd", {}, "a", {0.0005: 0.55, 0.002: 0.28, 0.004: 0.08})])
    rows = comparison_rows([std, adv])
    assert [r["pgd @ 0.002"] for r in rows] == [0.02, 0.28]
    assert not any("pgd @ 0.004" in r for r in rows)
