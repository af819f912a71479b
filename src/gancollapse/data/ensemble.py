"""The data of K toy runs at once: member k's training set and batch order are those of a run with seed k.

Every member keeps its own sample (``ToyDataModule`` draws it from the member's seed) and its own epoch order
(:func:`gancollapse.data.order.epoch_permutation` of the member's seed), so member k sees exactly the batches a
single run with that seed sees. A batch is ``(K, B, dim)``. The loader is a
:class:`~gancollapse.data.order.SeededLoader`, so Lightning checkpoints and restores its position (epoch,
batches taken) as for a single run.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import lightning as L
import torch
from torch import Tensor
from torch.utils.data import DataLoader

from gancollapse.data.order import SeededBatchSampler, SeededLoader, epoch_permutation
from gancollapse.data.toy import BatchTensorDataset, ToyDataModule


class EnsembleBatchSampler(SeededBatchSampler):
    """Batches of K members over the members' samples laid end to end (member k's sample i is row k·n + i):
    batch b is member k's batch b of its own epoch order, for every k. One process, no shards."""

    def __init__(self, n: int, batch_size: int, seeds: Sequence[int], drop_last: bool = True) -> None:
        super().__init__(n, batch_size, seeds[0], drop_last)
        self.seeds = [int(s) for s in seeds]

    def __iter__(self) -> Iterator[list[int]]:
        orders = torch.stack([epoch_permutation(self.n, s, self.epoch) for s in self.seeds])
        orders += torch.arange(len(self.seeds)).unsqueeze(1) * self.n
        start, self.start = self.start, 0
        for b in range(start, len(self)):
            yield orders[:, b * self.batch_size:(b + 1) * self.batch_size].flatten().tolist()


class _Unflatten:
    """collate_fn: the gathered ``(K·B, dim)`` rows as ``(K, B, dim)``."""

    def __init__(self, k: int) -> None:
        self.k = int(k)

    def __call__(self, batch: Tensor) -> Tensor:
        return batch.reshape(self.k, -1, *batch.shape[1:])


class EnsembleDataModule(L.LightningDataModule):
    """The ``ToyDataModule`` s of K members (one per seed, built from each member's config) as one loader of
    ``(K, B, dim)`` batches."""

    def __init__(self, members: Sequence[ToyDataModule]) -> None:
        super().__init__()
        if not members or any(type(m) is not ToyDataModule for m in members):
            raise ValueError("an ensemble's data must be toy datamodules (dataset=ring or dataset=grid)")
        first = members[0]
        if any((m.n_samples, m.batch_size) != (first.n_samples, first.batch_size) for m in members):
            raise ValueError("ensemble members must share dataset.n_samples and dataset.batch_size")
        self.members = list(members)
        self.name = f"{first.kind}"
        self.batch_size, self.n_samples = first.batch_size, first.n_samples
        self.data: Tensor | None = None

    def setup(self, stage: str | None = None) -> None:
        if self.data is None:
            for m in self.members:
                m.setup(stage)
            self.data = torch.stack([m.data for m in self.members])

    def train_dataloader(self) -> SeededLoader:
        self.setup()
        k = len(self.members)
        sampler = EnsembleBatchSampler(self.n_samples, self.batch_size, [m.seed for m in self.members])
        dataset = BatchTensorDataset(self.data.reshape(k * self.n_samples, *self.data.shape[2:]))
        return SeededLoader(DataLoader(dataset, batch_sampler=sampler, generator=torch.Generator(),
                                       collate_fn=_Unflatten(k), num_workers=0))
