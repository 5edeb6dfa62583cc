"""The ``sparse-route`` conditioning: a field pair observed channel by channel, the network refining
each image's classical route; and the option it declares."""
from __future__ import annotations

import torch
from ddo.api import Option

from ..data.datasets import FixedSparseMaskDataset
from ..data.masks import OBSERVE_RULES
from ..nn.refiners import SparseInterpModel
from ..wrappers import SparseConditioning
from .cache import RouteCache
from .datasets import PAIR_KINDS

OPTIONS = (
    Option("observe", str, "tasks", "which channels of a field pair the context pixels observe: 'forward' (the "
           "input), 'inverse' (the solution), 'joint' (both), 'tasks' (each image one of the three, a function of "
           "seed and index: one model for all three) or 'all'", "data", choices=OBSERVE_RULES,
           conditioning=("sparse-route",)),
    Option("route_base", str, "classical", "what sparse-route refines: 'classical' (co-kriging pushed through the "
           "physics: milliseconds per pair) or 'best' (the best estimate the product ships: Darcy's inversion on the "
           "inverse and joint tasks, its posterior mean forward on the 128x128 grid; seconds per pair, computed "
           "once and kept in $DDO_CACHE_DIR/pde-estimates, shared with ddo task)", "data",
           choices=("classical", "best"), conditioning=("sparse-route",)),
)
# sparse-route's field pairs are scored per channel, so its loss weighs each channel that the image's task
# scores (--loss-weighting scored-l2; docs/pde-tasks.md)
KEY_DEFAULTS = {"sparse-route": {"parameterization": "x0", "loss": "x0-mse", "loss_t1_fraction": 0.5,
                                 "loss_weighting": "scored-l2", "loss_floor": 1e-8}}


class RouteConditioning(SparseConditioning):
    """``sparse-route``: a field pair (``--dataset navier-stokes-pair`` or ``darcy-pair``) observed channel by
    channel (``--observe``); the network refines the classical route of each image's task (co-kriging
    pushed through the PDE's solver where a route exists, :class:`~ddo_conditional.pde.routes.Routes`) as
    ``sparse-biharmonic`` refines biharmonic inpainting, with one observation mask per channel."""

    needs = ("context_image", "observation_mask", "context_dense")
    dense_in_kwargs = True

    def __init__(self, config: dict | None = None):
        super().__init__(config)
        self.kind = self.run_config.get("dataset")
        if self.kind not in PAIR_KINDS:
            raise ValueError(f"--conditioning sparse-route refines a PDE's classical route; use --dataset "
                             f"{' or '.join(PAIR_KINDS)} (got {self.kind})")
        if "photometric" in self.augment:  # a colour map of a physical field is no sample of its PDE
            raise ValueError("--augment photometric maps the observed values of a field pair, which the route "
                             "solves as physical fields; use --augment none or dihedral (Darcy)")
        self.observe = self.run_config.get("observe") or OPTIONS[0].default
        self.routes = RouteCache(self.kind, self.run_config.get("route_base") or OPTIONS[1].default)

    def mask_dataset(self, dataset, **overrides) -> FixedSparseMaskDataset:
        return super().mask_dataset(dataset, **{"observe": self.observe, **overrides})

    def model_kwargs(self, batch: dict, device) -> dict:
        if "context_channels" not in batch:  # --observe all: every channel at every context pixel
            batch = {**batch, "context_channels": torch.ones(len(batch["context_indices"]), self.channels)}
        dense = self.routes.dense(batch).to(device=device, dtype=batch["image"].dtype)
        return {**super().model_kwargs(batch, device), "context_dense": dense}

    def build_model(self, make_base):
        return SparseInterpModel(make_base(), input_dim=self.channels, refiner_width=int(self.options["refiner_width"]),
                                 residual=self.parameterization == "x0", mask_channels=self.channels)


__all__ = ["RouteConditioning", "OPTIONS", "KEY_DEFAULTS"]
