"""The run configuration: options declared by plugins, defaults applied once, combinations checked.

A configuration is a flat ``dict`` of JSON values. The host's own options are
:data:`ddo.config.DEFAULTS`; a plugin declares more with the ``register_options`` hook, each an
:class:`Option` with its type, default, help, and what it defines (``kind``). The host applies
every declared default before training starts, so ``config.json`` holds every value in effect.

Two rules make wrong combinations fail at start, with one line naming the option:

- a registered component (loss, conditioning, sampler, ...) may declare ``requires``: the values of
  other options it works with (:func:`validate`);
- ``--resume`` refuses any change to an option that defines the architecture or the data
  (:func:`check_resume`).
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from typing import Any, Callable

from .errors import UserError

KINDS = ("architecture", "data", "run")

# the host's own options that define the network and the process, or the data (and so the masks)
HOST_ARCHITECTURE_KEYS = ("model", "ch", "ch_mult", "num_res_blocks", "modes", "use_pos", "use_pointwise_op", "norm",
                          "resolution", "channels", "ns_method", "disp_method", "sigma_blur_min", "sigma_blur_max",
                          "gp_type", "gp_exponent", "gp_length_scale", "gp_sigma", "conditioning", "parameterization")
HOST_DATA_KEYS = ("dataset", "crop_scales", "resolutions")

# configuration key -> host registry holding the component it selects
COMPONENT_KEYS = {"model": "models", "conditioning": "model_wrappers", "dataset": "datasets", "loss": "losses",
                  "sampler": "samplers"}


@dataclass(frozen=True)
class Option:
    """One configuration key declared by a plugin; its flag is ``--`` + the name with dashes.

    Args:
        name: the configuration key (``mask_seed``).
        type: parses the flag's text (``int``, ``float``, ``str`` or a function).
        default: the value in effect when the flag is not given.
        help: what the option does (shown by ``--help``).
        kind: ``"architecture"`` (changes the network or the process), ``"data"`` (changes what the
            model sees, e.g. the masks) or ``"run"`` (neither); the first two cannot change on resume.
        choices: the allowed values, if a fixed set.
        conditioning: the conditioning keys the option applies to (``None``: every run). For other
            runs it is absent from the configuration and giving its flag is an error.
        requires: ``{config key: allowed values}`` that must hold when the option is set to a value
            other than its default.
    """

    name: str
    type: Callable[[str], Any] = str
    default: Any = None
    help: str = ""
    kind: str = "run"
    choices: tuple | None = None
    conditioning: tuple[str, ...] | None = None
    requires: dict[str, tuple] = field(default_factory=dict)

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"option {self.name!r}: kind must be one of {', '.join(KINDS)}, got {self.kind!r}")

    @property
    def flag(self) -> str:
        return flag(self.name)

    def applies(self, config: dict) -> bool:
        return self.conditioning is None or config.get("conditioning") in self.conditioning


def one_of(values) -> str:
    """``a``, ``a or b``, ``a, b or c``."""
    values = [str(v) for v in values]
    return values[0] if len(values) == 1 else ", ".join(values[:-1]) + " or " + values[-1]


def flag(key: str) -> str:
    return "--" + key.replace("_", "-")


def options_of(host) -> list[Option]:
    return [host.options.get(k) for k in host.options.keys()]


def apply_option_defaults(config: dict, given: dict, host) -> dict:
    """``config`` with the default of every plugin option that applies to it; an option given on
    the command line (``given``) that does not apply is refused."""
    out = dict(config)
    for opt in options_of(host):
        if opt.applies(out):
            out.setdefault(opt.name, opt.default)
        elif given.get(opt.name) is not None:
            raise UserError(f"{opt.flag} applies to --conditioning {one_of(opt.conditioning)}; "
                            f"this run has --conditioning {out.get('conditioning')}")
        else:
            out.pop(opt.name, None)
    return out


def check_stored_options(config: dict, host, path) -> None:
    """Refuse (one line) a stored configuration (a checkpoint's) in which a plugin option holds a value its
    flag could not have given: not a plain value, not accepted by the option's parser, or not one of
    its choices. Plugins build their layers from these values; a list or a mapping there would
    otherwise surface as a type error deep inside them."""
    for opt in options_of(host):
        value = config.get(opt.name)
        if value is not None and not _could_be_given(value, opt):
            raise UserError(f"{path} is malformed: its config has {opt.name} = {str(value)[:40]!r}, which {opt.flag} "
                            "cannot give; use an earlier checkpoint or retrain")


def _could_be_given(value, opt: Option) -> bool:
    if isinstance(opt.default, bool):
        return isinstance(value, bool)
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        return False
    try:
        opt.type(str(value))
    except (ValueError, TypeError, UserError, argparse.ArgumentTypeError):
        return False
    return opt.choices is None or value in opt.choices


def component_of(name: str) -> str | None:
    """The component key whose hyperparameter option ``name`` is (``loss_floor`` -> ``loss``), or ``None``."""
    prefix = name.split("_", 1)[0]
    return prefix if prefix in COMPONENT_KEYS and name != prefix else None


def component_options(config: dict, component: str) -> dict:
    """The hyperparameters of the selected ``component`` that ``config`` sets: its ``<component>_<name>``
    options as ``{name: value}``, unset ones left out; the host passes them to the component's factory
    (EDM's ``loss_kwargs``)."""
    head = component + "_"
    return {k[len(head):]: v for k, v in config.items() if k.startswith(head) and v is not None}


def component_defaults(config: dict, fixed, host) -> dict:
    """The values the run's conditioning key declares it is best used with (``register(...,
    defaults=...)``) that apply to ``config``: those of keys not in ``fixed`` (the keys a flag or the
    preset set), in their declared order, each kept only when the component it selects (a loss, say)
    accepts the configuration with the values kept before it. So ``--parameterization eps`` given with
    a key whose declared loss needs ``x0`` keeps the host's loss instead of being refused for a loss
    the user never asked for. A declared hyperparameter of a component (``loss_floor``) is kept only
    when the run selects the component the key declares it for."""
    key = config.get("conditioning")
    if key is None or key not in host.model_wrappers:
        return {}
    out: dict = {}
    declared = host.model_wrappers.defaults(key)
    # the components first, their hyperparameters after, whatever order the key declared them in
    for name, value in sorted(declared.items(), key=lambda kv: component_of(kv[0]) is not None):
        if name in fixed:
            continue
        trial = {**config, **out, name: value}
        owner = component_of(name)
        if owner is not None and trial.get(owner) != declared.get(owner, trial.get(owner)):
            continue
        if name in COMPONENT_KEYS:
            requires = getattr(host, COMPONENT_KEYS[name]).requires(value)
            if any(trial.get(k) not in allowed for k, allowed in requires.items()):
                continue
        out[name] = value
    return out


def selected_defaults(config: dict, fixed, host) -> dict:
    """The values each selected component (the loss, say) declares for its own hyperparameters
    (``register(..., defaults={"loss_floor": ...})``), for the keys that neither a flag, the preset nor
    the conditioning key set."""
    out: dict = {}
    for key, registry_name in COMPONENT_KEYS.items():
        registry = getattr(host, registry_name)
        if key == "conditioning" or config.get(key) not in registry:
            continue
        out.update({name: value for name, value in registry.defaults(config[key]).items()
                    if name not in fixed and config.get(name) is None})
    return out


def _allowed(what: str, requires: dict, config: dict) -> None:
    for key, allowed in requires.items():
        if config.get(key) not in allowed:
            raise UserError(f"{what} needs {flag(key)} {one_of(allowed)}; "
                            f"this run has {flag(key)} {config.get(key)}")


def validate(config: dict, host, keys=tuple(COMPONENT_KEYS)) -> None:
    """Refuse a combination that cannot work: every selected component's ``requires`` and every
    non-default option's ``requires`` must hold. ``keys``: the component keys to check."""
    for key in keys:
        if config.get(key) is None:
            continue
        registry = getattr(host, COMPONENT_KEYS[key])
        _allowed(f"{key} {config[key]}", registry.requires(config[key]), config)
    for opt in options_of(host):
        if opt.applies(config) and opt.name in config and config[opt.name] != opt.default:
            _allowed(f"{opt.flag} {config[opt.name]}", opt.requires, config)


def frozen_keys(host) -> dict[str, str]:
    """``{key: kind}`` of every option that a resumed run must keep (architecture and data)."""
    keys = {k: "architecture" for k in HOST_ARCHITECTURE_KEYS}
    keys.update({k: "data" for k in HOST_DATA_KEYS})
    keys.update({o.name: o.kind for o in options_of(host) if o.kind in ("architecture", "data")})
    return keys


def check_resume(saved: dict, config: dict, host, where: str) -> None:
    """Refuse a resumed configuration that changes an architecture or data option of ``saved``."""
    for key, kind in frozen_keys(host).items():
        if saved.get(key) != config.get(key):
            raise UserError(f"{where} was trained with {flag(key)} {_shown(saved.get(key))}; it cannot change to "
                            f"{_shown(config.get(key))} on --resume ({kind} options are fixed for a run): drop the "
                            "flag or start a new --out")


def _shown(value) -> str:
    """A configuration value as its flag takes it: lists comma-separated, ``None`` as "unset"."""
    if value is None:
        return "unset"
    return ",".join(map(str, value)) if isinstance(value, list) else str(value)


__all__ = ["Option", "KINDS", "apply_option_defaults", "component_defaults", "selected_defaults", "component_options",
           "validate", "frozen_keys", "check_resume", "options_of"]
