"""AutoAttack's attacks through pyautoattack, on a tiny model: threat model, the eps cascade, hidden state."""

from __future__ import annotations

import json

import pytest
import torch

from robustcars.attacks import get_attack

from .conftest import invoke_cli, train_tiny_run
from .test_attacks import labelled_batch

pytest.importorskip("pyautoattack")
FAST = {"apgd_ce": {"n_iter": 5}, "apgd_t": {"n_iter": 5, "n_target_classes": 2},
        "fab_t": {"n_iter": 5, "n_target_classes": 2}, "square": {"n_queries": 30},
        "autoattack": {"n_iter": 5, "n_target_classes": 2, "n_queries": 30}}
EPS = {"linf": [0.0, 0.01, 0.05, 0.2], "l2": [0.0, 0.1, 0.5, 1.0]}


@pytest.fixture
def problem():
    return labelled_batch(16, 3)  # 3 images the model already gets wrong: never attacked


def accuracy(model, x, y):
    with torch.no_grad():
        return (model(x).argmax(1) == y).float().mean().item()


@pytest.mark.parametrize("name", list(FAST))
@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_inside_the_ball_cascading_and_without_hidden_state(problem, name, norm):
    model, x, y = problem
    attack = get_attack(name + ("_l2" if norm == "l2" else ""), **FAST[name])
    model.train()  # the mode is the caller's: left as it is
    attack(model, x[:4], y[:4], [0.05])
    assert model.training
    model.eval()
    flags = [p.requires_grad for p in model.parameters()]
    rng = torch.get_rng_state()
    eps = EPS[norm]
    out = attack(model, x, y, eps)
    assert torch.equal(rng, torch.get_rng_state())  # pyautoattack's manual_seed did not leak
    assert not model.training and [p.requires_grad for p in model.parameters()] == flags
    assert all(p.grad is None for p in model.parameters())
    assert torch.equal(out.adv[0], x)  # eps 0 changes nothing
    accs = [accuracy(model, a, y) for a in out.adv]
    assert accs == sorted(accs, reverse=True) and accs[-1] < accs[0]
    for e, a in zip(eps, out.adv):
        d = (a - x).flatten(1)
        size = d.abs().amax(1) if norm == "linf" else d.norm(dim=1)
        assert (size <= e + 1e-5).all() and a.min() >= 0 and a.max() <= 1
    # an image fooled at a smaller eps keeps that very adversarial example at the larger ones
    with torch.no_grad():
        fooled = [model(a).argmax(1) != y for a in out.adv]
    for k in range(1, len(eps) - 1):
        kept = fooled[k] & (model(x).argmax(1) == y)
        assert torch.equal(out.adv[k + 1][kept], out.adv[k][kept])
    assert torch.equal(out.adv[-1][:3], x[:3])  # misclassified images are never sent


def test_the_standard_sequence_is_the_worst_case_of_its_parts(problem):
    model, x, y = problem
    seq = get_attack("autoattack", **FAST["autoattack"])(model, x, y, EPS["linf"]).adv
    for name in ("apgd_ce", "apgd_t", "fab_t", "square"):
        part = get_attack(name, **FAST[name])(model, x, y, EPS["linf"]).adv
        assert all(accuracy(model, s, y) <= accuracy(model, p, y) + 1e-9 for s, p in zip(seq, part)), name


@pytest.mark.parametrize("params, message", [({"n_iter": 0}, r"n_iter must be an integer in \[1, 10000\]"),
                                             ({"n_target_classes": 2}, "apgd_ce: unknown parameter")])
def test_bad_parameters(params, message):
    from robustcars.errors import ConfigError

    with pytest.raises(ConfigError, match=message):
        get_attack("apgd_ce", **params)


