"""AutoAttack's attacks (Croce & Hein, ICML 2020) through their official code, the PyPI package ``pyautoattack``.

* ``apgd_ce``: APGD on the cross-entropy; ``apgd_t``: APGD on the targeted DLR loss over ``n_target_classes``
  targets; ``fab_t``: targeted FAB; ``square``: the query-based Square Attack; ``autoattack``: the standard
  version, APGD-CE → APGD-T → FAB-T → Square, each on the images the earlier ones did not fool. ``*_l2``
  names are the L2 versions. Defaults are AutoAttack's standard ones (100 iterations, 9 target classes, 5,000
  queries, one restart).
* An eps sweep costs less than one run per eps: eps are attacked in increasing order and an image fooled at a
  smaller eps keeps that adversarial example at every larger one (it lies inside the larger ball), so only the
  images still standing are attacked again. Only clean-correct images are ever sent.
* ``pyautoattack`` reseeds torch's global RNG in ``perturb``; every call here runs inside
  ``torch.random.fork_rng()``, so the caller's random state is untouched. ``passes`` counts the forward passes
  run with gradients enabled (APGD and FAB follow each with an input-backward; Square's queries run that way too,
  without a backward, and are counted alike).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..errors import ConfigError
from ..registry import attack_spec, validate_params
from .base import Attack, AttackOutput

SEQUENCE = {"autoattack": ("apgd_ce", "apgd_t", "fab_t", "square")}


def _aa():
    try:
        import pyautoattack
    except ImportError:
        raise ConfigError("AutoAttack's attacks need pyautoattack: pip install 'robustcars[autoattack]'") from None
    return pyautoattack


def _one(kind: str, model: nn.Module, eps: float, norm: str, p: dict[str, Any], device: torch.device):
    """One pyautoattack attack object for ``kind`` at ``eps``."""
    _aa()
    norm_name = "Linf" if norm == "linf" else "L2"
    if kind == "apgd_ce":
        from pyautoattack.autopgd_base import APGDAttack

        return APGDAttack(model, n_iter=p["n_iter"], norm=norm_name, n_restarts=p["n_restarts"], eps=eps,
                             seed=p["seed"], loss="ce", device=device)
    if kind == "apgd_t":
        from pyautoattack.autopgd_base import APGDAttack_targeted

        return APGDAttack_targeted(model, n_iter=p["n_iter"], norm=norm_name, n_restarts=p["n_restarts"],
                                      eps=eps, seed=p["seed"], n_target_classes=p["n_target_classes"], device=device)
    if kind == "fab_t":
        from pyautoattack.fab_pt import FABAttack_PT

        return FABAttack_PT(model, norm=norm_name, n_restarts=p["n_restarts"], n_iter=p["n_iter"], eps=eps,
                            seed=p["seed"], targeted=True, n_target_classes=p["n_target_classes"], device=device)
    if kind == "square":
        from pyautoattack.square import SquareAttack

        return SquareAttack(model, norm=norm_name, n_queries=p["n_queries"], eps=eps, n_restarts=p["n_restarts"],
                            seed=p["seed"], device=device)
    raise ConfigError(f"unknown AutoAttack component {kind!r}")


class AutoAttackAdapter(Attack):
    """One of AutoAttack's attacks, or its standard sequence, as a robustcars attack (see the module docstring)."""

    def __init__(self, name: str, **params: Any) -> None:
        spec = attack_spec(name)
        self.name, self.norm = name, spec.norm
        self.params = validate_params(name, params)
        base = name.removesuffix("_l2")
        self.sequence = SEQUENCE.get(base, (base,))

    def run(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: list[float]) -> AttackOutput:
        with torch.no_grad():
            clean_logits = model(x)
        standing = clean_logits.argmax(1) == y  # only clean-correct images are attacked
        spent = 0

        def count(_module, inputs, _output):
            nonlocal spent
            if torch.is_grad_enabled():
                spent += inputs[0].shape[0]

        adv_by_eps: dict[float, torch.Tensor] = {}
        current = x.clone()
        handle = model.register_forward_hook(count)
        try:
            with torch.random.fork_rng(devices=[]):
                for e in sorted(set(eps)):
                    current = current.clone()  # fooled at a smaller eps: that example stands for this one too
                    for kind in self.sequence:
                        idx = standing.nonzero().flatten()
                        if idx.numel() == 0 or e == 0:
                            break
                        attack = _one(kind, model, e, self.norm, self.params, x.device)
                        out = attack.perturb(x[idx], y[idx]).detach()
                        with torch.no_grad():
                            fooled = model(out).argmax(1) != y[idx]
                        current[idx[fooled]] = out[fooled]
                        standing[idx[fooled]] = False
                    adv_by_eps[e] = current
        finally:
            handle.remove()
        return AttackOutput(eps=eps, adv=[adv_by_eps[e] for e in eps], clean_logits=clean_logits,
                            passes=spent / x.shape[0])


def build(name: str, **params: Any) -> AutoAttackAdapter:
    """The registry's factory for every AutoAttack entry."""
    return AutoAttackAdapter(name, **params)
