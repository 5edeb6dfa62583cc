"""Point-set contexts: the thin-plate spline, the encoders, the point-set network, the dataset's
coordinates and ``ddo reconstruct --points``."""
import json

import numpy as np
import pytest
import torch

from ddo.cli import main
from ddo.models import coordinate_grid
from ddo.models.fno_unet import FNOUNet2d
from ddo_conditional.data.augment import apply_dihedral, dihedral_transforms
from ddo_conditional.data.datasets import FixedSparseMaskDataset, context_tensors
from ddo_conditional.nn.refiners import PointSetModel
from ddo_conditional.classical.thin_plate import point_context, tps_grid
from ddo_conditional.data.points import bilinear, cell_coords, dihedral_points, grid_points
from ddo_conditional.nn.encoders import AttentionEncoder, SetConvEncoder, setconv_grid

from .conftest import tiny_train_args


def _points(b=2, k=30, c=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, k, 2, generator=g), torch.rand(b, k, c, generator=g) * 2 - 1, torch.ones(b, k, dtype=torch.bool)


def _model(key: str, c=3, seed=0):
    torch.manual_seed(seed)
    base = FNOUNet2d(modes_height=4, modes_width=4, in_channels=c, ch=8, ch_mult=[1, 2], num_res_blocks=1)
    encoder = SetConvEncoder(c, 8, base_resolution=16) if key == "setconv" else AttentionEncoder(c, 8, heads=2)
    model = PointSetModel(base, encoder, 8, input_dim=c, residual=True)
    with torch.no_grad():  # away from the zero initialisation, so every input matters
        for p in (model.context_lift.weight, base.out.weight):
            p.normal_(0, 0.1)
    return model.eval()


