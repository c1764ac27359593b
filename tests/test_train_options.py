"""Training options are stated once (robustcars.config.TrainConfig): the CLI, the web form and its request
model, and the job's command line are built from them."""

from __future__ import annotations

import dataclasses
import inspect
from enum import Enum

import pytest

from robustcars.config import TrainConfig, train_options

pytest.importorskip("fastapi")

from robustcars.cli.app import train  # noqa: E402
from robustcars.web.app import TrainRequest, train_form  # noqa: E402

DEFAULTS = {f.name: f.default for f in dataclasses.fields(TrainConfig) if f.default is not dataclasses.MISSING}


def _cli_defaults() -> dict:
    out = {}
    for p in inspect.signature(train).parameters.values():
        out[p.name] = p.default.value if isinstance(p.default, Enum) else p.default
    return out


def test_every_train_option_of_the_config_is_a_cli_option_with_its_default():
    cli = _cli_defaults()
    names = [n for n, _, _ in train_options()]
    assert len(names) == 27 and set(names) <= set(cli)
    assert {n: cli[n] for n in names} == {n: DEFAULTS[n] for n in names}
    assert set(cli) - set(names) == {"data", "out", "threads", "resume", "events"}  # the CLI's own


def test_the_web_request_and_form_have_the_cli_defaults():
    web = [n for n, _, _ in train_options(web=True)]
    fields = TrainRequest.model_fields
    assert set(fields) == {"name", "data", *web}
    cli = _cli_defaults()
    assert {n: fields[n].default for n in web} == {n: cli[n] for n in web}
    form = {f["name"]: f["default"] for f in train_form()}
    assert form == {n: "" if cli[n] is None else cli[n] for n in web}
    # the values that once differed between the form and the CLI
    assert (form["weight_decay"], form["img_size"], form["arch"], form["label_smoothing"], form["resize"]) == \
        (0.01, 224, "resnet34", 0.0, "crop")


def test_the_job_command_line_is_the_config_reproduce_command():
    cfg = TrainConfig(data="/d", out="/runs/x", arch="resnet18", epochs=3, limit_per_class=2)
    args = cfg.args()
    assert cfg.command() == "robustcars train " + " ".join(args)
    assert args[:4] == ["--data", "/d", "--out", "/runs/x"] and args[args.index("--limit-per-class") + 1] == "2"
    assert "--adversarial" not in args and "--defensive" not in args


def test_augment_policies_build_and_only_a_changed_one_enters_the_reproduce_command():
    import numpy as np
    import torch
    from PIL import Image

    from robustcars.data.images import build_transform

    img = Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 50, 3), dtype=np.uint8))
    outs = {}
    for policy in ("standard", "trivialaugment", "randaugment"):
        torch.manual_seed(1)
        outs[policy] = build_transform(24, train=True, augment=policy)(img)
        assert outs[policy].shape == (3, 24, 24) and 0 <= outs[policy].min() and outs[policy].max() <= 1
    torch.manual_seed(1)
    assert torch.equal(build_transform(24, train=True, augment="trivialaugment")(img), outs["trivialaugment"])
    assert not torch.equal(outs["standard"], outs["trivialaugment"])
    assert "--augment" not in TrainConfig(data="d", out="o").args()
    assert "--augment randaugment" in TrainConfig(data="d", out="o", augment="randaugment").command()
    from tests.conftest import invoke_cli

    r = invoke_cli("train", "--augment", "cutmix", "--data", ".", "--out", "x")
    assert r.exit_code == 2 and "cutmix" in r.output