def test_cli_runs_autoattack_entries(tmp_path):
    data, run = train_tiny_run(tmp_path / "three")
    r = invoke_cli("attack", "--run", run, "--attack", "apgd_t", "--out", tmp_path / "no")
    assert r.exit_code == 2 and "apgd_t needs a model of at least 4 classes, this one has 3" in r.output
    data, run = train_tiny_run(tmp_path, classes=4)
    r = invoke_cli("attack", "--run", run, "--attack", "apgd_t", "--param", "n_target_classes=9", "--out",
                   tmp_path / "no")
    assert r.exit_code == 2 and "n_target_classes must be at most 3 (classes - 1), got 9" in r.output
    assert not (tmp_path / "no").exists()
    out = tmp_path / "aa"
    r = invoke_cli("attack", "--run", run, "--attack", "autoattack", "--param", "n_iter=3", "--param",
                   "n_target_classes=2", "--param", "n_queries=20", "--eps", 0.02, "--eps", 0.1, "--batch-size", 4,
                   "--workers", 0, "--out", out)
    assert r.exit_code == 0, r.output
    meta = json.loads((out / "attack.json").read_text())
    assert [row["attack"] for row in meta["rows"]] == ["clean", "autoattack", "autoattack"]
    assert all(c["ok"] for c in meta["checks"] if c["name"] in ("inside_eps_ball", "accuracy_non_increasing_in_eps"))
    assert meta["cost"]["forward_backward_passes_per_image"] > 0


def _rec(path, label, clean, preds_by_eps):
    return {"path": path, "label": label, "clean_pred": clean,
            "adv": [{"eps": e, "pred": p} for e, p in preds_by_eps]}


def _meta(attack, norm="linf", accs=(), target=None, images=4):
    return {"config": {"attack": attack, "split": "test", "max_images": None, "seed": 0},
            "threat_model": {"norm": norm, "params": {} if target is None else {"target": target}},
            "data": {"images": images},
            "rows": [{"attack": "clean", "accuracy": 1.0}]
            + [{"attack": attack, "eps": e, "accuracy": a} for e, a in accs]}


def test_worst_case_row_and_each_attacks_contribution():
    from robustcars.evaluation.checks import worst_case

    # four images of class 0; image d is misclassified clean
    pgd = [_rec("a", 0, 0, [(0.01, 1), (0.02, 1)]), _rec("b", 0, 0, [(0.01, 0), (0.02, 0)]),
           _rec("c", 0, 0, [(0.01, 0), (0.02, 0)]), _rec("d", 0, 2, [(0.01, 2), (0.02, 2)])]
    apgd = [_rec("a", 0, 0, [(0.02, 1)]), _rec("b", 0, 0, [(0.02, 1)]), _rec("c", 0, 0, [(0.02, 0)]),
            _rec("d", 0, 2, [(0.02, 2)])]
    rows = worst_case({"pgd": (_meta("pgd"), pgd), "apgd": (_meta("apgd_ce"), apgd)})
    by_eps = {r["eps"]: r for r in rows}
    assert by_eps[0.01]["accuracy"] == 0.5 and by_eps[0.01]["only_broken_by"] == {"pgd": 1, "apgd": 0}
    assert by_eps[0.02]["accuracy"] == 0.25 and by_eps[0.02]["only_broken_by"] == {"pgd": 0, "apgd": 1}
    for e, acc in ((0.01, 0.5), (0.02, 0.5)):  # never above any single attack's accuracy at that eps
        assert by_eps[e]["accuracy"] <= acc


def test_a_weak_own_pgd_is_flagged_against_autoattack():
    from robustcars.evaluation.checks import weaker_than_reference

    strong = weaker_than_reference({"pgd": _meta("pgd", accs=[(0.01, 0.305)]),
                                    "aa": _meta("apgd_ce", accs=[(0.01, 0.30)])})
    assert [(c["name"], c["ok"]) for c in strong] == [("pgd_not_weaker_than_aa", True)]
    [weak] = weaker_than_reference({"pgd": _meta("pgd", accs=[(0.01, 0.58)]),
                                    "aa": _meta("apgd_ce", accs=[(0.01, 0.52)])})
    assert not weak["ok"] and abs(weak["value"] - 0.06) < 1e-9 and weak["eps"] == [0.01]
    assert weaker_than_reference({"pgd": _meta("pgd", accs=[(0.01, 0.9)], target="least_likely"),
                                  "aa": _meta("apgd_ce", accs=[(0.01, 0.5)])}) == []  # targeted: not compared


