"""MaEM-GAN's DIsoMap term: D should map a mix of inputs to the same mix of codes
(Liu et al., AAAI'23, Sec. "Deep Isometric Manifold Mapping", Eq. 14).

As coded by the seed (``train.py``), with t = D(x), f = D(x_f) and one α per sample:

    L_iso = MSE( D(α x + (1 − α) x_f),  sg[ α t + (1 − α) f + ε ] ),   ε ~ N(0, 0.05²)

α ~ N(0, 1) in the seed (so most mixes are extrapolations); the paper's Eq. 14 is a convex mix, α ~ U(0, 1),
compared by cosine. An affine D satisfies D(αx + (1−α)y) = αD(x) + (1−α)D(y) for every α, so the term is
exactly zero for it when the noise is off, and its expected value is the noise variance when it is on.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from gancollapse.regularizers.base import Regularizer, Step

AlphaDist = Literal["normal", "uniform"]


def sample_alpha(n: int, dist: AlphaDist, device: torch.device, dtype: torch.dtype = torch.float32) -> Tensor:
    """One mixing coefficient per sample, shape (n,): N(0, 1) (seed) or U(0, 1) (paper's convex mix)."""
    if dist == "normal":
        return torch.randn(n, device=device, dtype=dtype)
    if dist == "uniform":
        return torch.rand(n, device=device, dtype=dtype)
    raise ValueError(f"regularizer.disomap.alpha must be 'normal' or 'uniform', got {dist!r}")


def _per_sample(alpha: Tensor, like: Tensor) -> Tensor:
    return alpha.reshape(-1, *([1] * (like.dim() - 1))).to(like.dtype)


def mix(a: Tensor, b: Tensor, alpha: Tensor) -> Tensor:
    """α a + (1 − α) b with one α per sample, broadcast over the remaining dims."""
    w = _per_sample(alpha, a)
    return w * a + (1 - w) * b


def isometry_loss(mixed_codes: Tensor, real_codes: Tensor, fake_codes: Tensor, alpha: Tensor, noise_std: float = 0.05) -> Tensor:
    """MSE(D(mix), sg[α t + (1 − α) f + ε]) for precomputed codes (seed's L_iso)."""
    target = mix(real_codes.detach(), fake_codes.detach(), alpha)
    if noise_std > 0:
        target = target + noise_std * torch.randn_like(target)
    return F.mse_loss(mixed_codes, target)


class DIsoMap(Regularizer):
    """Linearity of D's code along lines through a real and a fake sample (D step only).

    Args:
        weight: multiplier of the term (seed: 1).
        alpha: ``normal`` (seed, N(0,1)) or ``uniform`` (U(0,1), the paper's convex mix).
        noise_std: std of the Gaussian noise added to the target code (seed: 0.05).
    """

    def __init__(self, weight: float = 1.0, alpha: AlphaDist = "normal", noise_std: float = 0.05) -> None:
        super().__init__()
        if weight < 0:
            raise ValueError(f"regularizer.disomap.weight must be >= 0, got {weight}")
        if noise_std < 0:
            raise ValueError(f"regularizer.disomap.noise_std must be >= 0, got {noise_std}")
        if alpha not in ("normal", "uniform"):
            raise ValueError(f"regularizer.disomap.alpha must be 'normal' or 'uniform', got {alpha!r}")
        self.weight, self.alpha, self.noise_std = float(weight), alpha, float(noise_std)

    def d_terms(self, step: Step) -> dict[str, Tensor]:
        if step.d_real is None or self.weight == 0:
            return {}
        n = min(step.real.shape[0], step.fake.shape[0])
        real, fake = step.real[:n].detach(), step.fake[:n].detach()
        alpha = sample_alpha(n, self.alpha, real.device)
        mixed_codes = step.discriminator(mix(real, fake, alpha))
        loss = isometry_loss(mixed_codes, step.d_real[:n], step.d_fake[:n], alpha, self.noise_std)
        return {"disomap": self.weight * loss}
