"""Training-time augmentations of fixed-mask items (pure functions of seed, epoch and index) and
the square's rotations and reflections they and the symmetrised estimates use."""
from __future__ import annotations

import argparse

import numpy as np
import torch
from ddo.api import UserError, dihedral_invariant
from torch.utils.data import Dataset

from .points import dihedral_points

AUGMENTATIONS = ("dihedral", "photometric")


class AugmentError(argparse.ArgumentTypeError, ValueError):
    """An unknown ``--augment`` name (a flag error on the command line, a ``ValueError`` elsewhere)."""


def augment_list(text: str) -> str:
    """``--augment``: ``none`` or a comma-separated subset of :data:`AUGMENTATIONS`, in canonical order."""
    names = {n.strip() for n in str(text).split(",") if n.strip()} - {"none"}
    unknown = names - set(AUGMENTATIONS)
    if unknown:
        raise AugmentError(f"unknown augmentation {', '.join(sorted(unknown))}; known: none, "
                           f"{', '.join(AUGMENTATIONS)} (combine with commas)")
    return ",".join(n for n in AUGMENTATIONS if n in names) or "none"


def check_dihedral(augment: str, dataset) -> None:
    """Refuse ``--augment`` with ``dihedral`` for data whose law the square's rotations and reflections
    change (:func:`ddo.api.dihedral_invariant`): a rotated forced flow is no sample of its equation."""
    if "dihedral" in augment and not dihedral_invariant(dataset):
        raise UserError(f"--augment {augment}: the law of this dataset's fields is not invariant under the "
                        "square's rotations and reflections (a forcing picks a direction); drop dihedral from --augment")


def epoch_of(dataset) -> int:
    """The epoch of the first dataset in the ``.dataset`` chain that has one (the trainer's
    :class:`~ddo.data.RandomFlip`), else 0."""
    d = dataset
    while d is not None:
        if "epoch" in vars(d):
            return int(vars(d)["epoch"])
        d = vars(d).get("dataset")
    return 0


class _Wrapper(Dataset):
    """A training-time transform of :class:`FixedSparseMaskDataset` items that exposes the wrapped
    dataset's mask parameters."""

    def __init__(self, dataset, seed: int = 0):
        self.dataset, self.seed = dataset, seed

    def __len__(self) -> int:
        return len(self.dataset)

    def __getattr__(self, name):
        if name in ("dataset", "seed") or name.startswith("_"):
            raise AttributeError(name)
        return getattr(self.dataset, name)


def photometric_map(rng: np.random.Generator, channels: int):
    """A random colour map of ``[0, 1]`` values ``(..., C, N)`` -> same shape, pixel by pixel: a
    channel permutation, a hue rotation (+-30 degrees about the grey axis), saturation (x0.6-1.4),
    contrast about ``anchor`` (x0.7-1.4), gamma (0.74-1.35) and brightness (+-0.08), then a clip."""
    perm = rng.permutation(channels) if channels == 3 else np.arange(channels)
    theta = rng.uniform(-np.pi / 6, np.pi / 6)
    sat, con = rng.uniform(0.6, 1.4), np.exp(rng.uniform(np.log(0.7), np.log(1.4)))
    gamma, bright = np.exp(rng.uniform(-0.3, 0.3)), rng.uniform(-0.08, 0.08)
    k = np.ones(3) / np.sqrt(3)  # Rodrigues' rotation about the grey axis
    cross = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    rot = torch.tensor(np.cos(theta) * np.eye(3) + np.sin(theta) * cross + (1 - np.cos(theta)) * np.outer(k, k),
                       dtype=torch.float32)

    def apply(x: torch.Tensor, anchor: torch.Tensor) -> torch.Tensor:
        x = x[..., perm, :]
        if channels == 3:
            x = torch.einsum("ij,...jn->...in", rot.to(x.dtype), x)
            grey = x.mean(-2, keepdim=True)
            x = grey + sat * (x - grey)
        x = anchor + con * (x - anchor)
        return (x.clamp(0, 1) ** gamma + bright).clamp(0, 1)

    return apply


