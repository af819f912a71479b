"""``dataset=digits``: scikit-learn's 8×8 digits, resized; embedded, fully offline (the default image set)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits

from gancollapse.data.convert import match_channels
from gancollapse.data.downloads import DEFAULT_ROOT
from gancollapse.data.image_datamodule import ImageDataModule
from gancollapse.data.in_memory import UInt8Images


class DigitsDataModule(ImageDataModule):
    """scikit-learn's 1,797 8×8 digits (values 0–16, 10 classes), bilinearly resized: fully offline.

    ``repeat`` tiles the set (longer epochs, e.g. for throughput benchmarks at large batch sizes).
    """

    name = "digits"
    num_classes = 10

    def __init__(self, img_size: int = 32, channels: int = 1, batch_size: int = 64, flip: bool = False,
                 on_device: bool | str = False, num_workers: int = 0, drop_last: bool = True, root: str = DEFAULT_ROOT,
                 download: bool = False, seed: int = 0, repeat: int = 1) -> None:
        super().__init__(img_size, channels, batch_size, flip, on_device, num_workers, drop_last, root, download, seed)
        if int(repeat) < 1:
            raise ValueError(f"dataset.repeat must be >= 1, got {repeat}")
        self.repeat = int(repeat)

    def load(self) -> UInt8Images:
        bunch = load_digits()
        x = torch.as_tensor(bunch.images, dtype=torch.float32)[:, None] * (255.0 / 16.0)
        x = F.interpolate(x, size=(self.img_size, self.img_size), mode="bilinear", align_corners=False, antialias=False)
        images = match_channels(x.round().clamp(0, 255).to(torch.uint8), self.channels)
        labels = torch.as_tensor(bunch.target, dtype=torch.long)
        return UInt8Images(images.repeat(self.repeat, 1, 1, 1), labels.repeat(self.repeat))
