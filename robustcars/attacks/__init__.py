"""Attack registry. Names feed the CLI's choices; duplicates are refused."""

from __future__ import annotations

from collections.abc import Callable

from ..errors import ConfigError
from .base import Attack, AttackOutput, check_eps, frozen_weights, input_gradient, perturbation_norms, project
from .fgsm import FGSM, fgsm, fgsm_sweep
from .iterative import BIM, MIFGSM, PGDL2, PGDLinf, choose_targets, mi_fgsm, pgd

_REGISTRY: dict[str, Callable[..., Attack]] = {}


def register(name: str, factory: Callable[..., Attack]) -> None:
    if name in _REGISTRY:
        raise ValueError(f"attack {name!r} is already registered")
    _REGISTRY[name] = factory


def attack_names() -> list[str]:
    return sorted(_REGISTRY)


def get_attack(name: str, **params) -> Attack:
    """Build a registered attack. Raises ConfigError for an unknown name or bad parameters."""
    if name not in _REGISTRY:
        raise ConfigError(f"unknown attack {name!r}; choose one of: {', '.join(attack_names())}")
    try:
        return _REGISTRY[name](**params)
    except TypeError as exc:
        raise ConfigError(f"bad parameters for attack {name!r}: {exc}") from None


register("fgsm", FGSM)
register("bim", BIM)
register("pgd", PGDLinf)
register("pgd_l2", PGDL2)
register("mifgsm", MIFGSM)


def _register_foolbox() -> None:
    from .foolbox_adapter import factories

    for name, factory in factories().items():
        register(name, factory)


_register_foolbox()

__all__ = ["Attack", "AttackOutput", "BIM", "FGSM", "MIFGSM", "PGDL2", "PGDLinf", "choose_targets", "mi_fgsm", "pgd", "attack_names", "check_eps", "fgsm", "fgsm_sweep", "frozen_weights",
           "get_attack", "input_gradient", "perturbation_norms", "project", "register"]
