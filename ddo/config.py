"""Training configuration: defaults, presets, and the merge
``defaults < the selected components' declared defaults (filling what is still unset) < the conditioning
key's declared defaults < plugin options < preset < flags``.

A configuration is a flat ``dict`` of JSON values; it is written to ``RUN_DIR/config.json`` and
stored in every checkpoint, so a run directory alone is enough to rebuild or resume the run.
Plugins declare their options through the ``register_options`` hook (:mod:`ddo.options`), and a
conditioning key the host options it is best used with (``register(key, factory, defaults=...)``). A
component's hyperparameters are options named after it (``loss_floor`` for the loss): recorded here,
and handed to its factory as keywords (:func:`ddo.options.component_options`).
"""
from __future__ import annotations

from .diffusion import resolve_x0_clip
from .errors import UserError
from .options import apply_option_defaults, component_defaults, selected_defaults

DEFAULTS: dict = {
    # data
    "dataset": "natural-patches", "data_root": None, "resolution": 32, "resolutions": None, "channels": 3,
    "num_workers": 0,
    "crop_scales": "fixed",
    # network
    "model": "fno-unet", "ch": 64, "ch_mult": [1, 2, 2], "num_res_blocks": 2, "modes": 16, "use_pos": False,
    "use_pointwise_op": False, "norm": None, "dropout": 0.0,
    # diffusion
    "ns_method": "vp_cosine", "disp_method": "sine", "sigma_blur_min": 0.05, "sigma_blur_max": 0.25,
    "gp_type": "independent", "gp_exponent": 2.0, "gp_length_scale": 0.1, "gp_sigma": 1.0,
    "parameterization": "eps", "timestep_sampler": "low_discrepancy", "weight_method": None, "loss": "dsm",
    "conditioning": "none",
    # how sampler steps bound the x0 estimate; "auto" is resolved per parameterisation (ddo.diffusion.X0_CLIP_AUTO)
    "x0_clip": "auto",
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
    values the conditioning key declares (for keys neither the preset nor a flag set:
    :func:`ddo.options.component_defaults`) and the defaults of the plugin options that apply to the
    result are filled in too. ``x0_clip="auto"`` is resolved for the parameterisation in effect."""
    config = dict(DEFAULTS)
    preset_values = {}
    if preset is not None:
        if preset not in PRESETS:
            raise UserError(f"unknown preset {preset!r}; known: {', '.join(sorted(PRESETS))}")
        preset_values = PRESETS[preset]
    config.update(preset_values)
    given = {k: v for k, v in flags.items() if v is not None}
    config.update(given)
    if given.get("resolutions") and "resolution" not in given:
        config["resolution"] = given["resolutions"][0]
    if host is not None:
        fixed = set(preset_values) | set(given)
        config.update(component_defaults(config, fixed, host))
        config.update(selected_defaults(config, fixed, host))
        config = apply_option_defaults(config, given, host)
    return complete(config)


def complete(config: dict) -> dict:
    """``config`` with the values that depend on others resolved: ``x0_clip`` (``"auto"`` or absent, as
    in a configuration written before the option existed) for its parameterisation."""
    try:
        x0_clip = resolve_x0_clip(config.get("x0_clip"), config.get("parameterization", "eps"))
    except ValueError as e:
        raise UserError(f"{e} (--x0-clip)") from None
    resolutions = config.get("resolutions")
    if resolutions and config.get("resolution") not in resolutions:
        listed = ",".join(map(str, resolutions))
        raise UserError(f"--resolution {config.get('resolution')} is not among --resolutions {listed}; drop "
                        f"--resolution (the first listed is used) or list it")
    if resolutions is not None and len(resolutions) == 1:  # one resolution: the run of --resolution alone
        resolutions = None
    return {**config, "x0_clip": x0_clip, "resolutions": resolutions}
