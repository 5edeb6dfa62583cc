"""Hook implementations of the ``ddo_conditional`` plugin (the target of its ``ddo`` entry point)."""
from __future__ import annotations

from ddo.api import X0_PARAMETERIZATIONS, hookimpl

from .cli import demo, points
from .cli import reconstruct as commands
from .inference.guidance import METHODS as GUIDANCE
from .losses import EARLIER_NAMES, earlier_name, query_dsm_loss, x0_mse_loss
from .options import KEY_DEFAULTS, OPTIONS, SPARSE_KEYS, X0_MSE_DEFAULTS
from .wrappers import WRAPPERS


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
    register("x0-mse", x0_mse_loss, requires={"parameterization": X0_PARAMETERIZATIONS}, defaults=X0_MSE_DEFAULTS)
    for name, pinned in EARLIER_NAMES.items():  # runs recorded under these names resume with the same loss
        register(name, earlier_name(name), requires={"parameterization": X0_PARAMETERIZATIONS},
                 defaults={f"loss_{k}": v for k, v in pinned.items()})


@hookimpl
def register_guidance(register):
    for key, method in GUIDANCE.items():
        register(key, method)


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
