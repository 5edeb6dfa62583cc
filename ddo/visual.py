"""PNG grids of images in ``[-1, 1]``, written atomically, with optional row labels."""
from __future__ import annotations

import io

import torch

from .checkpoint import atomic_write

LABEL_HEIGHT = 11  # pixels of the default bitmap font's line, the least room a label row needs


def _labelled(grid: torch.Tensor, labels: list[str], row_height: int, padding: int):
    """The grid ``(3, H, W)`` in ``[0, 1]`` as a PIL image with a white margin on its left holding one
    label per row of tiles, centred on its row."""
    from PIL import Image, ImageDraw, ImageFont

    tiles = Image.fromarray(grid.mul(255).add(0.5).clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy())
    font = ImageFont.load_default()
    draw = ImageDraw.Draw(tiles)
    margin = 6 + max(int(draw.textlength(label, font=font)) for label in labels)
    canvas = Image.new("RGB", (tiles.width + margin, tiles.height), "white")
    canvas.paste(tiles, (margin, 0))
    draw = ImageDraw.Draw(canvas)
    for i, label in enumerate(labels):
        y = padding + i * (row_height + padding) + max(0, (row_height - LABEL_HEIGHT) // 2)
        draw.text((3, y), label, fill="black", font=font)
    return canvas


def save_grid(images: torch.Tensor, path, nrow: int = 8, value_range=(-1.0, 1.0), padding: int = 2,
              row_labels: list[str] | None = None) -> None:
    """Save ``images: (N, C, H, W)`` as one PNG grid with ``nrow`` images per row; ``row_labels``, one per
    row of the grid (``ceil(N / nrow)``), are written in a margin on its left."""
    from torchvision.utils import make_grid, save_image

    images = images.detach().float().cpu()
    buf = io.BytesIO()
    if row_labels is None:
        save_image(images, buf, nrow=nrow, normalize=True, value_range=value_range, padding=padding, format="png")
    else:
        rows = -(-images.shape[0] // nrow)
        if len(row_labels) != rows:
            raise ValueError(f"{len(row_labels)} row labels for a grid of {rows} rows")
        grid = make_grid(images, nrow=nrow, normalize=True, value_range=value_range, padding=padding)
        _labelled(grid, [str(x) for x in row_labels], images.shape[-2], padding).save(buf, format="png")
    atomic_write(path, lambda f: f.write(buf.getvalue()))
