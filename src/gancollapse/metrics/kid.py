"""Kernel Inception Distance (Bińkowski et al., "Demystifying MMD GANs", ICLR 2018) on precomputed features.

KID is the unbiased estimate of the squared maximum mean discrepancy between real and generated features
under the cubic polynomial kernel k(x, y) = (xᵀy / d + 1)³ (Bińkowski et al., Eq. 4 for the estimator,
Sec. 5 for the kernel), averaged over random equal-size subsets; the subsets and the std over them (ddof 0)
follow torchmetrics' ``KernelInceptionDistance`` and the authors' TF code.

The subset draws come from a local ``torch.Generator``: the global RNGs (CPU and CUDA) of the training run are
never read, reseeded or advanced, and the same ``seed`` always gives the same subsets. :class:`KID` is the
evaluator's metric (``evaluator.metrics.kid``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

if TYPE_CHECKING:  # features imports fid at runtime; the type is only an annotation here
    from gancollapse.metrics.features import RealStats


def polynomial_kernel(x: Tensor, y: Tensor, degree: int = 3, coef: float = 1.0) -> Tensor:
    """k(x, y) = (xᵀy / d + coef)^degree for all row pairs, d = feature dimension (Bińkowski et al., Sec. 5)."""
    return (x @ y.t() / x.shape[1] + coef) ** degree


def mmd2_unbiased(k_xx: Tensor, k_xy: Tensor, k_yy: Tensor) -> Tensor:
    """Unbiased MMD² of two equal-size samples from their kernel matrices (Bińkowski et al., Eq. 4;
    Gretton et al., JMLR 2012, Lemma 6): the within-set means leave out the diagonal k(xᵢ, xᵢ),

        MMD²ᵤ = Σ_{i≠j} k(xᵢ,xⱼ) / (m(m−1)) + Σ_{i≠j} k(yᵢ,yⱼ) / (m(m−1)) − 2 Σ_{i,j} k(xᵢ,yⱼ) / m².
    """
    m = k_xx.shape[0]
    within = (k_xx.sum() - k_xx.diagonal().sum() + k_yy.sum() - k_yy.diagonal().sum()) / (m * (m - 1))
    return within - 2 * k_xy.sum() / (m * m)


def kid_from_features(real: Tensor, fake: Tensor, subsets: int = 100, subset_size: int = 1000,
                      seed: int = 0) -> tuple[float, float]:
    """KID mean and std (ddof 0) over ``subsets`` random subsets of ``subset_size`` real and fake features
    each (clipped to the smaller set), drawn without replacement from a generator seeded with ``seed``.

    Kernels are evaluated in float64: the cubic kernel of 2048-d Inception features is ~1, and MMD² is a
    difference of such sums that float32 resolves only to ~1e-6.
    """
    size = int(min(subset_size, real.shape[0], fake.shape[0]))
    if size < 2:
        raise ValueError("KID needs at least 2 real and 2 fake samples")
    if int(subsets) < 1:
        raise ValueError(f"evaluator.metrics.kid.subsets={subsets}: must be >= 1")
    if real.shape[1] != fake.shape[1]:
        raise ValueError(f"real features have {real.shape[1]} dimensions, fakes {fake.shape[1]}: stale cache?")
    gen = torch.Generator().manual_seed(int(seed))  # CPU draws: the same subsets on every device
    real, fake = real.to(fake.device, torch.float64), fake.to(torch.float64)
    scores = []
    for _ in range(int(subsets)):
        # real first, then fake, per subset: the order torchmetrics draws in (same seed → same subsets)
        x = real[torch.randperm(real.shape[0], generator=gen)[:size].to(fake.device)]
        y = fake[torch.randperm(fake.shape[0], generator=gen)[:size].to(fake.device)]
        scores.append(mmd2_unbiased(polynomial_kernel(x, x), polynomial_kernel(x, y), polynomial_kernel(y, y)))
    s = torch.stack(scores)
    return float(s.mean()), float(s.std(unbiased=False))


class KID:
    """KID of the generated features against the real features kept with the cached statistics, mean and std
    over ``subsets`` subsets of ``subset_size`` (:func:`kid_from_features`; the subsets drawn from the
    evaluator's ``seed``). Publishes ``kid`` and ``kid_std``."""

    columns = {"kid": ("KID", "{:.4f}")}

    def __init__(self, subsets: int = 100, subset_size: int = 1000) -> None:
        if int(subsets) < 1:
            raise ValueError(f"evaluator.metrics.kid.subsets={subsets}: must be >= 1")
        if int(subset_size) < 2:
            raise ValueError(f"evaluator.metrics.kid.subset_size={subset_size}: must be >= 2")
        self.subsets, self.subset_size = int(subsets), int(subset_size)
        self.real_features = self.subset_size
        self.reset()

    def reset(self) -> None:
        self._features: list[Tensor] = []
        self._real: Tensor | None = None
        self._seed = 0

    def update(self, features: Tensor, real: RealStats, seed: int) -> None:
        self._features.append(features)
        self._real, self._seed = real.features, int(seed)

    def compute(self) -> dict[str, float]:
        fake = torch.cat(self._features)
        mean, std = kid_from_features(self._real.to(fake.device), fake, self.subsets, self.subset_size, self._seed)
        return {"kid": mean, "kid_std": std}
