"""The Gaussian prior beside every model: fitted from training fields, conditioned in closed form (the
``kriging`` baseline, its posterior mean and pointwise std), stored beside the checkpoint, and scored as a
distribution (CRPS, interval coverage) next to the model's samples."""
import json
import math

import pytest
import torch

from ddo.builtins import fno_unet
from ddo.cli import main
from ddo_conditional.classical.gaussian_prior import fit_prior, krige_images
from ddo_conditional.classical.kriging import (EmpiricalGaussian, TorusGaussian, conditional_samples, krige,
                                               krige_with_std)
from ddo_conditional.inference.metrics import crps_ensemble, crps_gaussian, distribution_metrics, interval_coverage
from ddo_conditional.io.prior_file import load_prior, prior_path, save_prior


def _torus_samples(n: int, h: int, w: int, length: float, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` fields with the stationary covariance ``exp(-d^2 / 2 l^2)`` (periodic distance, one channel),
    drawn by spectral synthesis, and that covariance table ``(1, 1, h, w)``."""
    dy = torch.minimum(torch.arange(h), h - torch.arange(h)).double()[:, None] / h
    dx = torch.minimum(torch.arange(w), w - torch.arange(w)).double()[None, :] / w
    cov = torch.exp(-(dy ** 2 + dx ** 2) / (2 * length ** 2))
    root = torch.fft.fft2(cov).real.clamp_min(0).sqrt()
    g = torch.Generator().manual_seed(seed)
    noise = torch.randn(n, h, w, generator=g, dtype=torch.float64)
    fields = torch.fft.ifft2(torch.fft.fft2(noise) * root).real
    return fields[:, None] + 0.3, cov[None, None]


def test_the_torus_prior_recovers_a_known_stationary_covariance_from_its_samples():
    fields, cov = _torus_samples(4000, 12, 10, 0.15)
    prior = fit_prior(fields, periodic=True)
    assert isinstance(prior, TorusGaussian)
    torch.testing.assert_close(prior.cov, cov, atol=0.03, rtol=0)        # 4,000 fields: sampling error ~1e-2
    torch.testing.assert_close(prior.mean, torch.full_like(prior.mean, 0.3), atol=0.07, rtol=0)  # 4 std of a mean
    assert isinstance(fit_prior(fields, periodic=False), EmpiricalGaussian)


@pytest.mark.parametrize("periodic", [True, False])
def test_kriging_and_its_std_equal_the_dense_gaussian_conditional(periodic):
    g = torch.Generator().manual_seed(1)
    fields = torch.randn(60, 2, 6, 5, generator=g, dtype=torch.float64).cumsum(-1)
    prior = fit_prior(fields, periodic)
    channels = torch.tensor([0, 1, 1, 0, 1, 0])
    pixels = torch.tensor([3, 7, 7, 20, 29, 11])  # channel 1 at pixel 7 twice: used once
    values = torch.randn(6, generator=g, dtype=torch.float64)
    jitter = 1e-9
    mean, std = krige_with_std(prior, channels, pixels, values, jitter=jitter)
    dense, mu = prior.dense(), prior.mean_field().flatten()
    keys = channels * 30 + pixels
    uniq = torch.unique(keys)
    first = torch.tensor([keys.tolist().index(k) for k in uniq.tolist()])
    s_yy = dense[uniq][:, uniq]
    s_yy = s_yy + torch.diag(jitter * s_yy.diagonal())
    s_zy = dense[:, uniq]
    want_mean = mu + s_zy @ torch.linalg.solve(s_yy, values[first] - mu[uniq])
    want_var = dense.diagonal() - (s_zy * torch.linalg.solve(s_yy, s_zy.T).T).sum(1)
    torch.testing.assert_close(mean.flatten(), want_mean, atol=1e-8, rtol=0)
    torch.testing.assert_close(std.flatten() ** 2, want_var.clamp_min(0), atol=1e-8, rtol=0)
    torch.testing.assert_close(mean, krige(prior, channels, pixels, values, jitter=jitter), atol=1e-12, rtol=0)
    assert float(std.flatten()[uniq].max()) < 1e-3 < float(std.min() + std.max())  # ~0 where observed
    many = torch.stack([values, 2 * values], 1)  # two right-hand sides: two means, one std
    means, std2 = krige_with_std(prior, channels, pixels, many, jitter=jitter)
    assert means.shape == (2, 2, 6, 5)
    torch.testing.assert_close(means[0], mean, atol=1e-12, rtol=0)
    torch.testing.assert_close(std2, std, atol=0, rtol=0)


def test_the_gaussian_crps_formula_equals_the_ensemble_estimator_on_many_samples():
    g = torch.Generator().manual_seed(2)
    mean = torch.rand(2, 3, 6, 6, generator=g, dtype=torch.float64)
    std = 0.05 + 0.2 * torch.rand(2, 3, 6, 6, generator=g, dtype=torch.float64)
    truth = mean + 1.5 * std * torch.randn(2, 3, 6, 6, generator=g, dtype=torch.float64)
    mask = (torch.rand(2, 1, 6, 6, generator=g) < 0.5).double()
    draws = mean + std * torch.randn(20000, 2, 3, 6, 6, generator=g, dtype=torch.float64)
    closed, ensemble = crps_gaussian(mean, std, truth, mask), crps_ensemble(draws, truth, mask)
    torch.testing.assert_close(ensemble, closed, rtol=0.01, atol=0)
    # with two samples the fair estimator is (|X1 - y| + |X2 - y| - |X1 - X2|) / 2
    pair = draws[:2]
    by_hand = ((pair[0] - truth).abs() + (pair[1] - truth).abs() - (pair[0] - pair[1]).abs()) / 2
    torch.testing.assert_close(crps_ensemble(pair, truth), by_hand.flatten(1).mean(1), atol=1e-12, rtol=0)
    # a zero std is the absolute error, and the 1-std interval of an exact Gaussian holds about 68%
    torch.testing.assert_close(crps_gaussian(mean, torch.zeros_like(std), truth), (truth - mean).abs().flatten(1).mean(1))
    inside = interval_coverage(mean, std, mean + std * torch.randn(2, 3, 6, 6, generator=g, dtype=torch.float64), 1.0)
    assert inside.shape == (2,)
    big = mean + std * torch.randn(200, 2, 3, 6, 6, generator=g, dtype=torch.float64)
    share = interval_coverage(mean.expand_as(big).reshape(-1, 3, 6, 6), std.expand_as(big).reshape(-1, 3, 6, 6),
                              big.reshape(-1, 3, 6, 6), 1.0, min_std=0.0).mean()
    assert abs(float(share) - math.erf(1 / math.sqrt(2))) < 0.02
    with pytest.raises(ValueError, match="at least 2 samples"):
        crps_ensemble(draws[:1], truth)
    assert set(distribution_metrics(truth, mask, mean=mean, std=std)) == {"crps_query", "coverage_1std", "coverage_2std"}


def test_the_kriging_baseline_is_exact_where_observed_and_in_image_units():
    fields, _ = _torus_samples(300, 8, 8, 0.2, seed=3)
    prior = fit_prior(fields.clamp(-1, 1), periodic=True)
    images01 = ((fields[:2].clamp(-1, 1) + 1) / 2).float()
    idx = torch.tensor([[1, 9, 20, 33, 47, 60, 20], [0, 5, 17, 28, 44, 63, 63]])  # padding repeats a pixel
    mean, std = krige_images(prior, images01, idx, jitter=1e-10)
    assert mean.shape == std.shape == (2, 1, 8, 8) and mean.dtype == torch.float32
    for b in range(2):
        observed = torch.unique(idx[b])
        torch.testing.assert_close(mean[b, 0].flatten()[observed], images01[b, 0].flatten()[observed], atol=1e-4, rtol=0)
        assert float(std[b, 0].flatten()[observed].max()) < 1e-3 < float(std[b].max())


def test_a_stored_prior_reloads_bit_for_bit_and_belongs_to_its_checkpoint(tmp_path, capsys):
    checkpoint = tmp_path / "checkpoint.pt"
    checkpoint.write_bytes(b"weights")
    g = torch.Generator().manual_seed(4)
    for periodic in (True, False):
        prior = fit_prior(torch.randn(20, 3, 8, 8, generator=g, dtype=torch.float64), periodic)
        save_prior(checkpoint, 8, prior, {"dataset": "x", "fitted_on": "x/train", "images": 20})
        loaded, record = load_prior(checkpoint, 8, "x", "x/train")
        assert type(loaded) is type(prior) and record["fitted_on"] == "x/train" and record["resolution"] == 8
        for a, b in ((loaded.mean_field(), prior.mean_field()), (loaded.dense(), prior.dense())):
            assert torch.equal(a, b)
    assert load_prior(checkpoint, 16, "x", "x/train") is None  # none stored at that resolution
    assert load_prior(checkpoint, 8, "y", "y/train") is None  # nor for that dataset
    with pytest.raises(Exception, match="was fitted on x/train, not x/train of /elsewhere"):
        load_prior(checkpoint, 8, "x", "x/train of /elsewhere")
    checkpoint.write_bytes(b"other weights")
    with pytest.raises(Exception, match="was fitted for other weights than"):
        load_prior(checkpoint, 8, "x", "x/train")
    prior_path(checkpoint, 8, "x").write_bytes(b"not a prior")
    with pytest.raises(Exception, match="is not a readable Gaussian prior"):
        load_prior(checkpoint, 8, "x", "x/train")


def test_reconstruct_scores_kriging_and_the_samples_as_distributions(tiny_runs, tmp_path, capsys):
    ckpt = tmp_path / "checkpoint.pt"
    ckpt.write_bytes(tiny_runs["cond"].read_bytes())
    out = tmp_path / "rec"
    args = ["reconstruct", "--checkpoint", str(ckpt), "--images", str(tiny_runs["images"]), "--limit", "3",
            "--num-samples", "2", "--steps", "2", "--baselines", "biharmonic,kriging", "--no-progress"]
    assert main([*args, "--out", str(out)]) == 0
    m = json.loads((out / "metrics.json").read_text())["methods"]
    for name in ("kriging", "ddo-mean", "ddo-samples-mean"):
        assert 0 < m[name]["crps_query"] < 1 and 0 <= m[name]["coverage_1std"] <= m[name]["coverage_2std"] <= 1, name
    assert "crps_query" not in m["biharmonic"]
    assert "| kriging |" in capsys.readouterr().out
    stored = prior_path(ckpt, 16, "image-folder")  # the tiny runs train at 16x16: the prior is fitted there and kept
    first = stored.read_bytes()
    assert main([*args, "--out", str(tmp_path / "again")]) == 0  # reused, not refitted
    assert stored.read_bytes() == first
    assert json.loads((tmp_path / "again" / "metrics.json").read_text())["methods"]["kriging"] == m["kriging"]
    state = torch.load(ckpt, weights_only=True)  # other weights: the stored prior no longer belongs to them
    name = next(iter(state["model"]))
    state["model"][name] = state["model"][name] + 1
    torch.save(state, ckpt)
    capsys.readouterr()
    assert main([*args, "--out", str(tmp_path / "bad")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "was fitted for other weights than" in err[0] and not (tmp_path / "bad").exists()
    stored.unlink()  # one sample: no spread, so only kriging is scored as a distribution
    one = [a for a in args if a not in ("biharmonic,kriging",)]
    one[one.index("--num-samples") + 1] = "1"
    assert main([*one[:one.index("--baselines") + 1], "kriging", *one[one.index("--baselines") + 1:],
                 "--out", str(tmp_path / "one")]) == 0
    m = json.loads((tmp_path / "one" / "metrics.json").read_text())["methods"]
    assert "crps_query" in m["kriging"] and "crps_query" not in m["ddo-mean"]


def test_sparse_kriging_starts_at_the_posterior_mean_and_keeps_its_prior_in_the_checkpoint(tmp_path, image_folder):
    from ddo.plugins import load_host
    from ddo.train import load_model
    from ddo_conditional.data.datasets import training_fields
    from ddo_conditional.wrappers import KrigingConditioning

    run = tmp_path / "run"
    assert main(["train", "--out", str(run), "--dataset", "image-folder", "--data-root", str(image_folder),
                 "--resolution", "16", "--ch", "8", "--ch-mult", "1,2", "--num-res-blocks", "1", "--modes", "4",
                 "--batch-size", "4", "--iterations", "2", "--num-sample", "0", "--no-progress",
                 "--conditioning", "sparse-kriging"]) == 0
    config = json.loads((run / "config.json").read_text())
    assert (config["parameterization"], config["loss"], config["loss_weighting"]) == ("x0", "x0-mse", "relative")
    host = load_host()
    gen_sde, wrapper, _ = load_model(run / "checkpoint.pt", host)
    assert isinstance(wrapper, KrigingConditioning) and not wrapper.prior.empty
    train = host.datasets.get("image-folder")(split="train", data_root=str(image_folder), resolution=16)
    refit = fit_prior(training_fields(train, 4096), periodic=False)  # what training fitted, from the same images
    assert torch.equal(wrapper.prior.at(16, 16).dense(), refit.dense())
    state = torch.load(run / "checkpoint.pt", weights_only=True)
    assert torch.equal(state["ema"]["prior.second"], state["model"]["prior.second"])  # the EMA copy holds it too

    # a fresh network of this key (zero residual) is the kriging posterior mean itself
    fresh = KrigingConditioning(config)
    model = fresh.build_model(lambda **kw: fno_unet(in_channels=3, ch=8, ch_mult=(1, 2), num_res_blocks=1,
                                                    modes=4)).eval()
    masked = fresh.wrap_dataset(train, "train")
    batch = torch.utils.data.default_collate([masked[i] for i in range(3)])
    kwargs = fresh.model_kwargs(batch, "cpu")
    assert kwargs["context_extra"].shape == kwargs["context_dense"].shape == (3, 3, 16, 16)
    for b, (pixels, values) in enumerate(zip(batch["context_indices"], batch["context_values"])):
        pixels = torch.unique(pixels)
        want = krige(refit, torch.arange(3).repeat_interleave(len(pixels)), pixels.repeat(3),
                     batch["image"][b].double().flatten(1)[:, pixels].flatten(), jitter=1e-6)
        torch.testing.assert_close(kwargs["context_dense"][b].double(), want, atol=1e-5, rtol=0)
    x = torch.randn(3, 3, 16, 16)
    inputs = {k: kwargs[k] for k in ("context_image", "observation_mask", "context_dense", "context_extra")}
    with torch.no_grad():
        out = model(x, torch.ones(3), None, **inputs)
    torch.testing.assert_close(out, kwargs["context_dense"], atol=0, rtol=0)
    relative = kwargs["context_extra"]  # the posterior std over the prior's: within [0, 1]
    assert float(relative.min()) >= 0 and float(relative.max()) <= 1 + 1e-6


@pytest.mark.parametrize("periodic", [True, False])
def test_conditional_simulation_draws_the_posterior_kriging_gives_in_closed_form(periodic):
    g = torch.Generator().manual_seed(5)
    fields = torch.randn(80, 2, 6, 5, generator=g, dtype=torch.float64).cumsum(-1)
    prior = fit_prior(fields, periodic)
    unconditional = prior.sample(6000, g)
    assert unconditional.shape == (6000, 2, 6, 5)
    flat = unconditional.flatten(1)
    centred = flat - flat.mean(0)
    torch.testing.assert_close(centred.T @ centred / 5999, prior.dense(), atol=0.1 * float(prior.dense().abs().max()),
                               rtol=0)
    channels, pixels = torch.tensor([0, 1, 0, 1]), torch.tensor([3, 7, 20, 29])
    values = torch.tensor([0.5, -1.0, 2.0, 0.3], dtype=torch.float64)
    draws = conditional_samples(prior, channels, pixels, values, 6000, g, jitter=1e-9)
    mean, std = krige_with_std(prior, channels, pixels, values, jitter=1e-9)
    scale = float(std.max())
    torch.testing.assert_close(draws.mean(0), mean, atol=0.06 * scale, rtol=0)
    torch.testing.assert_close(draws.std(0), std, atol=0.06 * scale, rtol=0)
    observed = draws.flatten(2)[:, channels, pixels]
    torch.testing.assert_close(observed, values.expand_as(observed), atol=1e-4, rtol=0)  # they pass through the data
    # the CRPS of the posterior from its conditional simulations is its closed form, pixel by pixel
    truth = prior.sample(1, g)[0]
    truth.view(2, -1)[channels, pixels] = values  # a field the observations came from
    per_pixel = lambda f: torch.stack([f(i) for i in range(truth.numel())]).view_as(truth)
    one = lambda t, i: t.flatten(-3)[..., i].reshape(*t.shape[:-3], 1, 1, 1)
    ensemble = per_pixel(lambda i: crps_ensemble(one(draws, i)[:, None], one(truth, i)[None])[0])
    closed = per_pixel(lambda i: crps_gaussian(one(mean, i)[None], one(std, i)[None], one(truth, i)[None])[0])
    free = std > 1e-3 * scale  # the observed pixels: both ~0, a relative tolerance meaningless there
    assert int((~free).sum()) == 4
    torch.testing.assert_close(ensemble[free], closed[free], rtol=0.1, atol=0)  # 6,000 draws: ~1.5% per pixel
    assert float(((ensemble[free] - closed[free]) / closed[free]).abs().mean()) < 0.03
    assert float(ensemble[~free].abs().max()) < 1e-3 * scale and float(closed[~free].abs().max()) < 1e-3 * scale


def test_torus_draws_keep_the_direction_of_a_cross_channel_covariance():
    """Channel 1 is channel 0 moved one pixel along x: the draws must move the same way,
    ``Cov(y_0(p), y_1(p + d)) = cov[0, 1, d]`` with the peak at ``d = (0, +1)``, not ``(0, -1)``."""
    base, _ = _torus_samples(3000, 8, 8, 0.12, seed=6)
    fields = torch.cat([base, torch.roll(base, shifts=1, dims=-1)], 1)  # x1(p) = x0(p - e_x)
    prior = fit_prior(fields, periodic=True)
    assert int(prior.cov[0, 1].flatten().argmax()) == 1  # (dy, dx) = (0, +1)
    draws = prior.sample(3000, torch.Generator().manual_seed(7)) - prior.mean
    cross = torch.stack([torch.stack([(draws[:, 0] * torch.roll(draws[:, 1], shifts=(-dy, -dx), dims=(-2, -1))).mean()
                                      for dx in range(8)]) for dy in range(8)])
    torch.testing.assert_close(cross, prior.cov[0, 1], atol=0.06, rtol=0)
    assert int(cross.flatten().argmax()) == 1
