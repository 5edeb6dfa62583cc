"""Sparse-observation tasks on PDE field pairs (channel 0 the input, channel 1 the solution).

The published benchmark of sparse sensors on PDEs observes 500 points of a 128x128 grid and asks for
the *forward* task (points of the input -> the solution), the *inverse* task (points of the
solution -> the input) or the *joint* one (points of both -> both). Here a task is the set of
channels observed at an image's context pixels (:data:`OBSERVED`); ``--observe tasks`` gives every
image one task, a pure function of ``(seed, index)``, so one model learns all three.

:class:`Routes` holds the classical estimates, in physical units: Gaussian conditioning
(co-kriging, :mod:`~ddo_conditional.classical.kriging`) of both channels from whatever is observed, and the
best classical route through the physics where one exists: forward, the kriged input pushed through
the solver (Navier-Stokes to ``T = 1``; Darcy's coefficient thresholded, then solved for the
pressure); inverse Navier-Stokes, the kriged ``w1`` integrated backward with its low modes
(:func:`~ddo_conditional.pde.solvers.ns_backward`); joint Navier-Stokes, that backward estimate's low modes of ``w0`` with
the co-kriged ``w0``'s higher ones. Darcy's inverse and joint tasks have no such route that is cheap
enough to compute for every training image: the route is the co-kriging there. For evaluation,
:meth:`Routes.inversion` fits Darcy's coefficient to the observed pressures (and its own points, joint)
through the solver, and :meth:`Routes.posterior` gives the forward task's posterior-mean pressure.
"""
from __future__ import annotations

import hashlib

import torch
from ddo.api import DARCY_DEFAULTS, NavierStokes2d, darcy_solve, ns_forcing

from ..classical.biharmonic import biharmonic_inpaint
from ..classical.kriging import EmpiricalGaussian, TorusGaussian, conditional_samples, krige
from ..data.masks import OBSERVED
from ..inference.metrics import relative_l2
from .datasets import NS_PAIR_DEFAULTS, PAIR_NATIVE, load_pairs, to_physical
from .inversion import INVERSION_EVALUATIONS, darcy_invert
from .posterior import POSTERIOR_SAMPLES, darcy_posterior, darcy_posterior_draws, latent_model
from .solvers import ns_backward

DARCY_LEVELS = (DARCY_DEFAULTS["low"], DARCY_DEFAULTS["high"])  # the coefficient's two values


def task_of(observed) -> str:
    """The task whose observed channels are ``observed`` (a pair of truth values)."""
    key = tuple(bool(v) for v in observed)
    return next(t for t, o in OBSERVED.items() if o == key)


def threshold(a: torch.Tensor, levels=DARCY_LEVELS) -> torch.Tensor:
    """Darcy's coefficient estimate set to the nearer of its two values."""
    lo, hi = levels
    return torch.where(a >= (lo + hi) / 2, torch.as_tensor(hi, dtype=a.dtype), torch.as_tensor(lo, dtype=a.dtype))


def error_rate(pred: torch.Tensor, true: torch.Tensor, levels=DARCY_LEVELS) -> torch.Tensor:
    """The fraction of pixels where the thresholded ``pred`` and ``true`` differ: ``(B,)`` from ``(B, H, W)``."""
    return (threshold(pred, levels) != threshold(true, levels)).flatten(1).double().mean(1)


def task_errors(kind: str, pred: torch.Tensor, true: torch.Tensor) -> torch.Tensor:
    """Per-image, per-channel errors ``(B, 2)`` of physical pairs ``(B, 2, H, W)``: relative L2, except
    Darcy's coefficient (channel 0), whose error is the thresholded error rate."""
    err = relative_l2(pred.double(), true.double(), per_channel=True)
    if kind == "darcy-pair":
        err[:, 0] = error_rate(pred[:, 0], true[:, 0])
    return err


JOINT_MODES = 10  # Navier-Stokes joint: w0's modes up to this from the backward solve, above from kriging


