"""The host's public API: everything a plugin (or a script) may use from ``ddo``.

Plugins import from here only, never from ``ddo``'s other modules (a structure test enforces it
for the conditional plugin), so the host may reorganise its internals without breaking them, as
pytest's plugins use ``pytest`` and not ``_pytest``. Groups:

- plugin machinery: :data:`hookimpl`, :class:`Option` (declared options), :class:`ModelWrapper`;
- errors: :class:`UserError` (bad input: one line, exit code 2), :class:`NumericalError` (a
  computation that diverged: one line, exit code 1), :func:`check_finite`;
- the forward processes :class:`BlurringDiffusion`, :class:`LinearDiffusion` and their noise
  :class:`GaussianRandomField`; the denoiser and its samplers: :class:`DenoisingDiffusion` (``x0``/``epsilon``/``deblur``),
  :data:`PARAMETERIZATIONS`, :data:`X0_PARAMETERIZATIONS`, the step functions, :func:`timesteps`,
  :func:`check_step`, :func:`sample`, its guidance protocol :class:`Guidance` / :class:`GuidanceStep`,
  :data:`DEFAULT_SAMPLING`, :func:`alpha_sigma`;
- per-row randomness: :class:`RowGenerators`, :func:`randn`, :func:`stream_seed`;
- networks: :class:`FNOUNet2d`, :class:`LiftedNetwork`, :func:`coordinate_grid`, :func:`count_parameters`;
- runs and configuration: :func:`resolve`, :func:`validate` (the combination checks ``train`` runs first),
  :func:`preset_value`, :data:`LR_SCHEDULES`, :data:`CHECKPOINT`, :func:`train`, :func:`load_model`,
  :func:`set_inference_dtype`, :func:`inference_dtype`, :func:`resolve_device`, :func:`sampling_choice`;
- files and output: :func:`atomic_write`, :func:`save_grid`, :func:`progress_bar`, :func:`load_image_folder`,
  :func:`count_images`, :class:`WriteError` (a write the machine refused: one line, exit code 1), :func:`check_out_dir`,
  :func:`check_out_file`;
- fields and their forward solvers: :class:`NavierStokes2d`, :func:`ns_forcing`, :func:`darcy_fields`
  (coefficient and pressure), :func:`darcy_solve` and its factorised form :func:`darcy_factor`,
  :data:`DARCY_DEFAULTS`; the Gaussian random fields they start from, :func:`periodic_grf`, drawn with
  :func:`sample_generator`; generated datasets: :class:`FieldImages`, :func:`area_downsample`,
  :func:`cache_dir`, :func:`generated_dataset` (a registry factory for data made on this machine);
- memory guards: :func:`guard`, :class:`Knob`, :func:`network_bytes`, :func:`images_bytes`, :func:`sampling_rows`;
- flag types: :func:`positive_int`, :func:`nonneg_int`, :func:`seed_int`, :func:`positive_float`,
  :data:`BF16_INFERENCE_HELP`; :func:`check_resolution` (a grid too small for the network).
"""
from __future__ import annotations

from .arguments import BF16_INFERENCE_HELP, nonneg_int, positive_float, positive_int, seed_int
from .builtins import ModelWrapper, generated_dataset
from .checkpoint import atomic_write
from .commands import check_resolution, inference_dtype, resolve_device, sampling_choice
from .config import DEFAULTS, LR_SCHEDULES, PRESETS, resolve
from .data import FieldImages, area_downsample, cache_dir, count_images, dihedral_invariant, load_image_folder
from .diffusion import PARAMETERIZATIONS, BlurringDiffusion, DenoisingDiffusion, LinearDiffusion
from .errors import NumericalError, UserError, WriteError, check_finite
from .fields import (DARCY_DEFAULTS, NavierStokes2d, darcy_factor, darcy_solve, ns_forcing, periodic_grf,
                     sample_generator)
from .fields import darcy as darcy_fields
from .hookspecs import hookimpl
from .memory import Knob, guard, images_bytes, network_bytes, sampling_rows
from .noise import GaussianRandomField
from .models import FNOUNet2d, LiftedNetwork, coordinate_grid, count_parameters
from .options import Option, validate
from .paths import check_out_dir, check_out_file
from .progress import progress_bar
from .rng import RowGenerators, randn, stream_seed
from .sampling import (DEFAULT_SAMPLING, Guidance, GuidanceStep, check_step, ddim_step, denoise_step, euler_maruyama_step,
                       sample, timesteps)
from .schedules import alpha_sigma
from .train import CHECKPOINT, load_model, set_inference_dtype, train
from .visual import save_grid

X0_PARAMETERIZATIONS = ("x0", "v")  # networks whose output gives the clean image in one call


def preset_value(preset: str, key: str):
    """The value ``preset`` gives ``key``, or the default when the preset leaves it alone."""
    return PRESETS[preset].get(key, DEFAULTS[key])


__all__ = ["hookimpl", "Option", "ModelWrapper", "UserError", "NumericalError", "check_finite", "BlurringDiffusion",
           "LinearDiffusion", "GaussianRandomField", "DenoisingDiffusion", "PARAMETERIZATIONS",
           "X0_PARAMETERIZATIONS", "denoise_step", "ddim_step", "euler_maruyama_step", "timesteps", "check_step",
           "sample", "Guidance", "GuidanceStep", "DEFAULT_SAMPLING", "alpha_sigma", "RowGenerators", "randn", "stream_seed", "FNOUNet2d",
           "LiftedNetwork", "coordinate_grid", "count_parameters", "resolve", "preset_value", "LR_SCHEDULES",
           "CHECKPOINT", "train", "load_model", "set_inference_dtype", "inference_dtype", "resolve_device",
           "sampling_choice", "atomic_write", "save_grid", "progress_bar", "load_image_folder",
           "BF16_INFERENCE_HELP", "positive_int", "nonneg_int", "positive_float", "WriteError", "check_out_dir",
           "check_out_file", "seed_int", "check_resolution", "validate", "count_images", "dihedral_invariant",
           "guard", "Knob", "network_bytes", "images_bytes", "sampling_rows", "DARCY_DEFAULTS", "NavierStokes2d",
           "darcy_fields", "darcy_solve", "darcy_factor", "ns_forcing", "periodic_grf", "sample_generator",
           "FieldImages", "area_downsample", "cache_dir", "generated_dataset"]
