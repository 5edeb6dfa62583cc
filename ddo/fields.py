"""Physical fields generated on the machine: 2D Navier-Stokes vorticity and Darcy flow.

Every sample is a pure function of ``(seed, index, parameters)``: its random input is drawn from a
generator seeded by those alone, and the solvers act on each sample independently, so a sample does
not depend on the batch it was computed in. Generated fields are cached on disk, keyed by the
parameters (:func:`ddo.data.cache_dir`).

- :func:`navier_stokes`: vorticity ``w`` of incompressible flow on the unit torus,
  ``dw/dt + u . grad w = nu lap w + f``, ``u = (d psi/dy, -d psi/dx)``, ``-lap psi = w``, with the
  forcing of the FNO benchmark ``f = 0.1 (sin 2pi(x + y) + cos 2pi(x + y))`` and an initial
  vorticity drawn from a Gaussian random field with covariance ``sigma^2 (-lap + tau^2)^-alpha``.
  Pseudo-spectral in space (2/3 de-aliasing), Crank-Nicolson for viscosity and Heun's method for
  advection and forcing in time.
- :func:`darcy`: ``-div(a grad u) = 1`` on the unit square with ``u = 0`` on the boundary, ``a``
  taking the values 12 and 3 where a Gaussian random field is positive or not; 5-point finite
  differences with arithmetic face averages of ``a``, solved by ``scipy.sparse.linalg.spsolve``.
"""
from __future__ import annotations

import hashlib
import math

import numpy as np
import torch


