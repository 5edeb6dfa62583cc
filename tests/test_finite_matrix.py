"""Every registered conditioning key x every parameterisation x every registered sampler, trained a few
steps at the tiniest configuration, reconstructs finite values at the training resolution and at twice
it, or is refused at start in one line (exit code 2) where the combination cannot work.

One model per key and parameterisation, reused for every sampler and both resolutions. The values a
3-step sampler gives from a 2-step model are not good reconstructions; what is checked is that every
path ends in finite numbers (or an explicit refusal), never in NaN written as a result.
"""
import json
import math

import numpy as np
import pytest

from ddo import plugins
from ddo.cli import main
from ddo.diffusion import PARAMETERIZATIONS

from .test_finite import finite_outputs

HOST = plugins.load_host()
KEYS = HOST.model_wrappers.keys()
# one key per step function (ddim-x0 is another name of ddim)
SAMPLERS = list({HOST.samplers.get(k): k for k in reversed(HOST.samplers.keys())}.values())
RES = 16
# (key, parameterization, sampler) -> the start of the one-line refusal
# sparse-route refines a PDE's classical route: it trains on field pairs only (tests/test_pde_tasks.py)
REFUSED: dict = {("sparse-route", p, None): "--conditioning sparse-route refines a PDE's classical route"
                 for p in PARAMETERIZATIONS}


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """Four smooth 40x40 RGB PNGs: training crops at 16x16, reconstructions at 16 and 32."""
    from PIL import Image

    folder = tmp_path_factory.mktemp("matrix_images")
    yy, xx = np.mgrid[0:40, 0:40] / 40.0
    for i in range(4):
        img = np.stack([0.5 + 0.4 * np.sin(2 * np.pi * ((1 + i + c) * xx + 0.3 * (c + 1) * yy)) for c in range(3)], -1)
        Image.fromarray((img * 255).astype(np.uint8)).save(folder / f"img_{i}.png")
    return folder


def _train(out, images, key, param) -> int:
    return main(["train", "--out", str(out), "--dataset", "image-folder", "--data-root", str(images),
                 "--resolution", str(RES), "--ch", "4", "--ch-mult", "1", "--num-res-blocks", "1", "--modes", "4",
                 "--batch-size", "2", "--iterations", "2", "--warmup", "1", "--log-every", "1", "--num-sample", "0",
                 "--conditioning", key, "--parameterization", param, "--no-progress"])


def _one_line(err: str) -> str:
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, err
    return lines[0]


@pytest.mark.slow
@pytest.mark.parametrize("param", PARAMETERIZATIONS)
@pytest.mark.parametrize("key", KEYS)
def test_every_key_parameterisation_and_sampler_ends_finite(tmp_path, images, capsys, key, param):
    run = tmp_path / "run"
    rc = _train(run, images, key, param)
    err = capsys.readouterr().err
    if (key, param, None) in REFUSED:
        assert rc == 2 and REFUSED[(key, param, None)] in _one_line(err) and not run.exists()
        return
    assert rc == 0, err
    assert json.loads((run / "config.json").read_text())["parameterization"] == param
    for sampler in SAMPLERS:
        for res in (RES, 2 * RES):
            out = tmp_path / f"{sampler}_{res}"
            common = ["--checkpoint", str(run / "checkpoint.pt"), "--resolution", str(res), "--steps", "3",
                      "--sampler", sampler, "--no-progress"]
            if key == "none":  # an unconditional model: `ddo sample`, which never writes a non-finite sample
                rc = main(["sample", *common, "--num", "2", "--out", str(out) + ".png"])
            else:
                rc = main(["reconstruct", *common, "--images", str(images), "--limit", "2", "--num-samples", "2",
                           "--out", str(out)])
            err = capsys.readouterr().err
            where = f"{key} {param} {sampler} at {res}x{res}"
            if (key, param, sampler) in REFUSED:
                assert rc == 2 and REFUSED[(key, param, sampler)] in _one_line(err), where
                continue
            assert rc == 0, f"{where}: {err}"
            if key == "none":
                assert (tmp_path / f"{sampler}_{res}.png").exists(), where
                continue
            found = finite_outputs(out)
            assert "metrics.json" in found and "mean.npy" in found, where
            assert all(found.values()), f"{where}: {found}"
            mean = np.load(out / "mean.npy")
            assert mean.shape[-2:] == (res, res), where
            methods = json.loads((out / "metrics.json").read_text())["methods"]
            assert math.isfinite(methods["ddo-mean"]["psnr_query"]), where
