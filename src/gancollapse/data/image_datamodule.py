"""The base image datamodule: uint8 sets batched in memory, on the device or from files, floats on the device.

Every datamodule yields ``(images, labels)`` batches. Small sets are held as one uint8 tensor (N, C, H, W) and
batched by index gathering; with ``on_device: true`` (or ``auto`` when training on a GPU) that tensor lives on
the training device and batches never leave it. Training batches all have ``batch_size`` images
(``drop_last``), so compiled nets see one static shape (CUDA graphs need it). Images travel as uint8 (4× less
transfer) and become floats in [-1, 1] — plus an optional random horizontal flip — in
``on_after_batch_transfer``, i.e. on the device.

The concrete sets are one module each, named as their ``conf/dataset/<name>.yaml``: :mod:`~.digits`,
:mod:`~.mnist`, :mod:`~.mnist5k`, :mod:`~.cifar10`, :mod:`~.celeba`, :mod:`~.image_folder`, :mod:`~.stacked`
(and :mod:`~.tfrecord`, :mod:`~.progressive` for TFRecords).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import Tensor
from torch.utils.data import Dataset

from gancollapse.data.convert import random_hflip, to_float
from gancollapse.data.downloads import DEFAULT_ROOT
from gancollapse.data.in_memory import DeviceBatches, UInt8Images
from gancollapse.data.order import identity_collate, rank_and_world, seeded_loader


class ImageDataModule(L.LightningDataModule):
    """Base image datamodule. Subclasses implement :meth:`load` → a :class:`UInt8Images` (or a map-style
    dataset of (uint8 image, label) for sets too big to hold, see :class:`~gancollapse.data.image_folder.FolderDataModule`).

    Args:
        img_size: output side length.
        channels: 1 or 3 (grey sets are replicated to RGB, RGB averaged to grey).
        batch_size: images per D step.
        flip: random horizontal flip per image (MaEM uses it on CIFAR-10).
        on_device: keep the whole set on the training device (GPU) and batch by index (no DataLoader);
            ``auto``: do so for in-memory sets when the trainer runs on a GPU.
        num_workers: DataLoader workers (file-backed sets only: an in-memory batch is one gather, which
            worker processes would only slow down). Host batches are pinned when training on a GPU.
        drop_last: drop the last incomplete batch (the MaEM seed does).
        root: folder holding the downloaded data.
        download: allow torchvision to download (needs internet).
        seed: order of epochs and of the evaluation subsets.
    """

    name = "images"
    num_classes = 0

    def __init__(self, img_size: int = 32, channels: int = 3, batch_size: int = 64, flip: bool = False,
                 on_device: bool | str = False, num_workers: int = 0, drop_last: bool = True,
                 root: str = DEFAULT_ROOT, download: bool = False, seed: int = 0) -> None:
        super().__init__()
        if int(img_size) < 1:
            raise ValueError(f"dataset.img_size must be >= 1, got {img_size}")
        if int(channels) not in (1, 3):
            raise ValueError(f"dataset.channels must be 1 or 3, got {channels}")
        if int(batch_size) < 1:
            raise ValueError(f"dataset.batch_size must be >= 1, got {batch_size}")
        if int(num_workers) < 0:
            raise ValueError(f"dataset.num_workers must be >= 0, got {num_workers}")
        if on_device not in (True, False, "auto"):
            raise ValueError(f"dataset.on_device must be true, false or auto, got {on_device!r}")
        self.img_size, self.channels, self.batch_size = int(img_size), int(channels), int(batch_size)
        # ``on_device`` stays a bool (subclasses test it); ``auto`` is resolved against the trainer's device.
        self.on_device_auto = on_device == "auto"
        self.flip, self.on_device, self.num_workers, self.drop_last = bool(flip), bool(on_device) and not self.on_device_auto, int(num_workers), bool(drop_last)
        self.root, self.download, self.seed = Path(root), bool(download), int(seed)
        self.data: Dataset | None = None

    # -- subclass API
    def load(self) -> Dataset:
        raise NotImplementedError

    def describe(self) -> str:
        """Identity of the images the set yields (for cached real-image statistics)."""
        return f"{self.name}-{self.img_size}px-{self.channels}ch"

    # -- Lightning
    def setup(self, stage: str | None = None) -> None:
        if self.data is None:
            self.data = self.load()
            if len(self.data) < self.batch_size and self.drop_last:
                raise ValueError(f"dataset.batch_size ({self.batch_size}) exceeds the dataset size ({len(self.data)})")

    def _device(self) -> torch.device:
        trainer = getattr(self, "trainer", None)
        return trainer.strategy.root_device if trainer is not None else torch.device("cpu")

    def keeps_on_device(self) -> bool:
        """Whether training batches come from a copy of the set on the training device."""
        on_gpu = self._device().type == "cuda"
        return self.on_device or (self.on_device_auto and on_gpu and isinstance(self.data, UInt8Images))

    def train_dataloader(self):
        self.setup()
        if self.keeps_on_device():
            if not isinstance(self.data, UInt8Images):
                raise ValueError(f"dataset.on_device needs an in-memory set; {self.name} is read from files "
                                 "(set dataset.on_device=false)")
            rank, world = rank_and_world(getattr(self, "trainer", None))
            return DeviceBatches(self.data.to(self._device()), self.batch_size, True, self.drop_last, rank, world, self.seed)
        in_memory = isinstance(self.data, UInt8Images)
        workers = 0 if in_memory else self.num_workers
        # Pinned batches let Lightning's non_blocking copy overlap the previous step; only worth it on a GPU.
        pin = self._device().type == "cuda"
        # The order is a function of (seed, epoch), ranks take disjoint slices, a resumed epoch skips the batches
        # already trained on (gancollapse.data.order).
        return seeded_loader(self.data, self.batch_size, self.seed, self.drop_last, getattr(self, "trainer", None),
                             collate_fn=identity_collate if in_memory else None, num_workers=workers,
                             persistent_workers=workers > 0, pin_memory=pin)

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        images, labels = batch
        if images.dtype == torch.uint8:
            images = to_float(images)
            if self.flip and self.trainer is not None and self.trainer.training:
                images = random_hflip(images)
        return images, labels

    # -- evaluation helpers
    def sample(self, n: int, seed: int = 0, with_labels: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        """n real images as floats in [-1, 1] on the CPU (a seeded subset without replacement; all of the
        set when n ≥ its size), optionally with labels."""
        images, labels = self.sample_uint8(n, seed)
        return (to_float(images), labels) if with_labels else to_float(images)

    def sample_uint8(self, n: int, seed: int = 0) -> tuple[Tensor, Tensor]:
        self.setup()
        total = len(self.data)
        idx = torch.randperm(total, generator=torch.Generator().manual_seed(seed))[: min(n, total)]
        if isinstance(self.data, UInt8Images):
            images, labels = self.data.gather(idx.to(self.data.labels.device))
            return images.cpu(), labels.cpu()
        pairs = [self.data[i] for i in idx.tolist()]
        return torch.stack([p[0] for p in pairs]), torch.as_tensor([int(p[1]) for p in pairs])

    def cache_key(self, n: int, seed: int) -> str:
        """File-name-safe key of a real-image subset: dataset identity, resolution, size and seed."""
        digest = hashlib.sha1(f"{self.describe()}|{n}|{seed}".encode()).hexdigest()[:10]
        return f"{self.describe()}-n{n}-s{seed}-{digest}"
