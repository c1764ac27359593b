"""A study: a grid of training configurations, trained one after another into one folder, then attacked alike.

A study file (TOML) names a ``[base]`` of ``robustcars train`` options shared by every configuration, one
``[[config]]`` table per configuration (its ``name`` and the options it changes) and, optionally, an ``[attack]``
run on every configuration's best model (``attack``, ``eps``, ``split``, ``max_images`` and the attack's
parameters)::

    OUT/study.json        the study as resolved: every configuration's full training options, the attack, the command
    OUT/<name>/           an ordinary run folder (``robustcars train``): attack, report and the web app read it
    OUT/<name>/<label>/   the follow-up attack of that run (``robustcars attack``), label ``<attack>`` by default

Configurations run in file order. Each run is resumable and locked like ``robustcars train``; the study is resumable
as a whole (``resume=True``): a configuration with ``metrics.json`` is not trained again, one with ``last.pt``
continues from its last finished epoch, a finished attack is left as it is. Everything — the file, every
configuration's options, the data folder, weights files — is checked before anything is written.
"""

from __future__ import annotations

import json
import re
import time
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from robustcars import storage as rio
from robustcars.config import AttackConfig, TrainConfig
from robustcars.errors import ConfigError, DataError
from robustcars.lock import process_lock
from robustcars.reporting.study_report import STUDY_FILE, claim_names
from robustcars.version import __version__

STUDY_SCHEMA = 1
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_NOT_STUDY_OPTIONS = {"data", "out"}  # the study's own --data and --out decide these
_ATTACK_KEYS = {"attack", "eps", "split", "max_images", "label", "batch_size", "seed"}


@dataclass(frozen=True)
class StudyAttack:
    """The attack run on every configuration's best model (``robustcars attack`` options)."""

    attack: str = "fgsm"
    eps: tuple[float, ...] = (0.01,)
    split: str = "test"
    max_images: int | None = None
    label: str = ""  # the attack's folder inside each run (default: the attack's name)
    batch_size: int = 32
    seed: int = 0
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def folder(self) -> str:
        return self.label or self.attack


@dataclass(frozen=True)
class Study:
    """A parsed study file: ``configs`` maps each configuration's name to the train options it sets."""

    path: Path
    title: str
    description: str
    base: dict[str, Any]
    configs: dict[str, dict[str, Any]]
    attack: StudyAttack | None
    claim: str = ""  # e.g. "pretrained ≈ freeze-3 ≫ scratch ≈ freeze-6", checked by the study report


def _table(path: Path, doc: dict[str, Any], key: str) -> dict[str, Any]:
    value = doc.get(key, {})
    if not isinstance(value, dict):
        raise ConfigError(f"{path}: [{key}] must be a table")
    return value


def _train_options(path: Path, where: str, options: dict[str, Any]) -> dict[str, Any]:
    """``options`` checked against :class:`TrainConfig`'s fields (dashes read as underscores)."""
    known = {f.name for f in fields(TrainConfig)} - _NOT_STUDY_OPTIONS
    options = {k.replace("-", "_"): v for k, v in options.items()}
    unknown = sorted(set(options) - known)
    if unknown:
        raise ConfigError(f"{path}: {where}: unknown train option(s) {', '.join(unknown)} "
                          f"(known: {', '.join(sorted(known))})")
    return options


def _study_attack(path: Path, table: dict[str, Any]) -> StudyAttack:
    """The ``[attack]`` table; attack parameters are every key that is not an option of the attack run."""
    given = {k: v for k, v in table.items() if k in _ATTACK_KEYS}
    params = {k: v for k, v in table.items() if k not in _ATTACK_KEYS}
    eps = given.get("eps", StudyAttack.eps)
    eps = (eps,) if isinstance(eps, (int, float)) else eps
    if not isinstance(eps, (list, tuple)) or not all(isinstance(e, (int, float)) for e in eps) or not eps:
        raise ConfigError(f"{path}: [attack] eps must be a number or a non-empty list of numbers, got {eps!r}")
    label = given.get("label", "")
    if label and not _NAME.match(label):
        raise ConfigError(f"{path}: [attack] label {label!r} is not a folder name (letters, digits, _ . -)")
    return StudyAttack(**{**given, "eps": tuple(float(e) for e in eps)}, params=params)