def sample_generator(seed: int, index: int) -> torch.Generator:
    """A generator seeded by ``(seed, index)`` alone."""
    digest = hashlib.sha256(f"{seed}:{index}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & (2**63 - 1))


def wavenumbers(n: int, dtype=torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    """``(ky, kx)`` angular wavenumbers ``2 pi m`` of an ``n x n`` real FFT grid, ``(n, n // 2 + 1)``."""
    ky = torch.fft.fftfreq(n, 1.0 / n, dtype=dtype) * 2 * math.pi
    kx = torch.fft.rfftfreq(n, 1.0 / n, dtype=dtype) * 2 * math.pi
    return ky[:, None].expand(n, n // 2 + 1), kx[None, :].expand(n, n // 2 + 1)


def periodic_grf(generators: list, n: int, alpha: float, tau: float, sigma: float) -> torch.Tensor:
    """Mean-zero periodic Gaussian random fields ``(B, n, n)``, covariance ``sigma^2 (-lap + tau^2)^-alpha``
    on the unit torus, one per generator."""
    ky, kx = wavenumbers(n)
    scale = sigma * (ky**2 + kx**2 + tau**2) ** (-alpha / 2)  # amplitude of mode k (as in the FNO benchmark)
    scale[0, 0] = 0.0
    out = []
    for g in generators:
        xi = torch.randn(2, n, n // 2 + 1, generator=g, dtype=torch.float64)
        out.append(torch.fft.irfft2(scale * torch.complex(xi[0], xi[1]), s=(n, n), norm="forward"))
    return torch.stack(out)


def ns_forcing(n: int) -> torch.Tensor:
    """The FNO benchmark's forcing ``0.1 (sin 2pi(x + y) + cos 2pi(x + y))`` on the ``n x n`` grid."""
    x = torch.arange(n, dtype=torch.float64) / n
    s = 2 * math.pi * (x[:, None] + x[None, :])
    return 0.1 * (torch.sin(s) + torch.cos(s))


class NavierStokes2d:
    """Batched pseudo-spectral solver of the vorticity equation on the unit torus (see the module doc).

    ``step`` advances ``w_hat (B, n, n // 2 + 1)`` (the real FFT of the vorticity) by ``dt``.

    A negative ``dt`` integrates backward in time; viscosity then amplifies mode ``k`` by
    ``exp(nu |k|^2 |dt|)`` per step, so ``keep_modes`` (integer wavenumbers ``|m_x|, |m_y| <= keep_modes``)
    removes the modes that the data cannot determine before they grow.
    """

    def __init__(self, n: int, visc: float = 1e-3, dt: float = 1e-3, forcing: torch.Tensor | None = None,
                 dtype=torch.float64, keep_modes: int | None = None):
        self.n, self.visc, self.dt, self.dtype = n, visc, dt, dtype
        self.ky, self.kx = wavenumbers(n, dtype)
        self.k2 = self.ky**2 + self.kx**2
        self.inv_k2 = torch.where(self.k2 > 0, 1.0 / self.k2.clamp_min(1e-30), torch.zeros_like(self.k2))
        cut = (2.0 / 3.0) * (n // 2) * 2 * math.pi
        if keep_modes is not None:
            cut = min(cut, (keep_modes + 0.5) * 2 * math.pi)
        self.dealias = ((self.ky.abs() <= cut) & (self.kx.abs() <= cut)).to(dtype)
        self.keep = None if keep_modes is None else self.dealias
        self.f_hat = None if forcing is None else torch.fft.rfft2(forcing.to(dtype))
        self.implicit = 1.0 + 0.5 * dt * visc * self.k2
        self.explicit = 1.0 - 0.5 * dt * visc * self.k2

    def advection(self, w_hat: torch.Tensor) -> torch.Tensor:
        """``-u . grad w`` (plus the forcing), de-aliased, in Fourier space."""
        psi = w_hat * self.inv_k2
        u = torch.fft.irfft2(1j * self.ky * psi, s=(self.n, self.n))
        v = torch.fft.irfft2(-1j * self.kx * psi, s=(self.n, self.n))
        wx = torch.fft.irfft2(1j * self.kx * w_hat, s=(self.n, self.n))
        wy = torch.fft.irfft2(1j * self.ky * w_hat, s=(self.n, self.n))
        out = -torch.fft.rfft2(u * wx + v * wy) * self.dealias
        return out if self.f_hat is None else out + self.f_hat

    def step(self, w_hat: torch.Tensor) -> torch.Tensor:
        n1 = self.advection(w_hat)
        w_tilde = (self.explicit * w_hat + self.dt * n1) / self.implicit
        n2 = self.advection(w_tilde)
        return (self.explicit * w_hat + 0.5 * self.dt * (n1 + n2)) / self.implicit

    def solve(self, w0: torch.Tensor, t_end: float) -> torch.Tensor:
        """Vorticity ``(B, n, n)`` at ``t_end`` from ``w0 (B, n, n)``. The result of a sample does not
        depend on the batch: a lone sample is solved beside a copy of itself, because a batch of one
        takes another inverse-FFT path whose rounding differs."""
        if w0.shape[0] == 1:
            return self.solve(w0.repeat(2, 1, 1), t_end)[:1]
        w_hat = torch.fft.rfft2(w0.to(self.dtype))
        if self.keep is not None:
            w_hat = w_hat * self.keep
        for _ in range(int(round(abs(t_end / self.dt)))):
            w_hat = self.step(w_hat)
        return torch.fft.irfft2(w_hat, s=(self.n, self.n))


NS_DEFAULTS = {"visc": 1e-3, "t_end": 10.0, "dt": 1e-2, "resolution": 64, "alpha": 2.5, "tau": 7.0,
               "sigma": 7.0**1.5}


def navier_stokes(seed: int, indices, visc: float = 1e-3, t_end: float = 10.0, dt: float = 1e-2,
                  resolution: int = 64, alpha: float = 2.5, tau: float = 7.0, sigma: float = 7.0**1.5) -> np.ndarray:
    """Vorticity fields ``(len(indices), resolution, resolution)`` float32 at ``t_end``, one per index
    (the initial field in float64, the time stepping in float32: velocities stay far below the CFL
    limit of ``dt``, and float32 keeps the closed-form test to 1e-4)."""
    gens = [sample_generator(seed, int(i)) for i in indices]
    w0 = periodic_grf(gens, resolution, alpha, tau, sigma)
    solver = NavierStokes2d(resolution, visc, dt, ns_forcing(resolution), dtype=torch.float32)
    return solver.solve(w0, t_end).float().numpy()


def _darcy_matrix(a: np.ndarray):
    """The 5-point matrix of ``-div(a grad u)`` on the interior nodes of an ``s x s`` grid of the unit
    square (spacing ``1 / (s - 1)``, ``u = 0`` on the boundary), face coefficients the averages of ``a``."""
    from scipy import sparse

    s = a.shape[0]
    h2 = (s - 1) ** -2.0
    m = s - 2
    idx = np.arange(m * m).reshape(m, m)
    ac = a[1:-1, 1:-1]
    faces = {(-1, 0): (a[:-2, 1:-1] + ac) / 2, (1, 0): (a[2:, 1:-1] + ac) / 2,
             (0, -1): (a[1:-1, :-2] + ac) / 2, (0, 1): (a[1:-1, 2:] + ac) / 2}
    rows, cols, vals = [idx.ravel()], [idx.ravel()], [sum(faces.values()).ravel() / h2]
    for (dy, dx), coef in faces.items():
        ys, xs = np.mgrid[0:m, 0:m]
        ny, nx = ys + dy, xs + dx
        inside = (ny >= 0) & (ny < m) & (nx >= 0) & (nx < m)
        rows.append(idx[inside])
        cols.append(idx[ny[inside], nx[inside]])
        vals.append(-coef[inside] / h2)
    return sparse.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(m * m, m * m))


def darcy_solve(a: np.ndarray, f: np.ndarray | float = 1.0) -> np.ndarray:
    """``u (s, s)`` with ``-div(a grad u) = f`` inside and ``u = 0`` on the boundary."""
    from scipy.sparse.linalg import spsolve

    s = a.shape[0]
    rhs = np.broadcast_to(np.asarray(f, dtype=np.float64), (s, s))[1:-1, 1:-1].ravel()
    u = np.zeros((s, s))
    u[1:-1, 1:-1] = spsolve(_darcy_matrix(a.astype(np.float64)), rhs).reshape(s - 2, s - 2)
    return u


def darcy_factor(a: np.ndarray):
    """The solver of :func:`darcy_solve` factorised once for the coefficient ``a (s, s)``: a function
    ``f (s, s) -> u (s, s)`` (float64, ``u = 0`` on the boundary; ``f`` read inside), for several
    right-hand sides of one coefficient. The operator is symmetric, so it also solves the adjoint."""
    from scipy.sparse.linalg import splu

    s = a.shape[0]
    lu = splu(_darcy_matrix(np.asarray(a, dtype=np.float64)).tocsc())

    def solve(f: np.ndarray) -> np.ndarray:
        u = np.zeros((s, s))
        u[1:-1, 1:-1] = lu.solve(np.ascontiguousarray(np.asarray(f, dtype=np.float64)[1:-1, 1:-1]).ravel()).reshape(
            s - 2, s - 2)
        return u

    return solve


DARCY_DEFAULTS = {"resolution": 64, "alpha": 2.0, "tau": 3.0, "high": 12.0, "low": 3.0}


def darcy(seed: int, indices, resolution: int = 64, alpha: float = 2.0, tau: float = 3.0, high: float = 12.0,
          low: float = 3.0) -> tuple[np.ndarray, np.ndarray]:
    """``(u, a)``, each ``(len(indices), resolution, resolution)`` float32: the pressure and the coefficient."""
    gens = [sample_generator(seed, int(i)) for i in indices]
    g = periodic_grf(gens, resolution, alpha, tau, 1.0).numpy()
    a = np.where(g >= 0, high, low)
    u = np.stack([darcy_solve(ai) for ai in a])
    return u.astype(np.float32), a.astype(np.float32)


__all__ = ["NavierStokes2d", "ns_forcing", "navier_stokes", "darcy", "darcy_solve", "darcy_factor", "periodic_grf", "sample_generator",
           "NS_DEFAULTS", "DARCY_DEFAULTS"]
