"""The plugin API of ``ddo``: one hook per extension point.

A plugin is a module or object with functions marked ``@ddo.hookimpl`` whose names are hooks
below. Plugins are found through the ``ddo`` entry-point group of installed packages. Every
``register_*`` hook receives a ``register(key, factory, requires=None, defaults=None)`` callback: the
host owns the names, and a key registered twice is an error naming both plugins. ``requires`` declares
the configuration values a component works with, ``{config key: allowed values}`` (for example a loss
that needs ``{"parameterization": ("x0", "v")}``); a run that selects the component with other values
is refused at start (:func:`ddo.options.validate`). ``defaults`` (conditioning keys) declares the
values of host options the component is best used with, ``{config key: value}`` (for example
``{"parameterization": "x0", "loss": "x0-mse-relative"}``): a run with that conditioning that sets
neither the flag nor a preset value for such a key gets the declared value, unless the run's other
values rule it out (:func:`ddo.options.component_defaults`); ``ddo plugins`` lists them.
"""
from __future__ import annotations

import pluggy

hookspec = pluggy.HookspecMarker("ddo")
hookimpl = pluggy.HookimplMarker("ddo")


@hookspec
def register_models(register):
    """Register networks: ``register(key, factory)`` with ``factory(**config) -> nn.Module``.

    The factory receives the model configuration (``in_channels``, ``ch``, ``ch_mult``,
    ``num_res_blocks``, ``modes``, ``use_pos``, ``norm``, ``dropout``, ``use_pointwise_op``,
    ``resolution``) and must accept and ignore keys it does not use (``**kwargs``).
    """


@hookspec
def register_model_wrappers(register):
    """Register model wrappers (selected by ``ddo train --conditioning KEY``).

    ``factory(config) -> wrapper`` where ``config`` is the resolved run configuration (every
    option in effect, the plugin's declared options included) and the wrapper is a
    :class:`ddo.builtins.ModelWrapper`:

    - ``wrap_dataset(dataset, split) -> dataset``: adds what the wrapper needs to each item; ``ddo train``
      calls it (split ``"train"``) after ``build_model`` and before the EMA copy of the network is taken,
      so a wrapper may set state of its network from the training data (buffers a checkpoint keeps);
    - ``build_model(make_base) -> nn.Module``: ``make_base(in_channels=..)`` builds the registered
      network; the wrapper returns the module the diffusion will call. What the module's output
      means (eps, x0, v) is the diffusion's ``parameterization``, not the wrapper's concern;
    - ``model_kwargs(batch, device) -> dict``: keyword arguments forwarded to the network by every
      ``DenoisingDiffusion`` call for this batch;
    - ``needs_inputs``: ``True`` when the network cannot run without ``model_kwargs``.
    """


@hookspec
def register_datasets(register):
    """Register datasets: ``factory(split, data_root, resolution, download=False) -> torch Dataset``.

    ``download=True`` (the ``--download`` flag) asks the factory to fetch its data first; a dataset
    that cannot raises :class:`ddo.errors.UserError`. Without it, nothing may touch the network.

    Items are dicts with ``image: (C, H, W)`` float in ``[-1, 1]`` and ``index`` (the image's
    global index across splits, an ``int``).
    """


@hookspec
def register_losses(register):
    """Register training losses: ``factory() -> loss`` with
    ``loss(gen_sde, batch, v, model_kwargs) -> dict`` whose ``"loss"`` has shape ``(B,)``.

    A loss asks the denoiser for the estimate it needs (``gen_sde.epsilon`` or ``gen_sde.x0``, any
    parameterisation) and declares with ``requires`` the parameterisations or conditioning it is
    meant for."""


@hookspec
def register_samplers(register):
    """Register samplers: ``step(gen_sde, z_t, t, s, v, generator, **model_kwargs) -> z_s``.

    ``t > s`` are floats in ``[0, 1]``; the step reaching ``s = 0`` returns the final sample.
    """


@hookspec
def register_guidance(register):
    """Register sampling-time guidance methods: ``register(key, factory)``. What the factory takes (the
    observations, a scale) is between the plugin and its commands; what it returns is a
    :class:`ddo.sampling.Guidance` (``needs_grad`` and ``__call__(step) -> z_s``), passed to
    :func:`ddo.sampling.sample` as ``guidance=``. ``requires`` may restrict a method to parameterisations.
    """


@hookspec
def register_commands(register):
    """Register CLI sub-commands: ``register(name, (add_arguments, run, help))``.

    ``add_arguments(parser, host)`` adds the command's flags (``host``: the loaded
    :class:`ddo.plugins.Host`, for flags drawn from its registries); ``run(args: dict, host) -> int``
    runs it with the parsed flags and the same host.
    Raise :class:`ddo.errors.UserError` for bad input (one line, exit code 2).
    """


@hookspec
def register_options(register):
    """Declare configuration options: ``register(ddo.options.Option(name, type, default, help, kind, ...))``.

    Each becomes a ``ddo train`` flag; its default is applied by the host, so the run's
    ``config.json`` holds it; ``kind="architecture"`` or ``"data"`` options cannot change on
    ``--resume``; ``conditioning=(keys)`` limits an option to runs with those conditioning keys.
    """
