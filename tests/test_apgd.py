"""Own APGD (robustcars.attacks.apgd) against pyautoattack per image, the MALT target ranking on a model where the
answer is known, the margin budget, and the PGD convergence stop."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from robustcars.attacks import get_attack
from robustcars.attacks.apgd import apgd, apgd_targeted, rank_targets
from robustcars.attacks.iterative import pgd_run

pyautoattack = pytest.importorskip("pyautoattack")
from pyautoattack.autopgd_base import APGDAttack, APGDAttack_targeted  # noqa: E402

EPS = {"linf": 0.04, "l2": 1.0}


@pytest.fixture(scope="module")
def problem():
    """A seeded tiny CNN with 10 classes on 24 random 12x12 images labelled with its predictions; two relabelled
    so the model gets them wrong (never attacked)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(4), nn.Flatten(),
                          nn.Linear(128, 10)).eval()
    x = torch.rand(24, 3, 12, 12)
    with torch.no_grad():
        y = model(x).argmax(1)
    y[:2] = (y[:2] + 1) % 10
    return model, x, y


def fooled(model, adv, y):
    with torch.no_grad():
        return model(adv).argmax(1) != y


def reference(kind, model, x, y, norm, **kw):
    norm_name = "Linf" if norm == "linf" else "L2"
    cls = APGDAttack_targeted if kind == "t" else APGDAttack
    extra = {} if kind == "t" else {"loss": kind}
    with torch.random.fork_rng(devices=[]):
        return cls(model, norm=norm_name, eps=EPS[norm], device=torch.device("cpu"), **extra, **kw).perturb(x, y)


@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("loss", ["ce", "dlr"])
def test_own_apgd_returns_pyautoattacks_examples_per_image(problem, norm, loss):
    model, x, y = problem
    ref = reference(loss, model, x, y, norm, n_iter=20, n_restarts=2, seed=3)
    mine, passes = apgd(model, x, y, eps=EPS[norm], norm=norm, n_iter=20, n_restarts=2, loss=loss, seed=3)
    hits = fooled(model, ref, y)
    assert 2 < int(hits.sum()) < len(y) - 2  # some fooled, some not: the comparison means something
    assert torch.equal(mine, ref)
    assert passes >= 21 * (len(y) - 2)  # one run of 1 + n_iter passes on every clean-correct image at least


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_own_apgd_t_with_logit_ranking_returns_pyautoattacks_examples(problem, norm):
    model, x, y = problem
    ref = reference("t", model, x, y, norm, n_iter=20, n_target_classes=4, seed=5)
    targets, ranking_passes = rank_targets(model, x, y, 4, method="logit")
    mine, _, budget = apgd_targeted(model, x, y, targets, eps=EPS[norm], norm=norm, n_iter=20, seed=5)
    assert 2 < int(fooled(model, ref, y).sum()) < len(y) - 2
    assert torch.equal(mine, ref) and ranking_passes == 0 and budget.discarded == 0


def test_early_stop_keeps_every_verdict_and_costs_less(problem):
    model, x, y = problem
    targets, _ = rank_targets(model, x, y, 4)
    full, n_full, _ = apgd_targeted(model, x, y, targets, eps=0.04, n_iter=20, seed=5)
    fast, n_fast, _ = apgd_targeted(model, x, y, targets, eps=0.04, n_iter=20, seed=5, early_stop=True)
    assert torch.equal(fooled(model, full, y), fooled(model, fast, y))
    assert n_fast < n_full
    assert ((fast - x).abs().amax(dim=(1, 2, 3)) <= 0.04 + 1e-6).all()


def test_malt_ranks_the_truly_closest_class_first_on_a_linear_model():
    """For logits ``W x + b`` the L∞ distance from x to the boundary between y and c is exactly
    ``(z_y - z_c) / ||w_y - w_c||_1`` (away from the [0, 1] box), which the ranking must find."""
    torch.manual_seed(1)
    linear = nn.Sequential(nn.Flatten(), nn.Linear(48, 12)).eval()
    with torch.no_grad():  # rows of very different norms, so the logit order and the distance order disagree
        linear[1].weight.mul_(torch.logspace(-1, 1, 12).unsqueeze(1))
    x = torch.rand(40, 3, 4, 4)
    with torch.no_grad():
        z = linear(x)
    y = z.argmax(1)
    w = linear[1].weight.detach()
    margin = z[torch.arange(40), y].unsqueeze(1) - z
    dual = (w[y].unsqueeze(1) - w.unsqueeze(0)).abs().sum(-1)  # ||w_y - w_c||_1, (N, classes)
    dist = (margin / dual).masked_fill(torch.nn.functional.one_hot(y, 12).bool(), float("inf"))
    for norm, p in (("linf", 1), ("l2", 2)):
        dual = (w[y].unsqueeze(1) - w.unsqueeze(0)).norm(p=p, dim=-1)
        dist = (margin / dual).masked_fill(torch.nn.functional.one_hot(y, 12).bool(), float("inf"))
        malt, passes = rank_targets(linear, x, y, 3, method="malt", candidates=11, norm=norm)
        assert torch.equal(malt[:, 0], dist.argmin(1)) and passes == 11 * 40
        assert torch.equal(malt, dist.argsort(1)[:, :3])
    by_logit, _ = rank_targets(linear, x, y, 1, method="logit")
    assert (by_logit[:, 0] != malt[:, 0]).sum() >= 5  # the two orders really differ here


