"""`ddo demo` with more training photographs: the six grayscale natural photographs scikit-image
also ships (camera, brick, grass, gravel, coins, moon; channels repeated to RGB) added to the train
split of `natural-patches`, as the dataset `natural-patches+gray`, registered by this script's plugin
object (`register_datasets`). The test split keeps its two photographs; its masks change, because a
crop's mask depends on its global index and the test crops come after the (longer) train split, so
compare margins over biharmonic, which every run measures on its own masks.

    python benchmarks/more_photos.py --out runs/demo_more_photos [any ddo demo flag]

The extended crops are cached under their own name (the photograph list is part of it).
"""
from __future__ import annotations

import sys

from ddo import hookimpl
from ddo.cli import main
from ddo.data import TRAIN_PHOTOS, load_natural_patches

DATASET = "natural-patches+gray"
GRAY_PHOTOS = ("camera", "brick", "grass", "gravel", "coins", "moon")


class MorePhotosPlugin:
    @hookimpl
    def register_datasets(self, register):
        register(DATASET, lambda split="train", resolution=32, **_: load_natural_patches(
            split, resolution, train_photos=TRAIN_PHOTOS + GRAY_PHOTOS))


if __name__ == "__main__":
    sys.exit(main(["demo", "--dataset", DATASET, *sys.argv[1:]], extra_plugins=[MorePhotosPlugin()], tune_allocator=True))
