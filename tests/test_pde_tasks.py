"""PDE field pairs and their sparse-observation tasks: the solver against a reference step, the pairs per
(seed, index), per-channel observations, co-kriging against the dense Gaussian conditional, the metrics,
the classical routes, and ``ddo reconstruct --task`` end to end."""
import json
import math

import numpy as np
import pytest
import torch

from ddo import fields
from ddo_conditional.pde import datasets as pairs_module
from ddo_conditional.pde.solvers import ns_backward
from ddo_conditional.data.datasets import FixedSparseMaskDataset, context_tensors
from ddo_conditional.classical.kriging import EmpiricalGaussian, TorusGaussian, krige
from ddo_conditional.data.masks import OBSERVED, TASKS, image_task
from ddo_conditional.inference.metrics import relative_l2
from ddo_conditional.pde.routes import error_rate, splice, task_errors, threshold


def reference_step(w: np.ndarray, visc: float, dt: float, forcing: np.ndarray) -> np.ndarray:
    """One step of the scheme written out on full complex FFTs: Crank-Nicolson viscosity, Heun's method
    for advection and forcing, 2/3 de-aliasing of the product, velocity (d psi/dy, -d psi/dx), -lap psi = w."""
    n = w.shape[0]
    m = np.fft.fftfreq(n, 1.0 / n)
    ky, kx = np.meshgrid(2 * np.pi * m, 2 * np.pi * m, indexing="ij")
    k2 = kx**2 + ky**2
    keep = (np.abs(m)[:, None] <= n / 3) & (np.abs(m)[None, :] <= n / 3)

    def rhs(wh):
        psi = np.where(k2 > 0, wh / np.where(k2 > 0, k2, 1), 0)
        u, v = np.fft.ifft2(1j * ky * psi).real, np.fft.ifft2(-1j * kx * psi).real
        wx, wy = np.fft.ifft2(1j * kx * wh).real, np.fft.ifft2(1j * ky * wh).real
        return -np.fft.fft2(u * wx + v * wy) * keep + np.fft.fft2(forcing)

    wh = np.fft.fft2(w)
    a, b = 1 - 0.5 * dt * visc * k2, 1 + 0.5 * dt * visc * k2
    n1 = rhs(wh)
    n2 = rhs((a * wh + dt * n1) / b)
    return np.fft.ifft2((a * wh + 0.5 * dt * (n1 + n2)) / b).real


def test_the_solver_takes_the_reference_schemes_step_and_integrates_backward():
    n = 16
    w0 = fields.periodic_grf([fields.sample_generator(3, 0)], n, 2.5, 7.0, 7.0**1.5)
    w0 = splice(w0, torch.zeros_like(w0), 7)[0]  # no Nyquist mode, whose derivative a real FFT drops
    f = fields.ns_forcing(n)
    solver = fields.NavierStokes2d(n, visc=1e-3, dt=1e-2, forcing=f)
    got = torch.fft.irfft2(solver.step(torch.fft.rfft2(w0[None])), s=(n, n))[0].numpy()
    want = reference_step(w0.numpy(), 1e-3, 1e-2, f.numpy())
    np.testing.assert_allclose(got, want, atol=1e-12, rtol=0)
    assert np.abs(got - w0.numpy()).max() > 1e-4  # the step moved the field
    # backward: a field of low modes solved to T = 1 and back comes home
    n = 64
    w0 = fields.periodic_grf([fields.sample_generator(0, i) for i in range(2)], n, 2.5, 7.0, 7.0**1.5)
    w0 = splice(w0, torch.zeros_like(w0), 6)
    w1 = fields.NavierStokes2d(n, 1e-3, 1e-3, fields.ns_forcing(n)).solve(w0, 1.0)
    back = ns_backward(w1)
    assert float((back - w0).norm() / w0.norm()) < 1e-3 < float((w1 - w0).norm() / w0.norm())


def test_pairs_are_a_pure_function_of_seed_and_index_and_w1_is_w0_solved():
    kw = {"t_end": 0.05, "dt": 5e-3, "resolution": 32}
    w0, w1 = pairs_module.navier_stokes_pair(0, [3, 4], **kw)
    a0, a1 = pairs_module.navier_stokes_pair(0, [4], **kw)
    np.testing.assert_array_equal(w0[1], a0[0])
    np.testing.assert_array_equal(w1[1], a1[0])
    solved = fields.NavierStokes2d(32, 1e-3, 5e-3, fields.ns_forcing(32), dtype=torch.float32).solve(
        torch.from_numpy(w0).double(), 0.05)
    np.testing.assert_allclose(w1, solved.numpy(), atol=1e-5)
    assert not np.array_equal(w0[0], w0[1])


class Pairs(torch.utils.data.Dataset):
    def __init__(self, n=12, size=16):
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(n, 2, size, size, generator=g).clamp(-1, 1)

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return {"image": self.x[i], "index": 100 + i}


