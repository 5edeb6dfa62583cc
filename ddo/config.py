"""Training configuration: defaults, presets, and the merge ``defaults < plugin options < preset < flags``.

A configuration is a flat ``dict`` of JSON values; it is written to ``RUN_DIR/config.json`` and
stored in every checkpoint, so a run directory alone is enough to rebuild or resume the run.
Plugins declare their options through the ``register_options`` hook (:mod:`ddo.options`).
"""
from __future__ import annotations

from .errors import UserError
from .options import apply_option_defaults

DEFAULTS: dict = {
    # data
    "dataset": "natural-patches", "data_root": None, "resolution": 32, "channels": 3, "num_workers": 0,
    "crop_scales": "fixed",
    # network
    "model": "fno-unet", "ch": 64, "ch_mult": [1, 2, 2], "num_res_blocks": 2, "modes": 16, "use_pos": False,
    "use_pointwise_op": False, "norm": None, "dropout": 0.0,
    # diffusion
    "ns_method": "vp_cosine", "disp_method": "sine", "sigma_blur_min": 0.05, "sigma_blur_max": 0.25,
    "gp_type": "independent", "gp_exponent": 2.0, "gp_length_scale": 0.1, "gp_sigma": 1.0,
    "parameterization": "eps", "timestep_sampler": "low_discrepancy", "weight_method": None, "loss": "dsm",
    "conditioning": "none",
    # optimisation
    "batch_size": 128, "grad_accum": 1, "bf16": False, "compile": False, "lr": 2e-4, "lr_schedule": "constant", "grad_clip": 1.0, "ema_decay": 0.999, "warmup": 100, "seed": 0,
    "iterations": None, "minutes": None, "ckpt_every": 500, "log_every": 10,
    "sample_every": None, "num_sample": 16, "sample_steps": 100, "sampler": "denoise",
}

LR_SCHEDULES = ("constant", "cosine")
CROP_SCALES = ("fixed", "continuous")  # natural-patches training crops (see ddo.data.PhotoCrops)

PRESETS: dict[str, dict] = {
    # the spec's CIFAR-10 configuration
    "seed": {"ch": 64, "ch_mult": [1, 2, 2], "num_res_blocks": 2, "modes": 16, "batch_size": 128, "lr": 2e-4},
    # sized so that ten minutes on two CPU cores visibly learn
    "cpu-small": {"ch": 32, "ch_mult": [1, 2], "num_res_blocks": 1, "modes": 12, "batch_size": 32,
                  "lr": 1e-3, "ema_decay": 0.995, "ckpt_every": 200, "warmup": 50, "norm": "group",
                  "use_pointwise_op": True},
}


def resolve(flags: dict, preset: str | None = None, host=None) -> dict:
    """Merge defaults, a preset and the flags that were given (not ``None``); with a ``host``, the
    defaults of the plugin options that apply to the result are filled in too."""
    config = dict(DEFAULTS)
    if preset is not None:
        if preset not in PRESETS:
            raise UserError(f"unknown preset {preset!r}; known: {', '.join(sorted(PRESETS))}")
        config.update(PRESETS[preset])
    given = {k: v for k, v in flags.items() if v is not None}
    config.update(given)
    return config if host is None else apply_option_defaults(config, given, host)
