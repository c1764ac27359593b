"""Attacks as properties on tiny models, plus FGSM's exact answer on a linear model."""

import pytest
import torch
from torch import nn

from robustcars.attacks import FGSM, attack_names, fgsm, fgsm_sweep, get_attack, project
from robustcars.errors import ConfigError
from robustcars.registry import ATTACKS, register_attack


def linear_model(k: int = 2, shape=(3, 4, 4), seed: int = 0) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    lin = nn.Linear(int(torch.tensor(shape).prod()), k)
    with torch.no_grad():
        lin.weight.copy_(torch.randn(lin.weight.shape, generator=g))
        lin.bias.zero_()
    return nn.Sequential(nn.Flatten(), lin)


def test_fgsm_exact_on_linear_two_class_model():
    # For f(x) = W x and CE with true class y among 2 classes:
    #   grad_x CE = (1 - p_y) (W_other - W_y), so sign(grad) = sign(W_other - W_y) exactly.
    torch.manual_seed(1)
    model = linear_model()
    x = torch.rand(5, 3, 4, 4) * 0.6 + 0.2
    y = torch.tensor([0, 1, 0, 1, 1])
    eps = 0.05
    w = model[1].weight.detach()
    direction = torch.stack([torch.sign(w[1 - c] - w[c]) for c in y.tolist()]).view_as(x)
    expected = (x + eps * direction).clamp(0, 1)
    assert torch.equal(fgsm(model, x, y, eps=eps), expected)


def test_fgsm_clips_to_pixel_range():
    model = linear_model()
    x = torch.cat([torch.zeros(1, 3, 4, 4), torch.ones(1, 3, 4, 4)])
    y = torch.tensor([0, 1])
    x_adv = fgsm(model, x, y, eps=0.3)
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    w = model[1].weight.detach()
    # at x = 0 only the pixels pushed upwards move, by exactly eps
    up = (torch.sign(w[1] - w[0]) > 0).view(3, 4, 4)
    assert torch.equal(x_adv[0][up], torch.full_like(x_adv[0][up], 0.3))
    assert torch.equal(x_adv[0][~up], torch.zeros_like(x_adv[0][~up]))


def tiny_cnn(k: int = 4) -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(2),
                         nn.Flatten(), nn.Linear(32, k))


def labelled_batch(n: int, wrong: int):
    """A seeded tiny CNN (4 classes), ``n`` random 8x8 images labelled with its own predictions, the first
    ``wrong`` relabelled so the model gets them wrong (attacks must leave those alone)."""
    torch.manual_seed(0)
    model = tiny_cnn(4).eval()
    x = torch.rand(n, 3, 8, 8)
    with torch.no_grad():
        y = model(x).argmax(1)
    y[:wrong] = (y[:wrong] + 1) % 4
    return model, x, y


def test_properties_eps_zero_budget_bounds():
    model = tiny_cnn().eval()
    x, y = torch.rand(6, 3, 8, 8), torch.randint(0, 4, (6,))
    out = FGSM()(model, x, y, [0.0, 0.01, 0.1])
    assert torch.equal(out.adv[0], x)
    for e, a in zip(out.eps, out.adv):
        assert (a - x).abs().max() <= e + 1e-7
        assert a.min() >= 0 and a.max() <= 1
    assert out.clean_logits.shape == (6, 4)
    assert torch.allclose(out.clean_logits, model(x))


def test_attack_leaves_mode_and_weight_grads_untouched():
    model = tiny_cnn()
    model.train()
    model[0].weight.requires_grad_(False)  # a mixed state must come back exactly
    flags = [p.requires_grad for p in model.parameters()]
    x, y = torch.rand(4, 3, 8, 8), torch.randint(0, 4, (4,))
    FGSM()(model, x, y, [0.03])
    assert model.training and all(m.training for m in model.modules())
    assert [p.requires_grad for p in model.parameters()] == flags
    assert all(p.grad is None for p in model.parameters())
    model.eval()
    FGSM()(model, x, y, [0.03])
    assert not model.training


def test_sweep_equals_single_calls():
    model = tiny_cnn().eval()
    x, y = torch.rand(4, 3, 8, 8), torch.randint(0, 4, (4,))
    _, adv, _ = fgsm_sweep(model, x, y, eps=[0.01, 0.05])
    assert torch.equal(adv[0], fgsm(model, x, y, eps=0.01))
    assert torch.equal(adv[1], fgsm(model, x, y, eps=0.05))


def test_fgsm_lowers_accuracy_of_a_fitted_linear_model():
    torch.manual_seed(0)
    model = linear_model(k=2, shape=(1, 2, 2))
    w = torch.tensor([[1.0, 1.0, 1.0, 1.0], [-1.0, -1.0, -1.0, -1.0]])
    with torch.no_grad():
        model[1].weight.copy_(w)
        model[1].bias.copy_(torch.tensor([-2.0, 2.0]))
    # margin logit0 - logit1 = 2 * sum(x) - 4 is in [-0.4, 0.4]; FGSM at eps 0.2 moves it by 2 * 4 * 0.2 = 1.6
    x = torch.rand(64, 1, 2, 2) * 0.1 + 0.45
    y = model(x).argmax(1)  # all correct by construction
    assert set(y.tolist()) == {0, 1}
    x_adv = fgsm(model, x, y, eps=0.2)
    assert (model(x_adv).argmax(1) == y).sum() == 0


@pytest.mark.parametrize("bad", [-0.1, 1.5, float("nan")])
def test_eps_out_of_range_is_rejected(bad):
    model = tiny_cnn().eval()
    with pytest.raises(ConfigError, match=r"eps must be a number in \[0, 1\]"):
        FGSM()(model, torch.rand(1, 3, 8, 8), torch.tensor([0]), [bad])


def test_unnormalized_input_is_rejected():
    with pytest.raises(ValueError, match="normalization belongs inside the model"):
        FGSM()(tiny_cnn().eval(), torch.rand(1, 3, 8, 8) * 3 - 1, torch.tensor([0]), [0.01])


def test_registry_lists_choices_and_refuses_duplicates():
    assert "fgsm" in attack_names()
    with pytest.raises(ConfigError, match="choose one of: .*fgsm"):
        get_attack("fgsmm")
    with pytest.raises(ValueError, match="already registered"):
        register_attack(ATTACKS["fgsm"])


def test_project_l2_and_linf():
    x = torch.full((2, 1, 2, 2), 0.5)
    x_adv = x + torch.tensor([0.3, 0.4, 0.0, 0.0]).view(1, 1, 2, 2)  # L2 = 0.5
    p = project(x, x_adv, 0.25, "l2")
    assert torch.allclose((p - x).flatten(1).norm(dim=1), torch.tensor([0.25, 0.25]))
    q = project(x, x_adv, 0.1, "linf")
    assert torch.allclose((q - x).abs().amax(dim=(1, 2, 3)), torch.tensor([0.1, 0.1]))
