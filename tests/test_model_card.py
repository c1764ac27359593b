"""model_card.json: every attack and suite states its evaluation RobustBench-style, valid against its schema."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import torch
from torch import nn
from torch.utils.data import TensorDataset

import robustcars
from robustcars.evaluation.model_card import eps_255

SCHEMA = json.loads((Path(__file__).resolve().parents[1] / "robustcars" / "reporting" / "schemas"
                     / "model_card.schema.json").read_text())
NAMES = ["a", "b", "c"]


def model_and_data():
    torch.manual_seed(3)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 14 * 14, 3)).eval()
    x = torch.rand(12, 3, 16, 16, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        y = model(x).argmax(1)
    return model, TensorDataset(x, y)


def test_grey_levels():
    assert [eps_255(e) for e in (0.01, 4 / 255, 0.0005)] == ["2.55/255", "4/255", "0.128/255"]


def test_an_attack_card_states_what_ran_and_what_it_found(tmp_path):
    model, data = model_and_data()
    result = robustcars.evaluate(model, data, out=tmp_path / "pgd", attack="pgd", eps=[0.01, 0.05],
                                 params={"steps": 3}, class_names=NAMES, examples=0, seed=7, name="tiny")
    card = json.loads((tmp_path / "pgd" / "model_card.json").read_text())
    jsonschema.validate(card, SCHEMA)
    assert card["model"]["name"] == "tiny" and card["dataset"]["examples"] == 12
    assert card["threat_models"] == [{"norm": "linf", "eps": [0.01, 0.05], "eps_255": ["2.55/255", "12.8/255"],
                                      "pixel_scale": "[0, 1]"}]
    (attack,) = card["evaluation"]["attacks"]
    assert attack["name"] == "pgd" and attack["library"] == "robustcars" and attack["params"] == {"steps": 3}
    assert attack["version"] == result["versions"]["robustcars"]
    assert attack["forward_backward_passes_per_image"] == result["cost"]["forward_backward_passes_per_image"]
    assert card["evaluation"]["seed"] == 7
    assert card["results"]["clean_accuracy"] == result["rows"][0]["accuracy"] == 1.0
    assert [r["accuracy"] for r in card["results"]["robust_accuracy"]] == [r["accuracy"] for r in result["rows"][1:]]
    assert [r["accuracy_8bit"] for r in card["results"]["robust_accuracy"]] == \
        [r["accuracy_8bit"] for r in result["rows"][1:]]
    assert card["reproduce"] == result["reproduce"]


def test_a_suite_card_has_every_attack_and_the_worst_case(tmp_path):
    model, data = model_and_data()
    suite = tmp_path / "two.toml"
    suite.write_text('name = "two"\n[[attack]]\nname = "fgsm"\neps = [0.01, 0.05]\n'
                     '[[attack]]\nname = "pgd"\neps = [0.01, 0.05]\nsteps = 3\n')
    summary = robustcars.evaluate(model, data, out=tmp_path / "suite", suite=suite, class_names=NAMES, examples=0)
    card = json.loads((tmp_path / "suite" / "model_card.json").read_text())
    jsonschema.validate(card, SCHEMA)
    assert [a["label"] for a in card["evaluation"]["attacks"]] == ["fgsm", "pgd"]
    assert [(w["eps"], w["accuracy"]) for w in card["results"]["worst_case"]] == \
        [(w["eps"], w["accuracy"]) for w in summary["worst_case"]]
    assert all(w["accuracy_8bit"] is not None for w in card["results"]["worst_case"])
    for label in ("fgsm", "pgd"):  # each entry keeps its own card
        jsonschema.validate(json.loads((tmp_path / "suite" / label / "model_card.json").read_text()), SCHEMA)
