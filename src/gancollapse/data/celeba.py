"""``dataset=celeba``: torchvision's aligned CelebA faces, center-cropped and resized."""

from __future__ import annotations

from pathlib import Path

from torch.utils.data import Dataset
from torchvision.datasets import CelebA

from gancollapse.data.downloads import DEFAULT_ROOT, missing_dataset
from gancollapse.data.image_datamodule import ImageDataModule
from gancollapse.data.image_folder import PILImages
from gancollapse.data.in_memory import materialise


class CelebADataModule(ImageDataModule):
    """CelebA aligned faces (torchvision layout under ``root/celeba``): center crop ``crop`` px of the
    178×218 image, resize to ``img_size`` (64 by default).

    Args:
        split: ``train`` (162,770), ``valid``, ``test`` or ``all`` (202,599).
        crop: center-crop size before resizing (140 as in WGAN-GP/BEGAN-style CelebA-64; 178 keeps the width).
        in_memory: read everything once into a uint8 tensor (implied by ``on_device``; ~2.4 GB at 64 px).
    """

    name = "celeba"

    def __init__(self, img_size: int = 64, channels: int = 3, batch_size: int = 64, flip: bool = False,
                 on_device: bool | str = False, num_workers: int = 4, drop_last: bool = True, root: str = DEFAULT_ROOT,
                 download: bool = False, seed: int = 0, split: str = "train", crop: int | None = 140,
                 in_memory: bool = False) -> None:
        super().__init__(img_size, channels, batch_size, flip, on_device, num_workers, drop_last, root, download, seed)
        if split not in ("train", "valid", "test", "all"):
            raise ValueError(f"dataset.split must be train, valid, test or all, got {split!r}")
        self.split, self.crop, self.in_memory = split, crop, bool(in_memory)

    def describe(self) -> str:
        return super().describe() + f"-{self.split}-crop{self.crop}"

    def load(self) -> Dataset:
        try:
            ds = CelebA(str(self.root), split=self.split, target_type=[], download=self.download)
        except (RuntimeError, FileNotFoundError) as err:
            raise missing_dataset("CelebA", self.root, "celeba", err) from None
        files = [Path(ds.root) / ds.base_folder / "img_align_celeba" / f for f in ds.filename]
        images = PILImages(files, [0] * len(files), self.img_size, self.channels, self.crop)
        return materialise(images, num_workers=self.num_workers) if (self.in_memory or self.on_device) else images
