"""A spread calibration fitted once, kept beside the checkpoint, applied by `ddo reconstruct`."""
import json

import numpy as np
import pytest
import torch

from ddo.cli import main
from ddo.errors import UserError
from ddo_conditional.io.calibration_file import calibration_path, load_calibration, save_calibration

from .conftest import tiny_train_args


@pytest.fixture
def conditional_run(tmp_path, image_folder):
    run = tmp_path / "run"
    assert main(tiny_train_args(run, image_folder, "--iterations", "2", "--conditioning", "sparse-interp",
                                "--parameterization", "x0", "--loss", "x0-mse")) == 0
    return run / "checkpoint.pt"


def test_calibration_round_trip_and_refusals(conditional_run):
    fitted = {"spread_scale": 1.5, "spread_roughness": 0.25, "spread_floor": 0.004}
    path = save_calibration(conditional_run, fitted, {"fitted_on": "x/train"})
    assert path == calibration_path(conditional_run) and path.exists()
    loaded = load_calibration(conditional_run)
    assert {k: loaded[k] for k in fitted} == fitted and loaded["fitted_on"] == "x/train"
    record = json.loads(path.read_text())
    shrink = {"feature": "roughness", "a": 0.8, "b": 0.1, "center": -3.0}
    save_calibration(conditional_run, {**fitted, "shrinkage": shrink}, {"fitted_on": "x/val"})
    assert load_calibration(conditional_run)["shrinkage"] == shrink
    for bad in ({**record, "spread_scale": "big"}, {**record, "spread_floor": -1.0}, [1, 2],
                {**record, "shrinkage": {**shrink, "feature": "colour"}}, {**record, "shrinkage": {**shrink, "a": None}}):
        path.write_text(json.dumps(bad))
        with pytest.raises(UserError, match="is malformed"):
            load_calibration(conditional_run)
    path.write_text("{not json")
    with pytest.raises(UserError, match="is not a readable calibration"):
        load_calibration(conditional_run)
    path.write_text(json.dumps({**record, "checkpoint_sha256": "0" * 64}))
    with pytest.raises(UserError, match="was fitted for other weights"):
        load_calibration(conditional_run)
    path.unlink()
    assert load_calibration(conditional_run) is None


def test_calibrate_then_reconstruct_images_reports_calibrated_coverage(conditional_run, image_folder, tmp_path,
                                                                       capsys):
    common = ["--num-samples", "2", "--steps", "2", "--no-progress"]
    assert main(["calibrate", "--checkpoint", str(conditional_run), "--split", "test", *common]) == 2
    assert "fit on --split train" in capsys.readouterr().err
    assert main(["calibrate", "--checkpoint", str(conditional_run), "--dataset", "image-folder", "--data-root",
                 str(image_folder), "--limit", "6", *common]) == 0
    stored = load_calibration(conditional_run)
    assert stored["fitted_images"] == 6 and stored["fitted_mask_seed"] == 43 and stored["spread_scale"] > 0
    out = tmp_path / "rec"
    assert main(["reconstruct", "--checkpoint", str(conditional_run), "--images", str(image_folder), "--limit", "5",
                 "--out", str(out), *common]) == 0
    printed = capsys.readouterr().out
    m = json.loads((out / "metrics.json").read_text())
    assert m["spread"].startswith("calibrated (image-folder/train, 6 images)")
    assert m["calibration_rescaled"]["spread_scale"] == pytest.approx(stored["spread_scale"])
    assert "| calibrated std |" in printed and "| raw samples' std |" in printed
    mean, std, raw = (np.load(out / f"{n}.npy") for n in ("mean", "std", "std_raw"))
    assert mean.shape == std.shape == raw.shape == (5, 3, 16, 16)
    assert (std >= stored["spread_floor"] - 1e-6).all() and not np.allclose(std, raw)
    interval = np.load(out / "interval95.npy")
    np.testing.assert_allclose(interval[1] - interval[0], 2 * 1.96 * std, rtol=1e-5, atol=1e-6)
    raw_out = tmp_path / "raw"
    assert main(["reconstruct", "--checkpoint", str(conditional_run), "--images", str(image_folder), "--limit", "5",
                 "--raw-spread", "--out", str(raw_out), *common]) == 0
    m_raw = json.loads((raw_out / "metrics.json").read_text())
    assert "calibration_rescaled" not in m_raw and m_raw["spread"] == "raw (--raw-spread)"
    np.testing.assert_allclose(np.load(raw_out / "std.npy"), raw)
    calibration_path(conditional_run).write_text("{}")
    assert main(["reconstruct", "--checkpoint", str(conditional_run), "--images", str(image_folder),
                 "--out", str(tmp_path / "bad"), *common]) == 2
    err = capsys.readouterr().err
    assert "is malformed" in err and len(err.strip().splitlines()) == 1 and not (tmp_path / "bad").exists()


