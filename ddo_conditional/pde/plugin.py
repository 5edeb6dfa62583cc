"""Hook implementations of the PDE plugin (the target of its own ``ddo`` entry point, ``pde``): the field-pair
datasets, the ``sparse-route`` conditioning with its option and its measured loss options, and the
``ddo task`` command. The generic plugin never imports this package."""
from __future__ import annotations

from ddo.api import generated_dataset, hookimpl

from .cli import add_task_parser, run_task_command
from .conditioning import KEY_DEFAULTS, OPTIONS, RouteConditioning
from .datasets import PAIR_KINDS, load_pairs


@hookimpl
def register_datasets(register):
    for kind in PAIR_KINDS:
        register(kind, generated_dataset(kind, load_pairs, 64))


@hookimpl
def register_model_wrappers(register):
    register("sparse-route", RouteConditioning, defaults=KEY_DEFAULTS["sparse-route"])


@hookimpl
def register_options(register):
    for option in OPTIONS:
        register(option)


@hookimpl
def register_commands(register):
    register("task", (add_task_parser, run_task_command,
                      "score a field-pair model on a PDE task (forward, inverse, joint) beside the classical estimates"))
