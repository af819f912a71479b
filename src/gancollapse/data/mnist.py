"""``dataset=mnist``: the torchvision MNIST train (or test) split, padded or resized."""

from __future__ import annotations

from pathlib import Path

from torch import Tensor
from torchvision.datasets import MNIST

from gancollapse.data.convert import match_channels, pad_or_resize
from gancollapse.data.downloads import DEFAULT_ROOT, missing_dataset
from gancollapse.data.image_datamodule import ImageDataModule
from gancollapse.data.in_memory import UInt8Images


def load_mnist(root: Path, download: bool, train: bool = True, key: str = "mnist") -> tuple[Tensor, Tensor]:
    """MNIST's 28×28 digits, uint8 (N, 1, 28, 28), and labels from torchvision's files under ``root``; not there:
    :func:`~gancollapse.data.downloads.missing_dataset` for ``dataset=<key>``."""
    try:
        ds = MNIST(str(root), train=train, download=download)
    except RuntimeError as err:
        raise missing_dataset("MNIST", root, key, err) from None
    return ds.data[:, None].clone(), ds.targets.clone().long()


class MNISTDataModule(ImageDataModule):
    """MNIST train set (60,000). ``img_size`` 28 keeps it as is, 32 zero-pads 2 px, others resize."""

    name = "mnist"
    num_classes = 10

    def __init__(self, img_size: int = 32, channels: int = 1, batch_size: int = 64, flip: bool = False,
                 on_device: bool | str = False, num_workers: int = 0, drop_last: bool = True, root: str = DEFAULT_ROOT,
                 download: bool = False, seed: int = 0, train: bool = True) -> None:
        super().__init__(img_size, channels, batch_size, flip, on_device, num_workers, drop_last, root, download, seed)
        self.train = bool(train)

    def describe(self) -> str:
        return super().describe() + ("" if self.train else "-test")

    def source(self) -> tuple[Tensor, Tensor]:
        """The split's 28×28 digits, uint8 (N, 1, 28, 28), and their labels (N,)."""
        return load_mnist(self.root, self.download, self.train)

    def load(self) -> UInt8Images:
        images, labels = self.source()
        return UInt8Images(match_channels(pad_or_resize(images, self.img_size), self.channels), labels)
