"""The layer behind the README's table, checked against independent references: metrics, the classical
baselines, and an oracle network carried through reconstruct() and evaluate()."""
import numpy as np
import pytest
import torch
from skimage.metrics import structural_similarity
from skimage.restoration import inpaint_biharmonic

from ddo.diffusion import BlurringDiffusion, DenoisingDiffusion
from ddo.sampling import ddim_step, denoise_step
from ddo_conditional import FixedSparseMaskDataset, Reconstructor, SamplingPlan, fixed_mask, reconstruct
from ddo_conditional.classical.baselines import BASELINES, interpolate
from ddo_conditional.wrappers import LiftConditioning
from ddo_conditional.data.augment import apply_dihedral, dihedral_transforms
from ddo_conditional.data.datasets import context_tensors
from ddo_conditional.inference.evaluate import MODEL_METHODS, evaluate
from ddo_conditional.inference.calibration import coverage as calibration
from ddo_conditional.inference.metrics import psnr, ssim, ssim_map


def _smooth_images(n, res, seed=0):
    """Smooth random colour images in ``[0, 1]``, ``(n, 3, res, res)`` (a few low frequencies each)."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, res), torch.linspace(0, 1, res), indexing="ij")
    out = torch.zeros(n, 3, res, res)
    for _ in range(4):
        f = torch.rand(n, 3, 2, 1, 1, generator=g) * 4
        ph = torch.rand(n, 3, 1, 1, generator=g) * 6.28
        out += torch.sin(f[:, :, 0] * xx + f[:, :, 1] * yy + ph) / 4
    return (out + 1) / 2 * 0.8 + 0.1


# --- metrics ------------------------------------------------------------------------------------
def test_psnr_of_a_uniform_error_of_0_1_is_20_db_and_counts_only_the_mask():
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 0.5
    mask = torch.zeros(2, 1, 16, 16)
    mask[:, :, 3:9, 2:12] = 1
    y = x + 0.1 * mask + 0.3 * (1 - mask)  # off-mask errors must not count
    torch.testing.assert_close(psnr(x, y, mask), torch.full((2,), 20.0))
    torch.testing.assert_close(psnr(x, x + 0.1), torch.full((2,), 20.0))


def test_ssim_map_equals_scikit_image_and_the_mean_equals_its_score_on_the_same_pixels():
    g = torch.Generator().manual_seed(1)
    x = torch.rand(2, 3, 24, 20, generator=g, dtype=torch.float64)
    y = (x + 0.15 * torch.randn(2, 3, 24, 20, generator=g, dtype=torch.float64)).clamp(0, 1)
    ours = ssim_map(x, y)
    interior = torch.zeros(1, 1, 24, 20, dtype=torch.float64)
    interior[..., 5:-5, 5:-5] = 1  # scikit-image's mean leaves out the window's radius at the border
    for b in range(2):
        a, c = x[b].permute(1, 2, 0).numpy(), y[b].permute(1, 2, 0).numpy()
        score, full = structural_similarity(a, c, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                            data_range=1.0, channel_axis=-1, full=True)
        np.testing.assert_allclose(ours[b].permute(1, 2, 0).numpy(), full, atol=1e-10)
        assert ssim(x[b:b + 1], y[b:b + 1], interior).item() == pytest.approx(score, abs=1e-10)
    assert ssim(x, x).tolist() == pytest.approx([1.0, 1.0])


def test_calibration_of_a_planted_gaussian_error():
    g = torch.Generator().manual_seed(2)
    shape = (16, 3, 32, 32)
    std = 0.02 + 0.08 * torch.rand(shape, generator=g, dtype=torch.float64)
    mean = torch.rand(shape, generator=g, dtype=torch.float64)
    truth = mean + std * torch.randn(shape, generator=g, dtype=torch.float64)
    mask = (torch.rand(16, 1, 32, 32, generator=g) < 0.3).double()
    c = calibration(mean, std, truth, mask)
    assert c["within_1std"] == pytest.approx(0.6827, abs=0.01)
    assert c["within_2std"] == pytest.approx(0.9545, abs=0.005)
    sel = mask.expand_as(std).bool()
    expected_ll = float((-0.5 - torch.log(std[sel]) - 0.5 * np.log(2 * np.pi)).mean())
    assert c["gaussian_loglik"] == pytest.approx(expected_ll, abs=0.02)


# --- baselines on their own ---------------------------------------------------------------------
def _context(h, w, seed=0, ratio=0.15):
    ctx, _ = fixed_mask(seed, 0, h, w, ratio, 0.1)
    return ctx


def test_linear_and_cubic_reproduce_an_affine_image_inside_the_hull():
    h, w = 20, 24
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.stack([0.1 + 0.02 * yy + 0.01 * xx, 0.9 - 0.03 * xx, 0.5 + 0.01 * yy], -1)
    ctx = _context(h, w)
    from scipy.spatial import Delaunay

    pts = np.stack(np.unravel_index(ctx, (h, w)), 1)
    inside = Delaunay(pts).find_simplex(np.stack([yy.ravel(), xx.ravel()], 1)) >= 0
    assert inside.sum() > 0.6 * h * w
    for method in ("linear", "cubic"):
        out = interpolate(img, ctx, method).reshape(h * w, 3)
        np.testing.assert_allclose(out[inside], img.reshape(h * w, 3)[inside], atol=1e-5)


@pytest.mark.parametrize("method", BASELINES)
def test_every_baseline_keeps_the_context_pixels(method):
    img = _smooth_images(1, 16, seed=3)[0].permute(1, 2, 0).double().numpy()
    ctx = _context(16, 16, seed=4)
    out = interpolate(img, ctx, method).reshape(-1, 3)
    np.testing.assert_allclose(out[ctx], img.reshape(-1, 3)[ctx], atol=1e-6)


def test_nearest_equals_a_brute_force_nearest_neighbour():
    rng = np.random.default_rng(5)
    img = rng.random((15, 17, 3))
    ctx = _context(15, 17, seed=6)
    out = interpolate(img, ctx, "nearest").reshape(-1, 3)
    cy, cx = np.unravel_index(ctx, (15, 17))
    flat = img.reshape(-1, 3)
    for p in range(15 * 17):
        y, x = divmod(p, 17)
        d = (cy - y) ** 2 + (cx - x) ** 2
        # ties (equal distances) may go either way; the value must be one of the nearest ones
        assert any(np.allclose(out[p], flat[ctx[j]]) for j in np.flatnonzero(d == d.min()))


def test_biharmonic_equals_scikit_image_called_directly():
    img = _smooth_images(1, 16, seed=7)[0].permute(1, 2, 0).double().numpy()
    ctx = _context(16, 16, seed=8)
    missing = np.ones(16 * 16, bool)
    missing[ctx] = False
    known = img.reshape(-1, 3).copy()
    known[missing] = 0.0
    direct = inpaint_biharmonic(known.reshape(16, 16, 3), missing.reshape(16, 16), channel_axis=-1)
    np.testing.assert_allclose(interpolate(img, ctx, "biharmonic"), direct, atol=1e-12)


# --- an oracle through reconstruct() and evaluate() ---------------------------------------------
class X0Oracle(torch.nn.Module):
    """The exact denoiser of a one-image distribution, read as ``x0``: returns the image, in the
    orientation its context shows (so the rotated and flipped contexts of ``ddo-x0`` agree too)."""

    def __init__(self, image):
        super().__init__()
        self.image = image  # (1, C, H, W) in [-1, 1]
        self.p = torch.nn.Parameter(torch.zeros(()))

    def forward(self, x, temp, v=None, context_image=None, observation_mask=None, **kwargs):
        outs = []
        for ctx, m in zip(context_image, observation_mask):
            cands = [apply_dihedral(self.image[0], *g) for g in dihedral_transforms(*x.shape[-2:])]
            errs = [float(((c - ctx) * m).abs().sum()) for c in cands]
            outs.append(cands[int(np.argmin(errs))])
        return torch.stack(outs)


class _Same(torch.utils.data.Dataset):
    def __init__(self, image, n):
        self.image, self.n = image, n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return {"image": self.image[0], "index": i}


@pytest.mark.parametrize("res", [16, 64])
@pytest.mark.parametrize("step", [ddim_step, denoise_step])
def test_oracle_reconstruction_is_the_image_with_zero_spread(res, step):
    image = _smooth_images(1, res, seed=9) * 2 - 1
    gen = DenoisingDiffusion(BlurringDiffusion(), X0Oracle(image), parameterization="x0")
    ds = FixedSparseMaskDataset(_Same(image, 2), seed=1)
    ctx = context_tensors(torch.utils.data.default_collate([ds[i] for i in range(2)]))
    out = reconstruct(gen, ctx, (2, 3, res, res), SamplingPlan(samples=3, steps=4, sampler=step))
    # the image itself, not alpha_0 times it (alpha_0 of the highest mode is 5e-5 at 64x64)
    torch.testing.assert_close(out["samples"], image.expand(3, 2, -1, -1, -1), atol=1e-5, rtol=0)
    assert out["std"].abs().max() < 1e-5


class _WrongX0(torch.nn.Module):
    """An x0 network that is wrong everywhere (a constant): shows what data consistency changes."""

    def __init__(self):
        super().__init__()
        self.p = torch.nn.Parameter(torch.zeros(()))

    def forward(self, x, temp, v=None, **kwargs):
        return torch.full_like(x, 0.3)


def test_data_consistency_keeps_the_observed_pixels_equal_to_the_context():
    image = _smooth_images(2, 16, seed=10) * 2 - 1
    ds = FixedSparseMaskDataset(_Same(image[:1], 2), seed=2)
    ctx = context_tensors(torch.utils.data.default_collate([ds[i] for i in range(2)]))
    gen = DenoisingDiffusion(BlurringDiffusion(), _WrongX0(), parameterization="x0")
    obs = (ctx["context_image"], ctx["observation_mask"])
    def plan(dc):
        return SamplingPlan(samples=2, steps=3, sampler=ddim_step, data_consistency=dc)

    with_dc = reconstruct(gen, ctx, (2, 3, 16, 16), plan(True), observation=obs)["samples"]
    without = reconstruct(gen, ctx, (2, 3, 16, 16), plan(False), observation=obs)["samples"]
    m = obs[1].bool().expand(2, -1, 3, -1, -1)
    target = obs[0].expand(2, -1, -1, -1, -1)
    assert torch.equal(with_dc[m], target[m])
    assert (without[m] - target[m]).abs().max() > 0.1
    assert torch.equal(with_dc[~m], without[~m])  # unobserved pixels: the model's


@pytest.mark.parametrize("res", [16, 64])
def test_evaluate_with_an_oracle_every_ddo_row_beats_every_baseline(res, monkeypatch):
    import ddo_conditional.inference.evaluate as ev

    image = _smooth_images(1, res, seed=11) * 2 - 1
    gen = DenoisingDiffusion(BlurringDiffusion(), X0Oracle(image), parameterization="x0")
    wrapper = LiftConditioning({"resolution": res, "mask_seed": 3})
    ds = wrapper.wrap_dataset(_Same(image, 3), "test")
    seen = []
    real = ev.baseline_batch
    monkeypatch.setattr(ev, "baseline_batch", lambda t, idx, m: seen.append(idx.clone()) or real(t, idx, m))
    ev = evaluate(Reconstructor(gen, SamplingPlan(samples=2, steps=3, sampler=ddim_step, rows=2)), wrapper, ds)
    methods = ev.methods
    for name in ("ddo-x0", "ddo-samples-mean", "ddo-sample", "ddo-mean"):
        assert methods[name]["psnr_query"] > 90, (name, methods[name]["psnr_query"])
        assert methods[name]["ssim_query"] == pytest.approx(1.0, abs=1e-5)  # float32 rounding
    best_baseline = max(methods[b]["psnr_query"] for b in BASELINES)
    assert min(methods[d]["psnr_query"] for d in MODEL_METHODS if d in methods) > best_baseline + 20
    assert methods["ddo-mean"]["source"] == "ddo-x0"  # the fixed rule for x0 models
    # the baselines got the model's context indices: those of the dataset's fixed masks
    want = torch.stack([ds[i]["context_indices"] for i in range(3)])
    assert torch.equal(torch.cat(seen[::len(BASELINES)]), want)
    assert ev.coverage["within_2std"] <= 1.0 and ev.num_images == 3
