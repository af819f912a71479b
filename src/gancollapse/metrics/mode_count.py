"""Stacked-MNIST mode counting (Metz et al., 2017; VEEGAN; PacGAN's protocol).

Each of the three channels is classified by an MNIST classifier; a sample's mode is its digit triple
100·d₀ + 10·d₁ + d₂. Reported: the number of distinct modes among the samples and
KL(p̂ ‖ U₁₀₀₀) = Σ_m p̂(m) ln(p̂(m) · 1000) over the modes seen (PacGAN `model.py`; data taken as uniform).
:class:`StackedModes` is the evaluator's metric (``evaluator.metrics.modes``, in the Stacked MNIST / Stacked Digits
defaults).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


def mode_histogram(modes: Tensor, n_modes: int) -> Tensor:
    """Counts per mode, shape (n_modes,)."""
    return torch.bincount(modes.long().flatten().cpu(), minlength=n_modes)[:n_modes]


def kl_to_uniform(counts: Tensor) -> float:
    """KL(p̂ ‖ U_K) = Σ p̂ ln(K p̂) with p̂ = counts / Σcounts, K = len(counts); 0·ln 0 = 0."""
    total = counts.sum().item()
    if total <= 0:
        raise ValueError("kl_to_uniform needs at least one sample")
    p = counts.double() / total
    nz = p > 0
    return float((p[nz] * torch.log(p[nz] * len(counts))).sum())


def mode_stats(modes: Tensor, n_modes: int) -> dict[str, float]:
    """``modes`` (distinct modes hit) and ``kl_uniform`` (reverse KL to the uniform over n_modes)."""
    counts = mode_histogram(modes, n_modes)
    return {"modes": float((counts > 0).sum()), "kl_uniform": kl_to_uniform(counts),
            "max_kl_uniform": math.log(n_modes)}


@torch.no_grad()
def stacked_modes(images: Tensor, classifier: nn.Module, batch_size: int = 1000) -> Tensor:
    """Digit triple index per image: classify each channel of (N, 3, H, W) images in [-1, 1] separately."""
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"Stacked MNIST images must be (N, 3, H, W), got {tuple(images.shape)}")
    device = next(classifier.parameters()).device
    out = []
    for b in images.split(batch_size):
        b = b.to(device)
        digits = [classifier(b[:, c:c + 1]).argmax(dim=1) for c in range(3)]
        out.append(digits[0] * 100 + digits[1] * 10 + digits[2])
    return torch.cat(out)


class StackedModes:
    """``modes`` and ``kl_uniform`` of the generated (N, 3, H, W) images: each channel labelled by the evaluator's
    digit classifier (:func:`stacked_modes`), the histogram of the triples over ``n_modes`` (:func:`mode_stats`)."""

    columns = {"modes": ("modes", "{:.0f}"), "kl_uniform": ("KL", "{:.3f}")}

    def __init__(self, n_modes: int = 1000) -> None:
        if int(n_modes) < 1:
            raise ValueError(f"evaluator.metrics.modes.n_modes={n_modes}: must be >= 1")
        self.n_modes = int(n_modes)
        self.reset()

    def reset(self) -> None:
        self._modes: list[Tensor] = []

    def update(self, images: Tensor, classifier: nn.Module) -> None:
        # the whole batch in one pass: the evaluator's batches are the classifier's (same numbers as before)
        self._modes.append(stacked_modes(images, classifier, max(1, images.shape[0])))

    def compute(self) -> dict[str, float]:
        stats = mode_stats(torch.cat(self._modes), self.n_modes)
        return {"modes": stats["modes"], "kl_uniform": stats["kl_uniform"]}
