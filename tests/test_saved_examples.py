"""attack --save-adv: adversarial examples kept as tensors (and 8-bit PNGs) that reload and re-score exactly."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn
from torch.utils.data import TensorDataset

import robustcars
from robustcars.attacks import to_8bit_grid
from robustcars.errors import DataError
from robustcars.evaluation.saved import load_saved

N, EPS = 20, [0.01, 0.05]


def tiny_model() -> nn.Module:
    torch.manual_seed(3)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 14 * 14, 3)).eval()


def images(model: nn.Module) -> TensorDataset:
    x = torch.rand(N, 3, 16, 16, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        y = model(x).argmax(1)  # the model's own predictions: every clean image is correct
    return TensorDataset(x, y)


def attack(model, data, out, **kw):
    return robustcars.evaluate(model, data, out=out, attack="pgd", eps=EPS, params={"steps": 3}, batch_size=8,
                               class_names=["a", "b", "c"], examples=0, save_adv=True, **kw)


def records(folder):
    return [json.loads(line) for line in (folder / "records.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    model = tiny_model()
    data = images(model)
    out = tmp_path_factory.mktemp("saved") / "pgd"
    result = attack(model, data, out, save_png=True)
    return model, data, out, result


def test_saved_examples_reload_and_rescore_to_the_records(saved):
    model, data, out, result = saved
    s = load_saved(out)
    assert s.index.tolist() == list(range(N)) and s.eps == EPS
    assert s.clean.shape == (N, 3, 16, 16) and s.adv.shape == (len(EPS), N, 3, 16, 16) and s.adv.dtype == torch.float32
    assert torch.equal(s.clean, data.tensors[0]) and torch.equal(s.label, data.tensors[1])
    recs = records(out)
    with torch.no_grad():
        for j in range(len(EPS)):
            assert (s.adv[j] - s.clean).abs().amax() <= EPS[j] + 1e-6
            assert model(s.adv[j]).argmax(1).tolist() == [r["adv"][j]["pred"] for r in recs]
            assert model(to_8bit_grid(s.adv[j])).argmax(1).tolist() == [r["adv"][j]["pred_8bit"] for r in recs]
    assert result["saved_examples"] == "adv/manifest.csv"
    with open(out / "adv" / "manifest.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == N * len(EPS)
    assert {(int(r["index"]), float(r["eps"])) for r in rows} == {(i, e) for i in range(N) for e in EPS}
    assert sum(r["adv_pred"] != r["clean_pred"] for r in rows) > 0  # the attack did something worth keeping


def test_the_pngs_are_the_8bit_images_that_were_scored(saved):
    model, _, out, _ = saved
    s = load_saved(out)
    for j, e in enumerate(EPS):
        for i in (0, N - 1):
            arr = np.array(Image.open(out / "adv" / "png" / f"eps-{e!r}" / f"{i:06d}.png"))
            assert arr.dtype == np.uint8 and arr.shape == (16, 16, 3)
            back = torch.from_numpy(arr).permute(2, 0, 1).float() / 255
            assert torch.equal(back, to_8bit_grid(s.adv[j, i]))
    clean = np.array(Image.open(out / "adv" / "png" / "clean" / "000003.png"))
    assert torch.equal(torch.from_numpy(clean).permute(2, 0, 1).float() / 255, to_8bit_grid(s.clean[3]))


def test_an_interrupted_save_resumes_to_one_example_per_recorded_image(saved, tmp_path):
    model, data, full, _ = saved
    out = tmp_path / "pgd"
    attack(model, data, out)
    lines = (out / "records.jsonl").read_bytes().splitlines(keepends=True)
    (out / "records.jsonl").write_bytes(b"".join(lines[:10]) + lines[10][:30])  # 1 whole batch, 2 of the next, torn
    state = json.loads((out / "attack_state.json").read_text())
    (out / "attack_state.json").write_text(json.dumps({**state, "finished": False}))
    (out / "attack.json").unlink()
    (out / "adv" / "manifest.csv").unlink()
    attack(model, data, out, resume=True)
    s, first = load_saved(out), load_saved(full)
    assert s.index.tolist() == list(range(N))
    assert torch.equal(s.adv[:, :10], first.adv[:, :10])  # the images recorded before the stop keep their examples
    recs = records(out)
    with torch.no_grad():
        assert model(s.adv[1]).argmax(1).tolist() == [r["adv"][1]["pred"] for r in recs]
    shards = sorted(p.name for p in (out / "adv").glob("*.safetensors"))
    assert shards == ["batch-000000.safetensors", "batch-000008.safetensors", "batch-000010.safetensors",
                      "batch-000018.safetensors"]


def test_without_save_adv_there_is_nothing_to_load(tmp_path):
    model = tiny_model()
    robustcars.evaluate(model, images(model), out=tmp_path / "fgsm", eps=[0.01], class_names=["a", "b", "c"],
                        examples=0)
    assert not (tmp_path / "fgsm" / "adv").exists()
    with pytest.raises(DataError, match="--save-adv"):
        load_saved(tmp_path / "fgsm")


def test_the_reproducing_command_keeps_the_flag(saved):
    _, _, _, result = saved
    assert result["reproduce"].endswith("--save-png")
    assert result["config"]["save_adv"] and result["config"]["save_png"]
