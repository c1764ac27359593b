"""BIM, PGD (L∞, L2) and MI-FGSM as properties on tiny models; agreement with foolbox 3."""

import pytest
import torch
from torch import nn

from robustcars.attacks import BIM, FGSM, MIFGSM, PGDL2, PGDLinf, choose_targets, fgsm, get_attack, pgd
from robustcars.errors import ConfigError

from .test_attacks import linear_model, tiny_cnn


def fitted_cnn(k=4, seed=0):
    """A tiny CNN trained for a few steps on separable colour blobs, so its predictions mean something."""
    g = torch.Generator().manual_seed(seed)
    model = tiny_cnn(k)
    shift = torch.linspace(0.1, 0.5, k).repeat(16).view(-1, 1, 1, 1)
    x = (torch.rand(64, 3, 8, 8, generator=g) * 0.4 + shift).clamp(0, 1)
    y = torch.arange(k).repeat(16)
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    for _ in range(60):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    for p in model.parameters():
        p.grad = None
    return model.eval(), x[:32], y[:32]


@pytest.mark.parametrize("attack, norm", [(BIM(), "linf"), (PGDLinf(), "linf"), (PGDL2(), "l2"), (MIFGSM(), "linf")])
def test_budget_bounds_and_mode(attack, norm):
    model, x, y = fitted_cnn()
    out = attack(model, x, y, [0.0, 0.03, 0.3])
    assert torch.equal(out.adv[0], x)
    for e, a in zip(out.eps, out.adv):
        d = (a - x).flatten(1)
        size = d.abs().amax(1) if norm == "linf" else d.norm(dim=1)
        assert (size <= e * (1 + 1e-5) + 1e-7).all()
        assert a.min() >= 0 and a.max() <= 1
    assert not model.training and all(p.grad is None and p.requires_grad for p in model.parameters())
    assert out.passes == 10 * 2  # eps 0 costs nothing


def test_iterative_attacks_are_at_least_as_strong_as_fgsm():
    model, x, y = fitted_cnn()
    clean = (model(x).argmax(1) == y).float().mean()
    eps = 0.05
    acc = {}
    for name in ("fgsm", "bim", "pgd", "mifgsm"):
        adv = get_attack(name)(model, x, y, [eps]).adv[0]
        acc[name] = (model(adv).argmax(1) == y).float().mean().item()
    assert acc["fgsm"] < clean
    assert acc["pgd"] <= acc["fgsm"] and acc["bim"] <= acc["fgsm"]


def test_bim_one_step_equals_fgsm():
    model, x, y = fitted_cnn()
    assert torch.equal(BIM(steps=1)(model, x, y, [0.02]).adv[0], fgsm(model, x, y, eps=0.02))


def test_pgd_on_linear_model_saturates_the_sign_direction():
    # for a 2-class linear model the loss gradient's sign never changes, so BIM reaches x + eps * sign exactly
    model = linear_model()
    x = torch.full((2, 3, 4, 4), 0.5)
    y = torch.tensor([0, 1])
    adv = pgd(model, x, y, eps=0.1, steps=5, alpha=0.03, random_start=False)
    assert torch.allclose(adv, fgsm(model, x, y, eps=0.1), atol=1e-6)


def test_targeted_attacks_hit_their_targets():
    model, x, y = fitted_cnn()
    out = PGDLinf(steps=20, target="least_likely")(model, x, y, [0.5])
    assert torch.equal(out.targets, model(x).argmin(1))
    hit = (model(out.adv[0]).argmax(1) == out.targets).float().mean()
    assert hit >= 0.9
    out = PGDLinf(steps=20, target=2)(model, x, y, [0.5])
    assert (model(out.adv[0]).argmax(1) == 2).float().mean() >= 0.9


def test_choose_targets():
    logits = torch.tensor([[3.0, 1.0, 2.0, 0.0]])
    assert choose_targets(logits, "least_likely").tolist() == [3]
    assert choose_targets(logits, "runner_up").tolist() == [2]
    assert choose_targets(logits, 1).tolist() == [1]
    with pytest.raises(ConfigError, match="target must be one of"):
        choose_targets(logits, 9)


def test_random_start_is_deterministic_with_a_seed_and_leaves_global_rng_alone():
    model, x, y = fitted_cnn()
    state = torch.get_rng_state()
    a = PGDLinf(seed=5)(model, x, y, [0.03]).adv[0]
    b = PGDLinf(seed=5)(model, x, y, [0.03]).adv[0]
    c = PGDLinf(seed=6)(model, x, y, [0.03]).adv[0]
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(torch.get_rng_state(), state)


