"""DDO's own components, registered through the same hooks as any plugin."""
from __future__ import annotations

from . import arguments, commands, data, sampling
from .errors import UserError
from .hookspecs import hookimpl
from .models import FNOUNet2d


def fno_unet(in_channels: int = 3, ch: int = 64, ch_mult=(1, 2, 2), num_res_blocks: int = 2, modes: int = 16,
             use_pos: bool = False, norm=None, dropout: float = 0.0, use_pointwise_op: bool = False,
             out_channels=None, **_):
    return FNOUNet2d(modes, modes, in_channels, ch=ch, ch_mult=tuple(ch_mult), num_res_blocks=num_res_blocks,
                     dropout=dropout, use_pos=use_pos, norm=norm, use_pointwise_op=use_pointwise_op,
                     out_channels=out_channels)


class ModelWrapper:
    """The ``none`` conditioning: the network alone, no extra inputs. Plugins subclass this.

    ``needs_inputs``: whether the network needs per-batch inputs from ``model_kwargs`` (then the
    training loop cannot draw unconditional preview samples). ``config``: the run configuration.
    """

    needs_inputs = False

    def __init__(self, config: dict | None = None):
        self.run_config = dict(config or {})

    def wrap_dataset(self, dataset, split: str):
        return dataset

    def build_model(self, make_base):
        return make_base()

    def model_kwargs(self, batch: dict, device) -> dict:
        return {}


def dsm_loss():
    """The plain DSM loss ``gen_sde.dsm(x, v, **model_kwargs)``, shape ``(B,)``."""

    def loss(gen_sde, batch, v, model_kwargs):
        return {"loss": gen_sde.dsm(batch["image"], v, **model_kwargs)}

    return loss


def _local(name: str, download: bool) -> None:
    if download:
        raise UserError(f"--download applies to --dataset cifar10; {name} is read from this machine")


def _fixed_crops(name: str, crop_scales: str) -> None:
    if crop_scales != "fixed":
        raise UserError(f"--crop-scales {crop_scales} draws crops of natural-patches' photographs; {name} has "
                        "fixed images (drop the flag)")


def _natural_patches(split="train", resolution=32, download=False, crop_scales="fixed", seed=0, **_):
    _local("natural-patches (scikit-image's bundled photographs)", download)
    return data.load_natural_patches(split, resolution, crop_scales=crop_scales, seed=seed)


def _cifar10(split="train", data_root=None, resolution=32, download=False, crop_scales="fixed", **_):
    _fixed_crops("cifar10", crop_scales)
    return data.load_cifar10(split, data_root, resolution, download=download)


def _image_folder(split="train", data_root=None, resolution=32, download=False, crop_scales="fixed", **_):
    _local("image-folder", download)
    _fixed_crops("image-folder", crop_scales)
    return data.load_image_folder(data_root, resolution)


@hookimpl
def register_models(register):
    register("fno-unet", fno_unet)


@hookimpl
def register_model_wrappers(register):
    register("none", ModelWrapper)


def generated_dataset(kind: str, load=data.load_fields, default_resolution: int = 32):
    """The registry factory of a dataset generated on this machine: ``load(kind, split, resolution)``;
    ``--download`` and ``--crop-scales`` are refused (nothing to fetch, fixed images)."""
    def factory(split="train", resolution=default_resolution, download=False, crop_scales="fixed", **_):
        _local(f"{kind} (generated on this machine)", download)
        _fixed_crops(kind, crop_scales)
        return load(kind, split, resolution)

    return factory


@hookimpl
def register_datasets(register):
    register("natural-patches", _natural_patches)
    register("navier-stokes", generated_dataset("navier-stokes"))
    register("darcy", generated_dataset("darcy"))
    register("cifar10", _cifar10)
    register("image-folder", _image_folder)


@hookimpl
def register_losses(register):
    register("dsm", dsm_loss)


@hookimpl
def register_samplers(register):
    register("denoise", sampling.denoise_step)
    register("euler-maruyama", sampling.euler_maruyama_step)
    register("ddim", sampling.ddim_step)
    register("ddim-x0", sampling.ddim_step)  # the name under which the x0 form was introduced


@hookimpl
def register_commands(register):
    register("train", (arguments.add_train_parser, commands.run_train, "train a model"))
    register("sample", (arguments.add_sample_parser, commands.run_sample, "draw samples from a checkpoint"))
    register("plugins", (lambda parser, host: None, commands.run_plugins, "list plugins and registered keys"))
