"""The plugin host: a pluggy manager plus the registries its hooks fill.

``load_host()`` registers DDO's own components (:mod:`ddo.builtins`) through the same hooks as
third-party plugins, then loads the entry points of group ``ddo`` unless the environment variable
``DDO_DISABLE_PLUGIN_AUTOLOAD`` is set to a non-empty value. Nothing happens at import time.
"""
from __future__ import annotations

import functools
import os

import pluggy

from . import builtins, hookspecs
from .registry import Registry

ENTRY_POINT_GROUP = "ddo"
AUTOLOAD_ENV = "DDO_DISABLE_PLUGIN_AUTOLOAD"

REGISTRY_HOOKS = {
    "models": "register_models",
    "model_wrappers": "register_model_wrappers",
    "datasets": "register_datasets",
    "losses": "register_losses",
    "samplers": "register_samplers",
    "guidance": "register_guidance",
    "commands": "register_commands",
    "options": "register_options",
}
_KIND = {"models": "model", "model_wrappers": "conditioning", "datasets": "dataset", "losses": "loss",
         "samplers": "sampler", "guidance": "guidance method", "commands": "command", "options": "option"}


class Host:
    """A plugin manager and one :class:`Registry` per extension point."""

    def __init__(self, pm: pluggy.PluginManager):
        self.pm = pm
        self.registries = {name: Registry(_KIND[name]) for name in REGISTRY_HOOKS}
        for name, hook_name in REGISTRY_HOOKS.items():
            registry = self.registries[name]
            for impl in getattr(pm.hook, hook_name).get_hookimpls():
                impl.function(register=functools.partial(_register, registry, impl.plugin_name))

    def __getattr__(self, name):
        try:
            return self.__dict__["registries"][name]
        except KeyError:
            raise AttributeError(name) from None

    def plugin_names(self) -> list[str]:
        return [self.pm.get_name(p) for p in self.pm.get_plugins()]


def _register(registry: Registry, provider: str, key, factory=None, requires: dict | None = None,
              defaults: dict | None = None) -> None:
    if registry.kind == "option":  # register(Option(...)): the option names itself
        key, factory = key.name, key
    registry.register(key, factory, provider=provider, requires=requires, defaults=defaults)


def autoload_enabled() -> bool:
    return not os.environ.get(AUTOLOAD_ENV)


def make_plugin_manager(autoload: bool | None = None, extra_plugins=()) -> pluggy.PluginManager:
    pm = pluggy.PluginManager("ddo")
    pm.add_hookspecs(hookspecs)
    pm.register(builtins, name="ddo.builtins")
    for plugin in extra_plugins:
        pm.register(plugin)
    if autoload_enabled() if autoload is None else autoload:
        pm.load_setuptools_entrypoints(ENTRY_POINT_GROUP)
    return pm


def load_host(autoload: bool | None = None, extra_plugins=()) -> Host:
    """A fresh host: built-ins, ``extra_plugins`` and (if enabled) installed plugins."""
    return Host(make_plugin_manager(autoload, extra_plugins))
