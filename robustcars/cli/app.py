"""The ``robustcars`` command line: thin commands that parse, validate, call the library and render.

Every failure ends in one line on stderr and a non-zero exit, never a traceback: ``error: …`` with status 2
for anything the user can fix (bad options, data, checkpoints, a busy or unwritable folder — Typer's own
usage errors included), ``interrupted`` with 130 for Ctrl-C, and for a bug ``error: unexpected …`` with
status 1 and the path of a file holding the traceback. Options are validated before torch is imported.
"""

from __future__ import annotations

import inspect
import os
import signal
import sys
import tempfile
import time
import traceback
import typing
from enum import Enum, StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

try:  # typer >= 0.2x vendors its own click
    from typer._click.exceptions import ClickException, NoArgsIsHelpError, UsageError
except ImportError:  # pragma: no cover - older typer on the real click
    from click.exceptions import ClickException, NoArgsIsHelpError, UsageError

from robustcars.config import DATA_ENV, DEFAULT_DATA, default_data
from robustcars.errors import ConfigError, DataError, RobustcarsError
from robustcars.registry import (
    ADVERSARIAL_TRAINING,
    ARCHITECTURES,
    CORRUPTIONS,
    EXTRA_CORRUPTIONS,
    attack_names,
    param_help,
)


def _fail(message: str, code: int) -> None:
    from robustcars.console import err_console

    err_console.print(f"[bold red]error:[/] {message}", soft_wrap=True, markup=True, highlight=False)
    sys.exit(code)


def _save_traceback() -> str:
    fd, path = tempfile.mkstemp(prefix=f"robustcars-error-{time.strftime('%Y%m%d-%H%M%S')}-", suffix=".txt")
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(f"robustcars {' '.join(sys.argv[1:])}\n\n{traceback.format_exc()}")
    return path


