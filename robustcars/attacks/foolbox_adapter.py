"""foolbox 3 attacks behind robustcars' Attack interface, for breadth (Rauber et al. 2017/2020).

The adapter wraps the model as ``foolbox.PyTorchModel(model, bounds=(0, 1))`` — normalization is already
the model's first layer, the weights' ``requires_grad`` is off for the call (base class) and the model's
mode is left as it is (robustcars evaluates in eval mode).

Minimum-norm attacks (DeepFool, C&W L2, EAD, HopSkipJump) are run once per batch with ``epsilons=None``:
each image gets its smallest adversarial found. For every eps of the sweep the adversarial image is that
one where its norm is ``<= eps`` and the clean image otherwise, so robust accuracy at any eps follows from
one run, and the per-image minimal norms are reported (``min_norms``; ``inf`` where the attack failed).

* DeepFool (Moosavi-Dezfooli et al. 2016), L2 and L∞: ``deepfool`` / ``deepfool_linf``.
* Carlini & Wagner 2017, L2: ``cw_l2`` (defaults lowered to 5 binary-search x 100 steps for CPU runs).
* EAD (Chen et al. 2018), elastic-net; reported as L2 here: ``ead``.
* HopSkipJump (Chen, Jordan, Wainwright 2020), decision-based, L2: ``hsj`` (slow: use a subset).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..errors import ConfigError
from .base import Attack, AttackOutput

# name -> (foolbox class name, norm, default parameters)
FOOLBOX_ATTACKS: dict[str, tuple[str, str, dict[str, Any]]] = {
    "deepfool": ("L2DeepFoolAttack", "l2", {"steps": 50, "candidates": 10, "overshoot": 0.02}),
    "deepfool_linf": ("LinfDeepFoolAttack", "linf", {"steps": 50, "candidates": 10, "overshoot": 0.02}),
    "cw_l2": ("L2CarliniWagnerAttack", "l2", {"binary_search_steps": 5, "steps": 100, "stepsize": 0.01}),
    "ead": ("EADAttack", "l2", {"binary_search_steps": 5, "steps": 100}),
    "hsj": ("HopSkipJumpAttack", "l2", {"steps": 16, "max_gradient_eval_steps": 1000}),
}


def _foolbox():
    try:
        import foolbox
    except ImportError as exc:  # pragma: no cover - foolbox is a dependency
        raise ConfigError("this attack needs foolbox: pip install foolbox==3.3.4") from exc
    return foolbox


class FoolboxMinNorm(Attack):
    """A foolbox minimum-norm attack; ``params`` go to the foolbox constructor."""

    def __init__(self, name: str, **params: Any) -> None:
        fb = _foolbox()
        cls_name, self.norm, defaults = FOOLBOX_ATTACKS[name]
        self.name = name
        self.params = {**defaults, **params}
        try:
            self.fb_attack = getattr(fb.attacks, cls_name)(**self.params)
        except TypeError as exc:
            raise ConfigError(f"bad parameters for attack {name!r}: {exc}") from None

    def run(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: list[float]) -> AttackOutput:
        fb = _foolbox()
        fmodel = fb.PyTorchModel(model, bounds=(0, 1), device=x.device)
        with torch.no_grad():
            clean_logits = model(x)
        _, adv, success = self.fb_attack(fmodel, x, y, epsilons=None)
        adv = adv.detach()
        d = (adv - x).flatten(1)
        norms = d.abs().amax(1) if self.norm == "linf" else d.norm(dim=1)
        norms = torch.where(success, norms, torch.full_like(norms, float("inf")))
        norms = torch.where(clean_logits.argmax(1) != y, torch.zeros_like(norms), norms)  # already wrong
        advs = [torch.where((norms <= e).view(-1, 1, 1, 1), adv, x) for e in eps]
        return AttackOutput(eps=eps, adv=advs, clean_logits=clean_logits, min_norms=norms)


def factories() -> dict[str, Any]:
    return {name: (lambda name=name, **p: FoolboxMinNorm(name, **p)) for name in FOOLBOX_ATTACKS}
