"""The field pairs' loss: each image's task scores some channels (:func:`~ddo_conditional.losses.scored_channels`), and
the loss weighs those alone."""
from __future__ import annotations

from ..losses import x0_mse_relative_l2_loss


def x0_mse_scored_l2_loss(floor: float = 1e-8, t1_fraction: float = 0.5):
    """:func:`x0_mse_relative_l2_loss` on the channels each image's task scores only."""
    return x0_mse_relative_l2_loss(floor=floor, t1_fraction=t1_fraction, scored_only=True)


def x0_mse_scored_l2_t1_loss(floor: float = 1e-8):
    """:func:`x0_mse_scored_l2_loss` with every term at ``t = 1``: the one-call posterior-mean estimate
    trained alone. A network trained so has no samples to draw (times below 1 are never seen). Measured
    (README: PDE tasks): at 64x64 it learned its correction of the route in far fewer steps than with half
    of each batch at ``t < 1``; at 128x128, 204 steps left it at the route."""
    return x0_mse_scored_l2_loss(floor=floor, t1_fraction=1.0)


__all__ = ["x0_mse_scored_l2_loss", "x0_mse_scored_l2_t1_loss"]
