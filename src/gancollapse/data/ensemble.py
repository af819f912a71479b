"""The data of K toy runs at once: member k's training set and batch order are those of a run with seed k.

Every member keeps its own sample (``ToyDataModule`` draws it from the member's seed; with ``dataset.fresh=true``
its own new sample every epoch, :class:`~gancollapse.data.toy.FreshMixtureDataset` of the member's seed and the
epoch) and its own epoch order (:func:`gancollapse.data.order.epoch_permutation` of the member's seed), so
member k sees exactly the batches a single run with that seed sees. A batch is ``(K, B, dim)``. The loader is a
:class:`~gancollapse.data.order.SeededLoader`, so Lightning checkpoints and restores its position (epoch,
batches taken) as for a single run.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import lightning as L
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from gancollapse.data.order import SeededBatchSampler, SeededLoader, epoch_permutation
from gancollapse.data.toy import FreshMixtureDataset, ToyDataModule


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


class MemberRows(Dataset):
    """The members' samples laid end to end (member k's sample i is row k·n + i), gathered a batch at a time
    (``__getitems__``). Fixed samples (``data``: ``(K, n, dim)``), or, with ``fresh``, each member's
    :class:`~gancollapse.data.toy.FreshMixtureDataset` sample of the sampler's current epoch."""

    def __init__(self, n: int, data: Tensor | None = None, fresh: Sequence[FreshMixtureDataset] = ()) -> None:
        self.n, self.data, self.fresh = int(n), data, list(fresh)
        self.sampler: EnsembleBatchSampler | None = None
        self._epoch: int | None = None

    def __len__(self) -> int:
        return self.n * (len(self.fresh) if self.fresh else self.data.shape[0])

    def rows(self) -> Tensor:
        if self.fresh:
            epoch = self.sampler.epoch if self.sampler is not None else 0
            if epoch != self._epoch:
                self.data = torch.stack([f.data_for_epoch(epoch) for f in self.fresh])
                self._epoch = epoch
        return self.data.reshape(-1, *self.data.shape[2:])

    def __getitem__(self, i: int) -> Tensor:
        return self.rows()[i]

    def __getitems__(self, idx: list[int]) -> Tensor:
        return self.rows()[torch.as_tensor(idx)]


class _Unflatten:
    """collate_fn: the gathered ``(K·B, dim)`` rows as ``(K, B, dim)``."""

    def __init__(self, k: int) -> None:
        self.k = int(k)

    def __call__(self, batch: Tensor) -> Tensor:
        return batch.reshape(self.k, -1, *batch.shape[1:])


class EnsembleDataModule(L.LightningDataModule):
    """The ``ToyDataModule`` s of K members (one per seed, built from each member's config) as one loader of
    ``(K, B, dim)`` batches (fixed samples, or with ``fresh`` new ones every epoch)."""

    def __init__(self, members: Sequence[ToyDataModule]) -> None:
        super().__init__()
        if not members or any(type(m) is not ToyDataModule for m in members):
            raise ValueError("an ensemble's data must be toy datamodules (dataset=ring or dataset=grid)")
        first = members[0]
        shared = (first.n_samples, first.batch_size, first.fresh)
        if any((m.n_samples, m.batch_size, m.fresh) != shared for m in members):
            raise ValueError("ensemble members must share dataset.n_samples, dataset.batch_size and dataset.fresh")
        self.members = list(members)
        self.name = f"{first.kind}"
        self.batch_size, self.n_samples, self.fresh = first.batch_size, first.n_samples, first.fresh
        self.data: Tensor | None = None

    def setup(self, stage: str | None = None) -> None:
        if self.data is None and not self.fresh:
            for m in self.members:
                m.setup(stage)
            self.data = torch.stack([m.data for m in self.members])

    def train_dataloader(self) -> SeededLoader:
        self.setup()
        k = len(self.members)
        sampler = EnsembleBatchSampler(self.n_samples, self.batch_size, [m.seed for m in self.members])
        if self.fresh:  # the same datasets the members' single runs draw from, one per seed
            dataset = MemberRows(self.n_samples, fresh=[
                FreshMixtureDataset(m.centers, m.std, m.n_samples, m.seed) for m in self.members])
            dataset.sampler = sampler
        else:
            dataset = MemberRows(self.n_samples, data=self.data)
        return SeededLoader(DataLoader(dataset, batch_sampler=sampler, generator=torch.Generator(),
                                       collate_fn=_Unflatten(k), num_workers=0))
