"""The golden outputs: a tiny seeded training run, an FGSM sweep, PGD, a suite and a cascade, written by the CLI.

``python -m tests.golden.make`` rewrites ``tests/golden/expected/`` from the code as it stands; do that only for a
change of output that is meant (and say so in the commit). ``tests/test_golden.py`` runs the same commands and
compares. Paths are written as ``ROOT/…`` and wall-clock fields are left out.

Two CPUs do not sum floats in the same order, and training amplifies that: the same code gave validation losses
0.1 % apart after one epoch on two machines, and different predictions after two. So the attacks run on a model
that was not trained — seeded initial weights (the same on every CPU), its last layer scaled so that it answers
with confidence — and training's files are compared on their own, more loosely (see ``tests/test_golden.py``).
"""

from __future__ import annotations

import csv
import io
import json
import shutil
import sys
import tempfile
from pathlib import Path

import torch

from tests.conftest import invoke_cli, make_folder_dataset

EXPECTED = Path(__file__).parent / "expected"
SUITE = """name = "gold"
[[attack]]
name = "fgsm"
eps = [0.002, 0.01]
[[attack]]
name = "pgd"
eps = [0.002, 0.01]
steps = 5
"""
CASCADE = """name = "goldcascade"
cascade = true
[[attack]]
name = "fgsm"
eps = [0.002, 0.01]
[[attack]]
name = "pgd"
eps = [0.002, 0.01]
steps = 5
early_stop = true
"""
#: Wall-clock or path-hashed fields: they differ between two runs of the same code.
UNSTABLE = {"seconds", "images_per_second", "attack_seconds_per_image", "train_seconds", "fingerprint", "versions",
            "library_versions"}
#: Files compared, relative to the run folder.
FILES = ["history.csv", "metrics.json", "config.json",
         *(f"{d}/{f}" for d in ("attack-fgsm", "attack-pgd", "suite-gold/fgsm", "suite-gold/pgd",
                                "suite-goldcascade/cascade")
           for f in ("records.jsonl", "attack.json", "attack.csv")),
         *(f"{d}/{f}" for d in ("suite-gold", "suite-goldcascade") for f in ("suite.json", "suite.csv"))]


def _ok(*args) -> None:
    r = invoke_cli(*args)
    assert r.exit_code == 0, r.output


def produce(root: Path) -> Path:
    """Write the golden run under ``root`` (a fresh folder) and return the run folder."""
    torch.manual_seed(0)
    torch.set_num_threads(2)
    data = make_folder_dataset(root / "cars")
    run = root / "run"
    _ok("train", "--data", data, "--out", run, "--arch", "resnet18", "--weights", "none", "--epochs", 2,
        "--img-size", 32, "--batch-size", 8, "--workers", 0)
    seeded = _seeded_run(run, root / "seeded")
    _ok("attack", "--run", seeded, "--attack", "fgsm", "--eps", 0.001, "--eps", "1/255", "--eps", 0.03, "--workers", 0,
        "--out", run / "attack-fgsm")
    _ok("attack", "--run", seeded, "--attack", "pgd", "--eps", 0.003, "--steps", 5, "--workers", 0,
        "--out", run / "attack-pgd")
    (root / "suite.toml").write_text(SUITE)
    (root / "cascade.toml").write_text(CASCADE)
    _ok("attack", "--run", seeded, "--suite", root / "suite.toml", "--workers", 0, "--out", run / "suite-gold")
    _ok("attack", "--run", seeded, "--suite", root / "cascade.toml", "--workers", 0, "--out",
        run / "suite-goldcascade")
    return run


def _seeded_run(trained: Path, out: Path) -> Path:
    """``trained``'s checkpoint with seeded initial weights in place of the trained ones (last layer x 10)."""
    from robustcars.models.checkpoint import read_checkpoint, save_checkpoint
    from robustcars.models.zoo import build_model

    ckpt = read_checkpoint(trained / "best.pt")
    torch.manual_seed(1)
    model = build_model(ckpt["arch"], ckpt["num_classes"], weights="none").eval()
    with torch.no_grad():
        model.model.fc.weight.mul_(10)
    out.mkdir(parents=True)
    save_checkpoint(out / "best.pt", {**{k: v for k, v in ckpt.items() if k not in ("format", "format_version")},
                                      "state_dict": model.state_dict()})
    for name in ("config.json", "metrics.json"):
        shutil.copy(trained / name, out / name)
    return out


def _drop_unstable(obj):
    if isinstance(obj, dict):
        return {k: _drop_unstable(v) for k, v in obj.items() if k not in UNSTABLE}
    if isinstance(obj, list):
        return [_drop_unstable(v) for v in obj]
    return obj


def normalized(run: Path, name: str) -> str:
    """One output file as compared: ``ROOT`` for the folder it was written under, unstable fields left out."""
    text = (run / name).read_text().replace(str(run.parent), "ROOT")
    if name.endswith(".json"):
        return json.dumps(_drop_unstable(json.loads(text)), indent=1, sort_keys=True) + "\n"
    if name == "history.csv":
        rows = list(csv.DictReader(io.StringIO(text)))
        buf = io.StringIO()
        fields = [f for f in rows[0] if f not in UNSTABLE]
        w = csv.DictWriter(buf, fields, extrasaction="ignore", lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
        return buf.getvalue()
    return text


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        run = produce(Path(tmp))
        shutil.rmtree(EXPECTED, ignore_errors=True)
        for name in FILES:
            dest = EXPECTED / name
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_text(normalized(run, name))
    print(f"wrote {len(FILES)} files to {EXPECTED}", file=sys.stderr)


if __name__ == "__main__":
    main()
