"""Which images every training step reads: a pure function of ``(seed, step)``, the same in every
process and worker and after a resume.

A run trains on one dataset per resolution (one for a single ``--resolution``; one per entry of
``--resolutions``), called parts. Step ``k`` reads part ``k mod P``: every batch holds images of one
size, and the parts take turns, so each resolution gets the same number of steps. Within a part the
batches follow a seeded permutation per epoch of that part.
"""
from __future__ import annotations

from typing import Sequence

import torch

from .data import RandomFlip


def epoch_batches(n: int, global_batch: int, seed: int, epoch: int) -> list[list[int]]:
    """The global batches of one epoch over ``n`` images: a seeded permutation cut into full batches."""
    g = torch.Generator().manual_seed((seed * 100_003 + epoch) % 2 ** 64)  # the generator takes 64 bits
    perm = torch.randperm(n, generator=g).tolist()
    return [perm[i * global_batch:(i + 1) * global_batch] for i in range(n // global_batch)]


def part_seed(seed: int, part: int) -> int:
    """The permutation seed of part ``part``: ``seed`` itself for the first, so a single-resolution
    run reads exactly the batches it read before parts existed."""
    return seed if part == 0 else (seed * 1_000_033 + part * 7_919) % (2 ** 62)


class StepBatches(torch.utils.data.Sampler):
    """This rank's items of every step from ``start`` on, as ``(part, epoch, index)`` triples.

    ``sizes``: the number of images of each part (an ``int`` for one part). Step ``k`` reads part
    ``p = k mod P`` and that part's batch number ``k // P``, epoch after epoch, so one sampler serves
    the whole run and a resumed run continues where it stopped.
    """

    def __init__(self, sizes: Sequence[int] | int, global_batch: int, seed: int, start: int, rank: int = 0,
                 world: int = 1):
        self.sizes = [sizes] if isinstance(sizes, int) else list(sizes)
        self.global_batch, self.seed, self.start = global_batch, seed, start
        self.local = slice(rank * (global_batch // world), (rank + 1) * (global_batch // world))
        self.steps_per_epoch = [n // global_batch for n in self.sizes]
        if min(self.steps_per_epoch) < 1:
            raise ValueError(f"every part needs at least one batch of {global_batch}; sizes {self.sizes}")

    def __iter__(self):
        parts = len(self.sizes)
        cursors = []  # per part: (epoch, position) of its next batch, and the epoch's batches
        for p in range(parts):
            done = self.start // parts + (1 if p < self.start % parts else 0)  # this part's steps before start
            epoch, pos = divmod(done, self.steps_per_epoch[p])
            cursors.append([epoch, pos, None])
        p = self.start % parts
        while True:
            c = cursors[p]
            if c[2] is None:
                c[2] = epoch_batches(self.sizes[p], self.global_batch, part_seed(self.seed, p), c[0])
            yield [(p, c[0], i) for i in c[2][c[1]][self.local]]
            c[1] += 1
            if c[1] == self.steps_per_epoch[p]:
                c[0], c[1], c[2] = c[0] + 1, 0, None
            p = (p + 1) % parts


class EpochItems(torch.utils.data.Dataset):
    """The parts of a run indexed by ``(part, epoch, index)``: sets the epoch of the part's ``flipped``
    (its :class:`~ddo.data.RandomFlip`, somewhere inside the part's dataset) before reading, so that every
    worker process, however long it lives, draws the same per-epoch flips as the main process.

    ``parts``: ``(dataset, flipped)`` pairs, one per resolution."""

    def __init__(self, parts: Sequence[tuple[torch.utils.data.Dataset, RandomFlip]]):
        self.parts = list(parts)

    def __len__(self) -> int:
        return sum(len(d) for d, _ in self.parts)

    def __getitem__(self, key):
        part, epoch, i = key
        dataset, flipped = self.parts[part]
        flipped.set_epoch(epoch)
        return dataset[i]


__all__ = ["epoch_batches", "part_seed", "StepBatches", "EpochItems"]
