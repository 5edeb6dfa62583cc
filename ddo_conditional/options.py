"""The plugin's declared options, the groups of conditioning keys they apply to, and each key's measured
defaults. Every option a wrapper reads is declared once in :data:`OPTIONS` (registered through the host's
``register_options`` hook), so its default reaches ``config.json`` and the host refuses a change of the
masks or of the architecture on ``--resume``."""
from __future__ import annotations

import argparse

from ddo.api import X0_PARAMETERIZATIONS, Option, nonneg_int, positive_float, positive_int

from .data.augment import augment_list
from .data.datasets import POINT_COORDS
from .data.masks import PATTERNS, context_ratio_arg
from .losses import WEIGHTINGS
from .nn.refiners import RESIDUAL_SCALES


def unit_fraction(text: str) -> float:
    """A number in ``[0, 1]`` (``--loss-t1-fraction``)."""
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a fraction from 0 to 1, got {text!r}")
    return value


POINT_KEYS = ("sparse-setconv", "sparse-attention")
SPARSE_KEYS = ("sparse-encoder", "sparse-concat", "sparse-lift", "sparse-interp", "sparse-biharmonic",
               "sparse-kriging") + POINT_KEYS + ("sparse-route",)
INTERP_KEYS = ("sparse-interp", "sparse-biharmonic")
DENSE_KEYS = ("sparse-biharmonic", "sparse-kriging", "sparse-route") + POINT_KEYS  # kwargs hold a dense estimate (context_dense)


SCALE_FLOOR, SCALE_FLOOR_BEFORE_OPTION = 1e-4, 0.01


OPTIONS = (
    Option("context_ratio", context_ratio_arg, 0.1, "fraction of each image's pixels observed (the context), or a "
           "range LO:HI: each image then observes its own ratio, log-uniform in it (a function of seed and index)",
           "data", conditioning=SPARSE_KEYS),
    Option("query_ratio", float, 0.1, "fraction of each image's pixels held out for scoring (the query)", "data",
           conditioning=SPARSE_KEYS),
    Option("mask_seed", nonneg_int, 42, "seed of the fixed masks (a mask is a function of seed and image index)",
           "data", conditioning=SPARSE_KEYS),
    Option("mask_pattern", str, "random", "where the context lies", "data", choices=PATTERNS,
           conditioning=SPARSE_KEYS),
    Option("augment", augment_list, "none", "training-time transforms, comma-separated: 'dihedral' (a random "
           "rotation or reflection of the square, image and fixed context moved together), 'photometric' (a random "
           "colour map: channel order, hue, saturation, contrast, gamma, brightness; the context read from the "
           "mapped image)", "run", conditioning=SPARSE_KEYS),
    Option("context_feature_dim", positive_int, 32, "width of the context encoder", "architecture",
           conditioning=("sparse-encoder",)),
    Option("refiner_width", nonneg_int, 0, "width of a local 3x3 refiner beside the spectral trunk (0: none)",
           "architecture", conditioning=INTERP_KEYS + ("sparse-kriging", "sparse-route")),
    Option("residual_scale", str, "none", "'context' scales the network's residual per image by the context's "
           "leave-one-out interpolation error; 'context-input' also feeds the interpolation's detail in those "
           "units", "architecture", choices=RESIDUAL_SCALES, conditioning=INTERP_KEYS,
           requires={"parameterization": X0_PARAMETERIZATIONS}),
    Option("context_coords", str, "jitter", "where the context points lie: 'grid' (pixel centres) or 'jitter' "
           "(a fixed random position inside each context pixel, its value read there by bilinear interpolation)",
           "data", choices=POINT_COORDS[1:], conditioning=POINT_KEYS),
    Option("scale_floor", positive_float, SCALE_FLOOR, "floor of the per-image scale of the network's correction, "
           "sqrt(r^2 + floor^2) with r the thin-plate spline's leave-one-out RMS error ([-1, 1] units); a "
           "checkpoint without this key was trained with 0.01", "architecture", conditioning=POINT_KEYS),
    Option("point_feature_dim", positive_int, 32, "width of the point-set encoder's features", "architecture",
           conditioning=POINT_KEYS),
    Option("attention_heads", positive_int, 4, "heads of the grid-to-points attention", "architecture",
           conditioning=("sparse-attention",)),
)


X0_LOSSES = ("x0-mse", "x0-mse-mixed", "x0-mse-relative", "x0-mse-ratio", "x0-mse-scored-l2")
# the x0-mse family's own defaults, recorded when neither a flag nor the conditioning key sets them
X0_MSE_DEFAULTS = {"loss_t1_fraction": 0.0, "loss_weighting": "none", "loss_floor": 1e-8}
LOSS_OPTIONS = (
    Option("loss_t1_fraction", unit_fraction, None, "x0-mse losses: the share of each batch put at t = 1 exactly, "
           "where the x0 estimate is the one-call posterior mean (default: the conditioning key's, else 0)", "run",
           conditioning=SPARSE_KEYS, requires={"loss": X0_LOSSES}),
    Option("loss_weighting", str, None, "x0-mse losses: weights of the t = 1 terms by the error of the estimate the "
           "network refines: none, relative (per image, mean 1), ratio (per image, reciprocals of mean 1: mixed "
           "densities), relative-l2 (per image and channel), scored-l2 (the channels each PDE task scores)", "run",
           choices=WEIGHTINGS, conditioning=SPARSE_KEYS, requires={"loss": X0_LOSSES}),
    Option("loss_floor", positive_float, None, "x0-mse losses: the floor of the weighted error (squared [-1, 1] "
           "units), which bounds the weight of an image its estimate already renders exactly", "run",
           conditioning=SPARSE_KEYS, requires={"loss": X0_LOSSES}),
)
OPTIONS = OPTIONS + LOSS_OPTIONS
DEFAULTS = {o.name: o.default for o in OPTIONS}


# The parameterisation and loss each key was measured best with, applied by the host when a run gives
# neither flag (nor a preset value): the keys whose network refines an interpolation predict x0 and are
# trained with x0-mse weighted relative (docs/results-photographs.md: the demo), the point-set keys,
# which serve any density, with the ratio weighting (docs/density-resolution.md); sparse-interp's inputs
# hold no dense interpolation for those weights, so it gets the same loss unweighted.
# The spec's keys (sparse-encoder, sparse-concat) and sparse-lift keep the host's eps and dsm.
RELATIVE = {"parameterization": "x0", "loss": "x0-mse", "loss_t1_fraction": 0.5, "loss_weighting": "relative",
            "loss_floor": 1e-4}
RATIO = {**RELATIVE, "loss_weighting": "ratio", "loss_floor": 1e-8}
KEY_DEFAULTS = {
    "sparse-biharmonic": RELATIVE,
    "sparse-kriging": RELATIVE,
    "sparse-setconv": RATIO,
    "sparse-attention": RATIO,
    "sparse-interp": {"parameterization": "x0", "loss": "x0-mse", "loss_t1_fraction": 0.5},
}
