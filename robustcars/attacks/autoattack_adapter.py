"""AutoAttack's attacks (Croce & Hein, ICML 2020) through their official code, the PyPI package ``pyautoattack``.

* ``apgd_ce``: APGD on the cross-entropy; ``apgd_t``: APGD on the targeted DLR loss over ``n_target_classes``
  targets; ``fab_t``: targeted FAB; ``square``: the query-based Square Attack; ``autoattack``: the standard
  version, APGD-CE → APGD-T → FAB-T → Square, each on the images the earlier ones did not fool. ``*_l2``
  names are the L2 versions. Defaults are AutoAttack's standard ones (100 iterations, 9 target classes, 5,000
  queries, one restart).
* An eps sweep costs less than one run per eps: eps are attacked in increasing order and an image fooled at a
  smaller eps keeps that adversarial example at every larger one (it lies inside the larger ball), so only the
  images still standing are attacked again (``reuse_eps=false``: every eps from scratch, as running AutoAttack
  once per eps does). Only clean-correct images are ever sent. The chaining is
  :class:`robustcars.attacks.cascade.Cascade`, which also chains any registered attacks (``cascade``).
* ``pyautoattack`` reseeds torch's global RNG in ``perturb``; every call here runs inside
  ``torch.random.fork_rng()``, so the caller's random state is untouched. Cost is counted by the cascade: passes
  with gradients (APGD, FAB; each followed by an input-backward) and forward-only queries (Square's, FAB's and
  the checks), per attack.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from robustcars.attacks.base import Attack, AttackOutput
from robustcars.attacks.cascade import Cascade
from robustcars.errors import ConfigError
from robustcars.registry import attack_spec, validate_params

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


class _Component(Attack):
    """One pyautoattack attack at one eps on every image it is given (the cascade sends only those standing)."""

    def __init__(self, kind: str, norm: str, params: dict[str, Any]) -> None:
        self.name, self.norm, self.kind, self.params = kind, norm, kind, params

    def run(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: list[float]) -> AttackOutput:
        advs = []
        for e in eps:
            advs.append(x.clone() if e == 0 else _one(self.kind, model, e, self.norm, self.params, x.device)
                        .perturb(x, y).detach())
        return AttackOutput(eps=eps, adv=advs)


class AutoAttackAdapter(Attack):
    """One of AutoAttack's attacks, or its standard sequence, as a robustcars attack (see the module docstring):
    a :class:`~robustcars.attacks.cascade.Cascade` of pyautoattack components, run inside ``fork_rng``."""

    def __init__(self, name: str, **params: Any) -> None:
        spec = attack_spec(name)
        self.name, self.norm = name, spec.norm
        self.params = validate_params(name, params)
        base = name.removesuffix("_l2")
        parts = [(kind, _Component(kind, self.norm, self.params)) for kind in SEQUENCE.get(base, (base,))]
        self.cascade = Cascade(name, self.norm, parts, reuse_eps=self.params["reuse_eps"])

    def run(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: list[float]) -> AttackOutput:
        _aa()
        with torch.random.fork_rng(devices=[]):
            return self.cascade.run(model, x, y, eps)


def build(name: str, **params: Any) -> AutoAttackAdapter:
    """The registry's factory for every AutoAttack entry."""
    return AutoAttackAdapter(name, **params)