def test_restarts_never_weaken_pgd():
    model, x, y = fitted_cnn()
    one = PGDLinf(steps=3, restarts=1, seed=1)(model, x, y, [0.03]).adv[0]
    many = PGDLinf(steps=3, restarts=4, seed=1)(model, x, y, [0.03]).adv[0]
    fooled = lambda a: (model(a).argmax(1) != y)  # noqa: E731
    assert (fooled(many) | ~fooled(one)).all()  # every image fooled by one run is fooled with restarts


@pytest.mark.parametrize("cls", [BIM, PGDLinf, PGDL2, MIFGSM])
def test_early_stop_freezes_an_image_at_its_first_fooling_iterate(cls):
    model, x, y = fitted_cnn()
    eps = 1.0 if cls is PGDL2 else 0.08  # budgets where some images are fooled and some are not
    full = cls(steps=8, seed=3)(model, x, y, [eps])
    early = cls(steps=8, seed=3, early_stop=True)(model, x, y, [eps])
    with torch.no_grad():
        wrong_full = model(full.adv[0]).argmax(1) != y
        wrong_early = model(early.adv[0]).argmax(1) != y
        clean_wrong = model(x).argmax(1) != y
    assert wrong_early.any() and (~wrong_early).any()  # the case is not degenerate
    # an image that was never fooled followed exactly the full run's path
    assert torch.allclose(early.adv[0][~wrong_early], full.adv[0][~wrong_early], atol=1e-6)
    # robust accuracy can only go down: an image once fooled stays counted as fooled
    assert (wrong_early | ~wrong_full).all()
    if cls is BIM:  # no random start: a misclassified clean image is not attacked at all
        assert torch.equal(early.adv[0][clean_wrong], x[clean_wrong])
    assert full.passes == 8
    assert 1 <= early.passes < 8


def test_clean_logits_come_from_the_first_step_when_it_starts_at_x():
    model, x, y = fitted_cnn()
    calls = []
    handle = model.register_forward_hook(lambda *a: calls.append(1))
    out = BIM(steps=3)(model, x, y, [0.01, 0.02])
    assert len(calls) == 6  # 3 forward+backward per eps, no separate clean pass
    calls.clear()
    PGDLinf(steps=3)(model, x, y, [0.01])
    assert len(calls) == 4  # a random start needs its own clean pass
    handle.remove()
    with torch.no_grad():
        assert torch.allclose(out.clean_logits, model(x), atol=1e-5)


def test_fooled_images_are_not_attacked_further_and_restarts_skip_them():
    model, x, _ = fitted_cnn()
    with torch.no_grad():
        wrong = (model(x).argmax(1) + 1) % 4  # labels the model already gets wrong everywhere
    out = PGDLinf(steps=5, restarts=3, seed=0)(model, x, wrong, [0.0, 0.001])
    assert out.passes == 5  # one run at eps 0.001; both restarts skipped: every image was fooled
    out = BIM(steps=5, early_stop=True)(model, x, wrong, [0.001, 0.002])
    assert out.passes == 2  # one forward+backward per eps shows the image is fooled, then it stops
    assert all(torch.equal(a, x) for a in out.adv)


@pytest.mark.parametrize("bad", [{"steps": 0}, {"restarts": 0}, {"alpha": -1.0}, {"stepz": 3}, {"early_stop": "yes"},
                                 {"steps": 2.5}, {"alpha": float("nan")}, {"target": "x"}])
def test_bad_parameters_are_rejected(bad):
    with pytest.raises(ConfigError):
        get_attack("pgd", **bad)


# --- foolbox 3 agreement ---------------------------------------------------------------------------

fb = pytest.importorskip("foolbox")


def test_fgsm_matches_foolbox():
    model, x, y = fitted_cnn()
    fmodel = fb.PyTorchModel(model, bounds=(0, 1))
    eps = [0.01, 0.05]
    _, clipped, _ = fb.attacks.FGSM()(fmodel, x, y, epsilons=eps)
    ours = FGSM()(model, x, y, eps).adv
    for a, b in zip(ours, clipped):
        assert torch.allclose(a, b, atol=1e-6)


