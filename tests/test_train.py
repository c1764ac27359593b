import json

import pytest
import torch

from robustcars.config import TrainConfig
from robustcars.errors import CheckpointError, ConfigError
from robustcars.models.checkpoint import read_checkpoint
from robustcars.training.loop import Reporter, fit


def cfg_for(data, out, **kw):
    base = dict(data=str(data), out=str(out), arch="resnet18", weights="none", epochs=3, patience=5, img_size=32,
                batch_size=8, workers=0, seed=0, lr=1e-3)
    base.update(kw)
    return TrainConfig(**base)


class StopAfter(Reporter):
    def __init__(self, epoch):
        self.stop = epoch

    def epoch(self, row, improved):
        if row["epoch"] == self.stop:
            raise KeyboardInterrupt


def test_fit_writes_the_run_folder(tiny_data, tmp_path):
    out = tmp_path / "run"
    res = fit(cfg_for(tiny_data, out, epochs=2))
    for name in ("config.json", "best.pt", "last.pt", "history.csv", "learning_curves.png", "metrics.json"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["test_images"] == 9 and 0 <= metrics["test_acc"] <= 1 and metrics["epochs_run"] == 2
    ckpt = read_checkpoint(out)
    assert ckpt["class_names"] == ["Make0 Model 2000", "Make1 Model 2001", "Make2 Model 2002"]
    assert ckpt["img_size"] == 32 and ckpt["config"]["arch"] == "resnet18" and "torch" in ckpt["versions"]
    assert ckpt["epoch"] == res.best_epoch
    assert (out / "learning_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_resume_continues_exactly_where_it_stopped(tiny_data, tmp_path):
    full = fit(cfg_for(tiny_data, tmp_path / "full"))
    with pytest.raises(KeyboardInterrupt):
        fit(cfg_for(tiny_data, tmp_path / "cut"), reporter=StopAfter(1))
    assert read_checkpoint(tmp_path / "cut" / "last.pt")["epoch"] == 1
    resumed = fit(cfg_for(tiny_data, tmp_path / "cut", epochs=99), resume=True)  # the saved config wins
    assert [h["epoch"] for h in resumed.history] == [1, 2, 3]
    for a, b in zip(full.history, resumed.history):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-5)
        assert a["val_f1"] == pytest.approx(b["val_f1"], rel=1e-5)
    sa = read_checkpoint(tmp_path / "full" / "last.pt")["state_dict"]
    sb = read_checkpoint(tmp_path / "cut" / "last.pt")["state_dict"]
    assert all(torch.allclose(sa[k].float(), sb[k].float(), atol=1e-5) for k in sa)


def test_existing_run_is_not_overwritten(tiny_data, tmp_path):
    fit(cfg_for(tiny_data, tmp_path / "run", epochs=1))
    before = (tmp_path / "run" / "best.pt").read_bytes()
    with pytest.raises(ConfigError, match="already holds a run; pass --resume"):
        fit(cfg_for(tiny_data, tmp_path / "run", epochs=1))
    assert (tmp_path / "run" / "best.pt").read_bytes() == before
    with pytest.raises(CheckpointError, match="nothing to resume"):
        fit(cfg_for(tiny_data, tmp_path / "other"), resume=True)


def test_early_stopping_on_val_macro_f1(tiny_data, tmp_path):
    # lr so small that nothing changes: val F1 cannot improve after epoch 1
    res = fit(cfg_for(tiny_data, tmp_path / "run", epochs=6, patience=2, lr=1e-12))
    assert res.stopped_early and len(res.history) == 3 and res.best_epoch == 1


def test_frozen_layers_do_not_change(tiny_data, tmp_path):
    fit(cfg_for(tiny_data, tmp_path / "run", epochs=1, freeze=6))
    from robustcars.models.zoo import build_model

    torch.manual_seed(0)
    init = build_model("resnet18", 3, "none")
    trained = read_checkpoint(tmp_path / "run")["state_dict"]
    assert torch.equal(trained["model.layer1.0.conv1.weight"], init.model.layer1[0].conv1.weight)
    assert torch.equal(trained["model.bn1.running_mean"], init.model.bn1.running_mean)  # frozen BN in eval mode
    assert not torch.equal(trained["model.fc.weight"], init.model.fc.weight)


def test_the_train_phase_counts_the_images_it_yields(tmp_path):
    """With drop_last the progress total is the images actually trained on, so the bar reaches 100 %."""
    from robustcars.data.cars import load_cars
    from robustcars.data.images import CarsDataset, build_transform
    from robustcars.training.loop import images_per_epoch, make_loader

    from .conftest import make_folder_dataset

    data = load_cars(make_folder_dataset(tmp_path / "cars"))  # 18 training images
    ds = CarsDataset(data.split("train"), build_transform(32, train=True))
    loader = make_loader(ds, 8, shuffle=True, workers=0, device=torch.device("cpu"))
    assert images_per_epoch(loader) == 16 == sum(len(y) for _, y in loader)
    loader = make_loader(ds, 8, shuffle=False, workers=0, device=torch.device("cpu"))
    assert images_per_epoch(loader) == 18 == sum(len(y) for _, y in loader)