def test_per_channel_observations_follow_the_task_fixed_across_workers():
    ds = FixedSparseMaskDataset(Pairs(), context_ratio=0.2, seed=5, observe="tasks")
    items = [ds[i] for i in range(len(ds))]
    loaded = next(iter(torch.utils.data.DataLoader(ds, batch_size=len(ds), num_workers=2)))
    torch.testing.assert_close(loaded["context_channels"], torch.stack([it["context_channels"] for it in items]))
    torch.testing.assert_close(loaded["context_values"], torch.stack([it["context_values"] for it in items]))
    seen = set()
    for it in items:
        task = image_task(5, it["index"])
        seen.add(task)
        want = torch.tensor(OBSERVED[task], dtype=torch.float32)
        torch.testing.assert_close(it["context_channels"], want)
        truth = it["image"].reshape(2, -1)[:, it["context_indices"]].T
        torch.testing.assert_close(it["context_values"], truth * want)  # unobserved channels carry zeros
    assert seen == set(TASKS)
    ctx = context_tensors(loaded)
    assert ctx["observation_mask"].shape == (12, 2, 16, 16)
    per_channel = ctx["observation_mask"].sum((2, 3))
    assert torch.equal(per_channel, loaded["context_channels"] * math.floor(0.2 * 256))
    fixed = FixedSparseMaskDataset(Pairs(), context_ratio=0.2, seed=5, observe="inverse")
    assert all(fixed[i]["context_channels"].tolist() == [0.0, 1.0] for i in range(3))
    with pytest.raises(ValueError, match="unknown observation rule 'sideways'"):
        FixedSparseMaskDataset(Pairs(), observe="sideways")


@pytest.mark.parametrize("model", [TorusGaussian, EmpiricalGaussian])
def test_kriging_is_the_dense_gaussian_conditional(model):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(40, 2, 6, 8, generator=g, dtype=torch.float64)
    x[:, 1] += torch.roll(x[:, 0], 1, -1) + 0.3 * torch.sin(torch.arange(8.0, dtype=torch.float64))  # a cross term, a mean
    gauss = model.fit(x)
    channels, pixels = torch.tensor([0, 0, 1, 1, 0, 0]), torch.tensor([3, 10, 3, 40, 47, 3])  # the last repeats one
    values = torch.randn(6, generator=g, dtype=torch.float64)
    values[5] = values[0]
    got = krige(gauss, channels, pixels, values, jitter=0.0)
    cov, mean = gauss.dense(), gauss.mean_field().flatten()
    key = (channels * 48 + pixels)[:5]
    want = mean + cov[:, key] @ torch.linalg.solve(cov[key][:, key], values[:5] - mean[key])
    torch.testing.assert_close(got.flatten(), want, atol=1e-8, rtol=0)
    torch.testing.assert_close(got.flatten()[key], values[:5], atol=1e-8, rtol=0)  # exact observations are kept
    torch.testing.assert_close(krige(gauss, channels[:0], pixels[:0], values[:0]), gauss.mean_field())


def test_the_torus_model_estimates_a_known_stationary_covariance():
    # fields with one Fourier mode of random phase: Cov(x(p), x(p + d)) = cos(2 pi d_x / W) / 2
    g = torch.Generator().manual_seed(1)
    phase = torch.rand(4000, 1, 1, 1, generator=g, dtype=torch.float64) * 2 * math.pi
    xs = torch.arange(8, dtype=torch.float64).view(1, 1, 1, 8)
    x = torch.cos(2 * math.pi * xs / 8 + phase).expand(-1, 1, 4, 8)
    cov = TorusGaussian.fit(x, mean_modes=0).cov[0, 0]
    torch.testing.assert_close(cov, (torch.cos(2 * math.pi * xs[0, 0] / 8) / 2).expand(4, 8), atol=0.03, rtol=0)


def test_relative_l2_and_the_threshold_error_rate_on_hand_made_fields():
    true = torch.zeros(1, 2, 4, 4, dtype=torch.float64)
    true[0, 0] = 12.0
    true[0, 0, :2] = 3.0  # half 3, half 12
    true[0, 1] = 2.0
    pred = true.clone()
    pred[0, 1] = 2.2  # 10% everywhere
    pred[0, 0, 0, :2] = 9.0  # two pixels cross the midpoint 7.5
    pred[0, 0, 3, 0] = 8.0  # above the midpoint: still 12
    torch.testing.assert_close(relative_l2(pred, true, per_channel=True)[0, 1], torch.tensor(0.1, dtype=torch.float64))
    assert float(error_rate(pred[:, 0], true[:, 0])[0]) == 2 / 16
    assert threshold(torch.tensor([7.4, 7.5, 100.0])).tolist() == [3.0, 12.0, 12.0]
    err = task_errors("darcy-pair", pred, true)
    assert err.shape == (1, 2) and float(err[0, 0]) == 2 / 16 and abs(float(err[0, 1]) - 0.1) < 1e-12
    assert abs(float(task_errors("navier-stokes-pair", pred, true)[0, 0]) - float(relative_l2(pred, true, per_channel=True)[0, 0])) < 1e-15