class PhotometricAugment(_Wrapper):
    """Training items under a random colour map (:func:`photometric_map`) of ``(seed, epoch, index)``,
    applied to the image; the context and query values are read again from the mapped image at the
    same (fixed) indices, so image and context stay consistent. The contrast anchor is the image's
    mean before the map."""

    def __getitem__(self, i: int) -> dict:
        item = dict(self.dataset[i])
        image = item["image"]
        c, h, w = image.shape
        rng = np.random.default_rng([self.seed, epoch_of(self), int(item["index"]), 0xC010])
        x = (image.reshape(c, h * w) + 1) / 2
        colour, anchor = photometric_map(rng, c), x.mean()
        x = colour(x, anchor) * 2 - 1
        item["image"] = x.reshape(c, h, w)
        for key in ("context", "query"):
            item[key + "_values"] = x[:, item[key + "_indices"]].T.contiguous()
        if "context_point_values" in item:  # the same map on the points' own values
            p = (item["context_point_values"].T + 1) / 2
            item["context_point_values"] = (colour(p, anchor) * 2 - 1).T.contiguous()
        return item


def dihedral_transforms(h: int, w: int) -> list[tuple[int, bool]]:
    """``(quarter turns, flip)`` pairs of the symmetries of an ``h x w`` grid: the 8 of the square's
    dihedral group when ``h == w``, else the 4 that keep the shape."""
    turns = range(4) if h == w else (0, 2)
    return [(k, flip) for k in turns for flip in (False, True)]


def apply_dihedral(t: torch.Tensor, k: int, flip: bool) -> torch.Tensor:
    """``k`` quarter turns of the last two axes, then a flip of the last one if ``flip``."""
    t = torch.rot90(t, k, (-2, -1))
    return t.flip(-1) if flip else t


def undo_dihedral(t: torch.Tensor, k: int, flip: bool) -> torch.Tensor:
    """Inverse of :func:`apply_dihedral`."""
    return torch.rot90(t.flip(-1) if flip else t, -k, (-2, -1))


class DihedralAugment(_Wrapper):
    """Training items under a random element of :func:`dihedral_transforms`, applied to the image *and*
    to its fixed context: pixel indices are moved with the pixels, values kept, and a precomputed
    point coordinates, if an item has them, are moved too. Each item still shows the same observed
    pixels of the same photograph, seen in another orientation.

    The element is a pure function of ``(seed, epoch, index)`` (:func:`epoch_of`).
    """

    def __init__(self, dataset, seed: int = 0):
        super().__init__(dataset, seed)
        self._moves: dict = {}

    def _move(self, k: int, flip: bool, h: int, w: int) -> torch.Tensor:
        """``new_flat_index[old_flat_index]`` of :func:`apply_dihedral` ``(k, flip)`` on an ``h x w`` grid."""
        key = (k, flip, h, w)
        if key not in self._moves:
            old = apply_dihedral(torch.arange(h * w).reshape(h, w), k, flip).reshape(-1)
            new = torch.empty_like(old)
            new[old] = torch.arange(h * w)
            self._moves[key] = new
        return self._moves[key]

    def __getitem__(self, i: int) -> dict:
        item = dict(self.dataset[i])
        c, h, w = item["image"].shape
        group = dihedral_transforms(h, w)
        rng = np.random.default_rng([self.seed, epoch_of(self), int(item["index"]), 0x0D4])
        k, flip = group[int(rng.integers(len(group)))]
        if (k, flip) == (0, False):
            return item
        move = self._move(k, flip, h, w)
        item["image"] = apply_dihedral(item["image"], k, flip).contiguous()
        for key in ("context_indices", "query_indices"):
            item[key] = move[item[key]]
        if "context_coords" in item:
            item["context_coords"] = dihedral_points(item["context_coords"], k, flip)
        return item
