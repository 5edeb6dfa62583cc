"""`ddo demo` with more training photographs: the six grayscale natural photographs scikit-image
also ships (camera, brick, grass, gravel, coins, moon; channels repeated to RGB) added to the train
split of `natural-patches`. The test split keeps its two photographs; its masks change, because a
crop's mask depends on its global index and the test crops come after the (longer) train split, so
compare margins over biharmonic, which every run measures on its own masks.

    python benchmarks/more_photos.py --out runs/demo_more_photos [any ddo demo flag]

The extended crops are cached under their own name (`natural_patches_v<N>more_<size>.npz`).
"""
from __future__ import annotations

import sys

import numpy as np

import ddo.data
from ddo.cli import main

GRAY_PHOTOS = ("camera", "brick", "grass", "gravel", "coins", "moon")


def _photo_rgb(name: str, _plain=ddo.data._photo) -> np.ndarray:
    photo = _plain(name)
    return np.repeat(photo[..., None], 3, axis=-1) if photo.ndim == 2 else photo


if __name__ == "__main__":
    ddo.data.TRAIN_PHOTOS = ddo.data.TRAIN_PHOTOS + GRAY_PHOTOS
    ddo.data.NATURAL_PATCHES_VERSION = f"{ddo.data.NATURAL_PATCHES_VERSION}more"
    ddo.data._photo = _photo_rgb
    sys.exit(main(["demo", *sys.argv[1:]]))