@pytest.fixture
def small_pairs(monkeypatch, tmp_path):
    import ddo_conditional.pde.datasets as pairs

    monkeypatch.setenv("DDO_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setitem(pairs.PAIR_SIZES, "darcy-pair", (10, 3))
    return pairs


def test_darcy_routes_solve_the_kriged_coefficient_and_beat_kriging_forward(small_pairs):
    from ddo_conditional.pde.routes import Routes

    routes = Routes.for_dataset("darcy-pair", 32)
    test = torch.from_numpy(small_pairs.to_physical("darcy-pair", small_pairs.load_pairs("darcy-pair", "test", 32).images))
    pixels = torch.from_numpy(np.random.default_rng(0).choice(32 * 32, 200, replace=False))
    values = test[0].flatten(1)[:, pixels].T.double()
    kriged, route = routes.kriging(pixels, values, (True, False)), routes.route(pixels, values, (True, False))
    assert set(torch.unique(route[0]).tolist()) <= {3.0, 12.0}
    np.testing.assert_allclose(route[1].numpy(), fields.darcy_solve(route[0].numpy()), atol=1e-12)
    torch.testing.assert_close(route[0], kriged[0])
    err = task_errors("darcy-pair", torch.stack([kriged, route]), test[:1].double().expand(2, -1, -1, -1))
    assert float(err[1, 1]) < float(err[0, 1])  # the solved pressure beats co-kriging it from the coefficient's points


def test_the_inversion_route_beats_co_kriging_and_its_pressure_honours_the_points(small_pairs):
    from ddo_conditional.pde.routes import Routes

    routes = Routes.for_dataset("darcy-pair", 32)
    test = torch.from_numpy(small_pairs.to_physical("darcy-pair", small_pairs.load_pairs("darcy-pair", "test", 32).images))
    pixels = torch.from_numpy(np.random.default_rng(0).choice(32 * 32, 150, replace=False))
    values = test[0].flatten(1)[:, pixels].T.double()
    for observed in (OBSERVED["inverse"], OBSERVED["joint"]):
        kriged, fitted = routes.kriging(pixels, values, observed), routes.inversion(pixels, values, observed, 40)
        assert set(torch.unique(fitted[0]).tolist()) <= {3.0, 12.0}
        err = task_errors("darcy-pair", torch.stack([kriged, fitted]), test[:1].double().expand(2, -1, -1, -1))
        assert float(err[1, 0]) < float(err[0, 0]), observed  # the coefficient through the solver
        solved = torch.from_numpy(fields.darcy_solve(fitted[0].numpy()))
        at = lambda u: float((u.flatten()[pixels] - values[:, 1]).abs().mean())
        assert at(fitted[1]) < 0.5 * at(solved)  # the inpainted misfit brings the pressure to its points
        scored = lambda u: float(relative_l2(u[None, None], test[:1, 1:].double(), per_channel=True))
        assert scored(fitted[1]) < scored(solved)  # and nearer the truth between them
    assert float(err[1, 1]) < float(err[0, 1])  # joint: the pressure too


def test_sign_gibbs_draws_the_truncated_normal():
    from ddo_conditional.pde.posterior import sign_gibbs

    cov = np.array([[1.0, 0.8], [0.8, 1.0]])
    draws = sign_gibbs(cov, np.array([1.0, -1.0]), 2000, 20000, seed=3)
    assert draws.shape == (2000, 2) and (draws[:, 0] > 0).all() and (draws[:, 1] < 0).all()
    x = np.random.default_rng(0).multivariate_normal([0, 0], cov, 400000)
    x = x[(x[:, 0] > 0) & (x[:, 1] < 0)]  # the same law by rejection
    np.testing.assert_allclose(draws.mean(0), x.mean(0), atol=0.03)
    np.testing.assert_allclose(draws.std(0), x.std(0), atol=0.03)
    np.testing.assert_array_equal(draws, sign_gibbs(cov, np.array([1.0, -1.0]), 2000, 20000, seed=3))
    # the law of c g is c times g's: the sampler's every step scales with the field (its start included:
    # a start far out in the tails leaves many correlated coordinates slow to come in)
    np.testing.assert_allclose(sign_gibbs(1e-6 * cov, np.array([1.0, -1.0]), 20, 40, seed=3),
                               1e-3 * sign_gibbs(cov, np.array([1.0, -1.0]), 20, 40, seed=3), rtol=1e-9, atol=0)
    # neighbours of opposite signs, correlated 1 - 1e-6: each one's side lies hundreds of deviations out
    tight = sign_gibbs(np.array([[1.0, 1 - 1e-6], [1 - 1e-6, 1.0]]), np.array([1.0, -1.0]), 50, 200, seed=0)
    assert np.isfinite(tight).all() and (tight[:, 0] > 0).all() and (tight[:, 1] < 0).all()


def test_the_posterior_keeps_the_observed_coefficient_and_is_reproducible(small_pairs):
    from ddo_conditional.pde.routes import Routes
    from ddo_conditional.pde.posterior import darcy_posterior

    routes = Routes.for_dataset("darcy-pair", 128)  # the pairs' own grid, where the coefficient is two-valued
    test = torch.from_numpy(small_pairs.to_physical("darcy-pair", small_pairs.load_pairs("darcy-pair", "test", 128).images))
    pixels = torch.from_numpy(np.random.default_rng(0).choice(128 * 128, 100, replace=False))
    values = test[0].flatten(1)[:, pixels].T.double()
    est = routes.posterior(pixels, values, samples=4)
    assert est.shape == (2, 128, 128) and set(torch.unique(est[0]).tolist()) <= {3.0, 12.0}
    torch.testing.assert_close(est[0].flatten()[pixels], values[:, 0])  # every draw honours the observed signs
    assert float(est[1].abs().max()) > 0 and float(est[1][0].abs().max()) == 0.0  # a pressure, 0 on the boundary
    torch.testing.assert_close(routes.posterior(pixels, values, samples=4), est, rtol=0, atol=0)  # a pure function
    other = routes.posterior(pixels[1:], values[1:], samples=4)  # other observations: other draws
    assert not torch.equal(other[1], est[1])
    twice = darcy_posterior(routes._latent, torch.cat([pixels, pixels[:5]]), torch.cat([values[:, 0], values[:5, 0]]), 4)
    torch.testing.assert_close(twice, est, rtol=0, atol=0)  # a pixel observed twice is one observation
    # on its own grid the forward task's reference posterior is this posterior's draws: their mean is its estimate
    draws = routes.reference_draws(pixels, values, OBSERVED["forward"], 4)
    assert draws.shape == (4, 2, 128, 128) and float(draws[:, 1].std(0).max()) > 0
    torch.testing.assert_close(draws[:, 1].mean(0), est[1], rtol=0, atol=1e-12)
    torch.testing.assert_close(draws[:, 0].flatten(1)[:, pixels], values[:, 0].expand(4, -1), rtol=0, atol=0)
    coarse = Routes.for_dataset("darcy-pair", 32)
    with pytest.raises(ValueError, match="holds on the 128x128 grid of the pairs, not 32x32"):
        coarse.posterior(pixels[:10] % 1024, values[:10])
    with pytest.raises(ValueError, match="the coefficient's two values"):
        darcy_posterior(routes._latent, pixels[:3], torch.tensor([3.0, 7.5, 12.0]), 4)


def test_the_exact_input_floor_is_zero_on_the_solvers_grid_and_the_discretisation_below_it(small_pairs, monkeypatch):
    from ddo_conditional.pde.routes import exact_input_errors

    monkeypatch.setitem(small_pairs.PAIR_SIZES, "navier-stokes-pair", (2, 2))
    floors = {}
    for kind in ("darcy-pair", "navier-stokes-pair"):
        for res in (32, 128):
            pairs = torch.from_numpy(small_pairs.to_physical(kind, small_pairs.load_pairs(kind, "test", res).images)).double()
            floors[kind, res] = {t: e.tolist() for t, e in exact_input_errors(kind, pairs).items()}
    assert set(floors["darcy-pair", 128]) == {"forward"} and set(floors["navier-stokes-pair", 128]) == {"forward", "inverse"}
    for kind in ("darcy-pair", "navier-stokes-pair"):
        assert max(floors[kind, 128]["forward"]) < 1e-5  # the data's own solver on its own grid
        assert min(floors[kind, 32]["forward"]) > 1e-3   # a coarse grid's solve of the area-averaged input
    assert min(floors["navier-stokes-pair", 128]["inverse"]) > 1e-3  # the modes the backward solve discards


@pytest.mark.slow
def test_task_command_scores_a_route_model_beside_the_classical_estimates(small_pairs, tmp_path, capsys):
    from ddo.cli import main

    run = tmp_path / "run"
    args = ["train", "--dataset", "darcy-pair", "--channels", "2", "--conditioning", "sparse-route", "--resolution", "32",
            "--context-ratio", "0.2", "--ch", "8", "--ch-mult", "1,2", "--num-res-blocks", "1", "--modes", "4",
            "--batch-size", "4", "--iterations", "2", "--num-sample", "0", "--no-progress"]
    assert main([*args, "--out", str(run)]) == 0
    ckpt = str(run / "checkpoint.pt")
    out = tmp_path / "joint"
    assert main(["task", "--checkpoint", ckpt, "--dataset", "darcy-pair", "--task", "joint", "--points-per-channel",
                 "150", "--out", str(out), "--no-progress"]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["task"] == "joint" and m["points_per_channel"] == 150 and m["target_channels"] == ["a", "u"]
    assert set(m["methods"]) == {"ddo", "interpolation", "kriging", "biharmonic", "inversion"}
    for method in m["methods"].values():
        assert len(method["per_image"]) == 3 and 0 <= method["error_percent"] < 100
    assert (out / "reconstructions.png").stat().st_size > 0
    assert "| joint | ddo |" in capsys.readouterr().out
    forward = tmp_path / "forward"
    assert main(["task", "--checkpoint", ckpt, "--dataset", "darcy-pair", "--task", "forward",
                 "--points-per-channel", "150", "--out", str(forward), "--no-progress"]) == 0
    # the posterior holds on the pairs' own 128x128 grid only: at 32x32 it is not scored
    assert set(json.loads((forward / "metrics.json").read_text())["methods"]) == {"ddo", "interpolation", "kriging"}
    inverse = tmp_path / "inverse"  # Darcy's inverse task adds the coefficient fitted through the solver
    assert main(["task", "--checkpoint", ckpt, "--dataset", "darcy-pair", "--task", "inverse",
                 "--points-per-channel", "150", "--out", str(inverse), "--no-progress"]) == 0
    m = json.loads((inverse / "metrics.json").read_text())
    assert set(m["methods"]) == {"ddo", "interpolation", "kriging", "inversion"}
    out = capsys.readouterr().out
    assert "| inverse | **inversion** (best estimate) |" in out
    assert "slow estimates: 0 read from" in out.split("inverse: best estimate")[1] and "6 computed" in out
    # the headline is the best estimate the product ships; the model's samples are scored beside a reference
    assert m["best_estimate"] == {"method": "inversion", "error_percent": m["methods"]["inversion"]["error_percent"]}
    assert f"inverse: best estimate inversion {m['methods']['inversion']['error_percent']:.2f}%" in out
    assert set(m["distributions"]) == {"ddo", "reference"}
    for d in m["distributions"].values():
        assert d["crps"] > 0 and 0 <= d["coverage_1std"] <= d["coverage_2std"] <= 1 and set(d["channel_crps"]) == {"a"}
    # a rerun reads the inversion and the reference draws back from the estimate cache: the same numbers
    assert main(["task", "--checkpoint", ckpt, "--dataset", "darcy-pair", "--task", "inverse",
                 "--points-per-channel", "150", "--out", str(inverse), "--no-progress"]) == 0
    assert "slow estimates: 6 read from" in capsys.readouterr().out
    again = json.loads((inverse / "metrics.json").read_text())
    assert again["methods"]["inversion"]["per_image"] == m["methods"]["inversion"]["per_image"]
    assert again["distributions"]["reference"]["crps"] == m["distributions"]["reference"]["crps"]
    # the cost reported is the estimate's, kept with it, not the disk read's
    assert again["methods"]["inversion"]["seconds_per_reconstruction"] == m["methods"]["inversion"]["seconds_per_reconstruction"]
    fast = tmp_path / "fast"  # --skip-slow: no inversion, no reference; the headline falls to the route
    assert main(["task", "--checkpoint", ckpt, "--dataset", "darcy-pair", "--task", "inverse", "--skip-slow",
                 "--points-per-channel", "150", "--out", str(fast), "--no-progress"]) == 0
    m = json.loads((fast / "metrics.json").read_text())
    assert set(m["methods"]) == {"ddo", "interpolation", "kriging"} and set(m["distributions"]) == {"ddo"}
    assert m["best_estimate"]["method"] == "interpolation"
    capsys.readouterr()
    bad = [(["task", "--task", "forward", "--context-ratio", "0.1"], "unrecognized arguments: --context-ratio 0.1"),
           (["reconstruct", "--points-per-channel", "10"], "--points-per-channel moved to its own command: ddo task"),
           (["reconstruct", "--task", "joint"], "--task moved to its own command: ddo task --checkpoint"),
           (["task", "--task", "forward", "--points-per-channel", "5000"], "more than the 32x32 grid's 1024 pixels"),
           (["task", "--task", "forward", "--estimate-cache", str(tmp_path / "c"), "--no-estimate-cache"],
            "--estimate-cache and --no-estimate-cache contradict each other"),
           (["task", "--task", "forward", "--reference-draws", "1"], "--reference-draws 1: a distribution is scored")]
    for (command, *extra), message in bad:
        assert main([command, "--checkpoint", ckpt, "--dataset", "darcy-pair", *extra, "--out",
                     str(tmp_path / "bad"), "--no-progress"]) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "bad").exists()
    # every channel observed (--observe all) and a range of densities: trains; --task then needs a count
    ranged = tmp_path / "ranged"
    assert main([*args, "--observe", "all", "--context-ratio", "0.05:0.2", "--out", str(ranged)]) == 0
    assert main(["task", "--checkpoint", str(ranged / "checkpoint.pt"), "--dataset", "darcy-pair", "--task",
                 "forward", "--out", str(tmp_path / "bad"), "--no-progress"]) == 2
    assert "was trained with a range of context ratios (0.05:0.2); give --points-per-channel N" in capsys.readouterr().err
    assert main(["train", "--dataset", "darcy", "--channels", "1", "--conditioning", "sparse-route", "--resolution", "32",
                 "--iterations", "1", "--no-progress", "--out", str(tmp_path / "x")]) == 2
    assert "--conditioning sparse-route refines a PDE's classical route" in capsys.readouterr().err


def test_the_relative_l2_loss_weighs_each_channel_by_its_routes_error():
    from types import SimpleNamespace

    from ddo_conditional.losses import x0_mse_loss

    def x0_mse_relative_l2_loss(floor=1e-8):
        return x0_mse_loss(t1_fraction=0.5, weighting="relative-l2", floor=floor)

    x = torch.zeros(4, 2, 2, 2)
    err = torch.tensor([[0.1, 0.2], [0.3, 0.1], [0.2, 0.2], [0.4, 0.4]])  # the stub's x0 is off by err[i, c]
    gen_sde = SimpleNamespace(sample_timesteps=lambda b, device, dtype: torch.full((b,), 0.3),
                              forward_diffusion=SimpleNamespace(sample=lambda t, x: x),
                              x0=lambda z, t, v, **kw: x + err[:, :, None, None])
    route = torch.tensor([[0.5, 0.01], [0.04, 0.0], [1.0, 1.0], [1.0, 1.0]])  # the route's error per image, channel
    dense = x + route[:, :, None, None]
    out = x0_mse_relative_l2_loss(floor=1e-8)(gen_sde, {"image": x}, None, {"context_dense": dense})["loss"]
    w = 1 / (route[:2] ** 2 + 1e-8).sqrt()
    want = torch.cat([(err[:2] ** 2 * w / w.mean()).mean(1), (err[2:] ** 2).mean(1)])
    torch.testing.assert_close(out, want)
    assert float(w[1, 1]) == pytest.approx(1e4)  # a channel the route renders exactly weighs by the floor
    with pytest.raises(ValueError, match="--loss-weighting relative-l2 weighs by the error"):
        x0_mse_relative_l2_loss()(gen_sde, {"image": x}, None, {})


def test_the_scored_loss_counts_only_the_channels_each_task_scores():
    from types import SimpleNamespace

    from ddo.plugins import load_host
    from ddo_conditional.losses import scored_channels, x0_mse_loss

    x = torch.zeros(3, 2, 2, 2)
    err = torch.tensor([[0.1, 0.2], [0.3, 0.1], [0.2, 0.4]])
    gen_sde = SimpleNamespace(sample_timesteps=lambda b, device, dtype: torch.full((b,), 0.3),
                              forward_diffusion=SimpleNamespace(sample=lambda t, x: x),
                              x0=lambda z, t, v, **kw: x + err[:, :, None, None])
    route = torch.tensor([[0.5, 0.01], [0.04, 0.2], [0.1, 0.1]])
    mask = torch.zeros(3, 2, 2, 2)
    mask[0, 0, 0, 0] = 1  # forward: the input observed, the solution scored
    mask[1, 1, 1, 1] = 1  # inverse: the solution observed, the input scored
    mask[2, :, 0, 1] = 1  # joint: both observed, both scored
    torch.testing.assert_close(scored_channels(mask, 2), torch.tensor([[0.0, 1.0], [1.0, 0.0], [1.0, 1.0]]))
    torch.testing.assert_close(scored_channels(mask[:, :1], 2), torch.ones(3, 2))  # one shared mask: all observed
    kwargs = {"context_dense": x + route[:, :, None, None], "observation_mask": mask}
    out = x0_mse_loss(weighting="scored-l2", floor=1e-8, t1_fraction=1.0)(gen_sde, {"image": x}, None, kwargs)["loss"]
    w = scored_channels(mask, 2) / (route ** 2 + 1e-8).sqrt()
    torch.testing.assert_close(out, (err ** 2 * w / w.mean()).mean(1))
    assert float(out[0]) == pytest.approx(float((0.2 ** 2 * w[0, 1] / w.mean()) / 2))  # the kriged input does not count
    # the earlier name, as a resumed run builds it from a configuration without the options: t1_fraction 0.5
    earlier = load_host().losses.get("x0-mse-scored-l2")()(gen_sde, {"image": x}, None, kwargs)["loss"]
    n1 = 2  # round(0.5 * 3): the first two terms at t = 1, weighted; the last one plain
    head = w[:n1] / w[:n1].mean()
    torch.testing.assert_close(earlier, torch.cat([(err[:n1] ** 2 * head).mean(1), (err[n1:] ** 2).mean(1)]))


def test_a_route_is_cached_per_observed_values_not_only_per_index():
    """A flipped pair (Darcy's law allows it) reads other values at the same pixels: it gets its own
    route, and the first orientation's route is still served for the first."""
    from ddo_conditional.pde.cache import RouteCache

    class Stub:  # a route that says which values it was computed from
        calls = 0

        def routes(self, pixels, values, observed):
            Stub.calls += len(pixels)
            return [torch.full((2, 4, 4), float(v[0, 0])) for v in values]

    cache = RouteCache("darcy-pair")
    cache._routes[4] = Stub()
    values = torch.rand(1, 5, 2)
    batch = {"image": torch.zeros(1, 2, 4, 4), "index": torch.tensor([7]), "context_indices": torch.arange(5)[None],
             "context_values": values, "context_channels": torch.tensor([[1.0, 0.0]])}
    first = cache.dense(batch)
    flipped = cache.dense({**batch, "context_values": values.flip(1)})
    again = cache.dense(batch)
    assert Stub.calls == 2
    assert torch.equal(again, first) and not torch.equal(flipped, first)


def test_a_forced_flow_is_never_flipped_in_training():
    """The trainer's horizontal flips keep data whose law a reflection changes as it is: a reflected
    Navier-Stokes field has its forcing on the other diagonal and its vorticity's sign reversed."""
    from ddo.data import RandomFlip

    class Fields(torch.utils.data.Dataset):
        def __init__(self, invariant):
            self.field = {"dihedral_invariant": invariant}

        def __len__(self):
            return 16

        def __getitem__(self, i):
            return {"image": torch.arange(12.0).view(1, 3, 4) + i, "index": i}

    for invariant, flips in ((False, 0), (True, None)):
        data = RandomFlip(Fields(invariant), seed=0)
        n = sum(not torch.equal(data[i]["image"], Fields(invariant)[i]["image"]) for i in range(16) for _ in [data.set_epoch(i % 3)])
        assert n == flips if flips is not None else 3 <= n <= 13


def test_a_route_model_refuses_photometric_maps_in_one_line(small_pairs, tmp_path, capsys):
    """A colour map of a field pair is no sample of its PDE (and every epoch's new values would be a
    new route to solve and cache)."""
    from ddo.cli import main

    args = ["train", "--dataset", "darcy-pair", "--channels", "2", "--conditioning", "sparse-route", "--resolution", "32",
            "--ch", "8", "--ch-mult", "1,2", "--num-res-blocks", "1", "--modes", "4", "--batch-size", "4",
            "--iterations", "1", "--num-sample", "0", "--no-progress", "--augment", "photometric"]
    capsys.readouterr()
    assert main([*args, "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--augment photometric maps the observed values of a field pair" in err[0]
    assert not (tmp_path / "run").exists()


def test_the_operator_is_what_the_solver_inverts_and_the_adjoint_gradient_its_derivative():
    from ddo.api import darcy_factor, darcy_solve
    from ddo_conditional.pde.inversion import apply_operator, misfit_and_gradient

    gen = torch.Generator().manual_seed(0)
    s = 10
    a = 3 + 9 * torch.rand(s, s, generator=gen, dtype=torch.float64)
    u = torch.zeros(s, s, dtype=torch.float64)
    u[1:-1, 1:-1] = torch.randn(s - 2, s - 2, generator=gen, dtype=torch.float64)
    f = apply_operator(a, u)  # the solver, factorised or not, takes it back to u
    rhs = np.zeros((s, s))
    rhs[1:-1, 1:-1] = f.numpy()
    np.testing.assert_allclose(darcy_factor(a.numpy())(rhs), u.numpy(), atol=1e-12)
    np.testing.assert_allclose(darcy_solve(a.numpy(), rhs), u.numpy(), atol=1e-12)
    phi = 0.5 * torch.randn(s, s, generator=gen, dtype=torch.float64)
    pixels = torch.tensor([13, 25, 44, 51, 66, 78])
    pressures = 0.01 * torch.rand(len(pixels), generator=gen, dtype=torch.float64)
    # joint: points of a too; a strong total variation, whose gradient then dominates (9, 9: the last row
    # and column, repeated by the differences)
    for known, tv in ((None, 8e-7), ((torch.tensor([23, 55]), torch.tensor([12.0, 3.0])), 8e-7), (None, 1e-1)):
        _, grad = misfit_and_gradient(phi, pixels, pressures, known, tv)
        for i, j in ((2, 3), (5, 5), (7, 1), (0, 4), (9, 9), (9, 3)):  # (0, 4): a boundary node enters through its faces
            step = torch.zeros_like(phi)
            step[i, j] = 1e-6
            fd = (misfit_and_gradient(phi + step, pixels, pressures, known, tv)[0]
                  - misfit_and_gradient(phi - step, pixels, pressures, known, tv)[0]) / 2e-6
            assert abs(fd - float(grad[i, j])) <= 1e-5 * max(abs(fd), 1e-5), (i, j, fd, float(grad[i, j]))


def test_the_inversion_fits_the_pressures_and_finds_the_coefficient_better_than_its_start():
    from ddo.api import darcy_solve
    from ddo_conditional.pde.inversion import darcy_invert, misfit_and_gradient

    s = 24
    yy, xx = torch.meshgrid(torch.arange(s), torch.arange(s), indexing="ij")
    truth = torch.where((yy - 9) ** 2 + (xx - 14) ** 2 < 36, 12.0, 3.0).double()
    u = torch.from_numpy(darcy_solve(truth.numpy()))
    pixels = torch.from_numpy(np.random.default_rng(0).choice(s * s, 200, replace=False))
    start = torch.full((s, s), 7.0, dtype=torch.float64)
    fitted = darcy_invert(pixels, u.flatten()[pixels], start, evaluations=60)
    lo_phi = lambda a: torch.atanh(((a - 7.5) / 4.5).clamp(-0.999, 0.999)) * 0.5
    before = misfit_and_gradient(lo_phi(start), pixels, u.flatten()[pixels], tv=0.0)[0]
    after = misfit_and_gradient(lo_phi(fitted), pixels, u.flatten()[pixels], tv=0.0)[0]
    assert after < 0.1 * before
    assert float(error_rate(fitted[None], truth[None])) < 0.5 * float(error_rate(start[None], truth[None]))
    # the joint task's points of the coefficient: fitted too, and the fit finds more of the disc
    known = torch.from_numpy(np.random.default_rng(1).choice(s * s, 60, replace=False))
    joint = darcy_invert(pixels, u.flatten()[pixels], start, evaluations=60, known=(known, truth.flatten()[known]))
    assert torch.equal(torch.where(joint.flatten()[known] > 7.5, 12.0, 3.0).double(), truth.flatten()[known])
    assert float(error_rate(joint[None], truth[None])) <= float(error_rate(fitted[None], truth[None]))


def test_a_slow_estimate_is_kept_on_disk_reused_and_recomputed_when_its_observations_change(tmp_path):
    from ddo_conditional.pde.cache import EstimateCache

    calls = []

    def compute(v):
        calls.append(v)
        return torch.full((2, 3, 3), float(v))

    pixels, values = torch.tensor([4, 1, 7]), torch.tensor([[0.5, 1.0], [2.0, 3.0], [4.0, 5.0]], dtype=torch.float64)
    key = lambda p, v, observed=(False, True), fit="fit-a", **s: EstimateCache.key(fit, "inversion", (3, 3), p, v,
                                                                                  observed, **s)
    cache = EstimateCache(tmp_path / "estimates")
    first, seconds = cache.get("inversion", key(pixels, values), lambda: compute(1))
    # a new process (a new instance) reads it back, whatever the dtype the observations arrive in, with the
    # seconds its computation took
    again = EstimateCache(tmp_path / "estimates")
    got, kept = again.get("inversion", key(pixels.int(), values.float()), lambda: compute(2))
    assert torch.equal(got, first) and kept == seconds and calls == [1] and (again.hits, again.misses) == (1, 0)
    changed = values.clone()
    changed[1, 1] += 1e-9  # one observed value: another estimate
    others = [key(pixels, changed), key(pixels.flip(0), values), key(pixels, values, (True, True)),
              key(pixels, values, evaluations=10), key(pixels, values, fit="fit-b")]
    assert len({key(pixels, values), *others}) == 6
    assert float(again.get("inversion", others[0], lambda: compute(3))[0][0, 0, 0]) == 3.0 and calls == [1, 3]
    assert len(list((tmp_path / "estimates" / "inversion").glob("*.pt"))) == 2
    # a damaged entry is computed again and replaced
    damaged = next((tmp_path / "estimates" / "inversion").glob("*.pt"))
    damaged.write_bytes(b"not a tensor")
    for _ in range(2):
        for k in (key(pixels, values), others[0]):
            again.get("inversion", k, lambda: compute(5))
    assert calls == [1, 3, 5]
    off = EstimateCache(None)  # no folder: computed every time, nothing written
    off.get("inversion", key(pixels, values), lambda: compute(4))
    assert calls == [1, 3, 5, 4] and off.misses == 1
    # the routes' fit is part of the key: other training pairs are another fit
    from ddo_conditional.pde.routes import Routes
    fields = torch.randn(6, 2, 8, 8, dtype=torch.float64)
    fits = {Routes("navier-stokes-pair", f).fingerprint for f in (fields, fields.clone(), fields[:5])}
    assert len(fits) == 2


@pytest.mark.parametrize("task", ["forward", "inverse", "joint"])
def test_reference_draws_honour_the_points_and_go_through_the_routes_physics(task):
    from ddo_conditional.pde.routes import JOINT_MODES, Routes, solve_backward, solve_forward

    g = torch.Generator().manual_seed(3)
    train = torch.randn(40, 2, 16, 16, generator=g, dtype=torch.float64)
    train = torch.fft.ifft2(torch.fft.fft2(train) * (torch.fft.fftfreq(16).abs()[:, None] < 0.15)).real * 5
    routes = Routes("navier-stokes-pair", train)
    pixels = torch.tensor([3, 40, 77, 130, 200, 251])
    values = train[0].flatten(1)[:, pixels].T.clone()
    observed = OBSERVED[task]
    draws = routes.reference_draws(pixels, values, observed, 6)
    assert draws.shape == (6, 2, 16, 16) and torch.isfinite(draws).all()
    assert torch.equal(routes.reference_draws(pixels, values, observed, 6), draws)  # a function of the observations
    first = 0 if observed[0] else 1
    # the channel observed is drawn through its points (joint: w1; w0's low modes come from the backward solve)
    through = first if task != "joint" else 1
    torch.testing.assert_close(draws[:, through].flatten(1)[:, pixels], values[:, through].expand(6, -1),
                               atol=1e-3, rtol=0)
    if task == "forward":
        torch.testing.assert_close(draws[:, 1], solve_forward("navier-stokes-pair", draws[:, 0]), atol=1e-9, rtol=0)
    else:
        back = solve_backward(draws[:, 1])
        if task == "inverse":
            torch.testing.assert_close(draws[:, 0], back, atol=1e-9, rtol=0)
        else:
            torch.testing.assert_close(splice(draws[:, 0], back, JOINT_MODES), back, atol=1e-9, rtol=0)
    assert float(draws.std(0).mean()) > 0  # draws, not copies


def test_ddo_task_guides_an_unconditional_model_of_a_pair(small_pairs, tmp_path, capsys):
    """An unconditional model of a pair reconstructs a task by guidance alone: the observed channels' masks,
    the routes, the inversion and the reference scored beside it, as for a sparse-route model."""
    from ddo.cli import main

    run = tmp_path / "uncond"
    assert main(["train", "--dataset", "darcy-pair", "--channels", "2", "--resolution", "32", "--parameterization", "x0",
                 "--loss", "x0-mse", "--ch", "8", "--ch-mult", "1,2", "--num-res-blocks", "1", "--modes", "4",
                 "--batch-size", "4", "--iterations", "2", "--num-sample", "0", "--no-progress", "--out", str(run)]) == 0
    ckpt = str(run / "checkpoint.pt")
    out = tmp_path / "joint"
    assert main(["task", "--checkpoint", ckpt, "--task", "joint", "--points-per-channel", "100", "--limit", "2",
                 "--num-samples", "2", "--steps", "3", "--guidance", "projection", "--reference-draws", "4",
                 "--out", str(out), "--no-progress"]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["plan"]["guidance"] == "projection" and m["best_estimate"]["method"] == "inversion"
    assert set(m["methods"]) == {"ddo", "interpolation", "kriging", "biharmonic", "inversion"}
    assert set(m["distributions"]) == {"ddo", "reference"} and set(m["distributions"]["ddo"]["channel_crps"]) == {"a", "u"}
    for method in m["methods"].values():
        assert len(method["per_image"]) == 2 and math.isfinite(method["error_percent"])
    capsys.readouterr()
    bad = [((), "is an unconditional model: reconstruct with --guidance dps"),
           (("--guidance", "dps"), "is unconditional: it was trained with no points; give --points-per-channel N")]
    for flags, message in bad:
        assert main(["task", "--checkpoint", ckpt, "--task", "forward", "--out", str(tmp_path / "bad"),
                     "--no-progress", *flags]) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "bad").exists()


def test_a_route_model_can_refine_the_best_estimate_read_from_the_cache_ddo_task_shares(small_pairs):
    """--route-base best: Darcy's inverse and joint images refine the inversion, computed once per pair
    and kept on disk under the key ddo task reads; forward images off the pairs' grid keep their route."""
    from ddo_conditional.pde.cache import EstimateCache, default_folder
    from ddo_conditional.pde.datasets import to_units
    from ddo_conditional.pde.inversion import INVERSION_EVALUATIONS
    from ddo_conditional.pde.cache import RouteCache
    from ddo_conditional.pde.routes import physical_values

    pairs = small_pairs.load_pairs("darcy-pair", "test", 32)
    g = np.random.default_rng(0)
    pixels = torch.from_numpy(np.stack([g.choice(32 * 32, 60, replace=False) for _ in range(2)]))
    images = torch.from_numpy(pairs.images[:2]).float()
    values = torch.gather(images.flatten(2), 2, pixels[:, None].expand(-1, 2, -1)).transpose(1, 2)
    batch = {"image": images, "index": torch.tensor([0, 1]), "context_indices": pixels, "context_values": values,
             "context_channels": torch.tensor([[0.0, 1.0], [1.0, 0.0]])}  # an inverse and a forward image
    best = RouteCache("darcy-pair", "best").dense(batch)
    classical = RouteCache("darcy-pair").dense(batch)
    routes = RouteCache("darcy-pair").routes_at(32)
    inverted = routes.inversion(pixels[0], physical_values("darcy-pair", values[0].double()), (False, True))
    torch.testing.assert_close(best[0], to_units("darcy-pair", inverted.float()))
    assert not torch.equal(best[0], classical[0]) and torch.equal(best[1], classical[1])
    files = list((default_folder() / "inversion").glob("*.pt"))
    assert len(files) == 1
    key = EstimateCache.key(routes.fingerprint, "inversion", (32, 32), pixels[0],
                            physical_values("darcy-pair", values[0].double()), (False, True), evaluations=INVERSION_EVALUATIONS)
    assert files[0].stem == key  # the entry ddo task's inversion reads
    again = RouteCache("darcy-pair", "best").dense(batch)  # a new run: read back, not fitted again
    assert torch.equal(again, best) and len(list((default_folder() / "inversion").glob("*.pt"))) == 1
