"""Stacked Digits: the Stacked MNIST construction on scikit-learn's embedded digits (fully offline).

Three digits drawn at random from the 1,797 8×8 digits (resized to ``img_size``) become the R, G and B
channels of one image, so the set has 10³ = 1,000 modes, one per digit triple, with label
100·d₁ + 10·d₂ + d₃ — Stacked MNIST (Metz et al., ICLR 2017; Srivastava et al., VEEGAN, NeurIPS 2017;
Lin et al., PacGAN, NeurIPS 2018) without the download. Modes are counted per channel by the platform's digits
classifier at the same size (:class:`gancollapse.benchmark.StackedDigitsEvaluator`).
"""

from __future__ import annotations

from torch import Tensor

from gancollapse.data.images import DEFAULT_ROOT, DigitsDataModule, StackedMNISTDataModule

__all__ = ["StackedDigitsDataModule"]


class StackedDigitsDataModule(StackedMNISTDataModule):
    """Three random sklearn digits as R, G, B → 1,000 modes (digit triples), at 16² or 32² (any size works).

    Stacked MNIST's construction (:class:`~gancollapse.data.images.StackedMNISTDataModule`) with the embedded
    digits as the source of single digits; only the defaults and that source differ.

    Args:
        n_samples: size of the stacked set (drawn once from ``stack_seed``; only the index triples are stored).
        stack_seed: seed of the digit triples, fixed so every run and seed sees the same set.
        The others as :class:`~gancollapse.data.images.ImageDataModule`; ``channels`` must be 3.
    """

    name = "stacked_digits"
    # The per-channel classifier: the digits one at the same size (``python -m gancollapse.classifier
    # dataset=digits dataset.img_size=<img_size>``; the benchmark's evaluator builds it on first use).
    digit_dataset = "digits"

    def __init__(self, img_size: int = 16, batch_size: int = 64, flip: bool = False, on_device: bool | str = False,
                 num_workers: int = 0, drop_last: bool = True, root: str = DEFAULT_ROOT, download: bool = False,
                 seed: int = 0, n_samples: int = 50_000, stack_seed: int = 0, channels: int = 3) -> None:
        super().__init__(img_size, batch_size, flip, on_device, num_workers, drop_last, root, download, seed,
                         n_samples, stack_seed, channels)

    def digit_identity(self) -> str:
        """Cache identity of the single-digit set at this size (that of its classifier)."""
        return f"{self.digit_dataset}-{self.img_size}px-1ch"

    def digits(self) -> tuple[Tensor, Tensor]:
        digits = DigitsDataModule(img_size=self.img_size, channels=1).load()
        return digits.images, digits.labels
