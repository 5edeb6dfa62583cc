"""Per-row random streams: a draw for row ``r`` of a batch comes from row ``r``'s own generator.

A sample of a conditional reconstruction must depend on (seed, image, sample number) alone, never
on the batch it was drawn in, the rows per network call, the order of the data or the number of
processes. :class:`RowGenerators` holds one ``torch.Generator`` per row, each seeded from such a
key; :func:`randn` draws a standard normal tensor whose row ``r`` comes from generator ``r`` (and
from an ordinary generator, or none, as ``torch.randn`` does). Every noise draw of the diffusion
goes through :func:`randn`, so passing a :class:`RowGenerators` wherever a ``generator`` is taken
makes the whole sampler per-row.
"""
from __future__ import annotations

import numpy as np
import torch


def stream_seed(*key: int) -> int:
    """A 64-bit seed that is a pure function of the non-negative integers ``key``
    (numpy's ``SeedSequence``: nearby keys give unrelated streams)."""
    return int(np.random.SeedSequence([int(k) for k in key]).generate_state(1, dtype=np.uint64)[0])


class RowGenerators:
    """One generator per row of a batch, in row order."""

    def __init__(self, generators: list[torch.Generator]):
        if not generators:
            raise ValueError("RowGenerators needs at least one generator")
        self.generators = list(generators)

    @classmethod
    def from_keys(cls, keys, device=None) -> "RowGenerators":
        """Generators on ``device`` seeded by :func:`stream_seed` of each key (a tuple of ints)."""
        device = torch.device(device or "cpu")
        return cls([torch.Generator(device=device).manual_seed(stream_seed(*k)) for k in keys])

    def __len__(self) -> int:
        return len(self.generators)


def randn(shape, generator=None, device=None, dtype=torch.float32) -> torch.Tensor:
    """``torch.randn(shape)``; with a :class:`RowGenerators` of ``shape[0]`` rows, row ``r`` is drawn
    from generator ``r`` (in its own dtype-independent order: the same row gives the same values
    whatever else is in the batch)."""
    if not isinstance(generator, RowGenerators):
        return torch.randn(shape, generator=generator, device=device, dtype=dtype)
    if len(generator) != shape[0]:
        raise ValueError(f"{len(generator)} row generators for a batch of {shape[0]} rows")
    return torch.stack([torch.randn(tuple(shape[1:]), generator=g, device=device, dtype=dtype)
                        for g in generator.generators])


__all__ = ["RowGenerators", "randn", "stream_seed"]
