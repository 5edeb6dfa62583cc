"""Sampling-time observation guidance: the host's hook, the plugin's methods, the command.

The oracle: Gaussian data ``x ~ N(0, C)`` on an 8x8 grid under DDO's blurring process, whose ``x0``
estimate ``E[x | z_t] = C B_t (B_t C B_t + sigma_t^2 I)^{-1} z_t`` (``B_t`` the per-mode blur) is
known in closed form, so a guided sampler's output can be compared with the truth it was drawn from.
"""
import json

import pytest
import torch
from ddo.api import BlurringDiffusion, DenoisingDiffusion, FNOUNet2d, alpha_sigma, ddim_step, denoise_step, sample
from ddo.cli import main
from ddo.dct import dct2
from ddo.plugins import load_host

from ddo_conditional.inference.guidance import DPS, PixelObservation, PointObservation, Projection

H = W = 8
N = H * W


def _covariance() -> torch.Tensor:
    yy, xx = torch.meshgrid(torch.arange(H, dtype=torch.float64), torch.arange(W, dtype=torch.float64), indexing="ij")
    p = torch.stack([yy.flatten(), xx.flatten()], 1)
    return 0.25 * torch.exp(-((p[:, None] - p[None]) ** 2).sum(-1) / 8.0) + 1e-6 * torch.eye(N, dtype=torch.float64)


class GaussianOracle(torch.nn.Module):
    """The exact ``x0`` network of ``N(0, C)`` data under ``fd`` (input scaled by ``alpha(t)``, as
    :meth:`DenoisingDiffusion.model` gives it to an ``x0`` network)."""

    def __init__(self, fd, cov):
        super().__init__()
        self.fd, self.cov = fd, cov
        self.basis = dct2(torch.eye(N, dtype=torch.float64).reshape(N, 1, H, W)).reshape(N, N)
        self.unused = torch.nn.Parameter(torch.zeros(()))

    def forward(self, x, temp, v=None, **kwargs):
        out = []
        for b in range(x.shape[0]):
            t = temp[b:b + 1].to(torch.float64)
            log_a, log_s = self.fd.log_alpha_sigma(t, (H, W))
            blur = self.basis @ torch.diag(log_a.exp().reshape(N)) @ self.basis.T
            z = x[b].reshape(N).to(torch.float64) / alpha_sigma(t)[0]
            system = blur @ self.cov @ blur + log_s.exp().reshape(()) ** 2 * torch.eye(N, dtype=torch.float64)
            out.append((self.cov @ blur @ torch.linalg.solve(system, z)).reshape(1, H, W))
        return torch.stack(out).to(x.dtype)


@pytest.fixture(scope="module")
def oracle():
    torch.manual_seed(0)
    fd, cov = BlurringDiffusion(ch=1), _covariance()
    images = 12
    truth = (torch.linalg.cholesky(cov) @ torch.randn(N, images, dtype=torch.float64)).T.reshape(images, 1, H, W).float()
    mask = (torch.rand(images, 1, H, W) < 0.2).float()
    return DenoisingDiffusion(fd, GaussianOracle(fd, cov), parameterization="x0"), truth, mask


def _draw(denoiser, shape, guidance=None, steps=20, sampler=ddim_step):
    g = torch.Generator().manual_seed(1)
    return sample(denoiser, shape, steps, sampler, generator=g, progress=False, device="cpu", clean_end=True,
                  guidance=guidance)


def _errors(x, truth, mask):
    """(mean squared error on unobserved pixels, mean absolute error on observed ones)."""
    free = 1 - mask
    return float((((x - truth) ** 2) * free).sum() / free.sum()), float(((x - truth).abs() * mask).sum() / mask.sum())


def test_guided_samples_agree_with_observations_and_are_closer_to_the_truth(oracle):
    denoiser, truth, mask = oracle
    obs = PixelObservation(truth * mask, mask)
    free_plain, obs_plain = _errors(_draw(denoiser, truth.shape), truth, mask)
    free_proj, obs_proj = _errors(_draw(denoiser, truth.shape, Projection(obs)), truth, mask)
    free_dps, obs_dps = _errors(_draw(denoiser, truth.shape, DPS(obs, 0.3)), truth, mask)
    # unguided samples are draws of the prior: error about twice its variance (0.25) everywhere
    assert free_plain > 0.35 and obs_plain > 0.3
    # projection imposes the observed values on the last (clean) estimate: equal to float rounding
    assert obs_proj < 1e-6
    # DPS moves toward them by gradient steps: within a quarter of the unguided misfit
    assert obs_dps < 0.25 * obs_plain
    # elsewhere both are at least twice as close to the truth as unguided samples
    assert free_proj < 0.5 * free_plain and free_dps < 0.5 * free_plain


