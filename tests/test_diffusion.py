import pytest
import torch

from ddo import sampling
from ddo.diffusion import BlurringDiffusion, DenoisingDiffusion, LinearDiffusion
from ddo.models import FNOUNet2d, coordinate_grid
from ddo.noise import GaussianRandomField


class Oracle(torch.nn.Module):
    """The exact noise predictor when the data is one known image ``x0``."""

    def __init__(self, fd, x0):
        super().__init__()
        self.fd, self.x0 = fd, x0
        self.dummy = torch.nn.Parameter(torch.zeros(()))
        self.seen = []

    def forward(self, x, temp, v=None, **kwargs):
        self.seen.append(kwargs)
        log_a, log_s = self.fd.log_alpha_sigma(temp, x.shape[-2:])
        mean = self.fd.from_modes(log_a.exp() * self.fd.to_modes(self.x0.expand_as(x)))
        return (x - mean) / log_s.exp()


def _alpha0_x0(fd, x0):
    zero = torch.zeros(1, dtype=x0.dtype)
    log_a, _ = fd.log_alpha_sigma(zero, x0.shape[-2:])
    return fd.from_modes(log_a.exp() * fd.to_modes(x0))


@pytest.mark.parametrize("fd_factory", [lambda: BlurringDiffusion(), lambda: LinearDiffusion(),
                                        lambda: BlurringDiffusion(noise=GaussianRandomField(2.0, 0.1))])
@pytest.mark.parametrize("sampler,steps,tol", [(sampling.denoise_step, 50, 8e-3), (sampling.ddim_step, 10, 1e-5),
                                               (sampling.euler_maruyama_step, 400, 0.05)])
def test_samplers_recover_the_single_image_distribution(fd_factory, sampler, steps, tol):
    fd = fd_factory()
    x0 = torch.rand(1, 3, 16, 16, dtype=torch.float64) * 2 - 1
    gen = DenoisingDiffusion(fd, Oracle(fd, x0).double(), x0_clip="none")  # the sampler's own arithmetic
    g = torch.Generator().manual_seed(0)
    out = sampling.sample(gen, (2, 3, 16, 16), num_steps=steps, sampler=sampler, generator=g, progress=False,
                          device="cpu")
    target = _alpha0_x0(fd, x0).expand_as(out)
    assert (out - target).abs().max().item() < tol


@pytest.mark.parametrize("fd_factory", [lambda: BlurringDiffusion(), lambda: BlurringDiffusion(noise=GaussianRandomField(2.0, 0.1))])
def test_the_eps_default_bound_costs_an_exact_network_nothing_on_the_default_sampler(fd_factory):
    """eps networks sample with --x0-clip floor-clip and 250 ancestral steps by default: with the exact
    network, as close to the target as the unbounded sampler (within 0.2 dB PSNR). With ddim the floor
    does bias an exact network (README: Known limitations), which the last assertion records."""
    torch.manual_seed(0)
    x0 = torch.rand(1, 3, 16, 16, dtype=torch.float64) * 2 - 1
    psnr = {}
    for clip, sampler, steps in (("none", sampling.denoise_step, 250), ("floor-clip", sampling.denoise_step, 250),
                                 ("floor-clip", sampling.ddim_step, 10)):
        fd = fd_factory()
        gen = DenoisingDiffusion(fd, Oracle(fd, x0).double())
        gen = DenoisingDiffusion(fd, gen.network, x0_clip=clip)
        out = sampling.sample(gen, (2, 3, 16, 16), num_steps=steps, sampler=sampler,
                              generator=torch.Generator().manual_seed(0), progress=False, device="cpu")
        err = out - _alpha0_x0(fd, x0).expand_as(out)
        psnr[clip, sampler] = -10 * torch.log10((err / 2).pow(2).mean()).item()
    assert DenoisingDiffusion(fd, gen.network).x0_clip == "floor-clip"  # the default for eps
    assert abs(psnr["floor-clip", sampling.denoise_step] - psnr["none", sampling.denoise_step]) < 0.2, psnr
    assert 30 < psnr["floor-clip", sampling.ddim_step] < 60, psnr  # biased, where the unbounded ddim is exact


