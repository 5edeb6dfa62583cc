import logging

import numpy as np
import pytest
import torch

from ddo.builtins import fno_unet
from ddo.diffusion import BlurringDiffusion, DenoisingDiffusion
from ddo.models import coordinate_grid
from ddo.sampling import ddim_step, denoise_step
from ddo_conditional import (ConditionalDDOModel, ConditionalDDOModelSimple, ConditionalLiftModel,
                             FixedSparseMaskDataset, Reconstructor, SamplingPlan, create_context_image_batched, create_query_mask_batched,
                             fixed_mask, reconstruct)
from ddo_conditional.wrappers import EncoderConditioning
from ddo_conditional.data.datasets import context_tensors
from ddo_conditional.losses import query_dsm_loss
from ddo_conditional.data.masks import PATTERNS, MaskError


class Images(torch.utils.data.Dataset):
    def __init__(self, n=6, res=32, offset=0):
        g = torch.Generator().manual_seed(1)
        self.x = torch.rand(n, 3, res, res, generator=g) * 2 - 1
        self.offset = offset

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return {"image": self.x[i], "index": self.offset + i}


def test_spec_counts_disjoint_and_fixed():
    ctx, qry = fixed_mask(42, 7, 32, 32)
    assert len(ctx) == 102 and len(qry) == 102
    assert not set(ctx) & set(qry)
    ctx2, qry2 = fixed_mask(42, 7, 32, 32)
    np.testing.assert_array_equal(ctx, ctx2)
    np.testing.assert_array_equal(qry, qry2)


def test_all_cifar_indices_get_distinct_masks():
    seen = {fixed_mask(42, i, 32, 32)[0].tobytes() for i in range(0, 60_000, 97)}
    assert len(seen) == len(range(0, 60_000, 97))


@pytest.mark.parametrize("pattern", PATTERNS)
def test_patterns_share_the_api(pattern):
    ctx, qry = fixed_mask(0, 3, 32, 32, 0.1, 0.1, pattern)
    assert len(ctx) == 102 and len(qry) == 102 and not set(ctx) & set(qry)
    assert ctx.min() >= 0 and max(ctx.max(), qry.max()) < 1024


def test_structured_patterns_have_structure():
    ctx, _ = fixed_mask(0, 0, 32, 32, 0.1, 0.1, "grid")
    ys, xs = np.unravel_index(ctx, (32, 32))
    assert len(np.unique(ys % 3)) == 1 and len(np.unique(xs % 3)) == 1
    _, qry = fixed_mask(0, 0, 32, 32, 0.1, 0.1, "block")
    ys, xs = np.unravel_index(qry, (32, 32))
    assert ys.max() - ys.min() <= 11 and xs.max() - xs.min() <= 11
    ctx, qry = fixed_mask(0, 0, 32, 32, 0.1, 0.1, "lines")
    cy, cx = np.unravel_index(ctx, (32, 32))
    ys, xs = np.unravel_index(qry, (32, 32))
    empty_rows, empty_cols = set(range(32)) - set(cy.tolist()), set(range(32)) - set(cx.tolist())
    assert all(y in empty_rows or x in empty_cols for y, x in zip(ys, xs))
    assert 0 < len(empty_rows) + len(empty_cols) <= 8


@pytest.mark.parametrize("c,q", [(0.0, 0.1), (-0.1, 0.1), (0.5, 0.6), (0.1, -0.01), (float("nan"), 0.1)])
def test_bad_ratios_are_refused(c, q):
    with pytest.raises(MaskError, match="ratios must"):
        fixed_mask(0, 0, 32, 32, c, q)


def test_negative_seed_and_unknown_pattern_refused():
    with pytest.raises(MaskError, match="non-negative"):
        fixed_mask(-1, 0, 32, 32)
    with pytest.raises(MaskError, match="known: random, grid, block, lines"):
        fixed_mask(0, 0, 32, 32, pattern="spiral")


def test_dataset_items_are_identical_every_time_and_consistent():
    ds = FixedSparseMaskDataset(Images(), seed=42)
    a, b = ds[4], ds[4]
    for k in ("context_indices", "context_values", "query_indices", "query_values"):
        assert torch.equal(a[k], b[k])
    assert a["context_indices"].shape == (102,) and a["context_values"].shape == (102, 3)
    flat = a["image"].reshape(3, -1)
    torch.testing.assert_close(a["query_values"], flat[:, a["query_indices"]].T)
    # the mask depends on the global index, not the position in the dataset
    shifted = FixedSparseMaskDataset(Images(offset=50_000), seed=42)
    assert torch.equal(shifted[0]["context_indices"], torch.from_numpy(fixed_mask(42, 50_000, 32, 32)[0]))