def _tiny_network():
    torch.manual_seed(0)
    net = FNOUNet2d(4, 4, in_channels=1, ch=8, ch_mult=(1, 2), num_res_blocks=1, norm="group")
    return DenoisingDiffusion(BlurringDiffusion(ch=1), net.eval(), parameterization="x0")


@pytest.mark.parametrize("method", [DPS, Projection])
@pytest.mark.parametrize("sampler", [ddim_step, denoise_step])
def test_zero_scale_is_unguided_sampling_bit_for_bit(method, sampler):
    denoiser = _tiny_network()
    shape = (3, 1, 16, 16)
    values = torch.randn(shape)
    mask = (torch.rand(3, 1, 16, 16) < 0.1).float()
    plain = _draw(denoiser, shape, steps=4, sampler=sampler)
    guided = _draw(denoiser, shape, method(PixelObservation(values * mask, mask), 0.0), steps=4, sampler=sampler)
    assert torch.equal(plain, guided)
    moved = _draw(denoiser, shape, method(PixelObservation(values * mask, mask), 1.0), steps=4, sampler=sampler)
    assert not torch.equal(plain, moved) and torch.isfinite(moved).all()


def test_the_loop_without_guidance_is_the_plain_composition_of_steps():
    """``sample()`` without a guidance key is the chain of step functions, as before the hook existed."""
    denoiser = _tiny_network()
    shape, steps = (2, 1, 16, 16), 3
    g = torch.Generator().manual_seed(5)
    z = denoiser.prior_sample(shape, generator=g)
    with torch.no_grad():  # as sample() runs (autograd's forward may round differently)
        for i in range(steps):
            z = denoise_step(denoiser, z, 1 - i / steps, 1 - (i + 1) / steps, None, g)
    out = sample(denoiser, shape, steps, denoise_step, generator=torch.Generator().manual_seed(5), progress=False,
                 device="cpu")
    assert torch.equal(out, z)


class PaperSignature(torch.nn.Module):
    """A network with the paper's call signature exactly: ``forward(x, temp, v)``, nothing more."""

    def __init__(self):
        super().__init__()
        self.net = FNOUNet2d(4, 4, in_channels=1, ch=8, ch_mult=(1, 2), num_res_blocks=1, norm="group")

    def forward(self, x, temp, v):
        return self.net(x=x, temp=temp, v=v)


def test_guidance_runs_a_network_called_the_way_the_papers_code_calls_it():
    torch.manual_seed(0)
    denoiser = DenoisingDiffusion(BlurringDiffusion(ch=1), PaperSignature().eval(), parameterization="x0")
    values = torch.randn(2, 1, 16, 16)
    mask = (torch.rand(2, 1, 16, 16) < 0.2).float()
    for method in (DPS, Projection):
        out = _draw(denoiser, (2, 1, 16, 16), method(PixelObservation(values * mask, mask)), steps=3)
        assert out.shape == (2, 1, 16, 16) and torch.isfinite(out).all()


def test_point_observations_read_the_image_bilinearly_and_refuse_projection():
    image = torch.arange(16.0).reshape(1, 1, 4, 4)
    coords = torch.tensor([[[0.125, 0.125], [0.25, 0.125], [0.875, 0.875]]])  # centres of pixels 0, between 0 and 1, 15
    obs = PointObservation(coords, torch.zeros(1, 3, 1), torch.tensor([[True, True, False]]))
    assert obs.residual(image).flatten().tolist() == [0.0, 0.5, 0.0]  # the padded point counts nothing
    with pytest.raises(ValueError, match="use --guidance dps"):
        Projection(obs)
    with pytest.raises(ValueError, match="the observations are of images"):
        PixelObservation(torch.zeros(1, 1, 4, 4), torch.ones(1, 1, 4, 4)).check((2, 1, 4, 4))


def test_the_plugin_registers_its_methods_on_the_host():
    host = load_host()
    assert host.guidance.keys() == ["dps", "projection"]
    assert host.guidance.provider("dps") != "ddo.builtins"


