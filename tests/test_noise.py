import math

import numpy as np
import pytest
import torch

from ddo.noise import GaussianRandomField, IndependentNoise, _exponential_spectrum, make_noise


@pytest.mark.parametrize("l", [0.05, 0.1])
def test_spectrum_matches_closed_forms(l):
    k = np.arange(0, 40)
    w = math.pi * k
    s2 = _exponential_spectrum(2.0, l)[k, 0]
    torch.testing.assert_close(torch.tensor(s2), torch.tensor(math.pi * l**2 * np.exp(-(l * w) ** 2 / 4)),
                               rtol=1e-3, atol=1e-9)
    s1 = _exponential_spectrum(1.0, l)[k, 0]
    torch.testing.assert_close(torch.tensor(s1), torch.tensor(2 * math.pi * l**2 / (1 + (l * w) ** 2) ** 1.5),
                               rtol=2e-2, atol=1e-7)


def _cov_at(field, res, p, q, n, seed):
    g = torch.Generator().manual_seed(seed)
    x = field.sample((n, 1, res, res), generator=g, dtype=torch.float64)[:, 0]
    i = [min(res - 1, int(c * res)) for c in p]
    j = [min(res - 1, int(c * res)) for c in q]
    a, b = x[:, i[0], i[1]], x[:, j[0], j[1]]
    centre = lambda idx: np.array([(v + 0.5) / res for v in idx])
    return float((a * b).mean()), float((a * a).mean()), float(np.linalg.norm(centre(i) - centre(j)))


@pytest.mark.parametrize("exponent,l", [(2.0, 0.15), (1.0, 0.15)])
def test_grf_covariance_follows_its_law_at_two_resolutions(exponent, l):
    field = GaussianRandomField(exponent, l, sigma=1.0)
    n = 6000
    for res in (32, 64):
        cov, var, r = _cov_at(field, res, (0.40, 0.45), (0.52, 0.55), n, seed=res)
        expected = math.exp(-((r / l) ** exponent))
        se = 4.0 / math.sqrt(n)
        assert abs(var - 1.0) < se + 0.05, (res, var)
        assert abs(cov - expected) < se + 0.05, (res, cov, expected)


def test_grf_coarse_grid_keeps_the_first_modes_of_a_fine_one():
    f = GaussianRandomField(1.5, 0.1)
    torch.testing.assert_close(f.mode_scale(64, 64)[:32, :32] / 64, f.mode_scale(32, 32) / 32)


def test_noise_seeded_and_validated():
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    f = make_noise("exponential", 2.0, 0.1, 1.0)
    torch.testing.assert_close(f.sample((2, 3, 16, 16), g1), f.sample((2, 3, 16, 16), g2))
    assert isinstance(make_noise("independent"), IndependentNoise)
    with pytest.raises(ValueError, match="known: independent, exponential"):
        make_noise("pink")
    with pytest.raises(ValueError, match=r"exponent must be in \(0, 2\]"):
        GaussianRandomField(3.0)
