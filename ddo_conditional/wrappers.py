"""The ``--conditioning`` registry entries: each wraps the host's network in a conditioning network
(:mod:`~ddo_conditional.nn`), puts fixed masks on the data and turns a batch into the network's context
kwargs. The options they read are declared in :mod:`~ddo_conditional.options`. The wrappers only
condition: what the network's output means (eps, x0, v) is the diffusion's ``parameterization``.
"""
from __future__ import annotations

import logging

from ddo.api import X0_PARAMETERIZATIONS, ModelWrapper

from .classical.biharmonic import MAX_PIXELS, biharmonic_inpaint
from .classical.gaussian_prior import PRIOR_IMAGES, PriorModule, fit_prior, krige_contexts
from .classical.thin_plate import point_context
from .data.augment import DihedralAugment, PhotometricAugment, augment_list, check_dihedral
from .data.datasets import FixedSparseMaskDataset, context_tensors, context_validity, own_context, training_fields
from .data.masks import PATTERNS, MaskError, context_ratio_arg, mask_counts, ratio_range
from .nn.conditional_model import ConditionalDDOModel, ConditionalDDOModelSimple, ConditionalLiftModel
from .nn.encoders import ENCODERS
from .nn.refiners import PointSetModel, SparseInterpModel
from .options import DEFAULTS, DENSE_KEYS, SCALE_FLOOR_BEFORE_OPTION

log = logging.getLogger("ddo_conditional")

# the point-set keys' floor on the scale of their correction: below the spline's error at 30% of a
# smooth field at 128x128 (README: "Any density, any resolution"); configurations written before the
# option existed keep the floor they were trained with


class SparseConditioning(ModelWrapper):
    """Fixed sparse masks on the data and the context image as a network input.

    ``config`` is the run configuration; options it lacks (a wrapper built directly from Python)
    take the declared defaults of :data:`OPTIONS`.
    """

    needs = ("context_image",)
    needs_inputs = True
    dense_in_kwargs = False  # whether model_kwargs hold the interpolation the network refines (context_dense)

    def __init__(self, config: dict | None = None):
        super().__init__(config)
        cfg = {**DEFAULTS, **{k: v for k, v in self.run_config.items() if v is not None}}
        self.context_ratio, self.query_ratio = context_ratio_arg(cfg["context_ratio"]), float(cfg["query_ratio"])
        self.mask_seed, self.mask_pattern = int(cfg["mask_seed"]), cfg["mask_pattern"]
        self.augment = augment_list(cfg["augment"])
        self.options = cfg
        self.seed = int(cfg.get("seed", 0))
        self.channels = int(cfg.get("channels", 3))
        self.parameterization = cfg.get("parameterization", "eps")
        if self.mask_pattern not in PATTERNS:
            raise MaskError(f"unknown mask pattern {self.mask_pattern!r}; known: {', '.join(PATTERNS)}")
        weighting = self.run_config.get("loss_weighting")
        if weighting not in (None, "none") and not self.dense_in_kwargs:
            raise ValueError(f"--loss-weighting {weighting} weighs by the error of the estimate the network refines; "
                             f"--conditioning {self.run_config.get('conditioning')} refines none (use "
                             f"{', '.join(DENSE_KEYS)}, or --loss-weighting none)")
        if self.mask_seed < 0:
            raise MaskError(f"mask seed must be non-negative, got {self.mask_seed}")
        lo, hi = ratio_range(self.context_ratio)
        for res in cfg.get("resolutions") or [int(cfg.get("resolution", 32))]:  # every size the run trains at
            mask_counts(int(res), int(res), hi, self.query_ratio)
            mask_counts(int(res), int(res), lo, self.query_ratio)

    def mask_dataset(self, dataset, **overrides) -> FixedSparseMaskDataset:
        kw = {"context_ratio": self.context_ratio, "query_ratio": self.query_ratio, "seed": self.mask_seed,
              "pattern": self.mask_pattern}
        kw.update({k: v for k, v in overrides.items() if v is not None})
        return FixedSparseMaskDataset(dataset, **kw)

    def wrap_dataset(self, dataset, split: str):
        masked = self.mask_dataset(dataset)
        if split != "train":
            return masked
        if "photometric" in self.augment:
            masked = PhotometricAugment(masked, self.seed)
        if "dihedral" in self.augment:
            check_dihedral(self.augment, dataset)
            masked = DihedralAugment(masked, self.seed)
        return masked

    def model_kwargs(self, batch: dict, device) -> dict:
        ctx = context_tensors(batch, device)
        if log.isEnabledFor(logging.DEBUG):
            b, c = ctx["context_image"].shape[:2]
            observed = int(ctx["observation_mask"].sum().item()) * c
            log.debug("context: %d observed entries in the batch (%d images x %d pixels x %d channels)",
                      observed, b, batch["context_indices"].shape[1], c)
        return {k: ctx[k] for k in self.needs if k in ctx}

    def build_model(self, make_base):
        raise NotImplementedError


