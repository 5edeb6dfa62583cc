"""Networks for DDO."""
from .fno_unet import FNOUNet2d, LiftedNetwork, coordinate_grid, count_parameters
from .spectral import SpectralConv2d, fourier_resample

__all__ = ["FNOUNet2d", "LiftedNetwork", "SpectralConv2d", "fourier_resample", "coordinate_grid", "count_parameters"]
