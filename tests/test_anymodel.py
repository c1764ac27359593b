"""Models robustcars did not build: specs, checkpoint layouts, clear mismatches, normalization."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from robustcars.errors import CheckpointError, ConfigError
from robustcars.models.external import build_from_spec, load_weights, unwrap_state_dict, with_normalization


def tiny_factory(num_classes: int = 10) -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, num_classes))


def no_arg_factory() -> nn.Module:
    return nn.Linear(2, 2)


def not_a_module():
    return 42


@pytest.mark.parametrize("spec, check", [
    ("torchvision:resnet18", lambda m: m.fc.out_features == 7),
    ("timm:resnet10t", lambda m: m.get_classifier().out_features == 7),
    ("tests.test_anymodel:tiny_factory", lambda m: m[-1].out_features == 7),
    ("tests.test_anymodel:no_arg_factory", lambda m: isinstance(m, nn.Linear)),
])
def test_every_spec_form_builds_a_module(spec, check):
    if spec.startswith("timm:"):
        pytest.importorskip("timm")
    assert check(build_from_spec(spec, 7))


@pytest.mark.parametrize("spec, message", [
    ("resnet18", "--model must be torchvision:NAME"),
    ("torchvision:resnet999", "torchvision has no model 'resnet999'"),
    ("timm:no_such_net", "timm has no model 'no_such_net'"),
    ("nopkg.nomod:f", "cannot import 'f' from 'nopkg.nomod'"),
    ("tests.test_anymodel:not_a_module", "returned a int, not a torch.nn.Module"),
])
def test_bad_specs_are_one_line(spec, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        build_from_spec(spec, 3)


@pytest.mark.parametrize("wrap", [
    lambda sd: sd,
    lambda sd: {"state_dict": sd, "epoch": 3},
    lambda sd: {"model": sd},
    lambda sd: {"model_state_dict": sd, "optimizer": {"lr": 0.1}},
    lambda sd: {"state_dict": {f"module.{k}": v for k, v in sd.items()}},  # DataParallel / DDP
])
def test_each_checkpoint_layout_loads_the_same_weights(tmp_path, wrap):
    src = tiny_factory(5)
    path = tmp_path / "w.pt"
    torch.save(wrap(src.state_dict()), path)
    dst = load_weights(tiny_factory(5), path)
    assert all(torch.equal(a, b) for a, b in zip(src.state_dict().values(), dst.state_dict().values()))


def test_a_checkpoint_that_does_not_fit_names_its_keys(tmp_path):
    path = tmp_path / "w.pt"
    sd = tiny_factory(5).state_dict()
    sd["extra.weight"] = torch.zeros(1)
    del sd["0.bias"]
    torch.save(sd, path)
    with pytest.raises(CheckpointError, match=r"1 missing \(0.bias\); 1 unexpected \(extra.weight\)"):
        load_weights(tiny_factory(5), path)
    torch.save(tiny_factory(9).state_dict(), path)
    with pytest.raises(CheckpointError, match=r"2 of another shape \(3.weight, 3.bias\)"):
        load_weights(tiny_factory(5), path)
    torch.save({"epoch": 1}, path)
    with pytest.raises(CheckpointError, match="holds no state dict"):
        load_weights(tiny_factory(5), path)
    path.write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="cannot read checkpoint"):
        load_weights(tiny_factory(5), path)


def test_a_pickle_with_code_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("this must never run",))

    path = tmp_path / "evil.pt"
    torch.save({"state_dict": Evil()}, path)
    with pytest.raises(CheckpointError, match="weights_only=True"):
        load_weights(tiny_factory(5), path)


def test_normalization_becomes_the_first_layer():
    base = tiny_factory(3).eval()
    m = with_normalization(base, [0.5, 0.5, 0.5], [0.25, 0.25, 0.25]).eval()
    x = torch.rand(2, 3, 8, 8)
    assert torch.allclose(m(x), base((x - 0.5) / 0.25))
    assert torch.allclose(with_normalization(base, None, None)(x), base(x))
    with pytest.raises(ConfigError, match="give both --mean and --std"):
        with_normalization(base, [0.5] * 3, None)
    with pytest.raises(ConfigError, match="three finite numbers each"):
        with_normalization(base, [0.5] * 2, [0.2] * 2)
    assert unwrap_state_dict({"model": {"a": torch.zeros(1)}})["a"].shape == (1,)