def splice(low: torch.Tensor, high: torch.Tensor, modes: int) -> torch.Tensor:
    """The integer wavenumbers ``|m_x|, |m_y| <= modes`` of ``low`` and the rest of ``high`` (``(..., H, W)``)."""
    h, w = low.shape[-2:]
    keep = ((torch.fft.fftfreq(h, 1.0 / h).abs()[:, None] <= modes)
            & (torch.fft.fftfreq(w, 1.0 / w).abs()[None, :] <= modes)).to(low.dtype)
    return torch.fft.ifft2(torch.fft.fft2(low) * keep + torch.fft.fft2(high) * (1 - keep)).real


class Routes:
    """The classical estimates of ``kind`` at one resolution, from the training fields (see the module doc)."""

    def __init__(self, kind: str, train_fields: torch.Tensor, dt: float = NS_PAIR_DEFAULTS["dt"]):
        self.kind, self.dt, self._latent = kind, dt, None
        self.h, self.w = train_fields.shape[-2:]
        # what every estimate here is a function of besides its observations: the key of the estimate cache
        digest = hashlib.sha256(repr((kind, float(dt), tuple(train_fields.shape))).encode())
        digest.update(train_fields.double().contiguous().numpy().tobytes())
        self.fingerprint = digest.hexdigest()
        if kind == "navier-stokes-pair":  # periodic and stationary about the forcing's mean response
            self.gaussian, self.jitter, self.coefficient = TorusGaussian.fit(train_fields), 1e-8, None
        else:
            # the pressure vanishes on the boundary: the sample covariance of the pairs, whose rank is the
            # number of pairs, with a nugget against over-fitting it; the coefficient alone is a thresholded
            # periodic field, stationary: from its own points it is kriged with that model
            self.gaussian, self.jitter = EmpiricalGaussian.fit(train_fields), 1e-2
            self.coefficient = TorusGaussian.fit(train_fields[:, :1], mean_modes=0)

    @classmethod
    def for_dataset(cls, kind: str, resolution: int, progress: bool = False) -> "Routes":
        train = load_pairs(kind, "train", resolution, progress=progress)
        return cls(kind, torch.from_numpy(to_physical(kind, train.images)))

    @staticmethod
    def _observations(pixels: torch.Tensor, values: torch.Tensor, observed):
        """``(observed channels, channel per observation, pixel per observation, values)``: ``values (K, 2)``
        of the ``observed`` channels flattened channel by channel, as the Gaussian models take them."""
        chans = [c for c in range(2) if observed[c]]
        return (chans, torch.tensor(chans).repeat_interleave(len(pixels)), pixels.long().repeat(len(chans)),
                values[:, chans].T.reshape(-1))

    def _latent_model(self) -> TorusGaussian:
        """Darcy's latent Gaussian field on this grid (:func:`~ddo_conditional.pde.posterior.latent_model`), fitted once."""
        if self._latent is None:
            self._latent = latent_model(self.h)
        return self._latent

    def _cokriged(self, pixels: torch.Tensor, values: torch.Tensor, observed) -> torch.Tensor:
        chans, ch, px, vals = self._observations(pixels, values, observed)
        est = krige(self.gaussian, ch, px, vals, self.jitter)
        if self.kind == "darcy-pair" and chans == [0]:
            est[0] = krige(self.coefficient, torch.zeros_like(pixels).long(), pixels.long(), values[:, 0])[0]
        return est

    def kriging(self, pixels: torch.Tensor, values: torch.Tensor, observed) -> torch.Tensor:
        """Co-kriging ``(2, H, W)`` of both channels from ``values (K, 2)`` at flat ``pixels (K,)``, the
        channels ``observed`` only; Darcy's coefficient thresholded."""
        est = self._cokriged(pixels, values, observed)
        if self.kind == "darcy-pair":
            est[0] = threshold(est[0])
        return est

    def inversion(self, pixels: torch.Tensor, values: torch.Tensor, observed=(False, True),
                  evaluations: int = INVERSION_EVALUATIONS) -> torch.Tensor:
        """Darcy's inverse or joint task through its physics ``(2, H, W)``: the coefficient fitted to the
        observed pressures and, where observed, to its own points
        (:func:`~ddo_conditional.pde.inversion.darcy_invert`, from the co-kriged coefficient), thresholded,
        and the pressure it solves for plus its misfit at the observed pressures inpainted (biharmonic,
        0 on the boundary, where the solve is exact). ``values (K, 2)`` as in :meth:`kriging`."""
        start = self._cokriged(pixels, values, observed)[0]
        known = (pixels, values[:, 0]) if observed[0] else None
        a = threshold(darcy_invert(pixels, values[:, 1], start, evaluations, known))
        u = solve_forward(self.kind, a[None])[0]
        h, w = u.shape
        border = torch.cat([torch.arange(w), (h - 1) * w + torch.arange(w), torch.arange(1, h - 1) * w,
                            torch.arange(1, h - 1) * w + w - 1])
        inside = ~torch.isin(pixels.long(), border)
        inner = pixels.long()[inside]
        misfit = torch.cat([values[inside, 1].double() - u.flatten()[inner], torch.zeros(len(border)).double()])
        fix = biharmonic_inpaint(misfit[None, :, None], torch.cat([inner, border])[None], h, w)[0, 0]
        return torch.stack([a, u + fix])

    def posterior(self, pixels: torch.Tensor, values: torch.Tensor, samples: int = POSTERIOR_SAMPLES) -> torch.Tensor:
        """Darcy's forward task by its posterior ``(2, H, W)``: the majority coefficient and the
        posterior-mean pressure given the coefficient's points (:func:`~ddo_conditional.pde.posterior.darcy_posterior`;
        the latent field's model fitted once). ``values (K, 2)``, the coefficient in channel 0. On the
        grid the pairs are generated on only (:data:`~ddo_conditional.pde.datasets.PAIR_NATIVE`), where it is two-valued."""
        if self.h != PAIR_NATIVE:
            raise ValueError(f"the posterior holds on the {PAIR_NATIVE}x{PAIR_NATIVE} grid of the pairs, not {self.h}x{self.w}")
        return darcy_posterior(self._latent_model(), pixels, values[:, 0], samples)

    def reference_draws(self, pixels: torch.Tensor, values: torch.Tensor, observed, n: int) -> torch.Tensor:
        """``(n, 2, H, W)`` draws of a reference posterior given ``values (K, 2)`` at ``pixels`` (physical
        units): conditional simulations of the co-kriging model (a prior draw moved by the kriging of its
        misfit at the observations, :func:`~ddo_conditional.classical.kriging.conditional_samples`), each
        pushed through the task's route where one exists: forward, the drawn input solved (Darcy's
        coefficient thresholded, the coefficient drawn from its own model as :meth:`kriging` does; on the
        pairs' own grid, the draws of :meth:`posterior`'s Gibbs posterior instead, the exact posterior of
        the data's generator);
        Navier-Stokes inverse, the drawn ``w1`` integrated backward, joint, that backward solve's low modes
        spliced into the drawn ``w0``. Darcy's inverse and joint tasks are the co-kriging draws themselves
        (the coefficient thresholded): a Gaussian reference, not the posterior through the physics. The
        draws are a pure function of the observations (their hash seeds them)."""
        task = task_of(observed)
        if self.kind == "darcy-pair" and task == "forward" and self.h == PAIR_NATIVE:
            return darcy_posterior_draws(self._latent_model(), pixels, values[:, 0], n)
        chans, ch, px, vals = self._observations(pixels, values.double(), observed)
        seed = int.from_bytes(hashlib.sha256(px.numpy().tobytes() + vals.numpy().tobytes()).digest()[:8], "little")
        g = torch.Generator().manual_seed(seed % (2**63))
        draws = conditional_samples(self.gaussian, ch, px, vals, n, g, self.jitter)
        if self.kind == "darcy-pair":
            if chans == [0]:
                draws[:, 0] = conditional_samples(self.coefficient, torch.zeros_like(pixels).long(), pixels.long(),
                                                  values[:, 0].double(), n, g)[:, 0]
            draws[:, 0] = threshold(draws[:, 0])
        if task == "forward":
            draws[:, 1] = solve_forward(self.kind, draws[:, 0], self.dt)
        elif self.kind == "navier-stokes-pair":
            back = solve_backward(draws[:, 1], self.dt)
            draws[:, 0] = back if task == "inverse" else splice(back, draws[:, 0], JOINT_MODES)
        return draws

    def route(self, pixels: torch.Tensor, values: torch.Tensor, observed) -> torch.Tensor:
        """The best classical route ``(2, H, W)`` (see the module doc)."""
        return self.routes([pixels], [values], [observed])[0]

    def routes(self, pixels: list, values: list, observed: list) -> list[torch.Tensor]:
        """:meth:`route` of several images; the Navier-Stokes solves run as one batch per direction."""
        out = [self.kriging(p, v, o) for p, v, o in zip(pixels, values, observed)]
        tasks = [task_of(o) for o in observed]
        fwd = [i for i, t in enumerate(tasks) if t == "forward"]
        if fwd:
            for i, u in zip(fwd, solve_forward(self.kind, torch.stack([out[i][0] for i in fwd]), self.dt)):
                out[i][1] = u
        back = [i for i, t in enumerate(tasks) if t != "forward" and self.kind == "navier-stokes-pair"]
        if back:
            for i, w in zip(back, solve_backward(torch.stack([out[i][1] for i in back]), self.dt)):
                out[i][0] = w if tasks[i] == "inverse" else splice(w, out[i][0], JOINT_MODES)
        return out


