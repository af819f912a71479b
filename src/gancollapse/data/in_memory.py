"""In-memory image sets: one uint8 (N, C, H, W) tensor gathered a batch at a time, batched on the training
device without a DataLoader (:class:`DeviceBatches`), and :func:`materialise` to read a file-backed set into
one."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset


class UInt8Images(Dataset):
    """Images (N, C, H, W) uint8 and labels (N,), gathered a whole batch at a time (``__getitems__``)."""

    def __init__(self, images: Tensor, labels: Tensor | None = None) -> None:
        if images.dtype != torch.uint8 or images.dim() != 4:
            raise ValueError(f"expected a uint8 (N, C, H, W) tensor, got {images.dtype} {tuple(images.shape)}")
        self.images = images
        self.labels = labels if labels is not None else torch.zeros(images.shape[0], dtype=torch.long)

    def __len__(self) -> int:
        return self.images.shape[0]

    def gather(self, idx: Tensor) -> tuple[Tensor, Tensor]:
        return self.images[idx], self.labels[idx]

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        return self.images[i], self.labels[i]

    def __getitems__(self, idx: list[int]) -> tuple[Tensor, Tensor]:
        return self.gather(torch.as_tensor(idx, device=self.images.device))

    def to(self, device: torch.device | str) -> UInt8Images:
        return type(self)(self.images.to(device), self.labels.to(device))


class DeviceBatches:
    """Batches from a dataset that already sits on the training device: one randperm per epoch and one
    gather per batch, no DataLoader workers, no host↔device copies. Shards by rank under DDP."""

    def __init__(self, data: UInt8Images, batch_size: int, shuffle: bool = True, drop_last: bool = True,
                 rank: int = 0, world_size: int = 1, seed: int = 0) -> None:
        self.data, self.batch_size, self.shuffle, self.drop_last = data, batch_size, shuffle, drop_last
        self.rank, self.world_size, self.seed, self.epoch = rank, world_size, seed, 0

    def _indices(self) -> Tensor:
        n = len(self.data)
        device = self.data.labels.device
        if self.shuffle:
            gen = torch.Generator().manual_seed(self.seed + self.epoch)  # same order on every rank
            idx = torch.randperm(n, generator=gen).to(device)
        else:
            idx = torch.arange(n, device=device)
        per_rank = n // self.world_size
        return idx[self.rank * per_rank:(self.rank + 1) * per_rank]

    def __len__(self) -> int:
        per_rank = len(self.data) // self.world_size
        return per_rank // self.batch_size if self.drop_last else -(-per_rank // self.batch_size)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        idx = self._indices()
        self.epoch += 1
        for i in range(len(self)):
            yield self.data.gather(idx[i * self.batch_size:(i + 1) * self.batch_size])


def materialise(ds: Dataset, batch_size: int = 256, num_workers: int = 0) -> UInt8Images:
    """Read a whole file-backed set into one uint8 tensor (for ``on_device`` or repeated small-set use)."""
    loader = DataLoader(ds, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    xs, ys = zip(*[(x, torch.as_tensor(y)) for x, y in loader], strict=True)
    return UInt8Images(torch.cat(xs), torch.cat(ys).long())
