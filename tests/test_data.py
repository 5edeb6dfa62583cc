import pickle

import numpy as np
import pytest
import torch

from ddo.data import (TEST_PHOTOS, TRAIN_PHOTOS, VAL_PHOTOS, PhotoCrops, RandomFlip, area_crop, load_cifar10,
                      load_image_folder, load_natural_patches)
from ddo.errors import UserError


def write_cifar(root, n_per_batch=3):
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        d = {b"data": rng.integers(0, 256, (n_per_batch, 3072), dtype=np.uint8),
             b"labels": list(range(n_per_batch)), b"batch_label": name.encode()}
        with open(folder / name, "wb") as f:
            pickle.dump(d, f, protocol=2)
    return folder


def test_cifar_reads_genuine_pickle_format(tmp_path):
    folder = write_cifar(tmp_path)
    train, test = load_cifar10("train", tmp_path), load_cifar10("test", tmp_path)
    assert len(train) == 15 and len(test) == 3
    assert test[0]["index"] == 15 and train[14]["index"] == 14
    with open(folder / "data_batch_1", "rb") as f:
        raw = pickle.load(f, encoding="bytes")[b"data"][0]
    expected = torch.from_numpy(raw.reshape(3, 32, 32).astype(np.float32)) / 127.5 - 1
    torch.testing.assert_close(train[0]["image"], expected)


def test_cifar_errors_are_one_clear_line(tmp_path):
    with pytest.raises(UserError, match="no cifar-10-batches-py folder"):
        load_cifar10("train", tmp_path)
    folder = write_cifar(tmp_path)
    (folder / "data_batch_3").write_bytes(b"not a pickle")
    with pytest.raises(UserError, match="malformed CIFAR-10 file .*data_batch_3"):
        load_cifar10("train", tmp_path)
    (folder / "data_batch_3").unlink()
    with pytest.raises(UserError, match="CIFAR-10 file missing"):
        load_cifar10("train", tmp_path)


def test_cifar_refuses_a_pickle_that_would_run_code(tmp_path):
    folder = write_cifar(tmp_path)

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    with open(folder / "data_batch_2", "wb") as f:
        pickle.dump({b"data": Evil(), b"labels": []}, f)
    with pytest.raises(UserError, match="refusing to load builtins.print"):
        load_cifar10("train", tmp_path)


def test_image_folder_converts_grayscale_and_refuses_bad_files(tmp_path, image_folder):
    from PIL import Image

    Image.fromarray(np.full((30, 40), 128, np.uint8), mode="L").save(image_folder / "gray.png")
    ds = load_image_folder(image_folder, 16)
    assert len(ds) == 13 and ds[0]["image"].shape == (3, 16, 16)
    (image_folder / "broken.jpg").write_bytes(b"definitely not a jpeg")
    with pytest.raises(UserError, match="broken.jpg is not a readable image"):
        load_image_folder(image_folder, 16)
    (image_folder / "broken.jpg").unlink()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(image_folder / "tiny.png")
    with pytest.raises(UserError, match="tiny.png is 8x8, smaller than the resolution 16"):
        load_image_folder(image_folder, 16)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UserError, match="no PNG or JPEG files"):
        load_image_folder(empty, 16)


def test_natural_patches_split_by_photograph(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("DDO_CACHE_DIR", str(tmp_path))  # its own cache: the first load builds and says so
    train, val, test = (load_natural_patches(s, 16) for s in ("train", "val", "test"))
    assert set(train.sources) == set(TRAIN_PHOTOS) and set(test.sources) == set(TEST_PHOTOS)
    assert set(val.sources) == set(VAL_PHOTOS) == {"motorcycle_left"}
    photos = [set(d.sources) for d in (train, val, test)]
    assert not (photos[0] & photos[1] or photos[0] & photos[2] or photos[1] & photos[2])
    assert "motorcycle_right" not in set().union(*photos)  # the validation scene's other view: nowhere
    # global indices (and so masks) of a split do not depend on the other splits' lengths
    assert [d[0]["index"] for d in (train, val, test)] == [0, 1_000_000, 2_000_000]
    err = capsys.readouterr().err
    assert f"built {len(train)} train crops from 5 photos, {len(val)} validation crops" in err
    fewer = load_natural_patches("test", 16, train_photos=TRAIN_PHOTOS[:2])
    assert [fewer[i]["index"] for i in (0, 5)] == [test[i]["index"] for i in (0, 5)]
    capsys.readouterr()
    again = load_natural_patches("test", 16)  # cached: identical and silent
    np.testing.assert_array_equal(again.images, test.images)
    assert capsys.readouterr().err == ""
    x = train[0]["image"]
    assert x.min() >= -1 and x.max() <= 1
    with pytest.raises(UserError, match="natural-patches has splits train, val, test, not 'valid'"):
        load_natural_patches("valid", 16)


def test_continuous_crop_scales_are_a_pure_function_of_seed_epoch_index(monkeypatch, tmp_path):
    monkeypatch.setenv("DDO_CACHE_DIR", str(tmp_path))
    crops = load_natural_patches("train", 16, crop_scales="continuous", seed=3)
    assert isinstance(crops, PhotoCrops) and len(crops) == len(load_natural_patches("train", 16))
    first = [crops[i]["image"] for i in range(6)]
    assert first[0].shape == (3, 16, 16) and first[0].min() >= -1 and first[0].max() <= 1
    assert all(crops[i]["index"] == i for i in range(6))
    same = load_natural_patches("train", 16, crop_scales="continuous", seed=3)
    assert all(torch.equal(same[i]["image"], first[i]) for i in range(6))
    flips = RandomFlip(crops, 0)
    flips.set_epoch(1)  # the trainer's per-epoch call reaches the crops
    assert crops.epoch == 1 and not any(torch.equal(crops[i]["image"], first[i]) for i in range(6))
    other_seed = load_natural_patches("train", 16, crop_scales="continuous", seed=4)
    assert not torch.equal(other_seed[0]["image"], first[0])
    with pytest.raises(UserError, match="--crop-scales continuous draws training crops; the test split is fixed"):
        load_natural_patches("test", 16, crop_scales="continuous")


def test_area_crop_averages_blocks():
    from PIL import Image

    photo = np.random.default_rng(0).integers(0, 256, (40, 48, 3)).astype(np.uint8)
    out = area_crop(Image.fromarray(photo), (8, 4, 40, 36), 8)  # 32 x 32 pixels -> 8 x 8: 4 x 4 blocks
    blocks = photo[4:36, 8:40].astype(float).reshape(8, 4, 8, 4, 3).mean((1, 3))
    assert out.shape == (8, 8, 3) and np.abs(out - blocks).max() <= 1.0  # PIL rounds in fixed point


def test_flips_are_a_pure_function_of_seed_epoch_index(image_folder):
    base = load_image_folder(image_folder, 16)
    a, b = RandomFlip(base, 3), RandomFlip(base, 3)
    flips = []
    for epoch in range(4):
        a.set_epoch(epoch)
        b.set_epoch(epoch)
        for i in range(len(base)):
            torch.testing.assert_close(a[i]["image"], b[i]["image"])
            flips.append(not torch.equal(a[i]["image"], base[i]["image"]))
    assert 0 < sum(flips) < len(flips)