class Unconditional(SparseConditioning):
    """An unconditional checkpoint read through the masks: the data get their fixed masks (the mask options'
    defaults unless a command overrides them), the network gets no inputs; the observations reach the
    samples through sampling-time guidance alone (``ddo reconstruct --guidance``). Never trained."""

    needs = ()
    needs_inputs = False

    def build_model(self, make_base):
        return make_base()


class EncoderConditioning(SparseConditioning):
    """``sparse-encoder``: :class:`ConditionalDDOModel`."""

    def build_model(self, make_base):
        return ConditionalDDOModel(make_base(), input_dim=self.channels,
                                   context_feature_dim=int(self.options["context_feature_dim"]))


class ConcatConditioning(SparseConditioning):
    """``sparse-concat``: :class:`ConditionalDDOModelSimple`."""

    def build_model(self, make_base):
        return ConditionalDDOModelSimple(make_base(), input_dim=self.channels)


class LiftConditioning(SparseConditioning):
    """``sparse-lift``: :class:`ConditionalLiftModel` (context and mask into the lifting layer)."""

    needs = ("context_image", "observation_mask")

    def build_model(self, make_base):
        return ConditionalLiftModel(make_base(), input_dim=self.channels)


class InterpConditioning(SparseConditioning):
    """``sparse-interp``: :class:`SparseInterpModel` (interpolated context; a residual over it when the
    network is read as ``x0``)."""

    needs = ("context_image", "observation_mask")

    def build_model(self, make_base):
        if self.options["residual_scale"] != "none" and self.parameterization not in X0_PARAMETERIZATIONS:
            raise ValueError(f"--residual-scale {self.options['residual_scale']} scales an x0 or v output; "
                             f"this run has --parameterization {self.parameterization}")
        return SparseInterpModel(make_base(), input_dim=self.channels, refiner_width=int(self.options["refiner_width"]),
                                 residual_scale=self.options["residual_scale"], residual=self.parameterization == "x0")


class BiharmonicInterpConditioning(InterpConditioning):
    """``sparse-biharmonic``: :class:`SparseInterpModel` refining the biharmonic inpainting of the
    context instead of the normalised convolution. The inpainting is computed for the whole batch on
    the batch's device (:func:`~ddo_conditional.classical.biharmonic.biharmonic_inpaint`), so data loading does
    no per-item solve."""

    needs = ("context_image", "observation_mask", "context_dense")
    dense_in_kwargs = True

    def __init__(self, config: dict | None = None):
        super().__init__(config)
        res = max(int(r) for r in (self.run_config.get("resolutions") or [self.options.get("resolution", 32)]))
        if res * res > MAX_PIXELS:  # above it, each image is solved on its own: fine to reconstruct, slow to train
            raise ValueError(f"sparse-biharmonic trains at resolutions up to 64 (it reconstructs at any), got {res}; "
                             "use sparse-interp")

    def model_kwargs(self, batch: dict, device) -> dict:
        h, w = batch["image"].shape[-2:]
        values = batch["context_values"].to(device, non_blocking=True)
        dense = biharmonic_inpaint(values, batch["context_indices"].to(device, non_blocking=True), h, w,
                                   context_validity(batch).to(device))
        return {**super().model_kwargs(batch, device), "context_dense": dense}


