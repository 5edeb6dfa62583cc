"""PNG grids of images in ``[-1, 1]``, written atomically."""
from __future__ import annotations

import io

import torch

from .checkpoint import atomic_write


def save_grid(images: torch.Tensor, path, nrow: int = 8, value_range=(-1.0, 1.0), padding: int = 2) -> None:
    """Save ``images: (N, C, H, W)`` as one PNG grid with ``nrow`` images per row."""
    from torchvision.utils import save_image

    buf = io.BytesIO()
    save_image(images.detach().float().cpu(), buf, nrow=nrow, normalize=True, value_range=value_range,
               padding=padding, format="png")
    atomic_write(path, lambda f: f.write(buf.getvalue()))
