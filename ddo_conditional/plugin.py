"""Hook implementations of the ``ddo_conditional`` plugin (the target of its ``ddo`` entry point)."""
from __future__ import annotations

from ddo.api import hookimpl

from .cli import demo, points
from .cli import reconstruct as commands
from .options import DENSE_KEYS, KEY_DEFAULTS, OPTIONS, SPARSE_KEYS, X0_OR_V
from .wrappers import WRAPPERS
from .losses import (query_dsm_loss, x0_mse_loss, x0_mse_mixed_loss, x0_mse_ratio_loss, x0_mse_relative_l2_loss,
                     x0_mse_relative_loss)


@hookimpl
def register_model_wrappers(register):
    for key, wrapper in WRAPPERS.items():
        register(key, wrapper, defaults=KEY_DEFAULTS.get(key))


@hookimpl
def register_options(register):
    for option in OPTIONS:
        register(option)


@hookimpl
def register_losses(register):
    register("query-dsm", query_dsm_loss, requires={"conditioning": SPARSE_KEYS})
    register("x0-mse", x0_mse_loss, requires={"parameterization": X0_OR_V})
    register("x0-mse-mixed", x0_mse_mixed_loss, requires={"parameterization": X0_OR_V})
    register("x0-mse-relative", x0_mse_relative_loss,
             requires={"parameterization": X0_OR_V, "conditioning": DENSE_KEYS})
    register("x0-mse-ratio", x0_mse_ratio_loss,
             requires={"parameterization": X0_OR_V, "conditioning": DENSE_KEYS})
    register("x0-mse-relative-l2", x0_mse_relative_l2_loss,
             requires={"parameterization": X0_OR_V, "conditioning": DENSE_KEYS})


@hookimpl
def register_commands(register):
    register("reconstruct", (commands.add_reconstruct_parser, commands.run_reconstruct,
                             "reconstruct images from their fixed sparse context and score them"))
    register("points", (points.add_points_parser, points.run_points_command,
                        "reconstruct a CSV of observations at any coordinates, at any resolution (point-set models)"))
    register("calibrate", (commands.add_calibrate_parser, commands.run_calibrate,
                           "fit the spread calibration of a conditional model and store it beside the checkpoint"))
    register("demo", (demo.add_demo_parser, demo.run_demo,
                      "train a conditional model on natural-patches, reconstruct the test split, report"))
