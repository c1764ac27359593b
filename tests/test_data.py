import io
import shutil

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.io import savemat

from robustcars.data.cars import limit_per_class, load_cars, subsample
from robustcars.data.images import CarsDataset, build_transform, read_image
from robustcars.errors import DataError

from .conftest import SHARED, make_folder_dataset


def test_folder_layout_with_val(tiny_data):
    d = load_cars(tiny_data)
    assert d.layout == "folders" and not d.val_from_train
    assert d.classes == ["Make0 Model 2000", "Make1 Model 2001", "Make2 Model 2002"]
    assert d.counts() == {"train": 18, "val": 9, "test": 9}
    assert [s.label for s in d.split("test")] == [0] * 3 + [1] * 3 + [2] * 3


def test_folder_layout_without_val_is_split_2_to_1_stratified(tmp_path):
    root = make_folder_dataset(tmp_path / "kaggle", per_split=(9, 0, 3), with_val=False)
    a, b = load_cars(root, seed=3), load_cars(root, seed=3)
    assert a.val_from_train and a.counts() == {"train": 18, "test": 9, "val": 9}
    assert [s.path for s in a.split("val")] == [s.path for s in b.split("val")]  # fixed seed
    assert np.bincount([s.label for s in a.split("val")]).tolist() == [3, 3, 3]  # stratified
    assert not {s.path for s in a.split("train")} & {s.path for s in a.split("val")}
    c = load_cars(root, seed=4)
    assert [s.path for s in c.split("val")] != [s.path for s in a.split("val")]


def test_images_are_float_in_unit_range(tiny_data):
    d = load_cars(tiny_data)
    ds = CarsDataset(d.split("test"), build_transform(32, train=False))
    x, y = ds[0]
    assert x.dtype == torch.float32 and x.shape == (3, 32, 32) and 0 <= x.min() and x.max() <= 1 and y == 0
    xt, _ = CarsDataset(d.split("train"), build_transform(24, train=True))[0]
    assert xt.shape == (3, 24, 24)
    xs, _ = CarsDataset(d.split("test"), build_transform(20, train=False, resize="squash"))[0]
    assert xs.shape == (3, 20, 20)


@pytest.mark.parametrize("setup, message", [
    (lambda root: None, "data folder not found"),
    (lambda root: root.mkdir(), "no Stanford Cars layout found"),
    (lambda root: (root / "train").mkdir(parents=True), "no class folders"),
    (lambda root: (root / "train" / "A").mkdir(parents=True), r"train/A holds no images \(empty\)"),
])
def test_bad_folders_give_clear_errors(tmp_path, setup, message):
    root = tmp_path / "data"
    setup(root)
    with pytest.raises(DataError, match=message):
        load_cars(root)


def test_test_class_missing_from_train(tiny_data):
    (tiny_data / "test" / "Unknown Car 1999").mkdir()
    with pytest.raises(DataError, match="no counterpart"):
        load_cars(tiny_data)


def test_corrupt_image_names_the_file(tiny_data):
    bad = tiny_data / "test" / "Make0 Model 2000" / "broken.jpg"
    bad.write_bytes(b"not a jpeg at all")
    d = load_cars(tiny_data)
    sample = next(s for s in d.split("test") if s.path.endswith("broken.jpg"))
    with pytest.raises(DataError, match="cannot read image .*broken.jpg"):
        read_image(sample)


def test_subsets_are_deterministic(tiny_data):
    s = load_cars(tiny_data).split("train")
    assert [x.label for x in limit_per_class(s, 2)] == [0, 0, 1, 1, 2, 2]
    assert subsample(s, 5, seed=1) == subsample(s, 5, seed=1)
    assert len(subsample(s, 100, seed=1)) == len(s)


def _png_bytes(w=40, h=30, color=(10, 120, 200)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (w, h), color).save(buf, format="PNG")
    return buf.getvalue()


def _annos(rows):
    dtype = [("bbox_x1", "O"), ("bbox_y1", "O"), ("bbox_x2", "O"), ("bbox_y2", "O"), ("class", "O"), ("fname", "O")]
    arr = np.zeros((1, len(rows)), dtype=dtype)
    for i, r in enumerate(rows):
        arr[0, i] = tuple(np.array([[v]]) if not isinstance(v, str) else np.array([v]) for v in r)
    return {"annotations": arr}