class PointConditioning(SparseConditioning):
    """``sparse-setconv`` / ``sparse-attention``: the context as a point set at any coordinates
    (``--context-coords``), encoded onto the grid of the image by a set convolution or by attention,
    with their thin-plate spline as the interpolation an ``x0`` network refines
    (:class:`PointSetModel`); any resolution."""

    needs = ()
    dense_in_kwargs = True

    def __init__(self, config: dict | None = None):
        super().__init__(config)
        self.key = self.run_config.get("conditioning", "sparse-setconv")
        self.coords = self.options["context_coords"]
        # not the declared default: a configuration without the key predates the option (its model was
        # trained with the earlier floor); `ddo train` always stores it
        self.scale_floor = float(self.run_config.get("scale_floor", SCALE_FLOOR_BEFORE_OPTION))

    def mask_dataset(self, dataset, **overrides) -> FixedSparseMaskDataset:
        return super().mask_dataset(dataset, **{"coords": self.coords, **overrides})

    def model_kwargs(self, batch: dict, device) -> dict:
        h, w = batch["image"].shape[-2:]
        return point_context(*(batch[k].to(device, non_blocking=True) for k in
                               ("context_coords", "context_point_values", "context_valid")), h, w)

    def build_model(self, make_base):
        dim = int(self.options["point_feature_dim"])
        if self.key == "sparse-attention":
            encoder = ENCODERS[self.key](self.channels, dim, heads=int(self.options["attention_heads"]))
        else:
            encoder = ENCODERS[self.key](self.channels, dim, base_resolution=int(self.options.get("resolution", 32)))
        return PointSetModel(make_base(), encoder, dim, input_dim=self.channels, scale_floor=self.scale_floor,
                             residual=self.parameterization == "x0")


class KrigingConditioning(SparseConditioning):
    """``sparse-kriging``: :class:`SparseInterpModel` refining the Gaussian posterior of the context (kriging
    under a prior of the training fields: stationary on the torus for periodic fields, else their mean and
    sample covariance), with the posterior's std relative to the prior's as one more input per channel.
    An ``x0`` network starts as the posterior mean itself (a zero residual), so it begins where the best
    linear estimate of the training data is (what training does from there: docs/fields.md). The prior is fitted on the first training images when
    training starts (:meth:`wrap_dataset`) and kept as buffers of the network
    (:class:`~ddo_conditional.classical.gaussian_prior.PriorModule`): saved and restored with the checkpoint."""

    needs = ("context_image", "observation_mask", "context_dense", "context_extra")
    dense_in_kwargs = True

    def build_model(self, make_base):
        model = SparseInterpModel(make_base(), input_dim=self.channels, refiner_width=int(self.options["refiner_width"]),
                                  residual=self.parameterization == "x0", extra_channels=self.channels)
        model.prior = self.prior = PriorModule()
        return model

    def wrap_dataset(self, dataset, split: str):
        if split == "train" and self.prior.empty:  # the data under the host's random flips
            source = getattr(dataset, "dataset", dataset)
            periodic = bool((getattr(source, "field", None) or {}).get("periodic"))
            self.prior.set(fit_prior(training_fields(source, PRIOR_IMAGES), periodic))
        return super().wrap_dataset(dataset, split)

    def model_kwargs(self, batch: dict, device) -> dict:
        h, w = batch["image"].shape[-2:]
        prior = self.prior.at(h, w)
        mean, std = krige_contexts(prior, own_context(batch))
        relative = std / prior.variance().clamp_min(1e-300).sqrt()
        dtype = batch["image"].dtype
        return {**super().model_kwargs(batch, device), "context_dense": mean.to(device, dtype),
                "context_extra": relative.to(device, dtype)}


WRAPPERS = {"sparse-encoder": EncoderConditioning, "sparse-concat": ConcatConditioning,
            "sparse-lift": LiftConditioning, "sparse-interp": InterpConditioning,
            "sparse-biharmonic": BiharmonicInterpConditioning, "sparse-setconv": PointConditioning,
            "sparse-attention": PointConditioning, "sparse-kriging": KrigingConditioning}
