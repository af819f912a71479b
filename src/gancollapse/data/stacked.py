"""Stacked Digits: the Stacked MNIST construction on scikit-learn's embedded digits (fully offline).

Three digits drawn at random from the 1,797 8×8 digits (resized to ``img_size``) become the R, G and B
channels of one image, so the set has 10³ = 1,000 modes, one per digit triple, with label
100·d₁ + 10·d₂ + d₃ — Stacked MNIST (Metz et al., ICLR 2017; Srivastava et al., VEEGAN, NeurIPS 2017;
Lin et al., PacGAN, NeurIPS 2018) without the download. Modes are counted per channel by the platform's digits
classifier at the same size (:class:`gancollapse.benchmark.StackedDigitsEvaluator`).
"""

from __future__ import annotations

from gancollapse.data.images import (
    DEFAULT_ROOT,
    DigitsDataModule,
    ImageDataModule,
    StackedImages,
    stack_triples,
)

__all__ = ["StackedDigitsDataModule"]


class StackedDigitsDataModule(ImageDataModule):
    """Three random sklearn digits as R, G, B → 1,000 modes (digit triples), at 16² or 32² (any size works).

    Args:
        n_samples: size of the stacked set (drawn once from ``stack_seed``; only the index triples are stored).
        stack_seed: seed of the digit triples, fixed so every run and seed sees the same set.
        The others as :class:`~gancollapse.data.images.ImageDataModule`; ``channels`` must be 3.
    """

    name = "stacked_digits"
    num_classes = 1000
    # The per-channel classifier: the digits one at the same size (``python -m gancollapse.classifier
    # dataset=digits dataset.img_size=<img_size>``; the benchmark's evaluator builds it on first use).
    digit_dataset = "digits"

    def __init__(self, img_size: int = 16, batch_size: int = 64, flip: bool = False, on_device: bool | str = False,
                 num_workers: int = 0, drop_last: bool = True, root: str = DEFAULT_ROOT, download: bool = False,
                 seed: int = 0, n_samples: int = 50_000, stack_seed: int = 0, channels: int = 3) -> None:
        if int(channels) != 3:
            raise ValueError(f"dataset.channels must be 3 for Stacked Digits (one digit per channel), got {channels}")
        super().__init__(img_size, 3, batch_size, flip, on_device, num_workers, drop_last, root, download, seed)
        if int(n_samples) < 1:
            raise ValueError(f"dataset.n_samples must be >= 1, got {n_samples}")
        self.n_samples, self.stack_seed = int(n_samples), int(stack_seed)

    def describe(self) -> str:
        return super().describe() + f"-n{self.n_samples}-stack{self.stack_seed}"

    def digit_identity(self) -> str:
        """Cache identity of the single-digit set at this size (that of its classifier)."""
        return f"{self.digit_dataset}-{self.img_size}px-1ch"

    def load(self) -> StackedImages:
        digits = DigitsDataModule(img_size=self.img_size, channels=1).load()
        triples = stack_triples(len(digits), self.n_samples, self.stack_seed)
        return StackedImages(digits.images, digits.labels, triples)
