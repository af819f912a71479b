"""``dataset=image_folder``: any folder of image files (class sub-folders become labels), read with PIL."""

from __future__ import annotations

from pathlib import Path

from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset
from torchvision import transforms as T

from gancollapse.data.downloads import DEFAULT_ROOT
from gancollapse.data.image_datamodule import ImageDataModule
from gancollapse.data.in_memory import materialise


class PILImages(Dataset):
    """A list of image files → (uint8 (C, S, S), label): optional center crop, resize, center crop to S."""

    def __init__(self, files: list[Path], labels: list[int], img_size: int, channels: int, crop: int | None = None) -> None:
        self.files, self.labels, self.mode = files, labels, "RGB" if channels == 3 else "L"
        steps = [T.CenterCrop(crop)] if crop else []
        steps += [T.Resize(img_size, interpolation=T.InterpolationMode.BILINEAR, antialias=True),
                  T.CenterCrop(img_size), T.PILToTensor()]
        self.transform = T.Compose(steps)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> tuple[Tensor, int]:
        with Image.open(self.files[i]) as img:
            return self.transform(img.convert(self.mode)), self.labels[i]


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".gif", ".tif", ".tiff")


class FolderDataModule(ImageDataModule):
    """Any folder of images (searched recursively; sub-folder names become labels when there are several).

    Args:
        path: the folder.
        crop: center-crop this many pixels before resizing (null: none).
        in_memory: read everything once into a uint8 tensor (implied by ``on_device``).
    """

    name = "image_folder"

    def __init__(self, path: str = "", img_size: int = 64, channels: int = 3, batch_size: int = 64,
                 flip: bool = False, on_device: bool | str = False, num_workers: int = 4, drop_last: bool = True,
                 crop: int | None = None, in_memory: bool = False, root: str = DEFAULT_ROOT, download: bool = False,
                 seed: int = 0) -> None:
        super().__init__(img_size, channels, batch_size, flip, on_device, num_workers, drop_last, root, download, seed)
        self.path, self.crop, self.in_memory = Path(path) if path else None, crop, bool(in_memory)

    def describe(self) -> str:
        return f"folder-{self.path.name if self.path else 'none'}-{self.img_size}px-{self.channels}ch-crop{self.crop}"

    def files(self) -> tuple[list[Path], list[int]]:
        if self.path is None or not self.path.is_dir():
            raise FileNotFoundError(f"image folder {self.path} not found: set dataset.path=/path/to/images "
                                    "(a folder of .png/.jpg files, optionally in class sub-folders)")
        files = sorted(p for p in self.path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise FileNotFoundError(f"no images ({', '.join(IMAGE_SUFFIXES)}) under {self.path}: set dataset.path")
        classes = sorted({p.parent for p in files})
        index = {c: i for i, c in enumerate(classes)}
        self.num_classes = len(classes) if len(classes) > 1 else 0
        return files, [index[p.parent] for p in files]

    def load(self) -> Dataset:
        files, labels = self.files()
        ds = PILImages(files, labels, self.img_size, self.channels, self.crop)
        return materialise(ds, num_workers=self.num_workers) if (self.in_memory or self.on_device) else ds
