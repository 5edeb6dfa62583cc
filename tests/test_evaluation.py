"""The evaluation path through the command line: samples that do not depend on the batch size, and
nothing non-finite written or scored."""
import json

import numpy as np
import pytest
import torch

from ddo.cli import main

from .conftest import tiny_train_args


@pytest.fixture
def eps_run(tmp_path, image_folder):
    """A tiny sparse-lift eps model without blurring (its samples vary from draw to draw)."""
    run = tmp_path / "eps"
    assert main(tiny_train_args(run, image_folder, "--iterations", "2", "--conditioning", "sparse-lift",
                                "--sigma-blur-max", "0")) == 0
    return run / "checkpoint.pt"


def _reconstruct(checkpoint, image_folder, out, *extra):
    return main(["reconstruct", "--checkpoint", str(checkpoint), "--images", str(image_folder), "--num-samples", "3",
                 "--steps", "3", "--sampler", "denoise", "--raw-spread", "--out", str(out), "--no-progress", *extra])


def test_samples_do_not_depend_on_the_batch_size(eps_run, image_folder, tmp_path):
    """The same 12 images at 8 and 32 images per call (a batch of 8 then 4, against one batch of 12):
    every array and every metric equal up to the rounding of batch-size dependent GEMMs; another
    --seed changes them."""
    outs = {}
    for name, extra in {"b8": ("--batch-size", "8"), "b32": ("--batch-size", "32"),
                        "seed1": ("--batch-size", "32", "--seed", "1")}.items():
        assert _reconstruct(eps_run, image_folder, tmp_path / name, *extra) == 0
        outs[name] = {k: np.load(tmp_path / name / f"{k}.npy") for k in ("mean", "std_raw")}
        outs[name]["metrics"] = json.loads((tmp_path / name / "metrics.json").read_text())
    for k in ("mean", "std_raw"):
        assert outs["b8"][k].shape == (12, 3, 16, 16)
        np.testing.assert_allclose(outs["b8"][k], outs["b32"][k], rtol=0, atol=1e-5)
        assert np.abs(outs["seed1"][k] - outs["b32"][k]).max() > 1e-3
    a, b = outs["b8"]["metrics"]["methods"], outs["b32"]["metrics"]["methods"]
    for m in a:
        assert a[m]["psnr_query"] == pytest.approx(b[m]["psnr_query"], abs=1e-3), m
    assert outs["b8"]["metrics"]["rows_per_call"] == 8 and outs["b32"]["metrics"]["seed"] == 0


def _poisoned(checkpoint, tmp_path):
    """A copy of ``checkpoint`` whose output layer holds NaN (stands for a diverged network)."""
    state = torch.load(checkpoint, weights_only=True)
    for part in ("model", "ema"):
        sd = state.get(part)
        if isinstance(sd, dict):
            for name, value in sd.items():
                if name.endswith("out.weight"):
                    sd[name] = torch.full_like(value, float("nan"))
    out = tmp_path / "poisoned" / "checkpoint.pt"
    out.parent.mkdir()
    torch.save(state, out)
    (out.parent / "config.json").write_text((checkpoint.parent / "config.json").read_text())
    return out


def test_a_diverged_reconstruction_is_refused_in_one_line_and_nothing_is_written(eps_run, image_folder, tmp_path,
                                                                                   capsys):
    bad = _poisoned(eps_run, tmp_path)
    out = tmp_path / "rec"
    capsys.readouterr()
    assert _reconstruct(bad, image_folder, out) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("ddo: error: the samples of images 0-11 diverged")
    assert "train longer" in err[0] and "Traceback" not in err[0]
    assert not out.exists() or list(out.iterdir()) == []


def test_a_diverged_calibration_is_refused_and_nothing_is_written(eps_run, image_folder, tmp_path, capsys):
    from ddo_conditional.io.calibration_file import calibration_path

    bad = _poisoned(eps_run, tmp_path)
    capsys.readouterr()
    assert main(["calibrate", "--checkpoint", str(bad), "--dataset", "image-folder", "--data-root", str(image_folder),
                 "--num-samples", "2", "--steps", "2", "--limit", "4", "--no-progress"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "diverged" in err[0]
    assert not calibration_path(bad).exists()


def test_a_diverged_point_reconstruction_is_refused(tmp_path, image_folder, capsys):
    run = tmp_path / "pts"
    assert main(tiny_train_args(run, image_folder, "--iterations", "1", "--conditioning", "sparse-setconv",
                                "--parameterization", "x0", "--loss", "x0-mse", "--loss-weighting", "relative", "--loss-floor", "1e-4")) == 0
    bad = _poisoned(run / "checkpoint.pt", tmp_path)
    rng = np.random.default_rng(0)
    rows = ["x,y,r,g,b"] + [",".join(f"{v:.4f}" for v in (*rng.uniform(0.05, 0.95, 2), *rng.uniform(0, 1, 3)))
                            for _ in range(12)]
    csv = tmp_path / "obs.csv"
    csv.write_text("\n".join(rows) + "\n")
    out = tmp_path / "prec"
    capsys.readouterr()
    assert main(["points", "--checkpoint", str(bad), "--points", str(csv), "--resolution", "32",
                 "--num-samples", "2", "--steps", "2", "--out", str(out), "--no-progress"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "diverged" in err[0]
    assert not out.exists() or list(out.iterdir()) == []