def load_study(path: str | Path) -> Study:
    """Read and check a study file (see the module docstring).

    Raises:
        ConfigError: unreadable TOML, no configuration, a name that is not a folder name or repeated, an unknown
            train option.
    """
    path = Path(path)
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"study file not found: {path}") from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: not a readable TOML study file: {exc}") from None
    unknown = sorted(set(doc) - {"title", "description", "claim", "base", "config", "attack"})
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) {', '.join(unknown)} (a study has title, description, claim, "
                          "[base], [[config]] and [attack])")
    base = _train_options(path, "[base]", _table(path, doc, "base"))
    items = doc.get("config", [])
    if not isinstance(items, list) or not items or not all(isinstance(c, dict) for c in items):
        raise ConfigError(f"{path}: a study needs at least one [[config]] table (its name and train options)")
    configs: dict[str, dict[str, Any]] = {}
    for i, item in enumerate(items, 1):
        name = item.get("name")
        if not isinstance(name, str) or not _NAME.match(name):
            raise ConfigError(f"{path}: [[config]] {i}: name must be a folder name (letters, digits, _ . -), "
                              f"got {name!r}")
        if name in configs:
            raise ConfigError(f"{path}: configuration name {name!r} is used twice")
        configs[name] = _train_options(path, f"[[config]] {name}", {k: v for k, v in item.items() if k != "name"})
    attack = _study_attack(path, _table(path, doc, "attack")) if "attack" in doc else None
    claim = str(doc.get("claim", ""))
    _check_claim_names(path, claim, configs)
    return Study(path, str(doc.get("title", path.stem)), str(doc.get("description", "")), base, configs, attack,
                 claim)


def _check_claim_names(path: Path, claim: str, configs: dict[str, Any]) -> None:
    unknown = [n for n in claim_names(claim) if n not in configs]
    if unknown:
        raise ConfigError(f"{path}: claim {claim!r} names {', '.join(unknown)}, not configurations of this study")


def train_configs(study: Study, data: str | Path, out: str | Path) -> dict[str, TrainConfig]:
    """Every configuration's validated :class:`TrainConfig` (``out/<name>``), by name.

    Raises:
        ConfigError: an option's value is refused (the message names the configuration), a weights file is missing.
    """
    configs = {}
    for name, options in study.configs.items():
        try:
            cfg = TrainConfig(data=str(Path(data).resolve()), out=str(Path(out) / name), **{**study.base, **options})
            cfg.validate()
        except (ConfigError, TypeError) as exc:
            raise ConfigError(f"{study.path}: configuration {name}: {exc}") from None
        if cfg.weights not in ("imagenet", "none") and not Path(cfg.weights).is_file():
            raise ConfigError(f"{study.path}: configuration {name}: weights must be imagenet, none or an existing "
                              f"file, got {cfg.weights!r}")
        configs[name] = cfg
    return configs


def attack_config(study: Study, run: TrainConfig) -> AttackConfig | None:
    """The follow-up attack of one configuration's run (None without ``[attack]``), validated.

    Raises:
        ConfigError: an attack option or parameter is refused.
    """
    a = study.attack
    if a is None:
        return None
    cfg = AttackConfig(run=run.out, out=str(Path(run.out) / a.folder), eps=list(a.eps), attack=a.attack,
                       params=dict(a.params), split=a.split, batch_size=a.batch_size, max_images=a.max_images,
                       seed=a.seed, workers=run.workers, device=run.device)
    try:
        return cfg.validate()
    except ConfigError as exc:
        raise ConfigError(f"{study.path}: [attack]: {exc}") from None


def _resolved(study: Study, configs: dict[str, TrainConfig], command: str, threads: int | None) -> dict[str, Any]:
    return {"kind": "study", "schema": STUDY_SCHEMA, "robustcars": __version__, "title": study.title,
            "description": study.description, "claim": study.claim, "file": str(study.path),
            "command": command, "threads": threads,
            "configs": {name: cfg.to_dict() for name, cfg in configs.items()},
            "attack": None if study.attack is None else {
                "attack": study.attack.attack, "eps": list(study.attack.eps), "split": study.attack.split,
                "max_images": study.attack.max_images, "folder": study.attack.folder, "params": study.attack.params,
                "batch_size": study.attack.batch_size, "seed": study.attack.seed}}


