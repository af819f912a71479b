"""Inception Variance (I-Variance) of MaEM-GAN (Liu et al., AAAI'23), as its code computes it.

The code (``inception_variance.py`` of HaozheLiu-ST/MEE) — not the paper's Eq. 15 — takes the softmax outputs
of a classifier on N generated images, the per-class standard deviation over samples (ddof 0), averages it
over classes, and reports mean ± std over 10 splits (the paper prints it ×1e-3). MaEM uses torchvision's
ImageNet Inception-V3; offline this platform uses its own classifier, so values are comparable only between
runs that share the classifier. :class:`IVariance` is the evaluator's metric (``evaluator.metrics.i_variance``).

This file is the one to copy for a new evaluator metric: a pure function of tensors, then a class with
torchmetrics' ``reset``/``update``/``compute`` whose ``update`` names the evaluator inputs it takes
(:mod:`gancollapse.metrics.metric_set`; here the shared :class:`SplitProbsMetric` supplies them, see
:class:`~gancollapse.metrics.mode_count.StackedModes` for one written out), and one line in ``conf/evaluator/image.yaml``'s ``metrics``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from gancollapse.metrics.metric_set import SplitProbsMetric


def i_variance(probs: Tensor, splits: int = 10) -> tuple[float, float]:
    """Mean and std over ``splits`` chunks of mean_y std_i p(y|xᵢ)."""
    if probs.dim() != 2:
        raise ValueError(f"probs must be (N, classes), got {tuple(probs.shape)}")
    splits = max(1, min(int(splits), probs.shape[0] // 2))
    vals = torch.stack([chunk.double().std(dim=0, unbiased=False).mean() for chunk in probs.chunk(splits)])
    return float(vals.mean()), float(vals.std(unbiased=False)) if len(vals) > 1 else 0.0


class IVariance(SplitProbsMetric):
    """I-Variance mean and std over ``splits`` chunks of the generated images' class probabilities
    (:func:`i_variance`). Publishes ``i_variance`` and ``i_variance_std``."""

    key = "i_variance"
    #: the leaderboard column (the std goes to summary.json only)
    columns = {"i_variance": ("I-Variance", "{:.4f}")}

    def score(self, probs: Tensor, splits: int) -> tuple[float, float]:
        return i_variance(probs, splits)
