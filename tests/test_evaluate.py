"""Evaluate any model: the Python API and ``attack --model``, on tiny data made here."""

from __future__ import annotations

import json

import pytest
import torch
from torch.utils.data import DataLoader, Dataset
from typer.testing import CliRunner

import robustcars
from robustcars.cli.app import app

from .conftest import train_tiny_run

runner = CliRunner()
ATTACK = ["--eps", "0.02", "--eps", "0.05", "--batch-size", "4", "--workers", "0", "--examples", "2"]


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def records(folder):
    return [json.loads(line) for line in (folder / "records.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("anymodel")
    data, run = train_tiny_run(root, extra=("--resize", "squash"))
    r = invoke("attack", "--run", run, *ATTACK, "--out", root / "cli")
    assert r.exit_code == 0, r.output
    ckpt = torch.load(run / "best.pt", weights_only=True)
    backbone = {k.removeprefix("model."): v for k, v in ckpt["state_dict"].items() if k.startswith("model.")}
    return data, run, root, ckpt, backbone


def plain_resnet18(state):
    import torchvision

    net = torchvision.models.resnet18(num_classes=3)  # a model object robustcars did not build
    net.load_state_dict(state)
    return net


class Tensors(Dataset):
    """A plain Dataset of (image in [0, 1], label), decoded as robustcars' eval transform would."""

    def __init__(self, root, img_size):
        from robustcars.data.cars import load_cars
        from robustcars.data.images import CarsDataset, build_transform

        self.inner = CarsDataset(load_cars(root).split("test"), build_transform(img_size, train=False, resize="squash"))

    def __len__(self):
        return len(self.inner)

    def __getitem__(self, i):
        return self.inner[i]


def test_evaluate_matches_the_cli_on_the_same_model(trained, tmp_path):
    data, run, root, ckpt, backbone = trained
    net = plain_resnet18(backbone).train()  # the API restores the mode it was given
    norm = (ckpt["mean"], ckpt["std"])
    by_folder = robustcars.evaluate(net, data, out=tmp_path / "folder", eps=[0.02, 0.05], batch_size=4,
                                    examples=2, normalize=norm, img_size=32, resize="squash")
    assert net.training
    cli = records(root / "cli")
    assert records(tmp_path / "folder") == cli
    cli_result = json.loads((root / "cli" / "attack.json").read_text())
    assert by_folder.to_dict()["rows"] == by_folder["rows"] == cli_result["rows"]
    # typed: the clean row by its kind, robust accuracy by its budget
    assert by_folder.clean_accuracy == cli_result["clean"]["accuracy"] and by_folder.eps == [0.02, 0.05]
    assert by_folder.robust_accuracy(0.05) == next(r["accuracy"] for r in cli_result["rows"] if r["eps"] == 0.05)
    with pytest.raises(KeyError, match="no row at eps 0.03; this result has eps 0.02, 0.05"):
        by_folder.robust_accuracy(0.03)
    ds = Tensors(data, 32)
    loader = DataLoader(ds, batch_size=4)
    by_dataset = robustcars.evaluate(net, loader, out=tmp_path / "dataset", eps=[0.02, 0.05], batch_size=4,
                                     class_names=ckpt["class_names"], normalize=norm, examples=2)
    strip = [{k: v for k, v in r.items() if k != "path"} for r in cli]
    assert [{k: v for k, v in r.items() if k != "path"} for r in records(tmp_path / "dataset")] == strip
    assert [r["path"] for r in records(tmp_path / "dataset")] == [f"#{i}" for i in range(len(ds))]
    assert by_dataset["run"]["arch"] == "torchvision.models.resnet.ResNet"
    r = invoke("report", tmp_path / "dataset", tmp_path / "folder", "--out", tmp_path / "rep")
    assert r.exit_code == 0, r.output


def test_evaluate_refuses_what_does_not_fit(trained, tmp_path):
    data, *_ = trained
    import torchvision

    with pytest.raises(robustcars.errors.ConfigError, match=r"returns a tensor of shape \(1, 5\); expected a float "
                       r"tensor of logits of shape \(N, 3\)"):
        robustcars.evaluate(torchvision.models.resnet18(num_classes=5), data, out=tmp_path / "x", img_size=32)
    with pytest.raises(robustcars.errors.ConfigError, match="give class_names"):
        robustcars.evaluate(torchvision.models.resnet18(num_classes=3), [(torch.zeros(3, 8, 8), 0)], out=tmp_path / "y")
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


@pytest.mark.parametrize("wrap", ["plain", "state_dict+module"])
def test_attack_model_torchvision_with_a_checkpoint(trained, tmp_path, wrap):
    data, run, root, ckpt, backbone = trained
    state = backbone if wrap == "plain" else {"state_dict": {f"module.{k}": v for k, v in backbone.items()}}
    torch.save(state, tmp_path / "w.pt")
    (tmp_path / "classes.txt").write_text("\n".join(ckpt["class_names"]) + "\n")
    r = invoke("attack", "--model", "torchvision:resnet18", "--checkpoint", tmp_path / "w.pt", "--classes",
               tmp_path / "classes.txt", "--mean", ",".join(map(str, ckpt["mean"])), "--std",
               ",".join(map(str, ckpt["std"])), "--img-size", 32, "--resize", "squash", "--data", data, *ATTACK,
               "--out", tmp_path / "m")
    assert r.exit_code == 0, r.output
    assert records(tmp_path / "m") == records(root / "cli")  # the same network, loaded from its state dict
    meta = json.loads((tmp_path / "m" / "attack.json").read_text())
    assert meta["run"]["arch"] == "torchvision:resnet18" and meta["run"]["weights_origin"].endswith("w.pt")


@pytest.mark.parametrize("spec", ["timm:resnet10t", "tests.test_anymodel:tiny_factory"])
def test_attack_model_timm_and_factory(trained, tmp_path, spec):
    if spec.startswith("timm"):
        pytest.importorskip("timm")
    data, *_ = trained
    r = invoke("attack", "--model", spec, "--img-size", 32, "--data", data, *ATTACK, "--out", tmp_path / "m",
               "--cam", 2)
    assert r.exit_code == 0, r.output
    meta = json.loads((tmp_path / "m" / "attack.json").read_text())
    assert meta["data"]["images"] == 9 and meta["attention_shift"]["images"] == 2


M = ["--model", "torchvision:resnet18"]
D = ["--data", "{data}", "--out", "{out}"]


@pytest.mark.parametrize("args, message", [
    (M + ["--checkpoint", "{w}"] + D, "does not fit the model: 1 missing (fc.bias)"),
    (M + ["--run", "{run}"] + D, "give --run (a robustcars run) or --model"),
    (M + ["--out", "{out}"], "--model needs --data"),
    (["--model", "nope:thing"] + D, "cannot import 'thing' from 'nope'"),
    (M + ["--mean", "0.5,0.5", "--std", "0.2,0.2,0.2"] + D, "--mean takes three numbers"),
    (["--run", "{run}", "--checkpoint", "{w}", "--out", "{out}"], "--checkpoint, --classes, --mean, --std, "
                                                                  "--img-size and --resize go with --model"),
])
def test_model_errors_are_one_line(trained, tmp_path, args, message):
    data, run, root, ckpt, backbone = trained
    bad = dict(backbone)
    del bad["fc.bias"]
    torch.save(bad, tmp_path / "w.pt")
    args = [a.format(w=tmp_path / "w.pt", run=run, data=data, out=tmp_path / "o") for a in args]
    r = invoke("attack", *args, "--img-size", 32, "--workers", 0)
    assert r.exit_code == 2 and r.output.startswith("error: ") and message in r.output, r.output
    assert not (tmp_path / "o").exists()
