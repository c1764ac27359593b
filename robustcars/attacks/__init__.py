"""Attacks behind one interface (:class:`Attack`); names, norms and parameters live in
:mod:`robustcars.registry`, the single source of truth that the CLI and suites validate against."""

from __future__ import annotations

import importlib

from robustcars.attacks.base import (
    Attack,
    AttackOutput,
    frozen_weights,
    input_gradient,
    perturbation_norms,
    project,
    to_8bit_grid,
)
from robustcars.attacks.fgsm import FGSM, fgsm, fgsm_sweep
from robustcars.attacks.iterative import BIM, MIFGSM, PGDL2, PGDLinf, choose_targets, mi_fgsm, pgd
from robustcars.registry import attack_names, attack_spec, check_eps, validate_params


def get_attack(name: str, **params) -> Attack:
    """Build a registered attack from validated parameters (defaults from the registry).

    Raises:
        ConfigError: an unknown name, an unknown parameter, or a value of the wrong type or range.
    """
    spec = attack_spec(name)
    values = validate_params(name, params)
    module, attr = spec.factory.split(":")
    factory = getattr(importlib.import_module(module), attr)
    return factory(**values) if spec.source == "robustcars" else factory(name, **values)


__all__ = [
    "BIM",
    "FGSM",
    "MIFGSM",
    "PGDL2",
    "Attack",
    "AttackOutput",
    "PGDLinf",
    "attack_names",
    "check_eps",
    "choose_targets",
    "fgsm",
    "fgsm_sweep",
    "frozen_weights",
    "get_attack",
    "input_gradient",
    "mi_fgsm",
    "perturbation_norms",
    "to_8bit_grid",
    "pgd",
    "project",
]
