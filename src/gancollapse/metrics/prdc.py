"""Precision/recall (Kynkäänniemi et al., 2019) and density/coverage (Naeem et al., 2020) on features, pure torch.

With X = real features, Y = fake features and NND_k(v) = distance from v to its k-th nearest neighbour in
its own set (self excluded):

* precision = (1/M) Σⱼ 1[∃ i: ‖Yⱼ − Xᵢ‖ ≤ NND_k(Xᵢ)]           (k = 3; share of fakes on the real manifold)
* recall    = (1/N) Σᵢ 1[∃ j: ‖Xᵢ − Yⱼ‖ ≤ NND_k(Yⱼ)]           (k = 3; share of reals on the fake manifold)
* density   = (1/kM) Σⱼ Σᵢ 1[‖Yⱼ − Xᵢ‖ < NND_k(Xᵢ)]            (k = 5; Naeem et al. Eq. 3)
* coverage  = (1/N) Σᵢ 1[minⱼ ‖Xᵢ − Yⱼ‖ < NND_k(Xᵢ)]             (k = 5; Naeem et al. Eq. 4)

Comparisons follow the reference code: ``≤`` for P/R (torch-fidelity), strict ``<`` for D/C (clovaai prdc).
Distances are computed in row blocks, so memory is O(block · N) rather than O(N · M). :class:`PRDC` is the
evaluator's metric (``evaluator.metrics.prdc``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

if TYPE_CHECKING:
    from gancollapse.metrics.features import RealStats


def _cdist(a: Tensor, b: Tensor) -> Tensor:
    return torch.cdist(a.double(), b.double())


def knn_radii(x: Tensor, k: int, block: int = 4096) -> Tensor:
    """Distance from each row of ``x`` to its k-th nearest other row (the (k+1)-th smallest, self = 0)."""
    if not 1 <= k < x.shape[0]:
        raise ValueError(f"k must be in [1, N-1] for N={x.shape[0]} samples, got {k}")
    return torch.cat([_cdist(chunk, x).kthvalue(k + 1, dim=1).values for chunk in x.split(block)])


def manifold_coverage(queries: Tensor, support: Tensor, radii: Tensor, strict: bool = False, block: int = 4096) -> tuple[Tensor, Tensor]:
    """For each query: whether it lies in ∪ᵢ B(supportᵢ, radiiᵢ), and in how many of those balls."""
    inside, counts = [], []
    for chunk in queries.split(block):
        d = _cdist(chunk, support)
        hit = d < radii[None, :] if strict else d <= radii[None, :]
        inside.append(hit.any(dim=1))
        counts.append(hit.sum(dim=1))
    return torch.cat(inside), torch.cat(counts)


def precision_recall(real: Tensor, fake: Tensor, k: int = 3) -> tuple[float, float]:
    """Improved precision and recall (Kynkäänniemi et al., 2019, Eq. 1–2), k = 3."""
    p_in, _ = manifold_coverage(fake, real, knn_radii(real, k))
    r_in, _ = manifold_coverage(real, fake, knn_radii(fake, k))
    return float(p_in.double().mean()), float(r_in.double().mean())


def density_coverage(real: Tensor, fake: Tensor, k: int = 5) -> tuple[float, float]:
    """Density and coverage (Naeem et al., 2020, Eq. 3–4), k = 5."""
    radii = knn_radii(real, k)
    _, counts = manifold_coverage(fake, real, radii, strict=True)
    density = counts.double().sum() / (k * fake.shape[0])
    nearest_fake = torch.cat([_cdist(chunk, fake).min(dim=1).values for chunk in real.split(4096)])
    coverage = (nearest_fake < radii).double().mean()
    return float(density), float(coverage)


def prdc(real: Tensor, fake: Tensor, k_pr: int = 3, k_dc: int = 5) -> dict[str, float]:
    """All four, as a dict: precision, recall, density, coverage."""
    p, r = precision_recall(real, fake, k_pr)
    d, c = density_coverage(real, fake, k_dc)
    return {"precision": p, "recall": r, "density": d, "coverage": c}


class PRDC:
    """Precision, recall, density and coverage (:func:`prdc`) of the first ``n`` generated features against the
    first ``n`` real ones kept with the cached statistics (``n`` clipped to both counts; nothing with 5 or fewer,
    where the k-NN radii are undefined)."""

    columns = {"precision": ("precision", "{:.3f}"), "recall": ("recall", "{:.3f}"),
               "density": ("density", "{:.3f}"), "coverage": ("coverage", "{:.3f}")}

    def __init__(self, n: int = 5000) -> None:
        if int(n) < 6:
            raise ValueError(f"evaluator.metrics.prdc.n={n}: must be >= 6 (k-NN radii with k = 5)")
        self.n = self.real_features = int(n)
        self.reset()

    def reset(self) -> None:
        self._features: list[Tensor] = []
        self._real: Tensor | None = None

    def update(self, features: Tensor, real: RealStats) -> None:
        self._features.append(features)
        self._real = real.features

    def compute(self) -> dict[str, float]:
        fake = torch.cat(self._features)
        real = self._real.to(fake.device)
        n = min(self.n, real.shape[0], fake.shape[0])
        return prdc(real[:n], fake[:n]) if n > 5 else {}