def test_batched_scatter_matches_a_loop_and_counts_39168():
    b, k, c = 128, 102, 3
    g = torch.Generator().manual_seed(0)
    idx = torch.stack([torch.randperm(1024, generator=g)[:k] for _ in range(b)])
    vals = torch.rand(b, k, c, generator=g) + 0.1
    img = create_context_image_batched(vals, idx, 32, 32, c)
    ref = torch.zeros(b, c, 32 * 32)
    for i in range(b):
        for j in range(k):
            ref[i, :, idx[i, j]] = vals[i, j]
    torch.testing.assert_close(img, ref.reshape(b, c, 32, 32))
    assert int((img != 0).sum()) == 39168
    q = create_query_mask_batched(idx, 32, 32)
    assert q.shape == (b, 1, 32, 32) and int(q.sum()) == b * k


def _base():
    return fno_unet(in_channels=3, ch=8, ch_mult=(1, 2), num_res_blocks=1, modes=4, norm="group")


@pytest.mark.parametrize("make", [lambda b: ConditionalDDOModel(b, 3, 32), lambda b: ConditionalDDOModelSimple(b, 3),
                                  lambda b: ConditionalLiftModel(b, 3)])
def test_wrappers_without_context_are_the_base_and_context_flows(make):
    torch.manual_seed(0)
    base = _base()
    model = make(base)
    for p in model.parameters():  # make the zero-initialised lift path non-trivial
        if p.dim() > 1 and p.abs().sum() == 0:
            torch.nn.init.normal_(p, std=0.1)
    x, t = torch.randn(2, 3, 16, 16), torch.rand(2)
    assert torch.equal(model(x, t, None), base(x, t, None))
    ctx = torch.zeros(2, 3, 16, 16)
    mask = torch.zeros(2, 1, 16, 16)
    mask[:, :, ::4, ::4] = 1
    ctx2 = ctx + mask * 0.7
    kw = {"observation_mask": mask} if isinstance(model, ConditionalLiftModel) else {}
    y1, y2 = model(x, t, None, context_image=ctx, **kw), model(x, t, None, context_image=ctx2, **kw)
    assert (y1 - y2).abs().max() > 1e-4


def test_query_dsm_is_the_masked_mean_of_dsm_terms():
    base = _base()
    gen = DenoisingDiffusion(BlurringDiffusion(), base)
    ds = FixedSparseMaskDataset(Images(4, 16), seed=1)
    batch = torch.utils.data.default_collate([ds[i] for i in range(4)])
    v = coordinate_grid(4, 16, 16)
    torch.manual_seed(5)
    loss = query_dsm_loss()(gen, batch, v, {})["loss"]
    torch.manual_seed(5)
    terms = gen.dsm(batch["image"], v, reduction="none")
    q = create_query_mask_batched(batch["query_indices"], 16, 16)
    expected = (terms * q).sum((1, 2, 3)) / (q.sum((1, 2, 3)) * 3)
    torch.testing.assert_close(loss, expected)
    assert loss.shape == (4,)


def test_wrapper_logs_observed_entry_count(caplog):
    w = EncoderConditioning({"resolution": 32, "channels": 3})
    ds = w.wrap_dataset(Images(4, 32), "train")
    batch = torch.utils.data.default_collate([ds[i] for i in range(4)])
    with caplog.at_level(logging.DEBUG, logger="ddo_conditional"):
        kw = w.model_kwargs(batch, "cpu")
    assert set(kw) == {"context_image"}
    assert "1224 observed entries in the batch (4 images x 102 pixels x 3 channels)" in caplog.text


def test_reconstruct_shapes_and_spread():
    torch.manual_seed(0)
    gen = DenoisingDiffusion(BlurringDiffusion(), ConditionalLiftModel(_base(), 3))
    ds = FixedSparseMaskDataset(Images(2, 16), seed=1)
    batch = torch.utils.data.default_collate([ds[i] for i in range(2)])
    ctx = context_tensors(batch)
    plan = SamplingPlan(samples=3, steps=3, sampler=denoise_step, data_consistency=True)
    out = reconstruct(gen, ctx, (2, 3, 16, 16), plan, observation=(ctx["context_image"], ctx["observation_mask"]))
    assert out["samples"].shape == (3, 2, 3, 16, 16)
    assert (out["std"] > 0).float().mean() > 0.9  # distinct draws per sample
    assert not torch.equal(out["samples"][0, 0], out["samples"][0, 1])  # two images, two reconstructions