def test_reconstruct_without_calibration_says_so(conditional_run, image_folder, tmp_path, capsys):
    out = tmp_path / "rec"
    assert main(["reconstruct", "--checkpoint", str(conditional_run), "--images", str(image_folder), "--limit", "2",
                 "--num-samples", "2", "--steps", "2", "--out", str(out), "--no-progress"]) == 0
    assert "no stored calibration: run `ddo calibrate`" in capsys.readouterr().out
    assert torch.isfinite(torch.from_numpy(np.load(out / "std.npy"))).all()


def _shrinkage_problem(n=60, seed=0):
    """Images where dense misses the truth by ``e`` and the model overshoots: ``x0 = dense + k (truth - dense)``."""
    g = torch.Generator().manual_seed(seed)
    truth = torch.rand(n, 3, 8, 8, generator=g)
    dense = truth + 0.1 * torch.randn(n, 3, 8, 8, generator=g)
    qmask = (torch.rand(n, 1, 8, 8, generator=g) < 0.3).float()
    return truth, dense, qmask


def test_shrinkage_recovers_a_planted_global_weight():
    from ddo_conditional.inference.shrinkage import features, fit_shrinkage, shrink

    truth, dense, qmask = _shrinkage_problem()
    x0 = dense + 2.0 * (truth - dense)  # the model's correction is twice too large: the best weight is 1/2
    rough = torch.rand(len(truth)) + 0.1
    feats = features(x0, torch.zeros_like(x0), dense, rough)
    fitted = fit_shrinkage(x0, dense, truth, qmask, feats)
    assert fitted["b"] == 0.0 or fitted["feature"] == "none"
    assert fitted["a"] == pytest.approx(0.5, abs=0.03) and fitted["gain_db"] > 3
    torch.testing.assert_close(shrink(x0, dense, feats, fitted), dense + fitted["a"] * (x0 - dense))


def test_shrinkage_follows_a_planted_feature():
    from ddo_conditional.inference.shrinkage import features, fit_shrinkage, weights

    truth, dense, qmask = _shrinkage_problem(n=80)
    rough = torch.cat([torch.full((40,), 0.01), torch.full((40,), 0.2)])
    x0 = torch.cat([dense[:40] - (truth[:40] - dense[:40]), truth[40:]])  # harmful on smooth images, exact on rough
    feats = features(x0, torch.zeros_like(x0), dense, rough)
    fitted = fit_shrinkage(x0, dense, truth, qmask, feats)
    assert fitted["feature"] == "roughness" and fitted["b"] > 0
    w = weights(feats["roughness"], fitted)
    assert w[:40].max() == 0 and w[40:].min() == 1  # falls back to the interpolation where the model harms


def test_shrinkage_that_gains_too_little_is_not_kept():
    from ddo_conditional.inference.shrinkage import MIN_GAIN_DB, features, fit_shrinkage, shrink

    truth, dense, qmask = _shrinkage_problem()
    x0 = truth + 0.001 * (dense - truth)  # nearly exact already: no rule gains MIN_GAIN_DB
    feats = features(x0, torch.zeros_like(x0), dense, torch.rand(len(truth)) + 0.1)
    fitted = fit_shrinkage(x0, dense, truth, qmask, feats)
    assert (fitted["feature"], fitted["a"], fitted["b"]) == ("none", 1.0, 0.0)
    assert fitted["rejected"]["gain_db"] < MIN_GAIN_DB
    torch.testing.assert_close(shrink(x0, dense, feats, fitted), x0)