def test_pgd_is_checked_against_minimum_norm_attacks_of_its_own_norm():
    """DeepFool L∞'s minimal norms give a robust accuracy per eps: PGD above it is flagged; L2 ones are not used."""
    from robustcars.evaluation.checks import weaker_than_reference

    [flag] = weaker_than_reference({"pgd": _meta("pgd", accs=[(0.01, 0.40), (0.02, 0.30)]),
                                    "df": _meta("deepfool_linf", accs=[(0.01, 0.35), (0.02, 0.05)])})
    assert flag["name"] == "pgd_not_weaker_than_df" and not flag["ok"] and flag["eps"] == [0.01, 0.02]
    assert abs(flag["value"] - 0.25) < 1e-9
    assert weaker_than_reference({"pgd": _meta("pgd", accs=[(0.01, 0.40)]),
                                  "df": _meta("deepfool_linf", accs=[(0.01, 0.41)])})[0]["ok"]
    assert weaker_than_reference({"pgd": _meta("pgd", accs=[(0.01, 0.9)]),  # another norm: not comparable
                                  "cw": _meta("cw_l2", norm="l2", accs=[(0.01, 0.1)])}) == []
    assert weaker_than_reference({"pgd": _meta("pgd_l2", norm="l2", accs=[(0.5, 0.9)]),  # EAD's objective is
                                  "ead": _meta("ead", norm="l2", accs=[(0.5, 0.1)])}) == []  # not its L2 norm
    assert not weaker_than_reference({"pgd": _meta("pgd_l2", norm="l2", accs=[(0.5, 0.9)]),
                                      "cw": _meta("cw_l2", norm="l2", accs=[(0.5, 0.1)])})[0]["ok"]


def test_suite_with_a_weak_pgd_and_apgd_gets_the_flag_and_a_worst_case_row(tmp_path):
    """A deliberately weak PGD (1 step, tiny step size) is flagged against APGD-CE; a strong one is not."""
    data, run = train_tiny_run(tmp_path, classes=4)
    suite = tmp_path / "s.toml"
    suite.write_text('[[attack]]\nname = "pgd"\nlabel = "weak"\neps = [0.05, 0.2]\nsteps = 1\nalpha = 0.0001\n'
                     'random_start = false\n'
                     '[[attack]]\nname = "pgd"\nlabel = "strong"\neps = [0.05, 0.2]\nsteps = 20\n'
                     '[[attack]]\nname = "apgd_ce"\neps = [0.05, 0.2]\nn_iter = 20\n')
    r = invoke_cli("attack", "--run", run, "--suite", suite, "--batch-size", 4, "--workers", 0, "--out", tmp_path / "o")
    assert r.exit_code == 0, r.output
    summary = json.loads((tmp_path / "o" / "suite.json").read_text())
    checks = {c["name"]: c for c in summary["checks"]}
    assert not checks["weak_not_weaker_than_apgd_ce"]["ok"]
    assert checks["strong_not_weaker_than_apgd_ce"]["ok"], checks["strong_not_weaker_than_apgd_ce"]
    assert summary["checks"][0]["name"].endswith("_not_weaker_than_apgd_ce")  # listed first
    worst = {row["eps"]: row for row in summary["worst_case"]}
    accs = {(row["label"], row["eps"]): row["accuracy"] for row in summary["rows"] if "label" in row}
    for e in (0.05, 0.2):
        assert worst[e]["accuracy"] <= min(accs[(lab, e)] for lab in ("weak", "strong", "apgd_ce")) + 1e-9
    assert "worst case (linf, 3 attacks" in r.output
    r = invoke_cli("report", tmp_path / "o", "--out", tmp_path / "rep")  # the flag first, the worst case headline
    assert r.exit_code == 0, r.output
    report = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert report["failed_checks"][0]["name"] == "weak_not_weaker_than_apgd_ce"
    assert any(k.startswith("worst case (s, linf) @ ") for k in report["comparison"][0])
    assert "worst case over its attacks" in (tmp_path / "rep" / "report.md").read_text()


def test_the_default_number_of_targets_fits_the_class_count():
    from robustcars.registry import fit_to_classes

    assert fit_to_classes("apgd_t", {}, 6) == {"n_target_classes": 5}
    assert fit_to_classes("apgd_t", {"n_target_classes": 3}, 6) == {"n_target_classes": 3}  # given: kept
    assert fit_to_classes("apgd_t", {}, 196) == {}  # the default 9 holds
    assert fit_to_classes("pgd", {"steps": 3}, 6) == {"steps": 3}
    cascade = {"attacks": [{"name": "pgd", "label": "p"}, {"name": "fab_t", "label": "f", "n_iter": 2}]}
    assert fit_to_classes("cascade", cascade, 4)["attacks"][1] == {"name": "fab_t", "label": "f", "n_iter": 2,
                                                                   "n_target_classes": 3}
    checked = {"attacks": [{"name": "apgd_t", "label": "t", "params": {}}]}
    assert fit_to_classes("cascade", checked, 4)["attacks"][0]["params"] == {"n_target_classes": 3}
