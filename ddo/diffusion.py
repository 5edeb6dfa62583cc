"""Forward diffusions (linear and blurring) and the denoising model around a network.

Shapes: images ``x: (B, C, H, W)``; times ``t: (B,)`` in ``[0, 1]``; per-mode signal scales
``alpha: (B, 1, H, W)`` (DCT modes); noise scales ``sigma: (B, 1, 1, 1)``.

The forward marginal is ``z_t = IDCT(alpha_t * DCT(x0)) + sigma_t * eps`` with ``eps`` drawn from
a :class:`~ddo.noise.NoiseField`; ``alpha_t(k) = alpha(t) exp(-(ky^2 + kx^2) tau(t))``.
"""
from __future__ import annotations

import math

import torch

from . import schedules
from .dct import dct2, idct2, mode_eigenvalues
from .noise import IndependentNoise, NoiseField

TIMESTEP_SAMPLERS = ("uniform", "low_discrepancy")
PARAMETERIZATIONS = ("eps", "x0", "v")
WEIGHT_METHODS = (None, "min-snr")

# How a sampler step bounds the x0 estimate before it uses it (``DenoisingDiffusion(x0_clip=...)``):
# "none" (the estimate as the network gives it: the reference's sampler), "clip" (clipped to the data
# range [-1, 1]: DDPM's clip_denoised), "dynamic" (Imagen's dynamic thresholding), "floor" (an eps
# network's division by alpha_t floored per mode, softly, at ALPHA_FLOOR * sigma_t) and "floor-clip"
# (the floor, then the clip). "auto" resolves per parameterisation (X0_CLIP_AUTO), as measured in
# benchmarks/eps_sampling.py.
X0_CLIPS = ("none", "clip", "dynamic", "floor", "floor-clip")
X0_CLIP_AUTO = {"eps": "floor-clip", "x0": "none", "v": "none"}
ALPHA_FLOOR = 1.0  # in units of sigma_t: the eps error reaches the x0 estimate multiplied by at most 1 / (2 ALPHA_FLOOR)
DYNAMIC_PERCENTILE = 0.995  # Imagen's


def resolve_x0_clip(x0_clip: str | None, parameterization: str) -> str:
    """The x0 bound in effect: ``x0_clip`` itself, or for ``"auto"`` / ``None`` the measured best for the
    parameterisation (:data:`X0_CLIP_AUTO`: the floor and the clip for ``eps`` networks, nothing for ``x0`` and ``v``)."""
    if x0_clip in (None, "auto"):
        return X0_CLIP_AUTO.get(parameterization, "none")
    if x0_clip not in X0_CLIPS:
        raise ValueError(f"unknown x0 clip {x0_clip!r}; known: auto, {', '.join(X0_CLIPS)}")
    return x0_clip


def _as_batch_time(t, batch: int, device, dtype) -> torch.Tensor:
    t = torch.as_tensor(t, device=device, dtype=dtype)
    return t.expand(batch) if t.ndim == 0 else t