def test_pgd_without_random_start_matches_foolbox_predictions():
    model, x, y = fitted_cnn()
    fmodel = fb.PyTorchModel(model, bounds=(0, 1))
    eps, steps, alpha = 0.03, 10, 0.0075
    attack = fb.attacks.LinfPGD(steps=steps, abs_stepsize=alpha, random_start=False)
    _, theirs, _ = attack(fmodel, x, y, epsilons=eps)
    ours = PGDLinf(steps=steps, alpha=alpha, random_start=False)(model, x, y, [eps]).adv[0]
    agree = (model(ours).argmax(1) == model(theirs).argmax(1)).float().mean()
    assert agree >= 0.99


@pytest.mark.parametrize("name", ["deepfool", "deepfool_linf", "cw_l2"])
def test_foolbox_min_norm_attacks_through_the_adapter(name):
    model, x, y = fitted_cnn()
    x, y = x[:8], y[:8]
    attack = get_attack(name, **({"steps": 20, "binary_search_steps": 3} if name == "cw_l2" else {}))
    out = attack(model, x, y, [0.0, 0.05, 1.0])
    norms = out.min_norms
    assert norms.shape == (8,) and (norms >= 0).all()
    pred = [model(a).argmax(1) for a in out.adv]
    correct = model(x).argmax(1) == y
    assert torch.equal(pred[0] == y, correct)  # eps 0: nothing changes
    # robust accuracy at eps is exactly the share of clean-correct images whose minimal norm exceeds eps
    for e, p in zip(out.eps, pred):
        expected = correct & (norms > e)
        fooled_within = correct & (norms <= e)
        assert (p[fooled_within] != y[fooled_within]).all()
        assert torch.equal(p[expected] == y[expected], torch.ones_like(p[expected], dtype=torch.bool))
    assert model.training is False and all(p.requires_grad for p in model.parameters())


@pytest.mark.parametrize("name, kwargs", [("deepfool", {}), ("deepfool_linf", {}),
                                          ("cw_l2", {"steps": 20, "binary_search_steps": 3})])
def test_min_norm_adapter_attacks_only_clean_correct_images_and_counts_passes(name, kwargs):
    import foolbox as fb

    model, x, y = fitted_cnn()
    x, y = x[:12], y[:12].clone()
    y[:3] = (y[:3] + 1) % 4  # three images the model now gets wrong
    correct = model(x).argmax(1) == y
    assert (~correct).sum() >= 3 and correct.sum() >= 6
    attack = get_attack(name, **kwargs)
    out = attack(model, x, y, [1.0])
    assert (out.min_norms[~correct] == 0).all()
    # the same foolbox attack on the whole batch gives the same minimal norms for the attacked images
    forwards = []
    handle = model.register_forward_hook(
        lambda m, i, o: forwards.append(i[0].shape[0]) if torch.is_grad_enabled() else None)
    _, adv, success = attack.fb_attack(fb.PyTorchModel(model, bounds=(0, 1)), x, y, epsilons=None)
    handle.remove()
    d = (adv - x).flatten(1)
    whole = (d.abs().amax(1) if attack.norm == "linf" else d.norm(dim=1))
    whole = torch.where(success, whole, torch.full_like(whole, float("inf")))
    torch.testing.assert_close(out.min_norms[correct], whole[correct], rtol=1e-4, atol=1e-6)
    # passes: counted, and fewer than foolbox spends on the whole batch (it also works on the wrong ones)
    assert 0 < out.passes * len(y) < sum(forwards)


class _MeanModel(nn.Module):
    """Two classes by the mean pixel: class 0 above 0.2, class 1 below (so uniform noise, mean 0.5, is class 0)."""

    def forward(self, x):
        m = x.mean((1, 2, 3))
        return torch.stack([10 * (m - 0.2), torch.zeros_like(m)], 1)


def test_hopskipjump_without_a_start_for_one_image_still_attacks_the_others():
    """HopSkipJump's noise start cannot leave class 0 for the bright image: foolbox raises for the whole batch
    ("init_attack failed"); the adapter attacks the dark one anyway and reports the bright one as not fooled."""
    x = torch.stack([torch.full((3, 8, 8), 0.9), torch.full((3, 8, 8), 0.18)])
    y = torch.tensor([0, 1])
    model = _MeanModel().eval()
    attack = get_attack("hsj", steps=2, initial_gradient_eval_steps=10, max_gradient_eval_steps=20)
    out = attack(model, x, y, [1.0])
    assert out.min_norms[0] == float("inf") and 0 < out.min_norms[1] <= 1.0
    assert model(out.adv[0]).argmax(1).tolist() == [0, 0]  # the bright one kept, the dark one fooled
