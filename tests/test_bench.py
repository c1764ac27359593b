import json

import pytest
import torch
from typer.testing import CliRunner

from robustcars.attacks import FGSM, PGDLinf
from robustcars.cli.app import app
from robustcars.evaluation.bench import count_flops, sgemm_peak
from robustcars.models.zoo import build_model

from .conftest import make_folder_dataset


def test_bench_measures_every_contender_with_ratios(tmp_path):
    data = make_folder_dataset(tmp_path / "cars")
    out = tmp_path / "bench.json"
    r = CliRunner().invoke(app, ["bench", "--arch", "resnet18", "--img-size", "32", "--batch-size", "4", "--batches",
                                 "1", "--reps", "2", "--warmup", "0", "--steps", "2", "--data", str(data),
                                 "--epoch-images", "8", "--workers", "0", "--out", str(out)])
    assert r.exit_code == 0, r.output
    res = json.loads(out.read_text())
    names = {row["name"] for row in res["rows"]}
    assert {"floor FGSM", "robustcars FGSM", "foolbox FGSM", "robustcars FGSM sweep", "robustcars PGD-2 Linf",
            "train step (in-memory tensors)", "train epoch (real data, 0 workers)"} <= names
    for row in res["rows"]:
        assert row["min_img_s"] <= row["median_img_s"] <= row["max_img_s"] and row["median_img_s"] > 0
        assert len(res["seconds"][row["name"]]) == 2
        if row["name"].startswith("floor"):
            assert row["vs_floor"] == 1.0
    ours = next(row for row in res["rows"] if row["name"] == "robustcars FGSM")
    assert ours["vs_foolbox"] > 0
    # ratios are paired by round: median of t_floor / t_ours over the rounds
    t_floor, t_ours = res["seconds"]["floor FGSM"], res["seconds"]["robustcars FGSM"]
    assert ours["vs_floor"] == pytest.approx(sorted(f / o for f, o in zip(t_floor, t_ours))[0] / 2
                                             + sorted(f / o for f, o in zip(t_floor, t_ours))[1] / 2)
    # FLOPs: our FGSM does exactly the floor's passes; achieved rates against the sgemm peak of the same run
    floor = next(row for row in res["rows"] if row["name"] == "floor FGSM")
    assert ours["gflop_per_image"] == pytest.approx(floor["gflop_per_image"]) and ours["gflop_per_image"] > 0
    assert res["sgemm_gflop_s"] > 0
    assert ours["peak_share"] == pytest.approx(ours["gflop_s"] / res["sgemm_gflop_s"])
    assert ours["gflop_s"] == pytest.approx(ours["gflop_per_image"] * ours["median_img_s"])
    epoch = next(row for row in res["rows"] if row["name"].startswith("train epoch"))
    assert epoch["gflop_s"] is None  # timed outside the rounds, not counted
    step = next(row for row in res["rows"] if row["name"].startswith("train step"))
    assert epoch["vs_train_step"] == pytest.approx(epoch["median_img_s"] / step["median_img_s"])


def test_flops_of_a_forward_and_input_backward_are_counted():
    # a bias-free linear layer 10 -> 4 on 3 inputs: 2*3*10*4 = 240 FLOPs forward, as many for the input gradient
    # (the weights are frozen, so no weight gradient) — through torch.autograd.grad on a leaf, as the attacks do
    layer = torch.nn.Linear(10, 4, bias=False).requires_grad_(False)
    x = torch.rand(3, 10)
    assert count_flops(lambda: layer(x)) == 240

    def fwd_bwd():
        xg = x.clone().requires_grad_(True)
        torch.autograd.grad(layer(xg).sum(), xg)

    assert count_flops(fwd_bwd) == 480
    assert sgemm_peak(n=64, reps=2) > 0


def test_fast_paths_give_the_same_adversarial_images():
    # channels_last and a frozen-weights model produce the same FGSM/PGD images as the plain path
    torch.manual_seed(0)
    model = build_model("resnet18", 5, "none").eval()
    x, y = torch.rand(3, 3, 32, 32), torch.tensor([0, 1, 2])
    plain = FGSM()(model, x, y, [0.01, 0.03]).adv
    cl_model = build_model("resnet18", 5, "none").eval()
    cl_model.load_state_dict(model.state_dict())
    cl_model = cl_model.to(memory_format=torch.channels_last)
    fast = FGSM()(cl_model, x.to(memory_format=torch.channels_last), y, [0.01, 0.03]).adv
    for a, b in zip(plain, fast):
        # sign() can flip only where the gradient is ~0; allow a vanishing share of such pixels
        assert (a - b).abs().gt(1e-6).float().mean() < 1e-3
    p1 = PGDLinf(steps=2, random_start=False)(model, x, y, [0.01]).adv[0]
    p2 = PGDLinf(steps=2, random_start=False)(cl_model, x.to(memory_format=torch.channels_last), y, [0.01]).adv[0]
    assert (p1 - p2).abs().gt(1e-6).float().mean() < 1e-2


def test_only_selected_groups_are_timed(tmp_path):
    out = tmp_path / "b.json"
    args = ["bench", "--arch", "resnet18", "--img-size", "32", "--batch-size", "2", "--batches", "1", "--reps", "1",
            "--warmup", "0", "--steps", "1", "--no-peers"]
    r = CliRunner().invoke(app, [*args, "--only", "pgd", "--only", "sweep", "--out", str(out)])
    assert r.exit_code == 0, r.output
    # not on a terminal: progress as plain lines while it runs, not a silent wait
    assert "benchmarking resnet18 at 32 px, 1 rounds\n" in r.output
    assert "round 1/1: robustcars PGD-1 Linf (elapsed 0:00:" in r.output
    assert {row["name"] for row in json.loads(out.read_text())["rows"]} == {
        "floor PGD-1 Linf", "robustcars PGD-1 Linf", "floor FGSM sweep", "robustcars FGSM sweep"}
    r = CliRunner().invoke(app, [*args, "--only", "pgd_linf"])
    assert r.exit_code == 2 and "unknown bench group pgd_linf" in r.output
