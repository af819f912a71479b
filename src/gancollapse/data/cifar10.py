"""``dataset=cifar10``: the torchvision CIFAR-10 train set, or train+test as MaEM trains on."""

from __future__ import annotations

import torch
from torchvision.datasets import CIFAR10

from gancollapse.data.convert import match_channels, resize_uint8
from gancollapse.data.downloads import DEFAULT_ROOT, missing_dataset
from gancollapse.data.image_datamodule import ImageDataModule
from gancollapse.data.in_memory import UInt8Images


class CIFAR10DataModule(ImageDataModule):
    """CIFAR-10 train set (50,000 images), or train+test (60,000) with ``train_test: true`` as MaEM does."""

    name = "cifar10"
    num_classes = 10

    def __init__(self, img_size: int = 32, channels: int = 3, batch_size: int = 64, flip: bool = True,
                 on_device: bool | str = False, num_workers: int = 0, drop_last: bool = True, root: str = DEFAULT_ROOT,
                 download: bool = False, seed: int = 0, train_test: bool = False) -> None:
        super().__init__(img_size, channels, batch_size, flip, on_device, num_workers, drop_last, root, download, seed)
        self.train_test = bool(train_test)

    def describe(self) -> str:
        return super().describe() + ("-traintest" if self.train_test else "-train")

    def load(self) -> UInt8Images:
        parts = [True, False] if self.train_test else [True]
        images, labels = [], []
        for train in parts:
            try:
                ds = CIFAR10(str(self.root), train=train, download=self.download)
            except RuntimeError as err:
                raise missing_dataset("CIFAR-10", self.root, "cifar10", err) from None
            images.append(torch.as_tensor(ds.data).permute(0, 3, 1, 2).contiguous())
            labels.append(torch.as_tensor(ds.targets, dtype=torch.long))
        x = match_channels(resize_uint8(torch.cat(images), self.img_size), self.channels)
        return UInt8Images(x, torch.cat(labels))
