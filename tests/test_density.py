"""Context ratios drawn per image from a range: reproducible, fixed, refused when malformed, and every
consumer of the context (biharmonic, baselines, points) blind to the padding that lets them batch."""
import json

import numpy as np
import pytest
import torch

from ddo.cli import main
from ddo_conditional.classical.baselines import interpolate
from ddo_conditional.classical.biharmonic import biharmonic_inpaint
from ddo_conditional.data.datasets import FixedSparseMaskDataset, context_validity
from ddo_conditional.data.masks import MaskError, image_ratio, ratio_range

from .conftest import tiny_train_args


def _images(n, res=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [{"image": torch.rand(3, res, res, generator=g) * 2 - 1, "index": 100 + i} for i in range(n)]


def test_ratio_draw_is_a_pure_function_of_seed_and_index_and_log_uniform():
    draws = [image_ratio(5, i, 0.01, 0.3) for i in range(4000)]
    assert draws[:50] == [image_ratio(5, i, 0.01, 0.3) for i in range(50)]  # the same again
    assert draws[:50] != [image_ratio(6, i, 0.01, 0.3) for i in range(50)]  # another seed, other draws
    logs = np.log(draws)
    assert min(draws) >= 0.01 and max(draws) <= 0.3
    # log-uniform: the log is uniform on [log 0.01, log 0.3], mean at the midpoint, quartiles equally spaced
    assert abs(logs.mean() - 0.5 * (np.log(0.01) + np.log(0.3))) < 0.05
    q1, q3 = np.quantile(logs, [0.25, 0.75])
    assert abs((q3 - q1) - 0.5 * (np.log(0.3) - np.log(0.01))) < 0.1
    assert image_ratio(5, 3, 0.1, 0.1) == 0.1


def test_masks_from_a_range_are_fixed_across_instances_orders_and_workers():
    images = _images(8)
    a = FixedSparseMaskDataset(images, context_ratio="0.02:0.3", seed=3)
    b = FixedSparseMaskDataset(images, context_ratio="0.02:0.3", seed=3)
    for i in reversed(range(8)):  # another instance, another order
        assert torch.equal(a[i]["context_indices"], b[i]["context_indices"])
        assert a[i]["context_count"] == b[i]["context_count"]
    loaded = [torch.utils.data.DataLoader(a, batch_size=4, num_workers=w) for w in (0, 2)]
    for x, y in zip(*loaded):
        assert torch.equal(x["context_indices"], y["context_indices"]) and torch.equal(x["context_count"], y["context_count"])
    counts = [a[i]["context_count"] for i in range(8)]
    assert len(set(counts)) > 3 and max(counts) <= int(0.3 * 256) and min(counts) >= int(0.02 * 256)
    item = a[0]
    k = item["context_count"]
    assert item["context_indices"].shape == (int(0.3 * 256),)
    assert len(set(item["context_indices"][:k].tolist())) == k  # the image's own pixels are distinct
    assert torch.all(item["context_indices"][k:] == item["context_indices"][0])  # the padding repeats the first
    # a single ratio keeps today's masks: no padding
    one = FixedSparseMaskDataset(images, context_ratio=0.1, seed=3)[0]
    assert one["context_count"] == len(one["context_indices"]) == 25


def test_padded_batches_give_each_image_its_own_biharmonic_and_baselines():
    images = _images(5, seed=1)
    ds = FixedSparseMaskDataset(images, context_ratio="0.03:0.3", seed=4, coords="grid")
    batch = torch.utils.data.default_collate([ds[i] for i in range(5)])
    dense = biharmonic_inpaint(batch["context_values"], batch["context_indices"], 16, 16, context_validity(batch))
    assert torch.equal(context_validity(batch), batch["context_valid"])
    for i in range(5):
        k = int(batch["context_count"][i])
        idx = batch["context_indices"][i, :k]
        alone = biharmonic_inpaint(batch["context_values"][i:i + 1, :k], idx[None], 16, 16)[0]
        torch.testing.assert_close(dense[i], alone, rtol=0, atol=1e-6)
        img01 = ((images[i]["image"] + 1) / 2).permute(1, 2, 0).double().numpy()
        ref = interpolate(img01, idx.numpy(), "biharmonic")
        np.testing.assert_allclose((dense[i].permute(1, 2, 0).double().numpy() + 1) / 2, ref, atol=1e-6)


@pytest.mark.parametrize("bad, says", [("0.3:0.01", "needs 0 < LO < HI"), ("0:0.5", "needs 0 < LO < HI"),
                                       ("0.1:x", "range is LO:HI"), ("0.5:0.95", "context + query <= 1")])
def test_malformed_ranges_are_refused_in_one_line(bad, says, tmp_path, image_folder, capsys):
    code = main(tiny_train_args(tmp_path / "r", image_folder, "--iterations", "1", "--conditioning", "sparse-lift",
                                "--context-ratio", bad))
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and "Traceback" not in "".join(err)
    assert says in err[-1] and "ratio" in err[-1]
    assert not (tmp_path / "r").exists() or not any((tmp_path / "r").iterdir())
    if says != "context + query <= 1":
        with pytest.raises(MaskError):
            ratio_range(bad)


def test_training_with_a_range_records_it_refuses_a_change_on_resume_and_reconstructs(tmp_path, image_folder, capsys):
    run = tmp_path / "run"
    args = tiny_train_args(run, image_folder, "--conditioning", "sparse-biharmonic", "--parameterization", "x0",
                           "--loss", "x0-mse", "--loss-weighting", "relative", "--loss-floor", "1e-4")
    assert main(args + ["--iterations", "2", "--context-ratio", "0.03:0.3"]) == 0
    assert json.loads((run / "config.json").read_text())["context_ratio"] == "0.03:0.3"
    capsys.readouterr()
    assert main(args + ["--iterations", "3", "--resume", "--context-ratio", "0.05:0.3"]) == 2
    assert "trained with --context-ratio 0.03:0.3; it cannot change to 0.05:0.3" in capsys.readouterr().err
    assert main(args + ["--iterations", "3", "--resume"]) == 0
    out = tmp_path / "rec"
    assert main(["reconstruct", "--checkpoint", str(run / "checkpoint.pt"), "--images", str(image_folder),
                 "--context-ratio", "0.05", "--num-samples", "2", "--limit", "4", "--out", str(out),
                 "--no-progress"]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["context_ratio"] == 0.05 and np.isfinite(m["methods"]["ddo-mean"]["psnr_query"])


def test_thin_plate_baseline_reproduces_affine_fields_and_interpolates_the_context():
    h = w = 16
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.stack([0.3 * (xx + 0.5) / w + 0.5 * (yy + 0.5) / h + 0.1, 0.5 + 0.2 * np.sin(xx / 3) * np.cos(yy / 4)], -1)
    idx = np.random.default_rng(0).choice(h * w, 40, replace=False)
    out = interpolate(img, idx, "thin-plate")
    assert out.shape == (h, w, 2)
    assert np.abs(out[..., 0] - img[..., 0]).max() < 1e-10  # affine functions are in the spline's null space
    assert np.abs(out.reshape(-1, 2)[idx] - img.reshape(-1, 2)[idx]).max() < 1e-10  # it interpolates
    assert np.abs(out[..., 1] - img[..., 1]).mean() < 0.02
    few = interpolate(img, idx[:3], "thin-plate")  # below four points: the nearest observed value
    assert set(np.round(few[..., 1].ravel(), 12)) <= set(np.round(img.reshape(-1, 2)[idx[:3], 1], 12))


def test_biharmonic_above_the_dense_limit_solves_each_image_sparsely_and_equals_the_dense_path(monkeypatch):
    import ddo_conditional.classical.biharmonic as bh

    images = _images(4, seed=5)
    ds = FixedSparseMaskDataset(images, context_ratio="0.05:0.3", seed=2)
    batch = torch.utils.data.default_collate([ds[i] for i in range(4)])
    valid = context_validity(batch)
    dense = bh.biharmonic_inpaint(batch["context_values"].double(), batch["context_indices"], 16, 16, valid)
    monkeypatch.setattr(bh, "MAX_PIXELS", 15 * 15)  # 16x16 is now "large"
    sparse = bh.biharmonic_inpaint(batch["context_values"].double(), batch["context_indices"], 16, 16, valid)
    assert sparse.shape == (4, 3, 16, 16)
    assert torch.allclose(sparse, dense, atol=1e-9), (sparse - dense).abs().max()
    assert np.abs(bh.sparse_stencil(9, 7).toarray() - bh.stencil_matrix(9, 7)).max() == 0.0