def solve_forward(kind: str, inputs: torch.Tensor, dt: float = NS_PAIR_DEFAULTS["dt"]) -> torch.Tensor:
    """The forward routes' physics on input fields ``(B, H, W)`` (physical units): Navier-Stokes solved to
    ``T = 1`` (one batch), Darcy's coefficient thresholded and solved for the pressure."""
    if kind == "navier-stokes-pair":
        n = inputs.shape[-1]
        solver = NavierStokes2d(n, NS_PAIR_DEFAULTS["visc"], dt, ns_forcing(n), dtype=torch.float32)
        return solver.solve(inputs.float(), NS_PAIR_DEFAULTS["t_end"]).to(inputs.dtype)
    return torch.stack([torch.from_numpy(darcy_solve(threshold(a).numpy())).to(inputs.dtype) for a in inputs])


def solve_backward(w1: torch.Tensor, dt: float = NS_PAIR_DEFAULTS["dt"]) -> torch.Tensor:
    """Navier-Stokes' inverse route on ``w1 (B, H, W)``: integrated back to ``t = 0`` with its low modes."""
    return ns_backward(w1, NS_PAIR_DEFAULTS["t_end"], NS_PAIR_DEFAULTS["visc"], dt).to(w1.dtype)


def exact_input_errors(kind: str, pairs: torch.Tensor, dt: float = NS_PAIR_DEFAULTS["dt"]) -> dict:
    """The routes' own error floor on physical pairs ``(B, 2, H, W)``: per task, the per-image error
    ``(B,)`` of the route's physics fed the *true* observed field instead of its estimate (forward: the
    input solved; Navier-Stokes inverse: ``w1`` integrated backward). What is left is the solver's error on
    this grid against the fields it is scored on (the pairs are solved at 128x128 and area-downsampled),
    and for the backward solve the modes it discards; a route's error above it is its estimate's."""
    errors = {"forward": relative_l2(solve_forward(kind, pairs[:, 0], dt)[:, None], pairs[:, 1:], per_channel=True)[:, 0]}
    if kind == "navier-stokes-pair":
        errors["inverse"] = relative_l2(solve_backward(pairs[:, 1], dt)[:, None], pairs[:, :1], per_channel=True)[:, 0]
    return errors


def physical_values(kind: str, values: torch.Tensor) -> torch.Tensor:
    """Context values ``(..., K, 2)`` in the model's units back in physical units."""
    return to_physical(kind, values.transpose(-1, -2)[..., None])[..., 0].transpose(-1, -2)


ROUTE_NOTES = {
    ("navier-stokes-pair", "forward"): "kriged w0 solved to T = 1",
    ("navier-stokes-pair", "inverse"): "kriged w1 integrated backward (modes <= 12)",
    ("navier-stokes-pair", "joint"): "w0: backward solve's modes <= 10, co-kriging's above; w1: co-kriging",
    ("darcy-pair", "forward"): "kriged a, thresholded, solved for u",
}

__all__ = ["task_of", "threshold", "error_rate", "task_errors", "Routes", "physical_values",
           "ROUTE_NOTES", "solve_forward", "solve_backward", "exact_input_errors"]
