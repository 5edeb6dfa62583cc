"""Every documented path gives a finite reconstruction: the issue's reproductions at a tiny size.

An ``eps`` network's ``x0`` estimate under blurring divides by ``alpha_t``, which multiplies its error in
high DCT modes by up to ``exp(|k|^2 tau(t))``; briefly trained, such a model's samples diverged. The
default ``--x0-clip auto`` (the x0 estimate clipped to the data range for ``eps`` models) keeps them finite; ``none`` (the
reference's sampler) is kept as the reproduction of the divergence.
"""
import json
import math

import numpy as np
import pytest
import torch

from ddo.cli import main

from .conftest import tiny_train_args

TINY_NET = ["--ch", "8", "--ch-mult", "1,2", "--num-res-blocks", "1", "--modes", "4"]


def _numbers(obj):
    """Every number inside a JSON value (NaN and infinities included)."""
    if isinstance(obj, dict):
        for v in obj.values():
            yield from _numbers(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _numbers(v)
    elif isinstance(obj, (int, float)) and not isinstance(obj, bool):
        yield float(obj)


def finite_outputs(out) -> dict:
    """``{file: finite?}`` of ``metrics.json`` (every number in it) and every ``.npy`` array ``out`` holds."""
    found = {}
    if (out / "metrics.json").exists():
        found["metrics.json"] = all(math.isfinite(v) for v in _numbers(json.loads((out / "metrics.json").read_text())))
    for path in sorted(out.glob("*.npy")):
        found[path.name] = bool(np.isfinite(np.load(path)).all())
    return found


def assert_finite_run(rc: int, out, err: str) -> None:
    """``ddo reconstruct`` ended with finite outputs: exit 0, ``mean.npy`` and ``metrics.json`` (or the
    point files) written, every number in them finite."""
    assert rc == 0, err
    found = finite_outputs(out)
    assert "mean.npy" in found, sorted(p.name for p in out.iterdir())
    assert all(found.values()), found


def diverged(rc: int, out, err: str) -> bool:
    """The run diverged: exit 1 with one line naming it, or (without that guard) non-finite outputs."""
    if rc == 1:
        lines = [ln for ln in err.strip().splitlines() if ln.strip()]
        assert len(lines) == 1 and "diverged" in lines[0], err
        return True
    assert rc == 0, err
    return not all(finite_outputs(out).values())


def with_x0_clip(checkpoint, value: str, path):
    """A copy of ``checkpoint`` whose configuration says ``x0_clip=value`` (what a run trained with
    ``--x0-clip value`` writes)."""
    state = torch.load(checkpoint, weights_only=True)
    state["config"]["x0_clip"] = value
    torch.save(state, path)
    return path


@pytest.fixture(scope="module")
def encoder_run(tmp_path_factory):
    """The issue's first reproduction, tiny: the spec's ConditionalDDOModel with every default of the
    key (``eps``, ``dsm``), a few steps on natural-patches."""
    out = tmp_path_factory.mktemp("encoder") / "run"
    assert main(["train", "--dataset", "natural-patches", "--conditioning", "sparse-encoder", "--resolution", "16",
                 *TINY_NET, "--iterations", "20", "--batch-size", "8", "--warmup", "1", "--num-sample", "0",
                 "--out", str(out), "--no-progress"]) == 0
    return out


def test_spec_encoder_with_default_settings_is_eps_and_recorded(encoder_run):
    cfg = json.loads((encoder_run / "config.json").read_text())
    assert (cfg["parameterization"], cfg["loss"], cfg["x0_clip"]) == ("eps", "dsm", "floor-clip")


@pytest.mark.parametrize("res", [16, 32])
def test_spec_encoder_eps_model_reconstructs_finite_values(encoder_run, tmp_path, capsys, res):
    """`ddo reconstruct --dataset natural-patches --split test` of the briefly trained eps model (the
    default 250 ancestral steps) at the training resolution and at twice it: finite with the default
    remedy; the reference's unbounded sampler on the same weights diverges."""
    args = ["--dataset", "natural-patches", "--split", "test", "--limit", "2", "--num-samples", "2",
            "--resolution", str(res), "--no-progress"]
    out = tmp_path / "default"
    rc = main(["reconstruct", "--checkpoint", str(encoder_run / "checkpoint.pt"), *args, "--out", str(out)])
    assert_finite_run(rc, out, capsys.readouterr().err)
    metrics = json.loads((out / "metrics.json").read_text())
    psnr = {m: v["psnr_query"] for m, v in metrics["methods"].items()}
    assert psnr["ddo-mean"] > 8.0, psnr  # a reconstruction, not a saturated image (0/1 everywhere: ~5 dB)

    raw = with_x0_clip(encoder_run / "checkpoint.pt", "none", tmp_path / "none.pt")
    out = tmp_path / "none"
    rc = main(["reconstruct", "--checkpoint", str(raw), *args, "--out", str(out)])
    err = capsys.readouterr().err
    if rc == 0:  # the unbounded sampler: finite here or not, never written non-finite
        assert np.isfinite(np.load(out / "mean.npy")).all()
    else:
        assert diverged(rc, out, err)


def _write_csv(path, n=40, seed=0):
    rng = np.random.default_rng(seed)
    rows = [list(rng.random(2)) + list(rng.random(3)) for _ in range(n)]
    path.write_text("x,y,r,g,b\n" + "\n".join(",".join(f"{v:.6f}" for v in r) for r in rows) + "\n")
    return path


def _reconstruct_points(run, csv, out, capsys, extra=()):
    rc = main(["points", "--checkpoint", str(run / "checkpoint.pt"), "--points", str(csv), "--resolution", "64",
               "--num-samples", "2", "--out", str(out), "--no-progress", *extra])
    return rc, capsys.readouterr().err


def test_setconv_with_no_model_flag_reconstructs_points_at_64(tmp_path, image_folder, capsys):
    """`ddo train --conditioning sparse-setconv` with no other model flag (the key's declared
    parameterisation and loss), then `ddo reconstruct --points` at 64x64: finite arrays."""
    run = tmp_path / "run"
    assert main(tiny_train_args(run, image_folder, "--iterations", "2", "--conditioning", "sparse-setconv")) == 0
    cfg = json.loads((run / "config.json").read_text())
    assert (cfg["parameterization"], cfg["loss"], cfg["loss_weighting"], cfg["x0_clip"]) == ("x0", "x0-mse", "ratio", "none")
    out = tmp_path / "obs"
    rc, err = _reconstruct_points(run, _write_csv(tmp_path / "obs.csv"), out, capsys)
    assert_finite_run(rc, out, err)
    assert {"mean.npy", "std.npy", "samples.npy"} <= set(finite_outputs(out))
    assert np.load(out / "mean.npy").shape == (3, 64, 64)


@pytest.mark.parametrize("key", ["sparse-setconv", "sparse-attention"])
def test_point_models_trained_as_eps_reconstruct_finite_points_at_64(tmp_path, image_folder, capsys, key):
    """The issue's second reproduction: a point-set key trained 2 steps as an eps network with DSM (the
    old defaults, now explicit), `--points` at 64x64 with every default of `ddo reconstruct`: finite;
    the unbounded sampler on the same weights diverges."""
    run = tmp_path / "run"
    assert main(tiny_train_args(run, image_folder, "--iterations", "2", "--conditioning", key,
                                "--parameterization", "eps", "--loss", "dsm")) == 0
    csv = _write_csv(tmp_path / "obs.csv")
    out = tmp_path / "obs"
    rc, err = _reconstruct_points(run, csv, out, capsys)
    assert_finite_run(rc, out, err)
    raw_run = tmp_path / "raw"
    raw_run.mkdir()
    with_x0_clip(run / "checkpoint.pt", "none", raw_run / "checkpoint.pt")
    rc, err = _reconstruct_points(raw_run, csv, tmp_path / "raw_obs", capsys)
    assert diverged(rc, tmp_path / "raw_obs", err)
