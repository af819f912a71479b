"""Training-batch order as a function of (seed, epoch) only, resumable in the middle of an epoch.

A ``DataLoader(shuffle=True)`` draws every epoch's permutation (and its workers' base seed) from the global
torch RNG, so the order depends on everything else the run drew before, and a run resumed mid-epoch replays
the epoch from a fresh permutation. Here epoch e's order is ``randperm`` from a private generator seeded by
(seed, e); :class:`SeededBatchSampler` cuts it into this rank's batches and skips the ones already trained
on, and :class:`SeededLoader` counts the batches the training loop has taken. The loader's ``state_dict`` —
(epoch, batches taken) — is what Lightning stores in every checkpoint for a stateful loader and hands back to
``load_state_dict`` before iterating again, the protocol
:class:`gancollapse.data.progressive.ProgressiveBatches` follows for TFRecords.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler


def epoch_seed(seed: int, epoch: int) -> int:
    """The private generator's seed for ``epoch`` of a run seeded with ``seed``: SplitMix64's finaliser
    (Steele, Lea & Flood, OOPSLA 2014) of (seed, epoch), so it shares no stream with ``manual_seed(seed)``
    (the toy data are drawn from that one) and neighbouring (seed, epoch) pairs give unrelated orders."""
    mask = (1 << 64) - 1
    x = (int(seed) * 0x9E3779B97F4A7C15 + int(epoch) * 0xD1B54A32D192ED03 + 0x632BE59BD9B4E019) & mask
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & mask
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & mask
    return (x ^ (x >> 31)) >> 1  # 63 bits: torch.Generator.manual_seed takes a signed 64-bit seed


def epoch_permutation(n: int, seed: int, epoch: int) -> Tensor:
    """The order of the n samples in ``epoch``: a function of (seed, epoch) only."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(epoch_seed(seed, epoch)))


class SeededBatchSampler(Sampler[list[int]]):
    """Batches of indices of rank ``rank`` of ``world_size``: samples rank, rank+w, … of the epoch's
    permutation (as ``DistributedSampler``), cut into ``batch_size`` batches.

    ``start`` batches are skipped at the next iteration (a resumed epoch); :meth:`set_epoch`, which Lightning
    calls at every epoch start, selects the permutation. ``taken`` counts the batches of the current epoch the
    training loop received (kept by :class:`SeededLoader`).
    """

    def __init__(self, n: int, batch_size: int, seed: int = 0, drop_last: bool = True, rank: int = 0,
                 world_size: int = 1) -> None:
        if int(batch_size) < 1:
            raise ValueError(f"dataset.batch_size must be >= 1, got {batch_size}")
        if int(world_size) < 1 or not 0 <= int(rank) < int(world_size):
            raise ValueError(f"rank must be in [0, {world_size}), got {rank}")
        self.n, self.batch_size, self.seed, self.drop_last = int(n), int(batch_size), int(seed), bool(drop_last)
        self.rank, self.world_size = int(rank), int(world_size)
        self.per_rank = self.n // self.world_size
        self.epoch, self.start, self.taken = 0, 0, 0

    def set_epoch(self, epoch: int) -> None:
        if int(epoch) != self.epoch:
            self.epoch, self.start, self.taken = int(epoch), 0, 0

    def __len__(self) -> int:
        full, rest = divmod(self.per_rank, self.batch_size)
        return full + (1 if rest and not self.drop_last else 0)

    def __iter__(self) -> Iterator[list[int]]:
        idx = epoch_permutation(self.n, self.seed, self.epoch)[self.rank::self.world_size][: self.per_rank]
        start, self.start = self.start, 0
        for b in range(start, len(self)):
            yield idx[b * self.batch_size:(b + 1) * self.batch_size].tolist()


class SeededLoader:
    """A ``DataLoader`` over a :class:`SeededBatchSampler` whose position Lightning checkpoints and restores.

    Iteration is lazy: the DataLoader's iterator (and, with workers, its first prefetched indices) is made at
    the first ``next``, after Lightning's ``set_epoch`` and ``load_state_dict``. Other attributes
    (``pin_memory``, ``dataset`` …) are the DataLoader's.
    """

    def __init__(self, loader: DataLoader) -> None:
        if not isinstance(loader.batch_sampler, SeededBatchSampler):
            raise TypeError("SeededLoader needs a DataLoader built with batch_sampler=SeededBatchSampler(...)")
        self.loader = loader
        #: Lightning calls ``<train loader>.sampler.set_epoch(epoch)`` at every epoch start.
        self.sampler: SeededBatchSampler = loader.batch_sampler

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self) -> Iterator[Any]:
        sampler = self.sampler
        sampler.taken = sampler.start
        if self.loader.generator is not None:  # the workers' base seed: a function of (seed, epoch) too
            self.loader.generator.manual_seed(epoch_seed(sampler.seed, sampler.epoch) ^ 0x5EED)
        for batch in self.loader:
            sampler.taken += 1  # before the yield: a checkpoint after this batch's step counts it
            yield batch

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.sampler.epoch, "batches": self.sampler.taken}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.sampler.epoch = int(state["epoch"])
        self.sampler.start = self.sampler.taken = int(state["batches"])

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name == "loader":
            raise AttributeError(name)
        return getattr(self.loader, name)


def rank_and_world(trainer: Any) -> tuple[int, int]:
    """(global rank, world size) of a Lightning trainer; (0, 1) without one."""
    return (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)


def identity_collate(batch: Any) -> Any:
    """The ``collate_fn`` of a dataset whose ``__getitems__`` returns a whole batch already (one gather)."""
    return batch


def seeded_loader(dataset: Dataset, batch_size: int, seed: int, drop_last: bool = True, trainer: Any = None,
                  **loader_kwargs: Any) -> SeededLoader:
    """A :class:`SeededLoader` over ``dataset``, sharded by the trainer's rank (if any); ``loader_kwargs`` go
    to the DataLoader (``collate_fn``, ``num_workers``, ``pin_memory`` …)."""
    rank, world = rank_and_world(trainer)
    sampler = SeededBatchSampler(len(dataset), batch_size, seed, drop_last, rank, world)
    return SeededLoader(DataLoader(dataset, batch_sampler=sampler, generator=torch.Generator(), **loader_kwargs))