def test_margin_budget_discards_the_farthest_images_and_counts_them(problem):
    model, x, y = problem
    targets, _ = rank_targets(model, x, y, 3)
    _, n_all, b_all = apgd_targeted(model, x, y, targets, eps=0.01, n_iter=10, seed=0)
    adv, n_half, b_half = apgd_targeted(model, x, y, targets, eps=0.01, n_iter=10, seed=0, keep=0.5)
    assert b_all.discarded == 0 and b_half.discarded > 0
    assert b_half.passes_saved == b_half.discarded * 2 * 11
    assert n_half < n_all
    out = get_attack("apgd_targeted", n_iter=10, n_target_classes=3, keep=0.5)(model, x, y, [0.01])
    assert out.counters["discarded_images"] == b_half.discarded and torch.equal(out.adv[0], adv)


def test_convergence_stop_changes_no_result_and_stops_only_repeating_images(problem):
    model, x, y = problem
    # long steps reach a corner of the ball and stay (or alternate between two points); the default ones do not
    for steps, alpha, converges in ((40, 0.02, True), (41, 0.05, True), (10, None, False)):
        for early_stop in (False, True):
            kw = {"eps": 0.03, "steps": steps, "alpha": alpha, "early_stop": early_stop}
            plain, n_plain, _ = pgd_run(model, x, y, generator=torch.Generator().manual_seed(1), **kw)
            stats = {}
            stopped, n_stop, _ = pgd_run(model, x, y, generator=torch.Generator().manual_seed(1), converge=True,
                                         stats=stats, **kw)
            assert torch.equal(plain, stopped)  # every image ends on the iterate the full loop ends on
            assert bool(stats) == converges
            assert (n_stop < n_plain) if converges else (n_stop == n_plain)
    # on a model in train mode the map is not deterministic: nothing stops
    model.train()
    stats = {}
    pgd_run(model, x, y, eps=0.03, steps=40, alpha=0.02, generator=torch.Generator().manual_seed(1),
            converge=True, stats=stats)
    model.eval()
    assert stats == {}


def test_own_attacks_keep_the_threat_model(problem):
    model, x, y = problem
    flags = [p.requires_grad for p in model.parameters()]
    for name, eps in (("apgd", 0.03), ("apgd_l2", 0.3), ("apgd_targeted", 0.03)):
        params = {"n_iter": 5} | ({"n_target_classes": 2, "ranking": "malt", "candidates": 3}
                                   if "targeted" in name else {})
        out = get_attack(name, **params)(model, x, y, [0.0, eps])
        assert torch.equal(out.adv[0], x)
        d = (out.adv[1] - x).flatten(1)
        assert ((d.abs().amax(1) if "l2" not in name else d.norm(dim=1)) <= eps + 1e-5).all()
        assert not model.training and [p.requires_grad for p in model.parameters()] == flags
        assert all(p.grad is None for p in model.parameters())
        assert torch.equal(out.adv[1][:2], x[:2])  # misclassified images are never attacked


def test_fast_worst_case_is_never_above_the_full_cascade(problem):
    # the shipped fast suite, as its file states it, against the full cascade of AutoAttack's attacks (PGD-10
    # first, then APGD-CE, APGD-T on 9 targets, FAB-T, Square) on the same seeded images; the tiny model needs a
    # larger budget than the real one
    from pathlib import Path

    from robustcars.evaluation.suite import load_suite

    model, x, y = problem
    attacks = Path(__file__).resolve().parents[1] / "attacks"
    fast = load_suite(attacks / "fast-worst-case.toml").entries[0].params
    full = next(e for e in load_suite(attacks / "cascade-vs-autoattack.toml").entries if e.label == "cascade").params
    eps = [0.05, 0.1]
    fast_out = get_attack("cascade", **fast)(model, x, y, eps)
    full_out = get_attack("cascade", **full)(model, x, y, eps)
    fast_robust = [int((~fooled(model, a, y)).sum()) - 2 for a in fast_out.adv]  # minus the 2 wrong clean
    full_robust = [int((~fooled(model, a, y)).sum()) - 2 for a in full_out.adv]
    assert 0 < full_robust[0] < len(y) - 2  # a real contest at the first eps
    assert all(f <= r for f, r in zip(fast_robust, full_robust, strict=True)), (fast_robust, full_robust)
    assert fast_out.passes < full_out.passes
