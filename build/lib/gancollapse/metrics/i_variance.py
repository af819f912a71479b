"""Inception Variance (I-Variance) of MaEM-GAN (Liu et al., AAAI'23), as its code computes it.

The code (``inception_variance.py`` of HaozheLiu-ST/MEE) — not the paper's Eq. 15 — takes the softmax outputs
of a classifier on N generated images, the per-class standard deviation over samples (ddof 0), averages it
over classes, and reports mean ± std over 10 splits (the paper prints it ×1e-3). MaEM uses torchvision's
ImageNet Inception-V3; offline this platform uses its own classifier, so values are comparable only between
runs that share the classifier.
"""

from __future__ import annotations

import torch
from torch import Tensor


def i_variance(probs: Tensor, splits: int = 10) -> tuple[float, float]:
    """Mean and std over ``splits`` chunks of mean_y std_i p(y|xᵢ)."""
    if probs.dim() != 2:
        raise ValueError(f"probs must be (N, classes), got {tuple(probs.shape)}")
    splits = max(1, min(int(splits), probs.shape[0] // 2))
    vals = torch.stack([chunk.double().std(dim=0, unbiased=False).mean() for chunk in probs.chunk(splits)])
    return float(vals.mean()), float(vals.std(unbiased=False)) if len(vals) > 1 else 0.0
