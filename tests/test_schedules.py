import json

import numpy as np
import pytest
import scipy.fft
import torch

from ddo import schedules
from ddo.dct import dct2, dct_matrix, idct2
from ddo.diffusion import BlurringDiffusion

from .conftest import REFERENCE


@pytest.fixture(scope="module")
def ref():
    return json.loads(REFERENCE.read_text())


def test_vp_cosine_matches_reference(ref):
    t = torch.tensor(ref["t"], dtype=torch.float64)
    r = ref["vp_cosine"]
    a, s = schedules.alpha_sigma(t)
    f, g = schedules.sde_coefficients(t)
    for name, got in [("logsnr", schedules.logsnr(t)), ("logsnr_normalized", schedules.logsnr_normalized(t)),
                      ("alpha", a), ("sigma", s), ("f", f), ("g", g)]:
        torch.testing.assert_close(got, torch.tensor(r[name], dtype=torch.float64), rtol=1e-6, atol=1e-12,
                                   msg=name)


def test_blurring_alpha_matches_reference(ref):
    r = ref["blurring_sine_0.05_0.25"]
    fd = BlurringDiffusion(disp_method="sine", sigma_blur_min=0.05, sigma_blur_max=0.25)
    t = torch.tensor(ref["t"], dtype=torch.float64)
    alpha, sigma = fd.get_alpha_sigma(t, r["img_dim"])
    assert alpha.shape == (len(t), 1, 32, 32) and sigma.shape == (len(t), 1, 1, 1)
    for ky, kx in r["modes"]:
        torch.testing.assert_close(alpha[:, 0, ky, kx], torch.tensor(r["alpha"][f"{ky},{kx}"], dtype=torch.float64),
                                   rtol=1e-6, atol=1e-30)
    torch.testing.assert_close(sigma.flatten(), torch.tensor(r["sigma"], dtype=torch.float64), rtol=1e-6, atol=0)


def test_mode_scales_do_not_depend_on_resolution():
    fd = BlurringDiffusion()
    t = torch.linspace(0, 1, 7, dtype=torch.float64)
    a32, _ = fd.get_alpha_sigma(t, 32)
    a64, _ = fd.get_alpha_sigma(t, 64)
    torch.testing.assert_close(a64[..., :32, :32], a32, rtol=0, atol=0)


def test_dissipation_derivatives_match_finite_differences():
    t = torch.linspace(0.05, 0.95, 10, dtype=torch.float64)
    h = 1e-6
    for method in ("linear", "sine", "log"):
        d = schedules.Dissipation(method, 0.05, 0.25)
        fd = (d.tau(t + h) - d.tau(t - h)) / (2 * h)
        torch.testing.assert_close(d.dtau_dt(t), fd, rtol=1e-6, atol=1e-9)
    dl = (schedules.logsnr(t + h) - schedules.logsnr(t - h)) / (2 * h)
    torch.testing.assert_close(schedules.dlogsnr_dt(t), dl, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("shape", [(8, 8), (32, 32), (16, 24)])
def test_dct_is_orthonormal_and_matches_scipy(shape):
    x = torch.randn(2, 3, *shape, dtype=torch.float64)
    ref = scipy.fft.dctn(x.numpy(), type=2, norm="ortho", axes=(-2, -1))
    torch.testing.assert_close(dct2(x), torch.from_numpy(ref))
    torch.testing.assert_close(idct2(dct2(x)), x)
    m = dct_matrix(shape[0], "cpu", torch.float64)
    torch.testing.assert_close(m @ m.T, torch.eye(shape[0], dtype=torch.float64))


def test_unknown_schedule_names_fail_with_known_list():
    with pytest.raises(ValueError, match="known: linear, sine, log"):
        BlurringDiffusion(disp_method="cosine")
    with pytest.raises(ValueError, match="known: vp_cosine"):
        BlurringDiffusion(ns_method="ve")


def test_reference_is_float64_consistent():
    t = torch.tensor([0.0, 1.0], dtype=torch.float64)
    assert np.isclose(float(schedules.logsnr(t)[0]), 10.0)
    assert np.isclose(float(schedules.logsnr(t)[1]), -10.0)
