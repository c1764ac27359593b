"""The second fault matrix, Python-API part: ``robustcars.evaluate`` refuses every bad argument with one
:class:`ConfigError` or :class:`DataError` naming it, before anything is written — so the same call with correct
arguments then succeeds in the same folder."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

import robustcars
from robustcars.errors import ConfigError, DataError

from .factories import _Net

NAMES = ["a", "b", "c"]


def good_data(n: int = 6) -> TensorDataset:
    g = torch.Generator().manual_seed(0)
    return TensorDataset(torch.rand(n, 3, 16, 16, generator=g), torch.arange(n) % 3)


class Listed(torch.utils.data.Dataset):
    """A plain Dataset over a list of (image, label) pairs (no TensorDataset shortcut: items checked as read)."""

    classes = NAMES

    def __init__(self, items):
        self.items = items

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


def two_sizes() -> Listed:
    return Listed([(torch.rand(3, 16, 16), i % 3) for i in range(5)] + [(torch.rand(3, 8, 8), 0)])


@dataclass
class ApiCase:
    name: str
    error: type
    message: str
    kwargs: dict[str, Any] = field(default_factory=dict)


def net() -> nn.Module:
    torch.manual_seed(0)
    return _Net(3)


CASES = [
    ApiCase("a lambda as model", ConfigError, "model must be a torch.nn.Module (wrap a function in one), got function",
            {"model": lambda x: x}),
    ApiCase("eps a number", ConfigError, "eps must be a list or tuple of numbers in [0, 1] (e.g. [0.01]), got float",
            {"eps": 0.01}),
    ApiCase("eps a string", ConfigError, "eps must be a list or tuple", {"eps": "0.01"}),
    ApiCase("eps not numbers", ConfigError, "eps must be a number in [0, 1] (pixel scale), got 'a'", {"eps": ["a"]}),
    ApiCase("eps above 1", ConfigError, "eps must be a number in [0, 1] (pixel scale), got 8", {"eps": [8]}),
    ApiCase("images in [0, 255]", DataError, "images must be in [0, 1] (divide 8-bit images by 255",
            {"data": TensorDataset(torch.rand(6, 3, 16, 16) * 255, torch.arange(6) % 3)}),
    ApiCase("images in [0, 255] (any Dataset)", DataError, "dataset item 0: pixel values in [",
            {"data": Listed([(torch.rand(3, 16, 16) * 255, 0)] * 4)}),
    ApiCase("labels out of range", DataError, "dataset item 5: label 7 is not a class index in [0, 3)",
            {"data": TensorDataset(torch.rand(6, 3, 16, 16), torch.tensor([0, 1, 2, 0, 1, 7]))}),
    ApiCase("float labels", DataError, "dataset item 0: label 0.0 is not a class index in [0, 3)",
            {"data": TensorDataset(torch.rand(6, 3, 16, 16), torch.zeros(6))}),
    ApiCase("uint8 images", DataError, "the image must be a float tensor (3, H, W) in [0, 1]",
            {"data": TensorDataset(torch.zeros(6, 3, 16, 16, dtype=torch.uint8), torch.arange(6) % 3)}),
    ApiCase("images of two sizes", DataError, "dataset item 5: image of shape (3, 8, 8), but the first is (3, 16, 16)",
            {"data": two_sizes()}),
    ApiCase("data a number", ConfigError, "data must be a dataset folder (str or Path)", {"data": 42}),
    ApiCase("data folder missing", DataError, "/nonexistent/cars", {"data": "/nonexistent/cars"}),
    ApiCase("empty dataset", DataError, "the dataset holds no images", {"data": Listed([])}),
    ApiCase("out None", ConfigError, "out must be a folder path (str or Path), got None", {"out": None}),
    ApiCase("params a string", ConfigError, "params must be a dict of attack parameters, got str",
            {"params": "steps=3"}),
    ApiCase("unknown attack", ConfigError, "unknown attack 'pgdd'", {"attack": "pgdd"}),
    ApiCase("steps 1e9", ConfigError, "pgd: steps must be an integer in [1, 10000]",
            {"attack": "pgd", "params": {"steps": 10**9}}),
    ApiCase("class names a string", ConfigError, "class_names must be a list of strings", {"class_names": "abc"}),
    ApiCase("std zero", ConfigError, "three finite numbers each (std > 0)",
            {"normalize": ([0.5] * 3, [0.0] * 3)}),
    ApiCase("mean nan", ConfigError, "three finite numbers each (std > 0)",
            {"normalize": ([math.nan] * 3, [1.0] * 3)}),
    ApiCase("normalize one sequence", ConfigError, "normalize must be (mean, std)", {"normalize": [0.5, 0.5, 0.5]}),
    ApiCase("img size a string", ConfigError, "img_size must be an integer number of pixels, got str",
            {"img_size": "224"}),
    ApiCase("seed -1", ConfigError, "--seed must be an integer in [0, 4294967295], got -1", {"seed": -1}),
    ApiCase("batch size 0", ConfigError, "--batch-size must be >= 1, got 0", {"batch_size": 0}),
    ApiCase("model of 10 logits", ConfigError, "returns a tensor of shape (1, 10); expected a float tensor of logits "
            "of shape (N, 3)", {"model": _Net(10)}),
    ApiCase("model returning a tuple", ConfigError, "returns a tuple, not a float tensor of logits",
            {"model": _Net(3, lambda z: (z, z))}),
    ApiCase("model returning NaN", ConfigError, "returns non-finite logits (NaN or inf)",
            {"model": _Net(3, lambda z: z * math.nan)}),
    ApiCase("apgd_t on 3 classes", ConfigError, "apgd_t needs a model of at least 4 classes", {"attack": "apgd_t"}),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_api_refusal(tmp_path, case: ApiCase):
    out = tmp_path / "eval"
    kwargs = {"model": net(), "data": good_data(), "out": out, "eps": [0.01], "class_names": NAMES, "img_size": 16,
              "examples": 0, "batch_size": 4, **case.kwargs}
    if isinstance(kwargs["data"], Listed) or kwargs["data"] == 42:
        kwargs.pop("class_names")
    model, data = kwargs.pop("model"), kwargs.pop("data")
    with pytest.raises(case.error) as info:
        robustcars.evaluate(model, data, **kwargs)
    assert type(info.value) is case.error and case.message in str(info.value), str(info.value)
    assert "\n" not in str(info.value)
    assert not out.exists(), f"{out} was created"
    # the same call with correct inputs then works in the same folder
    result = robustcars.evaluate(net(), good_data(), out=out, eps=[0.01], class_names=NAMES, img_size=16,
                                 examples=0, batch_size=4)
    assert result["data"]["images"] == 6


def test_evaluate_restores_the_model_mode_after_a_refusal():
    model = net().train()
    with pytest.raises(ConfigError):
        robustcars.evaluate(model, good_data(), out="/tmp/unused-robustcars", eps=[0.01], class_names=NAMES,
                            attack="pgdd")
    assert model.training