def _run(model, coords, values, valid, res=16):
    kw = point_context(coords, values, valid, res, res)
    b = coords.shape[0]
    x = torch.randn(b, values.shape[2], res, res, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        return model(x, torch.full((b,), 0.5), coordinate_grid(b, res, res), **kw)


def test_thin_plate_spline_and_its_leave_one_out_error_match_scipy():
    from scipy.interpolate import RBFInterpolator

    coords, values, valid = (t.double() if t.dtype != torch.bool else t for t in _points(k=25))
    valid[1, 20:] = False
    dense, loo = tps_grid(coords, values, valid, 12, 10)
    targets = grid_points(12, 10, dtype=torch.float64).numpy()
    for b, n in ((0, 25), (1, 20)):
        c, v = coords[b, :n].numpy(), values[b, :n].numpy()
        ref = RBFInterpolator(c, v, kernel="thin_plate_spline")(targets)
        np.testing.assert_allclose(dense[b].reshape(3, -1).T.numpy(), ref, atol=1e-8)
        errors = [v[k] - RBFInterpolator(np.delete(c, k, 0), np.delete(v, k, 0), kernel="thin_plate_spline")(c[k:k + 1])[0]
                  for k in range(n)]
        assert float(loo[b]) == pytest.approx(float(np.sqrt(np.mean(np.square(errors)))), rel=1e-8)


@pytest.mark.parametrize("key", ["setconv", "attention"])
def test_outputs_are_invariant_to_the_order_of_the_points(key):
    model = _model(key)
    coords, values, valid = _points()
    perm = torch.randperm(coords.shape[1], generator=torch.Generator().manual_seed(1))
    a = _run(model, coords, values, valid)
    b = _run(model, coords[:, perm], values[:, perm], valid[:, perm])
    assert a.abs().max() > 0.1
    torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


@pytest.mark.parametrize("key", ["setconv", "attention"])
def test_padded_points_are_inert(key):
    model = _model(key)
    coords, values, valid = _points()
    pad_c, pad_v, _ = _points(k=7, seed=5)
    with_pad = (torch.cat([coords, pad_c], 1), torch.cat([values, pad_v * 50], 1),
                torch.cat([valid, torch.zeros(2, 7, dtype=torch.bool)], 1))
    torch.testing.assert_close(_run(model, coords, values, valid), _run(model, *with_pad), atol=1e-5, rtol=0)
    # and a set of another size beside it in the batch: image 1 has 30 points, image 0 only 20
    short = valid.clone()
    short[0, 20:] = False
    both = _run(model, coords, values, short)
    alone = _run(model, coords[:1, :20], values[:1, :20], valid[:1, :20])
    torch.testing.assert_close(both[:1], alone, atol=1e-5, rtol=0)


def test_setconv_of_grid_centres_reproduces_the_pixel_context():
    h, w = 12, 10
    ds = FixedSparseMaskDataset(_Images(3, h, w), seed=4, coords="grid")
    batch = torch.utils.data.default_collate([ds[i] for i in range(3)])
    pixel = context_tensors(batch)
    feats = setconv_grid(batch["context_coords"], batch["context_point_values"], batch["context_valid"], h, w,
                         torch.tensor([1e-3]))  # far below a cell: each pixel sees only its own point
    torch.testing.assert_close(feats[:, :1], pixel["observation_mask"], atol=1e-5, rtol=0)
    torch.testing.assert_close(feats[:, 1:] * feats[:, :1], pixel["context_image"], atol=1e-5, rtol=0)


class _Images(torch.utils.data.Dataset):
    def __init__(self, n, h, w):
        self.x = torch.rand(n, 3, h, w, generator=torch.Generator().manual_seed(2)) * 2 - 1

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return {"image": self.x[i], "index": i}


def test_jittered_points_lie_in_their_pixels_and_read_the_image_there():
    h = w = 16
    grid, jitter = (FixedSparseMaskDataset(_Images(4, h, w), seed=4, coords=c) for c in ("grid", "jitter"))
    for i in range(4):
        a, b = grid[i], jitter[i]
        assert torch.equal(a["context_indices"], b["context_indices"])
        torch.testing.assert_close(a["context_point_values"], a["context_values"])
        cells = (b["context_coords"][:, 1] * h).floor() * w + (b["context_coords"][:, 0] * w).floor()
        assert torch.equal(cells.long(), b["context_indices"])  # each point inside its pixel's cell
        assert (b["context_coords"] - a["context_coords"]).abs().max() > 0.3 / w  # and moved off the centre
        torch.testing.assert_close(b["context_point_values"], bilinear(b["image"], b["context_coords"]))
        assert torch.equal(jitter[i]["context_coords"], b["context_coords"])  # fixed, like the mask
    torch.testing.assert_close(bilinear(grid[0]["image"], grid_points(h, w)), grid[0]["image"].reshape(3, -1).T)
    np.testing.assert_allclose(cell_coords(np.array([0, 17]), h, w), [[0.5 / w, 0.5 / h], [1.5 / w, 1.5 / h]])


def test_dihedral_points_follow_the_pixels():
    img = torch.arange(64.0).reshape(1, 8, 8)
    centres = grid_points(8, 8)
    for k, flip in dihedral_transforms(8, 8):
        moved = apply_dihedral(img, k, flip)
        assert torch.equal(bilinear(moved, dihedral_points(centres, k, flip))[:, 0], img.reshape(-1))


@pytest.fixture(scope="module")
def point_run(tmp_path_factory):
    from PIL import Image

    folder = tmp_path_factory.mktemp("point_images")
    rng = np.random.default_rng(0)
    for i in range(8):
        Image.fromarray(rng.integers(0, 256, (20, 20, 3)).astype(np.uint8)).save(folder / f"{i}.png")
    out = tmp_path_factory.mktemp("points") / "run"
    assert main(tiny_train_args(out, folder, "--iterations", "2", "--conditioning", "sparse-attention",
                                "--parameterization", "x0", "--loss", "x0-mse", "--loss-weighting", "relative", "--loss-floor", "1e-4",
                                "--augment", "dihedral,photometric")) == 0
    return out


def _write_csv(path, rows, header="x,y,r,g,b"):
    path.write_text(header + "\n" + "\n".join(",".join(str(v) for v in r) for r in rows) + "\n")
    return path


def test_reconstruct_points_at_any_resolution(point_run, tmp_path):
    rng = np.random.default_rng(0)
    rows = [list(rng.random(2)) + list(rng.random(3)) for _ in range(40)]
    csv = _write_csv(tmp_path / "obs.csv", rows)
    for res in (32, 64, 128):
        out = tmp_path / f"r{res}"
        assert main(["points", "--checkpoint", str(point_run / "checkpoint.pt"), "--points", str(csv),
                     "--resolution", str(res), "--num-samples", "2", "--steps", "2", "--out", str(out),
                     "--no-progress"]) == 0
        mean, std, samples = (np.load(out / f"{n}.npy") for n in ("mean", "std", "samples"))
        assert mean.shape == std.shape == (3, res, res) and samples.shape == (2, 3, res, res)
        assert np.isfinite(mean).all() and mean.min() >= 0 and mean.max() <= 1 and std.min() >= 0
        assert json.loads((out / "points.json").read_text())["num_points"] == 40
        assert (out / "reconstruction.png").exists()
    pixels = _write_csv(tmp_path / "px.csv", [[r[0] * 640, r[1] * 480] + r[2:] for r in rows])
    out = tmp_path / "px"
    assert main(["points", "--checkpoint", str(point_run / "checkpoint.pt"), "--points", str(pixels),
                 "--extent", "640,480", "--num-samples", "1", "--steps", "1", "--out", str(out), "--no-progress"]) == 0


BAD_CSV = [
    ("x,r,g,b", [[0.1, 0.2, 0.3, 0.4]] * 5, "the header needs columns x and y"),
    ("x,y,r,g", [[0.1, 0.2, 0.3, 0.4]] * 5, "2 value columns (r, g) for a 3-channel model"),
    ("x,y,r,g,b", [[0.1 * i, 0.2, 0.3, 0.4, 0.5] for i in range(4)] + [[0.5, "nan", 0.1, 0.1, 0.1]], "line 6 holds NaN"),
    ("x,y,r,g,b", [[0.1 * i, 0.2, 0.3, 0.4, 0.5] for i in range(4)] + [[1.5, 0.5, 0.1, 0.1, 0.1]],
     "line 6: point (1.5, 0.5) lies outside [0, 1]"),
    ("x,y,r,g,b", [[0.1 * i, 0.2, 0.3, 0.4, 0.5] for i in range(3)], "3 points; a reconstruction needs at least 4"),
    ("x,y,r,g,b", [[0.1 * i, 0.2, 0.3, 0.4, 2.0] for i in range(5)], "values must be intensities in [0, 1]"),
    ("x,y,r,g,b", [[0.1, 0.2, 0.3, 0.4, 0.5]] * 5, "two points share coordinates"),
    ("x,y,r,g,b", [[0.1 * i, 0.2, 0.3] for i in range(5)], "line 2: expected 5 numbers"),
]


@pytest.mark.parametrize("header,rows,message", BAD_CSV)
def test_bad_points_csv_is_one_line(point_run, tmp_path, capsys, header, rows, message):
    csv = _write_csv(tmp_path / "bad.csv", rows, header)
    out = tmp_path / "out"
    rc = main(["points", "--checkpoint", str(point_run / "checkpoint.pt"), "--points", str(csv), "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 2 and len(err.strip().splitlines()) == 1 and message in err, err
    assert not out.exists()


def test_points_need_a_point_set_model(tmp_path, image_folder, capsys):
    run = tmp_path / "run"
    assert main(tiny_train_args(run, image_folder, "--iterations", "1", "--conditioning", "sparse-lift")) == 0
    csv = _write_csv(tmp_path / "obs.csv", [[0.1 * i, 0.3, 0.1, 0.2, 0.3] for i in range(5)])
    capsys.readouterr()
    assert main(["points", "--checkpoint", str(run / "checkpoint.pt"), "--points", str(csv),
                 "--out", str(tmp_path / "o")]) == 2
    assert "ddo points needs a point-set model (--conditioning sparse-setconv or sparse-attention)" in capsys.readouterr().err


def test_augmentations_move_and_map_the_points_with_the_image():
    from ddo.data import RandomFlip
    from ddo_conditional.data.augment import DihedralAugment, PhotometricAugment

    flipped = RandomFlip(_Images(6, 16, 16), seed=0)
    plain = FixedSparseMaskDataset(flipped, seed=4, coords="grid")
    aug = DihedralAugment(PhotometricAugment(plain, seed=1), seed=2)
    for epoch in range(2):
        flipped.set_epoch(epoch)
        for i in range(6):
            a = aug[i]
            # grid points: their values are the (moved, colour-mapped) image's pixels at their (moved) positions
            torch.testing.assert_close(bilinear(a["image"], a["context_coords"]), a["context_point_values"])
            torch.testing.assert_close(a["context_point_values"], a["context_values"])


def test_the_correction_is_scaled_by_the_spline_error_with_the_model_floor():
    """``dense + s * trunk`` with ``s = sqrt(loo^2 + floor^2)``: the floor is the model's, so a dense
    context (small leave-one-out error) gets a correction of its own size, not the floor's."""
    from ddo_conditional.wrappers import PointConditioning

    coords, values, valid = _points()
    kw = point_context(coords, values, valid, 16, 16)
    outs = {}
    for floor in (1e-4, 0.01, 1.0):
        model = _model("setconv")
        model.scale_floor = floor
        x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(3))
        with torch.no_grad():
            outs[floor] = model(x, torch.full((2,), 0.5), coordinate_grid(2, 16, 16), **kw) - kw["context_dense"]
        s = (kw["context_loo"] ** 2 + floor ** 2).sqrt()
        torch.testing.assert_close(model.scale(kw["context_loo"]).flatten(), s)
    # the input log s changes with the floor too, so compare sizes: the correction grows with the floor
    sizes = [float(outs[f].abs().mean()) for f in (1e-4, 0.01, 1.0)]
    assert sizes[0] < sizes[2] and sizes[1] < sizes[2]
    # a configuration written before the option keeps the floor it was trained with; a new run's is stored
    assert PointConditioning({"conditioning": "sparse-setconv", "channels": 3}).scale_floor == 0.01
    assert PointConditioning({"conditioning": "sparse-setconv", "channels": 3, "scale_floor": 2e-4}).scale_floor == 2e-4


def test_a_new_point_set_run_stores_the_floor_and_the_ratio_loss(tmp_path, image_folder):
    out = tmp_path / "run"
    assert main(tiny_train_args(out, image_folder, "--iterations", "1", "--conditioning", "sparse-setconv")) == 0
    config = json.loads((out / "config.json").read_text())
    assert (config["scale_floor"], config["loss"], config["loss_weighting"], config["parameterization"]) == (
        1e-4, "x0-mse", "ratio", "x0")
    from ddo.plugins import load_host
    from ddo.train import load_model

    other = tmp_path / "other"
    assert main(tiny_train_args(other, image_folder, "--iterations", "1", "--conditioning", "sparse-setconv",
                                "--scale-floor", "3e-4")) == 0
    gen_sde, _, _ = load_model(other / "checkpoint.pt", load_host())
    assert gen_sde.network.scale_floor == 3e-4
    state = torch.load(other / "checkpoint.pt", weights_only=True)  # as written before the option existed
    del state["config"]["scale_floor"]
    torch.save(state, other / "old.pt")
    gen_sde, _, _ = load_model(other / "old.pt", load_host())
    assert gen_sde.network.scale_floor == 0.01


def test_the_spline_solved_in_groups_of_similar_counts_equals_one_padded_solve():
    coords, values, valid = (t.double() if t.dtype != torch.bool else t for t in _points(b=7, k=40, c=2))
    for i, n in enumerate((40, 4, 25, 9, 17, 31, 5)):
        valid[i, n:] = False
    valid[2, 4] = False  # padding inside a set, not only at its end
    one_dense, one_loo = tps_grid(coords, values, valid, 9, 11, group=100)
    dense, loo = tps_grid(coords, values, valid, 9, 11, group=2)
    torch.testing.assert_close(dense, one_dense, rtol=0, atol=1e-10)
    torch.testing.assert_close(loo, one_loo, rtol=0, atol=1e-10)
    single, single_loo = tps_grid(coords[3:4, :9], values[3:4, :9], valid[3:4, :9], 9, 11)
    torch.testing.assert_close(dense[3:4], single, rtol=0, atol=1e-10)


def test_set_convolution_equals_the_sum_over_points():
    """The factorised set convolution against its definition, point by point, with padding."""
    coords, values, valid = (t.double() if t.dtype != torch.bool else t for t in _points(b=2, k=12, c=2))
    valid[1, 7:] = False
    scales = torch.tensor([0.05, 0.2], dtype=torch.float64)
    got = setconv_grid(coords, values, valid, 5, 6, scales)
    g = grid_points(5, 6, dtype=torch.float64)  # (30, 2), row-major
    for b in range(2):
        d2 = ((g[:, None, :] - coords[b][None]) ** 2).sum(-1)  # (30, 12)
        for s, l in enumerate(scales):
            wts = torch.exp(-d2 / (2 * l * l)) * valid[b].double()
            density = wts.sum(1)
            torch.testing.assert_close(got[b, s * 3].reshape(-1), density)
            torch.testing.assert_close(got[b, s * 3 + 1:s * 3 + 3].reshape(2, -1).T, (wts @ values[b]) / (density[:, None] + 1e-6))


def test_the_earlier_spelling_reconstruct_points_is_refused_naming_the_new_command(tiny_runs, tmp_path, capsys):
    out = tmp_path / "out"
    for extra, moved in ((["--points", "obs.csv"], "--points"), (["--dataset", "natural-patches", "--extent", "4,4"],
                                                                  "--extent")):
        assert main(["reconstruct", "--checkpoint", str(tiny_runs["points"]), *extra, "--out", str(out)]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and f"{moved} moved to its own command: ddo points --checkpoint" in err, err
    assert not out.exists()
