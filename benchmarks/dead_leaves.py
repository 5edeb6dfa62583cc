"""`ddo demo` with synthetic "dead leaves" images added to the train split of `natural-patches`.

The model's margin over biharmonic is large on the training photographs and small on the held-out
ones (`generalization_gap.py`): seven photographs are too few to learn transferable image
statistics from. The dead-leaves model (occluding disks with a power-law size distribution; Lee,
Mumford and Huang 2001) reproduces two of those statistics, the scale invariance of natural images
and their sharp occlusion edges, and can be drawn without limit. Each synthetic image here:

- disks of radius ``r`` with density ``~ r^-3`` between ``r_min`` and ``r_max`` (in pixels of the output),
  drawn front to back until the image is covered, at 4x resolution and averaged down (anti-aliased
  edges);
- each disk coloured by a pixel of one random training crop (the image's palette: the photographs'
  colour statistics), with a random linear shading gradient;
- a random Gaussian blur of 0 to 1 pixel (the photographs' sharpness varies with their scale).

The synthetic crops get global indices after the test split's, so the test crops keep the masks
of every other `ddo demo` run and the margins compare directly. They reach `ddo demo` as the
dataset `natural-patches+dead-leaves`, registered by this script's plugin object (`register_datasets`).

    python benchmarks/dead_leaves.py --count 2430 --out runs/demo_dead_leaves [any ddo demo flag]
    python benchmarks/dead_leaves.py --preview examples.png     # an 8x8 grid of synthetic images only

The run's `metrics.json` gains `synthetic_train: {"kind": "dead-leaves", "count": N, "seed": S}`.
"""
from __future__ import annotations

import argparse
import functools
import sys

import numpy as np

import ddo.data
from ddo import hookimpl
from ddo.cli import main

DATASET = "natural-patches+dead-leaves"


def dead_leaves(rng: np.random.Generator, colours: np.ndarray, size: int = 32, supersample: int = 4,
                r_min: float = 2.0, r_max: float = 64.0, max_disks: int = 4000) -> np.ndarray:
    """One ``(size, size, 3)`` uint8 dead-leaves image; ``colours`` (the palette) is ``(N, 3)`` in ``[0, 1]``."""
    from scipy.ndimage import gaussian_filter

    n = size * supersample
    yy, xx = np.mgrid[0:n, 0:n].astype(np.float32) / supersample  # pixel units of the output
    img = np.zeros((n, n, 3), np.float32)
    empty = np.ones((n, n), bool)
    a, b = r_min ** -2, r_max ** -2
    for _ in range(max_disks):
        r = (a - rng.random() * (a - b)) ** -0.5
        cy, cx = rng.uniform(-r, size + r, 2)
        y0, y1 = max(0, int((cy - r) * supersample)), min(n, int((cy + r) * supersample) + 1)
        x0, x1 = max(0, int((cx - r) * supersample)), min(n, int((cx + r) * supersample) + 1)
        if y0 >= y1 or x0 >= x1:
            continue
        dy, dx = yy[y0:y1, x0:x1] - cy, xx[y0:y1, x0:x1] - cx
        inside = (dy * dy + dx * dx <= r * r) & empty[y0:y1, x0:x1]
        if not inside.any():
            continue
        colour = colours[rng.integers(len(colours))]
        slope = rng.normal(0.0, 0.15, 2) / max(r, 1.0)  # shading across the disk: ~0.15 per radius
        shade = (dy * slope[0] + dx * slope[1])[..., None]
        patch = img[y0:y1, x0:x1]
        patch[inside] = (colour + shade)[inside]
        empty[y0:y1, x0:x1] &= ~inside
        if not empty.any():
            break
    img[empty] = colours[rng.integers(len(colours))]
    img = img.reshape(size, supersample, size, supersample, 3).mean(axis=(1, 3))
    sigma = rng.uniform(0.0, 1.0)
    if sigma > 0.05:
        img = gaussian_filter(img, (sigma, sigma, 0), mode="reflect")
    return (np.clip(img, 0.0, 1.0) * 255 + 0.5).astype(np.uint8)


class WithSynthetic(ddo.data.ArrayImages):
    """The train photographs' crops followed by synthetic ones, indexed after the test split."""

    def __init__(self, photos: ddo.data.ArrayImages, synthetic: np.ndarray, n_test: int):
        super().__init__(np.concatenate([photos.images, synthetic]), 0,
                         list(photos.sources) + ["dead_leaves"] * len(synthetic))
        self.n_photos, self.n_test = len(photos.images), n_test

    def __getitem__(self, i: int) -> dict:
        item = super().__getitem__(i)
        if i >= self.n_photos:
            item["index"] = self.n_test + int(i)
        return item


def palette_crops(photos: ddo.data.ArrayImages) -> np.ndarray:
    """Every training crop's pixels as a palette, ``(N, H * W, 3)`` in ``[0, 1]``."""
    return photos.images.reshape(len(photos.images), -1, 3).astype(np.float32) / 255


def synthesize(photos: ddo.data.ArrayImages, count: int, seed: int, size: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    crops = palette_crops(photos)
    return np.stack([dead_leaves(rng, crops[rng.integers(len(crops))], size) for _ in range(count)])


class DeadLeavesPlugin:
    """Registers :data:`DATASET`: natural-patches with ``count`` synthetic crops in its train split."""

    def __init__(self, count: int, seed: int = 0):
        self.count, self.seed = count, seed

    @functools.cache
    def load(self, split: str, size: int = 32):
        part = ddo.data.load_natural_patches(split, size)
        if split != "train" or self.count == 0:
            return part
        n_test = len(ddo.data.load_natural_patches("test", size).images)
        return WithSynthetic(part, synthesize(part, self.count, self.seed, size), n_test)

    @hookimpl
    def register_datasets(self, register):
        register(DATASET, lambda split="train", resolution=32, **_: self.load(split, resolution))


def preview(path: str, seed: int) -> None:
    from PIL import Image

    images = synthesize(ddo.data.load_natural_patches("train", 32), 64, seed, 32)
    grid = images.reshape(8, 8, 32, 32, 3).transpose(0, 2, 1, 3, 4).reshape(256, 256, 3)
    Image.fromarray(grid).save(path)
    print(f"wrote {path}")


def annotate(out: str, count: int, seed: int) -> None:
    import json
    import os

    path = os.path.join(out, "metrics.json")
    with open(path) as f:
        metrics = json.load(f)
    metrics["synthetic_train"] = {"kind": "dead-leaves", "count": count, "seed": seed}
    with open(path + ".tmp", "w") as f:
        json.dump(metrics, f, indent=2)
    os.replace(path + ".tmp", path)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--count", type=int, default=2430)
    parser.add_argument("--synthetic-seed", type=int, default=0)
    parser.add_argument("--preview")
    parser.add_argument("--out", default="runs/demo")
    known, rest = parser.parse_known_args()
    if known.preview:
        sys.exit(preview(known.preview, known.synthetic_seed))
    code = main(["demo", "--dataset", DATASET, "--out", known.out, *rest],
                 extra_plugins=[DeadLeavesPlugin(known.count, known.synthetic_seed)], tune_allocator=True)
    if code == 0:
        annotate(known.out, known.count, known.synthetic_seed)
    sys.exit(code)
