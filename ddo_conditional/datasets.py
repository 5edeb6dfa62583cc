"""The fixed-mask dataset and the batched scatters that turn sparse points into images."""
from __future__ import annotations

import argparse

import numpy as np
import torch
from torch.utils.data import Dataset

from .biharmonic import biharmonic_inpaint
from .masks import PATTERNS, MaskError, fixed_mask
from .points import bilinear, cell_coords, dihedral_points


VALUE_RANGES = ("auto", "0,1", "-1,1")
POINT_COORDS = ("none", "grid", "jitter")


def as_item(item, position: int, value_range: str = "auto") -> dict:
    """One dataset item as ``{"image": (C, H, W) float in [-1, 1], "index": int, ...}``.

    Accepted items: dicts with ``image`` (and ``index``), ``(image, label, ...)`` tuples as torchvision
    datasets return them, bare tensors, and PIL images (converted as ``ToTensor`` does). The index is
    the item's own ``index``, else ``position``. Pixel values, one rule: dicts follow ddo's convention
    (``[-1, 1]``); tuples, tensors and PIL images follow torchvision's (``[0, 1]``, mapped to ``[-1, 1]``
    by ``2 x - 1``). ``value_range="0,1"`` or ``"-1,1"`` says it for every item instead.
    """
    if isinstance(item, dict):
        out, native = dict(item), "-1,1"
    elif isinstance(item, (tuple, list)):
        out, native = {"image": item[0], "label": item[1]} if len(item) > 1 else {"image": item[0]}, "0,1"
    else:
        out, native = {"image": item}, "0,1"
    image = out["image"]
    if not torch.is_tensor(image):
        image = _pil_to_tensor(image)
    image = image.float()
    if image.ndim == 2:
        image = image[None]
    if (native if value_range == "auto" else value_range) == "0,1":
        image = image * 2 - 1
    out["image"] = image
    out["index"] = int(out.get("index", position))
    return out


def _pil_to_tensor(image) -> torch.Tensor:
    """A PIL image as ``ToTensor`` gives it: ``(C, H, W)`` float in ``[0, 1]``."""
    try:
        array = np.array(image)
    except Exception:
        array = None
    if array is None or array.dtype == object or array.ndim not in (2, 3):
        raise TypeError(f"dataset items must hold an image tensor or a PIL image, got {type(image).__name__}")
    array = array[..., None] if array.ndim == 2 else array
    scale = 255.0 if array.dtype == np.uint8 else 1.0
    return torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1).float() / scale


class FixedSparseMaskDataset(Dataset):
    """Adds a fixed context/query mask to every item of a map-style ``dataset``.

    Items may be dicts, ``(image, label)`` tuples (torchvision datasets), tensors or PIL images
    (:func:`as_item` states the pixel-range rule). The mask of an item is
    :func:`~ddo_conditional.masks.fixed_mask` of its global index, so it is the same in every epoch
    and process. Items become dicts with ``image (C, H, W)`` in ``[-1, 1]``, ``index``,
    ``context_indices (K,)``, ``context_values (K, C)``, ``query_indices (Q,)`` and ``query_values (Q, C)``.

    ``coords`` adds the context as a point set (:mod:`ddo_conditional.points`): ``context_coords (K, 2)``,
    ``context_point_values (K, C)`` and ``context_valid (K,)``. ``"grid"``: the centres of the context
    pixels (the values are the pixels'); ``"jitter"``: each point moved to a fixed random position
    inside its pixel's cell (a function of seed and index, like the mask), its value read from the
    image there by bilinear interpolation.
    """

    def __init__(self, dataset, context_ratio: float = 0.1, query_ratio: float = 0.1, seed: int = 42,
                 pattern: str = "random", value_range: str = "auto", coords: str = "none"):
        if pattern not in PATTERNS:
            raise MaskError(f"unknown mask pattern {pattern!r}; known: {', '.join(PATTERNS)}")
        if seed < 0:
            raise MaskError(f"mask seed must be non-negative, got {seed}")
        if value_range not in VALUE_RANGES:
            raise ValueError(f"unknown value range {value_range!r}; known: {', '.join(VALUE_RANGES)}")
        if coords not in POINT_COORDS:
            raise ValueError(f"unknown context coordinates {coords!r}; known: {', '.join(POINT_COORDS)}")
        self.dataset, self.value_range, self.coords = dataset, value_range, coords
        self.context_ratio, self.query_ratio, self.seed, self.pattern = context_ratio, query_ratio, seed, pattern
        self._masks: dict = {}  # (index, h, w) -> (context, query) int32 indices: computed once per image
        if len(dataset):
            self[0]  # validates the ratios against the image size once, early

    def __len__(self) -> int:
        return len(self.dataset)

    def mask(self, index: int, h: int, w: int):
        key = (index, h, w)
        if key not in self._masks:
            ctx, qry = fixed_mask(self.seed, index, h, w, self.context_ratio, self.query_ratio, self.pattern)
            self._masks[key] = (ctx.astype(np.int32), qry.astype(np.int32))
        ctx, qry = self._masks[key]
        return torch.from_numpy(ctx).long(), torch.from_numpy(qry).long()

    def point_coords(self, index: int, h: int, w: int, context: torch.Tensor) -> torch.Tensor:
        """``(K, 2)`` coordinates of the context points of image ``index`` (see the class docstring)."""
        offsets = None
        if self.coords == "jitter":
            offsets = np.random.default_rng([self.seed, index, h, w, 0x1177]).random((len(context), 2))
        return torch.from_numpy(cell_coords(context.numpy(), h, w, offsets)).float()

    def __getitem__(self, i: int) -> dict:
        item = as_item(self.dataset[i], i, self.value_range)
        image = item["image"]
        c, h, w = image.shape
        ctx, qry = self.mask(item["index"], h, w)
        flat = image.reshape(c, h * w)
        item.update(context_indices=ctx, context_values=flat[:, ctx].T.contiguous(),
                    query_indices=qry, query_values=flat[:, qry].T.contiguous())
        if self.coords != "none":
            coords = self.point_coords(item["index"], h, w, ctx)
            values = item["context_values"] if self.coords == "grid" else bilinear(image, coords)
            item.update(context_coords=coords, context_point_values=values,
                        context_valid=torch.ones(len(ctx), dtype=torch.bool))
        return item


