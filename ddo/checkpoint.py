"""Checkpoints: ``state_dict``s, plain config and RNG states; written atomically, loaded safely.

A checkpoint is a dict of tensors, numbers, strings, lists and dicts only, so it loads with
``torch.load(..., weights_only=True)``: a file that would run code when unpickled is refused.
"""
from __future__ import annotations

import contextlib
import errno
import os
import pickle
import random
import re
import warnings
from pathlib import Path

import numpy as np
import torch

from .errors import UserError, WriteError


def atomic_write(path: str | os.PathLike, write) -> None:
    """Call ``write(file)`` on a temporary file beside ``path``, fsync it, then rename it over
    ``path``. A crash at any point leaves either the old file or the new one, never half of one.

    A write the machine refuses (disk full, permission denied, read-only file system: any
    ``OSError``) removes the temporary file, leaves the previous ``path`` as it was and raises
    :class:`~ddo.errors.WriteError` naming the file and the reason."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            with open(tmp, "wb") as f:
                write(f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        finally:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError as e:
        raise WriteError(write_failure(path, e)) from None


WRITE_FIXES = {errno.ENOSPC: "free some space or write elsewhere", errno.EDQUOT: "free some space or write elsewhere",
               errno.EACCES: "check the permissions of its folder or write elsewhere",
               errno.EPERM: "check the permissions of its folder or write elsewhere",
               errno.EROFS: "the file system is read-only; write elsewhere"}


def write_failure(path: Path, e: OSError) -> str:
    """One line: which file could not be written, why, what is left, and what to do."""
    reason = e.strerror or str(e) or type(e).__name__
    try:
        left = "the previous file is unchanged" if path.is_file() else "nothing was written there"
    except OSError:
        left = "nothing was written there"
    return f"could not write {path}: {reason}; {left}; {WRITE_FIXES.get(e.errno, 'write elsewhere')}"


def save_checkpoint(path, state: dict) -> None:
    """Atomically ``torch.save`` ``state`` to ``path``."""
    atomic_write(path, lambda f: torch.save(state, f))


def load_checkpoint(path, map_location="cpu") -> dict:
    """``torch.load(path, weights_only=True)``; any failure becomes one clear :class:`UserError`."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"checkpoint {path} is a folder; name the file in it, like {path / 'checkpoint.pt'}")
    if not path.is_file():
        raise UserError(f"checkpoint {path} does not exist")
    try:
        with warnings.catch_warnings():  # torch's notes on foreign pickles: the refusal below says what matters
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        found = re.search(r"GLOBAL ([\w.]+)", str(e))
        what = f" such as {found.group(1)}" if found else ""
        raise UserError(f"refusing to load {path}: it holds objects{what} other than tensors and plain data, "
                        "which could run code when loaded; use a checkpoint written by ddo train") from None
    except Exception as e:  # noqa: BLE001 - a damaged file makes the unpickler fail in any of a dozen ways
        raise UserError(f"checkpoint {path} is truncated or corrupted ({type(e).__name__}); "
                        "use an earlier checkpoint or retrain") from None
    if not isinstance(state, dict) or "model" not in state or "config" not in state:
        raise UserError(f"{path} is not a ddo checkpoint (no model state or config)")
    check_state(state, path)
    return state


# configuration keys that hold counts and sizes, and the smallest value each takes
SIZE_KEYS = {"resolution": 1, "channels": 1, "ch": 1, "num_res_blocks": 1, "modes": 1, "batch_size": 1, "grad_accum": 1,
             "num_workers": 0, "warmup": 0, "seed": 0, "ckpt_every": 1, "log_every": 1, "num_sample": 0,
             "sample_steps": 1}

# configuration keys that hold lists of positive integers (the optional ones may be unset)
LIST_KEYS = ("ch_mult", "resolutions")
OPTIONAL_LIST_KEYS = ("resolutions",)


def _tensors(value) -> bool:
    return isinstance(value, dict) and all(isinstance(k, str) and torch.is_tensor(v) for k, v in value.items())


def _same_kind(value, default) -> bool:
    """Whether a configuration value has the kind of its default: a name, a finite number, a flag, a
    list; a key whose default is unset takes a name, a number or nothing."""
    if isinstance(default, bool):
        return isinstance(value, bool)
    if isinstance(default, (int, float)):
        return isinstance(value, (int, float)) and not isinstance(value, bool) and -1e300 < value < 1e300
    if isinstance(default, str):
        return isinstance(value, str)
    if isinstance(default, list):
        return isinstance(value, list)
    return value is None or isinstance(value, (str, bool)) or _same_kind(value, 0.0)


def _kind_name(default) -> str:
    for kind, name in ((bool, "true or false"), ((int, float), "a finite number"), (str, "a name"), (list, "a list")):
        if isinstance(default, kind):
            return name
    return "a name, a number or nothing"


def check_state(state: dict, path) -> None:
    """Refuse (one line) a checkpoint whose parts have the wrong types (weights that are not tensors, a
    configuration that is not a mapping of names to plain values, sizes that are not positive
    integers) or whose configuration describes a network larger than the weights it holds (a
    corrupted size would otherwise be allocated before the weights are found not to match)."""
    def bad(what: str):
        return UserError(f"{path} is malformed: {what}; use an earlier checkpoint or retrain")

    config = state["config"]
    if not isinstance(config, dict) or not all(isinstance(k, str) for k in config):
        raise bad("its config is not a mapping of option names to values")
    if not _tensors(state["model"]):
        raise bad("its model state is not a mapping of names to tensors")
    if state.get("ema") is not None and not _tensors(state["ema"]):
        raise bad("its EMA state is not a mapping of names to tensors")
    for key, lowest in SIZE_KEYS.items():
        value = config.get(key)
        if key in config and not (isinstance(value, int) and not isinstance(value, bool) and value >= lowest):
            raise bad(f"its config has {key} = {str(value)[:40]!r}, not an integer of at least {lowest}")
    for key in LIST_KEYS:
        values = config.get(key)
        if values is None and key in OPTIONAL_LIST_KEYS:
            continue
        if key in config and not (isinstance(values, list) and values and all(
                isinstance(m, int) and not isinstance(m, bool) and m >= 1 for m in values)):
            raise bad(f"its config has {key} = {str(values)[:40]!r}, not a list of positive integers")
    from .config import DEFAULTS

    for key, default in DEFAULTS.items():
        if key in config and key not in SIZE_KEYS and key not in LIST_KEYS and not _same_kind(config[key], default):
            raise bad(f"its config has {key} = {str(config[key])[:40]!r}, not {_kind_name(default)}")
    from .memory import parameters_at_least

    held = sum(v.numel() for v in state["model"].values())
    if parameters_at_least(config) > held:
        raise UserError(f"{path} does not match its own configuration: the config describes a network of at least "
                        f"{parameters_at_least(config):,.0f} parameters and the weights hold {held:,}; "
                        "use an earlier checkpoint or retrain")


def seed_everything(seed: int) -> None:
    """Seed torch's (CPU and CUDA), numpy's and python's global generators from ``seed``."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


def rng_state() -> dict:
    """RNG states of torch, numpy and python as tensors and plain lists."""
    np_state = np.random.get_state()
    py_state = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
        "python": {"version": py_state[0], "state": list(py_state[1]),
                   "gauss_next": py_state[2]},
    }


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss_next"]))
