"""foolbox 3 attacks behind robustcars' Attack interface, for breadth (Rauber et al. 2017/2020).

The adapter wraps the model as ``foolbox.PyTorchModel(model, bounds=(0, 1))`` — normalization is already
the model's first layer, the weights' ``requires_grad`` is off for the call (base class) and the model's
mode is left as it is (robustcars evaluates in eval mode).

Minimum-norm attacks (DeepFool, C&W L2, EAD, HopSkipJump) are run once per batch with ``epsilons=None``:
each image gets its smallest adversarial found. For every eps of the sweep the adversarial image is that
one where its norm is ``<= eps`` and the clean image otherwise, so robust accuracy at any eps follows from
one run, and the per-image minimal norms are reported (``min_norms``; ``inf`` where the attack failed).
Only clean-correct images are attacked (the others have minimal norm 0); DeepFool and C&W treat every
image of a batch independently, so this changes no result, only the cost (a test checks it).

* DeepFool (Moosavi-Dezfooli et al. 2016), L2 and L∞: ``deepfool`` / ``deepfool_linf``.
* Carlini & Wagner 2017, L2: ``cw_l2`` (defaults lowered to 5 binary-search x 100 steps for CPU runs; with
  so few steps foolbox's Adam step size 0.01 overshoots — its first step moves every pixel, an L2 of ~1 at
  160 px — and found norms 2-15x DeepFool's on real images, so the default step size here is 0.001 and the
  first constant 0.01: median 0.90x DeepFool's on 47 real images, ~340 forward+backward passes per attacked image).
* EAD (Chen et al. 2018), elastic-net; reported as L2 here: ``ead``.
* HopSkipJump (Chen, Jordan, Wainwright 2020), decision-based, L2: ``hsj`` (slow: use a subset).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from robustcars.attacks.base import Attack, AttackOutput
from robustcars.errors import ConfigError
from robustcars.registry import attack_spec, validate_params

# name -> foolbox class; norms, defaults and parameter checks are in robustcars.registry
FOOLBOX_CLASSES = {"deepfool": "L2DeepFoolAttack", "deepfool_linf": "LinfDeepFoolAttack",
                   "cw_l2": "L2CarliniWagnerAttack", "ead": "EADAttack", "hsj": "HopSkipJumpAttack"}


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
        self.name, self.norm = name, attack_spec(name).norm
        self.params = validate_params(name, params)
        self.fb_attack = getattr(fb.attacks, FOOLBOX_CLASSES[name])(**self.params)

    def run(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: list[float]) -> AttackOutput:
        """Run the foolbox attack on the clean-correct images only; see the module docstring.

        Images the model already misclassifies have minimal norm 0 and are not passed to foolbox (they
        would cost passes and cannot change the result). ``passes`` is the mean number of forward passes
        with gradients enabled (each followed by an input-backward in foolbox) per image of the batch,
        counted with a forward hook on ``model``.
        """
        fb = _foolbox()
        with torch.no_grad():
            clean_logits = model(x)
        correct = clean_logits.argmax(1) == y
        norms = torch.zeros(x.shape[0], device=x.device)  # already wrong: minimal norm 0
        adv = x.clone()
        spent = 0
        if correct.any():
            def count(_module, inputs, _output):
                nonlocal spent
                if torch.is_grad_enabled():
                    spent += inputs[0].shape[0]

            handle = model.register_forward_hook(count)
            try:
                fmodel = fb.PyTorchModel(model, bounds=(0, 1), device=x.device)
                xc = x[correct]
                adv_c, success = self._attack(fmodel, xc, y[correct])
            finally:
                handle.remove()
            adv_c = adv_c.detach()
            d = (adv_c - xc).flatten(1)
            found = d.abs().amax(1) if self.norm == "linf" else d.norm(dim=1)
            norms[correct] = torch.where(success, found, torch.full_like(found, float("inf")))
            adv[correct] = adv_c
        advs = [torch.where((norms <= e).view(-1, 1, 1, 1), adv, x) for e in eps]
        return AttackOutput(eps=eps, adv=advs, clean_logits=clean_logits, min_norms=norms,
                            passes=spent / x.shape[0])


    def _attack(self, fmodel, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(adversarial, success)`` of the foolbox attack on a batch. HopSkipJump raises for the whole batch
        when its random-noise start finds no misclassified point for some image ("init_attack failed"): then
        each image is attacked alone, and one without a start counts as not fooled (its own norm infinite)."""
        try:
            _, adv, success = self.fb_attack(fmodel, x, y, epsilons=None)
            return adv, success
        except ValueError as exc:
            if "init_attack failed" not in str(exc):
                raise
        advs, found = [], []
        for i in range(len(x)):
            try:
                _, adv_i, ok = self.fb_attack(fmodel, x[i:i + 1], y[i:i + 1], epsilons=None)
            except ValueError as exc:
                if "init_attack failed" not in str(exc):
                    raise
                adv_i, ok = x[i:i + 1], torch.zeros(1, dtype=torch.bool, device=x.device)
            advs.append(adv_i)
            found.append(ok)
        return torch.cat(advs), torch.cat(found)


def build(name: str, **params: Any) -> FoolboxMinNorm:
    """The registry's factory for every foolbox attack."""
    return FoolboxMinNorm(name, **params)