def _same_study(saved: dict[str, Any], now: dict[str, Any]) -> bool:
    """The same configurations (whatever spelling of --out), attack and thread count."""
    def key(d: dict[str, Any]) -> str:
        configs = {n: {k: v for k, v in c.items() if k != "out"} for n, c in (d.get("configs") or {}).items()}
        return json.dumps([configs, d.get("attack"), d.get("threads")], sort_keys=True)

    return key(saved) == key(now)


def check_folder(out: Path, resolved: dict[str, Any], resume: bool) -> None:
    """Refuse an output folder whose study would be lost or mixed with another.

    Raises:
        ConfigError: ``out`` holds a study and ``resume`` is off, or holds a different study; ``resume`` and no
            study there.
    """
    path = out / STUDY_FILE
    if not path.is_file():
        if resume:
            raise ConfigError(f"nothing to resume: {path} does not exist")
        if out.exists() and any(p.name != ".robustcars.lock" for p in out.iterdir()):
            raise ConfigError(f"{out} is not empty and holds no study; choose another --out")
        return
    if not resume:
        raise ConfigError(f"{out} already holds a study; pass --resume to continue it or choose another --out")
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path} is unreadable ({exc}); choose another --out") from None
    if not _same_study(saved, resolved):
        raise ConfigError(f"{out} holds a different study (other configurations, attack or --threads); "
                          "use another --out")


@dataclass(frozen=True)
class ConfigOutcome:
    """What happened to one configuration in this call: ``trained``, ``resumed`` or ``done`` (left as it was)."""

    name: str
    run_dir: Path
    training: str
    attack: str | None
    seconds: float


def run_study(study: Study, data: str | Path, out: str | Path, *, resume: bool = False, threads: int | None = None,
              command: str = "", train_reporter=None, attack_reporter=None, note=print) -> list[ConfigOutcome]:
    """Train (and attack) every configuration of ``study`` into ``out``; see the module docstring.

    ``note(text)`` is told which configuration starts; ``train_reporter()`` / ``attack_reporter()`` make the
    progress reporters of each run. Returns one :class:`ConfigOutcome` per configuration, in file order.

    Raises:
        ConfigError, DataError, CheckpointError, StorageError: as their messages say; finished runs are never
            touched, and nothing is written before every configuration has been checked.
    """
    from robustcars import distributed as D
    from robustcars.evaluation.runner import run_attack
    from robustcars.training.loop import fit

    out = Path(out)
    if not Path(data).is_dir():
        raise DataError(f"data folder not found: {data} (set --data or $ROBUSTCARS_DATA)")
    configs = train_configs(study, data, out)
    attacks = {name: attack_config(study, cfg) for name, cfg in configs.items()}
    resolved = _resolved(study, configs, command, threads)
    check_folder(out, resolved, resume)
    outcomes = []
    with process_lock(out, D.current()):
        check_folder(out, resolved, resume)  # again under the lock
        saved = out / STUDY_FILE
        if not saved.is_file():
            rio.write_json(saved, resolved)
        for i, (name, cfg) in enumerate(configs.items(), 1):
            t0 = time.perf_counter()
            run_dir = Path(cfg.out)
            training = _train_state(run_dir)
            note(f"configuration {i}/{len(configs)}: {name} ({training})")
            if training != "done":
                fit(cfg, resume=training == "resumed", reporter=train_reporter() if train_reporter else None,
                    command=f"{command}  # configuration {name}" if command else "")
            attack = None
            if attacks[name] is not None:
                result = run_attack(attacks[name], resume=True,
                                    reporter=attack_reporter() if attack_reporter else None,
                                    command=f"{command}  # configuration {name}, attack" if command else "")
                attack = "done" if result.get("unchanged") else "attacked"
            outcomes.append(ConfigOutcome(name, run_dir, training, attack, time.perf_counter() - t0))
    return outcomes


def _train_state(run_dir: Path) -> str:
    """``done`` (metrics.json written), ``resumed`` (an epoch finished: last.pt) or ``trained`` (a new run)."""
    if (run_dir / "metrics.json").is_file():
        return "done"
    if (run_dir / "last.pt").is_file():
        return "resumed"
    return "trained"
