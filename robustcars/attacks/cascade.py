"""The worst case over several attacks at the lowest cost: a cascade (Croce & Hein, ICML 2020, Sec. 4; the
way AutoAttack's standard version chains APGD-CE, APGD-T, FAB-T and Square).

For every eps, in increasing order, the attacks run in the given order (put the cheapest first), each on the
images no earlier attack fooled; an image counts as robust at eps only if every attack failed on it. With
``reuse_eps`` (the default) an image fooled at a smaller eps keeps that adversarial example at every larger eps
— it lies inside the larger ball — so a larger eps attacks only what the smaller ones could not break. Without
it, each eps starts again from all clean-correct images (what running AutoAttack once per eps does): the
baseline that ``reuse_eps`` is measured against. Misclassified clean images are never attacked.

Cost: every forward pass of the model is counted per image with a forward hook, per attack: passes run with
gradients enabled (each followed by one input-backward, except a library's own predictions made in grad mode:
``AttackOutput.passes_by``, in total ``passes``) and
passes without (queries: Square's, FAB's line searches, the check after each attack of which images it fooled:
``AttackOutput.queries_by``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from robustcars.attacks import get_attack
from robustcars.attacks.base import Attack, AttackOutput
from robustcars.registry import attack_spec


class Cascade(Attack):
    """Worst case over ``attacks`` (``(label, Attack)`` pairs of one norm), cheapest first (module docstring).

    ``AttackOutput.fooled_by[j][i]`` is the label of the attack whose example stands for image ``i`` at
    ``eps[j]`` (``None``: still robust, or misclassified clean).
    """

    def __init__(self, name: str, norm: str, attacks: Sequence[tuple[str, Attack]], reuse_eps: bool = True) -> None:
        if not attacks:
            raise ValueError("a cascade needs at least one attack")
        bad = [label for label, a in attacks if a.norm != norm]
        if bad:
            raise ValueError(f"attacks {bad} are not {norm} attacks")
        self.name, self.norm, self.attacks, self.reuse_eps = name, norm, list(attacks), reuse_eps

    def run(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: list[float]) -> AttackOutput:
        with torch.no_grad():
            clean_logits = model(x)
        correct = clean_logits.argmax(1) == y
        spent = {True: 0, False: 0}  # image-forwards with / without gradients

        def count(_module, inputs, _output):
            spent[torch.is_grad_enabled()] += inputs[0].shape[0]

        counters: dict[str, int] = {}
        passes_by = {label: 0 for label, _ in self.attacks}
        queries_by = {label: 0 for label, _ in self.attacks}
        adv_by_eps: dict[float, torch.Tensor] = {}
        by_eps: dict[float, list[str | None]] = {}
        current, standing, breaker = x.clone(), correct.clone(), [None] * len(y)
        handle = model.register_forward_hook(count)
        try:
            for e in sorted(set(eps)):
                if self.reuse_eps:
                    current = current.clone()
                else:  # every eps from scratch: the per-eps baseline
                    current, standing, breaker = x.clone(), correct.clone(), [None] * len(y)
                for label, attack in self.attacks:
                    idx = standing.nonzero().flatten()
                    if idx.numel() == 0 or e == 0:
                        break
                    before = dict(spent)
                    res = attack(model, x[idx], y[idx], [e])
                    out = res.adv[0]
                    for key, value in (res.counters or {}).items():
                        counters[f"{label}.{key}"] = counters.get(f"{label}.{key}", 0) + value
                    with torch.no_grad():
                        fooled = model(out).argmax(1) != y[idx]
                    passes_by[label] += spent[True] - before[True]
                    queries_by[label] += spent[False] - before[False]
                    hit = idx[fooled]
                    current[hit] = out[fooled]
                    standing[hit] = False
                    for i in hit.tolist():
                        breaker[i] = label
                adv_by_eps[e], by_eps[e] = current, list(breaker)
        finally:
            handle.remove()
        n = x.shape[0]
        return AttackOutput(eps=eps, adv=[adv_by_eps[e] for e in eps], clean_logits=clean_logits,
                            passes=sum(passes_by.values()) / n, passes_by=passes_by, queries_by=queries_by,
                            fooled_by=[by_eps[e] for e in eps], counters=counters or None)


def build(attacks: list[dict], reuse_eps: bool = True) -> Cascade:
    """The registry's factory for ``cascade`` / ``cascade_l2``: ``attacks`` as the registry validated them, a list
    of ``{"name", "label", "params"}`` of one norm (which names the cascade)."""

    parts = [(a["label"], get_attack(a["name"], **a["params"])) for a in attacks]
    norm = attack_spec(attacks[0]["name"]).norm
    return Cascade("cascade" if norm == "linf" else "cascade_l2", norm, parts, reuse_eps=reuse_eps)