@pytest.mark.parametrize("step", [ddim_step, denoise_step])
def test_samples_depend_on_seed_image_and_sample_number_only(step):
    """Per-sample streams: the rows per network call, the batch an image is drawn in and its place
    in that batch change nothing (up to the rounding of batch-size dependent GEMMs), for the
    deterministic and the ancestral sampler; another seed changes every sample."""
    from ddo.diffusion import LinearDiffusion

    torch.manual_seed(0)
    # no blur: an untrained eps network under blurring amplifies rounding (batch-size dependent GEMMs)
    gen = DenoisingDiffusion(LinearDiffusion(), ConditionalLiftModel(_base(), 3))
    ds = FixedSparseMaskDataset(Images(3, 16), seed=1)
    items = [ds[i] for i in range(3)]
    ctx = context_tensors(torch.utils.data.default_collate(items))

    def run(rows, order=(0, 1, 2), seed=0):
        c = {k: v[list(order)] for k, v in ctx.items()}
        plan = SamplingPlan(samples=3, steps=3, sampler=step, rows=rows, seed=seed)
        return Reconstructor(gen, plan).samples(c, (len(order), 3, 16, 16), [items[i]["index"] for i in order]).samples

    base = run(3)
    for other in (run(6), run(9), run(1)):
        torch.testing.assert_close(other, base, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(run(3, order=(2, 0, 1)), base[:, [2, 0, 1]], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(run(1, order=(1,)), base[:, [1]], rtol=1e-4, atol=1e-4)
    assert not torch.equal(base[0], base[1])
    assert (run(3, seed=1) - base).abs().amax(dim=(2, 3, 4)).min() > 1e-3


@pytest.mark.parametrize("kind", ["encoder", "interp-x0-scaled"])
def test_cached_context_terms_give_the_same_samples(kind):
    from ddo.diffusion import LinearDiffusion
    from ddo_conditional.nn.refiners import SparseInterpModel

    torch.manual_seed(0)
    if kind == "encoder":
        net, param = ConditionalDDOModel(_base(), 3, 8), "eps"
    else:
        net, param = SparseInterpModel(_base(), residual_scale="context", refiner_width=4, residual=True), "x0"
    for p in net.parameters():  # make the zero-initialised output layers non-trivial
        if p.dim() > 1 and p.abs().sum() == 0:
            torch.nn.init.normal_(p, std=0.1)
    gen = DenoisingDiffusion(LinearDiffusion(), net, parameterization=param)
    ds = FixedSparseMaskDataset(Images(2, 16), seed=1)
    ctx = context_tensors(torch.utils.data.default_collate([ds[i] for i in range(2)]))
    if kind == "encoder":
        ctx = {"context_image": ctx["context_image"]}
    cached = net.cache_context(**ctx)
    assert set(cached) - set(ctx) == ({"context_features"} if kind == "encoder"
                                      else {"context_dense", "context_lifted", "context_scale"})
    encoder = net.context_encoder if kind == "encoder" else net.context_lift
    calls = []
    encoder.register_forward_hook(lambda *_: calls.append(1))
    outs, counts = [], []
    for cache in (True, False):
        calls.clear()
        plan = SamplingPlan(samples=2, steps=3, sampler=ddim_step, rows=2)
        outs.append(Reconstructor(gen, plan, cache=cache).samples(ctx, (2, 3, 16, 16), range(2))._asdict())
        counts.append(len(calls))
    assert counts == [2, 6]  # once per group of samples instead of once per step (2 groups x 3 steps)
    torch.testing.assert_close(outs[0]["samples"], outs[1]["samples"], rtol=0, atol=0)
    assert outs[0]["samples"].abs().max() > 0


class _Fixed(torch.nn.Module):
    """Returns a fixed tensor whatever the input (stands for a network's prediction)."""

    def __init__(self, out):
        super().__init__()
        self.out = out

    def forward(self, x, temp, v=None, **kwargs):
        return self.out


class _EpsOracle(torch.nn.Module):
    """The exact noise of ``z`` for the one-image distribution at ``x0``: ``(z - IDCT(a DCT(x0))) / s``."""

    def __init__(self, fd, x0):
        super().__init__()
        self.fd, self.x0 = fd, x0
        self.p = torch.nn.Parameter(torch.zeros(()))

    def forward(self, z, temp, v=None, **kwargs):
        log_a, log_s = self.fd.log_alpha_sigma(temp, z.shape[-2:])
        return (z - self.fd.from_modes(log_a.exp() * self.fd.to_modes(self.x0))) / log_s.exp()


@pytest.mark.parametrize("t", [0.05, 0.5, 0.97])
def test_parameterisations_match_their_definitions_per_mode(t):
    from ddo.dct import dct2, idct2

    fd = BlurringDiffusion()
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand(2, 3, 16, 16, generator=g, dtype=torch.float64) * 2 - 1
    eps = torch.randn(2, 3, 16, 16, generator=g, dtype=torch.float64)
    tt = torch.full((2,), t, dtype=torch.float64)
    log_a, log_s = fd.log_alpha_sigma(tt, (16, 16))
    a, s = log_a.exp(), log_s.exp()
    z = idct2(a * dct2(x0)) + s * eps
    v = idct2(a * dct2(eps) - s * dct2(x0))  # v = a eps - s x per mode
    # a network that is right, whatever it predicts, gives back the true noise and the true image
    for param, out in (("x0", x0), ("v", v), ("eps", eps)):
        den = DenoisingDiffusion(fd, _Fixed(out), parameterization=param)
        torch.testing.assert_close(den.epsilon(z, tt), eps)
        torch.testing.assert_close(den.x0(z, tt), x0)
    # eps is the network's output, untouched
    assert DenoisingDiffusion(fd, _Fixed(eps)).epsilon(z, tt) is eps
    with pytest.raises(ValueError, match="unknown parameterization 'score'"):
        DenoisingDiffusion(fd, _Fixed(eps), parameterization="score")


@pytest.mark.parametrize("pattern", PATTERNS)
def test_batched_biharmonic_equals_scikit_image_on_every_mask_pattern(pattern):
    from ddo_conditional.classical.biharmonic import biharmonic_inpaint
    from ddo_conditional.wrappers import BiharmonicInterpConditioning

    ds = FixedSparseMaskDataset(Images(3, 32), seed=3, pattern=pattern)
    batch = torch.utils.data.default_collate([ds[i] for i in range(3)])
    got = biharmonic_inpaint(batch["context_values"], batch["context_indices"], 32, 32)
    for i in range(3):
        img = batch["image"][i].permute(1, 2, 0).double().numpy()
        known = np.zeros_like(img).reshape(-1, 3)
        idx = batch["context_indices"][i].numpy()
        known[idx] = img.reshape(-1, 3)[idx]
        missing = np.ones(32 * 32, bool)
        missing[idx] = False
        from skimage.restoration import inpaint_biharmonic

        ref = inpaint_biharmonic(known.reshape(32, 32, 3), missing.reshape(32, 32), channel_axis=-1)
        np.testing.assert_allclose(got[i].permute(1, 2, 0).double().numpy(), ref, atol=1e-3)
    # the wrapper computes it for the batch it is given
    kw = BiharmonicInterpConditioning({"resolution": 32}).model_kwargs(batch, "cpu")
    torch.testing.assert_close(kw["context_dense"], got)


@pytest.mark.parametrize("res", [16, 64])
def test_ddim_x0_sampler_recovers_the_image_without_amplification(res):
    from ddo.sampling import sample

    fd = BlurringDiffusion()
    x0 = torch.rand(1, 3, res, res, generator=torch.Generator().manual_seed(0)) * 2 - 1
    gen = DenoisingDiffusion(fd, _Fixed(x0), parameterization="x0")
    gen.network.register_parameter("p", torch.nn.Parameter(torch.zeros(())))
    out = sample(gen, (2, 3, res, res), num_steps=20, sampler=ddim_step, progress=False, device="cpu")
    log_a, _ = fd.log_alpha_sigma(torch.zeros(1), (res, res))
    target = fd.from_modes(log_a.exp() * fd.to_modes(x0))
    assert torch.isfinite(out).all()
    assert (out - target).abs().max().item() < 1e-4
    # two steps: exact in x0 form; the epsilon form multiplies float32 rounding by alpha_0 / alpha_t
    few = sample(gen, (2, 3, res, res), num_steps=2, sampler=ddim_step, progress=False, device="cpu")
    assert (few - target).abs().max().item() < 1e-4
    if res == 64:  # at 16x16 the largest ratio is small enough for float32
        # the same exact denoiser as an eps network: a_s x0 is (a_s / a_t)(u - s eps), which multiplies
        # float32 rounding by a_0 / a_t in high modes
        eps_gen = DenoisingDiffusion(fd, _EpsOracle(fd, x0), x0_clip="none")
        eps_form = sample(eps_gen, (2, 3, res, res), num_steps=2, sampler=ddim_step, progress=False, device="cpu")
        assert not ((eps_form - target).abs().max().item() < 1.0)  # diverged (or not even finite)


@pytest.mark.parametrize("n", [4, 8])
def test_calibration_of_exchangeable_gaussian_samples(n):
    from ddo_conditional.inference.calibration import coverage as calibration

    g = torch.Generator().manual_seed(0)
    loc = torch.rand(32, 3, 16, 16, generator=g)
    draws = loc + 0.1 * torch.randn(n + 1, 32, 3, 16, 16, generator=g)  # the truth is one more draw
    samples, truth = draws[:n], draws[n]
    mask = (torch.rand(32, 1, 16, 16, generator=g) < 0.5).float()
    c = calibration(samples.mean(0), samples.std(0, unbiased=True), truth, mask, samples=samples)
    assert c["within_t95"] == pytest.approx(0.95, abs=0.01)
    assert c["within_range"] == pytest.approx((n - 1) / (n + 1), abs=0.01)
    assert c["within_range_expected"] == pytest.approx((n - 1) / (n + 1))
    # the naive 2-std interval under-covers with few samples even when everything is calibrated
    assert c["within_2std"] < c["within_t95"] - 0.03
    # a spread that is too small by half is caught by both finite-sample checks
    c_bad = calibration(samples.mean(0), 0.5 * samples.std(0, unbiased=True), truth, mask)
    assert c_bad["within_2std"] < 0.75
    shrunk = samples.mean(0) + 0.5 * (samples - samples.mean(0))
    assert calibration(shrunk.mean(0), shrunk.std(0), truth, mask, samples=shrunk)["within_range"] < (n - 1) / (n + 1) - 0.1


class _FixedResidual(torch.nn.Module):
    """An ``x0`` network: a fixed residual over the ``context_dense`` it is given."""

    def __init__(self, residual):
        super().__init__()
        self.residual = torch.nn.Parameter(residual)

    def forward(self, x, temp, v=None, context_dense=None, **kwargs):
        return context_dense + self.residual.expand(x.shape[0], -1, -1, -1)


@pytest.mark.parametrize("size", [(8, 8), (8, 12)])
def test_symmetrized_posterior_mean_averages_the_transformed_estimates(size):
    from ddo_conditional.data.augment import dihedral_transforms

    g = torch.Generator().manual_seed(0)
    h, w = size
    residual = torch.randn(1, 3, h, w, generator=g)
    gen = DenoisingDiffusion(BlurringDiffusion(), _FixedResidual(residual), parameterization="x0")
    dense = torch.rand(2, 3, h, w, generator=g)

    def estimate(symmetrize):
        rec = Reconstructor(gen, SamplingPlan(symmetrize=symmetrize))
        return rec.posterior_mean({"context_dense": dense}, (2, 3, h, w), [0, 1])[0]

    plain = estimate(False)
    torch.testing.assert_close(plain, dense + residual)
    sym = estimate(True)
    # the offset is transformed and transformed back (exact); the fixed residual is averaged over the group
    group = dihedral_transforms(h, w)
    assert len(group) == (8 if h == w else 4)
    expect = torch.stack([torch.rot90(residual.flip(-1) if f else residual, -k, (-2, -1)) for k, f in group]).mean(0)
    torch.testing.assert_close(sym, dense + expect)
    assert not torch.allclose(sym, plain)


def test_spread_fit_recovers_scale_and_floor_and_calibrates_fresh_draws():
    """Truths around the mean with std sqrt((2 sigma)^2 + 0.03^2), predicted std sigma: the maximum-
    likelihood fit finds a = 2 and b = 0.03, and on fresh draws the recalibrated spread holds 68% and
    95% within 1 and 2 std, where the raw spread holds far less."""
    from ddo_conditional.inference.calibration import apply_spread, fit_spread
    from ddo_conditional.inference.calibration import coverage as calibration

    g = torch.Generator().manual_seed(0)
    shape = (64, 3, 16, 16)
    mean = torch.rand(*shape, generator=g)
    sigma = 0.01 + 0.05 * torch.rand(*shape, generator=g)
    true_std = torch.sqrt((2 * sigma) ** 2 + 0.03**2)
    mask = (torch.rand(64, 1, 16, 16, generator=g) < 0.5).float()
    fit = fit_spread(mean, sigma, mean + true_std * torch.randn(*shape, generator=g), mask)
    assert abs(fit["spread_scale"] - 2.0) < 0.1 and abs(fit["spread_floor"] - 0.03) < 0.003
    fresh = mean + true_std * torch.randn(*shape, generator=g)
    cal = calibration(mean, apply_spread(sigma, fit), fresh, mask)
    assert abs(cal["within_1std"] - 0.683) < 0.01 and abs(cal["within_2std"] - 0.954) < 0.01
    assert calibration(mean, sigma, fresh, mask)["within_2std"] < 0.7


def test_spread_fit_with_roughness_recovers_all_three_terms():
    """Per-image roughness r_i, truths with std sqrt((1.5 sigma)^2 + (0.8 r_i)^2 + 0.01^2): the three-term
    fit recovers a, b, c; the fit without r cannot express the per-image floor and calibrates worse."""
    from ddo_conditional.inference.calibration import apply_spread, fit_spread
    from ddo_conditional.inference.calibration import coverage as calibration

    g = torch.Generator().manual_seed(1)
    shape = (96, 3, 16, 16)
    mean = torch.rand(*shape, generator=g)
    sigma = 0.01 + 0.03 * torch.rand(*shape, generator=g)
    rough = 0.2 * torch.rand(96, generator=g) ** 2
    true_std = torch.sqrt((1.5 * sigma) ** 2 + (0.8 * rough.view(-1, 1, 1, 1)) ** 2 + 0.01**2)
    mask = torch.ones(96, 1, 16, 16)
    fit = fit_spread(mean, sigma, mean + true_std * torch.randn(*shape, generator=g), mask, roughness=rough)
    assert fit["spread_scale"] == pytest.approx(1.5, rel=0.05)
    assert fit["spread_roughness"] == pytest.approx(0.8, rel=0.05)
    assert fit["spread_floor"] == pytest.approx(0.01, rel=0.1)
    fresh = mean + true_std * torch.randn(*shape, generator=g)
    cal = calibration(mean, apply_spread(sigma, fit, rough), fresh, mask)
    assert abs(cal["within_1std"] - 0.683) < 0.01 and abs(cal["within_2std"] - 0.954) < 0.01
    two = fit_spread(mean, sigma, mean + true_std * torch.randn(*shape, generator=g), mask)
    assert two["spread_roughness"] == 0.0
    assert calibration(mean, apply_spread(sigma, two), fresh, mask)["gaussian_loglik"] < cal["gaussian_loglik"] - 0.1
    with pytest.raises(ValueError, match="pass the images' roughness"):
        apply_spread(sigma, fit)


def test_relative_x0_loss_weights_t1_terms_by_inverse_biharmonic_error():
    from types import SimpleNamespace

    from ddo_conditional.losses import x0_mse_loss

    def x0_mse_relative_loss(floor=1e-4):
        return x0_mse_loss(t1_fraction=0.5, weighting="relative", floor=floor)

    x = torch.zeros(4, 1, 2, 2)
    err = torch.tensor([0.1, 0.2, 0.3, 0.4])            # the stub network's x0 is off by err_i everywhere
    seen_t = []

    def x0(z, t, v, **kw):
        seen_t.append(t.clone())
        return x + err[:, None, None, None]

    gen_sde = SimpleNamespace(sample_timesteps=lambda b, device, dtype: torch.full((b,), 0.3),
                              forward_diffusion=SimpleNamespace(sample=lambda t, x: x), x0=x0)
    dense = x + torch.tensor([0.01, 0.03, 0.5, 0.5])[:, None, None, None]   # biharmonic errors per image
    out = x0_mse_relative_loss(floor=1e-4)(gen_sde, {"image": x}, None, {"context_dense": dense})["loss"]
    w = 1 / (torch.tensor([0.01, 0.03]) ** 2 + 1e-4)
    want = torch.cat([err[:2] ** 2 * w / w.mean(), err[2:] ** 2])
    torch.testing.assert_close(out, want)
    torch.testing.assert_close(seen_t[0], torch.tensor([1.0, 1.0, 0.3, 0.3]))     # half of the batch at t = 1
    with pytest.raises(ValueError, match="use it with --conditioning sparse-biharmonic"):
        x0_mse_relative_loss()(gen_sde, {"image": x}, None, {})


def test_ratio_x0_loss_gives_every_t1_image_its_error_ratio():
    """--loss-weighting ratio: each t = 1 term is MSE / (interpolation MSE + floor) times the batch's mean
    of the latter, so a well-interpolated image does not take the weight of the others (relative's mean-1
    normalisation gives it nearly all of it)."""
    from types import SimpleNamespace

    from ddo_conditional.losses import x0_mse_loss

    def x0_mse_ratio_loss(floor=1e-8):
        return x0_mse_loss(t1_fraction=0.5, weighting="ratio", floor=floor)

    def x0_mse_relative_loss(floor=1e-4):
        return x0_mse_loss(t1_fraction=0.5, weighting="relative", floor=floor)

    x = torch.zeros(4, 1, 2, 2)
    err = torch.tensor([0.1, 0.002, 0.3, 0.4])
    gen_sde = SimpleNamespace(sample_timesteps=lambda b, device, dtype: torch.full((b,), 0.3),
                              forward_diffusion=SimpleNamespace(sample=lambda t, x: x),
                              x0=lambda z, t, v, **kw: x + err[:, None, None, None])
    dense = x + torch.tensor([0.2, 0.001, 0.5, 0.5])[:, None, None, None]   # a sparse and a dense context
    out = x0_mse_ratio_loss(floor=1e-8)(gen_sde, {"image": x}, None, {"context_dense": dense})["loss"]
    d = torch.tensor([0.2, 0.001]) ** 2 + 1e-8
    torch.testing.assert_close(out, torch.cat([err[:2] ** 2 / d * d.mean(), err[2:] ** 2]))
    assert float(out[0] / out[1]) == pytest.approx((0.1 ** 2 / (0.2 ** 2 + 1e-8)) / (0.002 ** 2 / (0.001 ** 2 + 1e-8)), rel=1e-5)
    mean1 = x0_mse_relative_loss(floor=1e-8)(gen_sde, {"image": x}, None, {"context_dense": dense})["loss"]
    assert float(mean1[0] / mean1.sum()) < 1e-4 < float(out[0] / out.sum())
    with pytest.raises(ValueError, match="--loss-weighting ratio weighs by the error"):
        x0_mse_ratio_loss()(gen_sde, {"image": x}, None, {})


def test_leave_one_out_error_matches_removing_each_observation():
    from ddo_conditional.nn.refiners import NormalizedConvolution

    g = torch.Generator().manual_seed(3)
    ctx = torch.rand(2, 3, 12, 12, generator=g) * 2 - 1
    mask = (torch.rand(2, 1, 12, 12, generator=g) < 0.15).float()
    nc = NormalizedConvolution()
    got = nc.loo_rms(ctx * mask, mask)
    for b in range(2):
        sq, n = 0.0, 0
        for i, j in mask[b, 0].nonzero().tolist():
            m = mask[b:b + 1].clone()
            m[0, 0, i, j] = 0                      # the observation removed, then predicted from the rest
            pred = nc(ctx[b:b + 1] * m, m)[0, :, i, j]
            sq, n = sq + float(((ctx[b, :, i, j] - pred) ** 2).sum()), n + 3
        assert got[b].item() == pytest.approx((sq / n) ** 0.5, rel=1e-4)


def test_context_residual_scale_multiplies_the_trunk_output_by_the_roughness():
    from ddo_conditional.nn.refiners import SparseInterpModel

    torch.manual_seed(0)
    plain = SparseInterpModel(_base(), residual_scale="none")
    scaled = SparseInterpModel(_base(), residual_scale="context", scale_floor=0.01)
    assert plain.context_lift.in_channels == 4 and scaled.context_lift.in_channels == 5
    for p in scaled.parameters():  # make the zero-initialised output layer non-trivial
        if p.dim() > 1 and p.abs().sum() == 0:
            torch.nn.init.normal_(p, std=0.1)
    x, t = torch.randn(2, 3, 16, 16), torch.rand(2)
    mask = torch.zeros(2, 1, 16, 16)
    mask[:, :, ::3, ::3] = 1
    rough = torch.randn(1, 3, 16, 16) * mask[:1]
    flat = torch.full((1, 3, 16, 16), 0.3) * mask[:1]       # a constant context: leave-one-out error 0
    ctx = torch.cat([rough, flat])
    s = scaled.scale(ctx, mask).flatten()
    # the scale is the context's leave-one-out error (floored): 0.01 for a constant context
    assert s[1].item() == pytest.approx(0.01, rel=1e-4)
    assert s[0].item() == pytest.approx(float(scaled.interp.loo_rms(ctx, mask)[0]), rel=1e-4) and s[0] > 0.5
    trunk = []
    scaled.base_model.out.register_forward_hook(lambda m, i, o: trunk.append(o))
    out = scaled(x, t, None, context_image=ctx, observation_mask=mask)
    torch.testing.assert_close(out, trunk[0] * s.view(-1, 1, 1, 1))  # the trunk's output in units of s
    assert torch.equal(scaled(x, t, None), scaled.base_model(x, t, None))   # no context: the base network
    fed = SparseInterpModel(_base(), residual_scale="context-input")
    assert fed.context_lift.in_channels == 8


def test_fresh_residual_model_is_the_interpolation_and_learns_a_known_residual():
    """A fresh x0 residual model returns the interpolation exactly (zero-initialised output layers);
    fitted to images that are the interpolation plus a fixed pattern, it learns that pattern."""
    from ddo_conditional.nn.refiners import SparseInterpModel

    torch.manual_seed(0)
    model = SparseInterpModel(_base(), residual_scale="none", refiner_width=4, residual=True)
    g = torch.Generator().manual_seed(1)
    mask = (torch.rand(8, 1, 16, 16, generator=g) < 0.3).float()
    ctx = (torch.rand(8, 3, 16, 16, generator=g) * 2 - 1) * mask
    x, t = torch.randn(8, 3, 16, 16, generator=g), torch.rand(8, generator=g)
    dense = model.interp(ctx, mask)
    assert torch.equal(model(x, t, None, context_image=ctx, observation_mask=mask), dense)
    pattern = 0.2 * torch.sin(torch.arange(16.0) / 2).view(1, 1, 1, 16).expand(1, 3, 16, 16)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    errors = []
    for _ in range(150):
        opt.zero_grad()
        err = ((model(x, t, None, context_image=ctx, observation_mask=mask) - (dense + pattern)) ** 2).mean()
        err.backward()
        opt.step()
        errors.append(err.item())
    assert errors[-1] < 0.05 * errors[0], (errors[0], errors[-1])
    with pytest.raises(ValueError, match="unknown residual scale"):
        SparseInterpModel(_base(), residual_scale="global")


@pytest.mark.parametrize("size", [16, (8, 12)])
def test_dihedral_augment_moves_image_context_and_interpolation_together(size):
    from ddo.data import RandomFlip
    from ddo_conditional.data.augment import DihedralAugment, apply_dihedral, dihedral_transforms

    h, w = (size, size) if isinstance(size, int) else size

    class Rect(Images):
        def __init__(self):
            super().__init__(n=12)
            self.x = self.x[..., :h, :w].contiguous()

    flipped = RandomFlip(Rect(), seed=0)
    plain = FixedSparseMaskDataset(flipped, seed=3)
    aug = DihedralAugment(plain, seed=5)
    assert aug.context_ratio == 0.1 and len(aug) == 12
    group, seen = dihedral_transforms(h, w), set()
    for epoch in range(4):
        flipped.set_epoch(epoch)
        for i in range(12):
            a, p = aug[i], plain[i]
            assert torch.equal(a["image"], aug[i]["image"])  # a pure function of (seed, epoch, index)
            flat = a["image"].reshape(3, -1)
            # the same values, found at the moved indices of the moved image
            assert torch.equal(flat[:, a["context_indices"]].T, a["context_values"])
            assert torch.equal(flat[:, a["query_indices"]].T, a["query_values"])
            assert torch.equal(a["context_values"], p["context_values"])
            # which element was drawn: the one that maps the plain image onto the augmented one
            match = [g for g in group if torch.equal(apply_dihedral(p["image"], *g), a["image"])]
            assert match, "the augmented image is no symmetry of the plain one"
            seen.add(match[0])
    assert len(seen) == len(group)  # every element is drawn, identity included


def test_dihedral_augment_only_on_the_training_split_and_refuses_unknown_keys():
    from ddo_conditional.wrappers import BiharmonicInterpConditioning
    from ddo_conditional.data.augment import DihedralAugment, PhotometricAugment

    wrapper = BiharmonicInterpConditioning({"augment": "dihedral", "resolution": 32})
    assert isinstance(wrapper.wrap_dataset(Images(2), "train"), DihedralAugment)
    assert not isinstance(wrapper.wrap_dataset(Images(2), "test"), DihedralAugment)
    assert wrapper.augment == "dihedral"
    assert not isinstance(BiharmonicInterpConditioning({}).wrap_dataset(Images(2), "train"), DihedralAugment)
    both = BiharmonicInterpConditioning({"augment": "photometric, dihedral", "resolution": 32})
    assert both.augment == "dihedral,photometric"  # canonical order, whatever was typed
    train = both.wrap_dataset(Images(2), "train")
    assert isinstance(train, DihedralAugment) and isinstance(train.dataset, PhotometricAugment)
    assert isinstance(both.wrap_dataset(Images(2), "test"), FixedSparseMaskDataset)
    with pytest.raises(ValueError, match="unknown augmentation rot45; known: none, dihedral, photometric"):
        BiharmonicInterpConditioning({"augment": "rot45"})


def test_dihedral_augment_is_refused_for_fields_whose_law_it_changes():
    """A rotated or reflected forced flow is no sample of its equation: the run is refused in one
    line before anything is written; the field record is found through the trainer's flip wrapper."""
    from ddo.api import UserError
    from ddo.data import RandomFlip
    from ddo_conditional.data.augment import DihedralAugment
    from ddo_conditional.wrappers import BiharmonicInterpConditioning

    wrapper = BiharmonicInterpConditioning({"augment": "dihedral", "resolution": 32})
    forced, isotropic = Images(2), Images(2)
    forced.field, isotropic.field = {"dihedral_invariant": False}, {"dihedral_invariant": True}
    with pytest.raises(UserError, match="not invariant .* drop dihedral from --augment") as e:
        wrapper.wrap_dataset(RandomFlip(forced, 0), "train")
    assert "\n" not in str(e.value)
    assert isinstance(wrapper.wrap_dataset(RandomFlip(isotropic, 0), "train"), DihedralAugment)
    assert isinstance(wrapper.wrap_dataset(forced, "test"), FixedSparseMaskDataset)  # scoring never augments


def test_photometric_augment_maps_image_and_context_alike():
    from ddo.data import RandomFlip
    from ddo_conditional.data.augment import PhotometricAugment

    class Mirrored(Images):  # right half = left half: a per-pixel colour map keeps it so
        def __init__(self):
            super().__init__(n=8, res=16)
            self.x[..., 8:] = self.x[..., :8]

    flipped = RandomFlip(Mirrored(), seed=0)
    plain = FixedSparseMaskDataset(flipped, seed=3)
    aug = PhotometricAugment(plain, seed=5)
    assert aug.context_ratio == 0.1 and len(aug) == 8
    epochs = []
    for epoch in range(3):
        flipped.set_epoch(epoch)
        for i in range(8):
            a, p = aug[i], plain[i]
            assert torch.equal(a["image"], aug[i]["image"])  # a pure function of (seed, epoch, index)
            flat = a["image"].reshape(3, -1)
            assert torch.equal(flat[:, a["context_indices"]].T, a["context_values"])
            assert torch.equal(flat[:, a["query_indices"]].T, a["query_values"])
            assert torch.equal(a["context_indices"], p["context_indices"])  # the fixed mask stays
            assert torch.equal(a["image"][..., 8:], a["image"][..., :8])
            assert a["image"].min() >= -1 and a["image"].max() <= 1
            assert (a["image"] - p["image"]).abs().max() > 0.01
        epochs.append(aug[0]["image"])
    assert not torch.equal(epochs[0], epochs[1])


def test_photometric_map_hue_rotation_keeps_grey_and_luminance():
    from ddo_conditional.data.augment import photometric_map

    x = torch.rand(3, 50)
    grey = torch.full((3, 4), 0.4)
    for seed in range(5):
        f = photometric_map(np.random.default_rng(seed), 3)
        y = f(torch.cat([x, grey], 1), torch.tensor(0.4))
        assert torch.allclose(y[:, 50:], y[:1, 50:].expand(3, -1), atol=1e-6)  # grey stays grey
    one = photometric_map(np.random.default_rng(0), 1)(x[:1], x[:1].mean())
    assert one.shape == (1, 50) and one.min() >= 0 and one.max() <= 1