class _Group(TyperGroup):
    """Runs a command and maps every way it can end to one line and an exit status (see the module docstring)."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        global _ARGV
        _ARGV = list(sys.argv[1:] if args is None else args)
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        from rich.markup import escape

        # A shell starts background jobs with SIGINT ignored, and Python then never raises KeyboardInterrupt: a
        # `kill -INT` (or the web app's cancel) would be lost. SIGINT always means "stop, keep what is done".
        if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
            signal.signal(signal.SIGINT, signal.default_int_handler)
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except NoArgsIsHelpError as exc:
            typer.echo(exc.format_message())
            sys.exit(0)
        except UsageError as exc:
            hint = f" (see '{exc.ctx.command_path} --help')" if exc.ctx is not None else ""
            _fail(escape(exc.format_message()) + hint, 2)
        except RobustcarsError as exc:
            _fail(escape(str(exc)), 2)
        except (KeyboardInterrupt, typer.Abort):
            code = 130
        except ClickException as exc:
            _fail(escape(exc.format_message()), exc.exit_code or 1)
        except Exception as exc:  # noqa: BLE001 - the last line of defence: a bug, reported in one line
            path = _save_traceback()
            _fail(escape(f"unexpected {exc.__class__.__name__}: {exc} — a bug in robustcars; traceback saved "
                         f"to {path}"), 1)
        if code == 130:  # typer turns Ctrl-C into Exit(130)
            from robustcars.console import err_console

            err_console.print("[bold red]interrupted[/]: completed work is saved; rerun with --resume to continue")
        sys.exit(code if isinstance(code, int) else 0)


if "TERMINAL_WIDTH" not in os.environ and not sys.stdout.isatty():  # help into a file or pipe: wide, never cut
    from typer import rich_utils

    rich_utils.MAX_WIDTH = 160

app = typer.Typer(
    name="robustcars",
    cls=_Group,
    help="Adversarial-robustness evaluation of fine-grained car classifiers (Stanford Cars, 196 classes).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    context_settings={"max_content_width": 160},
)


def _version(value: bool) -> None:
    if value:
        from robustcars.version import __version__

        typer.echo(f"robustcars {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", metavar="", callback=_version, is_eager=True, help="Print the version and exit.")] = False,
) -> None:
    """Adversarial-robustness evaluation of fine-grained car classifiers (Stanford Cars, 196 classes)."""


_ARGV: list[str] = []  # the arguments of this invocation, as typed


def _typed() -> str:
    """This invocation as typed (shell-quoted), for the records: what the user ran, not what it resolved to."""
    import shlex

    return shlex.join(["robustcars", *map(str, _ARGV)])


def _command(ctx: typer.Context) -> str:
    """The invoked command with every option resolved (defaults included), for the reproducibility record."""
    import shlex

    parts = [ctx.command_path if ctx.command_path.startswith("robustcars") else f"robustcars {ctx.info_name}"]
    for param in ctx.command.params:
        value = ctx.params.get(param.name)
        if value is None or value is False or param.name in ("resume",) and not value:
            continue
        if param.param_type_name == "argument":
            parts += [str(v) for v in (value if isinstance(value, (list, tuple)) else [value])]
            continue
        opt = max(param.opts, key=len)
        if value is True:
            parts.append(opt)
            continue
        for v in value if isinstance(value, (list, tuple)) else [value]:
            parts += [opt, str(v.value if isinstance(v, Enum) else v)]
    return " ".join([parts[0], *(shlex.quote(p) for p in parts[1:])])


Arch = Enum("Arch", {name: name for name in ARCHITECTURES}, type=str)
Defence = Enum("Defence", {name: name for name in ADVERSARIAL_TRAINING}, type=str)
AttackName = Enum("AttackName", {name: name for name in attack_names()}, type=str)


class Panels(StrEnum):
    all = "all"
    extremes = "extremes"
    none = "none"


class Device(StrEnum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


class Resize(StrEnum):
    crop = "crop"
    squash = "squash"


class Split(StrEnum):
    test = "test"
    val = "val"
    train = "train"


def _eps(text: str) -> float:
    """``--eps`` as typed: a number or k/255 (:func:`robustcars.registry.parse_eps`)."""
    from robustcars.registry import parse_eps

    try:
        return parse_eps(text)
    except ConfigError as exc:
        raise typer.BadParameter(str(exc).removeprefix("eps must be ")) from None


def _parse_param(text: str) -> tuple[str, Any]:
    """``KEY=VALUE`` with VALUE read as an int, a float, true/false, or else a string."""
    if "=" not in text:
        raise ConfigError(f"--param takes KEY=VALUE, got {text!r}")
    key, raw = (t.strip() for t in text.split("=", 1))
    low = raw.lower()
    if low in ("true", "false"):
        return key, low == "true"
    for cast in (int, float):
        try:
            return key, cast(raw)
        except ValueError:
            pass
    return key, raw


def _floats(text: str | None, option: str) -> list[float] | None:
    """``0.485,0.456,0.406`` -> three floats (None stays None)."""
    if text is None:
        return None
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        raise ConfigError(f"{option} takes three numbers separated by commas, got {text!r}") from None
    if len(values) != 3:
        raise ConfigError(f"{option} takes three numbers separated by commas, got {text!r}")
    return values


# The options of a model robustcars did not train, shared by attack and corrupt (each stated once).
ModelOpt = Annotated[str | None, typer.Option(help="Instead of --run, any model: torchvision:NAME, timm:NAME or package.module:factory (built with num_classes = the number of classes); needs --data.", show_default=False)]
CheckpointOpt = Annotated[Path | None, typer.Option(help="Weights for --model: a state dict, or one under the key 'state_dict', 'model' or 'model_state_dict' (module. prefixes stripped); read with weights_only=True.", show_default=False)]
ClassesOpt = Annotated[Path | None, typer.Option(help="For --model: a file with the class names, one a line, in the model's output order \\[default: the data's class folders, sorted].", show_default=False)]
MeanOpt = Annotated[str | None, typer.Option(help="For --model: the per-channel mean it expects, e.g. 0.485,0.456,0.406 (with --std; default: none, [0, 1] pixels go in as they are).", show_default=False)]
StdOpt = Annotated[str | None, typer.Option(help="For --model: the per-channel std it expects, e.g. 0.229,0.224,0.225.", show_default=False)]
ImgSizeOpt = Annotated[int | None, typer.Option(min=16, max=1024, help="For --model: square input size in pixels \\[default: 224; a run uses its own].", show_default=False)]
ResizeOpt = Annotated[Resize | None, typer.Option(help="For --model: 'crop' = shorter side to img-size then center crop; 'squash' = whole image to img-size x img-size \\[default: crop; a run uses its own].", show_default=False)]


def _check_out(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file; choose a folder")


_DATA_HELP = (f"Data root \\[default: ${DATA_ENV}, else {DEFAULT_DATA}]: class folders in train/, val/, test/ "
              "(ImageFolder layout, any class-folder dataset) or the Stanford Cars devkit layout (cars_train/, "
              "cars_test/, devkit/).")


def _config_parameters(options) -> list[inspect.Parameter]:
    """Typer parameters built from :func:`robustcars.config.train_options`: type, default, range, choices, help
    panel and help text as the config states them (nothing about an option is written here)."""
    from robustcars.config import TrainConfig

    hints = typing.get_type_hints(TrainConfig)
    params = []
    for name, default, o in options:
        typ = hints[name]
        flag = f"--{name.replace('_', '-')}"
        if o.choices:
            choice = Enum(name.title().replace("_", ""), {c: c for c in o.choices}, type=str)
            typ = choice | None if default is None else choice
            default = None if default is None else choice(default)
        info = typer.Option(flag, help=o.help, min=o.min, max=o.max, rich_help_panel=o.panel,
                            show_default=default is not None and not o.flag, metavar="" if o.flag else None)
        params.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default,
                                        annotation=Annotated[typ, info]))
    return params


def _train_parameters() -> list[inspect.Parameter]:
    from robustcars.config import train_options

    def option(name, typ, default, help, panel, **kw):
        flag = kw.pop("flag", f"--{name.replace('_', '-')}")
        return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default,
                                 annotation=Annotated[typ, typer.Option(flag, help=help, rich_help_panel=panel, **kw)])

    return [
        option("data", Path | None, None, _DATA_HELP, "Data", show_default=False),
        option("out", Path, Path("runs/resnet34"),
               "Run folder to create (checkpoints, history.csv, figures, metrics.json).", "Output"),
        *_config_parameters(train_options()),
        option("threads", int | None, None, "CPU threads for torch (default: torch's choice).", "Performance", min=1),
        option("resume", bool, False, "Continue the run in --out from its last completed epoch (its saved options "
               "are used).", "Output", metavar=""),
        option("events", Path | None, None, "Also write progress as JSON lines to this file (start, phase, advance, "
               "epoch, end; appended), for programs that follow the job.", "Output", show_default=False),
    ]


def train(**options: Any) -> None:
    """Fine-tune a classifier: AdamW + cosine LR, early stopping on validation macro-F1 (robust accuracy with
    --adversarial); optionally adversarial training or distillation from another run."""
    from robustcars.config import TrainConfig

    given = {k: v.value if isinstance(v, Enum) else v for k, v in options.items()}
    data, out = given.pop("data") or Path(default_data()), given.pop("out")
    threads, resume, events = given.pop("threads"), given.pop("resume"), given.pop("events")
    distill_from, weights = given["distill_from"], given["weights"]
    cfg = TrainConfig(data=str(data.resolve()), out=str(out), **given)
    if not resume:  # a resumed run uses its saved options
        cfg.validate()
        if distill_from is not None and not Path(distill_from).exists():
            raise ConfigError(f"--distill-from {distill_from} not found (a run folder or a checkpoint .pt file)")
        if weights not in ("imagenet", "none") and not Path(weights).is_file():
            raise ConfigError(f"--weights must be imagenet, none or an existing file, got {weights!r}")
        if not data.is_dir():
            raise DataError(f"data folder not found: {data} (set --data or ${DATA_ENV})")
    _check_out(out)

    from robustcars import distributed as D
    from robustcars.console import RichTrainReporter, console, history_table
    from robustcars.runtime import set_threads
    from robustcars.training.loop import Reporter, fit

    set_threads(threads)
    main_rank = D.env_is_main()
    try:
        reporter = RichTrainReporter() if main_rank else Reporter()
        if events is not None and main_rank:
            from robustcars.progress import JsonLinesEvents, Tee

            reporter = Tee(reporter, JsonLinesEvents(events))
        result = fit(cfg, resume=resume, reporter=reporter, command=_typed())
    finally:
        D.shutdown()
    if not main_rank:
        return
    console.print(history_table(result.history, result.best_epoch))
    score = "val robust accuracy" if cfg.adversarial or "val_robust_acc" in (result.history or [{}])[0] else \
        "val macro-F1"
    summary = f"best epoch {result.best_epoch}: {score} {result.best_val_f1:.4f}"
    if result.test:
        summary += f"; test accuracy {result.test['test_acc']:.4f}, macro-F1 {result.test['test_f1']:.4f} on {result.test['test_images']} images"
    if result.stopped_early:
        summary += " (stopped early)"
    console.print(f"[bold green]done[/] in {result.seconds / 60:.1f} min — {summary}\nrun folder: {result.run_dir}",
                  soft_wrap=True)


train.__signature__ = inspect.Signature(_train_parameters())
app.command()(train)


def _print_attack_result(result: dict[str, Any], files: str) -> None:
    from robustcars.console import attack_table, cascade_lines, checks_lines, console, min_norm_lines

    console.print(attack_table(result))
    for line in min_norm_lines(result) + cascade_lines(result) + checks_lines(result["checks"]):
        console.print(line, soft_wrap=True)
    console.print(files, soft_wrap=True)


@app.command()
def attack(
    run: Annotated[Path | None, typer.Option(help="Run folder from 'robustcars train' (its best.pt is used) or a checkpoint .pt file.", show_default=False)] = None,
    model: ModelOpt = None,
    checkpoint: CheckpointOpt = None,
    classes: ClassesOpt = None,
    mean: MeanOpt = None,
    std: StdOpt = None,
    img_size: ImgSizeOpt = None,
    resize: ResizeOpt = None,
    eps: Annotated[list[float] | None, typer.Option(metavar="EPS", parser=_eps, help="Budget in [0, 1] pixel scale or as k/255 (e.g. 4/255), an L∞ or L2 radius as the attack's norm says (see --attack); 0.01 ≈ 2.55/255 in L∞; repeat for a sweep \\[default: 0.01].")] = None,
    suite: Annotated[Path | None, typer.Option(help="Run an attack suite (TOML, see attacks/*.toml) instead of --attack/--eps.")] = None,
    attack_name: Annotated[AttackName, typer.Option("--attack", metavar="NAME", help="Attack by name; 'robustcars attacks' lists each with its norm, source, parameters and defaults. Minimum-norm attacks report robust accuracy at every eps from per-image minimal norms.")] = AttackName.fgsm,
    steps: Annotated[int | None, typer.Option(help=param_help("steps"))] = None,
    alpha: Annotated[float | None, typer.Option(help=param_help("alpha"))] = None,
    restarts: Annotated[int | None, typer.Option(help=param_help("restarts"))] = None,
    target: Annotated[str | None, typer.Option(help=param_help("target"))] = None,
    early_stop: Annotated[bool, typer.Option("--early-stop", metavar="", help="Iterative attacks: stop on an image at its first fooling iterate (robust accuracy unchanged or lower, entropy/rank shifts then describe that iterate; much cheaper at large eps).")] = False,
    param: Annotated[list[str] | None, typer.Option(help="Any attack parameter as KEY=VALUE (repeatable); 'robustcars attacks' lists each attack's parameters, allowed values and defaults.")] = None,
    split: Annotated[Split, typer.Option(help="Split to attack.")] = Split.test,
    batch_size: Annotated[int, typer.Option(min=1, help="Images per batch.")] = 32,
    out: Annotated[Path | None, typer.Option(help="Output folder \\[default: RUN/attack-<attack>, RUN/suite-<name> for a suite].")] = None,
    data: Annotated[Path | None, typer.Option(help="Data root, if not the one saved in the run.")] = None,
    device: Annotated[Device, typer.Option(help="auto = CUDA when available, else CPU.")] = Device.auto,
    max_images: Annotated[int | None, typer.Option(min=1, help="Attack a seeded random subset of this many images (default: the whole split).")] = None,
    examples: Annotated[int, typer.Option(min=0, help="Images shown in each panel figure (0 = no panels).")] = 4,
    cam: Annotated[int, typer.Option(min=0, help="Measure the Grad-CAM attention shift (clean vs the largest eps) on a seeded set of this many images, and draw the Grad-CAM panel of the examples (2 extra forward+backward passes per image).")] = 0,
    save_adv: Annotated[bool, typer.Option("--save-adv", metavar="", help="Keep every adversarial example, with its clean image, as float32 tensors in OUT/adv/*.safetensors plus adv/manifest.csv (reload in Python with load_saved of robustcars.evaluation.saved; rescore with 'robustcars transfer'). Disk: 0.31 MB per image per (1 + number of eps) at 160 px — 1.2 GB for 1,000 images and 3 eps; ×(size/160)² at other sizes.")] = False,
    save_png: Annotated[bool, typer.Option("--save-png", metavar="", help="With --save-adv (implied): also write the clean and adversarial images as 8-bit RGB PNGs in OUT/adv/png/ (what the 8-bit accuracy scored; ~0.05 MB each at 160 px).")] = False,
    seed: Annotated[int, typer.Option(help="Seed for the subset and the example images.")] = 0,
    workers: Annotated[int, typer.Option(min=0, help="DataLoader worker processes.")] = 2,
    threads: Annotated[int | None, typer.Option(min=1, help="CPU threads for torch (default: torch's choice).")] = None,
    resume: Annotated[bool, typer.Option("--resume", metavar="", help="Continue an interrupted attack in --out from its last complete batch (a finished one is left unchanged).")] = False,
) -> None:
    """Attack every image of a split and report accuracy, macro-F1, entropy, success rate and top-3 rank shifts."""
    from robustcars.config import AttackConfig

    params = dict(_parse_param(t) for t in param or [])
    params.update({k: v for k, v in {"steps": steps, "alpha": alpha, "restarts": restarts, "target": target}.items()
                   if v is not None})
    if early_stop:
        params["early_stop"] = True
    run_dir = _attack_run_dir(run, model, out, data, (checkpoint, classes, mean, std, img_size, resize))
    base = dict(run=str(run.resolve()) if run else "", split=split.value, batch_size=batch_size, device=device.value,
                data=str(data.resolve()) if data else None, max_images=max_images, examples=examples, seed=seed,
                workers=workers, cam=cam, save_adv=save_adv, save_png=save_png, model=model, checkpoint=str(checkpoint.resolve()) if checkpoint else None,
                classes=str(classes.resolve()) if classes else None, mean=_floats(mean, "--mean"),
                std=_floats(std, "--std"), img_size=img_size, resize=resize.value if resize else None)
    spec = None
    if suite is not None:
        if eps or params or attack_name != AttackName.fgsm:
            raise ConfigError("--suite defines attacks, eps and parameters; drop --attack/--eps/--steps/--param/...")
        from robustcars.evaluation.suite import load_suite

        spec = load_suite(suite)
        out = out or run_dir / f"suite-{spec.name}"
        cfg = AttackConfig(out=str(out), **base)
    else:
        out = out or run_dir / f"attack-{attack_name.value}"
        cfg = AttackConfig(out=str(out), eps=list(eps or [0.01]), attack=attack_name.value, params=params, **base)
    cfg.validate()
    _check_out(out)
    if run is not None and not Path(run).exists():
        raise ConfigError(f"--run {run} not found (a run folder or a checkpoint .pt file)")
    if checkpoint is not None and not checkpoint.is_file():
        raise ConfigError(f"--checkpoint {checkpoint} not found")
    _run_attack_and_print(cfg, spec, resume, threads)


def _attack_run_dir(run: Path | None, model: str | None, out: Path | None, data: Path | None, model_options: tuple
                    ) -> Path:
    """The folder under which the default output folder goes; refuses a mix of --run and --model options."""
    if (run is None) == (model is None):
        raise ConfigError("give --run (a robustcars run) or --model (any model), one of the two")
    if model is not None:
        if out is None or data is None:
            raise ConfigError("--model needs --data (the images) and --out (where the results go)")
        return out.parent
    if any(v is not None for v in model_options):
        raise ConfigError("--checkpoint, --classes, --mean, --std, --img-size and --resize go with --model (a run "
                          "carries its own)")
    return run if run.is_dir() else run.parent


def _rate(images_per_second: float | None) -> str:
    """Throughput as people read it: img/s, or s/img below one image a second."""
    if not images_per_second:
        return "no image attacked"
    return f"{images_per_second:.2f} img/s" if images_per_second >= 1 else f"{1 / images_per_second:.1f} s/img"


def _run_attack_and_print(cfg, spec, resume: bool, threads: int | None) -> None:
    """Run the attack (or the suite ``spec``) with progress on rank 0, then print its tables and files."""
    from robustcars import distributed as D
    from robustcars.console import RichAttackReporter
    from robustcars.evaluation.runner import AttackReporter, run_attack
    from robustcars.runtime import set_threads

    set_threads(threads)
    reporter = RichAttackReporter() if D.env_is_main() else AttackReporter()
    try:
        if spec is not None:
            from robustcars.evaluation.suite import run_suite

            progress, stop = (_corruption_progress(len(spec.corruptions.corruptions), len(spec.corruptions.severities))
                              if spec.corruptions else (None, lambda: None))
            try:
                result = run_suite(cfg, spec, resume=resume, reporter=reporter, command=_typed(),
                                   corruption_progress=progress)
            finally:
                stop()
        else:
            result = run_attack(cfg, resume=resume, reporter=reporter, command=_typed())
    finally:
        D.shutdown()
    if not result:  # a non-zero torchrun rank: rank 0 prints
        return
    out = cfg.out
    if spec is not None:
        total = sum(c["seconds"] for c in result["cost"].values())
        _print_attack_result(result, f"[bold green]done[/] suite {spec.name}; attacking took {total / 60:.1f} min "
                                     f"(this invocation) — results: {out}/suite.json, suite.csv and one folder per attack")
        from robustcars.console import console

        if "calibration" in result:
            from robustcars.reporting.report import calibration_text

            console.print(calibration_text(result["calibration"]), soft_wrap=True)
        if "corruptions" in result:
            c = result["corruptions"]
            console.print(f"natural corruptions on {c['images']} images: clean accuracy {c['clean']:.4f}, mean "
                          f"corruption error {c['mean_corruption_error']:.4f} — {c['result']}", soft_wrap=True)
        return
    cost = result["cost"]
    done = "results unchanged" if result.get("unchanged") else \
        f"done in {cost['seconds'] / 60:.1f} min ({_rate(cost['images_per_second'])})"
    _print_attack_result(result, f"[bold green]{done}[/] — results: {out}/attack.json, attack.csv, records.jsonl, figures/")


@app.command()
def transfer(
    saved: Annotated[Path, typer.Argument(metavar="SAVED", help="A finished attack folder made with --save-adv (its adv/ holds the examples).", show_default=False)],
    run: Annotated[list[Path], typer.Option(metavar="RUN", help="Target: a run folder (its best.pt) or a checkpoint .pt, of the same classes and input size; repeat for several.", show_default=False)],
    out: Annotated[list[Path] | None, typer.Option(metavar="DIR", help="Output folder per target, in --run order \\[default: SAVED/transfer/<run folder name>].", show_default=False)] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Images per forward pass.")] = 64,
    device: Annotated[Device, typer.Option(help="auto = CUDA when available, else CPU.")] = Device.auto,
    threads: Annotated[int | None, typer.Option(min=1, help="CPU threads for torch (default: torch's choice).")] = None,
) -> None:
    """Score saved adversarial examples on other models (black-box transfer): one attack folder per target."""
    from robustcars.console import attack_table, console, progress_bar
    from robustcars.evaluation.transfer import run_transfer
    from robustcars.runtime import set_threads

    if out and len(out) != len(run):
        raise ConfigError(f"give one --out per --run ({len(run)}), or none, got {len(out)}")
    set_threads(threads)
    results = run_transfer(saved, list(run), list(out) if out else None, batch_size=batch_size, device=device.value,
                           command=_typed(), progress=progress_bar)
    for result in results:
        console.print(attack_table(result))
        console.print(f"[bold green]done[/] — {result['run']['checkpoint']}: {Path(result['config']['out'])}/attack.json")


@app.command()
def corrupt(
    run: Annotated[Path | None, typer.Option(help="Run folder from 'robustcars train' (its best.pt is used) or a checkpoint .pt file.", show_default=False)] = None,
    model: ModelOpt = None,
    checkpoint: CheckpointOpt = None,
    classes: ClassesOpt = None,
    mean: MeanOpt = None,
    std: StdOpt = None,
    img_size: ImgSizeOpt = None,
    resize: ResizeOpt = None,
    corruption: Annotated[list[str] | None, typer.Option("--corruption", metavar="NAME", help="A corruption of ImageNet-C (repeat for several): " + ", ".join(CORRUPTIONS) + "; held out: " + ", ".join(EXTRA_CORRUPTIONS) + " \\[default: the 15 of ImageNet-C].", show_default=False)] = None,
    severity: Annotated[list[int] | None, typer.Option("--severity", metavar="S", help="Severity 1-5 (repeat for several) \\[default: 1 2 3 4 5].", show_default=False)] = None,
    extra: Annotated[bool, typer.Option("--extra", metavar="", help="Add ImageNet-C's four held-out corruptions (speckle noise, gaussian blur, spatter, saturate); they stay out of mCE.")] = False,
    reference: Annotated[Path | None, typer.Option(help="A corruption folder (or a run folder with corrupt/) of a reference model on the same images: gives CE, mCE and relative mCE (ImageNet-C normalises by AlexNet; use the standard model).", show_default=False)] = None,
    split: Annotated[Split, typer.Option(help="Split to corrupt.")] = Split.test,
    max_images: Annotated[int | None, typer.Option(min=1, help="A seeded random subset of this many images (default: the whole split).")] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Images per batch (each with every corruption and severity).")] = 32,
    out: Annotated[Path | None, typer.Option(help="Output folder \\[default: RUN/corrupt].", show_default=False)] = None,
    data: Annotated[Path | None, typer.Option(help="Data root, if not the one saved in the run.", show_default=False)] = None,
    seed: Annotated[int, typer.Option(help="Seed of the subset and of every corrupted image.")] = 0,
    cache: Annotated[Path | None, typer.Option(help="Folder of corrupted images (PNG) to reuse: read where it holds an image, written where not, so a second model on the same images pays forward passes only. The records are the same with or without it.", show_default=False)] = None,
    workers: Annotated[int, typer.Option(min=0, help="DataLoader worker processes: they generate the corruptions, the costly part.")] = 2,
    device: Annotated[Device, typer.Option(help="auto = CUDA when available, else CPU.")] = Device.auto,
    threads: Annotated[int | None, typer.Option(min=1, help="CPU threads for torch (default: torch's choice).")] = None,
    resume: Annotated[bool, typer.Option("--resume", metavar="", help="Continue an interrupted run in --out from its last complete batch (a finished one is left unchanged).")] = False,
) -> None:
    """Accuracy under natural corruptions (ImageNet-C's 15 x 5 severities, Hendrycks & Dietterich 2019): per
    corruption and severity, and CE / mCE against a reference model."""
    from robustcars.config import CorruptConfig

    names = list(corruption or CORRUPTIONS) + (list(EXTRA_CORRUPTIONS) if extra else [])
    out = out or _attack_run_dir(run, model, out, data, (checkpoint, classes, mean, std, img_size, resize)) / "corrupt"
    _attack_run_dir(run, model, out, data, (checkpoint, classes, mean, std, img_size, resize))  # with --out too
    cfg = CorruptConfig(run=str(run.resolve()) if run else "", out=str(out), corruptions=names,
                        severities=list(severity or [1, 2, 3, 4, 5]), split=split.value, batch_size=batch_size,
                        max_images=max_images, seed=seed, workers=workers, device=device.value,
                        data=str(data.resolve()) if data else None, cache=str(cache.resolve()) if cache else None,
                        reference=str(reference.resolve()) if reference else None, model=model,
                        checkpoint=str(checkpoint.resolve()) if checkpoint else None,
                        classes=str(classes.resolve()) if classes else None, mean=_floats(mean, "--mean"),
                        std=_floats(std, "--std"), img_size=img_size, resize=resize.value if resize else None
                        ).validate()
    _check_out(out)
    if run is not None and not run.exists():
        raise ConfigError(f"--run {run} not found (a run folder or a checkpoint .pt file)")
    from robustcars.console import console, corruption_table
    from robustcars.evaluation.corruptions import run_corruptions
    from robustcars.runtime import set_threads

    set_threads(threads)
    progress, stop = _corruption_progress(len(names), len(cfg.severities))
    try:
        result = run_corruptions(cfg, resume=resume, progress=progress, command=_typed())
    finally:
        stop()
    console.print(corruption_table(result))
    cost = result["cost"]
    done = "results unchanged" if result.get("unchanged") else f"done in {cost['seconds'] / 60:.1f} min"
    console.print(f"[bold green]{done}[/] — results: {out}/corruption.json, corruption.csv, records.jsonl, figures/",
                  soft_wrap=True)


def _corruption_progress(corruptions: int, severities: int):
    """``(progress, stop)``: the progress callback of a corruption run (a rich bar on a TTY, plain lines in a
    log) and the function that closes it."""
    from robustcars.console import progress_bar

    bars = []

    def progress(total: int, done: int):
        bars.append(progress_bar(f"{corruptions} corruptions x {severities} severities", total, done))
        return bars[-1].advance

    def stop() -> None:
        for bar in bars:
            bar.stop()

    return progress, stop


def _default_text(p) -> str:
    """`` [default]`` of an attack parameter as ``robustcars attacks`` shows it: nothing when its help says it."""
    if p.required:
        return " \\[required]"
    if p.default is None:
        return "" if "[default" in p.help else " \\[not set]"
    return f" \\[{p.default}]"


@app.command("attacks")
def list_attacks() -> None:
    """List every attack with its norm, kind, parameters (allowed values) and defaults."""
    from rich.table import Table

    from robustcars.console import console
    from robustcars.registry import ATTACKS, NORMS

    t = Table(title="Attacks (eps is a budget in [0, 1] pixel scale in the attack's norm)")
    for col in ("attack", "norm", "kind", "source", "parameters: allowed values \\[default] — meaning"):
        t.add_column(col)
    for spec in ATTACKS.values():
        params = "\n".join(f"{p.name}: {p.describe}{_default_text(p)} — {p.help}" for p in spec.params) or "–"
        t.add_row(spec.name, NORMS[spec.norm], spec.kind, f"{spec.source}: {spec.summary}", params)
    console.print(t)


@app.command()
def predict(
    images: Annotated[list[Path], typer.Argument(help="Photos, or folders of photos (any format PIL reads; grayscale, CMYK and transparent images are converted).", show_default=False)],
    run: Annotated[Path, typer.Option(help="Run folder or checkpoint .pt: its model, class names, image size and resize mode are used.")],
    top_k: Annotated[int | None, typer.Option(min=1, help="Classes listed per image \\[default: 15, or the number of classes if fewer].", show_default=False)] = None,
    attack_name: Annotated[AttackName | None, typer.Option("--attack", metavar="NAME", help="Also attack each photo (untargeted, with its clean top-1 as the label) and show the adversarial top-k and the rank change of the clean top-3.")] = None,
    eps: Annotated[float, typer.Option(metavar="EPS", parser=_eps, help="Budget of --attack in [0, 1] pixel scale or as k/255, in the attack's norm.")] = 0.01,
    param: Annotated[list[str] | None, typer.Option(help="Attack parameter KEY=VALUE (repeatable; see 'robustcars attacks').")] = None,
    cam: Annotated[bool, typer.Option("--cam", metavar="", help="Save a figure per photo into --out: original, Grad-CAM, (adversarial, its Grad-CAM,) top-k bars.")] = False,
    prefilter: Annotated[bool, typer.Option("--prefilter", metavar="", help="Skip photos that EfficientNet-Lite0's ImageNet head does not call a car (summed car-class probability below --threshold).")] = False,
    threshold: Annotated[float, typer.Option(help="Prefilter threshold on the summed ImageNet car-class probability, in [0, 1].")] = 0.1,
    out: Annotated[Path | None, typer.Option(help="Folder for predictions.json and the --cam figures.")] = None,
    json_out: Annotated[bool, typer.Option("--json", metavar="", help="Print the predictions as JSON instead of tables.")] = False,
    threads: Annotated[int | None, typer.Option(min=1, help="CPU threads for torch (default: torch's choice).")] = None,
) -> None:
    """Top-k classes of any photo under a trained run; optionally attacked, with Grad-CAM, behind a car prefilter."""
    from robustcars.registry import check_eps, validate_params

    params = dict(_parse_param(t) for t in param or [])
    if attack_name is not None:
        check_eps([eps])
        values = validate_params(attack_name.value, params)
        params = {k: values[k] for k in params}
    elif params:
        raise ConfigError("--param is for --attack; give --attack too")
    if cam and out is None:
        raise ConfigError("--cam writes one figure per photo: give --out DIR")
    if not 0 <= threshold <= 1:
        raise ConfigError(f"--threshold must be in [0, 1], got {threshold}")
    if out is not None:
        _check_out(out)
    if not Path(run).exists():
        raise ConfigError(f"--run {run} not found (a run folder or a checkpoint .pt file)")

    import contextlib

    from robustcars.explain.photos import predict_photos
    from robustcars.explain.prefilter import CarPrefilter
    from robustcars.lock import output_lock
    from robustcars.runtime import set_threads

    set_threads(threads)
    with output_lock(out) if out is not None else contextlib.nullcontext():
        results, skipped = predict_photos(run, images, top_k=top_k, attack=attack_name.value if attack_name else None,
                                          eps=eps, params=params, cam_dir=out if cam else None,
                                          prefilter=CarPrefilter(threshold) if prefilter else None)
        if out is not None:
            from robustcars import storage as rio
            from robustcars.explain.photos import photo_json

            rio.write_json(out / "predictions.json", {"run": str(run), "attack": attack_name.value if attack_name else None,
                                                      "eps": eps if attack_name else None, "params": params,
                                                      "predictions": [photo_json(r) for r in results],
                                                      "skipped": [{"path": str(p), "reason": why} for p, why in skipped]})
    _print_predictions(results, skipped, json_out, out)


def _print_predictions(results, skipped, json_out: bool, out: Path | None) -> None:
    import json

    from robustcars.console import console, err_console, prediction_table

    for path, why in skipped:
        err_console.print(f"skipped {path}: {why}", soft_wrap=True, markup=False)
    if json_out:
        from robustcars.explain.photos import photo_json

        typer.echo(json.dumps([photo_json(r) for r in results], indent=2))
    else:
        for r in results:
            console.print(prediction_table(r))
    if not results:
        raise DataError(f"no photo left to predict ({len(skipped)} skipped)")
    if out is not None and not json_out:
        console.print(f"[bold green]done[/] — {len(results)} photos; results: {out}/predictions.json"
                      + (" and one figure per photo" if any(r.figure for r in results) else ""), soft_wrap=True)


@app.command("prefilter")
def prefilter_cmd(
    data: Annotated[Path, typer.Argument(help="Dataset root (class folders or the devkit layout); every split is scored.", show_default=False)],
    out: Annotated[Path, typer.Option(help="CSV to write: path, split, class, car probability, verdict, ImageNet top-5.")],
    threshold: Annotated[float, typer.Option(help="A car if the summed ImageNet car-class probability is at least this, in [0, 1].")] = 0.1,
    batch_size: Annotated[int, typer.Option(min=1, help="Images per batch.")] = 32,
    workers: Annotated[int, typer.Option(min=0, help="DataLoader worker processes.")] = 2,
    threads: Annotated[int | None, typer.Option(min=1, help="CPU threads for torch (default: torch's choice).")] = None,
) -> None:
    """List the images of a dataset that an ImageNet classifier does not see as cars (never moves or deletes)."""
    if not 0 <= threshold <= 1:
        raise ConfigError(f"--threshold must be in [0, 1], got {threshold}")
    if out.is_dir():
        raise ConfigError(f"--out {out} is a folder; give a .csv file path")
    if not data.is_dir():
        raise DataError(f"data folder not found: {data}")

    from robustcars import storage as rio
    from robustcars.console import _Bar, console, prefilter_table
    from robustcars.data.cars import load_cars
    from robustcars.explain.prefilter import prefilter_dataset
    from robustcars.runtime import set_threads

    set_threads(threads)
    total = sum(len(v) for v in load_cars(data).splits.values())
    bar = _Bar("prefilter", total)
    try:
        summary = prefilter_dataset(data, threshold=threshold, batch_size=batch_size, workers=workers,
                                    progress=bar.advance)
    finally:
        bar.stop()
    rio.write_csv(out, summary.rows)
    console.print(prefilter_table(summary))
    console.print(f"[bold green]done[/] — {len(summary.suspects)} of {len(summary.rows)} images below {threshold:g}; "
                  f"every score in {out} (no file was moved or deleted)", soft_wrap=True)


@app.command()
def serve(
    runs: Annotated[Path, typer.Option(help="Folder of run folders: listed, used for inference, and where new training jobs go.")] = Path("runs"),
    data: Annotated[Path | None, typer.Option(help=f"Data root; training forms may name folders inside it only \\[default: ${DATA_ENV}, else {DEFAULT_DATA}].", show_default=False)] = None,
    reports: Annotated[Path, typer.Option(help="Folder of report folders (robustcars report --out REPORTS/NAME), served under /reports/.")] = Path("reports"),
    host: Annotated[str, typer.Option(help="Address to bind; anything but 127.0.0.1/localhost/::1 requires --token.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="TCP port.")] = 8000,
    token: Annotated[str | None, typer.Option(envvar="ROBUSTCARS_TOKEN", help="Secret every API call must carry (header X-Robustcars-Token, ?token= or the cookie set by opening a page with ?token=).", show_default=False)] = None,
    max_upload_mb: Annotated[int, typer.Option(min=1, max=1024, help="Largest accepted upload, in MB.")] = 20,
    max_pixels: Annotated[int, typer.Option(min=1, help="Largest accepted image, in pixels (decompression-bomb guard).")] = 40_000_000,
    jobs: Annotated[int, typer.Option(min=1, max=8, help="Training jobs allowed at once.")] = 1,
    attack_seconds: Annotated[float, typer.Option(min=0.1, max=3600, help="Longest computation of one attack request, in seconds; past it the attack is stopped (HTTP 503) and the model freed for the next request.")] = 60.0,
    attack_job_seconds: Annotated[float, typer.Option(min=1, max=86400, help="Longest computation of one attack job (C&W, EAD, HopSkipJump, AutoAttack or many steps: they run beside the quick requests), in seconds; past it the job stops and fails.")] = 900.0,
) -> None:
    """Serve the web app: inference and live attacks on uploaded photos, training jobs, runs and reports."""
    if data is not None and not data.is_dir():  # checked before the app creates --runs and --reports
        raise ConfigError(f"--data {data} is not a folder (the data root training forms choose from)")
    data = data or Path(default_data())
    from robustcars.web.app import ServeSettings

    settings = ServeSettings(runs=runs, data=data, reports=reports, host=host, token=token,
                             max_upload_bytes=max_upload_mb * 1024 * 1024, max_pixels=max_pixels, max_jobs=jobs, attack_seconds=attack_seconds,
                             attack_job_seconds=attack_job_seconds)
    settings.validate()
    if runs.exists() and not runs.is_dir():
        raise ConfigError(f"--runs {runs} is a file")
    import uvicorn

    from robustcars.console import console
    from robustcars.web.app import create_app

    web = create_app(settings)
    where = f"http://{'[' + host + ']' if ':' in host else host}:{port}/"
    console.print(f"[bold]robustcars serve[/]: {where} — runs {runs.resolve()}, data {data.resolve()}, reports "
                  f"{reports.resolve()}; API docs at {where}docs" + ("; token required" if token else ""),
                  soft_wrap=True)
    # Ctrl-C: the running attack stops at its next step (the shutdown handler), then the server exits.
    uvicorn.run(web, host=host, port=port, log_level="warning", timeout_graceful_shutdown=5)


@app.command()
def study(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(help="Study file (TOML): [base] train options, one [[config]] per configuration (name + the options it changes), optional [attack]; e.g. studies/lite0-freeze-grid.toml.", show_default=False)],
    out: Annotated[Path, typer.Option(help="Study folder: study.json and one run folder per configuration (OUT/<name>/, with its attack in OUT/<name>/<attack>/).")] = Path("studies-out/latest"),
    data: Annotated[Path | None, typer.Option(help=_DATA_HELP, show_default=False)] = None,
    threads: Annotated[int | None, typer.Option(min=1, help="CPU threads for torch (default: torch's choice); recorded in study.json, since it changes the trained weights.")] = None,
    resume: Annotated[bool, typer.Option("--resume", metavar="", help="Continue the study in --out: finished configurations are kept, an interrupted one continues from its last epoch.")] = False,
) -> None:
    """Train a grid of configurations one after another (each an ordinary run folder), then attack each best model
    alike; resumable as a whole. `robustcars report OUT` then writes the study's tables and figures."""
    from robustcars.evaluation.study import load_study, run_study

    _check_out(out)
    spec = load_study(file)
    data = data or Path(default_data())
    from robustcars.console import RichAttackReporter, RichTrainReporter, console, titled_table
    from robustcars.reporting.study_report import read_study, study_tables
    from robustcars.runtime import set_threads

    set_threads(threads)
    outcomes = run_study(spec, data, out, resume=resume, threads=threads, command=_typed(),
                         train_reporter=RichTrainReporter, attack_reporter=RichAttackReporter,
                         note=lambda text: console.print(f"[bold]{text}[/]", soft_wrap=True))
    meta, rows, _ = read_study(out)
    for title, head, body in study_tables([meta], rows):
        console.print(titled_table(title, head, body))
    console.print(f"[bold green]study done[/] in {sum(o.seconds for o in outcomes) / 60:.1f} min (this invocation) — "
                  f"{out}/study.json and {len(outcomes)} run folders; next: robustcars report {out}", soft_wrap=True)


@app.command()
def report(
    ctx: typer.Context,
    inputs: Annotated[list[Path], typer.Argument(help="Run folders (with their attack-*/, suite-*/ and corrupt/ results), attack folders, suite folders or corruption folders; or study folders (robustcars study), side by side in one study report.")],
    out: Annotated[Path, typer.Option(help="Report folder to write (report.json, index.html, report.md, figures/).")] = Path("reports/latest"),
    title: Annotated[str, typer.Option(help="Title of the report.")] = "robustcars robustness report",
    panels: Annotated[Panels, typer.Option(help="Example panels to include: all, extremes (most and least affected images at the largest eps) or none; each is ~1.3 MB.")] = Panels.all,
) -> None:
    """Bundle train and attack results into a reproducible report (JSON, static HTML, Markdown, PNG figures)."""
    from robustcars.console import console, report_summary
    from robustcars.reporting.report import build_report
    from robustcars.reporting.study_report import build_study_report, is_study

    if any(is_study(p) for p in inputs):
        if not all(is_study(p) for p in inputs):
            raise ConfigError("give study folders alone (robustcars report STUDY_OUT ...), or no study folder")
        given = ctx.get_parameter_source("title").name != "DEFAULT"
        build_study_report(inputs, out, title=title if given else None, command=_typed())  # as typed: no default title
        console.print(f"[bold green]study report written[/]: {(out / 'index.html').resolve()} (also report.md, "
                      "report.json, figures/)")
        return
    result = build_report(inputs, out, title=title, command=_command(ctx), panels=panels.value)
    console.print(report_summary(result))
    for c in result["failed_checks"]:
        console.print(f"[bold red]check failed:[/] {c['model']} · {c['attack']}: {c['name']} — {c['explain']}")
    console.print(f"[bold green]report written[/]: {(out / 'index.html').resolve()} (also report.md, report.json, figures/)")


@app.command()
def bench(
    ctx: typer.Context,
    arch: Annotated[Arch, typer.Option(help="Model to time (random weights: speed does not depend on them).")] = Arch.resnet34,
    img_size: Annotated[int, typer.Option(min=16, max=1024, help="Square input size in pixels.")] = 160,
    batch_size: Annotated[int, typer.Option(min=1, help="Images per batch.")] = 32,
    batches: Annotated[int, typer.Option(min=1, help="Batches per timed call.")] = 2,
    reps: Annotated[int, typer.Option(min=1, help="Timed rounds per contender (median and min-max reported).")] = 5,
    warmup: Annotated[int, typer.Option(min=0, help="Untimed warm-up calls per contender.")] = 1,
    steps: Annotated[int, typer.Option(min=1, help="PGD iterations.")] = 10,
    peers: Annotated[bool, typer.Option(metavar="", help="Also time foolbox (and torchattacks, if installed) with identical settings.")] = True,
    train_step: Annotated[bool, typer.Option("--train/--no-train", metavar="", help="Also time a training step on in-memory tensors.")] = True,
    channels_last: Annotated[bool, typer.Option(metavar="", help="Run the models in channels_last memory format.")] = False,
    device: Annotated[Device, typer.Option(help="cpu, cuda, or auto = CUDA when available, else CPU (times the CPU unless asked).")] = Device.cpu,
    threads: Annotated[int | None, typer.Option(min=1, help="CPU threads for torch (default: torch's choice).")] = None,
    data: Annotated[Path | None, typer.Option(help="Also time a real training epoch (decode + augment + step) on this dataset's train split.")] = None,
    epoch_images: Annotated[int, typer.Option(min=1, help="Images in that epoch.")] = 256,
    workers: Annotated[int, typer.Option(min=0, help="DataLoader workers for that epoch.")] = 2,
    only: Annotated[list[str] | None, typer.Option(help="Time only this group (repeatable): clean, fgsm, sweep, pgd, pgd_l2, train \\[default: all].")] = None,
    out: Annotated[Path | None, typer.Option(help="Write the results as JSON here.")] = None,
) -> None:
    """Images/s of robustcars' attacks vs the bare floor loop and peer libraries, in one process, alternating."""
    from robustcars import storage as rio
    from robustcars.console import bench_table, console, status_lines
    from robustcars.evaluation.bench import BenchConfig, run_bench

    cfg = BenchConfig(arch=arch.value, img_size=img_size, batch_size=batch_size, batches=batches, reps=reps,
                      warmup=warmup, steps=steps, peers=peers, train=train_step, channels_last=channels_last,
                      device=device.value, threads=threads, data=str(data) if data else None,
                      epoch_images=epoch_images, workers=workers, groups=list(only) if only else None)
    with status_lines(f"benchmarking {cfg.arch} at {cfg.img_size} px, {cfg.reps} rounds") as update:
        result = run_bench(cfg, progress=update)
    result["command"] = _command(ctx)
    console.print(bench_table(result))
    if out:
        rio.write_json(out, result)
        console.print(f"results: {out}")


def main() -> None:
    app(prog_name="robustcars")


if __name__ == "__main__":
    main()