class BlurringDiffusion:
    """Heat-dissipation ("blurring") diffusion with a variance-preserving noise schedule.

    Args:
        dim: number of spatial dimensions (only 2 is implemented).
        ch: image channels.
        ns_method: noise schedule, ``"vp_cosine"``.
        disp_method: blur-width schedule, ``"linear"``, ``"sine"`` or ``"log"``.
        sigma_blur_min, sigma_blur_max: blur widths at ``t = 0`` and ``t = 1``.
        noise: the noise field (default white noise).
    """

    def __init__(self, dim: int = 2, ch: int = 3, ns_method: str = "vp_cosine", disp_method: str = "sine",
                 sigma_blur_min: float = 0.05, sigma_blur_max: float = 0.25, noise: NoiseField | None = None):
        if dim != 2:
            raise ValueError("only dim=2 is implemented")
        if ns_method not in schedules.NOISE_SCHEDULES:
            raise ValueError(f"unknown noise schedule {ns_method!r}; known: {', '.join(schedules.NOISE_SCHEDULES)}")
        self.dim, self.ch, self.ns_method = dim, ch, ns_method
        self.dissipation = schedules.Dissipation(disp_method, sigma_blur_min, sigma_blur_max)
        self.noise = noise if noise is not None else IndependentNoise()

    @property
    def spectral(self) -> bool:
        """Whether the process needs the DCT basis (blurring or coloured noise)."""
        return not (self.dissipation.is_identity and self.noise.white)

    # --- transforms into the basis in which the process is diagonal -------------------------
    def to_modes(self, x: torch.Tensor) -> torch.Tensor:
        return dct2(x) if self.spectral else x

    def from_modes(self, u: torch.Tensor) -> torch.Tensor:
        return idct2(u) if self.spectral else u

    def noise_modes(self, shape, generator=None, device=None, dtype=torch.float32) -> torch.Tensor:
        """A noise sample expressed in the diagonal basis."""
        return self.noise.sample_dct(shape, generator=generator, device=device, dtype=dtype)

    # --- schedule ---------------------------------------------------------------------------
    def log_alpha_sigma(self, t: torch.Tensor, img_dim) -> tuple[torch.Tensor, torch.Tensor]:
        """``log alpha_t`` per mode ``(B, 1, H, W)`` (or ``(B, 1, 1, 1)`` without blur), ``log sigma_t``."""
        t = t.reshape(-1, 1, 1, 1)
        log_a, log_s = schedules.log_alpha_sigma(t)
        if not self.dissipation.is_identity:
            lam = mode_eigenvalues(img_dim, device=t.device, dtype=t.dtype)
            log_a = log_a - lam * self.dissipation.tau(t)
        return log_a, log_s

    def get_alpha_sigma(self, t: torch.Tensor, img_dim) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-mode signal scale ``alpha_t (B, 1, H, W)`` and noise scale ``sigma_t (B, 1, 1, 1)``."""
        log_a, log_s = self.log_alpha_sigma(t, img_dim)
        h, w = (img_dim, img_dim) if isinstance(img_dim, int) else img_dim
        return log_a.exp().expand(-1, 1, h, w), log_s.exp()

    def diffuse(self, x: torch.Tensor, t: torch.Tensor, generator=None):
        """Sample ``z_t`` given ``x``: returns ``(z_t, eps, mean, sigma)``, ``eps`` in grid space."""
        t = _as_batch_time(t, x.shape[0], x.device, x.dtype)
        log_a, log_s = self.log_alpha_sigma(t, x.shape[-2:])
        sigma = log_s.exp()
        eps_modes = self.noise_modes(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        if self.spectral:
            mean = idct2(log_a.exp() * dct2(x))
            eps = idct2(eps_modes)
        else:
            mean, eps = log_a.exp() * x, eps_modes
        return mean + sigma * eps, eps, mean, sigma

    def sample(self, t: torch.Tensor, x0: torch.Tensor, generator=None) -> torch.Tensor:
        """A draw of ``z_t ~ q(z_t | x0)``."""
        return self.diffuse(x0, t, generator=generator)[0]

    def config(self) -> dict:
        d = self.dissipation
        return {"ns_method": self.ns_method, "disp_method": d.method, "sigma_blur_min": d.sigma_blur_min,
                "sigma_blur_max": d.sigma_blur_max, "noise": repr(self.noise)}


class LinearDiffusion(BlurringDiffusion):
    """The plain variance-preserving diffusion: blurring with zero width."""

    def __init__(self, dim: int = 2, ch: int = 3, ns_method: str = "vp_cosine", noise: NoiseField | None = None):
        super().__init__(dim, ch, ns_method, "linear", 0.0, 0.0, noise)


class DenoisingDiffusion:
    """The denoiser: a network ``F(c_in z, temp, v, **kwargs)`` and what its output means.

    Per DCT mode the forward process is ``u = a x + s eps`` (``a`` per mode, ``s`` a scalar). The
    ``parameterization`` says what the network predicts, and this object turns it into both
    estimates, so losses and samplers ask for the one they need (:meth:`epsilon`, :meth:`x0`, or both
    from one call with :meth:`predict`):

    - ``eps``: ``eps_hat = F``; ``x0_hat = IDCT((u - s DCT(eps_hat)) / a)`` (divisor floored at ``clip_min``);
    - ``x0``: ``x0_hat = F``; ``eps_hat = (z - IDCT(a DCT(x0_hat))) / s``;
    - ``v`` (``v = a eps - s x`` per mode): ``x0_hat = (a u - s v) / (a^2 + s^2)`` and
      ``eps_hat = (s u + a v) / (a^2 + s^2)`` (under blurring ``a^2 + s^2 != 1``).

    For ``x0`` and ``v`` the network's input is scaled by ``c_in = alpha(t)`` (the scalar VP signal
    scale): near ``t = 1`` the input is almost pure noise that carries no information about ``x0``, and
    damping it makes the estimate there (the posterior mean) nearly independent of the draw. An ``eps``
    network sees ``z`` unscaled, as in the reference.

    Sampler steps read the network through :meth:`step_prediction`, whose ``x0`` estimate is bounded as
    ``x0_clip`` says, with the ``eps`` the step uses made consistent with it (``eps = (u - a x0) / s``
    per mode). Why an ``eps`` network needs it under blurring: its estimate
    ``x0_hat = (u - s eps_hat) / a`` multiplies the network's error in high modes by ``s / a``, which
    grows like ``exp(|k|^2 tau(t))``; one step to ``s`` multiplies it by ``a_s / a_t``. ``"floor"``
    floors the blur factor ``exp(-|k|^2 tau(t))`` of that divisor at :data:`ALPHA_FLOOR` (the VP part
    ``alpha(t)`` stays exact, as in a diffusion without blurring), so no mode's error is amplified
    more than ``1 / ALPHA_FLOOR`` beyond what the VP schedule does.

    Every method forwards ``**kwargs`` unchanged to the network; this is how conditioning
    information (for example a context image) reaches a wrapped network.

    Args:
        forward_diffusion: :class:`BlurringDiffusion` or :class:`LinearDiffusion`.
        model: ``nn.Module`` called as ``model(x, temp, v, **kwargs)`` with ``temp: (B,)`` in ``[0, 1]``.
        parameterization: ``"eps"``, ``"x0"`` or ``"v"``: what the network predicts.
        timestep_sampler: ``"uniform"`` or ``"low_discrepancy"`` (stratified per batch).
        use_clip: the same as ``x0_clip="clip"`` (kept for callers that name it).
        weight_method: ``None`` (plain DSM) or ``"min-snr"`` (per-example weight
            ``min(SNR, 5) / SNR`` with ``SNR = exp(lambda(t))``: the ``x0`` error weighted by SNR capped at 5).
        clip_min: floor on divisors ``alpha_t`` when an ``eps`` network's ``x0`` estimate is formed.
        x0_clip: how sampler steps bound the ``x0`` estimate: ``"auto"`` (default: ``"floor-clip"`` for
            ``eps`` networks, ``"none"`` for ``x0`` and ``v``), ``"none"``, ``"clip"`` (to ``[-1, 1]`` in
            grid space), ``"dynamic"`` (Imagen: divided by ``max(1, q)``, ``q`` the 99.5th percentile of
            ``|x0_hat|`` per image, after clipping to ``[-q, q]``), ``"floor"`` (above; for ``x0`` and
            ``v`` networks, which divide by no ``alpha_t``, the same as ``"none"``) or ``"floor-clip"``
            (the floor, then the clip).
    """

    def __init__(self, forward_diffusion: BlurringDiffusion, model: torch.nn.Module, parameterization: str = "eps",
                 timestep_sampler: str = "uniform", use_clip: bool = False, weight_method: str | None = None,
                 clip_min: float = 1e-8, x0_clip: str | None = "auto"):
        if parameterization not in PARAMETERIZATIONS:
            raise ValueError(f"unknown parameterization {parameterization!r}; known: {', '.join(PARAMETERIZATIONS)}")
        x0_clip = "clip" if use_clip and x0_clip in (None, "auto", "none") else x0_clip
        self.x0_clip = resolve_x0_clip(x0_clip, parameterization)
        if timestep_sampler not in TIMESTEP_SAMPLERS:
            raise ValueError(
                f"unknown timestep sampler {timestep_sampler!r}; known: {', '.join(TIMESTEP_SAMPLERS)}"
            )
        if weight_method not in WEIGHT_METHODS:
            raise ValueError(f"unknown weight method {weight_method!r}; known: None, min-snr")
        self.forward_diffusion = forward_diffusion
        self.network = model
        self.parameterization = parameterization
        self.timestep_sampler = timestep_sampler
        self.weight_method = weight_method
        self.clip_min = clip_min

    # --- network calls ----------------------------------------------------------------------
    def model(self, x: torch.Tensor, temp: torch.Tensor, v: torch.Tensor | None = None, **kwargs) -> torch.Tensor:
        """The raw network output for ``x: (B, C, H, W)`` at times ``temp: (B,)`` (input scaled by ``c_in``)."""
        if self.parameterization != "eps":
            x = x * schedules.alpha_sigma(temp.to(x.dtype))[0].reshape(-1, 1, 1, 1)
        return self.network(x, temp, v, **kwargs)

    def predict(self, y: torch.Tensor, s, v: torch.Tensor | None = None, **kwargs) -> "Prediction":
        """Both estimates from one network call, in the DCT basis (see :class:`Prediction`)."""
        s = _as_batch_time(s, y.shape[0], y.device, y.dtype)
        fd = self.forward_diffusion
        log_a, log_s = fd.log_alpha_sigma(s, y.shape[-2:])
        out = fd.to_modes(self.model(y, s, v, **kwargs))
        return Prediction(self.parameterization, fd.to_modes(y), out, log_a, log_s, self.clip_min)

    def step_prediction(self, y: torch.Tensor, s, v: torch.Tensor | None = None, **kwargs) -> "Prediction":
        """:meth:`predict` as sampler steps use it: the ``x0`` estimate bounded as ``x0_clip`` says and,
        when it was bounded, read as an ``x0`` prediction, so that the ``eps`` of the step is
        ``(u - a x0) / s`` per mode, consistent with it. With ``x0_clip="none"``: :meth:`predict` itself."""
        p = self.predict(y, s, v, **kwargs)
        floor = self.x0_clip in ("floor", "floor-clip") and self.parameterization == "eps"
        clip = self.x0_clip in ("clip", "floor-clip", "dynamic")
        if not (floor or clip):  # "none", or "floor" for a network that divides by no alpha_t
            return p
        fd = self.forward_diffusion
        if floor:  # x0 = a (u - s eps) / (a^2 + (c s)^2): the divisor a + (c s)^2 / a is at least 2 c s
            log_gain = p.log_a - torch.logaddexp(2 * p.log_a, 2 * (p.log_s + math.log(ALPHA_FLOOR)))
            # in the log domain and floored at e^-80 (a normal float32): no denormal arithmetic in high modes
            x0 = (p.u - p.log_s.exp() * p.out) * log_gain.clamp_min(-80.0).exp()
        else:
            x0 = p.x0_modes()
        if clip:
            x = fd.from_modes(x0)
            if self.x0_clip == "dynamic":
                q = torch.quantile(x.abs().flatten(1), DYNAMIC_PERCENTILE, dim=1)
                q = q.clamp_min(1.0).reshape(-1, *([1] * (x.dim() - 1)))
                x = torch.maximum(torch.minimum(x, q), -q) / q
            else:
                x = x.clamp(-1.0, 1.0)
            x0 = fd.to_modes(x)
        return Prediction("x0", p.u, x0, p.log_a, p.log_s, self.clip_min)

    def epsilon(self, y: torch.Tensor, s, v: torch.Tensor | None = None, **kwargs) -> torch.Tensor:
        """Predicted noise ``eps_hat(y, s)`` in grid space, ``(B, C, H, W)``."""
        if self.parameterization == "eps":  # the network's own output, untouched
            return self.model(y, _as_batch_time(s, y.shape[0], y.device, y.dtype), v, **kwargs)
        return self.forward_diffusion.from_modes(self.predict(y, s, v, **kwargs).eps_modes())

    def x0(self, y: torch.Tensor, s, v: torch.Tensor | None = None, **kwargs) -> torch.Tensor:
        """Estimate of the clean image ``x0_hat(y, s)`` in grid space, ``(B, C, H, W)`` (not clipped)."""
        if self.parameterization == "x0":
            return self.model(y, _as_batch_time(s, y.shape[0], y.device, y.dtype), v, **kwargs)
        return self.forward_diffusion.from_modes(self.predict(y, s, v, **kwargs).x0_modes())

    def score(self, y: torch.Tensor, s, v: torch.Tensor | None = None, **kwargs) -> torch.Tensor:
        """``-eps_hat / sigma_s``: the score of ``q(z_s)`` in the metric of the noise field."""
        s = _as_batch_time(s, y.shape[0], y.device, y.dtype)
        _, log_s = self.forward_diffusion.log_alpha_sigma(s, y.shape[-2:])
        return -self.epsilon(y, s, v, **kwargs) / log_s.exp()

    def pred(self, y: torch.Tensor, s, v: torch.Tensor | None = None, **kwargs) -> torch.Tensor:
        """The ``x0`` estimate as sampler steps use it (bounded as ``x0_clip`` says), in grid space."""
        return self.forward_diffusion.from_modes(self.step_prediction(y, s, v, **kwargs).x0_modes())

    @property
    def use_clip(self) -> bool:
        return self.x0_clip == "clip"

    # --- training ---------------------------------------------------------------------------
    def sample_timesteps(self, batch: int, device=None, dtype=torch.float32, generator=None) -> torch.Tensor:
        """Training times ``(B,)``: i.i.d. uniform, or one uniform shift of a regular grid."""
        if self.timestep_sampler == "uniform":
            return torch.rand(batch, device=device, dtype=dtype, generator=generator)
        u0 = torch.rand((), device=device, dtype=dtype, generator=generator)
        return torch.remainder(u0 + torch.arange(batch, device=device, dtype=dtype) / batch, 1.0)

    def dsm(self, z0: torch.Tensor, v: torch.Tensor | None = None, reduction: str = "sum", **kwargs) -> torch.Tensor:
        """Denoising score matching loss, ``0.5 * sum_{c,h,w} (eps_hat - eps)^2``.

        Returns ``(B,)``; with ``reduction="none"`` the unreduced ``(B, C, H, W)`` terms (so that a
        loss may restrict the sum to a subset of pixels). The weighting, if any, is applied per example.
        """
        if reduction not in ("sum", "none"):
            raise ValueError("reduction must be 'sum' or 'none'")
        t = self.sample_timesteps(z0.shape[0], device=z0.device, dtype=z0.dtype)
        z_t, eps, _, _ = self.forward_diffusion.diffuse(z0, t)
        eps_hat = self.epsilon(z_t, t, v, **kwargs)
        terms = 0.5 * (eps_hat - eps) ** 2
        if self.weight_method == "min-snr":
            snr = schedules.logsnr(t).exp()
            terms = terms * (snr.clamp(max=5.0) / snr).reshape(-1, 1, 1, 1)
        return terms if reduction == "none" else terms.flatten(1).sum(1)

    # --- ancestral sampling -----------------------------------------------------------------
    def _step_coefficients(self, t: torch.Tensor, s: torch.Tensor, img_dim):
        """Per-mode coefficients of ``q(z_s | z_t, x)``, computed in the log domain (no underflow)."""
        fd = self.forward_diffusion
        log_at, log_st = fd.log_alpha_sigma(t, img_dim)
        log_as, log_ss = fd.log_alpha_sigma(s, img_dim)
        a_ts = torch.exp(log_at - log_as)
        sig_t2, sig_s2 = torch.exp(2 * log_st), torch.exp(2 * log_ss)
        v_ts = (sig_t2 - a_ts**2 * sig_s2).clamp_min(0.0)
        return a_ts, sig_t2, sig_s2, v_ts, log_at, log_as, log_st

    def denoise_step(self, z_t: torch.Tensor, t, num_steps: int, v: torch.Tensor | None = None, *,
                     generator: torch.Generator | None = None, **kwargs) -> torch.Tensor:
        """One ancestral step from ``t`` to ``s = max(t - 1/num_steps, 0)``.

        Per DCT mode with ``u = DCT(z_t)``: mean
        ``a_ts sigma_s^2/sigma_t^2 u + v_ts/sigma_t^2 alpha_s DCT(x0_hat)`` (``alpha_s x0_hat`` written as
        :meth:`Prediction.scaled_x0_modes` forms it),
        variance ``v_ts sigma_s^2 / sigma_t^2`` (times the noise field's mode variance). The step
        that reaches ``s = 0`` returns the mean.
        """
        t = _as_batch_time(t, z_t.shape[0], z_t.device, z_t.dtype)
        return self.ancestral_step(z_t, t, (t - 1.0 / num_steps).clamp_min(0.0), v, generator=generator, **kwargs)

    def ancestral_step(self, z_t: torch.Tensor, t, s, v: torch.Tensor | None = None, *,
                       generator: torch.Generator | None = None, **kwargs) -> torch.Tensor:
        """The step of :meth:`denoise_step` between arbitrary times ``t > s`` (``s = 0``: the mean)."""
        fd = self.forward_diffusion
        b, device, dtype = z_t.shape[0], z_t.device, z_t.dtype
        t, s = _as_batch_time(t, b, device, dtype), _as_batch_time(s, b, device, dtype)
        a_ts, sig_t2, sig_s2, v_ts, log_at, log_as, log_st = self._step_coefficients(t, s, z_t.shape[-2:])
        p = self.step_prediction(z_t, t, v, **kwargs)
        mean = a_ts * sig_s2 / sig_t2 * p.u + v_ts / sig_t2 * p.scaled_x0_modes(log_as)
        if bool((s <= 1e-9).all()):
            return fd.from_modes(mean)
        std = torch.sqrt(v_ts * sig_s2 / sig_t2)
        noise = fd.noise_modes(z_t.shape, generator=generator, device=device, dtype=dtype)
        return fd.from_modes(mean + std * noise)

    def deblur(self, z_0: torch.Tensor, floor: float = 1e-3) -> torch.Tensor:
        """The clean image from a sampler's end point ``z_0 = alpha_0 x`` (slightly blurred when
        ``sigma_blur_min > 0``): each DCT mode divided by ``alpha_0``, floored at ``floor`` (the
        division would amplify an ``eps`` network's error in modes the blur all but removes)."""
        fd = self.forward_diffusion
        zero = torch.zeros(z_0.shape[0], device=z_0.device, dtype=z_0.dtype)
        log_a, _ = fd.log_alpha_sigma(zero, z_0.shape[-2:])
        return fd.from_modes(fd.to_modes(z_0) / log_a.exp().clamp_min(floor))

    def prior_sample(self, shape, generator=None, device=None, dtype=torch.float32) -> torch.Tensor:
        """``z_1 = sigma(1) * noise`` (the signal is ``alpha(1) < 0.007`` of the data and dropped)."""
        fd = self.forward_diffusion
        one = torch.ones(shape[0], device=device, dtype=dtype)
        _, log_s = fd.log_alpha_sigma(one, shape[-2:])
        return log_s.exp() * fd.noise.sample(shape, generator=generator, device=device, dtype=dtype)

    def config(self) -> dict:
        return {"parameterization": self.parameterization, "timestep_sampler": self.timestep_sampler,
                "x0_clip": self.x0_clip, "weight_method": self.weight_method,
                **self.forward_diffusion.config()}


class Prediction:
    """One network output read in the DCT basis: ``u = DCT(z_t)``, ``out = DCT(network output)`` and the
    per-mode ``log a_t`` and ``log s_t`` of the step. Each estimate is written in the form that does
    not amplify rounding for the parameterization at hand."""

    def __init__(self, parameterization: str, u, out, log_a, log_s, clip_min: float = 1e-8):
        self.parameterization, self.u, self.out = parameterization, u, out
        self.log_a, self.log_s, self.clip_min = log_a, log_s, clip_min

    def eps_modes(self) -> torch.Tensor:
        a, s = self.log_a.exp(), self.log_s.exp()
        if self.parameterization == "eps":
            return self.out
        if self.parameterization == "x0":
            return (self.u - a * self.out) / s
        return (s * self.u + a * self.out) / (a * a + s * s)

    def x0_modes(self) -> torch.Tensor:
        a, s = self.log_a.exp(), self.log_s.exp()
        if self.parameterization == "eps":
            return (self.u - s * self.out) / a.clamp_min(self.clip_min)
        if self.parameterization == "x0":
            return self.out
        return (a * self.u - s * self.out) / (a * a + s * s)

    def scaled_x0_modes(self, log_a_to: torch.Tensor) -> torch.Tensor:
        """``a_to DCT(x0_hat)`` with ``a_to = exp(log_a_to)`` per mode. For an ``eps`` network the ratio
        ``a_to / a_t`` is formed in the log domain (``a_t`` underflows in high modes); for ``x0`` and
        ``v`` networks every coefficient is at most 1."""
        if self.parameterization == "eps":
            return torch.exp(log_a_to - self.log_a) * (self.u - self.log_s.exp() * self.out)
        return log_a_to.exp() * self.x0_modes()


__all__ = ["BlurringDiffusion", "LinearDiffusion", "DenoisingDiffusion", "Prediction", "PARAMETERIZATIONS",
           "TIMESTEP_SAMPLERS", "X0_CLIPS", "X0_CLIP_AUTO", "ALPHA_FLOOR", "resolve_x0_clip"]
