"""AutoAttack's attacks through pyautoattack, on a tiny model: threat model, the eps cascade, hidden state."""

from __future__ import annotations

import json

import pytest
import torch

from robustcars.attacks import get_attack

from .conftest import invoke_cli, train_tiny_run
from .test_attacks import tiny_cnn

pytest.importorskip("pyautoattack")
FAST = {"apgd_ce": {"n_iter": 5}, "apgd_t": {"n_iter": 5, "n_target_classes": 2},
        "fab_t": {"n_iter": 5, "n_target_classes": 2}, "square": {"n_queries": 30},
        "autoattack": {"n_iter": 5, "n_target_classes": 2, "n_queries": 30}}
EPS = {"linf": [0.0, 0.01, 0.05, 0.2], "l2": [0.0, 0.1, 0.5, 1.0]}


@pytest.fixture
def problem():
    torch.manual_seed(0)
    model = tiny_cnn(4).eval()
    x = torch.rand(16, 3, 8, 8)
    with torch.no_grad():
        y = model(x).argmax(1)
    y[:3] = (y[:3] + 1) % 4  # three images the model already gets wrong: never attacked, stay wrong
    return model, x, y


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


@pytest.mark.parametrize("params, message", [({"n_iter": 0}, "n_iter must be an integer >= 1"),
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
