"""Fields generated on the machine: the solvers against closed forms, determinism per (seed, index)."""
import math

import numpy as np
import pytest
import torch

from ddo import fields


def test_navier_stokes_keeps_the_mean_and_decays_a_taylor_green_vortex_exactly():
    n, visc, dt, steps = 32, 1e-2, 1e-3, 20
    x = torch.arange(n, dtype=torch.float64) / n
    k = 2
    w0 = torch.sin(2 * math.pi * k * x)[:, None] * torch.sin(2 * math.pi * k * x)[None, :]
    solver = fields.NavierStokes2d(n, visc=visc, dt=dt)  # no forcing: u . grad w vanishes for this vortex
    w = solver.solve(w0[None], steps * dt)[0]
    want = w0 * math.exp(-visc * 2 * (2 * math.pi * k) ** 2 * steps * dt)
    assert float((w - want).norm() / want.norm()) < 1e-4
    # a random field with the benchmark's forcing: the mean vorticity stays where it was (zero)
    g = [fields.sample_generator(0, i) for i in range(2)]
    w0 = fields.periodic_grf(g, n, 2.5, 7.0, 7.0**1.5) + 0.3
    forced = fields.NavierStokes2d(n, visc=1e-3, dt=5e-3, forcing=fields.ns_forcing(n)).solve(w0, 0.5)
    torch.testing.assert_close(forced.mean((1, 2)), w0.mean((1, 2)), atol=1e-10, rtol=0)
    assert float((forced - w0).abs().max()) > 1e-3  # it did move


def test_darcy_solver_matches_a_manufactured_solution_at_second_order():
    errors = []
    for s in (33, 65):
        y, x = np.mgrid[0:s, 0:s] / (s - 1)
        a = 1 + x + y
        u = np.sin(np.pi * x) * np.sin(np.pi * y)
        ux, uy = np.pi * np.cos(np.pi * x) * np.sin(np.pi * y), np.pi * np.sin(np.pi * x) * np.cos(np.pi * y)
        f = -(ux + uy) + 2 * np.pi**2 * a * u  # -div(a grad u) with a_x = a_y = 1
        got = fields.darcy_solve(a, f)
        errors.append(np.abs(got - u).max() / np.abs(u).max())
    assert errors[1] < 1e-3 and errors[0] / errors[1] > 3.5  # second order: 4x smaller per halving of h


def test_generation_is_a_pure_function_of_seed_and_index_at_any_batch_size():
    kw = {"t_end": 0.05, "dt": 5e-3, "resolution": 32}
    both = fields.navier_stokes(0, [3, 4], **kw)
    alone = fields.navier_stokes(0, [4], **kw)
    np.testing.assert_array_equal(both[1], alone[0])
    assert not np.array_equal(both[0], both[1])
    assert not np.array_equal(fields.navier_stokes(1, [4], **kw)[0], alone[0])
    u2, a2 = fields.darcy(0, [5, 6], resolution=16)
    u1, a1 = fields.darcy(0, [6], resolution=16)
    np.testing.assert_array_equal(u2[1], u1[0])
    assert set(np.unique(a1)) == {3.0, 12.0} and (u1[0][0] == 0).all() and u1[0].max() > 0


@pytest.mark.slow
def test_field_datasets_split_disjoint_cached_and_scaled(monkeypatch, tmp_path):
    import ddo.data as data

    monkeypatch.setenv("DDO_CACHE_DIR", str(tmp_path))
    monkeypatch.setitem(data.FIELD_SIZES, "darcy", (6, 3))
    train, test = data.load_fields("darcy", "train", 32), data.load_fields("darcy", "test", 32)
    assert len(train) == 6 and len(test) == 3 and test[0]["index"] == 6
    assert train[0]["image"].shape == (1, 32, 32) and 0 <= float(train[0]["image"].min())
    assert float(max(t["image"].max() for t in train)) < 1.0
    raw = data.generate_fields("darcy", 3, 6)
    np.testing.assert_allclose(test.images[:, 0], raw.reshape(3, 32, 2, 32, 2).mean((2, 4)) / data.FIELD_SCALES["darcy"],
                               rtol=1e-6)
    assert len(list((tmp_path / "fields").glob("darcy_*.npy"))) == 2
    monkeypatch.setattr(data, "FIELD_VAL", 2)  # validation after the test range, for held-out choices
    val = data.load_fields("darcy", "val", 32)
    assert len(val) == 2 and [v["index"] for v in val] == [9, 10]
    with pytest.raises(data.UserError, match="has splits 'train', 'val' and 'test', not 'dev'"):
        data.load_fields("darcy", "dev", 32)


@pytest.mark.slow
def test_train_and_reconstruct_on_a_generated_field(monkeypatch, tmp_path, capsys):
    import json

    import ddo.data as data
    from ddo.cli import main

    monkeypatch.setenv("DDO_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setitem(data.FIELD_SIZES, "navier-stokes", (8, 4))
    args = ["train", "--dataset", "navier-stokes", "--resolution", "16", "--ch", "8", "--ch-mult", "1,2",
            "--num-res-blocks", "1", "--modes", "4", "--batch-size", "4", "--iterations", "2", "--num-sample", "0",
            "--conditioning", "sparse-biharmonic", "--parameterization", "x0", "--no-progress"]
    assert main([*args, "--out", str(tmp_path / "bad")]) == 2
    assert "has 1-channel images and the run has --channels 3; pass --channels 1" in capsys.readouterr().err
    assert main([*args, "--channels", "1", "--out", str(tmp_path / "run")]) == 0
    out = tmp_path / "rec"
    assert main(["reconstruct", "--checkpoint", str(tmp_path / "run" / "checkpoint.pt"), "--dataset", "navier-stokes",
                 "--num-samples", "2", "--steps", "2", "--out", str(out), "--no-progress"]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["num_images"] == 4 and m["field"]["quantity"] == "vorticity" and m["field"]["signed"]
    assert 0 < m["methods"]["biharmonic"]["rel_l2_query"] < 2
    assert "rel. L2 query" in capsys.readouterr().out
    from PIL import Image

    with Image.open(out / "reconstructions.png") as im:  # diverging colour map: RGB
        pixels = np.asarray(im)
    assert pixels.ndim == 3 and pixels.shape[-1] == 3 and len(np.unique(pixels.reshape(-1, 3), axis=0)) > 10