def create_context_image_batched(values: torch.Tensor, indices: torch.Tensor, h: int, w: int, c: int) -> torch.Tensor:
    """Dense context image ``(B, C, H, W)``: ``values (B, K, C)`` at flat ``indices (B, K)``, zeros elsewhere."""
    b = indices.shape[0]
    out = values.new_zeros(b, c, h * w)
    out.scatter_(2, indices.unsqueeze(1).expand(b, c, -1), values.transpose(1, 2))
    return out.reshape(b, c, h, w)


def create_query_mask_batched(indices: torch.Tensor, h: int, w: int, dtype=torch.float32) -> torch.Tensor:
    """Binary mask ``(B, 1, H, W)`` with ones at flat ``indices (B, Q)``."""
    b = indices.shape[0]
    out = torch.zeros(b, 1, h * w, device=indices.device, dtype=dtype)
    out.scatter_(2, indices.unsqueeze(1), 1.0)
    return out.reshape(b, 1, h, w)


def create_observation_mask_batched(indices: torch.Tensor, h: int, w: int, dtype=torch.float32) -> torch.Tensor:
    """Binary mask ``(B, 1, H, W)`` of the observed (context) pixels; tells an observed zero from a gap."""
    return create_query_mask_batched(indices, h, w, dtype)


def context_tensors(batch: dict, device=None) -> dict:
    """``context_image (B, C, H, W)`` and ``observation_mask (B, 1, H, W)`` of a collated batch."""
    image = batch["image"]
    _, c, h, w = image.shape
    idx = batch["context_indices"].to(device)
    vals = batch["context_values"].to(device=device, dtype=image.dtype)
    return {"context_image": create_context_image_batched(vals, idx, h, w, c),
            "observation_mask": create_observation_mask_batched(idx, h, w, image.dtype)}


def biharmonic_context(indices: torch.Tensor, values: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Biharmonic inpainting ``(C, H, W)`` of ``values (K, C)`` observed at flat ``indices (K,)`` of an
    ``h x w`` grid (one image; :func:`~ddo_conditional.biharmonic.biharmonic_inpaint` for a batch)."""
    return biharmonic_inpaint(values[None], indices[None], h, w)[0]


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
    ``context_dense`` (an interpolation of the context, equivariant under these maps), if an item has
    one, is moved too. Each item still shows the same observed pixels of the same
    photograph, seen in another orientation.

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
        if "context_dense" in item:
            item["context_dense"] = apply_dihedral(item["context_dense"], k, flip).contiguous()
        for key in ("context_indices", "query_indices"):
            item[key] = move[item[key]]
        if "context_coords" in item:
            item["context_coords"] = dihedral_points(item["context_coords"], k, flip)
        return item