def test_kwargs_reach_the_network_from_every_path():
    fd = BlurringDiffusion()
    x0 = torch.zeros(1, 3, 8, 8)
    net = Oracle(fd, x0)
    gen = DenoisingDiffusion(fd, net)
    marker = {"context_image": torch.ones(1)}
    gen.dsm(torch.zeros(2, 3, 8, 8), None, **marker)
    z = torch.randn(2, 3, 8, 8)
    gen.denoise_step(z, 0.5, 10, None, **marker)
    gen.score(z, 0.5, None, **marker)
    gen.pred(z, 0.5, None, **marker)
    for step in (sampling.denoise_step, sampling.ddim_step, sampling.euler_maruyama_step):
        sampling.sample(gen, (1, 3, 8, 8), num_steps=2, sampler=step, progress=False, device="cpu", **marker)
    assert len(net.seen) == 4 + 3 * 2
    assert all(s.get("context_image") is marker["context_image"] for s in net.seen)


def test_dsm_shape_finite_and_gradient_reaches_every_parameter():
    net = FNOUNet2d(4, 4, 3, ch=8, ch_mult=(1, 2), num_res_blocks=1, use_pos=True, norm="group",
                    use_pointwise_op=True)
    gen = DenoisingDiffusion(BlurringDiffusion(), net, timestep_sampler="low_discrepancy")
    x = torch.rand(4, 3, 16, 16) * 2 - 1
    v = coordinate_grid(4, 16, 16)
    loss = gen.dsm(x, v)
    assert loss.shape == (4,) and torch.isfinite(loss).all()
    loss.mean().backward()
    missing = [n for n, p in net.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()
               or p.grad.abs().sum() == 0]
    assert missing == []
    assert gen.dsm(x, v, reduction="none").shape == x.shape


def test_low_discrepancy_times_are_stratified():
    gen = DenoisingDiffusion(LinearDiffusion(), torch.nn.Identity(), timestep_sampler="low_discrepancy")
    t = torch.sort(gen.sample_timesteps(8)).values
    gaps = t[1:] - t[:-1]
    torch.testing.assert_close(gaps, torch.full((7,), 1 / 8), atol=1e-6, rtol=0)


def test_diffuse_marginal_statistics():
    fd = LinearDiffusion()
    x = torch.full((4000, 1, 2, 2), 0.5)
    z, eps, mean, sigma = fd.diffuse(x, torch.full((4000,), 0.5))
    assert abs(z.mean().item() - 0.5 * 0.70710678) < 0.02
    assert abs(z.std().item() - 0.70710678) < 0.02


def test_blurred_marginal_has_the_blurred_mean_and_the_noise_fields_mode_variances():
    """Over many draws of z_t: the mean is IDCT(alpha_t(k) DCT(x)) with alpha_t(k) from the closed-form
    schedule, and per DCT mode the variance is sigma_t^2 times the noise field's own mode variance."""
    from ddo import schedules
    from ddo.dct import dct2, idct2, mode_eigenvalues

    noise = GaussianRandomField(2.0, 0.2)
    fd = BlurringDiffusion(noise=noise)
    n, t = 20000, 0.4
    g = torch.Generator().manual_seed(0)
    x = torch.rand(1, 1, 8, 8, generator=g, dtype=torch.float64)
    z = fd.diffuse(x.expand(n, -1, -1, -1), torch.full((n,), t, dtype=torch.float64), generator=g)[0]
    tt = torch.tensor([t], dtype=torch.float64)
    a, s = schedules.alpha_sigma(tt)
    alpha_k = a * torch.exp(-mode_eigenvalues((8, 8), dtype=torch.float64) * fd.dissipation.tau(tt))
    torch.testing.assert_close(z.mean(0, keepdim=True), idct2(alpha_k * dct2(x)), atol=0.025, rtol=0)
    var_k = dct2(z - z.mean(0, keepdim=True)).var(0)[0]
    want = s**2 * noise.sample_dct((n, 1, 8, 8), generator=g, dtype=torch.float64).var(0)[0]
    torch.testing.assert_close(var_k, want, rtol=0.05, atol=1e-4)