def test_devkit_layout_from_generated_mat_files(tmp_path):
    root = tmp_path / "stanford_cars"
    (root / "devkit").mkdir(parents=True)
    names = np.empty((1, 3), dtype=object)
    names[0, :] = ["Car A 2001", "Car B 2002", "Car C 2003"]
    savemat(root / "devkit" / "cars_meta.mat", {"class_names": names})
    train = [(5, 5, 24, 20, c % 3 + 1, f"{i:05d}.jpg") for i, c in enumerate(range(9))]
    test = [(1, 1, 40, 30, c % 3 + 1, f"{i:05d}.jpg") for i, c in enumerate(range(6))]
    savemat(root / "devkit" / "cars_train_annos.mat", _annos(train))
    savemat(root / "cars_test_annos_withlabels.mat", _annos(test))
    for folder, rows in (("cars_train", train), ("cars_test", test)):
        (root / folder).mkdir()
        for r in rows:
            (root / folder / r[5]).write_bytes(_png_bytes())
    d = load_cars(tmp_path)  # the parent of stanford_cars/ works, as in torchvision
    assert d.layout == "devkit" and d.classes == ["Car A 2001", "Car B 2002", "Car C 2003"]
    assert d.counts() == {"train": 6, "test": 6, "val": 3}
    cropped = read_image(d.split("test")[0])
    assert cropped.size == (40, 30)
    s = next(s for s in d.split("train") + d.split("val") if s.path.endswith("00000.jpg"))
    assert s.bbox == (5, 5, 24, 20) and s.label == 0
    assert read_image(s).size == (20, 16)  # 1-based inclusive box
    assert load_cars(tmp_path, crop_to_bbox=False).split("test")[0].bbox is None


@pytest.mark.skipif(not (SHARED / "stanford-cars-devkit").is_dir(), reason="../shared/data absent")
def test_devkit_layout_on_the_official_mat_files(tmp_path):
    root = tmp_path / "stanford_cars"
    (root / "devkit").mkdir(parents=True)
    kit = SHARED / "stanford-cars-devkit"
    for name in ("cars_meta.mat", "cars_train_annos.mat"):
        shutil.copy(kit / name, root / "devkit" / name)
    shutil.copy(kit / "cars_test_annos_withlabels.mat", root / "cars_test_annos_withlabels.mat")
    img = _png_bytes(600, 400)
    from scipy.io import loadmat

    for folder, mat in (("cars_train", "cars_train_annos.mat"), ("cars_test", "cars_test_annos_withlabels.mat")):
        (root / folder).mkdir()
        for a in loadmat(kit / mat, squeeze_me=True)["annotations"]:
            (root / folder / str(a["fname"])).write_bytes(img)
    d = load_cars(root)
    assert len(d.classes) == 196 and d.classes[0] == "AM General Hummer SUV 2000"
    assert len(d.split("train")) + len(d.split("val")) == 8144 and len(d.split("test")) == 8041
    first = next(s for s in d.split("train") + d.split("val") if s.path.endswith("/00001.jpg"))
    assert first.bbox == (39, 116, 569, 375) and first.label == 13  # devkit class 14, 0-based
    assert read_image(first).size == (569 - 38, 375 - 115)


def test_devkit_missing_images_are_reported(tmp_path):
    root = tmp_path / "kit"
    (root / "devkit").mkdir(parents=True)
    (root / "cars_train").mkdir()
    names = np.empty((1, 2), dtype=object)
    names[0, :] = ["A", "B"]
    savemat(root / "devkit" / "cars_meta.mat", {"class_names": names})
    savemat(root / "devkit" / "cars_train_annos.mat", _annos([(1, 1, 5, 5, 1, "00001.jpg")]))
    with pytest.raises(DataError, match="missing, e.g. .*00001.jpg"):
        load_cars(root)


def test_images_are_decoded_by_what_their_values_mean():
    """16-bit, 32-bit integer and float images become the same 8-bit picture as their 8-bit original."""
    from robustcars.data.images import to_rgb

    grey = np.random.default_rng(1).integers(0, 256, (6, 9), dtype=np.uint8)
    want = np.repeat(grey[..., None], 3, axis=2)
    for im in (Image.fromarray(grey.astype(np.uint16) * 257),            # I;16, full scale 65535
               Image.fromarray(grey.astype(np.int32), "I"),               # I with 8-bit values
               Image.fromarray(grey.astype(np.int32) * 257, "I"),         # I with 16-bit values
               Image.fromarray(grey.astype(np.float32) / 255, "F"),       # F in [0, 1]
               Image.fromarray(grey.astype(np.float32), "F")):            # F in [0, 255]
        assert np.array_equal(np.asarray(to_rgb(im)), want), im.mode
    nan = Image.fromarray(np.full((2, 2), np.nan, np.float32), "F")
    with pytest.raises(DataError, match="NaN or infinite"):
        to_rgb(nan)


def test_special_files_are_refused_without_being_opened(tmp_path):
    import os

    from robustcars.data.cars import Sample

    os.mkfifo(tmp_path / "x.jpg")  # opening it for reading would block until a writer comes
    with pytest.raises(DataError, match="a FIFO, not an image file"):
        read_image(Sample(str(tmp_path / "x.jpg"), 0))