def test_reconstruct_with_an_unconditional_checkpoint_and_guidance(tmp_path, tiny_runs, capsys):
    ckpt, images = tiny_runs["uncond"], tiny_runs["images"]
    out = tmp_path / "rec"
    assert main(["reconstruct", "--checkpoint", str(ckpt), "--images", str(images), "--limit", "3",
                 "--num-samples", "2", "--steps", "3", "--guidance", "dps", "--guidance-scale", "0.5",
                 "--out", str(out), "--no-progress"]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["guidance"] == "dps" and m["guidance_scale"] == 0.5
    # an unconditional network has no posterior-mean estimate of its own: the samples are the model's rows
    assert {"ddo-mean", "ddo-samples-mean", "ddo-sample", "biharmonic"} <= set(m["methods"])
    assert "ddo-x0" not in m["methods"] and m["methods"]["ddo-mean"]["source"] == "ddo-samples-mean"
    assert all(torch.isfinite(torch.tensor(v["psnr_query"])) for v in m["methods"].values())
    assert "guidance: dps (scale 0.5, 3 denoise steps)" in capsys.readouterr().out


@pytest.mark.parametrize("flags, message", [
    ((), "is an unconditional model: reconstruct with --guidance dps"),
    (("--guidance", "nope"), "unknown guidance method 'nope'; known: dps, projection"),
    (("--guidance", "dps", "--no-symmetrize-x0"), "--no-symmetrize-x0 applies to a conditional model's estimates"),
    (("--guidance-scale", "2"), "--guidance-scale scales a --guidance method; pass --guidance KEY too"),
])
def test_guidance_refusals_are_one_line(tmp_path, tiny_runs, capsys, flags, message):
    out = tmp_path / "rec"
    assert main(["reconstruct", "--checkpoint", str(tiny_runs["uncond"]), "--images", str(tiny_runs["images"]),
                 "--out", str(out), "--no-progress", *flags]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not out.exists()


def test_points_at_any_coordinates_guide_an_unconditional_model(tmp_path, tiny_runs, capsys):
    rng = torch.Generator().manual_seed(0)
    rows = torch.cat([torch.rand(40, 2, generator=rng), torch.rand(40, 3, generator=rng)], 1).tolist()
    csv = tmp_path / "points.csv"
    csv.write_text("x,y,r,g,b\n" + "\n".join(",".join(f"{v:.4f}" for v in r) for r in rows) + "\n")
    out = tmp_path / "pts"
    assert main(["points", "--checkpoint", str(tiny_runs["uncond"]), "--points", str(csv), "--resolution", "16",
                 "--num-samples", "2", "--steps", "2", "--guidance", "dps", "--out", str(out), "--no-progress"]) == 0
    record = json.loads((out / "points.json").read_text())
    assert record["guidance"] == "dps" and record["mean"] == "mean of the samples"
    assert torch.isfinite(torch.from_numpy(__import__("numpy").load(out / "mean.npy"))).all()
    capsys.readouterr()
    # projection replaces pixels: points at any coordinates have none, refused in one line before sampling
    assert main(["points", "--checkpoint", str(tiny_runs["uncond"]), "--points", str(csv), "--guidance", "projection",
                 "--out", str(tmp_path / "no"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith("these observations are points at any coordinates: use --guidance dps")
    assert len(err.splitlines()) == 1 and not (tmp_path / "no").exists()


def test_guided_runs_default_to_the_step_count_measured_best(tiny_runs):
    from ddo_conditional.cli.flags import load_conditional, sampling_plan
    from ddo_conditional.inference.guidance import GUIDED_STEPS

    host = load_host()
    args = {"checkpoint": tiny_runs["cond"], "num_samples": 2, "batch_size": 4, "seed": 0, "no_progress": True}
    denoiser, _, config = load_conditional(args, host, torch.device("cpu"))
    assert sampling_plan(args, host, config, denoiser).steps == 20  # an x0 model unguided: ddim, 20 steps
    assert sampling_plan({**args, "guidance": "dps"}, host, config, denoiser).steps == GUIDED_STEPS == 100
    assert sampling_plan({**args, "guidance": "projection", "steps": 7}, host, config, denoiser).steps == 7
    guided = {**args, "checkpoint": tiny_runs["uncond"], "guidance": "dps"}  # an eps model keeps its 250
    denoiser, _, config = load_conditional(guided, host, torch.device("cpu"))
    assert sampling_plan(guided, host, config, denoiser).steps == 250
