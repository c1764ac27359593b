"""Realizability: every attack also scores its adversarial images rounded to the 8-bit grid (what a PNG keeps)."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

import robustcars
from robustcars.attacks import to_8bit_grid
from robustcars.errors import ConfigError
from robustcars.evaluation.checks import realizability_checks
from robustcars.evaluation.summary import summarize

GREY = 1 / 255
MARGIN = 0.05 * GREY  # how far the tiny model's clean images lie from its decision boundary


class MeanThreshold(nn.Module):
    """Class 0 when the mean pixel exceeds ``128/255 - MARGIN``, else 1; class 2 never (logits ``(N, 3)``)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        score = x.mean(dim=(1, 2, 3)) - (128 / 255 - MARGIN)
        return torch.stack([score, torch.zeros_like(score), torch.full_like(score, -1)], dim=1) * 100


def on_grid_images(n: int = 6) -> TensorDataset:
    """Images that lie on the 8-bit grid, every pixel 128/255: class 0, ``MARGIN`` from the boundary."""
    return TensorDataset(torch.full((n, 3, 8, 8), 128 / 255), torch.zeros(n, dtype=torch.long))


def test_rounding_to_the_8bit_grid():
    x = torch.tensor([0.0, 128 / 255, 128 / 255 + 0.1 * GREY, 128 / 255 + 0.6 * GREY, 1.0, 1.2, -0.1])
    want = torch.tensor([0.0, 128 / 255, 128 / 255, 129 / 255, 1.0, 1.0, 0.0])
    assert torch.equal(to_8bit_grid(x), want)
    assert to_8bit_grid(x).dtype == x.dtype


def run(tmp_path, eps):
    result = robustcars.evaluate(MeanThreshold(), on_grid_images(), out=tmp_path / "fgsm", attack="fgsm", eps=eps,
                                 class_names=["above", "below", "never"], examples=0, batch_size=4)
    records = [json.loads(line) for line in (tmp_path / "fgsm" / "records.jsonl").read_text().splitlines()]
    return result, records


def test_a_sub_grey_level_perturbation_vanishes_in_8bit_and_the_checks_say_so(tmp_path):
    result, records = run(tmp_path, [0.1 * GREY, 4 * GREY])
    clean, small, large = result["rows"]
    assert clean["accuracy"] == clean["accuracy_8bit"] == 1.0  # the clean images are on the grid
    assert small["accuracy"] == 0.0  # in float, 0.1/255 crosses the 0.05/255 margin ...
    assert small["accuracy_8bit"] == 1.0  # ... and rounds back to the clean image
    assert small["vanished_8bit"] == 1.0
    assert all(r["adv"][0]["grey_levels_8bit"] == 0 and r["adv"][0]["pred_8bit"] == 0 for r in records)
    assert large["accuracy"] == large["accuracy_8bit"] == 0.0  # 4 grey levels survive rounding
    assert all(r["adv"][1]["grey_levels_8bit"] == 4 for r in records)
    checks = {c["name"]: c for c in result["checks"]}
    assert not checks["eps_at_least_one_grey_level"]["ok"]
    assert checks["eps_at_least_one_grey_level"]["eps"] == [0.1 * GREY]
    assert not checks["realizable_in_8bit"]["ok"]
    assert checks["realizable_in_8bit"]["eps"] == [0.1 * GREY]
    assert checks["realizable_in_8bit"]["value"] == pytest.approx(1.0)


def test_budgets_of_whole_grey_levels_pass_both_checks(tmp_path):
    result, _ = run(tmp_path, [GREY, 2 * GREY])
    checks = {c["name"]: c["ok"] for c in result["checks"]}
    assert checks["eps_at_least_one_grey_level"] and checks["realizable_in_8bit"]
    assert [r["accuracy_8bit"] for r in result["rows"]] == [1.0, 0.0, 0.0]


def test_records_of_0_2_have_no_8bit_scores_and_no_8bit_checks():
    records = [{"label": 0, "clean_pred": 0, "clean_entropy": 0.1,
                "adv": [{"eps": 0.001, "pred": 1, "entropy": 0.2, "clean_top3_rank": [2, 1, 3], "linf": 0.001,
                         "l2": 0.01}]}]
    summary = summarize(records, [0.001], "fgsm", "linf", num_classes=3)
    assert all("accuracy_8bit" not in r for r in summary["rows"])
    assert realizability_checks(summary["rows"], [0.001], "linf") == []


def test_l2_budgets_are_not_judged_against_a_grey_level():
    rows = [{"attack": "clean", "accuracy": 0.9, "accuracy_8bit": 0.9},
            {"attack": "pgd_l2", "eps": 0.01, "accuracy": 0.50, "accuracy_8bit": 0.505}]
    checks = realizability_checks(rows, [0.01], "l2")
    assert [(c["name"], c["ok"]) for c in checks] == [("realizable_in_8bit", True)]


def test_a_model_with_fewer_than_three_classes_is_refused_before_writing(tmp_path):
    two = TensorDataset(torch.rand(2, 3, 8, 8), torch.zeros(2, dtype=torch.long))
    with pytest.raises(ConfigError, match="the model has 2 classes"):
        robustcars.evaluate(nn.Sequential(nn.Flatten(), nn.Linear(192, 2)), two, out=tmp_path / "out",
                            class_names=["a", "b"])
    assert not (tmp_path / "out").exists()


def test_eval_images_lie_on_the_8bit_grid(tmp_path):
    """What makes sub-half-grey-level perturbations vanish in 8-bit: the eval transform resizes 8-bit images."""
    import numpy as np
    from PIL import Image

    from robustcars.data.images import build_transform

    arr = np.random.default_rng(0).integers(0, 256, (37, 53, 3), dtype=np.uint8)
    for resize in ("squash", "crop"):
        x = build_transform(24, train=False, resize=resize)(Image.fromarray(arr))
        assert x.shape == (3, 24, 24) and torch.equal(to_8bit_grid(x), x)
