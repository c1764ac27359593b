"""Look inside: predict, Grad-CAM, attention shift, the car prefilter, odd photos, and the commands."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn
from typer.testing import CliRunner

from robustcars.cli.app import app
from robustcars.errors import ConfigError, DataError
from robustcars.explain.gradcam import attention_shift, grad_cam
from robustcars.explain.photos import expand_inputs, load_photos, predict, read_photo

from .conftest import SHARED, train_tiny_run

runner = CliRunner()
REAL_PHOTOS = ["astronaut", "brick", "camera", "chelsea", "clock", "coffee", "coins", "grass", "gravel",
               "hubble_deep_field", "immunohistochemistry", "microaneurysms", "moon", "page", "retina", "rocket",
               "text"]


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


class FixedLogits(nn.Module):
    def __init__(self, logits):
        super().__init__()
        self.logits = torch.tensor(logits)
        self.w = nn.Parameter(torch.zeros(1))

    def forward(self, x):
        return self.logits.expand(x.shape[0], -1) + self.w


def test_predict_orders_top_k_with_softmax_probabilities_and_entropy():
    logits = [2.0, 0.0, 3.0, 1.0]
    [p] = predict(FixedLogits(logits), torch.zeros(1, 3, 4, 4), ["a", "b", "c", "d"], top_k=3)
    probs = torch.softmax(torch.tensor(logits), 0)
    assert p.classes == [2, 0, 3] and p.names == ["c", "a", "d"]
    assert p.probs == pytest.approx(probs[[2, 0, 3]].tolist())
    assert p.entropy == pytest.approx(float(-(probs * probs.log()).sum()))
    with pytest.raises(ConfigError, match=r"--top-k must be in \[1, 4\], got 5"):
        predict(FixedLogits(logits), torch.zeros(1, 3, 4, 4), list("abcd"), top_k=5)


class Quadrants(nn.Module):
    """Four feature maps, each the grey level seen through one quadrant's mask; class q's logit is the sum of
    map q: each class depends on one quadrant only, so its Grad-CAM must light that quadrant."""

    def __init__(self, size: int = 16):
        super().__init__()
        self.grey = nn.Conv2d(3, 4, 1, bias=False)
        nn.init.constant_(self.grey.weight, 1 / 3)
        masks = torch.zeros(4, size, size)
        h = size // 2
        masks[0, :h, :h], masks[1, :h, h:], masks[2, h:, :h], masks[3, h:, h:] = 1, 1, 1, 1
        self.register_buffer("masks", masks)
        self.features = nn.Identity()

    def forward(self, x):
        return self.features(self.grey(x) * self.masks).sum(dim=(2, 3))


@pytest.mark.parametrize("cls, quadrant", [(0, (slice(0, 8), slice(0, 8))), (3, (slice(8, 16), slice(8, 16)))])
def test_grad_cam_lights_the_quadrant_the_class_depends_on(cls, quadrant):
    model = Quadrants().train()
    x = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 0.5 + 0.25
    marker = torch.full_like(model.grey.weight, 7.0)
    model.grey.weight.grad = marker.clone()  # an earlier .grad must survive
    before = {k: v.clone() for k, v in model.state_dict().items()}
    [cam] = grad_cam(model, x, [cls], model.features)
    inside = cam[quadrant]
    assert inside.min() > 0.3 and cam.sum() == pytest.approx(inside.sum(), rel=1e-5)  # nothing outside
    assert model.training and model.grey.weight.requires_grad  # mode and flags restored
    assert torch.equal(model.grey.weight.grad, marker)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_attention_shift_on_hand_made_maps():
    a = np.zeros((1, 10, 10), np.float32)
    a[0, :2, :] = 1.0  # top 20 % of the pixels
    a[0, 0, 0] = 2.0
    same = attention_shift(a, a.copy())
    assert same["pearson"][0] == pytest.approx(1.0) and same["top_kept"][0] == 1.0
    moved = np.roll(a, 5, axis=1)  # the hot rows move down: nothing of the top 10 % stays
    s = attention_shift(a, moved)
    assert s["top_kept"][0] == 0.0 and s["pearson"][0] < 0
    flat = attention_shift(a, np.zeros_like(a))
    assert math.isnan(flat["pearson"][0])


# --- odd photos --------------------------------------------------------------------------------------

def test_odd_photos_are_converted_or_refused_in_one_line(tmp_path):
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 255, (20, 30, 3), dtype=np.uint8)
    Image.fromarray(rgb[..., 0]).save(tmp_path / "grey.png")
    Image.fromarray(rgb).convert("CMYK").save(tmp_path / "cmyk.jpg")
    rgba = np.dstack([rgb, np.zeros((20, 30), np.uint8)])  # fully transparent: white after conversion
    Image.fromarray(rgba, "RGBA").save(tmp_path / "alpha.png")
    Image.fromarray(rgb[:8, :8]).save(tmp_path / "tiny.png")
    Image.new("RGB", (8000, 8000), (10, 200, 30)).save(tmp_path / "huge.png")
    (tmp_path / "notes.txt").write_text("not an image")
    full = tmp_path / "full.jpg"
    Image.fromarray(rgb).save(full)
    (tmp_path / "truncated.jpg").write_bytes(full.read_bytes()[:200])
    assert read_photo(tmp_path / "grey.png").mode == "RGB"
    assert read_photo(tmp_path / "cmyk.jpg").mode == "RGB"
    assert np.asarray(read_photo(tmp_path / "alpha.png")).min() == 255
    from robustcars.data.images import build_transform

    photos = load_photos([tmp_path], build_transform(32, train=False, resize="squash"))
    assert sorted(p.name for p in photos.paths) == ["alpha.png", "cmyk.jpg", "full.jpg", "grey.png", "huge.png",
                                                     "tiny.png"]
    assert photos.x.shape == (6, 3, 32, 32) and 0 <= photos.x.min() and photos.x.max() <= 1
    reasons = {p.name: why for p, why in photos.rejected}
    assert reasons == {"notes.txt": "not an image", "truncated.jpg": reasons["truncated.jpg"]}
    assert reasons["truncated.jpg"].startswith("cannot read image") and "\n" not in reasons["truncated.jpg"]
    from .faults.common import bomb_png

    bomb_png(tmp_path / "bomb.png")
    with pytest.raises(DataError, match=r"bomb.png: refused, too many pixels \(decompression bomb\)"):
        read_photo(tmp_path / "bomb.png")  # PIL's own guard, above 2 x its limit
    Image.new("L", (11_000, 10_000)).save(tmp_path / "big.png")  # 110 M pixels: below PIL's guard, above ours
    with pytest.raises(DataError, match="11000x10000 pixels is more than the 100,000,000 accepted"):
        read_photo(tmp_path / "big.png")
    with pytest.raises(DataError, match="not found"):
        expand_inputs([tmp_path / "missing.jpg"])


# --- the car prefilter ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def prefilter():
    from robustcars.explain.prefilter import CarPrefilter

    return CarPrefilter()


def test_prefilter_rejects_real_photos_that_are_not_cars(prefilter):
    skdata = pytest.importorskip("skimage.data")
    x = torch.stack([prefilter.transform(Image.fromarray(getattr(skdata, n)()).convert("RGB")) for n in REAL_PHOTOS])
    verdicts = prefilter(x)
    assert not any(v.is_car for v in verdicts), [(n, v.car_probability) for n, v in zip(REAL_PHOTOS, verdicts)]
    coffee = verdicts[REAL_PHOTOS.index("coffee")]
    assert coffee.top5[0][0] == "espresso" and len(coffee.top5) == 5


@pytest.mark.e2e
def test_prefilter_passes_real_cars(prefilter):
    root = SHARED / "stanford-cars-160" / "test"
    if not root.is_dir():
        pytest.skip("../shared/data is absent")
    files = [sorted(d.iterdir())[0] for d in sorted(root.iterdir())[:40]]  # one car of each of 40 classes
    photos = load_photos(files, prefilter.transform)
    share = np.mean([v.is_car for v in prefilter(photos.x)])
    assert share >= 0.9, share


# --- commands --------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    return train_tiny_run(tmp_path_factory.mktemp("explain"))


def test_predict_command_with_attack_cam_and_bad_files(trained, tmp_path):
    data, run = trained
    photos = tmp_path / "photos"
    photos.mkdir()
    for f in sorted((data / "test").rglob("*.jpg"))[:3]:
        (photos / f.name).write_bytes(f.read_bytes())
    (photos / "broken.jpg").write_bytes(next(photos.iterdir()).read_bytes()[:300])  # a truncated JPEG
    out = tmp_path / "out"
    r = invoke("predict", photos, "--run", run, "--top-k", 3, "--attack", "pgd", "--param", "steps=2", "--eps", 0.05,
               "--cam", "--out", out)
    assert r.exit_code == 0, r.output
    assert "skipped" in r.output and "broken.jpg: cannot read image" in r.output
    result = json.loads((out / "predictions.json").read_text())
    assert len(result["predictions"]) == 3 and result["skipped"][0]["path"].endswith("broken.jpg")
    p = result["predictions"][0]
    assert len(p["clean"]["top_k"]) == 3 and sum(t["probability"] for t in p["clean"]["top_k"]) <= 1.0 + 1e-6
    assert len(p["clean_top3_adversarial_rank"]) == 3 and set(p["attention_shift"]) == {"pearson", "top_kept"}
    assert Path(p["figure"]).stat().st_size > 5000
    r = invoke("predict", photos, "--run", run, "--json", "--top-k", 2)
    assert r.exit_code == 0 and json.loads(r.output[r.output.index("["):])[0]["clean"]["top_k"][0]["class"] >= 0


@pytest.mark.parametrize("args, message", [
    (["--cam"], "--cam writes one figure per photo: give --out DIR"),
    (["--attack", "fgsm", "--eps", "2"], "eps must be a number in [0, 1]"),
    (["--param", "steps=3"], "--param is for --attack"),
    (["--top-k", "9"], "--top-k must be in [1, 3], got 9"),
])
def test_predict_bad_options_are_one_line(trained, tmp_path, args, message):
    data, run = trained
    r = invoke("predict", data / "test", "--run", run, *args)
    assert r.exit_code == 2 and r.output.startswith("error: ") and message in r.output, r.output


def test_predict_with_nothing_left_is_an_error(trained, tmp_path):
    _, run = trained
    (tmp_path / "a.txt").write_text("x")
    r = invoke("predict", tmp_path / "a.txt", "--run", run, "--top-k", 2)
    assert r.exit_code == 2 and "no photo left to predict (1 skipped)" in r.output


def test_prefilter_command_scores_every_image_and_moves_nothing(trained, tmp_path):
    data, _ = trained
    before = sorted(p for p in data.rglob("*") if p.is_file())
    r = invoke("prefilter", data, "--out", tmp_path / "scores.csv", "--workers", 0)
    assert r.exit_code == 0, r.output
    rows = (tmp_path / "scores.csv").read_text().splitlines()
    assert rows[0].startswith("path,split,class,is_car,car_probability,top1") and len(rows) == 1 + 36
    assert "no file was moved or deleted" in r.output
    assert sorted(p for p in data.rglob("*") if p.is_file()) == before


def test_attack_cam_measures_attention_shift_and_draws_the_panel(trained, tmp_path):
    _, run = trained
    out = tmp_path / "a"
    r = invoke("attack", "--run", run, "--eps", 0.05, "--batch-size", 4, "--workers", 0, "--examples", 2, "--cam", 5,
               "--out", out)
    assert r.exit_code == 0, r.output
    records = [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]
    measured = [rec["attention"] for rec in records if "attention" in rec]
    assert len(measured) == 5 and all(m["eps"] == 0.05 and 0 <= m["top_kept"] <= 1 for m in measured)
    summary = json.loads((out / "attack.json").read_text())["attention_shift"]
    assert summary["images"] == 5 and summary["eps"] == 0.05
    assert (out / "figures" / "cam_fgsm_eps0.05.png").stat().st_size > 5000
    r = invoke("report", out, "--out", tmp_path / "rep")  # the report's "where the model looks" section
    assert r.exit_code == 0, r.output
    report = json.loads((tmp_path / "rep" / "report.json").read_text())
    [att] = report["models"][0]["attacks"]
    assert att["attention_shift"] == summary
    cams = att["figures"]["cam"]
    assert len(cams) == 2 and all((tmp_path / "rep" / c).is_file() for c in cams)
    assert any("cam_fgsm_extremes_eps0.05" in c for c in cams)  # the most and least affected images too
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads((Path(__file__).resolve().parents[1] / "robustcars" / "reporting" / "schemas"
                         / "report.schema.json").read_text())
    jsonschema.validate(report, schema)
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "## Where the model looks (Grad-CAM, clean vs adversarial)" in md
